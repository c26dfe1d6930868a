//! meshnode: a community mesh HTTP node. Every station a server, every server
//! a peer, every peer a backup.
//!
//! # Layout
//!
//! Dependencies point downward: binaries → [`daemon`] wiring → subsystems →
//! shared domain types.
//!
//! | module | owns | task |
//! |---|---|---|
//! | [`config`] | `/etc/meshnode.toml` → validated [`config::Config`] | none (the supervisor keeps the current one) |
//! | [`node`] | callsign, label, node id: pure domain types | — |
//! | [`identity`] | the Ed25519 node key in `state_dir` | — |
//! | [`catalog`] | content URLs, hashes, entries, priorities: pure | — |
//! | [`store`] | SQLite catalog + blob folder mutations | the `store` thread |
//! | [`cache`] | verified reads, RAM tier, eviction policy (pure), scrub | scrub task |
//! | [`api`] | public HTTP port, control socket, `meshctl`'s client | one task per connection |
//! | [`daemon`] | start order, reload, shutdown | supervisor task |
//! | [`telemetry`] | logging, sd-notify, counters | — |
//! | [`utc`] | UTC calendar arithmetic: pure | — |
//! | [`gossip`] | signed datagrams, the membership/dissemination core (pure), its simulator | — |
//! | [`sync`] | signed catalog records, the conflict rule, set reconciliation (pure), chunk transfer | — |
//! | [`discovery`] | mDNS announce/browse, the bootstrap registry | mdns-sd's thread |
//! | [`mesh`] | gossip core, mesh catalog, peer book, replication queue, link state, routed requests: their I/O | the `mesh` task; one task per forwarded response |
//! | [`routing`] | topology from link reports, route table, next-hop penalties: pure | — (in the mesh task) |
//! | [`connectivity`] | uplink probes, the online / mesh-only / rf-only mode | the probe task |
//! | [`failover`] | the failover default route and policy rules over rtnetlink | the gateway task (in [`mesh`]) |
//! | [`proxy`] | cooperative fetching: who fetches, what is cacheable and fresh: pure | — (the [`api`] facade does the I/O) |
//! | [`shaping`] | per-client HTB classes, usage, quotas | the shaping task |
//! | [`dbus`] | `org.meshnode.Node` on the system bus: a facade over the same handles as [`api`] | the watcher task (signals); zbus's per-call tasks |
//! | [`analytics`] | usage counted per hour and day in SQLite, the report | the analytics task |
//! | [`rf`] | packet radio: AX.25/KISS codecs, airtime caps, ID timer, beacons (pure); TNC drivers; the stations heard | the RF task and its driver task |

pub mod analytics;
pub mod api;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod connectivity;
pub mod daemon;
pub mod dbus;
pub mod discovery;
pub mod failover;
pub mod gossip;
pub mod identity;
pub mod mesh;
pub mod netlink;
pub mod node;
pub mod proxy;
pub mod rf;
pub mod routing;
pub mod shaping;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod utc;
