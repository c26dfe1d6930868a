//! The store: SQLite catalog plus the blob folder, owned by one thread.
//!
//! `rusqlite::Connection` is blocking, so it lives on its own OS thread (the
//! store thread) that receives [`Command`]s over a bounded channel and answers
//! on oneshots; every mutation of the catalog *and* of the blob folder happens
//! there, in one order, so there is nothing to race. Readers do not queue:
//! the thread publishes the live catalog into a [`View`] (a map behind a
//! `std::sync::RwLock`, never held across `.await`) that HTTP handlers read
//! directly, which keeps a cached GET free of channel hops and SQL.
//!
//! Crash safety of a publish: blob fsynced in `tmp/` → renamed into place →
//! folder fsynced → catalog row committed (WAL, `synchronous=FULL`) → reply.
//! A crash before the commit leaves at most an unreferenced blob file, which
//! [`spawn`] deletes at the next start; nothing half-written is ever listed.

pub mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cache::blobs::{BlobDir, Ingested};
use crate::cache::policy::{self, Candidate, NoRoom};
use crate::catalog::{Access, ContentHash, ContentUrl, Entry, Priority};
use crate::node::NodeId;

/// Commands queued to the store thread; publishes are fsync-bound, so a burst
/// from many clients waits here rather than in memory elsewhere.
const COMMAND_CAP: usize = 256;

/// SQLite file name inside the state directory.
pub const DB_FILE: &str = "meshnode.db";

/// Store failures; the API maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such URL in the catalog.
    #[error("not in the catalog: {0}")]
    NotFound(String),
    /// The blob does not fit even after evicting everything evictable.
    #[error(
        "not enough storage: {need} more bytes needed, only {evictable} could be freed (store.max_bytes = {max})"
    )]
    InsufficientStorage {
        /// Bytes over the quota.
        need: u64,
        /// Bytes eviction could free.
        evictable: u64,
        /// The quota.
        max: u64,
    },
    /// An older version than the one already held, from the same origin.
    #[error("stale version {offered} of {url}: version {held} is already here")]
    Stale {
        /// The URL.
        url: String,
        /// Version offered.
        offered: u64,
        /// Version held.
        held: u64,
    },
    /// Another meshnode holds this state directory.
    #[error("{0} is in use by another running meshnode")]
    Locked(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// Blob file I/O failed.
    #[error("blob storage: {0}")]
    Io(#[from] std::io::Error),
    /// The store thread has stopped.
    #[error("the store has shut down")]
    Closed,
}

/// What a publisher says about new content.
#[derive(Debug, Clone)]
pub struct PublishMeta {
    /// Where it lives.
    pub url: ContentUrl,
    /// MIME type; guessed from the path when `None`.
    pub content_type: Option<String>,
    /// Replication priority.
    pub priority: Priority,
    /// Who may read it.
    pub access: Access,
    /// Search labels (validated by the caller).
    pub tags: Vec<String>,
    /// Publishing node.
    pub origin: NodeId,
    /// Pin it against eviction.
    pub pinned: bool,
    /// Version from the origin; `None` = next local version (own content).
    pub version: Option<u64>,
    /// Origin's timestamp; `None` = now.
    pub timestamp_ms: Option<i64>,
    /// With `version: None`: the new version is above this too (the highest
    /// version the mesh has seen for the URL, so an edit beats what it saw).
    pub version_floor: u64,
}

/// One row of the peer book: a peer ever seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// Its key.
    pub node: NodeId,
    /// `CALLSIGN-label`.
    pub name: String,
    /// Addresses it broadcasts (empty for a silent node).
    pub addrs: Vec<std::net::SocketAddr>,
    /// Where we last reached it directly; kept locally, never passed on.
    pub link_addr: Option<std::net::SocketAddr>,
    /// Serves the bootstrap API.
    pub is_bootstrap: bool,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
}

/// Mesh state persisted by the store thread (the mesh task owns it in RAM).
#[derive(Debug, Default)]
pub struct MeshSave {
    /// Records to add: (id, wire).
    pub add: Vec<([u8; 32], Vec<u8>)>,
    /// Record ids to delete.
    pub remove: Vec<[u8; 32]>,
    /// Peer rows to upsert.
    pub peers: Vec<PeerRow>,
}

/// One live catalog entry as readers see it.
#[derive(Debug)]
pub struct LiveEntry {
    /// The catalog fields (`access_count` as of load; see [`LiveEntry::entry`]).
    entry: Entry,
    /// Chunk hashes of the blob; empty when it is a single chunk.
    pub manifest: Arc<[ContentHash]>,
    hits_total: AtomicU64,
    hits_unflushed: AtomicU64,
}

impl LiveEntry {
    fn new(entry: Entry, manifest: Arc<[ContentHash]>) -> Self {
        let total = entry.access_count;
        Self {
            entry,
            manifest,
            hits_total: AtomicU64::new(total),
            hits_unflushed: AtomicU64::new(0),
        }
    }

    /// The catalog fields (URL, hash, size, type, ...), without the live count.
    pub fn fields(&self) -> &Entry {
        &self.entry
    }

    /// A copy with the current access count.
    pub fn entry(&self) -> Entry {
        let mut e = self.entry.clone();
        e.access_count = self.hits_total.load(Ordering::Relaxed);
        e
    }

    /// Counts one read; persisted by the store thread every minute.
    pub fn record_hit(&self) {
        self.hits_total.fetch_add(1, Ordering::Relaxed);
        self.hits_unflushed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The catalog as published by the store thread for lock-light reads.
#[derive(Debug)]
pub struct View {
    entries: RwLock<HashMap<String, Arc<LiveEntry>>>,
    used_bytes: AtomicU64,
    max_bytes: AtomicU64,
    /// Ticked by the store thread after a command changed the view.
    changes: watch::Sender<()>,
}

impl Default for View {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            used_bytes: AtomicU64::default(),
            max_bytes: AtomicU64::default(),
            changes: watch::Sender::new(()),
        }
    }
}

impl View {
    fn get(&self, url: &str) -> Option<Arc<LiveEntry>> {
        self.entries
            .read()
            .expect("view lock poisoned")
            .get(url)
            .cloned()
    }

    /// Every live entry that names `hash`.
    fn with_hash(&self, hash: &ContentHash) -> Vec<Arc<LiveEntry>> {
        let g = self.entries.read().expect("view lock poisoned");
        g.values()
            .filter(|e| e.entry.hash == *hash)
            .cloned()
            .collect()
    }
}

/// Store figures for status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Catalog entries.
    pub entries: usize,
    /// Bytes in stored, healthy blobs.
    pub used_bytes: u64,
    /// Quota.
    pub max_bytes: u64,
    /// Entries whose blob is quarantined.
    pub quarantined: usize,
}

/// A cheap handle to the store.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    view: Arc<View>,
    blobs: BlobDir,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

#[derive(Debug)]
enum Command {
    Publish(Box<(Ingested, PublishMeta)>, Reply<Entry>),
    Remove(String, Reply<Entry>),
    Pin(String, bool, Reply<Entry>),
    Quarantine(ContentHash, Reply<Vec<String>>),
    SetMaxBytes(u64, Reply<Vec<String>>),
    FlushHits(Reply<()>),
    MeshLoad(Reply<(Vec<Vec<u8>>, Vec<PeerRow>)>),
    MeshSave(MeshSave, Reply<()>),
    Close(Reply<()>),
}

/// Lock file inside the state directory; held by the store thread for its life.
pub const LOCK_FILE: &str = "lock";

/// Opens the store in `state_dir`, cleans up after any crash, and starts the
/// store thread. Takes an exclusive lock on the state directory first, so a
/// second meshnode on the same state fails here before touching anything.
pub fn spawn(state_dir: &Path, max_bytes: u64, own: NodeId) -> Result<StoreHandle, StoreError> {
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state_dir.join(LOCK_FILE))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StoreError::Locked(state_dir.display().to_string()))?;
    let blobs = BlobDir::open(state_dir)?;
    let leftovers = blobs.clear_tmp()?;
    if leftovers > 0 {
        tracing::info!(
            files = leftovers,
            "removed unfinished uploads of the previous run"
        );
    }
    let conn = schema::open(&state_dir.join(DB_FILE))?;
    let view = Arc::new(View::default());
    view.max_bytes.store(max_bytes, Ordering::Relaxed);
    let mut actor = Actor {
        conn,
        blobs: blobs.clone(),
        view: view.clone(),
        own: own.to_hex(),
        blobs_meta: HashMap::new(),
        scores: HashMap::new(),
        max_bytes,
        no_chunks: Arc::from(Vec::new()),
        _lock: lock,
    };
    actor.load_and_clean()?;
    let (tx, rx) = mpsc::channel(COMMAND_CAP);
    std::thread::Builder::new()
        .name("store".into())
        .spawn(move || actor.run(rx))?;
    Ok(StoreHandle { tx, view, blobs })
}

impl StoreHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits an ingested blob under `meta.url`, evicting if needed.
    pub async fn publish(&self, blob: Ingested, meta: PublishMeta) -> Result<Entry, StoreError> {
        self.ask(|r| Command::Publish(Box::new((blob, meta)), r))
            .await
    }

    /// Removes a URL (its blob goes when nothing else names it).
    pub async fn remove(&self, url: &str) -> Result<Entry, StoreError> {
        self.ask(|r| Command::Remove(url.to_string(), r)).await
    }

    /// Pins or unpins a URL.
    pub async fn set_pinned(&self, url: &str, pinned: bool) -> Result<Entry, StoreError> {
        self.ask(|r| Command::Pin(url.to_string(), pinned, r)).await
    }

    /// Quarantines a corrupt blob; returns the URLs that named it.
    pub async fn quarantine(&self, hash: ContentHash) -> Result<Vec<String>, StoreError> {
        self.ask(|r| Command::Quarantine(hash, r)).await
    }

    /// Applies a new quota, evicting what no longer fits; returns evicted URLs.
    pub async fn set_max_bytes(&self, max: u64) -> Result<Vec<String>, StoreError> {
        self.ask(|r| Command::SetMaxBytes(max, r)).await
    }

    /// Persists access counts now.
    pub async fn flush_hits(&self) -> Result<(), StoreError> {
        self.ask(Command::FlushHits).await
    }

    /// Every stored record (wire form) and the peer book.
    pub async fn mesh_load(&self) -> Result<(Vec<Vec<u8>>, Vec<PeerRow>), StoreError> {
        self.ask(Command::MeshLoad).await
    }

    /// Persists record and peer-book changes in one transaction.
    pub async fn mesh_save(&self, save: MeshSave) -> Result<(), StoreError> {
        self.ask(|r| Command::MeshSave(save, r)).await
    }

    /// Flushes, checkpoints the WAL and stops the store thread.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.ask(Command::Close).await
    }

    /// A live entry by canonical URL.
    pub fn get(&self, url: &str) -> Option<Arc<LiveEntry>> {
        self.view.get(url)
    }

    /// A healthy live entry holding blob `hash`, if any.
    pub fn by_hash(&self, hash: &ContentHash) -> Option<Arc<LiveEntry>> {
        self.view
            .with_hash(hash)
            .into_iter()
            .find(|e| !e.entry.quarantined)
    }

    /// All live entries, sorted by URL.
    pub fn list(&self) -> Vec<Arc<LiveEntry>> {
        let mut v: Vec<_> = self
            .view
            .entries
            .read()
            .expect("view lock poisoned")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.entry.url.cmp(&b.entry.url));
        v
    }

    /// Current figures.
    pub fn stats(&self) -> StoreStats {
        let g = self.view.entries.read().expect("view lock poisoned");
        StoreStats {
            entries: g.len(),
            used_bytes: self.view.used_bytes.load(Ordering::Relaxed),
            max_bytes: self.view.max_bytes.load(Ordering::Relaxed),
            quarantined: g.values().filter(|e| e.entry.quarantined).count(),
        }
    }

    /// Wakes whenever entries, their fields or the byte figures may have
    /// changed (publish, remove, pin, quarantine, eviction, a new quota).
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.view.changes.subscribe()
    }

    /// The blob folder (reads and ingest happen outside the store thread).
    pub fn blobs(&self) -> &BlobDir {
        &self.blobs
    }
}

struct BlobMeta {
    size: u64,
    quarantined: bool,
}

struct Actor {
    conn: Connection,
    blobs: BlobDir,
    view: Arc<View>,
    own: String,
    /// Every blob row: size and state.
    blobs_meta: HashMap<ContentHash, BlobMeta>,
    /// Popularity per URL: (score, Unix seconds it was last updated).
    scores: HashMap<String, (f64, i64)>,
    max_bytes: u64,
    /// The one empty manifest all single-chunk entries share (saves an
    /// allocation per entry).
    no_chunks: Arc<[ContentHash]>,
    /// Exclusive lock on the state directory, released when the thread ends.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Wall clock, Unix ms (0 if the clock is before 1970).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn hash_from_sql(b: Vec<u8>) -> rusqlite::Result<ContentHash> {
    let arr: [u8; 32] = b.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob)
    })?;
    Ok(ContentHash(arr))
}

impl Actor {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            // tell watchers once the view has changed, before the requester
            // hears back (so a watcher never misses what a caller saw)
            let changed = |view: &View| view.changes.send_replace(());
            match cmd {
                Command::Publish(b, reply) => {
                    let (blob, meta) = *b;
                    let r = self.publish(blob, meta);
                    changed(&self.view);
                    send(reply, r);
                }
                Command::Remove(url, reply) => {
                    let r = self.remove(&url);
                    changed(&self.view);
                    send(reply, r)
                }
                Command::Pin(url, p, reply) => {
                    let r = self.pin(&url, p);
                    changed(&self.view);
                    send(reply, r)
                }
                Command::Quarantine(h, reply) => {
                    let r = self.quarantine(h);
                    changed(&self.view);
                    send(reply, r)
                }
                Command::SetMaxBytes(m, reply) => {
                    let r = self.set_max_bytes(m);
                    changed(&self.view);
                    send(reply, r)
                }
                Command::FlushHits(reply) => send(reply, self.flush_hits()),
                Command::MeshLoad(reply) => send(reply, self.mesh_load()),
                Command::MeshSave(save, reply) => send(reply, self.mesh_save(save)),
                Command::Close(reply) => {
                    let r = self.close();
                    drop(self); // releases the state-dir lock before anyone hears "closed"
                    send(reply, r);
                    return;
                }
            }
        }
        // every handle dropped without close(): still leave a clean database
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "store close failed");
        }
    }

    fn mesh_load(&mut self) -> Result<(Vec<Vec<u8>>, Vec<PeerRow>), StoreError> {
        let mut st = self.conn.prepare("SELECT wire FROM records")?;
        let records = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.conn.prepare(
            "SELECT node, name, addrs, link_addr, is_bootstrap, first_seen, last_seen FROM peers",
        )?;
        let peers = st
            .query_map([], |r| {
                let node: Vec<u8> = r.get(0)?;
                let addrs: String = r.get(2)?;
                let link: Option<String> = r.get(3)?;
                Ok((
                    node,
                    r.get(1)?,
                    addrs,
                    link,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })?
            .filter_map(|row| {
                let (node, name, addrs, link, is_bootstrap, first_seen, last_seen) = row.ok()?;
                Some(PeerRow {
                    node: NodeId(node.try_into().ok()?),
                    name,
                    addrs: addrs
                        .split_whitespace()
                        .filter_map(|a| a.parse().ok())
                        .collect(),
                    link_addr: link.and_then(|l| l.parse().ok()),
                    is_bootstrap,
                    first_seen,
                    last_seen,
                })
            })
            .collect();
        Ok((records, peers))
    }

    fn mesh_save(&mut self, save: MeshSave) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        for (id, wire) in &save.add {
            tx.execute(
                "INSERT OR IGNORE INTO records (id, wire) VALUES (?1, ?2)",
                params![&id[..], wire],
            )?;
        }
        for id in &save.remove {
            tx.execute("DELETE FROM records WHERE id = ?1", [&id[..]])?;
        }
        for p in &save.peers {
            let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
            tx.execute(
                "INSERT INTO peers (node, name, addrs, link_addr, is_bootstrap, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(node) DO UPDATE SET name = excluded.name, addrs = excluded.addrs,
                   link_addr = coalesce(excluded.link_addr, link_addr),
                   is_bootstrap = excluded.is_bootstrap, last_seen = excluded.last_seen",
                params![
                    &p.node.0[..],
                    p.name,
                    addrs.join(" "),
                    p.link_addr.map(|a| a.to_string()),
                    p.is_bootstrap,
                    p.first_seen,
                    p.last_seen
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.flush_hits()?;
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        tracing::info!("store closed");
        Ok(())
    }

    fn load_and_clean(&mut self) -> Result<(), StoreError> {
        let mut manifests: HashMap<ContentHash, Arc<[ContentHash]>> = HashMap::new();
        {
            let mut st = self
                .conn
                .prepare("SELECT hash, size, manifest, quarantined FROM blobs")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let h = hash_from_sql(r.get(0)?)?;
                let m: Vec<u8> = r.get(2)?;
                let manifest: Arc<[ContentHash]> = if m.is_empty() {
                    self.no_chunks.clone()
                } else {
                    m.chunks_exact(32)
                        .map(|c| ContentHash(c.try_into().expect("chunks_exact(32)")))
                        .collect()
                };
                manifests.insert(h, manifest);
                self.blobs_meta.insert(
                    h,
                    BlobMeta {
                        size: r.get::<_, i64>(1)? as u64,
                        quarantined: r.get(3)?,
                    },
                );
            }
        }
        // blobs on disk that no row names: a publish that crashed before its commit
        let on_disk = self.blobs.list()?;
        for h in &on_disk {
            if !self.blobs_meta.contains_key(h) {
                tracing::info!(hash = %h, "removing unreferenced blob left by an interrupted publish");
                self.blobs.remove(h)?;
            }
        }
        let on_disk: std::collections::HashSet<_> = on_disk.into_iter().collect();
        for (h, m) in self.blobs_meta.iter_mut() {
            if m.quarantined && on_disk.contains(h) {
                // a quarantine interrupted between its two steps: finish it
                if let Err(e) = self.blobs.quarantine(h) {
                    tracing::warn!(hash = %h, error = %e, "could not move a quarantined blob aside");
                }
            }
            if !m.quarantined && !on_disk.contains(h) {
                tracing::error!(hash = %h, "blob file missing; marking it quarantined");
                self.conn.execute(
                    "UPDATE blobs SET quarantined = 1 WHERE hash = ?1",
                    [&h.0[..]],
                )?;
                m.quarantined = true;
            }
        }
        let mut map = HashMap::new();
        {
            let mut st = self.conn.prepare(
                "SELECT url, hash, size, content_type, version, timestamp_ms, priority, access, tags, origin, pinned, access_count, score, score_at FROM entries",
            )?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let hash = hash_from_sql(r.get(1)?)?;
                let url: String = r.get(0)?;
                let tags: String = r.get(8)?;
                let e = Entry {
                    url: url.clone(),
                    hash,
                    size: r.get::<_, i64>(2)? as u64,
                    content_type: r.get(3)?,
                    version: r.get::<_, i64>(4)? as u64,
                    timestamp_ms: r.get(5)?,
                    priority: Priority::from_u8(r.get(6)?).unwrap_or(Priority::Standard),
                    access: Access::from_u8(r.get(7)?).unwrap_or(Access::Private),
                    tags: tags.split_whitespace().map(String::from).collect(),
                    origin: r.get(9)?,
                    pinned: r.get(10)?,
                    access_count: r.get::<_, i64>(11)? as u64,
                    quarantined: self.blobs_meta.get(&hash).is_none_or(|m| m.quarantined),
                };
                self.scores.insert(url.clone(), (r.get(12)?, r.get(13)?));
                let manifest = manifests
                    .get(&hash)
                    .cloned()
                    .unwrap_or_else(|| self.no_chunks.clone());
                map.insert(url, Arc::new(LiveEntry::new(e, manifest)));
            }
        }
        // blob rows no entry names (their entry went, the file stayed)
        let referenced: std::collections::HashSet<ContentHash> =
            map.values().map(|e| e.entry.hash).collect();
        let unreferenced: Vec<ContentHash> = self
            .blobs_meta
            .keys()
            .filter(|h| !referenced.contains(h))
            .copied()
            .collect();
        for h in unreferenced {
            self.conn
                .execute("DELETE FROM blobs WHERE hash = ?1", [&h.0[..]])?;
            self.blobs.remove(&h)?;
            self.blobs_meta.remove(&h);
        }
        let used = self
            .blobs_meta
            .values()
            .filter(|m| !m.quarantined)
            .map(|m| m.size)
            .sum();
        self.view.used_bytes.store(used, Ordering::Relaxed);
        let quarantined = map.values().filter(|e| e.entry.quarantined).count();
        tracing::info!(
            entries = map.len(),
            used_bytes = used,
            quarantined,
            "store opened"
        );
        *self.view.entries.write().expect("view lock poisoned") = map;
        Ok(())
    }

    fn used(&self) -> u64 {
        self.view.used_bytes.load(Ordering::Relaxed)
    }

    fn get(&self, url: &str) -> Option<Arc<LiveEntry>> {
        self.view.get(url)
    }

    fn refcount(&self, hash: &ContentHash) -> usize {
        self.view.with_hash(hash).len()
    }

    /// Plans eviction of `need` bytes. Every entry takes part so blob
    /// reference counts are right; `except` (the URL being replaced) and
    /// quarantined entries are never chosen.
    fn plan(&self, need: u64, except: Option<&str>) -> Result<Vec<String>, NoRoom> {
        let now = now_secs();
        let candidates: Vec<Candidate> = self
            .view
            .entries
            .read()
            .expect("view lock poisoned")
            .values()
            .map(|e| {
                let f = &e.entry;
                let (s, at) = self.scores.get(&f.url).copied().unwrap_or((0.0, now));
                let unflushed = e.hits_unflushed.load(Ordering::Relaxed);
                Candidate {
                    key: f.url.clone(),
                    hash: f.hash,
                    score: policy::bump(s, at, now, unflushed),
                    protected: f.priority == Priority::Essential
                        || f.pinned
                        || (f.origin == self.own && !crate::catalog::is_external_url(&f.url))
                        || f.quarantined
                        || Some(f.url.as_str()) == except,
                }
            })
            .collect();
        let sizes: HashMap<ContentHash, u64> = self
            .blobs_meta
            .iter()
            .filter(|(_, m)| !m.quarantined)
            .map(|(h, m)| (*h, m.size))
            .collect();
        policy::plan_eviction(&candidates, &sizes, need)
    }

    fn publish(&mut self, blob: Ingested, meta: PublishMeta) -> Result<Entry, StoreError> {
        let url = meta.url.to_string();
        let old = self.get(&url);
        let origin = meta.origin.to_hex();
        if let (Some(v), Some(o)) = (meta.version, &old) {
            // per-origin counters order versions; never roll back
            if o.entry.origin == origin && v < o.entry.version {
                return Err(StoreError::Stale {
                    url,
                    offered: v,
                    held: o.entry.version,
                });
            }
        }
        // Some(false): healthy blob already stored; Some(true): quarantined, this upload repairs it
        let existing = self.blobs_meta.get(&blob.hash).map(|m| m.quarantined);
        let new_bytes = if existing == Some(false) {
            0
        } else {
            blob.size
        };
        let freed_by_replace = match &old {
            Some(o)
                if o.entry.hash != blob.hash
                    && !o.entry.quarantined
                    && self.refcount(&o.entry.hash) == 1 =>
            {
                o.entry.size
            }
            _ => 0,
        };
        let need = (self.used() + new_bytes)
            .saturating_sub(freed_by_replace)
            .saturating_sub(self.max_bytes);
        let evict = match self.plan(need, Some(&url)) {
            Ok(v) => v,
            Err(NoRoom { need, evictable }) => {
                return Err(StoreError::InsufficientStorage {
                    need,
                    evictable,
                    max: self.max_bytes,
                });
            }
        };
        self.blobs.commit(&blob, existing != Some(false))?;
        let now = now_secs();
        let tx = self.conn.unchecked_transaction()?;
        let result = (|| -> Result<(Entry, Vec<ContentHash>), StoreError> {
            let version = match meta.version {
                Some(v) => v,
                None => {
                    let last: Option<i64> = tx
                        .query_row("SELECT last FROM versions WHERE url = ?1", [&url], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    let old_v = old.as_ref().map(|o| o.entry.version).unwrap_or(0);
                    last.map(|l| l as u64)
                        .unwrap_or(0)
                        .max(old_v)
                        .max(meta.version_floor)
                        + 1
                }
            };
            if origin == self.own {
                tx.execute(
                    "INSERT INTO versions (url, last) VALUES (?1, ?2) ON CONFLICT(url) DO UPDATE SET last = max(last, excluded.last)",
                    params![url, version as i64],
                )?;
            }
            let manifest: Vec<u8> = blob.manifest.iter().flat_map(|h| h.0).collect();
            tx.execute(
                "INSERT INTO blobs (hash, size, manifest, quarantined, stored_at) VALUES (?1, ?2, ?3, 0, ?4)
                 ON CONFLICT(hash) DO UPDATE SET quarantined = 0",
                params![&blob.hash.0[..], blob.size as i64, manifest, now],
            )?;
            let content_type = meta
                .content_type
                .clone()
                .unwrap_or_else(|| crate::catalog::guess_content_type(meta.url.path()).to_string());
            let entry = Entry {
                url: url.clone(),
                hash: blob.hash,
                size: blob.size,
                content_type,
                version,
                timestamp_ms: meta.timestamp_ms.unwrap_or_else(now_ms),
                priority: meta.priority,
                access: meta.access,
                tags: meta.tags.clone(),
                origin: origin.clone(),
                pinned: meta.pinned || old.as_ref().is_some_and(|o| o.entry.pinned),
                access_count: old
                    .as_ref()
                    .map(|o| o.hits_total.load(Ordering::Relaxed))
                    .unwrap_or(0),
                quarantined: false,
            };
            let (score, score_at) = self.scores.get(&url).copied().unwrap_or((0.0, now));
            tx.execute(
                "INSERT OR REPLACE INTO entries (url, hash, size, content_type, version, timestamp_ms, priority, access, tags, origin, pinned, access_count, score, score_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    url, &blob.hash.0[..], blob.size as i64, entry.content_type, version as i64, entry.timestamp_ms,
                    entry.priority as u8, entry.access.to_u8(), entry.tags.join(" "), origin, entry.pinned,
                    entry.access_count as i64, score, score_at
                ],
            )?;
            let mut maybe_free: Vec<ContentHash> = old
                .iter()
                .map(|o| o.entry.hash)
                .filter(|h| *h != blob.hash)
                .collect();
            for k in &evict {
                if let Some(e) = self.get(k) {
                    tx.execute("DELETE FROM entries WHERE url = ?1", [k])?;
                    maybe_free.push(e.entry.hash);
                }
            }
            let freed = delete_unreferenced_blobs(&tx, maybe_free)?;
            Ok((entry, freed))
        })();
        let (entry, freed) =
            match result.and_then(|r| tx.commit().map(|_| r).map_err(StoreError::from)) {
                Ok(r) => r,
                Err(e) => {
                    if existing.is_none()
                        && let Err(rm) = self.blobs.remove(&blob.hash)
                    {
                        tracing::warn!(error = %rm, "could not remove blob of a failed publish");
                    }
                    return Err(e);
                }
            };
        self.blobs_meta.insert(
            blob.hash,
            BlobMeta {
                size: blob.size,
                quarantined: false,
            },
        );
        let live = Arc::new(LiveEntry::new(
            entry.clone(),
            Arc::from(blob.manifest.clone()),
        ));
        {
            let mut g = self.view.entries.write().expect("view lock poisoned");
            for k in &evict {
                g.remove(k);
            }
            if existing == Some(true) {
                // repaired: every URL that names this blob is servable again
                for e in g.values_mut().filter(|e| e.entry.hash == blob.hash) {
                    let mut fields = e.entry.clone();
                    fields.quarantined = false;
                    *e = Arc::new(carry_counts(e, fields));
                }
                tracing::info!(hash = %blob.hash, "quarantined blob repaired by a good copy");
            }
            g.insert(url.clone(), live);
        }
        for k in &evict {
            tracing::info!(url = %k, "evicted to make room");
            self.scores.remove(k);
        }
        // files go only after the view stopped naming them
        self.finish_blob_removal(&freed);
        self.scores.entry(url).or_insert((0.0, now));
        self.recount_used();
        Ok(entry)
    }

    fn remove(&mut self, url: &str) -> Result<Entry, StoreError> {
        let old = self
            .get(url)
            .ok_or_else(|| StoreError::NotFound(url.to_string()))?;
        let tx = self.conn.unchecked_transaction()?;
        tx.execute("DELETE FROM entries WHERE url = ?1", [url])?;
        let freed = delete_unreferenced_blobs(&tx, vec![old.entry.hash])?;
        tx.commit()?;
        self.view
            .entries
            .write()
            .expect("view lock poisoned")
            .remove(url);
        self.scores.remove(url);
        self.finish_blob_removal(&freed);
        self.recount_used();
        Ok(old.entry())
    }

    fn pin(&mut self, url: &str, pinned: bool) -> Result<Entry, StoreError> {
        let old = self
            .get(url)
            .ok_or_else(|| StoreError::NotFound(url.to_string()))?;
        self.conn.execute(
            "UPDATE entries SET pinned = ?2 WHERE url = ?1",
            params![url, pinned],
        )?;
        let mut e = old.entry.clone();
        e.pinned = pinned;
        self.replace_live(&old, e.clone());
        e.access_count = old.hits_total.load(Ordering::Relaxed);
        Ok(e)
    }

    /// Swaps a live entry for one with new fields, keeping its counters.
    fn replace_live(&self, old: &Arc<LiveEntry>, entry: Entry) {
        let live = Arc::new(carry_counts(old, entry));
        self.view
            .entries
            .write()
            .expect("view lock poisoned")
            .insert(old.entry.url.clone(), live);
    }

    /// Quarantines a blob that a reader or the scrub found bad. The claim is
    /// checked again here, on the one thread that changes blobs, so a reader
    /// that raced a removal or a repair cannot quarantine a healthy blob.
    fn quarantine(&mut self, hash: ContentHash) -> Result<Vec<String>, StoreError> {
        let Some(meta) = self.blobs_meta.get(&hash) else {
            return Ok(Vec::new()); // removed meanwhile: nothing to do
        };
        if meta.quarantined || self.blobs.verify(&hash, meta.size).is_ok() {
            return Ok(Vec::new());
        }
        // move the file first: a crash after this step leaves a row whose file
        // is missing, which the next start marks quarantined
        let moved = self.blobs.quarantine(&hash);
        if let Err(e) = &moved {
            tracing::warn!(hash = %hash, error = %e, "could not move the bad blob aside; it stays unserved");
        }
        if let Some(m) = self.blobs_meta.get_mut(&hash) {
            m.quarantined = true;
        }
        let affected = self.view.with_hash(&hash);
        let mut urls = Vec::new();
        for old in affected {
            let mut e = old.entry.clone();
            e.quarantined = true;
            urls.push(e.url.clone());
            self.replace_live(&old, e);
        }
        self.recount_used();
        self.conn.execute(
            "UPDATE blobs SET quarantined = 1 WHERE hash = ?1",
            [&hash.0[..]],
        )?;
        tracing::error!(hash = %hash, urls = ?urls, moved = moved.is_ok(), "blob failed its integrity check; quarantined and no longer served");
        Ok(urls)
    }

    fn set_max_bytes(&mut self, max: u64) -> Result<Vec<String>, StoreError> {
        self.max_bytes = max;
        self.view.max_bytes.store(max, Ordering::Relaxed);
        let need = self.used().saturating_sub(max);
        let evict = match self.plan(need, None) {
            Ok(v) => v,
            Err(NoRoom { need, evictable }) => {
                tracing::warn!(
                    need,
                    evictable,
                    "store is over its new quota with protected content only; evicting what can go"
                );
                self.plan(evictable, None).unwrap_or_default()
            }
        };
        if evict.is_empty() {
            return Ok(evict);
        }
        let tx = self.conn.unchecked_transaction()?;
        let mut hashes = Vec::new();
        for k in &evict {
            if let Some(e) = self.get(k) {
                tx.execute("DELETE FROM entries WHERE url = ?1", [k])?;
                hashes.push(e.entry.hash);
            }
        }
        let freed = delete_unreferenced_blobs(&tx, hashes)?;
        tx.commit()?;
        {
            let mut g = self.view.entries.write().expect("view lock poisoned");
            for k in &evict {
                g.remove(k);
                self.scores.remove(k);
            }
        }
        self.finish_blob_removal(&freed);
        self.recount_used();
        tracing::info!(evicted = evict.len(), "applied new store quota");
        Ok(evict)
    }

    fn flush_hits(&mut self) -> Result<(), StoreError> {
        let now = now_secs();
        let live: Vec<Arc<LiveEntry>> = self
            .view
            .entries
            .read()
            .expect("view lock poisoned")
            .values()
            .cloned()
            .collect();
        let tx = self.conn.unchecked_transaction()?;
        for e in live {
            let n = e.hits_unflushed.swap(0, Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let (s, at) = self.scores.get(&e.entry.url).copied().unwrap_or((0.0, now));
            let score = policy::bump(s, at, now, n);
            tx.execute(
                "UPDATE entries SET access_count = access_count + ?2, score = ?3, score_at = ?4 WHERE url = ?1",
                params![e.entry.url, n as i64, score, now],
            )?;
            self.scores.insert(e.entry.url.clone(), (score, now));
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the files of blobs whose rows are gone, and forgets them.
    fn finish_blob_removal(&mut self, freed: &[ContentHash]) {
        for h in freed {
            self.blobs_meta.remove(h);
            if let Err(e) = self.blobs.remove(h) {
                // the row is gone; the next start's cleanup removes the file
                tracing::warn!(hash = %h, error = %e, "could not delete blob file");
            }
        }
    }

    fn recount_used(&self) {
        let used = self
            .blobs_meta
            .values()
            .filter(|m| !m.quarantined)
            .map(|m| m.size)
            .sum();
        self.view.used_bytes.store(used, Ordering::Relaxed);
    }
}

/// A live entry with new fields and the counters of `old`. (Reads that hit
/// `old` after this are not carried over; at worst a few hits are uncounted.)
fn carry_counts(old: &LiveEntry, entry: Entry) -> LiveEntry {
    LiveEntry {
        entry,
        manifest: old.manifest.clone(),
        hits_total: AtomicU64::new(old.hits_total.load(Ordering::Relaxed)),
        hits_unflushed: AtomicU64::new(old.hits_unflushed.swap(0, Ordering::Relaxed)),
    }
}

/// Deletes the blob rows among `hashes` that no entry names; returns them.
fn delete_unreferenced_blobs(
    tx: &rusqlite::Transaction<'_>,
    mut hashes: Vec<ContentHash>,
) -> rusqlite::Result<Vec<ContentHash>> {
    hashes.sort();
    hashes.dedup();
    let mut freed = Vec::new();
    for h in hashes {
        let n = tx.execute(
            "DELETE FROM blobs WHERE hash = ?1 AND NOT EXISTS (SELECT 1 FROM entries WHERE hash = ?1)",
            [&h.0[..]],
        )?;
        if n == 1 {
            freed.push(h);
        }
    }
    Ok(freed)
}

fn send<T>(reply: Reply<T>, r: Result<T, StoreError>) {
    if reply.send(r).is_err() {
        // the caller gave up (client disconnected); the work is done either way
        tracing::debug!("store reply dropped: caller went away");
    }
}
