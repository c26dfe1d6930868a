//! The usage report (`meshctl report`, `GET /api/v1/report`, D-Bus
//! `Report`) and its renderings: pure.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::rollup::Counts;
use crate::utc::rfc3339;

/// One URL, client or hour of the day, with its requests and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// URL, client address, or hour of the day (`"00"`..`"23"`, UTC).
    pub key: String,
    /// Requests.
    pub requests: u64,
    /// Body bytes.
    pub bytes: u64,
}

/// One hour, for charts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourRow {
    /// Its start, RFC 3339 UTC.
    pub start: String,
    /// Content requests.
    pub requests: u64,
    /// Body bytes.
    pub bytes: u64,
    /// Requests served from this node's store.
    pub from_store: u64,
    /// ... through the mesh.
    pub from_mesh: u64,
    /// ... fetched from the internet.
    pub from_internet: u64,
    /// ... over radio.
    pub from_rf: u64,
    /// Not found or failed.
    pub other: u64,
}

impl HourRow {
    /// The row of the hour starting at `start` (unix seconds).
    pub fn new(start: i64, c: &Counts) -> Self {
        HourRow {
            start: rfc3339(start),
            requests: c.requests,
            bytes: c.bytes,
            from_store: c.store_requests,
            from_mesh: c.mesh_requests,
            from_internet: c.internet_requests,
            from_rf: c.rf_requests,
            other: c.not_found + c.failed,
        }
    }
}

/// What the node did over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Start, unix seconds (older than the hourly retention, whole days).
    pub since: i64,
    /// End, unix seconds.
    pub until: i64,
    /// Every counter summed over the period.
    pub totals: Counts,
    /// Share of found content requests answered from this node's store.
    pub cache_hit_ratio: Option<f64>,
    /// Different client addresses served.
    pub distinct_clients: u64,
    /// Most requested content.
    pub top_content: Vec<Item>,
    /// Busiest clients; left out of the public port's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_clients: Option<Vec<Item>>,
    /// Requests by hour of the day (UTC), `"00"`..`"23"`.
    pub by_hour_of_day: Vec<Item>,
    /// Hour by hour, where hours are kept.
    pub hourly: Vec<HourRow>,
}

/// How to render a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// JSON (the [`Report`] itself).
    Json,
    /// CSV, one `section,key,requests,bytes` row per figure.
    Csv,
    /// Markdown tables.
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "markdown" | "md" => Ok(Format::Markdown),
            _ => Err(format!(
                "unknown format {s:?}: use table, json, csv or markdown"
            )),
        }
    }
}

/// One labelled figure: `(key, requests or count, bytes where they apply)`.
type Row = (String, u64, Option<u64>);

/// The figures of a report as sections of labelled rows.
fn sections(r: &Report) -> Vec<(&'static str, Vec<Row>)> {
    let t = &r.totals;
    let row = |k: &str, n: u64, b: u64| (k.to_string(), n, Some(b));
    let count = |k: &str, n: u64| (k.to_string(), n, None);
    let mut out = vec![
        (
            "utilisation",
            vec![
                row("content requests (clients)", t.requests, t.bytes),
                row("from this node's store", t.store_requests, t.store_bytes),
                row("through the mesh", t.mesh_requests, t.mesh_bytes),
                row("from the internet", t.internet_requests, t.internet_bytes),
                row("over radio", t.rf_requests, t.rf_bytes),
                count("not found", t.not_found),
                count("refused or failed", t.failed),
                row("served to other nodes", t.peer_requests, t.peer_bytes),
            ],
        ),
        (
            "impact",
            vec![
                count("external requests", t.external_requests),
                row(
                    "external downloads avoided",
                    t.external_avoided,
                    t.external_bytes_saved,
                ),
                row("served while offline", t.offline_requests, t.offline_bytes),
                count("distinct clients served", r.distinct_clients),
                count(
                    "cache hit ratio (per mille)",
                    r.cache_hit_ratio.map_or(0, |x| (x * 1000.0).round() as u64),
                ),
            ],
        ),
        (
            "network",
            vec![
                count("most peers at once", t.peers_max),
                count("peers joined", t.peer_joins),
                count("peers left", t.peer_leaves),
                count("mode changes", t.mode_changes),
                count("seconds offline", t.offline_secs),
                count("radio airtime (ms)", t.rf_airtime_ms),
            ],
        ),
    ];
    let items = |v: &[Item]| -> Vec<Row> {
        v.iter()
            .map(|i| (i.key.clone(), i.requests, Some(i.bytes)))
            .collect()
    };
    out.push(("top content", items(&r.top_content)));
    if let Some(c) = &r.top_clients {
        out.push(("top clients", items(c)));
    }
    out.push(("by hour of day (UTC)", items(&r.by_hour_of_day)));
    out
}

/// For people: the hours of the day without requests are left out.
fn busy(sec: &str, rows: Vec<Row>) -> Vec<Row> {
    if sec.starts_with("by hour") {
        rows.into_iter().filter(|r| r.1 > 0).collect()
    } else {
        rows
    }
}

/// Renders `r`.
pub fn render(r: &Report, f: Format) -> String {
    match f {
        Format::Json => serde_json::to_string_pretty(r).expect("a report serialises") + "\n",
        Format::Csv => {
            let mut s = String::from("section,key,requests,bytes\n");
            for (sec, rows) in sections(r) {
                for (k, n, b) in rows {
                    let b = b.map(|b| b.to_string()).unwrap_or_default();
                    let _ = writeln!(s, "{},{},{n},{b}", csv(sec), csv(&k));
                }
            }
            s
        }
        Format::Markdown => {
            let mut s = format!(
                "# meshnode report\n\n{} to {} (UTC)\n",
                rfc3339(r.since),
                rfc3339(r.until)
            );
            for (sec, rows) in sections(r) {
                let _ = write!(s, "\n## {sec}\n\n| | count | bytes |\n|---|---:|---:|\n");
                for (k, n, b) in busy(sec, rows) {
                    let b = b.map(human).unwrap_or_default();
                    let _ = writeln!(s, "| {} | {n} | {b} |", k.replace('|', "\\|"));
                }
            }
            s
        }
        Format::Table => {
            let mut s = format!("{} to {} (UTC)\n", rfc3339(r.since), rfc3339(r.until));
            for (sec, rows) in sections(r) {
                let rows = busy(sec, rows);
                let w = rows
                    .iter()
                    .map(|(k, ..)| k.chars().count())
                    .max()
                    .unwrap_or(0);
                let _ = writeln!(s, "\n{sec}");
                if rows.is_empty() {
                    let _ = writeln!(s, "  (none)");
                }
                for (k, n, b) in rows {
                    let b = b.map(human).unwrap_or_default();
                    let _ = writeln!(s, "  {k:<w$}  {n:>10}  {b:>10}");
                }
            }
            s
        }
    }
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Bytes for people: `0 B`, `1.5 KiB`, ...
pub fn human(b: u64) -> String {
    let mut v = b as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{b} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            since: 1_763_683_200,
            until: 1_763_769_600,
            totals: Counts {
                requests: 10,
                bytes: 4096,
                store_requests: 7,
                external_avoided: 2,
                external_bytes_saved: 2048,
                ..Default::default()
            },
            cache_hit_ratio: Some(0.7),
            distinct_clients: 3,
            top_content: vec![Item {
                key: "http://n0call.radio/a,b".into(),
                requests: 5,
                bytes: 100,
            }],
            top_clients: None,
            by_hour_of_day: vec![],
            hourly: vec![],
        }
    }

    #[test]
    fn every_format_carries_the_figures() {
        let r = report();
        let csv = render(&r, Format::Csv);
        assert!(csv.starts_with("section,key,requests,bytes\n"));
        assert!(
            csv.contains("impact,external downloads avoided,2,2048\n"),
            "{csv}"
        );
        assert!(
            csv.contains("top content,\"http://n0call.radio/a,b\",5,100\n"),
            "{csv}"
        );
        assert!(!csv.contains("top clients"));
        let md = render(&r, Format::Markdown);
        assert!(md.contains("| from this node's store | 7 | 0 B |"), "{md}");
        assert!(
            md.contains("| cache hit ratio (per mille) | 700 |  |"),
            "{md}"
        );
        let t = render(&r, Format::Table);
        assert!(
            t.contains("2025-11-21T00:00:00Z to 2025-11-22T00:00:00Z"),
            "{t}"
        );
        assert!(t.contains("distinct clients served"), "{t}");
        let back: Report = serde_json::from_str(&render(&r, Format::Json)).unwrap();
        assert_eq!(back, r);
        assert_eq!("md".parse::<Format>(), Ok(Format::Markdown));
        assert!(
            "xml"
                .parse::<Format>()
                .unwrap_err()
                .contains("unknown format")
        );
        assert_eq!(human(1536), "1.5 KiB");
    }
}
