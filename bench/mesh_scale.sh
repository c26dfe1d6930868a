#!/usr/bin/env bash
# Scale run of real daemons on loopback (see bench/mesh_scale.py).
# Usage: bench/mesh_scale.sh [DAEMONS=50] [ITEMS_PER_DAEMON=100]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin meshnode
exec python3 bench/mesh_scale.py "${1:-50}" "${2:-100}"
