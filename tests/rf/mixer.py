#!/usr/bin/env python3
"""Virtual radio channel for N Direwolf soft TNCs (Python standard library only).

Started by the test harness (tests/common/rf.rs); see tests/rf/README.md for
running it by hand. Audio is signed 16-bit little-endian mono at --rate.

Transmit side. Station i's Direwolf plays into an ALSA `file` PCM (slave
`null`) that writes raw samples into the FIFO <dir>/tx<i>.fifo. The `null`
slave has no clock, so Direwolf writes a whole transmission (TXDELAY flags,
frames, TXTAIL) into the FIFO within milliseconds, while it keeps "PTT" for
the computed air time itself. This process therefore does the pacing:

  * every tick (10 ms by default) it takes one tick of audio from every
    station that has queued audio: a queued burst plays out in real time;
  * a new burst waits --prebuffer-ms before it starts, as a guard against
    the writer being descheduled in the middle of a burst (a gap would cut
    the frame on the air);
  * each receiver r gets the sum over the other stations j of
    level * gain[j][r] * audio_j, plus optional Gaussian noise. With --links
    only the listed pairs hear each other (hidden terminals); --gain sets
    one directed link (capture effect);
  * half duplex: a station that transmits in this tick hears nothing but
    the noise (unless --full-duplex-rx);
  * silence is sent when nobody transmits: receivers always get a
    continuous sample stream, so Direwolf's demodulator and DCD keep running
    (without new samples their state would freeze where the last burst left
    it - reasoned, not measured);
  * --monitor-port gets the sum of all transmitters at `level` (a scanner
    that hears everybody), for an independent receiver.

Receive side. Direwolf reads `ADEVICE udp:PORT`: raw samples, at most 2000
bytes per datagram (SDR_UDP_BUF_MAXLEN in Direwolf 1.6), so a tick is at
most 1000 samples; 10 ms at 48 kHz is 960 bytes.

Event log (--log, line buffered, one event per line, times are Unix seconds
at the moment the tick is sent):

  <time> ready                    FIFOs are open: Direwolf may start
  <time> tx-start <i>             first tick of a burst of station i
  <time> tx-end <i> <samples>     tick after its last one; samples = audio
                                  length of the burst (airtime = samples/rate)

The process exits on SIGTERM/SIGINT, and also when its parent (the test)
disappears: it then sends SIGTERM to its own process group, which the
harness makes the group of every Direwolf of the channel. A test process
that is killed outright (SIGKILL, nextest timeout) thus leaves nothing behind.
"""
import argparse
import array
import os
import random
import select
import signal
import socket
import sys
import time
import warnings

try:  # C implementation of the sample loops; deprecated in 3.11, gone in 3.13
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
except ImportError:  # pragma: no cover - depends on the Python version
    audioop = None

MAX_DATAGRAM = 2000  # Direwolf 1.6 udp audio input limit (bytes)


def clip(v):
    return 32767 if v > 32767 else (-32768 if v < -32768 else v)


def scaled(chunk, factor):
    """chunk (S16_LE bytes) multiplied by factor, saturating."""
    if factor == 1.0:
        return chunk
    if audioop is not None:
        return audioop.mul(chunk, 2, factor)
    s = array.array("h", chunk)
    return array.array("h", (clip(int(x * factor)) for x in s)).tobytes()


def mix(parts, nbytes):
    """Saturating sum of equally long S16_LE chunks (silence if none)."""
    if not parts:
        return bytes(nbytes)
    out = parts[0]
    for p in parts[1:]:
        if audioop is not None:
            out = audioop.add(out, p, 2)
        else:
            a, b = array.array("h", out), array.array("h", p)
            out = array.array("h", (clip(x + y) for x, y in zip(a, b))).tobytes()
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="directory holding tx<i>.fifo")
    ap.add_argument("--rx-ports", required=True,
                    help="comma list: UDP audio input port of each station's Direwolf")
    ap.add_argument("--rate", type=int, default=48000, help="samples per second")
    ap.add_argument("--tick-ms", type=int, default=10)
    ap.add_argument("--prebuffer-ms", type=int, default=30)
    ap.add_argument("--links", default="",
                    help="'0-1,1-2': only these pairs hear each other (both ways); "
                         "default everyone hears everyone")
    ap.add_argument("--gain", action="append", default=[],
                    help="'i>j=0.3': gain of i's signal at j, repeatable (after --links)")
    ap.add_argument("--level", type=float, default=0.25,
                    help="gain of every link: Direwolf transmits near full scale, "
                         "0.25 makes it report an audio level around 50, as it likes")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="std-dev of Gaussian noise added to every receiver (int16 units)")
    ap.add_argument("--seed", type=int, default=1, help="noise generator seed")
    ap.add_argument("--full-duplex-rx", action="store_true",
                    help="a transmitting station still hears the others")
    ap.add_argument("--monitor-port", type=int, default=0,
                    help="UDP port on 127.0.0.1 that gets the sum of all transmitters")
    ap.add_argument("--log", default="", help="event log file (appended)")
    ap.add_argument("--parent-pid", type=int, default=0,
                    help="exit (and TERM the process group) when this process is gone")
    return ap.parse_args(argv)


def gain_matrix(n, links, gains):
    """gain[src][dst]; a station never hears itself."""
    if links:
        g = [[0.0] * n for _ in range(n)]
        for pair in links.split(","):
            i, j = (int(x) for x in pair.split("-"))
            if i == j or not (0 <= i < n and 0 <= j < n):
                raise SystemExit(f"bad link {pair!r} for {n} stations")
            g[i][j] = g[j][i] = 1.0
    else:
        g = [[0.0 if i == j else 1.0 for j in range(n)] for i in range(n)]
    for spec in gains:
        lhs, v = spec.split("=")
        i, j = (int(x) for x in lhs.split(">"))
        g[i][j] = float(v)
    return g


def main(argv):
    a = parse_args(argv)
    ports = [int(p) for p in a.rx_ports.split(",")]
    n = len(ports)
    gain = gain_matrix(n, a.links, a.gain)
    spt = a.rate * a.tick_ms // 1000  # samples per tick
    bpt = 2 * spt                     # bytes per tick
    if bpt > MAX_DATAGRAM:
        raise SystemExit(f"a tick of {bpt} bytes exceeds Direwolf's {MAX_DATAGRAM}-byte datagrams")
    silence = bytes(bpt)
    prebuffer_ticks = max(0, a.prebuffer_ms // a.tick_ms)

    noise = None
    if a.noise > 0:
        rnd = random.Random(a.seed)
        noise = array.array("h", (clip(int(rnd.gauss(0, a.noise))) for _ in range(a.rate))).tobytes()
        pick = random.Random(a.seed + 1)

    def noise_tick():
        start = 2 * pick.randrange(0, a.rate - spt)
        return noise[start:start + bpt]

    # Read end first, then a writer of our own so that the FIFO never reports
    # EOF when a Direwolf closes and reopens its output.
    rfds, keep = [], []
    for i in range(n):
        path = os.path.join(a.dir, f"tx{i}.fifo")
        if not os.path.exists(path):
            os.mkfifo(path, 0o600)
        rfds.append(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        keep.append(os.open(path, os.O_WRONLY))
    fd_station = {fd: i for i, fd in enumerate(rfds)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    log = open(a.log, "a", buffering=1) if a.log else None

    def event(text):
        if log:
            log.write(f"{time.time():.4f} {text}\n")

    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    event("ready")

    queue = [bytearray() for _ in range(n)]
    wait = [0] * n          # prebuffer countdown of a new burst
    active = [False] * n    # station is on the air
    burst = [0] * n         # samples played in the current burst
    period = a.tick_ms / 1000.0
    next_tick = time.monotonic()
    while running:
        # Collect FIFO data until the next tick is due.
        while True:
            timeout = next_tick - time.monotonic()
            if timeout <= 0:
                break
            ready, _, _ = select.select(rfds, [], [], timeout)
            for fd in ready:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                i = fd_station[fd]
                if data:
                    if not queue[i] and not active[i]:
                        wait[i] = prebuffer_ticks
                    queue[i] += data
        next_tick += period
        if time.monotonic() - next_tick > 1.0:  # far behind (process stopped?): resync
            next_tick = time.monotonic() + period
        if a.parent_pid and os.getppid() != a.parent_pid:
            event("parent gone")
            break

        # One tick from every station on the air.
        chunk = [None] * n
        for i in range(n):
            if not (queue[i] or active[i]):
                continue
            if wait[i] > 0:
                wait[i] -= 1
                continue
            if queue[i]:
                c = bytes(queue[i][:bpt])
                del queue[i][:bpt]
                burst[i] += len(c) // 2
                chunk[i] = c + bytes(bpt - len(c))
                if not active[i]:
                    active[i] = True
                    event(f"tx-start {i}")
            else:
                active[i] = False
                event(f"tx-end {i} {burst[i]}")
                burst[i] = 0

        if a.monitor_port:
            on_air = [scaled(c, a.level) for c in chunk if c is not None]
            try:
                sock.sendto(mix(on_air, bpt), ("127.0.0.1", a.monitor_port))
            except OSError:
                pass
        for r in range(n):
            if chunk[r] is not None and not a.full_duplex_rx:
                heard = []  # half duplex: the transmitter's receiver is muted
            else:
                heard = [scaled(chunk[j], a.level * gain[j][r]) for j in range(n)
                         if chunk[j] is not None and gain[j][r] > 0]
            if noise is not None:
                heard.append(noise_tick())
            out = mix(heard, bpt) if heard else silence
            try:
                sock.sendto(out, ("127.0.0.1", ports[r]))
            except OSError:
                pass  # that Direwolf is not up (yet): it misses this tick

    for i in range(n):
        if active[i]:
            event(f"tx-end {i} {burst[i]}")
    event("exit")
    if a.parent_pid and os.getppid() != a.parent_pid and os.getpgrp() == os.getpid():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
    for fd in rfds + keep:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
