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

use rtnetlink::Handle;
// Always through rtnetlink's re-exports: two netlink-packet-core versions
// exist in the registry and only these match rtnetlink's types.
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
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
    Ok(crate::netlink::request(handle, msg, flags, what).await?)
}

/// Runs a dump (see [`crate::netlink::dump`]). For IPv6, EAFNOSUPPORT (a
/// kernel without IPv6) is an empty answer.
async fn dump(
    handle: &mut Handle,
    msg: RouteNetlinkMessage,
    what: &str,
    family: Family,
) -> Result<Vec<RouteNetlinkMessage>, FailoverError> {
    match crate::netlink::dump(handle, msg, what).await {
        Err(crate::netlink::NetlinkError::Kernel { errno, .. })
            if family == Family::V6 && errno == nix::errno::Errno::EAFNOSUPPORT as i32 =>
        {
            Ok(Vec::new())
        }
        r => Ok(r?),
    }
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
