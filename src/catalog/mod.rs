//! Catalog domain types: what a piece of content is called ([`ContentUrl`]),
//! how it is addressed ([`ContentHash`]) and what the catalog says about it
//! ([`Entry`], [`Priority`], [`Access`]).
//!
//! Pure: no I/O. The store persists entries; replication (later) moves them.
//! The fields follow shared/DESIGN.md ("catalog & replication") and the
//! distributed-server spec's catalog (URL, hash, version, size, priority 1–4).

pub mod url;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use url::{ContentUrl, UrlError, is_external_url};

/// SHA-256 of a blob's bytes: its address on disk and its HTTP ETag.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hashes `data` in one go.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::digest(data).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// Replication priority, 1 (most important) to 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// 1: on every node, never evicted.
    Essential = 1,
    /// 2: replicated once demand passes a threshold.
    Popular = 2,
    /// 3: cached where it is accessed (the default).
    Standard = 3,
    /// 4: stays at its origin.
    Personal = 4,
}

impl Priority {
    /// From the stored number.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            1 => Self::Essential,
            2 => Self::Popular,
            3 => Self::Standard,
            4 => Self::Personal,
            _ => return None,
        })
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Essential => "essential",
            Self::Popular => "popular",
            Self::Standard => "standard",
            Self::Personal => "personal",
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    /// Accepts `1`–`4` or the names.
    fn from_str(s: &str) -> Result<Self, String> {
        let by_name = [
            Self::Essential,
            Self::Popular,
            Self::Standard,
            Self::Personal,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(s));
        by_name
            .or_else(|| s.parse::<u8>().ok().and_then(Self::from_u8))
            .ok_or_else(|| {
                format!("invalid priority {s:?}: use 1-4 or essential, popular, standard, personal")
            })
    }
}

impl<'de> Deserialize<'de> for Priority {
    /// A name (`standard`) or a number (`3`), as in config files.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u8),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Priority::from_u8(n)
                .ok_or_else(|| serde::de::Error::custom(format!("priority {n} is not 1-4"))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Priority {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

/// Who may read an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone; may leave the mesh through a gateway.
    Public,
    /// Only clients on the mesh's own networks.
    Community,
    /// Never replicated; only through the origin's control socket.
    Private,
}

impl Access {
    /// The stored number.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Public => 0,
            Self::Community => 1,
            Self::Private => 2,
        }
    }

    /// From the stored number.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Public,
            1 => Self::Community,
            2 => Self::Private,
            _ => return None,
        })
    }

    /// The lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Community => "community",
            Self::Private => "private",
        }
    }
}

impl FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "public" => Ok(Self::Public),
            "community" => Ok(Self::Community),
            "private" => Ok(Self::Private),
            _ => Err(format!(
                "invalid access level {s:?}: use public, community or private"
            )),
        }
    }
}

/// Most tags one entry may carry.
pub const MAX_TAGS: usize = 16;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 32;

/// Checks one tag: 1–32 characters of letters, digits, `-`, `_`, `.`, `:`.
pub fn validate_tag(t: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    if t.is_empty() || t.len() > MAX_TAG_LEN || !t.chars().all(ok_char) {
        return Err(format!(
            "invalid tag {t:?}: 1-32 of letters, digits, '-', '_', '.', ':'"
        ));
    }
    Ok(())
}

/// One catalog row: everything the mesh knows about one URL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Canonical `http://<callsign>.radio/<path>`.
    pub url: String,
    /// SHA-256 of the content.
    pub hash: ContentHash,
    /// Bytes.
    pub size: u64,
    /// MIME type served as `Content-Type`.
    pub content_type: String,
    /// Per-origin counter for this URL; higher wins. Never a clock.
    pub version: u64,
    /// Origin's wall clock at publish (Unix ms); only a bounded tiebreak.
    pub timestamp_ms: i64,
    /// Replication priority.
    pub priority: Priority,
    /// Who may read it.
    pub access: Access,
    /// Free-form labels for search.
    pub tags: Vec<String>,
    /// Node that published this version (hex node id).
    pub origin: String,
    /// Pinned entries are never evicted.
    pub pinned: bool,
    /// Reads served since it entered this store.
    pub access_count: u64,
    /// True when its blob failed an integrity check and was quarantined: listed, never served.
    pub quarantined: bool,
}

/// Guesses a MIME type from the path's extension.
pub fn guess_content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|f| f.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        Some("woff2") => "font/woff2",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        Some("mp4") => "video/mp4",
        Some("zip") => "application/zip",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_by_number_and_name() {
        assert_eq!("1".parse::<Priority>().unwrap(), Priority::Essential);
        assert_eq!("Popular".parse::<Priority>().unwrap(), Priority::Popular);
        assert!("5".parse::<Priority>().is_err());
        assert!("urgent".parse::<Priority>().unwrap_err().contains("1-4"));
        for n in 1..=4 {
            assert_eq!(Priority::from_u8(n).unwrap() as u8, n);
        }
    }

    #[test]
    fn access_levels_round_trip() {
        for a in [Access::Public, Access::Community, Access::Private] {
            assert_eq!(Access::from_u8(a.to_u8()), Some(a));
            assert_eq!(a.name().parse::<Access>().unwrap(), a);
        }
    }

    #[test]
    fn tags_and_types() {
        assert!(validate_tag("weather:today").is_ok());
        assert!(validate_tag("no spaces").is_err());
        assert!(validate_tag("").is_err());
        assert_eq!(guess_content_type("/a/b.HTML"), "text/html; charset=utf-8");
        assert_eq!(guess_content_type("/a.b/noext"), "application/octet-stream");
        assert_eq!(
            ContentHash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
