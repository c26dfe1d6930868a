#!/usr/bin/env bash
# bench/serve_vs_nginx.sh: meshnode vs nginx serving the same files (issue #2).
#
# Run as root on Debian 12 from anywhere:   bash bench/serve_vs_nginx.sh
#
# What it does:
#   - installs nginx, wrk and curl with apt-get if they are missing;
#   - builds the release binaries once;
#   - writes 100 files of 4 KiB and one of 100 MB (random bytes) to a temp dir;
#   - starts a private nginx (own config, pid file and logs in the temp dir,
#     127.0.0.1:18080) and a private meshnode (own config and state in the temp
#     dir, 127.0.0.1:18081), publishes every file into meshnode, checks both
#     return identical bytes, then measures with wrk, alternating the servers:
#       (a) 4 KiB objects, a Lua script cycling over the 100 URLs: requests/s
#       (b) the 100 MB file: MB/s (1 MB = 10^6 bytes)
#   - idle RSS of a fresh meshnode holding 10,000 small catalog entries,
#     after a restart and 5 s idle;
#   - binary size of target/release/meshnode (stripped) and of the min-z build;
#   - prints a markdown summary with the ratios and the targets.
# Everything it starts is stopped and the temp dir removed on exit. No traffic
# leaves 127.0.0.1. The system nginx (its config, port 80) is never touched
# (note: on a machine with systemd, `apt-get install nginx` itself starts the
# distribution's nginx on port 80; this script does not use or stop it).
#
# Knobs (environment): RUNS (3), DURATION (15s), WARMUP (3s), SMALL_CONNS (50),
# BIG_CONNS (4), ENTRIES (10000), SKIP_MINZ=1 to skip the slow min-z build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-3s}
SMALL_CONNS=${SMALL_CONNS:-50}
BIG_CONNS=${BIG_CONNS:-4}
ENTRIES=${ENTRIES:-10000}
SKIP_MINZ=${SKIP_MINZ:-0}
NGINX_ADDR=127.0.0.1:18080
MESH_ADDR=127.0.0.1:18081
RSS_ADDR=127.0.0.1:18082
N_SMALL=100
SMALL_SIZE=4096
BIG_SIZE=100000000 # 100 MB
WRK_THREADS=1
WRK_TIMEOUT=10s

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

# bgrun CMD...: runs CMD as a tracked background job and waits for it, so that
# SIGINT/SIGTERM to this script are handled at once (the trap kills the job)
PIDS=()
bgrun() {
	local p rc=0
	"$@" &
	p=$!
	PIDS+=("$p")
	wait "$p" || rc=$?
	forget_pid "$p"
	return "$rc"
}
forget_pid() { # drop $1 from PIDS
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- cleanup, temp dir
TMP=
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	[[ -z $TMP ]] || rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
TMP=$(mktemp -d /tmp/meshbench.XXXXXX)
chmod 755 "$TMP" # nginx workers run as nobody

# ---------------------------------------------------------------- tools
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
	log "installing ${need[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain >= 1.89)"

log "building release binaries"
bgrun cargo build --manifest-path "$ROOT/Cargo.toml" --release --bins
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MESHNODE=$TARGET/release/meshnode
MESHCTL=$TARGET/release/meshctl

WWW=$TMP/www
mkdir -p "$WWW"
log "writing $N_SMALL x $SMALL_SIZE B and 1 x $BIG_SIZE B of random bytes to $WWW"
for ((i = 0; i < N_SMALL; i++)); do
	head -c "$SMALL_SIZE" /dev/urandom >"$WWW/$(printf 's%03d.bin' "$i")"
done
head -c "$BIG_SIZE" /dev/urandom >"$WWW/big.bin"
chmod 644 "$WWW"/*

# ---------------------------------------------------------------- nginx
NG=$TMP/nginx
mkdir -p "$NG/tmp"
cat >"$NG/nginx.conf" <<EOF
# private benchmark instance; nothing here touches /etc/nginx or port 80
daemon off;
master_process on;
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
    sendfile on;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen $NGINX_ADDR;
        root $WWW;
    }
}
EOF
log "starting nginx on $NGINX_ADDR"
nginx -p "$NG/" -e "$NG/error.log" -c "$NG/nginx.conf" 2>>"$NG/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# ---------------------------------------------------------------- meshnode
# start_meshnode DIR LISTEN: config + state in DIR; sets MESH_PID
start_meshnode() {
	local dir=$1 listen=$2
	mkdir -p "$dir"
	if [[ ! -f $dir/meshnode.toml ]]; then
		cat >"$dir/meshnode.toml" <<EOF
[node]
callsign = "N0CALL"
state_dir = "$dir/state"

[http]
listen = ["$listen"]
control_socket = "$dir/control.sock"

[store]
max_bytes = "1GiB"
memory_cache = "8MiB"

[connectivity]
probes = []
[discovery]
mdns = false
EOF
	fi
	RUST_LOG=warn "$MESHNODE" --config "$dir/meshnode.toml" 2>>"$dir/meshnode.log" &
	MESH_PID=$!
	PIDS+=("$MESH_PID")
	local t
	for ((t = 0; t < 300; t++)); do
		if curl -fsS -o /dev/null --unix-socket "$dir/control.sock" http://localhost/api/v1/status 2>/dev/null &&
			curl -fsS -o /dev/null "http://$listen/api/v1/status" 2>/dev/null; then
			return 0
		fi
		kill -0 "$MESH_PID" 2>/dev/null || {
			cat "$dir/meshnode.log" >&2
			die "meshnode exited during start"
		}
		sleep 0.1
	done
	cat "$dir/meshnode.log" >&2
	die "meshnode did not become ready within 30 s"
}

stop_pid() { # SIGTERM and wait
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	forget_pid "$1"
}

MESH=$TMP/mesh
log "starting meshnode on $MESH_ADDR"
start_meshnode "$MESH" "$MESH_ADDR"
SERVE_PID=$MESH_PID

for ((t = 0; t < 100; t++)); do
	curl -fsS -o /dev/null "http://$NGINX_ADDR/s000.bin" 2>/dev/null && break
	kill -0 "$NGINX_PID" 2>/dev/null || {
		cat "$NG/error.log" >&2
		die "nginx exited during start"
	}
	sleep 0.1
done

log "publishing $((N_SMALL + 1)) files into meshnode with meshctl"
pub_start=$(date +%s.%N)
for f in "$WWW"/*; do
	"$MESHCTL" --socket "$MESH/control.sock" content publish "$f" --path "/$(basename "$f")" >/dev/null ||
		die "meshctl content publish $f failed"
done
log "published in $(awk -v a="$pub_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

# ---------------------------------------------------------------- correctness
log "checking that both servers return identical bytes"
for name in s000.bin s099.bin big.bin; do
	curl -fsS -o "$TMP/nginx.out" "http://$NGINX_ADDR/$name" || die "nginx GET /$name"
	curl -fsS -o "$TMP/mesh.out" "http://$MESH_ADDR/n0call.radio/$name" || die "meshnode GET /n0call.radio/$name"
	cmp "$WWW/$name" "$TMP/nginx.out" || die "nginx returned different bytes for $name"
	cmp "$WWW/$name" "$TMP/mesh.out" || die "meshnode returned different bytes for $name"
done
rm -f "$TMP/nginx.out" "$TMP/mesh.out"

# ---------------------------------------------------------------- wrk scripts
cat >"$TMP/report.lua" <<'EOF'
-- prints one machine-readable line at the end of a wrk run
done = function(s, lat, req)
  io.write(string.format(
    "BENCH requests=%d bytes=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    s.requests, s.bytes, s.duration, s.errors.connect, s.errors.read, s.errors.write,
    s.errors.status, s.errors.timeout, lat:percentile(50), lat:percentile(99)))
end
EOF
cat >"$TMP/small.lua" <<EOF
-- cycles over the $N_SMALL small objects; the URL prefix comes after "--"
local paths = {}
local i = 0
init = function(args)
  local prefix = args[1] or "/"
  for n = 0, $((N_SMALL - 1)) do
    paths[#paths + 1] = string.format("%ss%03d.bin", prefix, n)
  end
end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
EOF
cat "$TMP/report.lua" >>"$TMP/small.lua"

CLK=$(getconf CLK_TCK)
cpu_ticks() { # user+system clock ticks of the given processes (all their threads)
	local t=0 p
	for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}

# run_wrk LABEL CONNS URL PREFIX PIDS...: one measured wrk run against the
# server whose processes are PIDS; PREFIX "" = plain GET of URL, otherwise the
# small-object script. Writes "rps mbps errors p50_us p99_us server_cpu% wrk_cpu%"
# to $TMP/last (CPU in % of one core, averaged over the run).
run_wrk() {
	local label=$1 conns=$2 url=$3 prefix=$4 script out line t0 t1 TIMEFORMAT='%R %U %S'
	shift 4
	if [[ -n $prefix ]]; then script=$TMP/small.lua; else script=$TMP/report.lua; fi
	out=$TMP/wrk.$label.txt
	t0=$(cpu_ticks "$@")
	{ time bgrun wrk -t"$WRK_THREADS" -c"$conns" -d"$DURATION" --timeout "$WRK_TIMEOUT" -s "$script" "$url" ${prefix:+-- "$prefix"} >"$out" 2>&1; } 2>"$out.time" ||
		die "wrk failed: $(cat "$out")"
	t1=$(cpu_ticks "$@")
	line=$(grep '^BENCH ' "$out") || die "no result from wrk: $(cat "$out")"
	awk -v l="$line" -v dt=$((t1 - t0)) -v clk="$CLK" -v tm="$(cat "$out.time")" 'BEGIN {
		n = split(l, kv, " ");
		for (j = 2; j <= n; j++) { split(kv[j], p, "="); v[p[1]] = p[2] }
		d = v["duration_us"] / 1e6;
		errs = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"];
		split(tm, w, " ");
		printf "%.0f %.1f %d %d %d %.0f %.0f\n", v["requests"] / d, v["bytes"] / d / 1e6, errs,
			v["p50_us"], v["p99_us"], 100 * dt / clk / w[1], 100 * (w[2] + w[3]) / w[1]
	}' >"$TMP/last"
}

warm() { # short unmeasured run: fills page cache and meshnode's memory cache
	bgrun wrk -t1 -c"$2" -d"$WARMUP" -s "$3" "$1" ${4:+-- "$4"} >/dev/null 2>&1 || true
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0) ? a / b : 0}'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

NPROC=$(nproc)
log "machine: $NPROC cores; wrk runs with $WRK_THREADS thread, so it occupies one core and the server gets the rest"
log "load average before measuring: $(loadavg)"

NG_RPS=() MN_RPS=() NG_MBPS=() MN_MBPS=() RUN_NOTES=()
NG_SCPU_S=() MN_SCPU_S=() NG_SCPU_B=() MN_SCPU_B=() WRK_CPU=()
SMALL_NG_URL="http://$NGINX_ADDR/"
SMALL_MN_URL="http://$MESH_ADDR/"
BIG_NG_URL="http://$NGINX_ADDR/big.bin"
BIG_MN_URL="http://$MESH_ADDR/n0call.radio/big.bin"

children() { cat /proc/"$1"/task/*/children 2>/dev/null || true; } # no procps needed
# shellcheck disable=SC2207 # pids: splitting intended
NG_PIDS=("$NGINX_PID" $(children "$NGINX_PID"))
MN_PIDS=("$SERVE_PID")

# measure KIND SERVER RUN: one run, appended to the result arrays
measure() {
	local kind=$1 srv=$2 r=$3 url prefix pids rps mbps errs p50 p99 scpu wcpu
	if [[ $srv == nginx ]]; then
		pids=("${NG_PIDS[@]}")
		if [[ $kind == small ]]; then url=$SMALL_NG_URL prefix=/; else url=$BIG_NG_URL prefix=; fi
	else
		pids=("${MN_PIDS[@]}")
		if [[ $kind == small ]]; then url=$SMALL_MN_URL prefix=/n0call.radio/; else url=$BIG_MN_URL prefix=; fi
	fi
	run_wrk "$kind-$srv-$r" "$([[ $kind == small ]] && echo "$SMALL_CONNS" || echo "$BIG_CONNS")" "$url" "$prefix" "${pids[@]}"
	read -r rps mbps errs p50 p99 scpu wcpu <"$TMP/last"
	WRK_CPU+=("$wcpu")
	case $kind-$srv in
	small-nginx) NG_RPS+=("$rps") NG_SCPU_S+=("$scpu") ;;
	small-meshnode) MN_RPS+=("$rps") MN_SCPU_S+=("$scpu") ;;
	big-nginx) NG_MBPS+=("$mbps") NG_SCPU_B+=("$scpu") ;;
	big-meshnode) MN_MBPS+=("$mbps") MN_SCPU_B+=("$scpu") ;;
	esac
	if [[ $kind == small ]]; then
		log "$(printf '  run %d %-8s %7s req/s  p50 %s us  p99 %s us  errors %s  CPU: server %s%% wrk %s%%  load %s' \
			"$r" "$srv" "$rps" "$p50" "$p99" "$errs" "$scpu" "$wcpu" "$(loadavg)")"
	else
		log "$(printf '  run %d %-8s %7s MB/s  errors %s  CPU: server %s%% wrk %s%%  load %s' \
			"$r" "$srv" "$mbps" "$errs" "$scpu" "$wcpu" "$(loadavg)")"
	fi
	((errs == 0)) || RUN_NOTES+=("$kind run $r $srv: $errs errors (see wrk output)")
	((errs == 0)) || sed 's/^/    /' "$TMP/wrk.$kind-$srv-$r.txt" >&2
}

log "(a) 4 KiB objects: wrk -t$WRK_THREADS -c$SMALL_CONNS -d$DURATION, $RUNS runs each, alternating"
warm "$SMALL_NG_URL" "$SMALL_CONNS" "$TMP/small.lua" /
warm "$SMALL_MN_URL" "$SMALL_CONNS" "$TMP/small.lua" /n0call.radio/
for ((r = 1; r <= RUNS; r++)); do
	measure small nginx "$r"
	measure small meshnode "$r"
done

log "(b) 100 MB file: wrk -t$WRK_THREADS -c$BIG_CONNS -d$DURATION, $RUNS runs each, alternating"
warm "$BIG_NG_URL" "$BIG_CONNS" "$TMP/report.lua"
warm "$BIG_MN_URL" "$BIG_CONNS" "$TMP/report.lua"
for ((r = 1; r <= RUNS; r++)); do
	measure big nginx "$r"
	measure big meshnode "$r"
done

SERVE_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVE_PID/status")
SERVE_HWM_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
NGINX_RSS_KB=0
for p in "${NG_PIDS[@]}"; do
	NGINX_RSS_KB=$((NGINX_RSS_KB + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
done
if [[ -s $MESH/meshnode.log ]]; then
	log "meshnode logged warnings/errors during the serving runs:"
	sed 's/^/    /' "$MESH/meshnode.log" >&2
fi
stop_pid "$SERVE_PID"
stop_pid "$NGINX_PID"

NG_RPS_MED=$(median "${NG_RPS[@]}")
MN_RPS_MED=$(median "${MN_RPS[@]}")
NG_MBPS_MED=$(median "${NG_MBPS[@]}")
MN_MBPS_MED=$(median "${MN_MBPS[@]}")

# ---------------------------------------------------------------- idle RSS, 10,000 entries
RSS=$TMP/rss
TINY=$TMP/tiny
mkdir -p "$TINY"
log "idle RSS: writing $ENTRIES distinct files of 100-500 bytes"
awk -v dir="$TINY" -v n="$ENTRIES" 'BEGIN {
	srand(42);
	for (i = 0; i < n; i++) {
		len = 100 + (i * 37) % 401; s = sprintf("entry %d:", i);
		while (length(s) < len) s = s sprintf("%08x", int(rand() * 2147483647));
		f = sprintf("%s/%05d", dir, i);
		printf "%s", substr(s, 1, len) > f; close(f)
	}
}'
start_meshnode "$RSS" "$RSS_ADDR"
sleep 5
RSS_EMPTY_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$MESH_PID/status")
log "  fresh meshnode, empty catalog, 5 s idle: VmRSS $RSS_EMPTY_KB kB"

log "  publishing $ENTRIES entries (PUT /api/v1/content?path=/x/N on the control socket, 4 curl processes in parallel)"
pub_start=$(date +%s.%N)
# one curl config per worker: url + upload-file (-T = PUT) + output, repeated
for ((w = 0; w < 4; w++)); do : >"$TMP/put.$w.cfg"; done
for ((i = 0; i < ENTRIES; i++)); do
	f=$(printf '%05d' "$i")
	printf 'url = "http://localhost/api/v1/content?path=/x/%s"\nupload-file = "%s/%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
		"$f" "$TINY" "$f" >>"$TMP/put.$((i % 4)).cfg"
done
CURLS=()
for ((w = 0; w < 4; w++)); do
	curl -sS --unix-socket "$RSS/control.sock" -K "$TMP/put.$w.cfg" >"$TMP/put.$w.codes" &
	CURLS+=("$!")
	PIDS+=("$!")
done
for p in "${CURLS[@]}"; do
	wait "$p" || die "a curl upload process failed"
	forget_pid "$p"
done
created=$(cat "$TMP"/put.*.codes | grep -c '^201$' || true)
pub_s=$(awk -v a="$pub_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
log "  $created of $ENTRIES uploads answered 201 Created, in $pub_s s"
((created == ENTRIES)) || die "only $created of $ENTRIES publishes succeeded: $(cat "$TMP"/put.*.codes | sort | uniq -c | tr '\n' ' ')"
RSS_LOADED_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$MESH_PID/status")

log "  restarting meshnode"
stop_pid "$MESH_PID"
start_meshnode "$RSS" "$RSS_ADDR"
entries=$(curl -fsS --unix-socket "$RSS/control.sock" http://localhost/api/v1/status |
	tr -d ' \n' | sed -n 's/.*"entries":\([0-9]*\).*/\1/p')
[[ $entries == "$ENTRIES" ]] || die "after restart the catalog holds ${entries:-?} entries, expected $ENTRIES"
sleep 5
IDLE_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$MESH_PID/status")
IDLE_RSS_SPLIT=$(awk '/^RssAnon|^RssFile/ {printf "%s%s %s kB", sep, $1, $2; sep = ", "}' "/proc/$MESH_PID/status")
log "  after restart with $entries entries, 5 s idle: VmRSS $IDLE_RSS_KB kB ($IDLE_RSS_SPLIT)"
if [[ -s $RSS/meshnode.log ]]; then
	log "meshnode logged warnings/errors during the RSS test:"
	sed 's/^/    /' "$RSS/meshnode.log" >&2
fi
stop_pid "$MESH_PID"

# ---------------------------------------------------------------- binary size
strip_size() { # size in bytes of a stripped copy
	cp "$1" "$TMP/strip.tmp"
	strip --strip-all "$TMP/strip.tmp" 2>/dev/null || true
	stat -c %s "$TMP/strip.tmp"
	rm -f "$TMP/strip.tmp"
}
REL_SIZE=$(strip_size "$MESHNODE")
if [[ $SKIP_MINZ == 1 ]]; then
	MINZ_SIZE=0
else
	log "building the min-z profile (slow: fat LTO, one codegen unit)"
	bgrun cargo build --manifest-path "$ROOT/Cargo.toml" --profile min-z --bin meshnode
	MINZ_SIZE=$(strip_size "$TARGET/min-z/meshnode")
	# the same 10,000-entry state, served by the min-z binary (informational)
	MESHNODE=$TARGET/min-z/meshnode start_meshnode "$RSS" "$RSS_ADDR"
	sleep 5
	MINZ_RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$MESH_PID/status")
	log "  min-z meshnode, same $ENTRIES entries, 5 s idle: VmRSS $MINZ_RSS_KB kB"
	stop_pid "$MESH_PID"
fi

# ---------------------------------------------------------------- summary
RPS_RATIO=$(ratio "$MN_RPS_MED" "$NG_RPS_MED")
MBPS_RATIO=$(ratio "$MN_MBPS_MED" "$NG_MBPS_MED")
verdict() { # VALUE OP TARGET: met, or missed by how much (in % of the target)
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
		ok = (op == ">=") ? (v >= t) : (v < t);
		if (ok) print "met"; else printf "**missed** by %.1f%%\n", 100 * ((op == ">=") ? (t - v) : (v - t)) / t
	}'
}
mb() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1e6}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1048576}'; }
IDLE_RSS_B=$((IDLE_RSS_KB * 1024))
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)

cat <<EOF

## Serving: meshnode vs nginx (bench/serve_vs_nginx.sh)

Machine: $NPROC cores ($CPU), kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC').
nginx $(nginx -v 2>&1 | sed 's|.*/||'), wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), meshnode $("$MESHNODE" --version | awk '{print $2}') (release build).
wrk runs with $WRK_THREADS thread on the same machine, so it occupies one of the $NPROC cores;
the server under test (nginx: worker_processes auto; meshnode: tokio, one worker per core) competes with it for the rest.
Each measurement: $DURATION, after a $WARMUP unmeasured warm-up; $RUNS runs alternating nginx/meshnode; median reported.

| Test | Server | $(for ((r = 1; r <= RUNS; r++)); do printf 'Run %d | ' "$r"; done)Median |
|---|---|$(for ((r = 1; r <= RUNS; r++)); do printf -- '---:|'; done)---:|
| 4 KiB objects, req/s (-c$SMALL_CONNS) | nginx | $(printf '%s | ' "${NG_RPS[@]}")$NG_RPS_MED |
| 4 KiB objects, req/s (-c$SMALL_CONNS) | meshnode | $(printf '%s | ' "${MN_RPS[@]}")$MN_RPS_MED |
| 100 MB file, MB/s (-c$BIG_CONNS) | nginx | $(printf '%s | ' "${NG_MBPS[@]}")$NG_MBPS_MED |
| 100 MB file, MB/s (-c$BIG_CONNS) | meshnode | $(printf '%s | ' "${MN_MBPS[@]}")$MN_MBPS_MED |

| Figure | Value | Target | Result |
|---|---:|---|---|
| 4 KiB req/s, meshnode / nginx | ${RPS_RATIO}x | >= 1.0x | $(verdict "$RPS_RATIO" ">=" 1.0) |
| 100 MB MB/s, meshnode / nginx | ${MBPS_RATIO}x | >= 0.9x | $(verdict "$MBPS_RATIO" ">=" 0.9) |
| Idle RSS, $ENTRIES entries, after restart + 5 s | $IDLE_RSS_KB kB = $(mb "$IDLE_RSS_B") MB = $(mib "$IDLE_RSS_B") MiB | < 16 MB (16,000,000 B) | $(verdict "$IDLE_RSS_B" "<" 16000000) ($(verdict "$IDLE_RSS_B" "<" 16777216) against 16 MiB) |
| Stripped release binary | $REL_SIZE B ($(mb "$REL_SIZE") MB) | < 8 MB (8,000,000 B) | $(verdict "$REL_SIZE" "<" 8000000) |
| Stripped min-z binary | $(if ((MINZ_SIZE)); then echo "$MINZ_SIZE B ($(mb "$MINZ_SIZE") MB)"; else echo "not built"; fi) | < 8 MB | $(if ((MINZ_SIZE)); then verdict "$MINZ_SIZE" "<" 8000000; else echo "-"; fi) |

Other figures: the idle RSS above splits into $IDLE_RSS_SPLIT; the same state served by the min-z binary: ${MINZ_RSS_KB:-not measured} kB;
idle RSS of a fresh meshnode with an empty catalog $RSS_EMPTY_KB kB; right after publishing the $ENTRIES entries (before the restart) $RSS_LOADED_KB kB;
$ENTRIES publishes over the control socket took $pub_s s;
meshnode serving process after the load runs: VmRSS $SERVE_RSS_KB kB, VmHWM $SERVE_HWM_KB kB; nginx master + workers after the load runs: VmRSS $NGINX_RSS_KB kB in all.
Median CPU during the measured runs (100% = one core, server = all its processes/threads): 4 KiB test nginx $(median "${NG_SCPU_S[@]}")%, meshnode $(median "${MN_SCPU_S[@]}")%; 100 MB test nginx $(median "${NG_SCPU_B[@]}")%, meshnode $(median "${MN_SCPU_B[@]}")%; wrk $(median "${WRK_CPU[@]}")% (median over all runs).
$(if ((${#RUN_NOTES[@]})); then printf 'wrk reported errors: %s\n' "${RUN_NOTES[*]}"; else echo "wrk reported no socket errors, timeouts or non-2xx responses in any measured run."; fi)
EOF
