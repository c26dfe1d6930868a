//! The service beacon: who this node is and what its catalog holds, one UI
//! frame at `[rf] beacon_interval` (pure codec).
//!
//! ```text
//! N0CALL-10>MESHND: UI pid=f0   info: MN1 N0CALL-hilltop c=1234-00ab12cd34ef5678 s=17 h=8080 k=1f2e3d4c5b6a7988
//! ```
//!
//! - **Destination `MESHND`.** It has no digit, so it can never be a
//!   station's callsign, and it does not start with `AP`, so APRS software
//!   (which reads the destination as a "tocall") does not take the frame
//!   for APRS. PID 0xF0: no layer 3.
//! - **Source**: the station, `CALLSIGN-SSID`; the node name's callsign
//!   must be the same (a beacon naming another station is refused).
//! - **Info**: readable ASCII, fields separated by one space, so a plain
//!   monitor (`axlisten`, Direwolf) shows something useful. `MN1` is the
//!   magic and version 1; then the node name (`CALLSIGN-label`); then
//!   `key=value` fields in any order:
//!   - `c=<records>-<fingerprint, 16 hex>`: the catalog summary, as
//!     [`crate::mesh::catalog_digest`] writes it (equal digests, equal
//!     catalogs): a station that hears a different one knows there is
//!     something to reconcile (required);
//!   - `s=<0..65535>`: the beacon's sequence number, for counting lost
//!     beacons (required);
//!   - `h=<port>`: the node's HTTP mesh port, when it has IP (optional);
//!   - `k=<16 hex>`: the first 8 bytes of the node's key, to match the
//!     station with a mesh peer known over IP (optional);
//!   - `n=<8 hex>,...`: the first 4 bytes of the keys of the meshnode
//!     stations it hears lately, at most [`MAX_NEIGHBOURS`]: a station
//!     that hears this one learns who it can reach through it (HTTP over RF
//!     relays through such a station to one it cannot hear; optional).
//!
//!   Unknown keys are skipped (later fields in version 1), a repeated key
//!   is an error; a later version changes the magic.
//!
//! Nothing is encrypted, as the licence requires; there is no signature in
//! version 1 (88 more bytes at 1200 bd, on every beacon), so a beacon is a
//! hint, never a credential: what a station later sends over RF (catalog
//! records) is signed on its own.

use std::fmt;

use super::ax25::{self, Address};
use crate::node::{Callsign, Label};

/// The destination of service beacons.
pub const BEACON_DEST: &str = "MESHND";
/// The PID: no layer 3 protocol.
pub const BEACON_PID: u8 = 0xf0;
/// The magic and version at the start of the info field.
pub const MAGIC: &str = "MN1";
/// The longest info field version 1 produces: magic, a 6-character
/// callsign and a 32-character label, every field at its longest.
pub const MAX_LEN: usize = MAGIC.len()
    + 1
    + (6 + 1 + 32)
    + " c=4294967295-".len()
    + 16
    + " s=65535".len()
    + " h=65535".len()
    + " k=".len()
    + 16
    + " n=".len()
    + MAX_NEIGHBOURS * 9
    - 1;
/// Most neighbours a beacon lists.
pub const MAX_NEIGHBOURS: usize = 6;
/// Most `key=value` fields read (a few unknown ones from later versions fit).
pub const MAX_FIELDS: usize = 12;

/// One service beacon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beacon {
    /// The node's name, `CALLSIGN-label` (checked).
    pub name: String,
    /// Records in the node's mesh catalog.
    pub records: u32,
    /// XOR fingerprint of the catalog's record ids.
    pub fingerprint: u64,
    /// Sequence number: one more for each beacon, wrapping.
    pub seq: u16,
    /// The node's HTTP mesh port, when it has IP.
    pub http_port: Option<u16>,
    /// The first 8 bytes of the node's key.
    pub key_prefix: Option<[u8; 8]>,
    /// The first 4 bytes of the keys of meshnode stations it hears.
    pub neighbours: Vec<[u8; 4]>,
}

/// Why an info field or frame is not a beacon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Longer than any beacon.
    #[error("beacon of {0} bytes is longer than {MAX_LEN}")]
    TooLong(usize),
    /// Not ASCII text.
    #[error("beacon is not printable ASCII")]
    NotText,
    /// Does not start with `MN<version>`.
    #[error("not a meshnode beacon (no MN magic)")]
    NoMagic,
    /// A version this node does not read.
    #[error("beacon version {0} is not supported (this node reads 1)")]
    Unsupported(String),
    /// The node name is missing or invalid.
    #[error("bad node name {0:?}")]
    BadName(String),
    /// A field is not `key=value` or its value is invalid.
    #[error("bad field {0:?}")]
    BadField(String),
    /// A field appears twice.
    #[error("field {0:?} given twice")]
    Repeated(String),
    /// More fields than [`MAX_FIELDS`].
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    /// A required field is missing.
    #[error("field {0}= is missing")]
    Missing(&'static str),
    /// The name's callsign is not the frame's source.
    #[error("beacon names {name} but comes from {sender}")]
    NotTheSender {
        /// The name in the beacon.
        name: String,
        /// The frame's source.
        sender: String,
    },
}

impl Beacon {
    /// The info field.
    pub fn encode(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// The UI frame from `src` (encoded AX.25, no FCS).
    pub fn frame(&self, src: Address) -> Vec<u8> {
        let dst = Address::parse(BEACON_DEST).expect("MESHND is a valid address");
        ax25::Frame::ui(src, dst, &[], BEACON_PID, self.encode())
            .expect("a beacon is below the info limit")
            .encode()
    }

    /// The beacon in a frame heard on the air: `Ok(None)` when the frame is
    /// not a beacon at all (another destination, PID or frame type), an
    /// error when it is one but broken or names another station.
    pub fn from_frame(frame: &ax25::Frame) -> Result<Option<Beacon>, BeaconError> {
        let dst = frame.dst();
        if dst.callsign() != BEACON_DEST || frame.pid() != Some(BEACON_PID) {
            return Ok(None);
        }
        if !matches!(frame.control(), ax25::Control::Ui { .. }) {
            return Ok(None);
        }
        let b = Beacon::decode(frame.info())?;
        let call = b.name.split_once('-').map_or(&b.name[..], |(c, _)| c);
        if call != frame.src().callsign() {
            return Err(BeaconError::NotTheSender {
                name: b.name,
                sender: frame.src().to_string(),
            });
        }
        Ok(Some(b))
    }

    /// Reads an info field; bounded by [`MAX_LEN`] and [`MAX_FIELDS`].
    pub fn decode(info: &[u8]) -> Result<Beacon, BeaconError> {
        if info.len() > MAX_LEN {
            return Err(BeaconError::TooLong(info.len()));
        }
        if !info.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return Err(BeaconError::NotText);
        }
        let text = std::str::from_utf8(info).map_err(|_| BeaconError::NotText)?;
        let mut parts = text.split(' ');
        let magic = parts.next().unwrap_or("");
        let version = magic.strip_prefix("MN").ok_or(BeaconError::NoMagic)?;
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BeaconError::NoMagic);
        }
        if magic != MAGIC {
            return Err(BeaconError::Unsupported(version.to_string()));
        }
        let name = parts.next().unwrap_or("");
        check_name(name)?;
        let mut b = Beacon {
            name: name.to_string(),
            records: 0,
            fingerprint: 0,
            seq: 0,
            http_port: None,
            key_prefix: None,
            neighbours: Vec::new(),
        };
        let (mut c, mut s) = (false, false);
        let mut seen: Vec<&str> = Vec::new();
        for (i, field) in parts.enumerate() {
            if i >= MAX_FIELDS {
                return Err(BeaconError::TooManyFields);
            }
            let bad = || BeaconError::BadField(field.to_string());
            let (k, v) = field.split_once('=').ok_or_else(bad)?;
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(bad());
            }
            if seen.contains(&k) {
                return Err(BeaconError::Repeated(k.to_string()));
            }
            seen.push(k);
            match k {
                "c" => {
                    let (n, fp) = v.split_once('-').ok_or_else(bad)?;
                    b.records = parse_decimal(n).ok_or_else(bad)?;
                    b.fingerprint = parse_hex16(fp).map(u64::from_be_bytes).ok_or_else(bad)?;
                    c = true;
                }
                "s" => {
                    b.seq = parse_decimal(v).ok_or_else(bad)?;
                    s = true;
                }
                "h" => {
                    b.http_port = Some(parse_decimal(v).filter(|p: &u16| *p > 0).ok_or_else(bad)?);
                }
                "k" => b.key_prefix = Some(parse_hex16(v).ok_or_else(bad)?),
                "n" => {
                    for n in v.split(',') {
                        if b.neighbours.len() == MAX_NEIGHBOURS {
                            return Err(bad());
                        }
                        b.neighbours.push(parse_hex8(n).ok_or_else(bad)?);
                    }
                }
                _ => {} // a later version-1 field
            }
        }
        if !c {
            return Err(BeaconError::Missing("c"));
        }
        if !s {
            return Err(BeaconError::Missing("s"));
        }
        Ok(b)
    }

    /// The catalog summary as the status API writes it.
    pub fn catalog_digest(&self) -> String {
        crate::mesh::catalog_digest((self.records, self.fingerprint))
    }
}

/// The info field's text.
impl fmt::Display for Beacon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MAGIC} {} c={}-{:016x} s={}",
            self.name, self.records, self.fingerprint, self.seq
        )?;
        if let Some(p) = self.http_port {
            write!(f, " h={p}")?;
        }
        if let Some(k) = self.key_prefix {
            write!(f, " k={}", hex::encode(k))?;
        }
        for (i, n) in self.neighbours.iter().take(MAX_NEIGHBOURS).enumerate() {
            write!(f, "{}{}", if i == 0 { " n=" } else { "," }, hex::encode(n))?;
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), BeaconError> {
    let bad = || BeaconError::BadName(name.to_string());
    let (call, label) = name.split_once('-').ok_or_else(bad)?;
    // upper case only: the name is sent as the node writes it
    if call.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(bad());
    }
    Callsign::parse(call).map_err(|_| bad())?;
    Label::parse(label).map_err(|_| bad())?;
    Ok(())
}

/// A decimal number without sign or leading zeros (so each value has one
/// spelling).
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Exactly 16 lower-case hex digits.
fn parse_hex8(s: &str) -> Option<[u8; 4]> {
    if s.len() != 8 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 4];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn parse_hex16(s: &str) -> Option<[u8; 8]> {
    if s.len() != 16 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 8];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Beacon {
        Beacon {
            name: "N0CALL-hilltop".into(),
            records: 1234,
            fingerprint: 0x00ab_12cd_34ef_5678,
            seq: 17,
            http_port: Some(8080),
            key_prefix: Some([0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x79, 0x88]),
            neighbours: vec![],
        }
    }

    #[test]
    fn golden_bytes() {
        let b = sample();
        let info = b.encode();
        assert_eq!(
            String::from_utf8(info.clone()).unwrap(),
            "MN1 N0CALL-hilltop c=1234-00ab12cd34ef5678 s=17 h=8080 k=1f2e3d4c5b6a7988"
        );
        assert_eq!(Beacon::decode(&info).unwrap(), b);
        assert_eq!(b.catalog_digest(), "1234-00ab12cd34ef5678");
        let n = Beacon {
            neighbours: vec![[1, 2, 3, 4], [0xaa, 0xbb, 0xcc, 0xdd]],
            ..sample()
        };
        assert!(
            String::from_utf8(n.encode())
                .unwrap()
                .ends_with(" k=1f2e3d4c5b6a7988 n=01020304,aabbccdd")
        );
        assert_eq!(Beacon::decode(&n.encode()).unwrap(), n);
        assert!(Beacon::decode(b"MN1 N0CALL-x c=1-0000000000000000 s=1 n=0102").is_err());
        let frame = b.frame(Address::parse("N0CALL-10").unwrap());
        // MESHND (C bit set: a command), N0CALL-10 (last address), UI, PID F0
        assert_eq!(
            hex::encode(&frame[..16]),
            "9a8aa6909c88e09c60868298987503f0"
        );
        let f = ax25::Frame::decode(&frame, ax25::Modulo::Eight).unwrap();
        assert_eq!(Beacon::from_frame(&f).unwrap(), Some(b));
    }

    #[test]
    fn minimal_and_forward_compatible() {
        let b = Beacon::decode(b"MN1 N0CALL-x s=0 c=0-0000000000000000 later=field").unwrap();
        assert_eq!(
            (b.records, b.seq, b.http_port, b.key_prefix),
            (0, 0, None, None)
        );
    }

    #[test]
    fn broken_beacons_are_refused_with_a_reason() {
        let e = |s: &str| Beacon::decode(s.as_bytes()).unwrap_err();
        assert_eq!(e("hello"), BeaconError::NoMagic);
        assert_eq!(e("MN2 N0CALL-x"), BeaconError::Unsupported("2".into()));
        assert_eq!(e("MN1 N0CALL s=1"), BeaconError::BadName("N0CALL".into()));
        assert_eq!(
            e("MN1 n0call-x s=1"),
            BeaconError::BadName("n0call-x".into())
        );
        assert_eq!(e("MN1 N0CALL-x s=1"), BeaconError::Missing("c"));
        assert_eq!(
            e("MN1 N0CALL-x c=1-0000000000000000"),
            BeaconError::Missing("s")
        );
        assert_eq!(e("MN1 N0CALL-x s=1 s=2"), BeaconError::Repeated("s".into()));
        assert_eq!(e("MN1 N0CALL-x s=01"), BeaconError::BadField("s=01".into()));
        assert_eq!(
            e("MN1 N0CALL-x s=65536"),
            BeaconError::BadField("s=65536".into())
        );
        assert_eq!(e("MN1 N0CALL-x h=0"), BeaconError::BadField("h=0".into()));
        assert_eq!(e("MN1 N0CALL-x s=1\u{7f}"), BeaconError::NotText);
        assert_eq!(e(&"MN1 ".repeat(40)), BeaconError::TooLong(160));
    }

    #[test]
    fn other_frames_are_not_beacons_and_impostors_are_refused() {
        let src = Address::parse("N0CALL-10").unwrap();
        let other =
            ax25::Frame::ui(src, Address::parse("ID").unwrap(), &[], 0xf0, *b"N0CALL").unwrap();
        assert_eq!(Beacon::from_frame(&other), Ok(None));
        let f = sample().frame(Address::parse("N9XYZ").unwrap());
        let f = ax25::Frame::decode(&f, ax25::Modulo::Eight).unwrap();
        assert!(matches!(
            Beacon::from_frame(&f),
            Err(BeaconError::NotTheSender { .. })
        ));
    }

    #[test]
    fn the_longest_beacon_fits_max_len() {
        let b = Beacon {
            name: format!("N0CALL-{}", "a".repeat(32)),
            records: u32::MAX,
            fingerprint: u64::MAX,
            seq: u16::MAX,
            http_port: Some(u16::MAX),
            key_prefix: Some([0xff; 8]),
            neighbours: vec![[0xff; 4]; MAX_NEIGHBOURS],
        };
        assert_eq!(b.encode().len(), MAX_LEN);
        assert_eq!(Beacon::decode(&b.encode()).unwrap(), b);
    }

    fn beacons() -> impl Strategy<Value = Beacon> {
        (
            "[A-Z]{1,2}[0-9][A-Z]{1,3}",
            "[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?",
            any::<u32>(),
            any::<u64>(),
            any::<u16>(),
            prop::option::of(1u16..),
            prop::option::of(any::<[u8; 8]>()),
            prop::collection::vec(any::<[u8; 4]>(), 0..=MAX_NEIGHBOURS),
        )
            .prop_map(
                |(call, label, records, fingerprint, seq, http_port, key_prefix, neighbours)| {
                    Beacon {
                        name: format!("{call}-{label}"),
                        records,
                        fingerprint,
                        seq,
                        http_port,
                        key_prefix,
                        neighbours,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_beacon(b in beacons()) {
            prop_assert!(b.encode().len() <= MAX_LEN);
            prop_assert_eq!(Beacon::decode(&b.encode()), Ok(b));
        }

        /// Arbitrary bytes never panic; whatever decodes re-encodes to a
        /// form that decodes the same.
        #[test]
        fn arbitrary_info_never_panics(info in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(b) = Beacon::decode(&info) {
                prop_assert_eq!(Beacon::decode(&b.encode()), Ok(b));
            }
        }

        /// Text that looks almost like a beacon.
        #[test]
        fn near_beacons_never_panic(s in "MN1 [A-Z0-9]{1,7}-[a-z0-9-]{0,6}( [a-z]{1,2}=[0-9a-f-]{0,20}){0,14}") {
            if let Ok(b) = Beacon::decode(s.as_bytes()) {
                prop_assert_eq!(Beacon::decode(&b.encode()), Ok(b));
            }
        }
    }
}
