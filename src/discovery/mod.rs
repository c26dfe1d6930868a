//! Peer discovery: mDNS on the local links ([`mdns`]), and the bootstrap
//! registry of broadcasting nodes ([`bootstrap`]). Static peers, bootstrap
//! clients and the re-dialling of known peers are driven by [`crate::mesh`].

pub mod bootstrap;
pub mod mdns;
