//! Shared by the integration tests that run real `volley agent` processes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// Builds `volley` with `cargo build -p volley-runner --bin volley` (the cargo running the
/// tests, same target directory) once per test binary and returns its path, taken from cargo's
/// own JSON messages. A failing build fails the test.
pub fn volley_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let out = std::process::Command::new(cargo)
                .args([
                    "build",
                    "-p",
                    "volley-runner",
                    "--bin",
                    "volley",
                    "--message-format=json",
                ])
                .current_dir(&workspace)
                .stderr(Stdio::inherit())
                .output()
                .expect("cannot run cargo");
            assert!(
                out.status.success(),
                "building the volley binary failed: {}",
                out.status
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "volley")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo named no `volley` executable")
        })
        .clone()
}

/// Starts `volley agent` as runner `index` of `run` against the aggregator at `url`, with that
/// runner's own credential derived from the run's `token`, as a runner pod would get it. Its
/// stderr goes to the test's, so a failing test shows what the agent said.
#[allow(dead_code)] // not every test binary that shares this module starts agents
pub fn spawn_agent(
    volley: &Path,
    url: &str,
    run: &str,
    index: u32,
    token: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(volley)
        .args(["agent", "--aggregator", url, "--run", run, "--index"])
        .arg(index.to_string())
        .env(
            volley_core::protocol::TOKEN_ENV,
            volley_aggregator::server::runner_credential(token, index),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot start volley agent")
}
