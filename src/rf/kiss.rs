//! KISS: frames between a host and a TNC over a serial line or TCP.
//!
//! Pure functions over bytes, following M. Chepponis and P. Karn, "The KISS
//! TNC: A simple Host-to-TNC communications protocol" (1987).
//!
//! ```text
//! FEND  type  data ...  FEND          type = port << 4 | command
//! ```
//!
//! FEND (0xC0) delimits frames. Inside a frame FEND is sent as FESC TFEND
//! (0xDB 0xDC) and FESC as FESC TFESC (0xDB 0xDD); the type byte is escaped
//! too (SMACK port 4 data is 0xC0). Data frames (command 0) carry one AX.25
//! frame without FCS; commands 1..=6 set TNC parameters and type 0xFF leaves
//! KISS mode. Frames are sent with a leading FEND as well, as Linux `mkiss`
//! and direwolf do: it ends any noise the TNC has collected, so a good frame
//! never merges with garbage.
//!
//! [`Decoder`] reads a byte stream in any chunks. It drops bytes before the
//! first FEND, ignores empty frames (back-to-back FENDs), and reports a bad
//! escape or an oversized frame as an [`Event::Error`], then discards bytes up
//! to the next FEND. One bad frame never costs the next one.
//!
//! # SMACK
//!
//! A Linux `mkiss` in its default CRC mode ("auto") starts with SMACK frames
//! (shared/RF.md, kernel quirk 2): the type byte has bit 7 set (0x80 for port
//! 0, which plain KISS reads as "port 8") and a CRC follows the data. What we
//! verified in `drivers/net/hamradio/mkiss.c` and `lib/crc16.c`:
//!
//! - Sending, SMACK mode: `*p |= 0x80; crc = swab16(crc16(0, p, len))`, then
//!   `kiss_esc_crc` writes `crc >> 8` and `crc & 0xff`: the CRC covers the
//!   type byte (with 0x80) and the data, is sent low byte first, and is
//!   escaped like the data. Only data frames get a CRC (`(*p & 0x0f) != 0`
//!   goes out plain: "Protocol spec says: never append CRC").
//! - `crc16` is the kernel's CRC-16 with polynomial 0x8005, bit-reversed
//!   (table entry 1 is 0xC0C1), initial value 0 and no final XOR: the
//!   catalogue's CRC-16/ARC (check value 0xBB3D). See [`smack_crc`].
//! - Receiving: a type byte above 0x0F with bit 7 set is checked with
//!   `crc16(0, frame, len) == 0` over type, data and CRC (and needs at least
//!   3 bytes), then the CRC is cut and bit 7 cleared. A bad CRC drops the
//!   frame. In auto mode one good SMACK frame switches mkiss to SMACK.
//! - Auto mode sends its first data frame as SMACK, its second with a
//!   FlexNet CRC (type byte 0x20: plain KISS reads it as port 2 data with two
//!   extra bytes), and plain KISS after that, unless the TNC answered in one
//!   of those modes. FlexNet frames are not decoded here; they arrive as
//!   port-2 [`Event::Frame`]s, which a port-0 driver drops.
//!
//! Checked against the real thing: a Debian 12 kernel (6.1) in QEMU with
//! `kissattach` and no `kissparms -c 1` sent `C0 80 <frame> B2 34 C0`,
//! `C0 20 <frame> 18 D5 C0` and then `C0 00 <frame> C0`, and [`smack_crc`]
//! over `80 <frame>` gives 0x34B2 (test `mkiss_auto_mode_start_captured`).
//!
//! [`Decoder`] therefore treats a type byte with `type & 0x8F == 0x80` as
//! SMACK data for port `(type >> 4) & 7`: a good CRC gives an
//! [`Event::Smack`] (CRC removed), a bad one an error. A driver can answer a
//! SMACK frame in SMACK ([`SmackFrame::encode`]) or tell the operator to run
//! `kissparms -p PORT -c 1`. Real data on KISS ports 8..=15 collides with
//! this; [`Decoder::without_smack`] reads those as plain frames.

use std::mem;

use crate::rf::ax25;

/// Frame end: delimits frames.
pub const FEND: u8 = 0xc0;
/// Frame escape.
pub const FESC: u8 = 0xdb;
/// After FESC: a FEND data byte.
pub const TFEND: u8 = 0xdc;
/// After FESC: a FESC data byte.
pub const TFESC: u8 = 0xdd;
/// Highest KISS port (the high nibble of the type byte).
pub const MAX_PORT: u8 = 15;
/// Highest port of a SMACK frame (three bits; bit 7 is the SMACK flag).
pub const MAX_SMACK_PORT: u8 = 7;
/// Bit 7 of the type byte: a SMACK frame (with a CRC) when the command is 0.
pub const SMACK_FLAG: u8 = 0x80;
/// Bytes of the SMACK CRC trailer.
pub const SMACK_CRC_LEN: usize = 2;
/// Default bound on the data of a received frame: the longest AX.25 frame
/// decoded ([`ax25::MAX_FRAME`]) plus a SMACK CRC.
pub const DEFAULT_MAX_PAYLOAD: usize = ax25::MAX_FRAME + SMACK_CRC_LEN;

/// What a frame asks of the TNC: the low nibble of the type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 0: an AX.25 frame to send, or one received.
    Data,
    /// 1: keyup delay, in 10 ms units.
    TxDelay,
    /// 2: persistence p, 0..=255 for p = (value + 1) / 256.
    Persistence,
    /// 3: slot time, in 10 ms units.
    SlotTime,
    /// 4: time to hold the transmitter after the frame, in 10 ms units
    /// (obsolete).
    TxTail,
    /// 5: full duplex, nonzero for on.
    FullDuplex,
    /// 6: TNC-specific.
    SetHardware,
    /// 15 (type byte 0xFF on port 15): leave KISS mode.
    Return,
    /// 7..=14: undefined by KISS, kept so that re-encoding is exact.
    Other(u8),
}

impl Command {
    /// The command of a type byte's low nibble (the high nibble is ignored).
    pub const fn from_nibble(nibble: u8) -> Command {
        match nibble & 0x0f {
            0 => Command::Data,
            1 => Command::TxDelay,
            2 => Command::Persistence,
            3 => Command::SlotTime,
            4 => Command::TxTail,
            5 => Command::FullDuplex,
            6 => Command::SetHardware,
            15 => Command::Return,
            n => Command::Other(n),
        }
    }

    /// The low nibble of the type byte; `None` for an [`Command::Other`]
    /// outside 7..=14, which would stand for another command.
    pub const fn nibble(self) -> Option<u8> {
        match self {
            Command::Data => Some(0),
            Command::TxDelay => Some(1),
            Command::Persistence => Some(2),
            Command::SlotTime => Some(3),
            Command::TxTail => Some(4),
            Command::FullDuplex => Some(5),
            Command::SetHardware => Some(6),
            Command::Return => Some(15),
            Command::Other(n @ 7..=14) => Some(n),
            Command::Other(_) => None,
        }
    }
}

/// Why a frame was dropped or cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KissError {
    /// FESC followed by a byte other than TFEND or TFESC (FEND included:
    /// a frame that ends inside an escape). The frame is dropped.
    #[error("FESC followed by 0x{0:02x}")]
    BadEscape(u8),
    /// More data than the decoder's bound; dropped up to the next FEND.
    #[error("frame data longer than {0} bytes")]
    TooLong(usize),
    /// A SMACK frame with fewer than two bytes after the type byte.
    #[error("SMACK frame too short for its CRC")]
    SmackTooShort,
    /// A SMACK frame whose CRC does not match.
    #[error("SMACK frame with a bad CRC")]
    SmackBadCrc,
    /// A port above [`MAX_PORT`] ([`MAX_SMACK_PORT`] for SMACK) given.
    #[error("KISS port {0} out of range")]
    BadPort(u8),
    /// A [`Command::Other`] outside 7..=14 given.
    #[error("KISS command {0} is not an undefined command nibble")]
    BadCommand(u8),
}

/// A plain KISS frame: port, command and unescaped data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// 0..=[`MAX_PORT`].
    port: u8,
    /// Never an [`Command::Other`] outside 7..=14.
    command: Command,
    payload: Vec<u8>,
}

impl Frame {
    /// A frame for `port` (0..=15).
    pub fn new(
        port: u8,
        command: Command,
        payload: impl Into<Vec<u8>>,
    ) -> Result<Frame, KissError> {
        if port > MAX_PORT {
            return Err(KissError::BadPort(port));
        }
        if let Command::Other(n) = command
            && command.nibble().is_none()
        {
            return Err(KissError::BadCommand(n));
        }
        Ok(Frame {
            port,
            command,
            payload: payload.into(),
        })
    }

    /// A data frame (an AX.25 frame without FCS) for `port`.
    pub fn data(port: u8, ax25: impl Into<Vec<u8>>) -> Result<Frame, KissError> {
        Frame::new(port, Command::Data, ax25)
    }

    /// The frame that takes the TNC out of KISS mode (type byte 0xFF).
    pub fn exit_kiss() -> Frame {
        Frame {
            port: MAX_PORT,
            command: Command::Return,
            payload: Vec::new(),
        }
    }

    /// The port, 0..=15.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// The command.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The data, unescaped.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the data.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The type byte: port in the high nibble, command in the low one.
    pub fn type_byte(&self) -> u8 {
        let nibble = self.command.nibble().expect("checked in Frame::new");
        self.port << 4 | nibble
    }

    /// The frame on the wire: FEND, escaped type and data, FEND.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 4);
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame's wire bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FEND);
        escape_into(&[self.type_byte()], out);
        escape_into(&self.payload, out);
        out.push(FEND);
    }
}

/// A SMACK data frame: port 0..=7 and data; the CRC is checked on decoding
/// and computed on encoding (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SmackFrame {
    /// 0..=[`MAX_SMACK_PORT`].
    port: u8,
    payload: Vec<u8>,
}

impl SmackFrame {
    /// A SMACK data frame for `port` (0..=7).
    pub fn new(port: u8, payload: impl Into<Vec<u8>>) -> Result<SmackFrame, KissError> {
        if port > MAX_SMACK_PORT {
            return Err(KissError::BadPort(port));
        }
        Ok(SmackFrame {
            port,
            payload: payload.into(),
        })
    }

    /// The port, 0..=7.
    pub fn port(&self) -> u8 {
        self.port
    }

    /// The data (an AX.25 frame), without the CRC.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the data.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The type byte: [`SMACK_FLAG`], the port, command 0.
    pub fn type_byte(&self) -> u8 {
        SMACK_FLAG | self.port << 4
    }

    /// The CRC sent after the data: [`smack_crc`] over type byte and data.
    pub fn crc(&self) -> u16 {
        smack_crc_update(smack_crc(&[self.type_byte()]), &self.payload)
    }

    /// The frame on the wire: FEND, escaped type, data and CRC (low byte
    /// first), FEND.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 6);
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame's wire bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FEND);
        escape_into(&[self.type_byte()], out);
        escape_into(&self.payload, out);
        escape_into(&self.crc().to_le_bytes(), out);
        out.push(FEND);
    }
}

/// The SMACK CRC: CRC-16/ARC (polynomial 0x8005 reflected, initial 0, no
/// final XOR), the Linux kernel's `crc16()`. Over a frame with its CRC
/// appended low byte first it gives 0.
pub fn smack_crc(bytes: &[u8]) -> u16 {
    smack_crc_update(0, bytes)
}

fn smack_crc_update(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xa001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Appends `bytes` with FEND and FESC escaped.
fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        match b {
            FEND => out.extend([FESC, TFEND]),
            FESC => out.extend([FESC, TFESC]),
            b => out.push(b),
        }
    }
}

/// What the stream decoder found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A plain KISS frame.
    Frame(Frame),
    /// A SMACK data frame with a good CRC (the TNC or kernel speaks SMACK).
    Smack(SmackFrame),
    /// A frame was dropped; the stream goes on.
    Error(KissError),
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Discarding up to the next FEND: at the start, after an error.
    Hunt,
    /// Inside a frame.
    Frame,
    /// Inside a frame, after FESC.
    Escape,
}

/// Incremental KISS stream decoder: feed it bytes as they arrive, in any
/// chunks; it keeps the partial frame between calls.
///
/// A `tokio_util::codec::Decoder` around it is a few lines:
/// `let mut s = &buf[..]; let ev = dec.next_event(&mut s);
/// buf.advance(buf.len() - s.len()); Ok(ev)`.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Most data bytes (after the type byte) of a frame.
    max_payload: usize,
    /// Read `type & 0x8F == 0x80` as SMACK.
    smack: bool,
    state: State,
    /// The unescaped type byte and data received so far.
    buf: Vec<u8>,
}

impl Default for Decoder {
    /// Bounded by [`DEFAULT_MAX_PAYLOAD`], SMACK recognised.
    fn default() -> Decoder {
        Decoder::new(DEFAULT_MAX_PAYLOAD)
    }
}

impl Decoder {
    /// A decoder that drops frames with more than `max_payload` data bytes;
    /// SMACK recognised.
    pub fn new(max_payload: usize) -> Decoder {
        Decoder {
            max_payload,
            smack: true,
            state: State::Hunt,
            buf: Vec::new(),
        }
    }

    /// The decoder reading bit 7 of the type byte as a port bit (data on
    /// KISS ports 8..=15), not as SMACK.
    pub fn without_smack(mut self) -> Decoder {
        self.smack = false;
        self
    }

    /// Forgets the partial frame and waits for the next FEND, as after a
    /// reconnect.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.state = State::Hunt;
    }

    /// All events completed by `bytes`.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event(&mut bytes) {
            events.push(event);
        }
        events
    }

    /// Consumes bytes from the front of `input` up to the end of the next
    /// event and returns it; `None` once `input` is empty, with the partial
    /// frame kept for the next call.
    pub fn next_event(&mut self, input: &mut &[u8]) -> Option<Event> {
        while let Some((&b, rest)) = input.split_first() {
            *input = rest;
            if let Some(event) = self.step(b) {
                return Some(event);
            }
        }
        None
    }

    fn step(&mut self, b: u8) -> Option<Event> {
        match (self.state, b) {
            (state, FEND) => {
                self.state = State::Frame;
                match state {
                    State::Hunt => None,
                    State::Escape => {
                        self.buf.clear();
                        Some(Event::Error(KissError::BadEscape(FEND)))
                    }
                    // back-to-back FENDs: nothing to report
                    State::Frame if self.buf.is_empty() => None,
                    State::Frame => Some(self.finish()),
                }
            }
            (State::Hunt, _) => None,
            (State::Frame, FESC) => {
                self.state = State::Escape;
                None
            }
            (State::Frame, b) => self.keep(b),
            (State::Escape, TFEND) => {
                self.state = State::Frame;
                self.keep(FEND)
            }
            (State::Escape, TFESC) => {
                self.state = State::Frame;
                self.keep(FESC)
            }
            (State::Escape, b) => {
                self.reset();
                Some(Event::Error(KissError::BadEscape(b)))
            }
        }
    }

    /// Adds a data byte, or drops the frame if it grows past the bound.
    fn keep(&mut self, b: u8) -> Option<Event> {
        if self.buf.len() > self.max_payload {
            self.reset();
            return Some(Event::Error(KissError::TooLong(self.max_payload)));
        }
        self.buf.push(b);
        None
    }

    /// The event for the complete frame in `buf` (at least the type byte).
    fn finish(&mut self) -> Event {
        let frame = mem::take(&mut self.buf);
        let type_byte = frame[0];
        if self.smack && type_byte & 0x8f == SMACK_FLAG {
            if frame.len() < 1 + SMACK_CRC_LEN {
                return Event::Error(KissError::SmackTooShort);
            }
            if smack_crc(&frame) != 0 {
                return Event::Error(KissError::SmackBadCrc);
            }
            return Event::Smack(SmackFrame {
                port: (type_byte >> 4) & MAX_SMACK_PORT,
                payload: frame[1..frame.len() - SMACK_CRC_LEN].to_vec(),
            });
        }
        let mut payload = frame;
        payload.remove(0);
        Event::Frame(Frame {
            port: type_byte >> 4,
            command: Command::from_nibble(type_byte),
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escaping_golden_bytes() {
        // the frame the ax25_tnc crate sent unescaped (reference/crates.md §2)
        let f = Frame::data(0, [0x41, 0xc0, 0xdb, 0x42]).unwrap();
        let wire = [
            FEND, 0x00, // port 0, data
            0x41, FESC, TFEND, // 0xC0
            FESC, TFESC, // 0xDB
            0x42, FEND,
        ];
        assert_eq!(f.encode(), wire);
        assert_eq!(Decoder::default().push(&wire), [Event::Frame(f)]);

        // TNC parameters as rftest.py --param sends them, and leaving KISS
        let txdelay = Frame::new(0, Command::TxDelay, [30]).unwrap();
        assert_eq!(txdelay.encode(), [FEND, 0x01, 30, FEND]);
        let p = Frame::new(1, Command::Persistence, [255]).unwrap();
        assert_eq!(p.encode(), [FEND, 0x12, 255, FEND]);
        assert_eq!(Frame::exit_kiss().encode(), [FEND, 0xff, FEND]);
        assert_eq!(
            Decoder::default().push(&[FEND, 0xff, FEND]),
            [Event::Frame(Frame::exit_kiss())]
        );

        // a type byte that needs escaping: port 12 data is 0xC0
        let f = Frame::data(12, *b"x").unwrap();
        let wire = [FEND, FESC, TFEND, b'x', FEND];
        assert_eq!(f.encode(), wire);
        assert_eq!(
            Decoder::default().without_smack().push(&wire),
            [Event::Frame(f)]
        );

        assert_eq!(
            Frame::new(16, Command::Data, []),
            Err(KissError::BadPort(16))
        );
        assert_eq!(
            Frame::new(0, Command::Other(0), []),
            Err(KissError::BadCommand(0))
        );
        assert_eq!(Command::from_nibble(0x27), Command::Other(7));
    }

    #[test]
    fn smack_crc_is_the_kernel_crc16() {
        // CRC-16/ARC catalogue check value
        assert_eq!(smack_crc(b"123456789"), 0xbb3d);
        // entries of crc16_table in Linux lib/crc16.c: with initial value 0,
        // the CRC of one byte i is table[i]
        for (i, entry) in [
            (0x00, 0x0000),
            (0x01, 0xc0c1),
            (0x02, 0xc181),
            (0x80, 0xa001),
            (0xff, 0x4040),
        ] {
            assert_eq!(smack_crc(&[i]), entry, "table[{i:#x}]");
        }
    }

    #[test]
    fn mkiss_auto_mode_start_captured() {
        // A Debian 12 kernel (6.1) in QEMU, `kissattach` without `kissparms
        // -c 1`, sent three UI frames N0VM-1>APZMSH; its ttyS1 bytes:
        let ax25 = |text: &[u8]| {
            let mut f = vec![0x82, 0xa0, 0xb4, 0x9a, 0xa6, 0x90, 0xe0]; // APZMSH, C=1
            f.extend([0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, 0x63]); // N0VM-1, last
            f.extend([0x03, 0xf0]); // UI, PID F0
            f.extend_from_slice(text);
            f
        };
        let smack = [&[FEND, 0x80][..], &ax25(b"first"), &[0xb2, 0x34, FEND]].concat(); // "Trying crc-smack"
        let flexnet = [&[FEND, 0x20][..], &ax25(b"second"), &[0x18, 0xd5, FEND]].concat(); // "Trying crc-flexnet"
        let plain = [&[FEND, 0x00][..], &ax25(b"third"), &[FEND]].concat();

        let stream = [smack.clone(), flexnet, plain].concat();
        let events = Decoder::default().push(&stream);
        let expect_smack = SmackFrame::new(0, ax25(b"first")).unwrap();
        assert_eq!(events[0], Event::Smack(expect_smack.clone()));
        assert_eq!(expect_smack.crc(), 0x34b2);
        assert_eq!(expect_smack.encode(), smack, "we send SMACK as mkiss does");
        // FlexNet: port 2 data whose last two bytes are the FlexNet CRC
        assert_eq!(
            events[1],
            Event::Frame(Frame::data(2, [ax25(b"second"), vec![0x18, 0xd5]].concat()).unwrap())
        );
        assert_eq!(
            events[2],
            Event::Frame(Frame::data(0, ax25(b"third")).unwrap())
        );
        assert_eq!(events.len(), 3);
        let Event::Smack(s) = &events[0] else {
            unreachable!()
        };
        let f = ax25::Frame::decode(s.payload(), ax25::Modulo::Eight).unwrap();
        assert_eq!(f.to_string(), "N0VM-1>APZMSH: UI pid=f0 C len=5");
    }

    #[test]
    fn smack_frames() {
        let ax25 = [
            0x9c, 0x60, 0xac, 0x9a, 0x40, 0x40, 0xe0, 0x9c, 0x60, 0x90, 0x9e, 0xa6, 0xa8, 0x61,
            0x03, 0xf0,
        ];
        let s = SmackFrame::new(0, ax25).unwrap();
        let wire = s.encode();
        // 0x80, the frame, then the CRC low byte first
        let crc = smack_crc(&[&[0x80][..], &ax25].concat());
        assert_eq!(wire[1], 0x80);
        assert_eq!(wire[wire.len() - 3..], [crc as u8, (crc >> 8) as u8, FEND]);
        assert_eq!(s.crc(), crc);
        assert_eq!(Decoder::default().push(&wire), [Event::Smack(s.clone())]);

        // plain KISS reads the same bytes as port 8 data with two extra bytes
        match &Decoder::default().without_smack().push(&wire)[..] {
            [Event::Frame(f)] => {
                assert_eq!((f.port(), f.command()), (8, Command::Data));
                assert_eq!(&f.payload()[..ax25.len()], ax25);
            }
            other => panic!("{other:?}"),
        }

        // one flipped bit: dropped; too short for a CRC: dropped
        let mut bad = wire.clone();
        bad[5] ^= 0x04;
        assert_eq!(
            Decoder::default().push(&bad),
            [Event::Error(KissError::SmackBadCrc)]
        );
        assert_eq!(
            Decoder::default().push(&[FEND, 0x80, 0x01, FEND]),
            [Event::Error(KissError::SmackTooShort)]
        );

        // SMACK port 4 has type byte 0xC0, escaped; empty data is fine
        let s4 = SmackFrame::new(4, []).unwrap();
        let wire4 = s4.encode();
        assert_eq!(wire4[..3], [FEND, FESC, TFEND]);
        assert_eq!(Decoder::default().push(&wire4), [Event::Smack(s4)]);
        assert_eq!(SmackFrame::new(8, []), Err(KissError::BadPort(8)));

        // a SMACK-flagged parameter frame is plain (port 9 TXDELAY)
        assert_eq!(
            Decoder::default().push(&[FEND, 0x91, 5, FEND]),
            [Event::Frame(Frame::new(9, Command::TxDelay, [5]).unwrap())]
        );
    }

    #[test]
    fn stream_noise_and_bounds() {
        let good = Frame::data(0, *b"good").unwrap();
        let mut d = Decoder::new(8);
        // bytes before the first FEND are dropped, back-to-back FENDs ignored
        let mut stream = b"line noise".to_vec();
        stream.extend([FEND, FEND, FEND]);
        stream.extend(good.encode());
        assert_eq!(d.push(&stream), [Event::Frame(good.clone())]);

        // a bad escape drops its frame only
        let mut stream = vec![FEND, 0x00, 1, FESC, 0x42, 2, 3];
        stream.extend(good.encode());
        assert_eq!(
            d.push(&stream),
            [
                Event::Error(KissError::BadEscape(0x42)),
                Event::Frame(good.clone())
            ]
        );
        // a frame that ends inside an escape
        let mut stream = vec![FEND, 0x00, 1, FESC];
        stream.extend(good.encode());
        assert_eq!(
            d.push(&stream),
            [
                Event::Error(KissError::BadEscape(FEND)),
                Event::Frame(good.clone())
            ]
        );

        // 8 data bytes pass, 9 are dropped up to the next FEND
        let eight = Frame::data(0, [7; 8]).unwrap();
        assert_eq!(d.push(&eight.encode()), [Event::Frame(eight)]);
        let mut stream = Frame::data(0, [7; 100]).unwrap().encode();
        stream.extend(good.encode());
        assert_eq!(
            d.push(&stream),
            [
                Event::Error(KissError::TooLong(8)),
                Event::Frame(good.clone())
            ]
        );

        // a partial frame survives between calls, and reset forgets it
        let wire = good.encode();
        assert!(d.push(&wire[..4]).is_empty());
        assert_eq!(d.push(&wire[4..]), [Event::Frame(good.clone())]);
        assert!(d.push(&wire[..4]).is_empty());
        d.reset();
        assert!(
            d.push(&wire[4..]).is_empty(),
            "the tail FEND only starts a frame"
        );
        assert_eq!(d.push(&wire), [Event::Frame(good)]);
    }

    #[test]
    fn next_event_consumes_up_to_the_event() {
        let a = Frame::data(0, *b"a").unwrap();
        let b = Frame::data(1, *b"b").unwrap();
        let wire = [a.encode(), b.encode()].concat();
        let mut d = Decoder::default();
        let mut rest = &wire[..];
        assert_eq!(d.next_event(&mut rest), Some(Event::Frame(a.clone())));
        assert_eq!(rest, &b.encode()[..]);
        assert_eq!(d.next_event(&mut rest), Some(Event::Frame(b)));
        assert!(rest.is_empty());
        assert_eq!(d.next_event(&mut rest), None);
    }

    /// Data that is mostly the special bytes.
    fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(FEND),
                Just(FESC),
                Just(TFEND),
                Just(TFESC),
                any::<u8>()
            ],
            0..max,
        )
    }

    /// Anything an encoder sends that the default decoder reads back.
    fn sendable() -> impl Strategy<Value = Event> {
        let plain = (0..=MAX_PORT, 0u8..16, payload(64))
            .prop_filter("data on ports 8-15 reads as SMACK", |(port, nibble, _)| {
                *port < 8 || *nibble != 0
            })
            .prop_map(|(port, nibble, data)| {
                Event::Frame(Frame::new(port, Command::from_nibble(nibble), data).unwrap())
            });
        let smack = (0..=MAX_SMACK_PORT, payload(64))
            .prop_map(|(port, data)| Event::Smack(SmackFrame::new(port, data).unwrap()));
        prop_oneof![3 => plain, 1 => smack]
    }

    fn wire(event: &Event) -> Vec<u8> {
        match event {
            Event::Frame(f) => f.encode(),
            Event::Smack(s) => s.encode(),
            Event::Error(e) => panic!("not sendable: {e}"),
        }
    }

    /// Splits `bytes` at the given cut points (taken modulo the length).
    fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    proptest! {
        /// Escaping and unescaping give back any data, FEND and FESC included.
        #[test]
        fn escape_roundtrip(data in payload(300), port in 0..8u8) {
            let f = Frame::data(port, data).unwrap();
            let wire = f.encode();
            prop_assert!(!wire[1..wire.len() - 1].contains(&FEND));
            prop_assert_eq!(Decoder::default().push(&wire), vec![Event::Frame(f)]);
        }

        /// The events do not depend on how the stream is cut into chunks.
        #[test]
        fn chunking_does_not_matter(
            events in proptest::collection::vec(sendable(), 0..6),
            noise in proptest::collection::vec(any::<u8>(), 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut stream = noise;
            for e in &events {
                stream.extend(wire(e));
            }
            let whole = Decoder::new(100).push(&stream);
            let mut d = Decoder::new(100);
            let pieces: Vec<Event> = chunks(&stream, &cuts).into_iter().flat_map(|c| d.push(c)).collect();
            prop_assert_eq!(&pieces, &whole);
            // and whatever noise came first, the frames come out in order
            prop_assert!(whole.ends_with(&events));
        }

        /// Garbage between two frames never costs the frame after it.
        #[test]
        fn garbage_never_loses_the_next_frame(
            first in sendable(),
            garbage in payload(200),
            next in sendable(),
        ) {
            let stream = [wire(&first), garbage, wire(&next)].concat();
            let events = Decoder::new(100).push(&stream);
            prop_assert_eq!(events.first(), Some(&first));
            prop_assert_eq!(events.last(), Some(&next));
        }
    }
}
