/* core/log.h: one-line log records on stderr (journald adds its own timestamps), with
 * sd-daemon priority prefixes when journald reads them. Safe from any thread: each record is
 * one write(2). */
#ifndef RS_CORE_LOG_H
#define RS_CORE_LOG_H
#include <stdbool.h>

enum rs_log_level {
    RS_LOG_ERROR = 0,
    RS_LOG_WARN = 1,
    RS_LOG_INFO = 2,
    RS_LOG_DEBUG = 3,
};

/* Records above |level| are dropped. Set once at startup, before threads start. */
void rs_log_set_level(enum rs_log_level level);
/* Decides, once at startup before threads start, whether records carry sd-daemon priority
 * prefixes (<3> error, <4> warn, <6> info, <7> debug): yes when JOURNAL_STREAM names our
 * stderr, i.e. journald reads it. Returns that decision. */
bool rs_log_detect_journal(void);
/* Would a record at |level| be written? For callers that must work to build one. */
bool rs_log_enabled(enum rs_log_level level);
void rs_log(enum rs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One access-log line ("ringstreamd: access: ..."), written whatever the level; <6> under
 * journald. Callers check their --access-log flag first. */
void rs_log_access(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define rs_log_error(...) rs_log(RS_LOG_ERROR, __VA_ARGS__)
#define rs_log_warn(...)  rs_log(RS_LOG_WARN, __VA_ARGS__)
#define rs_log_info(...)  rs_log(RS_LOG_INFO, __VA_ARGS__)
#define rs_log_debug(...) rs_log(RS_LOG_DEBUG, __VA_ARGS__)
/* An invariant of ours broke in a way we can survive: logged loudly, never for peer input. */
#define rs_log_bug(...) rs_log(RS_LOG_ERROR, "BUG: " __VA_ARGS__)

#endif /* RS_CORE_LOG_H */
