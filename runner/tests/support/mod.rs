//! Helpers the runner's integration tests share (each test binary uses some of them).

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use volley_core::manifest::parse_manifest;
use volley_core::validate::validate;
use volley_crds::LoadTest;

/// A fresh directory under the system temp dir, unique to this process and moment.
pub fn tempdir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir =
        std::env::temp_dir().join(format!("volley-test-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port on 127.0.0.1 nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `fut`, failing the test if it takes longer than `limit` (a hang).
pub async fn bounded<T, F: Future<Output = T>>(limit: Duration, fut: F) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("took longer than {limit:?}: the test hangs"))
}

/// Parses and validates a manifest (as `volley run` does), with `@BASE@` replaced by `base`.
pub fn manifest(yaml: &str, base: &str) -> LoadTest {
    valid_manifest(&yaml.replace("@BASE@", base))
}

/// Parses and validates a manifest as `volley run` does; a test's bad YAML panics with every
/// error and the text.
pub fn valid_manifest(yaml: &str) -> LoadTest {
    let lt = parse_manifest(yaml).unwrap_or_else(|e| panic!("bad manifest: {e}\n{yaml}"));
    if let Err(errors) = validate(&lt.spec) {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("invalid manifest:\n{}\n{yaml}", errors.join("\n"));
    }
    lt
}
