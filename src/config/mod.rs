//! `/etc/meshnode.toml` → a validated [`Config`].
//!
//! Owns nothing at run time: the daemon supervisor keeps the current `Config`
//! and publishes reloads. Every section is a struct with
//! `#[serde(deny_unknown_fields)]`, and every value type validates itself while
//! deserialising ([`crate::node::Callsign`], [`units::ByteSize`], ...), so any
//! mistake comes back from the TOML parser with its span, which [`load`] turns
//! into `file:line:column: what is wrong`. The annotated `etc/meshnode.toml`
//! documents every key and is parsed by a test so it cannot rot.

pub mod rf;
pub mod units;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::node::{Callsign, Label};
pub use rf::{RfConfig, TncAddr};
pub use units::{BitRate, ByteSize, Dscp, DurationStr};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/meshnode.toml";

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending value or key.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong, in words.
        message: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`: who this node is and where it keeps its state.
    pub node: NodeConfig,
    /// `[http]`: public and control listeners.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[store]`: content store limits and upkeep.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[discovery]`: how this node finds peers and what it tells them.
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// `[gossip]`: membership and dissemination tunables.
    #[serde(default)]
    pub gossip: GossipConfig,
    /// `[sync]`: catalog reconciliation, conflicts and replication.
    #[serde(default)]
    pub sync: SyncConfig,
    /// `[connectivity]`: uplink probes, the network mode, failover.
    #[serde(default)]
    pub connectivity: ConnectivityConfig,
    /// `[proxy]`: the forward proxy for external plain-HTTP content.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[shaping]`: per-client bandwidth fairness and quotas in the kernel.
    #[serde(default)]
    pub shaping: ShapingConfig,
    /// `[analytics]`: usage figures rolled up in SQLite.
    #[serde(default)]
    pub analytics: AnalyticsConfig,
    /// `[dbus]`: the D-Bus interface on the system bus.
    #[serde(default)]
    pub dbus: DbusConfig,
    /// `[rf]`: packet radio through a TNC.
    #[serde(default)]
    pub rf: RfConfig,
}

/// `[analytics]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Count what is served (`<state_dir>/analytics.sqlite`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Hour-by-hour rows are kept this long (whole days).
    #[serde(default = "default_hourly_retention")]
    pub hourly_retention: DurationStr,
    /// Day-by-day rows are kept this long.
    #[serde(default = "default_daily_retention")]
    pub daily_retention: DurationStr,
    /// URLs kept by name per hour and per day (the rest are summed).
    #[serde(default = "default_top")]
    pub top: usize,
}

fn default_hourly_retention() -> DurationStr {
    DurationStr(Duration::from_secs(14 * 86_400))
}
fn default_daily_retention() -> DurationStr {
    DurationStr(Duration::from_secs(400 * 86_400))
}
fn default_top() -> usize {
    50
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hourly_retention: default_hourly_retention(),
            daily_retention: default_daily_retention(),
            top: default_top(),
        }
    }
}

/// `[dbus]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbusConfig {
    /// Offer `org.meshnode.Node` on the system bus. On by default: where
    /// there is no bus (OpenWrt, containers) the node says so once and runs
    /// on; it never fails to start for D-Bus.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The bus to connect to, as a D-Bus address (`unix:path=/run/dbus/...`).
    /// Absent: the system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else
    /// `/run/dbus/system_bus_socket`), which is what production wants.
    #[serde(default)]
    pub address: Option<String>,
}

impl Default for DbusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: None,
        }
    }
}

/// `[shaping]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapingConfig {
    /// Shape the LAN's clients. Needs CAP_NET_ADMIN; without it (or with
    /// this off) the node runs unshaped and says so once.
    #[serde(default)]
    pub enabled: bool,
    /// LAN-facing interfaces: downloads are shaped on their egress, uploads
    /// on an IFB device their ingress is redirected to.
    #[serde(default = "default_shaping_interfaces")]
    pub interfaces: Vec<String>,
    /// Total rate the clients may upload (the uplink's, a little under it).
    #[serde(default = "default_uplink")]
    pub uplink: BitRate,
    /// Total rate the clients may download.
    #[serde(default = "default_downlink")]
    pub downlink: BitRate,
    /// Floor of a client's guaranteed share (the fair share is the link
    /// rate divided among the active clients).
    #[serde(default = "default_client_min")]
    pub client_min: BitRate,
    /// What one client may borrow up to when others are idle, as a
    /// fraction of the link (0 < x <= 1).
    #[serde(default = "one")]
    pub client_ceil: Fraction,
    /// Guaranteed to the priority class (essential / emergency traffic:
    /// `priority_dscp` and `priority_hosts`), which is never starved.
    #[serde(default = "default_priority_share")]
    pub priority_share: Fraction,
    /// Packets marked with these DSCPs go to the priority class, from
    /// whichever host. Default `["EF"]` (voice, emergency lines). A host
    /// that marks bulk traffic EF only gains the link's spare capacity:
    /// every client class keeps its guaranteed rate.
    #[serde(default = "default_priority_dscp")]
    pub priority_dscp: Vec<Dscp>,
    /// Addresses whose traffic goes to the priority class. With
    /// `priority_dscp`, at most [`MAX_PRIORITY_FILTERS`] entries.
    #[serde(default)]
    pub priority_hosts: Vec<std::net::Ipv4Addr>,
    /// Addresses never shaped as clients (e.g. other routers): their
    /// traffic goes to the default class.
    #[serde(default)]
    pub exempt: Vec<std::net::Ipv4Addr>,
    /// Per client per day (UTC), up and down together; none when absent.
    #[serde(default)]
    pub daily_quota: Option<ByteSize>,
    /// Per client per calendar month (UTC).
    #[serde(default)]
    pub monthly_quota: Option<ByteSize>,
    /// Rate of a client over its quota, until the period rolls over.
    #[serde(default = "default_throttle")]
    pub throttle: BitRate,
    /// A client's class goes when it has carried nothing for this long and
    /// the neighbour table no longer calls it reachable.
    #[serde(default = "default_idle_after")]
    pub idle_after: DurationStr,
    /// Between neighbour-table scans and counter reads.
    #[serde(default = "default_scan_interval")]
    pub scan_interval: DurationStr,
    /// Lower the shaped rates while the uplink probes' RTT shows queues
    /// building beyond this router under load, and raise them again when
    /// it settles (see `[connectivity] probes`).
    #[serde(default = "yes")]
    pub autorate: bool,
    /// RTT rise above its baseline, under load, that counts as congestion.
    #[serde(default = "default_congestion_delay")]
    pub congestion_delay: DurationStr,
}

fn default_congestion_delay() -> DurationStr {
    DurationStr(Duration::from_millis(30))
}

/// A fraction in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Fraction(pub f64);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v > 0.0 && v <= 1.0 {
            Ok(Fraction(v))
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a fraction in (0, 1]"
            )))
        }
    }
}

/// Most `priority_dscp` plus `priority_hosts` entries: their filters sit
/// before the clients' (u32 prefs 1..=15).
pub const MAX_PRIORITY_FILTERS: usize = 15;

fn default_priority_dscp() -> Vec<Dscp> {
    vec![Dscp::EF]
}
fn default_shaping_interfaces() -> Vec<String> {
    vec!["br-lan".into()]
}
fn default_uplink() -> BitRate {
    BitRate(20_000_000)
}
fn default_downlink() -> BitRate {
    BitRate(50_000_000)
}
fn default_client_min() -> BitRate {
    BitRate(256_000)
}
fn one() -> Fraction {
    Fraction(1.0)
}
fn default_priority_share() -> Fraction {
    Fraction(0.1)
}
fn default_throttle() -> BitRate {
    BitRate(1_000_000)
}
fn default_idle_after() -> DurationStr {
    DurationStr(Duration::from_secs(300))
}
fn default_scan_interval() -> DurationStr {
    DurationStr(Duration::from_secs(2))
}

impl Default for ShapingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: default_shaping_interfaces(),
            uplink: default_uplink(),
            downlink: default_downlink(),
            client_min: default_client_min(),
            client_ceil: one(),
            priority_share: default_priority_share(),
            priority_dscp: default_priority_dscp(),
            priority_hosts: Vec::new(),
            exempt: Vec::new(),
            daily_quota: None,
            monthly_quota: None,
            throttle: default_throttle(),
            idle_after: default_idle_after(),
            scan_interval: default_scan_interval(),
            autorate: true,
            congestion_delay: default_congestion_delay(),
        }
    }
}

/// `[connectivity]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectivityConfig {
    /// `tcp://host:port` and `http://host/path` (2xx passes) targets; the
    /// uplink is up while any of them answers. Empty: no probing, offline.
    #[serde(default = "default_probes")]
    pub probes: Vec<crate::connectivity::ProbeTarget>,
    /// Between probe rounds.
    #[serde(default = "default_probe_interval")]
    pub interval: DurationStr,
    /// Before the round that confirms a failed one.
    #[serde(default = "default_probe_retry")]
    pub retry_interval: DurationStr,
    /// Failed rounds in a row that mean the uplink is down.
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Per probe.
    #[serde(default = "default_probe_timeout")]
    pub timeout: DurationStr,
    /// When the uplink is down and a mesh node with one is reachable over
    /// IP, route this node's (and its clients') traffic through it. Needs
    /// CAP_NET_ADMIN; without it the node says so once and carries on.
    #[serde(default = "yes")]
    pub failover: bool,
    /// meshnode's own routing table for the failover default route.
    #[serde(default = "default_failover_table")]
    pub failover_table: u32,
    /// Priority of meshnode's policy rules (it uses this and its neighbours ±1).
    #[serde(default = "default_failover_table")]
    pub rule_priority: u32,
    /// Route protocol number meshnode's routes are tagged with.
    #[serde(default = "default_route_protocol")]
    pub route_protocol: u8,
    /// Firewall mark of the probes' sockets (they always use the main table).
    #[serde(default = "default_fwmark")]
    pub fwmark: u32,
}

/// `[proxy]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Answer absolute-form (`GET http://host/...`) requests and `CONNECT`
    /// on the public port.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Priority of fetched external content in the catalog.
    #[serde(default = "default_proxy_priority")]
    pub priority: crate::catalog::Priority,
    /// Largest external object that enters the catalog; bigger ones are
    /// passed through uncached.
    #[serde(default = "default_proxy_max_object")]
    pub max_object: ByteSize,
    /// Freshness of a response that carries no cache headers.
    #[serde(default = "default_proxy_freshness")]
    pub default_freshness: DurationStr,
    /// Allow `CONNECT` tunnels (HTTPS, passed through untouched).
    #[serde(default = "yes")]
    pub connect: bool,
}

/// `host:port` of a peer's HTTP listener (a name or an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub String);

impl PeerAddr {
    /// Checks the `host:port` shape (the host is resolved when dialled).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{s:?}: missing or bad host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(PeerAddr(s.to_string())),
            _ => Err(format!("{s:?}: port must be 1-65535")),
        }
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PeerAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[discovery]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Announce and browse `_meshnode._tcp` by mDNS on the local links.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Interfaces for mDNS; empty = every interface except the one holding
    /// the default route (the uplink).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Bootstrap nodes (`host:port` of their HTTP listener) to register with
    /// and ask for peers.
    #[serde(default)]
    pub bootstrap: Vec<PeerAddr>,
    /// Peers dialled directly and kept dialled (`host:port`).
    #[serde(default)]
    pub static_peers: Vec<PeerAddr>,
    /// Opt in to having this node's addresses carried beyond its own link
    /// (in gossip and bootstrap answers), and to serving as a bootstrap node.
    #[serde(default)]
    pub broadcast: bool,
    /// How long a bootstrap registration lives unless renewed.
    #[serde(default = "default_registration_ttl")]
    pub registration_ttl: DurationStr,
    /// Base period for re-dialling known peers that are not connected;
    /// each attempt is jittered by ±50 % so a healed partition is not hit
    /// by every node at once.
    #[serde(default = "default_redial_interval")]
    pub redial_interval: DurationStr,
}

/// `[gossip]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// Neighbours each node forwards a new message to.
    #[serde(default = "default_fanout")]
    pub fanout: u8,
    /// Hop limit of a gossip message.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    /// Heartbeat period.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: DurationStr,
    /// A peer not heard from for this long is dropped from the peer table.
    #[serde(default = "default_peer_expiry")]
    pub peer_expiry: DurationStr,
    /// Messages dated further than this ahead of our clock are dropped.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: DurationStr,
}

/// `[sync]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// On a conflict (two origins, same URL, same version), keep the losing
    /// version reachable at a derived URL instead of hiding it.
    #[serde(default)]
    pub keep_both: bool,
    /// Requests across the mesh after which a popular (priority 2) item is
    /// copied to this node.
    #[serde(default = "default_popular_threshold")]
    pub popular_threshold: u32,
    /// Reconcile with every neighbour at least this often, even when
    /// heartbeats agree.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval: DurationStr,
    /// Chunk downloads in flight per transfer (spread over the peers that hold it).
    #[serde(default = "default_parallel_chunks")]
    pub parallel_chunks: u8,
    /// Background replication (copies the mesh makes on its own: essential
    /// and popular items) in total, so synchronisation stays a small share
    /// of the links (NFR-002: under 10%); reads someone waits for are not
    /// paced.
    #[serde(default = "default_sync_rate")]
    pub max_rate: BitRate,
}

fn default_sync_rate() -> BitRate {
    BitRate(10_000_000)
}

fn yes() -> bool {
    true
}
fn default_probes() -> Vec<crate::connectivity::ProbeTarget> {
    [
        "http://connectivitycheck.gstatic.com/generate_204",
        "tcp://1.1.1.1:443",
        "tcp://9.9.9.9:443",
    ]
    .iter()
    .map(|s| crate::connectivity::ProbeTarget::parse(s).expect("valid default"))
    .collect()
}
fn default_probe_interval() -> DurationStr {
    DurationStr(Duration::from_secs(5))
}
fn default_probe_retry() -> DurationStr {
    DurationStr(Duration::from_secs(1))
}
fn default_down_after() -> u32 {
    2
}
fn default_probe_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(2))
}
fn default_failover_table() -> u32 {
    7734
}
fn default_route_protocol() -> u8 {
    158
}
fn default_fwmark() -> u32 {
    0x6d6e
}
fn default_proxy_priority() -> crate::catalog::Priority {
    crate::catalog::Priority::Standard
}
fn default_proxy_max_object() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_proxy_freshness() -> DurationStr {
    DurationStr(Duration::from_secs(3600))
}

impl Default for ConnectivityConfig {
    fn default() -> Self {
        Self {
            probes: default_probes(),
            interval: default_probe_interval(),
            retry_interval: default_probe_retry(),
            down_after: default_down_after(),
            timeout: default_probe_timeout(),
            failover: true,
            failover_table: default_failover_table(),
            rule_priority: default_failover_table(),
            route_protocol: default_route_protocol(),
            fwmark: default_fwmark(),
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            priority: default_proxy_priority(),
            max_object: default_proxy_max_object(),
            default_freshness: default_proxy_freshness(),
            connect: true,
        }
    }
}
fn default_registration_ttl() -> DurationStr {
    DurationStr(Duration::from_secs(300))
}
fn default_redial_interval() -> DurationStr {
    DurationStr(Duration::from_secs(30))
}
fn default_fanout() -> u8 {
    3
}
fn default_ttl() -> u8 {
    8
}
fn default_heartbeat() -> DurationStr {
    DurationStr(Duration::from_secs(30))
}
fn default_peer_expiry() -> DurationStr {
    DurationStr(Duration::from_secs(95))
}
fn default_max_clock_skew() -> DurationStr {
    DurationStr(Duration::from_secs(300))
}
fn default_popular_threshold() -> u32 {
    10
}
fn default_reconcile_interval() -> DurationStr {
    DurationStr(Duration::from_secs(300))
}
fn default_parallel_chunks() -> u8 {
    4
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            mdns: true,
            interfaces: Vec::new(),
            bootstrap: Vec::new(),
            static_peers: Vec::new(),
            broadcast: false,
            registration_ttl: default_registration_ttl(),
            redial_interval: default_redial_interval(),
        }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            fanout: default_fanout(),
            ttl: default_ttl(),
            heartbeat_interval: default_heartbeat(),
            peer_expiry: default_peer_expiry(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            keep_both: false,
            popular_threshold: default_popular_threshold(),
            reconcile_interval: default_reconcile_interval(),
            parallel_chunks: default_parallel_chunks(),
            max_rate: default_sync_rate(),
        }
    }
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Base callsign of the licensed operator; required, because a station's
    /// content lives under `<callsign>.radio` and RF frames must carry it.
    pub callsign: Callsign,
    /// Node label; the node name is `CALLSIGN-label`. Defaults to `node`.
    #[serde(default = "default_label")]
    pub label: Label,
    /// Node key, SQLite catalog and blobs live here. Relative paths are
    /// resolved against the config file's folder.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Public listeners; content, read-only API and metrics. Port 8080 so the
    /// node needs no privilege to bind it.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Unix socket for meshctl and every mutating operation (mode 0660, group
    /// `meshadmin` when it exists). Relative paths resolve like `state_dir`.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Quota for blob bytes; eviction keeps the store under it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// How often every blob is re-hashed to catch bit rot. Daily by default:
    /// a full pass over a 2 GiB store costs about a second of CPU.
    #[serde(default = "default_scrub_interval")]
    pub scrub_interval: DurationStr,
    /// RAM for hot, already verified small objects; serving them skips the
    /// disk and the hash. 8 MiB fits a 64 MB router.
    #[serde(default = "default_memory_cache")]
    pub memory_cache: ByteSize,
}

fn default_label() -> Label {
    Label::parse("node").expect("constant label is valid")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/meshnode")
}
fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([0, 0, 0, 0], 8080))]
}
fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/meshnode/control.sock")
}
fn default_max_bytes() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_scrub_interval() -> DurationStr {
    DurationStr(Duration::from_secs(86_400))
}
fn default_memory_cache() -> ByteSize {
    ByteSize(8 << 20)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            control_socket: default_control_socket(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            scrub_interval: default_scrub_interval(),
            memory_cache: default_memory_cache(),
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut cfg = parse(&text, &path.display().to_string())?;
    let base = path.parent().unwrap_or(Path::new("."));
    cfg.resolve_relative(base);
    Ok(cfg)
}

/// Parses config text; `name` is used in error messages. Relative paths are
/// left as written.
pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = line_column(text, offset);
        ConfigError::Invalid {
            path: name.to_string(),
            line,
            column,
            message: e.message().to_string(),
        }
    })?;
    if cfg.http.listen.is_empty() {
        let offset = text.find("listen").unwrap_or(0);
        let (line, column) = line_column(text, offset);
        return Err(ConfigError::Invalid {
            path: name.to_string(),
            line,
            column,
            message: "http.listen needs at least one address".into(),
        });
    }
    let s = &cfg.shaping;
    if s.priority_dscp.len() + s.priority_hosts.len() > MAX_PRIORITY_FILTERS {
        let offset = text
            .find("priority_hosts")
            .or_else(|| text.find("priority_dscp"));
        let (line, column) = line_column(text, offset.unwrap_or(0));
        return Err(ConfigError::Invalid {
            path: name.to_string(),
            line,
            column,
            message: format!(
                "shaping: priority_dscp and priority_hosts have {} entries together; at most {MAX_PRIORITY_FILTERS}",
                s.priority_dscp.len() + s.priority_hosts.len()
            ),
        });
    }
    Ok(cfg)
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

impl Config {
    /// The node's name, `CALLSIGN-label`.
    pub fn node_name(&self) -> String {
        crate::node::node_name(&self.node.callsign, &self.node.label)
    }

    /// Development override (`meshnode --state-dir DIR`): state *and* the
    /// control socket go into `dir`, so a node runs without root.
    pub fn override_state_dir(&mut self, dir: &Path) {
        self.node.state_dir = dir.to_path_buf();
        self.http.control_socket = dir.join("control.sock");
    }

    fn resolve_relative(&mut self, base: &Path) {
        for p in [&mut self.node.state_dir, &mut self.http.control_socket] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// Keys that differ between `self` and `new` but only take effect after a
    /// restart; everything else is applied by a reload.
    pub fn restart_required(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.node.callsign != new.node.callsign {
            keys.push("node.callsign");
        }
        if self.node.label != new.node.label {
            keys.push("node.label");
        }
        if self.node.state_dir != new.node.state_dir {
            keys.push("node.state_dir");
        }
        if self.http.listen != new.http.listen {
            keys.push("http.listen");
        }
        if self.http.control_socket != new.http.control_socket {
            keys.push("http.control_socket");
        }
        if self.discovery != new.discovery {
            keys.push("discovery");
        }
        if self.gossip != new.gossip {
            keys.push("gossip");
        }
        if self.sync != new.sync {
            keys.push("sync");
        }
        if self.connectivity != new.connectivity {
            keys.push("connectivity");
        }
        if self.proxy != new.proxy {
            keys.push("proxy");
        }
        // [shaping] applies live (`shaping::Shaping::reconfigure`)
        if self.analytics != new.analytics {
            keys.push("analytics");
        }
        if self.dbus != new.dbus {
            keys.push("dbus");
        }
        if self.rf != new.rf {
            keys.push("rf");
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, usize, String) {
        match parse(text, "t.toml").unwrap_err() {
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[node]\ncallsign = \"n0call\"\n", "t").unwrap();
        assert_eq!(c.node.callsign.as_str(), "N0CALL");
        assert_eq!(c.node_name(), "N0CALL-node");
        assert_eq!(c.http.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(c.store.max_bytes, ByteSize(2 << 30));
    }

    #[test]
    fn unknown_key_points_at_the_key() {
        let (line, col, msg) = err("[node]\ncallsign = \"N0CALL\"\ncolour = 3\n");
        assert_eq!((line, col), (3, 1));
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn bad_callsign_points_at_the_value() {
        let (line, col, msg) = err("[node]\n  callsign = \"N0CALL-7\"\n");
        assert_eq!((line, col), (2, 14));
        assert!(msg.contains("SSID"), "{msg}");
    }

    #[test]
    fn wrong_type_and_bad_size() {
        let (line, _, msg) =
            err("[node]\ncallsign = \"N0CALL\"\n[http]\nlisten = \"0.0.0.0:80\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("invalid type"), "{msg}");
        let (line, col, msg) =
            err("[node]\ncallsign = \"N0CALL\"\n[store]\nmax_bytes = \"2 zettabytes\"\n");
        assert_eq!((line, col), (4, 13));
        assert!(msg.contains("unknown unit"), "{msg}");
    }

    #[test]
    fn missing_callsign_and_empty_listen() {
        let (_, _, msg) = err("[node]\nlabel = \"x\"\n");
        assert!(msg.contains("callsign"), "{msg}");
        let (line, _, msg) = err("[node]\ncallsign = \"N0CALL\"\n[http]\nlisten = []\n");
        assert_eq!(line, 4);
        assert!(msg.contains("at least one"), "{msg}");
    }

    #[test]
    fn priority_entries_are_bounded_and_dscp_names_checked() {
        let hosts: Vec<String> = (1..=15).map(|i| format!("\"10.0.0.{i}\"")).collect();
        let text = format!(
            "[node]\ncallsign = \"N0CALL\"\n[shaping]\npriority_hosts = [{}]\n",
            hosts.join(", ")
        );
        let (line, _, msg) = err(&text);
        assert_eq!(line, 4);
        assert!(msg.contains("16 entries together; at most 15"), "{msg}");
        let ok = text.replace("[shaping]", "[shaping]\npriority_dscp = []");
        assert_eq!(
            parse(&ok, "t.toml").unwrap().shaping.priority_hosts.len(),
            15
        );
        let (line, col, msg) =
            err("[node]\ncallsign = \"N0CALL\"\n[shaping]\npriority_dscp = [\"EF\", \"AF51\"]\n");
        assert_eq!((line, col), (4, 24));
        assert!(msg.contains("invalid DSCP \"AF51\""), "{msg}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.toml");
        std::fs::write(&p, "[node]\ncallsign = \"N0CALL\"\nstate_dir = \"st\"\n").unwrap();
        let c = load(&p).unwrap();
        assert_eq!(c.node.state_dir, dir.path().join("st"));
        let e = load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml: cannot read"), "{e}");
    }

    /// The annotated example documents every key with its default value, so
    /// it must parse and agree with the code's defaults.
    #[test]
    fn shipped_example_parses_and_shows_the_defaults() {
        let text = include_str!("../../etc/meshnode.toml");
        let c = parse(text, "etc/meshnode.toml").unwrap();
        assert_eq!(c.node.callsign.as_str(), "N0CALL");
        assert_eq!(c.node.state_dir, default_state_dir());
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.store, StoreConfig::default());
        assert_eq!(c.discovery, DiscoveryConfig::default());
        assert_eq!(c.gossip, GossipConfig::default());
        assert_eq!(c.sync, SyncConfig::default());
        assert_eq!(c.connectivity, ConnectivityConfig::default());
        assert_eq!(c.proxy, ProxyConfig::default());
        assert_eq!(c.dbus, DbusConfig::default());
        assert_eq!(c.rf, RfConfig::default());
    }

    #[test]
    fn rf_section_is_checked_where_it_is_wrong() {
        let base = "[node]\ncallsign = \"N0CALL\"\n[rf]\n";
        let c = parse(
            &format!("{base}enabled = true\ntnc = \"kiss-serial:///dev/ttyUSB0?baud=1200\"\nssid = 10\nairtime_budget = 0.1\nbeacon_interval = \"0s\"\n"),
            "t",
        )
        .unwrap();
        assert!(c.rf.enabled);
        assert_eq!(c.rf.ssid, rf::Ssid(10));
        assert_eq!(
            c.rf.tnc.0,
            TncAddr::KissSerial {
                path: "/dev/ttyUSB0".into(),
                baud: 1200
            }
        );
        assert!(c.rf.beacon_interval.0.is_zero());
        let (line, col, msg) = err(&format!("{base}airtime_budget = 0.2\n"));
        assert_eq!((line, col), (4, 18));
        assert!(msg.contains("NFR-002"), "{msg}");
        let (line, _, msg) = err(&format!("{base}enabled = true\ntnc = \"tcp://x:1\"\n"));
        assert_eq!(line, 5);
        assert!(msg.contains("unknown kind"), "{msg}");
        let (line, _, msg) = err(&format!("{base}id_interval = \"11m\"\n"));
        assert_eq!(line, 4);
        assert!(msg.contains("10 minutes"), "{msg}");
        let (_, _, msg) = err(&format!("{base}ssid = 16\n"));
        assert!(msg.contains("0..=15"), "{msg}");
        let (_, _, msg) = err(&format!("{base}paclen = 300\n"));
        assert!(msg.contains("1..=256"), "{msg}");
        let (_, _, msg) = err(&format!("{base}request_budget = 1.5\n"));
        assert!(msg.contains("(0, 1]"), "{msg}");
        let (_, _, msg) = err(&format!("{base}callsign = \"X\"\n"));
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn peer_addresses_are_checked() {
        let (line, _, msg) =
            err("[node]\ncallsign = \"N0CALL\"\n[discovery]\nbootstrap = [\"10.0.0.1\"]\n");
        assert_eq!(line, 4);
        assert!(msg.contains("host:port"), "{msg}");
        let c = parse(
            "[node]\ncallsign = \"N0CALL\"\n[discovery]\nstatic_peers = [\"hilltop.local:8080\", \"[fd00::1]:8080\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.discovery.static_peers.len(), 2);
    }

    #[test]
    fn restart_required_lists_only_changed_fixed_keys() {
        let a = parse("[node]\ncallsign = \"N0CALL\"\n", "t").unwrap();
        let mut b = a.clone();
        b.store.max_bytes = ByteSize(1);
        assert!(a.restart_required(&b).is_empty());
        b.http.listen = vec!["127.0.0.1:1".parse().unwrap()];
        assert_eq!(a.restart_required(&b), vec!["http.listen"]);
    }
}
