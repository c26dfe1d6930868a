//! Carries the mesh task's gateway choice to the kernel through
//! [`crate::failover`]: one task owns the netlink state, installs the route
//! when a gateway is chosen, removes it when the uplink returns, and removes
//! everything on shutdown. Without CAP_NET_ADMIN it says so once and stops.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::MeshView;
use crate::failover::{Failover, FailoverConfig};

/// An installed gateway route is checked (and restored) this often.
const REAPPLY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs until `cancel`; `want` is the gateway the mesh task chose.
pub async fn run(
    cfg: FailoverConfig,
    mut want: watch::Receiver<Option<IpAddr>>,
    view: Arc<MeshView>,
    cancel: CancellationToken,
) {
    let mut fo = match Failover::start(cfg).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "failover is off: clients cannot be routed through a mesh gateway when the uplink fails");
            view.mode.write().expect("lock").failover_off = Some(e.to_string());
            return;
        }
    };
    let mut applied: Option<IpAddr> = None;
    loop {
        let gw = *want.borrow_and_update();
        let r = fo.set_gateway(gw).await;
        {
            let mut m = view.mode.write().expect("lock");
            if let Some(g) = m.gateway.as_mut().filter(|g| Some(g.addr) == gw) {
                g.installed = r.is_ok();
            }
        }
        let changed = gw != applied;
        match (r, gw) {
            (Ok(()), Some(g)) if changed => {
                tracing::warn!(gateway = %g, "failover: default route via a mesh gateway installed")
            }
            (Ok(()), None) if changed => {
                tracing::info!("failover: the uplink is back; gateway route removed")
            }
            (Ok(()), _) => {}
            (Err(e), _) => {
                tracing::error!(error = %e, "failover: could not change the gateway route")
            }
        }
        applied = gw;
        // re-applied now and then too: the kernel drops the route when the
        // gateway's interface goes down, and nothing else would put it back
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = want.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(REAPPLY), if gw.is_some() => {}
        }
    }
    match fo.stop().await {
        Ok(()) => tracing::info!("failover: routes and rules removed"),
        Err(e) => tracing::error!(error = %e, "failover: could not remove its routes at shutdown"),
    }
}
