//! The raw system calls of the kernel AX.25 driver that nix does not wrap:
//! a packet socket bound to one interface and protocol (nix cannot build a
//! `sockaddr_ll`, nor take `ETH_P_AX25` as a protocol), and an `AF_AX25`
//! datagram socket (nix has no AX.25 addresses). Everything unsafe in the
//! RF code is here, each block with why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;
use tokio::io::unix::AsyncFd;

/// `ETH_P_AX25` from `<linux/if_ether.h>`: AX.25 frames on an AX.25
/// interface, each led by its KISS type byte.
pub const ETH_P_AX25: u16 = 0x0002;
/// `SOL_AX25` from `<linux/ax25.h>`.
const SOL_AX25: libc::c_int = 257;
/// `AX25_PIDINCL`: the first byte of each datagram is the PID, so that
/// what we send is exactly PID + info (shared/RF.md, kernel quirk 4).
const AX25_PIDINCL: libc::c_int = 8;
/// `AX25_MAX_DIGIS`.
const AX25_MAX_DIGIS: usize = 8;

/// `struct sockaddr_ax25` (16 bytes: family, 7 address bytes, padding,
/// digipeater count).
#[repr(C)]
struct SockaddrAx25 {
    family: libc::sa_family_t,
    call: [u8; 7],
    ndigis: libc::c_int,
}

/// `struct full_sockaddr_ax25` (72 bytes): the address and up to 8
/// digipeaters; in `bind`, digipeater 0 names the interface by its
/// callsign.
#[repr(C)]
struct FullSockaddrAx25 {
    ax25: SockaddrAx25,
    digis: [[u8; 7]; AX25_MAX_DIGIS],
}

/// Registers a non-blocking descriptor with tokio's reactor.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that it alone closes, and
    // its `as_raw_fd` is the same number for as long as it lives, which is
    // as long as the `AsyncFd` that owns it.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn new_socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers; the result is checked.
    let fd = check(unsafe { libc::socket(domain, ty | flags, proto) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking `PF_PACKET` raw socket bound to interface `ifindex` and
/// protocol [`ETH_P_AX25`]: it reads every AX.25 frame the interface
/// receives (not the ones it sends), led by the KISS type byte. Needs
/// CAP_NET_RAW.
pub fn packet_socket(ifindex: i32) -> io::Result<OwnedFd> {
    let proto = ETH_P_AX25.to_be();
    let fd = new_socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto))?;
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: proto,
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `sll` is a complete sockaddr_ll that lives across the call,
    // and the length passed is its size; `fd` is an open socket.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// A non-blocking `AF_AX25` datagram socket sending as `src` on the
/// interface whose callsign is `port` (both in AX.25 address form), with
/// `AX25_PIDINCL` on. No capability is needed (with the kernel's default
/// `ax25_uid_policy`).
pub fn ax25_dgram_socket(src: [u8; 7], port: [u8; 7]) -> io::Result<OwnedFd> {
    let fd = new_socket(libc::AF_AX25, libc::SOCK_DGRAM, 0)?;
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int that lives across the call, and
    // its size is passed; `fd` is an open socket.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_AX25,
            AX25_PIDINCL,
            (&raw const one).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    let mut digis = [[0u8; 7]; AX25_MAX_DIGIS];
    digis[0] = port;
    let addr = FullSockaddrAx25 {
        ax25: SockaddrAx25 {
            family: libc::AF_AX25 as libc::sa_family_t,
            call: src,
            ndigis: 1,
        },
        digis,
    };
    // SAFETY: `addr` is a full_sockaddr_ax25 as <linux/ax25.h> lays it out
    // (repr(C)), alive across the call, and its size is passed.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<FullSockaddrAx25>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Sends `data` (PID, then info) as a UI frame to `dst` (AX.25 address
/// form, no digipeaters) on a socket from [`ax25_dgram_socket`].
pub fn ax25_send_to(fd: BorrowedFd<'_>, dst: [u8; 7], data: &[u8]) -> io::Result<usize> {
    let addr = SockaddrAx25 {
        family: libc::AF_AX25 as libc::sa_family_t,
        call: dst,
        ndigis: 0,
    };
    // SAFETY: `data` and `addr` are valid for the lengths passed and live
    // across the call; `fd` is an open socket.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            data.as_ptr().cast::<libc::c_void>(),
            data.len(),
            0,
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<SockaddrAx25>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts the kernel expects (`<linux/ax25.h>`).
    #[test]
    fn sockaddr_layouts() {
        assert_eq!(size_of::<SockaddrAx25>(), 16);
        assert_eq!(std::mem::offset_of!(SockaddrAx25, call), 2);
        assert_eq!(std::mem::offset_of!(SockaddrAx25, ndigis), 12);
        assert_eq!(size_of::<FullSockaddrAx25>(), 72);
    }
}
