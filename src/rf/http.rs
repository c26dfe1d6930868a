//! HTTP over RF: the content request and its answer, as they travel in
//! [`super::msg::Kind::HttpReq`] and [`super::msg::Kind::HttpResp`]
//! messages (pure).
//!
//! A request names the content URL, the node that holds it (the first 8
//! bytes of its key: the station's beacon carries them), the hops it may
//! still take and its request id (the loop rule of the IP mesh: a station
//! relays a request id once, and never beyond [`crate::mesh::client::CONTENT_HOPS`]
//! hops), and the byte range wanted: content travels in chunks that fit
//! one message, each asked for when the last has arrived. The answer
//! carries the status, the content type, the content's whole size and the
//! chunk. Both are postcard, bounded on decoding.

use serde::{Deserialize, Serialize};

/// Longest URL a request carries.
pub const MAX_URL: usize = 2048;
/// Longest content type an answer carries.
pub const MAX_TYPE: usize = 255;

/// A content request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentReq {
    /// The content URL (`http://<callsign>.radio/...`).
    pub url: String,
    /// The holder: the first 8 bytes of its node key.
    pub target: [u8; 8],
    /// Hops it may still take (0: none; the holder must be the receiver).
    pub hops_left: u8,
    /// The same on every hop: a station relays each id once.
    pub request_id: u64,
    /// First byte wanted.
    pub start: u64,
    /// Most bytes wanted.
    pub max: u32,
}

/// The answer to a [`ContentReq`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentAns {
    /// HTTP status: 200 with a chunk; 404 not here or not reachable; 508 a
    /// loop or the hop limit; 503 the holder could not read it.
    pub status: u16,
    /// The content's type (empty unless 200).
    pub content_type: String,
    /// The content's whole size.
    pub total: u64,
    /// The bytes from the request's `start` (at most its `max`); for an
    /// error, a short reason in text.
    pub body: Vec<u8>,
}

/// A request or answer that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not postcard of the type, or bytes left over.
    #[error("malformed RF content message: {0}")]
    Malformed(String),
    /// A field beyond its bound.
    #[error("RF content message field too long: {0}")]
    TooLong(&'static str),
}

impl ContentReq {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("a request serializes")
    }

    /// Reads the wire form.
    pub fn decode(b: &[u8]) -> Result<ContentReq, HttpError> {
        let (r, rest): (ContentReq, _) =
            postcard::take_from_bytes(b).map_err(|e| HttpError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(HttpError::Malformed("trailing bytes".into()));
        }
        if r.url.len() > MAX_URL {
            return Err(HttpError::TooLong("url"));
        }
        Ok(r)
    }
}

impl ContentAns {
    /// An error answer with `reason`.
    pub fn error(status: u16, reason: &str) -> ContentAns {
        ContentAns {
            status,
            content_type: String::new(),
            total: 0,
            body: reason.as_bytes().to_vec(),
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("an answer serializes")
    }

    /// Reads the wire form.
    pub fn decode(b: &[u8]) -> Result<ContentAns, HttpError> {
        let (a, rest): (ContentAns, _) =
            postcard::take_from_bytes(b).map_err(|e| HttpError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(HttpError::Malformed("trailing bytes".into()));
        }
        if a.content_type.len() > MAX_TYPE {
            return Err(HttpError::TooLong("content_type"));
        }
        Ok(a)
    }

    /// Bytes of an answer around a chunk of `body` bytes, at most (for
    /// sizing chunks to a message).
    pub const OVERHEAD: usize = 2 * 3 + MAX_TYPE + 3 + 10 + 5;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_and_answers_round_trip() {
        let r = ContentReq {
            url: "http://n0call.radio/a.html".into(),
            target: [1, 2, 3, 4, 5, 6, 7, 8],
            hops_left: 3,
            request_id: 0xdead_beef,
            start: 4096,
            max: 8000,
        };
        assert_eq!(ContentReq::decode(&r.encode()), Ok(r.clone()));
        let a = ContentAns {
            status: 200,
            content_type: "text/html".into(),
            total: 10_000,
            body: vec![7; 300],
        };
        let wire = a.encode();
        assert!(wire.len() <= 300 + ContentAns::OVERHEAD);
        assert_eq!(ContentAns::decode(&wire), Ok(a));
        let mut long = r.encode();
        long.push(0);
        assert!(ContentReq::decode(&long).is_err(), "trailing bytes");
        let too_long = ContentReq {
            url: "x".repeat(MAX_URL + 1),
            ..r
        };
        assert_eq!(
            ContentReq::decode(&too_long.encode()),
            Err(HttpError::TooLong("url"))
        );
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ContentReq::decode(&b);
            let _ = ContentAns::decode(&b);
        }
    }
}
