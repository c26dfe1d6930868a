//! Usage analytics: what the node served, from where, to whom, and what it
//! saved the community's uplink; rolled up per hour and per day in SQLite.
//!
//! - [`rollup`]: events and the hour they add up to (pure);
//! - [`report`]: the report and its table, JSON, CSV and Markdown forms (pure);
//! - [`db`]: hours and days on disk, retention, the report query;
//! - [`task`]: the one task that owns all of it; the HTTP front records
//!   through its [`Analytics`] handle.
pub mod db;
pub mod report;
pub mod rollup;
pub mod task;

pub use report::{Format, Report};
pub use rollup::{Event, Source};
pub use task::{Analytics, spawn};
