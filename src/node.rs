//! Shared domain types for a node's identity: callsign, label, node name and node id.
//!
//! Pure: no I/O. Key files are read and written by [`crate::identity`].
//! Names follow AREDN's `CALLSIGN-label` convention (shared/DESIGN.md, "Names").

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The longest base callsign that fits an AX.25 address field (6 characters).
pub const CALLSIGN_MAX: usize = 6;
/// The longest node label; keeps `CALLSIGN-label` usable as a DNS label (63).
pub const LABEL_MAX: usize = 32;

/// Why a callsign or label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The callsign broke one of the rules; the text says which.
    #[error("invalid callsign {0:?}: {1}")]
    Callsign(String, &'static str),
    /// The label broke one of the rules; the text says which.
    #[error("invalid label {0:?}: {1}")]
    Label(String, &'static str),
}

/// A base amateur-radio callsign (no SSID), stored upper-case, e.g. `N0CALL`.
///
/// Invariant: 3..=6 ASCII letters and digits, at least one digit, at least one
/// letter, ending in a letter. Lower-case input is accepted and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Callsign(String);

impl Callsign {
    /// Validates and normalises `s`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = |why| Err(NameError::Callsign(s.to_string(), why));
        if s.contains('-') {
            return bad("no SSID here: the RF SSID is configured with the radio");
        }
        if s.len() < 3 || s.len() > CALLSIGN_MAX {
            return bad("must be 3 to 6 characters (the AX.25 address field holds 6)");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return bad("only letters A-Z and digits 0-9");
        }
        if !s.bytes().any(|b| b.is_ascii_digit()) {
            return bad("a callsign contains a digit");
        }
        if !s.as_bytes()[s.len() - 1].is_ascii_alphabetic() {
            return bad("a callsign ends in a letter");
        }
        Ok(Self(s.to_ascii_uppercase()))
    }

    /// Upper-case form, as sent on the air.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name content of this station lives under: `n0call.radio`.
    pub fn radio_host(&self) -> String {
        format!("{}.radio", self.0.to_ascii_lowercase())
    }
}

impl fmt::Display for Callsign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Callsign {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Callsign::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The free part of a node name, e.g. `hilltop` in `N0CALL-hilltop`.
///
/// Invariant: 1..=32 characters of ASCII letters, digits and `-`, not starting
/// or ending with `-`, so the whole name is a valid DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    /// Validates `s`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bad = |why| Err(NameError::Label(s.to_string(), why));
        if s.is_empty() || s.len() > LABEL_MAX {
            return bad("must be 1 to 32 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return bad("only letters, digits and '-'");
        }
        if s.starts_with('-') || s.ends_with('-') {
            return bad("must not start or end with '-'");
        }
        Ok(Self(s.to_string()))
    }

    /// The label text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Label::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `CALLSIGN-label`, the node's human name.
pub fn node_name(callsign: &Callsign, label: &Label) -> String {
    format!("{callsign}-{label}")
}

/// A node's identity: its Ed25519 public key.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// Lower-case hex of the whole key (64 characters), as used on the wire and in the catalog.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the 64-character hex form.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// The first 8 hex digits, for logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_callsigns_are_accepted_and_normalised() {
        for cs in [
            "N0CALL", "W1AW", "DL1ABC", "2E0ABC", "9A1AA", "kh6bb", "3DA0RU",
        ] {
            let c = Callsign::parse(cs).unwrap_or_else(|e| panic!("{cs}: {e}"));
            assert_eq!(c.as_str(), cs.to_ascii_uppercase());
        }
        assert_eq!(
            Callsign::parse("n0call").unwrap().radio_host(),
            "n0call.radio"
        );
    }

    #[test]
    fn bad_callsigns_are_refused_with_a_reason() {
        for (cs, why) in [
            ("N0CALL-1", "SSID"),
            ("N0", "3 to 6"),
            ("N0CALLXX", "3 to 6"),
            ("NOCALL", "digit"),
            ("N0 CAL", "letters"),
            ("N0CAL1", "ends in a letter"),
            ("", "3 to 6"),
        ] {
            let e = Callsign::parse(cs).unwrap_err().to_string();
            assert!(e.contains(why), "{cs}: {e}");
        }
    }

    #[test]
    fn labels() {
        assert!(Label::parse("hilltop").is_ok());
        assert!(Label::parse("roof-2").is_ok());
        assert!(Label::parse("-x").is_err());
        assert!(Label::parse("a b").is_err());
        assert!(Label::parse(&"a".repeat(33)).is_err());
        let n = node_name(
            &Callsign::parse("N0CALL").unwrap(),
            &Label::parse("hilltop").unwrap(),
        );
        assert_eq!(n, "N0CALL-hilltop");
    }

    #[test]
    fn node_id_hex_round_trip() {
        let id = NodeId([0xab; 32]);
        assert_eq!(NodeId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(id.short(), "abababab");
        assert_eq!(NodeId::from_hex("zz"), None);
    }
}
