/* tests/unit/test_bulk_index.c: the bulk store's sorted name index (workers/bulk/index.c). Each
 * test gets a fresh data dir under a temp dir, a store and its index. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <CUnit/CUnit.h>
#include "tests/unit/runner.h"
#include "workers/bulk/index.h"
#include "workers/bulk/store.h"

static char dir[64];
static struct rs_store st;
static struct rs_index *ix;
static char err[512];

static void setup(void)
{
    strcpy(dir, "/tmp/rs-index-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    CU_ASSERT_EQUAL_FATAL(rs_store_open(&st, dir, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL_FATAL(rs_index_open(&ix, dir, rs_store_dirfd(&st), err, sizeof(err)), 0);
}

static int rm_one(const char *path, const struct stat *sb, int type, struct FTW *f)
{
    return remove(path);
}

static void teardown(void)
{
    rs_index_close(ix);
    ix = NULL;
    rs_store_close(&st);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes objects/<key of name> with the metadata of |meta_name| (normally the same name), as
 * a publish leaves it. */
static void make_object_as(const char *name, const char *meta_name)
{
    struct rs_store_meta m = { .size = 0, .modified_unix_ms = 1 };
    uint8_t buf[RS_STORE_META_MAX];
    char key[RS_STORE_KEY_LEN + 1];
    size_t n;
    int fd;

    m.name_len = strlen(meta_name);
    memcpy(m.name, meta_name, m.name_len + 1);
    n = rs_store_meta_encode(&m, buf);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL_FATAL(rs_store_key(name, strlen(name), key), 0);
    fd = openat(rs_store_dirfd(&st), key, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(fsetxattr(fd, RS_STORE_XATTR, buf, n, 0), 0);
    close(fd);
}

static void make_object(const char *name)
{
    make_object_as(name, name);
}

static void remove_object(const char *name)
{
    char key[RS_STORE_KEY_LEN + 1];

    CU_ASSERT_EQUAL_FATAL(rs_store_key(name, strlen(name), key), 0);
    CU_ASSERT_EQUAL(unlinkat(rs_store_dirfd(&st), key, 0), 0);
}

/* Every name that begins with |prefix|, joined with '|' into |out|, read |page| at a time. */
static void scan_all(const char *prefix, size_t page, char *out, size_t cap)
{
    struct rs_index_name names[64];
    struct rs_index_name last = { 0 };
    bool started = false;
    size_t plen = strlen(prefix), used = 0;
    int rounds = 0;

    out[0] = '\0';
    for (;;) {
        ssize_t n =
                started ? rs_index_scan(ix, prefix, plen, last.name, last.len, true, names, page)
                        : rs_index_scan(ix, prefix, plen, prefix, plen, false, names, page);

        CU_ASSERT_FATAL(n >= 0 && ++rounds < 1000);
        for (ssize_t i = 0; i < n; i++)
            used += (size_t)snprintf(out + used, cap - used, "%s|", names[i].name);
        if ((size_t)n < page)
            return;
        last = names[n - 1];
        started = true;
    }
}

/* Shuffled on purpose; byte order: '-' < '.' < '/' < '0'-'9' < 'A'-'Z' < '_' < 'a'-'z'. */
static const char *const names[] = {
    "b", "a/b", "a", "a.b", "A", "a-", "_", "a/a", "aa", "Z", "z", "-", "0", "a/", "a0", "a.",
};
static const char all_sorted[] = "-|0|A|Z|_|a|a-|a.|a.b|a/|a/a|a/b|a0|aa|b|z|";

static void add_all(void)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        CU_ASSERT_EQUAL(rs_index_add(ix, names[i], strlen(names[i])), 0);
}

static void test_scan_is_in_byte_order_whatever_the_insert_order(void)
{
    char got[1024];

    add_all();
    add_all(); /* adding again changes nothing */
    scan_all("", 64, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, all_sorted);
    CU_ASSERT_EQUAL(rs_index_count(ix), (ssize_t)(sizeof(names) / sizeof(names[0])));
}

static void test_pages_of_any_size_concatenate_to_the_whole(void)
{
    char got[1024];

    add_all();
    for (size_t page = 1; page <= 17; page++) {
        scan_all("", page, got, sizeof(got));
        CU_ASSERT_STRING_EQUAL(got, all_sorted);
    }
}

static void test_scan_from_a_key_inclusive_and_after(void)
{
    struct rs_index_name out[4];

    add_all();
    CU_ASSERT_EQUAL(rs_index_scan(ix, "", 0, "a.", 2, false, out, 2), 2);
    CU_ASSERT_STRING_EQUAL(out[0].name, "a.");
    CU_ASSERT_STRING_EQUAL(out[1].name, "a.b");
    CU_ASSERT_EQUAL(rs_index_scan(ix, "", 0, "a.", 2, true, out, 1), 1);
    CU_ASSERT_STRING_EQUAL(out[0].name, "a.b");
    /* A start that is not a name begins at the next one. */
    CU_ASSERT_EQUAL(rs_index_scan(ix, "", 0, "a.c", 3, true, out, 1), 1);
    CU_ASSERT_STRING_EQUAL(out[0].name, "a/");
    CU_ASSERT_EQUAL(rs_index_scan(ix, "", 0, "z", 1, true, out, 4), 0);
    CU_ASSERT_EQUAL(rs_index_scan(ix, "", 0, "~", 1, false, out, 4), 0);
}

static void test_prefix_bounds(void)
{
    char got[1024];

    add_all();
    scan_all("a/", 2, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "a/|a/a|a/b|");
    scan_all("a", 3, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "a|a-|a.|a.b|a/|a/a|a/b|a0|aa|");
    scan_all("a.b", 1, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "a.b|");
    scan_all("a.bc", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "");
    scan_all("Z", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "Z|");
    /* Bytes no name holds, before and after the alphabet. */
    scan_all("\x7f", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "");
    scan_all("a\x7f", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "");
    scan_all("caf\xc3\xa9", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "");
    scan_all(" ", 4, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "");
}

static void test_recheck_removes_only_names_without_object(void)
{
    char got[256];

    make_object("keep");
    CU_ASSERT_EQUAL(rs_index_add(ix, "keep", 4), 0);
    CU_ASSERT_EQUAL(rs_index_add(ix, "gone", 4), 0);
    rs_index_recheck(ix, "keep", 4);
    rs_index_recheck(ix, "gone", 4);
    rs_index_recheck(ix, "never", 5);
    rs_index_settle(ix);
    scan_all("", 8, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "keep|");
    remove_object("keep");
    rs_index_recheck(ix, "keep", 4);
    rs_index_settle(ix);
    CU_ASSERT_EQUAL(rs_index_count(ix), 0);
}

static void reopen(void)
{
    CU_ASSERT_EQUAL_FATAL(rs_index_open(&ix, dir, rs_store_dirfd(&st), err, sizeof(err)), 0);
}

static void test_clean_reopen_trusts_the_index(void)
{
    char got[256];

    /* A name without object survives a clean stop: proof that nothing was rebuilt. */
    CU_ASSERT_EQUAL(rs_index_add(ix, "only-in-index", 13), 0);
    rs_index_close(ix);
    ix = NULL;
    reopen();
    scan_all("", 8, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "only-in-index|");
}

/* kill -9 with the index open: the next open rebuilds it from objects/. */
static void test_reopen_after_unclean_stop_repairs(void)
{
    char got[256];
    pid_t pid;
    int status;

    make_object("both");
    make_object("z/only-object-before");
    make_object_as("mismatch", "other"); /* its metadata names another object */
    CU_ASSERT_EQUAL(rs_index_add(ix, "both", 4), 0);
    rs_index_close(ix);
    ix = NULL;
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct rs_index *cix;

        if (rs_index_open(&cix, dir, rs_store_dirfd(&st), err, sizeof(err)) == 0)
            rs_index_add(cix, "ghost", 5); /* a name without object */
        raise(SIGKILL);
        _exit(1);
    }
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    make_object("after-crash"); /* an object the index never saw */
    reopen();
    scan_all("", 8, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "after-crash|both|z/only-object-before|");
}

static void test_corrupt_index_is_rebuilt(void)
{
    char got[256], path[128];
    char junk[8192];
    int fd;

    make_object("x");
    CU_ASSERT_EQUAL(rs_index_add(ix, "y", 1), 0);
    rs_index_close(ix); /* clean: the marker says "trust me" */
    ix = NULL;
    snprintf(path, sizeof(path), "%s/index.mdb", dir);
    memset(junk, 0x5a, sizeof(junk));
    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    reopen();
    scan_all("", 8, got, sizeof(got));
    CU_ASSERT_STRING_EQUAL(got, "x|");
}

static CU_TestInfo tests[] = {
    { "scan is in byte order whatever the insert order",
      test_scan_is_in_byte_order_whatever_the_insert_order },
    { "pages of any size concatenate to the whole",
      test_pages_of_any_size_concatenate_to_the_whole },
    { "scan from a key, inclusive and after", test_scan_from_a_key_inclusive_and_after },
    { "prefix bounds", test_prefix_bounds },
    { "recheck removes only names without object", test_recheck_removes_only_names_without_object },
    { "clean reopen trusts the index", test_clean_reopen_trusts_the_index },
    { "reopen after an unclean stop repairs", test_reopen_after_unclean_stop_repairs },
    { "a corrupt index is rebuilt", test_corrupt_index_is_rebuilt },
    CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
    { "workers/bulk/index", NULL, NULL, setup, teardown, tests },
    CU_SUITE_INFO_NULL,
};

int main(void)
{
    return rs_test_run(suites);
}
