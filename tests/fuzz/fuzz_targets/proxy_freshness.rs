//! Arbitrary response headers into the proxy cache's freshness rules
//! (RFC 9111, shared cache): never panics; `no-store`, `private`,
//! `Set-Cookie` and `Vary: *` are never kept; a kept response's freshness is
//! never negative; a lone `max-age=N` (no `Age`) gives N seconds from now.
//!
//! Input: one `name: value` header a line; lines whose name or value is not
//! a valid header are skipped.
#![no_main]

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use meshnode::proxy::{freshness, is_fresh};

const NOW: i64 = 1_700_000_000_000;
const DEFAULT: Duration = Duration::from_secs(3600);

fuzz_target!(|data: &[u8]| {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            h.append(n, v);
        }
    }

    // the directives as a cache sees them
    let cc: Vec<String> = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    let never = cc.iter().any(|d| d == "no-store" || d == "private")
        || h.contains_key(header::SET_COOKIE)
        || h.get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|x| x.trim() == "*"));

    assert_eq!(freshness(404, &h, NOW, DEFAULT), None, "only 200 is kept");
    let f = freshness(200, &h, NOW, DEFAULT);
    if never {
        assert_eq!(f, None, "kept despite {h:?}");
    }
    let Some(f) = f else { return };
    assert_eq!(f.at_ms, NOW);
    let lifetime = f.fresh_until_ms - NOW;
    assert!(lifetime >= 0, "negative freshness {lifetime} ms for {h:?}");
    assert_eq!(is_fresh(Some(&f), NOW), lifetime > 0);
    assert!(f.etag.as_ref().is_none_or(|e| e.len() <= 256));
    assert!(f.last_modified.as_ref().is_none_or(|e| e.len() <= 256));

    // one max-age, nothing that overrides it and no Age: N seconds from now
    let is = |d: &str, name: &str| d == name || d.starts_with(&format!("{name}="));
    let max_ages: Vec<&String> = cc.iter().filter(|d| is(d, "max-age")).collect();
    if let [d] = max_ages[..]
        && let Some(n) = d.strip_prefix("max-age=")
        && (1..=9).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
        && !cc.iter().any(|d| is(d, "no-cache") || is(d, "s-maxage"))
        && !h.contains_key("age")
    {
        let n: i64 = n.parse().expect("digits");
        assert_eq!(lifetime, n * 1000, "max-age={n} in {h:?}");
    }
});
