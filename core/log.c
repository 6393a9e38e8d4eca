#include "core/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static enum rs_log_level max_level = RS_LOG_INFO;
static bool journal; /* stderr is journald's stream: prefix sd-daemon priorities */
static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* sd-daemon.h's SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG */
static const char *const level_prefix[] = { "<3>", "<4>", "<6>", "<7>" };

void rs_log_set_level(enum rs_log_level level)
{
    max_level = level;
}

/* systemd sets JOURNAL_STREAM=DEV:INODE for a service whose stderr is connected to the
 * journal; it is inherited by children whose stderr may be elsewhere, so it counts only when
 * it names our stderr (systemd.exec(5), "$JOURNAL_STREAM"). */
bool rs_log_detect_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    journal = false;
    if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
        return false;
    if (fstat(STDERR_FILENO, &st) < 0)
        return false;
    journal = (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
    return journal;
}

bool rs_log_enabled(enum rs_log_level level)
{
    return level <= max_level;
}

static void emit(const char *prefix, const char *name, const char *fmt, va_list ap)
{
    char line[1024];
    int n;
    ssize_t w;

    n = snprintf(line, sizeof(line), "%sringstreamd: %s: ", journal ? prefix : "", name);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void rs_log(enum rs_log_level level, const char *fmt, ...)
{
    va_list ap;

    if (level > max_level)
        return;
    va_start(ap, fmt);
    emit(level_prefix[level], level_names[level], fmt, ap);
    va_end(ap);
}

void rs_log_access(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    emit(level_prefix[RS_LOG_INFO], "access", fmt, ap);
    va_end(ap);
}
