#!/usr/bin/env bash
# What observability costs a request in instructions, counted by valgrind's callgrind: the same
# figure for the same binary and requests whatever else the machine does, where the latency
# example's CPU time moves by 10% between runs. User-space instructions of the front gateway
# only: the kernel's share (sockets, the log's write) and the time are the latency example's.
#
#   scripts/instructions.sh [GATEWAY] [REQUESTS] [BASELINE_GATEWAY]
#
# GATEWAY defaults to target/release/streamflight-gateway (build it first), REQUESTS to 1000.
# For each of non-streaming and streaming Chat requests (unique, one keep-alive connection, in
# front of the same gateway's simulated model at zero delay): the front gateway under callgrind,
# 100 requests to warm it, counters zeroed, REQUESTS requests counted, then the instructions
# per request of the variants: logs off (--log warn), the JSON access log (to a file), and
# traces exported too (OTLP/HTTP to a sink that answers 200; the counters are read after the
# SDK's 5 s batch, so the export is counted). BASELINE_GATEWAY, if given, is run logs off first.
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${1:-target/release/streamflight-gateway}
requests=${2:-1000}
baseline=${3:-}
command -v valgrind > /dev/null || { echo "instructions: valgrind is needed" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2> /dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { # waits until $1 answers /healthz, or fails after 60 s
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/healthz" > /dev/null && return; sleep 0.2; done
    echo "instructions: port $1 did not come up" >&2; exit 1
}

cat > "$work/load.py" << 'EOF'
import http.client, json, sys, uuid
port, count, stream = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "stream"
connection = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": f"hello {uuid.uuid4()}"}], "stream": stream}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    answer = connection.getresponse()
    data = answer.read()
    assert answer.status == 200, (answer.status, data[:200])
EOF
cat > "$work/sink.py" << 'EOF'
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF

upstream=$(port)
"$gateway" --listen "127.0.0.1:$upstream" --log warn --sim-first-token-delay 0ms --sim-token-interval 0ms \
    --sim-tokens 10 > /dev/null 2>&1 &
pids+=($!)
sink=$(port)
python3 "$work/sink.py" "$sink" &
pids+=($!)
up "$upstream"

# count BINARY MODE SETTLE FLAGS...: the front gateway's instructions per counted request.
count() {
    local binary=$1 mode=$2 settle=$3
    shift 3
    local front out
    front=$(port)
    out=$work/callgrind.$front
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" --listen "127.0.0.1:$front" \
        --upstream "http://127.0.0.1:$upstream/v1" "$@" > /dev/null 2> "$work/front.$front.log" &
    local pid=$!
    up "$front"
    python3 "$work/load.py" "$front" 100 "$mode"
    callgrind_control -z "$pid" > /dev/null 2>&1
    python3 "$work/load.py" "$front" "$requests" "$mode"
    sleep "$settle"
    callgrind_control -d "$pid" > /dev/null 2>&1
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    local total
    total=$(cat "$out".* | awk '/^(summary|totals):/ { print $2; exit }')
    echo $((total / requests))
}

variants=()
[ -n "$baseline" ] && variants+=("baseline, logs off|$baseline|0|--log warn")
variants+=("logs off|$gateway|0|--log warn")
variants+=("JSON access log|$gateway|0|--log info --log-format json")
variants+=("JSON access log + traces|$gateway|6|--log info --log-format json --otlp-endpoint http://127.0.0.1:$sink")

echo "instructions per request, $requests unique Chat requests, $(date -u '+%Y-%m-%d %H:%M UTC'), $gateway"
echo "| variant | non-streaming | vs first | streaming | vs first |"
echo "|---|---:|---:|---:|---:|"
first=()
for variant in "${variants[@]}"; do
    IFS='|' read -r name binary settle flags <<< "$variant"
    row="| $name"
    for m in 0 1; do
        mode=$([ $m = 0 ] && echo plain || echo stream)
        # shellcheck disable=SC2086 # the flags are words
        n=$(count "$binary" "$mode" "$settle" $flags)
        [ -z "${first[$m]:-}" ] && first[m]=$n
        row+=" | $n | $(python3 -c "print(f'{$n / ${first[$m]}:.3f}x')")"
    done
    echo "$row |"
done
