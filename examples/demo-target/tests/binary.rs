//! Tests of the `volley-demo-target` binary, run as a subprocess.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_volley-demo-target");

/// Starts the binary and returns it with the base URL from its first line.
async fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        BufReader::new(stdout).lines().next_line().await
    })
    .await
    .expect("listening line within 10s")
    .unwrap()
    .expect("a line on stdout");
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

#[tokio::test]
async fn binary_prints_listening_line_and_serves() {
    let (mut child, url) = spawn(&["--listen", "127.0.0.1:0", "--job-delay", "1.5s"]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "{url}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = client.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let config: serde_json::Value = client
        .get(format!("{url}/admin/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["jobDelay"], "1s 500ms");

    child.kill().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn binary_stops_cleanly_on_sigterm() {
    let (mut child, _url) = spawn(&["--listen", "127.0.0.1:0"]).await;
    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn binary_rejects_bad_arguments() {
    for args in [
        &["--fail-rate", "2"][..],
        &["--delay", "soon"],
        &["--listen", "nowhere"],
    ] {
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            Command::new(BIN).args(args).output(),
        )
        .await
        .expect("exits within 10s")
        .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
