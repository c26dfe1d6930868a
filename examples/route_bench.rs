//! Times the routing core on a 200-node mesh with a 10,000-entry catalog.
//!
//! `cargo run --release --example route_bench [seed]` (see BENCHMARKS.md).
//!
//! Measures, on one core, single-threaded:
//! - `Topology::new` and `RouteTable::build` for one node, and the build for
//!   every node of the mesh (mean and max);
//! - the per-request decision: catalog lookup by URL plus
//!   `RouteTable::decide` with a penalty closure backed by `Penalties`.
//!   The mean comes from an untimed batch (total time / requests); the
//!   percentiles come from timing each call separately and include the cost
//!   of reading the clock, which is measured and printed alongside.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use meshnode::node::NodeId;
use meshnode::routing::{LinkKind, LinkReport, NodeMeta, Penalties, RouteTable, Topology};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Nodes in the mesh.
const NODES: usize = 200;
/// Nodes per LAN segment; links inside a segment are LAN, across are WAN.
const SEGMENT: usize = 8;
/// Extra links beyond the spanning tree, per node (average degree ≈ 2 + 2×this).
const EXTRA_LINKS_PER_NODE: f64 = 1.5;
/// Share of cross-segment links that are packet radio instead of WAN.
const RF_SHARE: f64 = 0.05;
/// Share of links that only one end has reported so far.
const ONE_SIDED_SHARE: f64 = 0.1;
/// Catalog entries.
const CATALOG: usize = 10_000;
/// Requests timed.
const REQUESTS: usize = 200_000;
/// Nodes given a penalty before timing.
const PENALISED: usize = 20;

fn random_id(rng: &mut SmallRng) -> NodeId {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes);
    NodeId(bytes)
}

/// Share of extra links that stay inside their LAN segment.
const EXTRA_LAN_SHARE: f64 = 0.6;

/// A connected random mesh of LAN segments: each node links to an earlier
/// node of its own segment, each segment's first node to an earlier node
/// anywhere (WAN or radio), then extra random links.
fn random_reports(rng: &mut SmallRng, ids: &[NodeId]) -> HashMap<NodeId, Vec<LinkReport>> {
    let n = ids.len();
    let mut pairs: Vec<(usize, usize)> = (1..n)
        .map(|i| {
            let segment_start = i - i % SEGMENT;
            let parent = if i == segment_start {
                rng.random_range(0..i)
            } else {
                rng.random_range(segment_start..i)
            };
            (i, parent)
        })
        .collect();
    let extra = (n as f64 * EXTRA_LINKS_PER_NODE) as usize;
    while pairs.len() < n - 1 + extra {
        let x = rng.random_range(0..n);
        let y = if rng.random_bool(EXTRA_LAN_SHARE) {
            let segment_start = x - x % SEGMENT;
            rng.random_range(segment_start..(segment_start + SEGMENT).min(n))
        } else {
            rng.random_range(0..n)
        };
        if x != y && !pairs.contains(&(x, y)) && !pairs.contains(&(y, x)) {
            pairs.push((x, y));
        }
    }
    let mut reports: HashMap<NodeId, Vec<LinkReport>> = HashMap::new();
    for (x, y) in pairs {
        let (kind, rtt_ms, loss) = if x / SEGMENT == y / SEGMENT {
            (
                LinkKind::Lan,
                rng.random_range(0.5..5.0),
                rng.random_range(0.0..0.02),
            )
        } else if rng.random_bool(RF_SHARE) {
            (
                LinkKind::Rf,
                rng.random_range(500.0..3000.0),
                rng.random_range(0.05..0.4),
            )
        } else {
            (
                LinkKind::Wan,
                rng.random_range(10.0..80.0),
                rng.random_range(0.0..0.05),
            )
        };
        let one_sided = rng.random_bool(ONE_SIDED_SHARE);
        for (from, to) in [(x, y), (y, x)] {
            // Each end measures slightly differently.
            let jitter = rng.random_range(0.9..1.1);
            reports.entry(ids[from]).or_default().push(LinkReport {
                peer: ids[to],
                kind,
                rtt_ms: rtt_ms * jitter,
                loss,
            });
            if one_sided {
                break;
            }
        }
    }
    reports
}

/// Microseconds, for printing.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = SmallRng::seed_from_u64(seed);

    let ids: Vec<NodeId> = (0..NODES).map(|_| random_id(&mut rng)).collect();
    let meta: HashMap<NodeId, NodeMeta> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let m = NodeMeta {
                name: Some(format!("N{i}CALL-node")),
                mode: Some("mesh-only".into()),
            };
            (*id, m)
        })
        .collect();
    let reports = random_reports(&mut rng, &ids);
    let me = ids[0];

    let t = Instant::now();
    let topo = Topology::new(me, &meta, &reports);
    let topo_time = t.elapsed();
    let kinds = |k| topo.links().iter().filter(|l| l.kind == k).count();
    println!(
        "mesh: {} nodes, {} links ({} lan, {} wan, {} rf), seed {seed}",
        topo.nodes().len(),
        topo.links().len(),
        kinds(LinkKind::Lan),
        kinds(LinkKind::Wan),
        kinds(LinkKind::Rf),
    );

    let t = Instant::now();
    let table = RouteTable::build(me, &topo);
    let build_time = t.elapsed();
    let neighbours = topo
        .links()
        .iter()
        .filter(|l| l.other_end(&me).is_some())
        .count();
    println!(
        "topology merge: {:.0} µs; route table for node 0 ({neighbours} neighbours, {} destinations): {:.0} µs",
        us(topo_time),
        table.len(),
        us(build_time)
    );
    let mut builds: Vec<Duration> = ids
        .iter()
        .map(|id| {
            let t = Instant::now();
            black_box(RouteTable::build(*id, &topo));
            t.elapsed()
        })
        .collect();
    builds.sort();
    let mean_build = builds.iter().sum::<Duration>() / builds.len() as u32;
    println!(
        "route table, every node: mean {:.0} µs, p50 {:.0} µs, max {:.0} µs",
        us(mean_build),
        us(builds[builds.len() / 2]),
        us(builds[builds.len() - 1])
    );

    let catalog: HashMap<String, Vec<NodeId>> = (0..CATALOG)
        .map(|i| {
            let station = rng.random_range(0..NODES);
            let url = format!("http://n{station}call.radio/page/{i}");
            let count = rng.random_range(1..=3);
            let mut holders: Vec<NodeId> = Vec::with_capacity(count);
            while holders.len() < count {
                let h = ids[rng.random_range(0..NODES)];
                if !holders.contains(&h) {
                    holders.push(h);
                }
            }
            (url, holders)
        })
        .collect();
    let urls: Vec<&String> = catalog.keys().collect();
    let requests: Vec<&str> = (0..REQUESTS)
        .map(|_| urls[rng.random_range(0..urls.len())].as_str())
        .collect();

    // Penalise some nodes, including some of our neighbours, at mixed ages.
    let now_ms: u64 = 1_000_000;
    let mut penalties = Penalties::new();
    for i in 0..PENALISED {
        let node = ids[rng.random_range(1..NODES)];
        let at = now_ms - rng.random_range(0..120_000);
        if i % 2 == 0 {
            penalties.record_failure(node, at);
        } else {
            penalties.record_latency(node, 900.0, 100.0, at);
        }
    }
    for l in topo
        .links()
        .iter()
        .filter(|l| l.other_end(&me).is_some())
        .take(2)
    {
        if let Some(n) = l.other_end(&me) {
            penalties.record_failure(n, now_ms - 5_000);
        }
    }

    let decide = |url: &str| {
        let holders = catalog.get(url).map(Vec::as_slice).unwrap_or(&[]);
        table.decide(holders, &[], |n| penalties.penalty(n, now_ms))
    };

    // Warm up caches and branch predictors.
    for url in requests.iter().take(10_000) {
        black_box(decide(black_box(url)));
    }

    // Batch: no per-call clock reads.
    let t = Instant::now();
    let mut forwarded = 0usize;
    for url in &requests {
        if black_box(decide(black_box(url))).is_some() {
            forwarded += 1;
        }
    }
    let batch = t.elapsed();

    // Per call: for the distribution.
    let mut per_call: Vec<Duration> = requests
        .iter()
        .map(|url| {
            let t = Instant::now();
            black_box(decide(black_box(url)));
            t.elapsed()
        })
        .collect();
    per_call.sort();
    let mut overhead: Vec<Duration> = (0..REQUESTS)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed()
        })
        .collect();
    overhead.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];

    println!(
        "decision (catalog lookup + decide, {} penalised nodes), {REQUESTS} requests over {CATALOG} URLs:",
        penalties.len()
    );
    println!(
        "  mean {:.2} µs (batch of {REQUESTS}, no per-call timer); {forwarded} forwarded, {} with only us as holder",
        us(batch) / REQUESTS as f64,
        REQUESTS - forwarded
    );
    println!(
        "  per call (timer included): p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs",
        us(pct(&per_call, 0.5)),
        us(pct(&per_call, 0.99)),
        us(per_call[per_call.len() - 1])
    );
    println!(
        "  timer overhead (empty timed call): p50 {:.2} µs, p99 {:.2} µs",
        us(pct(&overhead, 0.5)),
        us(pct(&overhead, 0.99))
    );
    println!("  target: < 1000 µs (spec 500 ms)");
}
