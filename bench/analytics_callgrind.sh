#!/usr/bin/env bash
# bench/analytics_callgrind.sh: instructions per content request with
# analytics on and off, counted by callgrind (issue #7). Unlike requests/s on
# a shared machine, instruction counts do not depend on what else runs.
#
# Run as root on Debian 12 from anywhere:   bash bench/analytics_callgrind.sh
#
# What it does:
#   - installs valgrind, wrk, curl and jq with apt-get if they are missing;
#   - builds meshnode and meshctl in release mode with line tables (not
#     stripped) into target/callgrind;
#   - for each of on, off (REPS times each, alternating): starts one daemon
#     under `valgrind --tool=callgrind --instr-atstart=no` with
#     `[analytics] enabled = <on|off>` (no mDNS, no probes, no D-Bus, no RF),
#     publishes 100 files of 4 KiB, warms up with wrk for WARMUP, switches
#     instrumentation on (`callgrind_control -i on`), runs
#     `wrk -t1 -c10 -d$DURATION` over the 100 URLs (Host: n0call.radio),
#     switches it off, and divides the instructions counted (callgrind's
#     "totals") by the requests the daemon served meanwhile (its own
#     http.content_hits, read before and after);
#   - prints one line per run and the medians.
# Everything runs on 127.0.0.1; the temp dir is removed on exit.
#
# Knobs (environment): REPS (2), DURATION (20s), WARMUP (5s), KEEP (a
# directory to keep the callgrind files in, for callgrind_annotate).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${REPS:-2}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-5s}
ADDR=127.0.0.1:18093
HOST=n0call.radio

log() { printf '[callgrind %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

TMP=$(mktemp -d /tmp/meshcg.XXXXXX)
PID=
cleanup() {
	[[ -z $PID ]] || kill -TERM "$PID" 2>/dev/null || true
	[[ -z $PID ]] || wait "$PID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT

export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
need=()
for t in valgrind wrk curl jq; do command -v "$t" >/dev/null || need+=("$t"); done
if ((${#need[@]})); then
	log "installing ${need[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

log "building release binaries with line tables into target/callgrind"
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=false \
	cargo build --manifest-path "$ROOT/Cargo.toml" --release --bins --target-dir "$ROOT/target/callgrind"
BIN=$ROOT/target/callgrind/release
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

mkdir -p "$TMP/www"
for ((i = 0; i < 100; i++)); do
	head -c 4096 /dev/urandom >"$TMP/www/$(printf 's%03d.bin' "$i")"
done
cat >"$TMP/small.lua" <<'EOF'
local i = 0
request = function()
  i = i % 100 + 1
  return wrk.format("GET", string.format("/s%03d.bin", i - 1))
end
EOF

hits() { "$BIN/meshctl" --socket "$1/control.sock" --json status | jq '.http.content_hits'; }

# run MODE N: one daemon under callgrind; prints instructions per request
run() {
	local mode=$1 n=$2 dir=$TMP/$1.$2 enabled=false
	[[ $mode == on ]] && enabled=true
	mkdir -p "$dir"
	cat >"$dir/meshnode.toml" <<EOF
[node]
callsign = "N0CALL"
state_dir = "$dir/state"
[http]
listen = ["$ADDR"]
control_socket = "$dir/control.sock"
[store]
max_bytes = "1GiB"
memory_cache = "8MiB"
[connectivity]
probes = []
[discovery]
mdns = false
[dbus]
enabled = false
[analytics]
enabled = $enabled
EOF
	RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
		"$BIN/meshnode" --config "$dir/meshnode.toml" 2>"$dir/log" &
	PID=$!
	local t
	for ((t = 0; t < 600; t++)); do
		curl -fsS -o /dev/null "http://$ADDR/api/v1/status" 2>/dev/null && break
		kill -0 "$PID" 2>/dev/null || {
			cat "$dir/log" >&2
			die "meshnode exited during start"
		}
		sleep 0.1
	done
	for f in "$TMP"/www/*; do
		"$BIN/meshctl" --socket "$dir/control.sock" content publish "$f" --path "/$(basename "$f")" >/dev/null ||
			die "publish $f"
	done
	wrk -t1 -c10 -d"$WARMUP" -H "Host: $HOST" -s "$TMP/small.lua" "http://$ADDR/" >/dev/null
	local h0 h1
	h0=$(hits "$dir")
	callgrind_control -i on "$PID" >/dev/null
	wrk -t1 -c10 -d"$DURATION" -H "Host: $HOST" -s "$TMP/small.lua" "http://$ADDR/" >"$dir/wrk.txt"
	callgrind_control -i off "$PID" >/dev/null
	h1=$(hits "$dir")
	kill -TERM "$PID"
	wait "$PID" || true
	PID=
	[[ -z ${KEEP:-} ]] || { mkdir -p "$KEEP" && cp "$dir/cg.out" "$KEEP/callgrind.$mode.$n.out"; }
	local total
	total=$(awk '/^totals:/ {print $2}' "$dir/cg.out"*)
	[[ -n $total ]] || die "no totals in $dir/cg.out"
	local reqs=$((h1 - h0))
	((reqs > 0)) || die "no requests served"
	log "analytics $mode, run $n: $total instructions / $reqs requests = $((total / reqs)) per request"
	echo "$((total / reqs))"
}

ON=() OFF=()
for ((r = 1; r <= REPS; r++)); do
	ON+=("$(run on "$r")")
	OFF+=("$(run off "$r")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
MON=$(median "${ON[@]}")
MOFF=$(median "${OFF[@]}")
cat <<EOF

## Analytics overhead, callgrind (commit $COMMIT, $(date -u '+%Y-%m-%d %H:%M UTC'))
instructions per 4 KiB request (wrk -t1 -c10 -d$DURATION, $REPS runs each)
  analytics on : ${ON[*]} (median $MON)
  analytics off: ${OFF[*]} (median $MOFF)
  overhead: $(awk -v a="$MON" -v b="$MOFF" 'BEGIN {printf "%+.2f %%", (a - b) * 100 / b}') (target < 2 %)
EOF
