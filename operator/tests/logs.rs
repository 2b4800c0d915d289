//! The operator binary's own log output, read from a pipe as a log collector reads it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Stdio};

/// Logs written to a pipe carry no ANSI colour codes. The operator is started without a
/// cluster: it logs its start, fails to configure a Kubernetes client, logs that and exits.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("volley-operator-logs-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_volley-operator"))
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("VOLLEY_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("volley-operator starting"), "{logs}");
    assert!(!logs.contains('\x1b'), "colour codes in a pipe: {logs:?}");
}
