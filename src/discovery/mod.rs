//! Peer discovery: mDNS on the local links ([`mdns`]), bootstrap nodes and
//! static peers (driven by [`crate::mesh`]).

pub mod mdns;
