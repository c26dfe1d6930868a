//! Several real daemons in one process on 127.0.0.1, linked by static peers
//! or a bootstrap node (mDNS off): gossip, reconciliation, record exchange,
//! replication by priority, conflicts, deletions and multi-peer transfers
//! over real UDP and HTTP sockets. The namespace tests (tests/netns_mesh.rs)
//! cover mDNS, partitions and killed processes.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, data, opts, wait_for};
use meshnode::api::client::PublishOptions;

/// Fast timers so tests take seconds.
fn mesh_cfg(discovery: &str, sync: &str) -> String {
    format!(
        "[discovery]\nmdns = false\nredial_interval = \"500ms\"\n{discovery}\n\
         [gossip]\nheartbeat_interval = \"1s\"\npeer_expiry = \"5s\"\n\
         [sync]\nreconcile_interval = \"2s\"\n{sync}\n"
    )
}

async fn node(static_peers: &[&TestNode], sync: &str) -> TestNode {
    let peers: Vec<String> = static_peers
        .iter()
        .map(|n| format!("\"{}\"", n.addr))
        .collect();
    TestNode::start(&mesh_cfg(
        &format!("static_peers = [{}]", peers.join(", ")),
        sync,
    ))
    .await
}

async fn status(n: &TestNode) -> serde_json::Value {
    n.ctl.get("/api/v1/status").await.unwrap()
}

async fn digest(n: &TestNode) -> String {
    status(n).await["mesh"]["catalog_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Bytes of a URL in a node's own store (control socket: no mesh fetch).
async fn held(n: &TestNode, path: &str) -> Option<Vec<u8>> {
    let url = format!("http://n0call.radio{path}");
    n.ctl
        .get(&format!("/api/v1/catalog?q={}", urlencode(&url)))
        .await
        .ok()
        .filter(|v| {
            v["entries"]
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["url"] == url))
        })?;
    let r = n.get("n0call.radio", path, &[]).await;
    (r.status == 200).then(|| r.body.to_vec())
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metrics(n: &TestNode) -> String {
    n.get("127.0.0.1", "/metrics", &[]).await.text()
}

fn with_priority(path: &str, p: &str) -> PublishOptions {
    PublishOptions {
        priority: Some(p.into()),
        ..opts(path)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn essential_items_reach_every_node_of_a_chain_and_deletions_follow() {
    let a = node(&[], "").await;
    let b = node(&[&a], "").await;
    let c = node(&[&b], "").await; // c only knows b: a is two hops away
    let body = data(300_000, 7); // two chunks
    a.publish_with(&body, with_priority("/essential.bin", "essential"))
        .await;
    wait_for("the essential item on c", 20, || async {
        held(&c, "/essential.bin").await.as_deref() == Some(&body[..])
    })
    .await;
    assert_eq!(held(&b, "/essential.bin").await.as_deref(), Some(&body[..]));
    // c learned of a through gossip (peer announcements), with its name
    let a_id = node_id(&a).await;
    wait_for("a in c's peer table", 10, || async {
        let p = c.ctl.get("/api/v1/peers").await.unwrap();
        p["peers"].as_array().unwrap().iter().any(|r| {
            r["node_id"] == a_id.as_str() && r["name"] == "N0CALL-test" && r["neighbour"] == false
        })
    })
    .await;
    // a deletion at the origin spreads and the copies go
    a.ctl
        .with_url(
            hyper::Method::DELETE,
            "/api/v1/content",
            "http://n0call.radio/essential.bin",
            &[],
        )
        .await
        .unwrap();
    wait_for("the copy on c to go", 20, || async {
        c.get("n0call.radio", "/essential.bin", &[]).await.status == 404
    })
    .await;
    let da = digest(&a).await;
    wait_for("identical catalogs", 10, || async {
        digest(&b).await == da && digest(&c).await == da
    })
    .await;
}

async fn node_id(n: &TestNode) -> String {
    status(n).await["node_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn priorities_decide_who_holds_what() {
    let a = node(&[], "popular_threshold = 3").await;
    let b = node(&[&a], "popular_threshold = 3").await;
    let c = node(&[&b], "popular_threshold = 3").await;
    a.publish_with(b"standard", with_priority("/standard.txt", "standard"))
        .await;
    a.publish_with(b"personal", with_priority("/personal.txt", "personal"))
        .await;
    a.publish_with(b"popular", with_priority("/popular.txt", "popular"))
        .await;
    let da = digest(&a).await;
    wait_for("catalogs to agree", 15, || async {
        digest(&b).await == da && digest(&c).await == da
    })
    .await;
    assert_eq!(status(&c).await["mesh"]["records"], 3);
    // nothing copied yet (standard, personal, popular): only essential items are pushed
    assert_eq!(status(&c).await["store"]["entries"], 0);
    // standard: cached where it is read, and by the relay it passed (c
    // reaches a through b)
    let r = c.get("n0call.radio", "/standard.txt", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "standard"));
    assert_eq!(r.headers["x-meshnode-hops"], "2", "a -> b -> c");
    wait_for("the standard copy kept on c and b", 10, || async {
        status(&c).await["store"]["entries"] == 1 && status(&b).await["store"]["entries"] == 1
    })
    .await;
    let r = c.get("n0call.radio", "/standard.txt", &[]).await;
    assert_eq!(
        r.headers["x-meshnode-hops"], "0",
        "served from c's own store now"
    );
    // personal: readable through the mesh, but kept by nobody on the way
    let r = c.get("n0call.radio", "/personal.txt", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "personal"));
    assert_eq!(r.headers["x-meshnode-hops"], "2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&c).await["store"]["entries"], 1);
    assert_eq!(status(&b).await["store"]["entries"], 1);
    // popular: copied everywhere once the mesh has asked for it 3 times (at a)
    for _ in 0..3 {
        assert_eq!(a.get("n0call.radio", "/popular.txt", &[]).await.status, 200);
    }
    wait_for("popular copied to b without a read there", 20, || async {
        held(&b, "/popular.txt").await.as_deref() == Some(&b"popular"[..])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_edits_resolve_the_same_everywhere_and_keep_both_keeps_the_loser() {
    // a and b publish the same URL, unconnected (a partition); c joins both
    let a = node(&[], "keep_both = true").await;
    let b = node(&[], "keep_both = true").await;
    a.publish_with(b"from a", with_priority("/notice.txt", "essential"))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    b.publish_with(b"from b", with_priority("/notice.txt", "essential"))
        .await; // same version 1, later clock: b wins
    let c = node(&[&a, &b], "keep_both = true").await;
    let dc = || async { digest(&c).await };
    wait_for("one catalog on a, b and c", 20, || async {
        let d = dc().await;
        digest(&a).await == d && digest(&b).await == d && status(&c).await["mesh"]["records"] == 2
    })
    .await;
    for n in [&a, &b, &c] {
        wait_for("the winner served everywhere", 20, || async {
            n.get("n0call.radio", "/notice.txt", &[]).await.body == b"from b"[..]
        })
        .await;
    }
    // the loser stays reachable at its derived URL on every node
    let derived = || async {
        let cat = c.ctl.get("/api/v1/catalog").await.unwrap();
        cat["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["url"].as_str().unwrap().to_string())
            .filter(|u| u.contains("/notice.txt~"))
            .collect::<Vec<String>>()
    };
    // c stores the loser's copy under its derived URL a moment after the
    // catalogs agree
    wait_for("the loser's derived URL in c's catalog", 20, || async {
        !derived().await.is_empty()
    })
    .await;
    let derived = derived().await;
    assert_eq!(derived.len(), 1, "{derived:?}");
    let path = derived[0].trim_start_matches("http://n0call.radio");
    for n in [&a, &b, &c] {
        wait_for("the loser at its derived URL", 20, || async {
            n.get("n0call.radio", path, &[]).await.body == b"from a"[..]
        })
        .await;
    }
}

/// Background replication keeps to `[sync] max_rate`: a 3 MiB essential
/// item reaches a node paced at 8 Mbit/s (1 MB/s, one second's burst) no
/// sooner than the bucket allows, and one unpaced node much sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn background_replication_keeps_to_its_rate() {
    let body = data(3 << 20, 5);
    let a = node(&[], "").await;
    a.publish_with(&body, with_priority("/paced.bin", "essential"))
        .await;
    let copy_time = |max_rate: &'static str| {
        let (a, body) = (&a, &body);
        async move {
            let t = Instant::now();
            let b = node(&[a], &format!("max_rate = \"{max_rate}\"")).await;
            wait_for("the copy", 30, || async {
                held(&b, "/paced.bin").await.as_deref() == Some(&body[..])
            })
            .await;
            t.elapsed()
        }
    };
    let paced = copy_time("8mbit").await;
    let free = copy_time("10gbit").await;
    eprintln!("3 MiB essential item: paced at 8 Mbit/s {paced:?}, at 10 Gbit/s {free:?}");
    // 3,145,728 bytes, 1,000,000 at once, the rest at 1 MB/s: >= 2.1 s
    assert!(
        paced >= Duration::from_millis(2100),
        "paced copy took {paced:?}"
    );
    assert!(free < paced, "unpaced {free:?} vs paced {paced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_file_is_pulled_from_several_peers_at_once() {
    let body = data(4 << 20, 3); // 16 chunks
    let a = node(&[], "").await;
    let b = node(&[&a], "").await;
    // both hold the same bytes (b copies a's essential item)
    a.publish_with(&body, with_priority("/big.bin", "essential"))
        .await;
    wait_for("b's copy", 30, || async {
        held(&b, "/big.bin").await.as_deref() == Some(&body[..])
    })
    .await;
    let served_before = metric(&metrics(&a).await, "meshnode_chunks_served_total");
    let c = node(&[&a, &b], "").await;
    wait_for("c's copy", 30, || async {
        held(&c, "/big.bin").await.as_deref() == Some(&body[..])
    })
    .await;
    let from_a = metric(&metrics(&a).await, "meshnode_chunks_served_total") - served_before;
    let from_b = metric(&metrics(&b).await, "meshnode_chunks_served_total");
    eprintln!("chunks for c: {from_a} from a, {from_b} from b");
    assert!(
        from_a > 0 && from_b > 0,
        "swarming: {from_a} from a, {from_b} from b"
    );
    assert!(from_a + from_b >= 16);
    assert_eq!(
        metric(&metrics(&c).await, "meshnode_chunks_fetched_total"),
        16
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_found_only_through_a_bootstrap_node() {
    let boot = TestNode::start(&mesh_cfg("broadcast = true", "")).await;
    let cfg = |broadcast: bool| {
        mesh_cfg(
            &format!("broadcast = {broadcast}\nbootstrap = [\"{}\"]", boot.addr),
            "",
        )
    };
    let loud = TestNode::start(&cfg(true)).await;
    let silent = TestNode::start(&cfg(false)).await;
    let loud_id = node_id(&loud).await;
    let silent_id = node_id(&silent).await;
    // the silent node links straight to the broadcasting one it learned of
    wait_for(
        "the silent node's direct link to the loud one",
        15,
        || async {
            let p = silent.ctl.get("/api/v1/peers").await.unwrap();
            p["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["node_id"] == loud_id.as_str() && r["neighbour"] == true)
        },
    )
    .await;
    // the bootstrap node lists itself and the broadcasting node, never the silent one
    let d = boot
        .get("127.0.0.1", "/api/bootstrap/discover", &[])
        .await
        .json();
    let ids: Vec<&str> = d["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&loud_id.as_str()), "{d}");
    assert!(!ids.contains(&silent_id.as_str()), "{d}");
    assert_eq!(ids.len(), 2, "{d}");
    // a node that does not broadcast is not a bootstrap node
    assert_eq!(
        silent
            .get("127.0.0.1", "/api/bootstrap/discover", &[])
            .await
            .status,
        404
    );
    // unsigned node-to-node requests are refused
    let r = common::http(boot.addr, "POST", "127.0.0.1", "/mesh/v1/recon", &[]).await;
    assert_eq!(r.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_cannot_fit_an_essential_item_says_so() {
    let a = node(&[], "").await;
    let small = TestNode::start(&format!(
        "{}[store]\nmax_bytes = \"100KB\"\n",
        mesh_cfg(&format!("static_peers = [\"{}\"]", a.addr), "")
    ))
    .await;
    a.publish_with(&data(300_000, 1), with_priority("/huge.bin", "essential"))
        .await;
    wait_for("the refusal in status", 20, || async {
        status(&small).await["mesh"]["essential_refused"]
            .as_object()
            .is_some_and(|m| m.contains_key("http://n0call.radio/huge.bin"))
    })
    .await;
    assert!(metric(&metrics(&small).await, "meshnode_essential_refused_total") >= 1);
    let s = status(&small).await;
    assert_eq!(s["store"]["entries"], 0);
    assert!(s["store"]["used_bytes"].as_u64().unwrap() <= 100_000);
}

/// A plain-HTTP "internet" server on loopback that counts requests per path.
/// `/slow/...` answers after 300 ms (so concurrent requests overlap).
async fn origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let counts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                *c.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                if path.starts_with("/slow/") {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let body = origin_body(&path);
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, counts)
}

/// What [`origin`] answers for `path`: `/big/...` pages are 4,000 bytes.
fn origin_body(path: &str) -> String {
    let body = format!("origin body of {path}");
    if path.starts_with("/big/") {
        body.repeat(4000 / body.len() + 1)[..4000].to_string()
    } else {
        body
    }
}

/// Sends `GET <url>` in absolute form (as a browser configured with a proxy does).
async fn via_proxy(node: &TestNode, url: &str) -> (u16, hyper::HeaderMap, String) {
    ProxyTarget(node.addr).get(url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_proxy_fetches_external_content_once_for_the_whole_mesh() {
    let (srv, counts) = origin().await;
    // the origin is "the internet": probing it tells the nodes they are online
    let online = format!(
        "[connectivity]\nprobes = [\"tcp://{srv}\"]\ninterval = \"1s\"\nfailover = false\n"
    );
    let a = TestNode::start(&(mesh_cfg("", "") + &online)).await;
    let b = TestNode::start(&(mesh_cfg(&format!("static_peers = [\"{}\"]", a.addr), "") + &online))
        .await;
    let c = TestNode::start(&(mesh_cfg(&format!("static_peers = [\"{}\"]", b.addr), "") + &online))
        .await;
    for n in [&a, &b, &c] {
        wait_for("online and meshed", 15, || async {
            let s = status(n).await;
            s["mode"] == "online" && s["mesh"]["neighbours"].as_u64() >= Some(1)
        })
        .await;
    }
    // every node must know all three online (the fetcher is chosen over
    // that set: differing views would choose differently)
    for n in [&a, &b, &c] {
        wait_for("every node sees three online nodes", 15, || async {
            let t = n.ctl.get("/api/v1/topology").await.unwrap();
            t["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["mode"] == "online")
                .count()
                == 3
        })
        .await;
    }
    let url = format!("http://{srv}/page.html");
    let (st, h, body) = via_proxy(&c, &url).await;
    assert_eq!((st, body.as_str()), (200, "origin body of /page.html"));
    assert_eq!(h["x-meshnode-cache"], "MISS");
    assert_eq!(counts.lock().unwrap()["/page.html"], 1);
    // it enters the catalog everywhere; every node then serves it from the mesh
    for n in [&a, &b, &c] {
        wait_for("the fetched page in every catalog", 10, || async {
            status(n).await["mesh"]["records"] == 1
        })
        .await;
    }
    for n in [&a, &b, &c, &a, &b, &c] {
        let (st, h, body) = via_proxy(n, &url).await;
        assert_eq!((st, body.as_str()), (200, "origin body of /page.html"));
        assert_eq!(h["x-meshnode-cache"], "HIT");
    }
    // `meshctl fetch URL` (the control socket) reads it the same way
    let mut out = Vec::new();
    b.ctl.fetch(&url, &mut out).await.unwrap();
    assert_eq!(out, b"origin body of /page.html");
    assert_eq!(
        counts.lock().unwrap()["/page.html"],
        1,
        "one origin request for the whole mesh"
    );
    let mut out = Vec::new();
    a.ctl
        .fetch(&format!("http://{srv}/by-meshctl.txt"), &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"origin body of /by-meshctl.txt");
    // 20 concurrent requests for a new URL, spread over the three nodes: one origin request
    let slow = format!("http://{srv}/slow/new.html");
    let mut set = tokio::task::JoinSet::new();
    let nodes = [a.addr, b.addr, c.addr];
    for i in 0..20 {
        let (addr, slow) = (nodes[i % 3], slow.clone());
        set.spawn(async move {
            let n = ProxyTarget(addr);
            n.get(&slow).await
        });
    }
    while let Some(r) = set.join_next().await {
        let (st, _, body) = r.unwrap();
        assert_eq!((st, body.as_str()), (200, "origin body of /slow/new.html"));
    }
    assert_eq!(
        counts.lock().unwrap()["/slow/new.html"],
        1,
        "20 concurrent requests, one fetch"
    );
    // https is tunnelled untouched: CONNECT to the origin's port echoes our bytes to it
    let r = proxy_connect(c.addr, srv).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// Fetched pages are a cache: a node with a small store evicts the ones it
/// fetched (although it signed their records) to keep fetching new ones, and
/// an evicted page is fetched again, also when another node asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetched_pages_are_evicted_from_a_full_store_and_fetched_again() {
    let (srv, counts) = origin().await;
    let online = format!(
        "[connectivity]\nprobes = [\"tcp://{srv}\"]\ninterval = \"1s\"\nfailover = false\n\
         [store]\nmax_bytes = \"16KiB\"\n"
    );
    // a is the only online node, so it fetches for b
    let a = TestNode::start(&(mesh_cfg("", "") + &online)).await;
    let b = TestNode::start(
        &(mesh_cfg(&format!("static_peers = [\"{}\"]", a.addr), "")
            + "[connectivity]\nprobes = []\n[store]\nmax_bytes = \"16KiB\"\n"),
    )
    .await;
    wait_for("b sees a online", 15, || async {
        let t = b.ctl.get("/api/v1/topology").await.unwrap();
        t["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["mode"] == "online")
    })
    .await;
    let url = |i: usize| format!("http://{srv}/big/{i}.html");
    for i in 0..10 {
        let (st, _, body) = via_proxy(&a, &url(i)).await;
        assert_eq!(
            (st, body.as_str()),
            (200, origin_body(&format!("/big/{i}.html")).as_str())
        );
    }
    // 40,000 bytes fetched into 16 KiB: the oldest went, the store kept working
    let s = status(&a).await;
    let (entries, used) = (
        s["store"]["entries"].as_u64().unwrap(),
        s["store"]["used_bytes"].as_u64().unwrap(),
    );
    assert!((1..=4).contains(&entries), "entries {entries}");
    assert!(used <= 16 * 1024, "used {used}");
    let (_, h, _) = via_proxy(&a, &url(9)).await;
    assert_eq!(h["x-meshnode-cache"], "HIT", "the newest is still there");
    assert_eq!(counts.lock().unwrap()["/big/9.html"], 1);
    // eviction is not deletion: all ten records stay, on a and on b
    for n in [&a, &b] {
        wait_for("ten records", 20, || async {
            status(n).await["mesh"]["records"] == 10
        })
        .await;
    }
    // b asks for an evicted page whose record still names a: a says it has
    // none, and a fetches it again for b
    let (st, _, body) = via_proxy(&b, &url(0)).await;
    assert_eq!(
        (st, body.as_str()),
        (200, origin_body("/big/0.html").as_str())
    );
    assert_eq!(counts.lock().unwrap()["/big/0.html"], 2, "fetched again");
    let (st, _, body) = via_proxy(&a, &url(0)).await;
    assert_eq!(
        (st, body.as_str()),
        (200, origin_body("/big/0.html").as_str())
    );
    assert_eq!(counts.lock().unwrap()["/big/0.html"], 2, "and kept");
}

/// A proxy client by address (for spawned tasks).
struct ProxyTarget(std::net::SocketAddr);

impl ProxyTarget {
    async fn get(&self, url: &str) -> (u16, hyper::HeaderMap, String) {
        use http_body_util::BodyExt;
        let stream = tokio::net::TcpStream::connect(self.0).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(url)
            .header("host", url.split('/').nth(2).unwrap())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).to_string())
    }
}

/// `CONNECT target` through the proxy, then an HTTP request inside the
/// tunnel; returns what came back through it.
async fn proxy_connect(proxy: std::net::SocketAddr, target: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    s.write_all(b"GET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    let inner = String::from_utf8_lossy(&rest).to_string();
    assert!(inner.contains("origin body of /tunnelled"), "{inner}");
    head
}
