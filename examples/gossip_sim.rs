//! Runs the gossip scenarios of issue #3 on the simulator and prints a table.
//!
//! `cargo run --release --example gossip_sim [seed]` (see BENCHMARKS.md).

use meshnode::gossip::sim::{SimConfig, run_scenario};

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "| links (one way) | loss | change reaches all 200 | msgs/node/s | bytes/node/s (gossip + recon) | 50/50 partition, heal → all converged | converged |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (lat, loss, part) in [
        ((10, 50), 0.05, Some(120_000)),
        ((50, 250), 0.05, Some(120_000)),
        ((100, 1000), 0.05, Some(120_000)),
    ] {
        let t = std::time::Instant::now();
        let r = run_scenario(SimConfig::mesh(lat, loss, seed), 300_000, part);
        let ms = |v: Option<u64>| {
            v.map(|v| format!("{v} ms"))
                .unwrap_or_else(|| "never".into())
        };
        println!(
            "| {}–{} ms | {:.0} % | {} | {:.2} | {:.0} | {} | {} |",
            lat.0,
            lat.1,
            loss * 100.0,
            ms(r.spread_ms),
            r.msgs_per_node_s,
            r.bytes_per_node_s,
            ms(r.heal_ms),
            r.converged
        );
        eprintln!("  (simulated in {:.1} s)", t.elapsed().as_secs_f64());
    }
}
