//! Shared helpers for the integration tests: in-process daemons on
//! 127.0.0.1:0 with a temporary state dir, and a small HTTP client.
#![allow(dead_code, missing_docs)]

mod wait;
#[allow(unused_imports)]
pub use wait::wait_for;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use meshnode::api::client::{ControlClient, PublishOptions};
use meshnode::config::{self, Config};
use meshnode::daemon::{Daemon, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config for a test node in `dir`, listening on an ephemeral port. mDNS
/// is off unless `extra` has its own `[discovery]` section: tests never
/// multicast on the build machine's own interfaces. Likewise uplink probes
/// (`[connectivity]`) and D-Bus (`[dbus]`).
pub fn test_config(dir: &Path, extra: &str) -> String {
    test_config_named(dir, "N0CALL", "test", extra)
}

/// [`test_config`] for a node named `CALLSIGN-label`.
pub fn test_config_named(dir: &Path, callsign: &str, label: &str, extra: &str) -> String {
    let discovery = if extra.contains("[discovery]") {
        ""
    } else {
        "[discovery]\nmdns = false\n"
    };
    // tests never probe the real internet
    let connectivity = if extra.contains("[connectivity]") {
        ""
    } else {
        "[connectivity]\nprobes = []\n"
    };
    // nor offer themselves on the machine's own system bus
    let dbus = if extra.contains("[dbus]") {
        ""
    } else {
        "[dbus]\nenabled = false\n"
    };
    format!(
        "[node]\ncallsign = \"{callsign}\"\nlabel = \"{label}\"\nstate_dir = \"{state}\"\n\
         [http]\nlisten = [\"127.0.0.1:0\"]\ncontrol_socket = \"{sock}\"\n{discovery}{connectivity}{dbus}{extra}",
        state = dir.join("state").display(),
        sock = dir.join("control.sock").display(),
    )
}

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub ctl: ControlClient,
    pub config_path: PathBuf,
}

impl TestNode {
    /// A node whose config file (with `extra` appended) lives in its temp dir.
    pub async fn start(extra: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    /// A node named `CALLSIGN-label` (the others are all `N0CALL-test`).
    pub async fn start_named(callsign: &str, label: &str, extra: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("meshnode.toml"),
            test_config_named(dir.path(), callsign, label, extra),
        )
        .unwrap();
        Self::start_in(dir, "").await
    }

    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> TestNode {
        let config_path = dir.path().join("meshnode.toml");
        if !config_path.exists() {
            std::fs::write(&config_path, test_config(dir.path(), extra)).unwrap();
        }
        let cfg: Config = config::load(&config_path).unwrap();
        let daemon = Daemon::start(
            cfg,
            Source {
                path: Some(config_path.clone()),
                state_dir_override: None,
            },
        )
        .await
        .unwrap();
        let addr = daemon.local_addrs()[0];
        let ctl = ControlClient::new(daemon.control_socket());
        TestNode {
            dir,
            daemon,
            addr,
            ctl,
            config_path,
        }
    }

    /// Stops the daemon and starts a new one on the same state.
    pub async fn restart(self) -> TestNode {
        let dir = self.dir;
        self.daemon.shutdown().await.unwrap();
        Self::start_in(dir, "").await
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub async fn publish(&self, path: &str, data: &[u8]) -> serde_json::Value {
        self.publish_with(
            data,
            PublishOptions {
                path: path.into(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn publish_with(&self, data: &[u8], opts: PublishOptions) -> serde_json::Value {
        self.ctl
            .publish_bytes(Bytes::copy_from_slice(data), &opts)
            .await
            .unwrap()
    }

    /// GET on the public port with the given Host and extra headers.
    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        http(self.addr, "GET", host, path, headers).await
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended with an error (connection cut) instead of completing.
    pub body_error: Option<String>,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request through hyper's client on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut buf = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(buf),
        body_error,
    }
}

/// Sends raw bytes and returns the raw answer (for requests a proper client refuses to send).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A daemon running as a real child process of the test.
pub struct Proc {
    pub child: std::process::Child,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `meshnode --config <dir>/meshnode.toml` (written with `extra` if absent)
    /// and waits until its control socket answers.
    pub async fn spawn(dir: &Path, extra: &str) -> Proc {
        let config = dir.join("meshnode.toml");
        if !config.exists() {
            std::fs::write(&config, test_config(dir, extra)).unwrap();
        }
        let log = dir.join("meshnode.log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_meshnode"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let p = Proc {
            child,
            config,
            socket: dir.join("control.sock"),
            log,
        };
        p.wait_ready().await;
        p
    }

    pub async fn wait_ready(&self) {
        let ctl = ControlClient::new(&self.socket);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while ctl.get("/api/v1/status").await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not come up; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn ctl(&self) -> ControlClient {
        ControlClient::new(&self.socket)
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit in time"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that a control request failed with `status` and a message containing `needle`.
pub fn expect_api_error<T: std::fmt::Debug>(
    r: Result<T, meshnode::api::client::ClientError>,
    status: u16,
    needle: &str,
) {
    match r {
        Err(meshnode::api::client::ClientError::Api { status: s, message }) if s == status => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected HTTP {status} ({needle}), got {other:?}"),
    }
}

/// Publish options with just a path.
pub fn opts(path: &str) -> PublishOptions {
    PublishOptions {
        path: path.into(),
        ..Default::default()
    }
}
