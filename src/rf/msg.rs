//! RF messages: what meshnode stations say to each other on the air, above
//! AX.25 UI frames and below catalog sync and HTTP over RF (pure).
//!
//! A message is a kind, an exchange id and a payload of up to
//! [`MAX_FRAGMENTS`] fragments, each in the info field of one UI frame
//! (PID 0xF0) addressed to the other station, after a 6-byte header:
//!
//! ```text
//! 0     'M' (0x4d)        tells meshnode frames from other UI traffic
//! 1     version << 4 | kind  (version 1)
//! 2..4  exchange id (u16, big-endian), chosen by the requester, echoed
//! 4     this fragment's index
//! 5     the last fragment's index (fragments - 1)
//! 6..   the fragment, at most `paclen - 6` bytes
//! ```
//!
//! Nothing is encrypted or compressed: amateur rules forbid obscuring the
//! meaning, and catalog records are signed, which the rules allow.
//!
//! [`Reassembly`] puts fragments back together per (station, kind, id),
//! within fixed limits on messages and bytes in progress (a station on the
//! air cannot make it hold more), and reports which fragments it has, so
//! a requester can ask for only the missing ones ([`Kind::Missing`]).

use std::collections::HashMap;

use thiserror::Error;

use super::ax25::Address;

/// First header byte.
pub const MAGIC: u8 = b'M';
/// Protocol version (high nibble of the second byte).
pub const VERSION: u8 = 1;
/// Header bytes before each fragment.
pub const HEADER_LEN: usize = 6;
/// Most fragments in one message.
pub const MAX_FRAGMENTS: usize = 256;
/// The PID of meshnode's frames (no layer 3).
pub const PID: u8 = 0xf0;
/// Messages being reassembled at once, from all stations.
pub const MAX_PARTIAL: usize = 32;
/// Bytes of fragments held for messages not complete yet.
pub const MAX_PARTIAL_BYTES: usize = 512 * 1024;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// A reconciliation message of the initiator (`sync::recon` encoding).
    ReconReq = 1,
    /// The responder's answer.
    ReconResp = 2,
    /// Catalog records wanted: 8-byte short ids.
    GetRecords = 3,
    /// The answer: signed records, one after another (`Signed::wire`).
    Records = 4,
    /// Records the receiver lacks, as short ids: "ask me for these".
    Hint = 5,
    /// A content request (`rf::http`).
    HttpReq = 6,
    /// Its answer.
    HttpResp = 7,
    /// The fragments of answer `id` the requester has ([`Bitmap`]): send
    /// the others again.
    Missing = 8,
}

impl Kind {
    /// From the low nibble of the second header byte.
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::ReconReq,
            2 => Kind::ReconResp,
            3 => Kind::GetRecords,
            4 => Kind::Records,
            5 => Kind::Hint,
            6 => Kind::HttpReq,
            7 => Kind::HttpResp,
            8 => Kind::Missing,
            _ => return None,
        })
    }
}

/// A frame's info field that is not a meshnode message fragment.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MsgError {
    /// Shorter than the header.
    #[error("{0} bytes: shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    /// Another protocol's frame.
    #[error("not a meshnode message (first byte {0:#04x})")]
    NotOurs(u8),
    /// A version this node does not speak.
    #[error("message version {0}, this node speaks {VERSION}")]
    Version(u8),
    /// An unknown kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// Index beyond the last.
    #[error("fragment {index} of {count}")]
    Index {
        /// Index.
        index: u8,
        /// Fragments.
        count: usize,
    },
    /// A payload that does not fit [`MAX_FRAGMENTS`].
    #[error("{len} bytes do not fit {MAX_FRAGMENTS} fragments of {per} bytes")]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// Bytes per fragment.
        per: usize,
    },
    /// `paclen` leaves no room for a fragment.
    #[error("a packet length of {0} leaves no room after the {HEADER_LEN}-byte header")]
    Paclen(usize),
}

/// One fragment, as read from a frame's info field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The message's kind.
    pub kind: Kind,
    /// Its exchange id.
    pub id: u16,
    /// This fragment's index.
    pub index: u8,
    /// Fragments in the message.
    pub count: usize,
    /// The bytes.
    pub data: &'a [u8],
}

impl<'a> Fragment<'a> {
    /// Reads a frame's info field.
    pub fn decode(info: &'a [u8]) -> Result<Fragment<'a>, MsgError> {
        if info.len() < HEADER_LEN {
            return Err(MsgError::Short(info.len()));
        }
        if info[0] != MAGIC {
            return Err(MsgError::NotOurs(info[0]));
        }
        if info[1] >> 4 != VERSION {
            return Err(MsgError::Version(info[1] >> 4));
        }
        let kind = Kind::from_u8(info[1] & 0x0f).ok_or(MsgError::Kind(info[1] & 0x0f))?;
        let (index, count) = (info[4], info[5] as usize + 1);
        if index as usize >= count {
            return Err(MsgError::Index { index, count });
        }
        Ok(Fragment {
            kind,
            id: u16::from_be_bytes([info[2], info[3]]),
            index,
            count,
            data: &info[HEADER_LEN..],
        })
    }
}

/// Bytes of payload per fragment for a packet length.
pub fn per_fragment(paclen: usize) -> Result<usize, MsgError> {
    match paclen.checked_sub(HEADER_LEN) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(MsgError::Paclen(paclen)),
    }
}

/// The info fields of `payload` as message `kind`/`id`, each at most
/// `paclen` bytes. An empty payload is one empty fragment.
pub fn fragment(
    kind: Kind,
    id: u16,
    payload: &[u8],
    paclen: usize,
) -> Result<Vec<Vec<u8>>, MsgError> {
    let per = per_fragment(paclen)?;
    let count = payload.len().div_ceil(per).max(1);
    if count > MAX_FRAGMENTS {
        return Err(MsgError::TooLarge {
            len: payload.len(),
            per,
        });
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let part = &payload[(i * per).min(payload.len())..((i + 1) * per).min(payload.len())];
        let mut f = Vec::with_capacity(HEADER_LEN + part.len());
        f.extend_from_slice(&[MAGIC, VERSION << 4 | kind as u8]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[i as u8, (count - 1) as u8]);
        f.extend_from_slice(part);
        out.push(f);
    }
    Ok(out)
}

/// Which fragments of a message a station has: the count, then one bit
/// per fragment (index 0 is the high bit of the first byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    /// Fragments in the message.
    pub count: usize,
    bits: Vec<u8>,
}

impl Bitmap {
    /// None of `count` fragments.
    pub fn new(count: usize) -> Bitmap {
        Bitmap {
            count,
            bits: vec![0; count.div_ceil(8)],
        }
    }

    /// Marks fragment `i`.
    pub fn set(&mut self, i: usize) {
        if i < self.count {
            self.bits[i / 8] |= 0x80 >> (i % 8);
        }
    }

    /// Has fragment `i`?
    pub fn has(&self, i: usize) -> bool {
        i < self.count && self.bits[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// The fragments not had.
    pub fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count).filter(|i| !self.has(*i))
    }

    /// The wire form: `count - 1`, then the bits.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![(self.count.max(1) - 1) as u8];
        v.extend_from_slice(&self.bits);
        v
    }

    /// Reads the wire form; `None` when it is malformed.
    pub fn decode(b: &[u8]) -> Option<Bitmap> {
        let (&n, bits) = b.split_first()?;
        let count = n as usize + 1;
        (bits.len() == count.div_ceil(8)).then(|| Bitmap {
            count,
            bits: bits.to_vec(),
        })
    }
}

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sending station.
    pub from: Address,
    /// Its kind.
    pub kind: Kind,
    /// Its exchange id.
    pub id: u16,
    /// The fragments put together.
    pub payload: Vec<u8>,
}

/// What a fragment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// It completed a message.
    Complete(Message),
    /// Stored; the message has `got` of `count` fragments.
    Partial {
        /// Fragments held.
        got: usize,
        /// Fragments in the message.
        count: usize,
    },
    /// Already held (a repeat).
    Duplicate,
    /// Its count disagrees with the fragments held for the same message:
    /// those are dropped and this one starts it again.
    Restarted,
}

#[derive(Debug)]
struct Partial {
    frags: Vec<Option<Vec<u8>>>,
    got: usize,
    bytes: usize,
    /// Last fragment's time, µs on the caller's clock.
    at: u64,
}

/// Messages being put together, per (station, kind, id).
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: HashMap<(Address, Kind, u16), Partial>,
    bytes: usize,
    /// Messages given up for room.
    pub evicted: u64,
}

impl Reassembly {
    /// Adds a fragment from `from` heard at `now` (µs).
    pub fn push(&mut self, from: Address, f: &Fragment<'_>, now: u64) -> Pushed {
        if f.count == 1 {
            return Pushed::Complete(Message {
                from,
                kind: f.kind,
                id: f.id,
                payload: f.data.to_vec(),
            });
        }
        let key = (from, f.kind, f.id);
        let mut restarted = false;
        if let Some(p) = self.partial.get(&key)
            && p.frags.len() != f.count
        {
            self.remove(&key);
            restarted = true;
        }
        if !self.partial.contains_key(&key) {
            self.make_room(f.data.len());
            self.partial.insert(
                key,
                Partial {
                    frags: vec![None; f.count],
                    got: 0,
                    bytes: 0,
                    at: now,
                },
            );
        } else {
            self.make_room_keeping(f.data.len(), &key);
        }
        let p = self.partial.get_mut(&key).expect("inserted above");
        p.at = now;
        let slot = &mut p.frags[f.index as usize];
        if slot.is_some() {
            return Pushed::Duplicate;
        }
        *slot = Some(f.data.to_vec());
        p.got += 1;
        p.bytes += f.data.len();
        self.bytes += f.data.len();
        if p.got < p.frags.len() {
            return if restarted {
                Pushed::Restarted
            } else {
                Pushed::Partial {
                    got: p.got,
                    count: p.frags.len(),
                }
            };
        }
        let p = self.remove(&key).expect("present");
        Pushed::Complete(Message {
            from,
            kind: f.kind,
            id: f.id,
            payload: p.frags.into_iter().flatten().flatten().collect(),
        })
    }

    /// The fragments held of a message (`None`: nothing held).
    pub fn have(&self, from: Address, kind: Kind, id: u16) -> Option<Bitmap> {
        let p = self.partial.get(&(from, kind, id))?;
        let mut b = Bitmap::new(p.frags.len());
        for (i, f) in p.frags.iter().enumerate() {
            if f.is_some() {
                b.set(i);
            }
        }
        Some(b)
    }

    /// Forgets a message (its exchange ended).
    pub fn forget(&mut self, from: Address, kind: Kind, id: u16) {
        self.remove(&(from, kind, id));
    }

    /// Drops messages with no fragment since `before` (µs).
    pub fn expire(&mut self, before: u64) {
        let old: Vec<_> = self
            .partial
            .iter()
            .filter(|(_, p)| p.at < before)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.remove(&k);
        }
    }

    /// Messages in progress, and their bytes.
    pub fn held(&self) -> (usize, usize) {
        (self.partial.len(), self.bytes)
    }

    fn remove(&mut self, key: &(Address, Kind, u16)) -> Option<Partial> {
        let p = self.partial.remove(key)?;
        self.bytes -= p.bytes;
        Some(p)
    }

    fn make_room(&mut self, extra: usize) {
        while !self.partial.is_empty()
            && (self.partial.len() >= MAX_PARTIAL || self.bytes + extra > MAX_PARTIAL_BYTES)
        {
            self.evict_oldest(None);
        }
    }

    fn make_room_keeping(&mut self, extra: usize, keep: &(Address, Kind, u16)) {
        while self.partial.len() > 1 && self.bytes + extra > MAX_PARTIAL_BYTES {
            self.evict_oldest(Some(keep));
        }
    }

    fn evict_oldest(&mut self, keep: Option<&(Address, Kind, u16)>) {
        if let Some(k) = self
            .partial
            .iter()
            .filter(|(k, _)| Some(*k) != keep)
            .min_by_key(|(_, p)| p.at)
            .map(|(k, _)| *k)
        {
            self.remove(&k);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn the_header_is_as_documented() {
        let f = fragment(Kind::Records, 0x1234, b"abcdefgh", 10).unwrap();
        assert_eq!(
            f,
            vec![
                b"M\x14\x12\x34\x00\x01abcd".to_vec(),
                b"M\x14\x12\x34\x01\x01efgh".to_vec()
            ]
        );
        let d = Fragment::decode(&f[1]).unwrap();
        assert_eq!(
            (d.kind, d.id, d.index, d.count, d.data),
            (Kind::Records, 0x1234, 1, 2, &b"efgh"[..])
        );
        assert_eq!(
            fragment(Kind::Hint, 1, b"", 10).unwrap(),
            vec![b"M\x15\x00\x01\x00\x00".to_vec()]
        );
    }

    #[test]
    fn bad_info_fields_say_why() {
        assert_eq!(Fragment::decode(b"M\x14"), Err(MsgError::Short(2)));
        assert_eq!(
            Fragment::decode(b"!=4903.50N"),
            Err(MsgError::NotOurs(b'!'))
        );
        assert_eq!(
            Fragment::decode(b"M\x24\0\0\0\0"),
            Err(MsgError::Version(2))
        );
        assert_eq!(Fragment::decode(b"M\x1f\0\0\0\0"), Err(MsgError::Kind(15)));
        assert_eq!(
            Fragment::decode(b"M\x14\0\0\x02\x01"),
            Err(MsgError::Index { index: 2, count: 2 })
        );
        assert_eq!(fragment(Kind::Hint, 1, b"x", 6), Err(MsgError::Paclen(6)));
        assert!(matches!(
            fragment(Kind::Hint, 1, &[0; 257], 7),
            Err(MsgError::TooLarge { len: 257, per: 1 })
        ));
        assert_eq!(fragment(Kind::Hint, 1, &[0; 256], 7).unwrap().len(), 256);
    }

    #[test]
    fn a_message_arrives_in_any_order_and_repeats_are_ignored() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let frags = fragment(Kind::HttpResp, 7, &payload, 128).unwrap();
        assert_eq!(frags.len(), 9);
        let mut r = Reassembly::default();
        let from = a("N0CALL-1");
        let order = [8, 0, 3, 3, 1, 2, 7, 6, 5, 4];
        let mut done = None;
        for (n, i) in order.iter().enumerate() {
            let f = Fragment::decode(&frags[*i]).unwrap();
            match r.push(from, &f, n as u64) {
                Pushed::Complete(m) => done = Some(m),
                Pushed::Duplicate => assert_eq!(n, 3),
                Pushed::Partial { got, count } => assert_eq!(count, 9, "{got}"),
                Pushed::Restarted => panic!(),
            }
            if n == 5 {
                let have = r.have(from, Kind::HttpResp, 7).unwrap();
                assert_eq!(have.missing().collect::<Vec<_>>(), vec![4, 5, 6, 7]);
                assert_eq!(Bitmap::decode(&have.encode()), Some(have));
            }
        }
        let m = done.unwrap();
        assert_eq!((m.from, m.kind, m.id), (from, Kind::HttpResp, 7));
        assert_eq!(m.payload, payload);
        assert_eq!(r.held(), (0, 0));
    }

    #[test]
    fn limits_hold_whatever_stations_send() {
        let mut r = Reassembly::default();
        // many stations each start a big message and never finish it
        for s in 0..100u8 {
            let from = Address::new(&format!("T{s}"), 0).unwrap();
            let f = fragment(Kind::Records, u16::from(s), &vec![s; 250 * 200], 256).unwrap();
            for (i, frag) in f.iter().enumerate().take(199) {
                r.push(
                    from,
                    &Fragment::decode(frag).unwrap(),
                    u64::from(s) * 1000 + i as u64,
                );
                let (n, bytes) = r.held();
                assert!(
                    n <= MAX_PARTIAL && bytes <= MAX_PARTIAL_BYTES,
                    "{n} {bytes}"
                );
            }
        }
        assert!(r.evicted > 0);
        r.expire(u64::MAX);
        assert_eq!(r.held(), (0, 0));
    }

    #[test]
    fn a_different_count_restarts_the_message() {
        let mut r = Reassembly::default();
        let from = a("N0CALL");
        let f3 = fragment(Kind::Records, 1, &[1; 30], 16).unwrap();
        let f2 = fragment(Kind::Records, 1, &[2; 20], 16).unwrap();
        r.push(from, &Fragment::decode(&f3[0]).unwrap(), 0);
        assert_eq!(
            r.push(from, &Fragment::decode(&f2[0]).unwrap(), 1),
            Pushed::Restarted
        );
        match r.push(from, &Fragment::decode(&f2[1]).unwrap(), 2) {
            Pushed::Complete(m) => assert_eq!(m.payload, vec![2; 20]),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn fragments_reassemble_to_the_payload(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            paclen in 7usize..300,
            id in any::<u16>(),
            seed in any::<u64>(),
        ) {
            let Ok(frags) = fragment(Kind::Records, id, &payload, paclen) else {
                prop_assert!(payload.len() > MAX_FRAGMENTS * (paclen - HEADER_LEN));
                return Ok(());
            };
            prop_assert!(frags.iter().all(|f| f.len() <= paclen));
            let mut order: Vec<usize> = (0..frags.len()).collect();
            // a deterministic shuffle
            let mut x = seed | 1;
            for i in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut r = Reassembly::default();
            let mut got = None;
            for i in order {
                if let Pushed::Complete(m) = r.push(a("N0CALL"), &Fragment::decode(&frags[i]).unwrap(), 0) {
                    got = Some(m.payload);
                }
            }
            prop_assert_eq!(got, Some(payload));
        }

        #[test]
        fn decoding_any_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = Fragment::decode(&b) {
                prop_assert!((f.index as usize) < f.count);
            }
            let _ = Bitmap::decode(&b);
        }
    }
}
