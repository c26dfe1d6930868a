//! AX.25 frames (v2.0 and v2.2) as KISS TNCs and the Linux kernel carry
//! them: without the HDLC flags and without the FCS.
//!
//! Pure functions over bytes, following the AX.25 Link Access Protocol
//! v2.2 (TAPR, 1998), sections 3 (frame structure) and 4 (control field).
//!
//! ```text
//! offset   size     field
//! 0        7        destination address
//! 7        7        source address
//! 14       7 * n    digipeater path, n = 0..=8
//! 14 + 7n  1 or 2   control (2 bytes for I and S frames on a modulo-128 link)
//! ..       1        PID (I and UI frames only)
//! ..       0..      info
//! ```
//!
//! An address is six callsign characters, space padded and shifted left one
//! bit, then the SSID octet:
//!
//! ```text
//! bit   7     6 5   4 3 2 1   0
//!       C/H   R R   S S I D   X
//! ```
//!
//! - C/H: the C bit in the destination and source addresses (command or
//!   response, see [`CommandResponse`]); the H bit ("has been repeated") in a
//!   digipeater address.
//! - RR: reserved, 1 unless agreed otherwise.
//! - X: the address extension bit, set on the last address only.
//!
//! # Exactness
//!
//! For every byte string `b` that [`Frame::decode`] accepts,
//! `Frame::decode(b, m)?.encode() == b`: reserved bits, odd callsign bytes
//! (direwolf passes lowercase and all-zero callsigns through), any PID and
//! info bytes on frame types that should carry none are all kept. The only
//! bits not stored are the extension bits, and those follow from the position
//! of each address. A relay can therefore decode, change an H bit and send
//! a frame on without disturbing anything else. Decoding is strict only where
//! the structure is broken (no address end, no control, unknown control).
//!
//! # Modulo 8 and 128
//!
//! The width of the control field of I and S frames is not in the frame: it
//! is the state of the connection (SABM set up modulo 8, SABME modulo 128).
//! [`Frame::decode`] takes it as [`Modulo`]; UI and the other U frames
//! decode the same either way.
//!
//! # Sizes
//!
//! meshnode builds frames with at most [`MAX_INFO`] bytes of info (the
//! AX.25 default N1 and what every TNC accepts) and decodes frames of up to
//! [`MAX_FRAME`] bytes: direwolf 1.6 truncates anything longer and transmits
//! the truncated frame anyway, and rejects frames shorter than
//! [`MIN_FRAME`] (shared/RF.md, pitfalls 2 and 3).

use std::fmt;
use std::str::FromStr;

/// Bytes of one address: six callsign characters and the SSID octet.
pub const ADDR_LEN: usize = 7;
/// Callsign characters in an address.
pub const CALL_LEN: usize = 6;
/// Most digipeaters in a path (AX.25 v2.2 §3.12.3; v2.0 allowed the same).
pub const MAX_DIGIS: usize = 8;
/// Most addresses in a frame: destination, source and the path.
pub const MAX_ADDRS: usize = 2 + MAX_DIGIS;
/// Shortest frame: two addresses and a one-byte control field. direwolf
/// rejects anything shorter ("Frame length 5 not in allowable range of 15
/// to 2123").
pub const MIN_FRAME: usize = 2 * ADDR_LEN + 1;
/// Longest frame decoded: direwolf's KISS receive cuts frames at 2046 bytes
/// and sends the truncated frame on air, so nothing longer crosses it intact.
pub const MAX_FRAME: usize = 2046;
/// Longest info field in frames meshnode builds: the AX.25 default N1, safe
/// with every TNC and digipeater we know of.
pub const MAX_INFO: usize = 256;

/// The C bit (destination, source) or H bit (digipeater) of the SSID octet.
const CH_BIT: u8 = 0x80;
/// The two reserved bits of the SSID octet.
const RESERVED_SHIFT: u8 = 5;
/// The SSID, bits 1..=4 of the SSID octet.
const SSID_SHIFT: u8 = 1;
/// The address extension bit: set on the last address.
const EXT_BIT: u8 = 0x01;
/// Offset of the SSID octet in an address.
const SSID_OFFSET: usize = CALL_LEN;
/// The P/F bit of a one-byte control field.
const PF_BIT: u8 = 0x10;

// U frame control fields with the P/F bit clear (AX.25 v2.2 §4.3.3).
const U_UI: u8 = 0x03;
const U_SABM: u8 = 0x2f;
const U_SABME: u8 = 0x6f;
const U_UA: u8 = 0x63;
const U_DISC: u8 = 0x43;
const U_DM: u8 = 0x0f;
const U_FRMR: u8 = 0x87;
const U_XID: u8 = 0xaf;
const U_TEST: u8 = 0xe3;

/// Why bytes are not an AX.25 frame, or why a frame cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ax25Error {
    /// Shorter than [`MIN_FRAME`].
    #[error("frame of {0} bytes is shorter than {MIN_FRAME}")]
    TooShort(usize),
    /// Longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes is longer than {MAX_FRAME}")]
    TooLong(usize),
    /// The bytes end inside an address.
    #[error("frame ends inside the address field")]
    TruncatedAddress,
    /// No address among the first [`MAX_ADDRS`] has the extension bit.
    #[error("no address end bit within {MAX_ADDRS} addresses")]
    NoAddressEnd,
    /// The destination address carries the extension bit: no source.
    #[error("address field ends after the destination")]
    NoSource,
    /// Nothing (or only half of a two-byte control field) after the addresses.
    #[error("frame ends before its control field")]
    NoControl,
    /// An I or UI frame ends before its PID.
    #[error("I or UI frame without a PID")]
    NoPid,
    /// A control field that is no AX.25 frame type (an unknown U frame, or a
    /// modulo-128 S frame with reserved bits set).
    #[error("unknown control field 0x{0:02x}")]
    UnknownControl(u8),
    /// More than [`MAX_DIGIS`] digipeaters given.
    #[error("more than {MAX_DIGIS} digipeaters")]
    TooManyDigipeaters,
    /// N(S) or N(R) not below the modulus.
    #[error("sequence number {0} out of range for the modulus")]
    SequenceOutOfRange(u8),
    /// An info field longer than [`MAX_INFO`] given.
    #[error("info field of {0} bytes is longer than {MAX_INFO}")]
    InfoTooLong(usize),
    /// An empty callsign given.
    #[error("empty callsign")]
    EmptyCallsign,
    /// A callsign longer than [`CALL_LEN`] given.
    #[error("callsign longer than {CALL_LEN} characters")]
    CallsignTooLong,
    /// A callsign character other than `A`-`Z` and `0`-`9` given.
    #[error("callsign character {0:?} is not A-Z or 0-9")]
    BadCallsignChar(char),
    /// An SSID that is not a number from 0 to 15.
    #[error("SSID is not a number from 0 to 15")]
    BadSsid,
}

/// One address of the address field: a station or a digipeater.
///
/// Holds the seven bytes as sent, except for the extension bit, which
/// encoding sets from the position. Equality compares all those bits; use
/// [`Address::same_station`] to compare only callsign and SSID.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// Shifted callsign characters and the SSID octet; extension bit clear.
    raw: [u8; ADDR_LEN],
}

impl Address {
    /// A checked address from a callsign of 1 to 6 characters `A`-`Z`,
    /// `0`-`9` and an SSID 0..=15; reserved bits set, C/H bit clear.
    pub fn new(callsign: &str, ssid: u8) -> Result<Address, Ax25Error> {
        if callsign.is_empty() {
            return Err(Ax25Error::EmptyCallsign);
        }
        if let Some(c) = callsign
            .chars()
            .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
        {
            return Err(Ax25Error::BadCallsignChar(c));
        }
        if callsign.len() > CALL_LEN {
            return Err(Ax25Error::CallsignTooLong);
        }
        if ssid > 15 {
            return Err(Ax25Error::BadSsid);
        }
        let mut raw = [b' ' << 1; ADDR_LEN];
        for (r, b) in raw.iter_mut().zip(callsign.bytes()) {
            *r = b << 1;
        }
        raw[SSID_OFFSET] = 0b11 << RESERVED_SHIFT | ssid << SSID_SHIFT;
        Ok(Address { raw })
    }

    /// Parses user input such as `N0CALL` or `N0CALL-7`, strictly: uppercase
    /// letters and digits, SSID 0..=15 without sign.
    pub fn parse(s: &str) -> Result<Address, Ax25Error> {
        let (call, ssid) = match s.split_once('-') {
            None => (s, 0),
            Some((call, ssid)) => {
                if ssid.is_empty() || ssid.len() > 2 || !ssid.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Ax25Error::BadSsid);
                }
                (call, ssid.parse().map_err(|_| Ax25Error::BadSsid)?)
            }
        };
        Address::new(call, ssid)
    }

    /// The address from its seven bytes as sent, unchecked (anything that
    /// arrived on air is kept as it is); the extension bit is dropped.
    pub const fn from_bytes(mut raw: [u8; ADDR_LEN]) -> Address {
        raw[SSID_OFFSET] &= !EXT_BIT;
        Address { raw }
    }

    /// The seven bytes with the extension bit clear.
    pub const fn to_bytes(self) -> [u8; ADDR_LEN] {
        self.raw
    }

    /// The callsign characters (each byte shifted right), trailing spaces
    /// removed. Not checked: lowercase or control characters come through.
    pub fn callsign(&self) -> String {
        let chars: String = self.raw[..CALL_LEN]
            .iter()
            .map(|b| char::from(b >> 1))
            .collect();
        chars.trim_end_matches(' ').to_owned()
    }

    /// The SSID, 0..=15.
    pub const fn ssid(self) -> u8 {
        (self.raw[SSID_OFFSET] >> SSID_SHIFT) & 0x0f
    }

    /// Bit 7 of the SSID octet: the C bit of the destination or source, the
    /// H ("has been repeated") bit of a digipeater.
    pub const fn ch_bit(self) -> bool {
        self.raw[SSID_OFFSET] & CH_BIT != 0
    }

    /// The address with its C/H bit set or cleared.
    pub const fn with_ch_bit(mut self, on: bool) -> Address {
        if on {
            self.raw[SSID_OFFSET] |= CH_BIT;
        } else {
            self.raw[SSID_OFFSET] &= !CH_BIT;
        }
        self
    }

    /// The two reserved bits (0b11 unless a link agreed otherwise).
    pub const fn reserved_bits(self) -> u8 {
        (self.raw[SSID_OFFSET] >> RESERVED_SHIFT) & 0b11
    }

    /// The address with the given reserved bits (the low two bits of `bits`).
    pub const fn with_reserved_bits(mut self, bits: u8) -> Address {
        self.raw[SSID_OFFSET] =
            (self.raw[SSID_OFFSET] & !(0b11 << RESERVED_SHIFT)) | (bits & 0b11) << RESERVED_SHIFT;
        self
    }

    /// Same callsign bytes and SSID, whatever the C/H and reserved bits.
    pub fn same_station(self, other: Address) -> bool {
        self.raw[..CALL_LEN] == other.raw[..CALL_LEN] && self.ssid() == other.ssid()
    }
}

impl FromStr for Address {
    type Err = Ax25Error;

    fn from_str(s: &str) -> Result<Address, Ax25Error> {
        Address::parse(s)
    }
}

/// `CALL` or `CALL-SSID` (SSID 0 is not shown, as in TNC2 monitor format);
/// characters that are not printable ASCII are shown as `\xNN`.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.callsign().chars() {
            if c.is_ascii_graphic() || c == ' ' {
                write!(f, "{c}")?;
            } else {
                write!(f, "\\x{:02x}", c as u32)?;
            }
        }
        match self.ssid() {
            0 => Ok(()),
            ssid => write!(f, "-{ssid}"),
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Address({self} ch={} rr={:02b})",
            u8::from(self.ch_bit()),
            self.reserved_bits()
        )
    }
}

/// The sequence-number modulus of a connection, which decides the width of
/// the control field of I and S frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Modulo {
    /// Modulo 8: one-byte control fields (SABM, AX.25 v2.0 and v2.2).
    #[default]
    Eight,
    /// Modulo 128: two-byte control fields for I and S frames (SABME, v2.2).
    OneTwentyEight,
}

impl Modulo {
    /// The modulus: 8 or 128. Sequence numbers are below it.
    pub const fn modulus(self) -> u8 {
        match self {
            Modulo::Eight => 8,
            Modulo::OneTwentyEight => 128,
        }
    }
}

/// Command or response, from the C bits of destination and source
/// (AX.25 v2.2 §6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandResponse {
    /// v2 command: C bit set in the destination, clear in the source.
    Command,
    /// v2 response: C bit clear in the destination, set in the source.
    Response,
    /// Earlier versions: both C bits equal (`both_set` tells which), no
    /// command/response meaning.
    Legacy {
        /// Both bits set (true) or both clear (false).
        both_set: bool,
    },
}

impl CommandResponse {
    /// From the C bits of (destination, source).
    pub const fn from_bits(dst: bool, src: bool) -> CommandResponse {
        match (dst, src) {
            (true, false) => CommandResponse::Command,
            (false, true) => CommandResponse::Response,
            (both_set, _) => CommandResponse::Legacy { both_set },
        }
    }

    /// The C bits of (destination, source).
    pub const fn bits(self) -> (bool, bool) {
        match self {
            CommandResponse::Command => (true, false),
            CommandResponse::Response => (false, true),
            CommandResponse::Legacy { both_set } => (both_set, both_set),
        }
    }
}

/// The control field, and for I and UI frames the PID that follows it.
///
/// `pf` is the P/F bit: poll in a command, final in a response. `ns` is
/// N(S), `nr` N(R); both are below the [`Modulo`] of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// Information: numbered data on a connection.
    I {
        /// N(S): this frame's send sequence number.
        ns: u8,
        /// N(R): the next frame expected from the peer.
        nr: u8,
        /// Poll.
        pf: bool,
        /// Layer-3 protocol of the info field.
        pid: u8,
    },
    /// Receive Ready: acknowledges up to N(R) - 1.
    Rr {
        /// N(R).
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Receive Not Ready: busy, acknowledges up to N(R) - 1.
    Rnr {
        /// N(R).
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Reject: resend from N(R).
    Rej {
        /// N(R).
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Selective Reject: resend N(R) only.
    Srej {
        /// N(R).
        nr: u8,
        /// Poll/final.
        pf: bool,
    },
    /// Unnumbered Information: a datagram outside any connection.
    Ui {
        /// Poll/final.
        pf: bool,
        /// Layer-3 protocol of the info field (0xF0: none).
        pid: u8,
    },
    /// Set Asynchronous Balanced Mode: connect, modulo 8.
    Sabm {
        /// Poll.
        pf: bool,
    },
    /// SABM Extended: connect, modulo 128.
    Sabme {
        /// Poll.
        pf: bool,
    },
    /// Unnumbered Acknowledge.
    Ua {
        /// Final.
        pf: bool,
    },
    /// Disconnect.
    Disc {
        /// Poll.
        pf: bool,
    },
    /// Disconnected Mode.
    Dm {
        /// Final.
        pf: bool,
    },
    /// Frame Reject (obsolete in v2.2, still decoded).
    Frmr {
        /// Final.
        pf: bool,
    },
    /// Exchange Identification (parameter negotiation, v2.2).
    Xid {
        /// Poll/final.
        pf: bool,
    },
    /// Test: echo the info field.
    Test {
        /// Poll/final.
        pf: bool,
    },
}

impl Control {
    /// The P/F bit.
    pub const fn pf(self) -> bool {
        match self {
            Control::I { pf, .. }
            | Control::Rr { pf, .. }
            | Control::Rnr { pf, .. }
            | Control::Rej { pf, .. }
            | Control::Srej { pf, .. }
            | Control::Ui { pf, .. }
            | Control::Sabm { pf }
            | Control::Sabme { pf }
            | Control::Ua { pf }
            | Control::Disc { pf }
            | Control::Dm { pf }
            | Control::Frmr { pf }
            | Control::Xid { pf }
            | Control::Test { pf } => pf,
        }
    }

    /// The PID of an I or UI frame.
    pub const fn pid(self) -> Option<u8> {
        match self {
            Control::I { pid, .. } | Control::Ui { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// N(R) of an I or S frame.
    pub const fn nr(self) -> Option<u8> {
        match self {
            Control::I { nr, .. }
            | Control::Rr { nr, .. }
            | Control::Rnr { nr, .. }
            | Control::Rej { nr, .. }
            | Control::Srej { nr, .. } => Some(nr),
            _ => None,
        }
    }

    /// N(S) of an I frame.
    pub const fn ns(self) -> Option<u8> {
        match self {
            Control::I { ns, .. } => Some(ns),
            _ => None,
        }
    }

    /// The S frame code (bits 2..=3) and N(R)/P/F, for S frames.
    const fn supervisory(self) -> Option<(u8, u8, bool)> {
        match self {
            Control::Rr { nr, pf } => Some((0, nr, pf)),
            Control::Rnr { nr, pf } => Some((1, nr, pf)),
            Control::Rej { nr, pf } => Some((2, nr, pf)),
            Control::Srej { nr, pf } => Some((3, nr, pf)),
            _ => None,
        }
    }

    /// Sequence numbers below the modulus.
    fn check(self, modulo: Modulo) -> Result<(), Ax25Error> {
        match [self.ns(), self.nr()]
            .into_iter()
            .flatten()
            .find(|&n| n >= modulo.modulus())
        {
            Some(n) => Err(Ax25Error::SequenceOutOfRange(n)),
            None => Ok(()),
        }
    }

    /// Bytes of control field and PID.
    fn encoded_len(self, modulo: Modulo) -> usize {
        let wide = modulo == Modulo::OneTwentyEight && self.nr().is_some();
        1 + usize::from(wide) + usize::from(self.pid().is_some())
    }

    /// Decodes the control field and PID at the start of `bytes`; returns
    /// them and the bytes used.
    fn decode(bytes: &[u8], modulo: Modulo) -> Result<(Control, usize), Ax25Error> {
        let &c0 = bytes.first().ok_or(Ax25Error::NoControl)?;
        let pid_at = |at: usize| bytes.get(at).copied().ok_or(Ax25Error::NoPid);
        if c0 & 0b11 == 0b11 {
            // U frame: one byte whatever the modulus
            let pf = c0 & PF_BIT != 0;
            let control = match c0 & !PF_BIT {
                U_UI => {
                    return Ok((
                        Control::Ui {
                            pf,
                            pid: pid_at(1)?,
                        },
                        2,
                    ));
                }
                U_SABM => Control::Sabm { pf },
                U_SABME => Control::Sabme { pf },
                U_UA => Control::Ua { pf },
                U_DISC => Control::Disc { pf },
                U_DM => Control::Dm { pf },
                U_FRMR => Control::Frmr { pf },
                U_XID => Control::Xid { pf },
                U_TEST => Control::Test { pf },
                _ => return Err(Ax25Error::UnknownControl(c0)),
            };
            return Ok((control, 1));
        }
        // I or S frame: N(R) and P/F in the top bits of a one-byte field, or
        // in the second byte of a two-byte field
        let (nr, pf, len) = match modulo {
            Modulo::Eight => (c0 >> 5, c0 & PF_BIT != 0, 1),
            Modulo::OneTwentyEight => {
                let &c1 = bytes.get(1).ok_or(Ax25Error::NoControl)?;
                (c1 >> 1, c1 & 1 != 0, 2)
            }
        };
        if c0 & 1 == 0 {
            let ns = match modulo {
                Modulo::Eight => (c0 >> 1) & 0b111,
                Modulo::OneTwentyEight => c0 >> 1,
            };
            let pid = pid_at(len)?;
            return Ok((Control::I { ns, nr, pf, pid }, len + 1));
        }
        if modulo == Modulo::OneTwentyEight && c0 & 0xf0 != 0 {
            // reserved bits of a modulo-128 S frame: not kept, so refused
            return Err(Ax25Error::UnknownControl(c0));
        }
        let control = match (c0 >> 2) & 0b11 {
            0 => Control::Rr { nr, pf },
            1 => Control::Rnr { nr, pf },
            2 => Control::Rej { nr, pf },
            _ => Control::Srej { nr, pf },
        };
        Ok((control, len))
    }

    /// Appends the control field and PID.
    fn encode(self, modulo: Modulo, out: &mut Vec<u8>) {
        let wide = modulo == Modulo::OneTwentyEight;
        let pf_bit = if self.pf() { PF_BIT } else { 0 };
        let pf_low = u8::from(self.pf());
        if let Some((code, nr, pf)) = self.supervisory() {
            if wide {
                out.extend([code << 2 | 0b01, nr << 1 | u8::from(pf)]);
            } else {
                out.push(nr << 5 | pf_bit | code << 2 | 0b01);
            }
            return;
        }
        match self {
            Control::I { ns, nr, pid, .. } if wide => out.extend([ns << 1, nr << 1 | pf_low, pid]),
            Control::I { ns, nr, pid, .. } => out.extend([nr << 5 | pf_bit | ns << 1, pid]),
            Control::Ui { pid, .. } => out.extend([U_UI | pf_bit, pid]),
            Control::Sabm { .. } => out.push(U_SABM | pf_bit),
            Control::Sabme { .. } => out.push(U_SABME | pf_bit),
            Control::Ua { .. } => out.push(U_UA | pf_bit),
            Control::Disc { .. } => out.push(U_DISC | pf_bit),
            Control::Dm { .. } => out.push(U_DM | pf_bit),
            Control::Frmr { .. } => out.push(U_FRMR | pf_bit),
            Control::Xid { .. } => out.push(U_XID | pf_bit),
            Control::Test { .. } => out.push(U_TEST | pf_bit),
            Control::Rr { .. }
            | Control::Rnr { .. }
            | Control::Rej { .. }
            | Control::Srej { .. } => {
                unreachable!("S frames are encoded above")
            }
        }
    }
}

/// As in a monitor line: `I ns=2 nr=5 P pid=f0`, `RR nr=3 F`, `UI pid=f0`.
impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Control::I { .. } => "I",
            Control::Rr { .. } => "RR",
            Control::Rnr { .. } => "RNR",
            Control::Rej { .. } => "REJ",
            Control::Srej { .. } => "SREJ",
            Control::Ui { .. } => "UI",
            Control::Sabm { .. } => "SABM",
            Control::Sabme { .. } => "SABME",
            Control::Ua { .. } => "UA",
            Control::Disc { .. } => "DISC",
            Control::Dm { .. } => "DM",
            Control::Frmr { .. } => "FRMR",
            Control::Xid { .. } => "XID",
            Control::Test { .. } => "TEST",
        };
        f.write_str(name)?;
        if let Some(ns) = self.ns() {
            write!(f, " ns={ns}")?;
        }
        if let Some(nr) = self.nr() {
            write!(f, " nr={nr}")?;
        }
        if self.pf() {
            f.write_str(" P/F")?;
        }
        if let Some(pid) = self.pid() {
            write!(f, " pid={pid:02x}")?;
        }
        Ok(())
    }
}

/// An AX.25 frame without FCS: addresses, control, PID and info.
///
/// Built with [`Frame::new`] or [`Frame::ui`] (checked) or by
/// [`Frame::decode`] (kept exactly as received; see the module docs).
/// The info field is kept whatever the frame type so that re-encoding is
/// exact; AX.25 gives one only to I, UI, FRMR, XID and TEST frames, and a
/// connection core should ignore it on the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    dst: Address,
    src: Address,
    /// At most [`MAX_DIGIS`].
    path: Vec<Address>,
    modulo: Modulo,
    /// Sequence numbers below `modulo`.
    control: Control,
    info: Vec<u8>,
}

impl Frame {
    /// A command frame from `src` to `dst` via `path` (v2 C bits: see
    /// [`Frame::with_command_response`] for responses). The C bits of `src`
    /// and `dst` are overwritten; the H bits of `path` are kept as given.
    pub fn new(
        src: Address,
        dst: Address,
        path: &[Address],
        control: Control,
        modulo: Modulo,
        info: impl Into<Vec<u8>>,
    ) -> Result<Frame, Ax25Error> {
        let info = info.into();
        if path.len() > MAX_DIGIS {
            return Err(Ax25Error::TooManyDigipeaters);
        }
        if info.len() > MAX_INFO {
            return Err(Ax25Error::InfoTooLong(info.len()));
        }
        control.check(modulo)?;
        let frame = Frame {
            dst,
            src,
            path: path.to_vec(),
            modulo,
            control,
            info,
        };
        Ok(frame.with_command_response(CommandResponse::Command))
    }

    /// A UI command frame (P clear), the datagram of packet radio.
    pub fn ui(
        src: Address,
        dst: Address,
        path: &[Address],
        pid: u8,
        info: impl Into<Vec<u8>>,
    ) -> Result<Frame, Ax25Error> {
        let control = Control::Ui { pf: false, pid };
        Frame::new(src, dst, path, control, Modulo::Eight, info)
    }

    /// The frame with the C bits of destination and source set for `cr`.
    pub fn with_command_response(mut self, cr: CommandResponse) -> Frame {
        let (dst, src) = cr.bits();
        self.dst = self.dst.with_ch_bit(dst);
        self.src = self.src.with_ch_bit(src);
        self
    }

    /// Decodes a frame received on a link with the given modulus.
    pub fn decode(bytes: &[u8], modulo: Modulo) -> Result<Frame, Ax25Error> {
        if bytes.len() < MIN_FRAME {
            return Err(Ax25Error::TooShort(bytes.len()));
        }
        if bytes.len() > MAX_FRAME {
            return Err(Ax25Error::TooLong(bytes.len()));
        }
        let mut addrs = Vec::with_capacity(2);
        let mut rest = bytes;
        loop {
            let (addr, tail) = rest
                .split_first_chunk::<ADDR_LEN>()
                .ok_or(Ax25Error::TruncatedAddress)?;
            addrs.push(Address::from_bytes(*addr));
            rest = tail;
            if addr[SSID_OFFSET] & EXT_BIT != 0 {
                break;
            }
            if addrs.len() == MAX_ADDRS {
                return Err(Ax25Error::NoAddressEnd);
            }
        }
        if addrs.len() < 2 {
            return Err(Ax25Error::NoSource);
        }
        let (control, used) = Control::decode(rest, modulo)?;
        let path = addrs.split_off(2);
        Ok(Frame {
            dst: addrs[0],
            src: addrs[1],
            path,
            modulo,
            control,
            info: rest[used..].to_vec(),
        })
    }

    /// The frame as bytes (no FCS).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let last = self.path.len() + 1;
        let addrs = [self.dst, self.src]
            .into_iter()
            .chain(self.path.iter().copied());
        for (i, addr) in addrs.enumerate() {
            let mut raw = addr.to_bytes();
            if i == last {
                raw[SSID_OFFSET] |= EXT_BIT;
            }
            out.extend_from_slice(&raw);
        }
        self.control.encode(self.modulo, out);
        out.extend_from_slice(&self.info);
    }

    /// Bytes [`Frame::encode`] gives.
    pub fn encoded_len(&self) -> usize {
        ADDR_LEN * (2 + self.path.len()) + self.control.encoded_len(self.modulo) + self.info.len()
    }

    /// The destination.
    pub fn dst(&self) -> Address {
        self.dst
    }

    /// The source.
    pub fn src(&self) -> Address {
        self.src
    }

    /// The digipeater path, in order.
    pub fn path(&self) -> &[Address] {
        &self.path
    }

    /// The path for a digipeater to mark itself repeated (H bit) or to
    /// substitute its callsign; its length cannot change.
    pub fn path_mut(&mut self) -> &mut [Address] {
        &mut self.path
    }

    /// Command or response, from the C bits.
    pub fn command_response(&self) -> CommandResponse {
        CommandResponse::from_bits(self.dst.ch_bit(), self.src.ch_bit())
    }

    /// The control field (and PID).
    pub fn control(&self) -> Control {
        self.control
    }

    /// The modulus the control field was decoded or built with.
    pub fn modulo(&self) -> Modulo {
        self.modulo
    }

    /// The PID of an I or UI frame.
    pub fn pid(&self) -> Option<u8> {
        self.control.pid()
    }

    /// The info field (empty if none).
    pub fn info(&self) -> &[u8] {
        &self.info
    }

    /// Takes the info field.
    pub fn into_info(self) -> Vec<u8> {
        self.info
    }
}

/// One monitor line: `N0HOST>N0VM,WIDE1-1*: UI pid=f0 C len=5`. A `*`
/// marks each digipeater whose H bit is set; `C`, `R` or `v1` tells the
/// command/response bits.
impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}>{}", self.src, self.dst)?;
        for digi in &self.path {
            write!(f, ",{digi}{}", if digi.ch_bit() { "*" } else { "" })?;
        }
        let cr = match self.command_response() {
            CommandResponse::Command => "C",
            CommandResponse::Response => "R",
            CommandResponse::Legacy { .. } => "v1",
        };
        write!(f, ": {} {cr} len={}", self.control, self.info.len())
    }
}

/// CRC-16/X.25 (CRC-16/IBM-SDLC), the AX.25 frame check sequence: reflected
/// polynomial 0x1021, initial 0xFFFF, final XOR 0xFFFF. It is sent low byte
/// first after the info field. TNCs add and check it, so frames over KISS
/// never carry it; this is for tests and for a modem written in software.
pub fn fcs16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    /// Both directions of a golden frame: bytes → expected, expected → bytes.
    fn golden(bytes: &[u8], modulo: Modulo, expected: &Frame) {
        assert_eq!(&Frame::decode(bytes, modulo).unwrap(), expected);
        assert_eq!(expected.encode(), bytes);
        assert_eq!(expected.encoded_len(), bytes.len());
    }

    #[test]
    fn kernel_ui_frame_from_the_vm() {
        // shared/RF.md part 2: what the guest's PF_PACKET sniff showed for
        // the host's N0HOST>N0VM UI frame (after the KISS type byte 0x00)
        let bytes = [
            0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, // "N0VM  " << 1
            0xe0, // C=1 (command), RR=11, SSID 0, not last
            0x9c, 0x60, 0x90, 0x9e, 0xa6, 0xa8, // "N0HOST" << 1
            0x61, // C=0, RR=11, SSID 0, last
            0x03, // UI, P=0
            0xf0, // PID: no layer 3
            b'h', b'i',
        ];
        let f = Frame::decode(&bytes, Modulo::Eight).unwrap();
        assert_eq!(f.dst().callsign(), "N0VM");
        assert_eq!(f.src().to_string(), "N0HOST");
        assert_eq!(f.dst().ssid(), 0);
        assert_eq!(f.dst().reserved_bits(), 0b11);
        assert!(f.path().is_empty());
        assert_eq!(f.command_response(), CommandResponse::Command);
        assert_eq!(
            f.control(),
            Control::Ui {
                pf: false,
                pid: 0xf0
            }
        );
        assert_eq!(f.info(), b"hi");
        let built = Frame::ui(addr("N0HOST"), addr("N0VM"), &[], 0xf0, b"hi").unwrap();
        golden(&bytes, Modulo::Eight, &built);
        assert_eq!(built.to_string(), "N0HOST>N0VM: UI pid=f0 C len=2");
    }

    #[test]
    fn two_digipeaters_one_repeated() {
        // aprx relayed WIDE1-1 as N0DIGI-1* (shared/RF.md part 3)
        let bytes = [
            0x82, 0xa0, 0xb4, 0x9a, 0xa6, 0x90, // "APZMSH"
            0xe0, // C=1, SSID 0
            0x9c, 0x60, 0xa6, 0x92, 0x9a, 0x40, // "N0SIM "
            0x60, // C=0, SSID 0
            0x9c, 0x60, 0x88, 0x92, 0x8e, 0x92, // "N0DIGI"
            0xe2, // H=1 (repeated), SSID 1, not last
            0xae, 0x92, 0x88, 0x8a, 0x64, 0x40, // "WIDE2 "
            0x63, // H=0, SSID 1, last
            0x03, 0xf0, b'x',
        ];
        let digi = addr("N0DIGI-1").with_ch_bit(true);
        let wide = addr("WIDE2-1");
        let built = Frame::ui(addr("N0SIM"), addr("APZMSH"), &[digi, wide], 0xf0, *b"x").unwrap();
        golden(&bytes, Modulo::Eight, &built);
        let f = Frame::decode(&bytes, Modulo::Eight).unwrap();
        assert!(f.path()[0].ch_bit() && !f.path()[1].ch_bit());
        assert_eq!(
            f.to_string(),
            "N0SIM>APZMSH,N0DIGI-1*,WIDE2-1: UI pid=f0 C len=1"
        );

        // the next digipeater marks itself: only its SSID octet changes
        let mut next = f.clone();
        next.path_mut()[1] = wide.with_ch_bit(true);
        let mut expect = bytes.to_vec();
        expect[27] = 0xe3; // the H bit of the last address, as aprx sent it
        assert_eq!(next.encode(), expect);
    }

    #[test]
    fn connected_mode_frames_modulo_8() {
        let (a, b) = (addr("N0HOST-7"), addr("N0VM-5"));
        let header = |dst_ssid: u8, src_ssid: u8| {
            let mut h = vec![0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, dst_ssid];
            h.extend([0x9c, 0x60, 0x90, 0x9e, 0xa6, 0xa8, src_ssid]);
            h
        };
        // SABM command, P=1: dst C=1 (0xe0 | 5<<1), src C=0 and last (0x60 | 7<<1 | 1)
        let sabm = Frame::new(a, b, &[], Control::Sabm { pf: true }, Modulo::Eight, []).unwrap();
        golden(
            &[header(0xea, 0x6f), vec![0x3f]].concat(),
            Modulo::Eight,
            &sabm,
        );

        // UA response, F=1, from N0VM-5 back: dst C=0, src C=1
        let ua = Frame::new(b, a, &[], Control::Ua { pf: true }, Modulo::Eight, [])
            .unwrap()
            .with_command_response(CommandResponse::Response);
        let mut ua_bytes = vec![0x9c, 0x60, 0x90, 0x9e, 0xa6, 0xa8, 0x6e]; // N0HOST-7, C=0
        ua_bytes.extend([0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, 0xeb]); // N0VM-5, C=1, last
        ua_bytes.push(0x73); // UA | F
        golden(&ua_bytes, Modulo::Eight, &ua);
        assert_eq!(ua.command_response(), CommandResponse::Response);

        // I frame N(S)=2 N(R)=5 P=1, PID F0: 101 1 010 0
        let i = Control::I {
            ns: 2,
            nr: 5,
            pf: true,
            pid: 0xf0,
        };
        let f = Frame::new(a, b, &[], i, Modulo::Eight, *b"data").unwrap();
        golden(
            &[header(0xea, 0x6f), vec![0xb4, 0xf0], b"data".to_vec()].concat(),
            Modulo::Eight,
            &f,
        );
        assert_eq!(f.control().to_string(), "I ns=2 nr=5 P/F pid=f0");

        // RR N(R)=5 F=1 response: 101 1 00 01
        let rr = Frame::new(
            a,
            b,
            &[],
            Control::Rr { nr: 5, pf: true },
            Modulo::Eight,
            [],
        )
        .unwrap()
        .with_command_response(CommandResponse::Response);
        golden(
            &[header(0x6a, 0xef), vec![0xb1]].concat(),
            Modulo::Eight,
            &rr,
        );

        // the other S and U frames, P/F clear
        for (control, byte) in [
            (Control::Rnr { nr: 1, pf: false }, 0x25),
            (Control::Rej { nr: 7, pf: false }, 0xe9),
            (Control::Srej { nr: 0, pf: false }, 0x0d),
            (Control::Disc { pf: false }, 0x43),
            (Control::Dm { pf: false }, 0x0f),
            (Control::Frmr { pf: false }, 0x87),
            (Control::Xid { pf: false }, 0xaf),
            (Control::Test { pf: false }, 0xe3),
            (Control::Sabme { pf: false }, 0x6f),
        ] {
            let f = Frame::new(a, b, &[], control, Modulo::Eight, []).unwrap();
            golden(
                &[header(0xea, 0x6f), vec![byte]].concat(),
                Modulo::Eight,
                &f,
            );
        }
    }

    #[test]
    fn modulo_128_control_fields() {
        let (a, b) = (addr("N0HOST-7"), addr("N0VM-5"));
        let mut head = vec![0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, 0xea];
        head.extend([0x9c, 0x60, 0x90, 0x9e, 0xa6, 0xa8, 0x6f]);
        let m = Modulo::OneTwentyEight;

        // I N(S)=100 N(R)=127 P=1: [N(S) << 1] [N(R) << 1 | P] PID
        let i = Control::I {
            ns: 100,
            nr: 127,
            pf: true,
            pid: 0xcc,
        };
        let f = Frame::new(a, b, &[], i, m, *b"ip").unwrap();
        let bytes = [head.clone(), vec![0xc8, 0xff, 0xcc], b"ip".to_vec()].concat();
        golden(&bytes, m, &f);

        // SREJ N(R)=64 F=0: [0000 11 01] [N(R) << 1]
        let s = Frame::new(a, b, &[], Control::Srej { nr: 64, pf: false }, m, []).unwrap();
        golden(&[head.clone(), vec![0x0d, 0x80]].concat(), m, &s);

        // U frames are one byte in either mode
        let sabme = Frame::new(a, b, &[], Control::Sabme { pf: true }, m, []).unwrap();
        golden(&[head.clone(), vec![0x7f]].concat(), m, &sabme);

        // the same bytes read as modulo 8: another frame, but still exact
        let other = Frame::decode(&bytes, Modulo::Eight).unwrap();
        assert_eq!(
            other.control(),
            Control::I {
                ns: 4,
                nr: 6,
                pf: false,
                pid: 0xff
            }
        );
        assert_eq!(other.encode(), bytes);

        // N(S) 100 does not fit modulo 8
        assert_eq!(
            Frame::new(a, b, &[], i, Modulo::Eight, []),
            Err(Ax25Error::SequenceOutOfRange(100))
        );
        // reserved bits of a modulo-128 S frame are refused (not kept)
        let bad = [head.clone(), vec![0x11, 0x80]].concat();
        assert_eq!(Frame::decode(&bad, m), Err(Ax25Error::UnknownControl(0x11)));
        // half a two-byte control field
        assert_eq!(
            Frame::decode(&[head, vec![0x01]].concat(), m),
            Err(Ax25Error::NoControl)
        );
    }

    #[test]
    fn odd_bytes_are_kept_and_shown() {
        // lowercase callsign, reserved bits 00, a control char and PID 0xCC:
        // direwolf passes all of these through (shared/RF.md pitfall 3)
        let mut bytes: Vec<u8> = b"n0call".iter().map(|b| b << 1).collect();
        bytes.push(0x80 | 2 << 1); // C=1, RR=00, SSID 2
        bytes.extend([0x00; 6]); // all-zero callsign
        bytes.push(0x01); // C=0, RR=00, SSID 0, last
        bytes.extend([0x03, 0xcc, 0xc0, 0xdb]);
        let f = Frame::decode(&bytes, Modulo::Eight).unwrap();
        assert_eq!(f.dst().to_string(), "n0call-2");
        assert_eq!(f.dst().reserved_bits(), 0);
        assert_eq!(f.src().to_string(), r"\x00\x00\x00\x00\x00\x00");
        assert_eq!(f.pid(), Some(0xcc));
        assert_eq!(f.encode(), bytes);

        // a UA with info bytes (no info field in the spec): kept as well
        let mut ua = bytes[..14].to_vec();
        ua.extend([0x63, 1, 2, 3]);
        let f = Frame::decode(&ua, Modulo::Eight).unwrap();
        assert_eq!(
            (f.control(), f.info()),
            (Control::Ua { pf: false }, &[1, 2, 3][..])
        );
        assert_eq!(f.encode(), ua);
    }

    #[test]
    fn each_broken_frame_has_its_error() {
        let a = addr("N0CALL").to_bytes();
        let last = |mut x: [u8; 7]| {
            x[6] |= 1;
            x
        };
        let frame = |addrs: &[[u8; 7]], tail: &[u8]| [addrs.concat(), tail.to_vec()].concat();

        assert_eq!(
            Frame::decode(&[0; 14], Modulo::Eight),
            Err(Ax25Error::TooShort(14))
        );
        assert_eq!(
            Frame::decode(&vec![0; MAX_FRAME + 1], Modulo::Eight),
            Err(Ax25Error::TooLong(MAX_FRAME + 1))
        );
        // 21 bytes with no end bit: runs out inside the third address
        assert_eq!(
            Frame::decode(&frame(&[a, a], &[0; 7]), Modulo::Eight),
            Err(Ax25Error::TruncatedAddress)
        );
        assert_eq!(
            Frame::decode(&frame(&[a; 10], &[0x03, 0xf0]), Modulo::Eight),
            Err(Ax25Error::NoAddressEnd)
        );
        // ten addresses, the tenth the last: fine
        let ten = frame(&[&[a; 9][..], &[last(a)]].concat(), &[0x03, 0xf0]);
        assert_eq!(
            Frame::decode(&ten, Modulo::Eight).unwrap().path().len(),
            MAX_DIGIS
        );
        assert_eq!(
            Frame::decode(&frame(&[last(a), a], &[0x03]), Modulo::Eight),
            Err(Ax25Error::NoSource)
        );
        assert_eq!(
            Frame::decode(&frame(&[a, a, last(a)], &[]), Modulo::Eight),
            Err(Ax25Error::NoControl)
        );
        assert_eq!(
            Frame::decode(&frame(&[a, last(a)], &[0x03]), Modulo::Eight),
            Err(Ax25Error::NoPid)
        );
        assert_eq!(
            Frame::decode(&frame(&[a, last(a)], &[0x00]), Modulo::Eight),
            Err(Ax25Error::NoPid)
        );
        for unknown in [0x07, 0x0b, 0x27, 0xff] {
            assert_eq!(
                Frame::decode(&frame(&[a, last(a)], &[unknown]), Modulo::Eight),
                Err(Ax25Error::UnknownControl(unknown))
            );
        }

        let n = addr("N0CALL");
        assert_eq!(
            Frame::ui(n, n, &[n; 9], 0xf0, []),
            Err(Ax25Error::TooManyDigipeaters)
        );
        assert_eq!(
            Frame::ui(n, n, &[], 0xf0, vec![0; MAX_INFO + 1]),
            Err(Ax25Error::InfoTooLong(MAX_INFO + 1))
        );
        assert!(Frame::ui(n, n, &[n; 8], 0xf0, vec![0; MAX_INFO]).is_ok());
    }

    #[test]
    fn address_parse_is_strict() {
        let a = addr("N0CALL-7");
        assert_eq!((a.callsign().as_str(), a.ssid()), ("N0CALL", 7));
        assert_eq!(a.to_string(), "N0CALL-7");
        assert_eq!(addr("N0CALL-0").to_string(), "N0CALL");
        assert_eq!(addr("K1-15").ssid(), 15);
        assert_eq!(a, "N0CALL-7".parse().unwrap());
        assert_eq!(
            addr("N0VM").to_bytes(),
            [0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, 0x60]
        );
        for (input, err) in [
            ("", Ax25Error::EmptyCallsign),
            ("-1", Ax25Error::EmptyCallsign),
            ("N0CALLX", Ax25Error::CallsignTooLong),
            ("n0call", Ax25Error::BadCallsignChar('n')),
            ("N0 CAL", Ax25Error::BadCallsignChar(' ')),
            ("N0CÄL", Ax25Error::BadCallsignChar('Ä')),
            ("N0CALL-16", Ax25Error::BadSsid),
            ("N0CALL-", Ax25Error::BadSsid),
            ("N0CALL-+1", Ax25Error::BadSsid),
            ("N0CALL-1a", Ax25Error::BadSsid),
            ("N0CALL-007", Ax25Error::BadSsid),
            ("N0-CALL-1", Ax25Error::BadSsid),
        ] {
            assert_eq!(Address::parse(input), Err(err), "{input:?}");
        }
        // the station, not the bits
        assert!(a.same_station(a.with_ch_bit(true).with_reserved_bits(0)));
        assert!(!a.same_station(addr("N0CALL-8")));
        assert_eq!(
            format!("{:?}", a.with_ch_bit(true)),
            "Address(N0CALL-7 ch=1 rr=11)"
        );
    }

    #[test]
    fn fcs16_is_crc16_x25() {
        // the catalogue check value of CRC-16/IBM-SDLC (CRC-16/X.25)
        assert_eq!(fcs16(b"123456789"), 0x906e);
        // a frame with its FCS appended low byte first leaves the good residue
        let frame = Frame::ui(addr("N0HOST"), addr("N0VM"), &[], 0xf0, *b"hi")
            .unwrap()
            .encode();
        let fcs = fcs16(&frame);
        let with_fcs = [frame, fcs.to_le_bytes().to_vec()].concat();
        assert_eq!(!fcs16(&with_fcs), 0xf0b8);
    }

    fn any_address() -> impl Strategy<Value = Address> {
        any::<[u8; ADDR_LEN]>().prop_map(Address::from_bytes)
    }

    fn any_control(modulo: Modulo) -> impl Strategy<Value = Control> {
        let n = 0..modulo.modulus();
        prop_oneof![
            (n.clone(), n.clone(), any::<bool>(), any::<u8>())
                .prop_map(|(ns, nr, pf, pid)| Control::I { ns, nr, pf, pid }),
            (n.clone(), any::<bool>()).prop_map(|(nr, pf)| Control::Rr { nr, pf }),
            (n.clone(), any::<bool>()).prop_map(|(nr, pf)| Control::Rnr { nr, pf }),
            (n.clone(), any::<bool>()).prop_map(|(nr, pf)| Control::Rej { nr, pf }),
            (n, any::<bool>()).prop_map(|(nr, pf)| Control::Srej { nr, pf }),
            (any::<bool>(), any::<u8>()).prop_map(|(pf, pid)| Control::Ui { pf, pid }),
            any::<bool>().prop_map(|pf| Control::Sabm { pf }),
            any::<bool>().prop_map(|pf| Control::Sabme { pf }),
            any::<bool>().prop_map(|pf| Control::Ua { pf }),
            any::<bool>().prop_map(|pf| Control::Disc { pf }),
            any::<bool>().prop_map(|pf| Control::Dm { pf }),
            any::<bool>().prop_map(|pf| Control::Frmr { pf }),
            any::<bool>().prop_map(|pf| Control::Xid { pf }),
            any::<bool>().prop_map(|pf| Control::Test { pf }),
        ]
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![Just(Modulo::Eight), Just(Modulo::OneTwentyEight)]
            .prop_flat_map(|modulo| {
                (
                    any_address(),
                    any_address(),
                    proptest::collection::vec(any_address(), 0..=MAX_DIGIS),
                    any_control(modulo),
                    Just(modulo),
                    proptest::collection::vec(any::<u8>(), 0..=MAX_INFO),
                    any::<(bool, bool)>(),
                )
            })
            .prop_map(|(src, dst, path, control, modulo, info, (c_dst, c_src))| {
                Frame::new(src, dst, &path, control, modulo, info)
                    .unwrap()
                    .with_command_response(CommandResponse::from_bits(c_dst, c_src))
            })
    }

    /// Bytes shaped like a frame: 1..=11 addresses with random end bits (most
    /// of them well placed), then random control, PID and info bytes.
    fn framelike_bytes() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(any::<[u8; ADDR_LEN]>(), 1..=MAX_ADDRS + 1),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(mut addrs, fix_ends, tail)| {
                if fix_ends {
                    let n = addrs.len();
                    for (i, a) in addrs.iter_mut().enumerate() {
                        a[SSID_OFFSET] = (a[SSID_OFFSET] & !EXT_BIT) | u8::from(i + 1 == n);
                    }
                }
                [addrs.concat(), tail].concat()
            })
    }

    fn modulo() -> impl Strategy<Value = Modulo> {
        prop_oneof![Just(Modulo::Eight), Just(Modulo::OneTwentyEight)]
    }

    proptest! {
        /// typed → bytes → typed gives the frame back.
        #[test]
        fn built_frames_roundtrip(f in any_frame()) {
            let bytes = f.encode();
            prop_assert_eq!(bytes.len(), f.encoded_len());
            prop_assert_eq!(Frame::decode(&bytes, f.modulo()), Ok(f));
        }

        /// bytes → typed → bytes is exact for whatever decodes; nothing panics.
        #[test]
        fn decoded_frames_reencode_exactly(bytes in framelike_bytes(), m in modulo()) {
            if let Ok(f) = Frame::decode(&bytes, m) {
                prop_assert_eq!(f.encode(), bytes);
            }
        }

        /// The same for bytes with no shape at all.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), m in modulo()) {
            if let Ok(f) = Frame::decode(&bytes, m) {
                prop_assert_eq!(f.encode(), bytes);
            }
        }

        /// Display of a checked address parses back to it.
        #[test]
        fn address_display_parses_back(call in "[A-Z0-9]{1,6}", ssid in 0u8..16) {
            let a = Address::new(&call, ssid).unwrap();
            prop_assert_eq!(Address::parse(&a.to_string()), Ok(a));
        }
    }
}
