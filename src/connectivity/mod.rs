//! Is the internet reachable from here? Uplink probes and the network mode.
//!
//! A probe round tries every configured target at once (`tcp://host:port`:
//! a TCP handshake; `http://host[:port]/path`: a GET answered with a 2xx,
//! typically a `generate_204`-style endpoint; a redirect, as captive portals
//! answer, is a failure). One target answering is enough: the uplink is up.
//!
//! Rounds run every `interval`. A failed round while the uplink is up is
//! confirmed by another round after `retry_interval`, and `down_after`
//! failed rounds in a row declare it down, so one lost packet does not flip
//! the mode, yet with the defaults (5 s, 1 s, 2 rounds, 2 s timeout) a dead
//! uplink is noticed 5–10 s after it died. One good round brings it back.
//!
//! When failover is possible ([`crate::failover`]), probe sockets carry a
//! firewall mark that routes them by the main table only: they test this
//! node's own uplink even while its traffic goes through a mesh gateway.
//!
//! [`Tracker`] is the pure state machine; [`spawn`] runs it with real probes
//! and publishes [`Uplink`] on a watch channel. The network [`Mode`] also
//! depends on the mesh's neighbours, so the mesh task derives it ([`mode`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// A TCP handshake with `host:port`.
    Tcp {
        /// Name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `GET path` on `host:port`, passing on a 2xx.
    Http {
        /// Name or address.
        host: String,
        /// Port (80 unless given).
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
    },
}

impl ProbeTarget {
    /// Parses `tcp://host:port` or `http://host[:port][/path]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let split_host = |hp: &str, default: Option<u16>| -> Result<(String, u16), String> {
            let (host, port) = match hp.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !hp.ends_with(']') => {
                    let port = p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| format!("bad port {p:?} in probe {s:?}"))?;
                    (h, port)
                }
                _ => (
                    hp,
                    default.ok_or_else(|| format!("probe {s:?} needs a port (tcp://host:port)"))?,
                ),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                return Err(format!("bad host in probe {s:?}"));
            }
            Ok((host.to_string(), port))
        };
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = split_host(rest.trim_end_matches('/'), None)?;
            Ok(Self::Tcp { host, port })
        } else if let Some(rest) = s.strip_prefix("http://") {
            let (hp, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("bad path in probe {s:?}"));
            }
            let (host, port) = split_host(hp, Some(80))?;
            Ok(Self::Http {
                host,
                port,
                path: path.to_string(),
            })
        } else {
            Err(format!(
                "probe {s:?} must be tcp://host:port or http://host/path (https is not probed: it needs certificates and a clock)"
            ))
        }
    }

    fn host_port(&self) -> (&str, u16) {
        match self {
            Self::Tcp { host, port } | Self::Http { host, port, .. } => (host, *port),
        }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_string()
            }
        };
        match self {
            Self::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracket(host)),
            Self::Http { host, port, path } if *port == 80 => {
                write!(f, "http://{}{path}", bracket(host))
            }
            Self::Http { host, port, path } => write!(f, "http://{}:{port}{path}", bracket(host)),
        }
    }
}

impl<'de> Deserialize<'de> for ProbeTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The network mode (FR-012): what this node can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Its own uplink reaches the internet.
    Online,
    /// No own uplink; IP peers (and maybe a mesh gateway) are reachable.
    MeshOnly,
    /// No own uplink and no IP peers; only stations heard on radio.
    RfOnly,
}

impl Mode {
    /// The name in the API, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::MeshOnly => "mesh-only",
            Self::RfOnly => "rf-only",
        }
    }

    /// The gossip encoding.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Online => 0,
            Self::MeshOnly => 1,
            Self::RfOnly => 2,
        }
    }

    /// From the gossip encoding.
    pub fn from_u8(n: u8) -> Option<Self> {
        [Self::Online, Self::MeshOnly, Self::RfOnly]
            .get(n as usize)
            .copied()
    }
}

/// The mode from the uplink and the neighbours: an isolated node without
/// radio peers still serves its own store, so it counts as mesh-only.
pub fn mode(uplink_up: bool, ip_neighbours: usize, rf_neighbours: usize) -> Mode {
    match (uplink_up, ip_neighbours, rf_neighbours) {
        (true, _, _) => Mode::Online,
        (false, 0, n) if n > 0 => Mode::RfOnly,
        _ => Mode::MeshOnly,
    }
}

/// Probe timing and hysteresis.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Between rounds while nothing changes.
    pub interval: Duration,
    /// Before the round that confirms a failure.
    pub retry_interval: Duration,
    /// Failed rounds in a row that mean "down".
    pub down_after: u32,
    /// Per probe.
    pub timeout: Duration,
}

/// The uplink state machine. Pure: it sees round outcomes and says when the
/// next round is due.
#[derive(Debug, Clone)]
pub struct Tracker {
    timing: Timing,
    up: bool,
    failures: u32,
}

impl Tracker {
    /// Starts "down" (nothing proven yet); the first good round says "up".
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            up: false,
            failures: 0,
        }
    }

    /// Is the uplink up?
    pub fn up(&self) -> bool {
        self.up
    }

    /// Takes a round's outcome; returns the new state if it changed.
    pub fn round(&mut self, ok: bool) -> Option<bool> {
        let was = self.up;
        if ok {
            self.failures = 0;
            self.up = true;
        } else {
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.timing.down_after.max(1) {
                self.up = false;
            }
        }
        (self.up != was).then_some(self.up)
    }

    /// Until the next round: sooner while a failure waits for confirmation.
    pub fn next_delay(&self) -> Duration {
        if self.up && self.failures > 0 {
            self.timing.retry_interval
        } else {
            self.timing.interval
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeResult {
    /// The target as configured.
    pub target: String,
    /// Passed.
    pub ok: bool,
    /// Time to the answer (ms).
    pub ms: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The uplink as the last rounds saw it.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Uplink {
    /// Up.
    pub up: bool,
    /// Probing is configured (`probes` not empty).
    pub probed: bool,
    /// Unix ms of the last state change (or of the start).
    pub since_ms: i64,
    /// Unix ms of the last round.
    pub checked_ms: Option<i64>,
    /// Rounds that failed in a row.
    pub failures: u32,
    /// The last round's probes.
    pub probes: Vec<ProbeResult>,
}

/// Runs probe rounds until `stop`; the watch carries the uplink state.
/// With no targets nothing is probed and the uplink counts as down.
pub fn spawn(
    targets: Vec<ProbeTarget>,
    timing: Timing,
    mark: Option<u32>,
    stop: CancellationToken,
) -> watch::Receiver<Uplink> {
    let (tx, rx) = watch::channel(Uplink {
        probed: !targets.is_empty(),
        since_ms: crate::store::now_ms(),
        ..Uplink::default()
    });
    if targets.is_empty() {
        tracing::info!(
            "connectivity: no probes configured; the node counts itself offline (mode mesh-only)"
        );
        return rx;
    }
    tokio::spawn(async move {
        let mut tracker = Tracker::new(timing.clone());
        loop {
            let probes = round(&targets, timing.timeout, mark).await;
            let ok = probes.iter().any(|p| p.ok);
            let changed = tracker.round(ok);
            let now = crate::store::now_ms();
            tx.send_modify(|u| {
                u.up = tracker.up();
                u.checked_ms = Some(now);
                u.failures = if ok { 0 } else { u.failures + 1 };
                if changed.is_some() {
                    u.since_ms = now;
                }
                u.probes = probes;
            });
            match changed {
                Some(true) => tracing::info!("connectivity: uplink up"),
                Some(false) => tracing::warn!(
                    errors = ?tx.borrow().probes.iter().filter_map(|p| p.error.clone()).collect::<Vec<_>>(),
                    "connectivity: uplink down (every probe failed {} rounds in a row)",
                    timing.down_after
                ),
                None => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tracker.next_delay()) => {}
            }
        }
    });
    rx
}

/// One round: every target at once.
async fn round(targets: &[ProbeTarget], timeout: Duration, mark: Option<u32>) -> Vec<ProbeResult> {
    let runs = targets.iter().map(|t| async move {
        let start = Instant::now();
        let r = tokio::time::timeout(timeout, probe(t, mark)).await;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let (ok, error) = match r {
            Ok(Ok(())) => (true, None),
            Ok(Err(e)) => (false, Some(e)),
            Err(_) => (false, Some(format!("no answer in {timeout:?}"))),
        };
        ProbeResult {
            target: t.to_string(),
            ok,
            ms: ok.then_some(ms),
            error,
        }
    });
    futures_util::future::join_all(runs).await
}

async fn probe(t: &ProbeTarget, mark: Option<u32>) -> Result<(), String> {
    let (host, port) = t.host_port();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let mut last = format!("{host}: no address");
    for a in addrs {
        match connect(a, mark).await {
            Ok(stream) => {
                return match t {
                    ProbeTarget::Tcp { .. } => Ok(()),
                    ProbeTarget::Http { host, path, .. } => http_check(stream, host, path).await,
                };
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

async fn connect(a: SocketAddr, mark: Option<u32>) -> std::io::Result<tokio::net::TcpStream> {
    let sock = if a.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(m) = mark {
        // needs CAP_NET_ADMIN; without it failover is off too, so an
        // unmarked probe tests the own uplink all the same
        let _unmarked_without_cap_net_admin =
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Mark, &m);
    }
    sock.connect(a).await
}

async fn http_check(stream: tokio::net::TcpStream, host: &str, path: &str) -> Result<(), String> {
    use http_body_util::Empty;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _closed = conn.await;
    });
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "meshnode-probe")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            interval: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
            down_after: 2,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn probe_targets_parse_and_print_back() {
        for s in [
            "tcp://1.1.1.1:443",
            "tcp://[2001:db8::1]:53",
            "http://connectivitycheck.example/generate_204",
            "http://10.0.0.1:8080/health?x=1",
        ] {
            assert_eq!(ProbeTarget::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            ProbeTarget::parse("http://h").unwrap(),
            ProbeTarget::Http {
                host: "h".into(),
                port: 80,
                path: "/".into()
            }
        );
        assert!(
            ProbeTarget::parse("tcp://host")
                .unwrap_err()
                .contains("needs a port")
        );
        assert!(
            ProbeTarget::parse("https://h/")
                .unwrap_err()
                .contains("https")
        );
        assert!(ProbeTarget::parse("tcp://h:0").is_err());
        assert!(ProbeTarget::parse("http://h/a b").is_err());
    }

    #[test]
    fn one_failed_round_is_confirmed_before_down_and_one_good_round_is_up() {
        let mut t = Tracker::new(timing());
        assert!(!t.up());
        assert_eq!(t.round(true), Some(true));
        assert_eq!(t.next_delay(), Duration::from_secs(5));
        assert_eq!(t.round(false), None, "one failure is not enough");
        assert_eq!(t.next_delay(), Duration::from_secs(1), "confirm quickly");
        assert_eq!(t.round(true), None, "recovered before the confirmation");
        assert_eq!(t.round(false), None);
        assert_eq!(t.round(false), Some(false));
        assert_eq!(t.next_delay(), Duration::from_secs(5));
        assert_eq!(t.round(false), None);
        assert_eq!(t.round(true), Some(true));
    }

    #[test]
    fn modes() {
        assert_eq!(mode(true, 0, 0), Mode::Online);
        assert_eq!(mode(false, 2, 1), Mode::MeshOnly);
        assert_eq!(mode(false, 0, 1), Mode::RfOnly);
        assert_eq!(mode(false, 0, 0), Mode::MeshOnly);
        for m in [Mode::Online, Mode::MeshOnly, Mode::RfOnly] {
            assert_eq!(Mode::from_u8(m.to_u8()), Some(m));
        }
        assert_eq!(
            serde_json::to_string(&Mode::MeshOnly).unwrap(),
            "\"mesh-only\""
        );
    }

    /// Real sockets: a listening port passes, a closed one fails, and an
    /// HTTP server answering 204 passes while one answering 302 fails.
    #[tokio::test]
    async fn real_probes() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_port = open.local_addr().unwrap().port();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = http.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = http.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /generate_204 ") {
                    "204 No Content"
                } else {
                    "302 Found\r\nLocation: http://portal/"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let t = |s: String| ProbeTarget::parse(&s).unwrap();
        let results = round(
            &[
                t(format!("tcp://127.0.0.1:{open_port}")),
                t(format!("tcp://127.0.0.1:{closed_port}")),
                t(format!("http://127.0.0.1:{http_port}/generate_204")),
                t(format!("http://127.0.0.1:{http_port}/portal")),
            ],
            Duration::from_secs(2),
            None,
        )
        .await;
        let oks: Vec<bool> = results.iter().map(|r| r.ok).collect();
        assert_eq!(oks, [true, false, true, false], "{results:?}");
        assert!(results[3].error.as_deref().unwrap().contains("302"));
        drop(open);
    }

    mod props {
        use super::super::ProbeTarget;
        use proptest::prelude::*;

        /// Inputs near the grammar: a scheme (or a wrong one), then hosts,
        /// ports, brackets, slashes and the characters the parser refuses.
        fn near_probe() -> impl Strategy<Value = String> {
            (
                prop_oneof![
                    Just("tcp://"),
                    Just("http://"),
                    Just("https://"),
                    Just("tcp:/"),
                    Just(""),
                ],
                "[a-z0-9.:\\[\\]/@ %?#\\-\t\n\u{e9}]{0,24}",
            )
                .prop_map(|(scheme, rest)| format!("{scheme}{rest}"))
        }

        /// A host as the parser leaves it: not empty, without `/`, space or
        /// `@`, no leading `[` and no trailing `]` (brackets are stripped).
        fn host() -> impl Strategy<Value = String> {
            "[a-z0-9.:\\[\\]%?#\\-\u{e9}]{1,16}".prop_filter("a host the parser can return", |h| {
                !h.starts_with('[') && !h.ends_with(']')
            })
        }

        fn target() -> impl Strategy<Value = ProbeTarget> {
            prop_oneof![
                (host(), 1..=u16::MAX).prop_map(|(host, port)| ProbeTarget::Tcp { host, port }),
                (
                    host(),
                    prop_oneof![Just(80u16), 1..=u16::MAX],
                    "/[!-~\u{e9}]{0,24}"
                )
                    .prop_map(|(host, port, path)| ProbeTarget::Http {
                        host,
                        port,
                        path
                    }),
            ]
        }

        /// Parses, and if it parses, prints to a string that parses to the
        /// same target and prints the same again.
        fn check(s: &str) -> Result<(), TestCaseError> {
            if let Ok(t) = ProbeTarget::parse(s) {
                let printed = t.to_string();
                let again = ProbeTarget::parse(&printed);
                prop_assert_eq!(again.as_ref(), Ok(&t), "{:?} printed as {:?}", s, printed);
                prop_assert_eq!(again.unwrap().to_string(), printed);
            }
            Ok(())
        }

        proptest! {
            /// Never panics on any string; whatever parses prints back to itself.
            #[test]
            fn any_string_parses_or_not_without_panic(s in any::<String>()) {
                check(&s)?;
            }

            /// The same near the grammar, where most inputs parse.
            #[test]
            fn a_parsed_target_prints_back_to_itself(s in near_probe()) {
                check(&s)?;
            }

            /// Every target the parser can return survives printing and parsing.
            #[test]
            fn display_reparses_to_the_same_target(t in target()) {
                let printed = t.to_string();
                prop_assert_eq!(ProbeTarget::parse(&printed), Ok(t), "printed as {:?}", printed);
            }
        }
    }
}
