/* workers/bulk/status.h: the gRPC status a client gets for a storage error of the Bulk store.
 *
 * One table, here and in README.md ("Storage errors"); every store error a method reports goes
 * through rs_bulk_status_from_errno(). The codes are chosen for what the client can do next:
 *
 *   errno                     status               the client should
 *   ENOENT                    NOT_FOUND            not retry: the object is not there (it
 *                                                  vanished, or never existed)
 *   EEXIST                    ALREADY_EXISTS       set overwrite, or pick another name
 *   ENOSPC, EDQUOT            RESOURCE_EXHAUSTED   retry later, smaller, or after space is
 *                                                  freed (deleting objects frees it)
 *   ENOMEM, ENOBUFS (no ring  RESOURCE_EXHAUSTED   retry with backoff: the server is busy
 *   slot), EMFILE, ENFILE
 *   EROFS, EACCES, EPERM      FAILED_PRECONDITION  not retry until an operator fixes the data
 *                                                  directory (read-only mount, permissions):
 *                                                  the server is up and reads still work, so
 *                                                  it is not UNAVAILABLE (which gRPC clients
 *                                                  retry at once), and it is not the caller's
 *                                                  permission (PERMISSION_DENIED)
 *   EIO                       UNAVAILABLE          retry with backoff, or against another
 *                                                  replica: the device failed this request and
 *                                                  nothing was changed (a failed write or sync
 *                                                  is never published); DATA_LOSS is kept for
 *                                                  what the store knows is corrupt
 *   EBADMSG                   DATA_LOSS            not retry: the stored object's metadata is
 *                                                  corrupt
 *   EAGAIN, EINTR, EBUSY,     UNAVAILABLE          retry with backoff
 *   ESTALE, ETIMEDOUT
 *   ECANCELED                 CANCELLED            (the call had already ended)
 *   anything else             INTERNAL             report it: a server bug or an unexpected
 *                                                  file-system answer
 *
 * A directory sync that fails after the change was made (the Put is published, the Delete is
 * done, but maybe not durable) answers the code of its errno too: the client retries, and a
 * retried Delete answers NOT_FOUND, a retried Put with overwrite stores the same object again. */
#ifndef RS_WORKERS_BULK_STATUS_H
#define RS_WORKERS_BULK_STATUS_H
#include "proto/grpc.h"

/* |neg_errno| is -errno; anything else (0, a positive errno) answers INTERNAL. */
enum rs_grpc_status rs_bulk_status_from_errno(int neg_errno);

#endif /* RS_WORKERS_BULK_STATUS_H */
