//! Issue #3's simulation scenarios on the real gossip core: 200 nodes, three
//! latency ranges, 5 % loss, a 50/50 partition healed after two minutes.
//! Every scenario must converge; the figures go to BENCHMARKS.md (full runs:
//! `cargo run --release --example gossip_sim`).

use meshnode::gossip::sim::{SimConfig, run_scenario};

fn scenario(lat: (u64, u64)) {
    let r = run_scenario(SimConfig::mesh(lat, 0.05, 7), 60_000, Some(120_000));
    eprintln!("{lat:?} ms: {r:?}");
    let spread = r.spread_ms.expect("the change reached every node");
    assert!(spread < 30 * lat.1, "spread {spread} ms");
    assert!(
        r.heal_ms.is_some_and(|h| h < 120_000),
        "partition merged: {:?}",
        r.heal_ms
    );
    assert!(r.converged, "all catalogs equal");
    // bounded per-node traffic: an order of magnitude under memberlist's ~41 KB/s
    assert!(
        r.bytes_per_node_s < 4_000.0,
        "{} B/s per node",
        r.bytes_per_node_s
    );
}

#[test]
fn lan_links_10_to_50_ms() {
    scenario((10, 50));
}

#[test]
fn wan_links_50_to_250_ms() {
    scenario((50, 250));
}

#[test]
fn slow_links_100_ms_to_1_s() {
    scenario((100, 1000));
}
