//! Volley's aggregator: where the runners of one test meet.
//!
//! It registers runners behind a start barrier, has runner 0 run `setup` and hands the values
//! to everyone, gives all runners one common start, keeps each runner's latest cumulative
//! report and merges them exactly (HdrHistograms add, counters add), judges thresholds on the
//! merged result continuously (abortOnFail) and at the end, and decides how the run ended.
//! `volley run` embeds it on 127.0.0.1; the operator serves it to runner pods.
//!
//! - [`run`]: one run's state machine, pure (time is an argument).
//! - [`end`]: how a finished run ended (phase, reason, message).
//! - [`series`]: the per-second series from cumulative snapshots.
//! - [`probe`]: the plateau windows of rate probes, from cumulative snapshots.
//! - [`summary`]: the summary document of a finished run (`summary.json`).
//! - [`server`]: the HTTP routes of `docs/reference.md` §3 over all runs.

pub mod end;
pub mod probe;
pub mod run;
pub mod series;
pub mod server;
pub mod summary;

pub use end::{RunEnd, RunnerFailure};
pub use run::{RunConfig, RunLifecycle, RunState, RunView};
pub use server::Aggregator;
