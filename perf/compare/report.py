#!/usr/bin/python3
"""perf/compare/report.py: the tables of a perf/compare run, from its CSV.

  report.py --csv FILE [--results perf/RESULTS.md] --command CMD --quick 0|1 --size B --seconds S

Prints the markdown; with --results, replaces the text between the compare markers in that
file (appends the section when the markers are missing). Throughput is the median over the
runs that passed their check, with the min-max spread; ratios are ringstreamd's median over
the peer's. A server with a failed row is marked FAILED in both tables.
"""
import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import time

BEGIN = "<!-- compare:begin -->"
END = "<!-- compare:end -->"
PEERS = ["grpc-go", "grpc-cpp", "h2o", "nghttpd"]
ONE_STREAM = ["get-64k", "get-1m", "put-64k", "put-1m", "echo-64k", "echo-1m"]
ORDER = ["unary", "root", "get-64k", "get-1m", "put-64k", "put-1m", "echo-64k", "echo-1m",
         "get-8s", "get-8c", "conns-100", "conns-1000", "conns-10000", "iperf"]
# h2load's --warm-up-time per scenario (its CPU time is read over the whole run).
WARM = {"conns-100": 2, "conns-1000": 3, "conns-10000": 5}


def describe(sc, size, seconds):
    big = "%d MiB" % (size >> 20) if size < 1 << 30 else "%g GiB" % (size / (1 << 30))
    return {
        "unary": "UnaryCall 32 B, 100 conns x 10 streams, %ss" % seconds,
        "root": "GET /, 100 conns x 10 streams, %ss" % seconds,
        "get-64k": "Get %s, 1 stream, 64 KiB chunks" % big,
        "get-1m": "Get %s, 1 stream, 1 MiB chunks" % big,
        "put-64k": "Put %s, 1 stream, 64 KiB messages" % big,
        "put-1m": "Put %s, 1 stream, 1 MiB messages" % big,
        "echo-64k": "Echo %s, 1 stream, 64 KiB messages (per direction)" % big,
        "echo-1m": "Echo %s, 1 stream, 1 MiB messages (per direction)" % big,
        "get-8s": "8 x Get %s, 8 streams on 1 conn" % big,
        "get-8c": "8 x Get %s, 8 conns" % big,
        "conns-100": "UnaryCall 32 B, 100 conns x 1 stream, %ss" % seconds,
        "conns-1000": "UnaryCall 32 B, 1,000 conns x 1 stream, %ss" % seconds,
        "conns-10000": "UnaryCall 32 B, 10,000 conns x 1 stream, %ss" % seconds,
        "iperf": "iperf3, 1 TCP stream on loopback, %ss" % seconds,
    }[sc]


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Cell:
    """The runs of one server in one scenario."""

    def __init__(self, rows):
        self.rows = rows
        ok = [r for r in rows if r["status"] == "ok"]
        self.failed = [r for r in rows if r["status"] != "ok"]
        self.is_bytes = any(num(r["gb_per_s"]) is not None for r in ok)
        key = "gb_per_s" if self.is_bytes else "req_per_s"
        self.tput = [num(r[key]) for r in ok if num(r[key]) is not None]
        self.p99 = [num(r["p99_ms"]) for r in ok if num(r["p99_ms"]) is not None]
        self.hwm = [num(r["hwm_kib"]) for r in ok if num(r["hwm_kib"]) is not None]
        ckey = "cpu_ms_per_gib" if self.is_bytes else "cpu_us_per_req"
        self.cpu = [num(r[ckey]) for r in ok if num(r[ckey]) is not None]
        self.gave_up = sum(1 for r in rows if r["quiet"] == "no")
        # h2load's CPU time over its wall time (warm-up included): near 100 % means the one
        # client thread, not the server, set the pace.
        self.client = []
        for r in ok:
            c, t = num(r.get("client_cpu_s")), num(r["seconds"])
            if c is not None and t:
                self.client.append(100 * c / (t + WARM.get(r["scenario"], 0)))

    def median(self):
        return statistics.median(self.tput) if self.tput and not self.failed else None

    def tput_text(self):
        if self.failed:
            return "**FAILED** (%s)" % self.failed[0]["note"][:80]
        if not self.tput:
            return "n/a"
        unit = "GB/s" if self.is_bytes else "req/s"
        fmt = (lambda v: "%.2f" % v) if self.is_bytes else (lambda v: "%.0f" % v)
        return "%s %s (%s-%s)" % (fmt(self.median()), unit, fmt(min(self.tput)), fmt(max(self.tput)))


def med(vals, fmt):
    return fmt % statistics.median(vals) if vals else ""


def host():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%s, %d CPUs, Linux %s" % (model, os.cpu_count(), platform.release())


def versions():
    out = []
    for label, pkg in [("h2load/nghttpd", "nghttp2-client"), ("h2o", "h2o"),
                       ("grpc-go", "golang-google-grpc-dev"), ("gRPC C++", "libgrpc++-dev"),
                       ("Go", "golang-go"), ("iperf3", "iperf3")]:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        out.append("%s %s" % (label, r.stdout.strip() or "?"))
    return ", ".join(out)


def render(rows, args, csv_rel):
    cells = {}
    for r in rows:
        cells.setdefault(r["scenario"], {}).setdefault(r["server"], []).append(r)
    cells = {sc: {srv: Cell(rs) for srv, rs in by.items()} for sc, by in cells.items()}
    iperf = cells.get("iperf", {}).get("iperf3")
    iperf_med = iperf.median() if iperf else None
    runs = max((int(r["run"]) for r in rows), default=0)
    out = []
    out.append("## Comparison with other servers (perf/compare)")
    out.append("")
    if args.quick == "1":
        out.append("> **Quick run** (`--quick`: one run, short scenarios, small objects), made to check the"
                   " harness on a shared, busy machine: not figures to quote.")
        out.append("")
    out.append("Command: `%s`. Date: %s. Host: %s. Load average at the end: %s." % (
        args.command, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), host(),
        " ".join(open("/proc/loadavg").read().split()[:3])))
    out.append("Versions: %s. Raw figures: `%s`." % (versions(), csv_rel))
    out.append("")
    out.append("One h2load client (one thread) on the same machine, the same arguments for every server; "
               "servers started fresh for every scenario and interleaved run by run (%d run(s)); "
               "each passed row was checked with one real gRPC call (python3-grpcio: grpc-status 0 and "
               "the answer), GET / by its HTTP status. GB/s = 10^9 payload bytes per second; Get reads a "
               "warm page cache. ringstreamd (workers), grpc-go (GOMAXPROCS), nghttpd and h2o run one thread per CPU; "
               "gRPC C++ its synchronous thread pool. One connection is served by one core in ringstreamd." % runs)
    out.append("")
    out.append("Ratios (ringstreamd's median throughput over the peer's; > 1 means ringstreamd is faster):")
    out.append("")
    out.append("| scenario | ringstreamd | vs grpc-go | vs grpc-cpp | vs h2o | vs nghttpd | % of iperf3 |")
    out.append("|---|--:|--:|--:|--:|--:|--:|")
    for sc in ORDER:
        if sc not in cells or sc == "iperf":
            continue
        by = cells[sc]
        rs = by.get("ringstreamd")
        line = ["%s" % describe(sc, args.size, args.seconds), rs.tput_text() if rs else "-"]
        for p in PEERS:
            c = by.get(p)
            if c is None:
                line.append("")
            elif c.failed:
                line.append("peer FAILED")
            elif rs and rs.median() and c.median():
                line.append("%.2fx" % (rs.median() / c.median()))
            else:
                line.append("-")
        if sc in ONE_STREAM and rs and rs.median() and iperf_med:
            line.append("%.0f %%" % (100 * rs.median() / iperf_med))
        else:
            line.append("")
        out.append("| " + " | ".join(line) + " |")
    if iperf:
        out.append("| %s | %s | | | | | 100 %% |" % (describe("iperf", args.size, args.seconds), iperf.tput_text()))
    rs_of = {sc: cells.get(sc, {}).get("ringstreamd") for sc in ("unary", "conns-100", "conns-1000", "conns-10000")}
    med_of = {sc: (c.median() if c else None) for sc, c in rs_of.items()}
    if med_of["conns-100"] and (med_of["conns-1000"] or med_of["conns-10000"]):
        parts = []
        for sc, label in (("conns-1000", "1,000"), ("conns-10000", "10,000")):
            if med_of[sc]:
                parts.append("%s connections %.2f" % (label, med_of[sc] / med_of["conns-100"]))
        line = ("Many connections, ringstreamd, throughput over the 100-connection figure of the same "
                "shape (1 stream per connection): " + ", ".join(parts))
        if med_of["unary"] and med_of["conns-10000"]:
            line += ("; 10,000 x 1 over the unary 100 x 10 scenario: %.2f"
                     % (med_of["conns-10000"] / med_of["unary"]))
        out.append("")
        out.append(line + ".")
    out.append("")
    out.append("Every server, every scenario (median, min-max over the runs; peak RSS = VmHWM of the server "
               "process, CPU = its utime + stime over the h2load run, all threads, per call or per GiB moved; "
               "h2load CPU = the client's user + system time over its wall time, one thread, so 100 % is a "
               "saturated client):")
    out.append("")
    out.append("| scenario | server | throughput | % of iperf3 | p99 ms | peak RSS MiB | CPU | h2load CPU | runs |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for sc in ORDER:
        if sc not in cells:
            continue
        for srv in ["ringstreamd"] + PEERS + ["iperf3"]:
            c = cells[sc].get(srv)
            if c is None:
                continue
            pct = ""
            if sc in ONE_STREAM and c.median() and iperf_med:
                pct = "%.0f %%" % (100 * c.median() / iperf_med)
            cpu = ""
            if c.cpu:
                cpu = (med(c.cpu, "%.0f ms/GiB") if c.is_bytes else med(c.cpu, "%.2f µs/call"))
            rss = med([h / 1024 for h in c.hwm], "%.1f")
            runs_text = "%d ok" % (len(c.rows) - len(c.failed))
            if c.failed:
                runs_text += ", **%d FAILED**" % len(c.failed)
            if c.gave_up:
                runs_text += ", %d busy" % c.gave_up
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                sc, srv, c.tput_text(), pct, med(c.p99, "%.2f"), rss, cpu,
                med(c.client, "%.0f %%"), runs_text))
    out.append("")
    out.append("h2load arguments (the same for every server; `-d` files are 5-byte-prefixed gRPC messages "
               "written by `perf/compare/rpc.py`, sent with `content-type: application/grpc` and `te: trailers`):")
    out.append("")
    seen = {}
    for r in rows:
        if r.get("h2load_args") and r["scenario"] not in seen:
            seen[r["scenario"]] = r["h2load_args"].replace(" -H content-type: application/grpc -H te: trailers", "")
    for sc in ORDER:
        if sc in seen:
            out.append("- %s: `h2load %s`" % (sc, seen[sc]))
    out.append("")
    out.append("\"busy\": runs that started although the machine was not quiet (the bounded wait gave up).")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--results")
    ap.add_argument("--command", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--seconds", required=True)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    text = render(rows, args, os.path.relpath(os.path.abspath(args.csv), repo))
    sys.stdout.write(text)
    if args.results:
        with open(args.results) as f:
            old = f.read()
        section = BEGIN + "\n" + text + END
        if BEGIN in old and END in old:
            new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        with open(args.results + ".tmp", "w") as f:
            f.write(new)
        os.replace(args.results + ".tmp", args.results)
        print("perf/compare: table written to %s" % args.results, file=sys.stderr)


main()
