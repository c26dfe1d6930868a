//! The shaping tree a set of clients should get: pure.
//!
//! Under meshnode's root class (the link's rate) sit a priority class that
//! is guaranteed `priority_share` of the link and may take all of it, a
//! default class for traffic of no client (the router itself, exempt hosts,
//! ARP), and one class per active client. The guaranteed share is fair:
//! what the priority class leaves, divided by the clients plus the default
//! class, but never below `client_min`; each class may borrow up to
//! `client_ceil` of the link while others are idle (HTB's borrowing). A
//! client over its quota gets `throttle` as both its rate and its ceiling.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::plan::{ClassSpec, Dir, FilterSpec, Match, Tree};
use crate::config::ShapingConfig;

/// The root class under meshnode's qdisc.
pub const ROOT: u16 = 1;
/// Essential / emergency traffic: never starved.
pub const PRIORITY: u16 = 2;
/// Traffic of no client.
pub const DEFAULT: u16 = 3;
/// First client class; also the first client filter's preference.
pub const FIRST_CLIENT: u16 = 0x10;
/// Last client class.
pub const LAST_CLIENT: u16 = 0xfff0;

/// A client as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientShape {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its class (from [`Minors`]).
    pub minor: u16,
    /// Over quota.
    pub throttled: bool,
}

/// Guaranteed rate and ceiling of one client's class, bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Share {
    /// Guaranteed.
    pub rate: u64,
    /// Borrowing limit.
    pub ceil: u64,
}

/// What each of `clients` active clients gets on a link of `link` bytes/s.
pub fn client_share(cfg: &ShapingConfig, link: u64, clients: usize, throttled: bool) -> Share {
    if throttled {
        let t = cfg.throttle.bytes_per_sec().clamp(1, link);
        return Share { rate: t, ceil: t };
    }
    let prio = priority_rate(cfg, link);
    let fair = (link - prio) / (clients as u64 + 1);
    let ceil = ((link as f64 * cfg.client_ceil.0) as u64).max(1);
    let rate = fair.max(cfg.client_min.bytes_per_sec()).clamp(1, ceil);
    Share { rate, ceil }
}

fn priority_rate(cfg: &ShapingConfig, link: u64) -> u64 {
    ((link as f64 * cfg.priority_share.0) as u64).clamp(1, link.saturating_sub(1).max(1))
}

/// The tree for one direction: `Dst` on the LAN interface (downloads),
/// `Src` on its IFB (uploads). `link` is in bytes per second.
pub fn tree(cfg: &ShapingConfig, dir: Dir, link: u64, clients: &[ClientShape]) -> Tree {
    let link = link.max(2);
    let active = clients.iter().filter(|c| !c.throttled).count();
    let free = client_share(cfg, link, active, false);
    let mut classes = vec![
        ClassSpec {
            minor: ROOT,
            parent: 0,
            rate: link,
            ceil: link,
            prio: 0,
        },
        ClassSpec {
            minor: PRIORITY,
            parent: ROOT,
            rate: priority_rate(cfg, link),
            ceil: link,
            prio: 0,
        },
        ClassSpec {
            minor: DEFAULT,
            parent: ROOT,
            rate: free.rate,
            ceil: link,
            prio: 2,
        },
    ];
    // Priority matches first (prefs 1..FIRST_CLIENT): they win over the
    // client filters, which the kernel tries after them.
    let keys = cfg
        .priority_dscp
        .iter()
        .map(|d| Match::Dscp(d.0))
        .chain(cfg.priority_hosts.iter().map(|ip| Match::addr(dir, *ip)));
    let mut filters: Vec<FilterSpec> = (1..FIRST_CLIENT)
        .zip(keys)
        .map(|(pref, key)| FilterSpec {
            pref,
            key,
            class: PRIORITY,
        })
        .collect();
    let mut sorted: Vec<&ClientShape> = clients.iter().collect();
    sorted.sort_by_key(|c| c.minor);
    for c in sorted {
        let s = if c.throttled {
            client_share(cfg, link, active, true)
        } else {
            free
        };
        classes.push(ClassSpec {
            minor: c.minor,
            parent: ROOT,
            rate: s.rate,
            ceil: s.ceil,
            prio: 1,
        });
        filters.push(FilterSpec {
            pref: c.minor,
            key: Match::addr(dir, c.ip),
            class: c.minor,
        });
    }
    Tree {
        default_class: DEFAULT,
        classes,
        filters,
    }
}

/// Stable class numbers for client addresses: a client keeps its class
/// (and so its kernel counters) while it is active.
#[derive(Debug, Default, Clone)]
pub struct Minors {
    by_ip: BTreeMap<Ipv4Addr, u16>,
}

impl Minors {
    /// Adopts numbers found in the kernel at start.
    pub fn adopt(&mut self, ip: Ipv4Addr, minor: u16) {
        if (FIRST_CLIENT..=LAST_CLIENT).contains(&minor)
            && !self.by_ip.values().any(|m| *m == minor)
        {
            self.by_ip.insert(ip, minor);
        }
    }

    /// The class of `ip`, allocating the lowest free one; `None` when all
    /// are taken.
    pub fn get_or_assign(&mut self, ip: Ipv4Addr) -> Option<u16> {
        if let Some(m) = self.by_ip.get(&ip) {
            return Some(*m);
        }
        let mut used: Vec<u16> = self.by_ip.values().copied().collect();
        used.sort_unstable();
        let mut next = FIRST_CLIENT;
        for u in used {
            if u == next {
                next += 1;
            } else if u > next {
                break;
            }
        }
        (next <= LAST_CLIENT).then(|| {
            self.by_ip.insert(ip, next);
            next
        })
    }

    /// The class of `ip`, if it has one.
    pub fn get(&self, ip: &Ipv4Addr) -> Option<u16> {
        self.by_ip.get(ip).copied()
    }

    /// Frees the class of `ip`.
    pub fn release(&mut self, ip: &Ipv4Addr) -> Option<u16> {
        self.by_ip.remove(ip)
    }

    /// Every (address, class).
    pub fn iter(&self) -> impl Iterator<Item = (&Ipv4Addr, &u16)> {
        self.by_ip.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BitRate, Dscp, Fraction};

    fn cfg() -> ShapingConfig {
        ShapingConfig {
            enabled: true,
            downlink: BitRate(50_000_000),
            ..Default::default()
        }
    }

    fn clients(n: u8) -> Vec<ClientShape> {
        let mut m = Minors::default();
        (0..n)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 0, 0, 10 + i);
                ClientShape {
                    ip,
                    minor: m.get_or_assign(ip).unwrap(),
                    throttled: false,
                }
            })
            .collect()
    }

    #[test]
    fn eight_clients_share_what_priority_leaves() {
        let c = cfg();
        let link = c.downlink.bytes_per_sec(); // 6.25 MB/s
        let t = tree(&c, Dir::Dst, link, &clients(8));
        // root, priority, default, 8 clients
        assert_eq!(t.classes.len(), 11);
        let prio = t.classes.iter().find(|k| k.minor == PRIORITY).unwrap();
        assert_eq!(prio.rate, link / 10);
        let fair = (link - link / 10) / 9;
        for k in t.classes.iter().filter(|k| k.minor >= FIRST_CLIENT) {
            assert_eq!((k.rate, k.ceil, k.parent), (fair, link, ROOT));
        }
        // guarantees never exceed the link
        let sum: u64 = t
            .classes
            .iter()
            .filter(|k| k.parent == ROOT)
            .map(|k| k.rate)
            .sum();
        assert!(sum <= link, "{sum} > {link}");
        // DSCP EF (the default priority_dscp), then one per client
        assert_eq!(t.filters.len(), 9);
        assert_eq!(
            t.filters[0],
            FilterSpec {
                pref: 1,
                key: Match::Dscp(46),
                class: PRIORITY
            }
        );
        assert!(
            t.filters[1..]
                .iter()
                .all(|f| matches!(f.key, Match::Dst(_)) && f.pref == f.class)
        );
    }

    #[test]
    fn a_throttled_client_gets_the_throttle_rate_and_the_rest_more() {
        let c = ShapingConfig {
            throttle: BitRate(2_000_000),
            ..cfg()
        };
        let link = c.downlink.bytes_per_sec();
        let mut cl = clients(4);
        cl[1].throttled = true;
        let t = tree(&c, Dir::Src, link, &cl);
        let k = t.classes.iter().find(|k| k.minor == cl[1].minor).unwrap();
        assert_eq!((k.rate, k.ceil), (250_000, 250_000));
        let other = t.classes.iter().find(|k| k.minor == cl[0].minor).unwrap();
        assert_eq!(
            other.rate,
            (link - link / 10) / 4,
            "three clients and the default class"
        );
    }

    #[test]
    fn the_floor_and_the_ceiling_hold() {
        let c = ShapingConfig {
            client_min: BitRate(8_000_000),
            client_ceil: Fraction(0.5),
            ..cfg()
        };
        let link = c.downlink.bytes_per_sec();
        let s = client_share(&c, link, 100, false);
        assert_eq!((s.rate, s.ceil), (1_000_000, link / 2));
    }

    #[test]
    fn marked_packets_and_priority_hosts_go_to_the_priority_class_before_any_client() {
        let h = Ipv4Addr::new(10, 0, 0, 2);
        let c = ShapingConfig {
            priority_dscp: vec![Dscp::EF, Dscp(48)],
            priority_hosts: vec![h],
            ..cfg()
        };
        let keys = |dir| {
            let t = tree(&c, dir, 1_000_000, &clients(1));
            assert_eq!(t.default_class, DEFAULT);
            t.filters
                .iter()
                .map(|f| (f.pref, f.key, f.class))
                .collect::<Vec<_>>()
        };
        let c0 = clients(1)[0];
        assert_eq!(
            keys(Dir::Dst),
            vec![
                (1, Match::Dscp(46), PRIORITY),
                (2, Match::Dscp(48), PRIORITY),
                (3, Match::Dst(h), PRIORITY),
                (c0.minor, Match::Dst(c0.ip), c0.minor),
            ]
        );
        assert_eq!(keys(Dir::Src)[2], (3, Match::Src(h), PRIORITY));
    }

    #[test]
    fn minors_are_stable_and_reused() {
        let mut m = Minors::default();
        let ip = |i| Ipv4Addr::new(10, 0, 0, i);
        assert_eq!(m.get_or_assign(ip(1)), Some(FIRST_CLIENT));
        assert_eq!(m.get_or_assign(ip(2)), Some(FIRST_CLIENT + 1));
        assert_eq!(m.get_or_assign(ip(1)), Some(FIRST_CLIENT));
        m.release(&ip(1));
        assert_eq!(m.get_or_assign(ip(3)), Some(FIRST_CLIENT), "the freed one");
        m.adopt(ip(9), 0x40);
        m.adopt(ip(8), 0x40); // taken: ignored
        assert_eq!(m.get(&ip(9)), Some(0x40));
        assert_eq!(m.get(&ip(8)), None);
    }
}
