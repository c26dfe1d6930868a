//! Catalog sync between peers: set reconciliation ([`recon`]) now; record
//! exchange and chunked content transfer follow (issue #3).

pub mod recon;
