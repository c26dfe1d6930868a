//! The driver: the only shaping file that talks to the kernel. Reads
//! meshnode's HTB tree back into a [`Tree`], executes [`Op`]s, keeps each
//! leaf class's queue, reads counters, and sets up the IFB that makes a LAN
//! interface's *incoming* traffic (client uploads) shapeable, all over
//! rtnetlink; no `tc` binary.
//!
//! # What ends up in the kernel
//!
//! For a LAN interface `lan0` with IFB `mnifb0` (tc notation):
//!
//! ```text
//! qdisc htb 6d6e: dev lan0 root default <d>              clients' downloads
//! class htb 6d6e:<m> ... ; qdisc bfifo <auto>: parent 6d6e:<leaf m>
//! filter dev lan0 parent 6d6e: protocol ip pref <p> u32 match ip dst <ip>/32 flowid 6d6e:<m>
//! qdisc ingress ffff: dev lan0
//! filter dev lan0 parent ffff: protocol all pref 28014 u32 match u32 0 0 \
//!     action mirred egress redirect dev mnifb0
//! qdisc htb 6d6e: dev mnifb0 root ...                    clients' uploads
//! filter dev mnifb0 parent 6d6e: ... u32 match ip src <ip>/32 flowid 6d6e:<m>
//! ```
//!
//! # Ownership
//!
//! A root qdisc is meshnode's when its handle is [`MAJOR`]`:` and it is an
//! HTB. A root qdisc with handle 0 is the kernel's default (`noqueue`,
//! `pfifo_fast`, `mq`, ...) and may be replaced. Any other root qdisc is
//! somebody else's: [`Tc::read_tree`] answers [`TcError::ForeignQdisc`],
//! [`Tc::remove`] leaves it, and `CreateQdisc` cannot replace it (sent
//! without `NLM_F_REPLACE`). Everything under our qdisc is ours. On the
//! ingress side, meshnode's filter is the u32 filter at pref
//! [`REDIRECT_PREF`]; the ingress qdisc is removed only when no other filter
//! hangs on it.
//!
//! # Leaf queues
//!
//! Every class without children gets a `bfifo` leaf queue limited to
//! [`leaf_queue_bytes`]`(ceil)` (100 ms at its ceil, at least 128 KiB, at
//! most 16 MiB), created or corrected by [`Tc::apply`] after the ops ran.
//! The default HTB leaf is a `pfifo` of `txqueuelen` packets (1000: seconds
//! of queue at client rates). Kernels built for meshnode's routers may lack every AQM:
//! this one (6.18, all built in, no modules) has no `fq_codel`, `codel`,
//! `pie`, `red`, `choke`, `sfq`, `cake`, `fq`, `sfb` or `hhf`; it has only
//! `pfifo`, `bfifo`, `pfifo_head_drop` and `tbf` (checked by adding each
//! under an HTB class in a namespace). Of these, a byte-limited `bfifo` is
//! the best leaf: a tail-drop queue, but bounded in time rather than in
//! packets whatever the packet sizes. (`tbf` would shape a second time;
//! `pfifo_head_drop` bounds packets, not bytes.) When `fq_codel` is
//! available it would be the better choice; that is a later change.
//!
//! # Messages
//!
//! rtnetlink 0.24 has no HTB or class support, so requests are built as
//! [`TcMessage`]s by the pure builders below ([`htb_qdisc`], [`htb_class`],
//! [`u32_filter`], [`ingress_qdisc`], [`redirect_filter`], [`leaf_qdisc`])
//! and sent with [`Handle::request`], which also gives us the extended-ack
//! text of errors. Their bytes are pinned by golden tests against captures
//! of what `tc` (iproute2 6.1) sends for the same command.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures_util::StreamExt;
use nix::errno::Errno;
use rtnetlink::Handle;
// Always through rtnetlink's re-exports: two netlink-packet-core versions
// exist in the registry and only these match rtnetlink's types.
use rtnetlink::packet_core::{
    DefaultNla, NLA_TYPE_MASK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload, Nla, NlasIterator,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcMirror,
    TcMirrorActionType, TcOption, TcStats2, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use tracing::debug;

use super::plan::{ClassSpec, FilterSpec, MAJOR, Match, Op, Tree, leaf_queue_bytes};

/// Pref (priority) of meshnode's ingress redirect filter: 0x6d6e, like
/// [`MAJOR`], so `tc filter show` makes its owner recognisable.
pub const REDIRECT_PREF: u16 = MAJOR;
/// Kind of the leaf queue of every class without children (see the module
/// docs for why).
pub const LEAF_KIND: &str = "bfifo";

/// `TCA_OPTIONS`: a qdisc's or class's options.
const TCA_OPTIONS: u16 = 2;
/// `TCA_HTB_PARMS`: `struct tc_htb_opt` of a class.
const TCA_HTB_PARMS: u16 = 1;
/// `TCA_HTB_INIT`: `struct tc_htb_glob` of the qdisc.
const TCA_HTB_INIT: u16 = 2;
/// `TCA_HTB_RATE64` / `TCA_HTB_CEIL64`: u64 bytes/s when the rate does not
/// fit `tc_ratespec`'s u32.
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `TCA_STATS_PKT64`: the u64 packet counter next to `TCA_STATS_BASIC`.
const TCA_STATS_PKT64: u16 = 8;
/// `TC_HTB_PROTOVER`: the kernel refuses any other `tc_htb_glob` version.
const HTB_VERSION: u32 = 3;
/// `r2q`: a class's quantum is its rate / r2q (tc's default).
const HTB_R2Q: u32 = 10;
/// The kernel's bounds for a derived quantum. We send the clamped value
/// ourselves: with quantum 0 the kernel clamps too, but logs "quantum of
/// class ... is big" for every class above 16 Mbit/s.
const HTB_MIN_QUANTUM: u32 = 1000;
const HTB_MAX_QUANTUM: u32 = 200_000;
/// Smallest burst / cburst, bytes: tc's default (rate / HZ + MTU 1600 with
/// the high-resolution HZ of 10^9 reported by /proc/net/psched).
const MIN_BURST: u64 = 1600;
/// Burst covers at least this long at the rate (tc's output for multi-Gbit
/// classes otherwise shows bursts below one packet).
const BURST_US: u64 = 1000;
/// `TC_LINKLAYER_ETHERNET`: with it the kernel computes transmission times
/// itself and needs no rate table (`TCA_HTB_RTAB` / `CTAB`).
const LINKLAYER_ETHERNET: u8 = 1;
/// `sizeof(struct tc_htb_opt)` and `sizeof(struct tc_htb_glob)`.
const HTB_OPT_LEN: usize = 44;
const HTB_GLOB_LEN: usize = 20;
/// Ethertypes, host order (`ETH_P_IP`, `ETH_P_ALL`).
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ALL: u16 = 0x0003;
/// The ingress qdisc: handle `ffff:`, attached at `ffff:fff1`.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// Traffic control could not read or change the kernel's state.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The process lacks CAP_NET_ADMIN (EPERM / EACCES from the kernel).
    #[error(
        "shaping needs CAP_NET_ADMIN (run meshnode as root or grant it the capability): \
         {op} was refused"
    )]
    PermissionDenied {
        /// What was refused.
        op: String,
    },
    /// The kernel refused an operation. `message` is its own explanation
    /// (netlink extended ack) when it gave one, e.g. "HTB class in use".
    #[error("{op}: {}", crate::netlink::describe(*.errno, .message.as_deref()))]
    Kernel {
        /// What was attempted, e.g. "adding class 6d6e:10 ... on ifindex 3".
        op: String,
        /// The errno the kernel answered with (positive).
        errno: i32,
        /// The kernel's extended-ack text, if any.
        message: Option<String>,
    },
    /// The interface already has a qdisc meshnode did not install where
    /// meshnode would put its own. It is left alone.
    #[error(
        "ifindex {ifindex} has a {at} qdisc meshnode did not install ({kind} {handle}); \
         leaving it alone (delete it, e.g. `tc qdisc del dev <if> {at}`, to let meshnode shape \
         this interface)"
    )]
    ForeignQdisc {
        /// The interface.
        ifindex: u32,
        /// "root" or "ingress".
        at: &'static str,
        /// Its kind, e.g. "tbf".
        kind: String,
        /// Its handle, e.g. "8001:".
        handle: String,
    },
    /// No interface has this name.
    #[error("no network interface named {name}")]
    NoSuchLink {
        /// The name looked up.
        name: String,
    },
    /// An interface that should be an IFB is something else; it is left
    /// alone.
    #[error("interface {name} exists but is not an ifb device ({kind}); leaving it alone")]
    NotIfb {
        /// Its name.
        name: String,
        /// What it is ("veth", "unknown", ...).
        kind: String,
    },
    /// The netlink route socket could not be opened.
    #[error("cannot open a netlink route socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The netlink connection task is gone.
    #[error("netlink connection closed while {op}")]
    ConnectionClosed {
        /// What was attempted.
        op: String,
    },
    /// The kernel answered something a well-behaved kernel does not send.
    #[error("{op}: unexpected netlink reply: {detail}")]
    UnexpectedReply {
        /// What was attempted.
        op: String,
        /// What came back.
        detail: String,
    },
}

impl From<crate::netlink::NetlinkError> for TcError {
    fn from(e: crate::netlink::NetlinkError) -> Self {
        use crate::netlink::NetlinkError as N;
        match e {
            N::Kernel { op, errno, message } => TcError::from_kernel(op, errno, message),
            N::Closed { op } => TcError::ConnectionClosed { op },
            N::Overrun { op } => TcError::UnexpectedReply {
                op,
                detail: "overrun (the kernel dropped part of the answer)".into(),
            },
        }
    }
}

impl TcError {
    /// The error for a kernel answer of `-errno` to `op`. EPERM and EACCES
    /// become [`TcError::PermissionDenied`].
    fn from_kernel(op: String, errno: i32, message: Option<String>) -> TcError {
        if crate::netlink::NetlinkError::is_permission(errno) {
            TcError::PermissionDenied { op }
        } else {
            TcError::Kernel { op, errno, message }
        }
    }

    /// The kernel's errno, for the variants that carry one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            TcError::Kernel { errno, .. } => Some(Errno::from_raw(*errno)),
            TcError::PermissionDenied { .. } => Some(Errno::EPERM),
            TcError::Socket(e) => e.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

/// Counters of one class of ours (`tc -s class show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassStats {
    /// The class's minor.
    pub minor: u16,
    /// Bytes sent (dequeued) through the class, link-layer headers included.
    pub bytes: u64,
    /// Packets sent through the class.
    pub packets: u64,
    /// Packets dropped (its leaf queue was full).
    pub drops: u32,
    /// Times the class was over its rate/ceil when asked to send.
    pub overlimits: u32,
    /// Bytes waiting in its leaf queue now.
    pub backlog_bytes: u32,
}

/// Counters of our root qdisc (`tc -s qdisc show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QdiscStats {
    /// Bytes sent by the qdisc.
    pub bytes: u64,
    /// Packets sent by the qdisc.
    pub packets: u64,
    /// Packets dropped.
    pub drops: u32,
    /// Overlimit events.
    pub overlimits: u32,
    /// Requeues (the driver refused a packet).
    pub requeues: u32,
    /// Bytes queued now.
    pub backlog_bytes: u32,
    /// Packets queued now.
    pub qlen: u32,
    /// Packets sent unshaped because no filter matched and there is no
    /// default class (`direct_packets_stat`).
    pub direct_packets: u32,
}

/// One rtnetlink connection for traffic control, in the network namespace
/// of the thread that called [`Tc::connect`]. Methods take `&self`; the
/// connection task is aborted when the `Tc` is dropped.
#[derive(Debug)]
pub struct Tc {
    handle: Handle,
    /// The rtnetlink connection task.
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Tc {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// The root qdisc of an interface, by ownership.
enum Root {
    /// None, or the kernel's default (handle 0).
    Default,
    /// Our HTB.
    Ours(TcMessage),
    /// Somebody else's.
    Foreign { kind: String, handle: TcHandle },
}

impl Tc {
    /// Opens a netlink route socket with extended acks (the kernel's error
    /// text) and spawns its connection task on the current tokio runtime.
    pub async fn connect() -> Result<Tc, TcError> {
        let (handle, connection) = crate::netlink::open().map_err(TcError::Socket)?;
        Ok(Tc { handle, connection })
    }

    /// The index of the interface called `name`.
    pub async fn ifindex(&self, name: &str) -> Result<u32, TcError> {
        match self.link(name).await? {
            Some(l) => Ok(l.header.index),
            None => Err(TcError::NoSuchLink { name: name.into() }),
        }
    }

    /// meshnode's tree on `ifindex`, read back from the kernel; `None` when
    /// the root qdisc is the kernel's default. [`TcError::ForeignQdisc`] when
    /// someone else's root qdisc is there.
    pub async fn read_tree(&self, ifindex: u32) -> Result<Option<Tree>, TcError> {
        let root = match self.root(ifindex).await? {
            Root::Default => return Ok(None),
            Root::Ours(m) => m,
            Root::Foreign { kind, handle } => {
                return Err(TcError::ForeignQdisc {
                    ifindex,
                    at: "root",
                    kind,
                    handle: handle_text(handle),
                });
            }
        };
        let (default_class, _) = htb_glob_of(&root).ok_or_else(|| TcError::UnexpectedReply {
            op: format!("reading the root qdisc of ifindex {ifindex}"),
            detail: "HTB qdisc without TCA_HTB_INIT".into(),
        })?;
        let classes = self
            .classes(ifindex)
            .await?
            .iter()
            .filter_map(class_of)
            .collect();
        let msgs = self.filters(ifindex, our_qdisc()).await?;
        Ok(Some(Tree {
            default_class,
            classes,
            filters: filters_of(&msgs),
        }))
    }

    /// Executes `ops` in order on `ifindex`, then gives every class of ours
    /// without children its leaf queue (see the module docs); that step runs
    /// even for empty `ops`, so it repairs leaf queues someone changed. Stops
    /// at the first error, which names the op.
    pub async fn apply(&self, ifindex: u32, ops: &[Op]) -> Result<(), TcError> {
        for op in ops {
            debug!(ifindex, %op, "shaping");
            let what = format!("{op} on ifindex {ifindex}");
            let (msg, flags) = match op {
                Op::CreateQdisc { default_class } => (
                    RouteNetlinkMessage::NewQueueDiscipline(htb_qdisc(ifindex, *default_class)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                Op::DeleteQdisc => (
                    RouteNetlinkMessage::DelQueueDiscipline(del_root_qdisc(ifindex)),
                    0,
                ),
                Op::AddClass(c) => (
                    RouteNetlinkMessage::NewTrafficClass(htb_class(ifindex, c)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                // Flags 0: change in place, counters and queue stay.
                Op::ChangeClass(c) => (
                    RouteNetlinkMessage::NewTrafficClass(htb_class(ifindex, c)),
                    0,
                ),
                Op::DeleteClass(minor) => (
                    RouteNetlinkMessage::DelTrafficClass(del_class(ifindex, *minor)),
                    0,
                ),
                Op::AddFilter(f) => (
                    RouteNetlinkMessage::NewTrafficFilter(u32_filter(ifindex, f)),
                    NLM_F_CREATE | NLM_F_EXCL,
                ),
                Op::DeleteFilter(pref) => (
                    RouteNetlinkMessage::DelTrafficFilter(del_filters(ifindex, our_qdisc(), *pref)),
                    0,
                ),
            };
            self.request(msg, flags, &what).await?;
        }
        self.sync_leaves(ifindex).await
    }

    /// Counters of every class of ours on `ifindex` (empty without our
    /// qdisc).
    pub async fn class_stats(&self, ifindex: u32) -> Result<Vec<ClassStats>, TcError> {
        Ok(self
            .classes(ifindex)
            .await?
            .iter()
            .filter_map(|m| {
                let c = class_of(m)?;
                let s = stats_of(m);
                Some(ClassStats {
                    minor: c.minor,
                    bytes: s.bytes,
                    packets: s.packets,
                    drops: s.drops,
                    overlimits: s.overlimits,
                    backlog_bytes: s.backlog_bytes,
                })
            })
            .collect())
    }

    /// Counters of our root qdisc on `ifindex`; `None` without it (or with
    /// someone else's).
    pub async fn qdisc_stats(&self, ifindex: u32) -> Result<Option<QdiscStats>, TcError> {
        Ok(match self.root(ifindex).await? {
            Root::Ours(m) => {
                let mut s = stats_of(&m);
                s.direct_packets = htb_glob_of(&m).map_or(0, |(_, d)| d);
                Some(s)
            }
            Root::Default | Root::Foreign { .. } => None,
        })
    }

    /// Removes meshnode's shaping from `ifindex`: our root qdisc (with all
    /// its classes, filters and leaf queues) and our ingress redirect, with
    /// the ingress qdisc when no other filter uses it. Someone else's root
    /// qdisc is left alone. Idempotent. The IFB's own tree goes with
    /// [`Tc::delete_link`] or a `remove` on the IFB.
    pub async fn remove(&self, ifindex: u32) -> Result<(), TcError> {
        if let Root::Ours(_) = self.root(ifindex).await? {
            self.request(
                RouteNetlinkMessage::DelQueueDiscipline(del_root_qdisc(ifindex)),
                0,
                &format!("{} on ifindex {ifindex}", Op::DeleteQdisc),
            )
            .await?;
        }
        let Some(kind) = self.ingress_kind(ifindex).await? else {
            return Ok(());
        };
        if kind != "ingress" {
            return Ok(());
        }
        let filters = self.filters(ifindex, INGRESS_HANDLE).await?;
        if filters.iter().any(|m| pref_of(m) == REDIRECT_PREF) {
            self.request(
                RouteNetlinkMessage::DelTrafficFilter(del_filters(
                    ifindex,
                    INGRESS_HANDLE,
                    REDIRECT_PREF,
                )),
                0,
                &format!("deleting the ingress redirect filter on ifindex {ifindex}"),
            )
            .await?;
        }
        if filters.iter().all(|m| pref_of(m) == REDIRECT_PREF) {
            self.request(
                RouteNetlinkMessage::DelQueueDiscipline(del_ingress_qdisc(ifindex)),
                0,
                &format!("deleting the ingress qdisc on ifindex {ifindex}"),
            )
            .await?;
        }
        Ok(())
    }

    /// The index of the IFB device `name`, created (`ip link add name type
    /// ifb`) when missing and set up. [`TcError::NotIfb`] when `name` is
    /// some other kind of interface.
    pub async fn ensure_ifb(&self, name: &str) -> Result<u32, TcError> {
        let link = match self.link(name).await? {
            Some(l) => l,
            None => {
                let msg = rtnetlink::LinkIfb::new(name).up().build();
                let what = format!("creating ifb device {name}");
                match self
                    .request(
                        RouteNetlinkMessage::NewLink(msg),
                        NLM_F_CREATE | NLM_F_EXCL,
                        &what,
                    )
                    .await
                {
                    // Created by someone else meanwhile: checked below.
                    Err(e) if e.errno() == Some(Errno::EEXIST) => {}
                    r => r?,
                }
                self.link(name)
                    .await?
                    .ok_or_else(|| TcError::NoSuchLink { name: name.into() })?
            }
        };
        check_ifb(name, &link)?;
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            let msg = rtnetlink::LinkUnspec::new_with_index(index).up().build();
            self.request(
                RouteNetlinkMessage::NewLink(msg),
                0,
                &format!("setting ifb device {name} up"),
            )
            .await?;
        }
        Ok(index)
    }

    /// Deletes the IFB device `name` (with everything on it); nothing when
    /// it does not exist. Refuses ([`TcError::NotIfb`]) any other kind of
    /// interface.
    pub async fn delete_link(&self, name: &str) -> Result<(), TcError> {
        let Some(link) = self.link(name).await? else {
            return Ok(());
        };
        check_ifb(name, &link)?;
        let mut msg = LinkMessage::default();
        msg.header.index = link.header.index;
        match self
            .request(
                RouteNetlinkMessage::DelLink(msg),
                0,
                &format!("deleting ifb device {name}"),
            )
            .await
        {
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(()),
            r => r,
        }
    }

    /// Sends everything arriving on `lan_ifindex` through the IFB
    /// `ifb_ifindex` (whose root qdisc then shapes it): the ingress qdisc
    /// `ffff:` and, at pref [`REDIRECT_PREF`], a u32 match-all filter with a
    /// mirred egress redirect. Idempotent; a redirect of ours to another
    /// device is replaced. [`TcError::ForeignQdisc`] when the interface has
    /// another ingress-side qdisc (`clsact`).
    pub async fn redirect_ingress(
        &self,
        lan_ifindex: u32,
        ifb_ifindex: u32,
    ) -> Result<(), TcError> {
        match self.ingress_kind(lan_ifindex).await?.as_deref() {
            Some("ingress") => {}
            Some(other) => {
                return Err(TcError::ForeignQdisc {
                    ifindex: lan_ifindex,
                    at: "ingress",
                    kind: other.into(),
                    handle: handle_text(INGRESS_HANDLE),
                });
            }
            None => {
                self.request(
                    RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(lan_ifindex)),
                    NLM_F_CREATE | NLM_F_EXCL,
                    &format!("adding the ingress qdisc on ifindex {lan_ifindex}"),
                )
                .await?;
            }
        }
        let ours: Vec<TcMessage> = self
            .filters(lan_ifindex, INGRESS_HANDLE)
            .await?
            .into_iter()
            .filter(|m| pref_of(m) == REDIRECT_PREF)
            .collect();
        if is_redirect_to(&ours, ifb_ifindex) {
            return Ok(());
        }
        if !ours.is_empty() {
            self.request(
                RouteNetlinkMessage::DelTrafficFilter(del_filters(
                    lan_ifindex,
                    INGRESS_HANDLE,
                    REDIRECT_PREF,
                )),
                0,
                &format!("replacing the ingress redirect filter on ifindex {lan_ifindex}"),
            )
            .await?;
        }
        self.request(
            RouteNetlinkMessage::NewTrafficFilter(redirect_filter(lan_ifindex, ifb_ifindex)),
            NLM_F_CREATE | NLM_F_EXCL,
            &format!(
                "adding the ingress redirect filter on ifindex {lan_ifindex} to ifindex \
                 {ifb_ifindex}"
            ),
        )
        .await
    }

    // -- reading ----------------------------------------------------------

    /// The link called `name`, `None` when there is none.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, TcError> {
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.into()));
        let what = format!("looking up interface {name}");
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::GetLink(req));
        msg.header.flags = NLM_F_REQUEST;
        let mut replies = self
            .handle
            .clone()
            .request(msg)
            .map_err(|_| TcError::ConnectionClosed { op: what.clone() })?;
        let mut found = None;
        while let Some(reply) = replies.next().await {
            match crate::netlink::check(&reply, &what).map_err(TcError::from) {
                Err(e) if e.errno() == Some(Errno::ENODEV) => return Ok(None),
                r => r?,
            }
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = reply.payload {
                found = Some(l);
            }
        }
        Ok(found)
    }

    /// Every qdisc of `ifindex`.
    async fn qdiscs(&self, ifindex: u32) -> Result<Vec<TcMessage>, TcError> {
        let req = RouteNetlinkMessage::GetQueueDiscipline(tc_message(ifindex));
        let what = format!("reading the qdiscs of ifindex {ifindex}");
        Ok(self
            .dump(req, &what)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                // Kernels dump every interface's qdiscs, whatever the index.
                RouteNetlinkMessage::NewQueueDiscipline(q) if index_of(&q) == Some(ifindex) => {
                    Some(q)
                }
                _ => None,
            })
            .collect())
    }

    async fn root(&self, ifindex: u32) -> Result<Root, TcError> {
        let qdiscs = self.qdiscs(ifindex).await?;
        let Some(root) = qdiscs
            .into_iter()
            .find(|q| q.header.parent == TcHandle::ROOT)
        else {
            return Ok(Root::Default);
        };
        let kind = kind_of(&root).unwrap_or_default().to_string();
        Ok(if root.header.handle.major == 0 {
            Root::Default
        } else if root.header.handle == our_qdisc() && kind == "htb" {
            Root::Ours(root)
        } else {
            Root::Foreign {
                kind,
                handle: root.header.handle,
            }
        })
    }

    /// Kind of the qdisc on the ingress side of `ifindex` (`ingress` or
    /// `clsact`), if any.
    async fn ingress_kind(&self, ifindex: u32) -> Result<Option<String>, TcError> {
        Ok(self
            .qdiscs(ifindex)
            .await?
            .iter()
            .find(|q| q.header.parent == TcHandle::INGRESS)
            .map(|q| kind_of(q).unwrap_or_default().to_string()))
    }

    /// The classes of our qdisc on `ifindex` (none without it).
    async fn classes(&self, ifindex: u32) -> Result<Vec<TcMessage>, TcError> {
        let mut req = tc_message(ifindex);
        // Only the classes of the qdisc with this handle.
        req.header.parent = our_qdisc();
        let what = format!("reading the classes of ifindex {ifindex}");
        Ok(self
            .dump(RouteNetlinkMessage::GetTrafficClass(req), &what)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c)
                    if index_of(&c) == Some(ifindex) && c.header.handle.major == MAJOR =>
                {
                    Some(c)
                }
                _ => None,
            })
            .collect())
    }

    /// The filters attached to the qdisc `parent` of `ifindex`, chain 0.
    async fn filters(&self, ifindex: u32, parent: TcHandle) -> Result<Vec<TcMessage>, TcError> {
        let mut req = tc_message(ifindex);
        req.header.parent = parent;
        let what = format!(
            "reading the filters of {} on ifindex {ifindex}",
            handle_text(parent)
        );
        Ok(self
            .dump(RouteNetlinkMessage::GetTrafficFilter(req), &what)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficFilter(f)
                    if index_of(&f) == Some(ifindex)
                        && !f
                            .attributes
                            .iter()
                            .any(|a| matches!(a, TcAttribute::Chain(c) if *c != 0)) =>
                {
                    Some(f)
                }
                _ => None,
            })
            .collect())
    }

    /// Gives every class of ours without children a `bfifo` leaf of
    /// [`leaf_queue_bytes`]`(ceil)`: created (replacing the default `pfifo`
    /// or any other leaf) or changed in place when its limit is off.
    async fn sync_leaves(&self, ifindex: u32) -> Result<(), TcError> {
        let classes: Vec<ClassSpec> = self
            .classes(ifindex)
            .await?
            .iter()
            .filter_map(class_of)
            .collect();
        if classes.is_empty() {
            return Ok(());
        }
        let inner: BTreeSet<u16> = classes.iter().map(|c| c.parent).collect();
        // Leaf qdiscs by the minor of the class they hang on.
        let leaves: BTreeMap<u16, TcMessage> = self
            .qdiscs(ifindex)
            .await?
            .into_iter()
            .filter(|q| q.header.parent.major == MAJOR && q.header.parent.minor != 0)
            .map(|q| (q.header.parent.minor, q))
            .collect();
        for c in classes.iter().filter(|c| !inner.contains(&c.minor)) {
            let limit = leaf_queue_bytes(c.ceil);
            let existing = leaves.get(&c.minor);
            let (handle, flags, verb) = match existing {
                Some(q) if kind_of(q) == Some(LEAF_KIND) => {
                    if fifo_limit_of(q) == Some(limit) {
                        continue;
                    }
                    (q.header.handle.major, 0, "changing")
                }
                // The default pfifo (not in the dump) or another kind:
                // handle 0 lets the kernel pick one, CREATE grafts the new
                // queue in place of the old.
                _ => (0, NLM_F_CREATE, "adding"),
            };
            let what = format!(
                "{verb} leaf qdisc {LEAF_KIND} limit {limit}b on class {MAJOR:x}:{:x} of ifindex \
                 {ifindex}",
                c.minor
            );
            let msg = leaf_qdisc(ifindex, c.minor, handle, limit);
            self.request(RouteNetlinkMessage::NewQueueDiscipline(msg), flags, &what)
                .await?;
        }
        Ok(())
    }

    // -- netlink plumbing -------------------------------------------------

    /// Sends a request that expects an acknowledgement.
    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: &str,
    ) -> Result<(), TcError> {
        Ok(crate::netlink::request(&self.handle, msg, flags, what).await?)
    }

    /// Runs a dump (see [`crate::netlink::dump`]).
    async fn dump(
        &self,
        msg: RouteNetlinkMessage,
        what: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, TcError> {
        Ok(crate::netlink::dump(&self.handle, msg, what).await?)
    }
}

fn check_ifb(name: &str, link: &LinkMessage) -> Result<(), TcError> {
    let kind = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    });
    match kind {
        Some(InfoKind::Ifb) => Ok(()),
        Some(k) => Err(TcError::NotIfb {
            name: name.into(),
            kind: k.to_string(),
        }),
        None => Err(TcError::NotIfb {
            name: name.into(),
            kind: "a device without a link kind".into(),
        }),
    }
}

// ---------------------------------------------------------------------------
// Message builders (pure)

/// `MAJOR:0`, our root qdisc's handle.
fn our_qdisc() -> TcHandle {
    TcHandle {
        major: MAJOR,
        minor: 0,
    }
}

fn tc_message(ifindex: u32) -> TcMessage {
    // Interface indexes are positive ints in the kernel; an impossible one
    // becomes an index no interface has.
    TcMessage::with_index(i32::try_from(ifindex).unwrap_or(i32::MAX))
}

/// `struct tc_htb_glob { version, rate2quantum, defcls, debug, direct_pkts }`.
fn htb_glob(default_class: u16) -> Vec<u8> {
    [HTB_VERSION, HTB_R2Q, u32::from(default_class), 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// `tc qdisc add dev <if> root handle 6d6e: htb default <d>` (r2q 10).
/// Send with `NLM_F_CREATE | NLM_F_EXCL`.
pub fn htb_qdisc(ifindex: u32, default_class: u16) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = our_qdisc();
    m.attributes.push(TcAttribute::Kind("htb".into()));
    m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
        DefaultNla::new(TCA_HTB_INIT, htb_glob(default_class)),
    )]));
    m
}

/// `struct tc_ratespec` for `bytes_per_s`: linklayer ethernet, no cell
/// table (`cell_log` 0, `cell_align` -1 as tc sends), rate capped at u32
/// (the rest goes in `TCA_HTB_RATE64`/`CEIL64`).
fn ratespec(bytes_per_s: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = LINKLAYER_ETHERNET;
    b[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    let rate = u32::try_from(bytes_per_s).unwrap_or(u32::MAX);
    b[8..12].copy_from_slice(&rate.to_ne_bytes());
    b
}

/// Burst (and cburst) in bytes for a rate: at least [`BURST_US`] at the
/// rate, at least [`MIN_BURST`].
fn burst(bytes_per_s: u64) -> u64 {
    (bytes_per_s.saturating_mul(BURST_US) / 1_000_000).max(MIN_BURST)
}

/// Time to send `bytes` at `bytes_per_s`, in psched ticks of 64 ns (the
/// kernel's `PSCHED_SHIFT` 6; /proc/net/psched: 1000 ns per 64 ticks, i.e.
/// 15.625 ticks per µs). Computed like tc's `tc_calc_xmittime`: whole
/// microseconds first, then ticks, both rounded down, so the values equal
/// tc's; saturates at u32.
fn xmit_ticks(bytes_per_s: u64, bytes: u64) -> u32 {
    let us = u128::from(bytes) * 1_000_000 / u128::from(bytes_per_s.max(1));
    u32::try_from(us * 125 / 8).unwrap_or(u32::MAX)
}

/// The quantum the kernel would derive (rate / r2q, clamped), sent
/// explicitly so it does not warn about it.
fn quantum(bytes_per_s: u64) -> u32 {
    let q = bytes_per_s / u64::from(HTB_R2Q);
    u32::try_from(q.clamp(u64::from(HTB_MIN_QUANTUM), u64::from(HTB_MAX_QUANTUM)))
        .unwrap_or(HTB_MAX_QUANTUM)
}

/// `struct tc_htb_opt`: rate, ceil, buffer, cbuffer, quantum, level, prio.
fn htb_opt(c: &ClassSpec) -> Vec<u8> {
    let mut v = Vec::with_capacity(HTB_OPT_LEN);
    v.extend_from_slice(&ratespec(c.rate));
    v.extend_from_slice(&ratespec(c.ceil));
    let buffer = xmit_ticks(c.rate, burst(c.rate));
    let cbuffer = xmit_ticks(c.ceil, burst(c.ceil));
    // level: only dumped by the kernel, ignored when set.
    for x in [buffer, cbuffer, quantum(c.rate), 0, c.prio] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

/// `tc class add dev <if> parent 6d6e:<parent> classid 6d6e:<minor> htb
/// rate <rate> ceil <ceil> burst <b> cburst <cb> prio <prio> quantum <q>`,
/// rates in bytes/s. Send with `NLM_F_CREATE | NLM_F_EXCL` to add, with
/// flags 0 to change in place.
pub fn htb_class(ifindex: u32, c: &ClassSpec) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = TcHandle {
        major: MAJOR,
        minor: c.parent,
    };
    m.header.handle = TcHandle {
        major: MAJOR,
        minor: c.minor,
    };
    m.attributes.push(TcAttribute::Kind("htb".into()));
    // tc's order: the 64-bit rates first.
    let mut opts = Vec::new();
    if c.rate > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_RATE64,
            c.rate.to_ne_bytes().to_vec(),
        )));
    }
    if c.ceil > u64::from(u32::MAX) {
        opts.push(TcOption::Other(DefaultNla::new(
            TCA_HTB_CEIL64,
            c.ceil.to_ne_bytes().to_vec(),
        )));
    }
    opts.push(TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, htb_opt(c))));
    m.attributes.push(TcAttribute::Options(opts));
    m
}

/// `tc filter add dev <if> parent 6d6e: protocol ip pref <pref> u32 match
/// ip dst|src <ip>/32 (or match ip dsfield <tos> 0xfc) flowid 6d6e:<class>`.
/// Send with `NLM_F_CREATE | NLM_F_EXCL`.
pub fn u32_filter(ifindex: u32, f: &FilterSpec) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = our_qdisc();
    m.header.info = filter_info(f.pref, ETH_P_IP);
    let (off, val, mask) = f.key.key();
    let mut key = TcU32Key::default();
    // Host order; the crate writes mask and val big-endian.
    key.mask = mask;
    key.val = val;
    key.off = i32::from(off);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![key];
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::ClassId(TcHandle {
            major: MAJOR,
            minor: f.class,
        })),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ]));
    m
}

/// `tcm_info` of a filter: pref in the upper half, the ethertype in network
/// order in the lower.
fn filter_info(pref: u16, ethertype: u16) -> u32 {
    (u32::from(pref) << 16) | u32::from(ethertype.to_be())
}

/// `tc qdisc add dev <if> ingress`. Send with `NLM_F_CREATE | NLM_F_EXCL`.
pub fn ingress_qdisc(ifindex: u32) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = INGRESS_HANDLE;
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

/// `tc filter add dev <if> parent ffff: protocol all pref 28014 u32 match
/// u32 0 0 action mirred egress redirect dev <ifb>`. Send with
/// `NLM_F_CREATE | NLM_F_EXCL`.
pub fn redirect_filter(ifindex: u32, ifb_ifindex: u32) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = INGRESS_HANDLE;
    m.header.info = filter_info(REDIRECT_PREF, ETH_P_ALL);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    // mask 0: every packet matches.
    sel.keys = vec![TcU32Key::default()];
    let mut mirred = TcMirror::default();
    // The packet is consumed here (stolen) and re-enters at the IFB.
    mirred.generic.action = TcActionType::Stolen;
    mirred.eaction = TcMirrorActionType::EgressRedir;
    mirred.ifindex = ifb_ifindex;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirred,
        ))]),
    ];
    m.attributes.push(TcAttribute::Kind("u32".into()));
    // tc's order: the action first.
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ]));
    m
}

/// `tc qdisc add dev <if> parent 6d6e:<class> [handle <h>:] bfifo limit
/// <limit>`; `handle` 0 lets the kernel choose. Send with `NLM_F_CREATE`
/// and handle 0 to add (or replace another kind), flags 0 and the existing
/// handle to change the limit.
pub fn leaf_qdisc(ifindex: u32, class: u16, handle: u16, limit: u32) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = TcHandle {
        major: MAJOR,
        minor: class,
    };
    m.header.handle = TcHandle {
        major: handle,
        minor: 0,
    };
    m.attributes.push(TcAttribute::Kind(LEAF_KIND.into()));
    // `struct tc_fifo_qopt { limit }` directly as TCA_OPTIONS, not nested.
    m.attributes.push(TcAttribute::Other(DefaultNla::new(
        TCA_OPTIONS,
        limit.to_ne_bytes().to_vec(),
    )));
    m
}

/// Deletes the root qdisc only if its handle is ours (the kernel answers
/// "Invalid handle" otherwise). Send with flags 0.
fn del_root_qdisc(ifindex: u32) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = TcHandle::ROOT;
    m.header.handle = our_qdisc();
    m
}

/// `tc qdisc del dev <if> ingress`.
fn del_ingress_qdisc(ifindex: u32) -> TcMessage {
    let mut m = ingress_qdisc(ifindex);
    m.attributes.clear();
    m
}

/// `tc class del dev <if> classid 6d6e:<minor>`.
fn del_class(ifindex: u32, minor: u16) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.handle = TcHandle {
        major: MAJOR,
        minor,
    };
    m
}

/// `tc filter del dev <if> parent <parent> pref <pref>`: every filter at
/// that pref, whatever its protocol and classifier (protocol 0, no kind).
fn del_filters(ifindex: u32, parent: TcHandle, pref: u16) -> TcMessage {
    let mut m = tc_message(ifindex);
    m.header.parent = parent;
    m.header.info = u32::from(pref) << 16;
    m
}

// ---------------------------------------------------------------------------
// Dump parsers (pure)

fn index_of(m: &TcMessage) -> Option<u32> {
    u32::try_from(m.header.index).ok()
}

fn kind_of(m: &TcMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    })
}

fn pref_of(m: &TcMessage) -> u16 {
    (m.header.info >> 16) as u16
}

fn handle_text(h: TcHandle) -> String {
    if h.minor == 0 {
        format!("{:x}:", h.major)
    } else {
        format!("{:x}:{:x}", h.major, h.minor)
    }
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// The attributes nested in the `TCA_OPTIONS` of a qdisc or class whose
/// kind netlink-packet-route does not know (HTB): it keeps the whole
/// `TCA_OPTIONS` as one raw attribute. `(type, value)` pairs.
fn raw_options(m: &TcMessage) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for a in &m.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts {
                if let TcOption::Other(nla) = o {
                    let value = nla_value(nla);
                    for inner in NlasIterator::new(&value[..]).flatten() {
                        out.push((inner.kind() & NLA_TYPE_MASK, inner.value().to_vec()));
                    }
                }
            }
        }
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(..8)?.try_into().ok()?))
}

/// Default class minor and `direct_pkts` of an HTB qdisc. The kernel uses
/// only the low 16 bits of `defcls` (`TC_H_MAKE(major, defcls)`).
fn htb_glob_of(m: &TcMessage) -> Option<(u16, u32)> {
    let (_, glob) = raw_options(m)
        .into_iter()
        .find(|(k, v)| *k == TCA_HTB_INIT && v.len() >= HTB_GLOB_LEN)?;
    Some((u32_at(&glob, 8)? as u16, u32_at(&glob, 16)?))
}

/// The planner's view of a dumped class of ours; `None` for anything else.
fn class_of(m: &TcMessage) -> Option<ClassSpec> {
    if kind_of(m) != Some("htb") || m.header.handle.major != MAJOR || m.header.handle.minor == 0 {
        return None;
    }
    let parent = if m.header.parent == TcHandle::ROOT || m.header.parent == our_qdisc() {
        0
    } else if m.header.parent.major == MAJOR {
        m.header.parent.minor
    } else {
        return None;
    };
    let opts = raw_options(m);
    let parms = opts
        .iter()
        .find(|(k, v)| *k == TCA_HTB_PARMS && v.len() >= HTB_OPT_LEN)
        .map(|(_, v)| v)?;
    let rate64 = opts
        .iter()
        .find(|(k, _)| *k == TCA_HTB_RATE64)
        .and_then(|(_, v)| u64_of(v));
    let ceil64 = opts
        .iter()
        .find(|(k, _)| *k == TCA_HTB_CEIL64)
        .and_then(|(_, v)| u64_of(v));
    Some(ClassSpec {
        minor: m.header.handle.minor,
        parent,
        rate: rate64.unwrap_or(u64::from(u32_at(parms, 8)?)),
        ceil: ceil64.unwrap_or(u64::from(u32_at(parms, 20)?)),
        prio: u32_at(parms, 40)?,
    })
}

/// The `limit` of a dumped `bfifo`/`pfifo` (`TCA_OPTIONS` is the raw
/// `struct tc_fifo_qopt`).
fn fifo_limit_of(m: &TcMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
            TcOption::Other(nla) => u32_at(&nla_value(nla), 0),
            _ => None,
        }),
        _ => None,
    })
}

/// A filter of ours, or `None` for anything else at its pref.
fn filter_of(m: &TcMessage) -> Option<FilterSpec> {
    if kind_of(m) != Some("u32") || (m.header.info & 0xffff) as u16 != ETH_P_IP.to_be() {
        return None;
    }
    let mut class = None;
    let mut sel = None;
    for a in &m.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts {
                match o {
                    TcOption::U32(TcFilterU32Option::ClassId(h)) => class = Some(*h),
                    TcOption::U32(TcFilterU32Option::Selector(s)) => sel = Some(s),
                    // An action or a link to another hash table: not ours.
                    TcOption::U32(TcFilterU32Option::Action(_) | TcFilterU32Option::Link(_)) => {
                        return None;
                    }
                    _ => {}
                }
            }
        }
    }
    let (class, sel) = (class?, sel?);
    let [key] = sel.keys.as_slice() else {
        return None;
    };
    let matches = Match::from_key(key.off, key.val, key.mask)?;
    let plain = sel.flags.contains(TcU32SelectorFlags::Terminal)
        && sel.offshift == 0
        && sel.offmask == 0
        && sel.off == 0
        && sel.offoff == 0
        && sel.hoff == 0
        && sel.hmask == 0
        && key.offmask == 0
        && class.major == MAJOR;
    plain.then(|| FilterSpec {
        pref: pref_of(m),
        key: matches,
        class: class.minor,
    })
}

/// True for u32 entries that hold a selector (the others are the hash
/// tables u32 creates for each pref).
fn has_selector(m: &TcMessage) -> bool {
    m.attributes.iter().any(|a| match a {
        TcAttribute::Options(opts) => opts
            .iter()
            .any(|o| matches!(o, TcOption::U32(TcFilterU32Option::Selector(_)))),
        _ => false,
    }) || kind_of(m) != Some("u32")
}

/// The planner's view of the filters at our qdisc: one [`FilterSpec`] per
/// pref; a pref holding anything but exactly one filter of ours reads as
/// class 0 (see [`FilterSpec`]), which the planner replaces.
fn filters_of(msgs: &[TcMessage]) -> Vec<FilterSpec> {
    let mut by_pref: BTreeMap<u16, Vec<&TcMessage>> = BTreeMap::new();
    for m in msgs {
        by_pref.entry(pref_of(m)).or_default().push(m);
    }
    by_pref
        .into_iter()
        .map(|(pref, ms)| {
            let entries: Vec<&&TcMessage> = ms.iter().filter(|m| has_selector(m)).collect();
            match entries.as_slice() {
                [m] => filter_of(m),
                _ => None,
            }
            .unwrap_or(FilterSpec {
                pref,
                key: Match::Dst(Ipv4Addr::UNSPECIFIED),
                class: 0,
            })
        })
        .collect()
}

/// True when the entries at [`REDIRECT_PREF`] are exactly our match-all
/// redirect to `ifb`.
fn is_redirect_to(entries: &[TcMessage], ifb: u32) -> bool {
    let with_sel: Vec<&TcMessage> = entries.iter().filter(|m| has_selector(m)).collect();
    let [m] = with_sel.as_slice() else {
        return false;
    };
    if kind_of(m) != Some("u32") || (m.header.info & 0xffff) as u16 != ETH_P_ALL.to_be() {
        return false;
    }
    let mut match_all = false;
    let mut redirect = false;
    for a in &m.attributes {
        let TcAttribute::Options(opts) = a else {
            continue;
        };
        for o in opts {
            match o {
                TcOption::U32(TcFilterU32Option::Selector(s)) => {
                    match_all = s.keys.len() == 1 && s.keys[0].mask == 0;
                }
                TcOption::U32(TcFilterU32Option::Action(acts)) => {
                    redirect = acts.len() == 1
                        && acts[0].attributes.iter().any(|a| {
                            matches!(a, TcActionAttribute::Options(o) if o.iter().any(|o| matches!(
                                o,
                                TcActionOption::Mirror(TcActionMirrorOption::Parms(p))
                                    if p.eaction == TcMirrorActionType::EgressRedir
                                        && p.ifindex == ifb
                                        && p.generic.action == TcActionType::Stolen
                            )))
                        });
                }
                _ => {}
            }
        }
    }
    match_all && redirect
}

/// Counters from `TCA_STATS2` (basic, queue, 64-bit packets), falling back
/// to the old `TCA_STATS` struct.
fn stats_of(m: &TcMessage) -> QdiscStats {
    let mut s = QdiscStats::default();
    let mut pkt64 = None;
    let mut seen2 = false;
    for a in &m.attributes {
        match a {
            TcAttribute::Stats2(list) => {
                seen2 = true;
                for st in list {
                    match st {
                        TcStats2::Basic(b) => {
                            s.bytes = b.bytes;
                            s.packets = u64::from(b.packets);
                        }
                        TcStats2::Queue(q) => {
                            s.drops = q.drops;
                            s.overlimits = q.overlimits;
                            s.requeues = q.requeues;
                            s.backlog_bytes = q.backlog;
                            s.qlen = q.qlen;
                        }
                        TcStats2::Other(nla) if nla.kind() & NLA_TYPE_MASK == TCA_STATS_PKT64 => {
                            pkt64 = u64_of(&nla_value(nla));
                        }
                        _ => {}
                    }
                }
            }
            TcAttribute::Stats(old) if !seen2 => {
                s.bytes = old.bytes;
                s.packets = u64::from(old.packets);
                s.drops = old.drops;
                s.overlimits = old.overlimits;
                s.backlog_bytes = old.backlog;
                s.qlen = old.qlen;
            }
            _ => {}
        }
    }
    if let Some(p) = pkt64 {
        s.packets = p;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{Emitable, NLM_F_ACK, Parseable};
    use rtnetlink::packet_route::tc::TcStatsBasic;

    /// The sequence number and ifindex in the captures below.
    const SEQ: u32 = 0x6b01_77e6;
    const IFINDEX: u32 = 3;

    /// Serialises `m` as a request the way `Tc::request` sends it, with the
    /// capture's sequence number.
    fn bytes(m: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
        let mut msg = NetlinkMessage::from(m);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        msg.header.sequence_number = SEQ;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    /// `m` as the kernel's dumps look to us: emitted and parsed back, so
    /// that options of kinds the crate does not know (HTB, bfifo) become the
    /// raw `TCA_OPTIONS` attribute a dump yields.
    fn reparsed(m: TcMessage) -> TcMessage {
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        TcMessage::parse(&buf[..]).expect("parses")
    }

    // How the golden bytes were obtained: in a scratch namespace with a
    // veth `va` (ifindex 3) and an ifb `ifbx` (ifindex 4), each tc command
    // quoted above its test was run as
    //     strace -e trace=sendmsg -e write=all tc ...
    // (iproute2 6.1) and the hex dump of the sendmsg buffer copied here; the
    // kernel (6.18) accepted each. Where our message deliberately differs
    // from tc's, the test says so and how the difference was checked. The
    // netns tests (tests/netns_tc.rs) then apply the same builders to a real
    // kernel and read the result back with `tc`.

    #[test]
    fn htb_root_qdisc_matches_tc() {
        // tc qdisc add dev va root handle 6d6e: htb default 10
        #[rustfmt::skip]
        let tc: &[u8] = &[
            0x48, 0x00, 0x00, 0x00, 0x24, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 72, RTM_NEWQDISC, REQUEST|ACK|EXCL|CREATE
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, // family, pad, ifindex 3
            0x00, 0x00, 0x6e, 0x6d, 0xff, 0xff, 0xff, 0xff, // handle 6d6e:, parent root
            0x00, 0x00, 0x00, 0x00, // info
            0x08, 0x00, 0x01, 0x00, b'h', b't', b'b', 0x00, // TCA_KIND
            0x1c, 0x00, 0x02, 0x00, // TCA_OPTIONS
            0x18, 0x00, 0x02, 0x00, // TCA_HTB_INIT: tc_htb_glob
            0x03, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, // version 3, r2q 10
            0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // defcls 0x10, debug
            0x00, 0x00, 0x00, 0x00, // direct_pkts
        ];
        let ours = bytes(
            RouteNetlinkMessage::NewQueueDiscipline(htb_qdisc(IFINDEX, 0x10)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, tc);
        assert_eq!(
            htb_glob_of(&reparsed(htb_qdisc(IFINDEX, 0x10))),
            Some((0x10, 0))
        );
    }

    #[test]
    fn htb_class_matches_tc_without_rate_tables() {
        // tc class add dev va parent 6d6e: classid 6d6e:10 htb rate 1mbit
        //     ceil 2mbit burst 1600 cburst 1600 prio 1 quantum 12500
        // tc also sends TCA_HTB_RTAB and TCA_HTB_CTAB (1024 bytes each) and
        // sets cell_log 3 in both ratespecs; both only feed the rate tables,
        // which the kernel ignores for linklayer ethernet (it computes
        // times itself). We send neither: cell_log is 0 below, the rest is
        // tc's capture. `tc -s class show` of the result is checked in
        // tests/netns_tc.rs ("rate 1Mbit ceil 2Mbit burst 1600b cburst
        // 1600b").
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x60, 0x00, 0x00, 0x00, 0x28, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 96, RTM_NEWTCLASS, REQUEST|ACK|EXCL|CREATE
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, // family, pad, ifindex 3
            0x10, 0x00, 0x6e, 0x6d, 0x00, 0x00, 0x6e, 0x6d, // classid 6d6e:10, parent 6d6e:
            0x00, 0x00, 0x00, 0x00, // info
            0x08, 0x00, 0x01, 0x00, b'h', b't', b'b', 0x00, // TCA_KIND
            0x34, 0x00, 0x02, 0x00, // TCA_OPTIONS
            0x30, 0x00, 0x01, 0x00, // TCA_HTB_PARMS: tc_htb_opt
            // rate: cell_log 0, linklayer ethernet, overhead 0, cell_align
            // -1, mpu 0, 125000 B/s
            0x00, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x48, 0xe8, 0x01, 0x00,
            // ceil: 250000 B/s
            0x00, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x90, 0xd0, 0x03, 0x00,
            0x40, 0x0d, 0x03, 0x00, // buffer 200000 ticks = 1600 B at 125000 B/s
            0xa0, 0x86, 0x01, 0x00, // cbuffer 100000 ticks
            0xd4, 0x30, 0x00, 0x00, // quantum 12500
            0x00, 0x00, 0x00, 0x00, // level
            0x01, 0x00, 0x00, 0x00, // prio 1
        ];
        let c = ClassSpec {
            minor: 0x10,
            parent: 0,
            rate: 125_000,
            ceil: 250_000,
            prio: 1,
        };
        let add = bytes(
            RouteNetlinkMessage::NewTrafficClass(htb_class(IFINDEX, &c)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(add, want);
        // `tc class change`: the same message with flags REQUEST|ACK.
        let change = bytes(
            RouteNetlinkMessage::NewTrafficClass(htb_class(IFINDEX, &c)),
            0,
        );
        assert_eq!(&change[6..8], &[0x05, 0x00]);
        assert_eq!(change[8..], want[8..]);
        // What the kernel dumps back parses to the same class.
        assert_eq!(class_of(&reparsed(htb_class(IFINDEX, &c))), Some(c));
    }

    #[test]
    fn htb_class_above_u32_carries_ceil64_first_like_tc() {
        // tc class add dev va parent 6d6e:10 classid 6d6e:11 htb rate 5gbit
        //     ceil 40gbit burst 625000 cburst 5000000 prio 2 quantum 200000
        // Same differences as above (no rate tables, cell_log 0).
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x6c, 0x00, 0x00, 0x00, 0x28, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 108
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x11, 0x00, 0x6e, 0x6d, 0x10, 0x00, 0x6e, 0x6d, // classid 6d6e:11, parent 6d6e:10
            0x00, 0x00, 0x00, 0x00, //
            0x08, 0x00, 0x01, 0x00, b'h', b't', b'b', 0x00, //
            0x40, 0x00, 0x02, 0x00, // TCA_OPTIONS
            0x0c, 0x00, 0x07, 0x00, // TCA_HTB_CEIL64: 5e9 B/s
            0x00, 0xf2, 0x05, 0x2a, 0x01, 0x00, 0x00, 0x00, //
            0x30, 0x00, 0x01, 0x00, // TCA_HTB_PARMS
            0x00, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x40, 0xbe, 0x40, 0x25, // 625e6 B/s
            0x00, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, // capped
            0x09, 0x3d, 0x00, 0x00, // buffer 15625 ticks = 1 ms (burst 625000 B)
            0x09, 0x3d, 0x00, 0x00, // cbuffer 15625 ticks = 1 ms (5000000 B)
            0x40, 0x0d, 0x03, 0x00, // quantum 200000 (the kernel's maximum)
            0x00, 0x00, 0x00, 0x00, //
            0x02, 0x00, 0x00, 0x00, // prio 2
        ];
        let c = ClassSpec {
            minor: 0x11,
            parent: 0x10,
            rate: 625_000_000,
            ceil: 5_000_000_000,
            prio: 2,
        };
        let ours = bytes(
            RouteNetlinkMessage::NewTrafficClass(htb_class(IFINDEX, &c)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, want);
        assert_eq!(class_of(&reparsed(htb_class(IFINDEX, &c))), Some(c));
    }

    #[test]
    fn u32_filters_match_tc() {
        // tc filter add dev va parent 6d6e: protocol ip pref 10 u32
        //     match ip dst 192.0.2.10/32 flowid 6d6e:10
        #[rustfmt::skip]
        let dst: &[u8] = &[
            0x5c, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 92, RTM_NEWTFILTER
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6e, 0x6d, // handle 0, parent 6d6e:
            0x08, 0x00, 0x0a, 0x00, // info: htons(ETH_P_IP), pref 10
            0x08, 0x00, 0x01, 0x00, b'u', b'3', b'2', 0x00, // TCA_KIND
            0x30, 0x00, 0x02, 0x00, // TCA_OPTIONS
            0x08, 0x00, 0x01, 0x00, 0x10, 0x00, 0x6e, 0x6d, // TCA_U32_CLASSID 6d6e:10
            0x24, 0x00, 0x05, 0x00, // TCA_U32_SEL
            0x01, 0x00, 0x01, 0x00, // flags TERMINAL, offshift, nkeys 1, pad
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // offmask, off, offoff, hoff
            0x00, 0x00, 0x00, 0x00, // hmask
            0xff, 0xff, 0xff, 0xff, 0xc0, 0x00, 0x02, 0x0a, // key: mask, val 192.0.2.10
            0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // off 16, offmask
        ];
        let f = FilterSpec {
            pref: 10,
            key: Match::Dst(Ipv4Addr::new(192, 0, 2, 10)),
            class: 0x10,
        };
        let ours = bytes(
            RouteNetlinkMessage::NewTrafficFilter(u32_filter(IFINDEX, &f)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, dst);
        assert_eq!(filter_of(&reparsed(u32_filter(IFINDEX, &f))), Some(f));

        // ... pref 11 u32 match ip src 192.0.2.11/32 flowid 6d6e:11: pref,
        // classid, address and offset 12 differ.
        let mut src = dst.to_vec();
        src[34] = 0x0b;
        src[52] = 0x11;
        src[83] = 0x0b;
        src[84] = 0x0c;
        let f = FilterSpec {
            pref: 11,
            key: Match::Src(Ipv4Addr::new(192, 0, 2, 11)),
            class: 0x11,
        };
        let ours = bytes(
            RouteNetlinkMessage::NewTrafficFilter(u32_filter(IFINDEX, &f)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, src);
        assert_eq!(filter_of(&reparsed(u32_filter(IFINDEX, &f))), Some(f));

        // ... pref 1 u32 match ip dsfield 0xb8 0xfc flowid 6d6e:2 (DSCP EF;
        // `tc filter show` prints it as `match 00b80000/00fc0000 at 0`):
        // pref, classid, and the key's mask, value and offset 0 differ.
        let mut ef = dst.to_vec();
        ef[34] = 0x01;
        ef[52] = 0x02;
        ef[76..88].copy_from_slice(&[0x00, 0xfc, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x00, 0, 0, 0, 0]);
        let f = FilterSpec {
            pref: 1,
            key: Match::Dscp(46),
            class: 2,
        };
        let ours = bytes(
            RouteNetlinkMessage::NewTrafficFilter(u32_filter(IFINDEX, &f)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, ef);
        assert_eq!(filter_of(&reparsed(u32_filter(IFINDEX, &f))), Some(f));
    }

    #[test]
    fn ingress_qdisc_matches_tc() {
        // tc qdisc add dev va ingress
        #[rustfmt::skip]
        let tc: &[u8] = &[
            0x30, 0x00, 0x00, 0x00, 0x24, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0xff, 0xff, 0xf1, 0xff, 0xff, 0xff, // handle ffff:, parent ffff:fff1
            0x00, 0x00, 0x00, 0x00, //
            0x0c, 0x00, 0x01, 0x00, b'i', b'n', b'g', b'r', b'e', b's', b's', 0x00,
        ];
        let ours = bytes(
            RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(IFINDEX)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, tc);
        // tc qdisc del dev va ingress: the same without the kind; the
        // kernel matches on parent and handle.
        let del = bytes(
            RouteNetlinkMessage::DelQueueDiscipline(del_ingress_qdisc(IFINDEX)),
            0,
        );
        assert_eq!(
            &del[0..8],
            &[0x24, 0x00, 0x00, 0x00, 0x25, 0x00, 0x05, 0x00]
        );
        assert_eq!(del[16..36], tc[16..36]);
    }

    #[test]
    fn redirect_filter_matches_tc() {
        // tc filter add dev va parent ffff: protocol all pref 28014 u32
        //     match u32 0 0 action mirred egress redirect dev ifbx
        #[rustfmt::skip]
        let tc: &[u8] = &[
            0x8c, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, // nlmsghdr: len 140, RTM_NEWTFILTER
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, // handle 0, parent ffff:
            0x00, 0x03, 0x6e, 0x6d, // info: htons(ETH_P_ALL), pref 0x6d6e
            0x08, 0x00, 0x01, 0x00, b'u', b'3', b'2', 0x00, //
            0x60, 0x00, 0x02, 0x00, // TCA_OPTIONS
            0x38, 0x00, 0x07, 0x00, // TCA_U32_ACT
            0x34, 0x00, 0x01, 0x00, // action 1
            0x0b, 0x00, 0x01, 0x00, b'm', b'i', b'r', b'r', b'e', b'd', 0x00, 0x00, // TCA_ACT_KIND
            0x24, 0x00, 0x02, 0x80, // TCA_ACT_OPTIONS | NLA_F_NESTED
            0x20, 0x00, 0x02, 0x00, // TCA_MIRRED_PARMS: tc_mirred
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // index, capab
            0x04, 0x00, 0x00, 0x00, // action TC_ACT_STOLEN
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // refcnt, bindcnt
            0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, // TCA_EGRESS_REDIR, ifindex 4
            0x24, 0x00, 0x05, 0x00, // TCA_U32_SEL
            0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, // TERMINAL, nkeys 1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // key: mask 0, val 0
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // off 0
        ];
        let ours = bytes(
            RouteNetlinkMessage::NewTrafficFilter(redirect_filter(IFINDEX, 4)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, tc);
        assert!(is_redirect_to(&[reparsed(redirect_filter(IFINDEX, 4))], 4));
        assert!(!is_redirect_to(&[reparsed(redirect_filter(IFINDEX, 4))], 5));
        assert_eq!(filter_of(&redirect_filter(IFINDEX, 4)), None);
    }

    #[test]
    fn leaf_bfifo_matches_tc() {
        // tc qdisc add dev va parent 6d6e:11 bfifo limit 30000
        #[rustfmt::skip]
        let tc: &[u8] = &[
            0x38, 0x00, 0x00, 0x00, 0x24, 0x00, 0x05, 0x06, 0xe6, 0x77, 0x01, 0x6b,
            0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, 0x11, 0x00, 0x6e, 0x6d, // handle 0 (kernel picks), parent
            0x00, 0x00, 0x00, 0x00, //
            0x0a, 0x00, 0x01, 0x00, b'b', b'f', b'i', b'f', b'o', 0x00, 0x00, 0x00, //
            0x08, 0x00, 0x02, 0x00, 0x30, 0x75, 0x00, 0x00, // TCA_OPTIONS: limit 30000
        ];
        let ours = bytes(
            RouteNetlinkMessage::NewQueueDiscipline(leaf_qdisc(IFINDEX, 0x11, 0, 30_000)),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        assert_eq!(ours, tc);
        assert_eq!(
            fifo_limit_of(&reparsed(leaf_qdisc(IFINDEX, 0x11, 0, 30_000))),
            Some(30_000)
        );
    }

    #[test]
    fn deletes_match_tc_where_meant_to() {
        // tc class del dev va classid 6d6e:10
        let class = bytes(
            RouteNetlinkMessage::DelTrafficClass(del_class(IFINDEX, 0x10)),
            0,
        );
        assert_eq!(
            class[4..],
            [
                0x29, 0x00, 0x05, 0x00, 0xe6, 0x77, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00, //
                0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, //
                0x10, 0x00, 0x6e, 0x6d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ]
        );
        // tc qdisc del dev va root sends handle 0; we send 6d6e: so that
        // the kernel deletes only our qdisc (checked in tests/netns_tc.rs).
        let root = bytes(
            RouteNetlinkMessage::DelQueueDiscipline(del_root_qdisc(IFINDEX)),
            0,
        );
        assert_eq!(
            root[24..32],
            [0x00, 0x00, 0x6e, 0x6d, 0xff, 0xff, 0xff, 0xff]
        );
        // tc filter del dev va parent 6d6e: protocol ip pref 10 u32 sends
        // htons(ETH_P_IP) and the kind; we send neither, so whatever sits
        // at the pref goes.
        let f = bytes(
            RouteNetlinkMessage::DelTrafficFilter(del_filters(IFINDEX, our_qdisc(), 10)),
            0,
        );
        assert_eq!(f.len(), 36);
        assert_eq!(f[28..36], [0x00, 0x00, 0x6e, 0x6d, 0x00, 0x00, 0x0a, 0x00]);
    }

    #[test]
    fn burst_and_ticks_follow_tc() {
        assert_eq!(burst(125_000), 1600);
        assert_eq!(burst(625_000_000), 625_000);
        assert_eq!(xmit_ticks(125_000, 1600), 200_000);
        assert_eq!(xmit_ticks(5_000_000_000, 5_000_000), 15_625);
        assert_eq!(xmit_ticks(1, 1600), u32::MAX);
        assert_eq!(quantum(1000), HTB_MIN_QUANTUM);
        assert_eq!(quantum(125_000), 12_500);
        assert_eq!(quantum(u64::MAX), HTB_MAX_QUANTUM);
        // rate above u32: RATE64 carries it, the ratespec is capped.
        let c = ClassSpec {
            minor: 1,
            parent: 0,
            rate: 1 << 33,
            ceil: 1 << 34,
            prio: 0,
        };
        assert_eq!(class_of(&reparsed(htb_class(1, &c))), Some(c));
    }

    #[test]
    fn unrecognised_filters_read_as_class_zero() {
        let f = FilterSpec {
            pref: 5,
            key: Match::Src(Ipv4Addr::new(192, 0, 2, 5)),
            class: 7,
        };
        let ours = u32_filter(IFINDEX, &f);
        // The hash-table entry u32 dumps for each pref has no selector.
        let mut table = tc_message(IFINDEX);
        table.header.info = ours.header.info;
        table.attributes = vec![
            TcAttribute::Kind("u32".into()),
            TcAttribute::Options(vec![TcOption::U32(TcFilterU32Option::Divisor(1))]),
        ];
        assert_eq!(filters_of(&[table.clone(), ours.clone()]), vec![f.clone()]);
        // Two filters at one pref, or a foreign classifier.
        let junk = FilterSpec {
            pref: 5,
            key: Match::Dst(Ipv4Addr::UNSPECIFIED),
            class: 0,
        };
        assert_eq!(
            filters_of(&[table, ours.clone(), ours.clone()]),
            vec![junk.clone()]
        );
        let mut bpf = ours;
        bpf.attributes = vec![TcAttribute::Kind("bpf".into())];
        assert_eq!(filters_of(&[bpf]), vec![junk]);
    }

    #[test]
    fn stats_prefer_stats2_and_pkt64() {
        let mut m = tc_message(IFINDEX);
        let mut basic = TcStatsBasic::default();
        basic.bytes = 1 << 40;
        basic.packets = 7;
        m.attributes.push(TcAttribute::Stats2(vec![
            TcStats2::Basic(basic),
            TcStats2::Other(DefaultNla::new(
                TCA_STATS_PKT64,
                (1u64 << 33).to_ne_bytes().to_vec(),
            )),
        ]));
        let s = stats_of(&m);
        assert_eq!((s.bytes, s.packets), (1 << 40, 1 << 33));
    }

    #[test]
    fn kernel_refusals_read_like_tc() {
        let e = TcError::from_kernel(
            "deleting class 6d6e:10".into(),
            16,
            Some("HTB class in use".into()),
        );
        assert_eq!(
            e.to_string(),
            "deleting class 6d6e:10: HTB class in use (EBUSY: Device or resource busy)"
        );
    }
}
