/* workers/bulk/status.c: see status.h (the table and why). */
#include "workers/bulk/status.h"
#include <errno.h>

enum rs_grpc_status rs_bulk_status_from_errno(int neg_errno)
{
    int err = -neg_errno; /* a positive value is no -errno: INTERNAL */

    switch (err) {
    case ENOENT:
        return RS_GRPC_NOT_FOUND;
    case EEXIST:
        return RS_GRPC_ALREADY_EXISTS;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:
        return RS_GRPC_RESOURCE_EXHAUSTED;
    case EROFS:
    case EACCES:
    case EPERM:
        return RS_GRPC_FAILED_PRECONDITION;
    case EIO:
    case EAGAIN:
    case EINTR:
    case EBUSY:
    case ESTALE:
    case ETIMEDOUT:
        return RS_GRPC_UNAVAILABLE;
    case EBADMSG:
        return RS_GRPC_DATA_LOSS;
    case ECANCELED:
        return RS_GRPC_CANCELLED;
    default:
        return RS_GRPC_INTERNAL;
    }
}
