//! `rfguest`: meshnode's kernel AX.25 driver ([`rf::driver`], compiled from
//! the same source files as the daemon's) in the test VM.
//!
//! ```text
//! rfguest PORT SRC DEST TEXT SECONDS
//! ```
//!
//! Opens the link `ax25:PORT` and waits until it is up (prints
//! `rfguest: up via ...`, or `rfguest: down: <reason>` and exits 1), sends
//! one UI frame `SRC>DEST` (PID F0) with TEXT as info (prints `rfguest:
//! sent <hex>`), then waits up to SECONDS for a frame and prints
//! `rfguest: heard <hex>` (exit 0) or `rfguest: heard nothing` (exit 2).
#![allow(dead_code)]

#[path = "../../../src/rf/ax25.rs"]
pub mod ax25;
#[path = "../../../src/rf/driver/mod.rs"]
pub mod driver;
#[path = "../../../src/rf/kiss.rs"]
pub mod kiss;
#[path = "../../../src/rf/tnc.rs"]
pub mod tnc;

/// The module paths the included files use (`crate::rf::ax25`, ...).
mod rf {
    #[allow(unused_imports)]
    pub use crate::{ax25, driver, kiss, tnc};
}

use std::time::Duration;

use rf::ax25::{Address, Frame};
use rf::driver::LinkState;
use rf::tnc::TncAddr;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: rfguest PORT SRC DEST TEXT SECONDS");
        std::process::exit(64);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    std::process::exit(rt.block_on(run(&args)));
}

async fn run(args: &[String]) -> i32 {
    let tnc = TncAddr::parse(&format!("ax25:{}", args[1])).expect("port name");
    let src = Address::parse(&args[2]).expect("SRC");
    let dst = Address::parse(&args[3]).expect("DEST");
    let secs: u64 = args[5].parse().expect("SECONDS");
    let cancel = tokio_util::sync::CancellationToken::new();
    let (mut link, _join) = rf::driver::spawn(tnc, cancel.clone());
    let up = tokio::time::timeout(
        Duration::from_secs(20),
        link.state.wait_for(|s| !matches!(s, LinkState::Connecting)),
    )
    .await;
    let state = match up {
        Ok(Ok(s)) => s.clone(),
        _ => {
            println!("rfguest: down: no answer from the driver");
            return 1;
        }
    };
    match state {
        LinkState::Up { via } => println!("rfguest: up via {via}"),
        LinkState::Down { reason } => {
            println!("rfguest: down: {reason}");
            return 1;
        }
        LinkState::Connecting => unreachable!(),
    }
    let frame = Frame::ui(src, dst, &[], 0xf0, args[4].as_bytes().to_vec())
        .expect("frame")
        .encode();
    link.tx.send(frame.clone()).await.expect("driver running");
    println!("rfguest: sent {}", hex(&frame));
    let heard = tokio::time::timeout(Duration::from_secs(secs), link.rx.recv()).await;
    cancel.cancel();
    match heard {
        Ok(Some(f)) => {
            println!("rfguest: heard {}", hex(&f));
            0
        }
        _ => {
            println!("rfguest: heard nothing");
            2
        }
    }
}

/// libc binds `cfsetspeed` to the versioned `cfsetspeed@GLIBC_2.2.5`, which
/// a static glibc link cannot resolve (static libc.a has no symbol
/// versions); the serial driver compiled in here needs it to link, though
/// the guest never opens a serial TNC. Forward to the unversioned symbol.
mod static_glibc {
    use nix::libc::{c_int, speed_t, termios};

    unsafe extern "C" {
        #[link_name = "cfsetspeed"]
        fn cfsetspeed_unversioned(t: *mut termios, speed: speed_t) -> c_int;
    }

    /// # Safety
    /// As `cfsetspeed(3)`.
    #[unsafe(export_name = "cfsetspeed@GLIBC_2.2.5")]
    unsafe extern "C" fn cfsetspeed(t: *mut termios, speed: speed_t) -> c_int {
        // SAFETY: the caller's contract is cfsetspeed's.
        unsafe { cfsetspeed_unversioned(t, speed) }
    }
}
