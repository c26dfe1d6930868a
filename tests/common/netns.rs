//! A network-namespace lab for multi-node tests of the real `meshnode`
//! binary: Linux bridges ("links") in the root namespace, one namespace per
//! host with a veth into each of its bridges, `meshnode` processes run with
//! `ip netns exec`, link cuts, packet capture with tcpdump and a pcap parser.
//!
//! Self-contained (does not use `tests/common/mod.rs`); include it with
//!
//! ```ignore
//! #[path = "common/netns.rs"]
//! mod netns;
//!
//! #[tokio::test]
//! async fn two_nodes() {
//!     if netns::skip_unless_root("two_nodes") {
//!         return;
//!     }
//!     let lab = netns::Lab::new("two");
//!     let lan = lab.bridge("lan");
//!     let a = lab.host("a", &[lan]);
//!     let dir = lab.dir().join("a");
//!     let cfg = a.base_config("N0CALL", "a", &dir, lan) + "[discovery]\nmdns = false\n";
//!     let node = a.spawn_meshnode(&dir, &cfg).await;
//!     let (status, _, _) = netns::http_get(node.addr(), "/api/v1/status").await;
//!     assert_eq!(status, 200);
//! }
//! ```
//!
//! Addresses: bridge number `n` (200..=254, chosen free machine-wide under a
//! lock file) is the subnet 10.n.0.0/24; the bridge itself holds 10.n.0.254
//! in the root namespace (so the test process reaches every node), host
//! number `h` (1, 2, ... in creation order) is 10.n.0.h on every bridge it
//! joins. Namespaces get no default route and IPv4 forwarding off, so nothing
//! is routed outside the lab or between its bridges.
//!
//! Everything is removed when the [`Lab`] is dropped, also on panic.
//! Resources of a test process that died without dropping its lab (SIGKILL,
//! nextest timeout) are reaped by the next `Lab::new`: every name carries the
//! pid of its creator.
#![allow(dead_code, missing_docs, missing_debug_implementations)]

use std::fmt::Write as _;
use std::io::{BufRead, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use meshnode::api::client::ControlClient;

/// Port of the public HTTP listener in configs made by [`Host::base_config`].
pub const HTTP_PORT: u16 = 8080;
/// Second octet of the first lab subnet; the lab uses 10.200.0.0 – 10.254.0.0.
const FIRST_SUBNET: u8 = 200;
const LAST_SUBNET: u8 = 254;
/// Serialises subnet choice between test processes.
const LOCK_FILE: &str = "/run/meshnode-netns.lock";
/// Prefixes of our resource names (the stale-resource reaper relies on them).
const NS_PREFIX: &str = "mnlab-";
const BRIDGE_PREFIX: &str = "mnb";
const VETH_PREFIX: &str = "mnv";
/// Prefix of lab temp dirs: `meshnode-lab-<pid>-<tag>-XXXXXX`.
const DIR_PREFIX: &str = "meshnode-lab-";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static IF_COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// Skipping

/// True (after printing why) when this machine cannot run namespace tests:
/// not root, no `ip`, or `ip netns add` refused (e.g. an unprivileged
/// container). Use as `if netns::skip_unless_root("name") { return; }`.
pub fn skip_unless_root(test: &str) -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = PROBE.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root for network namespaces".into());
        }
        let ns = format!("{NS_PREFIX}{}-probe", std::process::id());
        match Command::new("ip").args(["netns", "add", &ns]).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err("needs the ip command".into())
            }
            Err(e) => Err(format!("needs the ip command ({e})")),
            Ok(o) if !o.status.success() => Err(format!(
                "needs root for network namespaces (ip netns add: {})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Ok(_) => {
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
                Ok(())
            }
        }
    });
    match r {
        Ok(()) => false,
        Err(why) => {
            eprintln!("skipped {test}: {why}");
            true
        }
    }
}

/// True (after printing why) when `tool` is not installed.
pub fn skip_unless_tool(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file());
    if !found {
        eprintln!("skipped {test}: needs the {tool} command");
    }
    !found
}

// ---------------------------------------------------------------------------
// Commands

/// Runs a command; panics with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> Output {
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_run(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Output {
    run("ip", args)
}

/// [`try_run`]'s standard output as text.
pub fn try_run_text(program: &str, args: &[&str]) -> Result<String, String> {
    try_run(program, args).map(|o| stdout(&o))
}

/// [`run`]'s standard output as text.
pub fn run_text(program: &str, args: &[&str]) -> String {
    stdout(&run(program, args))
}

/// `line` with runs of whitespace made single spaces.
pub fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Deletes namespaces named `<prefix><pid>-...` of test processes that
/// died without cleaning up (for tests that make their own namespaces
/// rather than a [`Lab`]).
pub fn reap_stale_namespaces(prefix: &str) {
    let Ok(list) = try_run_text("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !pid_alive(pid)
        {
            let _ = try_run("ip", &["netns", "del", name]);
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Sends a signal by name (`TERM`, `INT`, `HUP`, `KILL`) to a pid.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Lowercase letters, digits and '-' only, at most `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    if s.is_empty() { "x".into() } else { s }
}

/// A fresh interface name `<prefix><pid hex>-<counter hex>`, at most 15 chars.
fn ifname(prefix: &str) -> String {
    let n = IF_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}-{n:x}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} too long");
    name
}

// ---------------------------------------------------------------------------
// The lab

/// A bridge of a [`Lab`] (a link segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BridgeId(usize);

#[derive(Debug)]
struct Bridge {
    label: String,
    name: String,
    /// Second octet of its subnet 10.n.0.0/24.
    n: u8,
}

#[derive(Debug, Default)]
struct State {
    bridges: Vec<Bridge>,
    namespaces: Vec<String>,
    root_veths: Vec<String>,
    hosts: u8,
    captures: u32,
}

/// A set of bridges and namespaces, all removed on drop.
pub struct Lab {
    tag: String,
    id: u32,
    dir: tempfile::TempDir,
    state: Mutex<State>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("tag", &self.tag)
            .field("id", &self.id)
            .field("dir", &self.dir.path())
            .field("state", &self.state)
            .finish()
    }
}

/// Holds the machine-wide lab lock (an flock on [`LOCK_FILE`]) while alive.
struct LabLock(std::fs::File);

impl LabLock {
    fn take() -> LabLock {
        let path = if Path::new("/run").is_dir() {
            PathBuf::from(LOCK_FILE)
        } else {
            std::env::temp_dir().join("meshnode-netns.lock")
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.lock()
            .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
        LabLock(f)
    }
}

impl Drop for LabLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Lab {
    /// A new, empty lab. `tag` goes into namespace names (for `ip netns list`)
    /// and the temp dir's name. Panics when not root: call
    /// [`skip_unless_root`] first.
    pub fn new(tag: &str) -> Lab {
        let id = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = sanitize(tag, 12);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-{tag}-", std::process::id()))
            .tempdir()
            .expect("lab temp dir");
        {
            let _lock = LabLock::take();
            reap_stale();
        }
        Lab {
            tag,
            id,
            dir,
            state: Mutex::new(State::default()),
        }
    }

    /// The lab's temporary directory (removed on drop); put node dirs here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A new bridge (link segment) with 10.n.0.254/24 in the root namespace.
    pub fn bridge(&self, label: &str) -> BridgeId {
        let name = ifname(BRIDGE_PREFIX);
        let _lock = LabLock::take();
        let n = free_subnet();
        let id = {
            let mut st = self.state.lock().unwrap();
            st.bridges.push(Bridge {
                label: label.to_string(),
                name: name.clone(),
                n,
            });
            BridgeId(st.bridges.len() - 1)
        };
        // STP off and no forward delay: ports forward as soon as they are up.
        // Multicast snooping off: mDNS floods like on a dumb switch.
        ip(&[
            "link",
            "add",
            "name",
            &name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        ip(&["addr", "add", &format!("10.{n}.0.254/24"), "dev", &name]);
        ip(&["link", "set", &name, "up"]);
        id
    }

    /// The bridge's interface name in the root namespace (for tcpdump etc.).
    pub fn bridge_name(&self, b: BridgeId) -> String {
        self.state.lock().unwrap().bridges[b.0].name.clone()
    }

    /// The label given to [`Lab::bridge`].
    pub fn bridge_label(&self, b: BridgeId) -> String {
        self.state.lock().unwrap().bridges[b.0].label.clone()
    }

    /// The root namespace's address on the bridge (10.n.0.254).
    pub fn bridge_ip(&self, b: BridgeId) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet_n(b), 0, 254)
    }

    fn subnet_n(&self, b: BridgeId) -> u8 {
        self.state.lock().unwrap().bridges[b.0].n
    }

    /// A new host: a namespace with `lo` up and one veth per bridge, named
    /// `eth0`, `eth1`, ... inside in the order given, with 10.n.0.h/24.
    pub fn host(&self, name: &str, bridges: &[BridgeId]) -> Host {
        let (ns, h) = {
            let mut st = self.state.lock().unwrap();
            assert!(st.hosts < 253, "at most 253 hosts per lab");
            st.hosts += 1;
            let ns = format!(
                "{NS_PREFIX}{}-{}-{}-{}",
                std::process::id(),
                self.id,
                self.tag,
                sanitize(name, 16)
            );
            st.namespaces.push(ns.clone());
            (ns, st.hosts)
        };
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        // IPv4 settings of a new namespace are copied from the root one: a
        // host on two bridges must not route between them.
        if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").is_ok_and(|s| s.trim() != "0") {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "sh",
                    "-c",
                    "echo 0 > /proc/sys/net/ipv4/ip_forward",
                ],
            );
        }
        let mut links = Vec::new();
        for (i, &b) in bridges.iter().enumerate() {
            let (br, n) = {
                let st = self.state.lock().unwrap();
                let br = &st.bridges[b.0];
                (br.name.clone(), br.n)
            };
            let root = ifname(VETH_PREFIX);
            let inner = format!("eth{i}");
            self.state.lock().unwrap().root_veths.push(root.clone());
            ip(&[
                "link", "add", &root, "type", "veth", "peer", "name", &inner, "netns", &ns,
            ]);
            // The root end is a pure switch port: no IPv6 chatter from it.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{root}/disable_ipv6"), "1");
            ip(&["link", "set", &root, "master", &br, "up"]);
            let addr = Ipv4Addr::new(10, n, 0, h);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ]);
            ip(&["-n", &ns, "link", "set", &inner, "up"]);
            links.push(Link {
                bridge: b,
                ifname: inner,
                root_ifname: root,
                ip: addr,
            });
        }
        Host {
            name: name.to_string(),
            ns,
            links,
        }
    }

    /// Takes `host`'s link to `bridge` down: its bridge port carries nothing
    /// (and the host sees no carrier) until [`Lab::heal`].
    pub fn cut(&self, host: &Host, bridge: BridgeId) {
        ip(&["link", "set", &host.link(bridge).root_ifname, "down"]);
    }

    /// Brings the link back up; it forwards at once (no STP).
    pub fn heal(&self, host: &Host, bridge: BridgeId) {
        ip(&["link", "set", &host.link(bridge).root_ifname, "up"]);
    }

    /// Starts tcpdump on the bridge (every frame between its ports, as the
    /// bridge is promiscuous while captured) and waits until it listens.
    pub fn capture(&self, bridge: BridgeId) -> Capture {
        self.capture_with(bridge, "")
    }

    /// [`Lab::capture`] with a tcpdump filter expression (e.g. `"tcp port 8080"`).
    pub fn capture_with(&self, bridge: BridgeId, filter: &str) -> Capture {
        let iface = self.bridge_name(bridge);
        let k = {
            let mut st = self.state.lock().unwrap();
            st.captures += 1;
            st.captures
        };
        let file = self.dir().join(format!("capture-{k}-{iface}.pcap"));
        Capture::start(&iface, &file, filter)
    }

    /// Names of everything the lab created so far: namespaces, root-side
    /// veths and bridges (for leak checks).
    pub fn resources(&self) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.namespaces
            .iter()
            .chain(&st.root_veths)
            .cloned()
            .chain(st.bridges.iter().map(|b| b.name.clone()))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let st = std::mem::take(&mut *self.state.lock().unwrap_or_else(|e| e.into_inner()));
        let mut problems = Vec::new();
        // Processes first: a namespace with a process in it outlives `ip netns del`.
        for ns in &st.namespaces {
            kill_all_in(ns);
        }
        for v in &st.root_veths {
            // A veth disappears with its namespace peer; only report others.
            if let Err(e) = try_run("ip", &["link", "del", v])
                && !e.contains("Cannot find device")
            {
                problems.push(e);
            }
        }
        for ns in &st.namespaces {
            if let Err(e) = try_run("ip", &["netns", "del", ns])
                && !e.contains("No such file")
            {
                problems.push(e);
            }
        }
        for b in &st.bridges {
            if let Err(e) = try_run("ip", &["link", "del", &b.name]) {
                problems.push(e);
            }
        }
        for p in problems {
            eprintln!("lab {} cleanup: {p}", self.tag);
        }
    }
}

/// SIGKILLs every process in namespace `ns` and waits (up to 3 s) until none is left.
fn kill_all_in(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids: Vec<u32> = match try_run("ip", &["netns", "pids", ns]) {
            Ok(o) => stdout(&o)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(_) => return,
        };
        if pids.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("lab cleanup: processes {pids:?} in {ns} would not die");
            return;
        }
        for p in pids {
            signal(p, "KILL");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first n in 200..=254 such that nothing in the root namespace (an
/// address, a route, a gateway) lies in 10.n.0.0/16. Call under [`LabLock`].
fn free_subnet() -> u8 {
    let mut used = [false; 256];
    for args in [
        &["-o", "-4", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let text = stdout(&ip(args));
        for tok in text.split_whitespace() {
            let tok = tok.split('/').next().unwrap_or(tok);
            if let Ok(a) = tok.parse::<Ipv4Addr>() {
                let o = a.octets();
                if o[0] == 10 {
                    used[o[1] as usize] = true;
                }
            }
        }
    }
    (FIRST_SUBNET..=LAST_SUBNET)
        .find(|&n| !used[n as usize])
        .expect(
            "no free lab subnet in 10.200.0.0 - 10.254.0.0 (leftover bridges? see `ip -br addr`)",
        )
}

/// Removes namespaces (and their processes), veths, bridges and temp dirs of
/// test processes that no longer exist.
fn reap_stale() {
    let me = std::process::id();
    if let Ok(o) = try_run("ip", &["netns", "list"]) {
        for line in stdout(&o).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != me && !pid_alive(pid) {
                kill_all_in(name);
                let _ = try_run("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(DIR_PREFIX))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != me && !pid_alive(pid) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(o) = try_run("ip", &["-o", "link", "show"]) {
        for line in stdout(&o).lines() {
            // "7: mnv1f2e-3@if2: <BROADCAST,..."
            let Some(name) = line.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            let Some(rest) = name
                .strip_prefix(BRIDGE_PREFIX)
                .or_else(|| name.strip_prefix(VETH_PREFIX))
            else {
                continue;
            };
            let Some(pid) = rest
                .split('-')
                .next()
                .and_then(|p| u32::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            if pid != me && !pid_alive(pid) {
                let _ = try_run("ip", &["link", "del", name]);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Hosts

#[derive(Debug, Clone)]
struct Link {
    bridge: BridgeId,
    ifname: String,
    root_ifname: String,
    ip: Ipv4Addr,
}

/// A namespace of a [`Lab`], with one interface per bridge it joined.
#[derive(Debug, Clone)]
pub struct Host {
    name: String,
    ns: String,
    links: Vec<Link>,
}

impl Host {
    /// The name given to [`Lab::host`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (`ip netns exec <ns> ...`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    fn link(&self, b: BridgeId) -> &Link {
        self.links
            .iter()
            .find(|l| l.bridge == b)
            .unwrap_or_else(|| panic!("host {} is not on bridge {b:?}", self.name))
    }

    /// The host's address on `bridge`.
    pub fn ip(&self, bridge: BridgeId) -> Ipv4Addr {
        self.link(bridge).ip
    }

    /// `ip(bridge):8080`.
    pub fn http_addr(&self, bridge: BridgeId) -> SocketAddr {
        SocketAddr::new(self.ip(bridge).into(), HTTP_PORT)
    }

    /// The interface on `bridge` inside the namespace (`eth0`, `eth1`, ...).
    pub fn ifname(&self, bridge: BridgeId) -> &str {
        &self.link(bridge).ifname
    }

    /// The veth end in the root namespace, enslaved to the bridge.
    pub fn root_ifname(&self, bridge: BridgeId) -> &str {
        &self.link(bridge).root_ifname
    }

    /// All addresses of the host, in the order of its bridges.
    pub fn ips(&self) -> Vec<Ipv4Addr> {
        self.links.iter().map(|l| l.ip).collect()
    }

    /// Runs a command inside the namespace and returns its output (not
    /// checked: look at `.status`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {} {program}: {e}", self.ns))
    }

    /// `[node]` and `[http]` sections for a node in `dir` listening on
    /// `<ip on bridge>:8080`, state in `dir/state`, control socket
    /// `dir/control.sock`. Append further sections (`[discovery]`, ...).
    pub fn base_config(&self, callsign: &str, label: &str, dir: &Path, bridge: BridgeId) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut c = String::new();
        let _ = write!(
            c,
            "[node]\ncallsign = {}\nlabel = {}\nstate_dir = {}\n\
             [http]\nlisten = [{}]\ncontrol_socket = {}\n[dbus]\nenabled = false\n",
            q(callsign),
            q(label),
            q(&dir.join("state").display().to_string()),
            q(&self.http_addr(bridge).to_string()),
            q(&dir.join("control.sock").display().to_string()),
        );
        c
    }

    /// Writes `config_toml` to `dir/meshnode.toml`, starts
    /// `ip netns exec <ns> meshnode --config dir/meshnode.toml` (output to
    /// `dir/log.txt`) and waits until `GET /api/v1/status` on its first
    /// listen address answers 200 from the root namespace. Panics with the
    /// log when that takes more than 20 s or the process exits.
    pub async fn spawn_meshnode(&self, dir: &Path, config_toml: &str) -> Node {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let config = dir.join("meshnode.toml");
        std::fs::write(&config, config_toml)
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let (addr, socket) = self.listen_and_socket(dir, config_toml);
        let mut node = Node {
            host: self.name.clone(),
            ns: self.ns.clone(),
            dir: dir.to_path_buf(),
            config,
            log: dir.join("log.txt"),
            addr,
            socket,
            child: None,
            starts: 0,
            log_shown: false,
        };
        node.start().await;
        node
    }

    /// The first `[http] listen` address (an unspecified IP replaced by the
    /// host's first address) and the control socket path of a config.
    fn listen_and_socket(&self, dir: &Path, config_toml: &str) -> (SocketAddr, PathBuf) {
        let table: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("node config is not TOML: {e}\n{config_toml}"));
        let http = table.get("http").and_then(|h| h.as_table());
        let mut addr = http
            .and_then(|h| h.get("listen"))
            .and_then(|l| l.as_array())
            .and_then(|l| l.first())
            .and_then(|a| a.as_str())
            .map(|a| {
                a.parse::<SocketAddr>()
                    .unwrap_or_else(|e| panic!("listen address {a:?}: {e}"))
            })
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)));
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(
                self.links.first().expect("host without links").ip,
            ));
        }
        let socket = http
            .and_then(|h| h.get("control_socket"))
            .and_then(|s| s.as_str())
            .map(|s| dir.join(s)) // absolute paths replace `dir`
            .unwrap_or_else(|| PathBuf::from("/run/meshnode/control.sock"));
        (addr, socket)
    }
}

// ---------------------------------------------------------------------------
// Nodes

/// A `meshnode` process in a host's namespace. Killed on drop; when the
/// thread is panicking (a failing test), its log is printed first.
pub struct Node {
    host: String,
    ns: String,
    dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    addr: SocketAddr,
    socket: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// A panic message already carried the log: do not print it again on drop.
    log_shown: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("host", &self.host)
            .field("addr", &self.addr)
            .field("dir", &self.dir)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Node {
    /// The public HTTP address (the config's first `listen`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The IP of [`Node::addr`].
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// The node's directory (config, log, state, control socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client for its control socket (works from the root namespace: a
    /// unix socket lives on the shared filesystem).
    pub fn control(&self) -> ControlClient {
        ControlClient::new(&self.socket)
    }

    /// Everything the process(es) wrote to `dir/log.txt` so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("node not running");
        assert!(signal(pid, sig), "kill -{sig} {pid} failed");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (SIGKILL and panic after 15 s).
    /// Returns the exit code (None: killed by a signal, or not running).
    pub async fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        if c.try_wait().ok().flatten().is_none() {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = c.try_wait().expect("wait for meshnode") {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                self.log_shown = true;
                panic!(
                    "meshnode on {} did not stop within 15 s of SIGTERM; log:\n{}",
                    self.host,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process again on the same dir and config (after
    /// [`Node::kill`] or [`Node::stop`]) and waits until it answers.
    pub async fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "node on {} already running",
            self.host
        );
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let _ = writeln!(
            log,
            "==== start #{} of meshnode on host {} (netns {}) ====",
            self.starts, self.host, self.ns
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_meshnode")])
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // Log to the file, never to the journal of a surrounding service.
        for var in [
            "JOURNAL_STREAM",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
        ] {
            cmd.env_remove(var);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd.spawn().expect("spawn ip netns exec meshnode");
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// [`Node::stop`] then [`Node::start`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.log_shown = true;
                panic!(
                    "meshnode on {} exited during startup ({st}); log:\n{}",
                    self.host,
                    self.log()
                );
            }
            let last = match try_http_get(self.addr, "/api/v1/status", Duration::from_secs(1)).await
            {
                Ok((s, _, _)) if s == StatusCode::OK => return,
                Ok((s, _, b)) => format!("{s}: {}", String::from_utf8_lossy(&b)),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                self.kill();
                self.log_shown = true;
                panic!(
                    "meshnode on {} did not answer on http://{}/api/v1/status within 20 s \
                     (last: {last}); log:\n{}",
                    self.host,
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.log_shown {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(200);
            eprintln!(
                "---- log of meshnode on host {} ({}), last {} lines ----\n{}\n---- end of log ----",
                self.host,
                self.log.display(),
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// HTTP

/// `GET path` on a fresh connection (Host: the address); panics on any
/// failure or after 10 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    try_http_get(addr, path, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `GET path` on a fresh connection; an error when it cannot connect or has
/// no complete answer within `within`.
pub async fn try_http_get(
    addr: SocketAddr,
    path: &str,
    within: Duration,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let what = format!("GET http://{addr}{path}");
    let request = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{what}: connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{what}: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("{what}: body: {e}"))?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    };
    tokio::time::timeout(within, request)
        .await
        .map_err(|_| format!("{what}: no answer within {within:?}"))?
}

// ---------------------------------------------------------------------------
// Capture

/// A running tcpdump writing a pcap file; stopped (and parsed) by
/// [`Capture::stop`], killed on drop.
pub struct Capture {
    iface: String,
    file: PathBuf,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("iface", &self.iface)
            .field("file", &self.file)
            .finish()
    }
}

impl Capture {
    /// Starts `tcpdump -i iface -U -w file -s 0 -n` and waits (up to 10 s)
    /// for its "listening on" line.
    pub fn start(iface: &str, file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", iface, "-U", "-s", "0", "-n", "--immediate-mode"])
            // a 16 MiB kernel buffer: no drops while a busy machine starves tcpdump
            .args(["-B", "16384"])
            // stay root: the file is in a root-only temp dir
            .args(["-Z", "root", "-w"])
            .arg(file)
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("tcpdump: {e} (install it: apt-get install -y tcpdump)"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("tcpdump stderr");
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => lines.lock().unwrap().push(l),
                    Err(_) => break,
                }
            }
        });
        let mut cap = Capture {
            iface: iface.to_string(),
            file: file.to_path_buf(),
            child: Some(child),
            stderr,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if cap
                .stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("listening on"))
            {
                return cap;
            }
            let exited = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                cap.kill();
                panic!(
                    "tcpdump on {iface} did not start ({}): {}",
                    exited.map_or("timeout".to_string(), |s| s.to_string()),
                    cap.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pcap file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stops tcpdump (SIGINT, after 200 ms for the last frames to arrive)
    /// and returns the IP packets of the file. Warns when the kernel dropped
    /// frames.
    pub fn stop(mut self) -> Vec<Packet> {
        std::thread::sleep(Duration::from_millis(200));
        let mut child = self.child.take().expect("capture running");
        signal(child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().unwrap().join("\n");
        if let Some(line) = stderr.lines().find(|l| l.contains("dropped by kernel"))
            && !line.trim_start().starts_with('0')
        {
            eprintln!("warning: tcpdump on {}: {line}", self.iface);
        }
        let data = std::fs::read(&self.file)
            .unwrap_or_else(|e| panic!("{}: {e}; tcpdump said:\n{stderr}", self.file.display()));
        parse_pcap(&data).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// pcap parsing

/// Transport protocol of a [`Packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
    /// Any other IP protocol number (1 ICMP, 58 ICMPv6, ...), and non-first
    /// fragments of UDP/TCP.
    Other(u8),
}

/// One captured IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Capture time since the Unix epoch.
    pub ts: Duration,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    /// 0 unless UDP or TCP.
    pub src_port: u16,
    pub dst_port: u16,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10); 0 otherwise.
    pub tcp_flags: u8,
    /// UDP/TCP payload; for other protocols everything after the IP header(s).
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn src_addr(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.src_port)
    }

    pub fn dst_addr(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dst_port)
    }

    pub fn is_tcp(&self) -> bool {
        self.proto == Proto::Tcp
    }

    pub fn is_udp(&self) -> bool {
        self.proto == Proto::Udp
    }
}

/// Parses a classic pcap file (either byte order, micro- or nanosecond
/// timestamps; link types Ethernet with 802.1Q/802.1ad tags, Linux cooked
/// v1/v2 and raw IP) into its IPv4/IPv6 packets. Non-IP frames (ARP, ...)
/// and malformed ones are skipped; a truncated last record (tcpdump killed
/// mid-write) ends the list.
pub fn parse_pcap(data: &[u8]) -> Result<Vec<Packet>, String> {
    if data.len() < 24 {
        return Err(format!("{} bytes: too short for a pcap header", data.len()));
    }
    let (le, nanos) = match [data[0], data[1], data[2], data[3]] {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        m => {
            return Err(format!(
                "not a pcap file (magic {m:02x?}; pcapng is not supported)"
            ));
        }
    };
    let u32_at = |i: usize| {
        let b = [data[i], data[i + 1], data[i + 2], data[i + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20) & 0xffff;
    let mut packets = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = u32_at(off) as u64;
        let frac = u32_at(off + 4);
        let incl = u32_at(off + 8) as usize;
        let start = off + 16;
        let Some(end) = start.checked_add(incl).filter(|&e| e <= data.len()) else {
            break;
        };
        let ts = Duration::from_secs(sec)
            + if nanos {
                Duration::from_nanos(frac as u64)
            } else {
                Duration::from_micros(frac as u64)
            };
        if let Some(p) = parse_frame(linktype, &data[start..end], ts) {
            packets.push(p);
        }
        off = end;
    }
    Ok(packets)
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn parse_frame(linktype: u32, f: &[u8], ts: Duration) -> Option<Packet> {
    match linktype {
        // Ethernet
        1 => {
            if f.len() < 14 {
                return None;
            }
            let mut ethertype = be16(f, 12);
            let mut off = 14;
            // 802.1Q, 802.1ad and old QinQ tags, possibly stacked
            while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
                if f.len() < off + 4 {
                    return None;
                }
                ethertype = be16(f, off + 2);
                off += 4;
            }
            parse_l3(ethertype, &f[off..], ts)
        }
        // Linux cooked capture v1: protocol at 14, header 16 bytes
        113 if f.len() >= 16 => parse_l3(be16(f, 14), &f[16..], ts),
        // Linux cooked capture v2: protocol at 0, header 20 bytes
        276 if f.len() >= 20 => parse_l3(be16(f, 0), &f[20..], ts),
        // raw IP
        12 | 14 | 101 => match f.first()? >> 4 {
            4 => parse_l3(0x0800, f, ts),
            6 => parse_l3(0x86dd, f, ts),
            _ => None,
        },
        228 => parse_l3(0x0800, f, ts),
        229 => parse_l3(0x86dd, f, ts),
        _ => None,
    }
}

fn parse_l3(ethertype: u16, b: &[u8], ts: Duration) -> Option<Packet> {
    match ethertype {
        0x0800 => {
            if b.len() < 20 || b[0] >> 4 != 4 {
                return None;
            }
            let ihl = (b[0] & 0x0f) as usize * 4;
            let total = (be16(b, 2) as usize).min(b.len()); // drops Ethernet padding
            if ihl < 20 || total < ihl {
                return None;
            }
            let src = IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(b[16], b[17], b[18], b[19]));
            let first_fragment = be16(b, 6) & 0x1fff == 0;
            Some(transport(
                src,
                dst,
                b[9],
                first_fragment,
                &b[ihl..total],
                ts,
            ))
        }
        0x86dd => {
            if b.len() < 40 || b[0] >> 4 != 6 {
                return None;
            }
            let plen = be16(b, 4) as usize;
            let end = if plen == 0 {
                b.len()
            } else {
                (40 + plen).min(b.len())
            };
            let src = IpAddr::V6(<[u8; 16]>::try_from(&b[8..24]).ok()?.into());
            let dst = IpAddr::V6(<[u8; 16]>::try_from(&b[24..40]).ok()?.into());
            let mut next = b[6];
            let mut body = &b[40..end];
            let mut first_fragment = true;
            loop {
                match next {
                    // hop-by-hop, routing, destination options
                    0 | 43 | 60 => {
                        if body.len() < 8 {
                            return None;
                        }
                        let len = (body[1] as usize + 1) * 8;
                        next = body[0];
                        body = body.get(len..)?;
                    }
                    // fragment
                    44 => {
                        if body.len() < 8 {
                            return None;
                        }
                        next = body[0];
                        first_fragment = be16(body, 2) >> 3 == 0;
                        body = &body[8..];
                        if !first_fragment {
                            break;
                        }
                    }
                    // authentication header
                    51 => {
                        if body.len() < 8 {
                            return None;
                        }
                        let len = (body[1] as usize + 2) * 4;
                        next = body[0];
                        body = body.get(len..)?;
                    }
                    _ => break,
                }
            }
            Some(transport(src, dst, next, first_fragment, body, ts))
        }
        _ => None,
    }
}

fn transport(
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    first_fragment: bool,
    body: &[u8],
    ts: Duration,
) -> Packet {
    let other = |payload: &[u8]| Packet {
        ts,
        src,
        dst,
        proto: Proto::Other(proto),
        src_port: 0,
        dst_port: 0,
        tcp_flags: 0,
        payload: payload.to_vec(),
    };
    if !first_fragment {
        return other(body);
    }
    match proto {
        17 if body.len() >= 8 => {
            let ulen = (be16(body, 4) as usize).clamp(8, body.len());
            Packet {
                ts,
                src,
                dst,
                proto: Proto::Udp,
                src_port: be16(body, 0),
                dst_port: be16(body, 2),
                tcp_flags: 0,
                payload: body[8..ulen].to_vec(),
            }
        }
        6 if body.len() >= 20 => {
            let doff = (body[12] >> 4) as usize * 4;
            if doff < 20 || doff > body.len() {
                return other(body);
            }
            Packet {
                ts,
                src,
                dst,
                proto: Proto::Tcp,
                src_port: be16(body, 0),
                dst_port: be16(body, 2),
                tcp_flags: body[13],
                payload: body[doff..].to_vec(),
            }
        }
        _ => other(body),
    }
}

/// True when the packet's payload carries `ip`: as its 4 raw bytes (binary
/// encodings), or as dotted text not preceded or followed by another digit
/// (so 10.200.0.1 is not found in 10.200.0.12).
pub fn payload_mentions(p: &Packet, ip: Ipv4Addr) -> bool {
    bytes_mention(&p.payload, ip)
}

/// [`payload_mentions`] on any byte string.
pub fn bytes_mention(data: &[u8], ip: Ipv4Addr) -> bool {
    let raw = ip.octets();
    if data.windows(4).any(|w| w == raw) {
        return true;
    }
    let text = ip.to_string();
    let t = text.as_bytes();
    data.windows(t.len()).enumerate().any(|(i, w)| {
        w == t
            && (i == 0 || !data[i - 1].is_ascii_digit())
            && data.get(i + t.len()).is_none_or(|c| !c.is_ascii_digit())
    })
}
