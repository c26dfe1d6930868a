//! Gossip: membership and dissemination between nodes (issue #3).
//!
//! - [`wire`]: the signed datagram format (pure).
//! - [`proto`]: the protocol core, a sans-IO state machine driven by one task.
//! - [`sim`]: a deterministic simulator of many cores (virtual time, seeded
//!   RNG, latency, loss, partitions) used by the tests and the benchmarks.

pub mod proto;
pub mod sim;
pub mod wire;
