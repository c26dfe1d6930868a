//! The bootstrap registry a `broadcast = true` node keeps for others, and
//! the JSON bodies of the bootstrap API (docs/PROTOCOL.md "Bootstrap").
//!
//! A node registers itself (`POST /api/bootstrap/register`, signed), renews
//! the registration before its TTL runs out, and may leave early
//! (`DELETE /api/bootstrap/unregister`). `GET /api/bootstrap/discover`
//! answers with the bootstrap node itself and every live registration that
//! carries addresses. Only nodes that broadcast register, and the registry
//! stores what a node said about itself, never the address its request came
//! from, so a silent node's address cannot leak through a bootstrap node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gossip::wire::{MAX_ADDRS, MAX_NAME};
use crate::node::NodeId;

/// Most registrations kept; a bootstrap node on a router must stay small.
pub const MAX_REGISTRATIONS: usize = 4096;

/// `POST /api/bootstrap/register` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// `CALLSIGN-label`.
    pub name: String,
    /// HTTP listeners the node broadcasts.
    pub addrs: Vec<SocketAddr>,
}

/// One peer in a discover answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Hex node id.
    pub node: String,
    /// `CALLSIGN-label`.
    pub name: String,
    /// HTTP listeners.
    pub addrs: Vec<SocketAddr>,
    /// Serves this API.
    pub is_bootstrap: bool,
}

/// `GET /api/bootstrap/discover` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discover {
    /// Live registrations (addresses always present) and the bootstrap node.
    pub peers: Vec<PeerEntry>,
    /// Seconds a registration lives unless renewed.
    pub ttl_s: u64,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Empty or too many addresses, or a name that is too long.
    #[error("{0}")]
    Invalid(String),
    /// The registry is full.
    #[error("registry full ({MAX_REGISTRATIONS} nodes)")]
    Full,
}

#[derive(Debug, Clone)]
struct Registration {
    name: String,
    addrs: Vec<SocketAddr>,
    expires_at: u64,
}

/// Registrations by node; time is passed in (ms, monotonic).
#[derive(Debug)]
pub struct Registry {
    ttl: Duration,
    regs: HashMap<NodeId, Registration>,
}

impl Registry {
    /// An empty registry whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            regs: HashMap::new(),
        }
    }

    /// Registers or renews `node`.
    pub fn register(&mut self, node: NodeId, r: Register, now: u64) -> Result<(), RegisterError> {
        if r.addrs.is_empty() || r.addrs.len() > MAX_ADDRS {
            return Err(RegisterError::Invalid(format!(
                "addrs: 1 to {MAX_ADDRS} addresses of a node that broadcasts"
            )));
        }
        if r.name.is_empty() || r.name.len() > MAX_NAME {
            return Err(RegisterError::Invalid(format!(
                "name: 1 to {MAX_NAME} characters"
            )));
        }
        self.expire(now);
        if !self.regs.contains_key(&node) && self.regs.len() >= MAX_REGISTRATIONS {
            return Err(RegisterError::Full);
        }
        self.regs.insert(
            node,
            Registration {
                name: r.name,
                addrs: r.addrs,
                expires_at: now + self.ttl.as_millis() as u64,
            },
        );
        Ok(())
    }

    /// Removes `node`; true if it was registered.
    pub fn unregister(&mut self, node: &NodeId) -> bool {
        self.regs.remove(node).is_some()
    }

    /// Drops expired registrations.
    pub fn expire(&mut self, now: u64) {
        self.regs.retain(|_, r| r.expires_at > now);
    }

    /// Live registrations, excluding `asker`.
    pub fn discover(&mut self, asker: Option<&NodeId>, now: u64) -> Vec<PeerEntry> {
        self.expire(now);
        let mut v: Vec<PeerEntry> = self
            .regs
            .iter()
            .filter(|(n, _)| Some(*n) != asker)
            .map(|(n, r)| PeerEntry {
                node: n.to_hex(),
                name: r.name.clone(),
                addrs: r.addrs.clone(),
                is_bootstrap: false,
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// Seconds a registration lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Live registrations.
    pub fn len(&self) -> usize {
        self.regs.len()
    }

    /// None registered.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(addr: &str) -> Register {
        Register {
            name: "N0CALL-x".into(),
            addrs: vec![addr.parse().unwrap()],
        }
    }

    #[test]
    fn register_renew_expire_unregister() {
        let mut r = Registry::new(Duration::from_secs(10));
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        r.register(a, reg("10.0.0.1:8080"), 0).unwrap();
        r.register(b, reg("10.0.0.2:8080"), 0).unwrap();
        assert_eq!(r.discover(Some(&a), 1).len(), 1, "the asker is left out");
        r.register(a, reg("10.0.0.1:8080"), 9_000).unwrap(); // renewed
        assert_eq!(r.discover(None, 10_001).len(), 1, "b expired, a renewed");
        assert!(r.unregister(&a));
        assert!(r.discover(None, 10_002).is_empty());
    }

    #[test]
    fn silent_or_bad_registrations_are_refused() {
        let mut r = Registry::new(Duration::from_secs(10));
        let no_addrs = Register {
            name: "N0CALL-x".into(),
            addrs: vec![],
        };
        assert!(matches!(
            r.register(NodeId([1; 32]), no_addrs, 0),
            Err(RegisterError::Invalid(_))
        ));
        let mut long = reg("10.0.0.1:1");
        long.name = "x".repeat(MAX_NAME + 1);
        assert!(r.register(NodeId([1; 32]), long, 0).is_err());
        assert!(r.is_empty());
    }
}
