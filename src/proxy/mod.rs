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
        s.max(0) * 1000
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
    Some(Fetched {
        at_ms: now_ms,
        fresh_until_ms: now_ms + lifetime_ms,
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
}
