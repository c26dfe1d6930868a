//! In-process daemon tests over real sockets and a real SQLite file in a
//! temporary folder: publish through the control socket, serve over the
//! public port, and everything a client can get wrong.

mod common;

use common::{TestNode, data, expect_api_error, http, opts, raw};
use meshnode::api::client::PublishOptions;
use meshnode::cache::blobs::CHUNK_SIZE;

#[tokio::test]
async fn published_file_is_served_byte_for_byte_by_host_and_by_path() {
    let n = TestNode::start("").await;
    let body = data(10_000, 1);
    let e = n.publish("/docs/hello world.txt", &body).await;
    assert_eq!(e["url"], "http://n0call.radio/docs/hello%20world.txt");
    assert_eq!(e["version"], 1);
    assert_eq!(e["size"], 10_000);

    let by_host = n.get("n0call.radio", "/docs/hello%20world.txt", &[]).await;
    assert_eq!(by_host.status, 200);
    assert_eq!(by_host.body, body);
    assert_eq!(by_host.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(by_host.header("content-length"), "10000");
    assert_eq!(
        by_host.header("etag"),
        format!("\"{}\"", e["hash"].as_str().unwrap())
    );

    let by_path = n
        .get("127.0.0.1", "/n0call.radio/docs/hello%20world.txt", &[])
        .await;
    assert_eq!(by_path.status, 200);
    assert_eq!(by_path.body, body);
    // upper-case host and port are fine
    assert_eq!(
        n.get("N0CALL.radio:8080", "/docs/hello%20world.txt", &[])
            .await
            .body,
        body
    );

    let head = http(
        n.addr,
        "HEAD",
        "n0call.radio",
        "/docs/hello%20world.txt",
        &[],
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), "10000");
    assert!(head.body.is_empty());
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn conditional_and_range_requests() {
    let n = TestNode::start("").await;
    let small = data(1000, 2);
    n.publish("/s.bin", &small).await;
    let etag = n
        .get("n0call.radio", "/s.bin", &[])
        .await
        .header("etag")
        .to_string();

    let r = n
        .get("n0call.radio", "/s.bin", &[("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(
        n.get("n0call.radio", "/s.bin", &[("if-none-match", "\"other\"")])
            .await
            .status,
        200
    );

    let r = n
        .get("n0call.radio", "/s.bin", &[("range", "bytes=10-19")])
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 10-19/1000");
    assert_eq!(r.body, small[10..20]);
    let r = n
        .get("n0call.radio", "/s.bin", &[("range", "bytes=-5")])
        .await;
    assert_eq!(r.body, small[995..]);
    let r = n
        .get("n0call.radio", "/s.bin", &[("range", "bytes=5000-")])
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */1000");
    // If-Range with a stale validator: the whole body
    let r = n
        .get(
            "n0call.radio",
            "/s.bin",
            &[("range", "bytes=0-1"), ("if-range", "\"stale\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1000);

    // Range applies to GET only (RFC 9110 14.2)
    let r = http(
        n.addr,
        "HEAD",
        "n0call.radio",
        "/s.bin",
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), "1000");

    // a multi-chunk file: whole, and a range that spans a chunk border
    let big = data(CHUNK_SIZE as usize * 3 + 123, 3);
    n.publish("/big.bin", &big).await;
    let r = n.get("n0call.radio", "/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body_error.is_none());
    assert_eq!(r.body, big);
    let (a, b) = (CHUNK_SIZE as usize - 10, CHUNK_SIZE as usize * 2 + 10);
    let r = n
        .get(
            "n0call.radio",
            "/big.bin",
            &[("range", &format!("bytes={a}-{b}"))],
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[a..=b]);
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_url_gets_404_listing_what_exists() {
    let n = TestNode::start("").await;
    n.publish("/index.html", b"<h1>hi</h1>").await;
    n.publish_with(
        b"secret",
        PublishOptions {
            access: Some("private".into()),
            ..opts("/diary.txt")
        },
    )
    .await;

    let r = n
        .get(
            "n0call.radio",
            "/missing",
            &[("accept", "application/json")],
        )
        .await;
    assert_eq!(r.status, 404);
    let j = r.json();
    assert_eq!(j["url"], "http://n0call.radio/missing");
    let urls: Vec<&str> = j["available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        vec!["http://n0call.radio/index.html"],
        "private content is not listed publicly"
    );

    let r = n
        .get("n0call.radio", "/missing", &[("accept", "text/html")])
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert!(
        r.text().contains("href=\"/n0call.radio/index.html\""),
        "{}",
        r.text()
    );
    // another station's namespace, and a plain unknown path on the node
    assert_eq!(n.get("w1aw.radio", "/x", &[]).await.status, 404);
    assert_eq!(n.get("127.0.0.1", "/nothing-here", &[]).await.status, 404);
    // "/" on a radio host means index.html
    assert_eq!(n.get("n0call.radio", "/", &[]).await.body, "<h1>hi</h1>");
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn private_content_only_through_the_control_socket() {
    let n = TestNode::start("").await;
    n.publish_with(
        b"secret",
        PublishOptions {
            access: Some("private".into()),
            ..opts("/diary.txt")
        },
    )
    .await;
    assert_eq!(n.get("n0call.radio", "/diary.txt", &[]).await.status, 404);
    let cat = n.get("127.0.0.1", "/api/v1/catalog", &[]).await.json();
    assert_eq!(cat["total"], 0);
    let mut out = Vec::new();
    n.ctl
        .fetch("http://n0call.radio/diary.txt", &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"secret");
    let cat = n.ctl.get("/api/v1/catalog").await.unwrap();
    assert_eq!(cat["total"], 1);
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_catalog_and_metrics() {
    let n = TestNode::start("").await;
    n.publish_with(
        b"a",
        PublishOptions {
            path: "/a".into(),
            tags: vec!["weather".into()],
            priority: Some("essential".into()),
            ..Default::default()
        },
    )
    .await;
    n.publish("/b", b"bb").await;
    let st = n.get("127.0.0.1", "/api/v1/status", &[]).await.json();
    assert_eq!(st["node"], "N0CALL-test");
    assert_eq!(st["store"]["entries"], 2);
    assert_eq!(st["store"]["used_bytes"], 3);
    assert_eq!(st["node_id"].as_str().unwrap().len(), 64);

    let cat = n
        .get("127.0.0.1", "/api/v1/catalog?q=weather", &[])
        .await
        .json();
    assert_eq!(cat["total"], 1);
    assert_eq!(cat["entries"][0]["url"], "http://n0call.radio/a");
    assert_eq!(cat["entries"][0]["priority"], 1);
    assert_eq!(cat["entries"][0]["tags"][0], "weather");
    assert_eq!(
        n.get("127.0.0.1", "/api/v1/catalog?limit=1&offset=1", &[])
            .await
            .json()["entries"][0]["url"],
        "http://n0call.radio/b"
    );
    assert_eq!(
        n.get("127.0.0.1", "/api/v1/catalog?limit=x", &[])
            .await
            .status,
        400
    );

    n.get("n0call.radio", "/b", &[]).await;
    let m = n.get("127.0.0.1", "/metrics", &[]).await.text();
    assert!(m.contains("meshnode_catalog_entries 2"), "{m}");
    assert!(m.contains("meshnode_content_hits_total 1"), "{m}");
    assert!(m.contains("# HELP meshnode_store_used_bytes"), "{m}");
    check_exposition(&m);
    // the status page names the node, the .radio host serves content only
    assert!(
        n.get("127.0.0.1", "/", &[])
            .await
            .text()
            .contains("N0CALL-test")
    );
    assert_eq!(
        n.get("n0call.radio", "/api/v1/status", &[]).await.status,
        404
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_and_malformed_requests_get_clean_4xx() {
    let n = TestNode::start("").await;
    n.publish("/ok", b"ok").await;
    std::fs::write(n.dir.path().join("outside.txt"), b"must never be served").unwrap();

    for path in [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/a/%2E%2E/%2E%2E/outside.txt",
        "/ok%2f..%2foutside.txt",
        "/%zz",
        "/%ff",
        "/a%00b",
    ] {
        let r = raw(
            n.addr,
            format!("GET {path} HTTP/1.1\r\nHost: n0call.radio\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{path}: {r}");
        assert!(!r.contains("must never be served"));
    }
    let r = raw(n.addr, b"GET /n0call.radio/../../outside.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    // targets that are not a path: 400, never a crash (regression: an empty path panicked)
    for line in [
        "GET example.com:80 HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "CONNECT n0call.radio:443 HTTP/1.1",
    ] {
        let r = raw(
            n.addr,
            format!("{line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 400"), "{line}: {r}");
    }
    // absolute-form: the target's authority wins over Host (RFC 9112 3.2.2)
    let r = raw(
        n.addr,
        b"GET http://n0call.radio/ok HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");

    // oversized headers: 431, not a crash
    let huge = "x".repeat(40_000);
    let r = raw(
        n.addr,
        format!("GET /ok HTTP/1.1\r\nHost: n0call.radio\r\nX-Big: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(200)]);
    // garbage request line
    let r = raw(n.addr, b"\x00\x01garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    // mutations are not open on the public port
    let r = raw(n.addr, b"PUT /api/v1/content?path=/evil HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil").await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = raw(
        n.addr,
        b"DELETE /n0call.radio/ok HTTP/1.1\r\nHost: n0call.radio\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert_eq!(
        n.get("127.0.0.1", "/api/v1/status", &[]).await.json()["store"]["entries"],
        1
    );
    // and the node still serves
    assert_eq!(n.get("n0call.radio", "/ok", &[]).await.body, "ok");
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_publish_arguments_are_refused_and_nothing_is_written() {
    let n = TestNode::start("").await;
    for (opts, want) in [
        (
            PublishOptions {
                path: "/../x".into(),
                ..Default::default()
            },
            "'..'",
        ),
        (
            PublishOptions {
                path: "x".into(),
                ..Default::default()
            },
            "must start with '/'",
        ),
        (
            PublishOptions {
                path: "/x".into(),
                priority: Some("9".into()),
                ..Default::default()
            },
            "invalid priority",
        ),
        (
            PublishOptions {
                path: "/x".into(),
                access: Some("secret".into()),
                ..Default::default()
            },
            "invalid access",
        ),
        (
            PublishOptions {
                path: "/x".into(),
                tags: vec!["has space".into()],
                ..Default::default()
            },
            "invalid tag",
        ),
    ] {
        expect_api_error(n.ctl.publish_bytes(&b"data"[..], &opts).await, 400, want);
    }
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["entries"],
        0
    );
    assert_eq!(
        std::fs::read_dir(n.state_dir().join("blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn versions_rise_and_remove_pin_work() {
    let n = TestNode::start("").await;
    assert_eq!(n.publish("/v", b"one").await["version"], 1);
    assert_eq!(n.publish("/v", b"two").await["version"], 2);
    assert_eq!(n.get("n0call.radio", "/v", &[]).await.body, "two");
    // the old blob is gone from disk once nothing names it
    let blobs = |n: &TestNode| {
        meshnode::cache::blobs::BlobDir::open(&n.state_dir())
            .unwrap()
            .list()
            .unwrap()
            .len()
    };
    assert_eq!(blobs(&n), 1);
    let pinned = n
        .ctl
        .with_url(
            hyper::Method::POST,
            "/api/v1/content/pin",
            "http://n0call.radio/v",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(pinned["pinned"], true);
    let rm = n
        .ctl
        .with_url(
            hyper::Method::DELETE,
            "/api/v1/content",
            "http://n0call.radio/v",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rm["url"], "http://n0call.radio/v");
    assert_eq!(n.get("n0call.radio", "/v", &[]).await.status, 404);
    assert_eq!(blobs(&n), 0);
    // re-published after removal: the version keeps rising past the
    // deletion record (version 3) that told the mesh about the removal
    assert_eq!(n.publish("/v", b"three").await["version"], 4);
    expect_api_error(
        n.ctl
            .with_url(
                hyper::Method::DELETE,
                "/api/v1/content",
                "http://n0call.radio/nope",
                &[],
            )
            .await,
        404,
        "",
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn catalog_and_identity_survive_a_restart() {
    let n = TestNode::start("").await;
    let body = data(300_000, 9);
    n.publish("/keep.bin", &body).await;
    n.get("n0call.radio", "/keep.bin", &[]).await;
    let id = n.ctl.get("/api/v1/status").await.unwrap()["node_id"].clone();
    let n = n.restart().await;
    assert_eq!(n.ctl.get("/api/v1/status").await.unwrap()["node_id"], id);
    let r = n.get("n0call.radio", "/keep.bin", &[]).await;
    assert_eq!(r.body, body);
    let cat = n.ctl.get("/api/v1/catalog").await.unwrap();
    assert_eq!(
        cat["entries"][0]["access_count"], 2,
        "the read before the restart was persisted on close"
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_download_finishes_during_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = TestNode::start("").await;
    let body = data(CHUNK_SIZE as usize * 40, 4); // 10 MiB: far more than socket buffers
    n.publish("/large", &body).await;
    let addr = n.addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /large HTTP/1.1\r\nHost: n0call.radio\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // the response has started: we hold its first bytes and read no further yet
    let mut got = vec![0u8; 4096];
    s.read_exact(&mut got).await.unwrap();
    let stop = tokio::spawn(async move { n.daemon.shutdown().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !stop.is_finished(),
        "shutdown must wait for the download in flight"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    got.extend_from_slice(&rest);
    stop.await.unwrap().unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(got.len() - split, body.len());
    assert!(got[split..] == body[..]);
    // and nothing listens any more
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_second_daemon_on_the_same_state_is_refused_and_harms_nothing() {
    let n = TestNode::start("").await;
    n.publish("/x", b"still here").await;
    let cfg = meshnode::config::load(&n.config_path).unwrap();
    let mut other = cfg.clone();
    other.http.control_socket = n.dir.path().join("other.sock");
    let err = meshnode::daemon::Daemon::start(other, Default::default())
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("in use by another running meshnode"),
        "{err:#}"
    );
    assert_eq!(n.get("n0call.radio", "/x", &[]).await.body, "still here");
    n.publish("/y", b"and writable").await;
    n.daemon.shutdown().await.unwrap();
}

/// Shaping that cannot start (here: its interface does not exist; without
/// CAP_NET_ADMIN it is the same path) leaves the node running unshaped and
/// says why, in the API and in `meshctl usage`'s source.
#[tokio::test]
async fn shaping_that_cannot_start_says_why_and_the_node_runs() {
    let node = TestNode::start(
        "[shaping]\nenabled = true\ninterfaces = [\"mn-absent0\"]\nscan_interval = \"1s\"\n",
    )
    .await;
    // "starting" until the shaping task has tried
    let settled = |ctl: meshnode::api::client::ControlClient| async move {
        for _ in 0..50 {
            let v: serde_json::Value = ctl.get("/api/v1/clients").await.unwrap();
            if v["reason"] != "starting" {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("shaping still starting after 5 s");
    };
    let v = settled(node.ctl.clone()).await;
    assert_eq!(v["enabled"], true);
    assert_eq!(v["active"], false);
    assert!(v["reason"].as_str().unwrap().contains("mn-absent0"), "{v}");
    // the node serves on
    let r = node.get("n0call.radio", "/nothing-here", &[]).await;
    assert_eq!(r.status, 404);
    // a client lookup says shaping is off, and why
    let e = node.ctl.get("/api/v1/clients/10.0.0.9").await.unwrap_err();
    assert!(e.to_string().contains("shaping is off"), "{e}");
    // off by default
    let plain = TestNode::start("").await;
    let v = settled(plain.ctl.clone()).await;
    assert_eq!(v["enabled"], false);
    assert!(
        v["reason"].as_str().unwrap().contains("enabled = false"),
        "{v}"
    );
}

/// The Prometheus text format (version 0.0.4), strictly: every family has
/// one HELP and one TYPE before its samples, counters end in `_total`,
/// names and label sets are well formed, values are numbers, no sample
/// repeats; and every family is listed in docs/API.md (stable names).
fn check_exposition(text: &str) {
    use std::collections::{HashMap, HashSet};
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md")).unwrap();
    let mut help: HashSet<String> = HashSet::new();
    let mut kind: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (n, h) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(name_ok(n) && !h.trim().is_empty(), "{line}");
            assert!(help.insert(n.to_string()), "second HELP for {n}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, k) = rest.split_once(' ').unwrap();
            assert!(help.contains(n), "TYPE before HELP: {line}");
            assert!(["counter", "gauge"].contains(&k), "{line}");
            if k == "counter" {
                assert!(n.ends_with("_total"), "a counter not named *_total: {n}");
            }
            assert!(
                kind.insert(n.to_string(), k.to_string()).is_none(),
                "second TYPE for {n}"
            );
            assert!(
                docs.contains(&format!("`{n}")),
                "{n} is not listed in docs/API.md"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.trim().is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(kind.contains_key(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap();
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                assert!(
                    name_ok(k) && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        assert!(seen.insert(series.to_string()), "repeated sample {series}");
    }
    assert!(kind.len() > 20, "{} families", kind.len());
}
