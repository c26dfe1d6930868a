//! mDNS discovery between two nodes, each in its own network namespace,
//! joined by a veth pair. Nothing is ever multicast on the machine's real
//! interfaces: each node runs in a child process started with
//! `ip netns exec`, which re-runs this test binary's ignored
//! `mdns_node_helper` test (the mdns-sd thread inherits the namespace of the
//! thread that creates it). The helper refuses to run unless it finds itself
//! in the namespace it was meant for.
//!
//! Needs root and `ip`; otherwise the test prints `skipped: <reason>`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshnode::discovery::mdns::{Found, Mdns, MdnsConfig, default_route_interfaces};
use meshnode::node::NodeId;

/// Set (to the expected namespace name) in the helper's environment.
const HELPER_ENV: &str = "MESHNODE_MDNS_HELPER_NETNS";
/// How long each expected event may take.
const DEADLINE: Duration = Duration::from_secs(3);
/// In `node_joins_a_lan_and_nodes_find_each_other`, A is started this long
/// before B, so A's two announcements (at start and about 1.1 s later) are
/// more than a second old when B starts browsing: B then measures joining an
/// established LAN rather than RFC 6762's once-a-second rate limit on A's
/// records (see `nodes_started_together_find_each_other`).
const STAGGER: Duration = Duration::from_millis(2500);

const ID_A: NodeId = NodeId([0xa1; 32]);
const ID_B: NodeId = NodeId([0xb2; 32]);
const PORT_A: u16 = 18081;
const PORT_B: u16 = 18082;

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the namespace test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root (network namespaces need root)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        Ok(_) => Some("`ip -V` failed".into()),
        Err(e) => Some(format!("`ip` (iproute2) is missing: {e}")),
    }
}

/// Two namespaces joined by `veth-a` (10.213.0.1/24) and `veth-b`
/// (10.213.0.2/24); deleted (with the veth pair) on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn create(tag: &str) -> Result<Self, String> {
        let pid = std::process::id();
        let ns = Netns {
            a: format!("mn-mdns-a-{pid}-{tag}"),
            b: format!("mn-mdns-b-{pid}-{tag}"),
        };
        // Leftovers of an earlier run that was killed with this pid.
        let _ = ip(&["netns", "del", &ns.a]);
        let _ = ip(&["netns", "del", &ns.b]);
        ip(&["netns", "add", &ns.a])?;
        // From here on, `ns` is dropped (and cleans up) on every error path.
        ip(&["netns", "add", &ns.b])?;
        let (a, b) = (ns.a.as_str(), ns.b.as_str());
        ip(&[
            "-n", a, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", b,
        ])?;
        ip(&["-n", a, "addr", "add", "10.213.0.1/24", "dev", "veth-a"])?;
        ip(&["-n", b, "addr", "add", "10.213.0.2/24", "dev", "veth-b"])?;
        for (n, dev) in [(a, "lo"), (b, "lo"), (a, "veth-a"), (b, "veth-b")] {
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        // A fresh veth gets its carrier up to a second after `link set up`;
        // until then mdns-sd leaves it out (it is not operationally up) and
        // only picks it up at its next interface check. Start on a LAN that is
        // up, as the figures printed below are about mDNS, not about links.
        wait_link_up(a, "veth-a")?;
        wait_link_up(b, "veth-b")?;
        Ok(ns)
    }
}

/// Waits until `dev` in namespace `ns` has its carrier and is operationally up.
fn wait_link_up(ns: &str, dev: &str) -> Result<(), String> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", dev])
            .output()
            .map_err(|e| format!("ip link show: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("LOWER_UP") && text.contains("state UP") {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{dev} in {ns} did not come up: {}", text.trim()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            if let Err(e) = ip(&["netns", "del", n]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A line the helper printed.
#[derive(Debug, Clone)]
enum Msg {
    /// Unix ms just before `Mdns::start`.
    Started(u128),
    /// A `Found`, and the unix ms it arrived.
    Found(Found, u128),
    /// `set_digest` returned, at unix ms.
    DigestSet(u128),
    Bye,
}

fn parse_msg(line: &str) -> Option<Msg> {
    // libtest may print `test mdns_node_helper ... ` in front of the first line.
    let mut w = line[line.find("@@")? + 2..].split_whitespace();
    let ms = |s: Option<&str>| s.and_then(|s| s.parse::<u128>().ok());
    Some(match w.next()? {
        "started" => Msg::Started(ms(w.next())?),
        "digest-set" => Msg::DigestSet(ms(w.next())?),
        "bye" => Msg::Bye,
        "found" => {
            let node = NodeId::from_hex(w.next()?)?;
            let name = w.next()?.to_string();
            let digest = w.next()?.to_string();
            let addrs = w
                .next()?
                .split(',')
                .map(|a| a.parse().ok())
                .collect::<Option<Vec<SocketAddr>>>()?;
            let at = ms(w.next())?;
            Msg::Found(
                Found {
                    node,
                    name,
                    addrs,
                    digest,
                },
                at,
            )
        }
        _ => return None,
    })
}

/// One node: the helper process inside a namespace. Killed on drop.
struct Node {
    label: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Msg>,
    seen: Vec<Msg>,
}

impl Node {
    fn spawn(label: &'static str, ns: &str, node: NodeId, port: u16, interfaces: &str) -> Node {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args([
                "--exact",
                "mdns_node_helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_ENV, ns)
            .env("MN_MDNS_ID", node.to_hex())
            .env("MN_MDNS_NAME", format!("N0CALL-{label}"))
            .env("MN_MDNS_DIGEST", format!("d-{label}-1"))
            .env("MN_MDNS_PORT", port.to_string())
            .env("MN_MDNS_IFACES", interfaces)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip netns exec");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(m) = parse_msg(&line) {
                    let _ = tx.send(m);
                }
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
            }
        });
        Node {
            label,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until `until` for a message matching `want`.
    fn expect<T>(&mut self, until: Instant, what: &str, want: impl Fn(&Msg) -> Option<T>) -> T {
        if let Some(t) = self.seen.iter().find_map(&want) {
            return t;
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(m) => {
                    let hit = want(&m);
                    self.seen.push(m);
                    if let Some(t) = hit {
                        return t;
                    }
                }
                Err(e) => panic!(
                    "node {}: no {what} in time ({e}); got {:#?}",
                    self.label, self.seen
                ),
            }
        }
    }

    fn send(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// Asks the helper to shut down and waits for it.
    fn quit(&mut self) {
        self.send("quit");
        self.stdin = None;
        self.expect(Instant::now() + DEADLINE, "bye", |m| {
            matches!(m, Msg::Bye).then_some(())
        });
        // Collect anything printed before the bye.
        self.seen.extend(self.lines.try_iter());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "node {} helper: {status}", self.label);
    }

    fn founds(&self) -> impl Iterator<Item = &Found> {
        self.seen.iter().filter_map(|m| match m {
            Msg::Found(f, _) => Some(f),
            _ => None,
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn found_of(
    node: NodeId,
    digest: &str,
    addr: SocketAddr,
) -> impl Fn(&Msg) -> Option<(Found, u128)> {
    move |m| match m {
        Msg::Found(f, at) if f.node == node && f.digest == digest && f.addrs.contains(&addr) => {
            Some((f.clone(), *at))
        }
        _ => None,
    }
}

/// A node joins a LAN where another has been up for a while: both see each
/// other, with the right id, name, digest and address, and a digest change
/// follows; nobody reports itself.
#[test]
fn node_joins_a_lan_and_nodes_find_each_other() {
    pair("join", STAGGER);
}

/// Two nodes start together (as after a power cut): A's answers to B's
/// first query fall under the once-a-second rate limit, so B only learns of
/// A from A's second announcement or B's next query, about a second later.
#[test]
fn nodes_started_together_find_each_other() {
    pair("boot", Duration::ZERO);
}

/// Runs A, then B `stagger` later, in fresh namespaces tagged `tag`, checks
/// what each finds and prints the timings.
fn pair(tag: &str, stagger: Duration) {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    // Declared first, so it is dropped after the nodes.
    let ns = match Netns::create(tag) {
        Ok(ns) => ns,
        Err(e) => {
            println!("skipped: cannot set up network namespaces: {e}");
            return;
        }
    };
    let addr_a: SocketAddr = ([10, 213, 0, 1], PORT_A).into();
    let addr_b: SocketAddr = ([10, 213, 0, 2], PORT_B).into();

    // A on its veth by name, B on the default selection (all but the
    // default-route interfaces: there are none in B's namespace).
    let mut a = Node::spawn("a", &ns.a, ID_A, PORT_A, "veth-a");
    a.expect(Instant::now() + DEADLINE, "start of A", |m| match m {
        Msg::Started(t) => Some(*t),
        _ => None,
    });
    std::thread::sleep(stagger);

    let mut b = Node::spawn("b", &ns.b, ID_B, PORT_B, "");
    let b_start = b.expect(Instant::now() + DEADLINE, "start of B", |m| match m {
        Msg::Started(t) => Some(*t),
        _ => None,
    });
    let until = Instant::now() + DEADLINE;
    let (seen_a, b_found_a) = b.expect(until, "Found for A", found_of(ID_A, "d-a-1", addr_a));
    assert_eq!(seen_a.name, "N0CALL-a");
    let (seen_b, a_found_b) = a.expect(until, "Found for B", found_of(ID_B, "d-b-1", addr_b));
    assert_eq!(seen_b.name, "N0CALL-b");

    a.send("digest new");
    let digest_at = a.expect(Instant::now() + DEADLINE, "digest-set", |m| match m {
        Msg::DigestSet(t) => Some(*t),
        _ => None,
    });
    let (_, b_new) = b.expect(
        Instant::now() + DEADLINE,
        "Found for A with digest new",
        found_of(ID_A, "new", addr_a),
    );

    println!(
        "mdns discovery ({tag}): B found A {} ms after B's start (A up for {} ms); \
         A (browsing) found B {} ms after B's start; \
         A's digest change reached B in {} ms",
        b_found_a.saturating_sub(b_start),
        stagger.as_millis(),
        a_found_b.saturating_sub(b_start),
        b_new.saturating_sub(digest_at),
    );

    a.quit();
    b.quit();
    assert!(
        a.founds().all(|f| f.node == ID_B),
        "A reported: {:?}",
        a.seen
    );
    assert!(
        b.founds().all(|f| f.node == ID_A),
        "B reported: {:?}",
        b.seen
    );
    // The same state is never reported twice in a row.
    for n in [&a, &b] {
        let f: Vec<&Found> = n.founds().collect();
        assert!(f.windows(2).all(|w| w[0] != w[1]), "{}: {f:?}", n.label);
    }
    drop((a, b));
    drop(ns);
}

/// Runs one node inside a namespace for the tests above; does nothing when
/// run directly.
///
/// Prints `@@started`, `@@found`, `@@digest-set` and `@@bye` lines; reads
/// `digest <value>` and `quit` from stdin.
#[test]
#[ignore = "helper, run by the namespace tests inside a namespace"]
fn mdns_node_helper() {
    let Ok(expected_ns) = std::env::var(HELPER_ENV) else {
        return;
    };
    // Never multicast outside the test namespace.
    let here = Command::new("ip")
        .args(["netns", "identify"])
        .output()
        .expect("ip netns identify");
    let here = String::from_utf8_lossy(&here.stdout);
    assert_eq!(
        here.trim(),
        expected_ns,
        "helper is not in its namespace; refusing to multicast"
    );
    assert!(
        default_route_interfaces().is_empty(),
        "helper namespace has a default route; refusing to multicast"
    );

    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "meshnode=debug".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();

    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let cfg = MdnsConfig {
        interfaces: var("MN_MDNS_IFACES")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        port: var("MN_MDNS_PORT").parse().unwrap(),
        node: NodeId::from_hex(&var("MN_MDNS_ID")).unwrap(),
        name: var("MN_MDNS_NAME"),
        digest: var("MN_MDNS_DIGEST"),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (cmd_tx, mut cmds) = tokio::sync::mpsc::channel::<String>(8);
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if cmd_tx.blocking_send(line).is_err() {
                    return;
                }
            }
            let _ = cmd_tx.blocking_send("quit".into());
        });

        let (tx, mut found) = tokio::sync::mpsc::channel(16);
        println!("@@started {}", unix_ms());
        let mdns = Mdns::start(cfg, tx).expect("Mdns::start");
        loop {
            tokio::select! {
                f = found.recv() => {
                    let f = f.expect("found channel closed");
                    let addrs: Vec<String> = f.addrs.iter().map(|a| a.to_string()).collect();
                    println!(
                        "@@found {} {} {} {} {}",
                        f.node.to_hex(), f.name, f.digest, addrs.join(","), unix_ms()
                    );
                }
                cmd = cmds.recv() => match cmd.as_deref().map(str::split_whitespace).map(|mut w| (w.next(), w.next())) {
                    Some((Some("digest"), Some(d))) => {
                        mdns.set_digest(d).expect("set_digest");
                        println!("@@digest-set {}", unix_ms());
                    }
                    _ => break,
                },
            }
        }
        mdns.shutdown();
        println!("@@bye");
    });
}

/// Reads this machine's routing tables: whatever they hold, the loopback
/// interface's kernel reject route is never taken for a default route.
#[test]
fn default_route_interfaces_on_this_host_exist_and_exclude_lo() {
    let names = default_route_interfaces();
    println!("default-route interfaces here: {names:?}");
    for n in &names {
        assert_ne!(n, "lo");
        assert!(
            std::path::Path::new("/sys/class/net").join(n).exists(),
            "{n} is not an interface"
        );
    }
}
