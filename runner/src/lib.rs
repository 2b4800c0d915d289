//! Volley's load engine: executors, steps and metrics, used by the `volley` CLI.
//!
//! # Layers
//! Modules depend only on modules in lower layers (or beside them in the same layer, as noted),
//! never upwards, so there are no cycles: `grep -n 'use crate::' runner/src/*.rs` shows it.
//! From the top:
//!
//! 1. [`local`]: `volley run`: an aggregator on 127.0.0.1 and its runners (agents).
//! 2. [`agent`]: one runner of a distributed run, from registration to the final report.
//! 3. [`aggregator_client`]: the HTTP side of the runner protocol; [`engine`]: one runner's
//!    share of a test (VUs, executors, feeders, steps).
//! 4. [`step`]: one step, compiled once and run per VU; it assembles `check`, `extract`,
//!    `custom_metrics` and `render`, where `check` and `custom_metrics` use `extract`, and all
//!    use `render`. Beside it, [`websocket`] (the `websocket` step kind, dispatched by `step`),
//!    which uses `check`, `extract`, `render` and `retry` (a step's retry policy, shared with
//!    `step`).
//! 5. `step_error` (why a step cannot be compiled) and `vu` (a VU's state): below everything
//!    that compiles or renders steps, which all use them; `step` re-exports them as
//!    `step::StepError` and `step::VuContext`.
//! 6. Leaves, using nothing else in the crate: [`cookies`] (used by `vu`, `extract`, `step`),
//!    [`executor`] (its arrival-rate timer is `pacing`, a leaf too), [`feeder`], [`summary`], [`exit`] (the exit codes), `transport` (the HTTP
//!    path: a VU's own connection for plain HTTP, reqwest for TLS; used by `vu` and `step`),
//!    `retry` (a step's retry policy), and [`signals`] (SIGTERM and Ctrl-C, for `volley run`
//!    and `volley agent`; it uses only `exit`).
//!
//! The `volley` binary (`main.rs`, `cli.rs`: the subcommands and their arguments;
//! `report_cli.rs`: `volley report` and the report flags; `kube_run.rs`: `volley kube run` and
//! `volley report --from-cluster`, the only code that talks to the Kubernetes API) sits on top
//! and uses this library only through its public modules.

pub mod agent;
pub mod aggregator_client;
pub mod engine;
pub mod executor;
pub mod exit;
pub mod feeder;
pub mod local;
pub mod signals;
pub mod summary;

mod check;
pub mod cookies;
mod custom_metrics;
mod extract;
mod pacing;
mod render;
mod retry;
pub mod step;
mod step_error;
mod transport;
mod vu;
pub mod websocket;
