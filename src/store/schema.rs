//! SQLite schema and migrations, applied in order by `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry moves the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: catalog and blobs
    "CREATE TABLE blobs (
        hash BLOB PRIMARY KEY NOT NULL,       -- SHA-256, 32 bytes
        size INTEGER NOT NULL,
        manifest BLOB NOT NULL,               -- 32-byte chunk hashes, empty if one chunk
        quarantined INTEGER NOT NULL DEFAULT 0,
        stored_at INTEGER NOT NULL            -- Unix seconds
    ) WITHOUT ROWID;
    CREATE TABLE entries (
        url TEXT PRIMARY KEY NOT NULL,        -- canonical http://<callsign>.radio/<path>
        hash BLOB NOT NULL REFERENCES blobs(hash),
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        version INTEGER NOT NULL,             -- per-origin counter
        timestamp_ms INTEGER NOT NULL,        -- origin's clock, tiebreak only
        priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 4),
        access INTEGER NOT NULL CHECK (access BETWEEN 0 AND 2),
        tags TEXT NOT NULL DEFAULT '',        -- space separated
        origin TEXT NOT NULL,                 -- hex node id
        pinned INTEGER NOT NULL DEFAULT 0,
        access_count INTEGER NOT NULL DEFAULT 0,
        score REAL NOT NULL DEFAULT 0,        -- popularity, see cache::policy
        score_at INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX entries_hash ON entries(hash);
    -- the last version this node gave each of its own URLs, kept after removal
    -- so a re-published URL always gets a higher version
    CREATE TABLE versions (url TEXT PRIMARY KEY NOT NULL, last INTEGER NOT NULL) WITHOUT ROWID;",
    // 2: the mesh: signed catalog records of every origin, and the peer book
    "CREATE TABLE records (
        id BLOB PRIMARY KEY NOT NULL,         -- SHA-256 of the record body
        wire BLOB NOT NULL                    -- signed record as it travels
    ) WITHOUT ROWID;
    CREATE TABLE peers (
        node BLOB PRIMARY KEY NOT NULL,       -- public key
        name TEXT NOT NULL,
        addrs TEXT NOT NULL,                  -- what it broadcasts, space separated
        link_addr TEXT,                       -- where we last reached it directly (never shared)
        is_bootstrap INTEGER NOT NULL,
        first_seen INTEGER NOT NULL,          -- Unix seconds
        last_seen INTEGER NOT NULL
    ) WITHOUT ROWID;",
];

/// Opens the database with the settings the store relies on and migrates it.
pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if mode != "wal" {
        tracing::warn!(mode, "SQLite refused WAL mode");
    }
    // FULL: an acknowledged publish survives power loss, not just a crash;
    // routers lose power far more often than servers.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 256 KiB page cache instead of SQLite's 2 MB: the hot catalog lives in
    // RAM anyway (see store::View), and SQL runs only for writes, flushes and
    // start-up. Measured: it keeps an idle node with 10,000 entries under 16 MB.
    conn.pragma_update(None, "cache_size", -256)?;
    migrate(&conn)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let have: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let have = have.max(0) as usize;
    if have > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {have} is newer than this meshnode ({}); refusing to touch it",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        drop(super::open(&p).unwrap());
        let c = super::open(&p).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, super::MIGRATIONS.len());
        let mode: String = c
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
