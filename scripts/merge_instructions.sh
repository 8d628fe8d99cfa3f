#!/usr/bin/env bash
# What merging a Chat answer for a non-streaming client costs, in instructions (issue 26):
# callgrind counts only the dialect's `Merge::push` and `Merge::finish` (the body included)
# inside the merge_cost example, over RUNS answers of TOKENS tokens in the simulated model's
# shapes (a role chunk, a chunk per token, the finish and usage chunks).
#
#   cargo build --release -p streamflight-gateway --example merge_cost
#   scripts/merge_instructions.sh [EXAMPLE] [TOKENS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind > /dev/null || { echo "$0: valgrind is needed" >&2; exit 1; }
example=${1:-target/release/examples/merge_cost}
tokens=${2:-10}
runs=${3:-400}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" --toggle-collect='*chat::Chunks*Merge*' \
    "$example" --tokens "$tokens" --runs "$runs" --warmup 0 > /dev/null 2>&1
total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
echo "chat: instructions to merge an answer of $tokens tokens: $((total / runs))"
