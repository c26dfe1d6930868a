//! Tests of the virtual radio channel itself (`tests/common/rf.rs`,
//! `tests/rf/mixer.py`): real Direwolf soft TNCs exchanging KISS-framed
//! AX.25 UI frames over the simulated channel. They need `direwolf` and
//! `python3` (`socat` for the serial test) and skip without them.
//!
//! Debugging by hand: `RF_HOLD_SECS=600 cargo test --test rf_channel
//! hold_channel_for_manual_use -- --ignored --nocapture` starts a channel
//! and prints its KISS ports (see tests/rf/README.md).

#[path = "common/rf.rs"]
mod rf;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rf::{RfChannel, RfOptions, ax25, kiss};

/// Generous: the first frame after start-up is delayed by about 0.5 s, and
/// the machine may be busy compiling.
const ARRIVAL: Duration = Duration::from_secs(10);
/// How long a station that must not hear a frame is watched after another
/// station heard it.
const SILENCE: Duration = Duration::from_secs(1);

fn nine_k6(stations: usize) -> RfOptions {
    RfOptions {
        stations,
        modem: 9600,
        ..Default::default()
    }
}

/// Info field with every KISS special byte, so escaping is exercised both
/// ways (client -> TNC and TNC -> client).
fn binary_info(tag: &str) -> Vec<u8> {
    let mut info = format!("{tag}:").into_bytes();
    info.extend([0xC0, 0xDB, 0xDC, 0xDD, 0x00, 0xFF, 0xC0, 0xC0, 0xDB, 0xDB]);
    info.extend((0..64u8).map(|i| b'a' + i % 26));
    info
}

#[test]
fn frame_crosses_the_channel_byte_exact_at_9600() {
    let test = "frame_crosses_the_channel_byte_exact_at_9600";
    if rf::skip_unless_available(test) {
        return;
    }
    let ch = RfChannel::start(nine_k6(2));
    let mut a = kiss::Client::connect(ch.kiss_addr(0));
    let mut b = kiss::Client::connect(ch.kiss_addr(1));

    let there = ax25::ui_frame("APZMSH", &ch.callsign(0), &binary_info("0to1"));
    a.send(&there);
    let got = b.recv(ARRIVAL);
    assert_eq!(
        got.as_deref().map(rf::hex),
        Some(rf::hex(&there)),
        "station 1 did not get station 0's frame byte-exact\n{}",
        ch.logs()
    );

    let back = ax25::ui_frame(&ch.callsign(0), &ch.callsign(1), &binary_info("1to0"));
    b.send(&back);
    let got = a.recv(ARRIVAL);
    assert_eq!(
        got.as_deref().map(rf::hex),
        Some(rf::hex(&back)),
        "station 0 did not get station 1's frame byte-exact\n{}",
        ch.logs()
    );
    // Half duplex and no KISS echo: the sender's own client gets nothing.
    assert_eq!(a.recv(Duration::from_millis(300)), None);
}

#[test]
fn hidden_terminals_do_not_hear_each_other() {
    let test = "hidden_terminals_do_not_hear_each_other";
    if rf::skip_unless_available(test) {
        return;
    }
    // 0 - 1 - 2: the ends only hear the middle station.
    let ch = RfChannel::start(RfOptions {
        links: Some(vec![(0, 1), (1, 2)]),
        ..nine_k6(3)
    });
    let mut k: Vec<kiss::Client> = (0..3)
        .map(|i| kiss::Client::connect(ch.kiss_addr(i)))
        .collect();

    for (from, hidden) in [(0, 2), (2, 0)] {
        let frame = ax25::ui_frame(
            "APZMSH",
            &ch.callsign(from),
            format!("from {from}").as_bytes(),
        );
        k[from].send(&frame);
        assert_eq!(
            k[1].recv(ARRIVAL).as_deref(),
            Some(&frame[..]),
            "the middle station did not hear station {from}\n{}",
            ch.logs()
        );
        // The burst is over once the middle station decoded it (plus the
        // tail); anything the hidden station would decode arrives by now.
        let heard = k[hidden].recv(SILENCE);
        assert_eq!(
            heard.as_deref().map(rf::hex),
            None,
            "station {hidden} heard station {from} through a missing link"
        );
    }
    let tx: Vec<usize> = ch.airtime().iter().map(|t| t.station).collect();
    assert_eq!(tx, [0, 2], "transmissions on the channel");
}

#[test]
fn monitor_hears_every_transmitter_with_its_source() {
    let test = "monitor_hears_every_transmitter_with_its_source";
    if rf::skip_unless_available(test) {
        return;
    }
    // Hidden terminals again: no station hears both ends, the monitor must.
    let ch = RfChannel::start(RfOptions {
        links: Some(vec![(0, 1), (1, 2)]),
        monitor: true,
        ..nine_k6(3)
    });
    let mut sent = Vec::new();
    for i in [0, 2, 1] {
        let mut c = kiss::Client::connect(ch.kiss_addr(i));
        let frame = ax25::ui_frame("APZMSH", &ch.callsign(i), &binary_info(&format!("st{i}")));
        c.send(&frame);
        sent.push((i, frame));
        // one at a time, so that no two bursts overlap on the monitor
        ch.wait_airtime(i, 1, ARRIVAL);
    }
    let heard = ch.monitor().wait_frames(sent.len(), ARRIVAL);
    assert_eq!(heard.len(), sent.len(), "monitor heard {heard:?}");
    for ((i, frame), h) in sent.iter().zip(&heard) {
        assert_eq!(
            h.src,
            ch.callsign(*i),
            "source of a frame sent by station {i}"
        );
        assert_eq!(h.dest, "APZMSH");
        assert_eq!(rf::hex(&h.frame), rf::hex(frame), "frame of station {i}");
    }
    let log = std::fs::read_to_string(ch.dir().join("monitor.log")).unwrap();
    for (i, _) in &sent {
        assert!(
            log.contains(&format!(" {}>APZMSH ", ch.callsign(*i))),
            "monitor.log lacks station {i}:\n{log}"
        );
    }
}

#[test]
fn airtime_log_accounts_for_a_transmission() {
    let test = "airtime_log_accounts_for_a_transmission";
    if rf::skip_unless_available(test) {
        return;
    }
    let ch = RfChannel::start(nine_k6(2));
    let opts = ch.options().clone();
    let mut a = kiss::Client::connect(ch.kiss_addr(0));
    let mut b = kiss::Client::connect(ch.kiss_addr(1));

    // A warm-up frame: the first one after start-up is held back ~0.5 s.
    let warm = ax25::ui_frame("APZMSH", &ch.callsign(0), b"warm-up");
    a.send(&warm);
    assert!(
        b.recv(ARRIVAL).is_some(),
        "warm-up frame lost\n{}",
        ch.logs()
    );
    ch.wait_airtime(0, 1, ARRIVAL);

    let frame = ax25::ui_frame("APZMSH", &ch.callsign(0), &[b'x'; 200]);
    let sent = SystemTime::now();
    a.send(&frame);
    assert_eq!(
        b.recv(ARRIVAL).as_deref(),
        Some(&frame[..]),
        "{}",
        ch.logs()
    );
    let received = SystemTime::now();
    let tx = ch.wait_airtime(0, 2, ARRIVAL);
    let t = &tx[1];

    // 216 bytes + FCS + flag at 9600 bit/s is 182 ms, plus TXDELAY 100 ms
    // and TXTAIL 20 ms: about 0.3 s. Loose bounds: this checks that the
    // accounting works, not Direwolf's timing.
    let (lo, hi) = rf::burst_airtime(&[&frame], opts.modem, opts.txdelay, opts.txtail);
    let audio = t.audio().expect("sample count");
    let wall = t.duration().expect("finished");
    eprintln!("ideal {lo:?}..{hi:?}, audio {audio:?}, mixer clock {wall:?}");
    assert!(
        audio >= lo.mul_f64(0.9) && audio <= hi.mul_f64(1.3),
        "audio length {audio:?} not near the ideal {lo:?}..{hi:?}"
    );
    // The mixer plays it in real time, so its clock roughly agrees; loose,
    // because a starved mixer catches up with back-to-back ticks. A mixer
    // that did not pace the audio would show (almost) zero.
    assert!(
        wall >= audio / 2 && wall <= audio + Duration::from_secs(1),
        "mixer clock {wall:?} vs audio {audio:?}"
    );
    // Causality: the burst started after the KISS write, and was decoded
    // (the frame arrived at station 1) only after it started.
    assert!(
        t.start >= sent - Duration::from_millis(20),
        "{t:?} before {sent:?}"
    );
    assert!(received >= t.start, "received {received:?} before {t:?}");
    // Nobody else transmitted.
    assert!(
        ch.airtime().iter().all(|t| t.station == 0),
        "{:?}",
        ch.airtime()
    );
}

/// The noise option reaches the receivers: moderate noise leaves a frame
/// intact, overwhelming noise destroys it (both at 9600 bd).
#[test]
fn noise_is_added_to_every_receiver() {
    let test = "noise_is_added_to_every_receiver";
    if rf::skip_unless_available(test) {
        return;
    }
    for (noise, survives) in [(1000.0, true), (30000.0, false)] {
        let ch = RfChannel::start(RfOptions {
            noise,
            ..nine_k6(2)
        });
        let mut a = kiss::Client::connect(ch.kiss_addr(0));
        let mut b = kiss::Client::connect(ch.kiss_addr(1));
        let frame = ax25::ui_frame("APZMSH", &ch.callsign(0), &binary_info("noise"));
        a.send(&frame);
        if survives {
            assert_eq!(
                b.recv(ARRIVAL).as_deref(),
                Some(&frame[..]),
                "lost in noise {noise}\n{}",
                ch.logs()
            );
        } else {
            ch.wait_airtime(0, 1, ARRIVAL);
            let got = b.recv(SILENCE);
            assert_eq!(
                got.as_deref().map(rf::hex),
                None,
                "decoded through noise {noise}"
            );
        }
    }
}

/// `socat pty ... tcp:` turns a KISS TCP port into a tty that behaves like a
/// serial TNC: KISS bytes written to it go on the air, and frames heard come
/// out of it.
#[test]
fn serial_tty_behaves_like_a_kiss_tnc() {
    let test = "serial_tty_behaves_like_a_kiss_tnc";
    if rf::skip_unless_available(test) || rf::skip_unless_tools(test, &["socat"]) {
        return;
    }
    let mut ch = RfChannel::start(nine_k6(2));
    let tty = ch.serial_tty(0);
    let mut b = kiss::Client::connect(ch.kiss_addr(1));
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
        .unwrap_or_else(|e| panic!("{}: {e}", tty.display()));
    // A reader thread: a tty has no read timeout. It ends with EIO when
    // socat goes away with the channel.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut reader = port.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });

    let out = ax25::ui_frame("APZMSH", &ch.callsign(0), &binary_info("serial"));
    port.write_all(&kiss::data(&out)).unwrap();
    assert_eq!(b.recv(ARRIVAL).as_deref(), Some(&out[..]), "{}", ch.logs());

    let back = ax25::ui_frame(&ch.callsign(0), &ch.callsign(1), &binary_info("to-tty"));
    b.send(&back);
    let mut dec = kiss::Decoder::default();
    let deadline = Instant::now() + ARRIVAL;
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(chunk) = rx.recv_timeout(left) else {
            panic!("nothing came out of the tty\n{}", ch.logs());
        };
        if let Some((cmd, f)) = dec.push(&chunk).into_iter().next() {
            break (cmd, f);
        }
    };
    assert_eq!(got.0, 0x00, "KISS command byte");
    assert_eq!(rf::hex(&got.1), rf::hex(&back));
}

/// Dropping the channel leaves no process behind (mixer, stations,
/// monitor, socat).
#[test]
fn drop_leaves_no_process() {
    let test = "drop_leaves_no_process";
    if rf::skip_unless_available(test) || rf::skip_unless_tools(test, &["socat"]) {
        return;
    }
    let mut ch = RfChannel::start(RfOptions {
        monitor: true,
        ..nine_k6(2)
    });
    ch.serial_tty(1);
    let pgid = ch.pgid();
    let pids = ch.pids();
    assert_eq!(pids.len(), 5, "mixer, 2 stations, monitor, socat");
    let mut members = rf::group_members(pgid);
    members.sort_unstable();
    let mut expected = pids.clone();
    expected.sort_unstable();
    assert_eq!(members, expected, "the channel's process group");
    drop(ch);
    assert_eq!(
        rf::group_members(pgid),
        Vec::<u32>::new(),
        "left in group {pgid}"
    );
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }
}

/// Env var that turns [`orphaned_channel_child`] from a no-op into the
/// helper of [`killed_test_process_leaves_no_process`].
const ORPHAN_ENV: &str = "MESHNODE_RF_ORPHAN_CHILD";

/// A test process killed outright (SIGKILL, a nextest timeout) runs no
/// destructor: the mixer notices that its parent is gone and takes the
/// whole channel down with it.
#[test]
fn killed_test_process_leaves_no_process() {
    let test = "killed_test_process_leaves_no_process";
    if rf::skip_unless_available(test) {
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    // The killed child cannot remove its channel's temp dir: give it one
    // inside ours.
    let tmp = tempfile::Builder::new()
        .prefix("meshnode-rf-orphan-")
        .tempdir()
        .unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "orphaned_channel_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_ENV, "1")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run child");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut pgid = None;
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut out, &mut line).unwrap_or(0) > 0 {
        // libtest prints "test orphaned_channel_child ... " before it
        if let Some((_, p)) = line.trim().split_once("ORPHAN-PGID: ") {
            pgid = p.parse::<u32>().ok();
            break;
        }
        line.clear();
    }
    let Some(pgid) = pgid else {
        let _ = child.kill();
        panic!("the child started no channel");
    };
    assert!(!rf::group_members(pgid).is_empty(), "channel not running");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rf::group_members(pgid).is_empty() {
        if Instant::now() > deadline {
            let left = rf::group_members(pgid);
            rf::signal_group(pgid, "KILL");
            panic!("processes {left:?} of the killed test's channel are still running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child half of [`killed_test_process_leaves_no_process`]; does
/// nothing unless started by it.
#[test]
fn orphaned_channel_child() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let ch = RfChannel::start(RfOptions {
        monitor: true,
        ..nine_k6(2)
    });
    println!("ORPHAN-PGID: {}", ch.pgid());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Not a test: keeps a channel up for debugging by hand (see the top of
/// this file). RF_STATIONS, RF_MODEM, RF_LINKS ("0-1,1-2"), RF_MONITOR=1
/// and RF_HOLD_SECS (default 300) configure it.
#[test]
#[ignore = "manual: holds a channel open for debugging"]
fn hold_channel_for_manual_use() {
    if rf::skip_unless_available("hold_channel_for_manual_use") {
        return;
    }
    let env = |k: &str| std::env::var(k).ok();
    let links = env("RF_LINKS").map(|l| {
        l.split(',')
            .map(|p| {
                let (a, b) = p.split_once('-').expect("RF_LINKS: a-b,c-d");
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    });
    let ch = RfChannel::start(RfOptions {
        stations: env("RF_STATIONS").map_or(2, |s| s.parse().unwrap()),
        modem: env("RF_MODEM").map_or(1200, |s| s.parse().unwrap()),
        links,
        monitor: env("RF_MONITOR").is_some_and(|v| v == "1"),
        ..Default::default()
    });
    for i in 0..ch.stations() {
        println!(
            "station {i}: {} KISS tcp {}",
            ch.callsign(i),
            ch.kiss_addr(i)
        );
    }
    println!(
        "dir {} (channel.log, dw<i>.log, monitor.log)",
        ch.dir().display()
    );
    let secs = env("RF_HOLD_SECS").map_or(300, |s| s.parse().unwrap());
    std::thread::sleep(Duration::from_secs(secs));
}
