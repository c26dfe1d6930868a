//! What one hour of serving adds up to: pure.
//!
//! Every content response the HTTP front gives becomes an [`Event`], added
//! at once to an [`Hour`] (counters, per-client and per-URL sums) on the
//! request's side; the analytics task merges those hours into its own
//! ([`Hour::merge`]). Hours are written to SQLite and rolled into days
//! there (`db.rs`); nothing here does I/O.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Where a content response's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// This node's store (its own content, or a copy it keeps).
    Store,
    /// Another node, through the mesh.
    Mesh,
    /// The origin server, fetched by this node.
    Internet,
    /// Another station, over packet radio.
    Rf,
    /// Nothing had it (404).
    NotFound,
    /// Refused or failed (4xx/5xx other than 404).
    Other,
}

/// One content response, as the HTTP front saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The client's address; `None` for the control socket (`meshctl fetch`).
    pub client: Option<IpAddr>,
    /// The content URL; empty for requests of other nodes.
    pub url: String,
    /// Where it came from.
    pub source: Source,
    /// An external URL (through the proxy), as opposed to mesh content.
    pub external: bool,
    /// Body bytes (the response's Content-Length; 0 for HEAD and 304).
    pub bytes: u64,
    /// Asked by another node (`/mesh/v1/content`), not by a client.
    pub to_peer: bool,
}

macro_rules! counts {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The counters of one hour or day (or of a whole report).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counts {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Counts {
            /// Column names, in [`Counts::values`] order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($name),)*];

            /// The values, in [`Counts::FIELDS`] order.
            pub fn values(&self) -> Vec<u64> {
                vec![$(self.$name,)*]
            }

            /// The inverse of [`Counts::values`] (missing values are 0).
            pub fn from_values(v: &[u64]) -> Counts {
                let mut it = v.iter().copied();
                Counts { $($name: it.next().unwrap_or(0),)* }
            }
        }
    };
}

counts! {
    /// Content requests of clients.
    requests,
    /// Body bytes sent to clients.
    bytes,
    /// ... of which served from this node's store.
    store_requests,
    /// Their bytes.
    store_bytes,
    /// ... through the mesh.
    mesh_requests,
    /// Their bytes.
    mesh_bytes,
    /// ... fetched from the internet by this node.
    internet_requests,
    /// Their bytes.
    internet_bytes,
    /// ... over packet radio.
    rf_requests,
    /// Their bytes.
    rf_bytes,
    /// ... not found anywhere.
    not_found,
    /// ... refused or failed.
    failed,
    /// Requests for external URLs (through the proxy).
    external_requests,
    /// ... served without this node fetching them from the internet.
    external_avoided,
    /// Their bytes: what the uplink did not carry.
    external_bytes_saved,
    /// Requests served while the node was not online.
    offline_requests,
    /// Their bytes.
    offline_bytes,
    /// Content requests of other nodes served here.
    peer_requests,
    /// Their bytes.
    peer_bytes,
    /// Most peers seen at once.
    peers_max,
    /// Peers that appeared.
    peer_joins,
    /// Peers that went.
    peer_leaves,
    /// Network mode changes.
    mode_changes,
    /// Seconds not online (mesh-only or rf-only).
    offline_secs,
    /// Milliseconds this station transmitted on radio.
    rf_airtime_ms,
}

impl Counts {
    /// Adds `o` (`peers_max` takes the larger).
    pub fn merge(&mut self, o: &Counts) {
        let peers_max = self.peers_max.max(o.peers_max);
        let sum: Vec<u64> = self
            .values()
            .iter()
            .zip(o.values())
            .map(|(a, b)| a.saturating_add(b))
            .collect();
        *self = Counts::from_values(&sum);
        self.peers_max = peers_max;
    }

    /// Share of the found content requests this node's store answered.
    pub fn hit_ratio(&self) -> Option<f64> {
        let found =
            self.store_requests + self.mesh_requests + self.internet_requests + self.rf_requests;
        (found > 0).then(|| self.store_requests as f64 / found as f64)
    }
}

/// Requests and bytes of one client or URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Requests.
    pub requests: u64,
    /// Body bytes.
    pub bytes: u64,
}

impl Tally {
    fn add(&mut self, bytes: u64) {
        self.requests += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn merge(&mut self, o: Tally) {
        self.requests = self.requests.saturating_add(o.requests);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// Requests and bytes per client or per URL. foldhash rather than SipHash:
/// these maps are hashed on every request, and an attacker flooding them
/// with colliding URLs is bounded by [`MAX_URLS_PER_HOUR`] anyway.
pub type Tallies<K> = HashMap<K, Tally, foldhash::fast::RandomState>;

/// Distinct URLs one hour keeps apart; the rest are summed as [`OTHER_URLS`].
pub const MAX_URLS_PER_HOUR: usize = 10_000;
/// The name of the URLs beyond [`MAX_URLS_PER_HOUR`] (or beyond a stored top-N).
pub const OTHER_URLS: &str = "(other)";

/// One UTC hour being counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hour {
    /// Unix seconds of its start (a multiple of 3600).
    pub start: i64,
    /// Its counters.
    pub counts: Counts,
    /// Per client address.
    pub clients: Tallies<IpAddr>,
    /// Per content URL (found content only).
    pub content: Tallies<String>,
}

impl Hour {
    /// An empty hour containing `unix_secs`.
    pub fn at(unix_secs: i64) -> Hour {
        Hour {
            start: hour_of(unix_secs),
            ..Default::default()
        }
    }

    /// Counts one response; `offline`: the node was not online.
    pub fn add(&mut self, e: Event, offline: bool) {
        let c = &mut self.counts;
        if e.to_peer {
            c.peer_requests += 1;
            c.peer_bytes = c.peer_bytes.saturating_add(e.bytes);
            return;
        }
        c.requests += 1;
        c.bytes = c.bytes.saturating_add(e.bytes);
        if e.external {
            c.external_requests += 1;
        }
        let (n, b) = match e.source {
            Source::Store => (&mut c.store_requests, &mut c.store_bytes),
            Source::Mesh => (&mut c.mesh_requests, &mut c.mesh_bytes),
            Source::Internet => (&mut c.internet_requests, &mut c.internet_bytes),
            Source::Rf => (&mut c.rf_requests, &mut c.rf_bytes),
            Source::NotFound => {
                c.not_found += 1;
                return self.add_client(&e);
            }
            Source::Other => {
                c.failed += 1;
                return self.add_client(&e);
            }
        };
        *n += 1;
        *b = b.saturating_add(e.bytes);
        if e.external && e.source != Source::Internet {
            c.external_avoided += 1;
            c.external_bytes_saved = c.external_bytes_saved.saturating_add(e.bytes);
        }
        if offline {
            c.offline_requests += 1;
            c.offline_bytes = c.offline_bytes.saturating_add(e.bytes);
        }
        self.add_client(&e);
        // a URL already counted is found without allocating
        if let Some(t) = self.content.get_mut(&e.url) {
            t.add(e.bytes);
        } else {
            self.content_entry(e.url).add(e.bytes);
        }
    }

    /// Adds `o`, an hour with the same start (counted elsewhere).
    pub fn merge(&mut self, o: Hour) {
        debug_assert_eq!(self.start, o.start);
        self.counts.merge(&o.counts);
        for (ip, t) in o.clients {
            self.clients.entry(ip).or_default().merge(t);
        }
        for (url, t) in o.content {
            self.content_entry(url).merge(t);
        }
    }

    /// `url`'s tally, or [`OTHER_URLS`]'s when this hour has too many.
    fn content_entry(&mut self, url: String) -> &mut Tally {
        let url = if self.content.len() < MAX_URLS_PER_HOUR || self.content.contains_key(&url) {
            url
        } else {
            OTHER_URLS.to_string()
        };
        self.content.entry(url).or_default()
    }

    fn add_client(&mut self, e: &Event) {
        if let Some(ip) = e.client {
            self.clients.entry(ip).or_default().add(e.bytes);
        }
    }
}

/// Unix seconds of the start of the UTC hour containing `unix_secs`.
pub fn hour_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(3600) * 3600
}

/// Unix seconds of the start of the UTC day containing `unix_secs`.
pub fn day_of(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(86_400) * 86_400
}

/// The `n` largest of `items` by requests (then bytes, then name), and
/// what the rest add up to.
pub fn top<K: Clone + Ord, S: BuildHasher>(
    items: &HashMap<K, Tally, S>,
    n: usize,
) -> (Vec<(K, Tally)>, Tally) {
    let mut v: Vec<(K, Tally)> = items.iter().map(|(k, t)| (k.clone(), *t)).collect();
    v.sort_by(|a, b| {
        (b.1.requests, b.1.bytes)
            .cmp(&(a.1.requests, a.1.bytes))
            .then_with(|| a.0.cmp(&b.0))
    });
    let rest = v.split_off(n.min(v.len()));
    let mut other = Tally::default();
    for (_, t) in rest {
        other.requests += t.requests;
        other.bytes = other.bytes.saturating_add(t.bytes);
    }
    (v, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(client: u8, url: &str, source: Source, external: bool, bytes: u64) -> Event {
        Event {
            client: Some(IpAddr::from([10, 0, 0, client])),
            url: url.into(),
            source,
            external,
            bytes,
            to_peer: false,
        }
    }

    #[test]
    fn an_hour_sorts_responses_by_source_and_counts_what_was_avoided() {
        let mut h = Hour::at(7_200 + 59);
        assert_eq!(h.start, 7_200);
        h.add(
            ev(1, "http://n0call.radio/a", Source::Store, false, 100),
            false,
        );
        h.add(
            ev(2, "http://n0call.radio/a", Source::Store, false, 100),
            true,
        );
        h.add(
            ev(2, "http://example.org/x", Source::Internet, true, 1000),
            false,
        );
        h.add(
            ev(3, "http://example.org/x", Source::Mesh, true, 1000),
            false,
        );
        h.add(
            ev(3, "http://example.org/x", Source::Store, true, 1000),
            true,
        );
        h.add(
            ev(
                3,
                "http://n0call.radio/missing",
                Source::NotFound,
                false,
                300,
            ),
            false,
        );
        h.add(
            Event {
                to_peer: true,
                ..ev(9, "", Source::Store, false, 5000)
            },
            false,
        );
        let c = h.counts;
        assert_eq!((c.requests, c.bytes), (6, 3500));
        assert_eq!((c.store_requests, c.store_bytes), (3, 1200));
        assert_eq!(
            (c.mesh_requests, c.internet_requests, c.not_found),
            (1, 1, 1)
        );
        assert_eq!(
            (
                c.external_requests,
                c.external_avoided,
                c.external_bytes_saved
            ),
            (3, 2, 2000)
        );
        assert_eq!((c.offline_requests, c.offline_bytes), (2, 1100));
        assert_eq!((c.peer_requests, c.peer_bytes), (1, 5000));
        assert_eq!(c.hit_ratio(), Some(3.0 / 5.0));
        assert_eq!(h.clients.len(), 3, "the peer is not a client");
        assert_eq!(
            h.clients[&IpAddr::from([10, 0, 0, 3])],
            Tally {
                requests: 3,
                bytes: 2300
            }
        );
        assert_eq!(h.content.len(), 2, "found content only");
        assert_eq!(
            h.content["http://example.org/x"],
            Tally {
                requests: 3,
                bytes: 3000
            }
        );
    }

    proptest::proptest! {
        /// Counting events in several hours (the request side's shards)
        /// and merging them gives what counting them in one gives.
        #[test]
        fn merged_hours_equal_one_hour(
            evs in proptest::collection::vec(
                (0u8..4, 0u8..6, 0usize..6, proptest::bool::ANY, 0u64..5000,
                 proptest::bool::ANY, proptest::bool::ANY, 0usize..3),
                0..60,
            )
        ) {
            let sources = [Source::Store, Source::Mesh, Source::Internet, Source::Rf,
                Source::NotFound, Source::Other];
            let mut one = Hour::at(3600);
            let mut parts = vec![Hour::at(3600), Hour::at(3600), Hour::at(3600)];
            for (c, u, s, ext, bytes, peer, offline, part) in evs {
                let e = Event {
                    to_peer: peer,
                    ..ev(c, &format!("http://x.radio/{u}"), sources[s], ext, bytes)
                };
                one.add(e.clone(), offline);
                parts[part].add(e, offline);
            }
            let mut merged = Hour::at(3600);
            for p in parts {
                merged.merge(p);
            }
            proptest::prop_assert_eq!(merged, one);
        }
    }

    #[test]
    fn merging_keeps_the_url_limit() {
        let mut a = Hour::at(0);
        let mut b = Hour::at(0);
        for i in 0..MAX_URLS_PER_HOUR {
            a.add(
                ev(1, &format!("http://x.radio/a{i}"), Source::Store, false, 1),
                false,
            );
        }
        for i in 0..3 {
            b.add(
                ev(1, &format!("http://x.radio/b{i}"), Source::Store, false, 2),
                false,
            );
        }
        b.add(ev(1, "http://x.radio/a0", Source::Store, false, 2), false);
        a.merge(b);
        assert_eq!(a.content.len(), MAX_URLS_PER_HOUR + 1);
        assert_eq!(
            a.content[OTHER_URLS],
            Tally {
                requests: 3,
                bytes: 6
            }
        );
        assert_eq!(
            a.content["http://x.radio/a0"],
            Tally {
                requests: 2,
                bytes: 3
            }
        );
        assert_eq!(a.counts.requests, MAX_URLS_PER_HOUR as u64 + 4);
    }

    #[test]
    fn counts_round_trip_and_merge() {
        let mut a = Counts {
            requests: 3,
            peers_max: 4,
            rf_airtime_ms: 9,
            ..Default::default()
        };
        assert_eq!(Counts::from_values(&a.values()), a);
        assert_eq!(Counts::FIELDS.len(), a.values().len());
        a.merge(&Counts {
            requests: 2,
            peers_max: 2,
            ..Default::default()
        });
        assert_eq!((a.requests, a.peers_max, a.rf_airtime_ms), (5, 4, 9));
    }

    #[test]
    fn too_many_urls_are_summed_as_other() {
        let mut h = Hour::at(0);
        for i in 0..MAX_URLS_PER_HOUR + 5 {
            h.add(
                ev(1, &format!("http://x.radio/{i}"), Source::Store, false, 1),
                false,
            );
        }
        assert_eq!(h.content.len(), MAX_URLS_PER_HOUR + 1);
        assert_eq!(h.content[OTHER_URLS].requests, 5);
    }

    #[test]
    fn top_n_keeps_the_largest_and_sums_the_rest() {
        let m: HashMap<&str, Tally> = [("a", 5), ("b", 9), ("c", 1), ("d", 5)]
            .into_iter()
            .map(|(k, n)| {
                (
                    k,
                    Tally {
                        requests: n,
                        bytes: n * 10,
                    },
                )
            })
            .collect();
        let (t, rest) = top(&m, 2);
        assert_eq!(t.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(
            rest,
            Tally {
                requests: 6,
                bytes: 60
            }
        );
    }
}
