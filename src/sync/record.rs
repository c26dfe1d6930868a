//! Signed catalog records: what the mesh knows about one version of one URL.
//!
//! A record is written and signed by its origin and then travels unchanged:
//! any node may pass it on, every node checks the origin's signature, and its
//! id (the SHA-256 of the signed body) is the item that set reconciliation
//! ([`super::recon`]) compares. A record without content is a deletion
//! (tombstone), so removals spread like publications. `private` content never
//! gets a record: it never leaves its origin.
//!
//! Wire form (docs/PROTOCOL.md "Catalog records"): `u16 body length (BE) ||
//! body (postcard of [`Record`]) || Ed25519 signature (64 bytes) over body`.

use serde::{Deserialize, Serialize};

use crate::catalog::{Access, ContentHash, ContentUrl, Priority};
use crate::node::NodeId;

use super::recon::Id;

/// Largest record body accepted (a URL of 2 KiB plus tags fits easily).
pub const MAX_BODY: usize = 4096;

/// What a record says. Field order is the wire order (postcard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Publishing node; signs the record.
    pub origin: NodeId,
    /// Canonical `http://<callsign>.radio/<path>`.
    pub url: String,
    /// Version of this URL; higher wins (see [`super::catalog`]).
    pub version: u64,
    /// Origin's clock at publish (Unix ms): a bounded tiebreak only.
    pub published_ms: i64,
    /// The content, or `None` for a deletion.
    pub content: Option<Content>,
}

/// The content a record points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// SHA-256 of the whole content.
    pub hash: [u8; 32],
    /// Bytes.
    pub size: u64,
    /// SHA-256 over the concatenated chunk hashes (the manifest) when the
    /// content has more than one chunk; lets a node check a manifest fetched
    /// from any peer before trusting its chunk hashes.
    pub manifest_root: Option<[u8; 32]>,
    /// MIME type.
    pub content_type: String,
    /// 1 essential, 2 popular, 3 standard, 4 personal.
    pub priority: u8,
    /// 0 public, 1 community (private never has a record).
    pub access: u8,
    /// Search labels.
    pub tags: Vec<String>,
    /// For content the proxy fetched from the internet: its freshness.
    pub fetched: Option<Fetched>,
}

/// When and how external content was fetched: what the origin server's cache
/// headers said (RFC 9111), so every node can tell fresh from stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fetched {
    /// Unix ms of the fetch (or of the last revalidation).
    pub at_ms: i64,
    /// Unix ms after which it is stale (from max-age, Expires, or the
    /// default freshness); `at_ms` for `no-cache`.
    pub fresh_until_ms: i64,
    /// The origin's `ETag`, for revalidation.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`, for revalidation.
    pub last_modified: Option<String>,
}

/// A record that failed to decode or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its length prefix says, or trailing bytes.
    #[error("bad record framing")]
    Framing,
    /// Body longer than [`MAX_BODY`].
    #[error("record too large")]
    TooLarge,
    /// The body is not a valid record.
    #[error("bad record body: {0}")]
    Body(String),
    /// Signature does not match the origin.
    #[error("bad record signature")]
    BadSignature,
}

/// A decoded, verified record with its signature. The wire form is not
/// kept: the body is canonical postcard, so [`Signed::wire`] rebuilds the
/// exact bytes (and thousands of records cost less RAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// SHA-256 of the body.
    pub id: Id,
    /// The record.
    pub record: Record,
    /// The origin's signature over the body.
    pub sig: [u8; 64],
}

impl Signed {
    /// The wire form: length prefix, body, signature.
    pub fn wire(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(&self.record).expect("records always serialize");
        let mut wire = Vec::with_capacity(2 + body.len() + 64);
        wire.extend_from_slice(&(body.len() as u16).to_be_bytes());
        wire.extend_from_slice(&body);
        wire.extend_from_slice(&self.sig);
        wire
    }
}

impl Record {
    /// Signs the record with the origin's key.
    pub fn sign(self, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Signed {
        let body = postcard::to_stdvec(&self).expect("records always serialize");
        assert!(body.len() <= MAX_BODY, "caller keeps records small");
        let sig = sign(&body);
        Signed {
            id: id_of(&body),
            record: self,
            sig,
        }
    }

    /// The content's priority, if any.
    pub fn priority(&self) -> Option<Priority> {
        self.content
            .as_ref()
            .and_then(|c| Priority::from_u8(c.priority))
    }

    /// The content's access level, if any.
    pub fn access(&self) -> Option<Access> {
        self.content
            .as_ref()
            .and_then(|c| Access::from_u8(c.access))
    }
}

fn id_of(body: &[u8]) -> Id {
    use sha2::Digest;
    sha2::Sha256::digest(body).into()
}

/// Splits the first record off `bytes`: (record wire bytes, rest).
pub fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), RecordError> {
    if bytes.len() < 2 {
        return Err(RecordError::Framing);
    }
    let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
    if len > MAX_BODY {
        return Err(RecordError::TooLarge);
    }
    let total = 2 + len + 64;
    if bytes.len() < total {
        return Err(RecordError::Framing);
    }
    Ok(bytes.split_at(total))
}

/// Decodes one record (exactly `wire`) and checks its signature and fields.
pub fn open(
    wire: &[u8],
    verify: impl FnOnce(&NodeId, &[u8], &[u8; 64]) -> bool,
) -> Result<Signed, RecordError> {
    let (one, rest) = split(wire)?;
    if !rest.is_empty() {
        return Err(RecordError::Framing);
    }
    let body = &one[2..one.len() - 64];
    let sig: [u8; 64] = one[one.len() - 64..].try_into().expect("64 bytes");
    let record: Record =
        postcard::from_bytes(body).map_err(|e| RecordError::Body(e.to_string()))?;
    // canonical form only: re-encoding must give the same bytes, so one
    // record has exactly one id
    if postcard::to_stdvec(&record).ok().as_deref() != Some(body) {
        return Err(RecordError::Body("not in canonical form".into()));
    }
    check_fields(&record).map_err(RecordError::Body)?;
    if !verify(&record.origin, body, &sig) {
        return Err(RecordError::BadSignature);
    }
    Ok(Signed {
        id: id_of(body),
        record,
        sig,
    })
}

fn check_fields(r: &Record) -> Result<(), String> {
    let url = ContentUrl::parse(&r.url).map_err(|e| format!("url: {e}"))?;
    if url.to_string() != r.url {
        return Err(format!("url {:?} is not canonical", r.url));
    }
    if let Some(c) = &r.content {
        if Priority::from_u8(c.priority).is_none() {
            return Err(format!("priority {} out of range", c.priority));
        }
        match Access::from_u8(c.access) {
            Some(Access::Public | Access::Community) => {}
            _ => return Err(format!("access {} not shareable", c.access)),
        }
        if c.content_type.is_empty() || c.content_type.len() > 255 {
            return Err("bad content type".into());
        }
        if let Some(f) = &c.fetched {
            let long = |v: &Option<String>| v.as_ref().is_some_and(|v| v.len() > 256);
            if long(&f.etag) || long(&f.last_modified) {
                return Err("validator longer than 256 bytes".into());
            }
        }
        let chunks = c.size.div_ceil(crate::cache::blobs::CHUNK_SIZE);
        if (chunks > 1) != c.manifest_root.is_some() {
            return Err("manifest root must be present exactly for multi-chunk content".into());
        }
    }
    Ok(())
}

/// The manifest root of a list of chunk hashes.
pub fn manifest_root(chunks: &[ContentHash]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in chunks {
        h.update(c.0);
    }
    h.finalize().into()
}

/// Decodes a concatenation of records; bad ones are skipped and counted.
pub fn open_many(
    mut bytes: &[u8],
    verify: impl Fn(&NodeId, &[u8], &[u8; 64]) -> bool,
) -> (Vec<Signed>, usize) {
    let mut ok = Vec::new();
    let mut bad = 0;
    while !bytes.is_empty() {
        match split(bytes) {
            Ok((one, rest)) => {
                match open(one, &verify) {
                    Ok(s) => ok.push(s),
                    Err(_) => bad += 1,
                }
                bytes = rest;
            }
            Err(_) => {
                bad += 1; // framing lost: the rest is unreadable
                break;
            }
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::proto::Crypto;
    use crate::gossip::sim::HashCrypto;
    use proptest::prelude::*;

    pub(crate) fn sample(origin: u8, path: &str, version: u64) -> Record {
        Record {
            origin: NodeId([origin; 32]),
            url: format!("http://n0call.radio{path}"),
            version,
            published_ms: 1_700_000_000_000,
            content: Some(Content {
                hash: [version as u8; 32],
                size: 10,
                manifest_root: None,
                content_type: "text/plain".into(),
                priority: 1,
                access: 0,
                tags: vec!["x".into()],
                fetched: None,
            }),
        }
    }

    fn verify(o: &NodeId, b: &[u8], s: &[u8; 64]) -> bool {
        HashCrypto(*o).verify(o, b, s)
    }

    #[test]
    fn round_trip_and_tamper() {
        let c = HashCrypto(NodeId([1; 32]));
        let s = sample(1, "/a", 3).sign(|b| c.sign(b));
        let back = open(&s.wire(), verify).unwrap();
        assert_eq!(back, s);
        let mut bad = s.wire();
        bad[10] ^= 1;
        assert!(open(&bad, verify).is_err());
        let mut forged = sample(2, "/a", 3);
        forged.origin = NodeId([1; 32]);
        let f = forged.sign(|b| HashCrypto(NodeId([2; 32])).sign(b));
        assert_eq!(open(&f.wire(), verify), Err(RecordError::BadSignature));
    }

    #[test]
    fn rejects_bad_fields() {
        let c = HashCrypto(NodeId([1; 32]));
        let mut r = sample(1, "/a", 1);
        r.url = "http://n0call.radio/a/../b".into();
        assert!(matches!(
            open(&r.sign(|b| c.sign(b)).wire(), verify),
            Err(RecordError::Body(_))
        ));
        let mut r = sample(1, "/a", 1);
        r.content.as_mut().unwrap().access = 2; // private
        assert!(open(&r.sign(|b| c.sign(b)).wire(), verify).is_err());
        let mut r = sample(1, "/a", 1);
        r.content.as_mut().unwrap().size = 1 << 20; // multi-chunk without root
        assert!(open(&r.sign(|b| c.sign(b)).wire(), verify).is_err());
    }

    #[test]
    fn many_skips_bad_and_counts() {
        let c = HashCrypto(NodeId([1; 32]));
        let a = sample(1, "/a", 1).sign(|b| c.sign(b));
        let mut b = sample(1, "/b", 1).sign(|b| c.sign(b)).wire();
        let last = b.len() - 1;
        b[last] ^= 1;
        let cc = sample(1, "/c", 1).sign(|b| c.sign(b));
        let all = [a.wire(), b, cc.wire()].concat();
        let (ok, bad) = open_many(&all, verify);
        assert_eq!(ok, vec![a, cc]);
        assert_eq!(bad, 1);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = open_many(&bytes, verify);
        }

        #[test]
        fn any_record_round_trips(v in 0u64..1000, ms in any::<i64>(), path in "/[a-z]{1,20}") {
            let c = HashCrypto(NodeId([7; 32]));
            let mut r = sample(7, &path, v);
            r.published_ms = ms;
            let s = r.sign(|b| c.sign(b));
            prop_assert_eq!(open(&s.wire(), verify).unwrap(), s);
        }
    }
}
