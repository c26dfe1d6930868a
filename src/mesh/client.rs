//! Node-to-node HTTP: request signing and a small client.
//!
//! Every node-to-node request carries the caller's node id and an Ed25519
//! signature over the method, the path (with query) and the SHA-256 of the
//! body (docs/PROTOCOL.md "Authentication"):
//!
//! ```text
//! Mesh-Node: <64 hex: caller's public key>
//! Mesh-Signature: <128 hex: sign("meshnode-http-1\n" METHOD "\n" PATH "\n" hex(sha256(body)))>
//! ```
//!
//! No timestamp is signed: routers often boot without a clock, and every
//! signed request is either a read or idempotent (a replayed registration
//! re-registers the same node; replayed records are already known), so a
//! replay gains nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use crate::identity::Identity;
use crate::node::NodeId;

/// Header with the caller's node id.
pub const NODE_HEADER: &str = "mesh-node";
/// Header with the request signature.
pub const SIG_HEADER: &str = "mesh-signature";
/// Blob requests: how many more nodes may relay this request.
pub const HOPS_HEADER: &str = "mesh-hops";
/// Blob requests: a random id; a node refuses to relay an id twice (loops).
pub const REQUEST_ID_HEADER: &str = "mesh-request-id";
/// Hops a blob request may be relayed when the asked node lacks the blob.
pub const RELAY_HOPS: u8 = 4;
/// Content requests: the nodes a forwarded request passed (hex ids, comma
/// separated); a node never forwards to one of them.
pub const PATH_HEADER: &str = "mesh-path";
/// Responses: node-to-node hops the content travelled to get here (0 when
/// the answering node held it).
pub const HOPS_TAKEN_HEADER: &str = "x-meshnode-hops";
/// Responses: the node that held the content.
pub const SERVED_BY_HEADER: &str = "x-meshnode-served-by";
/// Hops a routed content request may take (a community mesh's diameter,
/// with margin).
pub const CONTENT_HOPS: u8 = 8;

/// A fresh request id.
pub fn request_id() -> String {
    let mut b = [0u8; 8];
    let _fallback_zero_is_still_unique_enough = getrandom::fill(&mut b);
    hex::encode(b)
}

/// The bytes a request signature covers.
pub fn signed_bytes(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(body));
    format!("meshnode-http-1\n{method}\n{path}\n{digest}").into_bytes()
}

/// Checks a request's signature headers; returns the caller.
pub fn verify_request(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<NodeId> {
    let node = NodeId::from_hex(headers.get(NODE_HEADER)?.to_str().ok()?)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(headers.get(SIG_HEADER)?.to_str().ok()?, &mut sig).ok()?;
    let msg = signed_bytes(method.as_str(), path_and_query, body);
    crate::identity::verify(&node, &msg, &sig).then_some(node)
}

/// A failed node-to-node request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect or the connection broke.
    #[error("{0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// HTTP-level failure.
    #[error("{0}: {1}")]
    Http(SocketAddr, String),
    /// No answer in time.
    #[error("{0}: timed out")]
    Timeout(SocketAddr),
    /// The peer answered with an error status.
    #[error("{0}: status {1}")]
    Status(SocketAddr, StatusCode),
}

/// Signs and sends requests to peers. One connection per request: requests
/// are few and large (records, 256 KiB chunks), and a fresh connection never
/// outlives a peer that vanished.
#[derive(Debug, Clone)]
pub struct MeshClient {
    id: Arc<Identity>,
    timeout: Duration,
}

/// Time to establish a connection to a peer (links are LAN or radio-LAN).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest response body accepted (a chunk is 256 KiB; record batches are capped).
pub const MAX_RESPONSE: usize = 8 << 20;

impl MeshClient {
    /// A client signing as `id`.
    pub fn new(id: Arc<Identity>) -> Self {
        Self {
            id,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends a signed request; returns status and body (any status).
    pub async fn request(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.request_with(to, method, path, body, &[]).await
    }

    /// [`MeshClient::request`] with extra (unsigned) headers.
    pub async fn request_with(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(
            self.timeout,
            self.request_inner(to, method, path, body, headers),
        )
        .await
        .map_err(|_| ClientError::Timeout(to))?
    }

    async fn request_inner(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let resp = self.send(to, method, path, body, headers).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ClientError::Http(to, e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends a signed `GET` and returns the response as soon as its head
    /// arrives; the body streams (no size limit, no body timeout: the caller
    /// passes it on as it comes).
    pub async fn stream(
        &self,
        to: SocketAddr,
        path: &str,
        headers: &[(&'static str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        tokio::time::timeout(
            self.timeout,
            self.send(to, Method::GET, path, Vec::new(), headers),
        )
        .await
        .map_err(|_| ClientError::Timeout(to))?
    }

    /// Connects, signs and sends one request; returns when the response head
    /// has arrived.
    async fn send(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&'static str, String)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        // a peer that went away usually shows as a connect that never
        // completes: give up on it long before the whole request's timeout
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(to))
            .await
            .map_err(|_| ClientError::Timeout(to))?
            .map_err(|e| ClientError::Io(to, e))?;
        let _nodelay_is_an_optimisation = stream.set_nodelay(true);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(to, e.to_string()))?;
        tokio::spawn(async move {
            let _closed = conn.await;
        });
        let sig = self.id.sign(&signed_bytes(method.as_str(), path, &body));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, to.to_string())
            .header(NODE_HEADER, self.id.node_id().to_hex())
            .header(SIG_HEADER, hex::encode(sig));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Http(to, e.to_string()))?;
        send.send_request(req)
            .await
            .map_err(|e| ClientError::Http(to, e.to_string()))
    }

    /// Like [`MeshClient::request`] but only a 200 counts.
    pub async fn ok(
        &self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Bytes, ClientError> {
        match self.request(to, method, path, body).await? {
            (StatusCode::OK, b) => Ok(b),
            (s, _) => Err(ClientError::Status(to, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_binds_method_path_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::load_or_create(dir.path()).unwrap();
        let body = b"hello";
        let mut h = HeaderMap::new();
        h.insert(NODE_HEADER, id.node_id().to_hex().parse().unwrap());
        let sig = id.sign(&signed_bytes("POST", "/mesh/v1/recon", body));
        h.insert(SIG_HEADER, hex::encode(sig).parse().unwrap());
        assert_eq!(
            verify_request(&Method::POST, "/mesh/v1/recon", &h, body),
            Some(id.node_id())
        );
        assert_eq!(
            verify_request(&Method::GET, "/mesh/v1/recon", &h, body),
            None
        );
        assert_eq!(verify_request(&Method::POST, "/mesh/v1/x", &h, body), None);
        assert_eq!(
            verify_request(&Method::POST, "/mesh/v1/recon", &h, b"x"),
            None
        );
        h.remove(SIG_HEADER);
        assert_eq!(
            verify_request(&Method::POST, "/mesh/v1/recon", &h, body),
            None
        );
    }
}
