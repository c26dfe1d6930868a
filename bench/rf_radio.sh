#!/usr/bin/env bash
# bench/rf_radio.sh: the issue's packet-radio benchmarks (issue #5), real
# daemons on real Direwolf soft TNCs over the virtual audio channel
# (tests/rf/README.md), in real time: about an hour in all.
#
# Run from anywhere (needs direwolf, python3, cargo-nextest):
#   bash bench/rf_radio.sh                 # every benchmark, one after another
#   bash bench/rf_radio.sh ten_minutes     # only those whose name matches
#
# What it does: builds and runs the #[ignore]d tests of tests/rf_bench.rs
# with `cargo nextest run --test rf_bench --run-ignored only --no-capture`,
# one test at a time (they share the machine's real-time audio channel
# with nothing else), keeps the whole output in $OUT (default
# target/rf_radio.log) and prints the figures (the lines starting with
# BENCH) at the end:
#   - functional_1200_budget_005 / _010: two stations at 1200 Bd discover
#     each other, reconcile (3 entries each), fetch a 2 KB page;
#   - throughput_1200 / throughput_9600: 100 B, 2 KB, 16 KB (64 KB at
#     9600) over one RF hop at request_budget 0.5 and 1.0;
#   - ten_minutes_at_1200: three stations, beacons every 30 s, a sync of
#     20 entries; asserts the airtime budget per station over the run and
#     every sliding minute, and an ID at least every 10 minutes.
#     RF_BENCH_MINUTES shortens or lengthens it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/target/rf_radio.log}
mkdir -p "$(dirname "$OUT")"
for tool in direwolf python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool (Debian: apt-get install $tool)" >&2; exit 1; }
done

filter=()
if [ $# -gt 0 ]; then
    filter=("$@")
fi
status=0
nice -n 10 cargo nextest run --test rf_bench --run-ignored only --no-capture \
    --test-threads 1 --no-fail-fast "${filter[@]}" 2>&1 | tee "$OUT" || status=$?

echo
echo "==== figures (all in $OUT) ===="
grep -E '^BENCH' "$OUT" | sed 's/^BENCH //' || true
exit "$status"
