//! Control-socket endpoints: publish, remove, pin, verify, reload, and reads
//! of any access level. Only reachable through the unix socket. The
//! operations themselves are in [`super::ops`] (shared with D-Bus).

use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header;
use hyper::{Method, Request, Response, StatusCode};

use super::ops::PublishRequest;
use super::{ApiError, App, Body, json, param, query};

/// Is this a control-only endpoint? (Everything else falls through to the
/// read-only routes the public port has too.)
pub fn handles(method: &Method, path: &str) -> bool {
    match path {
        "/api/v1/content" => {
            [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method)
        }
        "/api/v1/content/pin" | "/api/v1/content/verify" | "/api/v1/reload" => true,
        _ => false,
    }
}

/// Runs a control request (one that [`handles`] accepted): parses it and
/// calls the operation in [`super::ops`].
pub async fn dispatch(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let q = query(&req);
    let get = |k: &str| param(&q, k).map(String::from);
    let need_url = || get("url").ok_or_else(|| ApiError::bad_request("missing ?url="));
    let r = match (req.method().clone(), req.uri().path()) {
        (Method::PUT, "/api/v1/content") => {
            let entry = publish(app, &q, req).await?;
            json(StatusCode::CREATED, &entry)
        }
        (Method::GET | Method::HEAD, "/api/v1/content") => {
            app.fetch(&need_url()?, req.method(), req.headers()).await
        }
        (Method::DELETE, "/api/v1/content") => {
            json(StatusCode::OK, &app.remove(&need_url()?).await?)
        }
        (Method::POST, "/api/v1/content/pin") => {
            let pinned = match get("pinned").as_deref() {
                None | Some("true" | "1") => true,
                Some("false" | "0") => false,
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "pinned must be true or false, not {v:?}"
                    )));
                }
            };
            json(StatusCode::OK, &app.pin(&need_url()?, pinned).await?)
        }
        (Method::POST, "/api/v1/content/verify") => json(StatusCode::OK, &app.verify().await),
        (Method::POST, "/api/v1/reload") => json(StatusCode::OK, &app.reload_config().await?),
        (m, p) => {
            let allow = match p {
                "/api/v1/content" => "GET, HEAD, PUT, DELETE",
                _ => "POST",
            };
            return Err(ApiError::method_not_allowed(
                format!("{m} is not allowed on {p}"),
                allow,
            ));
        }
    };
    Ok(r)
}

/// `PUT /api/v1/content?path=/p&priority=..&access=..&tag=..&content_type=..&pin=true`
/// with the bytes as the body.
async fn publish(
    app: &App,
    q: &[(String, String)],
    req: Request<Incoming>,
) -> Result<crate::catalog::Entry, ApiError> {
    let get = |k: &str| param(q, k).map(String::from);
    let meta = get("path")
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing ?path= (the URL path to publish under, e.g. /index.html)",
            )
        })
        .and_then(|path| {
            app.publish_meta(&PublishRequest {
                path,
                priority: get("priority"),
                access: get("access"),
                tags: q
                    .iter()
                    .filter(|(k, _)| k == "tag")
                    .map(|(_, v)| v.clone())
                    .collect(),
                content_type: get("content_type"),
                pin: matches!(get("pin").as_deref(), Some("true" | "1")),
            })
        });
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            // read the upload before answering, so the client sees the 400
            // instead of a broken pipe (bounded by the quota, like an upload)
            drain(req.into_body(), app.store.stats().max_bytes).await;
            return Err(e);
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(|e| format!("upload interrupted: {e}")));
    let blob = app.ingest(declared, body).await?;
    app.publish(blob, meta).await
}

async fn drain(mut body: Incoming, limit: u64) {
    let mut n = 0u64;
    while let Some(Ok(f)) = body.frame().await {
        n += f.data_ref().map(|d| d.len() as u64).unwrap_or(0);
        if n > limit {
            break;
        }
    }
}
