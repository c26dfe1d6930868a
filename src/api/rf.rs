//! Content for other stations over RF: the RF task hands their requests
//! here ([`crate::rf::ServeReq`]) and sends the answer back on the air. A
//! thin facade over the store, with the mesh's access rule (public and
//! community content, never private or quarantined).

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use super::App;
use crate::catalog::Access;
use crate::rf::ServeReq;
use crate::rf::http::ContentAns;

/// Answers requests until the RF task goes away.
pub async fn serve(app: Arc<App>, mut rx: mpsc::Receiver<ServeReq>) {
    while let Some(r) = rx.recv().await {
        let app = app.clone();
        tokio::spawn(async move {
            let ans = answer(&app, &r.url, r.start, r.max).await;
            let _asker_gone = r.reply.send(ans);
        });
    }
}

async fn answer(app: &App, url: &str, start: u64, max: u32) -> ContentAns {
    let Some(live) = app
        .store
        .get(url)
        .filter(|e| e.fields().access != Access::Private && !e.fields().quarantined)
    else {
        return ContentAns::error(404, "not in this node's store");
    };
    let f = live.fields();
    let (total, content_type) = (f.size, f.content_type.clone());
    if start >= total || max == 0 {
        return ContentAns {
            status: 200,
            content_type,
            total,
            body: Vec::new(),
        };
    }
    let end = (start + u64::from(max)).min(total) - 1;
    let mut h = HeaderMap::new();
    h.insert(
        header::RANGE,
        HeaderValue::from_str(&format!("bytes={start}-{end}")).expect("ascii"),
    );
    let r = super::content::serve_entry(app, live, &Method::GET, &h)
        .await
        .resp;
    if !r.status().is_success() {
        return ContentAns::error(503, &format!("reading it failed ({})", r.status()));
    }
    match r.into_body().collect().await {
        Ok(b) => ContentAns {
            status: 200,
            content_type,
            total,
            body: b.to_bytes().to_vec(),
        },
        Err(e) => ContentAns::error(503, &format!("reading it failed: {e}")),
    }
}
