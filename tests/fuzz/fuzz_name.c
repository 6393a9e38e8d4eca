/* tests/fuzz/fuzz_name.c: the object name rules of workers/bulk/name.c and what the store
 * derives from a name (workers/bulk/store.c: the key that names the file, the metadata xattr).
 *
 * Input: the name, any bytes; or, when it starts with "rso1", also an xattr value as read back
 * from disk.
 * Invariants: rs_bulk_name_valid() agrees with an independent reading of the rule (1..255
 * bytes of [A-Za-z0-9._/-], split on '/' into segments that are neither empty, "." nor "..");
 * so an accepted name, put under a directory, never leaves it or changes meaning when a path
 * is normalised: no NUL, no "..", no "." and no "//" anywhere, no leading or trailing '/'.
 * The key of any name is 64 lower-case hex digits and a NUL in a buffer of exactly 65 bytes,
 * one path component (no '/', accepted by rs_store_is_key), the same every time, and differs
 * for names differing only in their last byte. Metadata round-trips with the name, and
 * decoding arbitrary xattr bytes accepts only what encodes back to the same bytes. */
#include <errno.h>
#include <string.h>
#include "fuzz.h"
#include "workers/bulk/name.h"
#include "workers/bulk/store.h"

static bool ref_char(unsigned char c)
{
    return memchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/", c, 66) !=
                   NULL &&
           c != '\0';
}

static bool ref_valid(const uint8_t *n, size_t len)
{
    size_t seg = 0;

    if (len < 1 || len > 255)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || n[i] == '/') {
            size_t sl = i - seg;

            if (sl == 0 || (sl == 1 && n[seg] == '.') ||
                (sl == 2 && n[seg] == '.' && n[seg + 1] == '.'))
                return false;
            seg = i + 1;
        } else if (!ref_char(n[i])) {
            return false;
        }
    }
    return true;
}

static bool contains(const uint8_t *n, size_t len, const char *s)
{
    size_t sl = strlen(s);

    for (size_t i = 0; i + sl <= len; i++)
        if (memcmp(n + i, s, sl) == 0)
            return true;
    return false;
}

/* What a path normaliser would see under "dir/": no segment it could fold or climb with. */
static void check_no_path_effect(const uint8_t *n, size_t len)
{
    RS_FUZZ_CHECK(memchr(n, '\0', len) == NULL);
    RS_FUZZ_CHECK(n[0] != '/' && n[len - 1] != '/');
    RS_FUZZ_CHECK(!contains(n, len, "//") && !contains(n, len, "/../") && !contains(n, len, "/./"));
    RS_FUZZ_CHECK(!(len >= 2 && memcmp(n, "./", 2) == 0) &&
                  !(len >= 3 && memcmp(n, "../", 3) == 0));
    RS_FUZZ_CHECK(!(len >= 2 && memcmp(n + len - 2, "/.", 2) == 0) &&
                  !(len >= 3 && memcmp(n + len - 3, "/..", 3) == 0));
    RS_FUZZ_CHECK(!(len == 1 && n[0] == '.') && !(len == 2 && memcmp(n, "..", 2) == 0));
}

static void check_key(const uint8_t *n, size_t len)
{
    char *key = malloc(RS_STORE_KEY_LEN + 1); /* exactly the documented size */
    char again[RS_STORE_KEY_LEN + 1];

    RS_FUZZ_CHECK(key != NULL);
    RS_FUZZ_CHECK(rs_store_key((const char *)n, len, key) == 0);
    RS_FUZZ_CHECK(strlen(key) == RS_STORE_KEY_LEN && rs_store_is_key(key));
    RS_FUZZ_CHECK(strchr(key, '/') == NULL);
    RS_FUZZ_CHECK(rs_store_key((const char *)n, len, again) == 0 && strcmp(key, again) == 0);
    if (len > 0) {
        uint8_t *m = malloc(len);

        RS_FUZZ_CHECK(m != NULL);
        memcpy(m, n, len);
        m[len - 1] ^= 1;
        RS_FUZZ_CHECK(rs_store_key((const char *)m, len, again) == 0 && strcmp(key, again) != 0);
        free(m);
    }
    free(key);
}

static void check_meta(const uint8_t *n, size_t len, bool valid)
{
    struct rs_store_meta m = { .size = len * 977, .modified_unix_ms = -(int64_t)len };
    struct rs_store_meta back;
    uint8_t buf[RS_STORE_META_MAX];
    size_t elen;

    if (len > RS_BULK_NAME_MAX)
        return;
    memset(m.sha256, (int)len, sizeof(m.sha256));
    memcpy(m.name, n, len);
    m.name_len = len;
    elen = rs_store_meta_encode(&m, buf);
    if (len == 0) {
        RS_FUZZ_CHECK(elen == 0);
        return;
    }
    RS_FUZZ_CHECK(elen == RS_STORE_META_FIXED + len);
    /* Decoding checks the name again: a name that could not have been stored is refused. */
    if (!valid) {
        RS_FUZZ_CHECK(rs_store_meta_decode(buf, (int)elen, &back) == -EBADMSG);
        return;
    }
    RS_FUZZ_CHECK(rs_store_meta_decode(buf, (int)elen, &back) == 0);
    RS_FUZZ_CHECK(back.size == m.size && back.modified_unix_ms == m.modified_unix_ms);
    RS_FUZZ_CHECK(memcmp(back.sha256, m.sha256, sizeof(m.sha256)) == 0);
    RS_FUZZ_CHECK(back.name_len == len && back.name[len] == '\0');
    RS_FUZZ_CHECK(rs_store_meta_check_name(&back, (const char *)n, len) == 0);
}

/* Bytes read back from an xattr: accepted only if they are exactly an encoding. */
static void check_xattr(const uint8_t *data, size_t size)
{
    struct rs_store_meta m;
    uint8_t *copy, buf[RS_STORE_META_MAX];
    int ret;

    if (size > RS_STORE_META_MAX + 16)
        return;
    copy = malloc(size);
    RS_FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    ret = rs_store_meta_decode(copy, (int)size, &m);
    RS_FUZZ_CHECK(ret == 0 || ret == -EBADMSG);
    if (ret == 0) {
        RS_FUZZ_CHECK(rs_bulk_name_valid(m.name, m.name_len));
        RS_FUZZ_CHECK(rs_store_meta_encode(&m, buf) == size && memcmp(buf, copy, size) == 0);
    }
    free(copy);
    RS_FUZZ_CHECK(rs_store_meta_decode(NULL, -ENODATA, &m) == -EBADMSG);
    RS_FUZZ_CHECK(rs_store_meta_decode(NULL, -EIO, &m) == -EIO);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *n = malloc(size == 0 ? 1 : size); /* exactly the name: no NUL after it */
    bool valid;

    RS_FUZZ_CHECK(n != NULL);
    memcpy(n, data, size);
    valid = rs_bulk_name_valid((const char *)n, size);
    RS_FUZZ_CHECK(valid == ref_valid(n, size));
    if (valid)
        check_no_path_effect(n, size);
    check_key(n, size);
    check_meta(n, size, valid);
    if (size >= 4 && memcmp(data, "rso1", 4) == 0)
        check_xattr(data, size);
    free(n);
    return 0;
}
