//! A client for the control socket, shared by `meshctl` and the tests.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Body, full};

/// Bytes read from a file per upload frame.
const UPLOAD_FRAME: usize = 256 * 1024;

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("meshnode is not running (no daemon at {0})")]
    NotRunning(PathBuf),
    /// The socket refused us.
    #[error("permission denied on {0}: run as root or as a member of group meshadmin")]
    PermissionDenied(PathBuf),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The connection broke.
    #[error("control connection: {0}")]
    Http(#[from] hyper::Error),
    /// Local I/O failed (a file to read or write).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Options of a publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// URL path, e.g. `/index.html`.
    pub path: String,
    /// `1`–`4` or a priority name.
    pub priority: Option<String>,
    /// `public`, `community` or `private`.
    pub access: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// MIME type; guessed by the daemon when absent.
    pub content_type: Option<String>,
    /// Pin against eviction.
    pub pin: bool,
}

/// A connection factory for one control socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// Sends one request on a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning(self.socket.clone())
                }
                io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied(self.socket.clone())
                }
                _ => ClientError::Io(e),
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "control connection closed");
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json")
            .body(body)
            .expect("valid request");
        Ok(sender.send_request(req).await?)
    }

    /// Sends a request and returns the JSON answer, or the daemon's error.
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body,
    ) -> Result<serde_json::Value, ClientError> {
        let resp = self.send(method, path_and_query, body).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        if status.is_success() {
            Ok(v)
        } else {
            Err(api_error(status, &v))
        }
    }

    /// `GET` returning JSON.
    pub async fn get(&self, path_and_query: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, path_and_query, full("")).await
    }

    /// Publishes a file's bytes, streamed from disk.
    pub async fn publish_file(
        &self,
        file: &Path,
        opts: &PublishOptions,
    ) -> Result<serde_json::Value, ClientError> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        let frames = stream::unfold(Some(f), |f| async move {
            let mut f = f?;
            let mut buf = vec![0u8; UPLOAD_FRAME];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        self.call(
            Method::PUT,
            &publish_query(opts),
            StreamBody::new(frames).boxed(),
        )
        .await
    }

    /// Publishes bytes from memory.
    pub async fn publish_bytes(
        &self,
        data: impl Into<Bytes>,
        opts: &PublishOptions,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Method::PUT, &publish_query(opts), full(data))
            .await
    }

    /// Fetches content by URL (any access level) into `out`; returns the byte count.
    pub async fn fetch(
        &self,
        url: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("url", url)
            .finish();
        let resp = self
            .send(Method::GET, &format!("/api/v1/content?{q}"), full(""))
            .await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).trim().to_string())
            });
            return Err(api_error(status, &v));
        }
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).await?;
                n += data.len() as u64;
            }
        }
        out.flush().await?;
        Ok(n)
    }

    /// `url=` query helper for the simple content commands.
    pub async fn with_url(
        &self,
        method: Method,
        path: &str,
        url: &str,
        extra: &[(&str, &str)],
    ) -> Result<serde_json::Value, ClientError> {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("url", url);
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        self.call(method, &format!("{path}?{}", q.finish()), full(""))
            .await
    }
}

fn publish_query(o: &PublishOptions) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("path", &o.path);
    if let Some(p) = &o.priority {
        q.append_pair("priority", p);
    }
    if let Some(a) = &o.access {
        q.append_pair("access", a);
    }
    for t in &o.tags {
        q.append_pair("tag", t);
    }
    if let Some(ct) = &o.content_type {
        q.append_pair("content_type", ct);
    }
    if o.pin {
        q.append_pair("pin", "true");
    }
    format!("/api/v1/content?{}", q.finish())
}

fn api_error(status: StatusCode, v: &serde_json::Value) -> ClientError {
    let message = v
        .get("error")
        .and_then(|e| e.as_str())
        .map(String::from)
        .unwrap_or_else(|| match v {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            _ => status.to_string(),
        });
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}
