//! Mesh HTTP routing, cooperative fetching and internet failover between
//! real `meshnode` processes in network namespaces (tests/common/netns.rs).
//! Needs root (skips otherwise) and python3 (the "internet" server and the
//! client). Runs in nextest's `serial` group.
//!
//! - A line A — B — C: a personal item on A is read on C through B.
//! - A ring of misconfigured static peers: a request for an unreachable
//!   item is refused, not passed round the ring.
//! - An "internet": host S routes 198.51.100.0/24 (its server) for the
//!   uplinks of G and X; X's clients sit behind X. Fetching through the
//!   proxy, cutting X's uplink (failover through G) and restoring it.

#[path = "common/netns.rs"]
mod netns;
#[path = "common/wait.rs"]
mod wait;

use wait::wait_for;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshnode::api::client::PublishOptions;
use netns::{Host, Lab, Node};
use serde_json::Value;

async fn status(n: &Node) -> Value {
    n.control().get("/api/v1/status").await.unwrap()
}

fn config(lab: &Lab, host: &Host, statics: &[String], extra: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let dir = lab.dir().join(host.name());
    let mut c = String::new();
    let statics: Vec<String> = statics.iter().map(|s| q(s)).collect();
    let _ = write!(
        c,
        "[node]\ncallsign = \"N0CALL\"\nlabel = {label}\nstate_dir = {state}\n\
         [http]\nlisten = [\"0.0.0.0:8080\"]\ncontrol_socket = {sock}\n\
         [discovery]\nmdns = false\nstatic_peers = [{statics}]\nredial_interval = \"1s\"\n\
         [gossip]\nheartbeat_interval = \"1s\"\npeer_expiry = \"5s\"\n\
         [sync]\nreconcile_interval = \"2s\"\n[dbus]\nenabled = false\n{extra}\n",
        label = q(host.name()),
        state = q(&dir.join("state").display().to_string()),
        sock = q(&dir.join("control.sock").display().to_string()),
        statics = statics.join(", "),
    );
    c
}

async fn spawn(lab: &Lab, host: &Host, statics: &[String], extra: &str) -> Node {
    let cfg = config(lab, host, statics, extra);
    host.spawn_meshnode(&lab.dir().join(host.name()), &cfg)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_item_travels_a_line_of_three_and_loops_are_refused() {
    if netns::skip_unless_root("a_personal_item_travels_a_line_of_three_and_loops_are_refused") {
        return;
    }
    let lab = Lab::new("line");
    let (l1, l2) = (lab.bridge("l1"), lab.bridge("l2"));
    let ha = lab.host("a", &[l1]);
    let hb = lab.host("b", &[l1, l2]);
    let hc = lab.host("c", &[l2]);
    let none = "[connectivity]\nprobes = []\n";
    let a = spawn(&lab, &ha, &[], none).await;
    let b = spawn(&lab, &hb, &[ha.http_addr(l1).to_string()], none).await;
    let c = spawn(&lab, &hc, &[hb.http_addr(l2).to_string()], none).await;
    // 300 KB: two chunks, streamed through b
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    a.control()
        .publish_bytes(
            data.clone(),
            &PublishOptions {
                path: "/personal.bin".into(),
                priority: Some("personal".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_for("the record on c", 20, || async {
        status(&c).await["mesh"]["records"] == 1
    })
    .await;
    let at_c = hc.http_addr(l2);
    // a and c are not adjacent: the request goes c -> b -> a and back
    let t = Instant::now();
    let (st, h, body) = netns::http_get(at_c, "/n0call.radio/personal.bin").await;
    let took = t.elapsed();
    assert_eq!(st, 200);
    assert!(body[..] == data[..], "byte for byte");
    assert_eq!(h["x-meshnode-hops"], "2");
    assert_eq!(h["x-meshnode-served-by"], "N0CALL-a");
    println!("line: 300 KB personal item fetched on c from a through b in {took:?}");
    // personal: nobody on the way kept it
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&b).await["store"]["entries"], 0);
    assert_eq!(status(&c).await["store"]["entries"], 0);
    // the topology shows the line
    let topo = c.control().get("/api/v1/topology").await.unwrap();
    assert_eq!(topo["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(topo["links"].as_array().unwrap().len(), 2, "{topo}");
    assert!(
        topo["links"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["kind"] == "lan")
    );

    // a request id that comes back is a loop: refused, not passed on again
    let dir = tempfile::tempdir().unwrap();
    let me = Arc::new(meshnode::identity::Identity::load_or_create(dir.path()).unwrap());
    let client = meshnode::mesh::client::MeshClient::new(me);
    let path = "/mesh/v1/content?url=http%3A%2F%2Fn0call.radio%2Fpersonal.bin";
    let at_b = hb.http_addr(l2);
    let ask = |rid: &'static str, hops: &'static str| {
        let client = client.clone();
        async move {
            client
                .stream(
                    at_b,
                    path,
                    &[("mesh-hops", hops.into()), ("mesh-request-id", rid.into())],
                )
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let relayed = || async {
        let m = netns::http_get(at_b, "/metrics").await.2;
        let m = String::from_utf8_lossy(&m).to_string();
        m.lines()
            .find_map(|l| l.strip_prefix("meshnode_content_relayed_total "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = relayed().await;
    assert_eq!(ask("loop-1", "8").await, 200);
    assert_eq!(ask("loop-1", "8").await, 508, "the same request id again");
    assert_eq!(ask("loop-1", "8").await, 508);
    assert_eq!(ask("hops-0", "0").await, 508, "no hops left");
    assert_eq!(relayed().await - before, 1, "only the first was passed on");
}

/// A counter from a node's `/metrics`.
async fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let m = netns::http_get(addr, "/metrics").await.2;
    String::from_utf8_lossy(&m)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_string))
        .unwrap_or_else(|| panic!("{name} in /metrics"))
        .parse()
        .unwrap()
}

/// Static peers misconfigured into a ring a → b → c → d → a, and an item
/// whose only holder (e, hanging off a) is gone: every node still has the
/// record, so each believes some neighbour may reach it. A request on c
/// must end in a clear refusal, each node passing it on at most once (the
/// path and request-id rules), not circle the ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_misconfigured_static_peers_does_not_loop_a_request() {
    let name = "a_ring_of_misconfigured_static_peers_does_not_loop_a_request";
    if netns::skip_unless_root(name) {
        return;
    }
    let lab = Lab::new("ring");
    let r: Vec<_> = (1..=5).map(|i| lab.bridge(&format!("r{i}"))).collect();
    let ha = lab.host("a", &[r[0], r[3], r[4]]);
    let hb = lab.host("b", &[r[0], r[1]]);
    let hc = lab.host("c", &[r[1], r[2]]);
    let hd = lab.host("d", &[r[2], r[3]]);
    let he = lab.host("e", &[r[4]]);
    let none = "[connectivity]\nprobes = []\n";
    let a = spawn(&lab, &ha, &[hb.http_addr(r[0]).to_string()], none).await;
    let b = spawn(&lab, &hb, &[hc.http_addr(r[1]).to_string()], none).await;
    let c = spawn(&lab, &hc, &[hd.http_addr(r[2]).to_string()], none).await;
    let d = spawn(&lab, &hd, &[ha.http_addr(r[3]).to_string()], none).await;
    let mut e = spawn(&lab, &he, &[ha.http_addr(r[4]).to_string()], none).await;
    e.control()
        .publish_bytes(
            b"only e has this".to_vec(),
            &PublishOptions {
                path: "/gone.txt".into(),
                priority: Some("personal".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for n in [&a, &b, &c, &d] {
        wait_for("the record everywhere", 20, || async {
            status(n).await["mesh"]["records"] == 1
        })
        .await;
    }
    // the topology knows the ring before e goes
    wait_for("c's topology has the ring and e", 20, || async {
        let t = c.control().get("/api/v1/topology").await.unwrap();
        t["links"].as_array().is_some_and(|l| l.len() == 5)
    })
    .await;
    e.kill();
    let relays = [ha.http_addr(r[0]), hb.http_addr(r[1]), hd.http_addr(r[2])];
    let at_c = hc.http_addr(r[1]);
    let total = |name: &'static str| async move {
        let mut sum = 0;
        for a in relays {
            sum += metric(a, name).await;
        }
        sum
    };
    // once while the routes still lead to e, once after e has expired and
    // nobody has a route (the nearest-neighbour search)
    for when in ["just after e went", "after e expired"] {
        if when == "after e expired" {
            wait_for("e expired on c", 20, || async {
                status(&c).await["mesh"]["peers"] == 3
            })
            .await;
        }
        let before = total("meshnode_content_relayed_total").await;
        let loops_before = total("meshnode_content_loops_refused_total").await;
        let t = Instant::now();
        let (st, _, body) = netns::http_get(at_c, "/n0call.radio/gone.txt").await;
        let took = t.elapsed();
        let relayed = total("meshnode_content_relayed_total").await - before;
        let refused = total("meshnode_content_loops_refused_total").await - loops_before;
        println!(
            "ring ({when}): {st} in {took:?}, passed on by {relayed} relays, {refused} loops refused: {}",
            String::from_utf8_lossy(&body).trim()
        );
        assert!(
            st == 404 || st == 502,
            "a refusal, not content or a hang: {st}"
        );
        assert!(
            String::from_utf8_lossy(&body).contains("/gone.txt"),
            "the refusal names the URL"
        );
        assert!(
            relayed <= 3,
            "each of a, b, d passes it on at most once: {relayed}"
        );
        assert!(
            took < Duration::from_secs(15),
            "bounded, not a storm: {took:?}"
        );
    }
}

/// Runs a python3 snippet in `host`'s namespace; returns stdout.
fn py(host: &Host, code: &str) -> (bool, String) {
    let out = host.exec("python3", &["-c", code]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn sh(host: &Host, cmd: &str) -> String {
    let out = host.exec("sh", &["-c", cmd]);
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// GET requests for `path` in the internet server's log.
fn served(log: &std::path::Path, path: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"GET {path} HTTP")))
        .count()
}

const SERVER: &str = "198.51.100.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internet_is_fetched_once_and_a_lost_uplink_fails_over_to_a_mesh_gateway() {
    let name = "the_internet_is_fetched_once_and_a_lost_uplink_fails_over_to_a_mesh_gateway";
    if netns::skip_unless_root(name) || netns::skip_unless_tool(name, "python3") {
        return;
    }
    let lab = Lab::new("inet");
    let wan = lab.bridge("wan");
    let lan = lab.bridge("lan");
    let clan = lab.bridge("clan");
    let s = lab.host("s", &[wan]); // the ISP router and the internet server
    let g = lab.host("g", &[wan, lan]);
    let x = lab.host("x", &[wan, lan, clan]);
    let k = lab.host("k", &[clan]); // a client of x
    let wan_s = s.ip(wan).to_string();
    // routing as the community's routing protocol and ISP would set it up
    for h in [&s, &g, &x, &k] {
        sh(
            h,
            "sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
        );
    }
    for h in [&s, &g, &x] {
        sh(h, "sysctl -qw net.ipv4.ip_forward=1");
    }
    sh(&s, &format!("ip addr add {SERVER}/32 dev lo"));
    let clan_net = format!("{}/24", k.ip(clan)).replace(".4/24", ".0/24");
    let lan_net = format!("{}/24", g.ip(lan)).replace(".2/24", ".0/24");
    sh(&s, &format!("ip route add {clan_net} via {}", g.ip(wan)));
    sh(&s, &format!("ip route add {lan_net} via {}", g.ip(wan)));
    sh(&g, &format!("ip route add {clan_net} via {}", x.ip(lan)));
    for h in [&g, &x] {
        sh(h, &format!("ip route add default via {wan_s}"));
    }
    sh(&k, &format!("ip route add default via {}", x.ip(clan)));
    // the internet server, logging every request
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("page.html"), "hello from the internet").unwrap();
    std::fs::write(www.join("busy.html"), "wanted by twenty at once").unwrap();
    let log = lab.dir().join("www.log");
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            s.ns(),
            "python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            SERVER,
        ])
        .arg("--directory")
        .arg(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _kill = scopeguard(move || {
        let _ = server.kill();
        let _ = server.wait();
    });
    let get = format!(
        "import urllib.request as u;print(u.urlopen('http://{SERVER}/page.html',timeout=5).read().decode())"
    );
    wait_for("the internet server", 10, || async { py(&g, &get).0 }).await;
    let before = served(&log, "/page.html");

    let probes = format!(
        "[connectivity]\nprobes = [\"tcp://{SERVER}:80\"]\ninterval = \"5s\"\nretry_interval = \"1s\"\ndown_after = 2\ntimeout = \"2s\"\n"
    );
    let gn = spawn(&lab, &g, &[], &probes).await;
    let mut xn = spawn(&lab, &x, &[g.http_addr(lan).to_string()], &probes).await;
    for n in [&gn, &xn] {
        wait_for("online", 20, || async {
            status(n).await["mode"] == "online"
        })
        .await;
    }
    wait_for("x sees g online", 20, || async {
        let t = xn.control().get("/api/v1/topology").await.unwrap();
        t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["mode"] == "online")
            .count()
            == 2
    })
    .await;

    // cooperative fetching: k asks through x's proxy; later g's proxy serves it
    let via = |proxy: std::net::IpAddr, path: &str| {
        format!(
            "import urllib.request as u\n\
             o=u.build_opener(u.ProxyHandler({{'http':'http://{proxy}:8080'}}))\n\
             r=o.open('http://{SERVER}{path}',timeout=20)\n\
             print(r.headers.get('x-meshnode-cache'), r.read().decode())"
        )
    };
    let (ok, out) = py(&k, &via(x.ip(clan).into(), "/page.html"));
    assert!(ok && out.contains("hello from the internet"), "{out}");
    wait_for("the page in g's catalog", 10, || async {
        status(&gn).await["mesh"]["records"] == 1
    })
    .await;
    for proxy in [g.ip(lan), x.ip(clan), g.ip(lan)] {
        let from = if proxy == g.ip(lan) { &x } else { &k };
        let (ok, out) = py(from, &via(proxy.into(), "/page.html"));
        assert!(ok && out.contains("HIT hello from the internet"), "{out}");
    }
    assert_eq!(
        served(&log, "/page.html") - before,
        1,
        "one request to the internet for the whole mesh"
    );
    // 20 concurrent requests for a new URL, through both nodes' proxies
    let many = format!(
        "import urllib.request as u, concurrent.futures as f\n\
         def one(i):\n\
         \x20   p=['{gp}','{xp}'][i%2]\n\
         \x20   o=u.build_opener(u.ProxyHandler({{'http':'http://'+p+':8080'}}))\n\
         \x20   return o.open('http://{SERVER}/busy.html',timeout=30).read().decode()\n\
         with f.ThreadPoolExecutor(20) as e:\n\
         \x20   r=list(e.map(one,range(20)))\n\
         print(sum(x=='wanted by twenty at once' for x in r))",
        gp = g.ip(lan),
        xp = x.ip(lan),
    );
    let (ok, out) = py(&x, &many);
    assert!(ok && out.trim() == "20", "{out}");
    assert_eq!(
        served(&log, "/busy.html"),
        1,
        "20 concurrent requests reached the server once"
    );

    // failover: x loses its uplink (the ISP side goes dark)
    let k_gets = format!(
        "import urllib.request as u;print(u.urlopen('http://{SERVER}/page.html',timeout=5).read().decode())"
    );
    assert!(
        py(&k, &k_gets).0,
        "k reaches the internet through x's own uplink"
    );
    let t0 = Instant::now();
    lab.cut(&x, wan);
    let detected = wait_for("x to notice", 30, || async {
        status(&xn).await["mode"] == "mesh-only"
    })
    .await;
    println!("failover: uplink loss noticed after {detected:?} (target < 10 s, limit 30 s)");
    assert!(detected < Duration::from_secs(30));
    wait_for("the gateway route", 10, || async {
        status(&xn).await["connectivity"]["gateway"]["installed"] == true
    })
    .await;
    let table = sh(&x, "ip -4 route show table 7734");
    assert!(
        table.contains(&format!("default via {} ", g.ip(lan))) && table.contains("proto 158"),
        "{table}"
    );
    let (ok, out) = py(&k, &k_gets);
    assert!(
        ok && out.contains("hello from the internet"),
        "k reaches the internet through g: {out}"
    );
    println!(
        "failover: k reaches the internet through g {:?} after the cut",
        t0.elapsed()
    );
    let metrics =
        String::from_utf8_lossy(&netns::http_get(x.http_addr(lan), "/metrics").await.2).to_string();
    assert!(
        metrics.contains("meshnode_network_mode{mode=\"mesh-only\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meshnode_failover_active 1"));

    // the uplink returns: online again, no route of ours left
    lab.heal(&x, wan);
    let back = wait_for("x online again", 30, || async {
        status(&xn).await["mode"] == "online"
    })
    .await;
    println!("failover: uplink back noticed after {back:?}");
    wait_for("the gateway route gone", 10, || async {
        sh(&x, "ip -4 route show table 7734").trim().is_empty()
    })
    .await;
    assert!(py(&k, &k_gets).0, "k through x's own uplink again");
    assert!(
        !sh(&x, "ip rule show").contains("7734"),
        "{}",
        sh(&x, "ip rule show")
    );

    // shutdown during failover removes what it installed
    lab.cut(&x, wan);
    wait_for("the gateway route again", 30, || async {
        sh(&x, "ip -4 route show table 7734").contains("default via")
    })
    .await;
    xn.stop().await;
    assert!(sh(&x, "ip -4 route show table 7734").trim().is_empty());
    assert!(!sh(&x, "ip rule show").contains("7734"));
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct G<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for G<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    G(Some(f))
}

/// Benchmark (not run by the suite): `bash bench/hops.sh`. A line
/// a — b — c — d; content on a is fetched at a (direct) and at d (through
/// two intermediate nodes), 1 MB and 100 MB, personal priority so nobody on
/// the way keeps a copy and every run crosses the hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bash bench/hops.sh"]
async fn bench_hops() {
    if netns::skip_unless_root("bench_hops") {
        return;
    }
    let lab = Lab::new("hops");
    let (l1, l2, l3) = (lab.bridge("l1"), lab.bridge("l2"), lab.bridge("l3"));
    let ha = lab.host("a", &[l1]);
    let hb = lab.host("b", &[l1, l2]);
    let hc = lab.host("c", &[l2, l3]);
    let hd = lab.host("d", &[l3]);
    let none = "[connectivity]\nprobes = []\n[store]\nmax_bytes = \"1GiB\"\n";
    let a = spawn(&lab, &ha, &[], none).await;
    let _b = spawn(&lab, &hb, &[ha.http_addr(l1).to_string()], none).await;
    let _c = spawn(&lab, &hc, &[hb.http_addr(l2).to_string()], none).await;
    let d = spawn(&lab, &hd, &[hc.http_addr(l3).to_string()], none).await;
    for (name, size) in [("1mb", 1usize << 20), ("100mb", 100 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        a.control()
            .publish_bytes(
                data,
                &PublishOptions {
                    path: format!("/{name}.bin"),
                    priority: Some("personal".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    wait_for("records on d", 30, || async {
        status(&d).await["mesh"]["records"] == 2
    })
    .await;
    for (name, size) in [("1mb", 1usize << 20), ("100mb", 100 << 20)] {
        let runs = if size > 1 << 20 { 3 } else { 20 };
        for (label, addr, hops) in [
            ("direct (at a)", ha.http_addr(l1), "0"),
            ("2 intermediate hops (at d)", hd.http_addr(l3), "3"),
        ] {
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let (st, h, body) =
                    netns::http_get(addr, &format!("/n0call.radio/{name}.bin")).await;
                times.push(t.elapsed().as_secs_f64());
                assert_eq!((st.as_u16(), body.len()), (200, size));
                assert_eq!(h["x-meshnode-hops"], hops);
            }
            times.sort_by(f64::total_cmp);
            let med = times[times.len() / 2];
            println!(
                "{name:>5} {label:<28} median {:>8.1} ms  {:>7.1} MB/s  (best {:.1} ms, {runs} runs)",
                med * 1e3,
                size as f64 / med / 1e6,
                times[0] * 1e3
            );
        }
    }
}
