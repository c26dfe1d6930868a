//! Where the TNC is: the `[rf] tnc` value, parsed (pure).
//!
//! | form | driver |
//! |---|---|
//! | `kiss-tcp://HOST:PORT` | KISS over TCP; Direwolf listens on `127.0.0.1:8001` by default |
//! | `kiss-serial:///dev/ttyUSB0?baud=9600` | KISS over a serial line (or a pty), raw mode at `baud` (default 9600) |
//! | `ax25:PORT` | the Linux kernel's AX.25 stack: `PORT` is a name in `/etc/ax25/axports` (e.g. attached with `kissattach`) |
//!
//! The drivers themselves are in [`super::driver`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Serial line speeds a KISS TNC is commonly set to, which termios can set.
pub const SERIAL_BAUDS: [u32; 9] = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400];
/// The speed of a `kiss-serial://` TNC when the address does not name one:
/// the usual default of hardware TNCs (TNC-Pi, Mobilinkd, NinoTNC).
pub const DEFAULT_SERIAL_BAUD: u32 = 9600;
/// Longest axports port name accepted (libax25 keeps names in short
/// fixed buffers; real ones are a few characters).
pub const MAX_PORT_NAME: usize = 32;

/// A parsed `[rf] tnc` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TncAddr {
    /// `kiss-tcp://HOST:PORT`: a KISS TNC on a TCP port (Direwolf, soundmodem,
    /// a network TNC). The host is resolved when connecting.
    KissTcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `kiss-serial://PATH?baud=N`: a KISS TNC on a serial device.
    KissSerial {
        /// Absolute path of the tty, e.g. `/dev/ttyUSB0`.
        path: PathBuf,
        /// Line speed, one of [`SERIAL_BAUDS`].
        baud: u32,
    },
    /// `ax25:PORT`: a port of the kernel's AX.25 stack, by its axports name.
    Ax25 {
        /// The axports port name, e.g. `radio`.
        port: String,
    },
}

impl Default for TncAddr {
    /// `kiss-tcp://127.0.0.1:8001`, Direwolf's default KISS port.
    fn default() -> Self {
        TncAddr::KissTcp {
            host: "127.0.0.1".into(),
            port: 8001,
        }
    }
}

impl TncAddr {
    /// Parses one of the three forms (see the module docs); the error says
    /// what is wrong in words.
    pub fn parse(s: &str) -> Result<TncAddr, String> {
        const FORMS: &str =
            "expected kiss-tcp://HOST:PORT, kiss-serial:///dev/TTY?baud=9600 or ax25:PORT";
        if let Some(rest) = s.strip_prefix("kiss-tcp://") {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("tnc {s:?}: missing :PORT ({FORMS})"))?;
            let host = match host.strip_prefix('[') {
                Some(h) => h
                    .strip_suffix(']')
                    .ok_or_else(|| format!("tnc {s:?}: unclosed [ in the host"))?,
                None => host,
            };
            if host.is_empty()
                || host
                    .chars()
                    .any(|c| c.is_whitespace() || c == '/' || c == '?' || c == '@')
            {
                return Err(format!("tnc {s:?}: missing or bad host"));
            }
            let port = match port.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("tnc {s:?}: the port must be 1-65535")),
            };
            return Ok(TncAddr::KissTcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(rest) = s.strip_prefix("kiss-serial://") {
            let (path, query) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            if !path.starts_with('/') || path.len() < 2 {
                return Err(format!(
                    "tnc {s:?}: the device must be an absolute path, as in kiss-serial:///dev/ttyUSB0"
                ));
            }
            let mut baud = DEFAULT_SERIAL_BAUD;
            for pair in query.into_iter().flat_map(|q| q.split('&')) {
                match pair.split_once('=') {
                    Some(("baud", v)) => {
                        baud = v
                            .parse::<u32>()
                            .ok()
                            .filter(|b| SERIAL_BAUDS.contains(b))
                            .ok_or_else(|| {
                                format!(
                                    "tnc {s:?}: baud {v:?} is not one of {}",
                                    SERIAL_BAUDS.map(|b| b.to_string()).join(", ")
                                )
                            })?;
                    }
                    _ => {
                        return Err(format!("tnc {s:?}: unknown option {pair:?} (only baud=N)"));
                    }
                }
            }
            return Ok(TncAddr::KissSerial {
                path: PathBuf::from(path),
                baud,
            });
        }
        if let Some(port) = s.strip_prefix("ax25:") {
            let port = port.strip_prefix("//").unwrap_or(port);
            if port.is_empty()
                || port.len() > MAX_PORT_NAME
                || !port
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(format!(
                    "tnc {s:?}: the axports port name must be 1 to {MAX_PORT_NAME} letters, digits, '-', '_' or '.'"
                ));
            }
            return Ok(TncAddr::Ax25 {
                port: port.to_string(),
            });
        }
        Err(format!("tnc {s:?}: unknown kind ({FORMS})"))
    }

    /// The driver kind: `kiss-tcp`, `kiss-serial` or `ax25`.
    pub fn kind(&self) -> &'static str {
        match self {
            TncAddr::KissTcp { .. } => "kiss-tcp",
            TncAddr::KissSerial { .. } => "kiss-serial",
            TncAddr::Ax25 { .. } => "ax25",
        }
    }
}

impl FromStr for TncAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<TncAddr, String> {
        TncAddr::parse(s)
    }
}

/// The address in the form [`TncAddr::parse`] reads.
impl fmt::Display for TncAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TncAddr::KissTcp { host, port } if host.contains(':') => {
                write!(f, "kiss-tcp://[{host}]:{port}")
            }
            TncAddr::KissTcp { host, port } => write!(f, "kiss-tcp://{host}:{port}"),
            TncAddr::KissSerial { path, baud } => {
                write!(f, "kiss-serial://{}?baud={baud}", path.display())
            }
            TncAddr::Ax25 { port } => write!(f, "ax25:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        assert_eq!(
            TncAddr::parse("kiss-tcp://127.0.0.1:8001").unwrap(),
            TncAddr::default()
        );
        assert_eq!(
            TncAddr::parse("kiss-tcp://tnc.local:8100/").unwrap(),
            TncAddr::KissTcp {
                host: "tnc.local".into(),
                port: 8100
            }
        );
        assert_eq!(
            TncAddr::parse("kiss-tcp://[::1]:8001").unwrap(),
            TncAddr::KissTcp {
                host: "::1".into(),
                port: 8001
            }
        );
        assert_eq!(
            TncAddr::parse("kiss-serial:///dev/ttyUSB0?baud=19200").unwrap(),
            TncAddr::KissSerial {
                path: "/dev/ttyUSB0".into(),
                baud: 19200
            }
        );
        assert_eq!(
            TncAddr::parse("kiss-serial:///dev/ttyACM0").unwrap(),
            TncAddr::KissSerial {
                path: "/dev/ttyACM0".into(),
                baud: 9600
            }
        );
        assert_eq!(
            TncAddr::parse("ax25:radio").unwrap(),
            TncAddr::Ax25 {
                port: "radio".into()
            }
        );
        for s in [
            "kiss-tcp://127.0.0.1:8001",
            "kiss-tcp://[::1]:8001",
            "kiss-serial:///dev/ttyUSB0?baud=9600",
            "ax25:radio",
        ] {
            assert_eq!(TncAddr::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn mistakes_are_explained() {
        let e = |s: &str| TncAddr::parse(s).unwrap_err();
        assert!(e("tcp://127.0.0.1:8001").contains("unknown kind"));
        assert!(e("kiss-tcp://127.0.0.1").contains("missing :PORT"));
        assert!(e("kiss-tcp://127.0.0.1:0").contains("1-65535"));
        assert!(e("kiss-tcp://:8001").contains("host"));
        assert!(e("kiss-serial://ttyUSB0").contains("absolute path"));
        assert!(e("kiss-serial:///dev/ttyUSB0?baud=9601").contains("not one of"));
        assert!(e("kiss-serial:///dev/ttyUSB0?speed=9600").contains("unknown option"));
        assert!(e("ax25:").contains("port name"));
        assert!(e("ax25:my port").contains("port name"));
    }
}
