//! Analytics accuracy: a known workload through real daemons (from three
//! client addresses on 127/8, some content from this node's store, some
//! through the mesh, an external page through the proxy, a miss, a request
//! while offline), then the report's figures are checked exactly, over
//! HTTP, through meshctl's renderings, and after a restart (SQLite).

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{TestNode, data, opts, wait_for};
use meshnode::api::client::PublishOptions;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request from `from` (a 127/8 address: a distinct client to
/// the node); returns the status and the body length.
async fn request(node: SocketAddr, from: IpAddr, target: &str, host: &str) -> (u16, usize) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(node).await.unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response")
        + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, got.len() - head_end)
}

fn client(i: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 10 + i])
}

/// A plain-HTTP origin ("the internet") answering every path with `len`
/// bytes, cacheable for ten minutes; also the uplink probe's target.
async fn origin(len: usize) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "x".repeat(len);
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=600\r\n\
                             Content-Length: {len}\r\nConnection: close\r\n\r\n{body}"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

fn figure(csv: &str, section: &str, key: &str) -> (u64, Option<u64>) {
    let line = csv
        .lines()
        .find(|l| l.starts_with(&format!("{section},{key},")))
        .unwrap_or_else(|| panic!("no {section},{key} in\n{csv}"));
    let v: Vec<&str> = line.rsplitn(3, ',').collect();
    (v[1].parse().unwrap(), v[0].parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_counts_a_known_workload_exactly() {
    let (srv, probe) = origin(2000).await;
    let mesh = "[discovery]\nmdns = false\nredial_interval = \"500ms\"\n\
                [gossip]\nheartbeat_interval = \"1s\"\npeer_expiry = \"5s\"\n\
                [sync]\nreconcile_interval = \"2s\"\n";
    // A is online (its probe answers); B holds a personal item A may read
    // through the mesh but never keeps, and has no uplink (so A is the
    // proxy's one fetcher)
    let a = TestNode::start(&format!(
        "{mesh}[connectivity]\nprobes = [\"tcp://{srv}\"]\ninterval = \"500ms\"\n\
         retry_interval = \"200ms\"\ndown_after = 1\nfailover = false\n"
    ))
    .await;
    let b = TestNode::start_named(
        "K1ABC",
        "b",
        &mesh.replacen(
            "[discovery]\n",
            &format!("[discovery]\nstatic_peers = [\"{}\"]\n", a.addr),
            1,
        ),
    )
    .await;
    a.publish("/a.txt", &data(1000, 1)).await;
    a.publish("/b.txt", &data(300, 2)).await;
    b.publish_with(
        &data(500, 3),
        PublishOptions {
            priority: Some("personal".into()),
            ..opts("/c.txt")
        },
    )
    .await;
    let status = |n: &TestNode| {
        let ctl = n.ctl.clone();
        async move { ctl.get("/api/v1/status").await.unwrap() }
    };
    wait_for("A online", 15, || async {
        status(&a).await["mode"] == "online"
    })
    .await;
    // A's mesh catalog has its two records and B's one
    wait_for("A knows B's item", 20, || async {
        status(&a).await["mesh"]["records"].as_u64() >= Some(3)
    })
    .await;

    let n = a.addr;
    let host = "n0call.radio";
    // a.txt: every client twice, from the store
    for i in 0..3 {
        for _ in 0..2 {
            assert_eq!(request(n, client(i), "/a.txt", host).await, (200, 1000));
        }
    }
    // b.txt: client 0 once, in the path form (/<callsign>.radio/<path>)
    assert_eq!(
        request(n, client(0), "/n0call.radio/b.txt", "127.0.0.1").await,
        (200, 300)
    );
    // c.txt: client 1 twice, through the mesh both times (personal: not kept)
    for _ in 0..2 {
        assert_eq!(
            request(n, client(1), "/c.txt", "k1abc.radio").await,
            (200, 500)
        );
    }
    // an external page: client 2 three times; fetched once, then the copy
    let ext = format!("http://{srv}/page");
    for _ in 0..3 {
        assert_eq!(
            request(n, client(2), &ext, &srv.to_string()).await,
            (200, 2000)
        );
    }
    // a miss
    let (st, miss_len) = request(n, client(0), "/missing", host).await;
    assert_eq!(st, 404);
    // offline: the probe target goes; one more a.txt
    probe.abort();
    drop(probe);
    wait_for("A offline", 15, || async {
        status(&a).await["mode"] != "online"
    })
    .await;
    assert_eq!(request(n, client(0), "/a.txt", host).await, (200, 1000));

    let r: Value = a.ctl.get("/api/v1/report?since=1h").await.unwrap();
    // the window starts at a whole hour
    assert_eq!(r["since"].as_i64().unwrap() % 3600, 0, "{r}");
    let t = &r["totals"];
    let f = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    let bytes = 7 * 1000 + 300 + 2 * 500 + 3 * 2000 + miss_len as u64;
    assert_eq!((f("requests"), f("bytes")), (14, bytes), "{r}");
    assert_eq!(
        (f("store_requests"), f("store_bytes")),
        (7 + 1 + 2, 7000 + 300 + 4000)
    );
    assert_eq!((f("mesh_requests"), f("mesh_bytes")), (2, 1000));
    assert_eq!((f("internet_requests"), f("internet_bytes")), (1, 2000));
    assert_eq!((f("not_found"), f("failed"), f("rf_requests")), (1, 0, 0));
    assert_eq!(
        (
            f("external_requests"),
            f("external_avoided"),
            f("external_bytes_saved")
        ),
        (3, 2, 4000)
    );
    assert_eq!((f("offline_requests"), f("offline_bytes")), (1, 1000));
    assert!(
        f("mode_changes") >= 1 && f("peer_joins") >= 1 && f("peers_max") == 1,
        "{r}"
    );
    assert_eq!(r["distinct_clients"], 3);
    assert_eq!(r["cache_hit_ratio"].as_f64().unwrap(), 10.0 / 13.0);
    let top: Vec<(String, u64, u64)> = r["top_content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_string(),
                i["requests"].as_u64().unwrap(),
                i["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        top,
        vec![
            ("http://n0call.radio/a.txt".to_string(), 7, 7000),
            (ext.clone(), 3, 6000),
            ("http://k1abc.radio/c.txt".to_string(), 2, 1000),
            ("http://n0call.radio/b.txt".to_string(), 1, 300),
        ]
    );
    let mut clients: Vec<(String, u64, u64)> = r["top_clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_string(),
                i["requests"].as_u64().unwrap(),
                i["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        vec![
            (
                "127.0.0.10".to_string(),
                5,
                2000 + 300 + miss_len as u64 + 1000
            ),
            ("127.0.0.11".to_string(), 4, 2000 + 1000),
            ("127.0.0.12".to_string(), 5, 2000 + 6000),
        ]
    );
    let by_hour: u64 = r["by_hour_of_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(by_hour, 14);
    let hourly: u64 = r["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(hourly, 14);

    // the public port's report: no clients, no external URLs
    let (st, _) = request(n, client(0), "/api/v1/report?since=1h", "127.0.0.1").await;
    assert_eq!(st, 200);
    let public = a.get("127.0.0.1", "/api/v1/report?since=1h", &[]).await;
    let pv: Value = serde_json::from_slice(&public.body).unwrap();
    assert!(pv.get("top_clients").is_none(), "{pv}");
    assert!(
        !pv["top_content"].to_string().contains(&srv.to_string()),
        "{pv}"
    );
    assert_eq!(pv["totals"]["requests"], 14);

    // the renderings carry the same figures
    let csv = a
        .get("127.0.0.1", "/api/v1/report?since=1h&format=csv", &[])
        .await;
    let csv = String::from_utf8(csv.body.to_vec()).unwrap();
    assert_eq!(
        figure(&csv, "impact", "external downloads avoided"),
        (2, Some(4000))
    );
    assert_eq!(
        figure(&csv, "utilisation", "through the mesh"),
        (2, Some(1000))
    );
    assert_eq!(figure(&csv, "impact", "distinct clients served"), (3, None));
    let bad = a.get("127.0.0.1", "/api/v1/report?format=xml", &[]).await;
    assert_eq!(bad.status, 400);

    // written to SQLite: a restarted node reports the same
    drop(b);
    let a = a.restart().await;
    let again: Value = a.ctl.get("/api/v1/report?since=1h").await.unwrap();
    assert_eq!(again["totals"]["requests"], 14);
    assert_eq!(again["totals"]["external_bytes_saved"], 4000);
    assert_eq!(again["distinct_clients"], 3);
}

/// Many requests at once from many clients: every one is in the report
/// (requests count themselves on their own side; nothing is queued or
/// dropped), split exactly by client and URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_are_all_counted() {
    let a = TestNode::start("[discovery]\nmdns = false\n").await;
    for u in 0..4u64 {
        a.publish(&format!("/p{u}.bin"), &data(700, u)).await;
    }
    const CLIENTS: u8 = 16;
    const EACH: usize = 160; // a multiple of the 4 URLs
    let n = a.addr;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    let path = format!("/p{}.bin", i % 4);
                    assert_eq!(
                        request(n, client(c), &path, "n0call.radio").await,
                        (200, 700)
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r: Value = a.ctl.get("/api/v1/report?since=1h").await.unwrap();
    let total = CLIENTS as u64 * EACH as u64;
    assert_eq!(r["totals"]["requests"], total, "{r}");
    assert_eq!(r["totals"]["store_requests"], total);
    assert_eq!(r["totals"]["bytes"], total * 700);
    assert_eq!(r["distinct_clients"], CLIENTS as u64);
    for c in r["top_clients"].as_array().unwrap() {
        assert_eq!(c["requests"], EACH as u64, "{r}");
    }
    let per_url: Vec<u64> = r["top_content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(per_url, vec![total / 4; 4], "{r}");
}
