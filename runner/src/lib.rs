//! Volley's load engine: executors, steps and metrics, used by the `volley` CLI.

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
mod extract;
mod render;
pub mod step;
mod step_error;
mod vu;
