//! Cooperative fetching of external content: the pure rules.
//!
//! The forward proxy ([`crate::api`]'s absolute-form and `CONNECT`
//! handling) serves external plain-HTTP URLs from the mesh when it can and
//! otherwise has exactly one online node fetch them for everyone:
//!
//! - **Who fetches**: rendezvous hashing over the online nodes
//!   ([`fetcher`]): every node picks the same one for a URL, so concurrent
//!   requests anywhere in the mesh meet at one node, which collapses them
//!   into one origin request. A node going offline moves only its share.
//! - **What is kept**: RFC 9111 for a shared cache ([`freshness`]): `200`
//!   answers without `no-store`, `private`, `Set-Cookie` or `Vary: *`.
//!   Freshness from `s-maxage`, `max-age`, `Expires` minus `Date`, else the
//!   configured default; `no-cache` means stale at once (revalidated each
//!   time while online). The fetcher signs the result into the catalog
//!   (priority standard unless configured), with the freshness in the record
//!   ([`crate::sync::record::Fetched`]) so every node judges it alike.
//! - **Offline**: whatever the mesh has is served, stale or not, marked with
//!   `Warning: 110 - "Response is Stale"` and `X-Meshnode-Cache: STALE`.

use std::time::Duration;

use hyper::HeaderMap;
use hyper::header;

use crate::node::NodeId;
use crate::sync::record::Fetched;

/// The node that fetches `url` among the `online` ones (rendezvous hashing:
/// highest SHA-256(url, node) wins).
pub fn fetcher(url: &str, online: &[NodeId]) -> Option<NodeId> {
    use sha2::Digest;
    online.iter().copied().max_by_key(|n| {
        let mut h = sha2::Sha256::new();
        h.update(url.as_bytes());
        h.update([0]);
        h.update(n.0);
        <[u8; 32]>::from(h.finalize())
    })
}

/// May a shared cache keep this response, and until when is it fresh?
/// `None`: pass it through, keep nothing.
pub fn freshness(status: u16, h: &HeaderMap, now_ms: i64, default: Duration) -> Option<Fetched> {
    if status != 200 {
        return None;
    }
    let cc: Vec<String> = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let has = |d: &str| cc.iter().any(|x| x == d || x.starts_with(&format!("{d}=")));
    let secs = |d: &str| {
        cc.iter()
            .find_map(|x| x.strip_prefix(&format!("{d}=")))
            .and_then(|v| v.trim_matches('"').parse::<i64>().ok())
    };
    let vary_all = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|x| x.trim() == "*"));
    if has("no-store") || has("private") || h.contains_key(header::SET_COOKIE) || vary_all {
        return None;
    }
    let date = |k: header::HeaderName| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
    };
    let lifetime_ms = if has("no-cache") {
        0
    } else if let Some(s) = secs("s-maxage").or_else(|| secs("max-age")) {
        s.clamp(0, 1 << 31) * 1000 // RFC 9111 §1.2.2: at most 2^31 s, no overflow
    } else if let Some(exp) = date(header::EXPIRES) {
        (exp - date(header::DATE).unwrap_or(now_ms)).max(0)
    } else if h.contains_key(header::EXPIRES) {
        0 // an invalid Expires means "already expired" (RFC 9111 §5.3)
    } else {
        default.as_millis() as i64
    };
    let text = |k: header::HeaderName| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(String::from)
    };
    // RFC 9111 §4.2.3: the time it already spent in caches before us
    // counts against its lifetime. (The apparent age from `Date` is left
    // out: origin clocks on the other side of a flaky uplink are too often
    // wrong, and a wrong one would make everything stale.)
    let age_ms = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(0, |a| a.clamp(0, 1 << 31) * 1000);
    Some(Fetched {
        at_ms: now_ms,
        fresh_until_ms: now_ms + (lifetime_ms - age_ms).max(0),
        etag: text(header::ETAG),
        last_modified: text(header::LAST_MODIFIED),
    })
}

/// Is it fresh at `now_ms`? (Content without fetch information, i.e.
/// published by a station, is always fresh.)
pub fn is_fresh(f: Option<&Fetched>, now_ms: i64) -> bool {
    f.is_none_or(|f| now_ms < f.fresh_until_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    const NOW: i64 = 1_700_000_000_000;
    const DEF: Duration = Duration::from_secs(3600);

    #[test]
    fn cache_headers_decide_freshness() {
        let f = |pairs| freshness(200, &h(pairs), NOW, DEF).map(|f| f.fresh_until_ms - NOW);
        assert_eq!(f(&[("cache-control", "public, max-age=60")]), Some(60_000));
        assert_eq!(
            f(&[("cache-control", "max-age=60, s-maxage=10")]),
            Some(10_000)
        );
        assert_eq!(f(&[]), Some(3_600_000), "no headers: the default");
        assert_eq!(f(&[("cache-control", "no-cache")]), Some(0));
        assert_eq!(
            f(&[
                ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
                ("expires", "Tue, 14 Nov 2023 22:15:20 GMT")
            ]),
            Some(120_000)
        );
        assert_eq!(f(&[("expires", "0")]), Some(0));
        for never in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private, max-age=600")],
            &[("set-cookie", "a=b")],
            &[("vary", "accept, *")],
        ] {
            assert_eq!(f(never), None, "{never:?}");
        }
        assert_eq!(freshness(404, &h(&[]), NOW, DEF), None);
        let v = freshness(
            200,
            &h(&[
                ("etag", "\"x\""),
                ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
            ]),
            NOW,
            DEF,
        )
        .unwrap();
        assert_eq!(v.etag.as_deref(), Some("\"x\""));
        assert!(is_fresh(Some(&v), NOW + 1000) && !is_fresh(Some(&v), NOW + 3_600_000));
        assert!(is_fresh(None, NOW));
    }

    #[test]
    fn one_fetcher_per_url_and_a_leaving_node_moves_only_its_share() {
        let nodes: Vec<NodeId> = (0..5u8).map(|i| NodeId([i; 32])).collect();
        let urls: Vec<String> = (0..1000)
            .map(|i| format!("http://example.org/{i}"))
            .collect();
        let before: Vec<NodeId> = urls.iter().map(|u| fetcher(u, &nodes).unwrap()).collect();
        // order of the candidate list does not matter
        let mut rev = nodes.clone();
        rev.reverse();
        assert!(
            urls.iter()
                .zip(&before)
                .all(|(u, f)| fetcher(u, &rev) == Some(*f))
        );
        // every node gets a share
        for n in &nodes {
            let share = before.iter().filter(|f| *f == n).count();
            assert!((120..=280).contains(&share), "{share}");
        }
        // node 0 leaves: only its URLs move
        let after: Vec<NodeId> = urls
            .iter()
            .map(|u| fetcher(u, &nodes[1..]).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == nodes[0]);
        }
        assert_eq!(fetcher("x", &[]), None);
    }

    mod props {
        use super::{DEF, NOW};
        use crate::proxy::{freshness, is_fresh};
        use hyper::HeaderMap;
        use hyper::header::{HeaderName, HeaderValue};
        use proptest::prelude::*;
        use std::time::{Duration, UNIX_EPOCH};

        /// An HTTP date between 1970 and 2100.
        fn date() -> impl Strategy<Value = String> {
            (0u64..4_102_444_800)
                .prop_map(|s| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s)))
        }

        /// A directive, valid or not, with odd case and spacing.
        fn directive() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("public".to_string()),
                Just("must-revalidate".to_string()),
                Just("no-transform".to_string()),
                Just("immutable".to_string()),
                Just("No-Cache".to_string()),
                Just("no-cache=\"set-cookie\"".to_string()),
                Just("no-store".to_string()),
                Just("private".to_string()),
                Just("private=\"x-a, x-b\"".to_string()),
                any::<i64>().prop_map(|n| format!("max-age={n}")),
                any::<i64>().prop_map(|n| format!("S-MaxAge=\"{n}\"")),
                "(max-age|s-maxage|stale-while-revalidate)=[0-9+-]{0,25}",
                "[ -~]{0,12}",
            ]
        }

        fn cache_control() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec(directive(), 0..5),
                prop_oneof![Just(","), Just(", "), Just(" ,  ")],
            )
                .prop_map(|(ds, sep)| ds.join(sep))
        }

        /// The headers the rules read, with valid and invalid values.
        fn header() -> impl Strategy<Value = (&'static str, String)> {
            let date_or_junk = || prop_oneof![date(), Just("0".to_string()), "[ -~]{0,30}"];
            prop_oneof![
                cache_control().prop_map(|v| ("cache-control", v)),
                date_or_junk().prop_map(|v| ("expires", v)),
                date_or_junk().prop_map(|v| ("date", v)),
                date_or_junk().prop_map(|v| ("last-modified", v)),
                "[0-9]{0,12}".prop_map(|v| ("age", v)),
                "[ -~]{0,300}".prop_map(|v| ("etag", v)),
                prop_oneof![Just("*".to_string()), "[a-z, *-]{0,20}"].prop_map(|v| ("vary", v)),
                "[ -~]{0,20}".prop_map(|v| ("set-cookie", v)),
                "[ -~]{0,20}".prop_map(|v| ("pragma", v)),
            ]
        }

        fn map(pairs: &[(&'static str, String)]) -> HeaderMap {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_static(k),
                    HeaderValue::from_str(v).expect("printable ASCII"),
                );
            }
            m
        }

        /// Headers without any Cache-Control, Set-Cookie or Vary: noise
        /// that must not change what a max-age says.
        fn noise() -> impl Strategy<Value = Vec<(&'static str, String)>> {
            proptest::collection::vec(header(), 0..6).prop_map(|hs| {
                hs.into_iter()
                    .filter(|(k, _)| !matches!(*k, "cache-control" | "set-cookie" | "vary"))
                    .collect()
            })
        }

        proptest! {
            /// Never panics; a kept response is fresh for zero or more ms
            /// from now, and only a 200 is kept.
            #[test]
            fn freshness_is_never_negative(
                pairs in proptest::collection::vec(header(), 0..8),
                now in 0i64..4_102_444_800_000,
                status in prop_oneof![Just(200u16), 100u16..600],
            ) {
                let h = map(&pairs);
                if let Some(f) = freshness(status, &h, now, DEF) {
                    prop_assert_eq!(status, 200);
                    prop_assert_eq!(f.at_ms, now);
                    prop_assert!(f.fresh_until_ms >= now, "{} ms for {:?}", f.fresh_until_ms - now, h);
                    prop_assert_eq!(is_fresh(Some(&f), now), f.fresh_until_ms > now);
                    prop_assert!(f.etag.as_ref().is_none_or(|e| e.len() <= 256));
                }
            }

            /// `no-store` and `private` (any case, anywhere in any
            /// Cache-Control line) mean "keep nothing".
            #[test]
            fn no_store_and_private_are_never_kept(
                pairs in proptest::collection::vec(header(), 0..8),
                forbid in prop_oneof![
                    Just("no-store"), Just("NO-STORE"), Just("private"), Just("Private"),
                    Just("private=\"set-cookie\""),
                ],
                at in any::<proptest::sample::Index>(),
                own_line in any::<bool>(),
            ) {
                let mut pairs = pairs;
                let cc = pairs.iter().position(|(k, _)| *k == "cache-control");
                match cc {
                    Some(i) if !own_line => {
                        let v = &mut pairs[i].1;
                        *v = if v.is_empty() { forbid.to_string() } else { format!("{v}, {forbid}") };
                    }
                    _ => {
                        let i = at.index(pairs.len() + 1);
                        pairs.insert(i, ("cache-control", forbid.to_string()));
                    }
                }
                prop_assert_eq!(freshness(200, &map(&pairs), NOW, DEF), None, "{:?}", pairs);
            }

            /// `max-age=N` (no `s-maxage`, no `no-cache`) is N seconds from
            /// now, whatever Expires, Date or Last-Modified say.
            #[test]
            fn max_age_is_n_seconds_from_now(
                n in 0i64..=2_147_483_648,
                others in proptest::collection::vec(
                    prop_oneof![Just("public"), Just("must-revalidate"), Just("immutable")], 0..3),
                noise in noise(),
                now in 0i64..4_102_444_800_000,
            ) {
                let mut cc = others.clone();
                let ma = format!("max-age={n}");
                cc.push(&ma);
                let mut pairs: Vec<_> = noise.into_iter().filter(|(k, _)| *k != "age").collect();
                pairs.push(("cache-control", cc.join(", ")));
                let f = freshness(200, &map(&pairs), now, DEF).expect("kept");
                prop_assert_eq!(f.fresh_until_ms - now, n * 1000, "{:?}", pairs);
            }

            /// An `Age` of A seconds leaves max(0, N - A) of `max-age=N`.
            #[test]
            fn age_counts_against_max_age(n in 0i64..100_000, a in 0i64..200_000) {
                let h = map(&[
                    ("cache-control", format!("max-age={n}")),
                    ("age", a.to_string()),
                ]);
                let f = freshness(200, &h, NOW, DEF).expect("kept");
                prop_assert_eq!(f.fresh_until_ms - NOW, (n - a).max(0) * 1000);
            }

            /// A max-age too large for the arithmetic is still kept, fresh
            /// for a long time rather than stale or in the past (RFC 9111
            /// §1.2.2: treat it as at least 2^31 seconds).
            #[test]
            fn a_huge_max_age_is_long_not_negative(
                n in 2_147_483_648i64..=i64::MAX,
                name in prop_oneof![Just("max-age"), Just("s-maxage")],
            ) {
                let h = map(&[("cache-control", format!("{name}={n}"))]);
                let f = freshness(200, &h, NOW, DEF).expect("kept");
                prop_assert!(f.fresh_until_ms - NOW >= 2_147_483_648_000, "{:?}", f);
            }

            /// Without Cache-Control, `Expires` minus `Date` (both valid) is
            /// the lifetime, never below zero.
            #[test]
            fn expires_minus_date(
                date in 0u64..4_102_444_800,
                expires in 0u64..4_102_444_800,
                noise in noise(),
            ) {
                let d = |s: u64| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(s));
                let mut pairs: Vec<_> = noise
                    .into_iter()
                    .filter(|(k, _)| !matches!(*k, "date" | "expires" | "age"))
                    .collect();
                pairs.push(("date", d(date)));
                pairs.push(("expires", d(expires)));
                let f = freshness(200, &map(&pairs), NOW, DEF).expect("kept");
                let want = (expires as i64 - date as i64).max(0) * 1000;
                prop_assert_eq!(f.fresh_until_ms - NOW, want, "{:?}", pairs);
            }
        }
    }
}
