//! TNC drivers: the only RF code that touches sockets and devices.
//!
//! Every driver has the same shape, a [`Link`]: AX.25 frames (encoded, no
//! FCS) go in through [`Link::tx`] and come out of [`Link::rx`], and
//! [`Link::state`] says whether the TNC is there. [`spawn`] starts one task
//! per link that connects, moves frames while it can, and when the TNC goes
//! away says so once and tries again, after 1 s, then 2, 4, ... up to 30 s
//! ([`Backoff`]), until it is back (said once more) or the link is stopped.
//!
//! | `[rf] tnc` | module | connection |
//! |---|---|---|
//! | `kiss-tcp://HOST:PORT` | here | a TCP stream, KISS framed ([`super::kiss`]) |
//! | `kiss-serial:///dev/TTY?baud=N` | [`serial`] | a tty in raw mode, KISS framed |
//! | `ax25:PORT` | [`kernel`] | the kernel's AX.25 interface of an axports port |
//!
//! KISS streams carry port 0 data frames both ways. A TNC that answers in
//! SMACK (KISS with a CRC, as a Linux `mkiss` in its default "auto" CRC
//! mode does at first, shared/RF.md) is accepted and reported once; other
//! ports and commands from the TNC are ignored.

pub mod kernel;
pub mod serial;
mod sys;

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::kiss;
use super::tnc::TncAddr;

/// Frames queued to the driver for sending: a few transmissions' worth
/// (the RF task sends only while the link is up, at most a burst at once).
pub const TX_CAP: usize = 32;
/// Frames heard and not yet taken by the RF task; more are dropped (and
/// counted by the task when it notices the gap in beacons).
pub const RX_CAP: usize = 64;
/// First wait before trying the TNC again.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Connecting to a KISS-TCP TNC gives up after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the TNC is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The first attempt is under way.
    Connecting,
    /// Connected; `via` names the connection (address, tty, interface).
    Up {
        /// The connection, for the status view.
        via: String,
    },
    /// Not connected; `reason` says why, in words.
    Down {
        /// Why.
        reason: String,
    },
}

impl LinkState {
    /// Connected.
    pub fn is_up(&self) -> bool {
        matches!(self, LinkState::Up { .. })
    }
}

/// One TNC link (see the module docs).
#[derive(Debug)]
pub struct Link {
    /// Frames to send, in order.
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Frames heard.
    pub rx: mpsc::Receiver<Vec<u8>>,
    /// The link's state; changes wake [`watch::Receiver::changed`].
    pub state: watch::Receiver<LinkState>,
}

/// Starts the driver task for `tnc`; it stops when `cancel` fires or every
/// [`Link::tx`] sender is gone.
pub fn spawn(tnc: TncAddr, cancel: CancellationToken) -> (Link, tokio::task::JoinHandle<()>) {
    let (tx, out_rx) = mpsc::channel(TX_CAP);
    let (in_tx, rx) = mpsc::channel(RX_CAP);
    let (state_tx, state) = watch::channel(LinkState::Connecting);
    let join = tokio::spawn(supervise(tnc, out_rx, in_tx, state_tx, cancel));
    (Link { tx, rx, state }, join)
}

/// Waits between attempts: [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let w = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        w
    }

    /// Back to the shortest wait (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// What a driver remembers across connections: things said once.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// The TNC spoke SMACK; reported.
    smack: bool,
    /// Frames the TNC sent that could not be read.
    pub(crate) bad_frames: u64,
}

/// An open connection to the TNC.
enum Conn {
    /// KISS over a byte stream.
    Kiss(Box<dyn Stream>, String),
    /// The kernel's AX.25 interface.
    Kernel(kernel::Port),
}

/// A byte stream to a KISS TNC.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Conn {
    fn via(&self) -> String {
        match self {
            Conn::Kiss(_, via) => via.clone(),
            Conn::Kernel(p) => p.describe(),
        }
    }
}

async fn open(tnc: &TncAddr) -> Result<Conn, String> {
    match tnc {
        TncAddr::KissTcp { host, port } => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            let s = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("cannot connect to {tnc}: {e}")),
                Err(_) => {
                    return Err(format!(
                        "cannot connect to {tnc}: no answer in {CONNECT_TIMEOUT:?}"
                    ));
                }
            };
            // frames are small and each should leave at once
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
            let via = s
                .peer_addr()
                .map_or_else(|_| tnc.to_string(), |a| format!("kiss-tcp {a}"));
            Ok(Conn::Kiss(Box::new(s), via))
        }
        TncAddr::KissSerial { path, baud } => {
            let port = serial::SerialPort::open(path, *baud)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            Ok(Conn::Kiss(
                Box::new(port),
                format!("kiss-serial {} at {baud} baud", path.display()),
            ))
        }
        TncAddr::Ax25 { port } => kernel::Port::open(port).await.map(Conn::Kernel),
    }
}

/// The driver task: connect, run, say what happened once, wait, again.
async fn supervise(
    tnc: TncAddr,
    mut out: mpsc::Receiver<Vec<u8>>,
    heard: mpsc::Sender<Vec<u8>>,
    state: watch::Sender<LinkState>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let mut notes = Notes::default();
    // when the current outage began (None: connected, or never tried)
    let mut outage: Option<Instant> = None;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            c = open(&tnc) => c,
        };
        let reason = match attempt {
            Ok(conn) => {
                let via = conn.via();
                match outage.take() {
                    Some(since) => {
                        tracing::info!(tnc = %tnc, via = %via, after = ?since.elapsed(), "TNC back")
                    }
                    None => tracing::info!(tnc = %tnc, via = %via, "TNC connected"),
                }
                state.send_replace(LinkState::Up { via });
                backoff.reset();
                let why = match conn {
                    Conn::Kiss(s, _) => run_kiss(s, &mut out, &heard, &mut notes, &cancel).await,
                    Conn::Kernel(p) => p.run(&mut out, &heard, &mut notes, &cancel).await,
                };
                match why {
                    Ended::Stopped => return,
                    Ended::Lost(why) => {
                        tracing::warn!(tnc = %tnc, reason = %why, "TNC lost; reconnecting by itself");
                        outage = Some(Instant::now());
                        why
                    }
                }
            }
            Err(why) => {
                if outage.is_none() {
                    tracing::warn!(tnc = %tnc, reason = %why, "TNC unavailable; retrying by itself (said once per outage)");
                    outage = Some(Instant::now());
                } else {
                    tracing::debug!(tnc = %tnc, reason = %why, "TNC still unavailable");
                }
                why
            }
        };
        state.send_replace(LinkState::Down { reason });
        let wait = backoff.next_wait();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why a connection ended.
pub(crate) enum Ended {
    /// The link was stopped.
    Stopped,
    /// The TNC went away: why.
    Lost(String),
}

/// Moves frames between the RF task and a KISS byte stream until it breaks.
async fn run_kiss(
    stream: Box<dyn Stream>,
    out: &mut mpsc::Receiver<Vec<u8>>,
    heard: &mpsc::Sender<Vec<u8>>,
    notes: &mut Notes,
    cancel: &CancellationToken,
) -> Ended {
    let (mut r, mut w) = tokio::io::split(stream);
    let mut decoder = kiss::Decoder::default();
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ended::Stopped,
            n = r.read(&mut buf) => match n {
                Ok(0) => return Ended::Lost("the TNC closed the connection".into()),
                Ok(n) => {
                    for ev in decoder.push(&buf[..n]) {
                        if let Some(frame) = kiss_data(ev, notes) {
                            deliver(heard, frame);
                        }
                    }
                }
                Err(e) => return Ended::Lost(format!("reading from the TNC: {e}")),
            },
            f = out.recv() => {
                let Some(frame) = f else { return Ended::Stopped };
                let wire = match kiss::Frame::data(0, frame) {
                    Ok(k) => k.encode(),
                    Err(e) => {
                        tracing::warn!(error = %e, "frame not sent");
                        continue;
                    }
                };
                if let Err(e) = async { w.write_all(&wire).await?; w.flush().await }.await {
                    return Ended::Lost(format!("writing to the TNC: {e}"));
                }
            }
        }
    }
}

/// The AX.25 frame in a KISS event, if it carries one for port 0.
fn kiss_data(ev: kiss::Event, notes: &mut Notes) -> Option<Vec<u8>> {
    match ev {
        kiss::Event::Frame(f) if f.port() == 0 && f.command() == kiss::Command::Data => {
            Some(f.into_payload())
        }
        kiss::Event::Frame(f) => {
            tracing::debug!(port = f.port(), command = ?f.command(), "KISS frame ignored");
            None
        }
        kiss::Event::Smack(s) => {
            if !notes.smack {
                notes.smack = true;
                tracing::warn!(
                    "the TNC sends SMACK (KISS with CRC) frames: accepted; a Linux mkiss does this \
                     in its default CRC mode, `kissparms -p PORT -c 1` selects plain KISS"
                );
            }
            (s.port() == 0).then(|| s.into_payload())
        }
        kiss::Event::Error(e) => {
            notes.bad_frames += 1;
            tracing::debug!(error = %e, "unreadable KISS frame from the TNC");
            None
        }
    }
}

/// Hands a heard frame to the RF task; drops it when the task is behind.
fn deliver(heard: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>) {
    if let Err(e) = heard.try_send(frame) {
        tracing::debug!(error = %e, "heard frame dropped: the RF task is behind or gone");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_wait(), BACKOFF_MIN);
    }

    #[test]
    fn smack_is_accepted_other_ports_are_not() {
        let mut notes = Notes::default();
        let frame = vec![0x42; 20];
        let smack = kiss::SmackFrame::new(0, frame.clone()).unwrap();
        let ev = kiss::Decoder::default().push(&smack.encode()).remove(0);
        assert_eq!(kiss_data(ev, &mut notes), Some(frame.clone()));
        assert!(notes.smack);
        let other = kiss::Frame::data(1, frame.clone()).unwrap().encode();
        let ev = kiss::Decoder::default().push(&other).remove(0);
        assert_eq!(kiss_data(ev, &mut notes), None);
    }

    /// The tty a path names, from both ends: (master as a file, tty path).
    fn pty() -> (std::fs::File, std::path::PathBuf, std::os::fd::OwnedFd) {
        let p = nix::pty::openpty(None, None).expect("openpty");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&p.slave);
        let name = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        (std::fs::File::from(p.master), name, p.slave)
    }

    /// A serial TNC whose device goes away (the far end of its pty closes,
    /// as when a USB TNC is unplugged) and comes back under the same path:
    /// the driver notices, and reopens it by itself.
    #[tokio::test]
    async fn kiss_serial_reopens_a_device_that_came_back() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttyTNC");
        let (mut master, tty, slave) = pty();
        std::os::unix::fs::symlink(&tty, &path).unwrap();
        drop(slave);
        let cancel = CancellationToken::new();
        let (mut link, join) = spawn(
            TncAddr::KissSerial {
                path: path.clone(),
                baud: 9600,
            },
            cancel.clone(),
        );
        link.state.wait_for(LinkState::is_up).await.unwrap();
        let frame = vec![0x82, 0xa0, 0xb4, 0xc0, 1, 2];
        let wire = kiss::Frame::data(0, frame.clone()).unwrap().encode();
        master.write_all(&wire).unwrap();
        assert_eq!(link.rx.recv().await, Some(frame.clone()));
        drop(master);
        let down = link.state.wait_for(|s| !s.is_up()).await.unwrap().clone();
        assert!(matches!(down, LinkState::Down { .. }), "{down:?}");
        // the device is back (a new pty under the same name)
        let (mut master, tty, _slave) = pty();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&tty, &path).unwrap();
        let t = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            link.state.wait_for(LinkState::is_up),
        )
        .await
        .expect("reopened within the backoff")
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        master.write_all(&wire).unwrap();
        assert_eq!(link.rx.recv().await, Some(frame));
        cancel.cancel();
        join.await.unwrap();
    }

    /// A fake KISS TNC on TCP: the driver connects, sends KISS, delivers
    /// what the TNC sends, notices it going away and comes back by itself.
    #[tokio::test]
    async fn kiss_tcp_moves_frames_and_reconnects() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let tnc = TncAddr::KissTcp {
            host: "127.0.0.1".into(),
            port,
        };
        let (mut link, join) = spawn(tnc, cancel.clone());
        let (mut s, _) = l.accept().await.unwrap();
        link.state.wait_for(LinkState::is_up).await.unwrap();
        let frame = vec![0x96, 0x68, 0xc0, 0xdb, 1, 2, 3];
        link.tx.send(frame.clone()).await.unwrap();
        let want = kiss::Frame::data(0, frame.clone()).unwrap().encode();
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        s.write_all(&want).await.unwrap();
        assert_eq!(link.rx.recv().await, Some(frame));
        drop(s);
        link.state.wait_for(|s| !s.is_up()).await.unwrap();
        let (_s2, _) = l.accept().await.unwrap();
        link.state.wait_for(LinkState::is_up).await.unwrap();
        cancel.cancel();
        join.await.unwrap();
    }
}
