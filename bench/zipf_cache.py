#!/usr/bin/env python3
"""Cache effectiveness: 20 real daemons with small stores under a Zipf load,
coordinated (one mesh) against each node caching alone.

An "internet" origin on 127.0.2.1:8000 serves M objects of SIZE bytes
(Cache-Control: max-age=86400) and counts every request it gets. Each daemon
listens on 127.0.1.<i>:8080, probes the origin (so it counts itself online)
and has a store of CAP objects' worth of bytes. One request sequence (seeded)
is sent twice, to the same daemons' proxy ports in absolute form:

  - alone: the daemons are not linked (no static peers, no mDNS); every node
    fetches what its own clients ask for and keeps it in its own store;
  - mesh:  the daemons are linked (static peers, a random connected graph);
    a page is fetched by one node for everyone, and served from the mesh.

Reported per mode: origin requests and bytes (external traffic), the mesh's
hit ratio (requests not sent to the origin), and client latency.

Usage: bench/zipf_cache.sh [REQUESTS=6000] [OBJECTS=2000] [ALPHA=0.8]
Not part of CI: two runs of a few minutes each on 2 cores.
"""

import bisect
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

N = 20
REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
OBJECTS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
ALPHA = float(sys.argv[3]) if len(sys.argv) > 3 else 0.8
SIZE = 16 * 1024
CAP = 50  # objects per node's store: 2.5% of the catalog each, 50% together
WORKERS = 4
ORIGIN = ("127.0.2.1", 8000)
BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "meshnode")


def ip(i):
    return f"127.0.1.{i + 1}"


class Origin(http.server.BaseHTTPRequestHandler):
    counts = {}
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with Origin.lock:
            Origin.counts[self.path] = Origin.counts.get(self.path, 0) + 1
        seed = self.path.encode() * (SIZE // max(1, len(self.path)) + 1)
        body = seed[:SIZE]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def zipf_sequence(seed):
    """REQUESTS (node, object) pairs: objects by Zipf(ALPHA), nodes uniform."""
    rnd = random.Random(seed)
    weights = [1.0 / (k + 1) ** ALPHA for k in range(OBJECTS)]
    cum, acc = [], 0.0
    for w in weights:
        acc += w
        cum.append(acc)
    seq = []
    for _ in range(REQUESTS):
        k = bisect.bisect_left(cum, rnd.random() * acc)
        seq.append((rnd.randrange(N), k))
    return seq


def get_json(i, path):
    c = http.client.HTTPConnection(ip(i), 8080, timeout=10)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def start(root, linked):
    rnd = random.Random(7)
    procs = []
    for i in range(N):
        d = os.path.join(root, f"n{i}")
        os.makedirs(d)
        peers = rnd.sample(range(i), min(3, i)) if (i and linked) else []
        static = ", ".join(f'"{ip(p)}:8080"' for p in peers)
        cfg = f"""[node]
callsign = "N{i % 10}CALL"
label = "n{i}"
state_dir = "{d}/state"
[http]
listen = ["{ip(i)}:8080"]
control_socket = "{d}/control.sock"
[store]
max_bytes = {CAP * SIZE}
[connectivity]
probes = ["tcp://{ORIGIN[0]}:{ORIGIN[1]}"]
interval = "2s"
failover = false
[discovery]
mdns = false
static_peers = [{static}]
redial_interval = "1s"
[gossip]
heartbeat_interval = "2s"
peer_expiry = "10s"
[sync]
reconcile_interval = "10s"
"""
        with open(f"{d}/meshnode.toml", "w") as f:
            f.write(cfg)
        log = open(f"{d}/log.txt", "w")
        procs.append(subprocess.Popen([BIN, "--config", f"{d}/meshnode.toml"],
                                      stdout=log, stderr=log,
                                      env=dict(os.environ, RUST_LOG="warn")))
    # every daemon online, and (linked) every one seeing all N online
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            ok = all(get_json(i, "/api/v1/status")["mode"] == "online" for i in range(N))
            if ok and linked:
                ok = all(sum(1 for n in get_json(i, "/api/v1/topology")["nodes"]
                             if n.get("mode") == "online") == N for i in range(N))
            if ok:
                return procs
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    stop(procs)
    raise SystemExit("the daemons did not come up online (and linked) within 120 s")


def stop(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def run(seq):
    """Sends seq with WORKERS threads (each keeps one connection per node)."""
    lat, errors = [], []
    lock = threading.Lock()
    chunks = [seq[w::WORKERS] for w in range(WORKERS)]

    def worker(part):
        conns = {}
        for node, k in part:
            c = conns.get(node)
            if c is None:
                c = conns[node] = http.client.HTTPConnection(ip(node), 8080, timeout=30)
            url = f"http://{ORIGIN[0]}:{ORIGIN[1]}/obj/{k}"
            t = time.monotonic()
            try:
                c.request("GET", url)
                r = c.getresponse()
                body = r.read()
                ok = r.status == 200 and len(body) == SIZE
            except (OSError, http.client.HTTPException) as e:
                conns.pop(node).close()
                ok, r = False, e
            dt = time.monotonic() - t
            with lock:
                lat.append(dt)
                if not ok:
                    errors.append(f"{url} at n{node}: {getattr(r, 'status', r)}")
        for c in conns.values():
            c.close()

    threads = [threading.Thread(target=worker, args=(p,)) for p in chunks]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, sorted(lat), errors


def main():
    srv = Server(ORIGIN, Origin)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    seq = zipf_sequence(1)
    distinct = len({k for _, k in seq})
    print(f"{N} daemons, store {CAP} objects of {SIZE // 1024} KiB each; {OBJECTS} objects, "
          f"Zipf alpha {ALPHA}; {REQUESTS} requests ({distinct} distinct), {WORKERS} clients",
          flush=True)
    results = {}
    for mode in ["alone", "mesh"]:
        root = tempfile.mkdtemp(prefix=f"zipf-{mode}-")
        procs = start(root, linked=(mode == "mesh"))
        try:
            with Origin.lock:
                Origin.counts.clear()
            took, lat, errors = run(seq)
            with Origin.lock:
                fetches = sum(Origin.counts.values())
                refetched = sum(v - 1 for v in Origin.counts.values())
            results[mode] = fetches
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3
            print(f"{mode:>5}: origin requests {fetches} ({fetches * SIZE / 2**20:.1f} MiB), "
                  f"of which re-fetches {refetched}; served without the origin "
                  f"{1 - fetches / REQUESTS:.1%}; latency p50 {p(0.5):.1f} ms, "
                  f"p95 {p(0.95):.1f} ms, p99 {p(0.99):.1f} ms; {took:.1f} s; "
                  f"errors {len(errors)}", flush=True)
            for e in errors[:5]:
                print("   ", e)
        finally:
            stop(procs)
            if os.environ.get("KEEP") is None:
                shutil.rmtree(root, ignore_errors=True)
            else:
                print("kept", root)
    a, m = results["alone"], results["mesh"]
    print(f"origin requests: mesh {m} vs alone {a}: {m / a:.2f}x "
          f"({a - m} external downloads avoided; lower bound {distinct}: "
          f"each distinct object once)", flush=True)
    srv.shutdown()


if __name__ == "__main__":
    main()
