//! Integrity and quota: corrupt blobs are detected on read and by the scrub,
//! quarantined and never served; a publish that cannot fit is refused whole;
//! eviction follows the policy (essential, pinned and own content stay).

mod common;

use common::{TestNode, data, expect_api_error, opts};
use meshnode::cache::blobs::{BlobDir, CHUNK_SIZE};
use meshnode::catalog::{Access, ContentHash, ContentUrl, Priority};
use meshnode::node::{Callsign, NodeId};
use meshnode::store::PublishMeta;

fn blob_path(n: &TestNode, hash: &str) -> std::path::PathBuf {
    BlobDir::open(&n.state_dir())
        .unwrap()
        .path(&ContentHash::from_hex(hash).unwrap())
}

#[tokio::test]
async fn corrupt_small_blob_is_detected_on_read_and_never_served() {
    let n = TestNode::start("").await;
    let e = n.publish("/page.html", b"<p>good</p>").await;
    let p = blob_path(&n, e["hash"].as_str().unwrap());
    std::fs::write(&p, b"<p>evil</p>").unwrap(); // same length, other bytes

    let r = n.get("n0call.radio", "/page.html", &[]).await;
    assert_eq!(r.status, 503);
    assert!(!r.text().contains("evil"));
    // quarantined: moved away, listed as such, still never served
    assert!(!p.exists());
    assert!(
        n.state_dir()
            .join("quarantine")
            .join(e["hash"].as_str().unwrap())
            .exists()
    );
    let st = n.ctl.get("/api/v1/status").await.unwrap();
    assert_eq!(st["store"]["quarantined"], 1);
    assert_eq!(st["store"]["used_bytes"], 0);
    assert_eq!(n.get("n0call.radio", "/page.html", &[]).await.status, 503);
    let m = n.get("127.0.0.1", "/metrics", &[]).await.text();
    assert!(m.contains("meshnode_integrity_failures_total 1"), "{m}");
    // publishing good bytes again repairs it
    n.publish("/page.html", b"<p>good</p>").await;
    assert_eq!(
        n.get("n0call.radio", "/page.html", &[]).await.body,
        "<p>good</p>"
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn corrupt_chunk_in_a_large_file_cuts_the_response_before_the_bad_bytes() {
    let n = TestNode::start("").await;
    let body = data(CHUNK_SIZE as usize * 4, 5);
    let e = n.publish("/big.bin", &body).await;
    let p = blob_path(&n, e["hash"].as_str().unwrap());
    let mut disk = std::fs::read(&p).unwrap();
    let bad_at = CHUNK_SIZE as usize * 2 + 77;
    disk[bad_at] ^= 0xff;
    std::fs::write(&p, &disk).unwrap();

    let r = n.get("n0call.radio", "/big.bin", &[]).await;
    assert_eq!(
        r.status, 200,
        "headers go out before the bad chunk is reached"
    );
    assert!(
        r.body_error.is_some(),
        "the body must end in an error, not look complete"
    );
    assert_eq!(
        r.body.len(),
        CHUNK_SIZE as usize * 2,
        "exactly the two good chunks arrived"
    );
    assert_eq!(r.body, body[..CHUNK_SIZE as usize * 2]);
    // a range inside the bad chunk: nothing of it is sent
    let r = n
        .get(
            "n0call.radio",
            "/big.bin",
            &[("range", &format!("bytes={bad_at}-{}", bad_at + 10))],
        )
        .await;
    assert!(r.status == 503 || r.body.is_empty(), "{:?}", r.status);
    // quarantine happens asynchronously after the failed read
    for _ in 0..100 {
        if n.ctl.get("/api/v1/status").await.unwrap()["store"]["quarantined"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(n.get("n0call.radio", "/big.bin", &[]).await.status, 503);
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn scrub_finds_corruption_that_nobody_read() {
    let n = TestNode::start("").await;
    n.publish("/good", b"fine").await;
    let bad = n
        .publish("/rotten", &data(CHUNK_SIZE as usize + 5, 6))
        .await;
    let p = blob_path(&n, bad["hash"].as_str().unwrap());
    let mut disk = std::fs::read(&p).unwrap();
    disk.truncate(disk.len() - 1);
    std::fs::write(&p, &disk).unwrap();

    match n
        .ctl
        .call(
            hyper::Method::POST,
            "/api/v1/content/verify",
            meshnode::api::full(""),
        )
        .await
    {
        Ok(v) => {
            assert_eq!(v["checked"], 2);
            assert_eq!(
                v["quarantined"],
                serde_json::json!(["http://n0call.radio/rotten"])
            );
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(n.get("n0call.radio", "/rotten", &[]).await.status, 503);
    assert_eq!(n.get("n0call.radio", "/good", &[]).await.body, "fine");
    let again = n
        .ctl
        .call(
            hyper::Method::POST,
            "/api/v1/content/verify",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(again["checked"], 1);
    assert_eq!(
        again["already_quarantined"],
        serde_json::json!(["http://n0call.radio/rotten"])
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn publish_that_cannot_fit_gets_507_and_writes_nothing() {
    let n = TestNode::start("[store]\nmax_bytes = \"64KiB\"\n").await;
    n.publish("/a", &data(40_000, 1)).await;
    // own content is never evicted, so 30 KB more cannot fit
    let before = std::fs::read_dir(n.state_dir().join("blobs"))
        .unwrap()
        .count();
    expect_api_error(
        n.ctl.publish_bytes(data(30_000, 2), &opts("/b")).await,
        507,
        "not enough storage",
    );
    // larger than the whole quota: refused before reading the body
    expect_api_error(
        n.ctl.publish_bytes(data(70_000, 3), &opts("/c")).await,
        507,
        "exceed the whole store quota",
    );
    let st = n.ctl.get("/api/v1/status").await.unwrap();
    assert_eq!(st["store"]["entries"], 1);
    assert_eq!(st["store"]["used_bytes"], 40_000);
    assert_eq!(
        std::fs::read_dir(n.state_dir().join("blobs/tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(n.state_dir().join("blobs"))
            .unwrap()
            .count(),
        before
    );
    assert_eq!(n.get("n0call.radio", "/b", &[]).await.status, 404);
    n.daemon.shutdown().await.unwrap();
}

/// Content that arrives from other stations (replication lands in a later
/// issue; here the store API that replication uses inserts it directly).
async fn insert_foreign(
    n: &TestNode,
    path: &str,
    body: &[u8],
    priority: Priority,
    pinned: bool,
    version: u64,
) -> Result<meshnode::catalog::Entry, meshnode::store::StoreError> {
    let store = n.daemon.store();
    let mut w = store.blobs().begin().unwrap();
    w.write(body).unwrap();
    let meta = PublishMeta {
        version_floor: 0,
        url: ContentUrl::new(Callsign::parse("W1AW").unwrap(), path).unwrap(),
        content_type: None,
        priority,
        access: Access::Public,
        tags: vec![],
        origin: NodeId([7; 32]),
        pinned,
        version: Some(version),
        timestamp_ms: None,
    };
    store.publish(w.finish().unwrap(), meta).await
}

/// 20 KB of content distinct per path.
fn kb20(path: &str) -> Vec<u8> {
    data(
        20_000,
        path.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    )
}

#[tokio::test]
async fn eviction_takes_the_least_popular_and_spares_essential_pinned_and_own() {
    let n = TestNode::start("[store]\nmax_bytes = \"100KB\"\n").await;
    insert_foreign(
        &n,
        "/essential",
        &kb20("/essential"),
        Priority::Essential,
        false,
        1,
    )
    .await
    .unwrap();
    insert_foreign(&n, "/pinned", &kb20("/pinned"), Priority::Standard, true, 1)
        .await
        .unwrap();
    insert_foreign(
        &n,
        "/popular",
        &kb20("/popular"),
        Priority::Standard,
        false,
        1,
    )
    .await
    .unwrap();
    insert_foreign(
        &n,
        "/unloved",
        &kb20("/unloved"),
        Priority::Standard,
        false,
        1,
    )
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(n.get("w1aw.radio", "/popular", &[]).await.status, 200);
    }
    n.get("w1aw.radio", "/unloved", &[]).await;
    // 80 KB used; 30 KB more needs one eviction: the less read one
    n.publish("/mine", &data(30_000, 8)).await;
    let cat = n.ctl.get("/api/v1/catalog").await.unwrap();
    let urls: Vec<&str> = cat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "http://n0call.radio/mine",
            "http://w1aw.radio/essential",
            "http://w1aw.radio/pinned",
            "http://w1aw.radio/popular"
        ]
    );
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["used_bytes"],
        90_000
    );

    // a smaller quota on reload evicts what no longer fits, protected items stay
    let cfg = std::fs::read_to_string(&n.config_path)
        .unwrap()
        .replace("100KB", "60KB");
    std::fs::write(&n.config_path, cfg).unwrap();
    let out = n.daemon.reload_handle().reload().await.unwrap();
    assert_eq!(out.evicted, vec!["http://w1aw.radio/popular".to_string()]);
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["max_bytes"],
        60_000
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn reload_applies_valid_changes_and_refuses_a_broken_file() {
    let n = TestNode::start("").await;
    let path = n.config_path.clone();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}[store]\nmax_bytes = \"1GiB\"\n")).unwrap();
    let out = n
        .ctl
        .call(
            hyper::Method::POST,
            "/api/v1/reload",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(
        out["applied"],
        serde_json::json!(["store.max_bytes = 1GiB"])
    );
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["max_bytes"],
        1u64 << 30
    );

    std::fs::write(&path, format!("{good}[store]\nmax_bytes = \"lots\"\n")).unwrap();
    expect_api_error(
        n.ctl
            .call(
                hyper::Method::POST,
                "/api/v1/reload",
                meshnode::api::full(""),
            )
            .await,
        422,
        // the bad value sits on the second line after the generated config
        &format!("meshnode.toml:{}:13", good.lines().count() + 2),
    );
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["max_bytes"],
        1u64 << 30,
        "old config stays"
    );

    std::fs::write(&path, good.replace("label = \"test\"", "label = \"other\"")).unwrap();
    let out = n
        .ctl
        .call(
            hyper::Method::POST,
            "/api/v1/reload",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(out["restart_required"], serde_json::json!(["node.label"]));
    assert_eq!(
        out["applied"],
        serde_json::json!(["store.max_bytes = 2GiB"])
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn periodic_scrub_quarantines_without_any_request() {
    let n = TestNode::start("[store]\nscrub_interval = \"100ms\"\n").await;
    let e = n.publish("/quiet", b"nobody reads me").await;
    std::fs::write(
        blob_path(&n, e["hash"].as_str().unwrap()),
        b"nobody reads mE",
    )
    .unwrap();
    let mut quarantined = serde_json::Value::Null;
    for _ in 0..100 {
        quarantined = n.ctl.get("/api/v1/status").await.unwrap()["store"]["quarantined"].clone();
        if quarantined == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(quarantined, 1, "the background scrub found it");
    n.daemon.shutdown().await.unwrap();
}

/// Regression (review of #2): repairing one URL left other URLs with the same
/// content quarantined, and evicting it was counted as freeing the shared blob.
#[tokio::test]
async fn repairing_a_shared_blob_heals_every_url_and_keeps_the_quota() {
    let n = TestNode::start("[store]\nmax_bytes = \"100KB\"\n").await;
    let same = data(30_000, 11);
    let e = n.publish("/a", &same).await;
    n.publish("/b", &same).await;
    std::fs::write(blob_path(&n, e["hash"].as_str().unwrap()), data(30_000, 12)).unwrap();
    assert_eq!(n.get("n0call.radio", "/a", &[]).await.status, 503);
    assert_eq!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["quarantined"],
        2
    );
    n.publish("/a", &same).await; // a good copy arrives
    assert!(
        n.get("n0call.radio", "/b", &[]).await.body == same,
        "/b heals with /a"
    );
    let st = n.ctl.get("/api/v1/status").await.unwrap();
    assert_eq!(st["store"]["quarantined"], 0);
    assert_eq!(st["store"]["used_bytes"], 30_000);
    // own content is never evicted: 80 KB more cannot fit, and the quota holds
    expect_api_error(
        n.ctl.publish_bytes(data(80_000, 13), &opts("/c")).await,
        507,
        "",
    );
    assert!(
        n.ctl.get("/api/v1/status").await.unwrap()["store"]["used_bytes"]
            .as_u64()
            .unwrap()
            <= 100_000
    );
    n.daemon.shutdown().await.unwrap();
}

/// A corrupt file left in place by an interrupted quarantine (crash between
/// its steps) is moved aside at start, and a good copy repairs it.
#[tokio::test]
async fn interrupted_quarantine_is_finished_at_start_and_repairable() {
    let n = TestNode::start("").await;
    let e = n.publish("/p", b"original").await;
    let hash = e["hash"].as_str().unwrap().to_string();
    let state = n.state_dir();
    n.daemon.shutdown().await.unwrap();
    let p = BlobDir::open(&state)
        .unwrap()
        .path(&ContentHash::from_hex(&hash).unwrap());
    std::fs::write(&p, b"origiNal").unwrap();
    let conn = rusqlite::Connection::open(state.join("meshnode.db")).unwrap();
    conn.execute("UPDATE blobs SET quarantined = 1", [])
        .unwrap();
    drop(conn);
    let n = TestNode::start_in(n.dir, "").await;
    assert!(!p.exists(), "moved to quarantine at start");
    assert_eq!(n.get("n0call.radio", "/p", &[]).await.status, 503);
    n.publish("/p", b"original").await;
    assert_eq!(n.get("n0call.radio", "/p", &[]).await.body, "original");
    n.daemon.shutdown().await.unwrap();
}

/// Versions from an origin never go backwards (replication relies on it).
#[tokio::test]
async fn an_older_version_from_the_same_origin_is_refused() {
    let n = TestNode::start("").await;
    let p = Priority::Standard;
    insert_foreign(&n, "/news", b"v5", p, false, 5)
        .await
        .unwrap();
    let err = insert_foreign(&n, "/news", b"v4", p, false, 4)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stale version 4"), "{err}");
    insert_foreign(&n, "/news", b"v6", p, false, 6)
        .await
        .unwrap();
    assert_eq!(
        n.ctl.get("/api/v1/catalog").await.unwrap()["entries"][0]["version"],
        6
    );
    n.daemon.shutdown().await.unwrap();
}
