//! Bandwidth fairness in the kernel, measured with real iperf3 flows between
//! network namespaces (tests/common/netns.rs). Needs root, iperf3 and tc
//! (tc only to set up the unshaped comparison and to read the kernel's
//! state back; meshnode itself speaks netlink). Runs in nextest's `serial`
//! group: it is a real-time measurement.
//!
//! A server S (the "internet") sits behind a router R running meshnode;
//! eight clients sit on R's LAN. Every client downloads from S at once
//! (iperf3 -R), two of them with eight parallel streams. The same load runs
//! twice in one test, behind the same total bottleneck on R's LAN port:
//! once through one shared TBF queue (no per-client classes), once with
//! meshnode's shaping. Jain's fairness index of the clients' throughputs
//! must be at least 0.9 with shaping.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/wait.rs"]
mod wait;

use wait::wait_for;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Host, Lab};
use serde_json::Value;

const CLIENTS: usize = 8;
const RATE_MBIT: u64 = 40;
const ROUND_SECS: u32 = 8;

fn sh(host: &Host, cmd: &str) -> String {
    let out = host.exec("sh", &["-c", cmd]);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A datagram from `from` to `to`'s discard port: the router forwards it,
/// resolving `to` in its neighbour table (REACHABLE once `to` answers ARP).
fn poke(from: &Host, to: std::net::Ipv4Addr) {
    let out = from.exec(
        "python3",
        &[
            "-c",
            &format!(
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello', ('{to}', 9))"
            ),
        ],
    );
    assert!(out.status.success(), "{out:?}");
}

/// Jain's fairness index: (Σx)² / (n·Σx²); 1 is perfectly fair.
fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let q: f64 = x.iter().map(|v| v * v).sum();
    s * s / (x.len() as f64 * q)
}

/// Every client in `who` downloads from the server for `secs` at once;
/// returns each one's received Mbit/s.
fn round(server: &Host, clients: &[&Host], who: &[usize], secs: u32) -> Vec<f64> {
    transfer(server, clients, who, secs, true)
}

/// [`round`], downloading (`down`) or uploading.
fn transfer(server: &Host, clients: &[&Host], who: &[usize], secs: u32, down: bool) -> Vec<f64> {
    let children: Vec<_> = who
        .iter()
        .map(|&i| {
            let streams = if i < 2 { "8" } else { "1" };
            Command::new("ip")
                .args(["netns", "exec", clients[i].ns(), "iperf3", "-c"])
                .arg(server.ips()[0].to_string())
                .args(["-p", &(5201 + i).to_string(), "-J", "-P", streams])
                .args(if down { &["-R"][..] } else { &[][..] })
                // the first second (slow start) is left out of the figure
                .args(["-t", &secs.to_string(), "-O", "1"])
                .args(["--connect-timeout", "3000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .zip(who)
        .map(|(c, i)| {
            let out = c.wait_with_output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "iperf3 of client {i}: {e}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or_else(|| panic!("iperf3 of client {i}: {v}"))
                / 1e6
        })
        .collect()
}

async fn clients_api(node: &netns::Node) -> Value {
    node.control().get("/api/v1/clients").await.unwrap()
}

fn active(v: &Value) -> Vec<String> {
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["active"] == true)
        .map(|c| c["ip"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_classes_share_a_bottleneck_fairly_and_quotas_throttle() {
    let name = "per_client_classes_share_a_bottleneck_fairly_and_quotas_throttle";
    if netns::skip_unless_root(name)
        || netns::skip_unless_tool(name, "iperf3")
        || netns::skip_unless_tool(name, "tc")
        || netns::skip_unless_tool(name, "python3")
    {
        return;
    }
    let Site {
        lab,
        wan: _,
        lan,
        s,
        r,
        hosts,
    } = site("shape", CLIENTS + 1);
    let clients: Vec<&Host> = hosts.iter().collect();
    let lan_if = r.ifname(lan).to_string();
    // neighbours fall from REACHABLE to STALE 1-3 s after their last
    // confirmation (not 15-45 s) and wait 1 s in DELAY (not 5 s), so
    // leaving is quick to see
    sh(
        &r,
        &format!(
            "sysctl -qw net.ipv4.neigh.{0}.base_reachable_time_ms=2000 net.ipv4.neigh.{0}.delay_first_probe_time=1",
            lan_if
        ),
    );
    // one server port per client, and two for the priority check's flows
    let (cmds, ports) = iperf3_servers(CLIENTS + 3);
    let _kill = serve(&s, &cmds, &ports);
    let eight: Vec<usize> = (0..CLIENTS).collect();

    // 1. no per-client classes: one TBF at the same total rate
    let tbf = sh(
        &r,
        &format!("tc qdisc add dev {lan_if} root tbf rate {RATE_MBIT}mbit burst 64kb latency 50ms"),
    );
    assert!(tbf.trim().is_empty(), "tbf: {tbf}");
    let plain = round(&s, &clients, &eight, ROUND_SECS);
    sh(&r, &format!("tc qdisc del dev {lan_if} root"));
    let j_plain = jain(&plain);

    // 2. meshnode's shaping
    let dir = lab.dir().join("r");
    let cfg = r.base_config("N0CALL", "r", &dir, lan)
        + &format!(
            "[connectivity]\nprobes = []\n[discovery]\nmdns = false\n\
             [shaping]\nenabled = true\ninterfaces = [\"{lan_if}\"]\n\
             downlink = \"{RATE_MBIT}mbit\"\nuplink = \"{RATE_MBIT}mbit\"\n\
             throttle = \"2mbit\"\nscan_interval = \"1s\"\nidle_after = \"4s\"\n"
        );
    let mut node = r.spawn_meshnode(&dir, &cfg).await;
    // the clients make themselves known (the router's neighbour table)
    for c in &clients[..CLIENTS] {
        poke(&s, c.ip(lan));
    }
    let ips: Vec<String> = clients[..CLIENTS]
        .iter()
        .map(|c| c.ip(lan).to_string())
        .collect();
    wait_for("the eight clients' classes", 20, || async {
        let a = active(&clients_api(&node).await);
        ips.iter().all(|ip| a.contains(ip))
    })
    .await;
    let shaped = round(&s, &clients, &eight, ROUND_SECS);
    let j_shaped = jain(&shaped);
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "fairness over {CLIENTS} clients (2 with 8 streams) behind {RATE_MBIT} Mbit/s:\n  \
         one shared TBF: Jain {j_plain:.3}, Mbit/s {} (sum {:.1})\n  \
         meshnode shaping: Jain {j_shaped:.3}, Mbit/s {} (sum {:.1})",
        fmt(&plain),
        plain.iter().sum::<f64>(),
        fmt(&shaped),
        shaped.iter().sum::<f64>()
    );
    assert!(j_shaped >= 0.9, "Jain's index with shaping: {j_shaped:.3}");
    // uploads: shaped on the IFB that R's LAN ingress is redirected to
    let up = transfer(&s, &clients, &eight, ROUND_SECS, false);
    let j_up = jain(&up);
    println!(
        "  uploads with meshnode shaping: Jain {j_up:.3}, Mbit/s {} (sum {:.1})",
        fmt(&up),
        up.iter().sum::<f64>()
    );
    assert!(
        j_up >= 0.9,
        "Jain's index of uploads with shaping: {j_up:.3}"
    );
    assert!(
        up.iter().sum::<f64>() < f64::from(RATE_MBIT as u32) * 1.1,
        "uploads held to the uplink rate: {up:?}"
    );
    // essential traffic: while all eight upload, client 3 also sends a
    // DSCP EF-marked UDP flow and client 4 the same flow unmarked, each
    // 6 Mbit/s, above a client's fair share (36/9 = 4 Mbit/s). EF goes to
    // the priority class (guaranteed 4 Mbit/s, first to borrow).
    let udp = |i: usize, port: usize, tos: Option<&str>| {
        Command::new("ip")
            .args(["netns", "exec", clients[i].ns(), "iperf3", "-c"])
            .arg(s.ips()[0].to_string())
            .args(["-p", &(5201 + port).to_string(), "-J", "-u", "-b", "6M"])
            .args(tos.map(|t| vec!["-S", t]).unwrap_or_default())
            .args(["-t", &ROUND_SECS.to_string(), "--connect-timeout", "3000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ifb_prio = |r: &Host| {
        // (`tc -j` prints no JSON for classes in this iproute2)
        let out = sh(r, "tc -s class show dev mnifb0 classid 6d6e:2");
        out.split_once(" Sent ")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no byte counter in {out}"))
    };
    let before = ifb_prio(&r);
    let marked = udp(3, CLIENTS + 1, Some("0xb8"));
    let unmarked = udp(4, CLIENTS + 2, None);
    let _tcp = transfer(&s, &clients, &eight, ROUND_SECS, false);
    let result = |c: std::process::Child| {
        let out = c.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let sum = &v["end"]["sum"];
        (
            sum["lost_percent"]
                .as_f64()
                .unwrap_or_else(|| panic!("{v}")),
            sum["bytes"].as_u64().unwrap(),
        )
    };
    let (ef_lost, ef_bytes) = result(marked);
    let (plain_lost, _) = result(unmarked);
    let counted = ifb_prio(&r) - before;
    println!(
        "  6 Mbit/s UDP beside eight TCP uploads: marked EF lost {ef_lost:.1}%, unmarked {plain_lost:.1}%; \
         the priority class carried {counted} B of the EF flow's {ef_bytes} B"
    );
    assert!(ef_lost < 5.0, "EF-marked flow lost {ef_lost:.1}%");
    assert!(
        plain_lost > ef_lost,
        "unmarked {plain_lost:.1}% vs EF {ef_lost:.1}%"
    );
    assert!(
        counted as f64 >= ef_bytes as f64 * 0.95,
        "priority class carried {counted} B of {ef_bytes} B"
    );

    // the kernel holds our tree: root qdisc 6d6e:, a class per client (as
    // many as the API calls active; another LAN host may come and go)
    wait_for("as many client classes as active clients", 10, || async {
        let n = active(&clients_api(&node).await).len();
        let classes = sh(&r, &format!("tc class show dev {lan_if}"));
        n >= CLIENTS && classes.lines().filter(|l| l.contains("htb 6d6e:")).count() == 3 + n
    })
    .await;
    // usage is counted per client, in both directions' counters
    let c2 = clients[2].ip(lan);
    let v = node
        .control()
        .get(&format!("/api/v1/clients/{c2}"))
        .await
        .unwrap();
    let down = v["usage"]["day_down"].as_u64().unwrap();
    let expect = shaped[2] * 1e6 / 8.0 * f64::from(ROUND_SECS);
    assert!(
        (down as f64) > expect * 0.8,
        "counted {down} bytes down for {c2}, iperf3 received about {expect:.0}"
    );

    // 3. a quota: client 2 is over it at once and held at 2 Mbit/s
    let v = node
        .control()
        .call(
            hyper::Method::PUT,
            &format!("/api/v1/clients/{c2}/quota"),
            meshnode::api::full(r#"{"daily": "1MB"}"#),
        )
        .await
        .unwrap();
    assert_eq!(v["throttled"], true, "{v}");
    let alone = round(&s, &clients, &[2], 5)[0];
    println!("client over quota, alone on the link: {alone:.2} Mbit/s (throttle 2 Mbit/s)");
    assert!(
        (1.5..=2.3).contains(&alone),
        "throttled client got {alone:.2} Mbit/s"
    );
    // cleared: it may borrow the whole link again
    let v = node
        .control()
        .call(
            hyper::Method::PUT,
            &format!("/api/v1/clients/{c2}/quota"),
            meshnode::api::full("{}"),
        )
        .await
        .unwrap();
    assert_eq!(v["throttled"], false, "{v}");

    // 4. idle clients give their classes back; a client that joins gets one
    let left = wait_for("idle clients' classes released", 30, || async {
        let a = active(&clients_api(&node).await);
        !ips.iter().any(|ip| a.contains(ip))
    })
    .await;
    println!(
        "idle clients released their classes {:.1} s after the load ended (idle_after 4 s)",
        left.as_secs_f64()
    );
    // their filters are gone from the kernel (and their classes with them)
    let filters = sh(&r, &format!("tc filter show dev {lan_if}"));
    for c in &clients[..CLIENTS] {
        let hex = format!("{:08x}/ffffffff at 16", u32::from(c.ip(lan)));
        assert!(!filters.contains(&hex), "{hex} still in {filters}");
    }
    let joiner = clients[CLIENTS].ip(lan).to_string();
    let t = Instant::now();
    poke(&s, clients[CLIENTS].ip(lan));
    wait_for("the joiner's class", 10, || async {
        active(&clients_api(&node).await).contains(&joiner)
    })
    .await;
    println!(
        "a joining client had its class {:.1} s after its first packet (scan_interval 1 s)",
        t.elapsed().as_secs_f64()
    );
    // its filter (its address in hex at the IPv4 destination) and its class
    let hex = format!("{:08x}/ffffffff at 16", u32::from(clients[CLIENTS].ip(lan)));
    let filters = sh(&r, &format!("tc filter show dev {lan_if}"));
    assert!(filters.contains(&hex), "{hex} in {filters}");
    wait_for("as many client classes as active clients", 10, || async {
        let n = active(&clients_api(&node).await).len();
        let classes = sh(&r, &format!("tc class show dev {lan_if}"));
        classes.lines().filter(|l| l.contains("htb 6d6e:")).count() == 3 + n
    })
    .await;

    // 5. stop: nothing of ours is left in the kernel
    assert_eq!(node.stop().await, Some(0));
    let q = sh(&r, &format!("tc qdisc show dev {lan_if}"));
    assert!(!q.contains("6d6e:") && !q.contains("ingress"), "{q}");
    let links = sh(&r, "ip -o link show");
    assert!(!links.contains("mnifb"), "{links}");
}

/// The ISP link is slower than the rate meshnode was told (15 vs 40
/// Mbit/s, a deep TBF queue at the ISP): under load the uplink probe's RTT
/// rises, meshnode calls it congestion and lowers its shaped rate until the
/// queue beyond it drains; when the load ends the rate rises again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_congestion_lowers_the_shaped_rate() {
    let name = "upstream_congestion_lowers_the_shaped_rate";
    if netns::skip_unless_root(name)
        || netns::skip_unless_tool(name, "iperf3")
        || netns::skip_unless_tool(name, "tc")
        || netns::skip_unless_tool(name, "python3")
    {
        return;
    }
    let Site {
        lab,
        wan,
        lan,
        s,
        r,
        hosts,
    } = site("cong", 4);
    let clients: Vec<&Host> = hosts.iter().collect();
    // the ISP: 15 Mbit/s with up to 300 ms of queue
    let out = sh(
        &s,
        &format!(
            "tc qdisc add dev {} root tbf rate 15mbit burst 32kb latency 300ms",
            s.ifname(wan)
        ),
    );
    assert!(out.trim().is_empty(), "{out}");
    let (mut cmds, mut ports) = iperf3_servers(4);
    cmds.push(
        ["python3", "-m", "http.server", "80"]
            .map(String::from)
            .to_vec(),
    );
    ports.push(80);
    let _kill = serve(&s, &cmds, &ports);
    let dir = lab.dir().join("r");
    let lan_if = r.ifname(lan);
    let cfg = r.base_config("N0CALL", "r", &dir, lan)
        + &format!(
            "[connectivity]\nprobes = [\"tcp://{}:80\"]\ninterval = \"1s\"\nfailover = false\n\
             [discovery]\nmdns = false\n\
             [shaping]\nenabled = true\ninterfaces = [\"{lan_if}\"]\n\
             downlink = \"40mbit\"\nuplink = \"40mbit\"\nscan_interval = \"1s\"\n",
            s.ips()[0]
        );
    let node = r.spawn_meshnode(&dir, &cfg).await;
    let status = || async { node.control().get("/api/v1/clients").await.unwrap() };
    wait_for("a baseline RTT", 20, || async {
        !status().await["congestion"]["baseline_ms"].is_null()
    })
    .await;
    for c in &clients {
        poke(&s, c.ip(lan));
    }
    let all: Vec<usize> = (0..4).collect();
    let t = Instant::now();
    let rates = round(&s, &clients, &all, 15);
    let v = status().await;
    let c = &v["congestion"];
    println!(
        "ISP at 15 Mbit/s, meshnode told 40: clients got {:?} Mbit/s; shaped to {:.1} Mbit/s after {:?}; {} congested samples; RTT baseline {} ms",
        rates.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>(),
        c["down_shaped_bps"].as_f64().unwrap() / 1e6,
        t.elapsed(),
        c["congested_samples"],
        c["baseline_ms"]
    );
    assert!(c["congested_samples"].as_u64().unwrap() >= 1, "{c}");
    assert!(
        c["down_shaped_bps"].as_u64().unwrap() < 30_000_000,
        "autorate lowered the rate: {c}"
    );
    // the load is over: the rate rises again
    let low = c["down_shaped_bps"].as_u64().unwrap();
    wait_for("the rate rising again", 30, || async {
        status().await["congestion"]["down_shaped_bps"]
            .as_u64()
            .unwrap()
            > low
    })
    .await;
}

/// A server S (the "internet") routed through a router R to `n` clients
/// on R's LAN bridge.
struct Site {
    lab: Lab,
    wan: netns::BridgeId,
    lan: netns::BridgeId,
    s: Host,
    r: Host,
    hosts: Vec<Host>,
}

fn site(tag: &str, n: usize) -> Site {
    let lab = Lab::new(tag);
    let wan = lab.bridge("wan");
    let lan = lab.bridge("lan");
    let s = lab.host("s", &[wan]);
    let r = lab.host("r", &[wan, lan]);
    let hosts: Vec<Host> = (0..n).map(|i| lab.host(&format!("c{i}"), &[lan])).collect();
    let o = r.ip(lan).octets();
    sh(&r, "sysctl -qw net.ipv4.ip_forward=1");
    sh(
        &s,
        &format!(
            "ip route add {}.{}.{}.0/24 via {}",
            o[0],
            o[1],
            o[2],
            r.ip(wan)
        ),
    );
    for c in &hosts {
        sh(c, &format!("ip route add default via {}", r.ip(lan)));
    }
    Site {
        lab,
        wan,
        lan,
        s,
        r,
        hosts,
    }
}

/// Starts `commands` in `host`'s namespace and waits (10 s at most) until
/// TCP `ports` listen there; they are killed when the guard goes.
fn serve(host: &Host, commands: &[Vec<String>], ports: &[u16]) -> Guard {
    let children = commands
        .iter()
        .map(|c| {
            Command::new("ip")
                .args(["netns", "exec", host.ns()])
                .args(c)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let guard = Guard(children);
    let t = Instant::now();
    loop {
        let listening = sh(host, "ss -Hltn");
        if ports.iter().all(|p| listening.contains(&format!(":{p} "))) {
            return guard;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "servers not listening on {ports:?}: {listening}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One iperf3 server per client, on 5201, 5202, ... (a server runs one
/// test at a time).
fn iperf3_servers(n: usize) -> (Vec<Vec<String>>, Vec<u16>) {
    let ports: Vec<u16> = (0..n as u16).map(|i| 5201 + i).collect();
    let cmds = ports
        .iter()
        .map(|p| {
            ["iperf3", "-s", "-p", &p.to_string()]
                .map(String::from)
                .to_vec()
        })
        .collect();
    (cmds, ports)
}

struct Guard(Vec<std::process::Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `[shaping]` follows a reload without a restart (re-rated in place; off
/// removes everything), and its LAN interface may come and go: shaping
/// starts when the interface appears, stops when it goes, and starts again
/// when it is back, saying why it is off once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaping_follows_reloads_and_its_interface() {
    let name = "shaping_follows_reloads_and_its_interface";
    if netns::skip_unless_root(name) || netns::skip_unless_tool(name, "tc") {
        return;
    }
    let lab = Lab::new("shrl");
    let lan = lab.bridge("lan");
    let r = lab.host("r", &[lan]);
    let dir = lab.dir().join("r");
    let config = |enabled: bool, downlink: &str| {
        r.base_config("N0CALL", "r", &dir, lan)
            + &format!(
                "[connectivity]\nprobes = []\n[discovery]\nmdns = false\n\
                 [shaping]\nenabled = {enabled}\ninterfaces = [\"lan9\"]\n\
                 downlink = \"{downlink}\"\nuplink = \"10mbit\"\nscan_interval = \"500ms\"\n"
            )
    };
    let mut node = r.spawn_meshnode(&dir, &config(true, "20mbit")).await;
    let status = || async { clients_api(&node).await };
    let reason = |v: &Value| v["reason"].as_str().unwrap_or_default().to_string();
    wait_for("shaping to say the interface is missing", 5, || async {
        let v = status().await;
        v["active"] == false && reason(&v).contains("interface lan9")
    })
    .await;
    let add = || {
        sh(
            &r,
            "ip link add lan9 type veth peer name lan9p && ip link set lan9 up && ip link set lan9p up",
        )
    };
    let qdisc = || sh(&r, "tc -s qdisc show dev lan9");
    let ifb = || sh(&r, "ip -o link show").contains("mnifb0");

    // retried every 2.5 s (5 scan intervals): let it fail a few times
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(reason(&status().await).contains("interface lan9"));
    // the interface appears: shaping starts
    assert_eq!(add(), "");
    let t = wait_for("shaping on the new interface", 5, || async {
        status().await["active"] == true
    })
    .await;
    println!(
        "shaping started {:.1} s after its interface appeared",
        t.as_secs_f64()
    );
    assert!(qdisc().contains("qdisc htb 6d6e:"), "{}", qdisc());
    assert!(ifb());
    let root_rate = || sh(&r, "tc class show dev lan9 classid 6d6e:1");
    assert!(root_rate().contains("rate 20Mbit"), "{}", root_rate());

    // a new downlink rate: applied in place, the qdisc (and its counters) stays
    let sent = |q: &str| -> u64 {
        q.split_once(" Sent ")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter in {q}"))
    };
    sh(
        &r,
        "ping -c 3 -i 0.2 -W 1 -I lan9 ff02::1%lan9 >/dev/null 2>&1 || true",
    );
    let before = sent(&qdisc());
    std::fs::write(dir.join("meshnode.toml"), config(true, "30mbit")).unwrap();
    let v = node
        .control()
        .call(
            hyper::Method::POST,
            "/api/v1/reload",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(v["applied"], serde_json::json!(["shaping"]), "{v}");
    assert_eq!(v["restart_required"], serde_json::json!([]), "{v}");
    assert!(root_rate().contains("rate 30Mbit"), "{}", root_rate());
    assert!(
        sent(&qdisc()) >= before,
        "the qdisc was made again: {}",
        qdisc()
    );
    assert_eq!(status().await["downlink_bps"], 30_000_000);

    // the interface goes: shaping stops and says why; our IFB goes too
    sh(&r, "ip link del lan9");
    wait_for("shaping to notice the interface went", 10, || async {
        let v = status().await;
        v["active"] == false && reason(&v).contains("lan9")
    })
    .await;
    assert!(!ifb(), "{}", sh(&r, "ip -o link show"));
    // ... and comes back
    assert_eq!(add(), "");
    wait_for("shaping on the interface made again", 5, || async {
        status().await["active"] == true
    })
    .await;
    assert!(qdisc().contains("qdisc htb 6d6e:"), "{}", qdisc());

    // switched off by a reload: nothing of ours is left
    std::fs::write(dir.join("meshnode.toml"), config(false, "30mbit")).unwrap();
    let v = node
        .control()
        .call(
            hyper::Method::POST,
            "/api/v1/reload",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(
        v["applied"],
        serde_json::json!(["shaping (restarted)"]),
        "{v}"
    );
    let v = status().await;
    assert!(
        v["active"] == false && reason(&v).contains("disabled"),
        "{v}"
    );
    assert!(!qdisc().contains("6d6e:"), "{}", qdisc());
    assert!(!ifb());
    assert_eq!(node.stop().await, Some(0));
    // said once, however often it was retried
    let log = node.log();
    let said = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        said("shaping is off: interface lan9: no network interface"),
        1,
        "{log}"
    );
    assert_eq!(said("shaping is off: interface lan9 went away"), 1, "{log}");
}
