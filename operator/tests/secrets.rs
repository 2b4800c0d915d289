//! A tenant's secret never reaches what the operator writes or logs.
//!
//! Like `agents.rs`, this runs real `volley agent` processes (built by this test with cargo)
//! against the operator's aggregator adapter ([`AggregatorRegistry`]) served on 127.0.0.1.
//! The runners get a known secret in their environment, as a runner pod gets it from a Secret
//! through `runners.env`, and the manifest uses it where a careless implementation would echo
//! it (header, query, JSON body, a setup login whose extracted value is the secret again) and
//! on failure paths (5xx, 401, failing check and extraction, timeout, refused connection,
//! failing thresholds; a failing setup; a URL the secret makes invalid).
//!
//! The controller is played by this test without a cluster, with the pure pieces the real
//! controller calls, in its order: [`phase::next_step`] on the observed facts (the registry's
//! progress, and runner pods whose status mirrors the agent processes: running, then
//! terminated with their exit code and, as `terminationMessagePolicy: FallbackToLogsOnError`
//! does, the end of their log as the termination message), then [`status_patch`] for every
//! status write, the events of each decision, and at the end the report ConfigMap
//! ([`final_report`] of the registry's report and the final status, as
//! `controller::write_report` does). What cannot be driven without an API server is the
//! kube-rs event recorder and the HTTP calls themselves; the objects they would send are what
//! is checked here.
//!
//! Checked for the secret (and for the run's own bearer token): every status patch, every
//! event, the report ConfigMap, the operator process's log lines (a `tracing` subscriber at
//! TRACE level), and the agents' stderr. Positively: a recording server saw the secret in the
//! requests, so the test cannot pass by not sending it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, Pod,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use volley_aggregator::Aggregator;
use volley_core::manifest::parse_manifest;
use volley_core::protocol::TOKEN_ENV;
use volley_core::target_policy::TargetPolicy;
use volley_crds::LoadTest;
use volley_crds::status::Phase;
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_operator::aggregator_registry::AggregatorRegistry;
use volley_operator::config::{RunnerDefaults, Timing};
use volley_operator::names::{RUNNER_INDEX_LABEL, RunRef};
use volley_operator::observed::RunnerPod;
use volley_operator::phase::{self, Observed};
use volley_operator::pods::runner_pod;
use volley_operator::registry::{RunRegistration, RunRegistry};
use volley_operator::report::final_report;
use volley_operator::secret::Token;
use volley_operator::status_patch::status_patch;
use volley_operator::telemetry::OperatorMetrics;

use common::volley_binary;

/// The known secret.
const SECRET: &str = "volley-e2e-SECRET-7f3a9c";
const SECRET_ENV: &str = "VOLLEY_E2E_SECRET";
/// Bound of one run, start to forget.
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// What `FallbackToLogsOnError` keeps of a log: the last 80 lines or 2048 bytes.
const TERMINATION_LOG_BYTES: usize = 2048;

// ---------------------------------------------------------------------------------------------
// The operator's log lines.

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test process (the operator's side) from now on, at TRACE.
fn operator_log() -> LogBuffer {
    static LOG: OnceLock<LogBuffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buffer
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// The target side: the demo target for its failure knobs, a recorder to prove what was sent.

type Seen = Arc<Mutex<Vec<String>>>;

/// Records each request as one line (URI, headers, body) and answers `POST /login` with
/// `{"token": <password>}` and anything else with the request echoed back (status from
/// `?status=`).
async fn record(State(seen): State<Seen>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let headers: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let body = String::from_utf8_lossy(&body).into_owned();
    seen.lock()
        .unwrap()
        .push(format!("{uri} {headers:?} {body}"));
    if uri.path() == "/login" {
        let password = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["password"].as_str().map(str::to_string))
            .unwrap_or_default();
        return axum::Json(json!({ "token": password })).into_response();
    }
    let status = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("status="))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let echo = json!({"uri": uri.to_string(), "headers": headers, "body": body});
    (status, axum::Json(echo)).into_response()
}

async fn start_recorder() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, task)
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// Load with every failure path; thresholds fail.
    Load,
    /// The setup login answers 500.
    SetupFails,
    /// The secret makes a request URL invalid (a `/` in a URL's password).
    BrokenUrl,
}

fn manifest(variant: Variant, demo: &str, recorder: &str, refused: &str) -> String {
    let env = format!("${{env:{SECRET_ENV}}}");
    let login = if variant == Variant::SetupFails {
        format!("{recorder}/echo?status=500&api_key={env}")
    } else {
        format!("{recorder}/login")
    };
    let extra = if variant == Variant::BrokenUrl {
        format!(
            r#"
    - name: broken-url
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: basic-auth
          request: {{url: "http://e2e:{env}@{}/x"}}"#,
            refused.trim_start_matches("http://")
        )
    } else {
        String::new()
    };
    format!(
        r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: secrets}}
spec:
  target: {{baseUrl: "{demo}", timeout: 5s}}
  setup:
    - name: login
      request:
        method: POST
        url: "{login}"
        headers: {{Authorization: "Bearer {env}"}}
        json: {{user: e2e, password: "{env}"}}
      check: {{status: [200]}}
      extract: {{session: {{jsonPath: "$.token"}}}}
  scenarios:
    - name: carries
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: bearer-and-query
          request:
            url: "{recorder}/echo?api_key={env}"
            headers: {{Authorization: "Bearer {env}", X-Session: "${{setup.session}}"}}
          check: {{status: [200]}}
        - name: json-body
          request:
            method: POST
            url: "{recorder}/echo"
            json: {{apiKey: "{env}", session: "${{setup.session}}"}}
          check: {{status: [200]}}
    - name: server-error
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: five-hundred
          request:
            url: "/api/items?status=503&api_key={env}"
            headers: {{X-Api-Key: "{env}"}}
          check: {{status: [200]}}
          retry: {{attempts: 2, on: [5xx], backoff: 10ms}}
    - name: unauthorized
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: bad-bearer
          request:
            url: "/api/items?api_key={env}"
            headers: {{Authorization: "Bearer {env}"}}
    - name: check-fails
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: body-check
          request:
            method: POST
            url: "{recorder}/echo?api_key={env}"
            json: {{apiKey: "{env}"}}
          check: {{status: [200], bodyContains: "never-in-the-body", jsonPath: "$.uri", equals: "/nope"}}
    - name: extract-fails
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: extract
          request:
            url: "{recorder}/echo?api_key={env}"
          extract: {{missing: {{jsonPath: "$.no.such.field"}}}}
        - name: uses-missing
          request:
            url: "{recorder}/echo?value=${{missing}}&api_key={env}"
    - name: timeout
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: slow
          request:
            url: "/api/items?delay=2s&api_key={env}"
            headers: {{Authorization: "Bearer {env}"}}
            timeout: 150ms
    - name: refused
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: refused
          request:
            url: "{refused}/x?api_key={env}"{extra}
  thresholds:
    - "error_rate < 1%"
    - "checks > 99%"
    - {{expr: "p(95) < 1ms", scenario: timeout, step: slow}}
  runners:
    parallelism: 2
    env:
      - name: {SECRET_ENV}
        valueFrom: {{secretKeyRef: {{name: e2e-credentials, key: api-key}}}}
  timeout: 60s
"#
    )
}

// ---------------------------------------------------------------------------------------------
// The runner side.

/// One runner "pod": a `volley agent` process and its log.
struct Runner {
    index: u32,
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<u8>>>,
    exit: Option<i32>,
}

impl Runner {
    /// Starts the process the runner pod `pod` describes: its command (with `volley` replaced
    /// by the binary built here) and its environment, each `valueFrom.secretKeyRef` resolved
    /// as the kubelet would (the run's token; the tenant's secret).
    fn spawn(volley: &PathBuf, pod: &Pod, index: u32, token: &Token, secret: &str) -> Runner {
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let command = container.command.clone().unwrap();
        assert_eq!(command[0], "volley");
        let mut cmd = tokio::process::Command::new(volley);
        cmd.args(&command[1..]);
        for var in container.env.iter().flatten() {
            let value = match (&var.value, var.name.as_str()) {
                (Some(v), _) => v.clone(),
                // The runner's own credential, from its key of the run's Secret.
                (None, TOKEN_ENV) => {
                    volley_aggregator::server::runner_credential(token.expose(), index)
                }
                (None, SECRET_ENV) => secret.to_string(),
                (None, other) => panic!("unexpected variable {other} in the runner pod"),
            };
            cmd.env(&var.name, value);
        }
        let mut child = cmd
            .env("RUST_LOG", "debug")
            .env_remove("VOLLEY_ALLOWED_TARGETS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for mut stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Runner {
            index,
            child,
            log,
            exit: None,
        }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// The pod as the API server would show it now.
    fn pod(&mut self, created: Timestamp) -> Pod {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(status.code().unwrap_or(137));
        }
        let (phase, state) = match self.exit {
            None => (
                "Running",
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                },
            ),
            Some(code) => {
                // FallbackToLogsOnError: the end of the log becomes the termination message.
                let log = self.log();
                let lines: Vec<&str> = log.lines().collect();
                let mut tail = lines[lines.len().saturating_sub(80)..].join("\n");
                if tail.len() > TERMINATION_LOG_BYTES {
                    let mut from = tail.len() - TERMINATION_LOG_BYTES;
                    while !tail.is_char_boundary(from) {
                        from += 1;
                    }
                    tail = tail[from..].to_string();
                }
                (
                    if code == 0 { "Succeeded" } else { "Failed" },
                    ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                            message: (code != 0).then_some(tail),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    },
                )
            }
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("secrets-runner-{}", self.index)),
                labels: Some(BTreeMap::from([(
                    RUNNER_INDEX_LABEL.to_string(),
                    self.index.to_string(),
                )])),
                creation_timestamp: Some(Time(created)),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "runner".into(),
                    state: Some(state),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The controller, played without a cluster.

/// Everything the operator produced for one run.
#[derive(Default)]
struct Produced {
    status_patches: Vec<Value>,
    pods: Vec<Value>,
    events: Vec<String>,
    report: Option<Value>,
    final_phase: Option<Phase>,
    final_message: String,
    runner_logs: Vec<String>,
}

fn loadtest(yaml: &str, uid: &str) -> LoadTest {
    let mut lt = parse_manifest(yaml).expect("the manifest parses");
    lt.metadata.namespace = Some("team-a".into());
    lt.metadata.uid = Some(uid.into());
    lt.metadata.generation = Some(1);
    lt.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    lt
}

async fn drive(variant: Variant, uid: &str, seen_out: &mut Vec<String>) -> (Produced, Token) {
    let volley = tokio::task::spawn_blocking(volley_binary).await.unwrap();
    let demo = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let (recorder, seen, recorder_task) = start_recorder().await;
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let mut lt = loadtest(
        &manifest(variant, &demo.base_url(), &recorder, &refused),
        uid,
    );
    let run = RunRef::of(&lt).unwrap();

    let metrics = Arc::new(OperatorMetrics::new());
    let aggregator = Aggregator::new();
    let registry = AggregatorRegistry::new(aggregator.clone(), metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, aggregator.router()).into_future());
    let ticker = tokio::spawn(aggregator.clone().run_ticker());

    let token = Token::generate();
    let defaults = RunnerDefaults {
        image: "ghcr.io/volley-dev/volley:test".into(),
        image_pull_policy: None,
        aggregator_url: url.clone(),
        // The administrator's guard is on; every target here is on 127.0.0.1.
        allowed_targets: TargetPolicy::parse("127.0.0.1").unwrap(),
        resources: None,
        image_pull_secrets: Vec::new(),
        pod_security_context: None,
        security_context: None,
    };
    let timing = Timing {
        status_interval: Duration::from_millis(500),
        ..Timing::default()
    };
    let mut produced = Produced::default();
    let mut secret_exists = false;
    let mut runners: Vec<Runner> = Vec::new();
    let mut last_write = None;
    let created = Timestamp::now();
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "{variant:?}: the run did not end in {RUN_LIMIT:?}; last status {:?}",
            lt.status
        );
        let pods: Vec<RunnerPod> = runners
            .iter_mut()
            .map(|r| RunnerPod::from_pod(&r.pod(created)))
            .collect();
        let facts = Observed {
            loadtest: &lt,
            now: Timestamp::now(),
            pods,
            secret_exists,
            progress: registry.progress(&run.run_id),
            last_status_write: last_write,
            timing,
            defaults: defaults.clone(),
        };
        let d = phase::next_step(&facts);
        let now = facts.now;
        // The controller's order: Secret, registration, pods, report + status, events,
        // aggregator calls.
        secret_exists |= d.create_secret;
        if d.register {
            registry.register(RunRegistration::for_run(&lt, &run, token.clone()));
        }
        for index in &d.create_pods {
            let pod = runner_pod(&lt, *index, &defaults, &run);
            produced.pods.push(serde_json::to_value(&pod).unwrap());
            // BrokenUrl: a password with a `/` makes the URL invalid once it is filled in.
            let secret = if variant == Variant::BrokenUrl {
                format!("{SECRET}/with-a-slash")
            } else {
                SECRET.to_string()
            };
            runners.push(Runner::spawn(&volley, &pod, *index, &token, &secret));
        }
        if let Some(mut status) = d.status.clone() {
            if status.phase.is_some_and(Phase::is_finished)
                && let Some(summary) = registry.report(&run.run_id)
            {
                let cm = final_report(&run, summary, &status);
                produced.report = Some(serde_json::to_value(&cm).unwrap());
                status.report_ref = Some(volley_crds::status::ReportRef {
                    config_map_name: cm.metadata.name.clone().unwrap_or_default(),
                });
            }
            produced
                .status_patches
                .push(status_patch(lt.status.as_ref(), &status));
            if status.phase.is_some_and(Phase::is_finished) {
                produced.final_phase = status.phase;
                produced.final_message = format!(
                    "{}: {}",
                    status.reason.clone().unwrap_or_default(),
                    status.message.clone().unwrap_or_default()
                );
            }
            lt.status = Some(status);
            last_write = Some(now);
        }
        for note in &d.events {
            produced.events.push(format!(
                "{:?} {} {} {}",
                note.kind, note.reason, note.action, note.note
            ));
        }
        if let Some(reason) = &d.abort {
            registry.abort(&run.run_id, reason);
        }
        for (index, reason) in &d.runner_failures {
            registry.runner_failed(&run.run_id, *index, reason);
        }
        if d.forget_run {
            registry.forget(&run.run_id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for runner in &mut runners {
        let status = tokio::time::timeout(Duration::from_secs(30), runner.child.wait())
            .await
            .expect("the agent exits once the run ended")
            .unwrap();
        runner.exit = status.code();
        // Let the log readers drain.
        tokio::time::sleep(Duration::from_millis(50)).await;
        produced.runner_logs.push(runner.log());
    }
    ticker.abort();
    server.abort();
    recorder_task.abort();
    demo.shutdown().await;
    seen_out.extend(seen.lock().unwrap().iter().cloned());
    (produced, token)
}

fn assert_absent(variant: Variant, needle: &str, what: &str, place: &str, haystack: &str) {
    if let Some(at) = haystack.find(needle) {
        let from = haystack[..at]
            .char_indices()
            .rev()
            .nth(160)
            .map_or(0, |(i, _)| i);
        let mut to = (at + needle.len() + 160).min(haystack.len());
        while !haystack.is_char_boundary(to) {
            to += 1;
        }
        panic!(
            "{variant:?}: {what} leaked into {place}:\n…{}…",
            &haystack[from..to]
        );
    }
}

/// Asserts that neither the tenant's secret nor the run's token is in anything produced.
fn assert_clean(variant: Variant, produced: &Produced, token: &Token, log: &str) {
    let places: Vec<(String, String)> = produced
        .status_patches
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("status patch {i}"), p.to_string()))
        .chain(
            produced
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("event {i}"), e.clone())),
        )
        .chain(
            produced
                .pods
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("runner pod {i}"), p.to_string())),
        )
        .chain(
            produced
                .report
                .iter()
                .map(|r| ("the report ConfigMap".to_string(), r.to_string())),
        )
        .chain(
            produced
                .runner_logs
                .iter()
                .enumerate()
                .map(|(i, l)| (format!("runner {i}'s log"), l.clone())),
        )
        .chain([("the operator's log".to_string(), log.to_string())])
        .collect();
    for (place, text) in &places {
        assert_absent(variant, SECRET, "the tenant's secret", place, text);
        assert_absent(variant, token.expose(), "the run's token", place, text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_stay_out_of_status_events_reports_and_logs() {
    let log = operator_log();
    let cases = [
        (Variant::Load, "6f1c1d2e-0000-4000-8000-0000000005e1"),
        (Variant::SetupFails, "6f1c1d2e-0000-4000-8000-0000000005e2"),
        (Variant::BrokenUrl, "6f1c1d2e-0000-4000-8000-0000000005e3"),
    ];
    for (variant, uid) in cases {
        let mut seen = Vec::new();
        let (produced, token) = drive(variant, uid, &mut seen).await;
        let log_text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        assert_clean(variant, &produced, &token, &log_text);
        assert!(
            !produced.status_patches.is_empty() && !produced.events.is_empty(),
            "{variant:?}: the operator wrote status and events"
        );
        let logs = produced.runner_logs.join("\n");
        let message = &produced.final_message;
        match variant {
            Variant::Load => {
                assert_eq!(produced.final_phase, Some(Phase::Failed), "{message}");
                assert!(message.starts_with("ThresholdsFailed"), "{message}");
                let report = produced.report.as_ref().expect("a report ConfigMap");
                let summary: Value =
                    serde_json::from_str(report["data"]["summary.json"].as_str().unwrap()).unwrap();
                let kinds = &summary["metrics"]["errorsByKind"];
                for kind in ["5xx", "4xx", "timeout", "connect", "check", "extract"] {
                    assert!(
                        kinds[kind].as_u64().unwrap_or(0) > 0,
                        "no `{kind}` errors: {kinds}"
                    );
                }
                // The secret was sent: env header, query, JSON body, and the setup value.
                let bearer = format!("authorization: Bearer {SECRET}");
                let session = format!("x-session: {SECRET}");
                assert!(
                    seen.iter()
                        .any(|s| s.starts_with("/login") && s.contains(SECRET)),
                    "the login carried the secret"
                );
                assert!(
                    seen.iter().any(|s| s.contains(&format!("api_key={SECRET}"))
                        && s.contains(&bearer)
                        && s.contains(&session)),
                    "a request with the secret in the query, Authorization and X-Session"
                );
                assert!(
                    seen.iter().any(|s| s.starts_with("/echo ")
                        && s.contains(&format!("\"apiKey\":\"{SECRET}\""))),
                    "a JSON body with the secret"
                );
            }
            Variant::SetupFails => {
                assert_eq!(produced.final_phase, Some(Phase::Error), "{message}");
                assert!(message.contains("login"), "{message}");
                assert_eq!(seen.len(), 1, "only the setup login was sent: {seen:?}");
                assert!(seen[0].contains(SECRET));
            }
            Variant::BrokenUrl => {
                assert!(
                    matches!(produced.final_phase, Some(Phase::Error | Phase::Failed)),
                    "{:?} {message}",
                    produced.final_phase
                );
                assert!(
                    format!("{message}\n{logs}").contains("request.url"),
                    "the error names the field: {message}\n{logs}"
                );
            }
        }
    }
}
