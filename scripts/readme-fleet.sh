#!/usr/bin/env bash
# Runs the README's "A fleet of gateways on one Redis" block as written, and checks what its
# comments promise: 30 whole streams, one answer, one upstream request. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

block=$(python3 - <<'PY'
text = open("README.md").read()
start = text.index("### A fleet of gateways on one Redis")
body = text.index("```sh", start) + len("```sh\n")
print(text[body:text.index("```", body)])
PY
)
out=$(mktemp)
cleanup() {
    redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
    pkill -f 'streamflight-gateway --listen 127.0.0.1:80(00|81|82|83)' >/dev/null 2>&1 || true
    rm -f "$out"
}
trap cleanup EXIT
rm -f /tmp/fleet-*.sse
timeout 900 bash -c "$block" >"$out" 2>&1 || { cat "$out"; echo "the README's fleet block failed"; exit 1; }
cat "$out"
check() { grep -qE "$1" "$out" || { echo "the README promises '$2', not seen"; exit 1; }; }
check '^30$' "30 whole streams"
check '^ +30 [0-9a-f]{32}$' "one answer, 30 times"
check '^streamflight_requests_total 1$' "one upstream request"
[ "$(grep -c '^streamflight_fleet_led_total 1$' "$out")" = 1 ] || { echo "not exactly one gateway led"; exit 1; }
[ "$(grep -c '^streamflight_remote_joins_total 1$' "$out")" = 2 ] || { echo "not two remote joins"; exit 1; }
echo "the README's fleet walkthrough works as written"
