//! `volley run` with `spec.observe.prometheus`, in-process against the demo target and a fake
//! Prometheus on 127.0.0.1: the queries cover the run's window, a query that fails (several
//! series, Prometheus refusing it) fails only the `prom()` thresholds on it, with its message,
//! and the load results are all kept. The real Prometheus is `.ci/check-prometheus.sh`'s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use volley_crds::status::Phase;
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::engine::FileRoots;
use volley_runner::local::{Progress, exit_code, run_local};

use support::{bounded, valid_manifest};

/// Every query string the fake Prometheus was asked, in order.
type Asked = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// A Prometheus instant-query API on 127.0.0.1 that answers each query with `answer(query)`
/// and records what it was asked: its URL, the record, and the server task.
async fn fake_prometheus(
    answer: fn(&str) -> (StatusCode, String),
) -> (String, Asked, tokio::task::JoinHandle<()>) {
    let asked: Asked = Arc::default();
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/api/v1/query",
        axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(q.clone());
                answer(q.get("query").map_or("", String::as_str))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, asked, server)
}

/// A successful instant-query answer holding `series` (comma-separated JSON objects).
fn vector(series: &str) -> String {
    format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#)
}

#[tokio::test]
async fn a_failed_query_fails_only_its_thresholds_and_the_load_results_stay() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let (prom, asked, server) = fake_prometheus(|query| match query {
        "per_pod" => (
            StatusCode::OK,
            vector(
                r#"{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}"#,
            ),
        ),
        "broken(" => (
            StatusCode::BAD_REQUEST,
            r#"{"status":"error","errorType":"bad_data","error":"unexpected end of input"}"#
                .to_string(),
        ),
        _ => (
            StatusCode::OK,
            vector(r#"{"metric":{},"value":[1,"0.25"]}"#),
        ),
    })
    .await;

    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: observed}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  scenarios:\n  - {{name: s, executor: shared-iterations, \
         vus: 2, iterations: 20, steps: [{{request: {{url: /api/items}}}}]}}\n  \
         observe: {{prometheus: {{url: '{prom}', queries: [{{name: p95, query: 'x[$__range]'}}, \
         {{name: per_pod, query: per_pod}}, {{name: broken, query: 'broken('}}]}}}}\n  \
         thresholds: ['requests >= 20', 'prom(p95) < 0.5', 'prom(per_pod) < 10', 'prom(broken) < 1']\n",
        target.base_url()
    );
    let lt = valid_manifest(&yaml);
    let s = bounded(
        Duration::from_secs(60),
        run_local(&lt, &FileRoots::default(), Progress::Quiet),
    )
    .await;

    assert_eq!(s.metrics.requests, 20, "the load results are kept");
    assert_eq!(target.stats().processed, 20);
    let judged: Vec<(&str, bool, &str)> = s
        .thresholds
        .iter()
        .map(|t| (t.expr.as_str(), t.passed, t.actual.as_str()))
        .collect();
    assert_eq!(
        judged,
        vec![
            ("requests >= 20", true, "20"),
            ("prom(p95) < 0.5", true, "0.25"),
            (
                "prom(per_pod) < 10",
                false,
                "the query returned 2 series where one was expected: {pod=\"a\"}, {pod=\"b\"}; \
                 aggregate them (e.g. sum(...) or max(...)) or narrow the selector"
            ),
            (
                "prom(broken) < 1",
                false,
                "Prometheus refused the query (bad_data): unexpected end of input"
            ),
        ]
    );
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason.as_deref(), Some("ThresholdsFailed"));
    assert_eq!(exit_code(&s), 99);
    // The window is the run's: `$__range` is its length, the query evaluated at its end.
    let observed = s.prometheus.as_ref().unwrap();
    let length = observed.window.length_ms();
    assert_eq!(
        length as f64 / 1000.0,
        (s.duration_seconds * 1000.0).round() / 1000.0
    );
    let asked = asked.lock().unwrap().clone();
    let p95 = asked.iter().find(|q| q["query"].starts_with("x[")).unwrap();
    assert_eq!(p95["query"], format!("x[{}ms]", length.max(1)));
    assert_eq!(
        p95["time"],
        volley_observe::promql::unix_seconds(observed.window.end_unix_ms)
    );
    server.abort();
    target.shutdown().await;
}

/// A `by: pod` query reports one value per pod and its threshold names the pod that fails; a
/// `window: scenario` query runs once per scenario over that scenario's own window, and a
/// threshold scoped to a scenario judges that scenario's result.
#[tokio::test]
async fn by_label_and_per_scenario_queries_are_judged_each_on_their_own() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let (prom, asked, server) = fake_prometheus(|query| {
        if query == "per_pod" {
            return (
                StatusCode::OK,
                vector(
                    r#"{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"20"]}"#,
                ),
            );
        }
        // `w[NNNms]`: the window's length in seconds, to tell the windows apart.
        let ms: f64 = query
            .trim_start_matches("w[")
            .trim_end_matches("ms]")
            .parse()
            .unwrap_or(-1.0);
        (
            StatusCode::OK,
            vector(&format!(r#"{{"metric":{{}},"value":[1,"{}"]}}"#, ms / 1000.0)),
        )
    })
    .await;

    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: observed}}\nspec:\n  \
         target: {{baseUrl: '{}'}}\n  scenarios:\n  \
         - {{name: warm, executor: constant-vus, vus: 1, duration: 1s, \
         steps: [{{request: {{url: /api/items}}}}, {{sleep: 100ms}}]}}\n  \
         - {{name: peak, executor: constant-vus, vus: 1, startTime: 1s, duration: 2s, \
         steps: [{{request: {{url: /api/items}}}}, {{sleep: 100ms}}]}}\n  \
         observe: {{prometheus: {{url: '{prom}', queries: [{{name: pods, query: per_pod, by: pod}}, \
         {{name: span, query: 'w[$__range]', window: scenario}}]}}}}\n  \
         thresholds: ['prom(pods) < 10', {{expr: 'prom(span) < 1.5', scenario: warm}}, \
         {{expr: 'prom(span) < 1.5', scenario: peak}}]\n",
        target.base_url()
    );
    let lt = valid_manifest(&yaml);
    let s = bounded(
        Duration::from_secs(60),
        run_local(&lt, &FileRoots::default(), Progress::Quiet),
    )
    .await;

    assert!(s.metrics.requests > 0, "the load results are kept");
    let judged: Vec<(&str, bool, &str)> = s
        .thresholds
        .iter()
        .map(|t| (t.expr.as_str(), t.passed, t.actual.as_str()))
        .collect();
    // peak's window runs from 1 s to its planned end at 3 s, capped at the run's end.
    let peak = s.prometheus.as_ref().unwrap().results[3].value.unwrap();
    assert!((1.5..=2.0).contains(&peak), "{peak}");
    assert_eq!(
        judged,
        vec![
            ("prom(pods) < 10", false, "pods{pod=\"b\"}: 20"),
            ("prom(span) < 1.5", true, "span (scenario warm): 1"),
            (
                "prom(span) < 1.5",
                false,
                format!("span (scenario peak): {peak}").as_str()
            ),
        ]
    );
    let observed = s.prometheus.as_ref().unwrap();
    let labels: Vec<String> = observed
        .results
        .iter()
        .map(volley_core::observe::result_label)
        .collect();
    assert_eq!(
        labels,
        vec![
            "pods{pod=\"a\"}",
            "pods{pod=\"b\"}",
            "span (scenario warm)",
            "span (scenario peak)"
        ]
    );
    // warm's query is evaluated at its own end, 1 s into the run.
    let asked = asked.lock().unwrap().clone();
    let warm = asked.iter().find(|q| q["query"] == "w[1000ms]").unwrap();
    assert_eq!(
        warm["time"],
        volley_observe::promql::unix_seconds(observed.window.start_unix_ms + 1000)
    );
    server.abort();
    target.shutdown().await;
}
