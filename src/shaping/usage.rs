//! Per-client usage on disk (`<state_dir>/usage.sqlite`), so counts and
//! quota overrides survive a restart. Owned by the shaping task.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use rusqlite::{Connection, params};

use super::quota::{Quota, Usage};

/// One client's row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    /// Counted bytes.
    pub usage: Usage,
    /// Quotas set for this client with `meshctl quota` (instead of the
    /// configured ones).
    pub quota: Option<Quota>,
}

/// The usage database.
#[derive(Debug)]
pub struct UsageDb {
    conn: Connection,
}

impl UsageDb {
    /// Opens (creating) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(state_dir.join("usage.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS clients (
                ip TEXT PRIMARY KEY,
                day INTEGER NOT NULL, day_up INTEGER NOT NULL, day_down INTEGER NOT NULL,
                month INTEGER NOT NULL, month_up INTEGER NOT NULL, month_down INTEGER NOT NULL,
                total_up INTEGER NOT NULL, total_down INTEGER NOT NULL,
                quota_set INTEGER NOT NULL DEFAULT 0,
                quota_daily INTEGER, quota_monthly INTEGER
            )",
        )?;
        Ok(Self { conn })
    }

    /// Every client's row.
    pub fn load(&self) -> rusqlite::Result<BTreeMap<Ipv4Addr, Row>> {
        let mut st = self.conn.prepare(
            "SELECT ip, day, day_up, day_down, month, month_up, month_down, total_up, total_down,
                    quota_set, quota_daily, quota_monthly FROM clients",
        )?;
        let rows = st.query_map([], |r| {
            let n = |i: usize| r.get::<_, i64>(i);
            let u = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            let usage = Usage {
                day: n(1)?,
                day_up: u(2)?,
                day_down: u(3)?,
                month: n(4)?,
                month_up: u(5)?,
                month_down: u(6)?,
                total_up: u(7)?,
                total_down: u(8)?,
            };
            let quota = (r.get::<_, i64>(9)? != 0).then(|| Quota {
                daily: r
                    .get::<_, Option<i64>>(10)
                    .ok()
                    .flatten()
                    .map(|v| v.max(0) as u64),
                monthly: r
                    .get::<_, Option<i64>>(11)
                    .ok()
                    .flatten()
                    .map(|v| v.max(0) as u64),
            });
            Ok((r.get::<_, String>(0)?, Row { usage, quota }))
        })?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (ip, row) = row?;
            if let Ok(ip) = ip.parse() {
                out.insert(ip, row);
            }
        }
        Ok(out)
    }

    /// Writes rows (in one transaction).
    pub fn save<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a Ipv4Addr, &'a Row)>,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO clients (ip, day, day_up, day_down, month, month_up, month_down,
                    total_up, total_down, quota_set, quota_daily, quota_monthly)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT(ip) DO UPDATE SET day = ?2, day_up = ?3, day_down = ?4, month = ?5,
                    month_up = ?6, month_down = ?7, total_up = ?8, total_down = ?9,
                    quota_set = ?10, quota_daily = ?11, quota_monthly = ?12",
            )?;
            for (ip, r) in rows {
                let u = &r.usage;
                let b = |v: u64| v.min(i64::MAX as u64) as i64;
                st.execute(params![
                    ip.to_string(),
                    u.day,
                    b(u.day_up),
                    b(u.day_down),
                    u.month,
                    b(u.month_up),
                    b(u.month_down),
                    b(u.total_up),
                    b(u.total_down),
                    i64::from(r.quota.is_some()),
                    r.quota.and_then(|q| q.daily).map(b),
                    r.quota.and_then(|q| q.monthly).map(b),
                ])?;
            }
        }
        tx.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ip: Ipv4Addr = "10.0.0.7".parse().unwrap();
        let mut usage = Usage::default();
        usage.add(1_800_000_000, 1234, 5678);
        let rows = BTreeMap::from([
            (ip, Row { usage, quota: None }),
            (
                "10.0.0.8".parse().unwrap(),
                Row {
                    usage: Usage::default(),
                    quota: Some(Quota {
                        daily: Some(1 << 30),
                        monthly: None,
                    }),
                },
            ),
        ]);
        let mut db = UsageDb::open(dir.path()).unwrap();
        db.save(&rows).unwrap();
        drop(db);
        let db = UsageDb::open(dir.path()).unwrap();
        assert_eq!(db.load().unwrap(), rows);
    }
}
