//! Distributed runs end to end, with real processes on 127.0.0.1: `volley agent` processes
//! (the runner pods' command) against the aggregator, and `volley run --runners N` as users
//! call it.
//!
//! Between agents and aggregator sits a forwarding proxy that records every report delivered
//! and can drop, duplicate or lose the answer of reports, or stand in for an aggregator that
//! is down while it restarts. Each test checks the merged result against something computed
//! independently: the declared schedule (exact iteration counts) and the union of the runners'
//! own final histograms, rebuilt sample by sample.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use serde_json::Value;
use volley_aggregator::server::runner_credential;
use volley_aggregator::{Aggregator, RunConfig, RunView};
use volley_core::metrics::model::{Measurements, RunMetrics};
use volley_core::protocol::RunnerReport;
use volley_crds::status::Phase;
use volley_demo_target::{DemoConfig, DemoTarget};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const RUN: &str = "e2e-run";
const TOKEN: &str = "e2e-token-0123456789";

// ---------------------------------------------------------------------------------------------
// The forwarding proxy
// ---------------------------------------------------------------------------------------------

/// What happens to one report on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Forward,
    /// Not forwarded; the runner gets 503.
    DropRequest,
    /// Forwarded, but the runner gets 503 instead of the answer.
    DropAnswer,
    /// Forwarded twice.
    Duplicate,
}

type Policy = Arc<dyn Fn(u32, &RunnerReport) -> Fate + Send + Sync>;

#[derive(Clone)]
struct Proxy {
    upstream: Arc<Mutex<Option<String>>>,
    /// Every report the aggregator accepted (status 200), per runner, in order.
    delivered: Arc<Mutex<BTreeMap<u32, Vec<RunnerReport>>>>,
    policy: Policy,
    http: reqwest::Client,
}

impl Proxy {
    fn set_upstream(&self, url: Option<String>) {
        *self.upstream.lock().unwrap() = url;
    }

    fn final_reports(&self) -> BTreeMap<u32, RunnerReport> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(i, reports)| Some((*i, reports.iter().rfind(|r| r.report.done)?.clone())))
            .collect()
    }

    async fn forward(
        &self,
        method: &str,
        path: &str,
        auth: Option<String>,
        body: Bytes,
    ) -> Option<(StatusCode, Bytes)> {
        let upstream = self.upstream.lock().unwrap().clone()?;
        let mut req = self
            .http
            .request(method.parse().ok()?, format!("{upstream}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.ok()?;
        let status = StatusCode::from_u16(resp.status().as_u16()).ok()?;
        Some((status, resp.bytes().await.ok()?))
    }
}

async fn proxy_handler(State(proxy): State<Proxy>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let down = || (StatusCode::SERVICE_UNAVAILABLE, "aggregator down").into_response();
    let report: Option<RunnerReport> = path
        .ends_with("/report")
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    let fate = match &report {
        Some(r) => (proxy.policy)(r.report.runner, r),
        None => Fate::Forward,
    };
    if fate == Fate::DropRequest {
        return down();
    }
    let Some((status, answer)) = proxy
        .forward(&method, &path, auth.clone(), body.clone())
        .await
    else {
        return down();
    };
    if let Some(r) = report
        && status == StatusCode::OK
    {
        proxy
            .delivered
            .lock()
            .unwrap()
            .entry(r.report.runner)
            .or_default()
            .push(r);
    }
    match fate {
        Fate::DropAnswer => down(),
        Fate::Duplicate => {
            let _ = proxy.forward(&method, &path, auth, body).await;
            (status, answer).into_response()
        }
        _ => (status, answer).into_response(),
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

// ---------------------------------------------------------------------------------------------
// A run of agent processes behind the proxy
// ---------------------------------------------------------------------------------------------

struct Harness {
    aggregator: Arc<Mutex<Aggregator>>,
    config: RunConfig,
    proxy: Proxy,
    aggregator_tasks: Vec<tokio::task::JoinHandle<()>>,
    agents: Vec<tokio::task::JoinHandle<Output>>,
}

impl Harness {
    async fn start(yaml: &str, runners: u32, policy: Policy) -> Harness {
        let spec = volley_core::manifest::parse_manifest(yaml).unwrap().spec;
        let config = RunConfig {
            runners,
            start_delay: Duration::from_millis(500),
            barrier_timeout: Duration::from_secs(60),
            ..RunConfig::new(RUN, TOKEN, "e2e", spec)
        };
        let proxy = Proxy {
            upstream: Arc::new(Mutex::new(None)),
            delivered: Arc::default(),
            policy,
            http: reqwest::Client::new(),
        };
        let proxy_url = serve(
            Router::new()
                .fallback(proxy_handler)
                .with_state(proxy.clone()),
        )
        .await;
        let mut harness = Harness {
            aggregator: Arc::new(Mutex::new(Aggregator::new())),
            config,
            proxy,
            aggregator_tasks: Vec::new(),
            agents: Vec::new(),
        };
        harness.start_aggregator().await;
        for index in 0..runners {
            harness.agents.push(spawn_agent(
                &proxy_url,
                index,
                &runner_credential(TOKEN, index),
            ));
        }
        harness
    }

    /// A fresh aggregator (no state) that the proxy sends everything to from now on.
    async fn start_aggregator(&mut self) {
        let aggregator = Aggregator::new();
        aggregator.add_run(self.config.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        self.aggregator_tasks
            .push(tokio::spawn(volley_aggregator::server::serve(
                listener,
                aggregator.router(),
                std::future::pending(),
            )));
        let server_ticker = tokio::spawn(aggregator.clone().run_ticker());
        self.aggregator_tasks.push(server_ticker);
        *self.aggregator.lock().unwrap() = aggregator;
        self.proxy.set_upstream(Some(url));
    }

    /// The aggregator "crashes": state gone, unreachable.
    fn stop_aggregator(&mut self) {
        self.proxy.set_upstream(None);
        for task in self.aggregator_tasks.drain(..) {
            task.abort();
        }
        *self.aggregator.lock().unwrap() = Aggregator::new();
    }

    fn view(&self) -> Option<RunView> {
        self.aggregator.lock().unwrap().view(RUN)
    }

    /// Waits for the end (at most `limit`) and for every agent to exit.
    async fn finish(self, limit: Duration) -> (RunView, Vec<Output>, Proxy) {
        let view = tokio::time::timeout(limit, async {
            loop {
                if let Some(view) = self.view()
                    && view.end.is_some()
                {
                    return view;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the run did not end in time");
        let mut outputs = Vec::new();
        for agent in self.agents {
            outputs.push(
                tokio::time::timeout(Duration::from_secs(30), agent)
                    .await
                    .expect("an agent did not exit")
                    .unwrap(),
            );
        }
        (view, outputs, self.proxy)
    }
}

fn spawn_agent(url: &str, index: u32, token: &str) -> tokio::task::JoinHandle<Output> {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(["agent", "--aggregator", url, "--run", RUN, "--index"])
        .arg(index.to_string())
        .env("VOLLEY_TOKEN", token)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    tokio::spawn(async move { cmd.output().await.unwrap() })
}

fn forward_all() -> Policy {
    Arc::new(|_, _| Fate::Forward)
}

async fn demo() -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap()
}

/// `rate` iterations/s for `secs` seconds of two steps with different latencies (one of them
/// failing sometimes), so the percentiles have something to get wrong.
fn manifest(base: &str, rate: u32, secs: u32, extra: &str) -> String {
    format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: e2e}}\nspec:\n  \
         target: {{baseUrl: '{base}'}}\n  scenarios:\n  \
         - name: main\n    executor: constant-arrival-rate\n    rate: {rate}\n    \
         duration: {secs}s\n    maxVUs: 200\n    steps:\n    \
         - {{name: fast, request: {{url: '/api/items?delay=2ms'}}}}\n    \
         - {{name: slow, request: {{url: '/api/items?delay=12ms&fail=0.05'}}}}\n{extra}"
    )
}

// ---------------------------------------------------------------------------------------------
// Independent checks
// ---------------------------------------------------------------------------------------------

/// The union of the runners' final histograms, rebuilt value by value (not with the
/// `Histogram::add` the merge uses).
fn union_of_samples(finals: &BTreeMap<u32, RunnerReport>) -> (Histogram<u64>, u64, u64) {
    let mut union = volley_core::metrics::histogram::new_latency_histogram();
    let (mut requests, mut failures) = (0, 0);
    for report in finals.values() {
        let run: RunMetrics = report.report.to_metrics().unwrap();
        for sc in run.load_scenarios() {
            for st in &sc.steps {
                for v in st.m.latency.iter_recorded() {
                    union
                        .record_n(v.value_iterated_to(), v.count_at_value())
                        .unwrap();
                }
                requests += st.m.counters.requests;
                failures += st.m.counters.failures;
            }
        }
    }
    (union, requests, failures)
}

fn assert_exact(merged: &Measurements, finals: &BTreeMap<u32, RunnerReport>) {
    let (union, requests, failures) = union_of_samples(finals);
    assert_eq!(merged.counters.requests, requests);
    assert_eq!(merged.counters.failures, failures);
    assert_eq!(merged.latency.len(), union.len());
    for q in [0.5, 0.95, 0.99, 1.0] {
        assert_eq!(
            merged.latency.value_at_quantile(q),
            union.value_at_quantile(q),
            "quantile {q}"
        );
    }
}

fn iterations(view: &RunView) -> (u64, u64) {
    let sc = view.merged.scenario("main").unwrap();
    (sc.iterations.iterations, sc.iterations.dropped_iterations)
}

// ---------------------------------------------------------------------------------------------
// Tests through agent processes and the proxy
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_merge_exactly_like_one_histogram_of_all_samples() {
    let target = demo().await;
    let yaml = manifest(&target.base_url(), 150, 4, "");
    let h = Harness::start(&yaml, 3, forward_all()).await;
    // An intruder with another run's token is refused and changes nothing.
    let intruder = spawn_agent(
        &h.proxy.upstream.lock().unwrap().clone().unwrap(),
        0,
        "someone-elses-token",
    );
    let intruder = intruder.await.unwrap();
    assert_eq!(intruder.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&intruder.stderr).contains("401"));
    // So is a runner of this run speaking for another: runner 1's credential as runner 0.
    let impostor = spawn_agent(
        &h.proxy.upstream.lock().unwrap().clone().unwrap(),
        0,
        &runner_credential(TOKEN, 1),
    );
    let impostor = impostor.await.unwrap();
    assert_eq!(impostor.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&impostor.stderr).contains("401"));

    let (view, outputs, proxy) = h.finish(Duration::from_secs(60)).await;
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(view.end.as_ref().unwrap().phase, Phase::Succeeded);
    // The declared rate, exactly: 150/s for 4 s, split 50 + 50 + 50.
    assert_eq!(iterations(&view), (600, 0));
    let finals = proxy.final_reports();
    assert_eq!(finals.len(), 3);
    assert_exact(&view.merged.overall(), &finals);
    assert_eq!(view.merged.overall().counters.requests, 1200);
    let skew = view.start_skew.expect("start skew measured");
    eprintln!("start skew across 3 runner processes: {skew:?}");
    assert!(skew < Duration::from_millis(500), "{skew:?}");
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_duplicated_and_unanswered_reports_leave_the_totals_exact() {
    let target = demo().await;
    let yaml = manifest(&target.base_url(), 100, 4, "");
    let final_answers_lost = Arc::new(Mutex::new(0u32));
    let lost = final_answers_lost.clone();
    let policy: Policy =
        Arc::new(
            move |runner, r| match (runner, r.report.seq % 2, r.report.done) {
                // Runner 1's first final report reaches the aggregator but its answer is lost: the
                // retry repeats the same report.
                (1, _, true) => {
                    let mut lost = lost.lock().unwrap();
                    *lost += 1;
                    if *lost == 1 {
                        Fate::DropAnswer
                    } else {
                        Fate::Forward
                    }
                }
                (0, 0, false) => Fate::DropRequest,
                (1, 1, false) => Fate::Duplicate,
                _ => Fate::Forward,
            },
        );
    let h = Harness::start(&yaml, 2, policy).await;
    let (view, outputs, proxy) = h.finish(Duration::from_secs(60)).await;
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        *final_answers_lost.lock().unwrap() >= 2,
        "the final report was retried"
    );
    assert_eq!(view.end.as_ref().unwrap().phase, Phase::Succeeded);
    assert_eq!(iterations(&view), (400, 0));
    assert_exact(&view.merged.overall(), &proxy.final_reports());
    assert_eq!(view.merged.overall().counters.requests, 800);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_restart_mid_run_rebuilds_the_totals_from_the_next_reports() {
    let target = demo().await;
    let yaml = manifest(&target.base_url(), 100, 6, "");
    let mut h = Harness::start(&yaml, 2, forward_all()).await;
    // Wait until load runs, then lose the aggregator for 1.5 s.
    tokio::time::timeout(Duration::from_secs(30), async {
        while h.view().is_none_or(|v| v.elapsed < Duration::from_secs(2)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the run did not start");
    h.stop_aggregator();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.start_aggregator().await;
    let (view, outputs, proxy) = h.finish(Duration::from_secs(60)).await;
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(view.end.as_ref().unwrap().phase, Phase::Succeeded);
    // Every iteration of the schedule is in the rebuilt result, as if nothing happened.
    assert_eq!(iterations(&view), (600, 0));
    assert_eq!(view.merged.overall().counters.requests, 1200);
    assert_exact(&view.merged.overall(), &proxy.final_reports());
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Tests through `volley run --runners N`
// ---------------------------------------------------------------------------------------------

fn volley_run(manifest: &Path, out: &Path, runners: u32) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.arg("run")
        .arg(manifest)
        .arg("--quiet")
        .arg("--runners")
        .arg(runners.to_string())
        .arg("--out")
        .arg(out)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The `volley agent` children of process `pid`, by runner index.
fn agent_children(pid: u32) -> BTreeMap<u32, u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut agents = BTreeMap::new();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Some(i) = args.iter().position(|a| a == "--index")
            && let Some(index) = args.get(i + 1).and_then(|s| s.parse().ok())
        {
            agents.insert(index, child);
        }
    }
    agents
}

/// Runs `volley run --runners N`, killing runner `kill` with SIGKILL once the load runs.
async fn run_and_kill(yaml: &str, runners: u32, kill: u32) -> (Output, Value) {
    let (manifest, out) = write_manifest("kill", yaml);
    let child = volley_run(&manifest, &out, runners).spawn().unwrap();
    let pid = child.id().unwrap();
    let victim = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let agents = agent_children(pid);
            if agents.len() == runners as usize {
                return agents[&kill];
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the runners did not start");
    // Let the load run for a while first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("volley run did not end")
        .unwrap();
    let summary = summary(&out, &output);
    (output, summary)
}

/// Writes `yaml` into a fresh directory; returns the manifest path and where `--out` goes.
fn write_manifest(tag: &str, yaml: &str) -> (PathBuf, PathBuf) {
    let dir = tempdir(tag);
    let manifest = dir.join("lt.yaml");
    std::fs::write(&manifest, yaml).unwrap();
    (manifest, dir.join("summary.json"))
}

/// The summary JSON `volley run` wrote to `out`.
fn summary(out: &Path, output: &Output) -> Value {
    match std::fs::read(out) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => panic!(
            "no summary ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_fails_the_run_naming_it_and_the_survivors_finish() {
    let target = demo().await;
    let yaml = manifest(&target.base_url(), 60, 6, "");
    let (output, summary) = run_and_kill(&yaml, 3, 1).await;
    assert_eq!(output.status.code(), Some(1), "{summary}");
    assert_eq!(summary["phase"], "Failed");
    assert_eq!(summary["reason"], "RunnerFailed");
    let failures = summary["runnerFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{summary}");
    assert_eq!(failures[0]["index"], 1);
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("killed by signal 9"),
        "{summary}"
    );
    let at = failures[0]["atSeconds"].as_f64().unwrap();
    assert!(at > 1.0 && at < 6.0, "killed ~3 s in: {at}");
    let message = summary["message"].as_str().unwrap();
    assert!(
        message.contains("runner 1") && message.contains("killed by signal 9"),
        "{message}"
    );
    // The survivors ran their whole shares (20/s each for 6 s); runner 1 counts until its
    // last report before the kill.
    let iterations = summary["metrics"]["iterations"].as_u64().unwrap();
    assert!((240..360).contains(&iterations), "{iterations}");
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_policy_continue_keeps_the_survivors_verdict() {
    let target = demo().await;
    let yaml = manifest(
        &target.base_url(),
        60,
        5,
        "  runners: {failurePolicy: Continue}\n  thresholds: ['error_rate < 50%']\n",
    );
    let (output, summary) = run_and_kill(&yaml, 2, 0).await;
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["phase"], "Succeeded");
    assert_eq!(summary["verdict"], "Passed");
    assert_eq!(summary["runnerFailures"][0]["index"], 0);
    let message = summary["message"].as_str().unwrap();
    assert!(message.contains("failurePolicy Continue"), "{message}");
    target.shutdown().await;
}

async fn run_cli(yaml: &str, runners: u32) -> (Output, Value) {
    let (manifest, out) = write_manifest("run", yaml);
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        volley_run(&manifest, &out, runners).output(),
    )
    .await
    .expect("volley run did not end")
    .unwrap();
    let summary: Value = match std::fs::read(&out) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => panic!(
            "no summary ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    };
    (output, summary)
}

/// 200 iterations/s over two runners for 8 s: each runner's share alone stays under 900
/// requests all run long (100/s × 8 s = 800), the merged total passes 900 at 4.5 s.
/// `rps > 150` fails for each runner alone (100/s) and holds merged (200/s): judged per
/// runner it would abort at once; judged merged it never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_acts_on_the_merged_result_within_seconds() {
    let target = demo().await;
    let thresholds = "  thresholds:\n  \
        - {expr: 'requests < 900', abortOnFail: true}\n  \
        - {expr: 'rps > 150', abortOnFail: true, delayAbortEval: 2s}\n";
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: abort}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  scenarios:\n  \
         - {{name: main, executor: constant-arrival-rate, rate: 200, duration: 8s, maxVUs: 50,\n     \
         steps: [{{name: get, request: {{url: /api/items}}}}]}}\n{thresholds}",
        target.base_url()
    );
    let (output, summary) = run_cli(&yaml, 2).await;
    assert_eq!(output.status.code(), Some(99), "{summary}");
    assert_eq!(summary["reason"], "ThresholdAborted", "{summary}");
    assert_eq!(summary["thresholds"][0]["aborted"], true);
    assert_eq!(summary["thresholds"][1]["passed"], true, "merged rps holds");
    let requests = summary["metrics"]["requests"].as_u64().unwrap();
    let duration = summary["durationSeconds"].as_f64().unwrap();
    // The breach is at 900 requests (4.5 s); the planned run is 1600 requests in 8 s.
    eprintln!(
        "abortOnFail: breach at 4.5 s, every runner stopped at {duration:.2} s ({:.2} s later), {requests} requests",
        duration - 4.5
    );
    assert!((900..1600).contains(&requests), "{requests}");
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_abort_eval_holds_a_merged_breach_until_its_time() {
    let target = demo().await;
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: abort}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  scenarios:\n  \
         - {{name: main, executor: constant-arrival-rate, rate: 200, duration: 9s, maxVUs: 50,\n     \
         steps: [{{name: get, request: {{url: /api/items}}}}]}}\n  \
         thresholds: [{{expr: 'requests < 400', abortOnFail: true, delayAbortEval: 6s}}]\n",
        target.base_url()
    );
    let (output, summary) = run_cli(&yaml, 2).await;
    assert_eq!(output.status.code(), Some(99), "{summary}");
    assert_eq!(summary["reason"], "ThresholdAborted", "{summary}");
    let requests = summary["metrics"]["requests"].as_u64().unwrap();
    // Breached at 2 s, but not acted on before 6 s (1200 requests); planned 1800.
    assert!((1200..1800).contains(&requests), "{requests}");
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volley_run_with_runners_reports_start_skew_and_the_exact_schedule() {
    let target = demo().await;
    let yaml = manifest(&target.base_url(), 90, 3, "");
    let (output, summary) = run_cli(&yaml, 3).await;
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["runners"], 3);
    assert_eq!(summary["metrics"]["iterations"], 270);
    assert_eq!(summary["metrics"]["droppedIterations"], 0);
    let skew = summary["startSkewMs"].as_f64().expect("startSkewMs");
    eprintln!("volley run --runners 3: startSkewMs {skew}");
    assert!(skew < 500.0, "{skew}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3 runners"), "{stdout}");
    target.shutdown().await;
}
