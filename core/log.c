#include "core/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

static enum rs_log_level max_level = RS_LOG_INFO;
static const char *const level_names[] = { "error", "warn", "info", "debug" };

void rs_log_set_level(enum rs_log_level level)
{
    max_level = level;
}

bool rs_log_enabled(enum rs_log_level level)
{
    return level <= max_level;
}

void rs_log(enum rs_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;
    ssize_t w;

    if (level > max_level)
        return;
    n = snprintf(line, sizeof(line), "ringstreamd: %s: ", level_names[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
