//! The mesh over packet radio (issue #5): real daemons whose only link is
//! a Direwolf TNC on the virtual radio channel (`tests/common/rf.rs`).
//! Catalog sync over RF: summaries, then only what differs. Real time: in
//! the nextest `serial` group. Needs direwolf and python3; skips with a
//! reason without them.

mod common;
#[path = "common/rf.rs"]
mod rf;

use std::time::{Duration, Instant};

use common::{TestNode, data, test_config_named};
use rf::{RfChannel, RfOptions};
use serde_json::Value;

/// The two stations: callsign, SSID, label. A has the lower callsign, so
/// A leads the reconciliation.
const A: (&str, u8, &str) = ("N1ALF", 3, "alpha");
const B: (&str, u8, &str) = ("N2BRV", 4, "bravo");

/// `[rf]` at 9600 bd with the harness's TXDELAY 100 ms and TXTAIL 20 ms:
/// the highest background budget config allows, beacons every 2 s (the
/// budget decides when they really go).
fn rf_section(tnc: &str, ssid: u8) -> String {
    format!(
        "[rf]\nenabled = true\ntnc = \"{tnc}\"\nbitrate = 9600\nssid = {ssid}\n\
         airtime_budget = 0.10\nbeacon_interval = \"5s\"\nid_interval = \"10m\"\n\
         paclen = 256\ntxdelay = \"100ms\"\ntxtail = \"20ms\"\n"
    )
}

async fn status(n: &TestNode) -> Value {
    n.ctl.get("/api/v1/status").await.expect("status")
}

fn records(s: &Value) -> u64 {
    s["mesh"]["records"].as_u64().unwrap_or(0)
}

fn call((c, ssid, _): (&str, u8, &str)) -> String {
    format!("{c}-{ssid}")
}

/// Signed catalog records in a node's store (`id`, `wire`).
fn stored_records(n: &TestNode) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = rusqlite::Connection::open(n.state_dir().join(meshnode::store::DB_FILE)).unwrap();
    let mut st = db.prepare("SELECT id, wire FROM records").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Two stations that share 1,000 catalog entries and differ by 10 (5 new
/// on each side), linked only by RF: they reconcile over the air until
/// both hold all 1,010, and the bytes they put on the air for it (every
/// frame between the two, heard by the channel's monitor receiver) stay a
/// small multiple of the 10 records. Every frame on the air has one of
/// the two callsigns as its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_differing_by_ten_of_a_thousand_reconcile_over_rf() {
    let test = "catalogs_differing_by_ten_of_a_thousand_reconcile_over_rf";
    if rf::skip_unless_available(test) {
        return;
    }
    const COMMON: usize = 1000;
    let ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        monitor: true,
        persist: 63,
        ..Default::default()
    });
    let tnc = |i: usize| format!("kiss-tcp://{}", ch.kiss_addr(i));

    // A, on the air from the start, publishes the 1,000 common entries
    let a = TestNode::start_named(A.0, A.2, &rf_section(&tnc(0), A.1)).await;
    let t = Instant::now();
    for i in 0..COMMON {
        a.publish(&format!("/c/{i}.txt"), &data(40, i as u64)).await;
    }
    println!("{COMMON} entries published on A in {:?}", t.elapsed());

    // B is not on the air yet: it gets A's 1,000 records by copy (as if
    // from an earlier meeting), and publishes its own 5
    let b = TestNode::start_named(B.0, B.2, "").await;
    for i in 0..5 {
        b.publish(&format!("/b/{i}.txt"), &data(60, 1000 + i)).await;
    }
    let TestNode { dir, daemon, .. } = b;
    daemon.shutdown().await.unwrap();
    let rows = stored_records(&a);
    assert_eq!(rows.len(), COMMON);
    {
        let db =
            rusqlite::Connection::open(dir.path().join("state").join(meshnode::store::DB_FILE))
                .unwrap();
        for (id, wire) in &rows {
            db.execute(
                "INSERT OR IGNORE INTO records (id, wire) VALUES (?1, ?2)",
                (id, wire),
            )
            .unwrap();
        }
    }
    std::fs::write(
        dir.path().join("meshnode.toml"),
        test_config_named(dir.path(), B.0, B.2, &rf_section(&tnc(1), B.1)),
    )
    .unwrap();
    // the 5 new entries on A: 10 differences in all
    for i in 0..5 {
        a.publish(&format!("/a/{i}.txt"), &data(60, 2000 + i)).await;
    }
    let ten: usize = stored_records(&a)
        .iter()
        .filter(|(id, _)| !rows.iter().any(|(r, _)| r == id))
        .map(|(_, w)| w.len())
        .sum::<usize>();
    let b = TestNode::start_in(dir, "").await;
    let ten = ten
        + stored_records(&b)
            .iter()
            .filter(|(id, _)| !rows.iter().any(|(r, _)| r == id))
            .map(|(_, w)| w.len())
            .sum::<usize>();
    assert_eq!(
        (records(&status(&a).await), records(&status(&b).await)),
        (1005, 1005)
    );
    let heard_before = ch.monitor().frames().len();

    let t = Instant::now();
    let deadline = t + Duration::from_secs(240);
    loop {
        let (sa, sb) = (status(&a).await, status(&b).await);
        if records(&sa) == 1010 && records(&sb) == 1010 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reconciled within 240 s: A has {}, B has {} records; A's sync {:#}, B's sync {:#}",
            records(&sa),
            records(&sb),
            sa["rf"]["sync"],
            sb["rf"]["sync"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = t.elapsed();
    // the last frames may still be on their way to the monitor
    tokio::time::sleep(Duration::from_secs(2)).await;
    let frames = ch.monitor().frames();
    let (ca, cb) = (call(A), call(B));
    for f in &frames {
        assert!(f.src == ca || f.src == cb, "a frame from {}: {f:?}", f.src);
    }
    let sync: Vec<_> = frames[heard_before..]
        .iter()
        .filter(|f| f.dest == ca || f.dest == cb)
        .collect();
    let on_air: usize = sync.iter().map(|f| f.frame.len()).sum();
    let (sa, sb) = (status(&a).await, status(&b).await);
    println!(
        "reconciled in {took:?}: {} frames, {on_air} bytes on the air (AX.25 headers included) \
         for 10 differing records of {ten} bytes ({:.2}x); A's sync {}, B's sync {}",
        sync.len(),
        on_air as f64 / ten as f64,
        sa["rf"]["sync"],
        sb["rf"]["sync"]
    );
    assert!(
        on_air <= 4 * ten,
        "{on_air} bytes on the air for {ten} bytes of records"
    );
    assert!(
        sa["rf"]["sync"]["sessions_done"].as_u64() >= Some(1),
        "{sa:#}"
    );
}

/// The third station of the relay test.
const C: (&str, u8, &str) = ("N3CHL", 5, "charlie");

/// A content GET to `n` for `http://<host>/<path>`, with its status, body
/// and the `x-meshnode-via` header.
async fn get(n: &TestNode, host: &str, path: &str) -> (u16, Vec<u8>, String) {
    let r = n.get(host, path, &[]).await;
    (
        r.status.as_u16(),
        r.body.to_vec(),
        r.header("x-meshnode-via").to_string(),
    )
}

/// Waits until `n`'s mesh catalog has `want` records.
async fn wait_records(n: &TestNode, want: u64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let s = status(n).await;
        if records(&s) >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {want} records within {within:?}; rf: {:#}",
            records(&s),
            s["rf"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Two stations linked only by RF: B publishes a 2 KB page, A learns it
/// from B's catalog over the air and serves it to a client, fetched over
/// RF byte for byte (checked against the catalog's hash on the way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_comes_over_rf_byte_for_byte() {
    let test = "a_page_comes_over_rf_byte_for_byte";
    if rf::skip_unless_available(test) {
        return;
    }
    let ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        persist: 63,
        ..Default::default()
    });
    let tnc = |i: usize| format!("kiss-tcp://{}", ch.kiss_addr(i));
    let a = TestNode::start_named(A.0, A.2, &rf_section(&tnc(0), A.1)).await;
    let b = TestNode::start_named(B.0, B.2, &rf_section(&tnc(1), B.1)).await;
    let page = data(2048, 42);
    b.publish("/page.html", &page).await;
    wait_records(&a, 1, Duration::from_secs(90), "A learns B's page over RF").await;
    let t = Instant::now();
    let (st, body, via) = get(&a, "n2brv.radio", "/page.html").await;
    println!("2 KB page over RF at 9600 bd in {:?}", t.elapsed());
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(via, "rf");
    assert!(body == page, "the page came changed ({} bytes)", body.len());
    let sb = status(&b).await;
    assert_eq!(sb["rf"]["content_served"], 1, "{:#}", sb["rf"]);
    // the status page's radio card
    let html = a.get("127.0.0.1", "/", &[]).await.text();
    assert!(
        html.contains(
            "data-state=\"active\">On the air as N1ALF-3 at 9600 bit/s; 1 station heard."
        ),
        "{html}"
    );
    assert!(html.contains("<dd>N2BRV-4</dd>"), "{html}");
    // B is A's neighbour over RF in the topology
    let topo: Value = a.ctl.get("/api/v1/topology").await.unwrap();
    let b_id = sb["node_id"].as_str().unwrap().to_string();
    let link = topo["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["a"] == b_id || l["b"] == b_id)
        .unwrap_or_else(|| panic!("no link to B: {topo:#}"));
    assert_eq!(link["kind"], "rf", "{topo:#}");
    assert!(link["rtt_ms"].as_f64().unwrap() > 0.0, "{topo:#}");
    let sa = status(&a).await;
    let st = &sa["rf"]["stations"][0];
    assert!(
        st["rtt_ms"].as_f64().is_some() && st["retries"].is_u64(),
        "{st:#}"
    );
}

/// Three stations in a line, the ends hidden from each other (the channel
/// carries A–B and B–C only): C's page reaches A through B, which relays
/// the request and the answer; the catalog got to A the same way (C → B
/// → A, each pair reconciling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_far_end_gets_a_page_through_the_middle_station() {
    let test = "the_far_end_gets_a_page_through_the_middle_station";
    if rf::skip_unless_available(test) {
        return;
    }
    let ch = RfChannel::start(RfOptions {
        stations: 3,
        modem: 9600,
        links: Some(vec![(0, 1), (1, 2)]),
        persist: 63,
        monitor: true,
        ..Default::default()
    });
    let tnc = |i: usize| format!("kiss-tcp://{}", ch.kiss_addr(i));
    let a = TestNode::start_named(A.0, A.2, &rf_section(&tnc(0), A.1)).await;
    let b = TestNode::start_named(B.0, B.2, &rf_section(&tnc(1), B.1)).await;
    let c = TestNode::start_named(C.0, C.2, &rf_section(&tnc(2), C.1)).await;
    let page = data(2048, 7);
    c.publish("/far.html", &page).await;
    wait_records(
        &a,
        1,
        Duration::from_secs(150),
        "A learns C's page through B",
    )
    .await;
    // A hears B only, and B's beacon says it hears C
    let sa = status(&a).await;
    let heard: Vec<&str> = sa["rf"]["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["callsign"].as_str().unwrap())
        .collect();
    assert_eq!(heard, vec![call(B)], "A must not hear C");
    let t = Instant::now();
    let (st, body, via) = get(&a, "n3chl.radio", "/far.html").await;
    println!("2 KB page over 2 RF hops at 9600 bd in {:?}", t.elapsed());
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(via, "rf");
    assert!(body == page, "the page came changed ({} bytes)", body.len());
    let (sb, sc) = (status(&b).await, status(&c).await);
    assert_eq!(sb["rf"]["content_relayed"], 1, "{:#}", sb["rf"]);
    assert_eq!(sc["rf"]["content_served"], 1, "{:#}", sc["rf"]);
    let (ca, cb, cc) = (call(A), call(B), call(C));
    for f in ch.monitor().frames() {
        assert!([&ca, &cb, &cc].contains(&&f.src), "a frame from {}", f.src);
    }
}
