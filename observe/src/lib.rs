//! Server-side metrics in the verdict: the `spec.observe.prometheus` queries, run after the
//! load over the run's exact window (start barrier and setup excluded).
//!
//! The pure parts are plain functions: [`promql::substitute`] fills `$__range`, `$__start` and
//! `$__end` from the window, and [`response`] maps a Prometheus HTTP API answer to one value
//! (one series), or to an error that says what went wrong (no data, several series named by
//! their labels, an error Prometheus returned). [`Prometheus`] is the HTTP edge: instant and
//! range queries with a timeout, credentials that never appear in a message, and [`observe`]
//! runs every query of a spec into an [`Observation`]. A query that fails is a result with an
//! error, never a failed run: the load results do not depend on Prometheus.

pub mod client;
pub mod promql;
pub mod response;

pub use client::{Credentials, Prometheus, observe};
pub use response::QueryError;
pub use volley_core::observe::{Observation, ObservedPoint, ObservedSeries, Window};
