#!/usr/bin/env bash
# What observability costs a request in instructions, counted by valgrind's callgrind: within a
# percent or two for the same binary and requests whatever else the machine does, where the
# latency example's CPU time moves by 10% between runs (how often a task is polled depends on
# the threads' timing, so each count is the median of ROUNDS runs, 3 unless the variable says).
# User-space instructions of the front gateway only: the kernel's share (sockets, the log's
# write) and the time are the latency example's.
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
# LOGS_OFF_ONLY=1 runs the logs-off variants alone; GATEWAY_ARGS adds flags to every gateway
# counted (callgrind-common.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${1:-target/release/streamflight-gateway}
requests=${2:-1000}
baseline=${3:-}
rounds=${ROUNDS:-3}
# shellcheck source=scripts/callgrind-common.sh
source scripts/callgrind-common.sh

variants=()
[ -n "$baseline" ] && variants+=("baseline, logs off|$baseline|0|--log warn")
variants+=("logs off|$gateway|0|--log warn")
if [ -z "${LOGS_OFF_ONLY:-}" ]; then
    variants+=("JSON access log|$gateway|0|--log info --log-format json")
    variants+=("JSON access log + traces|$gateway|6|--log info --log-format json --otlp-endpoint http://127.0.0.1:$sink")
fi

echo "instructions per request, $requests unique Chat requests, median of $rounds runs, $(date -u '+%Y-%m-%d %H:%M UTC'), $gateway ${GATEWAY_ARGS:-}"
echo "| variant | non-streaming | vs first | streaming | vs first |"
echo "|---|---:|---:|---:|---:|"
first=()
for variant in "${variants[@]}"; do
    IFS='|' read -r name binary settle flags <<< "$variant"
    row="| $name"
    for m in 0 1; do
        mode=$([ $m = 0 ] && echo plain || echo stream)
        counts=()
        for _ in $(seq "$rounds"); do
            # shellcheck disable=SC2086 # the flags are words
            counts+=("$(count "$binary" "$mode" "$settle" $flags)")
        done
        n=$(printf '%s\n' "${counts[@]}" | sort -n | sed -n "$(((rounds + 1) / 2))p")
        [ -z "${first[$m]:-}" ] && first[m]=$n
        row+=" | $n | $(python3 -c "print(f'{$n / ${first[$m]}:.3f}x')")"
    done
    echo "$row |"
done
