/* tests/unit/test_bulk_upload.c: the resumable uploads' header codec and table
 * (workers/bulk/upload.c): round trips, rejected headers, recovery of uploads/ at startup
 * (resumed, published leftovers and headerless files removed), reservations against the
 * maximum, one stream at a time, abort, and expiry by the table's thread. Each table test
 * gets a fresh data dir under /tmp. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <CUnit/CUnit.h>
#include "core/sha256.h"
#include "tests/unit/runner.h"
#include "workers/bulk/upload.h"

static void fill_hdr(struct rs_upload_hdr *h, const char *name)
{
    memset(h, 0, sizeof(*h));
    h->name_len = strlen(name);
    memcpy(h->name, name, h->name_len + 1);
}

static void test_hdr_round_trip(void)
{
    struct rs_upload_hdr h, g;
    uint8_t buf[RS_UPLOAD_HDR_MAX];
    size_t n;

    fill_hdr(&h, "dir/object.bin");
    h.want_size = 0x0102030405060708ull;
    h.check_sha = true;
    memset(h.want_sha, 0xab, sizeof(h.want_sha));
    h.has_if_match = true;
    h.overwrite = true;
    memset(h.if_match, 0xcd, sizeof(h.if_match));
    n = rs_upload_hdr_encode(&h, buf);
    CU_ASSERT_EQUAL(n, RS_UPLOAD_HDR_FIXED + h.name_len);
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), 0);
    CU_ASSERT_EQUAL(g.want_size, h.want_size);
    CU_ASSERT(g.check_sha && g.has_if_match && g.overwrite);
    CU_ASSERT_EQUAL(memcmp(g.want_sha, h.want_sha, RS_SHA256_LEN), 0);
    CU_ASSERT_EQUAL(memcmp(g.if_match, h.if_match, RS_SHA256_LEN), 0);
    CU_ASSERT_EQUAL(g.name_len, h.name_len);
    CU_ASSERT_STRING_EQUAL(g.name, "dir/object.bin");

    /* no optional field: zeros in, nothing set out */
    fill_hdr(&h, "a");
    n = rs_upload_hdr_encode(&h, buf);
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), 0);
    CU_ASSERT(!g.check_sha && !g.has_if_match && !g.overwrite);
    CU_ASSERT_EQUAL(g.want_size, 0);

    /* a 255-byte name fits */
    memset(h.name, 'n', RS_BULK_NAME_MAX);
    h.name[RS_BULK_NAME_MAX] = '\0';
    h.name_len = RS_BULK_NAME_MAX;
    n = rs_upload_hdr_encode(&h, buf);
    CU_ASSERT_EQUAL(n, RS_UPLOAD_HDR_MAX);
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), 0);
    CU_ASSERT_EQUAL(g.name_len, RS_BULK_NAME_MAX);
}

static void test_hdr_rejects(void)
{
    struct rs_upload_hdr h, g;
    uint8_t buf[RS_UPLOAD_HDR_MAX + 8];
    size_t n;

    fill_hdr(&h, "ok/name");
    n = rs_upload_hdr_encode(&h, buf);
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, RS_UPLOAD_HDR_FIXED, &g), -EBADMSG); /* no name */
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, 3, &g), -EBADMSG);
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, RS_UPLOAD_HDR_MAX + 1, &g), -EBADMSG);
    buf[0] = 'X';
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), -EBADMSG); /* magic */
    n = rs_upload_hdr_encode(&h, buf);
    buf[4] = 0x80;
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), -EBADMSG); /* unknown flag */
    buf[4] = 4;
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), -EBADMSG); /* if_match without overwrite */
    buf[4] = 0;
    buf[RS_UPLOAD_HDR_FIXED] = '/';
    CU_ASSERT_EQUAL(rs_upload_hdr_decode(buf, n, &g), -EBADMSG); /* an invalid name */
    h.name_len = 0;
    CU_ASSERT_EQUAL(rs_upload_hdr_encode(&h, buf), 0);
    h.name_len = RS_BULK_NAME_MAX + 1;
    CU_ASSERT_EQUAL(rs_upload_hdr_encode(&h, buf), 0);
}

static void test_id_shape(void)
{
    CU_ASSERT(rs_upload_id_valid("0123456789abcdef0123456789abcdef", 32));
    CU_ASSERT(!rs_upload_id_valid("0123456789abcdef0123456789abcde", 31));
    CU_ASSERT(!rs_upload_id_valid("0123456789ABCDEF0123456789abcdef", 32));
    CU_ASSERT(!rs_upload_id_valid("0123456789abcdef0123456789abcde/", 32));
    CU_ASSERT(!rs_upload_id_valid("", 0));
}

/* --- the table ------------------------------------------------------------------------------ */

static char dir[64];
static int datafd = -1;
static struct rs_uploads ups;
static char err[512];

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *f)
{
    return remove(path);
}

static void make_dir(void)
{
    strcpy(dir, "/tmp/rs-upload-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    datafd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    CU_ASSERT_FATAL(datafd >= 0);
    CU_ASSERT_EQUAL_FATAL(mkdirat(datafd, "uploads", 0750), 0);
}

static void drop_dir(void)
{
    close(datafd);
    datafd = -1;
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* uploads/<id> holding |data|, with an upload header (|hdr|) and/or object metadata. */
static void plant(const char *id, const char *data, bool hdr, bool meta)
{
    char path[128];
    uint8_t x[RS_UPLOAD_HDR_MAX];
    struct rs_upload_hdr h;
    struct rs_store_meta m = { .size = strlen(data),
                               .modified_unix_ms = (int64_t)time(NULL) * 1000 };
    uint8_t xm[RS_STORE_META_MAX];
    int fd;

    m.name_len = strlen("planted/name");
    memcpy(m.name, "planted/name", m.name_len + 1);
    snprintf(path, sizeof(path), "%s/uploads/%s", dir, id);
    fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0640);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, data, strlen(data)), (ssize_t)strlen(data));
    fill_hdr(&h, "planted/name");
    if (hdr)
        CU_ASSERT_EQUAL(fsetxattr(fd, RS_UPLOAD_XATTR, x, rs_upload_hdr_encode(&h, x), 0), 0);
    if (meta)
        CU_ASSERT_EQUAL(fsetxattr(fd, RS_STORE_XATTR, xm, rs_store_meta_encode(&m, xm), 0), 0);
    close(fd);
}

static bool exists(const char *id)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/uploads/%s", dir, id);
    return access(path, F_OK) == 0;
}

#define ID_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define ID_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define ID_C "cccccccccccccccccccccccccccccccc"
#define ID_D "dddddddddddddddddddddddddddddddd"

static void test_recovery(void)
{
    struct rs_upload_status st;
    struct rs_upload *up = NULL;
    struct rs_sha256 sha = { 0 }, want = { 0 };
    uint8_t d1[RS_SHA256_LEN], d2[RS_SHA256_LEN];

    make_dir();
    plant(ID_A, "hello, resumed upload", true, false); /* an open upload */
    plant(ID_B, "published already", true, true);      /* published before the crash: */
    CU_ASSERT_EQUAL(linkat(datafd, "uploads/" ID_B, datafd, "published-link", 0), 0); /* 2 links */
    plant(ID_C, "no header", false, false);            /* not ours to resume */
    plant(ID_D, "finish never published", true, true); /* metadata written, one link: open */
    CU_ASSERT_EQUAL_FATAL(rs_uploads_open(&ups, datafd, err, sizeof(err)), 0);
    CU_ASSERT(exists(ID_A));
    CU_ASSERT(!exists(ID_C));
    /* the published one's name goes by the table's thread (bounded wait) */
    for (int i = 0; i < 500 && exists(ID_B); i++)
        usleep(10000);
    CU_ASSERT(!exists(ID_B));
    CU_ASSERT(exists(ID_D));
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_D, 32, &st), 0);
    CU_ASSERT_EQUAL(st.persisted, strlen("finish never published"));
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_A, 32, &st), 0);
    CU_ASSERT_EQUAL(st.persisted, strlen("hello, resumed upload"));
    CU_ASSERT(!st.published);
    /* the published one's status is kept until the TTL, as before the restart */
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_B, 32, &st), 0);
    CU_ASSERT(st.published);
    CU_ASSERT_STRING_EQUAL(st.object.name, "planted/name");
    CU_ASSERT_EQUAL(st.object.size, strlen("published already"));
    CU_ASSERT(exists(ID_D));
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_D, 32, &st), 0);
    CU_ASSERT_EQUAL(st.persisted, strlen("finish never published"));
    /* the hash state is that of the bytes on disk */
    CU_ASSERT_EQUAL_FATAL(rs_uploads_acquire(&ups, ID_A, 32, &up, &sha), 0);
    CU_ASSERT_STRING_EQUAL(up->hdr.name, "planted/name");
    CU_ASSERT_EQUAL(rs_sha256_final(&sha, d1), 0);
    CU_ASSERT_EQUAL(rs_sha256_init(&want), 0);
    CU_ASSERT_EQUAL(rs_sha256_update(&want, "hello, resumed upload", 21), 0);
    CU_ASSERT_EQUAL(rs_sha256_final(&want, d2), 0);
    CU_ASSERT_EQUAL(memcmp(d1, d2, RS_SHA256_LEN), 0);
    rs_sha256_free(&sha);
    rs_sha256_free(&want);
    CU_ASSERT_EQUAL(rs_sha256_init(&sha), 0);
    rs_uploads_release(&ups, up, 21, &sha, &st);
    CU_ASSERT_PTR_NULL(sha.impl); /* taken back */
    rs_uploads_close(&ups);
    CU_ASSERT(exists(ID_A)); /* open uploads outlive the process */
    drop_dir();
}

static void test_busy_abort_max(void)
{
    struct rs_upload_status st;
    struct rs_upload_hdr h;
    struct rs_upload *up = NULL;
    struct rs_sha256 sha = { 0 };
    int fd;

    make_dir();
    CU_ASSERT_EQUAL_FATAL(rs_uploads_open(&ups, datafd, err, sizeof(err)), 0);
    rs_uploads_limits(&ups, 3600000, 2);
    fill_hdr(&h, "x");
    CU_ASSERT(rs_uploads_reserve(&ups));
    CU_ASSERT(rs_uploads_reserve(&ups));
    CU_ASSERT(!rs_uploads_reserve(&ups)); /* max 2 */
    rs_uploads_unreserve(&ups);
    fd = openat(datafd, "uploads/" ID_A, O_CREAT | O_RDWR | O_CLOEXEC, 0640);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(rs_uploads_add(&ups, ID_A, &h, fd, &st), 0);
    CU_ASSERT_STRING_EQUAL(st.id, ID_A);
    CU_ASSERT_EQUAL(st.persisted, 0);
    CU_ASSERT(rs_uploads_reserve(&ups));  /* the add used the first reservation */
    CU_ASSERT(!rs_uploads_reserve(&ups)); /* one open + one reserved */
    CU_ASSERT_EQUAL(rs_uploads_acquire(&ups, ID_A, 32, &up, &sha), 0);
    CU_ASSERT_EQUAL(rs_uploads_acquire(&ups, ID_A, 32, &up, &sha), -EBUSY);
    CU_ASSERT_EQUAL(rs_uploads_abort(&ups, ID_A, 32, &st), -EBUSY);
    CU_ASSERT_EQUAL(rs_uploads_acquire(&ups, ID_B, 32, &up, &sha), -ENOENT);
    CU_ASSERT_EQUAL(rs_uploads_acquire(&ups, "short", 5, &up, &sha), -ENOENT);
    rs_uploads_release(&ups, up, 7, &sha, &st);
    CU_ASSERT_EQUAL(st.persisted, 7);
    CU_ASSERT_EQUAL(rs_uploads_abort(&ups, ID_A, 32, &st), 0);
    CU_ASSERT_EQUAL(st.persisted, 7);
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_A, 32, &st), -ENOENT);
    rs_uploads_unreserve(&ups); /* the other reservation */
    CU_ASSERT(rs_uploads_reserve(&ups));
    CU_ASSERT(rs_uploads_reserve(&ups));
    rs_uploads_unreserve(&ups);
    rs_uploads_unreserve(&ups);
    /* the thread removes the aborted upload's file (bounded wait) */
    for (int i = 0; i < 500 && exists(ID_A); i++)
        usleep(10000);
    CU_ASSERT(!exists(ID_A));
    rs_uploads_close(&ups);
    drop_dir();
}

static void test_expiry(void)
{
    struct rs_upload_status st;
    struct rs_upload_hdr h;
    int fd, i;

    make_dir();
    CU_ASSERT_EQUAL_FATAL(rs_uploads_open(&ups, datafd, err, sizeof(err)), 0);
    rs_uploads_limits(&ups, 50, 10);
    fill_hdr(&h, "x");
    CU_ASSERT(rs_uploads_reserve(&ups));
    fd = openat(datafd, "uploads/" ID_B, O_CREAT | O_RDWR | O_CLOEXEC, 0640);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(rs_uploads_add(&ups, ID_B, &h, fd, &st), 0);
    for (i = 0; i < 500 && (exists(ID_B) || rs_uploads_query(&ups, ID_B, 32, &st) == 0); i++)
        usleep(10000);
    CU_ASSERT_EQUAL(rs_uploads_query(&ups, ID_B, 32, &st), -ENOENT);
    CU_ASSERT(!exists(ID_B));
    /* its place is free again: all 10 can be reserved */
    for (i = 0; i < 10; i++)
        CU_ASSERT(rs_uploads_reserve(&ups));
    rs_uploads_close(&ups);
    drop_dir();
}

static CU_TestInfo tests[] = {
    { "header round trip", test_hdr_round_trip },
    { "bad headers are rejected", test_hdr_rejects },
    { "upload id shape", test_id_shape },
    { "startup: resume open uploads, remove finished and headerless files", test_recovery },
    { "one stream at a time, abort, --max-uploads reservations", test_busy_abort_max },
    { "idle uploads expire and their files go", test_expiry },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/bulk uploads", NULL, NULL, NULL, NULL, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
