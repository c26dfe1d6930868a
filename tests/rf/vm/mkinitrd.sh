#!/usr/bin/env bash
# Builds what the kernel AX.25 VM boots (see tests/common/rfvm.rs and
# tests/rf/README.md): Debian's stock kernel and a small busybox initramfs
# with the ax25/mkiss modules and ax25-tools.
#
#   mkinitrd.sh --base CACHE_DIR
#       download (apt-get download) and build the cached part only
#   mkinitrd.sh CACHE_DIR OUT_DIR GUEST_SCRIPT [STATIC_BIN...]
#       -> OUT_DIR/kernel and OUT_DIR/initrd.gz: the cached base archive
#          plus a second archive with /test.sh (GUEST_SCRIPT) and the given
#          binaries in /bin (they must be static: the guest only has the
#          libc that ax25-tools needs)
#
# The guest's /init mounts /proc, /sys and /dev, loads crc16, ax25 and mkiss,
# attaches ttyS1 (QEMU's second serial port, wired to a KISS TNC) as AX.25
# port "radio" = interface ax0 with callsign N0VM, prints
# "GUEST: ax0 ready", runs `sh /test.sh`, prints "GUEST: test.sh exit=N"
# and powers off.
#
# The kernel package is resolved from `apt-cache depends linux-image-amd64`
# (it changes with Debian security updates; KPKG=linux-image-... overrides).
# The .debs (kernel, busybox-static, ax25-tools, libax25; ~72 MB) and the
# base archive stay in CACHE_DIR, rebuilt when the kernel package or this
# script changes. When a download fails (stale package lists: the old
# kernel is gone from the mirror) and we are root, it runs `apt-get update`
# once and tries again. Exit status 75 means the packages could not be had.
#
# Host tools: apt-get, apt-cache, dpkg-deb, cpio, gzip, flock, sha256sum.
set -euo pipefail

UNAVAILABLE=75
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
GUEST_CALL=N0VM

die() { echo "mkinitrd: $*" >&2; exit 1; }

base_only=0
if [[ "${1:-}" == --base ]]; then
    base_only=1
    shift
fi
[[ $# -ge 1 ]] || die "usage: $0 --base CACHE_DIR | CACHE_DIR OUT_DIR GUEST_SCRIPT [STATIC_BIN...]"
mkdir -p "$1"
CACHE="$(cd "$1" && pwd)"
shift

resolve_kernel() {
    [[ -n "${KPKG:-}" ]] && { echo "$KPKG"; return; }
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# download PKG...: apt-get download into $CACHE/debs what is not there yet
download() {
    local missing=() p
    for p in "$@"; do
        compgen -G "$CACHE/debs/${p}_*.deb" >/dev/null || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local opts=()
    # root: download as root (apt otherwise warns that _apt cannot write here)
    [[ "$(id -u)" == 0 ]] && opts=(-o APT::Sandbox::User=root)
    (cd "$CACHE/debs" && apt-get download "${opts[@]}" "${missing[@]}")
}

# kernel_image BZIMAGE OUT: the uncompressed ELF kernel inside BZIMAGE when
# it has a PVH entry note (Debian: CONFIG_PVH=y), else BZIMAGE itself. QEMU
# boots an ELF kernel directly (PVH) instead of through the bzImage
# decompressor, which takes ~7 s under TCG (measured: kernel start at 8.4 s
# with the bzImage, 1.1 s with the ELF; userspace at 12.6 s and 6.4 s).
kernel_image() {
    local bz="$1" out="$2" magic tool pos
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool="${magic%%:*}"
        command -v "$tool" >/dev/null || continue
        pos="$(LC_ALL=C grep -obUaP "${magic#*:}" "$bz" | head -n 1 | cut -d: -f1)" || true
        [[ -n "$pos" ]] || continue
        # the decompressor complains about the bytes after the stream
        tail -c "+$((pos + 1))" "$bz" | "$tool" -dc > "$out" 2>/dev/null || true
        if [[ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" == '177ELF' ]] &&
           { ! command -v readelf >/dev/null ||
             readelf -n "$out" | grep -Eq '0x00000012|PHYS32_ENTRY'; }; then
            return 0
        fi
    done
    echo "mkinitrd: no PVH ELF kernel in $bz: booting the bzImage (slower)" >&2
    cp "$bz" "$out"
}

build_base() {
    KPKG="$(resolve_kernel)"
    if [[ -z "$KPKG" && "$(id -u)" == 0 ]]; then
        apt-get update -qq || true
        KPKG="$(resolve_kernel)"
    fi
    [[ -n "$KPKG" ]] || { echo "mkinitrd: apt-cache knows no linux-image-amd64 (run apt-get update)" >&2; exit $UNAVAILABLE; }
    local key
    key="$KPKG $(sha256sum "$SELF" | cut -c1-16)"
    if [[ -f "$CACHE/base.key" && "$(cat "$CACHE/base.key")" == "$key" &&
          -f "$CACHE/base.cpio.gz" && -f "$CACHE/kernel" ]]; then
        return 0
    fi
    echo "mkinitrd: building the base image for $KPKG in $CACHE" >&2
    mkdir -p "$CACHE/debs"
    local pkgs=("$KPKG" busybox-static ax25-tools libax25)
    if ! download "${pkgs[@]}"; then
        if [[ "$(id -u)" == 0 ]]; then
            echo "mkinitrd: download failed; apt-get update and again" >&2
            apt-get update -qq || true
            unset KPKG
            KPKG="$(resolve_kernel)"
            pkgs[0]="$KPKG"
            key="$KPKG $(sha256sum "$SELF" | cut -c1-16)"
            download "${pkgs[@]}" || { echo "mkinitrd: apt-get download ${pkgs[*]} failed" >&2; exit $UNAVAILABLE; }
        else
            echo "mkinitrd: apt-get download ${pkgs[*]} failed (not root: no apt-get update)" >&2
            exit $UNAVAILABLE
        fi
    fi
    # drop the debs of older kernels
    find "$CACHE/debs" -name 'linux-image-*.deb' ! -name "${KPKG}_*.deb" -delete

    local x="$CACHE/x" r="$CACHE/root" kver="${KPKG#linux-image-}" d
    rm -rf "$x" "$r"
    mkdir -p "$x"
    for d in "$CACHE"/debs/{"$KPKG",busybox-static,ax25-tools,libax25}_*.deb; do
        dpkg-deb -x "$d" "$x"
    done
    mkdir -p "$r"/{bin,sbin,usr/sbin,usr/lib,lib64,lib/x86_64-linux-gnu,lib/modules,etc/ax25} \
             "$r"/{proc,sys,dev,tmp,run,var/run,var/lock}
    cp "$x/bin/busybox" "$r/bin/busybox"

    # modules: uncompressed in Debian 12 (.ko), compressed in later releases;
    # no modules.dep in the guest, so they are loaded in dependency order
    local m="$x/lib/modules/$kver/kernel" mod f
    for mod in lib/crc16 net/ax25/ax25 drivers/net/hamradio/mkiss; do
        f="$m/$mod.ko"
        if [[ -f "$f" ]]; then cp "$f" "$r/lib/modules/"
        elif [[ -f "$f.xz" ]]; then xz -dc "$f.xz" > "$r/lib/modules/$(basename "$f")"
        elif [[ -f "$f.zst" ]]; then zstd -qdc "$f.zst" > "$r/lib/modules/$(basename "$f")"
        else die "$mod.ko not found in $KPKG"
        fi
    done
    cp "$x/usr/sbin/kissattach" "$x/usr/sbin/kissparms" "$x/usr/sbin/beacon" "$r/usr/sbin/"
    cp -a "$x"/usr/lib/libax25.so.0* "$r/usr/lib/" 2>/dev/null ||
        cp -a "$x"/usr/lib/x86_64-linux-gnu/libax25.so.0* "$r/usr/lib/"
    # ax25-tools are built against the host release's libc
    cp -L /lib/x86_64-linux-gnu/libc.so.6 "$r/lib/x86_64-linux-gnu/"
    cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"
    printf 'radio\t%s\t115200\t255\t2\tQEMU ttyS1 (KISS TNC)\n' "$GUEST_CALL" > "$r/etc/ax25/axports"

    cat > "$r/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "GUEST: userspace up at $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"
for m in crc16 ax25 mkiss; do
    insmod /lib/modules/$m.ko || echo "GUEST: insmod $m FAILED"
done
# kissattach quirks: run from PID 1 it does not daemonise (daemon_start()
# skips the fork when the parent is PID 1), so it is a background job; and
# it exits quietly, taking ax0 with it, when /var/lock is missing (tty_lock).
kissattach /dev/ttyS1 radio &
i=0
while [ ! -e /sys/class/net/ax0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ -e /sys/class/net/ax0 ]; then
    # mkiss starts in "crc mode auto": its first frames are SMACK, KISS
    # command byte 0x80 plus 2 CRC bytes, which Direwolf takes for port 8
    # and drops. 1 = plain KISS.
    kissparms -p radio -c 1
    echo "GUEST: ax0 ready at $(cut -d' ' -f1 /proc/uptime)s"
    sh /test.sh
    echo "GUEST: test.sh exit=$?"
else
    echo "GUEST: ax0 missing: kissattach failed"
fi
poweroff -f
INIT
    chmod +x "$r/init"
    (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) > "$CACHE/base.cpio.gz.tmp"
    kernel_image "$x/boot/vmlinuz-$kver" "$CACHE/kernel.tmp"
    mv "$CACHE/base.cpio.gz.tmp" "$CACHE/base.cpio.gz"
    mv "$CACHE/kernel.tmp" "$CACHE/kernel"
    echo "$key" > "$CACHE/base.key"
    rm -rf "$x" "$r"
}

# One builder at a time per cache (tests run in parallel processes).
exec 9>"$CACHE/.lock"
flock 9
build_base
flock -u 9
[[ $base_only == 1 ]] && exit 0

[[ $# -ge 2 ]] || die "usage: $0 CACHE_DIR OUT_DIR GUEST_SCRIPT [STATIC_BIN...]"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
GUEST="$2"
shift 2
o="$OUT/overlay"
rm -rf "$o"
mkdir -p "$o/bin"
cp "$GUEST" "$o/test.sh"
for b in "$@"; do
    cp "$b" "$o/bin/"
    chmod 755 "$o/bin/$(basename "$b")"
done
# The kernel unpacks concatenated (separately compressed) cpio archives in
# order; the overlay adds to the base.
(cd "$o" && find . ! -name . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$OUT/overlay.cpio.gz"
cat "$CACHE/base.cpio.gz" "$OUT/overlay.cpio.gz" > "$OUT/initrd.gz"
# a hard link: a snapshot that matches the base even if another test
# rebuilds the cache meanwhile (a symlink when on another file system)
rm -f "$OUT/kernel"
ln "$CACHE/kernel" "$OUT/kernel" 2>/dev/null || ln -s "$CACHE/kernel" "$OUT/kernel"
