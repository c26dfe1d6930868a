//! axguest: receives AX.25 frames through the Linux kernel stack, inside the
//! test VM (tests/common/rfvm.rs). A standalone program, built static by the
//! test harness with
//!
//!     rustc --edition 2024 -O -C target-feature=+crt-static axguest.rs
//!
//! which also proves that a static Rust binary runs in the guest and opens
//! AF_AX25 and PF_PACKET sockets (the future meshnode RF test runs the daemon
//! there the same way). Standard library only: the few libc calls are
//! declared below.
//!
//!     axguest sniff IFACE SECONDS
//!         PF_PACKET/ETH_P_AX25 on IFACE (what axlisten does): prints the first
//!         incoming frame as "axguest: sniffed N bytes: HEX" - a KISS command
//!         byte (0x00), then the AX.25 frame without FCS.
//!     axguest recv PORTCALL MYCALL PEER SECONDS
//!         AF_AX25 SOCK_DGRAM bound to MYCALL on the port with callsign
//!         PORTCALL and connected to PEER: prints the first datagram as
//!         "axguest: received N bytes from CALL: HEX" (PID byte + info).
//!
//! Both print "axguest: ready (...)" once the socket is open, and exit 1
//! when nothing arrives within SECONDS.
//!
//! Kernel rules for SOCK_DGRAM receive (Linux 6.1, measured): a UI frame with
//! PID 0xF0 reaches the socket only if its destination is the port callsign
//! (or QST), the socket is bound to it and connect()ed to the sender; and
//! without AX25_PIDINCL, recv() drops the first info byte.
use std::ffi::CString;
use std::io::Write;
use std::process::exit;

const AF_AX25: i32 = 3;
const AF_PACKET: i32 = 17;
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;
const SOL_SOCKET: i32 = 1;
const SO_RCVTIMEO: i32 = 20;
const SOL_AX25: i32 = 257;
const AX25_PIDINCL: i32 = 8;
const ETH_P_AX25: u16 = 0x0002;
const PACKET_OUTGOING: u8 = 4;

unsafe extern "C" {
    fn socket(domain: i32, ty: i32, protocol: i32) -> i32;
    fn bind(fd: i32, addr: *const u8, len: u32) -> i32;
    fn connect(fd: i32, addr: *const u8, len: u32) -> i32;
    fn setsockopt(fd: i32, level: i32, name: i32, val: *const u8, len: u32) -> i32;
    fn recvfrom(
        fd: i32,
        buf: *mut u8,
        len: usize,
        flags: i32,
        addr: *mut u8,
        alen: *mut u32,
    ) -> isize;
    fn if_nametoindex(name: *const i8) -> u32;
}

fn fail(what: &str) -> ! {
    eprintln!("axguest: {what}: {}", std::io::Error::last_os_error());
    exit(1)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// 7-byte AX.25 address: callsign characters shifted left, SSID byte.
fn ax25_addr(call: &str) -> [u8; 7] {
    let (base, ssid) = call.split_once('-').unwrap_or((call, "0"));
    let ssid: u8 = ssid.parse().expect("SSID");
    let mut a = [b' ' << 1; 7];
    for (o, c) in a.iter_mut().zip(base.bytes().take(6)) {
        *o = c.to_ascii_uppercase() << 1;
    }
    a[6] = 0x60 | ((ssid & 0x0f) << 1);
    a
}

fn callsign(a: &[u8]) -> String {
    let base: String = a[..6].iter().map(|&c| char::from(c >> 1)).collect();
    match (a[6] >> 1) & 0x0f {
        0 => base.trim_end().to_string(),
        s => format!("{}-{s}", base.trim_end()),
    }
}

/// struct full_sockaddr_ax25: sockaddr_ax25 {u16 family; ax25_address call;
/// (pad) i32 ndigis} (16 bytes) + 8 digipeater addresses (56 bytes).
fn full_sockaddr_ax25(call: &str, digi: Option<&str>) -> [u8; 72] {
    let mut s = [0u8; 72];
    s[..2].copy_from_slice(&(AF_AX25 as u16).to_ne_bytes());
    s[2..9].copy_from_slice(&ax25_addr(call));
    if let Some(d) = digi {
        s[12..16].copy_from_slice(&1i32.to_ne_bytes());
        s[16..23].copy_from_slice(&ax25_addr(d));
    }
    s
}

fn set_timeout(fd: i32, secs: i64) {
    let mut tv = [0u8; 16]; // struct timeval {i64 sec; i64 usec}
    tv[..8].copy_from_slice(&secs.to_ne_bytes());
    // SAFETY: fd is an open socket; tv is a valid struct timeval.
    if unsafe { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv.as_ptr(), 16) } < 0 {
        fail("SO_RCVTIMEO");
    }
}

fn ready(what: &str) {
    println!("axguest: ready ({what})");
    std::io::stdout().flush().ok();
}

fn sniff(iface: &str, secs: i64) {
    // SAFETY: plain syscall.
    let fd = unsafe { socket(AF_PACKET, SOCK_RAW, i32::from(ETH_P_AX25.to_be())) };
    if fd < 0 {
        fail("socket(PF_PACKET)");
    }
    let name = CString::new(iface).unwrap();
    // SAFETY: name is a NUL-terminated string.
    let index = unsafe { if_nametoindex(name.as_ptr()) };
    if index == 0 {
        fail(iface);
    }
    // struct sockaddr_ll {u16 family; u16 protocol (BE); i32 ifindex;
    // u16 hatype; u8 pkttype; u8 halen; u8 addr[8]}
    let mut ll = [0u8; 20];
    ll[..2].copy_from_slice(&(AF_PACKET as u16).to_ne_bytes());
    ll[2..4].copy_from_slice(&ETH_P_AX25.to_be_bytes());
    ll[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    // SAFETY: ll is a valid sockaddr_ll of the given length.
    if unsafe { bind(fd, ll.as_ptr(), 20) } < 0 {
        fail("bind(PF_PACKET)");
    }
    set_timeout(fd, secs);
    ready(&format!("sniff {iface}"));
    let mut buf = [0u8; 4096];
    loop {
        let mut from = [0u8; 20];
        let mut flen = 20u32;
        // SAFETY: buf and from are writable buffers of the given lengths.
        let n = unsafe {
            recvfrom(
                fd,
                buf.as_mut_ptr(),
                buf.len(),
                0,
                from.as_mut_ptr(),
                &mut flen,
            )
        };
        if n < 0 {
            fail("recv(PF_PACKET)");
        }
        if from[10] == PACKET_OUTGOING {
            continue; // our own transmissions
        }
        let f = &buf[..n as usize];
        println!("axguest: sniffed {n} bytes: {}", hex(f));
        if f.len() >= 15 {
            println!(
                "axguest: sniffed {}>{}",
                callsign(&f[8..15]),
                callsign(&f[1..8])
            );
        }
        return;
    }
}

fn recv(portcall: &str, mycall: &str, peer: &str, secs: i64) {
    // SAFETY: plain syscall.
    let fd = unsafe { socket(AF_AX25, SOCK_DGRAM, 0) };
    if fd < 0 {
        fail("socket(AF_AX25)");
    }
    let me = full_sockaddr_ax25(mycall, Some(portcall));
    // SAFETY: me is a valid full_sockaddr_ax25.
    if unsafe { bind(fd, me.as_ptr(), me.len() as u32) } < 0 {
        fail("bind(AF_AX25)");
    }
    let to = full_sockaddr_ax25(peer, None);
    // SAFETY: the first 16 bytes are a valid sockaddr_ax25.
    if unsafe { connect(fd, to.as_ptr(), 16) } < 0 {
        fail("connect(AF_AX25)");
    }
    let one = 1i32.to_ne_bytes();
    // SAFETY: fd is an AF_AX25 socket; the value is an int.
    if unsafe { setsockopt(fd, SOL_AX25, AX25_PIDINCL, one.as_ptr(), 4) } < 0 {
        fail("AX25_PIDINCL");
    }
    set_timeout(fd, secs);
    ready(&format!("recv {peer}>{mycall}"));
    let mut buf = [0u8; 4096];
    let mut from = [0u8; 72];
    let mut flen = 72u32;
    // SAFETY: buf and from are writable buffers of the given lengths.
    let n = unsafe {
        recvfrom(
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            0,
            from.as_mut_ptr(),
            &mut flen,
        )
    };
    if n < 0 {
        fail("recv(AF_AX25)");
    }
    println!(
        "axguest: received {n} bytes from {}: {}",
        callsign(&from[2..9]),
        hex(&buf[..n as usize])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.get(1..) {
        Some(["sniff", iface, secs]) => sniff(iface, secs.parse().expect("SECONDS")),
        Some(["recv", port, me, peer, secs]) => {
            recv(port, me, peer, secs.parse().expect("SECONDS"))
        }
        _ => {
            eprintln!("usage: axguest sniff IFACE SECONDS | recv PORTCALL MYCALL PEER SECONDS");
            exit(2)
        }
    }
}
