//! The pure core of failover: desired state + what the kernel reports →
//! the list of route and rule operations that make the kernel match.
//!
//! No I/O here. The driver (`netlink.rs`) reads routes and rules, turns them
//! into [`RouteEntry`] / [`RuleEntry`] (every route of our table and every
//! rule, whoever owns them), calls [`plan`] and executes the [`Op`]s in order.
//!
//! Ownership is decided here, and only here:
//! - a route is ours when it is in `cfg.table` **and** carries
//!   `cfg.protocol`;
//! - a rule is ours when it carries `cfg.protocol` **and** sits at one of our
//!   three priorities (`P-1`, `P`, `P+1`).
//!
//! Every delete the plan emits targets an entry that is ours by that
//! definition; adds always carry our table and protocol.
//!
//! Ordering, so that traffic never loses its default route when avoidable:
//! 1. delete stale routes of ours that have no gateway (they cannot be told
//!    apart from the new route by the kernel's delete matching once that
//!    exists; we never install such routes, they are leftovers);
//! 2. add the desired route (`NLM_F_CREATE` without `NLM_F_REPLACE`: IPv4
//!    prepends it before any route with the same key, IPv6 makes it an ECMP
//!    sibling; `REPLACE` would overwrite a foreign route with the same key);
//! 3. add missing rules, fwmark rule first, `lookup <table>` last, so probes
//!    are never routed through the failover route;
//! 4. delete stale rules, highest priority first (`lookup <table>` goes first,
//!    which stops the failover at once);
//! 5. delete the remaining stale routes (e.g. the previous gateway, which
//!    stays in use until the new route is in place).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::FailoverConfig;

/// `RT_SCOPE_UNIVERSE`: scope of routes via a gateway.
pub const RT_SCOPE_UNIVERSE: u8 = 0;
/// `RTN_UNICAST`: an ordinary route.
pub const RTN_UNICAST: u8 = 1;
/// `FR_ACT_TO_TBL`: a rule that looks up a table.
pub const FR_ACT_TO_TBL: u8 = 1;
/// `RT_TABLE_MAIN`: the main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// Mask the kernel stores for `fwmark X` without an explicit mask.
const FULL_MASK: u32 = u32::MAX;

/// IP address family of a route or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The metric the kernel gives a route added without one: IPv4 keeps 0,
    /// IPv6 turns 0 into 1024 (`IP6_RT_PRIO_USER`). We always send it
    /// explicitly, and compare dumps against it.
    pub fn default_metric(self) -> u32 {
        match self {
            Family::V4 => 0,
            Family::V6 => 1024,
        }
    }

    /// The unspecified address, for printing default routes.
    fn any(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A mesh node that still has internet: the next hop of the failover default
/// route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gateway {
    /// Its address; its family decides whether the IPv4 or IPv6 default
    /// route fails over. The kernel refuses a gateway that is not reachable
    /// on-link ("Nexthop has invalid gateway").
    pub addr: IpAddr,
    /// Outgoing interface, when the address alone does not say (IPv6
    /// link-local gateways need it). `None` lets the kernel pick the
    /// interface from the connected routes, and accepts whatever interface
    /// an installed route uses.
    pub ifindex: Option<u32>,
}

impl Gateway {
    /// A gateway reachable by address alone.
    pub fn new(addr: IpAddr) -> Gateway {
        Gateway {
            addr,
            ifindex: None,
        }
    }

    /// Its address family.
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }
}

impl From<IpAddr> for Gateway {
    fn from(addr: IpAddr) -> Gateway {
        Gateway::new(addr)
    }
}

impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some(i) = self.ifindex {
            write!(f, " dev #{i}")?;
        }
        Ok(())
    }
}

/// One route as the kernel reported it (any table, any protocol). IPv6
/// multipath routes are reported as one entry per next hop, because the
/// kernel keeps them as separate sibling routes and deletes them one by one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// Address family.
    pub family: Family,
    /// Routing table (`RTA_TABLE`, or the header's table).
    pub table: u32,
    /// Route protocol (`proto` in `ip route`).
    pub protocol: u8,
    /// Destination (`RTA_DST`); `None` when the kernel sent none (default
    /// routes).
    pub dst: Option<IpAddr>,
    /// Destination prefix length; 0 for a default route.
    pub dst_len: u8,
    /// TOS / DSCP selector (IPv4); part of the kernel's route key.
    pub tos: u8,
    /// Metric (`RTA_PRIORITY`), 0 when absent; part of the kernel's key.
    pub metric: u32,
    /// Scope (`RT_SCOPE_*`).
    pub scope: u8,
    /// Route type (`RTN_*`).
    pub kind: u8,
    /// Next hop address (`RTA_GATEWAY`), if the route has exactly one.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface index (`RTA_OIF`).
    pub oif: Option<u32>,
}

impl RouteEntry {
    fn is_ours(&self, cfg: &FailoverConfig) -> bool {
        self.table == cfg.table && self.protocol == cfg.protocol
    }

    /// The gateway of this route if it is a plain default route via one
    /// next hop.
    fn default_gateway(&self) -> Option<Gateway> {
        if self.dst_len != 0
            || self.tos != 0
            || self.kind != RTN_UNICAST
            || self.scope != RT_SCOPE_UNIVERSE
        {
            return None;
        }
        let addr = self.gateway.filter(|a| Family::of(*a) == self.family)?;
        Some(Gateway {
            addr,
            ifindex: self.oif,
        })
    }
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst_len == 0 {
            f.write_str("default")?;
        } else {
            let dst = self.dst.unwrap_or(self.family.any());
            write!(f, "{dst}/{}", self.dst_len)?;
        }
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(i) = self.oif {
            write!(f, " dev #{i}")?;
        }
        write!(
            f,
            " table {} proto {} metric {}",
            self.table, self.protocol, self.metric
        )?;
        if self.tos != 0 {
            write!(f, " tos {:#x}", self.tos)?;
        }
        if self.kind != RTN_UNICAST {
            write!(f, " type {}", self.kind)?;
        }
        Ok(())
    }
}

/// The failover default route to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Next hop.
    pub gateway: Gateway,
    /// Our table.
    pub table: u32,
    /// Our protocol.
    pub protocol: u8,
    /// Metric, sent explicitly ([`Family::default_metric`]).
    pub metric: u32,
}

impl RouteSpec {
    /// The failover route via `gateway` for this config.
    pub fn new(cfg: &FailoverConfig, gateway: Gateway) -> RouteSpec {
        RouteSpec {
            gateway,
            table: cfg.table,
            protocol: cfg.protocol,
            metric: gateway.family().default_metric(),
        }
    }

    /// Its address family.
    pub fn family(&self) -> Family {
        self.gateway.family()
    }

    /// True when `e` is this route (an unspecified interface accepts any).
    pub fn matches(&self, e: &RouteEntry) -> bool {
        let Some(g) = e.default_gateway() else {
            return false;
        };
        e.family == self.family()
            && e.table == self.table
            && e.protocol == self.protocol
            && e.metric == self.metric
            && g.addr == self.gateway.addr
            && self.gateway.ifindex.is_none_or(|i| g.ifindex == Some(i))
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "default via {} table {} proto {} metric {} ({})",
            self.gateway,
            self.table,
            self.protocol,
            self.metric,
            self.family()
        )
    }
}

/// One policy routing rule as the kernel reported it (any owner).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// Address family.
    pub family: Family,
    /// Priority (`FRA_PRIORITY`; 0 when absent).
    pub priority: u32,
    /// Rule protocol (`FRA_PROTOCOL`; 0 when absent).
    pub protocol: u8,
    /// Action (`FR_ACT_*`).
    pub action: u8,
    /// Table looked up (`FRA_TABLE`, or the header's table).
    pub table: u32,
    /// `fwmark` selector.
    pub fwmark: Option<u32>,
    /// `fwmark` mask (`FRA_FWMASK`); the kernel stores all ones when a mark
    /// is given without mask.
    pub fwmask: Option<u32>,
    /// `suppress_prefixlength` (`FRA_SUPPRESS_PREFIXLEN`).
    pub suppress_prefixlen: Option<u32>,
    /// `not`: the selector is inverted.
    pub invert: bool,
    /// Any selector or attribute beyond the ones above (from, to, iif, oif,
    /// tos, uidrange, ports, goto, ...): such a rule is never one of our
    /// three.
    pub other_selectors: bool,
}

impl RuleEntry {
    fn is_ours(&self, cfg: &FailoverConfig) -> bool {
        self.protocol == cfg.protocol && cfg.is_our_priority(self.priority)
    }
}

/// Writes `lookup main` / `lookup 7734` like `ip rule` does.
fn write_table(f: &mut fmt::Formatter<'_>, table: u32) -> fmt::Result {
    if table == RT_TABLE_MAIN {
        f.write_str("lookup main")
    } else {
        write!(f, "lookup {table}")
    }
}

impl fmt::Display for RuleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}: ", self.family, self.priority)?;
        if self.invert {
            f.write_str("not ")?;
        }
        if let Some(m) = self.fwmark {
            write!(f, "fwmark {m:#x}")?;
            if let Some(mask) = self.fwmask.filter(|&m| m != FULL_MASK) {
                write!(f, "/{mask:#x}")?;
            }
            f.write_str(" ")?;
        }
        if self.other_selectors {
            f.write_str("(more selectors) ")?;
        }
        if self.action == FR_ACT_TO_TBL {
            write_table(f, self.table)?;
        } else {
            write!(f, "action {}", self.action)?;
        }
        if let Some(s) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {s}")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// One of the three rules to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleSpec {
    /// Address family (the gateway's).
    pub family: Family,
    /// Priority: `P-1`, `P` or `P+1`.
    pub priority: u32,
    /// Our protocol.
    pub protocol: u8,
    /// Table to look up.
    pub table: u32,
    /// `fwmark` selector (with a full mask).
    pub fwmark: Option<u32>,
    /// `suppress_prefixlength`.
    pub suppress_prefixlen: Option<u32>,
}

impl RuleSpec {
    /// The three rules for `family`, in install order: `fwmark <mark> lookup
    /// main` at `P-1`, `lookup main suppress_prefixlength 0` at `P`, and
    /// `lookup <table>` at `P+1`.
    pub fn for_family(cfg: &FailoverConfig, family: Family) -> [RuleSpec; 3] {
        let rule = |priority, table, fwmark, suppress_prefixlen| RuleSpec {
            family,
            priority,
            protocol: cfg.protocol,
            table,
            fwmark,
            suppress_prefixlen,
        };
        [
            rule(
                cfg.mark_rule_priority(),
                RT_TABLE_MAIN,
                Some(cfg.fwmark),
                None,
            ),
            rule(cfg.suppress_rule_priority(), RT_TABLE_MAIN, None, Some(0)),
            rule(cfg.table_rule_priority(), cfg.table, None, None),
        ]
    }

    /// True when `e` is exactly this rule.
    pub fn matches(&self, e: &RuleEntry) -> bool {
        let mark = e.fwmark.map(|m| (m, e.fwmask.unwrap_or(FULL_MASK)));
        e.family == self.family
            && e.priority == self.priority
            && e.protocol == self.protocol
            && e.action == FR_ACT_TO_TBL
            && e.table == self.table
            && mark == self.fwmark.map(|m| (m, FULL_MASK))
            && e.fwmask.is_none_or(|_| e.fwmark.is_some())
            && e.suppress_prefixlen == self.suppress_prefixlen
            && !e.invert
            && !e.other_selectors
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule {}: ", self.family, self.priority)?;
        if let Some(m) = self.fwmark {
            write!(f, "fwmark {m:#x} ")?;
        }
        write_table(f, self.table)?;
        if let Some(s) = self.suppress_prefixlen {
            write!(f, " suppress_prefixlength {s}")?;
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// One change to the kernel's routing state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Add the failover default route (never replacing another route).
    AddRoute(RouteSpec),
    /// Delete this route of ours.
    DelRoute(RouteEntry),
    /// Add one of our rules.
    AddRule(RuleSpec),
    /// Delete this rule of ours.
    DelRule(RuleEntry),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddRoute(r) => write!(f, "adding route {r}"),
            Op::DelRoute(r) => write!(f, "deleting route {r}"),
            Op::AddRule(r) => write!(f, "adding {r}"),
            Op::DelRule(r) => write!(f, "deleting {r}"),
        }
    }
}

/// The operations that turn the `routes` and `rules` the kernel reported
/// into the desired state: failover via `desired`, or nothing of ours when
/// `None`. Entries that are not ours (see the module docs) are never the
/// target of an operation. An empty plan means the kernel already matches.
pub fn plan(
    cfg: &FailoverConfig,
    desired: Option<Gateway>,
    routes: &[RouteEntry],
    rules: &[RuleEntry],
) -> Vec<Op> {
    let want_route = desired.map(|g| RouteSpec::new(cfg, g));
    let want_rules: Vec<RuleSpec> = desired
        .map(|g| RuleSpec::for_family(cfg, g.family()).to_vec())
        .unwrap_or_default();

    // Keep the first entry that matches each wanted item; everything else of
    // ours is stale (including duplicates).
    let mut route_present = false;
    let mut stale_routes = Vec::new();
    for r in routes.iter().filter(|r| r.is_ours(cfg)) {
        if !route_present && want_route.is_some_and(|w| w.matches(r)) {
            route_present = true;
        } else {
            stale_routes.push(r);
        }
    }
    let mut rule_present = vec![false; want_rules.len()];
    let mut stale_rules = Vec::new();
    for r in rules.iter().filter(|r| r.is_ours(cfg)) {
        let slot = want_rules
            .iter()
            .zip(&rule_present)
            .position(|(w, &present)| !present && w.matches(r));
        match slot {
            Some(i) => rule_present[i] = true,
            None => stale_rules.push(r),
        }
    }

    let (gatewayless, via_gateway): (Vec<&RouteEntry>, Vec<&RouteEntry>) =
        stale_routes.into_iter().partition(|r| r.gateway.is_none());
    let mut ops: Vec<Op> = gatewayless
        .into_iter()
        .map(|r| Op::DelRoute(r.clone()))
        .collect();
    if let Some(w) = want_route.filter(|_| !route_present) {
        ops.push(Op::AddRoute(w));
    }
    ops.extend(
        want_rules
            .iter()
            .zip(&rule_present)
            .filter(|(_, present)| !**present)
            .map(|(w, _)| Op::AddRule(*w)),
    );
    // Highest priority first: `lookup <table>` goes before the others.
    stale_rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
    ops.extend(stale_rules.into_iter().map(|r| Op::DelRule(r.clone())));
    ops.extend(via_gateway.into_iter().map(|r| Op::DelRoute(r.clone())));
    ops
}

/// The gateway failover is in effect through: a default route of ours via
/// it, and all three of our rules for its family. `None` when failover is
/// off or only partly installed (a later [`plan`] repairs or removes that).
pub fn installed(
    cfg: &FailoverConfig,
    routes: &[RouteEntry],
    rules: &[RuleEntry],
) -> Option<Gateway> {
    routes
        .iter()
        .filter(|r| r.is_ours(cfg))
        .filter_map(|r| {
            let g = r.default_gateway()?;
            RouteSpec::new(cfg, g).matches(r).then_some(g)
        })
        .find(|g| {
            RuleSpec::for_family(cfg, g.family())
                .iter()
                .all(|spec| rules.iter().any(|r| r.is_ours(cfg) && spec.matches(r)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> FailoverConfig {
        FailoverConfig::default()
    }

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn gw(s: &str) -> Gateway {
        Gateway::new(v4(s))
    }

    /// What the kernel dumps for a route added from `spec` (interface
    /// filled in as the kernel would).
    fn entry_of_route(spec: &RouteSpec, oif: u32) -> RouteEntry {
        RouteEntry {
            family: spec.family(),
            table: spec.table,
            protocol: spec.protocol,
            dst: None,
            dst_len: 0,
            tos: 0,
            metric: spec.metric,
            scope: RT_SCOPE_UNIVERSE,
            kind: RTN_UNICAST,
            gateway: Some(spec.gateway.addr),
            oif: Some(spec.gateway.ifindex.unwrap_or(oif)),
        }
    }

    /// What the kernel dumps for a rule added from `spec`.
    fn entry_of_rule(spec: &RuleSpec) -> RuleEntry {
        RuleEntry {
            family: spec.family,
            priority: spec.priority,
            protocol: spec.protocol,
            action: FR_ACT_TO_TBL,
            table: spec.table,
            fwmark: spec.fwmark,
            fwmask: spec.fwmark.map(|_| FULL_MASK),
            suppress_prefixlen: spec.suppress_prefixlen,
            invert: false,
            other_selectors: false,
        }
    }

    /// A model kernel: applies ops the way the driver's requests would
    /// (delete removes the first equal entry; a delete of something absent
    /// is a test failure).
    fn apply(ops: &[Op], routes: &mut Vec<RouteEntry>, rules: &mut Vec<RuleEntry>) {
        for op in ops {
            match op {
                Op::AddRoute(s) => routes.insert(0, entry_of_route(s, 2)),
                Op::AddRule(s) => rules.push(entry_of_rule(s)),
                Op::DelRoute(e) => {
                    let i = routes.iter().position(|r| r == e).expect("route exists");
                    routes.remove(i);
                }
                Op::DelRule(e) => {
                    let i = rules.iter().position(|r| r == e).expect("rule exists");
                    rules.remove(i);
                }
            }
        }
    }

    fn foreign_route(table: u32, protocol: u8, gateway: &str) -> RouteEntry {
        RouteEntry {
            family: Family::V4,
            table,
            protocol,
            dst: None,
            dst_len: 0,
            tos: 0,
            metric: 0,
            scope: RT_SCOPE_UNIVERSE,
            kind: RTN_UNICAST,
            gateway: Some(v4(gateway)),
            oif: Some(2),
        }
    }

    fn foreign_rule(priority: u32, protocol: u8, table: u32) -> RuleEntry {
        RuleEntry {
            family: Family::V4,
            priority,
            protocol,
            action: FR_ACT_TO_TBL,
            table,
            fwmark: None,
            fwmask: None,
            suppress_prefixlen: None,
            invert: false,
            other_selectors: false,
        }
    }

    /// A kernel full of things that look like ours but are not.
    fn foreign_state() -> (Vec<RouteEntry>, Vec<RuleEntry>) {
        let c = cfg();
        let routes = vec![
            // our table, someone else's protocol (same key as ours!)
            foreign_route(c.table, 4, "10.77.0.9"),
            // our protocol, another table
            foreign_route(100, c.protocol, "10.77.0.3"),
            // the main table's default route
            foreign_route(RT_TABLE_MAIN, 4, "192.0.2.254"),
        ];
        let mut rules = vec![
            foreign_rule(0, 2, 255),
            // exactly our `lookup <table>` rule but not our protocol
            foreign_rule(c.table_rule_priority(), 0, c.table),
            // our protocol at another priority
            foreign_rule(9000, c.protocol, 100),
            foreign_rule(32766, 2, RT_TABLE_MAIN),
        ];
        // exactly our fwmark rule, added by hand without our protocol
        let mut mark = entry_of_rule(&RuleSpec::for_family(&c, Family::V4)[0]);
        mark.protocol = 4;
        rules.push(mark);
        (routes, rules)
    }

    #[test]
    fn fresh_start_without_failover_does_nothing() {
        let (routes, rules) = foreign_state();
        assert_eq!(plan(&cfg(), None, &[], &[]), vec![]);
        assert_eq!(plan(&cfg(), None, &routes, &rules), vec![]);
        assert_eq!(installed(&cfg(), &routes, &rules), None);
    }

    #[test]
    fn fresh_failover_adds_route_then_rules_in_order() {
        let c = cfg();
        let g = gw("10.77.0.2");
        let ops = plan(&c, Some(g), &[], &[]);
        let [mark, suppress, table] = RuleSpec::for_family(&c, Family::V4);
        assert_eq!(
            ops,
            vec![
                Op::AddRoute(RouteSpec::new(&c, g)),
                Op::AddRule(mark),
                Op::AddRule(suppress),
                Op::AddRule(table),
            ]
        );
        assert_eq!(
            (mark.priority, mark.table, mark.fwmark),
            (7733, 254, Some(0x6d6e))
        );
        assert_eq!(
            (
                suppress.priority,
                suppress.table,
                suppress.suppress_prefixlen
            ),
            (7734, 254, Some(0))
        );
        assert_eq!(
            (table.priority, table.table, table.fwmark),
            (7735, 7734, None)
        );
        assert!(ops.iter().all(|op| match op {
            Op::AddRoute(r) => r.protocol == 158 && r.table == 7734 && r.metric == 0,
            Op::AddRule(r) => r.protocol == 158,
            _ => false,
        }));
    }

    #[test]
    fn applied_plan_converges_and_reports_installed() {
        let c = cfg();
        let (mut routes, mut rules) = foreign_state();
        let g = gw("10.77.0.2");
        let ops = plan(&c, Some(g), &routes, &rules);
        assert_eq!(ops.len(), 4, "{ops:#?}");
        apply(&ops, &mut routes, &mut rules);
        assert_eq!(plan(&c, Some(g), &routes, &rules), vec![]);
        let now = installed(&c, &routes, &rules).expect("installed");
        assert_eq!((now.addr, now.ifindex), (g.addr, Some(2)));
        // A gateway given with the interface the kernel chose also matches.
        assert_eq!(plan(&c, Some(now), &routes, &rules), vec![]);
    }

    #[test]
    fn stale_state_from_a_crash_is_removed_rules_first() {
        let c = cfg();
        let (mut routes, mut rules) = foreign_state();
        let old = RouteSpec::new(&c, gw("10.77.0.3"));
        routes.push(entry_of_route(&old, 2));
        let specs = RuleSpec::for_family(&c, Family::V4);
        rules.extend(specs.iter().map(entry_of_rule));
        let before = (routes.clone(), rules.clone());

        let ops = plan(&c, None, &routes, &rules);
        assert_eq!(
            ops,
            vec![
                Op::DelRule(entry_of_rule(&specs[2])),
                Op::DelRule(entry_of_rule(&specs[1])),
                Op::DelRule(entry_of_rule(&specs[0])),
                Op::DelRoute(entry_of_route(&old, 2)),
            ]
        );
        apply(&ops, &mut routes, &mut rules);
        assert_eq!(
            (routes, rules),
            foreign_state(),
            "only foreign state is left"
        );
        assert_ne!(before, foreign_state());
    }

    #[test]
    fn switching_gateway_adds_the_new_route_before_deleting_the_old() {
        let c = cfg();
        let (mut routes, mut rules) = foreign_state();
        apply(
            &plan(&c, Some(gw("10.77.0.2")), &routes, &rules),
            &mut routes,
            &mut rules,
        );
        let old = routes
            .iter()
            .find(|r| r.is_ours(&c))
            .expect("our route")
            .clone();

        let new = gw("10.77.0.3");
        let ops = plan(&c, Some(new), &routes, &rules);
        assert_eq!(
            ops,
            vec![Op::AddRoute(RouteSpec::new(&c, new)), Op::DelRoute(old)],
            "rules stay, no moment without a default route"
        );
        apply(&ops, &mut routes, &mut rules);
        assert_eq!(
            installed(&c, &routes, &rules).map(|g| g.addr),
            Some(new.addr)
        );
        assert_eq!(plan(&c, Some(new), &routes, &rules), vec![]);
    }

    #[test]
    fn removal_deletes_table_rule_first_and_route_last() {
        let c = cfg();
        let (mut routes, mut rules) = foreign_state();
        apply(
            &plan(&c, Some(gw("10.77.0.2")), &routes, &rules),
            &mut routes,
            &mut rules,
        );
        let ops = plan(&c, None, &routes, &rules);
        let prios: Vec<Option<u32>> = ops
            .iter()
            .map(|op| match op {
                Op::DelRule(r) => Some(r.priority),
                Op::DelRoute(_) => None,
                other => panic!("unexpected {other}"),
            })
            .collect();
        assert_eq!(prios, vec![Some(7735), Some(7734), Some(7733), None]);
        apply(&ops, &mut routes, &mut rules);
        assert_eq!((routes, rules), foreign_state());
    }

    #[test]
    fn family_switch_installs_v6_and_removes_v4() {
        let c = cfg();
        let (mut routes, mut rules) = foreign_state();
        apply(
            &plan(&c, Some(gw("10.77.0.2")), &routes, &rules),
            &mut routes,
            &mut rules,
        );
        let g6 = gw("2001:db8:77::2");
        let ops = plan(&c, Some(g6), &routes, &rules);
        assert_eq!(ops.len(), 8, "{ops:#?}");
        assert!(matches!(&ops[0], Op::AddRoute(r) if r.metric == 1024 && r.family() == Family::V6));
        assert!(
            ops[1..4]
                .iter()
                .all(|op| matches!(op, Op::AddRule(r) if r.family == Family::V6))
        );
        assert!(
            ops[4..7]
                .iter()
                .all(|op| matches!(op, Op::DelRule(r) if r.family == Family::V4))
        );
        assert!(matches!(&ops[7], Op::DelRoute(r) if r.family == Family::V4));
        apply(&ops, &mut routes, &mut rules);
        assert_eq!(
            installed(&c, &routes, &rules).map(|g| g.addr),
            Some(g6.addr)
        );
    }

    #[test]
    fn partial_and_wrong_entries_of_ours_are_repaired() {
        let c = cfg();
        let g = gw("10.77.0.2");
        let specs = RuleSpec::for_family(&c, Family::V4);
        let route = entry_of_route(&RouteSpec::new(&c, g), 2);
        // Our route twice, the suppress rule missing, the fwmark rule with an
        // old mark, a rule of ours at P+1 looking up an old table, and a
        // gateway-less leftover route of ours.
        let mut old_mark = entry_of_rule(&specs[0]);
        old_mark.fwmark = Some(0x1234);
        let mut old_table = entry_of_rule(&specs[2]);
        old_table.table = 100;
        let mut devroute = route.clone();
        devroute.gateway = None;
        devroute.scope = 253;
        let mut routes = vec![route.clone(), devroute.clone(), route.clone()];
        let mut rules = vec![
            old_mark.clone(),
            entry_of_rule(&specs[2]),
            old_table.clone(),
        ];
        assert_eq!(installed(&c, &routes, &rules), None, "rules incomplete");

        let ops = plan(&c, Some(g), &routes, &rules);
        assert_eq!(
            ops,
            vec![
                Op::DelRoute(devroute),
                Op::AddRule(specs[0]),
                Op::AddRule(specs[1]),
                Op::DelRule(old_table),
                Op::DelRule(old_mark),
                Op::DelRoute(route),
            ]
        );
        apply(&ops, &mut routes, &mut rules);
        assert_eq!(plan(&c, Some(g), &routes, &rules), vec![]);
        assert!(installed(&c, &routes, &rules).is_some());
    }

    #[test]
    fn interface_and_metric_are_part_of_the_match() {
        let c = cfg();
        let want = Gateway {
            addr: v4("10.77.0.2"),
            ifindex: Some(3),
        };
        let spec = RouteSpec::new(&c, want);
        let mut e = entry_of_route(&spec, 3);
        assert!(spec.matches(&e));
        e.oif = Some(4);
        assert!(!spec.matches(&e), "other interface");
        assert!(
            RouteSpec::new(&c, gw("10.77.0.2")).matches(&e),
            "any interface"
        );
        e.metric = 10;
        assert!(
            !RouteSpec::new(&c, gw("10.77.0.2")).matches(&e),
            "other metric"
        );
        let mut e6 = entry_of_route(&RouteSpec::new(&c, gw("2001:db8::1")), 3);
        assert_eq!(e6.metric, 1024);
        assert!(RouteSpec::new(&c, gw("2001:db8::1")).matches(&e6));
        e6.tos = 4;
        assert!(!RouteSpec::new(&c, gw("2001:db8::1")).matches(&e6), "tos");
    }

    #[test]
    fn rule_match_is_exact() {
        let c = cfg();
        let [mark, suppress, _] = RuleSpec::for_family(&c, Family::V4);
        let e = entry_of_rule(&mark);
        assert!(mark.matches(&e));
        let mut no_mask = e.clone();
        no_mask.fwmask = None;
        assert!(mark.matches(&no_mask), "absent mask means all ones");
        for change in [
            |r: &mut RuleEntry| r.fwmask = Some(0xff),
            |r: &mut RuleEntry| r.invert = true,
            |r: &mut RuleEntry| r.other_selectors = true,
            |r: &mut RuleEntry| r.family = Family::V6,
            |r: &mut RuleEntry| r.action = 6,
            |r: &mut RuleEntry| r.suppress_prefixlen = Some(0),
        ] {
            let mut x = e.clone();
            change(&mut x);
            assert!(!mark.matches(&x), "{x:?}");
        }
        let s = entry_of_rule(&suppress);
        assert!(suppress.matches(&s) && !mark.matches(&s));
        let mut masked = s.clone();
        masked.fwmask = Some(FULL_MASK);
        assert!(
            !suppress.matches(&masked),
            "a mask without a mark is a selector"
        );
    }

    #[test]
    fn display_is_readable() {
        let c = cfg();
        let g = gw("10.77.0.2");
        assert_eq!(
            Op::AddRoute(RouteSpec::new(&c, g)).to_string(),
            "adding route default via 10.77.0.2 table 7734 proto 158 metric 0 (IPv4)"
        );
        let [mark, suppress, table] = RuleSpec::for_family(&c, Family::V6);
        assert_eq!(
            Op::AddRule(mark).to_string(),
            "adding IPv6 rule 7733: fwmark 0x6d6e lookup main proto 158"
        );
        assert_eq!(
            suppress.to_string(),
            "IPv6 rule 7734: lookup main suppress_prefixlength 0 proto 158"
        );
        assert_eq!(
            Op::DelRule(entry_of_rule(&table)).to_string(),
            "deleting IPv6 rule 7735: lookup 7734 proto 158"
        );
        assert_eq!(
            Op::DelRoute(entry_of_route(&RouteSpec::new(&c, g), 2)).to_string(),
            "deleting route default via 10.77.0.2 dev #2 table 7734 proto 158 metric 0"
        );
    }

    fn arb_family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    fn arb_addr(family: Family) -> impl Strategy<Value = IpAddr> {
        (1u8..4).prop_map(move |h| match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(10, 77, 0, h)),
            Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, h.into())),
        })
    }

    fn arb_route() -> impl Strategy<Value = RouteEntry> {
        arb_family().prop_flat_map(|family| {
            (
                prop_oneof![Just(7734u32), Just(254), Just(100)],
                prop_oneof![Just(158u8), Just(4), Just(2)],
                prop::option::of(arb_addr(family)),
                prop_oneof![Just(0u8), Just(24)],
                prop_oneof![Just(0u32), Just(1024), Just(10)],
                prop_oneof![Just(RTN_UNICAST), Just(7)],
                prop::option::of(1u32..4),
            )
                .prop_map(
                    move |(table, protocol, gateway, dst_len, metric, kind, oif)| RouteEntry {
                        family,
                        table,
                        protocol,
                        dst: None,
                        dst_len,
                        tos: 0,
                        metric,
                        scope: RT_SCOPE_UNIVERSE,
                        kind,
                        gateway,
                        oif,
                    },
                )
        })
    }

    fn arb_rule() -> impl Strategy<Value = RuleEntry> {
        (
            arb_family(),
            prop_oneof![Just(7733u32), Just(7734), Just(7735), Just(9000), Just(0)],
            prop_oneof![Just(158u8), Just(0), Just(4)],
            prop_oneof![Just(FR_ACT_TO_TBL), Just(6)],
            prop_oneof![Just(7734u32), Just(254), Just(100)],
            prop::option::of(prop_oneof![Just(0x6d6eu32), Just(1)]),
            prop::option::of(Just(0u32)),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(family, priority, protocol, action, table, fwmark, suppress, invert, other)| {
                    RuleEntry {
                        family,
                        priority,
                        protocol,
                        action,
                        table,
                        fwmark,
                        fwmask: fwmark.map(|_| FULL_MASK),
                        suppress_prefixlen: suppress,
                        invert,
                        other_selectors: other,
                    }
                },
            )
    }

    proptest! {
        /// Whatever the kernel holds: deletes only target our entries, the
        /// plan converges in one step, and afterwards exactly the desired
        /// failover is installed while every foreign entry is still there.
        #[test]
        fn never_touches_foreign_state_and_converges(
            routes in prop::collection::vec(arb_route(), 0..8),
            rules in prop::collection::vec(arb_rule(), 0..8),
            desired in prop::option::of(arb_family().prop_flat_map(arb_addr)),
        ) {
            let c = cfg();
            let desired = desired.map(Gateway::new);
            let ops = plan(&c, desired, &routes, &rules);
            for op in &ops {
                match op {
                    Op::DelRoute(r) => prop_assert!(r.table == c.table && r.protocol == c.protocol, "{op}"),
                    Op::DelRule(r) => prop_assert!(r.protocol == c.protocol && c.is_our_priority(r.priority), "{op}"),
                    Op::AddRoute(r) => prop_assert!(r.table == c.table && r.protocol == c.protocol),
                    Op::AddRule(r) => prop_assert!(r.protocol == c.protocol && c.is_our_priority(r.priority)),
                }
            }
            let (mut r2, mut u2) = (routes.clone(), rules.clone());
            apply(&ops, &mut r2, &mut u2);
            prop_assert_eq!(plan(&c, desired, &r2, &u2), vec![]);
            prop_assert_eq!(installed(&c, &r2, &u2).map(|g| g.addr), desired.map(|g| g.addr));
            let foreign_before: Vec<_> = routes.iter().filter(|r| !r.is_ours(&c)).collect();
            let foreign_after: Vec<_> = r2.iter().filter(|r| !r.is_ours(&c)).collect();
            prop_assert_eq!(foreign_before, foreign_after);
            let foreign_before: Vec<_> = rules.iter().filter(|r| !r.is_ours(&c)).collect();
            let foreign_after: Vec<_> = u2.iter().filter(|r| !r.is_ours(&c)).collect();
            prop_assert_eq!(foreign_before, foreign_after);
            if desired.is_none() {
                prop_assert!(r2.iter().all(|r| !r.is_ours(&c)) && u2.iter().all(|r| !r.is_ours(&c)));
            }
        }
    }
}
