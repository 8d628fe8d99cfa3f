# What instructions.sh and stages.sh share: the upstream (the gateway's simulated model at zero
# delay, 10 tokens), an OTLP sink, a load client, and `count`, which runs a front gateway under
# callgrind. Sourced with `gateway` and `requests` set; leaves the last profile in $work/last.out.
# GATEWAY_ARGS, if set, are more flags for every front gateway (say `--connection-threads 2`).
command -v valgrind > /dev/null || { echo "$0: valgrind is needed" >&2; exit 1; }
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2> /dev/null || true; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { # waits until $1 answers /healthz, or fails after 60 s
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$1/healthz" > /dev/null && return; sleep 0.2; done
    echo "$0: port $1 did not come up" >&2; exit 1
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
    # shellcheck disable=SC2086 # GATEWAY_ARGS are words
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" --listen "127.0.0.1:$front" \
        --upstream "http://127.0.0.1:$upstream/v1" "$@" ${GATEWAY_ARGS:-} > /dev/null 2> "$work/front.$front.log" &
    local pid=$!
    up "$front"
    python3 "$work/load.py" "$front" 100 "$mode"
    callgrind_control -z "$pid" > /dev/null 2>&1
    python3 "$work/load.py" "$front" "$requests" "$mode"
    sleep "$settle"
    callgrind_control -d "$pid" > /dev/null 2>&1
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    cat "$out".* > "$work/last.out"
    local total
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$work/last.out")
    echo $((total / requests))
}

