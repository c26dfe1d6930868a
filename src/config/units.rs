//! Value types that config files spell as strings: byte sizes (`"2GiB"`) and
//! durations (`"5s"`). Each validates in `Deserialize`, so a bad value is
//! reported by the TOML parser with its file:line:column.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A number of bytes, written as `"2GiB"`, `"500MB"`, `"4096"` or a bare integer.
///
/// `K`/`M`/`G`/`T` are powers of 1000 and `Ki`/`Mi`/`Gi`/`Ti` powers of 1024, as
/// in IEC 80000-13; the trailing `B` is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "invalid size {s:?}: expected a number such as \"2GiB\""
            ));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: number too large"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "ti" | "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)",
                    unit.trim()
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"2GiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A bit rate, written as in `tc`: `"20mbit"`, `"512kbit"`, `"1gbit"` or
/// `"64000"` / a bare integer (bits per second). `k`/`m`/`g` are powers of
/// 1000; `bps` means bytes per second (`"1mbps"` = 8 Mbit/s), also as in `tc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BitRate(pub u64);

impl BitRate {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "invalid rate {s:?}: expected a number such as \"20mbit\""
            ));
        }
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: number too large"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "bit" => 1,
            "k" | "kbit" => 1_000,
            "m" | "mbit" => 1_000_000,
            "g" | "gbit" => 1_000_000_000,
            "bps" => 8,
            "kbps" => 8_000,
            "mbps" => 8_000_000,
            "gbps" => 8_000_000_000,
            _ => {
                return Err(format!(
                    "invalid rate {s:?}: unknown unit {:?} (use bit, kbit, mbit, gbit, or bps, kbps, mbps, gbps for bytes)",
                    unit.trim()
                ));
            }
        };
        match n.checked_mul(mult) {
            Some(0) => Err(format!("invalid rate {s:?}: must be above zero")),
            Some(v) => Ok(BitRate(v)),
            None => Err(format!("invalid rate {s:?}: too large")),
        }
    }

    /// Bytes per second.
    pub fn bytes_per_sec(self) -> u64 {
        self.0 / 8
    }
}

impl fmt::Display for BitRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, size) in [
            ("gbit", 1_000_000_000),
            ("mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

impl<'de> Deserialize<'de> for BitRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = BitRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"20mbit\" or a number of bits per second")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BitRate, E> {
                u64::try_from(v)
                    .ok()
                    .filter(|v| *v > 0)
                    .map(BitRate)
                    .ok_or_else(|| E::custom("a rate must be above zero"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BitRate, E> {
                (v > 0)
                    .then_some(BitRate(v))
                    .ok_or_else(|| E::custom("a rate must be above zero"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BitRate, E> {
                BitRate::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as `"500ms"`, `"5s"`, `"10m"`, `"24h"` or `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationStr(pub Duration);

impl DurationStr {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected a number and a unit, such as \"5s\"")
        })?;
        let ms = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "invalid duration {s:?}: a unit is required (ms, s, m, h, d)"
                ));
            }
            u => {
                return Err(format!(
                    "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h, d)"
                ));
            }
        };
        n.checked_mul(ms)
            .map(|ms| DurationStr(Duration::from_millis(ms)))
            .ok_or_else(|| format!("invalid duration {s:?}: too large"))
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DurationStr::parse(&s).map_err(de::Error::custom)
    }
}

/// A DiffServ code point (0..=63), written as a number or by its name:
/// `"EF"` (46), `"VA"` (44, voice admit), `"CS0"`..`"CS7"`, `"AF11"`..`"AF43"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dscp(pub u8);

impl Dscp {
    /// Expedited forwarding (RFC 3246): voice and other traffic that must
    /// not wait.
    pub const EF: Dscp = Dscp(46);

    /// Parses a name or a number.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_uppercase();
        let bad = || {
            format!(
                "invalid DSCP {s:?}: expected 0..=63 or a name such as \"EF\", \"CS6\", \"AF41\""
            )
        };
        let v = match t.as_str() {
            "EF" => 46,
            "VA" => 44,
            _ if t.starts_with("CS") => match t[2..].parse::<u8>() {
                Ok(n @ 0..=7) => n << 3,
                _ => return Err(bad()),
            },
            _ if t.starts_with("AF") => match &t.as_bytes()[2..] {
                [c @ b'1'..=b'4', d @ b'1'..=b'3'] => ((c - b'0') << 3) | ((d - b'0') << 1),
                _ => return Err(bad()),
            },
            _ => match t.parse::<u8>() {
                Ok(n @ 0..=63) => n,
                _ => return Err(bad()),
            },
        };
        Ok(Dscp(v))
    }
}

impl fmt::Display for Dscp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            46 => f.write_str("EF"),
            44 => f.write_str("VA"),
            v if v & 7 == 0 => write!(f, "CS{}", v >> 3),
            v if (1..=4).contains(&(v >> 3)) && v & 1 == 0 && (1..=3).contains(&((v & 7) >> 1)) => {
                write!(f, "AF{}{}", v >> 3, (v & 7) >> 1)
            }
            v => write!(f, "{v}"),
        }
    }
}

impl<'de> Deserialize<'de> for Dscp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dscp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a DSCP such as \"EF\" or a number 0..=63")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dscp, E> {
                Dscp::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dscp, E> {
                Dscp::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dscp, E> {
                Dscp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("2GiB").unwrap().0, 2 << 30);
        assert_eq!(ByteSize::parse("500MB").unwrap().0, 500_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("8 MiB").unwrap().0, 8 << 20);
        assert!(ByteSize::parse("2XB").unwrap_err().contains("unknown unit"));
        assert!(ByteSize::parse("GiB").is_err());
        assert!(
            ByteSize::parse("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn rates() {
        assert_eq!(BitRate::parse("20mbit"), Ok(BitRate(20_000_000)));
        assert_eq!(BitRate::parse("512kbit"), Ok(BitRate(512_000)));
        assert_eq!(BitRate::parse("1mbps"), Ok(BitRate(8_000_000)));
        assert_eq!(BitRate::parse("64000"), Ok(BitRate(64_000)));
        assert_eq!(BitRate(50_000_000).to_string(), "50mbit");
        assert_eq!(BitRate(20_000_000).bytes_per_sec(), 2_500_000);
        assert!(BitRate::parse("0mbit").unwrap_err().contains("above zero"));
        assert!(BitRate::parse("20mb").unwrap_err().contains("unknown unit"));
        assert!(BitRate::parse("fast").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(DurationStr::parse("5s").unwrap().0, Duration::from_secs(5));
        assert_eq!(
            DurationStr::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            DurationStr::parse("24h").unwrap().0,
            Duration::from_secs(86_400)
        );
        assert!(
            DurationStr::parse("5")
                .unwrap_err()
                .contains("unit is required")
        );
        assert!(
            DurationStr::parse("5y")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn dscp_names_and_numbers() {
        for (text, v) in [
            ("EF", 46),
            ("ef", 46),
            ("VA", 44),
            ("CS0", 0),
            ("CS6", 48),
            ("AF11", 10),
            ("AF43", 38),
            ("63", 63),
            ("0", 0),
        ] {
            assert_eq!(Dscp::parse(text), Ok(Dscp(v)), "{text}");
        }
        for bad in ["64", "CS8", "AF44", "AF51", "X", "", "-1"] {
            assert!(
                Dscp::parse(bad).unwrap_err().contains("invalid DSCP"),
                "{bad}"
            );
        }
        for v in 0..64 {
            assert_eq!(Dscp::parse(&Dscp(v).to_string()), Ok(Dscp(v)));
        }
    }
}
