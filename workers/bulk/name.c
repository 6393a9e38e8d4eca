/* workers/bulk/name.c: see name.h. */
#include "workers/bulk/name.h"

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '/';
}

/* A segment is the bytes between two slashes (or an end of the name). */
static bool segment_valid(const char *seg, size_t n)
{
    if (n == 0)
        return false;
    if (n == 1 && seg[0] == '.')
        return false;
    if (n == 2 && seg[0] == '.' && seg[1] == '.')
        return false;
    return true;
}

bool rs_bulk_name_valid(const char *name, size_t len)
{
    size_t start = 0;

    if (name == NULL || len == 0 || len > RS_BULK_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!name_char((unsigned char)name[i]))
            return false;
        if (name[i] == '/') {
            if (!segment_valid(name + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return segment_valid(name + start, len - start);
}
