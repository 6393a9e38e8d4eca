/* workers/reflection/reflection.c: gRPC server reflection, see reflection.h.
 *
 * The FileDescriptorSet is walked with nanopb's wire primitives (pb_decode_tag and friends)
 * rather than generated code: we need a handful of fields of descriptor.proto and views of
 * the serialized files, never decoded copies. The table keeps, per file, its name, a view of
 * its bytes and the indices of its imports; and one sorted array of fully-qualified symbols
 * (services, methods, messages at any depth, fields, oneofs, enums, enum values, extensions),
 * each naming its file, searched by bsearch.
 *
 * Requests are parsed by hand too (seven fields). A response is a list of iovecs: small field
 * headers written into the call's scratch area, and views of the request (original_request,
 * valid_host) and of the descriptor set (the files). rs_call_send() copies them into the send
 * queue; when it is full the response waits, and the request stays held (not consumed), so
 * the client's window closes behind it. All per-call memory is the call's state, sized for
 * the set at startup: nothing is allocated per request. */
#include "workers/reflection/reflection.h"
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pb_decode.h>
#include "core/log.h"
#include "proto/pbview.h"

#define MAX_DEPTH  32  /* nested message types; protoc stops far earlier */
#define NAME_SHOWN 200 /* bytes of an unknown name quoted back in an error */
#define ERR_ROOM   (NAME_SHOWN + 128)

enum sym_kind {
    SYM_MESSAGE,
    SYM_ENUM,
    SYM_SERVICE,
    SYM_MEMBER, /* a method, field, oneof, enum value or extension */
};

struct refl_file {
    struct rs_pb_view name; /* into the set */
    const uint8_t *p;       /* the serialized FileDescriptorProto, into the set */
    size_t len;
    struct rs_pb_view package;
    uint32_t *deps; /* owned: indices of the files it imports */
    uint32_t ndeps;
};

struct refl_sym {
    char *name; /* owned, NUL-terminated, fully qualified */
    size_t len;
    uint32_t file;
    enum sym_kind kind;
};

struct refl_ext {
    char *extendee; /* owned, fully qualified, without the leading dot */
    size_t len;
    int32_t number;
    uint32_t file;
};

struct rs_reflection {
    struct rs_service svc_v1; /* ctx = this registry */
    struct rs_service svc_v1alpha;
    struct rs_method method_v1; /* state_size depends on the set */
    struct rs_method method_v1alpha;
    struct refl_file *files; /* owned */
    uint32_t nfiles;
    struct refl_sym *syms; /* owned; sorted by name once loaded */
    size_t nsyms, syms_cap;
    struct refl_ext *exts; /* owned; sorted by extendee, then number */
    size_t nexts, exts_cap;
    size_t max_exts_per_type;
    char **names; /* owned: the services listed, in the order added */
    size_t nnames;
    uint8_t *services; /* owned: the body of ListServiceResponse, encoded from |names| */
    size_t services_len;
};

/* --- loading the set ------------------------------------------------------------------- */

struct loader {
    struct rs_reflection *r;
    char *err;
    size_t errlen;
};

static int fail(struct loader *ld, const char *fmt, const char *what, size_t len)
{
    int shown = len > NAME_SHOWN ? NAME_SHOWN : (int)len;

    snprintf(ld->err, ld->errlen, fmt, shown, what);
    return -EINVAL;
}

/* One field of a message being walked: |v| for length-delimited ones, |u| for varints. */
struct field {
    uint32_t tag;
    pb_wire_type_t wt;
    struct rs_pb_view v;
    uint64_t u;
};

/* Reads the next field of |s| (a stream over |msg|, |len| bytes). Returns 1, 0 at the end,
 * or -EINVAL for a malformed message. Fields of other wire types are skipped and reported
 * with neither |v| nor |u|. */
static int next_field(pb_istream_t *s, const uint8_t *msg, size_t len, struct field *f)
{
    if (s->bytes_left == 0)
        return 0;
    if (rs_pb_next_field(s, &f->wt, &f->tag) != NULL)
        return -EINVAL;
    f->v = (struct rs_pb_view){ .len = 0 };
    f->u = 0;
    switch (f->wt) {
    case PB_WT_STRING:
        return rs_pb_take_bytes(s, msg, len, &f->v) ? 1 : -EINVAL;
    case PB_WT_VARINT:
        return pb_decode_varint(s, &f->u) ? 1 : -EINVAL;
    default:
        return pb_skip_field(s, f->wt) ? 1 : -EINVAL;
    }
}

/* The last |tag| string field of |v|, or an unset view. -EINVAL when |v| is malformed. */
static int string_field(struct rs_pb_view v, uint32_t tag, struct rs_pb_view *out)
{
    pb_istream_t s = pb_istream_from_buffer(v.p, v.len);
    struct field f;
    int ret;

    *out = (struct rs_pb_view){ .len = 0 };
    while ((ret = next_field(&s, v.p, v.len, &f)) > 0)
        if (f.tag == tag && f.wt == PB_WT_STRING)
            *out = f.v;
    return ret;
}

/* Adds "scope.name" (or "name" in the empty scope). Returns its index or -errno. */
static int add_sym(struct loader *ld, const char *scope, size_t scope_len, struct rs_pb_view name,
                   uint32_t file, enum sym_kind kind)
{
    struct rs_reflection *r = ld->r;
    struct refl_sym *sym;
    size_t n;

    if (!name.set || name.len == 0 || memchr(name.p, '\0', name.len) != NULL ||
        memchr(name.p, '.', name.len) != NULL)
        return fail(ld, "a declaration in file %.*s has no or a bad name",
                    (const char *)r->files[file].name.p, r->files[file].name.len);
    if (r->nsyms == r->syms_cap) {
        size_t cap = r->syms_cap ? 2 * r->syms_cap : 64;
        struct refl_sym *syms = realloc(r->syms, cap * sizeof(*syms));

        if (syms == NULL)
            return -ENOMEM;
        r->syms = syms;
        r->syms_cap = cap;
    }
    n = scope_len + (scope_len ? 1 : 0) + name.len;
    sym = &r->syms[r->nsyms];
    sym->name = malloc(n + 1);
    if (sym->name == NULL)
        return -ENOMEM;
    if (scope_len) {
        memcpy(sym->name, scope, scope_len);
        sym->name[scope_len] = '.';
    }
    memcpy(sym->name + n - name.len, name.p, name.len);
    sym->name[n] = '\0';
    sym->len = n;
    sym->file = file;
    sym->kind = kind;
    return (int)r->nsyms++;
}

/* A FieldDescriptorProto in an extension list: records its extendee (2) and number (3). */
static int add_ext(struct loader *ld, struct rs_pb_view fd, uint32_t file)
{
    struct rs_reflection *r = ld->r;
    pb_istream_t s = pb_istream_from_buffer(fd.p, fd.len);
    struct rs_pb_view extendee = { .len = 0 };
    uint64_t number = 0;
    struct field f;
    struct refl_ext *x;
    int ret;

    while ((ret = next_field(&s, fd.p, fd.len, &f)) > 0) {
        if (f.tag == 2 && f.wt == PB_WT_STRING)
            extendee = f.v;
        else if (f.tag == 3 && f.wt == PB_WT_VARINT)
            number = f.u;
    }
    if (ret < 0)
        return fail(ld, "malformed extension in file %.*s", (const char *)r->files[file].name.p,
                    r->files[file].name.len);
    if (extendee.len > 0 && extendee.p[0] == '.') { /* protoc writes it fully qualified */
        extendee.p++;
        extendee.len--;
    }
    if (extendee.len == 0 || number == 0 || number > 0x1fffffff)
        return fail(ld, "an extension in file %.*s lacks its extendee or number",
                    (const char *)r->files[file].name.p, r->files[file].name.len);
    if (r->nexts == r->exts_cap) {
        size_t cap = r->exts_cap ? 2 * r->exts_cap : 16;
        struct refl_ext *exts = realloc(r->exts, cap * sizeof(*exts));

        if (exts == NULL)
            return -ENOMEM;
        r->exts = exts;
        r->exts_cap = cap;
    }
    x = &r->exts[r->nexts];
    x->extendee = strndup((const char *)extendee.p, extendee.len);
    if (x->extendee == NULL)
        return -ENOMEM;
    x->len = extendee.len;
    x->number = (int32_t)number;
    x->file = file;
    r->nexts++;
    return 0;
}

/* Adds the named members (field 1 of each |tag| submessage of |v|) in |scope|; the extension
 * list (|ext|) also records each extension. */
static int add_members(struct loader *ld, struct rs_pb_view v, uint32_t tag, const char *scope,
                       size_t scope_len, uint32_t file, bool ext)
{
    pb_istream_t s = pb_istream_from_buffer(v.p, v.len);
    struct rs_pb_view name;
    struct field f;
    int ret;

    while ((ret = next_field(&s, v.p, v.len, &f)) > 0) {
        if (f.tag != tag || f.wt != PB_WT_STRING)
            continue;
        if (string_field(f.v, 1, &name) < 0)
            return fail(ld, "malformed declaration in file %.*s",
                        (const char *)ld->r->files[file].name.p, ld->r->files[file].name.len);
        ret = add_sym(ld, scope, scope_len, name, file, SYM_MEMBER);
        if (ret < 0)
            return ret;
        if (ext && (ret = add_ext(ld, f.v, file)) < 0)
            return ret;
    }
    return ret;
}

/* The named declaration |v| (its name is field 1) as a |kind| symbol in |scope|; |bad| is the
 * error's format when it has no name (one %.*s, the file). On success *full is a malloc'd copy of
 * its full name (*full_len bytes), the scope of its members: the symbol array may move as they are
 * added. Free it. */
static int add_scope(struct loader *ld, struct rs_pb_view v, const char *scope, size_t scope_len,
                     uint32_t file, enum sym_kind kind, const char *bad, char **full,
                     size_t *full_len)
{
    struct rs_pb_view name;
    int ret;

    if (string_field(v, 1, &name) < 0)
        return fail(ld, bad, (const char *)ld->r->files[file].name.p, ld->r->files[file].name.len);
    ret = add_sym(ld, scope, scope_len, name, file, kind);
    if (ret < 0)
        return ret;
    *full_len = ld->r->syms[ret].len;
    *full = strndup(ld->r->syms[ret].name, *full_len);
    return *full == NULL ? -ENOMEM : 0;
}

/* An EnumDescriptorProto: the enum in |scope|, and its values under two names: beside the
 * enum, their protobuf full name ("pkg.VALUE", what grpc-go answers since it resolves names
 * with protoregistry), and inside it ("pkg.Enum.VALUE", what grpc-go up to 1.4x indexed, and
 * Debian's 1.33 still does). Nothing else can be declared inside an enum, so the second name
 * never collides. */
static int add_enum(struct loader *ld, struct rs_pb_view v, const char *scope, size_t scope_len,
                    uint32_t file)
{
    size_t full_len;
    char *full;
    int ret = add_scope(ld, v, scope, scope_len, file, SYM_ENUM, "malformed enum in file %.*s",
                        &full, &full_len);

    if (ret < 0)
        return ret;
    ret = add_members(ld, v, 2, scope, scope_len, file, false);
    if (ret == 0)
        ret = add_members(ld, v, 2, full, full_len, file, false);
    free(full);
    return ret;
}

/* A DescriptorProto in |scope|, its members and nested types, recursively. */
static int add_message(struct loader *ld, struct rs_pb_view v, const char *scope, size_t scope_len,
                       uint32_t file, int depth)
{
    pb_istream_t s = pb_istream_from_buffer(v.p, v.len);
    struct field f;
    char *full;
    size_t full_len;
    int ret;

    if (depth > MAX_DEPTH)
        return fail(ld, "messages nested too deeply in file %.*s",
                    (const char *)ld->r->files[file].name.p, ld->r->files[file].name.len);
    ret = add_scope(ld, v, scope, scope_len, file, SYM_MESSAGE, "malformed message in file %.*s",
                    &full, &full_len);
    if (ret < 0)
        return ret;
    ret = add_members(ld, v, 2, full, full_len, file, false); /* fields */
    if (ret == 0)
        ret = add_members(ld, v, 8, full, full_len, file, false); /* oneofs */
    if (ret == 0)
        ret = add_members(ld, v, 6, full, full_len, file, true); /* extensions */
    if (ret == 0) {
        while ((ret = next_field(&s, v.p, v.len, &f)) > 0) {
            if (f.wt == PB_WT_STRING && f.tag == 3) /* nested_type */
                ret = add_message(ld, f.v, full, full_len, file, depth + 1);
            else if (f.wt == PB_WT_STRING && f.tag == 4) /* enum_type */
                ret = add_enum(ld, f.v, full, full_len, file);
            if (ret < 0)
                break;
        }
    }
    free(full);
    return ret;
}

/* A ServiceDescriptorProto in |scope| and its methods. */
static int add_service(struct loader *ld, struct rs_pb_view v, const char *scope, size_t scope_len,
                       uint32_t file)
{
    size_t full_len;
    char *full;
    int ret = add_scope(ld, v, scope, scope_len, file, SYM_SERVICE,
                        "malformed service in file %.*s", &full, &full_len);

    if (ret < 0)
        return ret;
    ret = add_members(ld, v, 2, full, full_len, file, false);
    free(full);
    return ret;
}

/* Pass 1 over a file: name (1), package (2); imports (3) are counted here, resolved later. */
static int load_file_head(struct loader *ld, uint32_t i)
{
    struct refl_file *fl = &ld->r->files[i];
    pb_istream_t s = pb_istream_from_buffer(fl->p, fl->len);
    struct field f;
    int ret;

    while ((ret = next_field(&s, fl->p, fl->len, &f)) > 0) {
        if (f.wt != PB_WT_STRING)
            continue;
        if (f.tag == 1)
            fl->name = f.v;
        else if (f.tag == 2)
            fl->package = f.v;
        else if (f.tag == 3)
            fl->ndeps++;
    }
    if (ret < 0)
        return fail(ld, "malformed FileDescriptorProto%.*s", "", 0);
    if (fl->name.len == 0 || memchr(fl->name.p, '\0', fl->name.len) != NULL)
        return fail(ld, "a FileDescriptorProto without a name%.*s", "", 0);
    /* Symbols are NUL-terminated strings: a NUL in a package would cut them short. */
    if (fl->package.set && memchr(fl->package.p, '\0', fl->package.len) != NULL)
        return fail(ld, "a NUL in the package of file %.*s", (const char *)fl->name.p,
                    fl->name.len);
    return 0;
}

/* Pass 2 over a file: imports resolved to indices, then its declarations. */
static int load_file_body(struct loader *ld, uint32_t i)
{
    struct rs_reflection *r = ld->r;
    struct refl_file *fl = &r->files[i];
    pb_istream_t s = pb_istream_from_buffer(fl->p, fl->len);
    const char *pkg = (const char *)fl->package.p;
    size_t pkg_len = fl->package.len;
    uint32_t nd = 0;
    struct field f;
    int ret, dep;

    if (fl->ndeps > 0) {
        fl->deps = calloc(fl->ndeps, sizeof(*fl->deps));
        if (fl->deps == NULL)
            return -ENOMEM;
    }
    while ((ret = next_field(&s, fl->p, fl->len, &f)) > 0) {
        if (f.wt != PB_WT_STRING)
            continue;
        switch (f.tag) {
        case 3:
            dep = rs_reflection_file_by_name(r, (const char *)f.v.p, f.v.len);
            if (dep < 0)
                return fail(ld, "an import is missing from the set: %.*s", (const char *)f.v.p,
                            f.v.len);
            fl->deps[nd++] = (uint32_t)dep;
            break;
        case 4:
            ret = add_message(ld, f.v, pkg, pkg_len, i, 0);
            break;
        case 5:
            ret = add_enum(ld, f.v, pkg, pkg_len, i);
            break;
        case 6:
            ret = add_service(ld, f.v, pkg, pkg_len, i);
            break;
        default:
            break;
        }
        if (ret < 0)
            return ret;
    }
    return ret;
}

static int cmp_name(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int cmp_sym(const void *a, const void *b)
{
    const struct refl_sym *x = a, *y = b;

    return cmp_name(x->name, x->len, y->name, y->len);
}

static int cmp_ext(const void *a, const void *b)
{
    const struct refl_ext *x = a, *y = b;
    int c = cmp_name(x->extendee, x->len, y->extendee, y->len);

    if (c != 0)
        return c;
    return x->number < y->number ? -1 : x->number > y->number ? 1 : 0;
}

/* File-level extensions (FileDescriptorProto field 7), in the package's scope. */
static int load_file_exts(struct loader *ld, uint32_t i)
{
    struct refl_file *fl = &ld->r->files[i];
    struct rs_pb_view v = { .p = fl->p, .len = fl->len, .set = true };

    return add_members(ld, v, 7, (const char *)fl->package.p, fl->package.len, i, true);
}

static int load(struct loader *ld, const uint8_t *set, size_t len)
{
    struct rs_reflection *r = ld->r;
    pb_istream_t s = pb_istream_from_buffer(set, len);
    struct field f;
    uint32_t i, n = 0;
    size_t run;
    int ret;

    /* Count the files, then take views of them. */
    while ((ret = next_field(&s, set, len, &f)) > 0)
        if (f.tag == 1 && f.wt == PB_WT_STRING)
            n++;
    if (ret < 0)
        return fail(ld, "malformed FileDescriptorSet%.*s", "", 0);
    if (n == 0)
        return fail(ld, "the FileDescriptorSet holds no file%.*s", "", 0);
    r->files = calloc(n, sizeof(*r->files));
    if (r->files == NULL)
        return -ENOMEM;
    s = pb_istream_from_buffer(set, len);
    while (next_field(&s, set, len, &f) > 0) {
        if (f.tag != 1 || f.wt != PB_WT_STRING)
            continue;
        r->files[r->nfiles].p = f.v.p;
        r->files[r->nfiles].len = f.v.len;
        ret = load_file_head(ld, r->nfiles);
        if (ret < 0)
            return ret;
        if (rs_reflection_file_by_name(r, (const char *)r->files[r->nfiles].name.p,
                                       r->files[r->nfiles].name.len) >= 0)
            return fail(ld, "file %.*s is twice in the set",
                        (const char *)r->files[r->nfiles].name.p, r->files[r->nfiles].name.len);
        r->nfiles++;
    }
    for (i = 0; i < r->nfiles; i++) {
        ret = load_file_body(ld, i);
        if (ret == 0)
            ret = load_file_exts(ld, i);
        if (ret < 0)
            return ret;
    }
    if (r->nsyms > 1) /* qsort's base must not be NULL, even for 0 elements */
        qsort(r->syms, r->nsyms, sizeof(*r->syms), cmp_sym);
    for (i = 1; i < r->nsyms; i++)
        if (cmp_sym(&r->syms[i - 1], &r->syms[i]) == 0)
            return fail(ld, "symbol %.*s is declared twice", r->syms[i].name, r->syms[i].len);
    if (r->nexts > 1)
        qsort(r->exts, r->nexts, sizeof(*r->exts), cmp_ext);
    for (i = 0, run = 0; i < r->nexts; i++) {
        if (i > 0 && cmp_ext(&r->exts[i - 1], &r->exts[i]) == 0)
            return fail(ld, "an extension number of %.*s is declared twice", r->exts[i].extendee,
                        r->exts[i].len);
        run = i > 0 && cmp_name(r->exts[i - 1].extendee, r->exts[i - 1].len, r->exts[i].extendee,
                                r->exts[i].len) == 0
                      ? run + 1
                      : 1;
        if (run > r->max_exts_per_type)
            r->max_exts_per_type = run;
    }
    return 0;
}

/* --- lookups --------------------------------------------------------------------------- */

int rs_reflection_file_by_name(const struct rs_reflection *r, const char *name, size_t len)
{
    uint32_t i;

    for (i = 0; i < r->nfiles; i++) /* a handful of files */
        if (r->files[i].name.len == len && memcmp(r->files[i].name.p, name, len) == 0)
            return (int)i;
    return -ENOENT;
}

static const struct refl_sym *find_sym(const struct rs_reflection *r, const char *name, size_t len)
{
    size_t lo = 0, hi = r->nsyms;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_name(name, len, r->syms[mid].name, r->syms[mid].len);

        if (c == 0)
            return &r->syms[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int rs_reflection_file_of_symbol(const struct rs_reflection *r, const char *name, size_t len)
{
    const struct refl_sym *sym = find_sym(r, name, len);

    return sym != NULL ? (int)sym->file : -ENOENT;
}

/* The first extension of |type| (|len| bytes) in r->exts, or r->nexts. */
static size_t first_ext(const struct rs_reflection *r, const char *type, size_t len)
{
    size_t lo = 0, hi = r->nexts;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (cmp_name(r->exts[mid].extendee, r->exts[mid].len, type, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool ext_of(const struct rs_reflection *r, size_t i, const char *type, size_t len)
{
    return i < r->nexts && cmp_name(r->exts[i].extendee, r->exts[i].len, type, len) == 0;
}

int rs_reflection_file_of_extension(const struct rs_reflection *r, const char *type, size_t len,
                                    int32_t number)
{
    size_t i;

    for (i = first_ext(r, type, len); ext_of(r, i, type, len); i++)
        if (r->exts[i].number == number)
            return (int)r->exts[i].file;
    return -ENOENT;
}

size_t rs_reflection_nfiles(const struct rs_reflection *r)
{
    return r->nfiles;
}

const char *rs_reflection_file_name(const struct rs_reflection *r, size_t i, size_t *len)
{
    *len = r->files[i].name.len;
    return (const char *)r->files[i].name.p;
}

/* --- the request ----------------------------------------------------------------------- */

enum req_kind {
    REQ_NONE = 0,
    REQ_FILE_BY_FILENAME = 3,
    REQ_FILE_CONTAINING_SYMBOL = 4,
    REQ_FILE_CONTAINING_EXTENSION = 5,
    REQ_ALL_EXTENSION_NUMBERS = 6,
    REQ_LIST_SERVICES = 7,
};

struct req {
    struct rs_pb_view host;
    enum req_kind kind; /* the oneof's last field on the wire */
    struct rs_pb_view arg;
    struct rs_pb_view ext_type; /* REQ_FILE_CONTAINING_EXTENSION */
    int32_t ext_number;
};

static bool utf8_valid(const uint8_t *p, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = p[i];
        size_t n, k;
        uint32_t cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= n)
            return false;
        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += n + 1;
    }
    return true;
}

/* Parses a ServerReflectionRequest. Returns NULL, or why it is malformed. */
static const char *parse_req(const uint8_t *msg, size_t len, struct req *q)
{
    pb_istream_t s = pb_istream_from_buffer(msg, len);
    struct field f;
    int ret;

    *q = (struct req){ .kind = REQ_NONE };
    while ((ret = next_field(&s, msg, len, &f)) > 0) {
        if (f.tag != 1 && (f.tag < REQ_FILE_BY_FILENAME || f.tag > REQ_LIST_SERVICES))
            continue; /* unknown fields are skipped, as protobuf does */
        if (f.wt != PB_WT_STRING)
            return "a field with the wrong wire type";
        if (f.tag != REQ_FILE_CONTAINING_EXTENSION && !utf8_valid(f.v.p, f.v.len))
            return "a string field that is not UTF-8";
        if (f.tag == 1) {
            q->host = f.v;
            continue;
        }
        q->kind = (enum req_kind)f.tag;
        q->arg = f.v;
    }
    if (ret < 0)
        return "not a protobuf message";
    if (q->kind == REQ_FILE_CONTAINING_EXTENSION) {
        pb_istream_t x = pb_istream_from_buffer(q->arg.p, q->arg.len);

        while ((ret = next_field(&x, q->arg.p, q->arg.len, &f)) > 0) {
            if (f.tag == 1) {
                if (f.wt != PB_WT_STRING)
                    return "a field with the wrong wire type";
                if (!utf8_valid(f.v.p, f.v.len))
                    return "a string field that is not UTF-8";
                q->ext_type = f.v;
            } else if (f.tag == 2) {
                if (f.wt != PB_WT_VARINT)
                    return "a field with the wrong wire type";
                q->ext_number = (int32_t)(uint32_t)f.u; /* int32: truncated, as protobuf does */
            }
        }
        if (ret < 0)
            return "a malformed ExtensionRequest";
    }
    return NULL;
}

/* --- the call -------------------------------------------------------------------------- */

/* Per-call state; the arrays live right after it, in the call's state (sized in layout()). */
struct rcall {
    bool finished;     /* we called rs_call_finish() */
    bool pending;      /* a response waits for room in the send queue; the request is held */
    int niov;          /* of the pending response */
    struct iovec *iov; /* IOV_SLOTS + 2 per file */
    uint8_t *hdr;      /* field headers and small bodies of the response being built */
    size_t hdr_used, hdr_cap;
    uint32_t *queue;  /* per file: the walk over imports */
    uint32_t *picked; /* per file: the files of the response being built */
    uint8_t *sent;    /* per file: already sent on this stream */
    uint8_t *seen;    /* per file: already in this response */
};

#define IOV_SLOTS 5 /* valid_host header + view, original_request header + view, oneof header */

struct layout {
    size_t iov, queue, picked, sent, seen, hdr, hdr_cap, total;
};

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static void layout(const struct rs_reflection *r, struct layout *l)
{
    size_t n = r->nfiles;

    l->iov = align8(sizeof(struct rcall));
    l->queue = l->iov + (IOV_SLOTS + 2 * n + 4) * sizeof(struct iovec);
    l->picked = l->queue + n * sizeof(uint32_t);
    l->sent = l->picked + n * sizeof(uint32_t);
    l->seen = l->sent + n;
    l->hdr = l->seen + n;
    /* 4 headers of up to 6 bytes, one per file, an error message or the extension numbers */
    l->hdr_cap = 32 + 12 * n + ERR_ROOM + 16 + 10 * r->max_exts_per_type;
    l->total = l->hdr + l->hdr_cap;
}

static struct rcall *rcall_of(struct rs_call *call)
{
    const struct rs_reflection *r = rs_call_service_ctx(call);
    struct rcall *rc = rs_call_state(call);
    struct layout l;

    if (rc->iov == NULL) {
        layout(r, &l);
        rc->iov = (struct iovec *)((char *)rc + l.iov);
        rc->queue = (uint32_t *)((char *)rc + l.queue);
        rc->picked = (uint32_t *)((char *)rc + l.picked);
        rc->sent = (uint8_t *)rc + l.sent;
        rc->seen = (uint8_t *)rc + l.seen;
        rc->hdr = (uint8_t *)rc + l.hdr;
        rc->hdr_cap = l.hdr_cap;
    }
    return rc;
}

/* Room for |n| bytes of headers; layout() sized the area for the worst case. */
static uint8_t *hdr_take(struct rcall *rc, size_t n)
{
    uint8_t *p = rc->hdr + rc->hdr_used;

    if (rc->hdr_used + n > rc->hdr_cap) {
        rs_log_bug("reflection: response headers overflow (%zu + %zu > %zu)", rc->hdr_used, n,
                   rc->hdr_cap);
        abort();
    }
    rc->hdr_used += n;
    return p;
}

/* A field header: tag |field| of wire type LEN and |len|, as iovec |i|. */
static void put_len_header(struct rcall *rc, int i, uint32_t field, size_t len)
{
    uint8_t tmp[16];
    size_t n = rs_pb_put_varint(tmp, (uint64_t)field << 3 | PB_WT_STRING);
    uint8_t *p;

    n += rs_pb_put_varint(tmp + n, len);
    p = hdr_take(rc, n);
    memcpy(p, tmp, n);
    rc->iov[i] = (struct iovec){ .iov_base = p, .iov_len = n };
}

static void put_view(struct rcall *rc, int i, const void *p, size_t len)
{
    rc->iov[i] = (struct iovec){ .iov_base = (void *)p, .iov_len = len };
}

size_t rs_reflection_walk(const struct rs_reflection *r, uint32_t root, uint8_t *sent,
                          uint8_t *seen, uint32_t *queue, uint32_t *out)
{
    uint32_t head = 0, tail = 0, i, f;
    size_t n = 0;

    memset(seen, 0, r->nfiles);
    queue[tail++] = root;
    seen[root] = 1;
    while (head < tail) { /* each file enters the queue at most once: bounded by nfiles */
        f = queue[head++];
        if (f == root || !sent[f]) {
            sent[f] = 1;
            out[n++] = f;
        }
        for (i = 0; i < r->files[f].ndeps; i++) {
            uint32_t d = r->files[f].deps[i];

            if (!seen[d]) {
                seen[d] = 1;
                queue[tail++] = d;
            }
        }
    }
    return n;
}

/* Body of a FileDescriptorResponse: what rs_reflection_walk() picks from |root|. Returns the
 * iovecs used from |at|. */
static int body_files(const struct rs_reflection *r, struct rcall *rc, int at, uint32_t root)
{
    size_t i, n = rs_reflection_walk(r, root, rc->sent, rc->seen, rc->queue, rc->picked);

    for (i = 0; i < n; i++) {
        const struct refl_file *fl = &r->files[rc->picked[i]];

        put_len_header(rc, at + 2 * (int)i, 1, fl->len);
        put_view(rc, at + 2 * (int)i + 1, fl->p, fl->len);
    }
    return 2 * (int)n;
}

/* Body of an ErrorResponse. */
static int body_error(struct rcall *rc, int at, enum rs_grpc_status code, const char *what,
                      const struct rs_pb_view *name)
{
    size_t shown = name->len > NAME_SHOWN ? NAME_SHOWN : name->len, n = 0;
    char text[ERR_ROOM];
    uint8_t *p;
    int len;

    while (shown < name->len && shown > 0 && (name->p[shown] & 0xc0) == 0x80)
        shown--; /* cut at a character boundary: the message is a proto3 string */
    len = snprintf(text, sizeof(text), "%s \"%.*s\"%s not found", what, (int)shown,
                   (const char *)name->p, shown < name->len ? "..." : "");
    if (len < 0)
        len = 0;
    if ((size_t)len >= sizeof(text)) /* cannot happen: NAME_SHOWN leaves room */
        len = (int)sizeof(text) - 1;
    p = hdr_take(rc, 2 + 6 + (size_t)len);
    p[n++] = 1 << 3 | PB_WT_VARINT; /* error_code */
    p[n++] = (uint8_t)code;
    p[n++] = 2 << 3 | PB_WT_STRING; /* error_message */
    n += rs_pb_put_varint(p + n, (uint64_t)len);
    memcpy(p + n, text, (size_t)len);
    put_view(rc, at, p, n + (size_t)len);
    return 1;
}

/* Body of an ExtensionNumberResponse for |type|, a symbol of the set. */
static int body_ext_numbers(const struct rs_reflection *r, struct rcall *rc, int at,
                            const struct refl_sym *type)
{
    size_t i, packed = 0;
    uint8_t *p;
    int n = 0;

    put_len_header(rc, at, 1, type->len);
    put_view(rc, at + 1, type->name, type->len);
    n = 2;
    i = first_ext(r, type->name, type->len);
    if (ext_of(r, i, type->name, type->len)) {
        p = hdr_take(rc, 10 * r->max_exts_per_type);
        for (; ext_of(r, i, type->name, type->len); i++) /* sorted by number */
            packed += rs_pb_put_varint(p + packed, (uint64_t)(int64_t)r->exts[i].number);
        put_len_header(rc, at + 2, 2, packed);
        put_view(rc, at + 3, p, packed);
        n += 2;
    }
    return n;
}

static size_t iov_total(const struct iovec *iov, int from, int to)
{
    size_t n = 0;

    for (; from < to; from++)
        n += iov[from].iov_len;
    return n;
}

/* Builds the response to |q| (the request is |msg|) into rc->iov. Returns false after ending
 * the call when the request is unusable. */
static bool build(struct rs_call *call, struct rcall *rc, const struct req *q, const uint8_t *msg,
                  size_t len)
{
    const struct rs_reflection *r = rs_call_service_ctx(call);
    const struct refl_sym *sym;
    uint32_t field = 4; /* file_descriptor_response */
    int at = IOV_SLOTS, n = 0, f, i, out;

    rc->hdr_used = 0;
    memset(rc->iov, 0, IOV_SLOTS * sizeof(*rc->iov));
    switch (q->kind) {
    case REQ_NONE:
        rc->finished = true;
        rs_call_finish(call, RS_GRPC_INVALID_ARGUMENT,
                       "ServerReflectionRequest sets no message_request");
        return false;
    case REQ_FILE_BY_FILENAME:
        f = rs_reflection_file_by_name(r, (const char *)q->arg.p, q->arg.len);
        if (f >= 0) {
            n = body_files(r, rc, at, (uint32_t)f);
        } else {
            field = 7; /* error_response */
            n = body_error(rc, at, RS_GRPC_NOT_FOUND, "file", &q->arg);
        }
        break;
    case REQ_FILE_CONTAINING_SYMBOL:
        f = rs_reflection_file_of_symbol(r, (const char *)q->arg.p, q->arg.len);
        if (f >= 0) {
            n = body_files(r, rc, at, (uint32_t)f);
        } else {
            field = 7;
            n = body_error(rc, at, RS_GRPC_NOT_FOUND, "symbol", &q->arg);
        }
        break;
    case REQ_FILE_CONTAINING_EXTENSION:
        f = rs_reflection_file_of_extension(r, (const char *)q->ext_type.p, q->ext_type.len,
                                            q->ext_number);
        if (f >= 0) {
            n = body_files(r, rc, at, (uint32_t)f);
        } else {
            char what[32];

            snprintf(what, sizeof(what), "extension %" PRId32 " of", q->ext_number);
            field = 7;
            n = body_error(rc, at, RS_GRPC_NOT_FOUND, what, &q->ext_type);
        }
        break;
    case REQ_ALL_EXTENSION_NUMBERS:
        /* grpc-go: the numbers of a known type (none for proto3), NOT_FOUND for an unknown
         * name. */
        sym = find_sym(r, (const char *)q->arg.p, q->arg.len);
        if (sym != NULL) {
            field = 5; /* all_extension_numbers_response */
            n = body_ext_numbers(r, rc, at, sym);
        } else {
            field = 7;
            n = body_error(rc, at, RS_GRPC_NOT_FOUND, "type", &q->arg);
        }
        break;
    case REQ_LIST_SERVICES:
        field = 6; /* list_services_response */
        put_view(rc, at, r->services, r->services_len);
        n = 1;
        break;
    }
    put_len_header(rc, 4, field, iov_total(rc->iov, at, at + n));
    if (q->host.len > 0) { /* grpc-go echoes the host as valid_host */
        put_len_header(rc, 0, 1, q->host.len);
        put_view(rc, 1, q->host.p, q->host.len);
    }
    put_len_header(rc, 2, 2, len);
    put_view(rc, 3, msg, len);
    /* Drop the empty slots (no host, an empty request, an empty list). */
    for (i = 0, out = 0; i < at + n; i++)
        if (rc->iov[i].iov_len > 0)
            rc->iov[out++] = rc->iov[i];
    rc->niov = out;
    return true;
}

/* Sends the pending response. Returns true when it is out of the way (sent, or the call
 * ended), false when it waits for on_writable. */
static bool flush(struct rs_call *call, struct rcall *rc)
{
    int ret;

    if (!rc->pending)
        return true;
    ret = rs_call_send(call, rc->iov, rc->niov);
    if (ret == -EAGAIN)
        return false;
    rc->pending = false;
    if (ret == 0)
        return true;
    if (!rc->finished) {
        rc->finished = true;
        if (ret == -EMSGSIZE)
            rs_call_finishf(call, RS_GRPC_RESOURCE_EXHAUSTED,
                            "reflection response of %zu bytes exceeds the message limit (%zu)",
                            iov_total(rc->iov, 0, rc->niov), rs_call_max_msg(call));
        else if (ret == -ENOMEM)
            rs_call_finish(call, RS_GRPC_RESOURCE_EXHAUSTED, "no memory for the response");
        else if (ret != -ECANCELED)
            rs_call_finish(call, RS_GRPC_INTERNAL, "cannot send the response");
    }
    return true;
}

static void on_start(struct rs_call *call)
{
    rcall_of(call);
}

static void on_message(struct rs_call *call, const uint8_t *msg, size_t len)
{
    struct rcall *rc = rcall_of(call);
    const char *why;
    struct req q;

    if (rc->finished) {
        rs_call_consume(call);
        return;
    }
    why = parse_req(msg, len, &q);
    if (why != NULL) {
        rc->finished = true;
        rs_call_finishf(call, RS_GRPC_INVALID_ARGUMENT, "malformed ServerReflectionRequest: %s",
                        why);
        rs_call_consume(call);
        return;
    }
    if (build(call, rc, &q, msg, len)) {
        rc->pending = true;
        if (!flush(call, rc))
            return; /* the request stays held: its views are in the response */
    }
    rs_call_consume(call);
}

static void on_writable(struct rs_call *call)
{
    struct rcall *rc = rcall_of(call);

    if (rc->pending && flush(call, rc))
        rs_call_consume(call);
}

static void on_half_close(struct rs_call *call)
{
    struct rcall *rc = rcall_of(call);

    /* Only once no request is held, so every answer is queued: the stream ends OK. */
    if (!rc->finished) {
        rc->finished = true;
        rs_call_finish(call, RS_GRPC_OK, NULL);
    }
}

/* --- the registry ---------------------------------------------------------------------- */

int rs_reflection_new(struct rs_reflection **out, const uint8_t *set, size_t len, char *err,
                      size_t errlen)
{
    struct rs_reflection *r = calloc(1, sizeof(*r));
    struct loader ld = { .r = r, .err = err, .errlen = errlen };
    struct layout l;
    int ret;

    *out = NULL;
    if (errlen > 0)
        err[0] = '\0';
    if (r == NULL)
        return -ENOMEM;
    ret = load(&ld, set, len);
    if (ret < 0) {
        if (ret == -ENOMEM)
            snprintf(err, errlen, "out of memory");
        else if (errlen > 0 && err[0] == '\0')
            snprintf(err, errlen, "malformed descriptor in the FileDescriptorSet");
        rs_reflection_destroy(r);
        return ret;
    }
    layout(r, &l);
    r->method_v1 = (struct rs_method){
        .path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        .type = RS_METHOD_BIDI_STREAM,
        .state_size = l.total,
        .on_start = on_start,
        .on_message = on_message,
        .on_half_close = on_half_close,
        .on_writable = on_writable,
    };
    r->method_v1alpha = r->method_v1;
    r->method_v1alpha.path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
    r->svc_v1 = (struct rs_service){
        .name = "grpc.reflection.v1.ServerReflection",
        .methods = &r->method_v1,
        .nmethods = 1,
        .ctx = r,
    };
    r->svc_v1alpha = r->svc_v1;
    r->svc_v1alpha.name = "grpc.reflection.v1alpha.ServerReflection";
    r->svc_v1alpha.methods = &r->method_v1alpha;
    *out = r;
    return 0;
}

/* Encodes r->names as a ListServiceResponse body: per name, service (1) { name (1) }. */
static int encode_services(struct rs_reflection *r)
{
    size_t i, len, cap = 0, n = 0;
    uint8_t *p;

    for (i = 0; i < r->nnames; i++)
        cap += 2 * (1 + 5) + strlen(r->names[i]);
    p = malloc(cap ? cap : 1);
    if (p == NULL)
        return -ENOMEM;
    for (i = 0; i < r->nnames; i++) {
        uint8_t inner[1 + 5];
        size_t k = 0;

        len = strlen(r->names[i]);
        inner[k++] = 1 << 3 | PB_WT_STRING;
        k += rs_pb_put_varint(inner + k, len);
        p[n++] = 1 << 3 | PB_WT_STRING;
        n += rs_pb_put_varint(p + n, k + len);
        memcpy(p + n, inner, k);
        memcpy(p + n + k, r->names[i], len);
        n += k + len;
    }
    free(r->services);
    r->services = p;
    r->services_len = n;
    return 0;
}

int rs_reflection_add(struct rs_reflection *r, const char *service_name)
{
    char **names, *s;
    size_t i;

    if (r == NULL || service_name == NULL || service_name[0] == '\0' ||
        strlen(service_name) > 65535)
        return -EINVAL;
    for (i = 0; i < r->nnames; i++)
        if (strcmp(r->names[i], service_name) == 0)
            return 0;
    s = strdup(service_name);
    if (s == NULL)
        return -ENOMEM;
    names = realloc(r->names, (r->nnames + 1) * sizeof(*names));
    if (names == NULL) {
        free(s);
        return -ENOMEM;
    }
    r->names = names;
    r->names[r->nnames++] = s;
    if (encode_services(r) < 0) {
        free(r->names[--r->nnames]);
        return -ENOMEM;
    }
    return 0;
}

const struct rs_service *rs_reflection_service_v1(struct rs_reflection *r)
{
    return &r->svc_v1;
}

const struct rs_service *rs_reflection_service_v1alpha(struct rs_reflection *r)
{
    return &r->svc_v1alpha;
}

void rs_reflection_destroy(struct rs_reflection *r)
{
    size_t i;

    if (r == NULL)
        return;
    for (i = 0; i < r->nfiles; i++)
        free(r->files[i].deps);
    free(r->files);
    for (i = 0; i < r->nsyms; i++)
        free(r->syms[i].name);
    free(r->syms);
    for (i = 0; i < r->nexts; i++)
        free(r->exts[i].extendee);
    free(r->exts);
    for (i = 0; i < r->nnames; i++)
        free(r->names[i]);
    free(r->names);
    free(r->services);
    free(r);
}
