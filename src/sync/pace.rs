//! Pacing of background replication: a token bucket shared by every
//! transfer the mesh starts on its own (copies of essential and popular
//! items), so synchronisation keeps to `[sync] max_rate` in total and the
//! links stay free for what people ask for. Reads a client is waiting for
//! (routed requests, the proxy) are never paced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bucket's arithmetic: pure, so it is tested without waiting.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second; `None` = unlimited.
    rate: Option<u64>,
    /// Most bytes that may go at once after an idle spell.
    burst: f64,
    /// Bytes that may go now; negative = borrowed ahead.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` bytes per second that holds one second's worth
    /// (at least `min_burst`, so one chunk always fits).
    pub fn new(rate: Option<u64>, min_burst: u64, now: Instant) -> Self {
        let burst = rate.map_or(0.0, |r| (r.max(min_burst)) as f64);
        Self {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes `n` bytes at `now`; returns how long the caller must wait
    /// before sending them (callers queue up behind each other's debt).
    pub fn reserve(&mut self, n: u64, now: Instant) -> Duration {
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return Duration::ZERO;
        };
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now.max(self.at);
        self.tokens = (self.tokens + dt * rate as f64).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate as f64)
        }
    }
}

/// A [`Bucket`] shared by concurrent transfers.
#[derive(Debug)]
pub struct Pacer(Mutex<Bucket>);

impl Pacer {
    /// Paces to `rate` bytes per second (`None`: does not pace).
    pub fn new(rate: Option<u64>, min_burst: u64) -> Self {
        Self(Mutex::new(Bucket::new(rate, min_burst, Instant::now())))
    }

    /// Waits until `n` more bytes may be fetched.
    pub async fn take(&self, n: u64) {
        let wait = self.0.lock().expect("lock").reserve(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(1000), 0, t0);
        assert_eq!(b.reserve(1000, t0), Duration::ZERO, "one second's burst");
        assert_eq!(b.reserve(500, t0), Duration::from_millis(500));
        assert_eq!(
            b.reserve(500, t0),
            Duration::from_millis(1000),
            "queued behind"
        );
        // after the debt is paid and a second more, a full burst again
        let t = t0 + Duration::from_secs(3);
        assert_eq!(b.reserve(1000, t), Duration::ZERO);
    }

    #[test]
    fn unlimited_never_waits() {
        let t0 = Instant::now();
        let mut b = Bucket::new(None, 0, t0);
        assert_eq!(b.reserve(u64::MAX / 2, t0), Duration::ZERO);
    }

    #[test]
    fn a_chunk_bigger_than_a_second_still_fits_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(100), 262_144, t0);
        assert_eq!(b.reserve(262_144, t0), Duration::ZERO);
        assert_eq!(b.reserve(100, t0), Duration::from_secs(1));
    }

    proptest! {
        /// Over any schedule, no more than burst + rate × elapsed bytes are
        /// released by the time their waits end.
        #[test]
        fn never_faster_than_the_rate(
            rate in 1u64..1_000_000,
            takes in proptest::collection::vec((1u64..500_000, 0u64..2_000), 1..40),
        ) {
            let t0 = Instant::now();
            let mut b = Bucket::new(Some(rate), 0, t0);
            let mut now = t0;
            let mut sent = 0u64;
            let mut last_release = t0;
            for (n, gap_ms) in takes {
                now += Duration::from_millis(gap_ms);
                let wait = b.reserve(n, now);
                sent += n;
                let release = now + wait;
                last_release = last_release.max(release);
                let allowed = rate as f64 + rate as f64 * (last_release - t0).as_secs_f64();
                prop_assert!(sent as f64 <= allowed + 1.0, "{sent} > {allowed}");
            }
        }
    }
}
