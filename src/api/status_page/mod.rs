//! The status page at `/` (FR-012: "visual indication of server status and
//! network mode"): network mode, station and licence, peers, a mesh map,
//! usage charts, bandwidth sharing and the content catalog with search.
//!
//! Everything it needs is in the binary: `index.html` is a template this
//! module fills in on each request, so the page is meaningful without
//! JavaScript (node name, mode, peers, catalog; `/?q=` searches on the
//! server). `status.js` then keeps it live by polling the JSON API every 2 s
//! and draws the map and charts as SVG; `status.css` lays it out for phones
//! and desktops. Nothing is fetched from anywhere but this node, and the
//! Content-Security-Policy says so to the browser: the page works offline.
//! No build step: the files are hand-written and served as they are under
//! [`ASSET_PREFIX`].

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::pages::{escape, local_href};
use super::{ApiError, App, Body, Caller, StatusBody, param, respond};
use crate::connectivity::Mode;

/// Where the page's own files are served.
pub const ASSET_PREFIX: &str = "/assets/";

/// The page, with `{{name}}` slots.
const TEMPLATE: &str = include_str!("index.html");

/// Catalog rows rendered on the server (the script shows them all).
const SERVER_ROWS: usize = 200;

/// The page may load only from this node; the script talks only to it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    /// Strong validator: FNV-1a of the body, fixed at compile time.
    etag: u64,
}

const fn embed(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
        etag: fnv1a(body.as_bytes()),
    }
}

/// 64-bit FNV-1a; good enough to tell two builds' files apart.
const fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const ASSETS: &[Asset] = &[
    embed(
        "status.css",
        "text/css; charset=utf-8",
        include_str!("status.css"),
    ),
    embed(
        "status.js",
        "text/javascript; charset=utf-8",
        include_str!("status.js"),
    ),
    embed("icon.svg", "image/svg+xml", include_str!("icon.svg")),
];

/// `GET /assets/<name>`: an embedded file, revalidated by ETag.
pub fn asset(req: &Request<Incoming>, path: &str) -> Result<Response<Body>, ApiError> {
    let name = &path[ASSET_PREFIX.len()..];
    let a = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no such asset: {path}")))?;
    let etag = format!("\"{:016x}\"", a.etag);
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if fresh {
        let mut r = respond(StatusCode::NOT_MODIFIED, a.content_type, "");
        r.headers_mut().remove(header::CONTENT_TYPE);
        r
    } else {
        respond(StatusCode::OK, a.content_type, a.body)
    };
    let h = r.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    // a new binary may bring new files: always revalidate (a 304 is tiny)
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

/// `GET /`: the page, filled in with what the node knows now. `?q=` filters
/// the content table as the script's search box does.
pub fn page(app: &App, caller: Caller, q: &[(String, String)]) -> Response<Body> {
    let search = param(q, "q").unwrap_or("").trim().to_string();
    let mut r = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        render(app, caller, &search),
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn render(app: &App, caller: Caller, search: &str) -> String {
    let s = app.status();
    let peers = app.peers();
    // as many as the script asks for
    let catalog = app
        .catalog(caller, &[("limit".into(), "10000".into())])
        .ok();
    let all = catalog.as_ref().map_or(0, |c| c.total);
    let matching: Vec<&crate::catalog::Entry> = catalog
        .iter()
        .flat_map(|c| &c.entries)
        .filter(|e| matches(e, search))
        .collect();
    let now_ms = crate::store::now_ms();
    let (shaping_state, shaping_text) = shaping_line(&s);
    fill(TEMPLATE, |key| {
        Some(match key {
            "node" => escape(&s.node),
            "callsign" => escape(&s.licence.callsign),
            "licence_state" => s.licence.state.to_string(),
            "licence_text" => licence_text(s.licence.state).to_string(),
            "version" => escape(s.version),
            "uptime" => human_duration(Duration::from_secs(s.uptime_s)),
            "mode" => s.mode.name().to_string(),
            "mode_since" => s.mode_since.to_string(),
            "mode_label" => mode_label(s.mode).to_string(),
            "mode_detail" => match &s.connectivity.gateway {
                Some(g) if s.mode != Mode::Online => format!(
                    "No uplink of its own: internet traffic goes through {}.",
                    escape(g.name.as_deref().unwrap_or("a mesh node"))
                ),
                _ => mode_detail(s.mode).to_string(),
            },
            "mode_for" => format!(
                "{} ago",
                human_duration(Duration::from_millis(
                    (now_ms - s.mode_since).max(0).unsigned_abs()
                ))
            ),
            "uplink" => escape(&uplink_text(&s)),
            "gateway" => escape(&gateway_text(&s)),
            "node_id" => s.node_id.clone(),
            "node_id_short" => s.node_id.chars().take(16).collect(),
            "radio_host" => escape(&app.node.callsign.radio_host()),
            "store_text" => format!(
                "{}, {} of {}",
                plural(s.store.entries, "item"),
                human_bytes(s.store.used_bytes),
                human_bytes(s.store.max_bytes)
            ),
            "store_used" => s.store.used_bytes.to_string(),
            "store_max" => s.store.max_bytes.max(1).to_string(),
            "store_high" => (s.store.max_bytes / 10 * 9).to_string(),
            "mesh_records" => format!(
                "{}, {} ({})",
                plural(s.mesh.records, "record"),
                plural(s.mesh.peers, "peer"),
                plural(s.mesh.neighbours, "neighbour")
            ),
            "peer_count" => peers.total.to_string(),
            "peers" => peer_items(&peers.peers, now_ms),
            "http_text" => format!(
                "Since start: {} content requests from this node's store, {} through the mesh, {} fetched from the internet; {} sent.",
                s.http.content_hits,
                s.http.via_mesh,
                s.http.origin_fetches,
                human_bytes(s.http.body_bytes)
            ),
            "rf_state" => rf_line(&s).0.to_string(),
            "rf_text" => escape(&rf_line(&s).1),
            "rf_facts" => rf_facts(&s),
            "shaping_state" => shaping_state.to_string(),
            "shaping_text" => escape(&shaping_text),
            "shaping_facts" => shaping_facts(&s),
            "me_text" => if s.shaping.enabled {
                "Usage of this device shows here while fair sharing counts it."
            } else {
                "Not counted: fair sharing is off on this node."
            }
            .into(),
            "catalog_total" => all.to_string(),
            "q" => escape(search),
            "catalog_count" => match &catalog {
                None => "The catalog could not be read.".into(),
                Some(_) if search.is_empty() => format!("{}.", plural(all, "item")),
                Some(_) => format!(
                    "{} of {} match “{}”.",
                    matching.len(),
                    plural(all, "item"),
                    escape(search)
                ),
            },
            "catalog_rows" => catalog_rows(&matching, all),
            "rendered" => httpdate::fmt_http_date(SystemTime::now()),
            _ => return None,
        })
    })
}

/// Replaces each `{{key}}` in one pass (so a value that contains `{{` is
/// never expanded); unknown keys stay as they are.
fn fill(template: &str, mut value: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = &after[..end];
                match value(key) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push_str("{{");
                        out.push_str(key);
                        out.push_str("}}");
                    }
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The mode's name on the page (the script has the same words).
fn mode_label(m: Mode) -> &'static str {
    match m {
        Mode::Online => "Online",
        Mode::MeshOnly => "Mesh only",
        Mode::RfOnly => "Radio only",
    }
}

fn mode_detail(m: Mode) -> &'static str {
    match m {
        Mode::Online => "This node reaches the internet through its own uplink.",
        Mode::MeshOnly => "No internet uplink here: content comes from this node and the mesh.",
        Mode::RfOnly => "No internet and no IP peers: only stations heard on radio.",
    }
}

fn licence_text(state: &str) -> &'static str {
    match state {
        "declared" => "declared, no certificate checked",
        "verified" => "verified",
        _ => "not verified",
    }
}

fn uplink_text(s: &StatusBody) -> String {
    let u = &s.connectivity.uplink;
    if !u.probed {
        return "not probed (no probes configured)".into();
    }
    if u.up {
        let best = u
            .probes
            .iter()
            .filter(|p| p.ok)
            .filter_map(|p| p.ms)
            .fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            format!("up ({best:.0} ms)")
        } else {
            "up".into()
        }
    } else if u.checked_ms.is_none() {
        "checking…".into()
    } else {
        format!(
            "down ({} failed round{})",
            u.failures,
            if u.failures == 1 { "" } else { "s" }
        )
    }
}

fn gateway_text(s: &StatusBody) -> String {
    match (&s.connectivity.gateway, &s.connectivity.failover_off) {
        (Some(g), _) => format!(
            "via {} ({}){}",
            g.name.as_deref().unwrap_or("unnamed node"),
            g.addr,
            if g.installed { "" } else { ", installing" }
        ),
        (None, Some(_)) if s.mode == Mode::Online => "not needed".into(),
        (None, Some(why)) => format!("failover off: {why}"),
        (None, None) if s.mode == Mode::Online => "not needed".into(),
        (None, None) => "none reachable".into(),
    }
}

fn shaping_line(s: &StatusBody) -> (&'static str, String) {
    let sh = &s.shaping;
    if sh.active {
        (
            "active",
            format!(
                "Fair sharing is on: {} client{} share {} down and {} up.",
                sh.clients,
                if sh.clients == 1 { "" } else { "s" },
                human_rate(sh.downlink_bps),
                human_rate(sh.uplink_bps)
            ),
        )
    } else if sh.enabled {
        (
            "failed",
            format!(
                "Fair sharing is configured but not running: {}.",
                sh.reason.as_deref().unwrap_or("starting")
            ),
        )
    } else {
        (
            "off",
            "Fair sharing is off on this node ([shaping] enabled = false).".into(),
        )
    }
}

/// The radio card's state and sentence; the script writes the same.
fn rf_line(s: &StatusBody) -> (&'static str, String) {
    let rf = &s.rf;
    match (rf.enabled, rf.connected) {
        (false, _) => (
            "off",
            "Packet radio is off on this node ([rf] enabled = false).".into(),
        ),
        (true, false) => (
            "failed",
            format!(
                "The radio (TNC) is not connected: {}.",
                rf.reason.as_deref().unwrap_or("connecting")
            ),
        ),
        (true, true) => (
            "active",
            format!(
                "On the air as {} at {} bit/s; {} heard.",
                rf.callsign.as_deref().unwrap_or("?"),
                rf.bitrate,
                plural(rf.stations.len(), "station")
            ),
        ),
    }
}

fn rf_facts(s: &StatusBody) -> String {
    let rf = &s.rf;
    if !rf.enabled {
        return String::new();
    }
    let mut out = format!(
        "<div><dt>Background airtime</dt><dd>{:.1} % of {:.0} % allowed</dd></div>\
         <div><dt>Stations</dt><dd>{}</dd></div>",
        rf.airtime.background_share * 100.0,
        rf.airtime.background_budget * 100.0,
        escape(
            &rf.stations
                .iter()
                .map(|st| st.callsign.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    for t in &rf.transfers {
        out.push_str(&format!(
            "<div><dt>Fetching</dt><dd>{} via {}: {}{}</dd></div>",
            escape(&t.url),
            escape(&t.via),
            human_bytes(t.bytes),
            t.total
                .map(|n| format!(" of {}", human_bytes(n)))
                .unwrap_or_default()
        ));
    }
    out
}

fn shaping_facts(s: &StatusBody) -> String {
    let sh = &s.shaping;
    if !sh.active {
        return String::new();
    }
    format!(
        "<div><dt>Download now</dt><dd>{}</dd></div><div><dt>Upload now</dt><dd>{}</dd></div>\
         <div><dt>Congestion</dt><dd>{}</dd></div><div><dt>Over quota</dt><dd>{} client{}</dd></div>",
        human_rate(sh.down_shaped_bps),
        human_rate(sh.up_shaped_bps),
        if sh.congested { "yes" } else { "no" },
        sh.throttled,
        if sh.throttled == 1 { "" } else { "s" }
    )
}

/// The peer list items; the script builds the same markup.
fn peer_items(peers: &[crate::mesh::PeerStatus], now_ms: i64) -> String {
    if peers.is_empty() {
        return "<li class=\"empty\">No peers yet.</li>".into();
    }
    let mut sorted: Vec<_> = peers.iter().collect();
    sorted.sort_by(|a, b| {
        b.neighbour
            .cmp(&a.neighbour)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    let mut out = String::new();
    for p in sorted {
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| p.node_id.chars().take(8).collect());
        let mut meta = Vec::new();
        if let Some(rtt) = p.rtt_ms {
            meta.push(format!("RTT {rtt:.1} ms"));
        }
        meta.push(plural(p.catalog.entries as usize, "item"));
        meta.push(format!(
            "seen {} ago",
            human_duration(Duration::from_millis(
                (now_ms - p.last_seen).max(0).unsigned_abs()
            ))
        ));
        let _ = write!(
            out,
            "<li class=\"peer\" data-node-id=\"{id}\" data-name=\"{name}\">\
             <span class=\"peer-name\">{name}</span> <span class=\"tag{cls}\">{kind}</span> \
             <span class=\"peer-meta\">{meta}</span></li>",
            id = escape(&p.node_id),
            name = escape(&name),
            cls = if p.neighbour { " tag-on" } else { "" },
            kind = if p.neighbour { "neighbour" } else { "via mesh" },
            meta = escape(&meta.join(" · ")),
        );
    }
    out
}

/// Does `e` match every word of `search` (in its URL, tags, type or
/// priority, any case)? The script's search box does the same.
fn matches(e: &crate::catalog::Entry, search: &str) -> bool {
    let hay = format!(
        "{} {} {} {}",
        e.url,
        e.tags.join(" "),
        e.content_type,
        e.priority.name()
    )
    .to_lowercase();
    search
        .to_lowercase()
        .split_whitespace()
        .all(|w| hay.contains(w))
}

/// The catalog table's rows; the script builds the same markup.
fn catalog_rows(entries: &[&crate::catalog::Entry], all: usize) -> String {
    if all == 0 {
        return "<tr class=\"empty\"><td colspan=\"5\">Nothing here yet.</td></tr>".into();
    }
    if entries.is_empty() {
        return "<tr class=\"empty\"><td colspan=\"5\">Nothing matches.</td></tr>".into();
    }
    let mut out = String::new();
    for e in entries.iter().take(SERVER_ROWS) {
        let _ = write!(
            out,
            "<tr data-url=\"{url}\"><td class=\"url\"><a href=\"{href}\">{url}</a>{q}</td>\
             <td class=\"num\">{size}</td><td>{ct}</td><td><span class=\"prio prio-{p}\">{pn}</span></td>\
             <td class=\"tags\">{tags}</td></tr>",
            url = escape(&e.url),
            href = escape(&local_href(&e.url)),
            q = if e.quarantined {
                " <span class=\"tag tag-bad\">quarantined</span>"
            } else {
                ""
            },
            size = human_bytes(e.size),
            ct = escape(e.content_type.split(';').next().unwrap_or("")),
            p = e.priority as u8,
            pn = e.priority.name(),
            tags = escape(&e.tags.join(", ")),
        );
    }
    if entries.len() > SERVER_ROWS {
        let _ = write!(
            out,
            "<tr class=\"more\"><td colspan=\"5\">… {} more in <a href=\"/api/v1/catalog\">/api/v1/catalog</a></td></tr>",
            entries.len() - SERVER_ROWS
        );
    }
    out
}

/// `1 item`, `2 items`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `1.5 KiB`, `12 MiB`; the binary units of the config file.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// `20 Mbit/s`: the units of `[shaping]`.
fn human_rate(bps: u64) -> String {
    match bps {
        0..1_000 => format!("{bps} bit/s"),
        1_000..1_000_000 => format!("{:.0} kbit/s", bps as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} Mbit/s", bps as f64 / 1e6),
        _ => format!("{:.1} Gbit/s", bps as f64 / 1e9),
    }
}

/// `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_known_keys_once() {
        let out = fill("a {{x}} b {{y}} c {{x", |k| {
            (k == "x").then(|| "{{y}}".to_string())
        });
        assert_eq!(out, "a {{y}} b {{y}} c {{x");
    }

    #[test]
    fn units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_rate(20_000_000), "20.0 Mbit/s");
        assert_eq!(human_rate(999), "999 bit/s");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 3600 + 300)),
            "3 h 5 min"
        );
        assert_eq!(human_duration(Duration::from_secs(59)), "59 s");
    }

    #[test]
    fn assets_are_distinct_and_typed() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
            assert!(TEMPLATE.contains(&format!("{ASSET_PREFIX}{}", a.name)));
        }
        assert_ne!(ASSETS[0].etag, ASSETS[1].etag);
    }
}
