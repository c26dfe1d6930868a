//! The analytics task: the one owner of the current hour and of
//! `analytics.sqlite`.
//!
//! Requests count themselves: [`Analytics::record`] adds the response to
//! the [`Hour`] of its thread's shard (a mutex each, so two requests rarely
//! wait for each other), and nothing is queued, so nothing is dropped
//! however busy the node is. Every few seconds, at the turn of each hour,
//! and before a report, the task takes the shards' counts and merges them
//! into its own hour; it also samples the mesh view for peers that came and
//! went and for the network mode. Every minute, at the end of each hour and
//! at stop it writes the hour (at most a minute is lost in a crash).
//!
//! (The first version sent one message per response to the task through a
//! bounded channel. At 40k requests/s on two busy cores the task fell
//! behind and events were dropped, and each cost about 2,400 instructions
//! against about 500 now: see BENCHMARKS.md, "Analytics overhead".)

use std::cell::Cell;
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
    /// Radio transmit time, milliseconds.
    airtime_ms: AtomicU64,
    /// For the network mode: a response given while not online counts as
    /// served offline.
    view: Arc<MeshView>,
}

/// One shard: what the requests of the threads that use it counted. No
/// time is read per request: the task collects at every turn of the hour
/// (a timer), so what a shard holds belongs to the hour being counted (a
/// request in the few milliseconds between the turn and the collection
/// counts for the hour before). Aligned so shards do not share a cache
/// line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Hour>);

/// Hands each thread its shard, round robin.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_shard() -> usize {
    MY_SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}

impl Counter {
    fn new(view: Arc<MeshView>) -> Self {
        Counter {
            shards: Default::default(),
            airtime_ms: AtomicU64::new(0),
            view,
        }
    }

    fn add(&self, e: Event) {
        let offline = self.view.mode.read().expect("lock").mode != Mode::Online;
        let mut h = self.shards[my_shard()]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        h.add(e, offline);
    }

    /// Takes what the shards counted (an hour starting at 0).
    fn take(&self) -> Hour {
        let mut all = Hour::default();
        for s in &self.shards {
            let taken = std::mem::take(&mut *s.0.lock().unwrap_or_else(PoisonError::into_inner));
            all.merge(taken);
        }
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

/// From now to the next whole UTC hour (and a millisecond, so the clock
/// reads the new hour then).
fn until_next_hour() -> Duration {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_millis((t.as_millis() % 3_600_000) as u64);
    Duration::from_secs(3600).saturating_sub(into) + Duration::from_millis(1)
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
                // the turn of the hour: what the shards hold is the old hour's
                _ = tokio::time::sleep(until_next_hour()) => self.collect().await,
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

    /// Merges what the requests counted into the current hour, then moves
    /// on to a new hour when the clock has passed it. (A clock set back
    /// keeps counting into the later hour.)
    async fn collect(&mut self) {
        let counter = &self.inner.counter;
        self.hour.counts.rf_airtime_ms += counter.airtime_ms.swap(0, Ordering::Relaxed);
        let mut taken = counter.take();
        taken.start = self.hour.start;
        self.hour.merge(taken);
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
