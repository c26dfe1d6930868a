//! What changed between two looks at the node: the facts the D-Bus
//! properties and signals show, taken from the subsystems' views, and the
//! diff that turns two looks into signals and `PropertiesChanged`. Pure: no
//! bus, no clock, no locks; the watcher in [`super`] takes the looks when a
//! subsystem says its view changed.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::connectivity::Mode;
use crate::shaping::ClientStatus;
use crate::store::StoreStats;

/// The mesh's part: mode, uplink and the peer table.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshLook {
    /// The network mode.
    pub mode: Mode,
    /// Unix ms of its last change.
    pub mode_since: i64,
    /// The own uplink's probes pass.
    pub uplink_up: bool,
    /// Peers: hex node id → name (empty while unknown).
    pub peers: BTreeMap<String, String>,
    /// Direct neighbours among them.
    pub neighbours: usize,
}

/// One stored URL, as far as "is it new" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Hex SHA-256 of the content.
    pub hash: String,
    /// Bytes.
    pub size: u64,
    /// Version from its origin.
    pub version: u64,
}

/// The store's part: figures and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreLook {
    /// Entries, bytes, quota.
    pub stats: StoreStats,
    /// Every URL held.
    pub content: HashMap<String, Item>,
}

/// A client over one of its quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// `daily` or `monthly`: the quota that bit.
    pub period: &'static str,
    /// Bytes counted in that period, both ways.
    pub used: u64,
    /// The quota, bytes.
    pub quota: u64,
}

/// The shaping part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShapingLook {
    /// Classes are in the kernel.
    pub active: bool,
    /// Why shaping is off; empty when it is on.
    pub reason: String,
    /// Clients with a class now.
    pub clients: usize,
    /// Clients held at the throttle rate, and why.
    pub throttled: BTreeMap<Ipv4Addr, Exceeded>,
}

impl ShapingLook {
    /// From the shaping task's status.
    pub fn of(s: &crate::shaping::Status) -> Self {
        Self {
            active: s.active,
            reason: s.reason.clone().unwrap_or_default(),
            clients: s.clients.iter().filter(|c| c.active).count(),
            throttled: s
                .clients
                .iter()
                .filter(|c| c.throttled)
                .map(|c| (c.ip, exceeded(c)))
                .collect(),
        }
    }
}

/// Which quota a throttled client is over: the daily one when it bites,
/// else the monthly one.
pub fn exceeded(c: &ClientStatus) -> Exceeded {
    match c.quota.daily {
        Some(d) if c.usage.today() >= d => Exceeded {
            period: "daily",
            used: c.usage.today(),
            quota: d,
        },
        _ => Exceeded {
            period: "monthly",
            used: c.usage.this_month(),
            quota: c.quota.monthly.unwrap_or(0),
        },
    }
}

/// A property that may change (the constant ones never do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prop {
    /// `NetworkMode`
    NetworkMode,
    /// `ModeSince`
    ModeSince,
    /// `UplinkUp`
    UplinkUp,
    /// `PeerCount`
    PeerCount,
    /// `NeighbourCount`
    NeighbourCount,
    /// `StoreUsedBytes`
    StoreUsedBytes,
    /// `StoreMaxBytes`
    StoreMaxBytes,
    /// `StoreEntries`
    StoreEntries,
    /// `StoreQuarantined`
    StoreQuarantined,
    /// `ShapingActive`
    ShapingActive,
    /// `ShapingReason`
    ShapingReason,
    /// `ShapingClients`
    ShapingClients,
    /// `ShapingThrottled`
    ShapingThrottled,
}

/// One thing to tell the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A property's value changed: `PropertiesChanged`.
    Property(Prop),
    /// `PeerJoined(node_id, name)`
    PeerJoined {
        /// Hex node id.
        node_id: String,
        /// Name, empty while unknown.
        name: String,
    },
    /// `PeerLeft(node_id, name)`
    PeerLeft {
        /// Hex node id.
        node_id: String,
        /// Name, empty if it was never known.
        name: String,
    },
    /// `ModeChanged(mode, previous)`
    ModeChanged {
        /// The new mode.
        mode: Mode,
        /// The one before.
        previous: Mode,
    },
    /// `ContentAdded(url, hash, size, version)`: a URL entered the store or
    /// got a new version (published here, replicated, fetched, cached).
    ContentAdded {
        /// Canonical URL.
        url: String,
        /// Hex SHA-256.
        hash: String,
        /// Bytes.
        size: u64,
        /// Version.
        version: u64,
    },
    /// `ContentRemoved(url)`: removed or evicted.
    ContentRemoved {
        /// Canonical URL.
        url: String,
    },
    /// `QuotaExceeded(ip, period, used, quota)`: a client went over a quota
    /// and is held at the throttle rate.
    QuotaExceeded {
        /// The client.
        ip: Ipv4Addr,
        /// What bit.
        exceeded: Exceeded,
    },
}

/// Mesh changes: mode first, then peers leaving, then joining.
pub fn mesh(old: &MeshLook, new: &MeshLook) -> Vec<Change> {
    let mut out = Vec::new();
    let mut prop = |changed: bool, p: Prop| {
        if changed {
            out.push(Change::Property(p));
        }
    };
    prop(old.mode != new.mode, Prop::NetworkMode);
    prop(old.mode_since != new.mode_since, Prop::ModeSince);
    prop(old.uplink_up != new.uplink_up, Prop::UplinkUp);
    prop(old.peers.len() != new.peers.len(), Prop::PeerCount);
    prop(old.neighbours != new.neighbours, Prop::NeighbourCount);
    if old.mode != new.mode {
        out.push(Change::ModeChanged {
            mode: new.mode,
            previous: old.mode,
        });
    }
    for (id, name) in &old.peers {
        if !new.peers.contains_key(id) {
            out.push(Change::PeerLeft {
                node_id: id.clone(),
                name: name.clone(),
            });
        }
    }
    for (id, name) in &new.peers {
        if !old.peers.contains_key(id) {
            out.push(Change::PeerJoined {
                node_id: id.clone(),
                name: name.clone(),
            });
        }
    }
    out
}

/// Store changes: figures, then removals, then additions, by URL.
pub fn store(old: &StoreLook, new: &StoreLook) -> Vec<Change> {
    let mut out = Vec::new();
    let (a, b) = (&old.stats, &new.stats);
    for (changed, p) in [
        (a.used_bytes != b.used_bytes, Prop::StoreUsedBytes),
        (a.max_bytes != b.max_bytes, Prop::StoreMaxBytes),
        (a.entries != b.entries, Prop::StoreEntries),
        (a.quarantined != b.quarantined, Prop::StoreQuarantined),
    ] {
        if changed {
            out.push(Change::Property(p));
        }
    }
    let mut gone: Vec<&String> = old
        .content
        .keys()
        .filter(|u| !new.content.contains_key(*u))
        .collect();
    gone.sort();
    out.extend(
        gone.into_iter()
            .map(|url| Change::ContentRemoved { url: url.clone() }),
    );
    let mut added: Vec<(&String, &Item)> = new
        .content
        .iter()
        .filter(|(u, item)| old.content.get(*u) != Some(item))
        .collect();
    added.sort_by_key(|(u, _)| *u);
    out.extend(added.into_iter().map(|(url, i)| Change::ContentAdded {
        url: url.clone(),
        hash: i.hash.clone(),
        size: i.size,
        version: i.version,
    }));
    out
}

/// Shaping changes: figures, then clients newly over a quota.
pub fn shaping(old: &ShapingLook, new: &ShapingLook) -> Vec<Change> {
    let mut out = Vec::new();
    for (changed, p) in [
        (old.active != new.active, Prop::ShapingActive),
        (old.reason != new.reason, Prop::ShapingReason),
        (old.clients != new.clients, Prop::ShapingClients),
        (
            old.throttled.len() != new.throttled.len(),
            Prop::ShapingThrottled,
        ),
    ] {
        if changed {
            out.push(Change::Property(p));
        }
    }
    for (ip, e) in &new.throttled {
        if !old.throttled.contains_key(ip) {
            out.push(Change::QuotaExceeded {
                ip: *ip,
                exceeded: e.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaping::quota::{Quota, Usage};

    fn mesh_look(mode: Mode, peers: &[(&str, &str)]) -> MeshLook {
        MeshLook {
            mode,
            mode_since: 1,
            uplink_up: mode == Mode::Online,
            peers: peers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            neighbours: peers.len(),
        }
    }

    #[test]
    fn nothing_changed_says_nothing() {
        let m = mesh_look(Mode::Online, &[("aa", "N0CALL-a")]);
        assert!(mesh(&m, &m.clone()).is_empty());
        let s = ShapingLook::default();
        assert!(shaping(&s, &s.clone()).is_empty());
    }

    #[test]
    fn mode_and_peers() {
        let old = mesh_look(Mode::Online, &[("aa", "N0CALL-a"), ("bb", "")]);
        let mut new = mesh_look(Mode::MeshOnly, &[("bb", "N0CALL-b"), ("cc", "N0CALL-c")]);
        new.mode_since = 2;
        assert_eq!(
            mesh(&old, &new),
            vec![
                Change::Property(Prop::NetworkMode),
                Change::Property(Prop::ModeSince),
                Change::Property(Prop::UplinkUp),
                Change::ModeChanged {
                    mode: Mode::MeshOnly,
                    previous: Mode::Online
                },
                Change::PeerLeft {
                    node_id: "aa".into(),
                    name: "N0CALL-a".into()
                },
                Change::PeerJoined {
                    node_id: "cc".into(),
                    name: "N0CALL-c".into()
                },
            ]
        );
    }

    #[test]
    fn content_added_changed_and_removed() {
        let item = |h: &str, v| Item {
            hash: h.into(),
            size: 3,
            version: v,
        };
        let stats = StoreStats {
            entries: 2,
            used_bytes: 6,
            max_bytes: 100,
            quarantined: 0,
        };
        let old = StoreLook {
            stats,
            content: [
                ("http://a.radio/keep".to_string(), item("11", 1)),
                ("http://a.radio/edit".to_string(), item("22", 1)),
                ("http://a.radio/gone".to_string(), item("33", 1)),
            ]
            .into(),
        };
        let new = StoreLook {
            stats: StoreStats {
                used_bytes: 9,
                ..stats
            },
            content: [
                ("http://a.radio/keep".to_string(), item("11", 1)),
                ("http://a.radio/edit".to_string(), item("44", 2)),
                ("http://a.radio/new".to_string(), item("55", 1)),
            ]
            .into(),
        };
        assert_eq!(
            store(&old, &new),
            vec![
                Change::Property(Prop::StoreUsedBytes),
                Change::ContentRemoved {
                    url: "http://a.radio/gone".into()
                },
                Change::ContentAdded {
                    url: "http://a.radio/edit".into(),
                    hash: "44".into(),
                    size: 3,
                    version: 2
                },
                Change::ContentAdded {
                    url: "http://a.radio/new".into(),
                    hash: "55".into(),
                    size: 3,
                    version: 1
                },
            ]
        );
    }

    #[test]
    fn a_client_over_quota_is_told_once() {
        let client = |ip: [u8; 4], throttled, today: u64| ClientStatus {
            ip: ip.into(),
            active: true,
            throttled,
            usage: Usage {
                day_down: today,
                month_down: today * 3,
                ..Default::default()
            },
            quota: Quota {
                daily: Some(1000),
                monthly: Some(2500),
            },
            quota_set: false,
            remaining: None,
            share_down_bps: 0,
            ceil_down_bps: 0,
            share_up_bps: 0,
            ceil_up_bps: 0,
            rate_down_bps: 0,
            rate_up_bps: 0,
        };
        let status = |clients| crate::shaping::Status {
            enabled: true,
            active: true,
            clients,
            ..Default::default()
        };
        let before = ShapingLook::of(&status(vec![client([10, 0, 0, 2], false, 10)]));
        let after = ShapingLook::of(&status(vec![
            client([10, 0, 0, 2], true, 1200),
            client([10, 0, 0, 3], false, 5),
        ]));
        assert_eq!(
            shaping(&before, &after),
            vec![
                Change::Property(Prop::ShapingClients),
                Change::Property(Prop::ShapingThrottled),
                Change::QuotaExceeded {
                    ip: [10, 0, 0, 2].into(),
                    exceeded: Exceeded {
                        period: "daily",
                        used: 1200,
                        quota: 1000
                    }
                },
            ]
        );
        // still over on the next scan: no second signal
        assert!(shaping(&after, &after.clone()).is_empty());
        // monthly: today under its quota, the month over
        let mut c = client([10, 0, 0, 4], true, 900);
        c.usage.month_down = 2600;
        assert_eq!(
            exceeded(&c),
            Exceeded {
                period: "monthly",
                used: 2600,
                quota: 2500
            }
        );
    }
}
