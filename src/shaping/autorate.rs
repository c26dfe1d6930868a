//! Congestion detection and autorate: pure.
//!
//! Two signals, per direction:
//! - **saturated**: meshnode's own queues are dropping or holding a backlog
//!   (demand is above the shaped rate). That is shaping doing its job; it is
//!   reported, not acted on.
//! - **congested**: while the direction is loaded, the uplink probes' RTT
//!   rises more than `delay` above its baseline: queues are building *beyond*
//!   this router, so the link is slower than the configured rate (a shared
//!   radio link, an ISP at peak). The shaped rate is lowered by 15% per
//!   congested sample, and at least to 90% of what actually got through
//!   (to no less than a fifth of the configured rate), until the RTT
//!   settles; then raised by 5% per clear sample back to the configured
//!   rate. The queue moves back into our fair classes.

use std::time::Duration;

/// Lowest factor of the configured rate autorate goes to.
pub const MIN_FACTOR: f64 = 0.2;
const DOWN: f64 = 0.85;
const UP: f64 = 1.05;
/// Clear samples in a row before the rate rises again.
const CLEAR_BEFORE_RISE: u32 = 2;
/// A direction counts as loaded above this fraction of its shaped rate.
/// Low on purpose: when the link beyond is the bottleneck, throughput
/// through us stays far below the (too high) shaped rate.
pub const LOADED: f64 = 0.1;
/// On congestion the rate goes at least to this fraction of what actually
/// got through, so the queue moves into our classes within a sample.
const BELOW_ACHIEVED: f64 = 0.9;

/// One scan's view of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Bytes per second through meshnode's classes.
    pub rate: f64,
    /// The rate currently shaped to, bytes per second.
    pub shaped: f64,
    /// Packets dropped by meshnode's queues since the last sample.
    pub drops: u64,
    /// Bytes queued now.
    pub backlog: u64,
}

/// Autorate state of one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// Current factor of the configured rate.
    pub factor: f64,
    /// The last sample was congested.
    pub congested: bool,
    /// The last sample was saturated.
    pub saturated: bool,
    clear: u32,
}

impl Default for Direction {
    fn default() -> Self {
        Self {
            factor: 1.0,
            congested: false,
            saturated: false,
            clear: 0,
        }
    }
}

/// Baseline of the uplink RTT: follows drops at once, rises slowly (so a
/// lasting change of route is learned, a queue is not).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline(Option<f64>);

impl Baseline {
    /// Feeds an RTT sample (ms); returns the baseline before it.
    pub fn update(&mut self, rtt_ms: f64) -> Option<f64> {
        let before = self.0;
        self.0 = Some(match before {
            None => rtt_ms,
            Some(b) if rtt_ms < b => rtt_ms,
            Some(b) => b + (rtt_ms - b) * 0.02,
        });
        before
    }

    /// The baseline, ms.
    pub fn get(&self) -> Option<f64> {
        self.0
    }
}

impl Direction {
    /// Takes one sample; `rtt_rise` is the probe RTT above its baseline in
    /// this interval (`None` when no probe answered). Returns whether the
    /// factor changed.
    pub fn update(&mut self, s: Sample, rtt_rise: Option<Duration>, delay: Duration) -> bool {
        let loaded = s.shaped > 0.0 && s.rate >= s.shaped * LOADED;
        self.saturated = s.drops > 0 || s.backlog > 0;
        self.congested = loaded && rtt_rise.is_some_and(|r| r > delay);
        let before = self.factor;
        if self.congested {
            self.clear = 0;
            // what got through, as a factor of the configured rate
            let achieved = s.rate * self.factor / s.shaped;
            self.factor = (self.factor * DOWN)
                .min(achieved * BELOW_ACHIEVED)
                .max(MIN_FACTOR);
        } else if rtt_rise.is_some() {
            self.clear += 1;
            if self.clear >= CLEAR_BEFORE_RISE {
                self.factor = (self.factor * UP).min(1.0);
            }
        }
        (self.factor - before).abs() > f64::EPSILON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(30);

    fn loaded() -> Sample {
        Sample {
            rate: 900.0,
            shaped: 1000.0,
            drops: 3,
            backlog: 1500,
        }
    }

    #[test]
    fn a_rising_rtt_under_load_lowers_the_rate_to_a_fifth_at_most() {
        let mut d = Direction::default();
        assert!(d.update(loaded(), Some(Duration::from_millis(80)), DELAY));
        assert!(d.congested && d.saturated);
        // 15% down, or to 90% of what got through (0.9 of the rate): 0.81
        assert!((d.factor - 0.81).abs() < 1e-9, "{}", d.factor);
        for _ in 0..20 {
            d.update(loaded(), Some(Duration::from_millis(80)), DELAY);
        }
        assert_eq!(d.factor, MIN_FACTOR);
    }

    #[test]
    fn a_slower_link_beyond_brings_the_rate_down_to_what_got_through() {
        // told 1000, only 300 gets through and the RTT rises
        let mut d = Direction::default();
        let s = Sample {
            rate: 300.0,
            shaped: 1000.0,
            ..Default::default()
        };
        d.update(s, Some(Duration::from_millis(50)), DELAY);
        assert!((d.factor - 0.27).abs() < 1e-9, "{}", d.factor);
    }

    #[test]
    fn it_recovers_when_the_rtt_settles() {
        let mut d = Direction {
            factor: 0.5,
            ..Default::default()
        };
        let calm = Some(Duration::from_millis(5));
        assert!(
            !d.update(loaded(), calm, DELAY),
            "one clear sample is not enough"
        );
        assert!(d.update(loaded(), calm, DELAY));
        for _ in 0..40 {
            d.update(loaded(), calm, DELAY);
        }
        assert_eq!(d.factor, 1.0);
        assert!(!d.congested);
    }

    #[test]
    fn an_idle_link_or_no_probe_is_not_congestion() {
        let mut d = Direction::default();
        let idle = Sample {
            rate: 5.0,
            shaped: 1000.0,
            ..Default::default()
        };
        assert!(!d.update(idle, Some(Duration::from_millis(500)), DELAY));
        assert!(!d.congested);
        assert!(!d.update(loaded(), None, DELAY));
        assert!(!d.congested && d.saturated);
    }

    #[test]
    fn the_baseline_follows_drops_and_ignores_queues() {
        let mut b = Baseline::default();
        assert_eq!(b.update(20.0), None);
        assert_eq!(b.update(100.0), Some(20.0));
        assert!(b.get().unwrap() < 22.0, "a queue barely moves it");
        b.update(10.0);
        assert_eq!(b.get(), Some(10.0));
    }
}
