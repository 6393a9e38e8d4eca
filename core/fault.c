/* core/fault.c: see core/fault.h. Only built into test builds (RS_FAULT_INJECTION). */
#ifdef RS_FAULT_INJECTION
#include "core/fault.h"
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_FAULT_MAX 32

struct rule {
    char point[48];
    struct rs_fault f;
    uint64_t skip;
    uint64_t count; /* 0: unlimited */
    atomic_uint_fast64_t hits;
};

static struct rule rules[RS_FAULT_MAX];
static unsigned nrules;

static const struct {
    const char *name;
    int err;
} errnames[] = {
    { "eio", EIO },       { "enospc", ENOSPC }, { "edquot", EDQUOT }, { "erofs", EROFS },
    { "eacces", EACCES }, { "enomem", ENOMEM }, { "ebusy", EBUSY },   { "eagain", EAGAIN },
    { "eintr", EINTR },   { "eperm", EPERM },   { "emfile", EMFILE }, { "enfile", ENFILE },
};

static int parse_rule(const char *s, size_t len, struct rule *r)
{
    char buf[128], *eq, *act, *p, *end;
    size_t i;

    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    eq = strchr(buf, '=');
    if (eq == NULL || eq == buf || (size_t)(eq - buf) >= sizeof(r->point))
        return -EINVAL;
    memset(r, 0, sizeof(*r));
    memcpy(r->point, buf, (size_t)(eq - buf));
    act = eq + 1;
    /* modifiers first, so the action string ends where they start */
    p = strpbrk(act, "@x");
    if (p != NULL) {
        char *mods = p;

        while (*mods != '\0') {
            char kind = *mods++;
            unsigned long long v = strtoull(mods, &end, 10);

            if (end == mods || (kind != '@' && kind != 'x'))
                return -EINVAL;
            if (kind == '@')
                r->skip = v;
            else
                r->count = v;
            mods = end;
        }
        *p = '\0';
    }
    if (strncmp(act, "delay:", 6) == 0) {
        unsigned long long ms = strtoull(act + 6, &end, 10);

        if (end == act + 6 || *end != '\0')
            return -EINVAL;
        r->f.delay_ns = ms * 1000000ull;
        return 0;
    }
    if (strcmp(act, "short") == 0) {
        r->f.short_io = 1;
        return 0;
    }
    for (i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++) {
        if (strcmp(act, errnames[i].name) == 0) {
            r->f.err = -errnames[i].err;
            return 0;
        }
    }
    return -EINVAL;
}

int rs_fault_set(const char *spec, char *err, unsigned errlen)
{
    const char *p = spec, *e;

    nrules = 0;
    if (spec == NULL)
        return 0;
    while (*p != '\0') {
        e = strchr(p, ',');
        if (e == NULL)
            e = p + strlen(p);
        if (e > p) {
            if (nrules == RS_FAULT_MAX || parse_rule(p, (size_t)(e - p), &rules[nrules]) < 0) {
                snprintf(err, errlen, "RS_FAULTS: bad or too many rules at \"%.*s\"", (int)(e - p),
                         p);
                nrules = 0;
                return -EINVAL;
            }
            nrules++;
        }
        p = *e == ',' ? e + 1 : e;
    }
    return 0;
}

int rs_fault_init(char *err, unsigned errlen)
{
    return rs_fault_set(getenv("RS_FAULTS"), err, errlen);
}

int rs_fault_hit(const char *point, struct rs_fault *out)
{
    unsigned i;

    for (i = 0; i < nrules; i++) {
        struct rule *r = &rules[i];
        uint64_t n;

        if (strcmp(r->point, point) != 0)
            continue;
        n = atomic_fetch_add(&r->hits, 1);
        if (n < r->skip || (r->count > 0 && n - r->skip >= r->count))
            continue;
        if (out != NULL)
            *out = r->f;
        return 1;
    }
    return 0;
}
#else
/* ISO C forbids an empty translation unit. */
typedef int rs_fault_unused;
#endif
