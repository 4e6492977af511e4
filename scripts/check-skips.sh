#!/usr/bin/env bash
# Reads a `swift test` log. Where CI=true (.ci/run), every tool and host capability the tests
# need is installed, so any skipped test (Swift Testing's "skipped"/"was cancelled", XCTest's
# "skipped", a `.requires` skip line) fails the run; elsewhere the skips are listed and pass.
set -euo pipefail
log=${1:?usage: check-skips.sh SWIFT-TEST-LOG}
skips=$(grep -E '^(➜ (Test|Suite) .* (skipped|was cancelled)|Test Case .* skipped)' "$log" | grep -v '^Test Case .* started' || true)
[ -n "$skips" ] || exit 0
count=$(printf '%s\n' "$skips" | wc -l)
if [ "${CI:-}" = true ]; then
  printf 'CI=true: %d skipped test(s); CI installs everything, so these must run:\n%s\n' "$count" "$skips" >&2
  exit 1
fi
printf '%d skipped test(s) (a failure under CI=true):\n%s\n' "$count" "$skips"
