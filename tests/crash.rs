//! Crash safety (issue #2): kill -9 the daemon while it publishes 1,000
//! items; after a restart every acknowledged item is intact, nothing partial
//! is visible, and the store opens cleanly.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::{Proc, data};
use meshnode::api::client::PublishOptions;
use meshnode::catalog::ContentHash;

const ITEMS: usize = 1000;
const WRITERS: usize = 8;
/// Kill after this many acknowledgements, so the kill lands mid-stream.
const KILL_AFTER: usize = 400;

fn item(i: usize) -> Vec<u8> {
    // mostly small, every 25th spans several chunks
    let len = if i.is_multiple_of(25) {
        700_000
    } else {
        200 + (i * 37) % 9000
    };
    data(len, i as u64 + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_1000_publishes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Proc::spawn(dir.path(), "").await;
    let acked: Arc<Mutex<HashMap<String, ContentHash>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (ctl, acked, next) = (d.ctl(), acked.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= ITEMS {
                    return;
                }
                let body = item(i);
                let opts = PublishOptions {
                    path: format!("/item/{i}"),
                    ..Default::default()
                };
                match ctl.publish_bytes(body.clone(), &opts).await {
                    Ok(v) => {
                        assert_eq!(v["hash"].as_str().unwrap(), ContentHash::of(&body).to_hex());
                        acked.lock().unwrap().insert(
                            v["url"].as_str().unwrap().to_string(),
                            ContentHash::of(&body),
                        );
                    }
                    Err(_) => return, // the daemon died under us
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} publishes acknowledged in 120 s",
            acked.lock().unwrap().len()
        );
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "daemon died by itself: {}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < ITEMS,
        "kill landed mid-run: {} acked",
        acked.len()
    );
    drop(d);

    let mut d = Proc::spawn(dir.path(), "").await;
    let ctl = d.ctl();
    let cat = ctl.get("/api/v1/catalog?limit=10000").await.unwrap();
    let entries = cat["entries"].as_array().unwrap();
    let listed: HashMap<String, String> = entries
        .iter()
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_string(),
                e["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // every acknowledged item is listed with its hash and reads back byte for byte
    for (url, hash) in &acked {
        assert_eq!(
            listed.get(url),
            Some(&hash.to_hex()),
            "{url} lost after kill -9"
        );
        let i: usize = url.rsplit('/').next().unwrap().parse().unwrap();
        let mut out = Vec::new();
        ctl.fetch(url, &mut out).await.unwrap();
        assert!(out == item(i), "{url} corrupted");
    }
    // nothing partial: whatever else is listed is complete and verifies too
    for e in entries {
        assert_eq!(e["quarantined"], false, "{}", e["url"]);
        let mut out = Vec::new();
        ctl.fetch(e["url"].as_str().unwrap(), &mut out)
            .await
            .unwrap();
        assert_eq!(ContentHash::of(&out).to_hex(), e["hash"].as_str().unwrap());
        assert_eq!(out.len() as u64, e["size"].as_u64().unwrap());
    }
    let verify = ctl
        .call(
            hyper::Method::POST,
            "/api/v1/content/verify",
            meshnode::api::full(""),
        )
        .await
        .unwrap();
    assert_eq!(verify["quarantined"], serde_json::json!([]));
    // no stray files: tmp is empty and every blob file is named by the catalog
    let state = dir.path().join("state");
    assert_eq!(
        std::fs::read_dir(state.join("blobs/tmp")).unwrap().count(),
        0
    );
    let on_disk = meshnode::cache::blobs::BlobDir::open(&state)
        .unwrap()
        .list()
        .unwrap()
        .len();
    let distinct: std::collections::HashSet<_> = listed.values().collect();
    assert_eq!(on_disk, distinct.len());

    // a clean stop, and the database passes SQLite's own check
    d.signal("TERM");
    assert_eq!(d.wait_exit(std::time::Duration::from_secs(15)), Some(0));
    let conn = rusqlite::Connection::open(state.join("meshnode.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, entries.len());
    eprintln!(
        "crash test: {} acknowledged before kill -9, {} listed after restart",
        acked.len(),
        entries.len()
    );
}
