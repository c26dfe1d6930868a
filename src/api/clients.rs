//! Clients, usage and quotas: a thin facade over the shaping task.
//!
//! - `GET /api/v1/clients`: every client (control socket only).
//! - `GET /api/v1/clients/{ip}`: one client's usage, quota, remaining bytes,
//!   whether it is throttled and the share it gets now. On the public port
//!   only to the mesh's own networks (a captive portal on the LAN).
//!   `{ip}` = `me` is the caller's own address (the status page uses it).
//! - `PUT /api/v1/clients/{ip}/quota` (control socket): `{"daily": "2GiB",
//!   "monthly": null}` sets this client's quotas, `{}` or `null` clears them
//!   (the configured ones apply again).
//! - `GET /captive-portal/api`: the RFC 8908 Captive Portal API for the
//!   caller's own address (`application/captive+json`).

use std::net::{IpAddr, Ipv4Addr};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

use super::{ApiError, App, Body, Caller, is_community_ip, json, respond};
use crate::config::ByteSize;

/// Does this module answer `path`?
pub fn handles(path: &str) -> bool {
    path == "/api/v1/clients" || path.starts_with("/api/v1/clients/") || path == CAPTIVE
}

const CAPTIVE: &str = "/captive-portal/api";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    #[serde(default)]
    daily: Option<ByteSize>,
    #[serde(default)]
    monthly: Option<ByteSize>,
}

pub async fn dispatch(
    app: &App,
    caller: Caller,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    if let Caller::Public(ip) = caller
        && !is_community_ip(ip)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "client information is only for the mesh's own networks",
        ));
    }
    if path == CAPTIVE {
        super::only_get(&req)?;
        return Ok(captive(app, caller));
    }
    let rest = path.trim_start_matches("/api/v1/clients");
    let rest = rest.trim_start_matches('/');
    let (ip, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if ip.is_empty() {
        super::only_get(&req)?;
        if caller != Caller::Control {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only the control socket lists every client; ask for one: /api/v1/clients/{ip}",
            ));
        }
        return Ok(json(StatusCode::OK, &app.shaping.status()));
    }
    let ip: Ipv4Addr = match (ip, caller) {
        ("me", Caller::Public(me)) => own_ipv4(me).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no usage on record for {me}: only IPv4 clients are shaped"),
            )
        })?,
        ("me", Caller::Control) => {
            return Err(ApiError::bad_request(
                "the control socket has no client address; ask for one: /api/v1/clients/{ip}",
            ));
        }
        (ip, _) => ip
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{ip:?} is not an IPv4 address")))?,
    };
    match (tail, req.method()) {
        ("", _) => {
            super::only_get(&req)?;
            Ok(json(StatusCode::OK, &app.client_status(ip)?))
        }
        ("quota", &Method::PUT) if caller == Caller::Control => {
            let body = Limited::new(req.into_body(), 4096)
                .collect()
                .await
                .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?
                .to_bytes();
            let q: Option<QuotaBody> = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "expected {{\"daily\": \"2GiB\", \"monthly\": \"30GiB\"}}: {e}"
                    ))
                })?
            };
            let (daily, monthly) = q.map_or((None, None), |q| {
                (q.daily.map(|b| b.0), q.monthly.map(|b| b.0))
            });
            let st = app.set_quota(ip, daily, monthly).await?;
            Ok(json(StatusCode::OK, &st))
        }
        ("quota", _) => Err(ApiError::method_not_allowed(
            "quotas are set with PUT through the control socket",
            "PUT",
        )),
        (t, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: /api/v1/clients/{ip}/{t}"),
        )),
    }
}

/// The IPv4 address of a caller, also when it arrives IPv4-mapped on an
/// IPv6 socket.
fn own_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// RFC 8908 §5: the caller is not held captive by meshnode (a portal such
/// as openNDS decides that); what meshnode adds is the bytes left.
fn captive(app: &App, caller: Caller) -> Response<Body> {
    let mut v = serde_json::json!({ "captive": false });
    if let Caller::Public(IpAddr::V4(ip)) = caller
        && let Some(c) = app.shaping.client(ip)
        && let Some(left) = c.remaining
    {
        v["bytes-remaining"] = left.into();
    }
    let mut r = respond(
        StatusCode::OK,
        "application/captive+json",
        serde_json::to_vec(&v).expect("json"),
    );
    r.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("private, no-store"),
    );
    r
}
