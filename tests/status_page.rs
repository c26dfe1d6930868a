//! The status page at `/` (FR-012) without a browser: what the node renders
//! on the server (useful without JavaScript), that every file the page
//! loads is served by the node itself with the right type, and that it
//! points nowhere else. tests/browser.rs drives it in a real browser.

mod common;

use common::{TestNode, expect_api_error};
use meshnode::api::client::PublishOptions;

fn tagged(path: &str, tag: &str) -> PublishOptions {
    PublishOptions {
        path: path.into(),
        tags: vec![tag.into()],
        ..Default::default()
    }
}

/// Every value of `name="..."` attributes in `html`.
fn attr_values(html: &str, name: &str) -> Vec<String> {
    let needle = format!(" {name}=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// The `http://` and `https://` URLs in `text` other than the SVG namespace
/// name (an identifier, never fetched) and the mesh's own `<callsign>.radio`
/// content URLs (shown as text; their links use the path form).
fn foreign_urls(text: &str) -> Vec<String> {
    let text = text.replace("http://www.w3.org/2000/svg", "");
    let mut out = Vec::new();
    for scheme in ["http://", "https://"] {
        for (i, _) in text.match_indices(scheme) {
            let rest = &text[i + scheme.len()..];
            let host = &rest[..rest.find(['/', '"', '<', ' ', '\'']).unwrap_or(rest.len())];
            if !host.ends_with(".radio") {
                out.push(format!("{scheme}{host}"));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_page_is_server_rendered_and_loads_only_from_the_node() {
    let n = TestNode::start("").await;
    n.publish_with(b"sunny", tagged("/weather/today.txt", "weather"))
        .await;
    n.publish_with(b"<p>news</p>", tagged("/news/index.html", "news"))
        .await;

    let r = n.get("127.0.0.1", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    let csp = r.header("content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    let html = r.text();
    assert!(!html.contains("{{"), "a template slot was left: {html}");
    // without JavaScript: the node, its licence, the mode, peers and content
    assert!(
        html.contains("<h1 id=\"node-name\">N0CALL-test</h1>"),
        "{html}"
    );
    assert!(html.contains("<title>N0CALL-test · meshnode</title>"));
    assert!(html.contains("<span id=\"licence\" data-state=\"declared\">"));
    assert!(html.contains("<strong id=\"callsign\">N0CALL</strong>"));
    // no probes configured: offline, so mesh-only
    assert!(
        html.contains("id=\"mode\" class=\"mode\" data-mode=\"mesh-only\""),
        "{html}"
    );
    assert!(html.contains(">Mesh only</p>"));
    assert!(html.contains("not probed (no probes configured)"));
    assert!(html.contains("No peers yet."));
    assert!(html.contains(
        "id=\"rf-state\" class=\"state\" data-state=\"off\">Packet radio is off on this node"
    ));
    assert!(html.contains(
        "<tr data-url=\"http://n0call.radio/weather/today.txt\"><td class=\"url\">\
         <a href=\"/n0call.radio/weather/today.txt\">"
    ));
    assert!(html.contains("data-url=\"http://n0call.radio/news/index.html\""));
    assert!(html.contains("2 items."));

    // the search box works without JavaScript too: `/?q=`
    let f = n.get("127.0.0.1", "/?q=weath", &[]).await.text();
    assert!(f.contains("data-url=\"http://n0call.radio/weather/today.txt\""));
    assert!(!f.contains("data-url=\"http://n0call.radio/news/index.html\""));
    assert!(f.contains("value=\"weath\""));
    assert!(f.contains("1 of 2 items match"));
    // every word must match, in any case, also the type (as in the script)
    let f = n.get("127.0.0.1", "/?q=TEXT/HTML%20news", &[]).await.text();
    assert!(f.contains("data-url=\"http://n0call.radio/news/index.html\""));
    assert!(!f.contains("data-url=\"http://n0call.radio/weather/today.txt\""));
    // what is typed comes back escaped
    let x = n.get("127.0.0.1", "/?q=%3Cb%3E%22", &[]).await.text();
    assert!(x.contains("value=\"&lt;b&gt;&quot;\""), "{x}");
    assert!(!x.contains("<b>\""));
    assert!(x.contains("Nothing matches."));

    // every link and resource stays on this node (path, fragment or query)
    let refs: Vec<String> = attr_values(&html, "src")
        .into_iter()
        .chain(attr_values(&html, "href"))
        .collect();
    for v in &refs {
        assert!(
            (v.starts_with('/') && !v.starts_with("//")) || v.starts_with('#'),
            "{v} leaves the node"
        );
    }
    // every file the page loads is served, with its type, and revalidates
    let mut assets: Vec<&String> = refs.iter().filter(|v| v.starts_with("/assets/")).collect();
    assets.sort();
    assets.dedup();
    assert_eq!(
        assets,
        [
            "/assets/icon.svg",
            "/assets/status.css",
            "/assets/status.js"
        ]
    );
    let mut bodies = vec![html.clone()];
    for a in assets {
        let r = n.get("127.0.0.1", a, &[]).await;
        assert_eq!(r.status, 200, "{a}");
        let want = match a.rsplit('.').next().unwrap() {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert_eq!(r.header("content-type"), want, "{a}");
        assert_eq!(r.header("x-content-type-options"), "nosniff");
        assert!(r.body.len() > 200, "{a} is nearly empty");
        let etag = r.header("etag").to_string();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");
        let again = n
            .get("127.0.0.1", a, &[("if-none-match", etag.as_str())])
            .await;
        assert_eq!(again.status, 304, "{a}");
        assert!(again.body.is_empty());
        bodies.push(r.text());
    }
    for b in &bodies {
        assert_eq!(foreign_urls(b), Vec::<String>::new());
        assert!(!b.contains("@import"));
        assert!(!b.contains("url(http"));
    }
    // the JSON links of the footer answer
    for api in [
        "/api/v1/status",
        "/api/v1/peers",
        "/api/v1/topology",
        "/api/v1/catalog",
        "/metrics",
    ] {
        assert!(refs.iter().any(|r| r == api), "{api} not linked");
        assert_eq!(n.get("127.0.0.1", api, &[]).await.status, 200, "{api}");
    }
    assert_eq!(
        n.get("127.0.0.1", "/assets/nothing.js", &[]).await.status,
        404
    );
    n.daemon.shutdown().await.unwrap();
}

#[tokio::test]
async fn status_has_what_the_page_shows() {
    let n = TestNode::start("").await;
    n.publish("/a.txt", b"a").await;
    let s = n.get("127.0.0.1", "/api/v1/status", &[]).await.json();
    assert_eq!(s["licence"]["callsign"], "N0CALL");
    assert_eq!(s["licence"]["state"], "declared");
    assert_eq!(s["shaping"]["enabled"], false);
    assert_eq!(s["shaping"]["active"], false);
    assert_eq!(s["shaping"]["clients"], 0);
    assert_eq!(s["mode"], "mesh-only");
    assert!(s["mode_since"].as_i64().unwrap() > 0);
    let hits = s["http"]["content_hits"].as_u64().unwrap();
    let sent = s["http"]["body_bytes"].as_u64().unwrap();
    assert_eq!(n.get("n0call.radio", "/a.txt", &[]).await.status, 200);
    let s2 = n.get("127.0.0.1", "/api/v1/status", &[]).await.json();
    assert_eq!(s2["http"]["content_hits"].as_u64().unwrap(), hits + 1);
    assert_eq!(s2["http"]["body_bytes"].as_u64().unwrap(), sent + 1);
    assert!(s2["http"]["responses"].as_u64().unwrap() >= 3);
    for k in ["via_mesh", "origin_fetches", "content_misses"] {
        assert_eq!(s2["http"][k], 0, "{k}");
    }

    // "me" is the caller: loopback has no usage on record (shaping is off)
    let me = n.get("127.0.0.1", "/api/v1/clients/me", &[]).await;
    assert_eq!(me.status, 404);
    let msg = me.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("127.0.0.1") && msg.contains("shaping is off"),
        "{msg}"
    );
    // the control socket has no address of its own
    expect_api_error(
        n.ctl.get("/api/v1/clients/me").await,
        400,
        "no client address",
    );
    n.daemon.shutdown().await.unwrap();
}
