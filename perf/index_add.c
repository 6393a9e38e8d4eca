/* perf/index_add.c: the cost of the List index on the Put path (workers/bulk/index.c): the mean
 * wall time of rs_index_add() (one LMDB write transaction, MDB_NOSYNC) on a store that already
 * holds N names, and of rs_index_scan() of 32 names. Usage: index_add DIR [N]
 * DIR must not exist (it is created; remove it afterwards). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "workers/bulk/index.h"
#include "workers/bulk/store.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct rs_index_name batch[32];
    struct rs_store st;
    struct rs_index *ix;
    char err[512], name[64];
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 100000;
    double t0, add_s, scan_s;
    long i, scans = 0;
    ssize_t got;

    if (argc < 2) {
        fprintf(stderr, "usage: index_add DIR [N]\n");
        return 2;
    }
    if (rs_store_open(&st, argv[1], err, sizeof(err)) < 0 ||
        rs_index_open(&ix, argv[1], rs_store_dirfd(&st), err, sizeof(err)) < 0) {
        fprintf(stderr, "index_add: %s\n", err);
        return 1;
    }
    t0 = now_s();
    for (i = 0; i < n; i++) {
        int len = snprintf(name, sizeof(name), "perf/%08lx", (unsigned long)(i * 2654435761u));

        if (rs_index_add(ix, name, (size_t)len) < 0)
            return 1;
    }
    add_s = now_s() - t0;
    t0 = now_s();
    got = rs_index_scan(ix, "", 0, "", 0, false, batch, 32);
    while (got == 32) {
        scans++;
        got = rs_index_scan(ix, "", 0, batch[31].name, batch[31].len, true, batch, 32);
    }
    scan_s = now_s() - t0;
    printf("rs_index_add: %ld names, %.2f us each; rs_index_scan of 32: %.2f us each\n", n,
           add_s / (double)n * 1e6, scan_s / (double)(scans + 1) * 1e6);
    rs_index_close(ix);
    rs_store_close(&st);
    return 0;
}
