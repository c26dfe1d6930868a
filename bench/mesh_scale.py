#!/usr/bin/env python3
"""Scale run: N real meshnode daemons on loopback converging on one catalog.

Each daemon listens on its own loopback address 127.0.1.<i>:8080 (HTTP and
gossip UDP), links to 3 random earlier daemons as static peers (a connected
random graph, no mDNS), and publishes PER_NODE records of its own. The run
reports:
  - time until every daemon holds the same catalog (same digest, all records);
  - time for one later change to reach every daemon;
  - essential items copied everywhere;
  - resident memory per daemon, and gossip/reconciliation bytes per daemon
    per second in steady state.

Usage: bench/mesh_scale.sh [N] [PER_NODE]   (builds the release binary first)
Not part of CI: 50 daemons on 2 cores take a few minutes.
"""

import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
PER_NODE = int(sys.argv[2]) if len(sys.argv) > 2 else 100
ESSENTIAL = 5
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshnode")
random.seed(1)


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def ip(i):
    return f"127.0.1.{i + 1}"


def get_json(i, path):
    c = http.client.HTTPConnection(ip(i), 8080, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)


def metric(i, name):
    c = http.client.HTTPConnection(ip(i), 8080, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    return 0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def digests():
    out = []
    for i in range(N):
        try:
            s = get_json(i, "/api/v1/status")
            out.append((s["mesh"]["catalog_digest"], s["mesh"]["records"]))
        except Exception:
            out.append((None, 0))
    return out


def wait_converged(want_records, limit_s):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        d = digests()
        if all(r == want_records for _, r in d) and len({x for x, _ in d}) == 1:
            return time.monotonic() - t0
        time.sleep(0.25)
    d = digests()
    counts = sorted(r for _, r in d)
    raise SystemExit(f"no convergence in {limit_s} s: record counts {counts[:5]}..{counts[-5:]}")


def main():
    root = tempfile.mkdtemp(prefix="meshscale-")
    procs = []
    try:
        for i in range(N):
            d = os.path.join(root, f"n{i}")
            os.makedirs(d)
            peers = random.sample(range(i), min(3, i)) if i else []
            static = ", ".join(f'"{ip(p)}:8080"' for p in peers)
            cfg = f"""[node]
callsign = "N{i % 10}CALL"
label = "n{i}"
state_dir = "{d}/state"
[http]
listen = ["{ip(i)}:8080"]
control_socket = "{d}/control.sock"
[connectivity]
probes = []
[discovery]
mdns = false
static_peers = [{static}]
redial_interval = "2s"
[gossip]
heartbeat_interval = "5s"
peer_expiry = "20s"
[sync]
reconcile_interval = "30s"
"""
            with open(f"{d}/meshnode.toml", "w") as f:
                f.write(cfg)
            log = open(f"{d}/log.txt", "w")
            procs.append(subprocess.Popen([BIN, "--config", f"{d}/meshnode.toml"],
                                          stdout=log, stderr=log,
                                          env=dict(os.environ, RUST_LOG="warn")))
            for _ in range(200):
                if os.path.exists(f"{d}/control.sock"):
                    break
                time.sleep(0.02)
        print(f"{N} daemons up; linking", flush=True)
        time.sleep(3)
        # publish PER_NODE standard items and a few essential ones
        t_pub = time.monotonic()
        for i in range(N):
            c = UnixConn(os.path.join(root, f"n{i}", "control.sock"))
            for k in range(PER_NODE):
                prio = "essential" if (i == 0 and k < ESSENTIAL) else "standard"
                body = f"node {i} item {k} ".encode() * 20
                c.request("PUT", f"/api/v1/content?path=/n{i}/item{k}.txt&priority={prio}", body=body)
                r = c.getresponse()
                r.read()
                assert r.status == 201, r.status
            c.close()
        pub_s = time.monotonic() - t_pub
        total = N * PER_NODE
        print(f"published {total} items in {pub_s:.1f} s", flush=True)
        conv = wait_converged(total, 600)
        print(f"converged: all {N} daemons hold the same {total} records "
              f"{conv:.1f} s after the last publish", flush=True)
        # one change, timed
        c = UnixConn(os.path.join(root, f"n{N - 1}", "control.sock"))
        c.request("PUT", "/api/v1/content?path=/late.txt", body=b"late")
        t1 = time.monotonic()
        c.getresponse().read()
        change = wait_converged(total + 1, 300)
        print(f"one change reached all {N} daemons in {change:.2f} s", flush=True)
        # essential items everywhere
        t2 = time.monotonic()
        while time.monotonic() - t2 < 120:
            held = [get_json(i, "/api/v1/status")["store"]["entries"] for i in range(N)]
            if all(h >= ESSENTIAL for h in held[1:]):
                break
            time.sleep(0.5)
        print(f"essential items on every daemon: {min(held[1:]) >= ESSENTIAL} "
              f"(min entries {min(held[1:])})", flush=True)
        # steady state: bytes per daemon per second
        names = ["meshnode_gossip_bytes_sent_total", "meshnode_reconciliation_bytes_total"]
        before = [[metric(i, n) for n in names] for i in range(N)]
        window = 30
        time.sleep(window)
        after = [[metric(i, n) for n in names] for i in range(N)]
        gossip = sum(a[0] - b[0] for a, b in zip(after, before)) / N / window
        recon = sum(a[1] - b[1] for a, b in zip(after, before)) / N / window
        rss = [rss_kb(p.pid) for p in procs]
        rss.sort()
        print(f"steady state per daemon: gossip {gossip:.0f} B/s sent, "
              f"reconciliation {recon:.0f} B/s (initiated)", flush=True)
        print(f"RSS per daemon with {total + 1} records: median {rss[N // 2]} kB, "
              f"max {rss[-1]} kB, min {rss[0]} kB", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print("kept", root)


if __name__ == "__main__":
    main()
