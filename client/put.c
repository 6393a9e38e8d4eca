/* client/put.c: `ringstream put FILE NAME`. The file's SHA-256 goes in the header and every
 * data message is ChecksummedData (CRC32C), so the server publishes exactly these bytes or
 * nothing. At or above --resumable-threshold: StartUpload/Upload with the upload's id and the
 * file's identity kept under $XDG_CACHE_HOME/ringstream/uploads/, so the same command resumes
 * from the server's persisted_size after any interruption. stdin: one Put stream. */
#include "client/cli.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "proto/grpc.h"

/* --- put ---------------------------------------------------------------------------------- */

struct put {
    int fd;
    bool is_stdin;
    uint64_t size;      /* of the file (0 for stdin: unknown) */
    uint64_t off;       /* bytes read and sent so far */
    bool header_sent;   /* Put: the header went out; Upload: the first message went out */
    bool finished;      /* the last message went out */
    int io_err;         /* -errno of a local read failure */
    uint8_t *buf;       /* RSC_HDR_ROOM + RSC_DATA_CHUNK + 8 */
    struct rs_sha256 h; /* of what was sent (stdin: the only hash) */
    uint8_t header[RSC_SMALL_MSG]; /* Put: the encoded header message */
    size_t header_len;
    char upload_id[65]; /* Upload: every message names it */
    uint64_t response_n;
    ringstream_v1_ObjectInfo info; /* Put's answer */
    ringstream_v1_UploadStatus up; /* Upload's answer */
    bool upload;
};

/* Reads the next piece of the input into p->buf + RSC_HDR_ROOM. Returns its length or -1. */
static ssize_t put_read(struct put *p, bool *last)
{
    ssize_t n = rsc_read_full(p->fd, p->buf + RSC_HDR_ROOM, RSC_DATA_CHUNK);

    if (n < 0) {
        p->io_err = (int)n;
        return -1;
    }
    if (!p->is_stdin && p->off + (uint64_t)n > p->size)
        n = (ssize_t)(p->size - p->off); /* the file grew: the header's size is the truth */
    if (!p->is_stdin && p->off + (uint64_t)n < p->size && n < RSC_DATA_CHUNK) {
        p->io_err = -ENODATA; /* shrank under us */
        return -1;
    }
    *last = p->is_stdin ? n < RSC_DATA_CHUNK : p->off + (uint64_t)n == p->size;
    if (rs_sha256_update(&p->h, p->buf + RSC_HDR_ROOM, (size_t)n) < 0) {
        p->io_err = -EIO;
        return -1;
    }
    return n;
}

static int put_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct put *p = arg;
    uint8_t *start, *end;
    bool last = false;
    ssize_t n;

    if (!p->header_sent) {
        p->header_sent = true;
        *msg = p->header;
        *len = p->header_len;
        return 1;
    }
    if (p->finished)
        return 0;
    n = put_read(p, &last);
    if (n < 0)
        return -1;
    if (n == 0) { /* nothing left (an empty object, or stdin ended on a chunk boundary) */
        p->finished = true;
        return 0;
    }
    start = rsc_wrap_checked(p->buf + RSC_HDR_ROOM, (size_t)n, 3, &end);
    p->off += (uint64_t)n;
    p->finished = last;
    rsc_progress_add((uint64_t)n);
    *msg = start;
    *len = (size_t)(end - start);
    return 1;
}

static int upload_next(void *arg, const uint8_t **msg, size_t *len)
{
    struct put *p = arg;
    uint8_t *start, *end, *q;
    size_t idlen = strlen(p->upload_id);
    bool last = false, first = !p->header_sent;
    ssize_t n;

    if (p->finished)
        return 0;
    n = put_read(p, &last);
    if (n < 0)
        return -1;
    if (n > 0) {
        start = rsc_wrap_checked(p->buf + RSC_HDR_ROOM, (size_t)n, 4, &end);
    } else {
        last = true;
        start = end = p->buf + RSC_HDR_ROOM;
    }
    if (first) { /* UploadRequest.write_offset: where this stream's data starts */
        start = rsc_put_varint_before(start, p->off);
        *--start = (2 << 3) | PB_WT_VARINT;
    }
    q = start - idlen; /* UploadRequest.upload_id */
    memcpy(q, p->upload_id, idlen);
    start = rsc_put_varint_before(q, idlen);
    *--start = (1 << 3) | PB_WT_STRING;
    if (last) { /* UploadRequest.finish */
        *end++ = (5 << 3) | PB_WT_VARINT;
        *end++ = 1;
    }
    p->header_sent = true;
    p->off += (uint64_t)n;
    p->finished = last;
    rsc_progress_add((uint64_t)n);
    *msg = start;
    *len = (size_t)(end - start);
    return 1;
}

static int on_put_response(void *arg, const uint8_t *m, size_t len)
{
    struct put *p = arg;
    pb_istream_t s = pb_istream_from_buffer(m, len);
    bool ok;

    if (++p->response_n > 1)
        return -1;
    if (p->upload)
        ok = pb_decode(&s, ringstream_v1_UploadStatus_fields, &p->up);
    else
        ok = pb_decode(&s, ringstream_v1_ObjectInfo_fields, &p->info);
    return ok ? 0 : -1;
}

/* Checks the stored object against what was sent and prints the result. */
static int put_done(struct put *p, const char *what, const ringstream_v1_ObjectInfo *oi,
                    const uint8_t *sha, uint64_t size, uint64_t resumed_from, bool resumable)
{
    char extra[128];

    if (oi->size != size || memcmp(oi->sha256, sha, RS_SHA256_LEN) != 0) {
        char a[65], b[65];

        rsc_hex(a, sha, RS_SHA256_LEN);
        rsc_hex(b, oi->sha256, RS_SHA256_LEN);
        return rsc_fail(RSC_EX_INTEGRITY, what, -1, "INTEGRITY",
                        "the server stored %" PRIu64 " bytes with SHA-256 %s; sent %" PRIu64
                        " bytes with SHA-256 %s",
                        oi->size, b, size, a);
    }
    rsc_progress_end();
    snprintf(extra, sizeof(extra), ",\"resumable\":%s,\"resumed_from\":%" PRIu64,
             resumable ? "true" : "false", resumed_from);
    if (rsc_cli.json)
        rsc_json_info(stdout, "put", oi, extra);
    return RSC_EX_OK;
}

/* One Put stream: header, then CRC32C-checked data. */
static int put_stream(struct put *p, const char *what, const char *name, const uint8_t *sha)
{
    ringstream_v1_PutRequest r = ringstream_v1_PutRequest_init_zero;
    struct rsc_bytes bn = { name, strlen(name) }, bs = { sha, sha != NULL ? RS_SHA256_LEN : 0 };
    uint8_t got[RS_SHA256_LEN];
    struct rsc_status st;
    struct rsc_conn *c;
    int code, ret;

    r.which_part = ringstream_v1_PutRequest_header_tag;
    rsc_bind_bytes(&r.part.header.name, &bn);
    rsc_bind_bytes(&r.part.header.sha256, &bs);
    r.part.header.size = p->is_stdin ? 0 : p->size;
    r.part.header.overwrite = rsc_cli.overwrite;
    p->header_len = rsc_encode(ringstream_v1_PutRequest_fields, &r, p->header, sizeof(p->header));
    if (p->header_len == 0)
        return rsc_fail(RSC_EX_USAGE, what, -1, NULL, "name too long");
    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        return code;
    rsc_progress_begin(p->is_stdin ? 0 : p->size, 0);
    ret = rsc_call_run(c, RSC_SVC "Put", NULL, 0, put_next, on_put_response, p, &st);
    rsc_conn_close(c);
    if (p->io_err != 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "reading the input: %s",
                        p->io_err == -ENODATA ? "the file shrank while being sent"
                                              : strerror(-p->io_err));
    if (ret == -ECANCELED)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0 || st.code != 0)
        return rsc_fail_call(what, ret, &st);
    if (p->response_n != 1)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "no ObjectInfo in the response");
    if (rs_sha256_final(&p->h, got) < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "SHA-256 failed");
    return put_done(p, what, &p->info, got, p->off, 0, false);
}

/* Resumable upload state: identity() = "id\npath\nsize\nmtime_ns\nino\ndev\noverwrite|create\n",
 * then the SHA-256 in rsc_hex and "\n" (put_resumable). */
static void identity(char *out, size_t len, const char *id, const char *path, const struct stat *s)
{
    /* --overwrite is part of it: StartUpload fixed it for the upload's publication. */
    snprintf(out, len, "%s\n%s\n%" PRIu64 "\n%" PRId64 "\n%" PRIu64 "\n%" PRIu64 "\n%s\n", id, path,
             (uint64_t)s->st_size, (int64_t)s->st_mtim.tv_sec * 1000000000 + s->st_mtim.tv_nsec,
             (uint64_t)s->st_ino, (uint64_t)s->st_dev, rsc_cli.overwrite ? "overwrite" : "create");
}

static int upload_ref_call(struct rsc_conn *c, const char *method, const char *id,
                           ringstream_v1_UploadStatus *us, struct rsc_status *st)
{
    uint8_t req[RSC_SMALL_MSG];
    size_t len = rsc_name_request(ringstream_v1_UploadRef_fields, id, req);
    struct rsc_unary u = { ringstream_v1_UploadStatus_fields, us, 0 };
    int ret;

    memset(us, 0, sizeof(*us));
    ret = rsc_call_run(c, method, req, len, NULL, rsc_on_unary, &u, st);
    if (ret == 0 && st->code == 0 && u.n != 1)
        return -EPROTO;
    return ret;
}

/* The SHA-256 of the whole file, before sending: it goes in the header, so the server refuses
 * (DATA_LOSS) rather than publish anything but this file's exact bytes. Returns 0 or the exit
 * code (printed). */
static int prehash(struct put *p, const char *what, const char *file, uint8_t sha[RS_SHA256_LEN])
{
    struct rs_sha256 pre;
    int ret;

    if (rs_sha256_init(&pre) < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "out of memory");
    ret = rsc_hash_fd(p->fd, p->size, &pre, p->buf, RSC_DATA_CHUNK, "hashing ");
    if (ret == 0 && rs_sha256_final(&pre, sha) < 0)
        ret = -EIO;
    rs_sha256_free(&pre);
    if (ret < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", file,
                        ret == -ENODATA ? "shrank while being read" : strerror(-ret));
    return 0;
}

static bool unhex(const char *in, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        int v = in[i] >= '0' && in[i] <= '9'   ? in[i] - '0'
                : in[i] >= 'a' && in[i] <= 'f' ? in[i] - 'a' + 10
                                               : -1;

        if (v < 0)
            return false;
        if (i % 2 == 0)
            out[i / 2] = (uint8_t)(v << 4);
        else
            out[i / 2] |= (uint8_t)v;
    }
    return true;
}

/* The state file holds identity() and then the file's SHA-256 in rsc_hex, so a resume with an
 * unchanged file skips the hashing pass (a changed one fails the server's check anyway). */
static int put_resumable(struct put *p, const char *what, const char *name, const char *path,
                         const struct stat *sb)
{
    uint8_t sha[RS_SHA256_LEN];
    char shahex[2 * RS_SHA256_LEN + 1];
    bool have_sha = false;
    char key[PATH_MAX + 600], spath[PATH_MAX], text[PATH_MAX + 200], want[PATH_MAX + 200];
    char abspath[PATH_MAX];
    ringstream_v1_UploadStatus us;
    struct rsc_status st;
    struct rsc_conn *c;
    uint64_t resumed_from = 0;
    int code, ret;
    char id[65] = "";

    if (realpath(path, abspath) == NULL)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", path, strerror(errno));
    snprintf(key, sizeof(key), "%s\n%s\n%s", rsc_cli.conn.server,
             rsc_cli.conn.tls.on ? "tls" : "tcp", name);
    ret = rsc_state_path("uploads", key, strlen(key), spath, sizeof(spath));
    if (ret < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "cache dir: %s", strerror(-ret));
    c = rsc_connect_or_fail(what, &code);
    if (c == NULL)
        return code;

    /* An upload of this name to this server left by an earlier run? */
    if (rsc_state_read(spath, text, sizeof(text)) == 0) {
        char *nl = strchr(text, '\n');

        if (nl != NULL && (size_t)(nl - text) < sizeof(id)) {
            memcpy(id, text, (size_t)(nl - text));
            id[nl - text] = '\0';
        }
        identity(want, sizeof(want), id, abspath, sb);
        if (id[0] != '\0' && strncmp(want, text, strlen(want)) == 0) {
            const char *h = text + strlen(want);

            have_sha = strlen(h) == 2 * RS_SHA256_LEN + 1 && h[2 * RS_SHA256_LEN] == '\n' &&
                       unhex(h, sha, RS_SHA256_LEN);
        }
        if (id[0] != '\0' && have_sha) {
            ret = upload_ref_call(c, RSC_SVC "QueryUpload", id, &us, &st);
            if (ret < 0 && ret != -EPROTO) {
                rsc_conn_close(c);
                return rsc_fail_call(what, ret, &st);
            }
            if (ret == 0 && st.code == 0 && us.has_object) { /* published; the answer was lost */
                rsc_conn_close(c);
                unlink(spath);
                p->off = sb->st_size;
                return put_done(p, what, &us.object, sha, (uint64_t)sb->st_size,
                                (uint64_t)sb->st_size, true);
            }
            if (ret == 0 && st.code != 0 && st.code != RS_GRPC_NOT_FOUND) {
                /* a server in trouble (UNAVAILABLE, RESOURCE_EXHAUSTED, ...): keep the state */
                rsc_conn_close(c);
                return rsc_fail_call(what, ret, &st);
            }
            if (ret == 0 && st.code == 0 && us.persisted_size <= (uint64_t)sb->st_size) {
                resumed_from = us.persisted_size;
            } else if (ret == 0 && st.code == 0) { /* more than the file: not ours to finish */
                upload_ref_call(c, RSC_SVC "AbortUpload", id, &us, &st);
                id[0] = '\0';
            } else {
                id[0] = '\0'; /* expired or unknown (NOT_FOUND): start over */
            }
        } else if (id[0] != '\0') {
            /* The file changed since: the old upload is of no use. */
            upload_ref_call(c, RSC_SVC "AbortUpload", id, &us, &st);
            id[0] = '\0';
        }
        if (id[0] == '\0')
            unlink(spath);
    }
    if (!have_sha) {
        code = prehash(p, what, path, sha);
        if (code != 0) {
            rsc_conn_close(c);
            return code;
        }
    }
    if (id[0] == '\0') {
        ringstream_v1_PutHeader h = ringstream_v1_PutHeader_init_zero;
        struct rsc_bytes bn = { name, strlen(name) }, bs = { sha, RS_SHA256_LEN };
        struct rsc_unary u = { ringstream_v1_UploadStatus_fields, &us, 0 };
        uint8_t req[RSC_SMALL_MSG];
        size_t len;

        rsc_bind_bytes(&h.name, &bn);
        rsc_bind_bytes(&h.sha256, &bs);
        h.size = (uint64_t)sb->st_size;
        h.overwrite = rsc_cli.overwrite;
        len = rsc_encode(ringstream_v1_PutHeader_fields, &h, req, sizeof(req));
        memset(&us, 0, sizeof(us));
        ret = rsc_call_run(c, RSC_SVC "StartUpload", req, len, NULL, rsc_on_unary, &u, &st);
        if (ret == 0 && st.code == RS_GRPC_UNIMPLEMENTED) {
            /* A server without resumable uploads: one Put stream does the job. */
            rsc_conn_close(c);
            return put_stream(p, what, name, sha);
        }
        if (ret == -ECANCELED || (ret == 0 && st.code == 0 && u.n != 1)) {
            rsc_conn_close(c);
            return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "malformed StartUpload response");
        }
        if (ret < 0 || st.code != 0) {
            rsc_conn_close(c);
            return rsc_fail_call(what, ret, &st);
        }
        snprintf(id, sizeof(id), "%s", us.upload_id);
        identity(text, sizeof(text), id, abspath, sb);
        rsc_hex(shahex, sha, RS_SHA256_LEN);
        strncat(text, shahex, sizeof(text) - strlen(text) - 2);
        strcat(text, "\n");
        ret = rsc_state_write(spath, text);
        if (ret < 0) {
            upload_ref_call(c, RSC_SVC "AbortUpload", id, &us, &st);
            rsc_conn_close(c);
            return rsc_fail(RSC_EX_IO, what, -1, NULL, "cannot save the upload state %s: %s", spath,
                            strerror(-ret));
        }
    }
    p->upload = true;
    snprintf(p->upload_id, sizeof(p->upload_id), "%s", id);
    /* ABORTED: the server still runs the stream of a client that died (kill -9) and has not
     * noticed yet; FAILED_PRECONDITION: persisted_size moved since QueryUpload. Both: ask
     * again where to start, a bounded number of times. */
    for (int attempt = 1;; attempt++) {
        if (lseek(p->fd, (off_t)resumed_from, SEEK_SET) < 0) {
            rsc_conn_close(c);
            return rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", path, strerror(errno));
        }
        p->off = resumed_from;
        p->header_sent = p->finished = false;
        p->response_n = 0;
        rsc_progress_begin(p->size, resumed_from);
        ret = rsc_call_run(c, RSC_SVC "Upload", NULL, 0, upload_next, on_put_response, p, &st);
        if (p->io_err != 0 || ret != 0 || attempt == 5 ||
            (st.code != RS_GRPC_ABORTED && st.code != RS_GRPC_FAILED_PRECONDITION))
            break;
        if (st.code == RS_GRPC_ABORTED) {
            struct timespec ts = { 0, 200000000L * attempt };

            nanosleep(&ts, NULL);
        }
        ret = upload_ref_call(c, RSC_SVC "QueryUpload", id, &us, &st);
        if (ret != 0 || st.code != 0 || us.has_object || us.persisted_size > p->size)
            break;
        resumed_from = us.persisted_size;
    }
    rsc_conn_close(c);
    if (p->io_err != 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "reading %s: %s", path,
                        p->io_err == -ENODATA ? "the file shrank while being sent"
                                              : strerror(-p->io_err));
    if (ret == -ECANCELED)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL", "malformed response from the server");
    if (ret < 0) /* connection lost: the state stays, the same command resumes */
        return rsc_fail_call(what, ret, &st);
    if (st.code == 0 && us.has_object && p->response_n == 0) { /* published meanwhile */
        unlink(spath);
        return put_done(p, what, &us.object, sha, (uint64_t)sb->st_size, resumed_from, true);
    }
    if (st.code != 0) {
        /* A finish that failed its checks ended the upload; NOT_FOUND: it expired. Either
         * way the next run starts over. ABORTED, UNAVAILABLE and an offset disagreement keep
         * the state: the next run asks again. */
        if (st.code != RS_GRPC_ABORTED && st.code != RS_GRPC_UNAVAILABLE &&
            st.code != RS_GRPC_FAILED_PRECONDITION)
            unlink(spath);
        return rsc_fail_call(what, ret, &st);
    }
    if (p->response_n != 1 || !p->up.has_object)
        return rsc_fail(RSC_EX_CONN, what, -1, "INTERNAL",
                        "the finishing Upload returned no object");
    unlink(spath);
    return put_done(p, what, &p->up.object, sha, (uint64_t)sb->st_size, resumed_from, true);
}

int rsc_cmd_put(int argc, char **argv)
{
    struct put p = { .fd = -1 };
    uint8_t sha[RS_SHA256_LEN];
    const char *file, *name;
    char what[PATH_MAX + 300];
    struct stat sb;
    int code;

    if (argc != 2)
        return rsc_fail(RSC_EX_USAGE, "put", -1, NULL, "usage: ringstream put FILE NAME");
    file = argv[0];
    name = argv[1];
    snprintf(what, sizeof(what), "put %s", name);
    p.is_stdin = strcmp(file, "-") == 0;
    p.fd = p.is_stdin ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
    if (p.fd < 0)
        return rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", file, strerror(errno));
    p.buf = malloc(RSC_HDR_ROOM + RSC_DATA_CHUNK + 16);
    if (p.buf == NULL || rs_sha256_init(&p.h) < 0) {
        code = rsc_fail(RSC_EX_IO, what, -1, NULL, "out of memory");
        goto out;
    }
    if (!p.is_stdin) {
        if (fstat(p.fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            code = rsc_fail(RSC_EX_IO, what, -1, NULL, "%s: %s", file,
                            S_ISDIR(sb.st_mode) ? "is a directory" : strerror(errno));
            goto out;
        }
        p.size = (uint64_t)sb.st_size;
    }
    if (!p.is_stdin && p.size >= rsc_cli.resumable_threshold) {
        code = put_resumable(&p, what, name, file, &sb);
    } else if (!p.is_stdin) {
        code = prehash(&p, what, file, sha);
        if (code == 0)
            code = put_stream(&p, what, name, sha);
    } else {
        code = put_stream(&p, what, name, NULL);
    }
out:
    rs_sha256_free(&p.h);
    free(p.buf);
    if (p.fd >= 0 && !p.is_stdin)
        close(p.fd);
    return code;
}
