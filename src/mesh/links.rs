//! The mesh task's view of links, modes and routes: own link reports from
//! PING/PONG, LINK_STATE from the rest of the mesh, the [`Topology`] and
//! [`RouteTable`] built from them, and the gateway chosen for failover.
//!
//! Everything here runs inside the mesh task; HTTP handlers read the results
//! through [`super::MeshView`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::connectivity::{Mode, Uplink};
use crate::gossip::proto::LinkQuality;
use crate::gossip::wire::{MAX_LINKS, WireLink};
use crate::node::NodeId;
use crate::routing::{LinkKind, LinkReport, NodeMeta, Topology};

/// This node's network mode as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModeState {
    /// online / mesh-only / rf-only.
    pub mode: Mode,
    /// Unix ms of the last change (or of the start).
    pub since_ms: i64,
    /// Mode changes since start.
    pub changes: u64,
    /// The own uplink as the probes see it.
    pub uplink: Uplink,
    /// The mesh gateway this node's traffic goes through while its own
    /// uplink is down (failover), if any.
    pub gateway: Option<GatewayState>,
    /// Why failover is off, if it is.
    pub failover_off: Option<String>,
}

/// A failover gateway.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GatewayState {
    /// Its node id (hex).
    pub node_id: String,
    /// Its name, if known.
    pub name: Option<String>,
    /// The next-hop address installed.
    pub addr: IpAddr,
    /// Installed in the kernel (false while being installed or if that failed).
    pub installed: bool,
}

/// The IPv4/IPv6 networks of this host's interfaces, to tell LAN links
/// (same subnet) from routed ones.
#[derive(Debug, Clone, Default)]
pub struct Subnets(Vec<(IpAddr, u8)>);

impl Subnets {
    /// Reads the interfaces now.
    pub fn read() -> Self {
        let list = if_addrs::get_if_addrs()
            .map(|v| {
                v.into_iter()
                    .map(|i| (i.ip(), prefix_len(&i.addr)))
                    .collect()
            })
            .unwrap_or_default();
        Self(list)
    }

    /// Is `ip` on one of our subnets (or on this host)?
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.0.iter().any(|(net, len)| same_prefix(*net, ip, *len))
    }
}

fn prefix_len(a: &if_addrs::IfAddr) -> u8 {
    match a {
        if_addrs::IfAddr::V4(v) => u32::from(v.netmask).count_ones() as u8,
        if_addrs::IfAddr::V6(v) => u128::from(v.netmask).count_ones() as u8,
    }
}

fn same_prefix(a: IpAddr, b: IpAddr, len: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = u32::MAX.checked_shl(32 - len.min(32) as u32).unwrap_or(0);
            u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = u128::MAX
                .checked_shl(128 - len.min(128) as u32)
                .unwrap_or(0);
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

/// Own link reports from the gossip core's measurements.
pub fn own_reports(quality: &[LinkQuality<SocketAddr>], subnets: &Subnets) -> Vec<LinkReport> {
    let mut v: Vec<LinkReport> = quality
        .iter()
        .map(|q| LinkReport {
            peer: q.node,
            kind: if subnets.contains(q.addr.ip()) {
                LinkKind::Lan
            } else {
                LinkKind::Wan
            },
            // before the first answer: assume a typical LAN until measured
            rtt_ms: q.rtt_ms.unwrap_or(10.0),
            loss: q.loss,
        })
        .collect();
    v.sort_by_key(|r| r.peer);
    v
}

/// The wire form of reports (best links first when there are too many).
pub fn to_wire(reports: &[LinkReport]) -> Vec<WireLink> {
    let mut v: Vec<WireLink> = reports
        .iter()
        .map(|r| WireLink {
            node: r.peer,
            kind: match r.kind {
                LinkKind::Lan => 0,
                LinkKind::Wan => 1,
                LinkKind::Rf => 2,
            },
            rtt_us: (r.rtt_ms * 1000.0).clamp(0.0, u32::MAX as f64) as u32,
            loss_permille: (r.loss * 1000.0).clamp(0.0, 1000.0) as u16,
        })
        .collect();
    v.sort_by_key(|l| (l.kind, l.rtt_us));
    v.truncate(MAX_LINKS);
    v
}

/// Reports from the wire form.
pub fn from_wire(links: &[WireLink]) -> Vec<LinkReport> {
    links
        .iter()
        .map(|l| LinkReport {
            peer: l.node,
            kind: match l.kind {
                0 => LinkKind::Lan,
                1 => LinkKind::Wan,
                _ => LinkKind::Rf,
            },
            rtt_ms: l.rtt_us as f64 / 1000.0,
            loss: l.loss_permille.min(1000) as f64 / 1000.0,
        })
        .collect()
}

/// Did the reports change enough to tell the mesh before the next refresh?
/// A neighbour came or went, its kind changed, its RTT moved by more than
/// a quarter (and 2 ms), or its loss by more than 10 points.
pub fn significant_change(old: &[LinkReport], new: &[LinkReport]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    old.iter().zip(new).any(|(a, b)| {
        a.peer != b.peer
            || a.kind != b.kind
            || ((a.rtt_ms - b.rtt_ms).abs() > (a.rtt_ms * 0.25).max(2.0))
            || (a.loss - b.loss).abs() > 0.10
    })
}

/// What the topology needs of a peer: its name and its last LINK_STATE
/// (mode, links).
pub type PeerLinks = (Option<String>, Option<(u8, Vec<WireLink>)>);

/// The topology from our reports and every peer's last LINK_STATE.
pub fn topology(
    me: NodeId,
    my_name: &str,
    my_mode: Mode,
    own: &[LinkReport],
    peers: &HashMap<NodeId, PeerLinks>,
) -> Topology {
    let mut meta = HashMap::new();
    let mut reports = HashMap::new();
    meta.insert(
        me,
        NodeMeta {
            name: Some(my_name.to_string()),
            mode: Some(my_mode.name().to_string()),
        },
    );
    reports.insert(me, own.to_vec());
    for (id, (name, links)) in peers {
        meta.insert(
            *id,
            NodeMeta {
                name: name.clone(),
                mode: links
                    .as_ref()
                    .and_then(|(m, _)| Mode::from_u8(*m))
                    .map(|m| m.name().to_string()),
            },
        );
        if let Some((_, l)) = links {
            reports.insert(*id, from_wire(l));
        }
    }
    Topology::new(me, &meta, &reports)
}

/// The failover gateway: the online neighbour with the lowest RTT, among
/// those whose address we know (the link address is on our own segment).
pub fn choose_gateway(
    neighbours: &[(SocketAddr, NodeId)],
    modes: &HashMap<NodeId, Mode>,
    own: &[LinkReport],
) -> Option<(NodeId, IpAddr)> {
    let rtt = |n: &NodeId| {
        own.iter()
            .find(|r| r.peer == *n)
            .map_or(f64::MAX, |r| r.rtt_ms / (1.0 - r.loss.min(0.9)))
    };
    neighbours
        .iter()
        .filter(|(_, n)| modes.get(n) == Some(&Mode::Online))
        .filter(|(a, _)| !a.ip().is_loopback() && !a.ip().is_unspecified())
        .min_by(|(_, a), (_, b)| rtt(a).total_cmp(&rtt(b)).then(a.cmp(b)))
        .map(|(a, n)| (*n, a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: u8, addr: &str, rtt: Option<f64>, loss: f64) -> LinkQuality<SocketAddr> {
        LinkQuality {
            addr: addr.parse().unwrap(),
            node: NodeId([n; 32]),
            rtt_ms: rtt,
            loss,
        }
    }

    #[test]
    fn lan_is_the_own_subnet() {
        let s = Subnets(vec![("10.1.0.5".parse().unwrap(), 24)]);
        assert!(s.contains("10.1.0.200".parse().unwrap()));
        assert!(!s.contains("10.1.1.1".parse().unwrap()));
        assert!(s.contains("127.0.1.9".parse().unwrap()));
        let r = own_reports(
            &[
                q(2, "10.1.0.2:8080", Some(1.5), 0.0),
                q(3, "192.0.2.1:8080", None, 0.25),
            ],
            &s,
        );
        assert_eq!((r[0].kind, r[0].rtt_ms), (LinkKind::Lan, 1.5));
        assert_eq!((r[1].kind, r[1].loss), (LinkKind::Wan, 0.25));
        // the wire form keeps what matters to a few µs and ‰
        let back = from_wire(&to_wire(&r));
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].peer, back[0].kind, back[0].rtt_ms),
            (r[0].peer, LinkKind::Lan, 1.5)
        );
        assert_eq!((back[1].kind, back[1].loss), (LinkKind::Wan, 0.25));
    }

    #[test]
    fn changes_worth_telling() {
        let r = |rtt: f64, loss: f64| LinkReport {
            peer: NodeId([1; 32]),
            kind: LinkKind::Lan,
            rtt_ms: rtt,
            loss,
        };
        assert!(!significant_change(&[r(10.0, 0.0)], &[r(11.0, 0.05)]));
        assert!(significant_change(&[r(10.0, 0.0)], &[r(20.0, 0.0)]));
        assert!(significant_change(&[r(10.0, 0.0)], &[r(10.0, 0.2)]));
        assert!(significant_change(&[r(10.0, 0.0)], &[]));
    }

    #[test]
    fn the_gateway_is_the_nearest_online_neighbour() {
        let ns = vec![
            ("10.0.0.2:8080".parse().unwrap(), NodeId([2; 32])),
            ("10.0.0.3:8080".parse().unwrap(), NodeId([3; 32])),
            ("10.0.0.4:8080".parse().unwrap(), NodeId([4; 32])),
        ];
        let modes = HashMap::from([
            (NodeId([2; 32]), Mode::Online),
            (NodeId([3; 32]), Mode::Online),
            (NodeId([4; 32]), Mode::MeshOnly),
        ]);
        let rep = |n: u8, rtt: f64| LinkReport {
            peer: NodeId([n; 32]),
            kind: LinkKind::Lan,
            rtt_ms: rtt,
            loss: 0.0,
        };
        let own = [rep(2, 9.0), rep(3, 2.0), rep(4, 0.5)];
        assert_eq!(
            choose_gateway(&ns, &modes, &own),
            Some((NodeId([3; 32]), "10.0.0.3".parse().unwrap()))
        );
        assert_eq!(choose_gateway(&ns, &HashMap::new(), &own), None);
    }
}
