#!/usr/bin/env python3
"""Idle RSS of a meshnode holding N small own entries (default 10,000).

Publishes N files of 100-500 bytes on the control socket, restarts the
daemon, waits 5 s and prints VmRSS/RssAnon/RssFile. Needs the release binary
(cargo build --release --bin meshnode). Usage: python3 bench/idle_rss.py [N]
The same measurement is part of bench/serve_vs_nginx.sh; this one runs alone.
"""
import http.client, socket, subprocess, os, time, tempfile, sys, shutil
BIN=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "meshnode")
d=tempfile.mkdtemp()
cfg=f'''[node]
callsign = "N0CALL"
state_dir = "{d}/state"
[http]
listen = ["127.0.0.1:18099"]
control_socket = "{d}/control.sock"
[store]
max_bytes = "1GiB"
[connectivity]
probes = []
[discovery]
mdns = false
'''
open(f"{d}/m.toml","w").write(cfg)
class U(http.client.HTTPConnection):
    def __init__(s): super().__init__("localhost", timeout=30)
    def connect(s):
        s.sock=socket.socket(socket.AF_UNIX); s.sock.connect(f"{d}/control.sock")
def start():
    p=subprocess.Popen([BIN,"--config",f"{d}/m.toml"],env=dict(os.environ,RUST_LOG="warn"))
    for _ in range(300):
        if os.path.exists(f"{d}/control.sock"): break
        time.sleep(0.02)
    time.sleep(0.3)
    return p
p=start()
c=U()
n=int(sys.argv[1]) if len(sys.argv)>1 else 10000
for i in range(n):
    body=(f"entry {i}:"*40)[:100+(i*37)%401].encode()
    c.request("PUT",f"/api/v1/content?path=/x/{i:05d}",body=body); r=c.getresponse(); r.read(); assert r.status==201
p.terminate(); p.wait()
p=start(); time.sleep(5)
rss=[l for l in open(f"/proc/{p.pid}/status") if l.startswith(("VmRSS","RssAnon","RssFile"))]
print("".join(rss))
p.terminate(); p.wait()
shutil.rmtree(d, ignore_errors=True)
