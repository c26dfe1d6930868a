//! Analytics on disk: `<state_dir>/analytics.sqlite`, owned by the
//! analytics task.
//!
//! Hours (`hours`, `hour_clients`, `hour_content`) are kept for
//! `hourly_retention`, days (`days`, `day_clients`, `day_content`) for
//! `daily_retention`; a day's rows are recomputed from its hours whenever
//! one of them is written, so a day is complete before its hours expire.
//! Only the top URLs of an hour or day are kept by name, the rest as
//! [`OTHER_URLS`]: months of rows fit on a router.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use rusqlite::{Connection, Transaction, params};

use super::report::{HourRow, Item, Report};
use super::rollup::{Counts, Hour, OTHER_URLS, Tally, day_of, top};

/// The analytics database.
#[derive(Debug)]
pub struct AnalyticsDb {
    conn: Connection,
}

fn columns() -> String {
    Counts::FIELDS
        .iter()
        .map(|f| format!("{f} INTEGER NOT NULL DEFAULT 0"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl AnalyticsDb {
    /// Opens (creating) the database in `state_dir`.
    pub fn open(state_dir: &Path) -> rusqlite::Result<Self> {
        Self::open_file(&state_dir.join("analytics.sqlite"))
    }

    /// Opens (creating) the database at `path`.
    pub fn open_file(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let cols = columns();
        let mut ddl = String::new();
        for t in ["hour", "day"] {
            ddl.push_str(&format!(
                "CREATE TABLE IF NOT EXISTS {t}s (start INTEGER PRIMARY KEY, {cols});
                 CREATE TABLE IF NOT EXISTS {t}_clients (start INTEGER NOT NULL, client TEXT NOT NULL,
                     requests INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (start, client));
                 CREATE TABLE IF NOT EXISTS {t}_content (start INTEGER NOT NULL, url TEXT NOT NULL,
                     requests INTEGER NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (start, url));"
            ));
        }
        conn.execute_batch(&ddl)?;
        // columns added by later versions
        for t in ["hours", "days"] {
            let have: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for f in Counts::FIELDS
                .iter()
                .filter(|f| !have.iter().any(|h| h == *f))
            {
                conn.execute_batch(&format!(
                    "ALTER TABLE {t} ADD COLUMN {f} INTEGER NOT NULL DEFAULT 0"
                ))?;
            }
        }
        Ok(Self { conn })
    }

    /// Writes `hour` (replacing what was written of it before), keeping its
    /// `top` URLs by name, and recomputes its day.
    pub fn write_hour(&mut self, hour: &Hour, top_n: usize) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        put_counts(&tx, "hours", hour.start, &hour.counts)?;
        let clients: HashMap<String, Tally> = hour
            .clients
            .iter()
            .map(|(ip, t)| (ip.to_string(), *t))
            .collect();
        put_items(
            &tx,
            "hour_clients",
            "client",
            hour.start,
            &clients,
            usize::MAX,
        )?;
        put_items(&tx, "hour_content", "url", hour.start, &hour.content, top_n)?;
        roll_day(&tx, day_of(hour.start), top_n)?;
        tx.commit()
    }

    /// The hour starting at `start` as written before (a restart within
    /// the hour carries on counting it), or an empty one.
    pub fn load_hour(&self, start: i64) -> rusqlite::Result<Hour> {
        let mut h = Hour {
            start,
            ..Default::default()
        };
        let sql = format!(
            "SELECT {} FROM hours WHERE start = ?1",
            Counts::FIELDS.join(", ")
        );
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query([start])?;
        if let Some(r) = rows.next()? {
            h.counts = counts_at(r, 0)?;
        }
        let tally = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, Tally)> {
            Ok((
                r.get(0)?,
                Tally {
                    requests: r.get::<_, i64>(1)?.max(0) as u64,
                    bytes: r.get::<_, i64>(2)?.max(0) as u64,
                },
            ))
        };
        let mut st = self
            .conn
            .prepare("SELECT client, requests, bytes FROM hour_clients WHERE start = ?1")?;
        for row in st.query_map([start], tally)? {
            let (k, t) = row?;
            if let Some(ip) = client_ip(&k) {
                h.clients.insert(ip, t);
            }
        }
        let mut st = self
            .conn
            .prepare("SELECT url, requests, bytes FROM hour_content WHERE start = ?1")?;
        for row in st.query_map([start], tally)? {
            let (k, t) = row?;
            h.content.insert(k, t);
        }
        Ok(h)
    }

    /// Deletes hours that started before `hours_from` and days before
    /// `days_from` (unix seconds).
    pub fn prune(&mut self, hours_from: i64, days_from: i64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for (t, from) in [("hour", hours_from), ("day", days_from)] {
            for suffix in ["s", "_clients", "_content"] {
                tx.execute(&format!("DELETE FROM {t}{suffix} WHERE start < ?1"), [from])?;
            }
        }
        tx.commit()
    }

    /// The report of `[since, until)`: from the hours where they are kept,
    /// from the days before that.
    pub fn report(&self, since: i64, until: i64, top_n: usize) -> rusqlite::Result<Report> {
        let first_hour: Option<i64> =
            self.conn
                .query_row("SELECT MIN(start) FROM hours", [], |r| r.get(0))?;
        // whole days before the first kept hour come from `days`
        let edge = first_hour.map_or(until, |h| day_of(h).max(day_of(since)));
        let hours_from = since.max(edge);
        let days = (day_of(since), edge);
        let mut totals = Counts::default();
        let mut hourly = Vec::new();
        let mut by_hour_of_day = vec![Tally::default(); 24];
        {
            let sql = format!(
                "SELECT start, {} FROM hours WHERE start >= ?1 AND start < ?2 ORDER BY start",
                Counts::FIELDS.join(", ")
            );
            let mut st = self.conn.prepare(&sql)?;
            let mut rows = st.query(params![hours_from, until])?;
            while let Some(r) = rows.next()? {
                let start: i64 = r.get(0)?;
                let c = counts_at(r, 1)?;
                totals.merge(&c);
                let h = &mut by_hour_of_day[(start.rem_euclid(86_400) / 3600) as usize];
                h.requests += c.requests;
                h.bytes += c.bytes;
                hourly.push(HourRow::new(start, &c));
            }
        }
        {
            let sql = format!(
                "SELECT {} FROM days WHERE start >= ?1 AND start < ?2",
                Counts::FIELDS.join(", ")
            );
            let mut st = self.conn.prepare(&sql)?;
            let mut rows = st.query(params![days.0, days.1])?;
            while let Some(r) = rows.next()? {
                totals.merge(&counts_at(r, 0)?);
            }
        }
        let ranges = params![hours_from, until, days.0, days.1];
        let sum = |what: &str, key: &str| -> rusqlite::Result<Vec<Item>> {
            let sql = format!(
                "SELECT {key}, SUM(requests), SUM(bytes) FROM (
                     SELECT {key}, requests, bytes FROM hour_{what} WHERE start >= ?1 AND start < ?2
                     UNION ALL
                     SELECT {key}, requests, bytes FROM day_{what} WHERE start >= ?3 AND start < ?4)
                 WHERE {key} != '{OTHER_URLS}'
                 GROUP BY {key} ORDER BY SUM(requests) DESC, SUM(bytes) DESC, {key} LIMIT {top_n}"
            );
            let mut st = self.conn.prepare(&sql)?;
            st.query_map(ranges, |r| {
                Ok(Item {
                    key: r.get(0)?,
                    requests: r.get::<_, i64>(1)?.max(0) as u64,
                    bytes: r.get::<_, i64>(2)?.max(0) as u64,
                })
            })?
            .collect()
        };
        let top_content = sum("content", "url")?;
        let top_clients = sum("clients", "client")?;
        let distinct_clients: i64 = self.conn.query_row(
            "SELECT COUNT(DISTINCT client) FROM (
                 SELECT client FROM hour_clients WHERE start >= ?1 AND start < ?2
                 UNION ALL
                 SELECT client FROM day_clients WHERE start >= ?3 AND start < ?4)",
            ranges,
            |r| r.get(0),
        )?;
        Ok(Report {
            since,
            until,
            cache_hit_ratio: totals.hit_ratio(),
            distinct_clients: distinct_clients.max(0) as u64,
            totals,
            top_content,
            top_clients: Some(top_clients),
            by_hour_of_day: by_hour_of_day
                .into_iter()
                .enumerate()
                .map(|(h, t)| Item {
                    key: format!("{h:02}"),
                    requests: t.requests,
                    bytes: t.bytes,
                })
                .collect(),
            hourly,
        })
    }
}

fn counts_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Counts> {
    let v = (0..Counts::FIELDS.len())
        .map(|i| r.get::<_, i64>(first + i).map(|x| x.max(0) as u64))
        .collect::<rusqlite::Result<Vec<u64>>>()?;
    Ok(Counts::from_values(&v))
}

fn put_counts(tx: &Transaction<'_>, table: &str, start: i64, c: &Counts) -> rusqlite::Result<()> {
    let marks = vec!["?"; Counts::FIELDS.len() + 1].join(", ");
    let sql = format!(
        "INSERT OR REPLACE INTO {table} (start, {}) VALUES ({marks})",
        Counts::FIELDS.join(", ")
    );
    let mut values: Vec<i64> = vec![start];
    values.extend(
        c.values()
            .into_iter()
            .map(|v| v.min(i64::MAX as u64) as i64),
    );
    tx.execute(&sql, rusqlite::params_from_iter(values))?;
    Ok(())
}

fn put_items<K: Clone + Ord + std::fmt::Display, S: std::hash::BuildHasher>(
    tx: &Transaction<'_>,
    table: &str,
    key: &str,
    start: i64,
    items: &HashMap<K, Tally, S>,
    top_n: usize,
) -> rusqlite::Result<()> {
    tx.execute(&format!("DELETE FROM {table} WHERE start = ?1"), [start])?;
    let (kept, rest) = top(items, top_n);
    let mut st = tx.prepare(&format!(
        "INSERT OR REPLACE INTO {table} (start, {key}, requests, bytes) VALUES (?1, ?2, ?3, ?4)"
    ))?;
    for (k, t) in kept {
        st.execute(params![
            start,
            k.to_string(),
            t.requests as i64,
            t.bytes as i64
        ])?;
    }
    if rest.requests > 0 {
        st.execute(params![
            start,
            OTHER_URLS,
            rest.requests as i64,
            rest.bytes as i64
        ])?;
    }
    Ok(())
}

/// Recomputes day `day`'s rows from its hours.
fn roll_day(tx: &Transaction<'_>, day: i64, top_n: usize) -> rusqlite::Result<()> {
    let end = day + 86_400;
    let sums = Counts::FIELDS
        .iter()
        .map(|f| {
            if *f == "peers_max" {
                format!("COALESCE(MAX({f}), 0)")
            } else {
                format!("COALESCE(SUM({f}), 0)")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let c = tx.query_row(
        &format!("SELECT {sums} FROM hours WHERE start >= ?1 AND start < ?2"),
        [day, end],
        |r| counts_at(r, 0),
    )?;
    put_counts(tx, "days", day, &c)?;
    for (what, key, n) in [("clients", "client", usize::MAX), ("content", "url", top_n)] {
        let items: HashMap<String, Tally> = {
            let mut st = tx.prepare(&format!(
                "SELECT {key}, SUM(requests), SUM(bytes) FROM hour_{what}
                 WHERE start >= ?1 AND start < ?2 GROUP BY {key}"
            ))?;
            st.query_map([day, end], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Tally {
                        requests: r.get::<_, i64>(1)?.max(0) as u64,
                        bytes: r.get::<_, i64>(2)?.max(0) as u64,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        // "(other)" of the hours stays "(other)" of the day
        let mut named = items.clone();
        let other = named.remove(OTHER_URLS);
        put_items(tx, &format!("day_{what}"), key, day, &named, n)?;
        if let Some(o) = other {
            tx.execute(
                &format!(
                    "INSERT INTO day_{what} (start, {key}, requests, bytes) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (start, {key}) DO UPDATE SET requests = requests + ?3, bytes = bytes + ?4"
                ),
                params![day, OTHER_URLS, o.requests as i64, o.bytes as i64],
            )?;
        }
    }
    Ok(())
}

/// Parses a client key back (rows hold `IpAddr` text).
pub fn client_ip(key: &str) -> Option<IpAddr> {
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::rollup::{Event, Source};
    use super::*;

    fn ev(client: u8, url: &str, source: Source, bytes: u64) -> Event {
        Event {
            client: Some(IpAddr::from([10, 0, 0, client])),
            url: url.into(),
            source,
            external: false,
            bytes,
            to_peer: false,
        }
    }

    const DAY: i64 = 20_000 * 86_400;

    #[test]
    fn hours_add_up_to_days_and_reports_read_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = AnalyticsDb::open(dir.path()).unwrap();
        // day 1: 3 hours; day 2: 1 hour
        for (h, n) in [(0, 2), (5, 3), (23, 1)] {
            let mut hour = Hour::at(DAY + h * 3600);
            for i in 0..n {
                hour.add(
                    ev(i as u8, &format!("http://a.radio/{i}"), Source::Store, 10),
                    false,
                );
            }
            hour.counts.peers_max = h as u64;
            db.write_hour(&hour, 2).unwrap();
        }
        let mut next = Hour::at(DAY + 86_400 + 3600);
        next.add(ev(7, "http://a.radio/0", Source::Mesh, 100), true);
        db.write_hour(&next, 2).unwrap();
        // written twice: replaced, not added
        db.write_hour(&next, 2).unwrap();

        let r = db.report(DAY, DAY + 2 * 86_400, 10).unwrap();
        assert_eq!((r.totals.requests, r.totals.bytes), (7, 160));
        assert_eq!((r.totals.store_requests, r.totals.mesh_requests), (6, 1));
        assert_eq!(r.totals.offline_requests, 1);
        assert_eq!(r.totals.peers_max, 23);
        assert_eq!(r.distinct_clients, 4, "10.0.0.0-2 and .7");
        assert_eq!(r.hourly.len(), 4);
        assert_eq!(r.by_hour_of_day[5].requests, 3);
        // top 2 per hour by name: /2 of hour 5 became "(other)"
        assert_eq!(r.top_content[0].key, "http://a.radio/0");
        assert_eq!(r.top_content[0].requests, 4);
        assert!(r.top_content.iter().all(|i| i.key != "http://a.radio/2"));

        // the hours of day 1 expire: its figures come from the day row
        db.prune(DAY + 86_400, 0).unwrap();
        let r = db.report(DAY, DAY + 2 * 86_400, 10).unwrap();
        assert_eq!((r.totals.requests, r.totals.bytes), (7, 160));
        assert_eq!(r.totals.peers_max, 23);
        assert_eq!(r.distinct_clients, 4);
        assert_eq!(r.hourly.len(), 1, "hourly rows only where hours are kept");
        // and the days go too
        db.prune(DAY + 86_400, DAY + 86_400).unwrap();
        let r = db.report(DAY, DAY + 2 * 86_400, 10).unwrap();
        assert_eq!(r.totals.requests, 1);
    }

    #[test]
    fn reopening_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Hour::at(DAY);
        h.add(ev(1, "http://a.radio/x", Source::Internet, 5), false);
        AnalyticsDb::open(dir.path())
            .unwrap()
            .write_hour(&h, 5)
            .unwrap();
        let r = AnalyticsDb::open(dir.path())
            .unwrap()
            .report(DAY, DAY + 3600, 5)
            .unwrap();
        assert_eq!(r.totals.internet_requests, 1);
        assert_eq!(r.top_clients.unwrap()[0].key, "10.0.0.1");
        // the hour carries on after a restart
        let db = AnalyticsDb::open(dir.path()).unwrap();
        let mut again = db.load_hour(DAY).unwrap();
        assert_eq!(again, h);
        again.add(ev(2, "http://a.radio/x", Source::Store, 5), false);
        assert_eq!((again.counts.requests, again.clients.len()), (2, 2));
        assert_eq!(db.load_hour(DAY + 3600).unwrap(), Hour::at(DAY + 3600));
    }
}
