//! `meshnode::shaping::tc` against the real kernel: HTB trees installed,
//! read back, re-rated, shrunk and removed over rtnetlink, the IFB redirect
//! for uploads, and the refusal to touch a root qdisc meshnode did not
//! install. The kernel's state is checked independently with `tc` (parsed
//! output) and real UDP traffic through the classes.
//!
//! Needs root (skips with a reason otherwise). Every test makes its own two
//! namespaces `mntc-<pid>-<tag>-{a,b}` joined by a veth pair (nothing is
//! added to the root namespace) and deletes them when done, also on panic.
//! The shaping code runs on a thread that joined namespace `a` with `setns`
//! (netlink sockets belong to the network namespace of the thread that
//! creates them).
//!
//! ```text
//! ns a (the router)                       ns b (the clients)
//! lan0 192.0.2.1/24  02:00:00:00:00:01 ── cli0 192.0.2.10, .11, .12 /24  02:00:00:00:00:02
//! mnifb0 (ifb, made by the tests)
//! ```
//!
//! Neighbour entries are static, so no packet waits for ARP (packets queued
//! for an unresolved neighbour can be dropped before they reach the qdisc,
//! which would make byte counts flaky).

#[path = "common/netns.rs"]
mod netns;

use netns::{normalise, run_text as run, try_run_text as try_run};

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use meshnode::shaping::plan::{
    ClassSpec, Dir, FilterSpec, MAJOR, Match, Op, Tree, diff, leaf_queue_bytes,
};
use meshnode::shaping::tc::{Tc, TcError};
use nix::sched::CloneFlags;

const NS_PREFIX: &str = "mntc-";
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
];
const LAN: &str = "lan0";
const IFB: &str = "mnifb0";
/// UDP payload per test packet, and packets per burst.
const PAYLOAD: usize = 1000;
const PACKETS: usize = 50;

// ---------------------------------------------------------------------------
// The namespaces

struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        reap_stale();
        let base = format!("{NS_PREFIX}{}-{tag}", std::process::id());
        let lab = Lab {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        for ns in [&lab.a, &lab.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "-n", &lab.a, "link", "add", LAN, "type", "veth", "peer", "name", "cli0", "netns",
                &lab.b,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &lab.a,
                "link",
                "set",
                LAN,
                "address",
                "02:00:00:00:00:01",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &lab.b,
                "link",
                "set",
                "cli0",
                "address",
                "02:00:00:00:00:02",
            ],
        );
        run(
            "ip",
            &["-n", &lab.a, "addr", "add", "192.0.2.1/24", "dev", LAN],
        );
        for c in CLIENTS {
            run(
                "ip",
                &[
                    "-n",
                    &lab.b,
                    "addr",
                    "add",
                    &format!("{c}/24"),
                    "dev",
                    "cli0",
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    &lab.a,
                    "neigh",
                    "add",
                    &c.to_string(),
                    "lladdr",
                    "02:00:00:00:00:02",
                    "dev",
                    LAN,
                    "nud",
                    "permanent",
                ],
            );
        }
        run(
            "ip",
            &[
                "-n",
                &lab.b,
                "neigh",
                "add",
                &ROUTER.to_string(),
                "lladdr",
                "02:00:00:00:00:01",
                "dev",
                "cli0",
                "nud",
                "permanent",
            ],
        );
        run("ip", &["-n", &lab.a, "link", "set", LAN, "up"]);
        run("ip", &["-n", &lab.b, "link", "set", "cli0", "up"]);
        lab
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn inside<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let path = format!("/run/netns/{ns}");
                let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs `f` inside the router namespace with a current-thread runtime.
    fn router<T: Send>(&self, f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> T {
        Lab::inside(&self.a, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            f(&rt)
        })
    }

    /// `tc -n a <args>`; panics with stderr on failure.
    fn tc(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.a];
        all.extend_from_slice(args);
        run("tc", &all)
    }

    /// Sends [`PACKETS`] UDP datagrams of [`PAYLOAD`] bytes from the router
    /// to `dst`; returns the IP bytes sent (payload + UDP + IP headers).
    fn send_down(&self, dst: Ipv4Addr) -> u64 {
        let _sink = Lab::inside(&self.b, || sink(dst));
        Lab::inside(&self.a, || blast(ROUTER, dst))
    }

    /// The same from client `src` up to the router (arrives on lan0's
    /// ingress).
    fn send_up(&self, src: Ipv4Addr) -> u64 {
        let _sink = Lab::inside(&self.a, || sink(ROUTER));
        Lab::inside(&self.b, || blast(src, ROUTER))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(e) = try_run("ip", &["netns", "del", ns]) {
                eprintln!("warning: could not delete namespace {ns}: {e}");
            }
        }
    }
}

/// A socket bound to port 9 of `addr` (in the calling thread's namespace):
/// the datagrams are accepted there, so the receiver sends no ICMP port
/// unreachable back, which would be counted in the other direction.
fn sink(addr: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((addr, 9))).expect("bind udp sink")
}

fn blast(src: Ipv4Addr, dst: Ipv4Addr) -> u64 {
    let sock = UdpSocket::bind(SocketAddr::from((src, 0))).expect("udp bind");
    let to = SocketAddr::from((dst, 9));
    let payload = [0x5au8; PAYLOAD];
    for _ in 0..PACKETS {
        // A full socket buffer would be an error, not a silent drop.
        sock.send_to(&payload, to).expect("udp send");
    }
    (PACKETS * (PAYLOAD + 8 + 20)) as u64
}

fn reap_stale() {
    netns::reap_stale_namespaces(NS_PREFIX);
}

/// The `tc -s class show` block (first line plus its indented lines) of
/// class `id`, whitespace-normalised and joined with " | ".
fn class_block(text: &str, id: &str) -> Option<String> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&format!("class htb {id} ")) {
            let mut block = vec![normalise(l)];
            for more in lines.by_ref() {
                if !more.starts_with(' ') || more.trim().is_empty() {
                    break;
                }
                block.push(normalise(more));
            }
            return Some(block.join(" | "));
        }
    }
    None
}

/// "Sent <n> bytes" of a class block.
fn sent_bytes(block: &str) -> u64 {
    let rest = block.split("Sent ").nth(1).expect("Sent in block");
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("byte count in {block}"))
}

// ---------------------------------------------------------------------------
// Trees

fn class(minor: u16, parent: u16, rate: u64, ceil: u64, prio: u32) -> ClassSpec {
    ClassSpec {
        minor,
        parent,
        rate,
        ceil,
        prio,
    }
}

fn filter(pref: u16, ip: Ipv4Addr, dir: Dir, class: u16) -> FilterSpec {
    FilterSpec {
        pref,
        key: Match::addr(dir, ip),
        class,
    }
}

/// The LAN link 6d6e:1 at 8 Mbit/s, clients .10 and .11 with 2 Mbit/s each
/// borrowing up to the link, a default class, a 5/40 Gbit/s class that
/// needs the 64-bit attributes, and DSCP EF sent to the default class.
fn lan_tree(dir: Dir) -> Tree {
    Tree {
        default_class: 0x20,
        classes: vec![
            class(1, 0, 1_000_000, 1_000_000, 0),
            class(0x10, 1, 250_000, 1_000_000, 1),
            class(0x11, 1, 250_000, 1_000_000, 1),
            class(0x20, 1, 125_000, 1_000_000, 7),
            class(0x30, 0, 625_000_000, 5_000_000_000, 2),
        ],
        filters: vec![
            FilterSpec {
                pref: 1,
                key: Match::Dscp(46),
                class: 0x20,
            },
            filter(10, CLIENTS[0], dir, 0x10),
            filter(11, CLIENTS[1], dir, 0x11),
        ],
    }
}

fn sorted(t: &Tree) -> Tree {
    let mut t = t.clone();
    t.classes.sort_by_key(|c| c.minor);
    t.filters.sort_by_key(|f| f.pref);
    t
}

/// Reads the tree back and checks it is `want`, and that diff agrees.
async fn assert_tree(tc: &Tc, ifindex: u32, want: &Tree) {
    let got = tc
        .read_tree(ifindex)
        .await
        .expect("read_tree")
        .expect("our qdisc is there");
    assert_eq!(sorted(&got), sorted(want));
    assert_eq!(diff(want, Some(&got)), vec![]);
}

/// Polls the class's byte counter until it reaches `at_least` (shaped
/// traffic drains over time); returns the last value.
async fn wait_bytes(tc: &Tc, ifindex: u32, minor: u16, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = tc.class_stats(ifindex).await.expect("class_stats");
        let s = stats
            .iter()
            .find(|s| s.minor == minor)
            .unwrap_or_else(|| panic!("no stats for class {minor:x}: {stats:?}"));
        if s.bytes >= at_least || Instant::now() > deadline {
            return s.bytes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn class_bytes(tc: &Tc, ifindex: u32, minor: u16) -> u64 {
    wait_bytes(tc, ifindex, minor, 0).await
}

/// Leaf qdiscs as `tc qdisc show` prints them: (parent class, limit text).
fn leaves(lab: &Lab, dev: &str) -> Vec<(String, String)> {
    lab.tc(&["qdisc", "show", "dev", dev])
        .lines()
        .map(normalise)
        .filter(|l| l.starts_with("qdisc bfifo "))
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            let at = |key: &str| {
                let i = words.iter().position(|w| *w == key).expect(key);
                words[i + 1].to_string()
            };
            (at("parent"), at("limit"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Tests

/// Install on lan0, read back (also with `tc`), shape real traffic,
/// re-rate a class in place, let a client leave, change the default class,
/// and remove everything.
#[test]
fn tree_is_installed_read_back_rerated_shrunk_and_removed() {
    if netns::skip_unless_root("tree_is_installed_read_back_rerated_shrunk_and_removed") {
        return;
    }
    let lab = Lab::new("tree");
    lab.router(|rt| {
        rt.block_on(async {
            let tc = Tc::connect().await.expect("connect");
            let lan = tc.ifindex(LAN).await.expect("ifindex");
            assert!(matches!(
                tc.ifindex("nosuch0").await,
                Err(TcError::NoSuchLink { .. })
            ));
            // A veth starts with the kernel's default (noqueue): not ours.
            assert_eq!(tc.read_tree(lan).await.expect("read_tree"), None);

            // --- fresh install
            let want = lan_tree(Dir::Dst);
            want.validate().expect("valid tree");
            let ops = diff(&want, None);
            tc.apply(lan, &ops).await.expect("apply install");
            assert_tree(&tc, lan, &want).await;

            let qdiscs = lab.tc(&["qdisc", "show", "dev", LAN]);
            assert!(
                qdiscs.contains("qdisc htb 6d6e: root") && qdiscs.contains("r2q 10 default 0x20"),
                "{qdiscs}"
            );
            let classes = lab.tc(&["-s", "class", "show", "dev", LAN]);
            let c10 = class_block(&classes, "6d6e:10").expect("class 6d6e:10");
            assert!(c10.contains("parent 6d6e:1 "), "{c10}");
            assert!(
                c10.contains("prio 1 rate 2Mbit ceil 8Mbit burst 1600b cburst 1600b"),
                "{c10}"
            );
            let c30 = class_block(&classes, "6d6e:30").expect("class 6d6e:30");
            assert!(
                c30.contains("root leaf") && c30.contains("rate 5Gbit ceil 40Gbit"),
                "{c30}"
            );
            assert!(c30.contains("burst 625000b cburst 5000000b"), "{c30}");
            let filters = lab.tc(&["filter", "show", "dev", LAN]);
            assert!(
                filters.contains("match c000020a/ffffffff at 16")
                    && filters.contains("*flowid 6d6e:10"),
                "{filters}"
            );
            // DSCP EF as `tc ... match ip dsfield 0xb8 0xfc` shows it
            assert!(
                filters.contains("match 00b80000/00fc0000 at 0")
                    && filters.contains("*flowid 6d6e:20"),
                "{filters}"
            );
            // Every class without children has its bfifo, 6d6e:1 none.
            let mut got = leaves(&lab, LAN);
            got.sort();
            let mut expected: Vec<(String, String)> = [0x10u16, 0x11, 0x20, 0x30]
                .iter()
                .map(|m| {
                    let c = want.classes.iter().find(|c| c.minor == *m).expect("class");
                    (format!("6d6e:{m:x}"), leaf_queue_bytes(c.ceil).to_string())
                })
                .collect();
            expected.sort();
            // tc prints limits as sizes ("128Kb"); compare through tc's
            // own words for the numbers we expect.
            let limits: Vec<(String, String)> = expected
                .iter()
                .map(|(p, l)| (p.clone(), tc_size(l.parse().expect("number"))))
                .collect();
            assert_eq!(got, limits);

            // Applying the empty diff again changes nothing.
            let again = tc.read_tree(lan).await.expect("read").expect("ours");
            assert_eq!(diff(&want, Some(&again)), vec![]);
            tc.apply(lan, &[]).await.expect("apply nothing");
            assert_eq!(leaves(&lab, LAN).len(), 4);

            // --- real traffic to .10 lands in 6d6e:10
            let before = class_bytes(&tc, lan, 0x10).await;
            let sent = lab.send_down(CLIENTS[0]);
            let after = wait_bytes(&tc, lan, 0x10, before + sent).await;
            assert!(after - before >= sent, "{before} -> {after}, sent {sent}");
            let tc_before = sent_bytes(
                &class_block(&lab.tc(&["-s", "class", "show", "dev", LAN]), "6d6e:10")
                    .expect("class"),
            );
            assert_eq!(tc_before, after, "tc agrees with class_stats");
            let leaf_before = leaves(&lab, LAN);

            // --- re-rate 6d6e:10 in place: counters survive
            let mut rerated = want.clone();
            rerated.classes[1].ceil = 500_000;
            rerated.classes[1].prio = 2;
            let ops = diff(&rerated, Some(&want));
            assert_eq!(ops, vec![Op::ChangeClass(rerated.classes[1].clone())]);
            tc.apply(lan, &ops).await.expect("apply re-rate");
            assert_tree(&tc, lan, &rerated).await;
            let block = class_block(&lab.tc(&["-s", "class", "show", "dev", LAN]), "6d6e:10")
                .expect("class");
            assert!(block.contains("prio 2 rate 2Mbit ceil 4Mbit"), "{block}");
            assert!(sent_bytes(&block) >= tc_before, "counters reset: {block}");
            assert!(class_bytes(&tc, lan, 0x10).await >= after);
            // Its leaf queue was changed in place (same handle, new limit).
            let leaf_handle = |l: &str| {
                lab.tc(&["qdisc", "show", "dev", LAN])
                    .lines()
                    .map(normalise)
                    .find(|q| q.contains(&format!("parent {l} ")))
                    .and_then(|q| q.split(' ').nth(2).map(str::to_string))
            };
            let after_leaves = leaves(&lab, LAN);
            assert_eq!(after_leaves.len(), leaf_before.len());
            assert!(
                after_leaves
                    .iter()
                    .any(|(p, l)| p == "6d6e:10" && *l == tc_size(leaf_queue_bytes(500_000))),
                "{after_leaves:?}"
            );
            let h = leaf_handle("6d6e:10").expect("leaf of 6d6e:10");
            tc.apply(lan, &[]).await.expect("apply nothing");
            assert_eq!(leaf_handle("6d6e:10"), Some(h));

            // --- client .11 leaves: filter, then class
            let mut shrunk = rerated.clone();
            shrunk.classes.retain(|c| c.minor != 0x11);
            shrunk.filters.retain(|f| f.class != 0x11);
            let ops = diff(&shrunk, Some(&rerated));
            assert_eq!(ops, vec![Op::DeleteFilter(11), Op::DeleteClass(0x11)]);
            tc.apply(lan, &ops).await.expect("apply leave");
            assert_tree(&tc, lan, &shrunk).await;
            let filters = lab.tc(&["filter", "show", "dev", LAN]);
            assert!(!filters.contains("pref 11 "), "{filters}");
            assert!(class_block(&lab.tc(&["class", "show", "dev", LAN]), "6d6e:11").is_none());
            assert_eq!(leaves(&lab, LAN).len(), 3);

            // --- client .12 joins
            let mut grown = shrunk.clone();
            grown.classes.push(class(0x12, 1, 250_000, 1_000_000, 1));
            grown.filters.push(filter(12, CLIENTS[2], Dir::Dst, 0x12));
            tc.apply(lan, &diff(&grown, Some(&shrunk)))
                .await
                .expect("apply join");
            assert_tree(&tc, lan, &grown).await;
            let before = class_bytes(&tc, lan, 0x12).await;
            let sent = lab.send_down(CLIENTS[2]);
            assert!(wait_bytes(&tc, lan, 0x12, before + sent).await - before >= sent);

            // --- a new default class: the qdisc is recreated
            let mut redefault = grown.clone();
            redefault.default_class = 0x12;
            let ops = diff(&redefault, Some(&grown));
            assert_eq!(ops[0], Op::DeleteQdisc);
            tc.apply(lan, &ops).await.expect("apply default");
            assert_tree(&tc, lan, &redefault).await;
            let qdisc = tc
                .qdisc_stats(lan)
                .await
                .expect("qdisc_stats")
                .expect("ours");
            assert_eq!(qdisc.backlog_bytes, 0, "{qdisc:?}");

            // --- remove: nothing of ours stays, twice is fine
            tc.remove(lan).await.expect("remove");
            tc.remove(lan).await.expect("remove again");
            assert_eq!(tc.read_tree(lan).await.expect("read_tree"), None);
            let qdiscs = lab.tc(&["qdisc", "show", "dev", LAN]);
            assert!(!qdiscs.contains("6d6e:"), "{qdiscs}");
            assert!(!qdiscs.contains("bfifo"), "{qdiscs}");
            assert_eq!(tc.class_stats(lan).await.expect("class_stats"), vec![]);
            assert_eq!(tc.qdisc_stats(lan).await.expect("qdisc_stats"), None);
        })
    });
}

/// How `tc` prints a byte size (iproute2's `sprint_size`): Mb or Kb when
/// within 1024 / 16 bytes of a whole unit, plain bytes with "b" otherwise.
fn tc_size(bytes: u32) -> String {
    let (kilo, mega) = (1024.0f64, 1024.0 * 1024.0);
    let b = f64::from(bytes);
    if b >= mega && (mega * (b / mega).round() - b).abs() < 1024.0 {
        format!("{}Mb", (b / mega).round())
    } else if b >= kilo && (kilo * (b / kilo).round() - b).abs() < 16.0 {
        format!("{}Kb", (b / kilo).round())
    } else {
        format!("{bytes}b")
    }
}

/// Uploads: the IFB is created, lan0's ingress is redirected to it, and
/// the IFB's HTB (matching client source addresses) counts the traffic.
#[test]
fn ifb_redirect_shapes_uploads() {
    if netns::skip_unless_root("ifb_redirect_shapes_uploads") {
        return;
    }
    let lab = Lab::new("ifb");
    lab.router(|rt| {
        rt.block_on(async {
            let tc = Tc::connect().await.expect("connect");
            let lan = tc.ifindex(LAN).await.expect("ifindex");
            let ifb = tc.ensure_ifb(IFB).await.expect("ensure_ifb");
            assert_eq!(tc.ensure_ifb(IFB).await.expect("again"), ifb, "idempotent");
            let link = run("ip", &["-n", &lab.a, "-d", "link", "show", IFB]);
            assert!(
                link.contains("state UNKNOWN") || link.contains(",UP"),
                "{link}"
            );
            assert!(link.contains("ifb"), "{link}");
            assert!(matches!(
                tc.ensure_ifb(LAN).await,
                Err(TcError::NotIfb { .. })
            ));
            assert!(matches!(
                tc.delete_link(LAN).await,
                Err(TcError::NotIfb { .. })
            ));

            let up = lan_tree(Dir::Src);
            tc.apply(ifb, &diff(&up, None)).await.expect("apply on ifb");
            assert_tree(&tc, ifb, &up).await;
            let filters = lab.tc(&["filter", "show", "dev", IFB]);
            assert!(
                filters.contains("match c000020a/ffffffff at 12"),
                "{filters}"
            );

            tc.redirect_ingress(lan, ifb).await.expect("redirect");
            tc.redirect_ingress(lan, ifb).await.expect("redirect again");
            let ingress = lab.tc(&["filter", "show", "dev", LAN, "ingress"]);
            assert_eq!(
                ingress
                    .matches("mirred (Egress Redirect to device mnifb0)")
                    .count(),
                1,
                "{ingress}"
            );
            assert!(ingress.contains("pref 28014 u32"), "{ingress}");
            let qdiscs = lab.tc(&["qdisc", "show", "dev", LAN]);
            assert!(
                qdiscs.contains("qdisc ingress ffff: parent ffff:fff1"),
                "{qdiscs}"
            );

            // Uploads of .10 go through 6d6e:10 of the IFB, .11's through
            // 6d6e:11.
            for (client, minor) in [(CLIENTS[0], 0x10), (CLIENTS[1], 0x11)] {
                let before = class_bytes(&tc, ifb, minor).await;
                let sent = lab.send_up(client);
                let after = wait_bytes(&tc, ifb, minor, before + sent).await;
                assert!(
                    after - before >= sent,
                    "{client}: {before} -> {after}, sent {sent}"
                );
            }
            // Downloads do not touch the IFB's client classes.
            let before = class_bytes(&tc, ifb, 0x10).await;
            lab.send_down(CLIENTS[0]);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(class_bytes(&tc, ifb, 0x10).await, before);

            // A second IFB: the redirect is moved, not duplicated.
            let ifb2 = tc.ensure_ifb("mnifb1").await.expect("ifb2");
            tc.redirect_ingress(lan, ifb2)
                .await
                .expect("redirect to ifb2");
            let ingress = lab.tc(&["filter", "show", "dev", LAN, "ingress"]);
            assert!(ingress.contains("Redirect to device mnifb1"), "{ingress}");
            assert!(!ingress.contains("Redirect to device mnifb0"), "{ingress}");
            tc.redirect_ingress(lan, ifb).await.expect("redirect back");

            // remove(lan) takes our ingress filter and the ingress qdisc
            // (nothing else used it); the IFB goes with delete_link.
            tc.remove(lan).await.expect("remove lan");
            let qdiscs = lab.tc(&["qdisc", "show", "dev", LAN]);
            assert!(!qdiscs.contains("ingress"), "{qdiscs}");
            tc.remove(ifb).await.expect("remove ifb");
            assert_eq!(tc.read_tree(ifb).await.expect("read"), None);
            tc.delete_link(IFB).await.expect("delete ifb");
            tc.delete_link(IFB).await.expect("delete ifb again");
            tc.delete_link("mnifb1").await.expect("delete ifb2");
            assert!(matches!(
                tc.ifindex(IFB).await,
                Err(TcError::NoSuchLink { .. })
            ));

            // An ingress qdisc somebody else also uses keeps its qdisc and
            // their filter; only ours goes.
            let ifb = tc.ensure_ifb(IFB).await.expect("ensure_ifb");
            tc.redirect_ingress(lan, ifb).await.expect("redirect");
            lab.tc(&[
                "filter",
                "add",
                "dev",
                LAN,
                "parent",
                "ffff:",
                "protocol",
                "ip",
                "pref",
                "5",
                "u32",
                "match",
                "ip",
                "src",
                "198.51.100.1/32",
                "action",
                "mirred",
                "egress",
                "mirror",
                "dev",
                "lo",
            ]);
            tc.remove(lan).await.expect("remove lan");
            let ingress = lab.tc(&["filter", "show", "dev", LAN, "ingress"]);
            assert!(ingress.contains("pref 5 "), "{ingress}");
            assert!(!ingress.contains("pref 28014"), "{ingress}");
        })
    });
}

/// A root qdisc meshnode did not install is reported by name and never
/// touched: not by read_tree, apply or remove.
#[test]
fn foreign_root_qdisc_is_reported_and_left_alone() {
    if netns::skip_unless_root("foreign_root_qdisc_is_reported_and_left_alone") {
        return;
    }
    let lab = Lab::new("foreign");
    lab.tc(&[
        "qdisc", "add", "dev", LAN, "root", "tbf", "rate", "1mbit", "burst", "1600", "latency",
        "50ms",
    ]);
    let before = lab.tc(&["qdisc", "show", "dev", LAN]);
    assert!(before.contains("qdisc tbf "), "{before}");
    lab.router(|rt| {
        rt.block_on(async {
            let tc = Tc::connect().await.expect("connect");
            let lan = tc.ifindex(LAN).await.expect("ifindex");
            let err = tc.read_tree(lan).await.expect_err("foreign qdisc");
            let text = err.to_string();
            assert!(
                matches!(&err, TcError::ForeignQdisc { kind, at: "root", .. } if kind == "tbf"),
                "{err:?}"
            );
            assert!(text.contains("tbf 8"), "{text}");
            assert!(text.contains("leaving it alone"), "{text}");

            // Installing anyway is refused by the kernel (no REPLACE).
            let err = tc
                .apply(lan, &diff(&lan_tree(Dir::Dst), None))
                .await
                .expect_err("create over foreign");
            assert!(matches!(err, TcError::Kernel { .. }), "{err:?}");
            assert!(
                err.to_string().starts_with("adding qdisc htb 6d6e:"),
                "{err}"
            );
            // Neither a stray delete nor remove() touches it.
            let err = tc
                .apply(lan, &[Op::DeleteQdisc])
                .await
                .expect_err("delete foreign");
            assert!(matches!(err, TcError::Kernel { .. }), "{err:?}");
            tc.remove(lan).await.expect("remove");
            assert_eq!(tc.qdisc_stats(lan).await.expect("stats"), None);
        })
    });
    assert_eq!(lab.tc(&["qdisc", "show", "dev", LAN]), before);

    // clsact on the ingress side is not ours either.
    lab.tc(&["qdisc", "add", "dev", LAN, "clsact"]);
    lab.router(|rt| {
        rt.block_on(async {
            let tc = Tc::connect().await.expect("connect");
            let lan = tc.ifindex(LAN).await.expect("ifindex");
            let ifb = tc.ensure_ifb(IFB).await.expect("ifb");
            let err = tc.redirect_ingress(lan, ifb).await.expect_err("clsact");
            assert!(
                matches!(&err, TcError::ForeignQdisc { kind, at: "ingress", .. }
                    if kind == "clsact"),
                "{err:?}"
            );
            tc.remove(lan).await.expect("remove");
        })
    });
    let after = lab.tc(&["qdisc", "show", "dev", LAN]);
    assert!(after.contains("qdisc clsact ffff:"), "{after}");
}

/// The kernel's own words come through (netlink extended ack), with the op
/// that failed.
#[test]
fn kernel_refusals_carry_the_ext_ack_text() {
    if netns::skip_unless_root("kernel_refusals_carry_the_ext_ack_text") {
        return;
    }
    let lab = Lab::new("extack");
    lab.router(|rt| {
        rt.block_on(async {
            let tc = Tc::connect().await.expect("connect");
            let lan = tc.ifindex(LAN).await.expect("ifindex");
            let t = lan_tree(Dir::Dst);
            tc.apply(lan, &diff(&t, None)).await.expect("install");
            // A class a filter still uses (diff would delete the filter
            // first).
            let err = tc
                .apply(lan, &[Op::DeleteClass(0x10)])
                .await
                .expect_err("class in use");
            let text = err.to_string();
            assert!(
                matches!(
                    &err,
                    TcError::Kernel {
                        message: Some(_),
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(
                text.starts_with("deleting class 6d6e:10 on ifindex"),
                "{text}"
            );
            assert_eq!(err.errno(), Some(nix::errno::Errno::EBUSY), "{text}");
            // Adding what exists.
            let err = tc
                .apply(lan, &[Op::AddClass(t.classes[1].clone())])
                .await
                .expect_err("exists");
            assert_eq!(err.errno(), Some(nix::errno::Errno::EEXIST), "{err}");
            // The tree is unchanged by the failures.
            assert_tree(&tc, lan, &t).await;
            assert_eq!(
                MAJOR, 0x6d6e,
                "tc output above is matched against this handle"
            );
        })
    });
}
