/* workers/bulk/bulk.h: the ringstream.v1.Bulk service (proto/bulk.proto), a store of named
 * objects uploaded and downloaded as streams of chunks. The daemon opens one rs_bulk and
 * registers its service; every worker then serves calls against it (it is read-only once
 * open, so workers share it without locks). The layout on disk is in store.h. */
#ifndef RS_WORKERS_BULK_BULK_H
#define RS_WORKERS_BULK_BULK_H
#include <stddef.h>
#include <stdint.h>
#include "core/call.h"

struct rs_bulk;

/* Opens (creating if missing) the data directory and checks that it supports O_TMPFILE and
 * user xattrs. Returns 0 and *out (release with rs_bulk_close), or -errno with a one-line
 * reason in err. */
int rs_bulk_open(struct rs_bulk **out, const char *data_dir, char *err, size_t errlen);
/* Resumable uploads: expire after |ttl_ms| without an Upload stream (default 24 h); at most
 * |max_uploads| open at once (default 1000). Any time; before serving in practice. */
void rs_bulk_set_upload_limits(struct rs_bulk *b, uint64_t ttl_ms, unsigned max_uploads);
/* The service to register; valid until rs_bulk_close. */
const struct rs_service *rs_bulk_service(struct rs_bulk *b);
/* Accepts NULL. Only after the server that served the service is gone. */
void rs_bulk_close(struct rs_bulk *b);

#endif /* RS_WORKERS_BULK_BULK_H */
