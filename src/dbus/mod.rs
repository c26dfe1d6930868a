//! The D-Bus interface: bus name `org.meshnode.Node` on the system bus,
//! object `/org/meshnode/Node`, interface `org.meshnode.Node1`
//! (docs/DBUS.md lists every method, property and signal).
//!
//! A thin facade, like the HTTP API, over the same [`App`] handles: methods
//! parse their D-Bus arguments and call the operations in
//! [`crate::api::ops`] (or the read-only views the HTTP routes read), and
//! return the same JSON text the control socket answers. Who may call what
//! is the bus's business: the policy file
//! `etc/dbus-1/system.d/org.meshnode.Node.conf` lets anyone read status and
//! properties, root and group `meshadmin` call the rest, and only root and
//! user `meshnode` (the systemd unit's) own the name.
//!
//! Signals and `PropertiesChanged` come from change events, not polling:
//! the store, the mesh task and the shaping task each tick a watch channel
//! after they change their view ([`crate::store::StoreHandle::subscribe`],
//! [`crate::mesh::Mesh::subscribe`], [`crate::shaping::Shaping::subscribe`]).
//! One watcher task owns the last look at each view, takes a new one when
//! its source ticks and emits what [`changes`] finds different.
//!
//! The connection is made once at start ([`start`]); without a bus (OpenWrt,
//! containers, no socket, a policy that refuses the name) the node says so
//! once and runs on without D-Bus. The `dbus` cargo feature (on by default)
//! leaves zbus out of router builds that have no bus anyway.

pub mod changes;
#[cfg(feature = "dbus")]
mod node;

use std::sync::Arc;

use crate::api::App;
use crate::config::DbusConfig;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.meshnode.Node";
/// The one object.
pub const OBJECT_PATH: &str = "/org/meshnode/Node";
/// Its interface (versioned: a breaking change would be `Node2`).
pub const INTERFACE: &str = "org.meshnode.Node1";

#[cfg(feature = "dbus")]
pub use running::Dbus;

/// Connects to the bus and offers the interface, or says once (info) why
/// not and returns `None`. Never fails the daemon.
pub async fn start(cfg: &DbusConfig, app: Arc<App>) -> Option<Dbus> {
    if !cfg.enabled {
        tracing::info!("D-Bus is off: disabled in the configuration ([dbus] enabled = false)");
        return None;
    }
    #[cfg(feature = "dbus")]
    {
        match running::Dbus::start(cfg, app).await {
            Ok(d) => Some(d),
            Err(reason) => {
                tracing::info!("D-Bus is off: {reason}");
                None
            }
        }
    }
    #[cfg(not(feature = "dbus"))]
    {
        let _unused = app;
        tracing::info!("D-Bus is off: this meshnode was built without the dbus feature");
        None
    }
}

/// Without the `dbus` feature there is never a connection.
#[cfg(not(feature = "dbus"))]
#[derive(Debug)]
pub struct Dbus {
    _never: std::convert::Infallible,
}

#[cfg(not(feature = "dbus"))]
impl Dbus {
    /// Nothing to stop.
    pub async fn stop(self) {}
}

#[cfg(feature = "dbus")]
mod running {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;
    use zbus::object_server::InterfaceRef;

    use super::changes::{self, Change, MeshLook, Prop, ShapingLook, StoreLook};
    use super::node::{Node, NodeSignals};
    use super::{BUS_NAME, OBJECT_PATH};
    use crate::api::App;
    use crate::config::DbusConfig;

    /// Connecting, authenticating and taking the name: a local bus answers
    /// in milliseconds; one that does not must not hold up the start.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A connection that offers `org.meshnode.Node`, and its watcher task.
    #[derive(Debug)]
    pub struct Dbus {
        conn: zbus::Connection,
        stop: CancellationToken,
        watcher: tokio::task::JoinHandle<()>,
    }

    impl Dbus {
        pub(super) async fn start(cfg: &DbusConfig, app: Arc<App>) -> Result<Dbus, String> {
            let (builder, which) = match &cfg.address {
                Some(a) => (zbus::connection::Builder::address(a.as_str()), a.clone()),
                None => (
                    zbus::connection::Builder::system(),
                    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                        .unwrap_or_else(|_| "the system bus".into()),
                ),
            };
            // the object is served before the name is taken, so no call
            // finds the name without the object behind it
            let build = builder
                .serve_at(OBJECT_PATH, Node::new(app.clone()))
                .name(BUS_NAME)
                .build();
            let conn = match tokio::time::timeout(CONNECT_TIMEOUT, build).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(format!("cannot offer {BUS_NAME} on {which}: {e}")),
                Err(_) => {
                    return Err(format!("{which} did not answer within {CONNECT_TIMEOUT:?}"));
                }
            };
            let iface = conn
                .object_server()
                .interface::<_, Node>(OBJECT_PATH)
                .await
                .map_err(|e| format!("the object at {OBJECT_PATH} went missing: {e}"))?;
            let stop = CancellationToken::new();
            let watcher = tokio::spawn(watch_views(app, iface, stop.clone()));
            tracing::info!(bus = %which, name = BUS_NAME, path = OBJECT_PATH, "D-Bus interface offered");
            Ok(Dbus {
                conn,
                stop,
                watcher,
            })
        }

        /// Gives the name back and closes the connection: no new calls
        /// arrive, and clients see the name go (`NameOwnerChanged`).
        pub async fn stop(self) {
            self.stop.cancel();
            if let Err(e) = self.watcher.await {
                tracing::warn!(error = %e, "the D-Bus watcher ended badly");
            }
            if let Err(e) = self.conn.release_name(BUS_NAME).await {
                tracing::debug!(error = %e, "releasing the D-Bus name failed");
            }
            if let Err(e) = self.conn.close().await {
                tracing::debug!(error = %e, "closing the D-Bus connection failed");
            }
        }
    }

    fn mesh_look(app: &App) -> MeshLook {
        let m = app.mesh.view.mode.read().expect("lock").clone();
        let peers = app.mesh.view.peers.read().expect("lock");
        MeshLook {
            mode: m.mode,
            mode_since: m.since_ms,
            uplink_up: m.uplink.up,
            peers: peers
                .iter()
                .map(|p| (p.node_id.clone(), p.name.clone().unwrap_or_default()))
                .collect(),
            neighbours: peers.iter().filter(|p| p.neighbour).count(),
        }
    }

    fn store_look(app: &App) -> StoreLook {
        StoreLook {
            stats: app.store.stats(),
            content: app
                .store
                .list()
                .iter()
                .map(|e| {
                    let f = e.fields();
                    (
                        f.url.clone(),
                        changes::Item {
                            hash: f.hash.to_string(),
                            size: f.size,
                            version: f.version,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The one owner of the last looks: on a tick from a view's source,
    /// looks again and emits the difference. A watch coalesces a burst of
    /// ticks into one look, so a busy store costs one diff per wake-up.
    async fn watch_views(app: Arc<App>, iface: InterfaceRef<Node>, stop: CancellationToken) {
        let mut mesh_rx = app.mesh.subscribe();
        let mut store_rx = app.store.subscribe();
        let mut shaping_rx = app.shaping.subscribe();
        let mut mesh = mesh_look(&app);
        let mut store = store_look(&app);
        let mut shaping = ShapingLook::of(&app.shaping.status());
        loop {
            let found = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                r = mesh_rx.changed() => {
                    if gone(r) { return }
                    let new = mesh_look(&app);
                    let c = changes::mesh(&mesh, &new);
                    mesh = new;
                    c
                }
                r = store_rx.changed() => {
                    if gone(r) { return }
                    let new = store_look(&app);
                    let c = changes::store(&store, &new);
                    store = new;
                    c
                }
                r = shaping_rx.changed() => {
                    if gone(r) { return }
                    let new = ShapingLook::of(&app.shaping.status());
                    let c = changes::shaping(&shaping, &new);
                    shaping = new;
                    c
                }
            };
            for c in found {
                if let Err(e) = emit(&iface, &c).await {
                    // a bus that went away: every later emit fails the same way
                    tracing::debug!(error = %e, change = ?c, "emitting a D-Bus signal failed");
                }
            }
        }
    }

    /// A source whose sender is gone has stopped (shutdown).
    fn gone(r: Result<(), watch::error::RecvError>) -> bool {
        r.is_err()
    }

    async fn emit(iface: &InterfaceRef<Node>, c: &Change) -> zbus::Result<()> {
        let e = iface.signal_emitter();
        match c {
            Change::Property(p) => {
                let n = iface.get().await;
                match p {
                    Prop::NetworkMode => n.network_mode_changed(e).await,
                    Prop::ModeSince => n.mode_since_changed(e).await,
                    Prop::UplinkUp => n.uplink_up_changed(e).await,
                    Prop::PeerCount => n.peer_count_changed(e).await,
                    Prop::NeighbourCount => n.neighbour_count_changed(e).await,
                    Prop::StoreUsedBytes => n.store_used_bytes_changed(e).await,
                    Prop::StoreMaxBytes => n.store_max_bytes_changed(e).await,
                    Prop::StoreEntries => n.store_entries_changed(e).await,
                    Prop::StoreQuarantined => n.store_quarantined_changed(e).await,
                    Prop::ShapingActive => n.shaping_active_changed(e).await,
                    Prop::ShapingReason => n.shaping_reason_changed(e).await,
                    Prop::ShapingClients => n.shaping_clients_changed(e).await,
                    Prop::ShapingThrottled => n.shaping_throttled_changed(e).await,
                }
            }
            Change::PeerJoined { node_id, name } => iface.peer_joined(node_id, name).await,
            Change::PeerLeft { node_id, name } => iface.peer_left(node_id, name).await,
            Change::ModeChanged { mode, previous } => {
                iface.mode_changed(mode.name(), previous.name()).await
            }
            Change::ContentAdded {
                url,
                hash,
                size,
                version,
            } => iface.content_added(url, hash, *size, *version).await,
            Change::ContentRemoved { url } => iface.content_removed(url).await,
            Change::QuotaExceeded { ip, exceeded } => {
                iface
                    .quota_exceeded(
                        &ip.to_string(),
                        exceeded.period,
                        exceeded.used,
                        exceeded.quota,
                    )
                    .await
            }
        }
    }
}
