# perf/lib.sh: sourced by the perf/*.sh A/B scripts. perf_init PREFIX [DIR] makes $work (a
# fresh directory under DIR, default $TMPDIR or /tmp) and, at exit, stops every server whose
# PID is in $pids and removes $work. freeport prints a free 127.0.0.1 TCP port; cpu PID
# prints the process's CPU seconds so far (utime + stime of all its threads, /proc/PID/stat).
perf_init() {
    work=$(mktemp -d "${2:-${TMPDIR:-/tmp}}/.perf-$1.XXXXXX")
    pids=()
    trap perf_cleanup EXIT
}
perf_cleanup() {
    local p
    for p in "${pids[@]}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
freeport() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu() {
    # the fields after the parenthesised command name, which may contain spaces
    sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{ print ($12 + $13) / hz }'
}
