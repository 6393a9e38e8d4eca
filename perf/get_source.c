/* perf/get_source.c: what a Get's data source costs the sending side (issue 17), outside the
 * server: a cached file goes onto a loopback TCP socket in 16 KiB HTTP/2-like DATA frames
 * (9-byte header each), 64 frames per writev, as ringstreamd's Get sends it, three ways:
 *   read:   pread CHUNK into a buffer, CRC32C over it, send from the buffer (what Get does)
 *   mmap:   mmap the file, MADV_POPULATE_READ per chunk (errors come back as errno, no
 *           SIGBUS), CRC32C over the mapping, send from it: no read copy
 *   splice: no CRC; the header by send(MSG_MORE), the payload file -> pipe -> socket: no copy
 *           of ours at all (the floor of a splice path, which could not send a CRC it has not
 *           read)
 * A child process reads the socket. Prints the sending thread's CPU (RUSAGE_THREAD) per GiB
 * and GB/s. Not built by CMake:
 *   cc -O2 -o /tmp/get_source perf/get_source.c -lisal
 *   /tmp/get_source read|mmap|splice FILE CHUNK BYTES      (FILE cached, at least BYTES long) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <isa-l/crc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#define FRAME 16384
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static double cpu(void)
{
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}
static void sendall(int s, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t k = writev(s, iov, n);
        if (k < 0) {
            perror("writev");
            exit(1);
        }
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= k;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 5 || strtoul(argv[3], 0, 0) % FRAME != 0 || strtoul(argv[3], 0, 0) == 0) {
        fprintf(stderr, "usage: get_source read|mmap|splice FILE CHUNK BYTES (CHUNK: n x 16384)\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    size_t chunk = strtoul(argv[3], 0, 0), size = strtoul(argv[4], 0, 0) / chunk * chunk;
    int ls = socket(AF_INET, SOCK_STREAM, 0), s, fd = open(path, O_RDONLY);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001) };
    socklen_t al = sizeof(a);
    if (fd < 0 || bind(ls, (void *)&a, sizeof(a)) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (void *)&a, &al) < 0) {
        perror(path);
        return 1;
    }
    if (fork() == 0) { /* the client: reads to the end */
        int c = socket(AF_INET, SOCK_STREAM, 0);
        static char b[65536];
        if (connect(c, (void *)&a, sizeof(a)) < 0)
            _exit(1);
        while (read(c, b, sizeof(b)) > 0)
            ;
        _exit(0);
    }
    s = accept(ls, 0, 0);
    size_t blen = chunk > (1u << 20) ? chunk : (1u << 20);
    uint8_t *buf = aligned_alloc(4096, blen), *map = NULL, hdr[9 * 64] = { 0 };
    uint32_t crc = 0;
    int p[2];
    pipe(p);
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
    if (!strcmp(mode, "mmap"))
        map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    double t0 = now(), c0 = cpu();
    struct iovec iov[128];
    int n = 0, nf = 0;
    for (size_t off = 0; off < size; off += chunk) {
        uint8_t *d;
        if (!strcmp(mode, "splice")) {
            for (size_t f = 0; f < chunk; f += FRAME) {
                send(s, hdr, 9, MSG_MORE);
                ssize_t k = splice(fd, &(loff_t){ (loff_t)(off + f) }, p[1], NULL, FRAME,
                                   SPLICE_F_MOVE);
                while (k > 0) {
                    ssize_t m = splice(p[0], NULL, s, NULL, k, SPLICE_F_MOVE | SPLICE_F_MORE);
                    if (m <= 0) {
                        perror("splice");
                        exit(1);
                    }
                    k -= m;
                }
            }
            continue;
        }
        if (map) {
            d = map + off;
            if (madvise(d, chunk, MADV_POPULATE_READ) < 0) {
                perror("madvise");
                exit(1);
            }
        } else {
            d = buf + off % blen;
            if (pread(fd, d, chunk, off) != (ssize_t)chunk) {
                perror("pread");
                exit(1);
            }
        }
        crc = crc32_iscsi(d, chunk, crc);
        for (size_t f = 0; f < chunk; f += FRAME) {
            iov[n].iov_base = hdr + 9 * (nf % 64);
            iov[n++].iov_len = 9;
            iov[n].iov_base = d + f;
            iov[n++].iov_len = FRAME;
            nf++;
            if (n == 128) {
                sendall(s, iov, n);
                n = 0;
            }
        }
        if (!map && n > 0 && (off + chunk) % blen == 0) {
            sendall(s, iov, n);
            n = 0;
        } /* the buffer is reused */
    }
    if (n > 0)
        sendall(s, iov, n);
    if (map)
        munmap(map, size);
    double c1 = cpu(), t1 = now();
    close(s);
    wait(NULL);
    printf("%s chunk %zu: %.0f ms CPU/GiB, %.2f GB/s (crc %08x)\n", mode, chunk,
           (c1 - c0) * 1000 / (size / 1073741824.0), size / (t1 - t0) / 1e9, crc);
    return 0;
}
