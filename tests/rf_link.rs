//! The RF link layer of the real daemon (issue #5) over real TNCs: in-process
//! daemons whose `[rf] tnc` is a Direwolf of the virtual radio channel
//! (`tests/common/rf.rs`, over KISS-TCP or a serial pty), a fake KISS TNC
//! that comes and goes, and meshnode's kernel AX.25 driver inside the
//! test VM (`tests/common/rfvm.rs`). Real time: in the nextest `serial`
//! group. Needs direwolf and python3 (socat for the serial test; QEMU and
//! friends for the VM); skips with a reason without them.

mod common;
#[path = "common/rf.rs"]
mod rf;
#[path = "common/rfvm.rs"]
mod rfvm;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestNode;
use meshnode::rf::airtime::{Model, worst_hdlc_bits};
use meshnode::rf::ax25::{self as mx25, Address};
use meshnode::rf::beacon::Beacon;
use meshnode::rf::kiss;
use rf::{RfChannel, RfOptions};
use serde_json::Value;

/// The two stations of the channel tests: callsign, SSID, label.
const A: (&str, u8, &str) = ("N1ALF", 3, "alpha");
const B: (&str, u8, &str) = ("N2BRV", 4, "bravo");
/// The background budget of the channel tests: the most config allows.
const BUDGET: f64 = 0.10;

/// `[rf]` for a daemon on `tnc` at 9600 bd with the harness's TXDELAY 100
/// ms and TXTAIL 20 ms, beacons every second (more than the budget
/// allows: the cap decides when they go) and IDs every 10 s.
fn rf_section(tnc: &str, ssid: u8) -> String {
    format!(
        "[rf]\nenabled = true\ntnc = \"{tnc}\"\nbitrate = 9600\nssid = {ssid}\n\
         airtime_budget = {BUDGET}\nbeacon_interval = \"1s\"\nid_interval = \"10s\"\n\
         txdelay = \"100ms\"\ntxtail = \"20ms\"\n"
    )
}

async fn status(n: &TestNode) -> Value {
    n.ctl.get("/api/v1/status").await.expect("status")
}

/// Polls `n`'s status until `ok` holds; panics with the last status after
/// `within`.
async fn wait_status(
    n: &TestNode,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(n).await;
        if ok(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; rf status: {:#}",
            s["rf"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn station<'a>(s: &'a Value, call: &str) -> Option<&'a Value> {
    s["rf"]["stations"]
        .as_array()?
        .iter()
        .find(|st| st["callsign"] == call)
}

fn call((c, ssid, _): (&str, u8, &str)) -> String {
    format!("{c}-{ssid}")
}

fn node_name((c, _, label): (&str, u8, &str)) -> String {
    format!("{c}-{label}")
}

/// Two daemons, each on a Direwolf of one channel at 9600 bd: they hear each
/// other's service beacons (the status lists the other station with its
/// node name, and the mode becomes rf-only: no uplink, no IP peer), every
/// frame on the air (heard by the monitor, an independent receiver) has one
/// of the two configured callsigns with its SSID as source, both identify,
/// and the airtime the channel measured for each station stays within
/// budget x elapsed + one burst (+ the IDs, which are outside the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_hear_each_other_within_the_airtime_budget() {
    let test = "two_daemons_hear_each_other_within_the_airtime_budget";
    if rf::skip_unless_available(test) {
        return;
    }
    let ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        monitor: true,
        // p-persistence with 10 ms slots: two stations ready in the same
        // tick do not key up together every time
        persist: 63,
        ..Default::default()
    });
    let t0 = Instant::now();
    let tnc = |i: usize| format!("kiss-tcp://{}", ch.kiss_addr(i));
    let a = TestNode::start_named(A.0, A.2, &rf_section(&tnc(0), A.1)).await;
    let b = TestNode::start_named(B.0, B.2, &rf_section(&tnc(1), B.1)).await;
    let (call_a, call_b) = (call(A), call(B));

    // the mode follows within a second (the RF task's refresh)
    let sa = wait_status(&a, Duration::from_secs(40), "A hears B's beacon", |s| {
        station(s, &call_b).is_some_and(|st| st["node"] == node_name(B)) && s["mode"] == "rf-only"
    })
    .await;
    let sb = wait_status(&b, Duration::from_secs(40), "B hears A's beacon", |s| {
        station(s, &call_a).is_some_and(|st| st["node"] == node_name(A)) && s["mode"] == "rf-only"
    })
    .await;
    let heard_at = t0.elapsed();
    for (s, me) in [(&sa, &call_a), (&sb, &call_b)] {
        assert_eq!(s["rf"]["connected"], true, "{:#}", s["rf"]);
        assert_eq!(s["rf"]["callsign"], *me);
    }
    let other = station(&sa, &call_b).unwrap();
    assert_eq!(
        other["catalog_digest"],
        status(&b).await["mesh"]["catalog_digest"],
        "the beacon carries the catalog summary"
    );

    // let the budget decide for a while: beacons are wanted every second,
    // the cap allows one every ~1.9 s
    let run_for = Duration::from_secs(20);
    while t0.elapsed() < heard_at + run_for {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (fa, fb) = (status(&a).await, status(&b).await);
    a.daemon.shutdown().await.unwrap();
    b.daemon.shutdown().await.unwrap();
    let elapsed = t0.elapsed();
    // the last transmissions leave the TNCs
    tokio::time::sleep(Duration::from_secs(2)).await;

    // every frame on the air came from one of the two stations
    let heard = ch.monitor().frames();
    assert!(heard.len() >= 8, "monitor heard only {heard:?}");
    for h in &heard {
        assert!(
            h.src == call_a || h.src == call_b,
            "a frame with source {} on the air: {}",
            h.src,
            rf::hex(&h.frame)
        );
    }
    let count = |src: &str, dest: &str| {
        heard
            .iter()
            .filter(|h| h.src == src && h.dest == dest)
            .count()
    };
    let ids = [count(&call_a, "ID"), count(&call_b, "ID")];
    let beacons = [count(&call_a, "MESHND"), count(&call_b, "MESHND")];
    assert!(ids[0] >= 1 && ids[1] >= 1, "both identify: {ids:?}");
    for h in heard.iter().filter(|h| h.dest == "ID") {
        let f = mx25::Frame::decode(&h.frame, mx25::Modulo::Eight).unwrap();
        assert_eq!(
            String::from_utf8_lossy(f.info()),
            h.src,
            "the ID text is the callsign"
        );
    }

    // airtime as the channel measured it (audio samples per burst)
    let model = Model {
        bitrate: 9600,
        txdelay: 100_000,
        txtail: 20_000,
    };
    let depth_ms =
        (model.txdelay + model.txtail + model.bits_us(worst_hdlc_bits(16 + 128))) as f64 / 1000.0;
    let id_frame = meshnode::rf::ident::id_frame(Address::parse(&call_a).unwrap());
    let id_alone_ms = model.burst_us([&id_frame[..]]) as f64 / 1000.0;
    let tx = ch.airtime();
    // RF_LINK_DUMP=1: every transmission (station, start, audio length) and
    // every frame the monitor heard, in channel time
    if std::env::var_os("RF_LINK_DUMP").is_some() {
        let t0 = tx.first().map(|t| t.start).unwrap();
        for t in &tx {
            eprintln!(
                "{} {:.3} {:?}",
                t.station,
                t.start.duration_since(t0).unwrap().as_secs_f64(),
                t.audio()
            );
        }
        for h in &heard {
            eprintln!(
                "heard {} {} {:.3}",
                h.src,
                h.dest,
                h.at.duration_since(t0).unwrap_or_default().as_secs_f64()
            );
        }
    }
    for (i, (me, st)) in [(&call_a, &fa), (&call_b, &fb)].into_iter().enumerate() {
        let bursts: Vec<&rf::TxInterval> = tx
            .iter()
            .filter(|t| t.station == i && t.audio().is_some())
            .collect();
        let used_ms: f64 = bursts
            .iter()
            .map(|t| t.audio().unwrap().as_secs_f64() * 1000.0)
            .sum();
        // IDs are outside the budget: at most a standalone ID's airtime
        // each; a few ms of Direwolf's own flags per burst
        let allowed_ms = BUDGET * elapsed.as_secs_f64() * 1000.0
            + depth_ms
            + ids[i] as f64 * id_alone_ms
            + bursts.len() as f64 * 5.0;
        let reported = &st["rf"]["airtime"];
        eprintln!(
            "{me}: {} bursts, {used_ms:.0} ms of audio in {:.1} s = {:.2} % (budget {:.0} %, allowed {allowed_ms:.0} ms incl. depth {depth_ms:.0} ms and {} IDs); \
             status said background {} ms + ID {} ms; {} beacons and {} IDs on the monitor",
            bursts.len(),
            elapsed.as_secs_f64(),
            used_ms / elapsed.as_secs_f64() / 10.0,
            BUDGET * 100.0,
            ids[i],
            reported["total_background_ms"],
            reported["total_id_ms"],
            beacons[i],
            ids[i],
        );
        assert!(
            used_ms <= allowed_ms,
            "{me} used {used_ms:.0} ms > {allowed_ms:.0} ms"
        );
        // the cap, not the 1 s interval, paced the beacons: well under one a second
        assert!(
            (beacons[i] as f64) < elapsed.as_secs_f64() * 0.8,
            "{me}: {} beacons in {elapsed:?}",
            beacons[i]
        );
        assert!(beacons[i] >= 5, "{me}: only {} beacons heard", beacons[i]);
    }
    eprintln!(
        "heard each other after {heard_at:?}; {} frames on the air",
        heard.len()
    );
}

/// A TNC that is not there, then comes, goes and comes back: the KISS-TCP
/// driver reconnects by itself each time; the status says why it is down
/// and when it is up; the first thing on a new link is the ID, then the
/// beacon, both from the station's callsign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiss_tcp_driver_reconnects_by_itself() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let n = TestNode::start_named(
        A.0,
        A.2,
        &rf_section(&format!("kiss-tcp://127.0.0.1:{port}"), A.1),
    )
    .await;
    let s = wait_status(&n, Duration::from_secs(10), "down: nothing listens", |s| {
        s["rf"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused"))
    })
    .await;
    assert_eq!(s["rf"]["connected"], false);

    // the TNC appears
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let t = Instant::now();
    let (mut tnc, _) = tokio::time::timeout(Duration::from_secs(40), listener.accept())
        .await
        .expect("the driver connects within its backoff")
        .unwrap();
    let first = t.elapsed();
    wait_status(&n, Duration::from_secs(5), "up", |s| {
        s["rf"]["connected"] == true
    })
    .await;
    let frames = read_kiss_frames(&mut tnc, 2, Duration::from_secs(10)).await;
    let parsed: Vec<mx25::Frame> = frames
        .iter()
        .map(|f| mx25::Frame::decode(f, mx25::Modulo::Eight).unwrap())
        .collect();
    assert_eq!(
        parsed[0].to_string(),
        format!("{}>ID: UI pid=f0 C len={}", call(A), call(A).len())
    );
    assert_eq!(parsed[1].dst().callsign(), "MESHND");
    assert_eq!(parsed[1].src().to_string(), call(A));
    let b = Beacon::from_frame(&parsed[1]).unwrap().unwrap();
    assert_eq!(b.name, node_name(A));
    let m = n.get("127.0.0.1", "/metrics", &[]).await.text();
    assert!(m.contains("\nmeshnode_rf_connected 1\n"), "{m}");
    assert!(
        m.contains("meshnode_rf_airtime_ms_total{lane=\"background\"}"),
        "{m}"
    );

    // the TNC goes away: noticed at once, back by itself after 1 s
    drop(tnc);
    let t = Instant::now();
    wait_status(&n, Duration::from_secs(5), "down after the TNC left", |s| {
        s["rf"]["connected"] == false
    })
    .await;
    let noticed = t.elapsed();
    let (_tnc, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("reconnected")
        .unwrap();
    wait_status(&n, Duration::from_secs(5), "up again", |s| {
        s["rf"]["connected"] == true
    })
    .await;
    let again = t.elapsed();
    eprintln!(
        "first connection {first:?} after the TNC appeared; loss noticed in {noticed:?}; reconnected {again:?} after the loss"
    );
    assert!(again < Duration::from_secs(4), "{again:?}");
    n.daemon.shutdown().await.unwrap();
}

/// Reads `count` KISS data frames from a fake TNC's socket.
async fn read_kiss_frames(
    s: &mut tokio::net::TcpStream,
    count: usize,
    within: Duration,
) -> Vec<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut dec = kiss::Decoder::default();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < count {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("frames from the driver")
            .unwrap();
        assert!(n > 0, "the driver closed the connection");
        for ev in dec.push(&buf[..n]) {
            if let kiss::Event::Frame(f) = ev {
                assert_eq!((f.port(), f.command()), (0, kiss::Command::Data));
                out.push(f.into_payload());
            }
        }
    }
    out
}

/// The serial driver on a pty that behaves like a serial KISS TNC (socat
/// to a Direwolf's KISS port): the daemon's beacon comes out on the other
/// station, and a beacon sent there appears in the daemon's station table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kiss_serial_driver_through_a_pty() {
    let test = "the_kiss_serial_driver_through_a_pty";
    if rf::skip_unless_available(test) || rf::skip_unless_tools(test, &["socat"]) {
        return;
    }
    let mut ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        ..Default::default()
    });
    let tty = ch.serial_tty(0);
    let n = TestNode::start_named(
        A.0,
        A.2,
        &rf_section(&format!("kiss-serial://{}?baud=9600", tty.display()), A.1),
    )
    .await;
    let s = wait_status(&n, Duration::from_secs(10), "serial TNC open", |s| {
        s["rf"]["connected"] == true
    })
    .await;
    assert!(
        s["rf"]["via"].as_str().unwrap().contains("kiss-serial"),
        "{:#}",
        s["rf"]
    );
    let addr = ch.kiss_addr(1);
    let got = tokio::task::spawn_blocking(move || {
        let mut host = rf::kiss::Client::connect(addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(f) = host.recv(Duration::from_secs(1))
                && let Ok(fr) = mx25::Frame::decode(&f, mx25::Modulo::Eight)
                && let Ok(Some(b)) = Beacon::from_frame(&fr)
            {
                let other = Beacon {
                    name: "N9TST-test".into(),
                    records: 7,
                    fingerprint: 0x0123_4567_89ab_cdef,
                    seq: 41,
                    http_port: None,
                    key_prefix: None,
                    neighbours: vec![],
                };
                host.send(&other.frame(Address::parse("N9TST-1").unwrap()));
                return Some((fr.src().to_string(), b.name));
            }
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        Some((call(A), node_name(A))),
        "the daemon's beacon through the pty"
    );
    let s = wait_status(
        &n,
        Duration::from_secs(20),
        "the host's beacon through the pty",
        |s| station(s, "N9TST-1").is_some_and(|st| st["node"] == "N9TST-test"),
    )
    .await;
    assert_eq!(
        station(&s, "N9TST-1").unwrap()["catalog_digest"],
        "7-0123456789abcdef"
    );
    n.daemon.shutdown().await.unwrap();
}

/// Where the kernel has no AX.25 (the build machines), `tnc = "ax25:..."`
/// leaves the node running and says why RF is not connected, in words.
#[tokio::test]
async fn without_kernel_ax25_the_status_says_so() {
    let probe = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Ax25,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    );
    if !matches!(probe, Err(nix::errno::Errno::EAFNOSUPPORT)) {
        println!("SKIP without_kernel_ax25_the_status_says_so: this kernel has AX.25");
        return;
    }
    let n = TestNode::start_named(A.0, A.2, &rf_section("ax25:radio", A.1)).await;
    let s = wait_status(&n, Duration::from_secs(10), "the reason", |s| {
        !s["rf"]["reason"].is_null() && s["rf"]["reason"] != "connecting to the TNC"
    })
    .await;
    assert_eq!(s["rf"]["reason"], meshnode::rf::driver::kernel::NO_AX25);
    assert_eq!(s["rf"]["connected"], false);
    n.daemon.shutdown().await.unwrap();
}

/// RF off: the status says so (and nothing transmits).
#[tokio::test]
async fn rf_off_says_why() {
    let n = TestNode::start("").await;
    let s = status(&n).await;
    assert_eq!(s["rf"]["enabled"], false);
    assert!(
        s["rf"]["reason"]
            .as_str()
            .unwrap()
            .contains("enabled = false")
    );
    n.daemon.shutdown().await.unwrap();
}

/// meshnode's kernel AX.25 driver (the daemon's own source files, built
/// into a small static program, `tests/rf/guest`) inside the VM, on the
/// port `radio` whose ax0 is attached to station 0 of the channel: the
/// frame it sends comes out of station 1's KISS port byte-exact, and the
/// frame the host sends there reaches it byte-exact.
#[test]
fn the_kernel_ax25_driver_in_a_vm() {
    let test = "the_kernel_ax25_driver_in_a_vm";
    if rf::skip_unless_available(test) || rfvm::skip_unless_available(test) {
        return;
    }
    let t0 = Instant::now();
    let (guest_bin, build) = rfvm::static_cargo_binary(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rf/guest"),
        "rfguest",
    );
    assert!(
        rfvm::is_static_elf(&guest_bin),
        "{} is not static",
        guest_bin.display()
    );
    let size = std::fs::metadata(&guest_bin).unwrap().len();
    let ch = RfChannel::start(RfOptions {
        stations: 2,
        modem: 9600,
        monitor: true,
        ..Default::default()
    });
    let mut host = rf::kiss::Client::connect(ch.kiss_addr(1));
    let work = tempfile::Builder::new()
        .prefix("meshnode-rflink-")
        .tempdir()
        .unwrap();
    const GUEST_SRC: &str = "N0VM-7";
    const HOST: &str = "N0HOST";
    const TEXT: &str = "hello from the meshnode driver";
    let script = format!("rfguest radio {GUEST_SRC} {HOST} \"{TEXT}\" 40\n");
    let prepared = t0.elapsed();
    let vm = rfvm::AxVm::start(
        work.path(),
        &script,
        &[&guest_bin],
        ch.kiss_addr(0),
        Duration::from_secs(120),
    );

    // guest -> host, byte-exact (expected bytes from the harness's own encoder)
    let expected = rf::ax25::ui_frame(HOST, GUEST_SRC, TEXT.as_bytes());
    let got = host.recv(Duration::from_secs(90)).unwrap_or_else(|| {
        panic!(
            "no frame from the guest; console:\n{}\n{}",
            vm.console(),
            ch.logs()
        )
    });
    assert_eq!(rf::hex(&got), rf::hex(&expected), "the driver's frame");
    // host -> guest
    let info = b"reply to the driver \xc0\xdb over the air";
    let reply = rf::ax25::ui_frame(rfvm::GUEST_CALL, HOST, info);
    host.send(&reply);
    let out = vm.finish();
    assert!(!out.timed_out, "VM timed out:\n{}", out.console);
    assert_eq!(out.script_exit, Some(0), "guest:\n{}", out.console);
    let up = out.lines_starting("rfguest: up via ");
    assert_eq!(
        up,
        ["rfguest: up via ax25 port radio (ax0, N0VM)"],
        "{}",
        out.console
    );
    assert_eq!(
        out.lines_starting("rfguest: heard "),
        [format!("rfguest: heard {}", rf::hex(&reply))],
        "{}",
        out.console
    );
    let on_air: Vec<(String, String)> = ch
        .monitor()
        .wait_frames(2, Duration::from_secs(5))
        .iter()
        .map(|h| (h.src.clone(), rf::hex(&h.frame)))
        .collect();
    assert_eq!(
        on_air,
        [
            (GUEST_SRC.to_string(), rf::hex(&expected)),
            (HOST.to_string(), rf::hex(&reply))
        ]
    );
    eprintln!(
        "rf guest: built in {build:?} ({size} bytes static); prepared in {prepared:?}; VM ran {:?}; total {:?}",
        out.elapsed,
        t0.elapsed()
    );
}
