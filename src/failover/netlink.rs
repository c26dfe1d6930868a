//! The driver: the only failover file that talks to the kernel. Reads routes
//! and rules over rtnetlink into the planner's plain entries, and executes
//! [`Op`]s as netlink requests, turning kernel errors (with their extended
//! ack text) into [`FailoverError`]s.
//!
//! Requests are built by hand and sent with [`Handle::request`] rather than
//! through rtnetlink's request builders, because the builders drop the reply
//! header that says whether the error carries extended-ack text, and their
//! route "add" always sets `NLM_F_EXCL` or `NLM_F_REPLACE`, neither of which
//! we want (see `plan.rs`).

use std::net::IpAddr;

use futures_util::StreamExt;
use rtnetlink::Handle;
// Always through rtnetlink's re-exports: two netlink-packet-core versions
// exist in the registry and only these match rtnetlink's types.
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};

use super::FailoverError;
use super::plan::{Family, Op, RouteEntry, RouteSpec, RuleEntry, RuleSpec};

/// `RT_TABLE_COMPAT`: header table value when the real id (> 255) is in
/// `RTA_TABLE` / `FRA_TABLE`.
const RT_TABLE_COMPAT: u8 = 252;
/// The value (-1) kernels dump for an unset `suppress_prefixlength` or
/// `suppress_ifgroup`.
const UNSET: u32 = u32::MAX;
/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`, which a capped error reply echoes.
const NLMSG_HDRLEN: usize = 16;
/// A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is redone
/// this many times before its possibly inconsistent result is used anyway
/// (the next reconcile corrects whatever it missed).
const DUMP_ATTEMPTS: usize = 3;

/// Everything the planner needs, plus the raw rules (deleted verbatim so
/// that the kernel matches exactly the rule we saw).
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Routes of our table, any protocol.
    pub routes: Vec<RouteEntry>,
    /// All IPv4 and IPv6 rules, any owner.
    pub rules: Vec<RuleEntry>,
    /// `rules` as the kernel sent them, same order.
    raw_rules: Vec<RuleMessage>,
}

/// Reads every route of `table` (IPv4 and IPv6) and every rule.
pub(super) async fn observe(handle: &mut Handle, table: u32) -> Result<Observed, FailoverError> {
    let mut seen = Observed::default();
    for family in [Family::V4, Family::V6] {
        let mut req = RouteMessage::default();
        req.header.address_family = address_family(family);
        let what = format!("reading {family} routes");
        for msg in dump(handle, RouteNetlinkMessage::GetRoute(req), &what, family).await? {
            if let RouteNetlinkMessage::NewRoute(m) = msg {
                seen.routes.extend(
                    route_entries(&m)
                        .into_iter()
                        .filter(|r| r.table == table && r.family == family),
                );
            }
        }
        let mut req = RuleMessage::default();
        req.header.family = address_family(family);
        let what = format!("reading {family} rules");
        for msg in dump(handle, RouteNetlinkMessage::GetRule(req), &what, family).await? {
            if let RouteNetlinkMessage::NewRule(m) = msg
                && let Some(e) = rule_entry(&m).filter(|e| e.family == family)
            {
                seen.rules.push(e);
                seen.raw_rules.push(m);
            }
        }
    }
    Ok(seen)
}

/// Executes one planned operation. `seen` must be the state the plan was
/// made from (rule deletes look up the raw rule there).
pub(super) async fn execute(
    handle: &mut Handle,
    op: &Op,
    seen: &mut Observed,
) -> Result<(), FailoverError> {
    let what = op.to_string();
    match op {
        Op::AddRoute(spec) => {
            // CREATE without EXCL or REPLACE: never overwrites another route
            // with the same key (see plan.rs).
            let msg = RouteNetlinkMessage::NewRoute(route_add_message(spec));
            request(handle, msg, NLM_F_CREATE, &what).await
        }
        Op::DelRoute(entry) => {
            let msg = RouteNetlinkMessage::DelRoute(route_del_message(entry));
            request(handle, msg, 0, &what).await
        }
        Op::AddRule(spec) => {
            let msg = RouteNetlinkMessage::NewRule(rule_message(spec));
            request(handle, msg, NLM_F_CREATE | NLM_F_EXCL, &what).await
        }
        Op::DelRule(entry) => {
            let i = seen.rules.iter().position(|r| r == entry).ok_or_else(|| {
                FailoverError::UnexpectedReply {
                    op: what.clone(),
                    detail: "the rule to delete was not in the state read before".into(),
                }
            })?;
            seen.rules.remove(i);
            let raw = seen.raw_rules.remove(i);
            request(handle, RouteNetlinkMessage::DelRule(raw), 0, &what).await
        }
    }
}

/// Sends a request that expects an acknowledgement.
async fn request(
    handle: &mut Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
    what: &str,
) -> Result<(), FailoverError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle
        .request(req)
        .map_err(|_| FailoverError::ConnectionClosed { op: what.into() })?;
    while let Some(reply) = replies.next().await {
        check(&reply, what)?;
    }
    Ok(())
}

/// Runs a dump, redoing it when the kernel flags it as interrupted. For
/// IPv6, EAFNOSUPPORT (a kernel without IPv6) is an empty answer.
async fn dump(
    handle: &mut Handle,
    msg: RouteNetlinkMessage,
    what: &str,
    family: Family,
) -> Result<Vec<RouteNetlinkMessage>, FailoverError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = NetlinkMessage::from(msg.clone());
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = handle
            .request(req)
            .map_err(|_| FailoverError::ConnectionClosed { op: what.into() })?;
        let mut out = Vec::new();
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            match check(&reply, what) {
                Ok(()) => {}
                Err(FailoverError::Kernel { errno, .. })
                    if family == Family::V6 && errno == nix::errno::Errno::EAFNOSUPPORT as i32 =>
                {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(e),
            }
            if let NetlinkPayload::InnerMessage(m) = reply.payload {
                out.push(m);
            }
        }
        if !interrupted || attempt >= DUMP_ATTEMPTS {
            if interrupted {
                tracing::debug!(
                    what,
                    "dump interrupted by concurrent changes; using it anyway"
                );
            }
            return Ok(out);
        }
    }
}

/// Turns an error reply into a [`FailoverError`]; everything else is fine.
fn check(reply: &NetlinkMessage<RouteNetlinkMessage>, what: &str) -> Result<(), FailoverError> {
    match &reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(FailoverError::from_kernel(
                what.into(),
                -code.get(),
                ext_ack_message(reply.header.flags, &e.header),
            )),
        },
        NetlinkPayload::Overrun(_) => Err(FailoverError::UnexpectedReply {
            op: what.into(),
            detail: "overrun (the kernel dropped part of the answer)".into(),
        }),
        _ => Ok(()),
    }
}

/// The kernel's extended-ack text in an `NLMSG_ERROR` reply. `flags` are
/// the reply's header flags, `payload` the error payload after the errno:
/// the echoed request (only its header when `NLM_F_CAPPED`), then TLVs when
/// `NLM_F_ACK_TLVS`.
pub(super) fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
        u32::from_ne_bytes(len) as usize
    };
    let mut off = align4(echoed);
    while let Some(head) = payload.get(off..off + 4) {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        // NLA_TYPE_MASK: strip the nested / byte-order flag bits.
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        let value = payload.get(off + 4..off.checked_add(len)?)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = value.split(|&b| b == 0).next().unwrap_or_default();
            let text = String::from_utf8_lossy(text).trim().to_string();
            return (!text.is_empty()).then_some(text);
        }
        if len < 4 {
            return None;
        }
        off += align4(len);
    }
    None
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn address_family(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn family_of(af: AddressFamily) -> Option<Family> {
    match af {
        AddressFamily::Inet => Some(Family::V4),
        AddressFamily::Inet6 => Some(Family::V6),
        _ => None,
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The header's table field for `table`: itself when it fits, else
/// `RT_TABLE_COMPAT` (the real id goes in an attribute).
fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_COMPAT)
}

/// The planner's view of a dumped route: one entry, or one per next hop for
/// an IPv6 multipath route (the kernel keeps IPv6 next hops as sibling routes
/// and deletes them by gateway). An IPv4 multipath route stays one entry
/// without gateway, deleted as a whole.
pub(super) fn route_entries(m: &RouteMessage) -> Vec<RouteEntry> {
    let Some(family) = family_of(m.header.address_family) else {
        return Vec::new();
    };
    let mut e = RouteEntry {
        family,
        table: u32::from(m.header.table),
        protocol: u8::from(m.header.protocol),
        dst: None,
        dst_len: m.header.destination_prefix_length,
        tos: m.header.tos,
        metric: 0,
        scope: u8::from(m.header.scope),
        kind: u8::from(m.header.kind),
        gateway: None,
        oif: None,
    };
    let mut hops = Vec::new();
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => e.table = *t,
            RouteAttribute::Destination(a) => e.dst = ip_of(a),
            RouteAttribute::Gateway(a) => e.gateway = ip_of(a),
            RouteAttribute::Oif(i) => e.oif = Some(*i),
            RouteAttribute::Priority(p) => e.metric = *p,
            RouteAttribute::MultiPath(h) => hops = h.clone(),
            _ => {}
        }
    }
    if hops.is_empty() || family == Family::V4 {
        return vec![e];
    }
    hops.iter()
        .map(|hop| RouteEntry {
            gateway: hop.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(g) => ip_of(g),
                _ => None,
            }),
            oif: (hop.interface_index != 0).then_some(hop.interface_index),
            ..e.clone()
        })
        .collect()
}

/// The planner's view of a dumped rule; `None` for non-IP families.
pub(super) fn rule_entry(m: &RuleMessage) -> Option<RuleEntry> {
    let family = family_of(m.header.family)?;
    let mut e = RuleEntry {
        family,
        priority: 0,
        protocol: 0,
        action: u8::from(m.header.action),
        table: u32::from(m.header.table),
        fwmark: None,
        fwmask: None,
        suppress_prefixlen: None,
        invert: m.header.flags.contains(RuleFlags::Invert),
        other_selectors: m.header.tos != 0 || m.header.src_len != 0 || m.header.dst_len != 0,
    };
    for attr in &m.attributes {
        match attr {
            RuleAttribute::Priority(p) => e.priority = *p,
            RuleAttribute::Protocol(p) => e.protocol = u8::from(*p),
            RuleAttribute::Table(t) => e.table = *t,
            RuleAttribute::FwMark(v) => e.fwmark = Some(*v),
            RuleAttribute::FwMask(v) => e.fwmask = Some(*v),
            // Kernels dump "unset" as -1 for these two.
            RuleAttribute::SuppressPrefixLen(UNSET) | RuleAttribute::SuppressIfGroup(UNSET) => {}
            RuleAttribute::SuppressPrefixLen(v) => e.suppress_prefixlen = Some(*v),
            // from, to, iif, oif, goto, realm, uid range, ports, ... and
            // anything this crate version does not know.
            _ => e.other_selectors = true,
        }
    }
    Some(e)
}

/// `ip route add default via <gw> [dev <if>] table <t> proto <p> metric <m>`.
pub(super) fn route_add_message(s: &RouteSpec) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = address_family(s.family());
    m.header.destination_prefix_length = 0;
    m.header.table = header_table(s.table);
    m.header.protocol = RouteProtocol::from(s.protocol);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Table(s.table));
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::from(s.gateway.addr)));
    if let Some(i) = s.gateway.ifindex {
        m.attributes.push(RouteAttribute::Oif(i));
    }
    m.attributes.push(RouteAttribute::Priority(s.metric));
    m
}

/// A delete that the kernel matches only against this route: table,
/// protocol, destination, TOS, metric, scope, type, and gateway and
/// interface when it has them.
pub(super) fn route_del_message(e: &RouteEntry) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = address_family(e.family);
    m.header.destination_prefix_length = e.dst_len;
    m.header.tos = e.tos;
    m.header.table = header_table(e.table);
    m.header.protocol = RouteProtocol::from(e.protocol);
    m.header.scope = RouteScope::from(e.scope);
    m.header.kind = RouteType::from(e.kind);
    m.attributes.push(RouteAttribute::Table(e.table));
    if let Some(dst) = e.dst.filter(|_| e.dst_len > 0) {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(g) = e.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(i) = e.oif {
        m.attributes.push(RouteAttribute::Oif(i));
    }
    m.attributes.push(RouteAttribute::Priority(e.metric));
    m
}

/// `ip rule add priority <p> [fwmark <m>] lookup <t> [suppress_prefixlength
/// <n>] protocol <proto>`.
pub(super) fn rule_message(s: &RuleSpec) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = address_family(s.family);
    m.header.table = header_table(s.table);
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Priority(s.priority));
    m.attributes.push(RuleAttribute::Table(s.table));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::from(s.protocol)));
    if let Some(mark) = s.fwmark {
        m.attributes.push(RuleAttribute::FwMark(mark));
        m.attributes.push(RuleAttribute::FwMask(u32::MAX));
    }
    if let Some(n) = s.suppress_prefixlen {
        m.attributes.push(RuleAttribute::SuppressPrefixLen(n));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::FailoverConfig;
    use crate::failover::plan::{Gateway, RT_SCOPE_UNIVERSE, RTN_UNICAST};

    /// An `NLMSG_ERROR` payload (after the errno) as the kernel sends it on a
    /// socket with NETLINK_CAP_ACK and NETLINK_EXT_ACK: the echoed request
    /// header, then TLVs. Captured shape of `ip route add default via
    /// 10.99.9.9 table 7734` on an unreachable gateway.
    fn capped_payload() -> Vec<u8> {
        let mut p = Vec::new();
        // echoed nlmsghdr: len 60, type RTM_NEWROUTE (24), flags, seq, pid
        p.extend_from_slice(&60u32.to_ne_bytes());
        p.extend_from_slice(&24u16.to_ne_bytes());
        p.extend_from_slice(&0x0605u16.to_ne_bytes());
        p.extend_from_slice(&7u32.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        // NLMSGERR_ATTR_MSG "Nexthop has invalid gateway\0": 4 + 28 bytes
        let text = b"Nexthop has invalid gateway\0";
        p.extend_from_slice(&(4 + text.len() as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        // NLMSGERR_ATTR_OFFS (2), u32
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&36u32.to_ne_bytes());
        p
    }

    #[test]
    fn ext_ack_text_is_found_in_capped_and_full_replies() {
        let p = capped_payload();
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        // Without NLM_F_ACK_TLVS there is nothing to read.
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
        // Not capped: the whole 60-byte request is echoed before the TLVs.
        let mut full = p[..16].to_vec();
        full.extend_from_slice(&[0u8; 44]);
        full.extend_from_slice(&p[16..]);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS, &full).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        // Truncated or garbage input never panics.
        for n in 0..p.len() {
            let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p[..n]);
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &full[..n]);
        }
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &[0xff; 8]), None);
    }

    #[test]
    fn add_and_delete_messages_round_trip_through_the_parser() {
        let cfg = FailoverConfig::default();
        let spec = RouteSpec::new(
            &cfg,
            Gateway {
                addr: "2001:db8::2".parse().expect("addr"),
                ifindex: Some(5),
            },
        );
        let m = route_add_message(&spec);
        assert_eq!(m.header.table, RT_TABLE_COMPAT, "7734 needs RTA_TABLE");
        let e = route_entries(&m);
        assert_eq!(e.len(), 1);
        assert!(spec.matches(&e[0]), "{:?}", e[0]);
        assert_eq!((e[0].scope, e[0].kind), (RT_SCOPE_UNIVERSE, RTN_UNICAST));
        assert_eq!(route_entries(&route_del_message(&e[0])), e);

        for s in RuleSpec::for_family(&cfg, Family::V4) {
            let e = rule_entry(&rule_message(&s)).expect("IP rule");
            assert!(s.matches(&e), "{s} vs {e:?}");
            // What kernel 6.18 sends back: "unset" suppressors as -1.
            let mut dumped = rule_message(&s);
            if s.suppress_prefixlen.is_none() {
                dumped
                    .attributes
                    .push(RuleAttribute::SuppressPrefixLen(UNSET));
            }
            dumped
                .attributes
                .push(RuleAttribute::SuppressIfGroup(UNSET));
            let e = rule_entry(&dumped).expect("IP rule");
            assert!(s.matches(&e), "{s} vs {e:?}");
        }
        let mut with_iif = rule_message(&RuleSpec::for_family(&cfg, Family::V6)[2]);
        with_iif
            .attributes
            .push(RuleAttribute::Iifname("lan0".into()));
        let e = rule_entry(&with_iif).expect("IP rule");
        assert!(e.other_selectors, "{e:?}");
    }
}
