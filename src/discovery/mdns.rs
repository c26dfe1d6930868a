//! mDNS announce and browse of `_meshnode._tcp` on the local links.
//!
//! [`Mdns::start`] registers this node with the [`mdns_sd`] daemon and browses
//! for the other nodes on the same links; every other node it resolves is sent
//! to the caller as a [`Found`], and sent again whenever its name, addresses or
//! catalog digest change.
//!
//! # Records
//!
//! - Instance: `<name>-<first 8 hex of the node id>` in lower case, e.g.
//!   `n0call-home-1a2b3c4d._meshnode._tcp.local.`, unique even when two nodes
//!   share a name (lower case works around an mdns-sd bug, see `instance_name`).
//! - Host: `<instance>.local.` (lower-case), with the addresses of the chosen
//!   interfaces ([`ServiceInfo::enable_addr_auto`], so they follow address
//!   changes).
//! - Port: the node's HTTP port (gossip UDP uses the same number).
//! - TXT: `v=1`, `id=<64 hex>`, `name=<node name>`, `digest=<opaque>`.
//!
//! # Interfaces
//!
//! mdns-sd announces on *every* interface unless told otherwise, so [`Mdns::start`]
//! first disables all of them and then enables either the configured names or,
//! when none are configured, every interface that does not hold a default route
//! ([`default_route_interfaces`]). mdns-sd re-applies the selection at each
//! interface check, which runs every second here instead of its default 5 s,
//! so a new LAN port, a late carrier or a moved default route is picked up
//! quickly. mdns-sd skips point-to-point interfaces (tun, WireGuard, GRE)
//! whatever is selected, and interfaces that are not operationally up.
//!
//! Caveat: mdns-sd joins the multicast group on every interface when its
//! thread starts, before the selection is applied; that sends IGMP/MLD
//! membership reports, but no mDNS packet goes out before the selection (the
//! commands are processed in order).
//!
//! # Speed
//!
//! Registration skips the RFC 6762 probing step ([`ServiceInfo::set_requires_probe`]):
//! probing costs about 750 ms before the first announcement, and the names here
//! embed the node id, so a conflict means two nodes share an identity, which
//! probing would not fix either. A browser already running therefore sees a new
//! node as soon as it registers, and a digest change (a new TXT record) goes out
//! at once instead of being probed again.
//!
//! One limit remains from mdns-sd: RFC 6762's rule that a record is multicast
//! at most once a second per interface. A node that starts browsing within a
//! second of a peer's last announcement of a record gets that record only
//! about a second later (the peer's next multicast). Changing the digest often
//! makes this more likely, so callers should not call [`Mdns::set_digest`] more
//! than about once a second.
//!
//! # Addresses
//!
//! [`Found::addrs`] holds one socket address per resolved address with the
//! port from the SRV record. IPv6 link-local addresses (`fe80::/10`) are kept
//! with the scope id of the interface they were received on (mdns-sd records
//! it); a link-local address without a known interface is dropped, as it would
//! not be reachable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{SocketAddr, SocketAddrV6};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mdns_sd::{
    IfKind, IfPredicate, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo,
};
use tokio::sync::mpsc;

use crate::node::NodeId;

/// Service type.
pub const SERVICE: &str = "_meshnode._tcp.local.";

/// Value of the `v` TXT key this code speaks.
const PROTOCOL_VERSION: &str = "1";

/// How often mdns-sd looks for interface and address changes (its default is
/// 5 s). A LAN port that comes up after the start, or whose carrier arrives a
/// moment late (as on boot), is used within this time.
const IP_CHECK_INTERVAL_SECS: u32 = 1;

/// How long the default-route interfaces read for the interface selection are reused.
const ROUTES_MAX_AGE: Duration = Duration::from_millis(500);

/// How long [`Mdns::shutdown`] waits for the mdns-sd thread to confirm it stopped.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// What browsing found: one other node (never ourselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The node's identity (TXT `id`).
    pub node: NodeId,
    /// Its human name, e.g. `N0CALL-home` (TXT `name`; the instance name
    /// if the TXT record has none).
    pub name: String,
    /// Where its HTTP port (and gossip UDP port) is reached, sorted, IPv4 first.
    pub addrs: Vec<SocketAddr>,
    /// Its catalog digest (TXT `digest`, opaque; empty if absent).
    pub digest: String,
}

/// mDNS could not be started or updated.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// [`Mdns::start`] was called outside a tokio runtime.
    #[error("mDNS discovery must be started inside a tokio runtime")]
    NoRuntime,
    /// The mdns-sd daemon thread could not be created.
    #[error("cannot start the mDNS daemon: {0}")]
    Daemon(#[source] mdns_sd::Error),
    /// The interface selection was refused.
    #[error("cannot select the mDNS interfaces: {0}")]
    Interfaces(#[source] mdns_sd::Error),
    /// The service record could not be built (e.g. a TXT value over 255 bytes).
    #[error("invalid mDNS service record for {instance}: {source}")]
    Record {
        /// The instance name.
        instance: String,
        /// Why.
        source: mdns_sd::Error,
    },
    /// The daemon refused the registration (queue full or daemon gone).
    #[error("cannot register {instance} by mDNS: {source}")]
    Register {
        /// The instance name.
        instance: String,
        /// Why.
        source: mdns_sd::Error,
    },
    /// Browsing could not start.
    #[error("cannot browse {SERVICE} by mDNS: {0}")]
    Browse(#[source] mdns_sd::Error),
}

/// What [`Mdns::start`] needs.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    /// Interfaces to announce and browse on; empty = every interface except
    /// those holding a default route.
    pub interfaces: Vec<String>,
    /// This node's HTTP port (gossip UDP uses the same number).
    pub port: u16,
    /// This node's identity.
    pub node: NodeId,
    /// This node's name, e.g. `N0CALL-home`.
    pub name: String,
    /// The current catalog digest, put in TXT as is.
    pub digest: String,
}

/// The fixed part of this node's registration.
#[derive(Debug, Clone)]
struct Registration {
    instance: String,
    host: String,
    port: u16,
    id_hex: String,
    name: String,
}

impl Registration {
    fn new(cfg: &MdnsConfig) -> Self {
        let id_hex = cfg.node.to_hex();
        let instance = instance_name(&cfg.name, &cfg.node);
        Self {
            host: format!("{}.local.", host_label(&instance)),
            instance,
            port: cfg.port,
            id_hex,
            name: cfg.name.clone(),
        }
    }

    /// The service record with `digest` in TXT.
    fn service_info(&self, digest: &str) -> Result<ServiceInfo, MdnsError> {
        let txt = [
            ("v", PROTOCOL_VERSION),
            ("id", self.id_hex.as_str()),
            ("name", self.name.as_str()),
            ("digest", digest),
        ];
        let mut info =
            ServiceInfo::new(SERVICE, &self.instance, &self.host, (), self.port, &txt[..])
                .map_err(|source| MdnsError::Record {
                    instance: self.instance.clone(),
                    source,
                })?
                .enable_addr_auto();
        // See "Speed" in the module docs.
        info.set_requires_probe(false);
        Ok(info)
    }
}

/// `<name>-<first 8 hex of id>`, lower-cased.
///
/// Lower case because mdns-sd 0.21.7 keys its services by the lower-cased
/// name but schedules the second announcement (RFC 6762 section 8.3) under
/// the name as given: with any upper-case letter that announcement is never
/// sent. DNS names are case-insensitive and [`Found::name`] comes from TXT,
/// so nothing is lost.
fn instance_name(name: &str, node: &NodeId) -> String {
    format!("{name}-{}", node.short()).to_ascii_lowercase()
}

/// A DNS host label from `instance`: lower-case letters, digits and `-`,
/// at most 63 bytes (node names are already valid labels; this is a guard).
fn host_label(instance: &str) -> String {
    let mut label: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    label.truncate(63);
    let label = label.trim_matches('-');
    if label.is_empty() {
        "meshnode".to_string()
    } else {
        label.to_string()
    }
}

/// A running mDNS announcer and browser. Stop it with [`Mdns::shutdown`];
/// dropping it also stops the daemon, without waiting.
pub struct Mdns {
    daemon: ServiceDaemon,
    reg: Registration,
    fullname: String,
    digest: Mutex<String>,
    forwarder: tokio::task::JoinHandle<()>,
    stopped: bool,
}

impl fmt::Debug for Mdns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mdns")
            .field("fullname", &self.fullname)
            .field("host", &self.reg.host)
            .field("port", &self.reg.port)
            .field("digest", &*lock(&self.digest))
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mdns {
    /// Registers this node and starts browsing; each resolved other node is sent on `found`
    /// (again whenever its addresses or TXT digest change). Uses `interfaces` when non-empty,
    /// else every interface except the one(s) holding the default route.
    ///
    /// Must be called inside a tokio runtime. The mdns-sd thread it creates
    /// lives in the network namespace of the calling thread.
    pub fn start(cfg: MdnsConfig, found: mpsc::Sender<Found>) -> Result<Mdns, MdnsError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MdnsError::NoRuntime)?;
        let reg = Registration::new(&cfg);
        let info = reg.service_info(&cfg.digest)?;
        let fullname = info.get_fullname().to_string();

        let daemon = ServiceDaemon::new().map_err(MdnsError::Daemon)?;
        // From here on, a failure must stop the daemon thread again.
        let fail = |daemon: &ServiceDaemon, e: MdnsError| {
            let _ = daemon.shutdown();
            e
        };

        if let Err(e) = select_interfaces(&daemon, &cfg.interfaces) {
            return Err(fail(&daemon, e));
        }
        // Browse first: our own announcement is then seen (and ignored) too,
        // and peers' answers to our query arrive as early as possible.
        let events = match daemon.browse(SERVICE) {
            Ok(rx) => rx,
            Err(e) => return Err(fail(&daemon, MdnsError::Browse(e))),
        };
        if let Err(source) = daemon.register(info) {
            let e = MdnsError::Register {
                instance: reg.instance.clone(),
                source,
            };
            return Err(fail(&daemon, e));
        }
        tracing::info!(
            instance = %reg.instance,
            port = reg.port,
            interfaces = %describe_selection(&cfg.interfaces),
            "mDNS: announcing and browsing {SERVICE}"
        );

        let forwarder = runtime.spawn(forward(events, found, cfg.node));
        Ok(Mdns {
            daemon,
            reg,
            fullname,
            digest: Mutex::new(cfg.digest),
            forwarder,
            stopped: false,
        })
    }

    /// Re-announces with a new catalog digest in TXT (cheap to call; skip if unchanged).
    pub fn set_digest(&self, digest: &str) -> Result<(), MdnsError> {
        let mut current = lock(&self.digest);
        if *current == digest {
            return Ok(());
        }
        let info = self.reg.service_info(digest)?;
        self.daemon
            .register(info)
            .map_err(|source| MdnsError::Register {
                instance: self.reg.instance.clone(),
                source,
            })?;
        tracing::debug!(instance = %self.reg.instance, digest, "mDNS: re-announced with new digest");
        *current = digest.to_string();
        Ok(())
    }

    /// Unregisters (goodbye packets) and stops the mdns thread.
    ///
    /// Blocks for at most about a second, waiting for the thread to confirm.
    pub fn shutdown(mut self) {
        self.stop(true);
    }

    fn stop(&mut self, wait: bool) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.forwarder.abort();
        // The daemon also says goodbye for every registered service when it
        // exits; unregistering first makes that explicit.
        if let Err(e) = self.daemon.unregister(&self.fullname) {
            tracing::warn!(instance = %self.reg.instance, "mDNS: unregister failed: {e}");
        }
        match self.daemon.shutdown() {
            Ok(status) if wait => {
                if status.recv_timeout(SHUTDOWN_WAIT).is_err() {
                    tracing::warn!(
                        "mDNS: daemon did not confirm shutdown within {SHUTDOWN_WAIT:?}"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("mDNS: shutdown failed: {e}"),
        }
        tracing::debug!(instance = %self.reg.instance, "mDNS: stopped");
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// Restricts `daemon` to `names`, or to every interface without a default route.
fn select_interfaces(daemon: &ServiceDaemon, names: &[String]) -> Result<(), MdnsError> {
    daemon
        .disable_interface(IfKind::All)
        .map_err(MdnsError::Interfaces)?;
    let enable: Vec<IfKind> = if names.is_empty() {
        // Evaluated by the mdns thread for every address whenever it
        // (re)checks interfaces, so the route tables are read at most every
        // ROUTES_MAX_AGE.
        let uplinks: Mutex<Option<(Instant, Vec<String>)>> = Mutex::new(None);
        vec![IfKind::Predicate(IfPredicate::new(move |intf| {
            let mut cached = uplinks.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = matches!(&*cached, Some((at, _)) if at.elapsed() < ROUTES_MAX_AGE);
            if !fresh {
                *cached = Some((Instant::now(), default_route_interfaces()));
            }
            let (_, names) = cached.as_ref().expect("just filled");
            !names.contains(&intf.name)
        }))]
    } else {
        names.iter().map(|n| IfKind::Name(n.clone())).collect()
    };
    daemon
        .enable_interface(enable)
        .map_err(MdnsError::Interfaces)?;
    daemon
        .set_ip_check_interval(IP_CHECK_INTERVAL_SECS)
        .map_err(MdnsError::Interfaces)
}

/// The selection in words, for the log; warns when it cannot match anything
/// right now.
fn describe_selection(names: &[String]) -> String {
    let existing: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        let uplinks = default_route_interfaces();
        let lan = existing.iter().any(|n| n != "lo" && !uplinks.contains(n));
        if !lan && !existing.is_empty() {
            tracing::warn!(
                "mDNS: no interface besides lo and the default-route one(s) {uplinks:?}; \
                 list the LAN interfaces in [discovery] interfaces to announce there"
            );
        }
        if uplinks.is_empty() {
            "all".to_string()
        } else {
            format!("all except {}", uplinks.join(","))
        }
    } else {
        for n in names
            .iter()
            .filter(|n| !existing.is_empty() && !existing.contains(n))
        {
            tracing::warn!("mDNS: interface {n} does not exist (yet); it is used once it appears");
        }
        names.join(",")
    }
}

/// Forwards browse results to `found` until `found` is closed or the daemon
/// stops. Updates per node are coalesced while `found` is full, so a slow
/// receiver never makes mdns-sd drop the browse (it does when its own
/// channel fills).
async fn forward(events: mdns_sd::Receiver<ServiceEvent>, found: mpsc::Sender<Found>, own: NodeId) {
    // Last value sent per node, and which node each instance name stands for.
    let mut sent: HashMap<NodeId, Found> = HashMap::new();
    let mut instances: HashMap<String, NodeId> = HashMap::new();
    let mut pending: BTreeMap<NodeId, Found> = BTreeMap::new();

    loop {
        tokio::select! {
            event = events.recv_async() => {
                let Ok(event) = event else {
                    tracing::debug!("mDNS: browse channel closed");
                    break;
                };
                match event {
                    ServiceEvent::ServiceResolved(service) => {
                        let Some(f) = found_from(&service, &own) else { continue };
                        instances.insert(service.fullname.clone(), f.node);
                        if sent.get(&f.node) == Some(&f) {
                            pending.remove(&f.node);
                            continue;
                        }
                        tracing::debug!(
                            node = %f.node.short(),
                            name = %f.name,
                            addrs = ?f.addrs,
                            digest = %f.digest,
                            "mDNS: found node"
                        );
                        pending.insert(f.node, f);
                    }
                    ServiceEvent::ServiceRemoved(_, fullname) => {
                        if let Some(node) = instances.remove(&fullname) {
                            tracing::debug!(node = %node.short(), instance = %fullname, "mDNS: node left");
                            // Report it afresh when it comes back.
                            sent.remove(&node);
                            pending.remove(&node);
                        }
                    }
                    ServiceEvent::SearchStopped(_) => {
                        tracing::debug!("mDNS: browse stopped");
                        break;
                    }
                    _ => {}
                }
            }
            permit = found.reserve(), if !pending.is_empty() => {
                let Ok(permit) = permit else { break };
                if let Some((node, f)) = pending.pop_first() {
                    sent.insert(node, f.clone());
                    permit.send(f);
                }
            }
            () = found.closed(), if pending.is_empty() => break,
        }
    }
}

/// The [`Found`] for `service`, or `None` for ourselves, a foreign protocol
/// version, a missing or invalid id, or no usable address.
fn found_from(service: &ResolvedService, own: &NodeId) -> Option<Found> {
    let skip = |why: &str| {
        tracing::debug!(instance = %service.fullname, "mDNS: ignoring entry: {why}");
        None
    };
    if service.get_property_val_str("v") != Some(PROTOCOL_VERSION) {
        return skip("protocol version is not 1");
    }
    let Some(node) = service
        .get_property_val_str("id")
        .and_then(NodeId::from_hex)
    else {
        return skip("no valid id");
    };
    if node == *own {
        return None;
    }
    let port = service.get_port();
    let mut addrs: Vec<SocketAddr> = service
        .get_addresses()
        .iter()
        .filter_map(|ip| socket_addr(ip, port))
        .collect();
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
    if addrs.is_empty() {
        return skip("no usable address");
    }
    let name = match service.get_property_val_str("name") {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => service
            .fullname
            .strip_suffix(SERVICE)
            .unwrap_or(&service.fullname)
            .trim_end_matches('.')
            .to_string(),
    };
    let digest = service
        .get_property_val_str("digest")
        .unwrap_or_default()
        .to_string();
    Some(Found {
        node,
        name,
        addrs,
        digest,
    })
}

/// `ip:port`; IPv6 link-local gets its interface as scope id, or is dropped
/// when that is unknown.
fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    match ip {
        ScopedIp::V6(v6) if is_link_local_v6(v6.addr()) => {
            let scope = v6.scope_id().index;
            (scope != 0).then(|| SocketAddrV6::new(*v6.addr(), port, 0, scope).into())
        }
        other => Some(SocketAddr::new(other.to_ip_addr(), port)),
    }
}

fn is_link_local_v6(ip: &std::net::Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Names of interfaces holding a default route, from /proc/net/route (IPv4, destination 00000000) and /proc/net/ipv6_route (::/0).
///
/// Only the main routing table is visible there; unreadable files count as
/// no routes.
pub fn default_route_interfaces() -> Vec<String> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    parse_default_route_interfaces(&v4, &v6)
}

/// The parser behind [`default_route_interfaces`], over the texts of
/// `/proc/net/route` and `/proc/net/ipv6_route`: interfaces of routes to
/// `0.0.0.0/0` or `::/0` that are up and not reject routes (the kernel keeps
/// an unreachable `::/0` on `lo`), each once, in order of appearance.
pub fn parse_default_route_interfaces(route: &str, ipv6_route: &str) -> Vec<String> {
    const RTF_UP: u32 = 0x0001;
    const RTF_REJECT: u32 = 0x0200;
    let usable = |flags: &str| {
        u32::from_str_radix(flags, 16).is_ok_and(|f| f & RTF_UP != 0 && f & RTF_REJECT == 0)
    };

    let mut out: Vec<String> = Vec::new();
    let mut add = |iface: &str| {
        if iface != "*" && !out.iter().any(|o| o == iface) {
            out.push(iface.to_string());
        }
    };

    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    for line in route.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [iface, dest, _gw, flags, _, _, _, mask, ..] = f[..]
            && dest == "00000000"
            && mask == "00000000"
            && usable(flags)
        {
            add(iface);
        }
    }

    // dest dest_plen src src_plen next_hop metric refcnt use flags iface
    for line in ipv6_route.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [dest, plen, _, _, _, _, _, _, flags, iface, ..] = f[..]
            && dest.len() == 32
            && dest.bytes().all(|b| b == b'0')
            && plen == "00"
            && usable(flags)
        {
            add(iface);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
br-lan\t0000A8C0\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
*\t00000000\t00000000\t0201\t0\t0\t0\t00000000\t0\t0\t0
";

    const IPV6_ROUTE: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth1
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn default_routes_are_found_in_both_tables() {
        assert_eq!(
            parse_default_route_interfaces(ROUTE, IPV6_ROUTE),
            ["eth0", "wlan0", "eth1"]
        );
    }

    #[test]
    fn reject_default_routes_and_other_prefixes_are_ignored() {
        // Only the kernel's unreachable ::/0 on lo and a /64.
        let v6: String = IPV6_ROUTE
            .lines()
            .filter(|l| !l.ends_with("eth1"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_default_route_interfaces("", &v6).is_empty());
        // An IPv4 default route that is not up.
        let down = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                    eth9\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert!(parse_default_route_interfaces(down, "").is_empty());
    }

    #[test]
    fn an_interface_with_both_default_routes_is_listed_once_and_junk_is_skipped() {
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003 eth0\n\
                  garbage\n\n";
        assert_eq!(parse_default_route_interfaces(ROUTE, v6), ["eth0", "wlan0"]);
        assert!(parse_default_route_interfaces("nonsense\n\tx", "1 2 3").is_empty());
    }

    #[test]
    fn instance_and_host_names() {
        let node = NodeId([0x1a; 32]);
        assert_eq!(instance_name("N0CALL-home", &node), "n0call-home-1a1a1a1a");
        assert_eq!(host_label("N0CALL-home-1a1a1a1a"), "n0call-home-1a1a1a1a");
        assert_eq!(host_label("a b.c"), "a-b-c");
        assert_eq!(host_label("..."), "meshnode");
        assert_eq!(host_label(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn service_record_carries_the_txt_keys() {
        let cfg = MdnsConfig {
            interfaces: vec![],
            port: 8080,
            node: NodeId([0xab; 32]),
            name: "N0CALL-home".into(),
            digest: "12-00ab".into(),
        };
        let info = Registration::new(&cfg).service_info(&cfg.digest).unwrap();
        assert_eq!(
            info.get_fullname(),
            "n0call-home-abababab._meshnode._tcp.local."
        );
        assert_eq!(info.get_hostname(), "n0call-home-abababab.local.");
        assert_eq!(info.get_port(), 8080);
        assert_eq!(info.get_property_val_str("v"), Some("1"));
        assert_eq!(
            info.get_property_val_str("id"),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(info.get_property_val_str("name"), Some("N0CALL-home"));
        assert_eq!(info.get_property_val_str("digest"), Some("12-00ab"));
        assert!(info.is_addr_auto());
        // A digest too long for one TXT string is an error, not a panic.
        assert!(matches!(
            Registration::new(&cfg).service_info(&"x".repeat(300)),
            Err(MdnsError::Record { .. })
        ));
    }

    fn resolved(txt: &[(&str, &str)], ips: &str) -> ResolvedService {
        ServiceInfo::new(SERVICE, "peer-1", "peer-1.local.", ips, 8081, txt)
            .unwrap()
            .as_resolved_service()
    }

    #[test]
    fn browse_results_become_found_or_are_ignored() {
        let own = NodeId([1; 32]);
        let peer = NodeId([2; 32]);
        let (own_hex, peer_hex) = (own.to_hex(), peer.to_hex());
        let good = [
            ("v", "1"),
            ("id", peer_hex.as_str()),
            ("name", "N0CALL-hill"),
            ("digest", "7-ff"),
        ];
        let f = found_from(&resolved(&good, "fd00::5,10.0.0.9,10.0.0.2"), &own).unwrap();
        assert_eq!(
            f,
            Found {
                node: peer,
                name: "N0CALL-hill".into(),
                addrs: vec![
                    "10.0.0.2:8081".parse().unwrap(),
                    "10.0.0.9:8081".parse().unwrap(),
                    "[fd00::5]:8081".parse().unwrap(),
                ],
                digest: "7-ff".into(),
            }
        );

        // Ourselves, another version, no id, a bad id: ignored.
        let mut me = good;
        me[1].1 = &own_hex;
        assert_eq!(found_from(&resolved(&me, "10.0.0.2"), &own), None);
        let mut v2 = good;
        v2[0].1 = "2";
        assert_eq!(found_from(&resolved(&v2, "10.0.0.2"), &own), None);
        assert_eq!(found_from(&resolved(&good[2..], "10.0.0.2"), &own), None);
        let mut bad = good;
        bad[1].1 = "not-hex";
        assert_eq!(found_from(&resolved(&bad, "10.0.0.2"), &own), None);

        // Without name and digest: the instance name and an empty digest.
        let f = found_from(&resolved(&good[..2], "10.0.0.2"), &own).unwrap();
        assert_eq!((f.name.as_str(), f.digest.as_str()), ("peer-1", ""));
        // A link-local address with no interface is not usable.
        assert_eq!(found_from(&resolved(&good, "fe80::1"), &own), None);
    }

    #[test]
    fn link_local_needs_a_scope() {
        let ll: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(socket_addr(&ScopedIp::from(ll), 80), None);
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            socket_addr(&ScopedIp::from(v4), 80),
            Some("10.0.0.1:80".parse().unwrap())
        );
        let global: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(
            socket_addr(&ScopedIp::from(global), 80),
            Some("[fd00::2]:80".parse().unwrap())
        );
    }
}
