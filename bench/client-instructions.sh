#!/usr/bin/env bash
# Instructions per in-process call for each middleware stack, counted by
# callgrind: (count at 2N calls - count at N calls) / N, so set-up cancels.
# Counts do not move with the machine's load, unlike criterion's times.
#   bench/client-instructions.sh [N]
set -euo pipefail
N=${1:-2000}
cd "$(dirname "$0")/.."
cargo bench -p rempart-client --bench client_instructions --no-run 2>/dev/null
BIN=$(ls -t target/release/deps/client_instructions-* | grep -v '\.d$' | head -1)
count() {
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>"$out" >/dev/null
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$out"
  rm -f "$out"
}
for s in reqwest_middleware_empty reqwest_retry rempart; do
  a=$(count "$s" "$N"); b=$(count "$s" $((2 * N)))
  echo "$s $(( (b - a) / N )) instructions/call"
done
