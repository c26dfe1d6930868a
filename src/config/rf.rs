//! `[rf]`: packet radio (issue #5). The values validate themselves while
//! deserialising, so every mistake comes back as `file:line:column`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use super::{BitRate, DurationStr, Fraction};
pub use crate::rf::tnc::TncAddr;

/// NFR-002: synchronisation may use at most this share of a link's
/// capacity; on RF, of the channel's airtime.
pub const MAX_AIRTIME_BUDGET: f64 = 0.10;
/// The legal ceiling of the identification interval (e.g. FCC §97.119(a):
/// "at the end of each communication, and at least every 10 minutes during
/// a communication"; CEPT licences say the same or less often).
pub const MAX_ID_INTERVAL: Duration = Duration::from_secs(600);
/// Most info bytes per frame: the AX.25 default N1, which every TNC and
/// digipeater accepts ([`crate::rf::ax25::MAX_INFO`]).
pub const MAX_PACLEN: usize = crate::rf::ax25::MAX_INFO;

/// `[rf]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfConfig {
    /// Run the radio link. Off by default: only a licensed operator with a
    /// TNC turns it on.
    #[serde(default)]
    pub enabled: bool,
    /// Where the TNC is (see [`TncAddr`]).
    #[serde(default)]
    pub tnc: TncAddrValue,
    /// The channel's bit rate (1200 for AFSK on 2 m, 9600 for G3RUH). Only
    /// airtime accounting uses it; the modem's speed is the TNC's setting.
    #[serde(default = "default_bitrate")]
    pub bitrate: BitRate,
    /// SSID of this station: frames go out as `CALLSIGN-SSID` (SSID 0 is the
    /// bare callsign). 0 by default; pick another when a different station
    /// of yours uses the bare callsign on the same channel.
    #[serde(default)]
    pub ssid: Ssid,
    /// Share of the channel's airtime that background traffic (beacons,
    /// catalog sync, replication) may take, a hard cap: 0.05 by default,
    /// at most 0.10 (NFR-002). The identification beacon is outside it.
    #[serde(default = "default_airtime_budget")]
    pub airtime_budget: AirtimeBudget,
    /// Share of the airtime that transfers a user asked for (HTTP over RF)
    /// may take, a second cap beside `airtime_budget`. Half the channel by
    /// default: the rest stays free for other stations.
    #[serde(default = "default_request_budget")]
    pub request_budget: Fraction,
    /// Service beacons (node name, catalog summary). 10 minutes by default,
    /// the identification interval, so the ID rides in the same
    /// transmission as the beacon and costs no second TXDELAY; `"0s"`: off.
    #[serde(default = "default_beacon_interval")]
    pub beacon_interval: DurationStr,
    /// The station identifies at least this often while it transmits; 10
    /// minutes by default and at most (the legal ceiling).
    #[serde(default = "default_id_interval")]
    pub id_interval: IdInterval,
    /// Info bytes per frame: 128 by default (a 1200 bd frame then takes
    /// about a second with its preamble), at most 256.
    #[serde(default = "default_paclen")]
    pub paclen: Paclen,
    /// Preamble the TNC sends before a transmission, for airtime
    /// accounting: Direwolf's default TXDELAY (30 x 10 ms).
    #[serde(default = "default_txdelay")]
    pub txdelay: DurationStr,
    /// Flags the TNC sends after a transmission, for airtime accounting:
    /// Direwolf's default TXTAIL (10 x 10 ms).
    #[serde(default = "default_txtail")]
    pub txtail: DurationStr,
}

fn default_bitrate() -> BitRate {
    BitRate(1200)
}
fn default_airtime_budget() -> AirtimeBudget {
    AirtimeBudget(0.05)
}
fn default_request_budget() -> Fraction {
    Fraction(0.5)
}
fn default_beacon_interval() -> DurationStr {
    DurationStr(Duration::from_secs(600))
}
fn default_id_interval() -> IdInterval {
    IdInterval(MAX_ID_INTERVAL)
}
fn default_paclen() -> Paclen {
    Paclen(128)
}
fn default_txdelay() -> DurationStr {
    DurationStr(Duration::from_millis(300))
}
fn default_txtail() -> DurationStr {
    DurationStr(Duration::from_millis(100))
}

impl Default for RfConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            tnc: TncAddrValue::default(),
            bitrate: default_bitrate(),
            ssid: Ssid::default(),
            airtime_budget: default_airtime_budget(),
            request_budget: default_request_budget(),
            beacon_interval: default_beacon_interval(),
            id_interval: default_id_interval(),
            paclen: default_paclen(),
            txdelay: default_txdelay(),
            txtail: default_txtail(),
        }
    }
}

/// `[rf] tnc`: a [`TncAddr`] read from its string form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TncAddrValue(pub TncAddr);

impl<'de> Deserialize<'de> for TncAddrValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TncAddr::parse(&s)
            .map(TncAddrValue)
            .map_err(de::Error::custom)
    }
}

/// An AX.25 SSID, 0..=15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ssid(pub u8);

impl<'de> Deserialize<'de> for Ssid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        u8::try_from(v)
            .ok()
            .filter(|v| *v <= 15)
            .map(Ssid)
            .ok_or_else(|| {
                de::Error::custom(format!("ssid {v} is not 0..=15 (AX.25 has 4 bits for it)"))
            })
    }
}

/// `[rf] airtime_budget`: a fraction in (0, [`MAX_AIRTIME_BUDGET`]].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct AirtimeBudget(pub f64);

impl<'de> Deserialize<'de> for AirtimeBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_nan() || v <= 0.0 {
            return Err(de::Error::custom(format!(
                "airtime_budget {v} must be above 0 (a fraction of the airtime, e.g. 0.05)"
            )));
        }
        if v > MAX_AIRTIME_BUDGET {
            return Err(de::Error::custom(format!(
                "airtime_budget {v} is above {MAX_AIRTIME_BUDGET}: synchronisation may use at most 10% of the channel (NFR-002)"
            )));
        }
        Ok(AirtimeBudget(v))
    }
}

/// `[rf] id_interval`: above zero, at most [`MAX_ID_INTERVAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdInterval(pub Duration);

impl<'de> Deserialize<'de> for IdInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = DurationStr::deserialize(d)?.0;
        if v.is_zero() {
            return Err(de::Error::custom(
                "id_interval must be above zero (the station must identify)",
            ));
        }
        if v > MAX_ID_INTERVAL {
            return Err(de::Error::custom(format!(
                "id_interval {v:?} is longer than 10 minutes, the legal ceiling for identifying a transmitting station"
            )));
        }
        Ok(IdInterval(v))
    }
}

/// `[rf] paclen`: info bytes per frame, 1..=[`MAX_PACLEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paclen(pub usize);

impl<'de> Deserialize<'de> for Paclen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        usize::try_from(v)
            .ok()
            .filter(|v| (1..=MAX_PACLEN).contains(v))
            .map(Paclen)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "paclen {v} is not 1..={MAX_PACLEN} (longer frames are not safe with every TNC and digipeater)"
                ))
            })
    }
}
