#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time from its seed corpus (ctest
# label fuzz): run_fuzz.sh TARGET SEEDS CORPUS SECONDS
# New inputs accumulate in CORPUS (kept between runs); a crash, leak,
# sanitizer report, out-of-memory or hang (> 20 s for one input) fails the
# test and leaves the input as CORPUS/../crash-* for a regression test.
set -euo pipefail
target=$1 seeds=$2 corpus=$3 seconds=$4
mkdir -p "$corpus"
artifacts=$(dirname "$corpus")/artifacts-$(basename "$corpus")/
mkdir -p "$artifacts"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
"$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts" "$corpus" "$seeds" >"$log" 2>&1 || rc=$?
grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$log" || true
if [ "$rc" -ne 0 ]; then
  tail -n 60 "$log"
  echo "run_fuzz: $(basename "$target") failed (exit $rc); inputs in $artifacts" >&2
  exit 1
fi
