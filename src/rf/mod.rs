//! RF: meshnode over amateur packet radio (issue #5).
//!
//! Frames travel as AX.25 (v2.0/v2.2) over a KISS TNC: a serial or
//! TCP-KISS soft TNC such as direwolf, or the Linux kernel's AX.25 stack
//! (`mkiss` and friends). Neither carries the HDLC FCS; the TNC adds and
//! checks it.
//!
//! The link layer, from the bytes up:
//!
//! - [`ax25`]: the AX.25 frame codec (pure): addresses, digipeater path,
//!   control field (modulo 8 and 128), PID and info, re-encoded byte for byte.
//! - [`kiss`]: the KISS framing codec (pure): escaping, ports and commands,
//!   an incremental stream decoder that survives line noise, and the SMACK
//!   CRC frames a Linux `mkiss` sends in its default "auto" CRC mode.
//! - [`tnc`]: the `[rf] tnc` address (pure).
//! - [`driver`]: the TNC drivers (KISS over TCP, KISS on a serial line, the
//!   kernel stack), one [`driver::Link`] shape, reconnecting by themselves.
//! - [`airtime`]: what a transmission costs, the two airtime caps (token
//!   buckets), the background priority queue and the scheduler (pure).
//! - [`ident`]: the identification timer and frame (pure).
//! - [`beacon`]: the service beacon's wire format (pure).
//! - [`task`]: the RF task that owns a link and a scheduler: beacons, IDs,
//!   the stations heard, the status view ([`Rf`]).
//!
//! Everything below [`driver`] and [`task`] is sans-IO: the driver that
//! owns the serial port or TCP socket feeds bytes in and writes bytes out. Facts about the peers (direwolf's
//! 15..=2046 byte limits, mkiss's SMACK start-up) were measured on the
//! project's build machines and are cited where the code depends on them.
//!
//! # Example
//!
//! ```
//! use meshnode::rf::{ax25, kiss};
//!
//! // a UI frame via one digipeater, wrapped for KISS port 0
//! let frame = ax25::Frame::ui(
//!     ax25::Address::parse("N0CALL-7")?,
//!     ax25::Address::parse("APZMSH")?,
//!     &[ax25::Address::parse("WIDE1-1")?],
//!     0xf0,
//!     *b"hello",
//! )?;
//! let wire = kiss::Frame::data(0, frame.encode())?.encode();
//!
//! // what a TNC driver does with the bytes it reads, in whatever chunks
//! let mut decoder = kiss::Decoder::default();
//! for event in decoder.push(&wire) {
//!     match event {
//!         kiss::Event::Frame(k) if k.port() == 0 && k.command() == kiss::Command::Data => {
//!             let got = ax25::Frame::decode(k.payload(), ax25::Modulo::Eight)?;
//!             assert_eq!(got.to_string(), "N0CALL-7>APZMSH,WIDE1-1: UI pid=f0 C len=5");
//!         }
//!         kiss::Event::Smack(_) => { /* the TNC speaks SMACK: answer in kind or warn */ }
//!         other => println!("dropped: {other:?}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod airtime;
pub mod ax25;
pub mod beacon;
pub mod driver;
pub mod http;
pub mod ident;
pub mod kiss;
pub mod msg;
pub mod sync;
pub mod task;
pub mod tnc;

pub use task::{Fetched, Rf, RfParams, ServeReq, Status, TransferStatus, spawn};
