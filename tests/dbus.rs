//! The D-Bus interface against a real, private `dbus-daemon` that runs the
//! system bus's default-deny policy plus the policy file this repository
//! ships (etc/dbus-1/system.d/org.meshnode.Node.conf), with a real daemon
//! in-process (or as a process) on it: introspection, properties equal to
//! the HTTP API's values, methods that change what the HTTP API shows,
//! signals from real changes, and an unprivileged caller that may read but
//! not change anything.
//!
//! Owning the name needs root under the shipped policy, and so does running
//! a client as another user: those tests print `SKIP <test>: <reason>` when
//! not root, or when dbus-daemon is not installed (Debian: `dbus-daemon`).
#![cfg(feature = "dbus")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Proc, TestNode, data, test_config};
use futures_util::StreamExt;
use hyper::Method;
use meshnode::api::client::ClientError;
use meshnode::api::full;
use zbus::proxy::CacheProperties;

const NAME: &str = "org.meshnode.Node";
const PATH: &str = "/org/meshnode/Node";

#[zbus::proxy(
    interface = "org.meshnode.Node1",
    default_service = "org.meshnode.Node",
    default_path = "/org/meshnode/Node"
)]
trait Node1 {
    fn status(&self) -> zbus::Result<String>;
    fn peers(&self) -> zbus::Result<String>;
    fn catalog(&self, search: &str) -> zbus::Result<String>;
    fn clients(&self) -> zbus::Result<String>;
    fn publish(
        &self,
        file: zbus::Fd<'_>,
        path: &str,
        options: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn publish_data(
        &self,
        content: &[u8],
        path: &str,
        options: HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn remove(&self, url: &str) -> zbus::Result<String>;
    fn pin(&self, url: &str, pinned: bool) -> zbus::Result<String>;
    fn fetch(&self, url: &str) -> zbus::Result<String>;
    fn verify(&self) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<String>;
    fn set_quota(&self, ip: &str, daily: u64, monthly: u64) -> zbus::Result<String>;
    fn report(&self, since: &str, format: &str) -> zbus::Result<String>;

    #[zbus(property)]
    fn node_name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn callsign(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn node_id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn network_mode(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mode_since(&self) -> zbus::Result<i64>;
    #[zbus(property)]
    fn uplink_up(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn peer_count(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn neighbour_count(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn store_used_bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn store_max_bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn store_entries(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn store_quarantined(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn shaping_enabled(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn shaping_active(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn shaping_reason(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn shaping_clients(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn shaping_throttled(&self) -> zbus::Result<u32>;

    #[zbus(signal)]
    fn mode_changed(&self, mode: String, previous: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn content_added(&self, url: String, hash: String, size: u64, version: u64)
    -> zbus::Result<()>;
    #[zbus(signal)]
    fn content_removed(&self, url: String) -> zbus::Result<()>;
}

/// A private bus: `dbus-daemon` with the system bus's default policy and
/// the shipped meshnode policy, listening on a socket in a temp dir that
/// any user may reach.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    /// Starts one, or says why this test skips.
    fn start(test: &str) -> Option<Bus> {
        if !nix::unistd::Uid::effective().is_root() {
            println!(
                "SKIP {test}: needs root (the shipped policy lets only root own {NAME}; other users are run with setpriv)"
            );
            return None;
        }
        if Command::new("dbus-daemon")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("SKIP {test}: dbus-daemon is not installed (Debian package dbus-daemon)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("system_bus_socket");
        let policy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("etc/dbus-1/system.d/org.meshnode.Node.conf");
        assert!(policy.exists(), "{} is missing", policy.display());
        // the default policy of /usr/share/dbus-1/system.conf: nobody owns
        // a name or sends a method call unless a policy file says so
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
            socket = socket.display(),
            policy = policy.display(),
        );
        let config_path = dir.path().join("system.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_path.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        // any user may connect; the policy decides what they may do
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
        Some(Bus {
            child,
            address,
            _dir: dir,
        })
    }

    /// The config section that puts a node on this bus.
    fn section(&self) -> String {
        format!("[dbus]\nenabled = true\naddress = \"{}\"\n", self.address)
    }

    async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .build()
            .await
            .unwrap()
    }

    /// `dbus-send` on this bus, as root or (`as_nobody`) as user nobody
    /// without groups: (success, stdout, stderr).
    /// (Async: the daemon answering runs on this test's runtime.)
    async fn dbus_send(&self, as_nobody: bool, args: &[&str]) -> (bool, String, String) {
        let mut cmd = if as_nobody {
            let mut c = tokio::process::Command::new("setpriv");
            c.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "dbus-send",
            ]);
            c
        } else {
            tokio::process::Command::new("dbus-send")
        };
        let o = cmd
            .arg(format!("--bus={}", self.address))
            .args(["--print-reply", &format!("--dest={NAME}"), PATH])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn proxies(conn: &zbus::Connection) -> (Node1Proxy<'static>, Node1Proxy<'static>) {
    // one that always asks (values as they are now), one that caches and
    // so follows PropertiesChanged
    let fresh = Node1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .unwrap();
    let cached = Node1Proxy::builder(conn).build().await.unwrap();
    (fresh, cached)
}

/// The D-Bus error's name and message.
fn dbus_error(e: zbus::Error) -> (String, String) {
    match e {
        zbus::Error::MethodError(name, msg, _) => (name.to_string(), msg.unwrap_or_default()),
        zbus::Error::FDO(e) => {
            use zbus::DBusError;
            (
                e.name().to_string(),
                e.description().unwrap_or("").to_string(),
            )
        }
        other => panic!("expected a D-Bus error reply, got {other:?}"),
    }
}

/// The HTTP API's error message for a control request.
fn http_error(r: Result<serde_json::Value, ClientError>, status: u16) -> String {
    match r {
        Err(ClientError::Api { status: s, message }) if s == status => message,
        other => panic!("expected HTTP {status}, got {other:?}"),
    }
}

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// JSON text without the one line that differs between two reads a moment
/// apart.
/// The status text without what moves between two reads: the uptime and
/// the request counters (the HTTP read is itself a request).
fn without_uptime(s: &str) -> Vec<&str> {
    s.lines()
        .filter(|l| !l.contains("\"uptime_s\"") && !l.contains("\"responses\""))
        .collect()
}

#[tokio::test]
async fn the_interface_is_a_facade_over_what_the_http_api_shows() {
    let Some(bus) = Bus::start("the_interface_is_a_facade_over_what_the_http_api_shows") else {
        return;
    };
    let node = TestNode::start(&bus.section()).await;
    let conn = bus.connect().await;
    let (p, cached) = proxies(&conn).await;

    // introspection names every method, property and signal
    let xml = zbus::fdo::IntrospectableProxy::builder(&conn)
        .destination(NAME)
        .path(PATH)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    assert!(
        xml.contains(r#"<interface name="org.meshnode.Node1">"#),
        "{xml}"
    );
    for m in [
        "Status",
        "Peers",
        "Catalog",
        "Clients",
        "Client",
        "Publish",
        "PublishData",
        "Remove",
        "Pin",
        "Fetch",
        "Verify",
        "Reload",
        "SetQuota",
        "Report",
    ] {
        assert!(
            xml.contains(&format!(r#"<method name="{m}">"#)),
            "method {m}:\n{xml}"
        );
    }
    for prop in [
        "NodeName",
        "Callsign",
        "NodeId",
        "Version",
        "NetworkMode",
        "ModeSince",
        "UplinkUp",
        "PeerCount",
        "NeighbourCount",
        "StoreUsedBytes",
        "StoreMaxBytes",
        "StoreEntries",
        "StoreQuarantined",
        "ShapingEnabled",
        "ShapingActive",
        "ShapingReason",
        "ShapingClients",
        "ShapingThrottled",
    ] {
        assert!(
            xml.contains(&format!(r#"<property name="{prop}""#)),
            "property {prop}:\n{xml}"
        );
    }
    for s in [
        "PeerJoined",
        "PeerLeft",
        "ModeChanged",
        "ContentAdded",
        "ContentRemoved",
        "QuotaExceeded",
    ] {
        assert!(
            xml.contains(&format!(r#"<signal name="{s}">"#)),
            "signal {s}:\n{xml}"
        );
    }

    // properties are the HTTP API's values
    let st = node.ctl.get("/api/v1/status").await.unwrap();
    assert_eq!(p.node_name().await.unwrap(), st["node"]);
    assert_eq!(p.node_name().await.unwrap(), "N0CALL-test");
    assert_eq!(p.callsign().await.unwrap(), st["callsign"]);
    assert_eq!(p.node_id().await.unwrap(), st["node_id"]);
    assert_eq!(p.version().await.unwrap(), st["version"]);
    assert_eq!(p.network_mode().await.unwrap(), st["mode"]);
    assert_eq!(p.mode_since().await.unwrap(), st["mode_since"]);
    assert_eq!(
        p.uplink_up().await.unwrap(),
        st["connectivity"]["uplink"]["up"]
    );
    assert_eq!(p.peer_count().await.unwrap(), st["mesh"]["peers"]);
    assert_eq!(p.neighbour_count().await.unwrap(), st["mesh"]["neighbours"]);
    assert_eq!(
        p.store_used_bytes().await.unwrap(),
        st["store"]["used_bytes"]
    );
    assert_eq!(p.store_max_bytes().await.unwrap(), st["store"]["max_bytes"]);
    assert_eq!(p.store_entries().await.unwrap(), st["store"]["entries"]);
    assert_eq!(
        p.store_quarantined().await.unwrap(),
        st["store"]["quarantined"]
    );
    let clients = node.ctl.get("/api/v1/clients").await.unwrap();
    assert_eq!(p.shaping_enabled().await.unwrap(), clients["enabled"]);
    assert_eq!(p.shaping_active().await.unwrap(), clients["active"]);
    assert_eq!(p.shaping_reason().await.unwrap(), clients["reason"]);
    assert_eq!(p.shaping_clients().await.unwrap(), 0);
    assert_eq!(p.shaping_throttled().await.unwrap(), 0);

    // Status is GET /api/v1/status's text (but for the seconds of uptime
    // and the request counter)
    let http_text = node.get("127.0.0.1", "/api/v1/status", &[]).await.text();
    let dbus_text = p.status().await.unwrap();
    assert_eq!(without_uptime(&dbus_text), without_uptime(&http_text));
    let peers: serde_json::Value = serde_json::from_str(&p.peers().await.unwrap()).unwrap();
    assert_eq!(peers, node.ctl.get("/api/v1/peers").await.unwrap());

    // Publish: a file the caller opened, passed as a descriptor
    let mut added = p.receive_content_added().await.unwrap();
    let mut removed = p.receive_content_removed().await.unwrap();
    let mut entries_changed = cached.receive_store_entries_changed().await;
    assert_eq!(
        within("the first StoreEntries", entries_changed.next())
            .await
            .unwrap()
            .get()
            .await
            .unwrap(),
        0
    );
    let body = data(300_000, 7);
    let file_path = node.dir.path().join("upload.bin");
    std::fs::write(&file_path, &body).unwrap();
    let file = std::fs::File::open(&file_path).unwrap();
    let opts = HashMap::from([
        ("priority", zbus::Variant::from("essential")),
        ("tags", zbus::Variant::from(vec!["dbus", "test"])),
        ("content_type", zbus::Variant::from("application/x-test")),
    ]);
    let entry: serde_json::Value = serde_json::from_str(
        &p.publish(file.as_fd().into(), "/dbus/upload.bin", opts)
            .await
            .unwrap(),
    )
    .unwrap();
    let url = "http://n0call.radio/dbus/upload.bin";
    assert_eq!(entry["url"], url);
    assert_eq!(entry["size"], 300_000);
    assert_eq!(entry["priority"], 1); // essential
    assert_eq!(entry["tags"], serde_json::json!(["dbus", "test"]));
    // ... and the HTTP API has it: in the catalog, served byte for byte
    let cat = node.ctl.get("/api/v1/catalog").await.unwrap();
    let listed = cat["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("{url} not in {cat}"));
    assert_eq!(listed["hash"], entry["hash"]);
    let served = node.get("n0call.radio", "/dbus/upload.bin", &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body, body);
    assert_eq!(served.header("content-type"), "application/x-test");
    // ContentAdded, and StoreEntries changed with it
    let sig = within("ContentAdded", added.next()).await.unwrap();
    let a = sig.args().unwrap();
    assert_eq!(a.url(), url);
    assert_eq!(a.hash(), entry["hash"].as_str().unwrap());
    assert_eq!(*a.size(), 300_000);
    assert_eq!(*a.version(), 1);
    let changed = within("StoreEntries changed", entries_changed.next())
        .await
        .unwrap();
    assert_eq!(changed.get().await.unwrap(), 1);
    assert_eq!(p.store_used_bytes().await.unwrap(), 300_000);
    // the D-Bus catalog is the control socket's
    let dcat: serde_json::Value = serde_json::from_str(&p.catalog("dbus").await.unwrap()).unwrap();
    assert_eq!(dcat["total"], 1);
    assert_eq!(dcat["entries"][0]["url"], url);

    // PublishData: the bytes in the message (a new version of the URL)
    let e2: serde_json::Value = serde_json::from_str(
        &p.publish_data(b"small", "/dbus/small.txt", HashMap::new())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(e2["url"], "http://n0call.radio/dbus/small.txt");
    assert_eq!(e2["priority"], 3); // standard
    let sig = within("ContentAdded", added.next()).await.unwrap();
    assert_eq!(
        sig.args().unwrap().url(),
        "http://n0call.radio/dbus/small.txt"
    );
    assert_eq!(
        node.get("n0call.radio", "/dbus/small.txt", &[]).await.body,
        "small"
    );
    let gone: serde_json::Value = serde_json::from_str(
        &p.remove("http://n0call.radio/dbus/small.txt")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(gone["url"], "http://n0call.radio/dbus/small.txt");
    let sig = within("ContentRemoved", removed.next()).await.unwrap();
    assert_eq!(
        sig.args().unwrap().url(),
        "http://n0call.radio/dbus/small.txt"
    );

    // a bad publish fails over D-Bus with the control socket's own message
    let file = std::fs::File::open(&file_path).unwrap();
    let (name, msg) = dbus_error(
        p.publish(file.as_fd().into(), "no-slash", HashMap::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    let http = http_error(
        node.ctl
            .publish_bytes(bytes::Bytes::from_static(b"x"), &common::opts("no-slash"))
            .await,
        400,
    );
    assert_eq!(msg, http);
    let file = std::fs::File::open(&file_path).unwrap();
    let (name, msg) = dbus_error(
        p.publish(
            file.as_fd().into(),
            "/x",
            HashMap::from([("colour", zbus::Variant::from("blue"))]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    assert!(msg.contains("unknown option \"colour\""), "{msg}");

    // Pin
    let pinned: serde_json::Value = serde_json::from_str(&p.pin(url, true).await.unwrap()).unwrap();
    assert_eq!(pinned["pinned"], true);
    let cat = node.ctl.get("/api/v1/catalog?q=upload").await.unwrap();
    assert_eq!(cat["entries"][0]["pinned"], true);

    // Fetch: through the same path as meshctl content get
    let f: serde_json::Value = serde_json::from_str(&p.fetch(url).await.unwrap()).unwrap();
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes"], 300_000);
    assert_eq!(f["stored"], true);
    let (name, msg) = dbus_error(p.fetch("http://n0call.radio/absent").await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.FileNotFound");
    assert!(
        msg.contains("not found: http://n0call.radio/absent"),
        "{msg}"
    );

    // Verify
    let v: serde_json::Value = serde_json::from_str(&p.verify().await.unwrap()).unwrap();
    assert_eq!(v["checked"], 1);
    assert_eq!(v["quarantined"], serde_json::json!([]));

    // SetQuota with shaping off: refused, saying why, as over HTTP
    let (name, msg) = dbus_error(p.set_quota("10.0.0.9", 1 << 30, 0).await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.Failed");
    assert!(
        msg.contains("shaping is off") && msg.contains("enabled = false"),
        "{msg}"
    );
    let http = http_error(
        node.ctl
            .call(
                Method::PUT,
                "/api/v1/clients/10.0.0.9/quota",
                full(r#"{"daily": "1GiB"}"#),
            )
            .await,
        503,
    );
    assert_eq!(msg, http);
    let (name, _) = dbus_error(p.set_quota("not-an-ip", 1, 0).await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    let clients: serde_json::Value = serde_json::from_str(&p.clients().await.unwrap()).unwrap();
    assert_eq!(clients, node.ctl.get("/api/v1/clients").await.unwrap());

    // Report: the control socket's report (clients included), in any format
    let r: serde_json::Value = serde_json::from_str(&p.report("1h", "").await.unwrap()).unwrap();
    let http = node.ctl.get("/api/v1/report?since=1h").await.unwrap();
    assert_eq!(r["totals"]["requests"], http["totals"]["requests"]);
    assert!(r["totals"]["requests"].as_u64() >= Some(1), "{r}");
    assert!(r.get("top_clients").is_some(), "{r}");
    let csv = p.report("1h", "csv").await.unwrap();
    assert!(csv.starts_with("section,key,requests,bytes\n"), "{csv}");
    let (name, msg) = dbus_error(p.report("1h", "xml").await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    assert!(msg.contains("unknown format"), "{msg}");

    // Reload: applies, and refuses a broken file like the control socket
    let r: serde_json::Value = serde_json::from_str(&p.reload().await.unwrap()).unwrap();
    assert_eq!(r["applied"], serde_json::json!([]));
    let good = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, format!("{good}[store]\nbogus = 1\n")).unwrap();
    let (name, msg) = dbus_error(p.reload().await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs");
    assert!(msg.contains("bogus"), "{msg}");
    let http = http_error(
        node.ctl
            .call(Method::POST, "/api/v1/reload", full(""))
            .await,
        422,
    );
    assert_eq!(msg, http);
    std::fs::write(&node.config_path, good).unwrap();

    // Remove: gone from the HTTP catalog, ContentRemoved
    let gone: serde_json::Value = serde_json::from_str(&p.remove(url).await.unwrap()).unwrap();
    assert_eq!(gone["url"], url);
    let sig = within("ContentRemoved", removed.next()).await.unwrap();
    assert_eq!(sig.args().unwrap().url(), url);
    let cat = node.ctl.get("/api/v1/catalog").await.unwrap();
    assert_eq!(cat["total"], 0, "{cat}");
    let (name, _) = dbus_error(p.remove(url).await.unwrap_err());
    assert_eq!(name, "org.freedesktop.DBus.Error.FileNotFound");

    // shutdown gives the name back
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let bus_name = || zbus::names::BusName::try_from(NAME).unwrap();
    assert!(dbus.name_has_owner(bus_name()).await.unwrap());
    node.daemon.shutdown().await.unwrap();
    assert!(!dbus.name_has_owner(bus_name()).await.unwrap());
}

/// The uplink (a probe target on loopback) goes away: ModeChanged, and
/// NetworkMode follows the HTTP status.
#[tokio::test]
async fn mode_changed_is_signalled_when_the_uplink_goes() {
    let Some(bus) = Bus::start("mode_changed_is_signalled_when_the_uplink_goes") else {
        return;
    };
    let uplink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = uplink.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        loop {
            if uplink.accept().await.is_err() {
                return;
            }
        }
    });
    let node = TestNode::start(&format!(
        "{}[connectivity]\nprobes = [\"tcp://127.0.0.1:{port}\"]\ninterval = \"200ms\"\n\
         retry_interval = \"100ms\"\ndown_after = 1\ntimeout = \"500ms\"\nfailover = false\n",
        bus.section()
    ))
    .await;
    let conn = bus.connect().await;
    let (p, cached) = proxies(&conn).await;
    within("the mode online", async {
        while p.network_mode().await.unwrap() != "online" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(p.uplink_up().await.unwrap());
    let mut changed = p.receive_mode_changed().await.unwrap();
    let mut prop = cached.receive_network_mode_changed().await;
    assert_eq!(
        within("NetworkMode", prop.next())
            .await
            .unwrap()
            .get()
            .await
            .unwrap(),
        "online"
    );
    accept.abort(); // the listener goes with the task: probes are refused
    let sig = within("ModeChanged", changed.next()).await.unwrap();
    let a = sig.args().unwrap();
    assert_eq!(
        (a.mode().as_str(), a.previous().as_str()),
        ("mesh-only", "online")
    );
    let now = within("NetworkMode changed", prop.next())
        .await
        .unwrap()
        .get()
        .await
        .unwrap();
    assert_eq!(now, "mesh-only");
    let st = node.ctl.get("/api/v1/status").await.unwrap();
    assert_eq!(st["mode"], "mesh-only");
    assert_eq!(p.mode_since().await.unwrap(), st["mode_since"]);
    assert!(!p.uplink_up().await.unwrap());
    node.daemon.shutdown().await.unwrap();
}

/// The shipped policy: a user outside root and meshadmin may introspect,
/// read properties and Status, but every change is refused by the bus.
#[tokio::test]
async fn an_unprivileged_caller_may_read_but_not_change() {
    let test = "an_unprivileged_caller_may_read_but_not_change";
    let Some(bus) = Bus::start(test) else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err()
        || Command::new("dbus-send").arg("--help").output().is_err()
    {
        println!("SKIP {test}: setpriv (util-linux) or dbus-send (dbus-bin) is missing");
        return;
    }
    let node = TestNode::start(&bus.section()).await;
    node.publish("/keep.txt", b"still here").await;
    let url = "string:http://n0call.radio/keep.txt";

    let (ok, out, err) = bus
        .dbus_send(
            true,
            &[
                "org.freedesktop.DBus.Properties.Get",
                "string:org.meshnode.Node1",
                "string:NodeName",
            ],
        )
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"N0CALL-test\""), "{out}");
    let (ok, out, err) = bus.dbus_send(true, &["org.meshnode.Node1.Status"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("\"node\": \"N0CALL-test\""), "{out}");
    let (ok, out, err) = bus
        .dbus_send(true, &["org.freedesktop.DBus.Introspectable.Introspect"])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("org.meshnode.Node1"), "{out}");

    for call in [
        vec!["org.meshnode.Node1.Remove", url],
        vec!["org.meshnode.Node1.Pin", url, "boolean:false"],
        vec!["org.meshnode.Node1.Reload"],
        vec![
            "org.meshnode.Node1.SetQuota",
            "string:10.0.0.9",
            "uint64:1",
            "uint64:0",
        ],
        vec!["org.meshnode.Node1.Catalog", "string:"],
        vec!["org.meshnode.Node1.Report", "string:1d", "string:json"],
    ] {
        let (ok, _, err) = bus.dbus_send(true, &call).await;
        assert!(!ok, "{call:?} was allowed");
        assert!(
            err.contains("org.freedesktop.DBus.Error.AccessDenied"),
            "{call:?}: {err}"
        );
    }
    // nothing changed
    let cat = node.ctl.get("/api/v1/catalog").await.unwrap();
    assert_eq!(cat["entries"][0]["pinned"], false);
    assert_eq!(cat["total"], 1);
    // root may: the same Remove goes through
    let (ok, out, err) = bus
        .dbus_send(false, &["org.meshnode.Node1.Remove", url])
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("keep.txt"), "{out}");
    assert_eq!(node.ctl.get("/api/v1/catalog").await.unwrap()["total"], 0);
    // the README's busctl example (busctl cannot pass a descriptor: PublishData)
    let o = tokio::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(["call", NAME, PATH, "org.meshnode.Node1", "PublishData"])
        .args(["aysa{sv}", "6", "104", "101", "108", "108", "111", "10"])
        .args(["/hello.txt", "1", "priority", "s", "essential"])
        .output()
        .await;
    match o {
        Err(e) => println!("busctl not run ({e}); skipping its part"),
        Ok(o) => {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let served = node.get("n0call.radio", "/hello.txt", &[]).await;
            assert_eq!(served.body, "hello\n");
            let cat = node.ctl.get("/api/v1/catalog").await.unwrap();
            assert_eq!(cat["entries"][0]["priority"], 1);
        }
    }
    node.daemon.shutdown().await.unwrap();
}

/// Starts `meshnode` as a process with `env` added, its log in the dir.
async fn spawn_with_env(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Proc {
    let config = dir.join("meshnode.toml");
    std::fs::write(&config, test_config(dir, extra)).unwrap();
    let log = dir.join("meshnode.log");
    let child = Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(&log).unwrap())
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

/// No bus where the config or `DBUS_SYSTEM_BUS_ADDRESS` points: the node
/// starts, serves, says once why D-Bus is off, and stops cleanly.
#[tokio::test]
async fn without_a_bus_the_node_runs_and_says_so_once() {
    for (case, extra, env) in [
        (
            "address",
            "[dbus]\naddress = \"unix:path=/nonexistent/meshnode-test-bus\"\n",
            vec![],
        ),
        (
            "env",
            "[dbus]\nenabled = true\n",
            vec![(
                "DBUS_SYSTEM_BUS_ADDRESS",
                "unix:path=/nonexistent/meshnode-env-bus",
            )],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn_with_env(dir.path(), extra, &env).await;
        let st = p.ctl().get("/api/v1/status").await.unwrap();
        assert_eq!(st["node"], "N0CALL-test", "{case}");
        p.signal("TERM");
        assert_eq!(p.wait_exit(Duration::from_secs(20)), Some(0), "{case}");
        let log = std::fs::read_to_string(&p.log).unwrap();
        let off: Vec<&str> = log.lines().filter(|l| l.contains("D-Bus is off")).collect();
        assert_eq!(off.len(), 1, "{case}: {log}");
        let bus = if case == "env" {
            "meshnode-env-bus"
        } else {
            "meshnode-test-bus"
        };
        assert!(off[0].contains(bus), "{case}: {}", off[0]);
    }
}
