//! A virtual packet-radio channel for tests: N Direwolf soft TNCs whose audio
//! goes through `tests/rf/mixer.py` (a real-time channel simulator) instead
//! of a sound card. Each station is a KISS-over-TCP TNC on 127.0.0.1, like a
//! real TNC next to a real radio; what one station transmits is demodulated
//! by the others, with half duplex, carrier sense, optional hidden terminals
//! and noise. See `tests/rf/README.md` for how it works and how to run it
//! by hand.
//!
//! Self-contained (standard library and `tempfile` only); include it with
//!
//! ```ignore
//! #[path = "common/rf.rs"]
//! mod rf;
//!
//! #[test]
//! fn two_stations() {
//!     if rf::skip_unless_available("two_stations") {
//!         return;
//!     }
//!     let ch = rf::RfChannel::start(rf::RfOptions { stations: 2, modem: 9600, ..Default::default() });
//!     let mut a = rf::kiss::Client::connect(ch.kiss_addr(0));
//!     let mut b = rf::kiss::Client::connect(ch.kiss_addr(1));
//!     let frame = rf::ax25::ui_frame("APZMSH", &ch.callsign(0), b"hello");
//!     a.send(&frame);
//!     assert_eq!(b.recv(std::time::Duration::from_secs(10)).as_deref(), Some(&frame[..]));
//! }
//! ```
//!
//! Facts this module is built on (Direwolf 1.6, Debian 12, measured):
//! - Direwolf has at most 3 KISS TCP clients per instance, and a readiness
//!   probe that connects takes one until Direwolf notices the close: we wait
//!   for the listening socket in `/proc/net/tcp` instead of connecting.
//! - A frame sent to a KISS port is not echoed to that port's other clients.
//! - Direwolf binds KISS, AGW and UDP audio to 0.0.0.0: every channel needs
//!   its own ports. We pick free ones, check that the Direwolf we started
//!   owns the socket (another process may take a port between our pick and
//!   its bind) and start again with other ports when not.
//! - Direwolf 1.6 never calls `srand()`: all instances draw the same
//!   p-persistence sequence, and fresh instances that contend at the same
//!   moment collide every time. We preload a one-line shim that seeds it.
//! - Frames of more than 2046 bytes are cut to 2046 and then transmitted
//!   anyway; frames under 15 bytes are dropped.
//! - A frame sent within about 1 s of start-up is delayed by about 0.5 s
//!   (later ones go out at once): tests must not time the first frame.
//! - Each Direwolf uses about 1 % of a core, the mixer 1-2 %.
#![allow(dead_code, missing_docs, missing_debug_implementations)]

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Audio sample rate of the channel (samples per second).
pub const SAMPLE_RATE: u32 = 48_000;
/// How long [`RfChannel::start`] waits for the processes to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when another process took one of ours.
const START_ATTEMPTS: usize = 3;

fn mixer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rf/mixer.py")
}

// ---------------------------------------------------------------------------
// Skipping

/// Where `tool` is installed, searching `PATH` and the sbin directories.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// True (after printing `SKIP <test>: <reason>`) when the channel cannot run
/// here: Direwolf or Python 3 missing. Use as
/// `if rf::skip_unless_available("name") { return; }`.
pub fn skip_unless_available(test: &str) -> bool {
    skip_unless_tools(test, &["direwolf", "python3"])
}

/// True (after printing `SKIP <test>: <reason>`) when one of `tools` is missing.
pub fn skip_unless_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if missing.is_empty() {
        return false;
    }
    println!(
        "SKIP {test}: needs {} (Debian: apt-get install {})",
        missing.join(", "),
        missing
            .iter()
            .map(|t| match *t {
                "qemu-system-x86_64" => "qemu-system-x86",
                other => other,
            })
            .collect::<Vec<_>>()
            .join(" ")
    );
    true
}

// ---------------------------------------------------------------------------
// Options

/// What [`RfChannel::start`] builds. The timing values are Direwolf's, in
/// units of 10 ms (TXDELAY, TXTAIL, SLOTTIME) or 1/256 (PERSIST).
#[derive(Debug, Clone)]
pub struct RfOptions {
    /// Number of stations (TNCs), 1 to 15.
    pub stations: usize,
    /// 1200 (AFSK, Bell 202) or 9600 (G3RUH); Direwolf also takes 300, 2400, 4800.
    pub modem: u32,
    /// Who hears whom (both ways). `None`: everybody hears everybody.
    /// `Some(vec![(0, 1), (1, 2)])`: 0 and 2 are hidden from each other.
    pub links: Option<Vec<(usize, usize)>>,
    /// Directed receive gains `(from, to, gain)` applied after `links`
    /// (1.0 = normal level; a weaker signal lets a stronger one capture).
    pub gains: Vec<(usize, usize, f64)>,
    /// Preamble before the first frame (10 ms units).
    pub txdelay: u8,
    /// Flags after the last frame (10 ms units).
    pub txtail: u8,
    /// Carrier-sense slot time (10 ms units).
    pub slottime: u8,
    /// p-persistence (255: transmit as soon as the channel is clear).
    pub persist: u8,
    /// Standard deviation of Gaussian noise added to every receiver, in
    /// 16-bit sample units (0: none). Measured: 1500 and 4000 lose no 1200
    /// baud frame, 8000 loses about 2 in 10.
    pub noise: f64,
    /// Start a monitor: one more Direwolf that hears every transmitter and
    /// records every frame it decodes (see [`Monitor`]).
    pub monitor: bool,
    /// Preload the shim that seeds `srand()` and line-buffers stdout into
    /// Direwolf (needs `cc`; without it contending stations pick the same
    /// random slots, and the logs are only complete once Direwolf exits).
    pub seed_rand: bool,
}

impl Default for RfOptions {
    /// Two stations at 1200 baud with short, deterministic timing
    /// (TXDELAY 100 ms, TXTAIL 20 ms, SLOTTIME 10 ms, PERSIST 255), no
    /// noise, no monitor.
    fn default() -> Self {
        RfOptions {
            stations: 2,
            modem: 1200,
            links: None,
            gains: Vec::new(),
            txdelay: 10,
            txtail: 2,
            slottime: 1,
            persist: 255,
            noise: 0.0,
            monitor: false,
            seed_rand: true,
        }
    }
}

// ---------------------------------------------------------------------------
// The channel

/// A running channel: the mixer, one Direwolf per station and optionally a
/// monitor Direwolf, all in one process group that is killed on drop.
pub struct RfChannel {
    opts: RfOptions,
    dir: tempfile::TempDir,
    pgid: u32,
    procs: Vec<Proc>,
    kiss_ports: Vec<u16>,
    monitor: Option<Monitor>,
    started: SystemTime,
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl std::fmt::Debug for RfChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RfChannel")
            .field("dir", &self.dir.path())
            .field("kiss_ports", &self.kiss_ports)
            .field("pgid", &self.pgid)
            .finish()
    }
}

/// The ports of one start attempt.
struct Ports {
    kiss: Vec<u16>,
    audio: Vec<u16>,
    monitor_kiss: u16,
    monitor_audio: u16,
}

impl Ports {
    /// Distinct ports that are free right now: every socket is held until
    /// all are chosen, so the kernel cannot hand out one twice.
    fn pick(n: usize) -> Ports {
        let any = (Ipv4Addr::UNSPECIFIED, 0);
        let tcp: Vec<TcpListener> = (0..=n)
            .map(|_| TcpListener::bind(any).expect("bind a TCP port"))
            .collect();
        let udp: Vec<UdpSocket> = (0..=n)
            .map(|_| UdpSocket::bind(any).expect("bind a UDP port"))
            .collect();
        let tcp: Vec<u16> = tcp.iter().map(|s| s.local_addr().unwrap().port()).collect();
        let udp: Vec<u16> = udp.iter().map(|s| s.local_addr().unwrap().port()).collect();
        Ports {
            kiss: tcp[..n].to_vec(),
            audio: udp[..n].to_vec(),
            monitor_kiss: tcp[n],
            monitor_audio: udp[n],
        }
    }
}

impl RfChannel {
    /// Starts the channel and waits until every Direwolf listens on its
    /// KISS port (without connecting to it). Panics with the logs when it
    /// cannot; call [`skip_unless_available`] first.
    pub fn start(opts: RfOptions) -> RfChannel {
        assert!(
            (1..=15).contains(&opts.stations),
            "1 to 15 stations, not {}",
            opts.stations
        );
        if let Some(links) = &opts.links {
            for &(a, b) in links {
                assert!(
                    a != b && a < opts.stations && b < opts.stations,
                    "bad link {a}-{b}"
                );
            }
        }
        let mut errors = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(&opts) {
                Ok(ch) => return ch,
                Err(e) => {
                    let _ = writeln!(errors, "attempt {attempt}: {e}");
                }
            }
        }
        panic!("the RF channel did not start:\n{errors}");
    }

    fn try_start(opts: &RfOptions) -> Result<RfChannel, String> {
        let dir = tempfile::Builder::new()
            .prefix("meshnode-rf-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let d = dir.path().to_path_buf();
        let d = d.as_path();
        let ports = Ports::pick(opts.stations);
        let mut ch = RfChannel {
            opts: opts.clone(),
            started: SystemTime::now(),
            pgid: 0,
            procs: Vec::new(),
            kiss_ports: ports.kiss.clone(),
            monitor: None,
            dir,
        };
        let n = opts.stations;

        // ALSA: one short PCM name per station (Direwolf truncates device
        // names to 29 characters, so an inline file:'/long/path' breaks).
        let mut asound = String::new();
        for i in 0..n {
            let _ = write!(
                asound,
                "pcm.dwtx{i} {{\n    type file\n    slave.pcm \"null\"\n    file \"{}\"\n    format \"raw\"\n}}\n",
                d.join(format!("tx{i}.fifo")).display()
            );
        }
        write_file(&d.join("asound.conf"), &asound)?;

        // The mixer first: it creates and holds the FIFOs' read ends (and a
        // writer, so it never sees EOF); it leads the process group.
        let mut mixer = Command::new("python3");
        mixer
            .arg(mixer_script())
            .arg("--dir")
            .arg(d)
            .arg("--rx-ports")
            .arg(join(&ports.audio))
            .arg("--rate")
            .arg(SAMPLE_RATE.to_string())
            .arg("--log")
            .arg(d.join("channel.log"))
            .arg("--parent-pid")
            .arg(std::process::id().to_string());
        if let Some(links) = &opts.links {
            let l: Vec<String> = links.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            mixer.arg("--links").arg(l.join(","));
        }
        for (from, to, g) in &opts.gains {
            mixer.arg("--gain").arg(format!("{from}>{to}={g}"));
        }
        if opts.noise > 0.0 {
            mixer.arg("--noise").arg(opts.noise.to_string());
        }
        if opts.monitor {
            mixer
                .arg("--monitor-port")
                .arg(ports.monitor_audio.to_string());
        }
        mixer.process_group(0);
        ch.spawn("mixer", mixer)?;
        ch.pgid = ch.procs[0].child.id();
        ch.wait_for("the mixer's ready event", |ch| {
            Ok(read(&ch.dir.path().join("channel.log")).contains(" ready\n"))
        })?;

        let preload = if opts.seed_rand { srand_shim() } else { None };
        for i in 0..n {
            let conf = direwolf_config(
                opts,
                &format!("udp:{} dwtx{i}", ports.audio[i]),
                &ch.callsign(i),
                ports.kiss[i],
            );
            let path = d.join(format!("dw{i}.conf"));
            write_file(&path, &conf)?;
            let cmd = ch.direwolf_command(&path, preload.as_deref());
            ch.spawn(&format!("dw{i}"), cmd)?;
        }
        if opts.monitor {
            // Receive only: no client ever sends to it, and the ALSA `null`
            // device takes its (never used) transmit audio.
            let conf = direwolf_config(
                opts,
                &format!("udp:{} null", ports.monitor_audio),
                "N0MON",
                ports.monitor_kiss,
            );
            let path = d.join("monitor.conf");
            write_file(&path, &conf)?;
            let cmd = ch.direwolf_command(&path, preload.as_deref());
            ch.spawn("dwmon", cmd)?;
        }

        // Ready when each Direwolf owns its UDP audio socket and listens on
        // its KISS port.
        let mut expect: Vec<(usize, u16, u16)> = (0..n)
            .map(|i| (i + 1, ports.audio[i], ports.kiss[i]))
            .collect();
        if opts.monitor {
            expect.push((n + 1, ports.monitor_audio, ports.monitor_kiss));
        }
        ch.wait_for("every Direwolf to listen on its ports", |ch| {
            for &(p, udp, tcp) in &expect {
                let proc = &ch.procs[p];
                let log = read(&proc.log);
                if log.to_ascii_lowercase().contains("bind") {
                    return Err(format!(
                        "{} could not bind its ports (taken by another process?):\n{}",
                        proc.name,
                        tail(&log, 20)
                    ));
                }
                let pid = proc.child.id();
                if !owns_socket(pid, "udp", udp, UDP_UNCONNECTED)
                    || !owns_socket(pid, "tcp", tcp, TCP_LISTEN)
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if opts.monitor {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ports.monitor_kiss));
            ch.monitor = Some(Monitor::start(addr, &d.join("monitor.log"))?);
        }
        Ok(ch)
    }

    fn direwolf_command(&self, conf: &Path, preload: Option<&Path>) -> Command {
        let mut cmd = Command::new("direwolf");
        // -t 0: no colours; -q d: no APRS decoding of (non-APRS) info fields
        cmd.args(["-t", "0", "-q", "d", "-c"])
            .arg(conf)
            .current_dir(self.dir.path())
            .env(
                "ALSA_CONFIG_PATH",
                format!(
                    "/usr/share/alsa/alsa.conf:{}",
                    self.dir.path().join("asound.conf").display()
                ),
            )
            .process_group(self.pgid as i32);
        if let Some(p) = preload {
            cmd.env("LD_PRELOAD", p);
        }
        cmd
    }

    /// Spawns `cmd` with stdout and stderr to `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, mut cmd: Command) -> Result<(), String> {
        let log = self.dir.path().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .spawn()
            .map_err(|e| format!("spawn {name} ({:?}): {e}", cmd.get_program()))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    /// Polls `ready` every 20 ms; fails (with the logs) when a process
    /// exited, `ready` fails, or [`START_TIMEOUT`] passes.
    fn wait_for(
        &mut self,
        what: &str,
        ready: impl Fn(&RfChannel) -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready(self)? {
                return Ok(());
            }
            for p in &mut self.procs {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(format!(
                        "{} exited ({status}) while waiting for {what}:\n{}",
                        p.name,
                        tail(&read(&p.log), 30)
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {what} within {START_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The options it was started with.
    pub fn options(&self) -> &RfOptions {
        &self.opts
    }

    /// Number of stations.
    pub fn stations(&self) -> usize {
        self.opts.stations
    }

    /// Station `i`'s KISS TCP port (on 127.0.0.1). Direwolf serves at most
    /// 3 clients per port; frames from one client are not echoed to the
    /// others.
    pub fn kiss_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.kiss_ports[i]))
    }

    /// The callsign station `i` stands for: `N0SIM-<i + 1>` (SSID 0 would
    /// read back as plain `N0SIM`). Direwolf sends KISS frames unchanged
    /// (their addresses come from the client), so this is the source address
    /// a test's frames from station `i` should carry.
    pub fn callsign(&self, i: usize) -> String {
        format!("N0SIM-{}", i + 1)
    }

    /// The channel's directory: configs, FIFOs, `channel.log` (the mixer's
    /// events), `<name>.log` of every process, `monitor.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// When [`RfChannel::start`] began.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// The process group of every process of the channel.
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The pids of the channel's processes (mixer, Direwolfs, socat).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// The monitor. Panics unless the channel was started with `monitor: true`.
    pub fn monitor(&self) -> &Monitor {
        self.monitor.as_ref().expect("RfOptions::monitor was false")
    }

    /// Every transmission so far, in start order, from the mixer's event log.
    pub fn airtime(&self) -> Vec<TxInterval> {
        parse_airtime(&read(&self.dir.path().join("channel.log")))
    }

    /// Waits until station `station` has `count` finished transmissions and
    /// returns them; panics after `timeout`.
    pub fn wait_airtime(&self, station: usize, count: usize, timeout: Duration) -> Vec<TxInterval> {
        let deadline = Instant::now() + timeout;
        loop {
            let done: Vec<TxInterval> = self
                .airtime()
                .into_iter()
                .filter(|t| t.station == station && t.end.is_some())
                .collect();
            if done.len() >= count {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "station {station}: {} of {count} transmissions finished within {timeout:?}; channel.log:\n{}",
                done.len(),
                read(&self.dir.path().join("channel.log"))
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A serial-port view of station `i`: `socat pty,raw,echo=0 tcp:...`
    /// makes a pseudo terminal that behaves like a serial KISS TNC (bytes
    /// written to it go to the TNC, frames it hears come out). Returns the
    /// path of a symlink to the tty once socat is connected to the KISS port
    /// (it takes one of the port's 3 client slots). Needs `socat`.
    pub fn serial_tty(&mut self, i: usize) -> PathBuf {
        let link = self.dir.path().join(format!("tty{i}"));
        assert!(!link.exists(), "station {i} already has a serial tty");
        let mut cmd = Command::new("socat");
        cmd.arg(format!("pty,raw,echo=0,link={}", link.display()))
            .arg(format!("tcp:127.0.0.1:{}", self.kiss_ports[i]))
            .process_group(self.pgid as i32);
        self.spawn(&format!("socat{i}"), cmd)
            .unwrap_or_else(|e| panic!("{e}"));
        let p = self.procs.len() - 1;
        let port = self.kiss_ports[i];
        self.wait_for("socat's tty and KISS connection", |ch| {
            Ok(link.exists() && connected_to(ch.procs[p].child.id(), port))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        link
    }

    /// The last lines of every process log (for failure messages).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let _ = writeln!(
                out,
                "---- {} ({}) ----\n{}",
                p.name,
                p.log.display(),
                tail(&read(&p.log), 30)
            );
        }
        let _ = writeln!(
            out,
            "---- channel.log ----\n{}",
            tail(&read(&self.dir.path().join("channel.log")), 30)
        );
        out
    }

    /// Stops everything: SIGTERM to the process group, SIGKILL after 3 s.
    fn stop(&mut self) {
        if self.pgid == 0 {
            return;
        }
        if let Some(m) = self.monitor.take() {
            m.stop();
        }
        signal_group(self.pgid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in &mut self.procs {
            while p.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if !group_members(self.pgid).is_empty() {
            signal_group(self.pgid, "KILL");
        }
        for p in &mut self.procs {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for RfChannel {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- RF channel in {} ----\n{}",
                self.dir.path().display(),
                self.logs()
            );
        }
        self.stop();
    }
}

/// The Direwolf configuration of one station.
fn direwolf_config(opts: &RfOptions, adevice: &str, mycall: &str, kiss_port: u16) -> String {
    format!(
        "ADEVICE {adevice}\nARATE {SAMPLE_RATE}\nACHANNELS 1\nCHANNEL 0\nMYCALL {mycall}\n\
         MODEM {}\nTXDELAY {}\nTXTAIL {}\nSLOTTIME {}\nPERSIST {}\nAGWPORT 0\nKISSPORT {kiss_port}\n",
        opts.modem, opts.txdelay, opts.txtail, opts.slottime, opts.persist
    )
}

/// Builds (once per target dir) the `srand()` shim for `LD_PRELOAD`; `None`
/// (with a note) when there is no C compiler.
fn srand_shim() -> Option<PathBuf> {
    const SRC: &str = "#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n\
        #include <unistd.h>\n\
        /* Direwolf 1.6 never seeds rand(): every instance would pick the same\n   \
        p-persistence slots. Its stdout is a log file: line-buffer it so that\n   \
        the log can be read while it runs. */\n\
        __attribute__((constructor)) static void init(void) {\n    \
        srand((unsigned)getpid() ^ (unsigned)time(NULL));\n    \
        setvbuf(stdout, NULL, _IOLBF, 0);\n}\n";
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rf");
    let so = dir.join("dwshim.so");
    if so.is_file() {
        return Some(so);
    }
    std::fs::create_dir_all(&dir).ok()?;
    let tmp = dir.join(format!("dwshim-{}", std::process::id()));
    let c = tmp.with_extension("c");
    std::fs::write(&c, SRC).ok()?;
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(tmp.with_extension("so"))
        .arg(&c)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = std::fs::remove_file(&c);
    if !built {
        eprintln!("note: no srand() shim for Direwolf (cc failed): contending stations collide");
        return None;
    }
    std::fs::rename(tmp.with_extension("so"), &so).ok()?;
    Some(so)
}

// ---------------------------------------------------------------------------
// Airtime

/// One transmission as the mixer played it.
#[derive(Debug, Clone, PartialEq)]
pub struct TxInterval {
    pub station: usize,
    /// When its first 10 ms of audio went to the receivers.
    pub start: SystemTime,
    /// The tick after its last audio; `None` while on the air.
    pub end: Option<SystemTime>,
    /// Audio samples of the burst (set with `end`).
    pub samples: Option<u64>,
}

impl TxInterval {
    /// `end - start` as the mixer's clock saw it (10 ms resolution).
    pub fn duration(&self) -> Option<Duration> {
        self.end
            .map(|e| e.duration_since(self.start).unwrap_or_default())
    }

    /// Exact length of the transmitted audio (samples / rate).
    pub fn audio(&self) -> Option<Duration> {
        self.samples
            .map(|s| Duration::from_secs_f64(s as f64 / f64::from(SAMPLE_RATE)))
    }
}

fn unix_time(s: &str) -> Option<SystemTime> {
    let secs: f64 = s.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// Pairs the `tx-start`/`tx-end` events of the mixer's log.
pub fn parse_airtime(log: &str) -> Vec<TxInterval> {
    let mut out: Vec<TxInterval> = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(t), Some(ev), Some(st)) = (
            f.first().and_then(|s| unix_time(s)),
            f.get(1),
            f.get(2).and_then(|s| s.parse::<usize>().ok()),
        ) else {
            continue;
        };
        match *ev {
            "tx-start" => out.push(TxInterval {
                station: st,
                start: t,
                end: None,
                samples: None,
            }),
            "tx-end" => {
                if let Some(open) = out
                    .iter_mut()
                    .rev()
                    .find(|i| i.station == st && i.end.is_none())
                {
                    open.end = Some(t);
                    open.samples = f.get(3).and_then(|s| s.parse().ok());
                }
            }
            _ => {}
        }
    }
    out
}

/// Airtime of one HDLC burst carrying `frames` (AX.25 frames without FCS)
/// at `bitrate`: TXDELAY + frames (+ 2 FCS bytes and a separating flag each,
/// bit stuffing at most 1 bit in 5) + TXTAIL. Returns (lower, upper) bounds
/// of the ideal value; Direwolf's real burst adds a few flag bytes.
pub fn burst_airtime(
    frames: &[&[u8]],
    bitrate: u32,
    txdelay: u8,
    txtail: u8,
) -> (Duration, Duration) {
    let fixed = Duration::from_millis(10 * (u64::from(txdelay) + u64::from(txtail)));
    let bits: u64 = frames.iter().map(|f| 8 * (f.len() as u64 + 2 + 1)).sum();
    let lo = bits as f64 / f64::from(bitrate);
    let hi = lo * 1.2;
    (
        fixed + Duration::from_secs_f64(lo),
        fixed + Duration::from_secs_f64(hi),
    )
}

// ---------------------------------------------------------------------------
// Monitor

/// One frame the monitor decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardFrame {
    /// When the monitor's KISS port delivered it.
    pub at: SystemTime,
    /// Source and destination callsigns (`CALL` or `CALL-SSID`).
    pub src: String,
    pub dest: String,
    /// The AX.25 frame without FCS, as Direwolf decoded it.
    pub frame: Vec<u8>,
}

/// The receiver that hears every transmitter: a receive-only Direwolf on
/// the mixer's monitor output, read through its KISS port by a thread that
/// keeps every frame (and appends a line per frame to `monitor.log`:
/// `<unix time> <src>><dest> <len> <hex>`). Independent of the stations'
/// own receivers, so a test can check what really went on the air, e.g.
/// that every frame carries the source callsign of its sender.
pub struct Monitor {
    frames: Arc<Mutex<Vec<HeardFrame>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(addr: SocketAddr, log: &Path) -> Result<Monitor, String> {
        let mut client = kiss::Client::try_connect(addr)?;
        let mut logf = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some((cmd, frame)) = client.recv_any(Duration::from_millis(100)) else {
                    continue;
                };
                if cmd & 0x0f != 0 {
                    continue;
                }
                let at = SystemTime::now();
                let (dest, src) = ax25::addresses(&frame).unwrap_or_default();
                let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
                let _ = writeln!(
                    logf,
                    "{:.4} {src}>{dest} {} {}",
                    t.as_secs_f64(),
                    frame.len(),
                    hex(&frame)
                );
                f.lock().unwrap().push(HeardFrame {
                    at,
                    src,
                    dest,
                    frame,
                });
            }
        });
        Ok(Monitor {
            frames,
            stop,
            thread: Some(thread),
        })
    }

    /// Every frame heard so far.
    pub fn frames(&self) -> Vec<HeardFrame> {
        self.frames.lock().unwrap().clone()
    }

    /// Waits until `count` frames were heard and returns them all; panics
    /// after `timeout`.
    pub fn wait_frames(&self, count: usize, timeout: Duration) -> Vec<HeardFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.frames();
            if f.len() >= count {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "the monitor heard {} of {count} frames within {timeout:?}: {f:?}",
                f.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Processes and sockets

/// Sends a signal by name to every process of group `pgid` (`kill -SIG -- -PGID`).
pub fn signal_group(pgid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The live processes (not zombies) whose process group is `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may
            // contain spaces and parentheses, so split after the last ')'.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
        })
        .collect()
}

/// Socket inodes of the open file descriptors of `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| {
        let target = std::fs::read_link(e.ok()?.path()).ok()?;
        let t = target.to_str()?;
        t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// `/proc/net/tcp` states.
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;
/// The state of a bound, unconnected UDP socket in `/proc/net/udp`.
const UDP_UNCONNECTED: u8 = 0x07;

/// Entries of `/proc/net/<proto>` and `<proto>6`: (local port, remote port,
/// state, inode).
fn proc_net(proto: &str) -> Vec<(u16, u16, u8, u64)> {
    let mut out = Vec::new();
    for file in [format!("/proc/net/{proto}"), format!("/proc/net/{proto}6")] {
        for line in read(Path::new(&file)).lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let port = |a: &str| {
                a.rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            };
            if let (Some(l), Some(r), Ok(st), Ok(ino)) = (
                port(f[1]),
                port(f[2]),
                u8::from_str_radix(f[3], 16),
                f[9].parse::<u64>(),
            ) {
                out.push((l, r, st, ino));
            }
        }
    }
    out
}

/// Whether `pid` holds a `proto` socket bound to local `port` in `state`.
fn owns_socket(pid: u32, proto: &str, port: u16, state: u8) -> bool {
    let mine = socket_inodes(pid);
    proc_net(proto)
        .iter()
        .any(|&(l, _, st, ino)| l == port && st == state && mine.contains(&ino))
}

/// Whether `pid` has an established TCP connection to remote `port`.
fn connected_to(pid: u32, port: u16) -> bool {
    let mine = socket_inodes(pid);
    proc_net("tcp")
        .iter()
        .any(|&(_, r, st, ino)| r == port && st == TCP_ESTABLISHED && mine.contains(&ino))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

// ---------------------------------------------------------------------------
// A minimal KISS / AX.25 codec for tests

/// KISS framing (FEND-delimited, FESC-escaped), a decoder and a blocking
/// TCP client. Deliberately minimal and independent of the project's own
/// codec, so that tests can cross-check it.
pub mod kiss {
    use super::*;

    pub const FEND: u8 = 0xC0;
    pub const FESC: u8 = 0xDB;
    pub const TFEND: u8 = 0xDC;
    pub const TFESC: u8 = 0xDD;

    /// A KISS frame: FEND, `cmd` (port << 4 | command), escaped payload, FEND.
    pub fn encode(cmd: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![FEND, cmd];
        for &b in payload {
            match b {
                FEND => out.extend([FESC, TFEND]),
                FESC => out.extend([FESC, TFESC]),
                _ => out.push(b),
            }
        }
        out.push(FEND);
        out
    }

    /// A data frame for TNC port 0.
    pub fn data(ax25: &[u8]) -> Vec<u8> {
        encode(0x00, ax25)
    }

    /// Turns a byte stream into `(cmd, payload)` frames.
    #[derive(Debug, Default)]
    pub struct Decoder {
        buf: Vec<u8>,
        in_frame: bool,
        escaped: bool,
    }

    impl Decoder {
        pub fn push(&mut self, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
            let mut out = Vec::new();
            for &b in bytes {
                match b {
                    FEND => {
                        if self.in_frame && !self.buf.is_empty() {
                            let cmd = self.buf[0];
                            out.push((cmd, self.buf[1..].to_vec()));
                        }
                        self.buf.clear();
                        self.in_frame = true;
                        self.escaped = false;
                    }
                    _ if !self.in_frame => {}
                    FESC => self.escaped = true,
                    _ => {
                        let b = match (self.escaped, b) {
                            (true, TFEND) => FEND,
                            (true, TFESC) => FESC,
                            (_, b) => b,
                        };
                        self.escaped = false;
                        self.buf.push(b);
                    }
                }
            }
            out
        }
    }

    /// A blocking KISS-over-TCP client.
    pub struct Client {
        stream: TcpStream,
        decoder: Decoder,
        pending: std::collections::VecDeque<(u8, Vec<u8>)>,
    }

    impl Client {
        /// Connects; panics on failure.
        pub fn connect(addr: SocketAddr) -> Client {
            Self::try_connect(addr).unwrap_or_else(|e| panic!("{e}"))
        }

        pub fn try_connect(addr: SocketAddr) -> Result<Client, String> {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .map_err(|e| format!("KISS connect {addr}: {e}"))?;
            stream.set_nodelay(true).ok();
            Ok(Client {
                stream,
                decoder: Decoder::default(),
                pending: Default::default(),
            })
        }

        /// Sends an AX.25 frame (without FCS) as a KISS data frame.
        pub fn send(&mut self, ax25: &[u8]) {
            self.send_raw(&data(ax25));
        }

        /// Writes raw bytes (KISS framing is the caller's).
        pub fn send_raw(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).expect("KISS write");
        }

        /// The next data frame (command 0) within `timeout`.
        pub fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.checked_duration_since(Instant::now())?;
                let (cmd, frame) = self.recv_any(left)?;
                if cmd & 0x0f == 0 {
                    return Some(frame);
                }
            }
        }

        /// The next KISS frame of any command within `timeout`.
        pub fn recv_any(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 4096];
            loop {
                if let Some(f) = self.pending.pop_front() {
                    return Some(f);
                }
                let left = deadline.checked_duration_since(Instant::now())?;
                self.stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .ok()?;
                match self.stream.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => self.pending.extend(self.decoder.push(&buf[..n])),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return None,
                }
            }
        }
    }
}

/// AX.25 UI frames and address fields, as far as tests need them.
pub mod ax25 {
    /// An address field entry: 6 callsign characters shifted left by one,
    /// then the SSID byte `0b CRR SSSS E` (C = command/has-been-repeated,
    /// RR = reserved, set; E = last address).
    pub fn address(call: &str, command: bool, last: bool) -> [u8; 7] {
        let (base, ssid) = match call.split_once('-') {
            Some((b, s)) => (b, s.parse::<u8>().expect("SSID 0-15")),
            None => (call, 0),
        };
        assert!(
            !base.is_empty() && base.len() <= 6 && ssid <= 15,
            "bad callsign {call:?}"
        );
        let mut out = [b' ' << 1; 7];
        for (o, c) in out.iter_mut().zip(base.bytes()) {
            *o = c.to_ascii_uppercase() << 1;
        }
        out[6] = 0x60 | (ssid << 1) | if command { 0x80 } else { 0 } | u8::from(last);
        out
    }

    /// A UI command frame `src>dest`, PID 0xF0 (no layer 3), no FCS (the
    /// TNC adds it) - what the Linux kernel sends for an AF_AX25 datagram.
    pub fn ui_frame(dest: &str, src: &str, info: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(16 + info.len());
        f.extend(address(dest, true, false));
        f.extend(address(src, false, true));
        f.extend([0x03, 0xF0]);
        f.extend(info);
        f
    }

    /// `CALL` or `CALL-SSID` of a 7-byte address entry.
    pub fn callsign(a: &[u8]) -> String {
        let base: String = a[..6]
            .iter()
            .map(|&c| char::from(c >> 1))
            .collect::<String>()
            .trim_end()
            .to_string();
        match (a[6] >> 1) & 0x0f {
            0 => base,
            ssid => format!("{base}-{ssid}"),
        }
    }

    /// (destination, source) of a frame, if it has two address entries.
    pub fn addresses(frame: &[u8]) -> Option<(String, String)> {
        (frame.len() >= 14).then(|| (callsign(&frame[..7]), callsign(&frame[7..14])))
    }
}
