/* workers/sdnotify.h: the parts of systemd's service protocol ringstreamd speaks, written
 * against the protocol rather than linked from libsystemd: socket activation (LISTEN_PID,
 * LISTEN_FDS, sd_listen_fds(3)), readiness and status notifications (NOTIFY_SOCKET,
 * sd_notify(3)) and the watchdog (WATCHDOG_USEC, WATCHDOG_PID, sd_watchdog_enabled(3)).
 * systemd documents these environment variables and datagrams as a stable interface meant to
 * be implemented without its library (sd_notify(3), "Notes"). Debian's libsystemd would bring
 * libgcrypt, libgpg-error, libzstd, liblzma, liblz4 and libcap into every ringstreamd, about
 * 1 MiB resident, for the few lines below. Outside systemd (no such variables) each call does
 * nothing. */
#ifndef RS_WORKERS_SDNOTIFY_H
#define RS_WORKERS_SDNOTIFY_H
#include <stdint.h>

#define RS_SD_LISTEN_FDS_START 3 /* the first passed socket, as SD_LISTEN_FDS_START */

/* How many sockets systemd passed (fds RS_SD_LISTEN_FDS_START...), marked close-on-exec: 0
 * when LISTEN_PID is unset or names another process, or -EINVAL for malformed variables.
 * Unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES either way, so children do not see them. */
int rs_sd_listen_fds(void);
/* 1 when |fd| is a listening SOCK_STREAM socket, 0 when not, -errno when fstat fails. */
int rs_sd_is_listening_stream(int fd);
/* 1 with *usec set when the service manager expects watchdog pings every *usec (WATCHDOG_USEC,
 * for this process when WATCHDOG_PID is set); 0 when not; -EINVAL for malformed variables. */
int rs_sd_watchdog_usec(uint64_t *usec);
/* Sends |state| ("READY=1", "STATUS=...\n...") to NOTIFY_SOCKET. Returns 1 when sent, 0 when
 * NOTIFY_SOCKET is unset, or -errno. */
int rs_sd_notify(const char *state);
/* rs_sd_notify() of a printf-formatted state, truncated past 1 KiB. */
int rs_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* RS_WORKERS_SDNOTIFY_H */
