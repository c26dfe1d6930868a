//! Internet failover: a default route via a mesh gateway in meshnode's own routing table.
//!
//! When this node's own uplink is down but another mesh node (a *gateway*)
//! still reaches the internet and is reachable at IP level, meshnode routes
//! the node's and its LAN clients' internet traffic through that gateway;
//! when the uplink returns it takes the route away again. The connectivity
//! logic that decides *when* lives elsewhere; this module owns the kernel
//! state and is told the gateway with [`Failover::set_gateway`].
//!
//! # Layout in the kernel
//!
//! Policy routing, the way `wg-quick` installs a full tunnel, with the
//! default [`FailoverConfig`] (`P` = 7734, table 7734, protocol 158, mark
//! 0x6d6e):
//!
//! ```text
//! $ ip rule
//! 0:      from all lookup local
//! 7733:   from all fwmark 0x6d6e lookup main proto 158                  (P-1)
//! 7734:   from all lookup main suppress_prefixlength 0 proto 158       (P)
//! 7735:   from all lookup 7734 proto 158                                (P+1)
//! 32766:  from all lookup main
//! 32767:  from all lookup default
//! $ ip route show table 7734
//! default via 10.77.0.2 dev mesh0 proto 158
//! ```
//!
//! Why each piece:
//! - **`suppress_prefixlength 0` (P)**: look up the main table but reject a
//!   result whose prefix length is 0, i.e. its default route. LAN, mesh and
//!   other specific routes keep winning; only "the internet" falls through
//!   to the next rule. The node's own (dead) default route stays in place,
//!   untouched, and is used again as soon as the failover is removed.
//! - **`lookup <table>` (P+1)**: meshnode's table, holding only `default via
//!   <gateway>`. If it held nothing, the lookup would fall through to the
//!   main rule at 32766 and the normal default route.
//! - **`fwmark <mark> lookup main` (P-1)**: sockets marked with `SO_MARK
//!   <mark>` (see [`mark_socket`]) always use the main table, including its
//!   default route. Connectivity probes mark their sockets, so they keep
//!   measuring the node's *own* uplink while the failover route is in
//!   place; otherwise they would report "online" through the gateway and
//!   the failover would remove itself.
//! - **Own table and own protocol number**: everything meshnode installs
//!   is recognisable. A route is meshnode's when it is in `table` *and*
//!   carries `protocol`; a rule when it carries `protocol` *and* sits at
//!   `P-1`, `P` or `P+1`. Only such state is ever deleted, so routes of
//!   other daemons (babeld, dhcp, static config), even in the same table,
//!   and rules of others, even at the same priorities, are never touched.
//!   The protocol also shows in `ip route` / `ip rule`, so an operator sees
//!   who put it there.
//!
//! The rules exist only while failover is active: [`Failover::set_gateway`]
//! installs the route and the three rules together and removes them
//! together. Adding goes route first, then the rules from `P-1` up (probes
//! are never routed through the gateway); removing goes `P+1` first, route
//! last. Switching gateways adds the new route before deleting the old one,
//! so there is no moment without a default route (see [`plan`] for the
//! details, including why `NLM_F_REPLACE` is not used).
//!
//! **Reconciliation**: every call reads the routes of our table and all
//! rules back from the kernel and applies the difference ([`plan::plan`]),
//! so calls are idempotent and repair anything half-done. [`Failover::start`]
//! removes whatever an earlier, crashed run left behind;
//! [`Failover::stop`] removes everything of ours.
//!
//! **IPv6** works the same way: the gateway's address family decides which
//! family's default route fails over (the IPv6 rules are `ip -6 rule`s, the
//! route gets metric 1024, the kernel's default). One gateway at a time:
//! switching from an IPv4 to an IPv6 gateway removes the IPv4 failover. A
//! link-local IPv6 gateway needs its interface ([`Gateway::ifindex`], via
//! [`Failover::set_gateway_via`]). Caveat: if another daemon puts an IPv6
//! default route with metric 1024 into *our* table, the kernel merges ours
//! with it into one multipath route (without harming theirs).
//!
//! All of it is rtnetlink (no `ip` commands) and needs CAP_NET_ADMIN; without
//! it the kernel refuses changes with EPERM, reported as
//! [`FailoverError::PermissionDenied`]. Kernel refusals carry the kernel's
//! own explanation when it gives one (e.g. "Nexthop has invalid gateway" for
//! a gateway that is not reachable on-link).
//!
//! # Running it on its own
//!
//! ```no_run
//! use meshnode::failover::{Failover, FailoverConfig};
//!
//! # async fn demo() -> Result<(), meshnode::failover::FailoverError> {
//! let mut failover = Failover::start(FailoverConfig::default()).await?; // cleans up after a crash
//! failover.set_gateway(Some("10.77.0.2".parse().expect("address"))).await?; // uplink down
//! assert_eq!(failover.current().await?.map(|g| g.addr), Some("10.77.0.2".parse().expect("address")));
//! failover.set_gateway(None).await?; // uplink back
//! failover.stop().await?; // on shutdown: nothing of ours remains
//! # Ok(())
//! # }
//! ```
//!
//! Files: `config.rs` ([`FailoverConfig`]), `plan.rs` (the pure planner),
//! `netlink.rs` (the driver: dumps, requests, error text), `error.rs`.

use std::io;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use rtnetlink::Handle;
use tracing::{debug, info, warn};

mod config;
mod error;
mod netlink;
pub mod plan;

pub use config::FailoverConfig;
pub use error::FailoverError;
pub use plan::{Family, Gateway, Op};

/// Owner of meshnode's failover route and rules: one netlink connection,
/// used by one caller at a time (`&mut self`). Dropping it without
/// [`Failover::stop`] leaves the kernel state in place (so a restart does not
/// interrupt traffic); the next [`Failover::start`] reconciles it.
#[derive(Debug)]
pub struct Failover {
    cfg: FailoverConfig,
    handle: Handle,
    /// The rtnetlink connection task, aborted on drop.
    connection: tokio::task::JoinHandle<()>,
}

impl Failover {
    /// Validates `cfg`, opens a netlink route socket (in the network
    /// namespace of the calling thread), spawns its connection task on the
    /// current tokio runtime, and removes any failover state of ours left by
    /// an earlier run, so that failover starts off.
    pub async fn start(cfg: FailoverConfig) -> Result<Failover, FailoverError> {
        cfg.validate()?;
        let (handle, connection) = crate::netlink::open().map_err(FailoverError::Socket)?;
        let mut failover = Failover {
            cfg,
            handle,
            connection,
        };
        let changes = failover.apply(None).await?;
        if changes > 0 {
            warn!(
                changes,
                table = cfg.table,
                "removed failover routes and rules left by an earlier run"
            );
        }
        Ok(failover)
    }

    /// Fails over to `gw` (`Some`), or ends failover (`None`). Idempotent:
    /// reads the kernel's state and changes only what differs; also repairs
    /// anything of ours that was changed or half-applied. On error the
    /// previous gateway stays installed when possible (a new route is added
    /// before the old one is removed).
    pub async fn set_gateway(&mut self, gw: Option<IpAddr>) -> Result<(), FailoverError> {
        self.set_gateway_via(gw.map(Gateway::new)).await
    }

    /// [`Failover::set_gateway`] with an explicit outgoing interface (needed
    /// for link-local IPv6 gateways).
    pub async fn set_gateway_via(&mut self, gw: Option<Gateway>) -> Result<(), FailoverError> {
        let changes = self.apply(gw).await?;
        if changes > 0 {
            match gw {
                Some(g) => info!(gateway = %g, changes, "internet failover via mesh gateway"),
                None => info!(changes, "internet failover off"),
            }
        }
        Ok(())
    }

    /// The gateway failover is in effect through, read from the kernel: a
    /// default route of ours via it and all three rules for its family.
    /// `None` when failover is off or only partly installed.
    pub async fn current(&self) -> Result<Option<Gateway>, FailoverError> {
        let mut handle = self.handle.clone();
        let seen = netlink::observe(&mut handle, self.cfg.table).await?;
        Ok(plan::installed(&self.cfg, &seen.routes, &seen.rules))
    }

    /// What [`Failover::set_gateway_via`] would change right now, without
    /// changing anything (for diagnostics; empty when the kernel matches).
    pub async fn dry_run(&self, gw: Option<Gateway>) -> Result<Vec<Op>, FailoverError> {
        let mut handle = self.handle.clone();
        let seen = netlink::observe(&mut handle, self.cfg.table).await?;
        Ok(plan::plan(&self.cfg, gw, &seen.routes, &seen.rules))
    }

    /// The configuration in use.
    pub fn config(&self) -> &FailoverConfig {
        &self.cfg
    }

    /// Removes every route and rule of ours (shutdown) and closes the netlink
    /// connection.
    pub async fn stop(mut self) -> Result<(), FailoverError> {
        let changes = self.apply(None).await?;
        if changes > 0 {
            info!(changes, "internet failover removed on shutdown");
        }
        Ok(())
    }

    /// Reads the kernel's state, plans, and executes the plan in order.
    /// Returns the number of operations applied.
    async fn apply(&mut self, desired: Option<Gateway>) -> Result<usize, FailoverError> {
        let mut seen = netlink::observe(&mut self.handle, self.cfg.table).await?;
        let ops = plan::plan(&self.cfg, desired, &seen.routes, &seen.rules);
        for op in &ops {
            debug!(%op, "failover");
            netlink::execute(&mut self.handle, op, &mut seen).await?;
        }
        Ok(ops.len())
    }
}

impl Drop for Failover {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Marks a socket with `SO_MARK` `mark` ([`FailoverConfig::fwmark`]).
///
/// Connectivity probes call this on their socket **before `connect`** (the
/// route is chosen at connect time, and for TCP at the first packet): the
/// `fwmark <mark> lookup main` rule then sends them through the main table's
/// default route, the node's own uplink, even while failover routes
/// everything else through a mesh gateway. Without the mark a probe would
/// see the internet through the gateway and wrongly report the own uplink
/// as working.
///
/// Needs CAP_NET_ADMIN (or, since Linux 5.17, CAP_NET_RAW); EPERM
/// otherwise.
pub fn mark_socket(fd: BorrowedFd<'_>, mark: u32) -> io::Result<()> {
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Mark, &mark)
        .map_err(io::Error::from)
}
