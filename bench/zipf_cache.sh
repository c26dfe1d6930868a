#!/usr/bin/env bash
# Cache effectiveness under a Zipf load: 20 daemons coordinated vs alone
# (see bench/zipf_cache.py).
# Usage: bench/zipf_cache.sh [REQUESTS=6000] [OBJECTS=2000] [ALPHA=0.8]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin meshnode
exec python3 bench/zipf_cache.py "${1:-6000}" "${2:-2000}" "${3:-0.8}"
