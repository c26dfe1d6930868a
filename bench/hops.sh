#!/bin/sh
# Latency and throughput of a 1 MB and a 100 MB fetch across two intermediate
# mesh hops against a direct fetch, between real daemons in network
# namespaces (root). Results: BENCHMARKS.md "Routing".
set -e
cd "$(dirname "$0")/.."

cargo test --release --test netns_route -- --ignored bench_hops --nocapture
