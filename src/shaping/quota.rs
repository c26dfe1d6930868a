//! Per-client usage and quotas: pure. Days and months are UTC; a period
//! that rolls over starts from zero, so a throttled client is restored at
//! midnight (or on the 1st) without anyone doing anything.

use serde::{Deserialize, Serialize};

/// Days since 1970-01-01 (UTC).
pub fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400)
}

/// `year * 12 + month - 1` of a day (days since 1970-01-01, UTC).
pub fn month_of(day: i64) -> i64 {
    let (y, m, _) = crate::utc::civil_from_days(day);
    y * 12 + m - 1
}

/// One client's counted bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The day `day_*` count.
    pub day: i64,
    /// Uploaded today.
    pub day_up: u64,
    /// Downloaded today.
    pub day_down: u64,
    /// The month `month_*` count (see [`month_of`]).
    pub month: i64,
    /// Uploaded this month.
    pub month_up: u64,
    /// Downloaded this month.
    pub month_down: u64,
    /// Since the client was first seen.
    pub total_up: u64,
    /// Since the client was first seen.
    pub total_down: u64,
}

/// Quotas that apply to a client, bytes (up and down together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Per day.
    pub daily: Option<u64>,
    /// Per month.
    pub monthly: Option<u64>,
}

impl Usage {
    /// Starts new periods when `now` is past the counted ones.
    pub fn roll(&mut self, now_secs: i64) {
        let day = day_of(now_secs);
        if day != self.day {
            self.day = day;
            self.day_up = 0;
            self.day_down = 0;
        }
        let month = month_of(day);
        if month != self.month {
            self.month = month;
            self.month_up = 0;
            self.month_down = 0;
        }
    }

    /// Counts bytes at `now`.
    pub fn add(&mut self, now_secs: i64, up: u64, down: u64) {
        self.roll(now_secs);
        self.day_up += up;
        self.day_down += down;
        self.month_up += up;
        self.month_down += down;
        self.total_up += up;
        self.total_down += down;
    }

    /// Today's bytes, both ways.
    pub fn today(&self) -> u64 {
        self.day_up + self.day_down
    }

    /// This month's bytes, both ways.
    pub fn this_month(&self) -> u64 {
        self.month_up + self.month_down
    }

    /// Bytes left before a quota bites (the smaller of the two), `None`
    /// when no quota applies. Call [`Usage::roll`] first.
    pub fn remaining(&self, q: &Quota) -> Option<u64> {
        let d = q.daily.map(|d| d.saturating_sub(self.today()));
        let m = q.monthly.map(|m| m.saturating_sub(self.this_month()));
        match (d, m) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Over a quota (throttled until the period rolls over).
    pub fn over(&self, q: &Quota) -> bool {
        self.remaining(q) == Some(0)
    }
}

/// Bytes moved since the last reading of a kernel counter: a counter that
/// went down was reset (its class was made anew), so all of it is new.
pub fn delta(previous: u64, now: u64) -> u64 {
    if now >= previous { now - previous } else { now }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn months_of_known_days() {
        assert_eq!(month_of(0), 1970 * 12); // 1970-01-01
        assert_eq!(month_of(31), 1970 * 12 + 1); // 1970-02-01
        assert_eq!(month_of(day_of(1_709_164_800)), 2024 * 12 + 1); // 2024-02-29
        assert_eq!(month_of(day_of(1_709_251_200)), 2024 * 12 + 2); // 2024-03-01
        assert_eq!(month_of(day_of(1_798_761_599)), 2026 * 12 + 11); // 2026-12-31 23:59:59
    }

    #[test]
    fn quotas_bite_and_roll_over() {
        let q = Quota {
            daily: Some(1000),
            monthly: Some(2500),
        };
        let t0 = 1_800_000_000; // a day in January 2027
        let mut u = Usage::default();
        u.add(t0, 300, 600);
        assert_eq!(u.remaining(&q), Some(100));
        assert!(!u.over(&q));
        u.add(t0 + 10, 0, 200);
        assert!(u.over(&q));
        // the next day: the daily quota is fresh, the month counts on
        u.roll(t0 + 86_400);
        assert!(!u.over(&q));
        assert_eq!(u.remaining(&q), Some(1000));
        u.add(t0 + 86_400, 1000, 0);
        u.roll(t0 + 2 * 86_400);
        assert_eq!(u.remaining(&q), Some(2500 - 2100));
        assert_eq!((u.total_up, u.total_down), (1300, 800));
        assert_eq!(u.remaining(&Quota::default()), None);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        assert_eq!(delta(100, 150), 50);
        assert_eq!(delta(100, 30), 30);
    }

    proptest! {
        #[test]
        fn months_are_monotonic_and_change_on_the_first(day in -100_000i64..200_000) {
            let (a, b) = (month_of(day), month_of(day + 1));
            prop_assert!(b == a || b == a + 1);
            // a month has 28 to 31 days
            let starts_month = month_of(day - 1) != a;
            if starts_month {
                prop_assert_eq!(month_of(day + 27), a);
                prop_assert_ne!(month_of(day + 31), a);
            }
        }

        #[test]
        fn usage_adds_up(adds in proptest::collection::vec((0u64..1 << 40, 0u64..1 << 40, 0i64..200_000), 0..50)) {
            let mut u = Usage::default();
            let (mut up, mut down) = (0, 0);
            let mut t = 1_700_000_000i64;
            for (a, b, dt) in adds {
                t += dt;
                u.add(t, a, b);
                up += a;
                down += b;
                prop_assert!(u.today() <= u.this_month());
            }
            prop_assert_eq!((u.total_up, u.total_down), (up, down));
        }
    }
}
