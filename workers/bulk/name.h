/* workers/bulk/name.h: the name rules of the bulk store (proto/bulk.proto, PutHeader.name).
 * Pure function; no file-system access. */
#ifndef RS_WORKERS_BULK_NAME_H
#define RS_WORKERS_BULK_NAME_H
#include <stdbool.h>
#include <stddef.h>

#define RS_BULK_NAME_MAX 255

/* True when |name| (|len| bytes, not NUL-terminated, may be NULL when |len| is 0) is 1..255
 * bytes of [A-Za-z0-9._/-] with no empty, "." or ".." segment between slashes. So a leading
 * or trailing "/", "//", NUL, spaces, backslashes and any non-ASCII byte are all refused.
 * Every name from a request goes through this before any file-system call. */
bool rs_bulk_name_valid(const char *name, size_t len);

#endif /* RS_WORKERS_BULK_NAME_H */
