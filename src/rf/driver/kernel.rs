//! The kernel's AX.25 stack as the TNC (`ax25:PORT`): a port of
//! `/etc/ax25/axports` (attached with `kissattach`, `mkiss`, a 6pack or
//! baycom driver), found by its callsign among the network interfaces.
//!
//! - **Is there AX.25?** `socket(AF_AX25)` failing with EAFNOSUPPORT means
//!   the kernel has none (the build machines' kernels, many distribution
//!   and router kernels): the driver says so in words and keeps trying (a
//!   module may be loaded later); the KISS drivers do not need it.
//! - **Which interface?** The port's callsign from axports, then the
//!   interface of type AX.25 (`ARPHRD_AX25` = 3) whose hardware address is
//!   that callsign (`/sys/class/net/*/{type,address}`), as libax25 does.
//! - **Receiving**: a `PF_PACKET` socket bound to the interface and
//!   `ETH_P_AX25` sees every frame the interface hears, led by the KISS
//!   type byte (as `axlisten` reads them); port-0 data frames go up.
//!   `AF_AX25` datagram sockets would see only UI frames addressed to the
//!   port, and only from the peer they are connected to (shared/RF.md,
//!   kernel quirk 4). Needs CAP_NET_RAW.
//! - **Sending**: an `AF_AX25` datagram socket bound to the frame's source
//!   on that interface, with `AX25_PIDINCL`: the kernel builds the same
//!   header bytes as [`crate::rf::ax25::Frame::ui`] (command C bits,
//!   reserved bits set) and needs no capability, where a packet socket
//!   would need CAP_SYS_RAWIO for frames shorter than the interface's
//!   73-byte header room. So this driver sends UI frames without a
//!   digipeater path, exactly the frames meshnode makes today; others are
//!   refused with a warning (connected mode comes with HTTP over RF).
//! - **Going away**: the interface disappears when `kissattach` exits; the
//!   packet socket then fails (ENETDOWN) or the periodic check notices, and
//!   the driver looks for the port again with its backoff.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ended, Notes, deliver, sys};
use crate::rf::ax25::{self, Address};

/// Where the ports are listed.
pub const AXPORTS: &str = "/etc/ax25/axports";
/// Where the interfaces are.
pub const SYS_NET: &str = "/sys/class/net";
/// `ARPHRD_AX25`: the link type of an AX.25 interface.
const ARPHRD_AX25: &str = "3";
/// How often the driver checks that its interface is still there.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// What the driver says when the kernel has no AX.25.
pub const NO_AX25: &str =
    "this kernel has no AX.25 (CONFIG_AX25); use a KISS TNC (kiss-tcp:// or kiss-serial://)";

/// The callsign of `port` in axports text: lines `name callsign speed
/// paclen window description`, `#` comments.
pub fn axports_callsign(text: &str, port: &str) -> Option<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == port).then(|| f.next().map(str::to_ascii_uppercase))?
        })
}

/// Whether a sysfs hardware address (`9c:60:ac:9a:40:40:60`) is `call`:
/// the callsign bytes and the SSID, as the kernel compares them.
pub fn hwaddr_is(text: &str, call: Address) -> bool {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let want = call.to_bytes();
    bytes.len() == ax25::ADDR_LEN
        && bytes[..ax25::CALL_LEN]
            .iter()
            .zip(&want[..ax25::CALL_LEN])
            .all(|(a, b)| a & 0xfe == b & 0xfe)
        && (bytes[ax25::CALL_LEN] >> 1) & 0x0f == call.ssid()
}

/// The AX.25 interface (name, index) whose address is `call`, under `sys`
/// (normally [`SYS_NET`]).
pub fn find_interface(sys: &Path, call: Address) -> Option<(String, i32)> {
    let dir = std::fs::read_dir(sys).ok()?;
    dir.filter_map(Result::ok).find_map(|e| {
        let p = e.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        if read("type")?.trim() != ARPHRD_AX25 || !hwaddr_is(&read("address")?, call) {
            return None;
        }
        let index = read("ifindex")?.trim().parse().ok()?;
        Some((e.file_name().to_string_lossy().into_owned(), index))
    })
}

/// Why a frame cannot go out through the kernel as given, if it cannot:
/// only UI frames without a path whose header the kernel builds the same.
pub fn kernel_can_send(f: &ax25::Frame) -> Result<(), &'static str> {
    if !matches!(f.control(), ax25::Control::Ui { pf: false, .. }) {
        return Err("only UI frames (P clear) go out through the kernel AX.25 driver");
    }
    if !f.path().is_empty() {
        return Err("digipeater paths are not sent through the kernel AX.25 driver yet");
    }
    if f.command_response() != ax25::CommandResponse::Command
        || f.dst().reserved_bits() != 0b11
        || f.src().reserved_bits() != 0b11
    {
        return Err("the kernel writes command frames with the reserved bits set only");
    }
    Ok(())
}

/// An open kernel AX.25 port.
#[derive(Debug)]
pub struct Port {
    port: String,
    call: Address,
    ifname: String,
    ifindex: i32,
    rx: AsyncFd<OwnedFd>,
    /// Sending sockets by source address.
    tx: HashMap<Address, AsyncFd<OwnedFd>>,
}

impl Port {
    /// Finds `port` and opens the interface for reading; see the module
    /// docs for what can fail, each said in words.
    pub async fn open(port: &str) -> Result<Port, String> {
        Self::open_with(port, Path::new(AXPORTS), Path::new(SYS_NET))
    }

    fn open_with(port: &str, axports: &Path, sys: &Path) -> Result<Port, String> {
        match nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Ax25,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            Ok(_probe) => {}
            Err(nix::errno::Errno::EAFNOSUPPORT) => return Err(NO_AX25.into()),
            Err(e) => return Err(format!("socket(AF_AX25): {e}")),
        }
        let text = std::fs::read_to_string(axports)
            .map_err(|e| format!("cannot read {}: {e}", axports.display()))?;
        let call = axports_callsign(&text, port)
            .ok_or_else(|| format!("port {port:?} is not in {}", axports.display()))?;
        let call = Address::parse(&call).map_err(|e| {
            format!(
                "port {port:?} in {} has callsign {call:?}: {e}",
                axports.display()
            )
        })?;
        let (ifname, ifindex) = find_interface(sys, call).ok_or_else(|| {
            format!(
                "no AX.25 interface has port {port:?}'s callsign {call} (is kissattach running?)"
            )
        })?;
        let fd = sys::packet_socket(ifindex).map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EPERM) | Some(nix::libc::EACCES) => {
                format!("receiving on {ifname} needs CAP_NET_RAW ({e})")
            }
            _ => format!("packet socket on {ifname}: {e}"),
        })?;
        let rx = sys::register(fd).map_err(|e| format!("registering the packet socket: {e}"))?;
        Ok(Port {
            port: port.to_string(),
            call,
            ifname,
            ifindex,
            rx,
            tx: HashMap::new(),
        })
    }

    /// `ax25 port radio (ax0, N0VM)`.
    pub fn describe(&self) -> String {
        format!("ax25 port {} ({}, {})", self.port, self.ifname, self.call)
    }

    fn still_there(&self) -> bool {
        let p = Path::new(SYS_NET).join(&self.ifname).join("ifindex");
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            == Some(self.ifindex)
    }

    /// Moves frames until the interface goes away or the link stops.
    pub(crate) async fn run(
        mut self,
        out: &mut mpsc::Receiver<Vec<u8>>,
        heard: &mpsc::Sender<Vec<u8>>,
        notes: &mut Notes,
        cancel: &CancellationToken,
    ) -> Ended {
        let mut buf = vec![0u8; ax25::MAX_FRAME + 1];
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ended::Stopped,
                r = self.rx.readable() => {
                    let mut guard = match r {
                        Ok(g) => g,
                        Err(e) => return Ended::Lost(format!("{}: {e}", self.ifname)),
                    };
                    match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(io::Error::from)) {
                        Ok(Ok(n)) => {
                            // the KISS type byte, then the frame; port 0 data only
                            match buf[..n].split_first() {
                                Some((0, frame)) => deliver(heard, frame.to_vec()),
                                _ => notes.bad_frames += 1,
                            }
                        }
                        Ok(Err(e)) => return Ended::Lost(format!("reading {}: {e}", self.ifname)),
                        Err(_would_block) => {}
                    }
                }
                f = out.recv() => {
                    let Some(frame) = f else { return Ended::Stopped };
                    if let Err(e) = self.send(&frame).await {
                        match e.raw_os_error() {
                            Some(nix::libc::ENODEV | nix::libc::ENETDOWN | nix::libc::ENETUNREACH) => {
                                return Ended::Lost(format!("sending on {}: {e}", self.ifname));
                            }
                            _ => tracing::warn!(interface = %self.ifname, error = %e, "frame not sent"),
                        }
                    }
                }
                _ = check.tick() => {
                    if !self.still_there() {
                        return Ended::Lost(format!("{} went away", self.ifname));
                    }
                }
            }
        }
    }

    async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let f = ax25::Frame::decode(frame, ax25::Modulo::Eight)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        kernel_can_send(&f).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let src = f.src().with_ch_bit(false);
        if !self.tx.contains_key(&src) {
            let fd = sys::ax25_dgram_socket(src.to_bytes(), self.call.to_bytes())?;
            self.tx.insert(src, sys::register(fd)?);
        }
        let sock = self.tx.get(&src).expect("inserted above");
        let mut data = Vec::with_capacity(1 + f.info().len());
        data.push(f.pid().unwrap_or(0xf0));
        data.extend_from_slice(f.info());
        let dst = f.dst().with_ch_bit(false).to_bytes();
        loop {
            let mut guard = sock.writable().await?;
            match guard.try_io(|fd| sys::ax25_send_to(fd.get_ref().as_fd(), dst, &data)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axports_lines() {
        let text = "# name callsign speed paclen window description\n\
                    radio\tn0vm-1\t115200\t255\t2\tvirtual serial port\n\
                    \n  vhf  N0CALL 9600 128 3 # 2 m\n";
        assert_eq!(axports_callsign(text, "radio").as_deref(), Some("N0VM-1"));
        assert_eq!(axports_callsign(text, "vhf").as_deref(), Some("N0CALL"));
        assert_eq!(axports_callsign(text, "name"), None, "a comment");
        assert_eq!(axports_callsign(text, "uhf"), None);
    }

    #[test]
    fn interfaces_by_callsign() {
        let call = Address::parse("N0VM").unwrap();
        // what kissattach sets: shifted characters, SSID octet 0x60 | ssid << 1
        assert!(hwaddr_is("9c:60:ac:9a:40:40:60\n", call));
        assert!(
            hwaddr_is("9c:60:ac:9a:40:40:00", call),
            "reserved bits do not count"
        );
        assert!(!hwaddr_is("9c:60:ac:9a:40:40:62", call), "SSID 1");
        assert!(!hwaddr_is("00:11:22:33:44:55", call));
        let dir = tempfile::tempdir().unwrap();
        for (name, ty, addr, idx) in [
            ("eth0", "1", "9c:60:ac:9a:40:40", "2"),
            ("ax0", "3", "9c:60:ac:9a:40:40:60", "7"),
            ("ax1", "3", "9c:60:ac:9a:40:40:62", "8"),
        ] {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("type"), format!("{ty}\n")).unwrap();
            std::fs::write(d.join("address"), format!("{addr}\n")).unwrap();
            std::fs::write(d.join("ifindex"), format!("{idx}\n")).unwrap();
        }
        assert_eq!(find_interface(dir.path(), call), Some(("ax0".into(), 7)));
        let one = Address::parse("N0VM-1").unwrap();
        assert_eq!(find_interface(dir.path(), one), Some(("ax1".into(), 8)));
        assert_eq!(
            find_interface(dir.path(), Address::parse("N0XX").unwrap()),
            None
        );
    }

    #[test]
    fn what_the_kernel_sends_as_given() {
        let a = Address::parse("N0CALL-1").unwrap();
        let b = Address::parse("ID").unwrap();
        let ui = ax25::Frame::ui(a, b, &[], 0xf0, *b"x").unwrap();
        assert_eq!(kernel_can_send(&ui), Ok(()));
        let via =
            ax25::Frame::ui(a, b, &[Address::parse("WIDE1-1").unwrap()], 0xf0, *b"x").unwrap();
        assert!(kernel_can_send(&via).is_err());
        let resp = ui
            .clone()
            .with_command_response(ax25::CommandResponse::Response);
        assert!(kernel_can_send(&resp).is_err());
    }

    /// Where the kernel has no AX.25 (the build machines), the driver says
    /// so in the words the operator needs; elsewhere it gets further.
    #[test]
    fn no_ax25_in_the_kernel_is_said_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let r = Port::open_with("radio", &dir.path().join("axports"), dir.path());
        let e = r.expect_err("no axports here");
        let probe = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Ax25,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        );
        if matches!(probe, Err(nix::errno::Errno::EAFNOSUPPORT)) {
            assert_eq!(e, NO_AX25);
        } else {
            assert!(e.contains("cannot read"), "{e}");
        }
    }
}
