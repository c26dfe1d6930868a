//! The analytics task: the one owner of the current hour and of
//! `analytics.sqlite`.
//!
//! Requests count themselves: [`Analytics::record`] adds the response to
//! an [`Hour`] in one of a few shards (a mutex each, the first free one is
//! taken, so two requests rarely wait for each other), and nothing is
//! queued, so nothing is dropped however busy the node is. Every few
//! seconds, and before a report, the task takes the shards' hours and
//! merges them into its own; it also samples the mesh view for peers that
//! came and went and for the network mode. Every minute, at the end of
//! each hour and at stop it writes the hour (at most a minute is lost in a
//! crash).
//!
//! (The first version sent one message per response to the task through a
//! bounded channel. At 40k requests/s on two busy cores the task fell
//! behind and events were dropped, and each cost about 2,400 instructions
//! against about 700 now: see BENCHMARKS.md, "Analytics overhead".)

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::db::AnalyticsDb;
use super::report::Report;
use super::rollup::{Event, Hour, day_of, hour_of};
use crate::config::AnalyticsConfig;
use crate::connectivity::Mode;
use crate::mesh::MeshView;

/// Request-side shards: enough that the runtime's worker threads seldom
/// find all of them taken.
const SHARDS: usize = 8;
/// Between collections of the shards and samples of the peers and mode.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Between writes of the current hour.
const WRITE_EVERY: Duration = Duration::from_secs(60);

/// A report asked of the task.
struct ReportQuery {
    since: i64,
    until: i64,
    reply: oneshot::Sender<Result<Report, String>>,
}

/// Handle on the analytics task; cheap to clone.
#[derive(Debug, Clone)]
pub struct Analytics {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    counter: Counter,
    reports: mpsc::Sender<ReportQuery>,
}

impl std::fmt::Debug for ReportQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReportQuery")
    }
}

/// What requests counted since the task last collected.
#[derive(Debug)]
struct Counter {
    shards: [Shard; SHARDS],
    /// Where the next request starts looking for a free shard.
    next: AtomicUsize,
    /// Radio transmit time, milliseconds.
    airtime_ms: AtomicU64,
    /// For the network mode: a response given while not online counts as
    /// served offline.
    view: Arc<MeshView>,
}

/// One shard: the hours its requests fell in (nearly always one; two
/// around the turn of an hour). Aligned so shards do not share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Vec<Hour>>);

impl Counter {
    fn new(view: Arc<MeshView>) -> Self {
        Counter {
            shards: Default::default(),
            next: AtomicUsize::new(0),
            airtime_ms: AtomicU64::new(0),
            view,
        }
    }

    fn add(&self, e: Event) {
        let t = now();
        let offline = self.view.mode.read().expect("lock").mode != Mode::Online;
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut hours = (0..SHARDS)
            .find_map(|i| self.shards[(first + i) % SHARDS].0.try_lock().ok())
            .unwrap_or_else(|| {
                let s = &self.shards[first % SHARDS].0;
                s.lock().unwrap_or_else(PoisonError::into_inner)
            });
        let start = hour_of(t);
        match hours.iter_mut().rfind(|h| h.start == start) {
            Some(h) => h.add(e, offline),
            None => {
                let mut h = Hour::at(t);
                h.add(e, offline);
                hours.push(h);
            }
        }
    }

    /// Takes what the shards counted, oldest hour first.
    fn take(&self) -> Vec<Hour> {
        let mut all: Vec<Hour> = Vec::new();
        for s in &self.shards {
            let taken = std::mem::take(&mut *s.0.lock().unwrap_or_else(PoisonError::into_inner));
            for h in taken {
                match all.iter_mut().find(|a| a.start == h.start) {
                    Some(a) => a.merge(h),
                    None => all.push(h),
                }
            }
        }
        all.sort_by_key(|h| h.start);
        all
    }
}

impl Analytics {
    /// A handle that records nothing (`[analytics] enabled = false`).
    pub fn disabled() -> Self {
        Analytics { inner: None }
    }

    /// Whether responses are counted: callers skip preparing an [`Event`]
    /// when not.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Counts one content response; never waits for the task.
    pub fn record(&self, e: Event) {
        if let Some(i) = &self.inner {
            i.counter.add(e);
        }
    }

    /// Counts radio transmit time (the RF subsystem).
    pub fn airtime(&self, ms: u64) {
        if let Some(i) = &self.inner {
            i.counter.airtime_ms.fetch_add(ms, Ordering::Relaxed);
        }
    }

    /// The report of `[since, until)` (unix seconds), including the hour
    /// being counted and every response counted before the call.
    pub async fn report(&self, since: i64, until: i64) -> Result<Report, String> {
        let Some(i) = &self.inner else {
            return Err("analytics are off on this node ([analytics] enabled = false)".into());
        };
        let (reply, rx) = oneshot::channel();
        i.reports
            .send(ReportQuery {
                since,
                until,
                reply,
            })
            .await
            .map_err(|_| "the analytics task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the analytics task has stopped".to_string())?
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
        let hour = db.load_hour(hour_of(now()))?;
        Ok((db, hour))
    });
    let (db, hour) = match opened {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "analytics are off: cannot open analytics.sqlite");
            return (Analytics::disabled(), tokio::spawn(async {}));
        }
    };
    let (reports, rx) = mpsc::channel(8);
    let inner = Arc::new(Inner {
        counter: Counter::new(view.clone()),
        reports,
    });
    let task = Task {
        cfg: cfg.clone(),
        db: Arc::new(Mutex::new(db)),
        hour,
        inner: inner.clone(),
        view,
        peers: None,
        mode: None,
    };
    let join = tokio::spawn(task.run(rx, stop));
    (Analytics { inner: Some(inner) }, join)
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
    inner: Arc<Inner>,
    view: Arc<MeshView>,
    /// The peers at the last sample.
    peers: Option<BTreeSet<String>>,
    /// The mode at the last sample, and when that was (unix seconds).
    mode: Option<(Mode, i64)>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<ReportQuery>, stop: CancellationToken) {
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        let mut write = tokio::time::interval(WRITE_EVERY);
        write.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sample.tick() => {
                    self.collect().await;
                    self.sample();
                }
                _ = write.tick() => {
                    self.collect().await;
                    self.write(false).await;
                }
                Some(q) = rx.recv() => {
                    self.collect().await;
                    self.sample();
                    let _gone = q.reply.send(self.report(q.since, q.until).await);
                }
            }
        }
        self.collect().await;
        self.sample();
        self.write(false).await;
    }

    /// Merges what the requests counted into the current hour, moving on
    /// to a new hour when the clock (or a request) has passed it. Hours
    /// before the current one (a request counted just as the hour turned,
    /// or a clock set back) are added to what was written of them.
    async fn collect(&mut self) {
        let counter = &self.inner.counter;
        self.hour.counts.rf_airtime_ms += counter.airtime_ms.swap(0, Ordering::Relaxed);
        for h in counter.take() {
            if h.start > self.hour.start {
                self.advance(h.start).await;
            }
            if h.start == self.hour.start {
                self.hour.merge(h);
            } else {
                let top = self.cfg.top;
                self.on_db("writing analytics", move |db| {
                    let mut old = db.load_hour(h.start)?;
                    old.merge(h);
                    db.write_hour(&old, top)
                })
                .await;
            }
        }
        let start = hour_of(now());
        if start > self.hour.start {
            self.advance(start).await;
        }
    }

    /// Writes the current hour (pruning what is past retention) and starts
    /// counting the one at `start`.
    async fn advance(&mut self, start: i64) {
        self.write(true).await;
        // empty unless the clock was set back and forward again
        let hour = self
            .on_db("reading analytics", move |db| db.load_hour(start))
            .await;
        self.hour = hour.unwrap_or_else(|| Hour::at(start));
        let peers = self.peers.as_ref().map_or(0, |p| p.len() as u64);
        self.hour.counts.peers_max = self.hour.counts.peers_max.max(peers);
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
        let (hour, cfg) = (self.hour.clone(), self.cfg.clone());
        self.on_db("writing analytics", move |db| {
            db.write_hour(&hour, cfg.top)?;
            if prune {
                let t = now();
                db.prune(
                    day_of(t - cfg.hourly_retention.0.as_secs() as i64),
                    day_of(t - cfg.daily_retention.0.as_secs() as i64),
                )?;
            }
            Ok(())
        })
        .await;
    }

    async fn report(&mut self, since: i64, until: i64) -> Result<Report, String> {
        self.write(false).await;
        let top = self.cfg.top;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.lock().expect("lock").report(since, until, top))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading analytics failed: {e}"))
    }

    /// Runs `f` on the database on the blocking pool; a failure is logged
    /// as `what` failed and gives `None`.
    async fn on_db<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut AnalyticsDb) -> rusqlite::Result<T> + Send + 'static,
    ) -> Option<T> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&mut db.lock().expect("lock"))).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "{what} failed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed");
                None
            }
        }
    }
}
