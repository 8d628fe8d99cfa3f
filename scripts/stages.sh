#!/usr/bin/env bash
# Where a unique request's instructions go, stage by stage (issue 26): the front gateway under
# valgrind's callgrind as in instructions.sh (logs off, 1,000 unique Chat requests on one
# keep-alive connection after 100 to warm it), then each stage's inclusive count per request.
#
#   scripts/stages.sh [GATEWAY] [REQUESTS]
#
# Stages are functions' inclusive counts, minus what they contain that is another stage's:
# "client HTTP/1.1" is hyper's dispatcher minus the service (the handler) and the response body;
# "the rest" is what no stage names (tasks and wakes, the flight and its history, drops).
set -euo pipefail
cd "$(dirname "$0")/.."
gateway=${1:-target/release/streamflight-gateway}
requests=${2:-1000}
# shellcheck source=scripts/callgrind-common.sh
source scripts/callgrind-common.sh

# inclusive FUNCTION: thousands of instructions per request spent in FUNCTION and what it calls.
inclusive() {
    awk -v name="???:$1 [" 'index($0, name) { gsub(",", "", $1); printf "%d", $1 / '"$requests"' / 1000; found = 1; exit }
        END { if (!found) printf "0" }' "$work/annotated"
}

# Each stage's functions, as callgrind names them.
functions=(
    # The client's connection whole (hyper inlines its dispatcher's poll_catch into it now).
    'catch=<hyper::server::conn::http1::UpgradeableConnection<I,S> as core::future::future::Future>::poll'
    'service=streamflight_gateway::http::serve::service::{{closure}}::{{closure}}'
    'sent=<streamflight_gateway::http::access::Sent as http_body::Body>::poll_frame'
    'parse=streamflight_gateway::dialect::body::parse'
    'tenant=streamflight_gateway::tenant::Tenants::of'
    'fly=streamflight_gateway::http::routes::fly'
    'open=streamflight_gateway::upstream::Upstream::open::{{closure}}'
    'bounded=<streamflight_gateway::upstream::bounds::Bounded as futures_core::stream::Stream>::poll_next'
    'classify=<streamflight_gateway::dialect::chat::Chat as streamflight_gateway::dialect::Dialect>::classify'
    'push=streamflight_gateway::dialect::chunks::Collector::push'
    'finish=<streamflight_gateway::dialect::chat::Chunks as streamflight_gateway::dialect::Merge>::finish'
    'record=core::ptr::drop_in_place<streamflight_gateway::http::access::Record>'
    'metrics=streamflight_gateway::metrics::Metrics::finished'
)

echo "instructions per request (thousands) by stage, $requests unique Chat requests, logs off, $(date -u '+%Y-%m-%d %H:%M UTC'), $gateway"
declare -A column
for mode in plain stream; do
    count "$gateway" "$mode" 0 --log warn > /dev/null
    callgrind_annotate --inclusive=yes --threshold=100 "$work/last.out" > "$work/annotated" 2> /dev/null
    total=$(awk '/^(summary|totals):/ { printf "%d", $2 / 1000 / '"$requests"'; exit }' "$work/last.out")
    declare -A at
    for pair in "${functions[@]}"; do at[${pair%%=*}]=$(inclusive "${pair#*=}"); done
    catch=${at[catch]} service=${at[service]} sent=${at[sent]} parse=${at[parse]} tenant=${at[tenant]}
    fly=${at[fly]} open=${at[open]} bounded=${at[bounded]} classify=${at[classify]} push=${at[push]}
    finish=${at[finish]} record=${at[record]} metrics=${at[metrics]}
    http=$((catch - service - sent))
    named=$((http + parse + tenant + fly + open + bounded + push + finish + sent + record + metrics))
    column[$mode]="$http $parse $tenant $fly $open $((bounded - classify)) $classify $((push + finish)) $sent $((record + metrics)) $((total - named)) $total"
done
stages=("client HTTP/1.1 (hyper: head, dispatch, writes)" "request body: parse, model, canonical key"
    "credential hash (tenant HMAC)" "flight creation (registry)" "upstream request (build, pool, send, head)"
    "upstream body read, SSE decode" "chunk classification" "collection into one completion"
    "SSE frames to the client" "access record, metrics" "the rest (tasks, wakes, flight, history, drops)" "total")
read -r -a plain <<< "${column[plain]}"
read -r -a stream <<< "${column[stream]}"
echo "| stage | non-streaming | streaming |"
echo "|---|---:|---:|"
for i in "${!stages[@]}"; do echo "| ${stages[$i]} | ${plain[$i]} | ${stream[$i]} |"; done
