//! Gossip messages on the wire: one signed message per UDP datagram.
//!
//! Pure functions over bytes. Layout of a datagram (docs/PROTOCOL.md):
//!
//! ```text
//! offset  size  field
//! 0       3     magic "MN1" (protocol version 1)
//! 3       1     hops_left: forwarding budget, decremented per hop (not signed)
//! 4       64    Ed25519 signature by `origin` over the body bytes
//! 68      ...   body: postcard encoding of [`Message`] (at most MAX_BODY bytes)
//! ```
//!
//! Decoding is two steps, as in boringtun: [`Datagram::parse`] checks sizes
//! and the magic without any crypto (cheap, for counting and dropping junk),
//! and [`Datagram::open`] decodes the body and verifies the signature. Every
//! message is signed, never encrypted (amateur-radio rules; shared/DESIGN.md).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;

/// Datagram magic and protocol version.
pub const MAGIC: &[u8; 3] = b"MN1";
/// Offset of the hop budget.
pub const HOPS_OFFSET: usize = 3;
/// Offset of the signature.
pub const SIG_OFFSET: usize = 4;
/// Offset of the body.
pub const BODY_OFFSET: usize = SIG_OFFSET + 64;
/// Largest datagram we send or accept: fits a 1280-byte IPv6 MTU with room
/// for tunnel overheads, so gossip never relies on IP fragmentation.
pub const MAX_DATAGRAM: usize = 1200;
/// Largest body.
pub const MAX_BODY: usize = MAX_DATAGRAM - BODY_OFFSET;
/// Longest node name carried.
pub const MAX_NAME: usize = 40;
/// Most addresses one peer may list.
pub const MAX_ADDRS: usize = 8;

/// Why a datagram was dropped (each is counted, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header.
    #[error("datagram too short")]
    TooShort,
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram too long")]
    TooLong,
    /// Not our protocol or not our version.
    #[error("bad magic or version")]
    BadMagic,
    /// The body does not decode as a message.
    #[error("malformed body")]
    Malformed,
    /// A field is out of its bounds (name, address list, ...).
    #[error("field out of bounds")]
    OutOfBounds,
    /// The signature does not verify against the claimed origin.
    #[error("bad signature")]
    BadSignature,
}

/// What a node tells others about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Identity (public key).
    pub node: NodeId,
    /// `CALLSIGN-label`.
    pub name: String,
    /// HTTP listeners, only when the node broadcasts (`broadcast = true`);
    /// empty for a silent node, whose address never leaves its own link.
    pub addrs: Vec<SocketAddr>,
    /// Serves the bootstrap API.
    pub is_bootstrap: bool,
}

/// The body of every gossip datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote and signed it.
    pub origin: NodeId,
    /// Per-origin counter: higher is newer; (origin, seq) is unique.
    pub seq: u64,
    /// Origin's clock (Unix ms), only to drop messages far in the future.
    pub sent_ms: i64,
    /// What it says.
    pub kind: Kind,
}

/// The message types of the peer-discovery design (seeds/004) plus catalog changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// First words on a new link: who I am.
    Hello(PeerInfo),
    /// A node announces itself to the mesh.
    PeerAnnouncement(PeerInfo),
    /// Asks a neighbour for up to `max` peers it knows.
    PeerRequest {
        /// Most peers wanted.
        max: u16,
    },
    /// Answer to a request: peers (addresses only of broadcasting ones).
    PeerListResponse(Vec<PeerInfo>),
    /// "Still here", with a summary of the catalog for cheap change detection.
    Heartbeat {
        /// Entries in the origin's catalog.
        catalog_len: u32,
        /// XOR fingerprint of the catalog's record ids (see sync::recon).
        catalog_xor: u64,
    },
    /// A node's info changed.
    PeerUpdate(PeerInfo),
    /// Catalog records changed at the origin (ids; records travel over HTTP).
    CatalogChange {
        /// Record ids (SHA-256 of the signed record).
        ids: Vec<[u8; 32]>,
    },
    /// Requests the origin's clients made for popular items (cumulative
    /// counts by record short id); summed across the mesh, they decide when
    /// a popular item is copied.
    Demand {
        /// (record short id, requests at the origin so far).
        counts: Vec<([u8; 8], u32)>,
    },
    /// Link probe to a neighbour (one hop); answered with [`Kind::Pong`].
    Ping {
        /// Echoed back.
        nonce: u32,
    },
    /// Answer to a [`Kind::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u32,
    },
    /// The origin's links as it measures them and its network mode: the
    /// topology map and request routing are built from these.
    LinkState {
        /// 0 online, 1 mesh-only, 2 rf-only (see `crate::connectivity::Mode`).
        mode: u8,
        /// One entry per neighbour.
        links: Vec<WireLink>,
    },
}

/// One measured link in a [`Kind::LinkState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLink {
    /// The neighbour.
    pub node: NodeId,
    /// 0 LAN (same subnet), 1 WAN (routed), 2 RF.
    pub kind: u8,
    /// Smoothed round-trip time in microseconds.
    pub rtt_us: u32,
    /// Probes lost recently, per mille.
    pub loss_permille: u16,
}

/// Most links one [`Kind::LinkState`] carries (each about 40 bytes).
pub const MAX_LINKS: usize = 24;

impl Message {
    /// Its id for deduplication: the first 16 bytes of SHA-256(body).
    pub fn id_of(body: &[u8]) -> [u8; 16] {
        use sha2::Digest;
        let h: [u8; 32] = sha2::Sha256::digest(body).into();
        h[..16].try_into().expect("16 of 32 bytes")
    }

    fn check_bounds(&self) -> Result<(), WireError> {
        let ok = |p: &PeerInfo| p.name.len() <= MAX_NAME && p.addrs.len() <= MAX_ADDRS;
        let fine = match &self.kind {
            Kind::Hello(p) | Kind::PeerAnnouncement(p) | Kind::PeerUpdate(p) => ok(p),
            Kind::PeerListResponse(v) => v.iter().all(ok),
            _ => true,
        };
        if fine {
            Ok(())
        } else {
            Err(WireError::OutOfBounds)
        }
    }

    /// Encodes and signs; `None` if the body would exceed [`MAX_BODY`].
    pub fn seal(&self, hops: u8, sign: impl FnOnce(&[u8]) -> [u8; 64]) -> Option<Vec<u8>> {
        let body = postcard::to_stdvec(self).expect("messages always serialise");
        if body.len() > MAX_BODY {
            return None;
        }
        let sig = sign(&body);
        let mut out = Vec::with_capacity(BODY_OFFSET + body.len());
        out.extend_from_slice(MAGIC);
        out.push(hops);
        out.extend_from_slice(&sig);
        out.extend_from_slice(&body);
        Some(out)
    }
}

/// A datagram whose framing checked out; not yet verified.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Forwarding budget left.
    pub hops_left: u8,
    sig: [u8; 64],
    /// The signed body.
    pub body: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Checks framing only (no allocation, no crypto).
    pub fn parse(b: &'a [u8]) -> Result<Self, WireError> {
        if b.len() > MAX_DATAGRAM {
            return Err(WireError::TooLong);
        }
        if b.len() < BODY_OFFSET + 1 {
            return Err(WireError::TooShort);
        }
        if &b[..3] != MAGIC {
            return Err(WireError::BadMagic);
        }
        Ok(Self {
            hops_left: b[HOPS_OFFSET],
            sig: b[SIG_OFFSET..BODY_OFFSET]
                .try_into()
                .expect("64 bytes by the offsets"),
            body: &b[BODY_OFFSET..],
        })
    }

    /// Decodes the body and verifies the origin's Ed25519 signature.
    pub fn open(&self) -> Result<Message, WireError> {
        self.open_with(crate::identity::verify)
    }

    /// [`Datagram::open`] with another signature check (the simulator's).
    pub fn open_with(
        &self,
        verify: impl Fn(&NodeId, &[u8], &[u8; 64]) -> bool,
    ) -> Result<Message, WireError> {
        let m: Message = postcard::from_bytes(self.body).map_err(|_| WireError::Malformed)?;
        m.check_bounds()?;
        if !verify(&m.origin, self.body, &self.sig) {
            return Err(WireError::BadSignature);
        }
        Ok(m)
    }

    /// The same datagram with one hop fewer, for forwarding (bytes untouched
    /// otherwise, so the signature still holds).
    pub fn forwarded(raw: &[u8]) -> Option<Vec<u8>> {
        let mut v = raw.to_vec();
        let h = v.get_mut(HOPS_OFFSET)?;
        *h = h.checked_sub(1)?;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn key() -> Identity {
        Identity::load_or_create(tempfile::tempdir().unwrap().path()).unwrap()
    }

    fn info(id: &Identity) -> PeerInfo {
        PeerInfo {
            node: id.node_id(),
            name: "N0CALL-hill".into(),
            addrs: vec!["192.0.2.1:8080".parse().unwrap()],
            is_bootstrap: true,
        }
    }

    #[test]
    fn seal_parse_open_round_trip_and_forwarding() {
        let k = key();
        for kind in [
            Kind::Hello(info(&k)),
            Kind::PeerRequest { max: 20 },
            Kind::PeerListResponse(vec![info(&k), info(&k)]),
            Kind::Heartbeat {
                catalog_len: 10_000,
                catalog_xor: 0xdead_beef,
            },
            Kind::CatalogChange {
                ids: vec![[7; 32]; 3],
            },
            Kind::Demand {
                counts: vec![([1; 8], 12)],
            },
            Kind::PeerAnnouncement(info(&k)),
            Kind::PeerUpdate(info(&k)),
        ] {
            let m = Message {
                origin: k.node_id(),
                seq: 42,
                sent_ms: 1_700_000_000_000,
                kind,
            };
            let raw = m.seal(5, |b| k.sign(b)).unwrap();
            let d = Datagram::parse(&raw).unwrap();
            assert_eq!(d.hops_left, 5);
            assert_eq!(d.open().unwrap(), m);
            let fwd = Datagram::forwarded(&raw).unwrap();
            assert_eq!(Datagram::parse(&fwd).unwrap().hops_left, 4);
            assert_eq!(
                Datagram::parse(&fwd).unwrap().open().unwrap(),
                m,
                "hop count is outside the signature"
            );
        }
        let zero = Message {
            origin: k.node_id(),
            seq: 1,
            sent_ms: 0,
            kind: Kind::PeerRequest { max: 1 },
        }
        .seal(0, |b| k.sign(b))
        .unwrap();
        assert!(
            Datagram::forwarded(&zero).is_none(),
            "no hops left: not forwarded"
        );
    }

    /// Golden bytes: the framing of docs/PROTOCOL.md, byte by byte.
    #[test]
    fn golden_heartbeat() {
        let m = Message {
            origin: NodeId([0x11; 32]),
            seq: 300,
            sent_ms: 5,
            kind: Kind::Heartbeat {
                catalog_len: 2,
                catalog_xor: 1,
            },
        };
        let raw = m.seal(3, |_| [0xaa; 64]).unwrap();
        let mut want = b"MN1".to_vec(); // magic + version
        want.push(3); // hops_left
        want.extend([0xaa; 64]); // signature
        want.extend([0x11; 32]); // origin: 32 raw bytes (postcard fixed array)
        want.extend([0xac, 0x02]); // seq 300 as varint
        want.push(0x0a); // sent_ms 5, zigzag varint
        want.push(4); // Kind::Heartbeat = variant 4
        want.push(2); // catalog_len varint
        want.push(1); // catalog_xor varint
        assert_eq!(raw, want);
    }

    #[test]
    fn junk_is_refused_with_the_right_reason() {
        let k = key();
        let m = Message {
            origin: k.node_id(),
            seq: 1,
            sent_ms: 0,
            kind: Kind::PeerRequest { max: 1 },
        };
        let raw = m.seal(1, |b| k.sign(b)).unwrap();
        assert_eq!(
            Datagram::parse(&raw[..10]).unwrap_err(),
            WireError::TooShort
        );
        assert_eq!(
            Datagram::parse(&[0u8; 2000]).unwrap_err(),
            WireError::TooLong
        );
        let mut bad = raw.clone();
        bad[0] = b'X';
        assert_eq!(Datagram::parse(&bad).unwrap_err(), WireError::BadMagic);
        let mut forged = raw.clone();
        *forged.last_mut().unwrap() ^= 1; // body changed after signing
        assert!(matches!(
            Datagram::parse(&forged).unwrap().open(),
            Err(WireError::BadSignature | WireError::Malformed)
        ));
        let other = key();
        let stolen = Message {
            origin: other.node_id(),
            ..m.clone()
        }
        .seal(1, |b| k.sign(b))
        .unwrap();
        assert_eq!(
            Datagram::parse(&stolen).unwrap().open().unwrap_err(),
            WireError::BadSignature
        );
        let long_name = Message {
            kind: Kind::Hello(PeerInfo {
                name: "x".repeat(41),
                ..info(&k)
            }),
            ..m
        };
        let raw = long_name.seal(1, |b| k.sign(b)).unwrap();
        assert_eq!(
            Datagram::parse(&raw).unwrap().open().unwrap_err(),
            WireError::OutOfBounds
        );
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decoding_junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(d) = Datagram::parse(&bytes) {
                let _ = d.open();
            }
        }

        /// Framed junk (right magic) also never panics and never verifies.
        #[test]
        fn framed_junk_never_verifies(body in proptest::collection::vec(any::<u8>(), 1..400), hops in any::<u8>()) {
            let mut raw = MAGIC.to_vec();
            raw.push(hops);
            raw.extend([0u8; 64]);
            raw.extend(body);
            let d = Datagram::parse(&raw).unwrap();
            prop_assert!(d.open().is_err());
        }
    }
}
