#!/usr/bin/env bash
# Where the kernel's half of a request's CPU time comes from: context switches and system calls
# per request of the front gateway (one tokio runtime with 2 worker threads, then 1; then 2
# connection threads, `--connection-threads 2`, each its connections' runtime) and of nginx
# (2 workers, an upstream keep-alive pool, no buffering, no access log, as in the proxies
# example), counted by `perf stat` on their processes alone, with the task clock beside them.
# Unique Chat requests one after another on one keep-alive connection, in front of the gateway's
# simulated model at zero delay (the upstream of instructions.sh). Counts, not timings: the
# task clock moves with the machine's load, the counts much less.
#
#   scripts/switches.sh [GATEWAY] [REQUESTS]
#
# GATEWAY defaults to target/release/streamflight-gateway (build it first), REQUESTS to 2000.
# Needs perf (with access to the processes' counters: root, or perf_event_paranoid <= 1) and nginx
# (Debian's nginx-light) on PATH. With KINDS=1, each row is followed by the system calls by kind
# per request, counted by `strace -c -f` in a second run of REQUESTS (strace slows the threads and
# so may change how they meet: the perf row is the figure, this one says what it is made of).
set -euo pipefail
gateway=${1:-target/release/streamflight-gateway}
requests=${2:-2000}
for tool in perf nginx; do
    command -v "$tool" > /dev/null || { echo "$0: $tool is needed" >&2; exit 1; }
done
# shellcheck source=scripts/callgrind-common.sh
source "$(dirname "$0")/callgrind-common.sh"

# measure NAME PIDS PORT MODE: one table row, per request.
measure() {
    local name=$1 pids=$2 front=$3 mode=$4
    python3 "$work/load.py" "$front" 100 "$mode"
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pids" -o "$work/stat" &
    local perf=$!
    sleep 0.5
    python3 "$work/load.py" "$front" "$requests" "$mode"
    kill -INT "$perf"
    wait "$perf" 2> /dev/null || true
    awk -F, -v name="$name" -v mode="$mode" -v n="$requests" '
        $3 ~ /task-clock/ { clock = $1 * 1000 / n }
        $3 ~ /context-switches/ { switches = $1 / n }
        $3 ~ /sys_enter/ { calls = $1 / n }
        END { printf "| %s | %s | %.1f | %.1f | %.0f |\n", name, mode, switches, calls, clock }' "$work/stat"
}

# kinds NAME PIDS PORT MODE: the system calls of the row before, by kind, per request.
kinds() {
    local name=$1 pids=$2 front=$3 mode=$4 traced=()
    for pid in ${pids//,/ }; do traced+=(-p "$pid"); done
    strace -c -f -o "$work/strace" "${traced[@]}" 2> /dev/null &
    local tracer=$!
    sleep 0.5
    python3 "$work/load.py" "$front" "$requests" "$mode"
    kill -INT "$tracer"
    wait "$tracer" 2> /dev/null || true
    sort -k4 -nr "$work/strace" | awk -v name="$name" -v mode="$mode" -v n="$requests" '
        $NF != "total" && $NF != "syscall" && $4 ~ /^[0-9]+$/ && $4 / n >= 0.05 {
            kinds = kinds sprintf("%s%s %.2f", kinds == "" ? "" : ", ", $NF, $4 / n) }
        END { printf "| %s, by kind | %s | %s |||\n", name, mode, kinds }'
}

echo "$requests unique Chat requests on one connection, $(date -u '+%Y-%m-%d %H:%M UTC'), $gateway"
echo "| proxy | mode | context switches | system calls | task clock, µs |"
echo "|---|---|---:|---:|---:|"
# Each variant: its name, TOKIO_WORKER_THREADS, and the gateway's connection threads.
for variant in "2 worker threads:2:0" "1 worker thread:1:0" "2 connection threads:2:2"; do
    IFS=: read -r name workers threads <<< "$variant"
    front=$(port)
    TOKIO_WORKER_THREADS=$workers STREAMFLIGHT_CONNECTION_THREADS=$threads "$gateway" \
        --listen "127.0.0.1:$front" --log warn --upstream "http://127.0.0.1:$upstream/v1" > /dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    up "$front"
    for mode in complete stream; do
        measure "gateway, $name" "$pid" "$front" "$mode"
        if [ -n "${KINDS:-}" ]; then kinds "gateway, $name" "$pid" "$front" "$mode"; fi
    done
    kill "$pid"
done

front=$(port)
cat > "$work/nginx.conf" << CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$upstream; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$front;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work/" -e "$work/nginx.err"
trap 'nginx -c "$work/nginx.conf" -p "$work/" -e "$work/nginx.err" -s stop 2> /dev/null || true; kill "${pids[@]}" 2> /dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do [ -s "$work/nginx.pid" ] && break; sleep 0.1; done
workers=$(pgrep -d, -P "$(cat "$work/nginx.pid")")
for mode in complete stream; do
    measure "nginx, 2 workers" "$workers" "$front" "$mode"
    if [ -n "${KINDS:-}" ]; then kinds "nginx, 2 workers" "$workers" "$front" "$mode"; fi
done
