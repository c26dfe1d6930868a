//! `meshnode::failover` against the real kernel: the failover route and
//! rules are installed, switched and removed inside a private network
//! namespace, and the kernel's state is checked independently with `ip`
//! (parsed output) and with real sockets.
//!
//! Needs root (skips with a reason otherwise). Every test makes its own
//! namespace `mnfo-<pid>-<tag>` with two veth pairs inside it (nothing is
//! added to the root namespace, whose routing is never touched) and deletes
//! it when done, also on panic. The failover code runs on a thread that
//! joined the namespace with `setns` (netlink sockets belong to the network
//! namespace of the thread that creates them).
//!
//! Topology inside the namespace:
//!
//! ```text
//! up0    192.0.2.1/24  2001:db8:1::1/64     main: default via 192.0.2.254 / 2001:db8:1::fe
//! mesh0  10.77.0.1/24  2001:db8:77::1/64    gateways .2 and .3 (on-link, never answer)
//! ```
//!
//! "Outside" destinations are 198.51.100.1 and 2001:db8:ffff::1.

#[path = "common/netns.rs"]
mod netns;

use netns::{normalise, run_text as run, try_run_text as try_run};

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshnode::failover::{Failover, FailoverConfig, FailoverError, mark_socket};
use nix::sched::CloneFlags;
use nix::sys::socket::{getsockopt, sockopt};

const OUTSIDE4: &str = "198.51.100.1";
const OUTSIDE6: &str = "2001:db8:ffff::1";
const MAIN_GW4: &str = "192.0.2.254";
const MAIN_GW6: &str = "2001:db8:1::fe";
const NS_PREFIX: &str = "mnfo-";

// ---------------------------------------------------------------------------
// The namespace

/// A network namespace with the topology above; deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        reap_stale();
        let name = format!("{NS_PREFIX}{}-{tag}", std::process::id());
        // A leftover of this very pid (cannot normally happen) is replaced.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        for (dev, peer) in [("up0", "up0p"), ("mesh0", "mesh0p")] {
            ns.ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
            ns.ip(&["link", "set", dev, "up"]);
            ns.ip(&["link", "set", peer, "up"]);
        }
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "mesh0"]);
        // nodad: usable at once, no waiting for duplicate address detection
        ns.ip(&["addr", "add", "2001:db8:1::1/64", "dev", "up0", "nodad"]);
        ns.ip(&["addr", "add", "2001:db8:77::1/64", "dev", "mesh0", "nodad"]);
        ns.ip(&["route", "add", "default", "via", MAIN_GW4]);
        ns.ip(&["-6", "route", "add", "default", "via", MAIN_GW6]);
        ns
    }

    /// `ip -n <ns> args...`; panics with stderr on failure.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` on a thread inside the namespace, with a current-thread
    /// tokio runtime built there.
    fn run<T: Send>(&self, f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> T {
        std::thread::scope(|s| {
            let thread = s.spawn(|| {
                let path = format!("/run/netns/{}", self.name);
                let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .expect("setns into test namespace");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                f(&rt)
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Lines of `ip -<fam> route show table <table>`, whitespace-normalised;
    /// empty when the table does not exist.
    fn table(&self, fam: &str, table: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, fam, "route", "show", "table", table])
            .output()
            .expect("ip");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            assert!(
                stderr.contains("does not exist"),
                "ip route show table {table}: {stderr}"
            );
            return Vec::new();
        }
        // Multipath routes continue on indented "nexthop" lines: join them.
        let mut lines: Vec<String> = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let norm = normalise(line);
            if norm.is_empty() {
                continue;
            }
            match lines.last_mut() {
                Some(prev) if line.starts_with(char::is_whitespace) => {
                    prev.push_str(" | ");
                    prev.push_str(&norm);
                }
                _ => lines.push(norm),
            }
        }
        lines
    }

    /// Lines of `ip -<fam> rule show`, whitespace-normalised.
    fn rules(&self, fam: &str) -> Vec<String> {
        self.ip(&[fam, "rule", "show"])
            .lines()
            .map(normalise)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// First line of `ip -<fam> route get <args>`.
    fn route_get(&self, fam: &str, args: &[&str]) -> String {
        let mut all = vec![fam, "route", "get"];
        all.extend_from_slice(args);
        normalise(self.ip(&all).lines().next().unwrap_or_default())
    }

    fn ifindex(&self, dev: &str) -> u32 {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("ifindex of {dev} in {out:?}"))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Err(e) = try_run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

fn reap_stale() {
    netns::reap_stale_namespaces(NS_PREFIX);
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

// ---------------------------------------------------------------------------
// What "ours" looks like in `ip` output

/// Route lines of ours: `proto 158` (only meaningful for table 7734).
fn ours(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains(" proto 158"))
        .cloned()
        .collect()
}

fn not_ours(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.contains(" proto 158"))
        .cloned()
        .collect()
}

/// Rule lines of ours: at 7733..=7735 and `proto 158`.
fn our_rules(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| is_our_rule(l)).cloned().collect()
}

fn foreign_rules(lines: &[String]) -> Vec<String> {
    lines.iter().filter(|l| !is_our_rule(l)).cloned().collect()
}

fn is_our_rule(l: &str) -> bool {
    ["7733:", "7734:", "7735:"].iter().any(|p| l.starts_with(p)) && l.ends_with(" proto 158")
}

/// The three rules as `ip rule show` prints them.
fn expected_rules() -> Vec<String> {
    vec![
        "7733: from all fwmark 0x6d6e lookup main proto 158".to_string(),
        "7734: from all lookup main suppress_prefixlength 0 proto 158".to_string(),
        "7735: from all lookup 7734 proto 158".to_string(),
    ]
}

/// Everything outside our control that a test checks stays as it was.
#[derive(Debug, PartialEq, Eq)]
struct Foreign {
    table4: Vec<String>,
    table6: Vec<String>,
    table100: Vec<String>,
    main4: Vec<String>,
    main6: Vec<String>,
    rules4: Vec<String>,
    rules6: Vec<String>,
}

impl Foreign {
    fn read(ns: &Ns) -> Foreign {
        Foreign {
            table4: not_ours(&ns.table("-4", "7734")),
            table6: not_ours(&ns.table("-6", "7734")),
            table100: ns.table("-4", "100"),
            main4: ns.table("-4", "main"),
            main6: ns.table("-6", "main"),
            rules4: foreign_rules(&ns.rules("-4")),
            rules6: foreign_rules(&ns.rules("-6")),
        }
    }
}

/// Asserts that nothing of ours is left in either family.
fn assert_nothing_of_ours(ns: &Ns, when: &str) {
    assert_eq!(
        ours(&ns.table("-4", "7734")),
        Vec::<String>::new(),
        "{when}: IPv4 routes"
    );
    assert_eq!(
        ours(&ns.table("-6", "7734")),
        Vec::<String>::new(),
        "{when}: IPv6 routes"
    );
    assert_eq!(
        our_rules(&ns.rules("-4")),
        Vec::<String>::new(),
        "{when}: IPv4 rules"
    );
    assert_eq!(
        our_rules(&ns.rules("-6")),
        Vec::<String>::new(),
        "{when}: IPv6 rules"
    );
}

/// The local address a UDP socket (optionally marked) gets when connected
/// to `dst`: tells which route the kernel picked for it.
fn udp_source(dst: &str, mark: Option<u32>) -> IpAddr {
    let bind = if ip(dst).is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).expect("udp bind");
    if let Some(m) = mark {
        mark_socket(sock.as_fd(), m).expect("mark_socket as root");
        assert_eq!(getsockopt(&sock, sockopt::Mark).expect("SO_MARK"), m);
    }
    sock.connect((ip(dst), 9)).expect("udp connect");
    sock.local_addr().expect("local addr").ip()
}

// ---------------------------------------------------------------------------
// Tests

/// Start on a namespace with foreign state in our table and at our rule
/// priorities; fail over, check lookups and sockets, switch gateway without
/// a gap, survive a refused gateway, turn off, fail over again, stop.
#[test]
fn failover_installs_switches_and_removes_only_its_own_state() {
    let test = "failover_installs_switches_and_removes_only_its_own_state";
    if netns::skip_unless_root(test) {
        return;
    }
    let ns = Ns::new("main");
    // Foreign state that looks like ours: a default route in our table (same
    // route key as ours, other protocol), a route with our protocol in
    // another table, our fwmark rule added by someone else (proto static),
    // and a rule with our protocol at another priority.
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.77.0.9",
        "table",
        "7734",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "10.77.0.3",
        "table",
        "100",
        "proto",
        "158",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "7733", "fwmark", "0x6d6e", "lookup", "main", "protocol",
        "static",
    ]);
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "9000",
        "from",
        "203.0.113.0/24",
        "lookup",
        "100",
        "protocol",
        "158",
    ]);
    let foreign = Foreign::read(&ns);
    assert_eq!(
        foreign.table4,
        vec!["default via 10.77.0.9 dev mesh0 proto static".to_string()]
    );
    assert!(
        foreign
            .rules4
            .iter()
            .any(|r| r == "7733: from all fwmark 0x6d6e lookup main proto static")
    );
    assert!(
        foreign
            .rules4
            .iter()
            .any(|r| r == "9000: from 203.0.113.0/24 lookup 100 proto 158")
    );
    let mesh0 = ns.ifindex("mesh0");

    ns.run(|rt| {
        let mut fo = rt
            .block_on(Failover::start(FailoverConfig::default()))
            .expect("start");
        assert_eq!(Foreign::read(&ns), foreign, "start removed foreign state");
        assert_nothing_of_ours(&ns, "after start");
        assert_eq!(rt.block_on(fo.current()).expect("current"), None);
        assert!(
            ns.route_get("-4", &[OUTSIDE4])
                .starts_with(&format!("{OUTSIDE4} via {MAIN_GW4} dev up0"))
        );
        assert_eq!(udp_source(OUTSIDE4, None), ip("192.0.2.1"));

        // --- fail over via 10.77.0.2
        rt.block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
            .expect("set_gateway .2");
        assert_eq!(
            ours(&ns.table("-4", "7734")),
            vec!["default via 10.77.0.2 dev mesh0 proto 158".to_string()]
        );
        assert_eq!(our_rules(&ns.rules("-4")), expected_rules());
        assert_eq!(
            Foreign::read(&ns),
            foreign,
            "failover changed foreign state"
        );
        let cur = rt
            .block_on(fo.current())
            .expect("current")
            .expect("installed");
        assert_eq!((cur.addr, cur.ifindex), (ip("10.77.0.2"), Some(mesh0)));
        assert_eq!(
            rt.block_on(fo.dry_run(Some(cur))).expect("dry run"),
            vec![],
            "what we read back is exactly what we asked for"
        );

        // The outside goes via the gateway (ours precedes the foreign
        // default route with the same key), although main still has its
        // own default route.
        let get = ns.route_get("-4", &[OUTSIDE4]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via 10.77.0.2 dev mesh0 table 7734")),
            "{get}"
        );
        assert!(
            foreign
                .main4
                .iter()
                .any(|l| l.starts_with(&format!("default via {MAIN_GW4}")))
        );
        // Marked traffic (probes) still uses the own uplink.
        let get = ns.route_get("-4", &[OUTSIDE4, "mark", "0x6d6e"]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via {MAIN_GW4} dev up0")),
            "{get}"
        );
        // Specific main-table routes (LAN, mesh) still win over the failover.
        let get = ns.route_get("-4", &["192.0.2.77"]);
        assert!(get.starts_with("192.0.2.77 dev up0"), "{get}");
        // Real sockets agree; mark_socket is what probes call.
        assert_eq!(udp_source(OUTSIDE4, None), ip("10.77.0.1"));
        assert_eq!(udp_source(OUTSIDE4, Some(0x6d6e)), ip("192.0.2.1"));
        assert_eq!(
            udp_source(OUTSIDE4, Some(0x1)),
            ip("10.77.0.1"),
            "other marks fail over"
        );

        // Idempotent: the same call again changes nothing.
        let before = (ns.table("-4", "7734"), ns.rules("-4"));
        rt.block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
            .expect("set_gateway .2 again");
        assert_eq!((ns.table("-4", "7734"), ns.rules("-4")), before);

        // --- switch to 10.77.0.3: the new route is added before the old one
        // is deleted (watched with `ip monitor`), and rules stay.
        let rules_before = ns.rules("-4");
        let monitor = Monitor::start(&ns);
        rt.block_on(fo.set_gateway(Some(ip("10.77.0.3"))))
            .expect("set_gateway .3");
        let events = monitor.stop();
        let ours_events: Vec<&String> = events.iter().filter(|l| l.contains("proto 158")).collect();
        assert_eq!(ours_events.len(), 2, "one add and one delete: {events:#?}");
        assert!(
            ours_events[0].starts_with("default via 10.77.0.3 dev mesh0 table 7734"),
            "add first: {events:#?}"
        );
        assert!(
            ours_events[1].starts_with("Deleted default via 10.77.0.2 dev mesh0 table 7734"),
            "then delete: {events:#?}"
        );
        assert_eq!(
            ours(&ns.table("-4", "7734")),
            vec!["default via 10.77.0.3 dev mesh0 proto 158".to_string()]
        );
        assert_eq!(ns.rules("-4"), rules_before, "rules untouched by a switch");
        let get = ns.route_get("-4", &[OUTSIDE4]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via 10.77.0.3 dev mesh0")),
            "{get}"
        );

        // --- a gateway that is not on-link: the kernel's text comes
        // through, and the working failover stays.
        let err = rt
            .block_on(fo.set_gateway(Some(ip("10.99.9.9"))))
            .expect_err("unreachable gateway");
        let text = err.to_string();
        assert!(matches!(err, FailoverError::Kernel { .. }), "{err:?}");
        assert!(text.contains("Nexthop has invalid gateway"), "{text}");
        assert!(text.contains("10.99.9.9"), "{text}");
        assert_eq!(err.errno(), Some(nix::errno::Errno::ENETUNREACH), "{text}");
        assert_eq!(
            rt.block_on(fo.current()).expect("current").map(|g| g.addr),
            Some(ip("10.77.0.3"))
        );

        // --- uplink back: nothing of ours, foreign intact, main default used.
        rt.block_on(fo.set_gateway(None)).expect("set_gateway None");
        assert_nothing_of_ours(&ns, "after set_gateway(None)");
        assert_eq!(Foreign::read(&ns), foreign, "removal changed foreign state");
        assert_eq!(rt.block_on(fo.current()).expect("current"), None);
        let get = ns.route_get("-4", &[OUTSIDE4]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via {MAIN_GW4} dev up0")),
            "{get}"
        );

        // --- fail over again, then shut down.
        rt.block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
            .expect("set_gateway .2");
        assert_eq!(our_rules(&ns.rules("-4")).len(), 3);
        rt.block_on(fo.stop()).expect("stop");
        assert_nothing_of_ours(&ns, "after stop");
        assert_eq!(Foreign::read(&ns), foreign, "stop changed foreign state");
    });
}

/// State left by a crashed run (added by hand with `ip`, and by a Failover
/// dropped without stop) is removed by start(); foreign state stays.
#[test]
fn start_removes_stale_state_of_a_crashed_run() {
    let test = "start_removes_stale_state_of_a_crashed_run";
    if netns::skip_unless_root(test) {
        return;
    }
    let ns = Ns::new("stale");
    // Foreign: a route in our table with another protocol, and a rule at
    // our P+1 priority that is not ours.
    ns.ip(&[
        "route",
        "add",
        "203.0.113.0/24",
        "via",
        "10.77.0.9",
        "table",
        "7734",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "7735",
        "from",
        "203.0.113.0/24",
        "lookup",
        "7734",
    ]);
    let foreign = Foreign::read(&ns);
    assert_eq!(foreign.table4.len(), 1);

    // Stale, IPv4 and IPv6, as an earlier meshnode would have left it.
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.77.0.3",
        "table",
        "7734",
        "proto",
        "158",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "7733", "fwmark", "0x6d6e", "lookup", "main", "protocol", "158",
    ]);
    ns.ip(&[
        "rule",
        "add",
        "priority",
        "7734",
        "lookup",
        "main",
        "suppress_prefixlength",
        "0",
        "protocol",
        "158",
    ]);
    ns.ip(&[
        "rule", "add", "priority", "7735", "lookup", "7734", "protocol", "158",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:77::3",
        "table",
        "7734",
        "proto",
        "158",
    ]);
    ns.ip(&[
        "-6", "rule", "add", "priority", "7735", "lookup", "7734", "protocol", "158",
    ]);
    assert_eq!(our_rules(&ns.rules("-4")), expected_rules());
    assert_eq!(our_rules(&ns.rules("-6")).len(), 1);
    let get = ns.route_get("-4", &[OUTSIDE4]);
    assert!(
        get.starts_with(&format!("{OUTSIDE4} via 10.77.0.3 dev mesh0")),
        "stale state is live: {get}"
    );

    ns.run(|rt| {
        let fo = rt
            .block_on(Failover::start(FailoverConfig::default()))
            .expect("start");
        assert_nothing_of_ours(&ns, "after start on stale state");
        assert_eq!(Foreign::read(&ns), foreign, "start changed foreign state");
        let get = ns.route_get("-4", &[OUTSIDE4]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via {MAIN_GW4} dev up0")),
            "{get}"
        );
        let get = ns.route_get("-6", &[OUTSIDE6]);
        assert!(get.contains(&format!("via {MAIN_GW6} dev up0")), "{get}");
        rt.block_on(fo.stop()).expect("stop");

        // A run that ends without stop() (crash) leaves its state ...
        let mut fo = rt
            .block_on(Failover::start(FailoverConfig::default()))
            .expect("start");
        rt.block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
            .expect("set_gateway");
        drop(fo);
        assert_eq!(
            our_rules(&ns.rules("-4")),
            expected_rules(),
            "drop keeps the failover"
        );
        assert_eq!(ours(&ns.table("-4", "7734")).len(), 1);
        // ... which the next start removes.
        let fo = rt
            .block_on(Failover::start(FailoverConfig::default()))
            .expect("start after crash");
        assert_nothing_of_ours(&ns, "after start after a drop");
        assert_eq!(Foreign::read(&ns), foreign);
        rt.block_on(fo.stop()).expect("stop");
    });
}

/// IPv6: the gateway's family picks the family; a switch leaves one route
/// (not a multipath leftover); switching to an IPv4 gateway removes the
/// IPv6 failover.
#[test]
fn ipv6_failover_and_family_switch() {
    let test = "ipv6_failover_and_family_switch";
    if netns::skip_unless_root(test) {
        return;
    }
    let ns = Ns::new("v6");
    let foreign = Foreign::read(&ns);
    ns.run(|rt| {
        let mut fo = rt
            .block_on(Failover::start(FailoverConfig::default()))
            .expect("start");
        rt.block_on(fo.set_gateway(Some(ip("2001:db8:77::2"))))
            .expect("set_gateway v6");
        assert_eq!(
            ours(&ns.table("-6", "7734")),
            vec![
                "default via 2001:db8:77::2 dev mesh0 proto 158 metric 1024 pref medium"
                    .to_string()
            ]
        );
        assert_eq!(our_rules(&ns.rules("-6")), expected_rules());
        assert_eq!(
            our_rules(&ns.rules("-4")),
            Vec::<String>::new(),
            "no IPv4 rules for an IPv6 gateway"
        );
        let get = ns.route_get("-6", &[OUTSIDE6]);
        assert!(
            get.contains("via 2001:db8:77::2 dev mesh0 table 7734"),
            "{get}"
        );
        let get = ns.route_get("-6", &[OUTSIDE6, "mark", "0x6d6e"]);
        assert!(get.contains(&format!("via {MAIN_GW6} dev up0")), "{get}");
        assert_eq!(udp_source(OUTSIDE6, None), ip("2001:db8:77::1"));
        assert_eq!(udp_source(OUTSIDE6, Some(0x6d6e)), ip("2001:db8:1::1"));
        // IPv4 is not affected by an IPv6 failover.
        let get = ns.route_get("-4", &[OUTSIDE4]);
        assert!(
            get.starts_with(&format!("{OUTSIDE4} via {MAIN_GW4} dev up0")),
            "{get}"
        );

        rt.block_on(fo.set_gateway(Some(ip("2001:db8:77::3"))))
            .expect("switch v6");
        assert_eq!(
            ours(&ns.table("-6", "7734")),
            vec![
                "default via 2001:db8:77::3 dev mesh0 proto 158 metric 1024 pref medium"
                    .to_string()
            ],
            "exactly one route, not a multipath"
        );
        assert_eq!(our_rules(&ns.rules("-6")), expected_rules());
        assert_eq!(
            rt.block_on(fo.current()).expect("current").map(|g| g.addr),
            Some(ip("2001:db8:77::3"))
        );

        rt.block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
            .expect("switch to v4");
        assert_eq!(ours(&ns.table("-6", "7734")), Vec::<String>::new());
        assert_eq!(our_rules(&ns.rules("-6")), Vec::<String>::new());
        assert_eq!(our_rules(&ns.rules("-4")), expected_rules());
        assert_eq!(
            ours(&ns.table("-4", "7734")),
            vec!["default via 10.77.0.2 dev mesh0 proto 158".to_string()]
        );
        let get = ns.route_get("-6", &[OUTSIDE6]);
        assert!(get.contains(&format!("via {MAIN_GW6} dev up0")), "{get}");

        rt.block_on(fo.stop()).expect("stop");
        assert_nothing_of_ours(&ns, "after stop");
        assert_eq!(Foreign::read(&ns), foreign);
    });
}

/// Env var that turns [`eperm_child`] from a no-op into the real check.
const CHILD_ENV: &str = "MESHNODE_FAILOVER_EPERM_CHILD";

/// Without CAP_NET_ADMIN (root uid, CAP_NET_ADMIN and CAP_NET_RAW dropped
/// with `setpriv`, in the test namespace) changes fail with the "needs
/// CAP_NET_ADMIN" error, and mark_socket with EPERM.
#[test]
fn without_cap_net_admin_the_error_says_so() {
    let test = "without_cap_net_admin_the_error_says_so";
    if netns::skip_unless_root(test) || netns::skip_unless_tool(test, "setpriv") {
        return;
    }
    let ns = Ns::new("eperm");
    let exe = std::env::current_exe().expect("test executable");
    let exe = exe.to_str().expect("utf-8 path");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            "--inh-caps=-net_admin,-net_raw",
        ])
        .args([
            "--bounding-set=-net_admin,-net_raw",
            exe,
            "--exact",
            "eperm_child",
            "--nocapture",
        ])
        .args(["--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let result = stdout
        .lines()
        .chain(stderr.lines())
        .find_map(|l| l.split_once("EPERM-CHILD: ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("child printed no result:\n{stdout}\n{stderr}"));
    assert!(
        result.contains("failover needs CAP_NET_ADMIN (run meshnode as root"),
        "{result}"
    );
    assert!(
        result.contains("adding route default via 10.77.0.2"),
        "{result}"
    );
    assert!(
        stdout.contains("EPERM-CHILD-MARK: EPERM") || stderr.contains("EPERM-CHILD-MARK: EPERM"),
        "mark_socket without the capability:\n{stdout}\n{stderr}"
    );
    assert_nothing_of_ours(&ns, "after the refused child");
}

/// The child half of [`without_cap_net_admin_the_error_says_so`]; does
/// nothing unless started by it.
#[test]
fn eperm_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Reading needs no capability, so start() succeeds on a clean namespace.
    let mut fo = rt
        .block_on(Failover::start(FailoverConfig::default()))
        .expect("start without CAP_NET_ADMIN on a clean namespace");
    let err = rt
        .block_on(fo.set_gateway(Some(ip("10.77.0.2"))))
        .expect_err("must be refused");
    assert!(
        matches!(err, FailoverError::PermissionDenied { .. }),
        "{err:?}"
    );
    println!("EPERM-CHILD: {err}");
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp");
    let mark =
        mark_socket(sock.as_fd(), 0x6d6e).expect_err("SO_MARK needs CAP_NET_ADMIN or CAP_NET_RAW");
    println!(
        "EPERM-CHILD-MARK: {:?}",
        nix::errno::Errno::from_raw(mark.raw_os_error().unwrap_or(0))
    );
}

// ---------------------------------------------------------------------------
// ip monitor

/// `ip -n <ns> monitor route` running in the background; killed on drop.
/// Start and end are synchronised with sentinel events (a route in table
/// 99, which nothing else looks at), so no sleeps decide what is seen.
struct Monitor<'a> {
    ns: &'a Ns,
    child: Option<std::process::Child>,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The sentinel route; its add and delete bracket the events of interest.
const SENTINEL: &str = "192.0.2.200";

impl<'a> Monitor<'a> {
    /// Starts the monitor and waits until it reports events.
    fn start(ns: &'a Ns) -> Monitor<'a> {
        let mut child = Command::new("ip")
            .args(["-n", &ns.name, "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ip monitor");
        let pipe = child.stdout.take().expect("monitor stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let line = normalise(&line);
                if !line.is_empty() {
                    sink.lock().expect("monitor lines").push(line);
                }
            }
        });
        let mut m = Monitor {
            ns,
            child: Some(child),
            lines,
            reader: Some(reader),
        };
        // The monitor may subscribe after the first add: repeat until seen.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sentinel = format!("{SENTINEL}/32");
            let _ = try_run(
                "ip",
                &[
                    "-n", &ns.name, "route", "add", &sentinel, "dev", "up0", "table", "99",
                ],
            );
            if m.wait_for(|l| l.starts_with(SENTINEL), Duration::from_millis(200)) {
                break;
            }
            let _ = try_run(
                "ip",
                &[
                    "-n", &ns.name, "route", "del", &sentinel, "dev", "up0", "table", "99",
                ],
            );
            assert!(Instant::now() < deadline, "ip monitor reports nothing");
        }
        m.lines.lock().expect("monitor lines").clear();
        m
    }

    /// True once a line matching `pred` arrived, false after `within`.
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .expect("monitor lines")
                .iter()
                .any(|l| pred(l))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Stops it once every earlier event has arrived (the sentinel's delete
    /// comes after them) and returns the lines before that.
    fn stop(mut self) -> Vec<String> {
        let sentinel = format!("{SENTINEL}/32");
        self.ns
            .ip(&["route", "del", &sentinel, "dev", "up0", "table", "99"]);
        let end = format!("Deleted {SENTINEL}");
        assert!(
            self.wait_for(|l| l.starts_with(&end), Duration::from_secs(10)),
            "ip monitor missed the end sentinel: {:#?}",
            self.lines.lock().expect("monitor lines")
        );
        let lines = self.lines.lock().expect("monitor lines").clone();
        lines
            .into_iter()
            .take_while(|l| !l.starts_with(&end))
            .collect()
    }
}

impl Drop for Monitor<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
