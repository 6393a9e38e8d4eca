/* tests/fuzz/fuzz_reflection.c: workers/reflection's loader over arbitrary bytes taken as a
 * FileDescriptorSet (seed: the set built into the binary).
 *
 * Invariants: rs_reflection_new() answers 0 or -EINVAL with a reason (the input is never out of
 * memory at these sizes); a loaded table finds every file by its own name; the walk from any
 * file starts with that file, lists each file at most once, and, repeated on the same stream,
 * yields the file alone; a second add of a service name is harmless. Leaks and overruns are
 * ASan's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "workers/reflection/reflection.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rs_reflection *r = NULL;
    uint8_t *sent, *seen, *once;
    uint32_t *queue, *out;
    char err[256] = "";
    size_t i, k, n, nf, len;
    int ret;

    ret = rs_reflection_new(&r, data, size, err, sizeof(err));
    if (ret < 0) {
        RS_FUZZ_CHECK(ret == -EINVAL && err[0] != '\0' && r == NULL);
        return 0;
    }
    nf = rs_reflection_nfiles(r);
    RS_FUZZ_CHECK(nf > 0);
    sent = calloc(nf, 1);
    seen = calloc(nf, 1);
    once = calloc(nf, 1);
    queue = calloc(nf, sizeof(*queue));
    out = calloc(nf, sizeof(*out));
    RS_FUZZ_CHECK(sent && seen && once && queue && out);
    for (i = 0; i < nf; i++) {
        const char *name = rs_reflection_file_name(r, i, &len);

        RS_FUZZ_CHECK(rs_reflection_file_by_name(r, name, len) == (int)i);
        memset(sent, 0, nf);
        n = rs_reflection_walk(r, (uint32_t)i, sent, seen, queue, out);
        RS_FUZZ_CHECK(n >= 1 && n <= nf && out[0] == i);
        memset(once, 0, nf);
        for (k = 0; k < n; k++) {
            RS_FUZZ_CHECK(out[k] < nf && !once[out[k]]);
            once[out[k]] = 1;
        }
        RS_FUZZ_CHECK(rs_reflection_walk(r, (uint32_t)i, sent, seen, queue, out) == 1);
        RS_FUZZ_CHECK(out[0] == i);
    }
    RS_FUZZ_CHECK(rs_reflection_add(r, "a.B") == 0 && rs_reflection_add(r, "a.B") == 0);
    /* Lookups of names cut from the input itself: found or -ENOENT, nothing else. */
    for (i = 0; i + 1 < size && i < 64; i++) {
        ret = rs_reflection_file_of_symbol(r, (const char *)data + i, data[i] % (size - i));
        RS_FUZZ_CHECK(ret == -ENOENT || (ret >= 0 && (size_t)ret < nf));
    }
    free(sent);
    free(seen);
    free(once);
    free(queue);
    free(out);
    rs_reflection_destroy(r);
    return 0;
}
