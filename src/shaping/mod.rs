//! Per-client bandwidth fairness in the kernel: HTB qdiscs, classes and u32
//! filters over rtnetlink, quotas and usage.
//!
//! - [`plan`]: the tree on one interface and the ops that reach it (pure);
//! - [`share`]: the tree a set of clients should get (pure);
//! - [`quota`]: usage periods and quotas (pure);
//! - [`autorate`]: congestion detection and rate adaptation (pure);
//! - [`tc`]: the netlink driver (no `tc` binary);
//! - [`usage`]: usage on disk;
//! - [`task`]: the one task that owns all of it; the API and meshctl go
//!   through its [`Shaping`] handle.
pub mod autorate;
pub mod plan;
pub mod quota;
pub mod share;
pub mod task;
pub mod tc;
pub mod usage;

pub use task::{ClientStatus, Congestion, Reconfigured, Shaping, Status, spawn};
