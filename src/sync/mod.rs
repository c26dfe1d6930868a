//! Catalog sync between peers.
//!
//! - [`record`]: signed catalog records, the unit that travels (pure).
//! - [`catalog`]: the mesh catalog and its conflict rule (pure).
//! - [`recon`]: range-based set reconciliation of record ids, with its codec (pure).
//! - [`transfer`]: chunked, verified, resumable, multi-source content download.

pub mod catalog;
pub mod pace;
pub mod recon;
pub mod record;
pub mod transfer;
