//! Airtime: what a transmission costs, the two token buckets that cap it,
//! the background queue, and the scheduler that decides what goes out when
//! (pure; time is an argument, in microseconds of any monotonic clock).
//!
//! # Cost
//!
//! A KISS TNC keys the transmitter, sends TXDELAY worth of flags, then each
//! frame (its bytes and the 16-bit FCS, bit-stuffed: a 0 after five 1s in a
//! row, then a flag), then TXTAIL worth of flags ([`Model::burst_us`]). The
//! stuffing is counted exactly from the bytes ([`hdlc_bits`]); G3RUH 9600
//! scrambles the same bit stream, so the count holds there too. Checked
//! against the test channel's real audio: a 216-byte frame at 9600 bd with
//! TXDELAY 100 ms and TXTAIL 20 ms plays for 303 ms; the model says 303.5.
//!
//! # Caps
//!
//! Two token buckets of airtime: background traffic (beacons, catalog sync,
//! replication) refills at `airtime_budget` seconds of airtime per second,
//! transfers a user asked for at `request_budget`. Each holds at most one
//! burst of the largest frame ([`Scheduler::depth_us`]), so over any window
//! of `W` seconds a lane transmits at most `budget x W + depth`; the
//! property tests check exactly that over arbitrary offered schedules. A
//! burst is charged when it is handed to the TNC. The identification frame
//! is charged to neither: it rides in front of another burst (its bytes
//! only) or goes alone when due ([`super::ident`]).
//!
//! # Order
//!
//! Background frames wait in one queue ordered by [`BgKey`]: the priority
//! class first (station upkeep such as beacons, then the catalog's
//! essential, popular, standard, personal), then smaller frames first, then
//! the rarest content first (fewest known holders), then first come. User
//! requests go first come, first served, ahead of background frames when
//! both could go.

use std::collections::{BTreeMap, VecDeque};

use super::ax25;
use super::ident::IdTimer;

/// Microseconds: points in time (of the caller's monotonic clock) and
/// lengths of airtime.
pub type Micros = u64;
/// Microseconds per second.
pub const US_PER_S: Micros = 1_000_000;
/// Fixed-point scale of the buckets: tokens are airtime µs x `SCALE`, and a
/// budget refills `budget x SCALE` tokens per µs of time (parts per million).
const SCALE: u64 = 1_000_000;
/// Frames queued per lane before the scheduler refuses more: at 1200 bd
/// and a 5 % budget 256 frames of 150 bytes are more than an hour of
/// background airtime; anything later would be stale when it went.
pub const QUEUE_CAP: usize = 256;
/// Most frames handed to the TNC as one transmission (AX.25's default
/// MAXFRAME, the outstanding-frame window of a connection, is 7).
pub const MAX_PER_BURST: usize = 7;

/// HDLC bits of one frame on the air: its bytes and the FCS, LSB first,
/// with a 0 stuffed after every five 1s in a row, and the closing flag.
pub fn hdlc_bits(frame: &[u8]) -> u64 {
    let fcs = ax25::fcs16(frame).to_le_bytes();
    let mut run = 0u32;
    let mut stuffed = 0u64;
    for byte in frame.iter().chain(fcs.iter()) {
        for bit in 0..8 {
            if byte >> bit & 1 == 1 {
                run += 1;
                if run == 5 {
                    stuffed += 1;
                    run = 0;
                }
            } else {
                run = 0;
            }
        }
    }
    (frame.len() as u64 + 2) * 8 + stuffed + 8
}

/// The most [`hdlc_bits`] a frame of `len` bytes can take (all ones:
/// one stuffed bit per five).
pub fn worst_hdlc_bits(len: usize) -> u64 {
    let data = (len as u64 + 2) * 8;
    data + data / 5 + 8
}

/// What transmissions cost at one channel's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Bits per second on the air, above zero.
    pub bitrate: u64,
    /// Preamble before the first frame of a transmission.
    pub txdelay: Micros,
    /// Flags after the last frame.
    pub txtail: Micros,
}

impl Model {
    /// Airtime of `bits`, rounded up to a µs.
    pub fn bits_us(&self, bits: u64) -> Micros {
        let rate = self.bitrate.max(1);
        bits.saturating_mul(US_PER_S).div_ceil(rate)
    }

    /// Airtime of one frame inside a transmission.
    pub fn frame_us(&self, frame: &[u8]) -> Micros {
        self.bits_us(hdlc_bits(frame))
    }

    /// The preamble and tail of one transmission.
    pub fn overhead_us(&self) -> Micros {
        self.txdelay + self.txtail
    }

    /// Airtime of one transmission carrying `frames`.
    pub fn burst_us<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) -> Micros {
        self.overhead_us() + frames.into_iter().map(|f| self.frame_us(f)).sum::<Micros>()
    }
}

/// A token bucket of airtime.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Tokens added per µs: the budget in parts per million (rounded down,
    /// so the cap is never above the budget).
    rate: u64,
    /// Most tokens (scaled).
    depth: u64,
    /// Tokens now (scaled).
    tokens: u64,
    /// When `tokens` was last brought up to date.
    at: Micros,
}

impl Bucket {
    /// A full bucket for `budget` (0..=1) of the airtime, holding at most
    /// `depth_us` of airtime, as of `now`.
    pub fn new(budget: f64, depth_us: Micros, now: Micros) -> Bucket {
        let rate = (budget.clamp(0.0, 1.0) * SCALE as f64).floor() as u64;
        let depth = depth_us.saturating_mul(SCALE);
        Bucket {
            rate,
            depth,
            tokens: depth,
            at: now,
        }
    }

    /// Adds what accrued up to `now` (time never runs backwards here).
    pub fn refill(&mut self, now: Micros) {
        if now > self.at {
            let add = (now - self.at).saturating_mul(self.rate);
            self.tokens = self.tokens.saturating_add(add).min(self.depth);
            self.at = now;
        }
    }

    /// Airtime that could go now (after [`Bucket::refill`]).
    pub fn available_us(&self) -> Micros {
        self.tokens / SCALE
    }

    /// Whether `cost_us` can be paid now.
    pub fn can_pay(&self, cost_us: Micros) -> bool {
        cost_us.saturating_mul(SCALE) <= self.tokens
    }

    /// Pays `cost_us`; false (and nothing paid) when it cannot.
    pub fn pay(&mut self, cost_us: Micros) -> bool {
        let cost = cost_us.saturating_mul(SCALE);
        if cost > self.tokens {
            return false;
        }
        self.tokens -= cost;
        true
    }

    /// Refills up to `from`, then accrues nothing until `to`.
    pub fn forgo(&mut self, from: Micros, to: Micros) {
        self.refill(from);
        self.at = self.at.max(to);
    }

    /// When `cost_us` can be paid (the time of the last refill or later);
    /// `None` when never: above the depth, or a zero budget.
    pub fn ready_at(&self, cost_us: Micros) -> Option<Micros> {
        let cost = cost_us.saturating_mul(SCALE);
        if cost > self.depth {
            return None;
        }
        if cost <= self.tokens {
            return Some(self.at);
        }
        if self.rate == 0 {
            return None;
        }
        Some(self.at + (cost - self.tokens).div_ceil(self.rate))
    }
}

/// Priority classes of background traffic, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Exchanges under way with another station (catalog sync rounds,
    /// records asked for): another station waits for them. Before beacons,
    /// which are replaced by newer ones and would otherwise, being short,
    /// always go first (measured: with beacons due every 2 s at a 10 %
    /// budget, a records answer never went).
    Exchange = 0,
    /// The link's own upkeep: service beacons.
    Station = 1,
    /// Catalog priority 1: essential content (on every node).
    Essential = 2,
    /// Catalog priority 2: popular content.
    Popular = 3,
    /// Catalog priority 3.
    Standard = 4,
    /// Catalog priority 4 (stays at its origin unless asked for).
    Personal = 5,
}

impl From<crate::catalog::Priority> for Class {
    fn from(p: crate::catalog::Priority) -> Class {
        match p {
            crate::catalog::Priority::Essential => Class::Essential,
            crate::catalog::Priority::Popular => Class::Popular,
            crate::catalog::Priority::Standard => Class::Standard,
            crate::catalog::Priority::Personal => Class::Personal,
        }
    }
}

/// Where a background frame stands in the queue, as its producer knows it
/// (the frame's size is the scheduler's to see): catalog sync supplies the
/// item's class and how many nodes are known to hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BgKey {
    /// The priority class.
    pub class: Class,
    /// Nodes known to hold the item (fewer: rarer: sooner). 0 when it does
    /// not apply.
    pub holders: u32,
}

impl BgKey {
    /// A message of an exchange with another station.
    pub const EXCHANGE: BgKey = BgKey {
        class: Class::Exchange,
        holders: 0,
    };
    /// Station upkeep (a beacon).
    pub const STATION: BgKey = BgKey {
        class: Class::Station,
        holders: 0,
    };
}

/// Which bucket pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// `airtime_budget`: beacons, catalog sync, replication.
    Background,
    /// `request_budget`: transfers a user asked for.
    Requests,
}

/// A queued frame, to withdraw or replace it ([`Scheduler::withdraw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Longer than the scheduler's largest frame.
    #[error("frame of {0} bytes is longer than the {1} the link sends")]
    TooLong(usize, usize),
    /// The lane's queue is full of frames that rank at least as high.
    #[error("the radio queue is full ({QUEUE_CAP} frames)")]
    Full,
}

/// What [`Scheduler::push_background`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// The new frame's ticket.
    pub ticket: Ticket,
    /// A lower-ranked frame dropped to make room, if the queue was full.
    pub evicted: Option<Ticket>,
}

/// One transmission to hand to the TNC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// The frames, in order (the ID first when it rides along).
    pub frames: Vec<Vec<u8>>,
    /// The lane that paid; `None` for a standalone ID.
    pub lane: Option<Lane>,
    /// The tickets of the lane's frames in it.
    pub tickets: Vec<Ticket>,
    /// The identification frame is in it.
    pub id: bool,
    /// Estimated airtime of the whole transmission.
    pub airtime_us: Micros,
    /// Of which the ID's share (its frame alone, or the whole standalone
    /// transmission): outside the budgets.
    pub id_us: Micros,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Hand this to the TNC now.
    Send(Burst),
    /// Nothing can go before this time (µs); ask again then, or when
    /// something new is queued.
    Wait(Micros),
    /// Nothing queued and no ID owed.
    Idle,
}

/// Queue order: class, then size, then rarity, then arrival.
type QueueKey = (Class, usize, u32, Ticket);

/// The scheduler's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The cost model.
    pub model: Model,
    /// Background share of the airtime, 0..=1.
    pub background_budget: f64,
    /// Requests' share of the airtime, 0..=1.
    pub request_budget: f64,
    /// Largest frame accepted, bytes (sets the buckets' depth).
    pub max_frame: usize,
    /// Most time between IDs while transmitting.
    pub id_interval: Micros,
}

/// The two buckets, the queues and the ID timer; see the module docs.
#[derive(Debug, Clone)]
pub struct Scheduler {
    model: Model,
    max_frame: usize,
    background: Bucket,
    requests: Bucket,
    bg: BTreeMap<QueueKey, Vec<u8>>,
    req: VecDeque<(Ticket, Vec<u8>)>,
    next_ticket: u64,
    ident: IdTimer,
    id_frame: Vec<u8>,
}

impl Scheduler {
    /// A scheduler with full buckets as of `now`; `id_frame` is the
    /// station's identification frame ([`super::ident::id_frame`]).
    pub fn new(p: Params, id_frame: Vec<u8>, now: Micros) -> Scheduler {
        let depth = Self::depth_for(&p.model, p.max_frame);
        Scheduler {
            model: p.model,
            max_frame: p.max_frame,
            background: Bucket::new(p.background_budget, depth, now),
            requests: Bucket::new(p.request_budget, depth, now),
            bg: BTreeMap::new(),
            req: VecDeque::new(),
            next_ticket: 0,
            ident: IdTimer::new(p.id_interval),
            id_frame,
        }
    }

    fn depth_for(model: &Model, max_frame: usize) -> Micros {
        model.overhead_us() + model.bits_us(worst_hdlc_bits(max_frame))
    }

    /// Depth of each bucket: one transmission of the largest frame, stuffed
    /// as badly as it can be (the burst a lane may send at once).
    pub fn depth_us(&self) -> Micros {
        Self::depth_for(&self.model, self.max_frame)
    }

    /// The cost model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The identification frame.
    pub fn id_frame(&self) -> &[u8] {
        &self.id_frame
    }

    /// The ID timer.
    pub fn ident(&self) -> &IdTimer {
        &self.ident
    }

    /// Frames waiting: (background, requests).
    pub fn queued(&self) -> (usize, usize) {
        (self.bg.len(), self.req.len())
    }

    /// Airtime each lane could send now (as of the last call that brought
    /// the buckets up to date): (background, requests).
    pub fn available_us(&self) -> (Micros, Micros) {
        (self.background.available_us(), self.requests.available_us())
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    fn check_len(&self, frame: &[u8]) -> Result<(), Refused> {
        if frame.len() > self.max_frame {
            return Err(Refused::TooLong(frame.len(), self.max_frame));
        }
        Ok(())
    }

    /// Queues a background frame. When the queue is full, the lowest-ranked
    /// frame makes room if the new one ranks higher; otherwise it is
    /// refused.
    pub fn push_background(&mut self, frame: Vec<u8>, key: BgKey) -> Result<Queued, Refused> {
        self.check_len(&frame)?;
        let ticket = self.ticket();
        let k = (key.class, frame.len(), key.holders, ticket);
        let mut evicted = None;
        if self.bg.len() >= QUEUE_CAP {
            match self.bg.last_key_value() {
                Some((worst, _)) if *worst > k => {
                    let worst = *worst;
                    self.bg.remove(&worst);
                    evicted = Some(worst.3);
                }
                _ => return Err(Refused::Full),
            }
        }
        self.bg.insert(k, frame);
        Ok(Queued { ticket, evicted })
    }

    /// Queues a frame of a transfer a user asked for (first come, first
    /// served); refused when the queue is full.
    pub fn push_request(&mut self, frame: Vec<u8>) -> Result<Ticket, Refused> {
        self.check_len(&frame)?;
        if self.req.len() >= QUEUE_CAP {
            return Err(Refused::Full);
        }
        let ticket = self.ticket();
        self.req.push_back((ticket, frame));
        Ok(ticket)
    }

    /// Takes a queued frame back (e.g. a beacon a newer one replaces);
    /// false when it already went or was never queued.
    pub fn withdraw(&mut self, ticket: Ticket) -> bool {
        if let Some(k) = self.bg.keys().find(|k| k.3 == ticket).copied() {
            self.bg.remove(&k);
            return true;
        }
        let before = self.req.len();
        self.req.retain(|(t, _)| *t != ticket);
        self.req.len() != before
    }

    /// Forgoes the airtime both buckets would accrue from `from` to `to`:
    /// the caller waited on purpose beyond the time a frame could go (a
    /// random extra wait). Without this the extra wait would be made up at
    /// the next turn, every station would stay on its fixed grid of send
    /// times, and two stations whose grids coincide would collide again
    /// and again; with it, each extra wait moves the grid. Never raises
    /// what a lane may send.
    pub fn forgo(&mut self, from: Micros, to: Micros) {
        self.background.forgo(from, to);
        self.requests.forgo(from, to);
    }

    /// The next transmission at `now`, or when to ask again.
    pub fn next_send(&mut self, now: Micros) -> Next {
        self.background.refill(now);
        self.requests.refill(now);
        let burst = match self.take(Lane::Requests) {
            Some(b) => Some(b),
            None => self.take(Lane::Background),
        };
        if let Some(mut b) = burst {
            if self.ident.piggyback(now) {
                let id_us = self.model.frame_us(&self.id_frame);
                b.frames.insert(0, self.id_frame.clone());
                b.id = true;
                b.id_us = id_us;
                b.airtime_us += id_us;
            }
            self.ident.transmitted(now, b.id);
            return Next::Send(b);
        }
        if self.ident.due_at().is_some_and(|due| due <= now) {
            self.ident.transmitted(now, true);
            let us = self.model.burst_us([&self.id_frame[..]]);
            return Next::Send(Burst {
                frames: vec![self.id_frame.clone()],
                lane: None,
                tickets: Vec::new(),
                id: true,
                airtime_us: us,
                id_us: us,
            });
        }
        match self.earliest() {
            Some(t) => Next::Wait(t.max(now + 1)),
            None => Next::Idle,
        }
    }

    /// The earliest time at `now` or later that a transmission could go
    /// (the head of a lane paid for, or the standalone ID due), without
    /// taking anything; `None` when nothing is queued and no ID owed. At
    /// `now` or earlier: [`Scheduler::next_send`] sends now.
    pub fn ready_at(&mut self, now: Micros) -> Option<Micros> {
        self.background.refill(now);
        self.requests.refill(now);
        self.earliest()
    }

    /// [`Scheduler::ready_at`] with the buckets up to date.
    fn earliest(&self) -> Option<Micros> {
        let overhead = self.model.overhead_us();
        let req = self
            .req
            .front()
            .and_then(|(_, f)| self.requests.ready_at(overhead + self.model.frame_us(f)));
        let bg = self
            .bg
            .first_key_value()
            .and_then(|(_, f)| self.background.ready_at(overhead + self.model.frame_us(f)));
        [req, bg, self.ident.due_at()].into_iter().flatten().min()
    }

    /// As many frames of `lane` as its bucket pays for, up to
    /// [`MAX_PER_BURST`], highest first; `None` when not even the first.
    fn take(&mut self, lane: Lane) -> Option<Burst> {
        let mut frames = Vec::new();
        let mut tickets = Vec::new();
        let mut airtime = 0;
        while frames.len() < MAX_PER_BURST {
            let head_us = match lane {
                Lane::Background => self
                    .bg
                    .first_key_value()
                    .map(|(_, f)| self.model.frame_us(f)),
                Lane::Requests => self.req.front().map(|(_, f)| self.model.frame_us(f)),
            };
            let Some(mut cost) = head_us else { break };
            if frames.is_empty() {
                cost += self.model.overhead_us();
            }
            let bucket = match lane {
                Lane::Background => &mut self.background,
                Lane::Requests => &mut self.requests,
            };
            if !bucket.pay(cost) {
                break;
            }
            let (ticket, frame) = match lane {
                Lane::Background => self.bg.pop_first().map(|(k, f)| (k.3, f)),
                Lane::Requests => self.req.pop_front(),
            }
            .expect("the head was there above");
            airtime += cost;
            frames.push(frame);
            tickets.push(ticket);
        }
        if frames.is_empty() {
            return None;
        }
        Some(Burst {
            frames,
            lane: Some(lane),
            tickets,
            id: false,
            airtime_us: airtime,
            id_us: 0,
        })
    }
}

/// Airtime sent over a sliding window, for the status view.
#[derive(Debug, Clone)]
pub struct AirtimeLog {
    window: Micros,
    /// (when, background µs, request µs, ID µs), oldest first.
    entries: VecDeque<(Micros, Micros, Micros, Micros)>,
    /// Totals since start: background, requests, ID.
    totals: (Micros, Micros, Micros),
}

/// Airtime in a window, by what paid for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// Background lane.
    pub background_us: Micros,
    /// Requests lane.
    pub requests_us: Micros,
    /// Identification (outside both budgets).
    pub id_us: Micros,
}

impl AirtimeLog {
    /// A log that remembers `window` µs.
    pub fn new(window: Micros) -> AirtimeLog {
        AirtimeLog {
            window,
            entries: VecDeque::new(),
            totals: (0, 0, 0),
        }
    }

    /// Records a transmission handed to the TNC at `now`.
    pub fn record(&mut self, now: Micros, b: &Burst) {
        let rest = b.airtime_us - b.id_us;
        let (bg, req) = match b.lane {
            Some(Lane::Background) => (rest, 0),
            Some(Lane::Requests) => (0, rest),
            None => (0, 0),
        };
        self.totals.0 += bg;
        self.totals.1 += req;
        self.totals.2 += b.id_us;
        self.entries.push_back((now, bg, req, b.id_us));
        self.expire(now);
    }

    fn expire(&mut self, now: Micros) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.0 + self.window < now)
        {
            self.entries.pop_front();
        }
    }

    /// Airtime of the transmissions in the last window before `now`.
    pub fn used(&mut self, now: Micros) -> Used {
        self.expire(now);
        self.entries.iter().fold(Used::default(), |u, e| Used {
            background_us: u.background_us + e.1,
            requests_us: u.requests_us + e.2,
            id_us: u.id_us + e.3,
        })
    }

    /// Airtime since the start.
    pub fn totals(&self) -> Used {
        Used {
            background_us: self.totals.0,
            requests_us: self.totals.1,
            id_us: self.totals.2,
        }
    }

    /// The window.
    pub fn window(&self) -> Micros {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rf::ax25::Address;
    use crate::rf::ident::id_frame;
    use proptest::prelude::*;

    const MS: Micros = 1_000;
    const S: Micros = US_PER_S;

    fn model(bitrate: u64, txdelay_ms: u64, txtail_ms: u64) -> Model {
        Model {
            bitrate,
            txdelay: txdelay_ms * MS,
            txtail: txtail_ms * MS,
        }
    }

    fn params(m: Model, bg: f64, req: f64) -> Params {
        Params {
            model: m,
            background_budget: bg,
            request_budget: req,
            max_frame: 16 + 256,
            id_interval: 600 * S,
        }
    }

    fn id() -> Vec<u8> {
        id_frame(Address::parse("N0CALL-1").unwrap())
    }

    #[test]
    fn stuffing_is_counted_exactly() {
        // five 1s in a row get a stuffed 0: 0xff has 8 ones, LSB first
        assert_eq!(hdlc_bits(&[]), 2 * 8 + 8 + stuff_of_fcs(&[]));
        let ones = [0xffu8; 10];
        let zeros = [0u8; 10];
        assert!(hdlc_bits(&ones) >= 12 * 8 + 8 + 80 / 5);
        assert!(hdlc_bits(&ones) <= worst_hdlc_bits(10));
        assert!(hdlc_bits(&zeros) <= 12 * 8 + 8 + 16 / 5);
    }

    fn stuff_of_fcs(frame: &[u8]) -> u64 {
        let fcs = ax25::fcs16(frame).to_le_bytes();
        let (mut run, mut n) = (0, 0);
        for b in fcs {
            for i in 0..8 {
                if b >> i & 1 == 1 {
                    run += 1;
                    if run == 5 {
                        n += 1;
                        run = 0;
                    }
                } else {
                    run = 0;
                }
            }
        }
        n
    }

    /// The harness measured 303 ms of audio for a 216-byte frame at 9600 bd,
    /// TXDELAY 100 ms, TXTAIL 20 ms (tests/rf/README.md).
    #[test]
    fn cost_matches_the_channel() {
        let m = model(9600, 100, 20);
        let frame: Vec<u8> = (0..216u32).map(|i| (i * 37 % 251) as u8).collect();
        let us = m.burst_us([&frame[..]]);
        assert!((302_000..=306_000).contains(&us), "{us}");
        // 1200 bd, Direwolf defaults, a 128-byte info UI frame: about 1.4 s
        let m = model(1200, 300, 100);
        let us = m.burst_us([&[0x55u8; 144][..]]);
        assert!((1_350_000..=1_450_000).contains(&us), "{us}");
    }

    #[test]
    fn bucket_refills_at_its_budget_up_to_its_depth() {
        let mut b = Bucket::new(0.05, 1_000 * MS, 0);
        assert!(b.pay(1_000 * MS));
        assert!(!b.can_pay(1));
        assert_eq!(b.ready_at(500 * MS), Some(10 * S));
        b.refill(10 * S);
        assert_eq!(b.available_us(), 500 * MS);
        b.refill(1_000 * S);
        assert_eq!(b.available_us(), 1_000 * MS, "capped at the depth");
        assert_eq!(b.ready_at(1_000 * MS + 1), None, "above the depth: never");
        // time running backwards changes nothing
        b.refill(5 * S);
        assert_eq!(b.available_us(), 1_000 * MS);
    }

    /// Everything queued, following the scheduler's waits.
    fn drain(s: &mut Scheduler, mut now: Micros) -> Vec<(Micros, Burst)> {
        let mut out = Vec::new();
        loop {
            match s.next_send(now) {
                Next::Send(b) => out.push((now, b)),
                Next::Wait(t) if s.queued() != (0, 0) => now = t,
                _ => return out,
            }
        }
    }

    #[test]
    fn background_order_class_then_size_then_rarity_then_arrival() {
        let mut s = Scheduler::new(params(model(9600, 0, 0), 0.1, 1.0), id(), 0);
        let f = |n: usize, tag: u8| vec![tag; n];
        let key = |class, holders| BgKey { class, holders };
        s.push_background(f(100, 1), key(Class::Standard, 1))
            .unwrap();
        s.push_background(f(50, 2), key(Class::Standard, 9))
            .unwrap();
        s.push_background(f(50, 3), key(Class::Standard, 2))
            .unwrap();
        s.push_background(f(200, 4), key(Class::Essential, 5))
            .unwrap();
        s.push_background(f(50, 5), key(Class::Standard, 2))
            .unwrap();
        s.push_background(f(60, 6), BgKey::STATION).unwrap();
        let order: Vec<u8> = drain(&mut s, 0)
            .iter()
            .flat_map(|(_, b)| b.frames.iter().filter(|f| **f != id()).map(|f| f[0]))
            .collect();
        assert_eq!(order, [6, 4, 3, 5, 2, 1]);
    }

    #[test]
    fn requests_go_before_background_and_have_their_own_bucket() {
        let m = model(1200, 300, 100);
        let mut s = Scheduler::new(params(m, 0.05, 0.5), id(), 0);
        s.push_background(vec![1; 100], BgKey::STATION).unwrap();
        s.push_request(vec![2; 100]).unwrap();
        let Next::Send(b) = s.next_send(0) else {
            panic!()
        };
        assert_eq!(b.lane, Some(Lane::Requests));
        assert!(b.id, "the first transmission identifies");
        assert_eq!(b.frames.len(), 2);
        assert_eq!(b.frames[0], id());
        let Next::Send(b) = s.next_send(0) else {
            panic!()
        };
        assert_eq!(b.lane, Some(Lane::Background));
        assert!(!b.id);
        assert_eq!(s.next_send(0), Next::Idle.or_owed(&s));
    }

    #[test]
    fn a_request_queued_while_the_background_waits_is_ready_at_once() {
        let m = model(1200, 300, 100);
        let mut s = Scheduler::new(params(m, 0.05, 0.5), id(), 0);
        let frame = vec![0x41; 200];
        s.push_background(frame.clone(), BgKey::STATION).unwrap();
        s.push_background(frame.clone(), BgKey::STATION).unwrap();
        assert!(matches!(s.next_send(0), Next::Send(_)));
        // the second beacon waits for the background budget (tens of s)
        let Next::Wait(t) = s.next_send(MS) else {
            panic!()
        };
        assert!(t > 10 * S, "{t}");
        assert_eq!(s.ready_at(2 * MS), Some(t), "nothing else queued");
        // a user's request: its own bucket is full, it can go now
        s.push_request(vec![2; 100]).unwrap();
        assert_eq!(s.ready_at(3 * MS), Some(3 * MS));
        let Next::Send(b) = s.next_send(3 * MS) else {
            panic!()
        };
        assert_eq!(b.lane, Some(Lane::Requests));
        assert_eq!(
            s.ready_at(4 * MS),
            Some(t),
            "the beacon's wait is unchanged"
        );
    }

    impl Next {
        /// `Idle`, or the wait for the owed standalone ID.
        fn or_owed(self, s: &Scheduler) -> Next {
            match s.ident().due_at() {
                Some(t) => Next::Wait(t),
                None => self,
            }
        }
    }

    #[test]
    fn a_full_bucket_waits_then_sends() {
        let m = model(1200, 300, 100);
        let mut s = Scheduler::new(params(m, 0.05, 0.5), id(), 0);
        // the largest frame: one fits the depth, two do not
        let frame = vec![0x41; 272];
        let cost = m.burst_us([&frame[..]]);
        s.push_background(frame.clone(), BgKey::STATION).unwrap();
        s.push_background(frame.clone(), BgKey::STATION).unwrap();
        let Next::Send(b) = s.next_send(0) else {
            panic!()
        };
        assert_eq!(b.tickets.len(), 1);
        // the depth held one burst of the largest frame stuffed at worst;
        // the rest accrues at 5 %
        let left = s.depth_us() - cost;
        let Next::Wait(t) = s.next_send(0) else {
            panic!()
        };
        assert_eq!(t, (cost - left) * 20);
        assert!(matches!(s.next_send(t - 1), Next::Wait(_)));
        assert!(matches!(s.next_send(t), Next::Send(_)));
    }

    #[test]
    fn the_id_bypasses_both_buckets() {
        let m = model(1200, 300, 100);
        let mut p = params(m, 0.01, 0.01);
        p.id_interval = 60 * S;
        let mut s = Scheduler::new(p, id(), 0);
        for _ in 0..3 {
            s.push_background(vec![1; 30], BgKey::STATION).unwrap();
        }
        let Next::Send(b) = s.next_send(0) else {
            panic!()
        };
        assert_eq!(
            (b.id, b.tickets.len()),
            (true, 3),
            "one transmission, ID first"
        );
        // a frame 10 s later goes without an ID: one is owed 60 s after the last
        s.push_background(vec![1; 30], BgKey::STATION).unwrap();
        assert!(matches!(s.next_send(10 * S), Next::Send(b) if !b.id));
        assert_eq!(s.ident().due_at(), Some(60 * S));
        // the bucket is empty for a long time; the owed ID does not wait for it
        for _ in 0..5 {
            s.push_background(vec![1; 272], BgKey::STATION).unwrap();
        }
        assert_eq!(s.next_send(11 * S), Next::Wait(60 * S));
        let Next::Send(b) = s.next_send(60 * S) else {
            panic!()
        };
        assert_eq!((b.lane, b.id, b.frames.len()), (None, true, 1));
        assert_eq!(b.airtime_us, b.id_us);
        assert!(matches!(s.next_send(60 * S), Next::Wait(t) if t > 100 * S));
    }

    #[test]
    fn a_forgone_wait_moves_the_grid() {
        let m = model(1200, 300, 100);
        let frame = vec![0x41; 272];
        let mut s = Scheduler::new(params(m, 0.05, 0.5), id(), 0);
        for _ in 0..3 {
            s.push_background(frame.clone(), BgKey::STATION).unwrap();
        }
        assert!(matches!(s.next_send(0), Next::Send(_)));
        let Next::Wait(t1) = s.next_send(0) else {
            panic!()
        };
        // sent 1 s late, having forgone that second: the next turn is a
        // whole period after the late send, not after t1
        s.forgo(t1, t1 + S);
        assert!(matches!(s.next_send(t1 + S), Next::Send(_)));
        let Next::Wait(t2) = s.next_send(t1 + S) else {
            panic!()
        };
        let period = m.burst_us([&frame[..]]) * 20;
        assert_eq!(t2, t1 + S + period);
    }

    #[test]
    fn nothing_offered_nothing_sent() {
        let mut s = Scheduler::new(params(model(1200, 300, 100), 0.05, 0.5), id(), 0);
        for t in [0, S, 3_600 * S] {
            assert_eq!(s.next_send(t), Next::Idle);
        }
        assert_eq!(s.ident().last_id(), None);
    }

    #[test]
    fn full_queue_evicts_the_lowest_or_refuses() {
        let mut s = Scheduler::new(params(model(1200, 300, 100), 0.05, 0.5), id(), 0);
        let std = BgKey {
            class: Class::Standard,
            holders: 3,
        };
        let first = s.push_background(vec![1; 30], std).unwrap().ticket;
        for _ in 1..QUEUE_CAP {
            s.push_background(vec![1; 20], std).unwrap();
        }
        assert_eq!(s.push_background(vec![1; 40], std), Err(Refused::Full));
        let q = s.push_background(vec![1; 40], BgKey::STATION).unwrap();
        assert_eq!(
            q.evicted,
            Some(first),
            "the largest standard frame made room"
        );
        assert_eq!(
            s.push_background(vec![0; 300], BgKey::STATION),
            Err(Refused::TooLong(300, 272))
        );
        assert!(s.withdraw(q.ticket));
        assert!(!s.withdraw(q.ticket));
    }

    #[test]
    fn airtime_log_window_and_totals() {
        let mut log = AirtimeLog::new(10 * S);
        let b = |lane, air, id| Burst {
            frames: vec![],
            lane,
            tickets: vec![],
            id: id > 0,
            airtime_us: air,
            id_us: id,
        };
        log.record(0, &b(Some(Lane::Background), 500, 100));
        log.record(5 * S, &b(Some(Lane::Requests), 300, 0));
        log.record(6 * S, &b(None, 200, 200));
        assert_eq!(
            log.used(6 * S),
            Used {
                background_us: 400,
                requests_us: 300,
                id_us: 300
            }
        );
        assert_eq!(log.used(11 * S).background_us, 0, "slid out of the window");
        assert_eq!(log.totals().background_us, 400);
    }

    /// One frame offered at `at` (µs) to a lane.
    #[derive(Debug, Clone)]
    struct Offer {
        at: Micros,
        len: usize,
        class: u8,
        holders: u32,
        request: bool,
    }

    fn offers() -> impl Strategy<Value = Vec<Offer>> {
        prop::collection::vec(
            (
                0..30 * S,
                15usize..=272,
                0u8..5,
                0u32..8,
                prop::bool::weighted(0.3),
            )
                .prop_map(|(at, len, class, holders, request)| Offer {
                    at,
                    len,
                    class,
                    holders,
                    request,
                }),
            0..60,
        )
    }

    /// Runs the scheduler over `offers` on virtual time, as the RF task
    /// does: queue what arrived, send while it says send, sleep until it
    /// says (with `dither`, up to 0.2 s more, forgone, unless the wait is
    /// for an owed ID) or the next arrival. Returns the transmissions with
    /// their time.
    fn simulate(s: &mut Scheduler, mut offers: Vec<Offer>, dither: bool) -> Vec<(Micros, Burst)> {
        offers.sort_by_key(|o| o.at);
        let mut offers: VecDeque<Offer> = offers.into();
        let mut out = Vec::new();
        let mut now = 0;
        loop {
            while offers.front().is_some_and(|o| o.at <= now) {
                let o = offers.pop_front().expect("front");
                let frame = vec![0x5a; o.len];
                if o.request {
                    let _ = s.push_request(frame);
                } else {
                    let class = [
                        Class::Exchange,
                        Class::Station,
                        Class::Essential,
                        Class::Popular,
                        Class::Standard,
                        Class::Personal,
                    ][o.class as usize];
                    let _ = s.push_background(
                        frame,
                        BgKey {
                            class,
                            holders: o.holders,
                        },
                    );
                }
            }
            let arrival = offers.front().map(|o| o.at);
            match s.next_send(now) {
                Next::Send(b) => out.push((now, b)),
                Next::Wait(t)
                    if dither && s.ident().due_at() != Some(t) && arrival.is_none_or(|a| a > t) =>
                {
                    // an arbitrary but repeatable extra wait
                    let d = t * 7919 % 200_000;
                    s.forgo(t, t + d);
                    now = t + d;
                }
                Next::Wait(t) => {
                    assert!(t > now);
                    now = arrival.map_or(t, |a| a.min(t));
                }
                Next::Idle => match arrival {
                    Some(a) => now = a,
                    None => return out,
                },
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Over any schedule of offered frames, each lane's airtime in any
        /// window [a, b] is at most budget x (b - a) + depth; IDs come on
        /// top, and only IDs are outside the caps.
        #[test]
        fn airtime_stays_within_the_budgets(
            offers in offers(),
            bitrate in prop::sample::select(vec![300u64, 1200, 9600]),
            txdelay in 0u64..500,
            bg in 0.01f64..=0.10,
            req in 0.05f64..=1.0,
            id_min in 1u64..=10,
            dither in any::<bool>(),
        ) {
            let m = model(bitrate, txdelay, txdelay / 3);
            let mut p = params(m, bg, req);
            p.id_interval = id_min * 60 * S;
            let mut s = Scheduler::new(p, id(), 0);
            let depth = s.depth_us();
            let sent = simulate(&mut s, offers.clone(), dither);
            let accepted = offers.len();
            let frames: usize = sent.iter().map(|(_, b)| b.tickets.len()).sum();
            prop_assert_eq!(frames, accepted, "every frame went out in the end");
            for lane in [Lane::Background, Lane::Requests] {
                let budget = if lane == Lane::Background { bg } else { req };
                let times: Vec<(Micros, Micros)> = sent
                    .iter()
                    .filter(|(_, b)| b.lane == Some(lane))
                    .map(|(t, b)| (*t, b.airtime_us - b.id_us))
                    .collect();
                for (i, &(a, _)) in times.iter().enumerate() {
                    let mut used = 0;
                    for &(t, us) in &times[i..] {
                        used += us;
                        let allowed = budget * (t - a) as f64 + depth as f64;
                        prop_assert!(
                            used as f64 <= allowed + 1.0,
                            "{lane:?}: {used} µs in [{a}, {t}] > {allowed}"
                        );
                    }
                }
            }
            // the estimate of each burst is the cost model's
            for (_, b) in &sent {
                let frames: Vec<&[u8]> = b.frames.iter().map(|f| &f[..]).collect();
                prop_assert_eq!(b.airtime_us, m.burst_us(frames));
            }
        }

        /// Every transmission has an ID no more than the interval before it
        /// (or in it), and another no more than the interval after it; with
        /// nothing offered, nothing at all goes out.
        #[test]
        fn ids_cover_every_transmission(offers in offers(), id_s in 5u64..=600, dither in any::<bool>()) {
            let m = model(1200, 300, 100);
            let mut p = params(m, 0.1, 0.5);
            p.id_interval = id_s * S;
            let mut s = Scheduler::new(p, id(), 0);
            let empty = offers.is_empty();
            let sent = simulate(&mut s, offers, dither);
            prop_assert_eq!(sent.is_empty(), empty);
            let ids: Vec<Micros> = sent.iter().filter(|(_, b)| b.id).map(|(t, _)| *t).collect();
            for (t, b) in &sent {
                prop_assert_eq!(b.id, b.frames[0] == id());
                prop_assert!(ids.iter().any(|i| i <= t && t - i <= id_s * S));
                prop_assert!(ids.iter().any(|i| i >= t && i - t <= id_s * S));
            }
        }
    }
}
