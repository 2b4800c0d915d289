//! End to end, for real: the operator's aggregator adapter ([`AggregatorRegistry`]) and its
//! HTTP server on 127.0.0.1, with two real `volley agent` processes standing in for runner
//! pods, loading the demo target. The run is driven only through [`RunRegistry`] (register,
//! then progress until the aggregator decides the outcome), as the controller drives it.
//!
//! The `volley` binary is built by this test with `cargo build -p volley-runner --bin volley`
//! (the cargo running the tests, same target directory), and its path is taken from cargo's
//! own JSON messages. A failing build fails the test; nothing is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use volley_aggregator::Aggregator;
use volley_core::manifest::parse_manifest;
use volley_crds::status::{Phase, Verdict};
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_operator::aggregator_registry::AggregatorRegistry;
use volley_operator::registry::{RunRegistration, RunRegistry};
use volley_operator::secret::Token;
use volley_operator::telemetry::OperatorMetrics;

use common::{spawn_agent, volley_binary};

const RUN: &str = "6f1c1d2e-0000-4000-8000-0000000000e2";
const RATE: u64 = 20;
const SECS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_run_a_loadtest_through_the_operators_aggregator() {
    let volley = tokio::task::spawn_blocking(volley_binary).await.unwrap();
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let manifest = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: e2e}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  \
         runners: {{parallelism: 2}}\n  \
         scenarios:\n  \
         - {{name: main, executor: constant-arrival-rate, rate: {RATE}, duration: {SECS}s, \
         maxVUs: 20, steps: [{{name: items, request: {{url: /api/items}}, check: {{status: [200]}}}}]}}\n  \
         thresholds: ['error_rate < 1%', 'p(95) < 2s', 'iterations == {}', 'checks > 99%']\n",
        target.base_url(),
        RATE * SECS
    );
    let spec = parse_manifest(&manifest).unwrap().spec;

    let metrics = Arc::new(OperatorMetrics::new());
    let aggregator = Aggregator::new();
    let registry = AggregatorRegistry::new(aggregator.clone(), metrics.clone());
    let token = Token::generate();
    registry.register(RunRegistration {
        run_id: RUN.into(),
        namespace: "team-a".into(),
        loadtest: "e2e".into(),
        spec,
        token: token.clone(),
        started_at: None,
        start_timeout: None,
        baseline: Default::default(),
        prometheus_credentials: Ok(None),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(volley_aggregator::server::serve(
        listener,
        aggregator.router(),
        std::future::pending(),
    ));
    let ticker = tokio::spawn(aggregator.clone().run_ticker());

    let mut agents: Vec<tokio::process::Child> = (0..2u32)
        .map(|index| spawn_agent(&volley, &url, RUN, index, token.expose()))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_running = false;
    let progress = loop {
        let p = registry.progress(RUN).expect("the run is registered");
        saw_running |= p.started_at.is_some() && p.outcome.is_none();
        if p.outcome.is_some() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish in 60 s: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(saw_running, "the run was seen running before it finished");
    for agent in &mut agents {
        let status = tokio::time::timeout(Duration::from_secs(30), agent.wait())
            .await
            .expect("the agent exits after its final report")
            .unwrap();
        assert!(status.success(), "agent exited with {status}");
    }

    let outcome = progress.outcome.clone().unwrap();
    assert_eq!(outcome.phase, Phase::Succeeded, "{outcome:?}");
    assert_eq!((progress.registered, progress.done), (2, 2));
    assert!(progress.failed.is_empty(), "{:?}", progress.failed);
    let results = progress.results.clone().unwrap();
    let m = results.metrics.unwrap();
    assert_eq!(
        m.iterations,
        RATE * SECS,
        "rate × duration iterations, exactly"
    );
    assert_eq!(m.requests, RATE * SECS);
    assert_eq!(m.failures, 0);
    assert_eq!(m.dropped_iterations, 0);
    assert_eq!(m.checks_pass_rate, Some(1.0));
    assert_eq!(
        target.stats().requests,
        RATE * SECS,
        "the target saw each one"
    );
    assert_eq!(results.verdict, Some(Verdict::Passed));
    assert_eq!(results.thresholds.len(), 4);
    assert!(
        results.thresholds.iter().all(|t| t.passed),
        "{:?}",
        results.thresholds
    );
    assert_eq!(results.scenarios[0].scenario, "main");
    assert_eq!(results.scenarios[0].iterations, RATE * SECS);
    assert_eq!(results.steps[0].step, "items");

    let report = registry.report(RUN).expect("a finished run has a report");
    assert_eq!(report["phase"], "Succeeded");
    assert_eq!(report["metrics"]["iterations"], RATE * SECS);
    assert_eq!(report["runners"], 2);
    assert!(!report["series"].as_array().unwrap().is_empty());
    assert_eq!(report["histograms"]["steps"][0]["step"], "items");

    registry.refresh_metrics();
    assert!(
        metrics
            .encode()
            .contains("volley_run_rps{namespace=\"team-a\",loadtest=\"e2e\",scenario=\"main\"}")
    );
    registry.forget(RUN);
    assert!(registry.progress(RUN).is_none());
    assert!(!metrics.encode().contains("loadtest=\"e2e\""));

    ticker.abort();
    server.abort();
    target.shutdown().await;
}
