//! `volley agent` against a fake aggregator: the real binary (and, for the protocol client, the
//! library) over real HTTP on 127.0.0.1, with the demo target as the system under test.
//!
//! The fake implements the four calls of `volley_core::protocol` with simple in-memory
//! behaviour: it registers runners, holds start polls until every runner is ready, asks
//! runner 0 to run setup when the spec has one, answers `start` (or `abort` when setup
//! failed), records every report and can answer `stop`. Every run is bounded (children are
//! killed on timeout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use volley_core::metrics::model::{Measurements, RunMetrics};
use volley_core::protocol::{
    PROTOCOL_VERSION, ReadyRequest, ReadyResponse, ReportResponse, RunnerReport, SetupResult,
    StartResponse,
};
use volley_crds::LoadTestSpec;
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::aggregator_client::{AggregatorClient, AggregatorRetry, Call, ClientError};

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const TOKEN: &str = "t0ken-of-the-Volley-agent-tests";
const RUN: &str = "run-1";

// ---------------------------------------------------------------------------------------------
// The fake aggregator
// ---------------------------------------------------------------------------------------------

/// What the fake serves.
#[derive(Clone)]
struct Plan {
    runners: u32,
    spec: LoadTestSpec,
    report_interval_ms: u64,
    /// startAt = the decision + this.
    start_delay: Duration,
    /// How long a start poll is held before `wait`.
    hold: Duration,
    /// Answer `stop` to (non-final) reports with this sequence number or later.
    stop_at_seq: Option<u64>,
}

impl Plan {
    fn new(runners: u32, spec: LoadTestSpec) -> Plan {
        Plan {
            runners,
            spec,
            report_interval_ms: 1000,
            start_delay: Duration::from_millis(500),
            hold: Duration::from_secs(1),
            stop_at_seq: None,
        }
    }
}

/// What the fake saw.
#[derive(Default)]
struct Seen {
    ready: Vec<(u32, ReadyRequest)>,
    start_polls: Vec<u32>,
    setup_asked: bool,
    setup: Option<SetupResult>,
    decision: Option<StartResponse>,
    /// Reports in arrival order, with when they arrived.
    reports: Vec<(u32, RunnerReport, Instant)>,
    /// When `stop` was first answered.
    stop_answered: Option<Instant>,
    /// Calls refused for their token.
    unauthorized: u32,
}

struct Fake {
    plan: Plan,
    seen: Mutex<Seen>,
}

impl Fake {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }

    /// 401 for a wrong token or another run, as the aggregator answers.
    fn refuse(&self, headers: &HeaderMap, run: &str) -> Option<Response> {
        let expected = format!("Bearer {TOKEN}");
        let ok = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if !ok {
            self.seen.lock().unwrap().unauthorized += 1;
            return Some((StatusCode::UNAUTHORIZED, "invalid token").into_response());
        }
        if run != RUN {
            return Some((StatusCode::UNAUTHORIZED, format!("no run {run}")).into_response());
        }
        None
    }

    /// The start answer for `runner`, once there is one.
    fn decide(&self, runner: u32) -> Option<StartResponse> {
        let mut seen = self.seen.lock().unwrap();
        if let Some(decision) = &seen.decision {
            return Some(decision.clone());
        }
        if (seen.ready.len() as u32) < self.plan.runners {
            return None;
        }
        let values = if self.plan.spec.setup.is_empty() {
            Default::default()
        } else {
            match &seen.setup {
                None if runner == 0 && !seen.setup_asked => {
                    seen.setup_asked = true;
                    return Some(StartResponse::RunSetup);
                }
                None => return None,
                Some(SetupResult { error: Some(e), .. }) => {
                    seen.decision = Some(StartResponse::Abort {
                        reason: format!("setup failed: {e}"),
                    });
                    return seen.decision.clone();
                }
                Some(result) => result.values.clone(),
            }
        };
        let at = SystemTime::now() + self.plan.start_delay;
        seen.decision = Some(StartResponse::Start {
            start_at_unix_ms: at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
            setup: values,
        });
        seen.decision.clone()
    }
}

async fn ready(
    State(fake): State<Arc<Fake>>,
    Path((run, index)): Path<(String, u32)>,
    headers: HeaderMap,
    Json(request): Json<ReadyRequest>,
) -> Response {
    if let Some(refusal) = fake.refuse(&headers, &run) {
        return refusal;
    }
    if index >= fake.plan.runners {
        return (StatusCode::NOT_FOUND, "no such runner").into_response();
    }
    let mut seen = fake.seen.lock().unwrap();
    if seen.ready.iter().any(|(i, _)| *i == index) {
        return (StatusCode::CONFLICT, "already registered").into_response();
    }
    seen.ready.push((index, request));
    Json(ReadyResponse {
        name: "agent-test".into(),
        runners: fake.plan.runners,
        spec: fake.plan.spec.clone(),
        report_interval_ms: fake.plan.report_interval_ms,
    })
    .into_response()
}

async fn start(
    State(fake): State<Arc<Fake>>,
    Path(run): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = fake.refuse(&headers, &run) {
        return refusal;
    }
    let Some(runner) = query.get("runner").and_then(|r| r.parse::<u32>().ok()) else {
        return (StatusCode::BAD_REQUEST, "runner?").into_response();
    };
    fake.seen.lock().unwrap().start_polls.push(runner);
    let deadline = Instant::now() + fake.plan.hold;
    loop {
        if let Some(answer) = fake.decide(runner) {
            return Json(answer).into_response();
        }
        if Instant::now() >= deadline {
            return Json(StartResponse::Wait).into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup(
    State(fake): State<Arc<Fake>>,
    Path(run): Path<String>,
    headers: HeaderMap,
    Json(result): Json<SetupResult>,
) -> Response {
    if let Some(refusal) = fake.refuse(&headers, &run) {
        return refusal;
    }
    fake.seen.lock().unwrap().setup = Some(result);
    StatusCode::NO_CONTENT.into_response()
}

async fn report(
    State(fake): State<Arc<Fake>>,
    Path((run, index)): Path<(String, u32)>,
    headers: HeaderMap,
    Json(report): Json<RunnerReport>,
) -> Response {
    if let Some(refusal) = fake.refuse(&headers, &run) {
        return refusal;
    }
    let stop = !report.report.done
        && fake
            .plan
            .stop_at_seq
            .is_some_and(|n| report.report.seq >= n);
    let mut seen = fake.seen.lock().unwrap();
    seen.reports.push((index, report, Instant::now()));
    if stop && seen.stop_answered.is_none() {
        seen.stop_answered = Some(Instant::now());
    }
    Json(ReportResponse {
        stop,
        reason: stop.then(|| "stopped by the test".to_string()),
    })
    .into_response()
}

/// A running fake; aborted when dropped.
struct FakeServer {
    url: String,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        self.fake.seen(f)
    }

    /// Runner `index`'s reports, in arrival order.
    fn reports(&self, index: u32) -> Vec<RunnerReport> {
        self.seen(|s| {
            s.reports
                .iter()
                .filter(|(i, _, _)| *i == index)
                .map(|(_, r, _)| r.clone())
                .collect()
        })
    }
}

async fn fake_at(plan: Plan, addr: SocketAddr) -> FakeServer {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Arc::new(Fake {
        plan,
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/runs/{run}/runners/{index}/ready", post(ready))
        .route("/v1/runs/{run}/start", get(start))
        .route("/v1/runs/{run}/setup", post(setup))
        .route("/v1/runs/{run}/runners/{index}/report", post(report))
        .with_state(fake.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeServer { url, fake, task }
}

async fn fake(plan: Plan) -> FakeServer {
    fake_at(plan, ([127, 0, 0, 1], 0).into()).await
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn demo() -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .expect("start demo target")
}

/// The spec of a manifest whose `spec:` body is `body`, with `@BASE@` replaced by `base`.
fn spec(body: &str, base: &str) -> LoadTestSpec {
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: agent-test}}\nspec:\n{}",
        body.replace("@BASE@", base)
    );
    volley_core::manifest::parse_manifest(&yaml)
        .expect("test manifest")
        .spec
}

/// `volley agent` for runner `index` at `url`, with `token` in `VOLLEY_TOKEN` (or none).
fn agent(url: &str, index: u32, token: Option<&str>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args([
        "agent",
        "--aggregator",
        url,
        "--run",
        RUN,
        "--index",
        &index.to_string(),
    ])
    .env_remove("RUST_LOG")
    .env_remove("VOLLEY_TOKEN")
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    if let Some(token) = token {
        cmd.env("VOLLEY_TOKEN", token);
    }
    cmd
}

/// Runs the command to the end, at most `limit`.
async fn output(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("volley agent took longer than {limit:?}"))
        .expect("run volley agent")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn metrics(report: &RunnerReport) -> RunMetrics {
    report.report.to_metrics().expect("decodable report")
}

fn overall(report: &RunnerReport) -> Measurements {
    metrics(report).overall()
}

/// Checks what every runner's report sequence must look like and returns the final report:
/// sequence numbers 1, 2, 3, ... in order, cumulative counts, exactly one `done`, last, and
/// no error before the last.
fn check_sequence(reports: &[RunnerReport]) -> RunnerReport {
    assert!(!reports.is_empty(), "no reports");
    let mut requests = 0;
    let mut elapsed = 0;
    for (i, r) in reports.iter().enumerate() {
        assert_eq!(r.report.seq, i as u64 + 1, "sequence numbers 1, 2, 3, ...");
        assert_eq!(
            r.report.done,
            i + 1 == reports.len(),
            "only the last is done"
        );
        assert!(r.error.is_none() || i + 1 == reports.len(), "{:?}", r.error);
        let now = overall(r).counters.requests;
        assert!(now >= requests, "cumulative: {now} after {requests}");
        assert!(r.report.elapsed_ms >= elapsed);
        requests = now;
        elapsed = r.report.elapsed_ms;
    }
    reports.last().unwrap().clone()
}

fn start_at(server: &FakeServer) -> u64 {
    match server.seen(|s| s.decision.clone()) {
        Some(StartResponse::Start {
            start_at_unix_ms, ..
        }) => start_at_unix_ms,
        other => panic!("no start: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests through the binary
// ---------------------------------------------------------------------------------------------

/// Two agents share 20 iterations/s for 3 s: both register, wait for the common start, report
/// cumulative snapshots every second with increasing sequence numbers, and end with a done
/// report; the done reports add up to exactly what the target received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_their_shares_and_report_exactly() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: steady
      executor: constant-arrival-rate
      rate: 20
      duration: 3s
      maxVUs: 10
      steps:
        - {name: items, request: {url: /api/items}, check: {status: [200]}}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(2, spec)).await;
    let limit = Duration::from_secs(30);
    let (a, b) = tokio::join!(
        output(agent(&server.url, 0, Some(TOKEN)), limit),
        output(agent(&server.url, 1, Some(TOKEN)), limit),
    );
    for out in [&a, &b] {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("done: 30 requests"), "{err}");
        assert!(!err.contains(TOKEN), "the token is never printed: {err}");
    }

    let (ready, polls) = server.seen(|s| (s.ready.clone(), s.start_polls.clone()));
    let mut indexes: Vec<u32> = ready.iter().map(|(i, _)| *i).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1]);
    for (_, r) in &ready {
        assert_eq!(r.protocol, PROTOCOL_VERSION);
        assert!(!r.host.is_empty());
    }
    assert!(polls.contains(&0) && polls.contains(&1), "{polls:?}");
    let start_at = start_at(&server);

    let mut total = 0;
    for index in [0, 1] {
        let reports = server.reports(index);
        assert!(reports.len() >= 3, "≥ 2 progress reports and a final one");
        let last = check_sequence(&reports);
        assert!(last.error.is_none(), "{:?}", last.error);
        let requests = overall(&last).counters.requests;
        assert_eq!(requests, 30, "runner {index}: its exact share");
        assert_eq!(overall(&last).counters.failures, 0);
        // The first request went out at the common start, converted from wall-clock time.
        let first = last.first_request_unix_ms.expect("first request time");
        assert!(
            first + 50 >= start_at && first < start_at + 1000,
            "first request at {first}, start at {start_at}"
        );
        total += requests;
    }
    assert_eq!(total, 60);
    assert_eq!(target.stats().requests, total);
    target.shutdown().await;
}

/// A `stop` answer mid-run: scheduling stops at once, in-flight requests finish (within
/// gracefulStop), a final report carries everything sent, and the agent exits 0 soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answer_ends_the_run_within_a_second() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: long
      executor: constant-arrival-rate
      rate: 20
      duration: 30s
      maxVUs: 20
      gracefulStop: 3s
      steps:
        - {name: slow, request: {url: "/api/items?delay=300ms"}}
"#,
        &target.base_url(),
    );
    let mut plan = Plan::new(1, spec);
    plan.stop_at_seq = Some(2);
    let server = fake(plan).await;
    let out = output(agent(&server.url, 0, Some(TOKEN)), Duration::from_secs(30)).await;
    let exited = Instant::now();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("stopped by the test"), "{err}");

    let stop_answered = server.seen(|s| s.stop_answered).expect("stop was answered");
    let reports = server.reports(0);
    let last = check_sequence(&reports);
    assert!(last.error.is_none(), "{:?}", last.error);
    let stopped_at = reports
        .iter()
        .find(|r| r.report.seq == 2)
        .unwrap()
        .report
        .elapsed_ms;
    let requests = overall(&last).counters.requests;
    // 20/s until the stop (plus the one due at 0 s), none after: scheduling stopped at once
    // (the margin, half a second of load, covers the report's round trip on a busy machine).
    let due = 20 * stopped_at / 1000 + 1;
    assert!(
        requests <= due + 10,
        "{requests} requests, {due} due when the stop was answered"
    );
    assert!(requests >= due.saturating_sub(4), "{requests} < {due}");
    // In-flight requests finished within gracefulStop and are counted.
    assert_eq!(overall(&last).counters.failures, 0);
    assert_eq!(target.stats().requests, requests);
    assert!(
        exited.duration_since(stop_answered) < Duration::from_secs(3),
        "exited {:?} after the stop",
        exited.duration_since(stop_answered)
    );
    target.shutdown().await;
}

/// Runner 0 runs setup when asked, posts the values (and the setup requests' figures), and
/// the start carries them to every VU: the target accepts the token it issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_0_runs_setup_and_the_start_carries_its_values() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request:
        method: POST
        url: /auth/login
        json: {email: "loadtest@example.com", password: "pw"}
      check: {status: [200]}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 2
      iterations: 3
      steps:
        - name: list
          request: {url: /api/items, headers: {Authorization: "Bearer ${setup.token}"}}
          check: {status: [200]}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(1, spec)).await;
    let out = output(agent(&server.url, 0, Some(TOKEN)), Duration::from_secs(30)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");

    let setup = server
        .seen(|s| s.setup.clone())
        .expect("setup result posted");
    assert_eq!(setup.error, None);
    let token = setup.values.get("token").expect("the login token").clone();
    assert!(!token.is_empty());
    assert!(!err.contains(&token), "setup values are not printed: {err}");
    let setup_report = setup.report.expect("setup figures");
    assert_eq!(setup_report.seq, 0);
    let setup_metrics = setup_report.to_metrics().unwrap();
    let login = setup_metrics.step_total("setup", "login").unwrap();
    assert_eq!(login.counters.requests, 1);
    match server.seen(|s| s.decision.clone()) {
        Some(StartResponse::Start { setup, .. }) => assert_eq!(setup.get("token"), Some(&token)),
        other => panic!("no start: {other:?}"),
    }

    let last = check_sequence(&server.reports(0));
    assert!(last.error.is_none(), "{:?}", last.error);
    let api = metrics(&last).scenario_total("api").unwrap();
    assert_eq!(api.counters.requests, 6);
    assert_eq!(
        api.counters.failures, 0,
        "every request carried a valid token"
    );
    let stats = target.stats();
    assert_eq!(stats.logins, 1, "setup ran once");
    assert_eq!(stats.requests, 1 + 6);
    target.shutdown().await;
}

/// A failed setup is posted with its error; the aggregator answers `abort`, and the agent
/// exits 0 without sending load (the run decided; nothing failed in this runner).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_setup_is_posted_and_the_abort_ends_the_agent() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request: {method: POST, url: /auth/login, json: {email: "", password: ""}}
      check: {status: [200]}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 1
      iterations: 3
      steps:
        - {name: list, request: {url: /api/items}}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(1, spec)).await;
    let out = output(agent(&server.url, 0, Some(TOKEN)), Duration::from_secs(30)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("aborted"), "{err}");
    let setup = server
        .seen(|s| s.setup.clone())
        .expect("setup result posted");
    let error = setup.error.expect("the setup error");
    assert!(error.contains("login"), "{error}");
    assert!(server.reports(0).is_empty());
    assert_eq!(target.stats().requests, 1, "only the setup request");
    target.shutdown().await;
}

/// A token the aggregator refuses: exit 1 at once (no retries), a message naming the refused
/// call, the status and the variable the token comes from, never the token; no load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_fatal_and_named() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 1
      iterations: 3
      steps:
        - {name: list, request: {url: /api/items}}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(1, spec)).await;
    let wrong = "not-the-Volley-token";
    let began = Instant::now();
    let out = output(agent(&server.url, 0, Some(wrong)), Duration::from_secs(30)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(began.elapsed() < Duration::from_secs(10), "not retried");
    for needle in [
        "ready call",
        "401",
        "token",
        "VOLLEY_TOKEN",
        "invalid token",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    assert!(!err.contains(wrong), "the token is never printed: {err}");
    assert_eq!(server.seen(|s| s.unauthorized), 1);

    let out = output(agent(&server.url, 0, None), Duration::from_secs(30)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("VOLLEY_TOKEN is not set"), "{err}");
    assert_eq!(
        server.seen(|s| s.unauthorized),
        1,
        "nothing sent without a token"
    );

    assert!(server.seen(|s| s.ready.is_empty()));
    assert_eq!(target.stats().requests, 0);
    target.shutdown().await;
}

/// The aggregator comes up two seconds after the agent: the agent retries and then runs
/// normally. The token comes from the variable `--token-env` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_waits_for_an_aggregator_that_comes_up_late() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 1
      iterations: 2
      steps:
        - {name: list, request: {url: /api/items}}
"#,
        &target.base_url(),
    );
    // A free port, released so that nothing listens on it yet.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut cmd = agent(&format!("http://{addr}"), 0, None);
    cmd.args(["--token-env", "MY_VOLLEY_TOKEN"])
        .env("MY_VOLLEY_TOKEN", TOKEN);
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(child.try_wait().unwrap().is_none(), "the agent waits");
    let server = fake_at(Plan::new(1, spec), addr).await;
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the agent finishes")
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains("retrying"), "{err}");
    let last = check_sequence(&server.reports(0));
    assert!(last.error.is_none(), "{:?}", last.error);
    assert_eq!(overall(&last).counters.requests, 2);
    assert_eq!(target.stats().requests, 2);
    target.shutdown().await;
}

/// A spec this runner cannot compile (an unset `${env:...}`): an error report naming the
/// problem, exit 1, and no load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_error_is_reported_and_exits_1() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 1
      iterations: 2
      steps:
        - {name: list, request: {url: /api/items, headers: {X-Key: "${env:VOLLEY_AGENT_TEST_UNSET}"}}}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(1, spec)).await;
    let out = output(agent(&server.url, 0, Some(TOKEN)), Duration::from_secs(30)).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("VOLLEY_AGENT_TEST_UNSET"), "{err}");
    let reports = server.reports(0);
    assert_eq!(reports.len(), 1, "one error report");
    let report = &reports[0];
    assert!(report.report.done);
    let error = report.error.as_deref().expect("the error");
    assert!(error.contains("VOLLEY_AGENT_TEST_UNSET"), "{error}");
    assert!(server.seen(|s| s.start_polls.is_empty()), "no start poll");
    assert_eq!(target.stats().requests, 0);
    target.shutdown().await;
}

/// SIGTERM mid-run (a pod being deleted) is a stop: graceful end, final report, exit 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_run_and_sends_the_final_report() {
    let target = demo().await;
    let spec = spec(
        r#"
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: long
      executor: constant-arrival-rate
      rate: 20
      duration: 30s
      maxVUs: 20
      steps:
        - {name: items, request: {url: "/api/items?delay=100ms"}}
"#,
        &target.base_url(),
    );
    let server = fake(Plan::new(1, spec)).await;
    let child = agent(&server.url, 0, Some(TOKEN)).spawn().unwrap();
    let pid = child.id().unwrap();
    let began = Instant::now();
    while server.reports(0).is_empty() {
        assert!(began.elapsed() < Duration::from_secs(20), "no report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let signalled = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("the agent stops after SIGTERM")
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("SIGTERM"), "{err}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    let last = check_sequence(&server.reports(0));
    let requests = overall(&last).counters.requests;
    assert!((10..100).contains(&requests), "{requests}");
    assert_eq!(target.stats().requests, requests);
    // Cut short by a signal: the aggregator must see a runner failure, figures kept.
    let error = last.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("stopped by SIGTERM before its share was done"),
        "{error}"
    );
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The protocol client on its own
// ---------------------------------------------------------------------------------------------

fn quick() -> AggregatorRetry {
    AggregatorRetry {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        budget: Duration::from_secs(1),
    }
}

/// Refusals come back at once with what was refused; an unreachable aggregator is retried
/// until the budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_classifies_refusals_and_gives_up_on_an_unreachable_aggregator() {
    let server = fake(Plan::new(1, spec(
        "  target: {baseUrl: \"http://127.0.0.1:9\"}\n  scenarios:\n    - {name: a, executor: per-vu-iterations, vus: 1, iterations: 1, steps: [{name: s, request: {url: /}}]}\n",
        "",
    )))
    .await;
    let request = ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host: "test".into(),
    };

    let client = AggregatorClient::new(&server.url, RUN, 0, "wrong").unwrap();
    let e = client.ready(&request).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Refused { call: Call::Ready, status, .. } if status.as_u16() == 401),
        "{e:?}"
    );
    assert!(!e.is_transient());

    let client = AggregatorClient::new(&server.url, "other-run", 0, TOKEN).unwrap();
    let e = client.ready(&request).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401));
    assert!(e.to_string().contains("other-run"), "{e}");
    assert!(!e.is_transient(), "a refused registration is fatal");

    let client = AggregatorClient::new(&server.url, RUN, 0, TOKEN).unwrap();
    let answer = client.ready(&request).await.unwrap();
    assert_eq!(answer.runners, 1);
    let e = client.ready(&request).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409));
    assert!(e.to_string().contains("conflicts"), "{e}");

    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = AggregatorClient::new(&format!("http://{addr}"), RUN, 0, TOKEN)
        .unwrap()
        .with_retry(quick(), quick());
    let began = Instant::now();
    let e = client.poll_start().await.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(3));
    match &e {
        ClientError::GaveUp { attempts, last, .. } => {
            assert!(*attempts >= 3, "{attempts}");
            assert!(last.is_transient());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("cannot connect"), "{e}");
}
