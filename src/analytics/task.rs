//! The analytics task: the one owner of the current hour and of
//! `analytics.sqlite`.
//!
//! The HTTP front hands it one [`Event`] per content response through a
//! bounded channel (`try_send`: a full channel drops the event and counts
//! it, the request never waits). Every few seconds it samples the mesh
//! view for peers that came and went and for the network mode; every
//! minute, at the end of each hour and at stop it writes the hour (at most
//! a minute is lost in a crash).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::db::AnalyticsDb;
use super::report::Report;
use super::rollup::{Event, Hour, day_of};
use crate::config::AnalyticsConfig;
use crate::connectivity::Mode;
use crate::mesh::MeshView;

/// Events queued to the task before new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Between samples of the peers and the network mode.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Between writes of the current hour.
const WRITE_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Event(Event),
    Airtime(u64),
    Report {
        since: i64,
        until: i64,
        reply: oneshot::Sender<Result<Report, String>>,
    },
}

/// Handle on the analytics task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Analytics {
    tx: Option<mpsc::Sender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Analytics {
    /// A handle that records nothing (`[analytics] enabled = false`).
    pub fn disabled() -> Self {
        Analytics {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Counts one content response; never waits.
    pub fn record(&self, e: Event) {
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Event(e)).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts radio transmit time (the RF subsystem).
    pub fn airtime(&self, ms: u64) {
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Airtime(ms)).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the task was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The report of `[since, until)` (unix seconds), including the hour
    /// being counted.
    pub async fn report(&self, since: i64, until: i64) -> Result<Report, String> {
        let Some(tx) = &self.tx else {
            return Err("analytics are off on this node ([analytics] enabled = false)".into());
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Msg::Report {
            since,
            until,
            reply,
        })
        .await
        .map_err(|_| "the analytics task has stopped".to_string())?;
        let mut r = rx
            .await
            .map_err(|_| "the analytics task has stopped".to_string())??;
        r.dropped_events = self.dropped();
        Ok(r)
    }
}

/// Starts the task (or returns a disabled handle, saying why once).
pub fn spawn(
    cfg: &AnalyticsConfig,
    state_dir: &Path,
    view: Arc<MeshView>,
    stop: CancellationToken,
) -> (Analytics, tokio::task::JoinHandle<()>) {
    if !cfg.enabled {
        tracing::info!("analytics are off ([analytics] enabled = false)");
        return (Analytics::disabled(), tokio::spawn(async {}));
    }
    let opened = AnalyticsDb::open(state_dir).and_then(|db| {
        let hour = db.load_hour(super::rollup::hour_of(now()))?;
        Ok((db, hour))
    });
    let (db, hour) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "analytics are off: cannot open analytics.sqlite");
            return (Analytics::disabled(), tokio::spawn(async {}));
        }
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = Task {
        cfg: cfg.clone(),
        db: Arc::new(Mutex::new(db)),
        hour,
        view,
        peers: None,
        mode: None,
    };
    let join = tokio::spawn(task.run(rx, stop));
    (
        Analytics {
            tx: Some(tx),
            dropped: Arc::default(),
        },
        join,
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

struct Task {
    cfg: AnalyticsConfig,
    /// Used on the blocking pool; this task is its one user.
    db: Arc<Mutex<AnalyticsDb>>,
    hour: Hour,
    view: Arc<MeshView>,
    /// The peers at the last sample.
    peers: Option<BTreeSet<String>>,
    /// The mode at the last sample, and when that was (unix seconds).
    mode: Option<(Mode, i64)>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, stop: CancellationToken) {
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        let mut write = tokio::time::interval(WRITE_EVERY);
        write.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sample.tick() => {
                    self.roll().await;
                    self.sample();
                }
                _ = write.tick() => {
                    self.roll().await;
                    self.write(false).await;
                }
                Some(m) = rx.recv() => match m {
                    Msg::Event(e) => {
                        self.roll().await;
                        let offline = self.view.mode.read().expect("lock").mode != Mode::Online;
                        self.hour.add(&e, offline);
                    }
                    Msg::Airtime(ms) => self.hour.counts.rf_airtime_ms += ms,
                    Msg::Report { since, until, reply } => {
                        self.roll().await;
                        self.sample();
                        let _gone = reply.send(self.report(since, until).await);
                    }
                },
            }
        }
        self.sample();
        self.write(false).await;
    }

    /// Starts a new hour when the clock has moved past the current one,
    /// writing the old one (and pruning what is past retention).
    async fn roll(&mut self) {
        let t = now();
        if super::rollup::hour_of(t) != self.hour.start {
            self.write(true).await;
            self.hour = Hour::at(t);
            self.hour.counts.peers_max = self.peers.as_ref().map_or(0, |p| p.len() as u64);
        }
    }

    /// Peers joined and left, the largest number at once, mode changes and
    /// the time spent offline since the last sample.
    fn sample(&mut self) {
        let t = now();
        let peers: BTreeSet<String> = self
            .view
            .peers
            .read()
            .expect("lock")
            .iter()
            .map(|p| p.node_id.clone())
            .collect();
        let c = &mut self.hour.counts;
        if let Some(old) = &self.peers {
            c.peer_joins += peers.difference(old).count() as u64;
            c.peer_leaves += old.difference(&peers).count() as u64;
        } else {
            c.peer_joins += peers.len() as u64;
        }
        c.peers_max = c.peers_max.max(peers.len() as u64);
        self.peers = Some(peers);
        let mode = self.view.mode.read().expect("lock").mode;
        if let Some((was, at)) = self.mode {
            if was != Mode::Online {
                // the part of the interval in this hour (an hour boundary
                // between samples gives the earlier part to the new hour)
                c.offline_secs += (t - at.max(self.hour.start)).max(0) as u64;
            }
            if was != mode {
                c.mode_changes += 1;
            }
        }
        self.mode = Some((mode, t));
    }

    async fn write(&mut self, prune: bool) {
        let (db, hour, cfg) = (self.db.clone(), self.hour.clone(), self.cfg.clone());
        let r = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().expect("lock");
            db.write_hour(&hour, cfg.top)?;
            if prune {
                let t = now();
                db.prune(
                    day_of(t - cfg.hourly_retention.0.as_secs() as i64),
                    day_of(t - cfg.daily_retention.0.as_secs() as i64),
                )?;
            }
            Ok::<_, rusqlite::Error>(())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "writing analytics failed"),
            Err(e) => tracing::warn!(error = %e, "writing analytics failed"),
        }
    }

    async fn report(&mut self, since: i64, until: i64) -> Result<Report, String> {
        self.write(false).await;
        let (db, top) = (self.db.clone(), self.cfg.top);
        tokio::task::spawn_blocking(move || db.lock().expect("lock").report(since, until, top))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading analytics failed: {e}"))
    }
}
