#!/usr/bin/env bash
# Runs each named fuzz target for SECONDS: Fuzz/run.sh BINARY SECONDS TARGET...
# SECONDS 0 means no time limit; FUZZ_RUNS=N stops each target after N executions instead.
# The seeds in Fuzz/corpus/TARGET are read, never written; what libFuzzer finds new goes to
# .build-fuzz/corpus/TARGET. A crash, leak-free trap or timeout stops with the input saved in
# .build-fuzz/artifacts/ and a non-zero exit.
set -euo pipefail
binary=$1 seconds=$2 runs=${FUZZ_RUNS:--1}
shift 2
mkdir -p .build-fuzz/artifacts
for target in "$@"; do
  work=.build-fuzz/corpus/$target
  mkdir -p "$work"
  echo "fuzz: $target for ${seconds}s${FUZZ_RUNS:+ or $runs executions} (seeds Fuzz/corpus/$target, new inputs in $work)"
  # Leak checking at exit would flag Swift's once-initialized globals; per-input crashes,
  # overflows, out-of-bounds accesses and traps are what these targets look for. libFuzzer's
  # own -detect_leaks is off too: it runs an input a second time whenever it allocated more
  # than it freed (a machine's caches do), 14% of the vfio target's time.
  # The "#N pulse" lines are libFuzzer's progress (at each doubling of the executions, with exec/s).
  # pipefail: the pipeline's status is libFuzzer's (the filter never fails). (Until 2026-12-07
  # a `|| true` after the filter reset PIPESTATUS, so a failed target passed.)
  status=0
  ASAN_OPTIONS=detect_leaks=0 "$binary" "$target" "$work" "Fuzz/corpus/$target" \
    -max_total_time="$seconds" -runs="$runs" -detect_leaks=0 -timeout=20 -rss_limit_mb=4096 \
    -artifact_prefix=".build-fuzz/artifacts/$target-" -print_final_stats=1 2>&1 |
    { grep --line-buffered -E '^(#[0-9]+[[:space:]]+pulse|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|INFO: Seed)|Fatal error|crash-|timeout-|Too many open files|out-of-memory' || true; } ||
    status=$?
  test "$status" -eq 0 || { echo "fuzz: $target failed (status $status); see .build-fuzz/artifacts/"; exit 1; }
done
