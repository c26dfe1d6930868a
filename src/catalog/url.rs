//! Content URLs: `http://<callsign>.radio/<path>`, parsed from a Host header
//! plus request path, from the path form `/<callsign>.radio/<path>`, or from a
//! URL typed by a user; and external `http://<host>/<path>?<query>` URLs that
//! the forward proxy fetched for the community. Pure.
//!
//! External URLs keep their path and query exactly as the origin server
//! sees them (only the host is lower-cased and a default `:80` dropped):
//! rewriting them would fetch something else.
//!
//! A path is decoded once and re-encoded in one canonical form, so the catalog
//! has one key per resource. Anything that could name something other than a
//! plain catalog key is refused: bad `%` escapes, non-UTF-8, `.`/`..`
//! segments, encoded `/`, backslashes, control characters. Serving never maps
//! a URL to a file name (blobs are named by hash), so these rules are defence
//! in depth and a promise of clean keys, not the only barrier.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::node::Callsign;

/// Longest accepted path (decoded bytes).
pub const MAX_PATH_LEN: usize = 1024;

/// Characters escaped in the canonical path (RFC 3986 path chars stay as they are).
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'^')
    .add(b'|');

/// Why a URL or path was refused; each maps to HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding in path")]
    BadEscape,
    /// The decoded path is not UTF-8.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// `.` or `..` segment.
    #[error("path contains a '.' or '..' segment")]
    DotSegment,
    /// `%2F`, a backslash or a control character.
    #[error("path contains an encoded '/', a backslash or a control character")]
    ForbiddenChar,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("path longer than 1024 bytes")]
    TooLong,
    /// Does not start with `/`.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// Not a `<callsign>.radio` URL.
    #[error("not a <callsign>.radio URL: {0}")]
    BadHost(String),
}

/// Longest accepted external path with query.
pub const MAX_EXTERNAL_LEN: usize = 2048;

/// A canonical content URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContentUrl {
    host: Host,
    /// Radio: canonical percent-encoded path, starting with `/`, never ending
    /// in `/`. External: path and query as sent.
    path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    Radio(Callsign),
    /// `host` or `host:port`, lower case, without `:80`.
    External(String),
}

/// Is `url` (a canonical catalog URL) external content fetched by the
/// proxy? Such an entry is a cache of the internet: evicted like other
/// nodes' content although this node signed it, and its record survives the
/// eviction (other nodes may hold copies; eviction is not deletion).
pub fn is_external_url(url: &str) -> bool {
    ContentUrl::parse(url).is_ok_and(|u| u.is_external())
}

impl ContentUrl {
    /// From a callsign and a request path as sent on the wire (percent-encoded,
    /// query allowed and ignored). A path ending in `/` means its `index.html`.
    pub fn new(callsign: Callsign, raw_path: &str) -> Result<Self, UrlError> {
        let raw = raw_path.split(['?', '#']).next().unwrap_or("");
        if !raw.starts_with('/') {
            return Err(UrlError::NotAbsolute);
        }
        let decoded = decode(raw)?;
        if decoded.len() > MAX_PATH_LEN {
            return Err(UrlError::TooLong);
        }
        let mut path = String::with_capacity(decoded.len() + 10);
        let segments: Vec<&str> = decoded[1..].split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            if *seg == "." || *seg == ".." {
                return Err(UrlError::DotSegment);
            }
            if seg.is_empty() && i + 1 != segments.len() {
                continue; // collapse `//`
            }
            path.push('/');
            path.extend(utf8_percent_encode(seg, PATH_ESCAPE));
        }
        if path.ends_with('/') {
            path.push_str("index.html");
        }
        // the canonical form must itself be acceptable (an appended
        // index.html could push it over the limit; fuzz-found)
        if decode(&path)?.len() > MAX_PATH_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(Self {
            host: Host::Radio(callsign),
            path,
        })
    }

    /// An external URL from an authority (`host[:port]`) and a request
    /// target's path and query. The fragment is dropped.
    pub fn external(authority: &str, path_and_query: &str) -> Result<Self, UrlError> {
        let authority = authority.to_ascii_lowercase();
        let authority = authority.strip_suffix(":80").unwrap_or(&authority);
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) if !authority.ends_with(']') => (n, Some(p)),
            _ => (authority, None),
        };
        let name_ok = if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !name_ok || !port_ok {
            return Err(UrlError::BadHost(authority.to_string()));
        }
        let path = path_and_query.split('#').next().unwrap_or("");
        let path = if path.is_empty() { "/" } else { path };
        if !path.starts_with('/') {
            return Err(UrlError::NotAbsolute);
        }
        if path.len() > MAX_EXTERNAL_LEN {
            return Err(UrlError::TooLong);
        }
        if path
            .bytes()
            .any(|c| !(0x21..0x7f).contains(&c) || c == b'\\')
        {
            return Err(UrlError::ForbiddenChar);
        }
        if radio_host_callsign(authority).is_some() {
            return Err(UrlError::BadHost(authority.to_string()));
        }
        Ok(Self {
            host: Host::External(authority.to_string()),
            path: path.to_string(),
        })
    }

    /// Parses `http://n0call.radio/p`, `n0call.radio/p` (no path means `/`),
    /// or an external `http://host/p?q`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let (rest, scheme) = match s.strip_prefix("http://") {
            Some(r) => (r, true),
            None => (s, false),
        };
        let (host, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        match radio_host_callsign(host) {
            Some(callsign) => Self::new(callsign, path),
            None if scheme && path.starts_with('?') => Self::external(host, &format!("/{path}")),
            None if scheme => Self::external(host, path),
            None => Err(UrlError::BadHost(s.to_string())),
        }
    }

    /// The station whose namespace this is (`None` for an external URL).
    pub fn callsign(&self) -> Option<&Callsign> {
        match &self.host {
            Host::Radio(c) => Some(c),
            Host::External(_) => None,
        }
    }

    /// An external URL (fetched from the internet by the proxy).
    pub fn is_external(&self) -> bool {
        matches!(self.host, Host::External(_))
    }

    /// The external authority (`host[:port]`), for fetching it.
    pub fn authority(&self) -> Option<&str> {
        match &self.host {
            Host::Radio(_) => None,
            Host::External(a) => Some(a),
        }
    }

    /// The canonical path.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for ContentUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Radio(c) => write!(f, "http://{}{}", c.radio_host(), self.path),
            Host::External(a) => write!(f, "http://{a}{}", self.path),
        }
    }
}

/// If `host` (a Host header or URL authority, port allowed) is
/// `<callsign>.radio`, returns the callsign.
pub fn radio_host_callsign(host: &str) -> Option<Callsign> {
    let name = match host.rfind(':') {
        Some(i) if !host.ends_with(']') => &host[..i],
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let dot = name.len().checked_sub(".radio".len())?;
    if !name.is_char_boundary(dot) || !name[dot..].eq_ignore_ascii_case(".radio") {
        return None;
    }
    Callsign::parse(&name[..dot]).ok()
}

fn decode(raw: &str) -> Result<String, UrlError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UrlError::BadEscape)?;
            let s = std::str::from_utf8(hex).map_err(|_| UrlError::BadEscape)?;
            let v = u8::from_str_radix(s, 16).map_err(|_| UrlError::BadEscape)?;
            if v == b'/' {
                return Err(UrlError::ForbiddenChar);
            }
            out.push(v);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| UrlError::NotUtf8)?;
    if s.chars().any(|c| c.is_control() || c == '\\') {
        return Err(UrlError::ForbiddenChar);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cs() -> Callsign {
        Callsign::parse("N0CALL").unwrap()
    }

    #[test]
    fn canonical_forms() {
        let u = ContentUrl::new(cs(), "/docs/a%20b.html?x=1").unwrap();
        assert_eq!(u.to_string(), "http://n0call.radio/docs/a%20b.html");
        assert_eq!(ContentUrl::new(cs(), "/").unwrap().path(), "/index.html");
        assert_eq!(
            ContentUrl::new(cs(), "/a//b/").unwrap().path(),
            "/a/b/index.html"
        );
        assert_eq!(ContentUrl::new(cs(), "/%7Euser").unwrap().path(), "/~user");
        assert_eq!(
            ContentUrl::new(cs(), "/caf%C3%A9").unwrap().path(),
            "/caf%C3%A9"
        );
        assert_eq!(ContentUrl::new(cs(), "/café").unwrap().path(), "/caf%C3%A9"); // raw UTF-8 from a user: same key
        assert_eq!(ContentUrl::new(cs(), "/100%25").unwrap().path(), "/100%25");
    }

    /// Fuzz-found: a path that fits only before its `index.html` is appended.
    #[test]
    fn the_canonical_form_fits_the_limit_too() {
        let raw = format!("/{}/", "a".repeat(MAX_PATH_LEN - 5));
        assert_eq!(ContentUrl::new(cs(), &raw), Err(UrlError::TooLong));
        let ok = format!("/{}/", "a".repeat(MAX_PATH_LEN - 12));
        let u = ContentUrl::new(cs(), &ok).unwrap();
        assert_eq!(ContentUrl::new(cs(), u.path()).unwrap(), u);
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert_eq!(
            ContentUrl::new(cs(), "/../etc/passwd"),
            Err(UrlError::DotSegment)
        );
        assert_eq!(
            ContentUrl::new(cs(), "/a/%2e%2e/b"),
            Err(UrlError::DotSegment)
        );
        assert_eq!(
            ContentUrl::new(cs(), "/a%2fb"),
            Err(UrlError::ForbiddenChar)
        );
        assert_eq!(ContentUrl::new(cs(), "/a%00"), Err(UrlError::ForbiddenChar));
        assert_eq!(ContentUrl::new(cs(), "/a\\b"), Err(UrlError::ForbiddenChar));
        assert_eq!(ContentUrl::new(cs(), "/%zz"), Err(UrlError::BadEscape));
        assert_eq!(ContentUrl::new(cs(), "/%4"), Err(UrlError::BadEscape));
        assert_eq!(ContentUrl::new(cs(), "/%ff"), Err(UrlError::NotUtf8));
        assert_eq!(ContentUrl::new(cs(), "x"), Err(UrlError::NotAbsolute));
        assert_eq!(
            ContentUrl::new(cs(), &format!("/{}", "a".repeat(2000))),
            Err(UrlError::TooLong)
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(
            radio_host_callsign("n0call.radio:8080").unwrap().as_str(),
            "N0CALL"
        );
        assert_eq!(
            radio_host_callsign("N0CALL.RADIO.").unwrap().as_str(),
            "N0CALL"
        );
        assert!(radio_host_callsign("localhost:8080").is_none());
        assert!(radio_host_callsign("radio").is_none());
        assert!(radio_host_callsign("bad-call.radio").is_none());
        assert!(radio_host_callsign("[::1]:8080").is_none());
        assert_eq!(
            ContentUrl::parse("http://w1aw.radio/x")
                .unwrap()
                .to_string(),
            "http://w1aw.radio/x"
        );
        assert_eq!(
            ContentUrl::parse("w1aw.radio").unwrap().path(),
            "/index.html"
        );
        assert!(matches!(
            ContentUrl::parse("example.com/x"),
            Err(UrlError::BadHost(_))
        ));
    }

    #[test]
    fn external_urls_keep_path_and_query() {
        let u = ContentUrl::parse("http://Example.COM:80/a//b/../c?x=1&y=%41#frag").unwrap();
        assert!(u.is_external() && u.callsign().is_none());
        assert_eq!(u.to_string(), "http://example.com/a//b/../c?x=1&y=%41");
        assert_eq!(u.authority(), Some("example.com"));
        assert_eq!(
            ContentUrl::parse("http://10.0.0.1:8081?q")
                .unwrap()
                .to_string(),
            "http://10.0.0.1:8081/?q"
        );
        assert_eq!(
            ContentUrl::external("[2001:db8::1]:81", "/")
                .unwrap()
                .to_string(),
            "http://[2001:db8::1]:81/"
        );
        assert_eq!(
            ContentUrl::external("h", "/a b"),
            Err(UrlError::ForbiddenChar)
        );
        assert_eq!(
            ContentUrl::external("h", "/a\\b"),
            Err(UrlError::ForbiddenChar)
        );
        assert!(matches!(
            ContentUrl::external("bad_host", "/"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            ContentUrl::external("h:0", "/"),
            Err(UrlError::BadHost(_))
        ));
        assert!(matches!(
            ContentUrl::external("n0call.radio", "/"),
            Err(UrlError::BadHost(_))
        ));
        // a radio URL is never read as external
        assert!(
            !ContentUrl::parse("http://n0call.radio/x")
                .unwrap()
                .is_external()
        );
    }

    proptest! {
        /// Whatever the input, parsing never panics, and a canonical URL parses to itself.
        #[test]
        fn canonical_is_a_fixed_point(raw in "/[ -~é%]{0,64}") {
            if let Ok(u) = ContentUrl::new(cs(), &raw) {
                let again = ContentUrl::new(cs(), u.path()).unwrap();
                prop_assert_eq!(&again, &u);
                prop_assert!(!u.path().contains("/../"));
                prop_assert_eq!(ContentUrl::parse(&u.to_string()).unwrap(), u);
            }
        }

        /// An external URL's canonical form parses to itself.
        #[test]
        fn external_canonical_is_a_fixed_point(host in "[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?", path in "/[!-~]{0,40}") {
            if let Ok(u) = ContentUrl::external(&host, &path) {
                prop_assert_eq!(ContentUrl::parse(&u.to_string()).unwrap(), u);
            }
        }
    }
}
