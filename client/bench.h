/* client/bench.h: `ringstream bench`: closed-loop load on one server over the client call
 * layer (client/rpc.h): |conns| connections, one thread each, |streams| calls in flight on
 * each; every call's grpc-status checked; throughput and a latency histogram printed. */
#ifndef RS_CLIENT_BENCH_H
#define RS_CLIENT_BENCH_H
#include <stdbool.h>
#include <stdint.h>
#include "client/rpc.h"

enum rsc_bench_kind {
    RSC_BENCH_UNARY, /* Stat of the bench object */
    RSC_BENCH_GET,   /* Get of the whole bench object (|size| bytes), chunks CRC-checked */
    RSC_BENCH_PUT,   /* Put of |size| bytes, overwrite, one name per stream */
    RSC_BENCH_ECHO,  /* Echo of |size| bytes in 64 KiB chunks */
};

struct rsc_bench_opts {
    const struct rsc_conn_opts *conn; /* borrowed */
    enum rsc_bench_kind kind;
    unsigned conns, streams;
    uint64_t size;
    double duration_s;
    bool json;
};

/* Parses "unary", "get", "put" or "echo". Returns 0 or -EINVAL. */
int rsc_bench_kind_parse(const char *s, enum rsc_bench_kind *kind);
/* Runs the benchmark and prints the result (stdout). Returns an exit code of the CLI:
 * 0, 1 (a call failed with a gRPC status), 4 (a CRC32C mismatch), 5 (connection failure). */
int rsc_bench_run(const struct rsc_bench_opts *o);

#endif /* RS_CLIENT_BENCH_H */
