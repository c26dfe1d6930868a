//! The Linux kernel AX.25 stack (Debian's stock kernel in a QEMU VM, see
//! `tests/common/rfvm.rs`) on the virtual radio channel
//! (`tests/common/rf.rs`): the guest's ax0 is a KISS TNC of the channel, the
//! host is a KISS client of another one. Needs direwolf, python3,
//! qemu-system-x86, cpio, rustc and `apt-get download` access (or a filled
//! cache in target/tmp/rfvm-cache); skips without them.

#[path = "common/rf.rs"]
mod rf;
#[path = "common/rfvm.rs"]
mod rfvm;

use std::path::Path;
use std::time::{Duration, Instant};

use rf::{RfChannel, RfOptions, ax25, kiss};
use rfvm::{AxVm, GUEST_CALL};

const HOST_CALL: &str = "N0HOST";
/// The guest's source callsign for its beacon (the port callsign is N0VM).
const GUEST_SRC: &str = "N0VM-1";
const GUEST_TEXT: &str = "hello from kernel AX.25";

/// The guest script: start two receivers (PF_PACKET sniffer, AF_AX25
/// datagram socket), send a UI frame with ax25-tools' `beacon`, then wait
/// for the host's answer and print what the receivers got.
fn guest_script() -> String {
    format!(
        r#"
axguest sniff ax0 40 > /tmp/sniff.txt 2>&1 &
axguest recv {GUEST_CALL} {GUEST_CALL} {HOST_CALL} 40 > /tmp/recv.txt 2>&1 &
i=0
until grep -q ready /tmp/sniff.txt && grep -q ready /tmp/recv.txt; do
    i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.1
done
echo "GUEST: receivers ready"
beacon -s -c {GUEST_SRC} -d APZMSH radio "{GUEST_TEXT}" && echo "GUEST: beacon sent"
ok=0
wait %1 || ok=1
wait %2 || ok=1
cat /tmp/sniff.txt /tmp/recv.txt
exit $ok
"#
    )
}

/// Guest -> host: a UI frame sent with the kernel stack (`beacon`, AF_AX25
/// SOCK_DGRAM) comes out of another station's KISS port byte-exact.
/// Host -> guest: a UI frame sent into that KISS port reaches a PF_PACKET
/// sniffer and an AF_AX25 datagram socket in the guest, both run by a static
/// Rust binary. The monitor sees exactly these two frames on the air.
#[test]
fn kernel_ax25_exchanges_ui_frames_over_the_channel() {
    let test = "kernel_ax25_exchanges_ui_frames_over_the_channel";
    if rf::skip_unless_available(test) || rfvm::skip_unless_available(test) {
        return;
    }
    let t0 = Instant::now();
    let axguest = rfvm::static_rust_binary(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rf/vm/axguest.rs"),
    );
    assert!(
        rfvm::is_static_elf(&axguest),
        "{} is not static",
        axguest.display()
    );
    let ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        monitor: true,
        ..Default::default()
    });
    let mut host = kiss::Client::connect(ch.kiss_addr(1));
    let work = tempfile::Builder::new()
        .prefix("meshnode-rfvm-")
        .tempdir()
        .unwrap();
    let prepared = t0.elapsed();
    let mut vm = AxVm::start(
        work.path(),
        &guest_script(),
        &[&axguest],
        ch.kiss_addr(0),
        Duration::from_secs(90),
    );

    // Guest -> host.
    let expected = ax25::ui_frame("APZMSH", GUEST_SRC, GUEST_TEXT.as_bytes());
    let got = host.recv(Duration::from_secs(60)).unwrap_or_else(|| {
        panic!(
            "no frame from the guest; console:\n{}\n{}",
            vm.console(),
            ch.logs()
        )
    });
    assert_eq!(rf::hex(&got), rf::hex(&expected), "the guest's UI frame");
    let guest_sent = t0.elapsed();

    // Host -> guest, once its receivers are open.
    vm.wait_console("GUEST: receivers ready", Duration::from_secs(30));
    let info = b"reply from host \xc0\xdb over the air";
    let reply = ax25::ui_frame(GUEST_CALL, HOST_CALL, info);
    host.send(&reply);
    let out = vm.finish();
    eprintln!(
        "prepared in {prepared:?}, guest frame at {guest_sent:?}, VM ran {:?}\n{}",
        out.elapsed, out.console
    );
    assert!(!out.timed_out, "VM timed out:\n{}", out.console);
    assert_eq!(out.script_exit, Some(0), "guest script:\n{}", out.console);
    // PF_PACKET data: the KISS command byte, then the AX.25 frame.
    let sniffed = format!(
        "axguest: sniffed {} bytes: 00{}",
        reply.len() + 1,
        rf::hex(&reply)
    );
    assert_eq!(
        out.lines_starting("axguest: sniffed ")[0],
        sniffed,
        "{}",
        out.console
    );
    // AF_AX25 datagram with AX25_PIDINCL: exactly the info field.
    let received = format!(
        "axguest: received {} bytes from {HOST_CALL}: {}",
        info.len(),
        rf::hex(info)
    );
    assert_eq!(
        out.lines_starting("axguest: received "),
        [received],
        "{}",
        out.console
    );

    // Everything on the air: the guest's frame, then the host's.
    let heard = ch.monitor().wait_frames(2, Duration::from_secs(5));
    let on_air: Vec<(String, String)> = heard
        .iter()
        .map(|h| (h.src.clone(), rf::hex(&h.frame)))
        .collect();
    assert_eq!(
        on_air,
        [
            (GUEST_SRC.to_string(), rf::hex(&expected)),
            (HOST_CALL.to_string(), rf::hex(&reply))
        ],
        "frames on the air"
    );
    eprintln!("total {:?}", t0.elapsed());
}
