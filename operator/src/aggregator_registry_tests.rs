//! The adapter over a real [`Aggregator`], driven through its HTTP routes on 127.0.0.1 the way
//! two runners would (ready, start, cumulative reports).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::report::Report;
use volley_core::protocol::{
    PROTOCOL_VERSION, ReadyRequest, RunnerReport, StartResponse, ready_path, report_path,
    start_path,
};
use volley_crds::status::{Phase, Verdict};

use super::*;
use crate::fixtures;
use crate::secret::Token;
use volley_aggregator::server::runner_credential;

const RUN: &str = "run-1";

fn registration(extra: &str) -> RunRegistration {
    let lt = fixtures::loadtest_yaml("web", extra);
    RunRegistration {
        run_id: RUN.into(),
        namespace: "team-a".into(),
        loadtest: "web".into(),
        spec: lt.spec,
        token: Token::generate(),
        started_at: None,
        start_timeout: None,
        baseline: Default::default(),
        prometheus_credentials: Ok(None),
    }
}

struct Harness {
    registry: AggregatorRegistry,
    metrics: Arc<OperatorMetrics>,
    base: String,
    token: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn harness(reg: RunRegistration) -> Harness {
    let metrics = Arc::new(OperatorMetrics::new());
    let aggregator = Aggregator::new().with_poll_hold(Duration::from_millis(50));
    let registry = AggregatorRegistry::new(aggregator.clone(), metrics.clone());
    let token = reg.token.expose().to_string();
    registry.register(reg.clone());
    registry.register(reg); // idempotent
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = aggregator.router();
    let server = tokio::spawn(volley_aggregator::server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    Harness {
        registry,
        metrics,
        base,
        token,
        http: reqwest::Client::new(),
        server,
    }
}

impl Harness {
    async fn ready(&self, index: u32) {
        let r = self
            .http
            .post(format!("{}{}", self.base, ready_path(RUN, index)))
            .bearer_auth(runner_credential(&self.token, index))
            .json(&ReadyRequest {
                protocol: PROTOCOL_VERSION,
                host: format!("web-runner-{index}"),
            })
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }

    async fn start(&self, index: u32) -> StartResponse {
        for _ in 0..100 {
            let r: StartResponse = self
                .http
                .get(format!("{}{}", self.base, start_path(RUN, index)))
                .bearer_auth(runner_credential(&self.token, index))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r != StartResponse::Wait {
                return r;
            }
            self.registry.aggregator().tick();
        }
        panic!("no start");
    }

    /// Runner `index` reports `requests` requests of 2 ms, `failures` of them failed.
    async fn report(&self, index: u32, seq: u64, requests: u64, failures: u64, done: bool) {
        let spec = registration("").spec;
        let mut m = RunMetrics::for_spec(&spec);
        let scenario = m.scenarios.iter().position(|s| s.name == "browse").unwrap();
        m.scenarios[scenario].iterations.iterations = requests;
        let step = m.step_mut(scenario, 0).unwrap();
        step.counters.requests = requests;
        step.counters.failures = failures;
        for _ in 0..requests {
            record_latency(&mut step.latency, Duration::from_millis(2));
            record_latency(&mut step.latency_sent, Duration::from_millis(2));
        }
        let report = Report::from_metrics(index, seq, Duration::from_secs(seq), done, &m).unwrap();
        let r = self
            .http
            .post(format!("{}{}", self.base, report_path(RUN, index)))
            .bearer_auth(runner_credential(&self.token, index))
            .json(&RunnerReport {
                report,
                first_request_unix_ms: None,
                error: None,
            })
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        self.registry.aggregator().tick();
    }
}

#[tokio::test]
async fn a_run_maps_from_barrier_to_a_passed_verdict() {
    let h = harness(registration(
        "runners: {parallelism: 2}\n  thresholds: ['error_rate < 50%', 'requests >= 10']",
    ))
    .await;
    let p = h.registry.progress(RUN).unwrap();
    assert_eq!((p.registered, p.running, p.done), (0, 0, 0));
    assert_eq!(p.started_at, None);
    assert_eq!(p.results, None, "no results before the start");
    assert_eq!(p.outcome, None);

    h.ready(0).await;
    h.ready(1).await;
    let StartResponse::Start {
        start_at_unix_ms, ..
    } = h.start(0).await
    else {
        panic!("runner 0 should start (no setup)");
    };
    assert!(matches!(h.start(1).await, StartResponse::Start { .. }));
    let p = h.registry.progress(RUN).unwrap();
    assert_eq!(p.registered, 2);
    assert_eq!(
        p.started_at.unwrap().as_millisecond(),
        start_at_unix_ms as i64
    );

    h.report(0, 1, 4, 1, false).await;
    h.report(1, 1, 6, 0, false).await;
    let p = h.registry.progress(RUN).unwrap();
    assert_eq!(p.running, 2);
    let results = p.results.unwrap();
    assert_eq!(results.metrics.as_ref().unwrap().requests, 10);
    assert_eq!(results.metrics.as_ref().unwrap().failures, 1);
    assert_eq!(results.verdict, None, "no verdict while running");
    assert_eq!(results.scenarios[0].scenario, "browse");
    assert_eq!(results.steps.len(), 1);
    assert_eq!(results.thresholds.len(), 2);

    // The live gauges follow the aggregator.
    h.registry.refresh_metrics();
    let text = h.metrics.encode();
    assert!(
        text.contains("volley_run_active_runners{namespace=\"team-a\",loadtest=\"web\"} 2"),
        "{text}"
    );

    h.report(0, 2, 8, 1, true).await;
    h.report(1, 2, 12, 0, true).await;
    let p = h.registry.progress(RUN).unwrap();
    assert_eq!(p.done, 2);
    let outcome = p.outcome.unwrap();
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    let results = p.results.unwrap();
    assert_eq!(results.metrics.unwrap().requests, 20);
    assert_eq!(results.verdict, Some(Verdict::Passed));
    assert!(results.thresholds.iter().all(|t| t.passed));

    let report = h.registry.report(RUN).unwrap();
    assert_eq!(report["name"], "web");
    assert_eq!(report["phase"], "Succeeded");
    assert_eq!(report["verdict"], "Passed");
    assert_eq!(report["metrics"]["requests"], 20);
    assert_eq!(report["histograms"]["steps"][0]["scenario"], "browse");
    assert!(!report["histograms"]["overall"].as_str().unwrap().is_empty());
    assert!(report.get("truncated").is_none());

    h.registry.forget(RUN);
    assert!(h.registry.progress(RUN).is_none());
    assert!(!h.metrics.encode().contains("loadtest=\"web\""));
}

#[tokio::test]
async fn failed_thresholds_abort_and_runner_failures_map() {
    let h = harness(registration(
        "runners: {parallelism: 2}\n  thresholds: ['error_rate < 1%']",
    ))
    .await;
    h.ready(0).await;
    h.ready(1).await;
    h.start(0).await;
    h.start(1).await;
    h.report(0, 1, 10, 5, true).await;
    h.registry
        .runner_failed(RUN, 1, "exited with code 137 (OOMKilled)");
    let p = h.registry.progress(RUN).unwrap();
    assert_eq!(p.failed.len(), 1);
    assert_eq!(p.failed[0].0, 1);
    assert!(p.failed[0].1.contains("OOMKilled"), "{:?}", p.failed);
    let outcome = p.outcome.expect("both runners settled");
    assert_ne!(outcome.phase, Phase::Succeeded);
    assert!(!outcome.reason.is_empty());

    let h = harness(registration("runners: {parallelism: 1}")).await;
    h.ready(0).await;
    h.start(0).await;
    h.report(0, 1, 3, 0, false).await;
    h.registry.abort(RUN, "stopped by spec.abort");
    h.registry.aggregator().tick();
    let p = h.registry.progress(RUN).unwrap();
    assert!(
        p.outcome.is_none(),
        "the runner still owes its final report"
    );
    h.report(0, 2, 4, 0, true).await;
    let p = h.registry.progress(RUN).unwrap();
    let outcome = p.outcome.unwrap();
    assert_eq!(outcome.phase, Phase::Aborted, "{outcome:?}");
    assert_eq!(p.results.unwrap().metrics.unwrap().requests, 4);
}

#[test]
fn a_registration_after_a_restart_resumes_the_start() {
    let mut reg = registration("runners: {parallelism: 3}");
    reg.started_at = Some(fixtures::t0());
    let config = run_config(&reg);
    assert_eq!(config.runners, 3);
    assert_eq!(
        config.started_at_unix_ms,
        Some(fixtures::t0().as_millisecond() as u64)
    );
    assert_eq!(config.name, "web");
    assert_eq!(config.token, reg.token.expose());
}

/// A deleted LoadTest's run: its gauges leave `/metrics` at once, its runner is told `stop`
/// and the run is let go once the runner acknowledged, not before.
#[tokio::test]
async fn a_deleted_loadtests_run_is_stopped_its_gauges_dropped_and_let_go_once_drained() {
    let h = harness(registration("runners: {parallelism: 1}")).await;
    h.ready(0).await;
    assert!(matches!(h.start(0).await, StartResponse::Start { .. }));
    h.report(0, 1, 4, 0, false).await;
    h.registry.refresh_metrics();
    assert!(h.metrics.encode().contains("loadtest=\"web\""));

    // Another LoadTest of the same name elsewhere is not concerned; a wrong uid neither.
    assert!(h.registry.loadtest_gone("team-b", "web", None).is_empty());
    assert!(
        h.registry
            .loadtest_gone("team-a", "web", Some("other-uid"))
            .is_empty()
    );
    assert_eq!(h.registry.loadtest_gone("team-a", "web", Some(RUN)), [RUN]);
    let text = h.metrics.encode();
    assert!(!text.contains("loadtest=\"web\""), "{text}");
    h.registry.refresh_metrics();
    assert!(
        !h.metrics.encode().contains("loadtest=\"web\""),
        "a scrape does not bring the gauges back"
    );
    h.registry.aggregator().tick();
    assert!(
        h.registry.progress(RUN).is_some(),
        "kept until the runner acknowledged the stop"
    );
    h.report(0, 2, 6, 0, true).await;
    h.registry.aggregator().tick();
    assert!(h.registry.progress(RUN).is_none(), "let go once drained");
    assert!(h.registry.loadtest_gone("team-a", "web", None).is_empty());
}

#[test]
fn the_start_barrier_follows_the_operators_timeout_from_the_runs_beginning() {
    let began = fixtures::t0();
    let later = |secs| fixtures::at(secs);
    let reg = registration("").with_start_timeout(Duration::from_secs(30), Some(began), later(10));
    assert_eq!(run_config(&reg).barrier_timeout, Duration::from_secs(20));
    let restarted =
        registration("").with_start_timeout(Duration::from_secs(30), Some(began), later(45));
    assert_eq!(
        run_config(&restarted).barrier_timeout,
        Duration::ZERO,
        "an operator that restarts after the limit does not wait again"
    );
    assert_eq!(
        run_config(&registration("")).barrier_timeout,
        volley_aggregator::run::DEFAULT_BARRIER_TIMEOUT
    );
}

/// Every run of a deleted LoadTest goes with it, its first run (id: the UID) and its re-runs
/// (`{uid}-r{n}`), and no run of another LoadTest whose UID merely starts the same way.
#[tokio::test]
async fn a_deleted_loadtest_takes_every_run_of_its_own_and_no_other() {
    let h = harness(registration("runners: {parallelism: 1}")).await;
    let rerun = crate::names::run_id(RUN, 2);
    for id in [rerun.as_str(), "run-10"] {
        h.registry.register(RunRegistration {
            run_id: id.into(),
            ..registration("runners: {parallelism: 1}")
        });
    }
    let mut gone = h.registry.loadtest_gone("team-a", "web", Some(RUN));
    gone.sort();
    assert_eq!(gone, [RUN.to_string(), rerun]);
    assert!(
        h.registry.progress("run-10").is_some(),
        "not this LoadTest's"
    );
}

/// A run with `spec.observe.prometheus` is not finished for the phase logic until Prometheus
/// has answered: then its `prom()` thresholds are judged on the results, which are in the
/// status's results and the report. A fake Prometheus on 127.0.0.1 answers 3 for every query.
#[tokio::test]
async fn a_run_waits_for_its_prometheus_results_and_is_judged_on_them() {
    use axum::extract::Query;
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;
    let asked: Arc<StdMutex<Vec<String>>> = Arc::default();
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(q["query"].clone());
                // Slower than the first look at the finished run.
                tokio::time::sleep(Duration::from_millis(300)).await;
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"3"]}]}}"#
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prom = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let h = harness(registration(&format!(
        "runners: {{parallelism: 1}}\n  thresholds: ['error_rate < 50%', 'prom(depth) < 2', \
         {{expr: 'prom(each) < 5', scenario: browse}}]\n  \
         observe: {{prometheus: {{url: '{prom}', queries: [{{name: depth, query: 'max_over_time(q[$__range])'}}, \
         {{name: each, query: 'e[$__range]', window: scenario}}]}}}}"
    )))
    .await;
    h.ready(0).await;
    assert!(matches!(h.start(0).await, StartResponse::Start { .. }));
    h.report(0, 1, 10, 0, true).await;

    let p = h.registry.progress(RUN).unwrap();
    assert_eq!(p.done, 1);
    assert_eq!(p.outcome, None, "finished only once Prometheus answered");
    assert_eq!(p.results.as_ref().unwrap().verdict, None);
    let mut outcome = None;
    for _ in 0..200 {
        let p = h.registry.progress(RUN).unwrap();
        if let Some(o) = p.outcome.clone() {
            outcome = Some((o, p.results.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (outcome, results) = outcome.expect("the run finishes once Prometheus answered");
    assert_eq!(outcome.phase, Phase::Failed, "{outcome:?}");
    assert_eq!(outcome.reason, "ThresholdsFailed");
    assert!(
        outcome.message.contains("prom(depth) 3 >= 2"),
        "{outcome:?}"
    );
    assert_eq!(results.verdict, Some(Verdict::Failed));
    assert_eq!(results.prometheus.len(), 2);
    assert_eq!(results.prometheus[0].value, Some(3.0));
    // The per-scenario query ran over the only scenario's window, and its scoped threshold
    // judged that result.
    assert_eq!(results.prometheus[1].scenario.as_deref(), Some("browse"));
    assert!(results.thresholds[2].passed, "{:?}", results.thresholds[2]);
    assert_eq!(results.thresholds[2].actual, "each (scenario browse): 3");
    assert!(
        results.thresholds[0].passed,
        "the load's own threshold held"
    );
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "each query once: {asked:?}");
    assert!(
        asked
            .iter()
            .any(|q| q.starts_with("max_over_time(q[") && q.ends_with("ms])")),
        "{asked:?}"
    );
    let report = h.registry.report(RUN).unwrap();
    assert_eq!(report["prometheus"]["results"][0]["value"], 3.0);
    server.abort();
}
