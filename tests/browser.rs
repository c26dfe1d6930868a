//! The status page in a real browser: Debian's chromium, headless, driven
//! by chromedriver over the W3C WebDriver protocol (a small client below,
//! plain HTTP + JSON over hyper). Three daemons in this process form a
//! mesh; their uplink probes reach a TCP listener the test owns ("the
//! internet"), so closing it takes node A offline. The page must show the
//! mode, the peers and the map, search the catalog, keep to the phone's
//! width, and follow A to mesh-only by itself. Screenshots go to
//! `target/test-artifacts/`.
//!
//! Without chromium or chromedriver the test prints `SKIP ...` and passes;
//! `scripts/test.sh` installs both (`chromium chromium-driver`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestNode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshnode::api::client::PublishOptions;
use serde_json::{Value, json};

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags for a root, offline, throwaway browser: no sandbox (root),
/// no GPU, and none of the background traffic that floods a machine without
/// internet with refused connections.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-US",
    "--hide-scrollbars",
];

fn in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// A chromedriver process of this test, killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path, dir: &Path) -> Driver {
        // a free port: chromedriver cannot report one it chose itself
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let t = Instant::now();
        loop {
            if let Ok(v) = d.call("GET", "/status", None).await
                && v["ready"] == true
            {
                return d;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not come up; log:\n{}",
                d.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One WebDriver command; `Ok(value)` or `Err("error: message")`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{status} {}: {}",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"].as_str().unwrap_or("?")
            ))
        }
    }
}

/// A browser session.
struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Browser<'a> {
    async fn open(driver: &'a Driver, chromium: &Path, profile: &Path) -> Browser<'a> {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push("--window-size=1280,1700".into());
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "binary": chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let v = driver
            .call("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("no session: {e}; log:\n{}", driver.log_tail()));
        Browser {
            driver,
            id: v["sessionId"].as_str().unwrap().to_string(),
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body) in the page and returns its result.
    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `script` until it returns `true`; panics with the last value of
    /// `show` after `secs`.
    async fn wait_until(&self, what: &str, secs: u64, script: &str, show: &str) -> Duration {
        let t = Instant::now();
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return t.elapsed();
            }
            if t.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "timed out after {secs} s waiting for {what}; the page shows: {}",
                    self.eval(show).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        if !text.is_empty() {
            self.cmd(
                "POST",
                &format!("/element/{e}/value"),
                Some(json!({ "text": text })),
            )
            .await;
        }
    }

    async fn window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// A window `width` wide and as tall as the page (for a screenshot of
    /// all of it; the viewport is what WebDriver captures).
    async fn whole_page(&self, width: u32) {
        self.window(width, 900).await;
        for _ in 0..2 {
            let v = self
                .eval(
                    "return [document.documentElement.scrollHeight, \
                     window.outerHeight - window.innerHeight]",
                )
                .await;
            let want = v[0].as_u64().unwrap() + v[1].as_u64().unwrap_or(0);
            self.window(width, want.clamp(600, 6000) as u32).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// A PNG of the viewport, written to `path`.
    async fn screenshot(&self, path: &Path) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
        png
    }

    /// The browser console since the last call (chromedriver's log endpoint).
    async fn console(&self) -> Vec<Value> {
        self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn close(self) {
        let _ = self
            .driver
            .call("DELETE", &format!("/session/{}", self.id), None)
            .await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:#x}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for quad in clean.chunks(4) {
        let data: Vec<u8> = quad.iter().copied().filter(|&c| c != b'=').collect();
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len()]);
    }
    out
}

fn assert_png(png: &[u8], what: &str) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{what}: not a PNG ({} bytes)",
        png.len()
    );
    assert!(&png[12..16] == b"IHDR", "{what}: no IHDR chunk first");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w >= 300 && h >= 300, "{what}: {w}x{h}");
    // a blank page compresses to a few KiB; the status page is far more
    assert!(png.len() > 30_000, "{what}: only {} bytes", png.len());
}

/// Fast mesh timers (as tests/mesh.rs) and probes to `internet`.
fn node_cfg(internet: SocketAddr, static_peers: &[&TestNode]) -> String {
    let peers: Vec<String> = static_peers
        .iter()
        .map(|n| format!("\"{}\"", n.addr))
        .collect();
    format!(
        "[discovery]\nmdns = false\nredial_interval = \"500ms\"\nstatic_peers = [{}]\n\
         [gossip]\nheartbeat_interval = \"1s\"\npeer_expiry = \"5s\"\n\
         [sync]\nreconcile_interval = \"2s\"\n\
         [connectivity]\nprobes = [\"tcp://{internet}\"]\ninterval = \"500ms\"\n\
         retry_interval = \"200ms\"\ndown_after = 2\ntimeout = \"500ms\"\nfailover = false\n",
        peers.join(", ")
    )
}

fn tagged(path: &str, tag: &str) -> PublishOptions {
    PublishOptions {
        path: path.into(),
        tags: vec![tag.into()],
        ..Default::default()
    }
}

const MODE: &str = "const m = document.getElementById('mode'); \
    return [m.dataset.mode, document.getElementById('mode-text').textContent, \
    document.getElementById('live').dataset.state];";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_status_page_follows_the_mesh_and_the_uplink_in_a_browser() {
    let name = "the_status_page_follows_the_mesh_and_the_uplink_in_a_browser";
    let (Some(chromium), Some(chromedriver)) = (
        in_path(&["chromium", "chromium-browser", "google-chrome"]),
        in_path(&["chromedriver"]),
    ) else {
        println!(
            "SKIP {name}: chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");

    // "the internet": the probes pass while this listens
    let internet = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inet = internet.local_addr().unwrap();
    let uplink = tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = internet.accept().await {
                drop(s);
            }
        }
    });

    // a line: A - B - C (A hears of C through B)
    let a = TestNode::start_named("N0CALL", "alpha", &node_cfg(inet, &[])).await;
    let b = TestNode::start_named("K1ABC", "bravo", &node_cfg(inet, &[&a])).await;
    let c = TestNode::start_named("W2XYZ", "charlie", &node_cfg(inet, &[&b])).await;
    for (path, tag) in [
        ("/weather/today.txt", "weather"),
        ("/weather/week.txt", "weather"),
        ("/news/index.html", "news"),
        ("/maps/town.svg", "maps"),
    ] {
        a.publish_with(format!("content of {path}").as_bytes(), tagged(path, tag))
            .await;
    }
    b.publish("/bulletin.txt", b"net at 19:00 on 145.500").await;

    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(&chromedriver, profile.path()).await;
    let web = Browser::open(&driver, &chromium, &profile.path().join("profile")).await;
    web.goto(&format!("http://{}/", a.addr)).await;

    // served by the node: name and mode are in the HTML itself
    assert_eq!(
        web.eval("return document.getElementById('node-name').textContent")
            .await,
        "N0CALL-alpha"
    );
    assert_eq!(
        web.eval("return document.getElementById('callsign').textContent")
            .await,
        "N0CALL"
    );
    web.wait_until(
        "the mode indicator to say online, live",
        20,
        "const m = document.getElementById('mode'); \
         return m.dataset.mode === 'online' \
           && document.getElementById('mode-text').textContent === 'Online' \
           && document.getElementById('live').dataset.state === 'live';",
        MODE,
    )
    .await;

    // the peers, by name: B a neighbour, C known through the mesh
    web.wait_until(
        "bravo and charlie in the peer list",
        30,
        "const li = (n) => document.querySelector('#peers li[data-name=\"' + n + '\"]'); \
         const b = li('K1ABC-bravo'), c = li('W2XYZ-charlie'); \
         return !!(b && c) && b.textContent.includes('neighbour') \
           && c.textContent.includes('via mesh');",
        "return document.getElementById('peers').innerText",
    )
    .await;
    // the map: all three nodes, A in the middle, links drawn
    web.wait_until(
        "all three nodes and two links on the map",
        30,
        "const svg = document.getElementById('topology-map'); \
         const names = [...svg.querySelectorAll('g.node')].map(g => g.dataset.name).sort().join(','); \
         const me = svg.querySelector('g.node.me'); \
         return names === 'K1ABC-bravo,N0CALL-alpha,W2XYZ-charlie' \
           && me.dataset.name === 'N0CALL-alpha' \
           && svg.querySelectorAll('line.link').length >= 2 \
           && [...svg.querySelectorAll('text')].some(t => t.textContent === 'W2XYZ-charlie');",
        "return document.getElementById('topology-map').outerHTML",
    )
    .await;
    let map = web
        .eval(
            "const svg = document.getElementById('topology-map'); \
             const box = svg.getBoundingClientRect(); \
             return { w: box.width, h: box.height, \
               links: [...svg.querySelectorAll('line.link')].map(l => l.getAttribute('class')) };",
        )
        .await;
    assert!(map["w"].as_f64().unwrap() > 600.0, "{map}");
    assert!(map["h"].as_f64().unwrap() > 200.0, "{map}");
    for class in map["links"].as_array().unwrap() {
        let class = class.as_str().unwrap();
        // on one host every link is LAN (loopback), and a good one
        assert!(class.contains("k-lan") && class.contains("q-"), "{class}");
    }

    // the catalog and its search box
    let rows = "return [...document.querySelectorAll('#catalog tbody tr[data-url]')].map(r => r.dataset.url).join(' ')";
    web.wait_until(
        "four catalog rows",
        10,
        "return document.querySelectorAll('#catalog tbody tr[data-url]').length === 4",
        rows,
    )
    .await;
    web.type_into("#catalog-search", "weather").await;
    web.wait_until(
        "the two weather rows",
        5,
        "const u = [...document.querySelectorAll('#catalog tbody tr[data-url]')].map(r => r.dataset.url); \
         return u.join(' ') === 'http://n0call.radio/weather/today.txt http://n0call.radio/weather/week.txt';",
        rows,
    )
    .await;
    assert_eq!(
        web.eval("return document.getElementById('catalog-count').textContent")
            .await,
        "2 of 4 items match “weather”."
    );
    web.type_into("#catalog-search", "WEATHER week").await;
    web.wait_until(
        "one row for two words, any case",
        5,
        "const u = [...document.querySelectorAll('#catalog tbody tr[data-url]')].map(r => r.dataset.url); \
         return u.join(' ') === 'http://n0call.radio/weather/week.txt';",
        rows,
    )
    .await;
    web.type_into("#catalog-search", "nothing-like-this").await;
    web.wait_until(
        "no rows, said so",
        5,
        "return document.querySelectorAll('#catalog tbody tr[data-url]').length === 0 \
           && document.querySelector('#catalog tbody').textContent.includes('Nothing matches');",
        rows,
    )
    .await;
    web.type_into("#catalog-search", "").await;

    // traffic for the live chart: from A's store, and through the mesh from B
    for _ in 0..6 {
        assert_eq!(
            a.get("n0call.radio", "/weather/today.txt", &[])
                .await
                .status,
            200
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t = Instant::now();
    while a.get("k1abc.radio", "/bulletin.txt", &[]).await.status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "B's bulletin not through A"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    web.wait_until(
        "the live chart with requests from the store",
        10,
        "const svg = document.querySelector('#live-chart svg'); \
         return !!svg && svg.querySelectorAll('rect.s-store').length > 0;",
        "return document.getElementById('live-chart').innerHTML",
    )
    .await;
    // the analytics report (GET /api/v1/report) charts the same requests
    // by hour: bars from the store and through the mesh
    web.wait_until(
        "the usage chart from the analytics report",
        20,
        "const svg = document.querySelector('#usage-chart svg'); \
         return !!svg && svg.querySelectorAll('rect.s-store').length > 0 \
           && svg.querySelectorAll('rect.s-mesh').length > 0;",
        "return document.getElementById('usage-chart').innerHTML",
    )
    .await;

    // the whole page, as a person would see it
    web.whole_page(1280).await;
    let png = web.screenshot(&artifacts.join("status-page.png")).await;
    assert_png(&png, "status-page.png");

    // a phone: one column, nothing wider than the screen
    web.whole_page(412).await;
    web.wait_until(
        "the page to fit a phone's width",
        5,
        "return window.innerWidth <= 412 \
           && document.documentElement.scrollWidth <= window.innerWidth",
        "return [window.innerWidth, document.documentElement.scrollWidth]",
    )
    .await;
    let png = web
        .screenshot(&artifacts.join("status-page-phone.png"))
        .await;
    assert_png(&png, "status-page-phone.png");
    web.window(1280, 1000).await;

    // the uplink dies: A must say mesh-only by itself
    uplink.abort();
    let _ = uplink.await; // the listener is closed once the task is gone
    let took = web
        .wait_until(
            "the mode indicator to change to mesh-only",
            30,
            "const m = document.getElementById('mode'); \
             return m.dataset.mode === 'mesh-only' \
               && document.getElementById('mode-text').textContent === 'Mesh only' \
               && document.getElementById('uplink').textContent.startsWith('down') \
               && document.querySelector('#topology-map g.node.me').dataset.mode === 'mesh-only';",
            MODE,
        )
        .await;
    println!("mode on the page changed to mesh-only {took:?} after the uplink closed");
    let png = web
        .screenshot(&artifacts.join("status-page-mesh-only.png"))
        .await;
    assert_png(&png, "status-page-mesh-only.png");

    // the browser saw no errors: no blocked loads, no failed scripts
    let severe: Vec<Value> = web
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");

    web.close().await;
    drop(driver);
    for n in [c, b, a] {
        n.daemon.shutdown().await.unwrap();
    }
}
