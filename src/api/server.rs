//! Accept loops for the public TCP listeners and the control unix socket.
//!
//! hyper's HTTP/1 server with limits that turn abuse into a clean 4xx:
//! headers larger than [`MAX_HEADER_BYTES`] get 431, more than
//! [`MAX_HEADERS`] header lines get 431, a client that does not finish its
//! headers within [`HEADER_TIMEOUT`] is dropped. Each connection is a task;
//! errors stay inside it. On shutdown the loop stops accepting and in-flight
//! requests finish (up to the caller's grace period).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::{App, Caller};

/// Read buffer and therefore header size limit (hyper's minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header lines a request may have.
pub const MAX_HEADERS: usize = 64;
/// Time a client gets to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Open connections per public listener; beyond it, accepting waits (the
/// kernel backlog holds newcomers) instead of exhausting descriptors.
pub const MAX_CONNECTIONS: usize = 1024;

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    b
}

/// Serves the public port until `cancel`, then waits up to `grace` for open requests.
pub async fn serve_tcp(
    listener: TcpListener,
    app: Arc<App>,
    cancel: CancellationToken,
    grace: Duration,
) {
    // connections are upgradeable (the proxy's CONNECT), which hyper-util's
    // GracefulShutdown does not watch: each connection task watches `cancel`
    // itself and the tracker waits for them
    let conns = tokio_util::task::TaskTracker::new();
    let http = builder();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let caller = Caller::Public(peer.ip());
                    let svc = service_fn(move |req| app.clone().handle(caller, req));
                    let conn = http.serve_connection(TokioIo::new(stream), svc).with_upgrades();
                    let stop = cancel.clone();
                    conns.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        let r = tokio::select! {
                            r = conn.as_mut() => r,
                            _ = stop.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                Err(e) => accept_error(e).await,
            }
        }
    }
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!("open connections did not finish within the grace period");
    }
}

/// Serves the control socket until `cancel`.
pub async fn serve_unix(
    listener: UnixListener,
    app: Arc<App>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http = builder();
    // uploads can be large; the header limit still applies through max_headers
    http.max_buf_size(1 << 20);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let app = app.clone();
                    let svc = service_fn(move |req| app.clone().handle(Caller::Control, req));
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), svc));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                    });
                }
                Err(e) => accept_error(e).await,
            }
        }
    }
    drain(graceful, grace).await;
}

async fn drain(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within the grace period");
    }
}

/// Out of file descriptors and similar: back off instead of spinning.
async fn accept_error(e: io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Binds every public address.
pub async fn bind_tcp(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding {a}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}

/// Binds the control socket: refuses if another daemon is listening on it,
/// removes a stale one, sets mode 0660 and group `meshadmin` when it exists.
pub async fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let ctx =
        |e: io::Error| io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ctx)?;
    }
    if path.exists() {
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => {
                return Err(ctx(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another meshnode is already listening here",
                )));
            }
            Err(_) => std::fs::remove_file(path).map_err(ctx)?,
        }
    }
    let l = UnixListener::bind(path).map_err(ctx)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(ctx)?;
    match nix::unistd::Group::from_name("meshadmin") {
        Ok(Some(g)) => {
            if let Err(e) = nix::unistd::chown(path, None, Some(g.gid)) {
                tracing::warn!(error = %e, "could not give the control socket to group meshadmin");
            }
        }
        Ok(None) => {
            tracing::debug!("no meshadmin group; control socket stays with the daemon's group")
        }
        Err(e) => tracing::warn!(error = %e, "group lookup failed"),
    }
    Ok(l)
}
