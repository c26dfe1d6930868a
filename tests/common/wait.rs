//! Waiting on a condition with a deadline, for the integration tests (used
//! through `common` and, with `#[path]`, by the namespace tests).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `f` every 50 ms until it is true; returns how long that took.
/// Panics naming `what` after `secs` seconds.
pub async fn wait_for<F, Fut>(what: &str, secs: u64, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}
