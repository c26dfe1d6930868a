//! The station identification timer (pure; time is an argument).
//!
//! The rule (e.g. FCC §97.119(a), and the issue): a station identifies at
//! the start of a communication, at least every `id_interval` (at most 10
//! minutes) while it transmits, and once more after its last transmission.
//! Here that is:
//!
//! - the first transmission carries an ID ([`IdTimer::piggyback`] is true
//!   when no ID was ever sent);
//! - a transmission carries an ID when the last one is older than the
//!   interval less [`EARLY_FRACTION`] of it: sending it in the same
//!   transmission costs its bytes only, not a second preamble, and an ID
//!   sent early is always legal;
//! - when the station transmitted since its last ID, a standalone ID is due
//!   [`IdTimer::due_at`] `last ID + interval`, whether or not anything else
//!   goes out;
//! - nothing transmitted since the last ID: nothing is due, the station
//!   stays silent.
//!
//! The ID itself is a UI frame from the station to `ID` whose info is the
//! callsign in text ([`id_frame`]), as TNCs' `BTEXT`/`IDTEXT` and Direwolf's
//! `IDTEXT` do; it is outside every airtime budget (see [`super::airtime`]).

use super::airtime::Micros;
use super::ax25::{self, Address};

/// Destination of the identification frame: Direwolf and most TNCs send
/// their ID to `ID`.
pub const ID_DEST: &str = "ID";
/// How early in its interval an ID may ride along with another
/// transmission: the last fifth (2 minutes of 10).
pub const EARLY_FRACTION: u64 = 5;

/// The identification frame of `station`: UI, PID 0xF0 (no layer 3), info
/// the callsign as text (`N0CALL-7`), so that a listener without AX.25
/// decoding still reads it.
pub fn id_frame(station: Address) -> Vec<u8> {
    let text = station.to_string();
    let dst = Address::parse(ID_DEST).expect("ID is a valid address");
    ax25::Frame::ui(station, dst, &[], 0xf0, text.into_bytes())
        .expect("an ID frame is far below the size limits")
        .encode()
}

/// When the next ID goes out; see the module docs.
#[derive(Debug, Clone)]
pub struct IdTimer {
    /// The longest time between IDs while transmitting.
    interval: Micros,
    /// When the last ID went out; `None` before the first.
    last_id: Option<Micros>,
    /// Something other than an ID went out since the last ID.
    owed: bool,
}

impl IdTimer {
    /// A timer for IDs at least every `interval` (µs, above zero).
    pub fn new(interval: Micros) -> IdTimer {
        IdTimer {
            interval: interval.max(1),
            last_id: None,
            owed: false,
        }
    }

    /// About to transmit something at `now`: should the ID go in the same
    /// transmission?
    pub fn piggyback(&self, now: Micros) -> bool {
        match self.last_id {
            None => true,
            Some(t) => now >= t + self.interval - self.interval / EARLY_FRACTION,
        }
    }

    /// A transmission went out at `now`, with the ID in it or not.
    pub fn transmitted(&mut self, now: Micros, with_id: bool) {
        if with_id {
            self.last_id = Some(now);
            self.owed = false;
        } else {
            self.owed = true;
        }
    }

    /// When a standalone ID is due: `None` while nothing went out since the
    /// last ID.
    pub fn due_at(&self) -> Option<Micros> {
        if !self.owed {
            return None;
        }
        Some(self.last_id.map_or(0, |t| t + self.interval))
    }

    /// When the last ID went out.
    pub fn last_id(&self) -> Option<Micros> {
        self.last_id
    }

    /// The interval.
    pub fn interval(&self) -> Micros {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Micros = 60_000_000;

    #[test]
    fn no_transmission_no_id() {
        let t = IdTimer::new(10 * MIN);
        assert_eq!(t.due_at(), None);
        assert_eq!(t.last_id(), None);
    }

    #[test]
    fn the_first_transmission_identifies_then_every_interval() {
        let mut t = IdTimer::new(10 * MIN);
        assert!(t.piggyback(5 * MIN));
        t.transmitted(5 * MIN, true);
        assert_eq!(t.due_at(), None, "only the ID went out");
        // a frame one minute later: no ID with it, one owed 10 min after the last
        assert!(!t.piggyback(6 * MIN));
        t.transmitted(6 * MIN, false);
        assert_eq!(t.due_at(), Some(15 * MIN));
        // in the last fifth of the interval a transmission takes the ID along
        assert!(!t.piggyback(13 * MIN - 1));
        assert!(t.piggyback(13 * MIN));
        t.transmitted(13 * MIN, true);
        assert_eq!(t.due_at(), None);
        // silence afterwards: nothing more, however long
        assert!(t.piggyback(60 * MIN));
    }

    #[test]
    fn a_standalone_id_ends_the_communication() {
        let mut t = IdTimer::new(10 * MIN);
        t.transmitted(0, true);
        t.transmitted(MIN, false);
        let due = t.due_at().unwrap();
        assert_eq!(due, 10 * MIN);
        t.transmitted(due, true);
        assert_eq!(t.due_at(), None);
    }

    #[test]
    fn the_id_frame() {
        let f = id_frame(Address::parse("N0CALL-7").unwrap());
        let d = ax25::Frame::decode(&f, ax25::Modulo::Eight).unwrap();
        assert_eq!(d.to_string(), "N0CALL-7>ID: UI pid=f0 C len=8");
        assert_eq!(d.info(), b"N0CALL-7");
    }
}
