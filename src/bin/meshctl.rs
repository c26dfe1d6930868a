//! `meshctl`: control a running meshnode through its control socket.
//!
//! Exit codes, for scripts: 0 success; 1 the daemon refused or failed the
//! request; 2 bad arguments; 69 the daemon is not running; 74 a local file
//! could not be read or written; 77 permission denied on the socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyper::Method;
use meshnode::api::client::{ClientError, ControlClient, PublishOptions};
use serde_json::Value;

/// Control a running meshnode.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 request refused or failed, 2 bad arguments, 69 daemon not running, 74 local file error, 77 permission denied."
)]
struct Args {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_SOCKET",
        default_value = "/run/meshnode/control.sock"
    )]
    socket: PathBuf,
    /// Print the daemon's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Node name, id, listeners, store usage and mesh summary.
    Status,
    /// The peer table: every node this one knows, with scores.
    Peers,
    /// Get any URL through the mesh: station content, or external plain-HTTP
    /// content (served from the mesh, else fetched once for everyone).
    Fetch {
        /// `http://<callsign>.radio/p` or `http://example.org/p`.
        url: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// The mesh topology: nodes and links with RTT, loss and kind.
    /// Per-client usage, quota and current share (shaping); one client
    /// with its address.
    Usage {
        /// A client's IPv4 address.
        ip: Option<String>,
    },
    /// Set a client's quotas (instead of the configured ones), or clear them.
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["daily", "monthly", "clear"])))]
    Quota {
        /// The client's IPv4 address.
        ip: String,
        /// Per day (UTC), up and down together, e.g. `2GiB`.
        #[arg(long)]
        daily: Option<String>,
        /// Per calendar month, e.g. `30GiB`.
        #[arg(long)]
        monthly: Option<String>,
        /// Back to the configured quotas.
        #[arg(long, conflicts_with_all = ["daily", "monthly"])]
        clear: bool,
    },
    /// Usage report: utilisation, top content, access by hour, impact.
    Report {
        /// How far back, e.g. 24h, 7d, 30d.
        #[arg(long, default_value = "7d")]
        since: String,
        /// table, json, csv or markdown.
        #[arg(long, default_value = "table")]
        format: meshnode::analytics::Format,
    },
    Topology {
        /// Print GraphViz DOT (`meshctl topology --dot | dot -Tsvg > mesh.svg`).
        #[arg(long)]
        dot: bool,
    },
    /// Catalog content: list, publish, fetch, remove, pin, verify.
    #[command(subcommand)]
    Content(ContentCmd),
    /// Re-read the configuration file (like SIGHUP); an invalid file is refused.
    Reload,
}

#[derive(Debug, Subcommand)]
enum ContentCmd {
    /// List the catalog.
    Ls {
        /// Only URLs or tags containing this text.
        #[arg(long, short)]
        query: Option<String>,
    },
    /// Publish a file under this station's callsign.
    Publish {
        /// The file to publish.
        file: PathBuf,
        /// URL path to publish under, e.g. /index.html (write %25 for a literal %).
        #[arg(long)]
        path: String,
        /// 1-4 or essential, popular, standard, personal.
        #[arg(long, default_value = "standard")]
        priority: String,
        /// public, community or private.
        #[arg(long, default_value = "public")]
        access: String,
        /// A tag (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// MIME type (guessed from the path when omitted).
        #[arg(long)]
        content_type: Option<String>,
        /// Pin it so eviction never removes it.
        #[arg(long)]
        pin: bool,
    },
    /// Fetch content by URL (http://<callsign>.radio/path, or /path for this station).
    Get {
        /// The URL.
        url: String,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove a URL from the catalog.
    Rm {
        /// The URL.
        url: String,
    },
    /// Pin a URL against eviction (or unpin it).
    Pin {
        /// The URL.
        url: String,
        /// Remove the pin instead.
        #[arg(long)]
        unpin: bool,
    },
    /// Re-hash every blob now; quarantine the bad ones.
    Verify,
}

const EX_SOFTWARE: u8 = 1;
const EX_UNAVAILABLE: u8 = 69;
const EX_IOERR: u8 = 74;
const EX_NOPERM: u8 = 77;

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    match rt.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshctl: {e}");
            ExitCode::from(match e {
                ClientError::NotRunning(_) => EX_UNAVAILABLE,
                ClientError::PermissionDenied(_) => EX_NOPERM,
                ClientError::Io(_) => EX_IOERR,
                ClientError::Api { .. } | ClientError::Http(_) => EX_SOFTWARE,
            })
        }
    }
}

async fn run(args: &Args) -> Result<(), ClientError> {
    let c = ControlClient::new(&args.socket);
    let out = |v: &Value, human: &dyn Fn(&Value) -> String| {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(v).expect("JSON values print")
            );
        } else {
            print!("{}", human(v));
        }
    };
    match &args.cmd {
        Cmd::Status => out(&c.get("/api/v1/status").await?, &human_status),
        Cmd::Peers => out(&c.get("/api/v1/peers").await?, &human_peers),
        Cmd::Fetch { url, output } => download(&c, url, output.as_deref(), args.json).await?,
        Cmd::Topology { dot: true } => {
            // not JSON: the client hands the text back as a JSON string
            let v = c.get("/api/v1/topology?format=dot").await?;
            print!("{}", v.as_str().unwrap_or_default());
        }
        Cmd::Usage { ip: None } => out(&c.get("/api/v1/clients").await?, &human_usage),
        Cmd::Usage { ip: Some(ip) } => out(&c.get(&format!("/api/v1/clients/{ip}")).await?, &|v| {
            human_clients(std::slice::from_ref(v))
        }),
        Cmd::Quota {
            ip,
            daily,
            monthly,
            clear,
        } => {
            let body = if *clear {
                serde_json::json!({})
            } else {
                serde_json::json!({ "daily": daily, "monthly": monthly })
            };
            let v = c
                .call(
                    Method::PUT,
                    &format!("/api/v1/clients/{ip}/quota"),
                    meshnode::api::full(serde_json::to_vec(&body).expect("json")),
                )
                .await?;
            out(&v, &|v| human_clients(std::slice::from_ref(v)));
        }
        Cmd::Topology { dot: false } => out(&c.get("/api/v1/topology").await?, &human_topology),
        Cmd::Report { since, format } => {
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("since", since)
                .finish();
            let v = c.get(&format!("/api/v1/report?{q}")).await?;
            let r: meshnode::analytics::Report = serde_json::from_value(v)
                .map_err(|e| std::io::Error::other(format!("the daemon's report: {e}")))?;
            let f = if args.json {
                meshnode::analytics::Format::Json
            } else {
                *format
            };
            print!("{}", meshnode::analytics::report::render(&r, f));
        }
        Cmd::Reload => out(
            &c.call(Method::POST, "/api/v1/reload", meshnode::api::full(""))
                .await?,
            &|v| {
                let mut s = String::from("reloaded\n");
                for a in v["applied"].as_array().into_iter().flatten() {
                    s += &format!("  applied: {}\n", a.as_str().unwrap_or_default());
                }
                for k in v["restart_required"].as_array().into_iter().flatten() {
                    s += &format!("  needs a restart: {}\n", k.as_str().unwrap_or_default());
                }
                s
            },
        ),
        Cmd::Content(cmd) => match cmd {
            ContentCmd::Ls { query } => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("limit", "10000");
                if let Some(text) = query {
                    q.append_pair("q", text);
                }
                out(
                    &c.get(&format!("/api/v1/catalog?{}", q.finish())).await?,
                    &human_catalog,
                )
            }
            ContentCmd::Publish {
                file,
                path,
                priority,
                access,
                tags,
                content_type,
                pin,
            } => {
                let opts = PublishOptions {
                    path: path.clone(),
                    priority: Some(priority.clone()),
                    access: Some(access.clone()),
                    tags: tags.clone(),
                    content_type: content_type.clone(),
                    pin: *pin,
                };
                out(&c.publish_file(file, &opts).await?, &|v| {
                    format!(
                        "published {} ({} bytes, version {}, sha256 {})\n",
                        str_of(&v["url"]),
                        v["size"],
                        v["version"],
                        str_of(&v["hash"])
                    )
                })
            }
            ContentCmd::Get { url, output } => {
                let url = resolve_url(&c, url).await?;
                download(&c, &url, output.as_deref(), args.json).await?;
            }
            ContentCmd::Rm { url } => {
                let url = resolve_url(&c, url).await?;
                out(
                    &c.with_url(Method::DELETE, "/api/v1/content", &url, &[])
                        .await?,
                    &|v| format!("removed {}\n", str_of(&v["url"])),
                )
            }
            ContentCmd::Pin { url, unpin } => {
                let url = resolve_url(&c, url).await?;
                let pinned = if *unpin { "false" } else { "true" };
                out(
                    &c.with_url(
                        Method::POST,
                        "/api/v1/content/pin",
                        &url,
                        &[("pinned", pinned)],
                    )
                    .await?,
                    &|v| {
                        format!(
                            "{} {}\n",
                            if v["pinned"].as_bool() == Some(true) {
                                "pinned"
                            } else {
                                "unpinned"
                            },
                            str_of(&v["url"])
                        )
                    },
                )
            }
            ContentCmd::Verify => {
                let v = c
                    .call(
                        Method::POST,
                        "/api/v1/content/verify",
                        meshnode::api::full(""),
                    )
                    .await?;
                out(&v, &|v| {
                    let mut s = format!("checked {} blobs ({} bytes)\n", v["checked"], v["bytes"]);
                    for u in v["quarantined"].as_array().into_iter().flatten() {
                        s += &format!("QUARANTINED (hash mismatch): {}\n", str_of(u));
                    }
                    for u in v["already_quarantined"].as_array().into_iter().flatten() {
                        s += &format!("still quarantined: {}\n", str_of(u));
                    }
                    s
                });
                if v["quarantined"].as_array().is_some_and(|a| !a.is_empty()) {
                    return Err(ClientError::Api {
                        status: 200,
                        message: "integrity check failed for some content (now quarantined)".into(),
                    });
                }
            }
        },
    }
    Ok(())
}

/// `/path` means this station's own content.
async fn resolve_url(c: &ControlClient, url: &str) -> Result<String, ClientError> {
    if url.starts_with('/') {
        let st = c.get("/api/v1/status").await?;
        return Ok(format!(
            "http://{}.radio{url}",
            str_of(&st["callsign"]).to_lowercase()
        ));
    }
    Ok(url.to_string())
}

/// Writes `url`'s content to `output` (atomically: a temporary name, then a
/// rename) or to stdout.
async fn download(
    c: &ControlClient,
    url: &str,
    output: Option<&std::path::Path>,
    json: bool,
) -> Result<(), ClientError> {
    match output {
        Some(p) => {
            // write next to the target, then rename: no half file under the real name
            let tmp = p.with_extension("meshctl-part");
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io_ctx(e, &tmp))?;
            match c.fetch(url, &mut f).await {
                Ok(n) => {
                    f.sync_all().await.map_err(|e| io_ctx(e, &tmp))?;
                    tokio::fs::rename(&tmp, p).await.map_err(|e| io_ctx(e, p))?;
                    if !json {
                        eprintln!("{n} bytes written to {}", p.display());
                    }
                }
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            }
        }
        None => {
            c.fetch(url, &mut tokio::io::stdout()).await?;
        }
    }
    Ok(())
}

fn io_ctx(e: std::io::Error, p: &std::path::Path) -> ClientError {
    ClientError::Io(std::io::Error::new(
        e.kind(),
        format!("{}: {e}", p.display()),
    ))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn human_status(v: &Value) -> String {
    let s = &v["store"];
    format!(
        "node:      {} (callsign {})\nnode id:   {}\nversion:   {}\nuptime:    {} s\nlisten:    {}\nstore:     {} items, {} of {} bytes used, {} quarantined\n",
        str_of(&v["node"]),
        str_of(&v["callsign"]),
        str_of(&v["node_id"]),
        str_of(&v["version"]),
        v["uptime_s"],
        v["listen"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|x| str_of(x).to_string())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        s["entries"],
        s["used_bytes"],
        s["max_bytes"],
        s["quarantined"],
    ) + &human_mode(v)
        + &human_mesh(&v["mesh"])
        + &human_rf(&v["rf"])
}

/// The radio part of `meshctl status`.
fn human_rf(r: &Value) -> String {
    if r["enabled"] != true {
        return format!(
            "rf:        off ({})\n",
            r["reason"].as_str().unwrap_or("not configured")
        );
    }
    let a = &r["airtime"];
    let link = if r["connected"] == true {
        format!("connected via {}", str_of(&r["via"]))
    } else {
        format!("NOT CONNECTED: {}", r["reason"].as_str().unwrap_or("?"))
    };
    let pct = |v: &Value| v.as_f64().unwrap_or(0.0) * 100.0;
    let mut s = format!(
        "rf:        {} on {} ({} bit/s), {link}\n\
         airtime:   background {} ms in {} s ({:.2} % of {:.0} % allowed), requests {} ms, ID {} ms; \
         queued {} + {}\n\
         frames:    {} sent ({} beacons, {} IDs), {} heard; {} stations\n",
        str_of(&r["callsign"]),
        str_of(&r["tnc"]),
        r["bitrate"],
        a["background_ms"],
        a["window_s"],
        pct(&a["background_share"]),
        pct(&a["background_budget"]),
        a["requests_ms"],
        a["id_ms"],
        r["queued"]["background"],
        r["queued"]["requests"],
        r["frames_sent"],
        r["beacons_sent"],
        r["ids_sent"],
        r["frames_heard"],
        r["stations"].as_array().map_or(0, Vec::len),
    );
    for st in r["stations"].as_array().into_iter().flatten() {
        s += &format!(
            "  {:<10} {:<24} catalog {:<22} frames {:>5}  beacons {:>4} heard {:>3} lost\n",
            str_of(&st["callsign"]),
            st["node"].as_str().unwrap_or("-"),
            st["catalog_digest"].as_str().unwrap_or("-"),
            st["frames_heard"],
            st["beacons_heard"],
            st["beacons_lost"],
        );
    }
    s
}

fn human_mode(v: &Value) -> String {
    let c = &v["connectivity"];
    let since = v["mode_since"].as_i64().unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut s = format!(
        "mode:      {} (since {} s ago, {} changes); uplink {}\n",
        str_of(&v["mode"]),
        (now - since).max(0) / 1000,
        c["changes"],
        match (c["uplink"]["probed"].as_bool(), c["uplink"]["up"].as_bool()) {
            (Some(false), _) => "not probed",
            (_, Some(true)) => "up",
            _ => "down",
        }
    );
    if let Some(g) = c["gateway"].as_object() {
        s += &format!(
            "failover:  via {} ({}){}\n",
            g["addr"].as_str().unwrap_or("?"),
            g["name"].as_str().unwrap_or("?"),
            if g["installed"] == true {
                ""
            } else {
                " NOT INSTALLED"
            }
        );
    }
    if let Some(why) = c["failover_off"].as_str() {
        s += &format!("failover:  off: {why}\n");
    }
    s
}

fn human_usage(v: &Value) -> String {
    let mut s = if v["active"].as_bool() == Some(true) {
        format!(
            "shaping:   on ({}; down {} bit/s, up {} bit/s)\n",
            v["interfaces"]
                .as_array()
                .map(|a| a.iter().map(str_of).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            v["downlink_bps"],
            v["uplink_bps"]
        )
    } else {
        format!(
            "shaping:   off ({})\n",
            v["reason"].as_str().unwrap_or("not started yet")
        )
    };
    s += &human_clients(v["clients"].as_array().map_or(&[][..], |a| &a[..]));
    s
}

fn human_clients(list: &[Value]) -> String {
    let mib = |v: &Value| format!("{:.1} MiB", v.as_f64().unwrap_or(0.0) / 1048576.0);
    let mbit = |v: &Value| format!("{:.2}", v.as_f64().unwrap_or(0.0) / 1e6);
    let mut s = format!(
        "{:<16} {:<7} {:>12} {:>12} {:>12} {:>16} {:>16}\n",
        "CLIENT", "STATE", "TODAY", "MONTH", "LEFT", "DOWN NOW/SHARE", "UP NOW/SHARE"
    );
    for c in list {
        let u = &c["usage"];
        let today = u["day_up"].as_u64().unwrap_or(0) + u["day_down"].as_u64().unwrap_or(0);
        let month = u["month_up"].as_u64().unwrap_or(0) + u["month_down"].as_u64().unwrap_or(0);
        let state = match (c["active"].as_bool(), c["throttled"].as_bool()) {
            (_, Some(true)) => "THROTL",
            (Some(true), _) => "active",
            _ => "idle",
        };
        s += &format!(
            "{:<16} {:<7} {:>12} {:>12} {:>12} {:>16} {:>16}\n",
            str_of(&c["ip"]),
            state,
            mib(&today.into()),
            mib(&month.into()),
            if c["remaining"].is_null() {
                "no quota".into()
            } else {
                mib(&c["remaining"])
            },
            format!(
                "{}/{} Mb",
                mbit(&c["rate_down_bps"]),
                mbit(&c["share_down_bps"])
            ),
            format!(
                "{}/{} Mb",
                mbit(&c["rate_up_bps"]),
                mbit(&c["share_up_bps"])
            ),
        );
    }
    s
}

fn human_topology(v: &Value) -> String {
    let names: std::collections::HashMap<&str, String> = v["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let id = str_of(&n["id"]);
            let name = n["name"]
                .as_str()
                .map_or_else(|| id[..8.min(id.len())].to_string(), String::from);
            (id, name)
        })
        .collect();
    let mut s = format!("{:<24} {:<10} {}\n", "NODE", "MODE", "");
    for n in v["nodes"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<24} {:<10} {}\n",
            names.get(str_of(&n["id"])).map_or("?", |x| x.as_str()),
            n["mode"].as_str().unwrap_or("?"),
            if n["self"] == true { "(this node)" } else { "" }
        );
    }
    s += &format!(
        "\n{:<24} {:<24} {:<4} {:>8} {:>6} {:>7}\n",
        "LINK", "", "KIND", "RTT ms", "LOSS", "QUALITY"
    );
    for l in v["links"].as_array().into_iter().flatten() {
        let name = |k: &str| names.get(str_of(&l[k])).cloned().unwrap_or_default();
        s += &format!(
            "{:<24} {:<24} {:<4} {:>8.1} {:>5.0}% {:>7.2}\n",
            name("a"),
            name("b"),
            str_of(&l["kind"]),
            l["rtt_ms"].as_f64().unwrap_or(0.0),
            l["loss"].as_f64().unwrap_or(0.0) * 100.0,
            l["quality"].as_f64().unwrap_or(0.0),
        );
    }
    s
}

fn human_mesh(m: &Value) -> String {
    let mut s = format!(
        "mesh:      {} records (digest {}), {} peers, {} neighbours, {}\n",
        m["records"],
        str_of(&m["catalog_digest"]),
        m["peers"],
        m["neighbours"],
        if m["broadcast"] == true {
            "broadcasting (bootstrap node)"
        } else {
            "silent (address not shared)"
        }
    );
    for (url, why) in m["essential_refused"].as_object().into_iter().flatten() {
        s += &format!("REFUSED ESSENTIAL: {url}: {}\n", str_of(why));
    }
    s
}

fn human_peers(v: &Value) -> String {
    let mut s = format!(
        "{:<24} {:<10} {:<4} {:>5} {:>5} {:>8} {:>10} {:>8} {}\n",
        "NAME", "ID", "LINK", "AVAIL", "PERF", "RTT ms", "BW kB/s", "RECORDS", "ADDRESSES"
    );
    let num = |x: &Value, scale: f64, prec: usize| {
        x.as_f64()
            .map(|f| format!("{:.*}", prec, f / scale))
            .unwrap_or_else(|| "-".into())
    };
    for p in v["peers"].as_array().into_iter().flatten() {
        let addrs: Vec<&str> = p["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect();
        s += &format!(
            "{:<24} {:<10} {:<4} {:>5} {:>5} {:>8} {:>10} {:>8} {}\n",
            p["name"].as_str().unwrap_or("?"),
            &str_of(&p["node_id"])[..8.min(str_of(&p["node_id"]).len())],
            if p["neighbour"] == true { "yes" } else { "-" },
            num(&p["availability"], 1.0, 2),
            num(&p["performance"], 1.0, 2),
            num(&p["rtt_ms"], 1.0, 1),
            num(&p["bandwidth_bps"], 1000.0, 0),
            p["catalog"]["entries"],
            if addrs.is_empty() {
                "(silent)".to_string()
            } else {
                addrs.join(", ")
            },
        );
    }
    s += &format!("{} peers, {} neighbours\n", v["total"], v["neighbours"]);
    s
}

fn human_catalog(v: &Value) -> String {
    let mut s = format!(
        "{:<50} {:>10} {:>4} {:<9} {:>4} {:>6} {}\n",
        "URL", "SIZE", "PRIO", "ACCESS", "VER", "HITS", "FLAGS"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        let flags = format!(
            "{}{}",
            if e["pinned"].as_bool() == Some(true) {
                "pinned "
            } else {
                ""
            },
            if e["quarantined"].as_bool() == Some(true) {
                "QUARANTINED"
            } else {
                ""
            }
        );
        s += &format!(
            "{:<50} {:>10} {:>4} {:<9} {:>4} {:>6} {}\n",
            str_of(&e["url"]),
            e["size"],
            e["priority"],
            str_of(&e["access"]),
            e["version"],
            e["access_count"],
            flags.trim()
        );
    }
    s += &format!("{} entries\n", v["total"]);
    s
}
