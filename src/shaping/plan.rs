//! The pure core of shaping: the HTB tree meshnode wants on one interface,
//! the tree read back from the kernel, and [`diff`], the ordered list of
//! [`Op`]s that turns the second into the first.
//!
//! No I/O here; `tc.rs` reads the kernel's tree ([`crate::shaping::tc::Tc::read_tree`])
//! and executes the ops ([`crate::shaping::tc::Tc::apply`]).
//!
//! # The tree on an interface
//!
//! ```text
//! qdisc htb 6d6e: root default <default_class>          (MAJOR:0)
//! ├── class 6d6e:<minor> parent 6d6e: rate ceil prio     (parent 0)
//! │   ├── class 6d6e:<minor> parent 6d6e:<parent> ...
//! │   │   └── leaf qdisc bfifo (see leaf_queue_bytes; managed by tc.rs)
//! filter parent 6d6e: protocol ip pref <pref> u32 match <key> flowid 6d6e:<class>
//! ```
//!
//! A filter's key ([`Match`]) is a client's address or a DSCP value (the
//! essential traffic that goes to the priority class).
//!
//! On a LAN interface the filters match the client's address as IP
//! *destination* (its download leaves through the LAN's egress); on the
//! interface's IFB, which receives the LAN's ingress, they match it as IP
//! *source* (its upload).
//!
//! # Ordering
//!
//! [`diff`] emits, in this order:
//! 1. `DeleteQdisc` + `CreateQdisc` when there is no qdisc of ours or its
//!    default class differs (HTB cannot change its globals in place: the
//!    kernel answers `NLM_F_REPLACE` with "Change operation not supported");
//!    the delete takes every class and filter with it;
//! 2. `DeleteFilter` for every filter that differs or points at a class about
//!    to be deleted (HTB refuses to delete a class a filter still uses);
//! 3. `DeleteClass`, children before parents (HTB refuses to delete a class
//!    with children). A class whose parent changes is deleted and added again
//!    (HTB cannot move a class), and so are its descendants;
//! 4. `ChangeClass` for classes whose rate, ceil or prio differ: changed in
//!    place, so their counters and queued packets survive;
//! 5. `AddClass`, parents before children;
//! 6. `AddFilter`, once the class it points at exists.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// meshnode's qdisc handle major on every interface it shapes: 0x6d6e ("mn").
pub const MAJOR: u16 = 0x6d6e;

/// How long the leaf queue of a class may take to drain at the class's ceil.
pub const LEAF_QUEUE_DELAY_MS: u64 = 100;
/// Smallest leaf queue, in bytes: two 64 KiB GSO/GRO super-packets. HTB
/// does not segment, so a TCP sender on this host (meshnode serving a file)
/// or GRO on the IFB's ingress hands it packets of up to 64 KiB; a smaller
/// byte limit would drop every one of them.
pub const LEAF_MIN_BYTES: u32 = 2 * 65_536;

/// Largest leaf queue, in bytes: 100 ms at 1.3 Gbit/s. Faster classes get
/// less than 100 ms; this bounds the memory one class's queue can hold.
pub const LEAF_MAX_BYTES: u32 = 16 * 1024 * 1024;

/// One HTB class, `MAJOR:minor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSpec {
    /// Class id minor; never 0 (that is the qdisc itself).
    pub minor: u16,
    /// Minor of the parent class; 0 = directly under the root qdisc.
    pub parent: u16,
    /// Guaranteed rate, bytes/s (HTB's `rate`); > 0.
    pub rate: u64,
    /// Rate it may borrow up to, bytes/s (HTB's `ceil`); >= `rate`.
    pub ceil: u64,
    /// Borrowing priority, lower first (HTB's `prio`, 0..=7).
    pub prio: u32,
}

/// Which address of an IPv4 packet a filter matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dir {
    /// The destination address: on a LAN interface's egress, a client's
    /// download.
    Dst,
    /// The source address: on the IFB fed by a LAN interface's ingress, a
    /// client's upload.
    Src,
}

/// What one u32 filter matches: a single 32-bit key of the IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Match {
    /// `match ip dst <ip>/32`: a client's downloads, on the LAN egress.
    Dst(Ipv4Addr),
    /// `match ip src <ip>/32`: a client's uploads, on the IFB.
    Src(Ipv4Addr),
    /// `match ip dsfield <dscp << 2> 0xfc`: packets marked with this DSCP
    /// (0..=63), whoever sends them.
    Dscp(u8),
}

impl Match {
    /// A client's address, matched in direction `dir`.
    pub fn addr(dir: Dir, ip: Ipv4Addr) -> Match {
        match dir {
            Dir::Dst => Match::Dst(ip),
            Dir::Src => Match::Src(ip),
        }
    }

    /// The client address it matches, if it is an address match.
    pub fn ip(self) -> Option<Ipv4Addr> {
        match self {
            Match::Dst(ip) | Match::Src(ip) => Some(ip),
            Match::Dscp(_) => None,
        }
    }

    /// The u32 key as the kernel holds it: `(off, val, mask)`, `val` and
    /// `mask` in host order (the selector carries them big-endian). The
    /// DSCP is the top six bits of the header's second byte, so it sits at
    /// bits 18..24 of the word at offset 0, which is where `tc` puts
    /// `match ip dsfield`.
    pub fn key(self) -> (u16, u32, u32) {
        match self {
            Match::Dst(ip) => (16, u32::from(ip), u32::MAX),
            Match::Src(ip) => (12, u32::from(ip), u32::MAX),
            Match::Dscp(d) => (0, u32::from(d & 0x3f) << 18, DSCP_MASK),
        }
    }

    /// The inverse of [`Match::key`]; `None` for any other key.
    pub fn from_key(off: i32, val: u32, mask: u32) -> Option<Match> {
        match (off, mask) {
            (16, u32::MAX) => Some(Match::Dst(Ipv4Addr::from(val))),
            (12, u32::MAX) => Some(Match::Src(Ipv4Addr::from(val))),
            (0, DSCP_MASK) if val & !DSCP_MASK == 0 => Some(Match::Dscp((val >> 18) as u8)),
            _ => None,
        }
    }
}

/// The DSCP bits of the first word of an IPv4 header.
const DSCP_MASK: u32 = 0x00fc_0000;

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Dst(ip) => write!(f, "ip dst {ip}/32"),
            Match::Src(ip) => write!(f, "ip src {ip}/32"),
            Match::Dscp(d) => write!(f, "ip dsfield {:#04x} 0xfc", d << 2),
        }
    }
}

/// One u32 filter: `protocol ip pref <pref> u32 match <key> flowid
/// MAJOR:<class>`.
///
/// A filter on our qdisc that `read_tree` does not recognise as one of these
/// (another classifier, several keys, several filters at one pref) reads back
/// as `{ pref, key: Dst(0.0.0.0), class: 0 }`. No valid desired tree
/// has class 0, so [`diff`] replaces or deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// The filter's priority; also identifies it (one filter per pref).
    /// Never 0 (the kernel would pick one). Lower prefs are tried first.
    pub pref: u16,
    /// What it matches.
    pub key: Match,
    /// Minor of the class matching packets go to.
    pub class: u16,
}

/// Everything meshnode installs under its root qdisc on one interface
/// (besides the leaf queues, which follow from the classes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// Minor of the class unclassified traffic goes to; 0 = none, such
    /// traffic is sent unshaped (HTB's "direct" queue).
    pub default_class: u16,
    /// The classes, in any order.
    pub classes: Vec<ClassSpec>,
    /// The filters, in any order.
    pub filters: Vec<FilterSpec>,
}

/// Why a desired [`Tree`] cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTree {
    /// A class with minor 0.
    #[error("class minor 0 is the qdisc itself")]
    ZeroMinor,
    /// Two classes with the same minor.
    #[error("class {MAJOR:x}:{0:x} appears twice")]
    DuplicateClass(u16),
    /// A class whose parent is not in the tree.
    #[error("class {MAJOR:x}:{class:x} has parent {MAJOR:x}:{parent:x}, which is not in the tree")]
    UnknownParent {
        /// The class.
        class: u16,
        /// Its missing parent.
        parent: u16,
    },
    /// Classes whose parents form a loop.
    #[error("class {MAJOR:x}:{0:x} is its own ancestor")]
    ParentCycle(u16),
    /// Rate 0 (the kernel refuses it).
    #[error("class {MAJOR:x}:{0:x} has rate 0")]
    ZeroRate(u16),
    /// Ceil below rate.
    #[error("class {MAJOR:x}:{0:x} has a ceil below its rate")]
    CeilBelowRate(u16),
    /// Prio above HTB's 7.
    #[error("class {MAJOR:x}:{0:x} has prio above 7")]
    PrioTooHigh(u16),
    /// A default class that is not in the tree.
    #[error("default class {MAJOR:x}:{0:x} is not in the tree")]
    UnknownDefault(u16),
    /// A filter with pref 0.
    #[error("filter pref 0 would let the kernel choose one")]
    ZeroPref,
    /// Two filters with the same pref.
    #[error("filter pref {0} appears twice")]
    DuplicatePref(u16),
    /// A filter pointing at a class that is not in the tree.
    #[error("filter pref {pref} points at {MAJOR:x}:{class:x}, which is not in the tree")]
    UnknownFilterClass {
        /// The filter.
        pref: u16,
        /// Its missing class.
        class: u16,
    },
}

impl Tree {
    /// Checks what the kernel would refuse or silently misapply. [`diff`]
    /// assumes a valid desired tree.
    pub fn validate(&self) -> Result<(), InvalidTree> {
        let mut parents = BTreeMap::new();
        for c in &self.classes {
            if c.minor == 0 {
                return Err(InvalidTree::ZeroMinor);
            }
            if parents.insert(c.minor, c.parent).is_some() {
                return Err(InvalidTree::DuplicateClass(c.minor));
            }
            if c.rate == 0 {
                return Err(InvalidTree::ZeroRate(c.minor));
            }
            if c.ceil < c.rate {
                return Err(InvalidTree::CeilBelowRate(c.minor));
            }
            if c.prio > 7 {
                return Err(InvalidTree::PrioTooHigh(c.minor));
            }
        }
        for c in &self.classes {
            if c.parent != 0 && !parents.contains_key(&c.parent) {
                return Err(InvalidTree::UnknownParent {
                    class: c.minor,
                    parent: c.parent,
                });
            }
            // Walk up; more steps than classes means a loop.
            let mut at = c.parent;
            for _ in 0..=self.classes.len() {
                if at == 0 {
                    break;
                }
                at = parents[&at];
            }
            if at != 0 {
                return Err(InvalidTree::ParentCycle(c.minor));
            }
        }
        if self.default_class != 0 && !parents.contains_key(&self.default_class) {
            return Err(InvalidTree::UnknownDefault(self.default_class));
        }
        let mut prefs = BTreeSet::new();
        for f in &self.filters {
            if f.pref == 0 {
                return Err(InvalidTree::ZeroPref);
            }
            if !prefs.insert(f.pref) {
                return Err(InvalidTree::DuplicatePref(f.pref));
            }
            if !parents.contains_key(&f.class) {
                return Err(InvalidTree::UnknownFilterClass {
                    pref: f.pref,
                    class: f.class,
                });
            }
        }
        Ok(())
    }

    /// Minors of the classes without children: the ones that hold packets
    /// and get a leaf queue.
    pub fn leaf_classes(&self) -> Vec<u16> {
        let inner: BTreeSet<u16> = self.classes.iter().map(|c| c.parent).collect();
        let mut leaves: Vec<u16> = self
            .classes
            .iter()
            .map(|c| c.minor)
            .filter(|m| !inner.contains(m))
            .collect();
        leaves.sort_unstable();
        leaves
    }
}

/// Byte limit of a leaf class's queue (a `bfifo`): what drains in
/// [`LEAF_QUEUE_DELAY_MS`] at the class's `ceil`, within
/// [`LEAF_MIN_BYTES`]..=[`LEAF_MAX_BYTES`].
pub fn leaf_queue_bytes(ceil: u64) -> u32 {
    let bytes = ceil.saturating_mul(LEAF_QUEUE_DELAY_MS) / 1000;
    let bytes = bytes.clamp(u64::from(LEAF_MIN_BYTES), u64::from(LEAF_MAX_BYTES));
    u32::try_from(bytes).unwrap_or(LEAF_MAX_BYTES)
}

/// One change to the kernel's tree. `tc.rs` turns each into one netlink
/// request (plus leaf-queue upkeep after class changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Install the HTB root qdisc `MAJOR:` with this default class.
    CreateQdisc {
        /// Minor of the default class, 0 = none.
        default_class: u16,
    },
    /// Delete our root qdisc with every class and filter under it.
    DeleteQdisc,
    /// Create a class (`NLM_F_CREATE | NLM_F_EXCL`).
    AddClass(ClassSpec),
    /// Change rate, ceil and prio of an existing class in place (flags 0).
    ChangeClass(ClassSpec),
    /// Delete the class with this minor; it has no children or filters.
    DeleteClass(u16),
    /// Create a filter (`NLM_F_CREATE | NLM_F_EXCL`).
    AddFilter(FilterSpec),
    /// Delete every filter at this pref.
    DeleteFilter(u16),
}

impl fmt::Display for Op {
    /// tc-like wording, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateQdisc { default_class } => {
                write!(
                    f,
                    "adding qdisc htb {MAJOR:x}: root default {default_class:#x}"
                )
            }
            Op::DeleteQdisc => write!(f, "deleting qdisc htb {MAJOR:x}: root"),
            Op::AddClass(c) => write!(f, "adding class {}", ClassText(c)),
            Op::ChangeClass(c) => write!(f, "changing class {}", ClassText(c)),
            Op::DeleteClass(m) => write!(f, "deleting class {MAJOR:x}:{m:x}"),
            Op::AddFilter(x) => write!(
                f,
                "adding filter pref {} u32 match {} flowid {MAJOR:x}:{:x}",
                x.pref, x.key, x.class
            ),
            Op::DeleteFilter(p) => write!(f, "deleting filter pref {p}"),
        }
    }
}

struct ClassText<'a>(&'a ClassSpec);

impl fmt::Display for ClassText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        write!(
            f,
            "{MAJOR:x}:{:x} parent {MAJOR:x}:{} rate {}B/s ceil {}B/s prio {}",
            c.minor,
            if c.parent == 0 {
                String::new()
            } else {
                format!("{:x}", c.parent)
            },
            c.rate,
            c.ceil,
            c.prio
        )
    }
}

/// The operations that turn `actual` (read back from the kernel; `None` = no
/// meshnode qdisc) into `desired`, in a safe order (see the module docs).
/// `desired` should pass [`Tree::validate`]. Empty when they are equal up to
/// the order of classes and filters.
pub fn diff(desired: &Tree, actual: Option<&Tree>) -> Vec<Op> {
    let mut ops = Vec::new();
    let empty = Tree::default();
    let actual = match actual {
        Some(a) if a.default_class == desired.default_class => a,
        Some(_) => {
            ops.push(Op::DeleteQdisc);
            ops.push(Op::CreateQdisc {
                default_class: desired.default_class,
            });
            &empty
        }
        None => {
            ops.push(Op::CreateQdisc {
                default_class: desired.default_class,
            });
            &empty
        }
    };

    let want: BTreeMap<u16, &ClassSpec> = desired.classes.iter().map(|c| (c.minor, c)).collect();
    let have: BTreeMap<u16, &ClassSpec> = actual.classes.iter().map(|c| (c.minor, c)).collect();
    let have_parent: BTreeMap<u16, u16> = have.iter().map(|(&m, c)| (m, c.parent)).collect();
    let want_parent: BTreeMap<u16, u16> = want.iter().map(|(&m, c)| (m, c.parent)).collect();

    // Classes that go: unwanted, or moved to another parent; then everything
    // below them (HTB deletes no class with children).
    let mut gone: BTreeSet<u16> = have
        .values()
        .filter(|c| want.get(&c.minor).map(|w| w.parent) != Some(c.parent))
        .map(|c| c.minor)
        .collect();
    loop {
        let below: Vec<u16> = have
            .values()
            .filter(|c| !gone.contains(&c.minor) && gone.contains(&c.parent))
            .map(|c| c.minor)
            .collect();
        if below.is_empty() {
            break;
        }
        gone.extend(below);
    }

    let want_filters: BTreeMap<u16, &FilterSpec> =
        desired.filters.iter().map(|f| (f.pref, f)).collect();
    let have_filters: BTreeMap<u16, &FilterSpec> =
        actual.filters.iter().map(|f| (f.pref, f)).collect();
    let mut filters_gone = BTreeSet::new();
    for (&pref, &f) in &have_filters {
        if want_filters.get(&pref) != Some(&f) || gone.contains(&f.class) {
            ops.push(Op::DeleteFilter(pref));
            filters_gone.insert(pref);
        }
    }

    let mut deletes: Vec<u16> = gone.iter().copied().collect();
    // Deepest first; ties by minor for a stable order.
    deletes.sort_by_key(|&m| (std::cmp::Reverse(depth(&have_parent, m)), m));
    ops.extend(deletes.into_iter().map(Op::DeleteClass));

    for (m, &w) in &want {
        if let Some(&h) = have.get(m)
            && !gone.contains(m)
            && (h.rate, h.ceil, h.prio) != (w.rate, w.ceil, w.prio)
        {
            ops.push(Op::ChangeClass(w.clone()));
        }
    }

    let mut adds: Vec<&ClassSpec> = want
        .values()
        .copied()
        .filter(|w| !have.contains_key(&w.minor) || gone.contains(&w.minor))
        .collect();
    adds.sort_by_key(|w| (depth(&want_parent, w.minor), w.minor));
    ops.extend(adds.into_iter().map(|w| Op::AddClass(w.clone())));

    for (pref, &f) in &want_filters {
        if !have_filters.contains_key(pref) || filters_gone.contains(pref) {
            ops.push(Op::AddFilter(f.clone()));
        }
    }
    ops
}

/// Number of ancestors of `minor` (0 directly under the qdisc). Stops at a
/// missing parent, and after as many steps as there are classes (a loop).
fn depth(parents: &BTreeMap<u16, u16>, minor: u16) -> usize {
    let mut n = 0;
    let mut at = parents.get(&minor).copied().unwrap_or(0);
    while at != 0 && n <= parents.len() {
        n += 1;
        at = parents.get(&at).copied().unwrap_or(0);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn class(minor: u16, parent: u16, rate: u64, ceil: u64, prio: u32) -> ClassSpec {
        ClassSpec {
            minor,
            parent,
            rate,
            ceil,
            prio,
        }
    }

    fn filter(pref: u16, last_octet: u8, class: u16) -> FilterSpec {
        FilterSpec {
            pref,
            key: Match::Dst(Ipv4Addr::new(192, 0, 2, last_octet)),
            class,
        }
    }

    /// A LAN: 1:1 the whole link, two clients under it, a default class.
    fn lan() -> Tree {
        Tree {
            default_class: 0x20,
            classes: vec![
                class(1, 0, 1_250_000, 1_250_000, 0),
                class(0x10, 1, 250_000, 1_250_000, 1),
                class(0x11, 1, 250_000, 1_250_000, 1),
                class(0x20, 1, 125_000, 1_250_000, 7),
            ],
            filters: vec![filter(10, 10, 0x10), filter(11, 11, 0x11)],
        }
    }

    /// The kernel as far as ordering goes: what each op needs to succeed.
    fn simulate(state: &mut Option<Tree>, op: &Op) -> Result<(), String> {
        match op {
            Op::CreateQdisc { default_class } => {
                if state.is_some() {
                    return Err("qdisc exists".into());
                }
                *state = Some(Tree {
                    default_class: *default_class,
                    ..Tree::default()
                });
                return Ok(());
            }
            Op::DeleteQdisc => {
                return state.take().map(drop).ok_or_else(|| "no qdisc".into());
            }
            _ => {}
        }
        let t = state.as_mut().ok_or("no qdisc")?;
        match op {
            Op::AddClass(c) => {
                if t.classes.iter().any(|x| x.minor == c.minor) {
                    return Err(format!("class {} exists", c.minor));
                }
                if c.parent != 0 && !t.classes.iter().any(|x| x.minor == c.parent) {
                    return Err(format!("parent of {} missing", c.minor));
                }
                t.classes.push(c.clone());
            }
            Op::ChangeClass(c) => {
                let x = t
                    .classes
                    .iter_mut()
                    .find(|x| x.minor == c.minor)
                    .ok_or(format!("no class {}", c.minor))?;
                if x.parent != c.parent {
                    return Err(format!("class {} cannot move", c.minor));
                }
                *x = c.clone();
            }
            Op::DeleteClass(m) => {
                if t.classes.iter().any(|x| x.parent == *m) {
                    return Err(format!("class {m} has children"));
                }
                if t.filters.iter().any(|f| f.class == *m) {
                    return Err(format!("class {m} in use by a filter"));
                }
                let n = t.classes.len();
                t.classes.retain(|x| x.minor != *m);
                if t.classes.len() == n {
                    return Err(format!("no class {m}"));
                }
            }
            Op::AddFilter(f) => {
                if t.filters.iter().any(|x| x.pref == f.pref) {
                    return Err(format!("pref {} exists", f.pref));
                }
                if !t.classes.iter().any(|x| x.minor == f.class) {
                    return Err(format!("filter {} to missing class", f.pref));
                }
                t.filters.push(f.clone());
            }
            Op::DeleteFilter(p) => {
                let n = t.filters.len();
                t.filters.retain(|x| x.pref != *p);
                if t.filters.len() == n {
                    return Err(format!("no filter {p}"));
                }
            }
            Op::CreateQdisc { .. } | Op::DeleteQdisc => unreachable!("handled above"),
        }
        Ok(())
    }

    /// Order-insensitive comparison.
    fn normalised(t: &Tree) -> Tree {
        let mut t = t.clone();
        t.classes.sort_by_key(|c| c.minor);
        t.filters.sort_by_key(|f| f.pref);
        t
    }

    fn run(desired: &Tree, actual: Option<&Tree>) -> Vec<Op> {
        let ops = diff(desired, actual);
        let mut state = actual.cloned();
        for op in &ops {
            simulate(&mut state, op).unwrap_or_else(|e| panic!("{op}: {e}\nops: {ops:#?}"));
        }
        assert_eq!(
            state.as_ref().map(normalised),
            Some(normalised(desired)),
            "{ops:#?}"
        );
        ops
    }

    #[test]
    fn fresh_install_creates_qdisc_then_parents_then_children_then_filters() {
        let t = lan();
        t.validate().expect("valid");
        let ops = run(&t, None);
        assert_eq!(
            ops,
            vec![
                Op::CreateQdisc {
                    default_class: 0x20
                },
                Op::AddClass(t.classes[0].clone()),
                Op::AddClass(t.classes[1].clone()),
                Op::AddClass(t.classes[2].clone()),
                Op::AddClass(t.classes[3].clone()),
                Op::AddFilter(t.filters[0].clone()),
                Op::AddFilter(t.filters[1].clone()),
            ]
        );
    }

    #[test]
    fn equal_trees_need_nothing_whatever_the_order() {
        let t = lan();
        assert_eq!(diff(&t, Some(&t)), vec![]);
        let mut shuffled = t.clone();
        shuffled.classes.reverse();
        shuffled.filters.reverse();
        assert_eq!(diff(&t, Some(&shuffled)), vec![]);
    }

    #[test]
    fn a_re_rated_class_is_changed_in_place() {
        let actual = lan();
        let mut desired = lan();
        desired.classes[1].ceil = 625_000;
        desired.classes[2].prio = 2;
        let ops = run(&desired, Some(&actual));
        assert_eq!(
            ops,
            vec![
                Op::ChangeClass(desired.classes[1].clone()),
                Op::ChangeClass(desired.classes[2].clone()),
            ]
        );
    }

    #[test]
    fn a_leaving_client_loses_its_filter_then_its_class() {
        let actual = lan();
        let mut desired = lan();
        desired.classes.retain(|c| c.minor != 0x11);
        desired.filters.retain(|f| f.class != 0x11);
        let ops = run(&desired, Some(&actual));
        assert_eq!(ops, vec![Op::DeleteFilter(11), Op::DeleteClass(0x11)]);
    }

    #[test]
    fn a_joining_client_gets_its_class_then_its_filter() {
        let actual = lan();
        let mut desired = lan();
        let c = class(0x12, 1, 250_000, 1_250_000, 1);
        let f = filter(12, 12, 0x12);
        desired.classes.push(c.clone());
        desired.filters.push(f.clone());
        assert_eq!(
            run(&desired, Some(&actual)),
            vec![Op::AddClass(c), Op::AddFilter(f)]
        );
    }

    #[test]
    fn a_changed_default_class_recreates_the_qdisc() {
        let actual = lan();
        let mut desired = lan();
        desired.default_class = 0x11;
        let ops = run(&desired, Some(&actual));
        assert_eq!(
            ops[..2],
            [
                Op::DeleteQdisc,
                Op::CreateQdisc {
                    default_class: 0x11
                }
            ]
        );
        // Everything else is added afresh, nothing deleted one by one.
        assert!(
            ops[2..]
                .iter()
                .all(|op| matches!(op, Op::AddClass(_) | Op::AddFilter(_)))
        );
        assert_eq!(ops.len(), 2 + 4 + 2);
    }

    #[test]
    fn a_filter_pointing_elsewhere_is_replaced() {
        let actual = lan();
        let mut desired = lan();
        desired.filters[0].class = 0x11;
        desired.filters[1].key = Match::Dst(Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(
            run(&desired, Some(&actual)),
            vec![
                Op::DeleteFilter(10),
                Op::DeleteFilter(11),
                Op::AddFilter(desired.filters[0].clone()),
                Op::AddFilter(desired.filters[1].clone()),
            ]
        );
    }

    #[test]
    fn an_unrecognised_filter_is_deleted() {
        let mut actual = lan();
        actual.filters.push(FilterSpec {
            pref: 99,
            key: Match::Dst(Ipv4Addr::UNSPECIFIED),
            class: 0,
        });
        assert_eq!(run(&lan(), Some(&actual)), vec![Op::DeleteFilter(99)]);
    }

    #[test]
    fn a_moved_class_is_rebuilt_with_its_subtree_children_first() {
        // 1 ─ 0x10 ─ 0x30 becomes 2 ─ 0x10 ─ 0x30; filters on 0x10 and 0x30.
        let actual = Tree {
            default_class: 0,
            classes: vec![
                class(1, 0, 100, 100, 0),
                class(2, 0, 100, 100, 0),
                class(0x10, 1, 50, 100, 0),
                class(0x30, 0x10, 10, 100, 0),
            ],
            filters: vec![filter(1, 1, 0x10), filter(3, 3, 0x30)],
        };
        let mut desired = actual.clone();
        desired.classes[2].parent = 2;
        let ops = run(&desired, Some(&actual));
        assert_eq!(
            ops,
            vec![
                Op::DeleteFilter(1),
                Op::DeleteFilter(3),
                Op::DeleteClass(0x30),
                Op::DeleteClass(0x10),
                Op::AddClass(desired.classes[2].clone()),
                Op::AddClass(desired.classes[3].clone()),
                Op::AddFilter(desired.filters[0].clone()),
                Op::AddFilter(desired.filters[1].clone()),
            ]
        );
    }

    #[test]
    fn validate_names_what_is_wrong() {
        let mut t = lan();
        t.classes[1].ceil = 1;
        assert_eq!(t.validate(), Err(InvalidTree::CeilBelowRate(0x10)));
        let mut t = lan();
        t.classes[0].parent = 0x10;
        assert_eq!(t.validate(), Err(InvalidTree::ParentCycle(1)));
        let mut t = lan();
        t.filters[1].pref = 10;
        assert_eq!(t.validate(), Err(InvalidTree::DuplicatePref(10)));
        let mut t = lan();
        t.filters[0].class = 0x99;
        assert_eq!(
            t.validate().map_err(|e| e.to_string()),
            Err("filter pref 10 points at 6d6e:99, which is not in the tree".into())
        );
        let mut t = lan();
        t.default_class = 5;
        assert_eq!(t.validate(), Err(InvalidTree::UnknownDefault(5)));
        assert_eq!(lan().leaf_classes(), vec![0x10, 0x11, 0x20]);
    }

    #[test]
    fn leaf_queue_is_100ms_at_ceil_within_bounds() {
        assert_eq!(leaf_queue_bytes(125_000), LEAF_MIN_BYTES); // 1 Mbit/s
        assert_eq!(leaf_queue_bytes(12_500_000), 1_250_000); // 100 Mbit/s
        assert_eq!(leaf_queue_bytes(5_000_000_000), LEAF_MAX_BYTES); // 40 Gbit/s
        assert_eq!(leaf_queue_bytes(u64::MAX), LEAF_MAX_BYTES);
    }

    #[test]
    fn ops_read_like_tc() {
        assert_eq!(
            Op::AddClass(class(0x10, 0, 125_000, 250_000, 1)).to_string(),
            "adding class 6d6e:10 parent 6d6e: rate 125000B/s ceil 250000B/s prio 1"
        );
        assert_eq!(
            Op::AddFilter(filter(10, 10, 0x10)).to_string(),
            "adding filter pref 10 u32 match ip dst 192.0.2.10/32 flowid 6d6e:10"
        );
    }

    /// Valid trees over small id spaces, so that desired and actual overlap.
    fn tree() -> impl Strategy<Value = Tree> {
        let classes = prop::collection::vec(
            (
                1u16..=8,
                any::<prop::sample::Index>(),
                1u64..4,
                0u64..3,
                0u32..3,
            ),
            0..7,
        );
        let filters = prop::collection::vec(
            (1u16..=6, 1u8..=4, 0u8..3, any::<prop::sample::Index>()),
            0..6,
        );
        (classes, filters, any::<prop::sample::Index>()).prop_map(|(cs, fs, def)| {
            let mut t = Tree::default();
            for (minor, parent, rate, extra, prio) in cs {
                if t.classes.iter().any(|c| c.minor == minor) {
                    continue;
                }
                // 0 (the qdisc) or one of the classes made so far.
                let i = parent.index(t.classes.len() + 1);
                let parent = if i == 0 { 0 } else { t.classes[i - 1].minor };
                t.classes
                    .push(class(minor, parent, rate, rate + extra, prio));
            }
            if !t.classes.is_empty() {
                for (pref, octet, kind, c) in fs {
                    if t.filters.iter().any(|f| f.pref == pref) {
                        continue;
                    }
                    let mut f = filter(pref, octet, c.get(&t.classes).minor);
                    match kind {
                        0 => {}
                        1 => f.key = Match::Src(f.key.ip().expect("an address")),
                        _ => f.key = Match::Dscp(octet & 0x3f),
                    }
                    t.filters.push(f);
                }
            }
            let i = def.index(t.classes.len() + 1);
            t.default_class = if i == 0 { 0 } else { t.classes[i - 1].minor };
            t
        })
    }

    proptest! {
        #[test]
        fn diff_ops_turn_actual_into_desired(
            desired in tree(),
            actual in prop::option::of(tree()),
            junk in prop::option::of(1u16..=8),
        ) {
            prop_assert_eq!(desired.validate(), Ok(()));
            // What read_tree reports for a filter it does not recognise.
            let mut actual = actual;
            if let (Some(a), Some(pref)) = (actual.as_mut(), junk)
                && !a.filters.iter().any(|f| f.pref == pref)
            {
                let key = Match::Dst(Ipv4Addr::UNSPECIFIED);
                a.filters.push(FilterSpec { pref, key, class: 0 });
            }
            // `run` applies the ops to the simulator, which fails on any op
            // the kernel would refuse in that state, and checks the result.
            run(&desired, actual.as_ref());
            prop_assert_eq!(diff(&desired, Some(&desired)), vec![]);
        }
    }
}
