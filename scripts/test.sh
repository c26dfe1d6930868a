#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust (rustup) installed.
#
#   ./scripts/test.sh
#
# As root it first installs the Debian packages the tests use. Then it builds
# once, checks formatting and lints, and runs every test: unit, in-process
# daemon, crash and CLI tests in parallel (cargo-nextest when present), the
# heavy real-time ones one after another (nextest test group "serial").
# Tests that need what this machine lacks print "SKIP <test>: <reason>".
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests use from Debian: systemd-analyze (unit check), and the tools
# of the later subsystems' tests as they land; chromium and its driver (and a
# font: recommends are not installed) for the status page in a browser;
# dbus-daemon and dbus-send (dbus-bin) for the private bus of tests/dbus.rs.
# Radio tests (tests/rf_*.rs, tests/rf/README.md): direwolf, socat and
# python3 for the virtual channel; qemu-system-x86, cpio and xz-utils for the
# kernel AX.25 VM, whose kernel, busybox-static and ax25-tools debs are
# fetched with `apt-get download` into target/tmp/rfvm-cache, not installed.
APT_PACKAGES=(systemd iproute2 curl ca-certificates tcpdump python3 util-linux iperf3
    chromium chromium-driver fonts-dejavu-core dbus-daemon dbus-bin
    direwolf socat qemu-system-x86 cpio xz-utils)

step() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        step "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
else
    echo "not root: not installing Debian packages; tests needing them skip with a reason"
fi

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs), version 1.89 or newer" >&2
    exit 1
fi

step "format and lints"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

step "build (once)"
cargo build --locked --all-targets

# Every target in tests/fuzz (cargo fuzz list), sharing FUZZ_SECONDS (default
# 90) between them, after one build. A crash fails the script once every
# target has run; its input stays in tests/fuzz/artifacts/<target>/.
FUZZ_SECONDS=${FUZZ_SECONDS:-90}
step "fuzz (bounded: ${FUZZ_SECONDS} s over all targets)"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    if ! command -v cargo-fuzz >/dev/null && ! cargo install cargo-fuzz --locked -q; then
        echo "SKIP fuzz: cargo-fuzz could not be installed"
    fi
    if command -v cargo-fuzz >/dev/null; then
        mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir tests/fuzz)
        [ ${#targets[@]} -gt 0 ] || { echo "cargo fuzz list found no targets in tests/fuzz" >&2; exit 1; }
        per=$(( FUZZ_SECONDS / ${#targets[@]} ))
        [ "$per" -ge 5 ] || per=5
        echo "${#targets[@]} targets, ${per} s each: ${targets[*]}"
        cargo +nightly fuzz build --fuzz-dir tests/fuzz
        crashed=()
        mkdir -p target/fuzz-logs
        for t in "${targets[@]}"; do
            mkdir -p "target/fuzz-corpus/$t" "tests/fuzz/seeds/$t"
            log="target/fuzz-logs/$t.log"
            if cargo +nightly fuzz run --fuzz-dir tests/fuzz "$t" "target/fuzz-corpus/$t" "tests/fuzz/seeds/$t" \
                -- -max_total_time="$per" >"$log" 2>&1; then
                echo "$t: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
            else
                crashed+=("$t")
                echo "FAIL fuzz $t (full log: $log):"
                grep -E -A 1 "panicked at" "$log" | head -n 4 || true
                grep -E "ERROR: AddressSanitizer|ERROR: libFuzzer: (out-of-memory|timeout)|Test unit written to|^Base64:" "$log" ||
                    tail -n 20 "$log"
            fi
        done
        if [ ${#crashed[@]} -gt 0 ]; then
            echo "fuzz: crash in ${crashed[*]}; reproduce with" \
                "cargo +nightly fuzz run --fuzz-dir tests/fuzz <target> tests/fuzz/artifacts/<target>/<file>" >&2
            exit 1
        fi
    fi
else
    echo "SKIP fuzz: no nightly toolchain (rustup toolchain install nightly; cargo install cargo-fuzz)"
fi

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests; run them first so its summary closes the log
    cargo test --locked --doc -q
    cargo nextest run --locked --no-fail-fast
else
    echo "cargo-nextest not installed: using cargo test"
    cargo test --locked --no-fail-fast
fi
