//! The metrics model: what a runner records, what `volley run` summarises, and what the
//! aggregator merges. Pure data in, data out: no I/O, no clocks, no async.
//!
//! - [`histogram`]: latency histograms with the bounds of `docs/reference.md` §4.4, recording
//!   into them, and exact histogram arithmetic.
//! - [`model`]: [`model::RunMetrics`], everything a run measured, cumulative since its start,
//!   and its exact merge.
//! - [`custom`]: custom metrics read from responses (trends, counters, gauges), recorded
//!   per step and merged exactly.
//! - [`error`]: [`error::MetricsError`], why metrics could not be merged, compared, encoded or
//!   decoded.
//! - [`status`]: status rows and display strings for merged data.
//! - [`series`]: one point of the per-second series from two cumulative snapshots.
//! - [`websocket`]: what `websocket` steps measure besides their handshakes.
//!
//! Threshold evaluation on these metrics lives with the threshold language
//! ([`crate::threshold::evaluate`]); the report a runner sends them in lives with the protocol
//! ([`crate::protocol::report`]).

pub mod custom;
pub mod error;
pub mod histogram;
pub mod model;
pub mod series;
pub mod status;
#[cfg(test)]
pub(crate) mod test_support;
pub mod websocket;
