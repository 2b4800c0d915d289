//! `volley-operator`: the Kubernetes controller for LoadTests.
//!
//! The controller itself is not built yet; until then this binary says so and exits non-zero,
//! so a deployment of it fails loudly instead of silently doing nothing.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "volley-operator {}: the controller is not implemented yet; use `volley run` to run LoadTests locally",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
