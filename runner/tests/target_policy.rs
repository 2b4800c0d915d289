//! The cluster administrator's target allow-list (`--allowed-targets`): a run whose targets are
//! outside it sends nothing to them. `volley run` end to end (the real binary, the demo target
//! on 127.0.0.1 in this process, whose counters prove that no request arrived), and steps
//! in-process for what only a send can reveal (per-iteration hosts, redirects).
//!
//! Every address used is 127.0.0.1; the allowed lists name 10.0.0.0/8 or other ports, so
//! nothing is ever sent anywhere else either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use volley_core::target_policy::TargetPolicy;
use volley_crds::spec::{ErrorKind, Step, Target};
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::step::{CompiledStep, VuContext, build_client, run_step};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const LIMIT: Duration = Duration::from_secs(60);

async fn demo() -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .expect("start demo target")
}

/// `volley ARGS` with a clean environment for the variables these tests use, bounded.
async fn volley(args: &[&str], env: &[(&str, &str)]) -> (Output, String, String) {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("VOLLEY_ALLOWED_TARGETS")
        .env_remove("VOLLEY_TP_HOST")
        .kill_on_drop(true);
    for proxy in PROXY_VARS {
        cmd.env_remove(proxy);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("volley took longer than {LIMIT:?}"))
        .expect("run volley");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Every proxy variable reqwest (and curl) honour, in both spellings.
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A "proxy" on 127.0.0.1 that counts the connections it accepts and answers each with an
/// empty `200 OK`, the way an attacker's proxy would let a run look healthy.
struct CountingProxy {
    addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    async fn start() -> CountingProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        CountingProxy {
            addr,
            connections,
            task,
        }
    }

    fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn manifest(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("lt.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The base URL is the demo target on 127.0.0.1; only 10.0.0.0/8 is allowed: the static check
/// refuses the run up front, naming the field and the host, and the target sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_outside_the_list_exits_1_and_sends_nothing() {
    let target = demo().await;
    let dir = tempdir("base");
    let file = manifest(
        &dir,
        &format!(
            r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: outside}}
spec:
  target: {{baseUrl: "{}"}}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 1
      iterations: 5
      steps:
        - request: {{url: /api/items}}
"#,
            target.base_url()
        ),
    );
    let (out, stdout, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--allowed-targets",
            "10.0.0.0/8",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.contains("spec.target.baseUrl"), "{stderr}");
    let host = format!("127.0.0.1:{}", target.addr().port());
    assert!(stderr.contains(&host), "{stderr}");
    assert!(stderr.contains("10.0.0.0/8"), "{stderr}");
    assert_eq!(target.stats().requests, 0);

    // The same list from the environment (as in a runner pod) does the same.
    let (out, _, stderr) = volley(
        &["run", file.to_str().unwrap(), "--quiet"],
        &[("VOLLEY_ALLOWED_TARGETS", "10.0.0.0/8")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("spec.target.baseUrl"), "{stderr}");
    assert_eq!(target.stats().requests, 0);

    // A bad list is an error of its own, before anything runs.
    let (out, _, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--allowed-targets",
            "http://10.0.0.1",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a URL"), "{stderr}");
    assert_eq!(target.stats().requests, 0);

    // Allowed by port: the run goes ahead (the control that the target does answer).
    let (out, stdout, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--allowed-targets",
            &format!("10.0.0.0/8,{host}"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(target.stats().requests, 5);
    target.shutdown().await;
}

/// The host comes from `${env:...}`: the static check cannot see it and lets the manifest
/// through, the runner resolves it when compiling, refuses it before any load, and the run
/// exits 1 naming the step's URL field (not the host: it holds an environment value). The
/// target sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_templated_host_passes_the_static_check_but_is_refused_before_sending() {
    let target = demo().await;
    let dir = tempdir("env");
    let file = manifest(
        &dir,
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: env-host}
spec:
  target: {baseUrl: "http://10.0.0.1:9"}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 2
      iterations: 5
      steps:
        - name: items
          request: {url: "http://${env:VOLLEY_TP_HOST}/api/items"}
"#,
    );
    let host = format!("127.0.0.1:{}", target.addr().port());
    let out_json = dir.join("summary.json");
    let (out, stdout, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--out",
            out_json.to_str().unwrap(),
            "--runners",
            "2",
            "--allowed-targets",
            "10.0.0.0/8",
        ],
        &[("VOLLEY_TP_HOST", &host)],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("spec.scenarios[0].steps[0].request.url"),
        "{all}"
    );
    // `${env:...}` values are secrets: the host is not shown (issue #19, finding 9).
    assert!(all.contains("not shown") && !all.contains(&host), "{all}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    assert_eq!(summary["phase"], "Error", "{summary}");
    assert_eq!(summary["reason"], "TargetNotAllowed", "{summary}");
    assert_eq!(target.stats().requests, 0);
    target.shutdown().await;
}

/// The host comes from a feeder row, so it is only known per iteration: every request is
/// refused right before its send, counted as a failed request of kind `blocked`, and the
/// target sees nothing. The error-rate threshold turns that into exit 99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_iteration_host_is_refused_at_send_time_as_blocked() {
    let target = demo().await;
    let dir = tempdir("feeder");
    let host = format!("127.0.0.1:{}", target.addr().port());
    std::fs::write(dir.join("hosts.csv"), format!("host\n{host}\n")).unwrap();
    let file = manifest(
        &dir,
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: feeder-host}
spec:
  target: {baseUrl: "http://10.0.0.1:9"}
  data:
    - {name: hosts, file: hosts.csv}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 1
      iterations: 4
      steps:
        - name: items
          request: {url: "http://${hosts.host}/api/items"}
          retry: {attempts: 3, backoff: 10ms}
  thresholds:
    - "error_rate < 1%"
"#,
    );
    let out_json = dir.join("summary.json");
    let (out, stdout, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--out",
            out_json.to_str().unwrap(),
            "--allowed-targets",
            "10.0.0.0/8",
        ],
        &[],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(99),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("blocked"), "{stdout}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    let m = &summary["metrics"];
    // One refused request per iteration: never retried, nothing sent.
    assert_eq!(m["requests"], 4, "{m}");
    assert_eq!(m["failures"], 4, "{m}");
    assert_eq!(m["errorsByKind"]["blocked"], 4, "{m}");
    assert_eq!(m["dataSentBytes"].as_u64().unwrap_or(0), 0, "{m}");
    assert_eq!(target.stats().requests, 0);
    target.shutdown().await;
}

fn step(yaml: &str) -> Step {
    serde_norway::from_str(yaml).unwrap()
}

fn target(base: &str) -> Target {
    Target {
        base_url: base.to_string(),
        timeout: volley_crds::Duration::from_secs(5),
        ..Target::default()
    }
}

/// A literal URL outside the list cannot be restricted: the engine fails before the load.
#[test]
fn a_literal_url_outside_the_list_cannot_be_compiled_into_a_restricted_step() {
    let policy = Arc::new(TargetPolicy::parse("10.0.0.0/8").unwrap());
    let t = target("http://10.0.0.1");
    let mut ok = CompiledStep::compile(&step("request: {url: /x}"), &t, Path::new(".")).unwrap();
    assert!(ok.restrict(&policy).is_ok());
    let mut bad = CompiledStep::compile(
        &step("request: {url: 'http://127.0.0.1:9/x'}"),
        &t,
        Path::new("."),
    )
    .unwrap();
    let err = bad.restrict(&policy).unwrap_err();
    assert_eq!(err.target, "127.0.0.1:9");
    // Sleeps have no target.
    let mut sleep = CompiledStep::compile(&step("sleep: 1ms"), &t, Path::new(".")).unwrap();
    assert!(sleep.restrict(&policy).is_ok());
}

/// A host from `${setup.NAME}`: refused at send, no exchange at all, kind `blocked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_value_host_is_refused_without_an_exchange() {
    let demo = demo().await;
    let policy = Arc::new(TargetPolicy::parse("10.0.0.0/8").unwrap());
    let t = target("http://10.0.0.1");
    let mut compiled = CompiledStep::compile(
        &step("request: {url: 'http://${setup.host}/api/items'}"),
        &t,
        Path::new("."),
    )
    .unwrap();
    compiled.restrict(&policy).unwrap();
    let setup = BTreeMap::from([(
        "host".to_string(),
        format!("127.0.0.1:{}", demo.addr().port()),
    )]);
    let mut ctx = VuContext::new(0, 0, Arc::new(setup));
    let client = build_client(&t).unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        run_step(&compiled, &client, &mut ctx, Instant::now()),
    )
    .await
    .unwrap();
    assert_eq!(outcome.error, Some(ErrorKind::Blocked));
    assert!(outcome.samples.is_empty());
    assert_eq!(demo.stats().requests, 0);

    // Without a policy the same step does reach the target (the control).
    let open = CompiledStep::compile(
        &step("request: {url: 'http://${setup.host}/api/items'}"),
        &t,
        Path::new("."),
    )
    .unwrap();
    let outcome = run_step(&open, &client, &mut ctx, Instant::now()).await;
    assert_eq!(outcome.error, None);
    assert_eq!(demo.stats().requests, 1);
    demo.shutdown().await;
}

/// An allowed host that redirects to a host outside the list: the redirect is answered, the
/// hop is not followed, the step fails `blocked`, and the other host sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_host_outside_the_list_is_not_followed() {
    let demo = demo().await;
    let forbidden = format!("{}/api/items", demo.base_url());
    let app = axum::Router::new().route(
        "/go",
        axum::routing::get(move || {
            let to = forbidden.clone();
            async move { (axum::http::StatusCode::FOUND, [("location", to)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let base = format!("http://127.0.0.1:{port}");
    let t = target(&base);
    let policy = Arc::new(TargetPolicy::parse(&format!("127.0.0.1:{port}")).unwrap());
    let mut compiled =
        CompiledStep::compile(&step("request: {url: /go}"), &t, Path::new(".")).unwrap();
    compiled.restrict(&policy).unwrap();
    let client = build_client(&t).unwrap();
    let mut ctx = VuContext::new(0, 0, Arc::new(BTreeMap::new()));
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        run_step(&compiled, &client, &mut ctx, Instant::now()),
    )
    .await
    .unwrap();
    assert_eq!(outcome.error, Some(ErrorKind::Blocked));
    assert_eq!(outcome.samples.len(), 1);
    assert_eq!(outcome.samples[0].status, Some(302));
    assert_eq!(outcome.samples[0].error, Some(ErrorKind::Blocked));
    assert_eq!(demo.stats().requests, 0);
    server.abort();
    demo.shutdown().await;
}

/// Issue #19, finding 1: proxy variables in the runner's environment (here every spelling,
/// pointing at a counting listener) must not divert anything. `volley run --runners 2` starts
/// two `volley agent` processes, which inherit the environment: neither their load requests
/// nor their calls to the aggregator (with the run's bearer token) may reach the proxy, and
/// the allowed target gets every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_divert_load_or_the_protocol() {
    let target = demo().await;
    let proxy = CountingProxy::start().await;
    let dir = tempdir("proxy");
    let file = manifest(
        &dir,
        &format!(
            r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: proxied}}
spec:
  target: {{baseUrl: "{}"}}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 2
      iterations: 10
      steps:
        - request: {{url: /api/items}}
  thresholds:
    - "error_rate < 1%"
"#,
            target.base_url()
        ),
    );
    let host = format!("127.0.0.1:{}", target.addr().port());
    let proxy_url = format!("http://{}", proxy.addr);
    let mut env: Vec<(&str, &str)> = PROXY_VARS
        .iter()
        .filter(|v| !v.eq_ignore_ascii_case("no_proxy"))
        .map(|v| (*v, proxy_url.as_str()))
        .collect();
    // An empty NO_PROXY exempts nothing (not even loopback).
    env.push(("NO_PROXY", ""));
    let out_json = dir.join("summary.json");
    let (out, stdout, stderr) = volley(
        &[
            "run",
            file.to_str().unwrap(),
            "--quiet",
            "--runners",
            "2",
            "--out",
            out_json.to_str().unwrap(),
            "--allowed-targets",
            &host,
        ],
        &env,
    )
    .await;
    assert_eq!(
        proxy.connections(),
        0,
        "the proxy was used; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    assert_eq!(summary["metrics"]["requests"], 10, "{summary}");
    assert_eq!(summary["metrics"]["failures"], 0, "{summary}");
    assert_eq!(target.stats().requests, 10);
    let _ = std::fs::remove_dir_all(&dir);
    target.shutdown().await;
}

/// Issue #19, finding 8: a `Host` header sends a request to another virtual host behind an
/// allowed address. Under a list that allows only the target's own address, a foreign `Host`
/// header from `${env:...}` (invisible to the static check) is refused before each send and
/// counted as `blocked`, and the target sees nothing; a literal one is refused up front,
/// naming the header field. The control: the allowed host in the header goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_blocked() {
    let target = demo().await;
    let dir = tempdir("host-header");
    let host = format!("127.0.0.1:{}", target.addr().port());
    let yaml = |header: &str| {
        format!(
            r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: host-header}}
spec:
  target: {{baseUrl: "{}"}}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 1
      iterations: 4
      steps:
        - name: items
          request:
            url: /api/items
            headers: {{Host: "{header}"}}
          retry: {{attempts: 3, backoff: 10ms}}
"#,
            target.base_url()
        )
    };
    let run = |file: PathBuf, out_json: PathBuf, env: Vec<(&'static str, String)>| {
        let host = host.clone();
        async move {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            volley(
                &[
                    "run",
                    file.to_str().unwrap(),
                    "--quiet",
                    "--out",
                    out_json.to_str().unwrap(),
                    "--allowed-targets",
                    &host,
                ],
                &env,
            )
            .await
        }
    };
    let out_json = dir.join("summary.json");

    // From the environment: known only to the runner, refused at each send.
    let file = manifest(&dir, &yaml("${env:VOLLEY_TP_HOST}"));
    let (out, stdout, stderr) = run(
        file.clone(),
        out_json.clone(),
        vec![("VOLLEY_TP_HOST", "internal.other-team.svc".into())],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "no threshold: the run itself completes; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    let m = &summary["metrics"];
    assert_eq!(m["requests"], 4, "{m}");
    assert_eq!(m["errorsByKind"]["blocked"], 4, "never retried: {m}");
    assert_eq!(target.stats().requests, 0, "nothing reached the target");

    // The control: the header names the allowed target itself.
    let (out, stdout, stderr) = run(
        file,
        out_json.clone(),
        vec![("VOLLEY_TP_HOST", host.clone())],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    assert_eq!(summary["metrics"]["failures"], 0, "{summary}");
    assert_eq!(target.stats().requests, 4);

    // Literal: refused before anything runs, naming the header field.
    let file = manifest(&dir, &yaml("internal.other-team.svc"));
    let (out, _, stderr) = run(file, out_json, Vec::new()).await;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("spec.scenarios[0].steps[0].request.headers.Host"),
        "{stderr}"
    );
    assert_eq!(target.stats().requests, 4, "nothing more was sent");
    let _ = std::fs::remove_dir_all(&dir);
    target.shutdown().await;
}
