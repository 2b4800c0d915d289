//! The chart's Grafana dashboard (charts/volley/dashboards/volley.json) queries only metrics
//! the operator exports: every `volley_*` name in a panel or variable query must be a sample
//! name in the operator's own `/metrics` output (its metrics code, not a copy of the names),
//! with a run, a scenario, a websocket step, custom metrics and reconciles recorded so every
//! family has samples.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use volley_crds::status::{CustomMetricStatus, Phase, ScenarioStatus, StepStatus, WsStepStatus};
use volley_operator::telemetry::{OperatorMetrics, RunFigures};

const DASHBOARD: &str = include_str!("../../charts/volley/dashboards/volley.json");

/// Every string under the keys `expr`, `query` and `definition`: the queries Grafana sends.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr" | "query" | "definition", Value::String(q)) => out.push(q.clone()),
                    _ => queries(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// The `volley_*` metric names a query uses.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("volley_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_by_the_operator() {
    let metrics = OperatorMetrics::new();
    metrics.reconciled(true, Duration::from_millis(3));
    metrics.reconciled(false, Duration::from_millis(7));
    metrics.set_run(
        "team-a",
        "web",
        &RunFigures {
            active_runners: 2,
            scenarios: vec![ScenarioStatus {
                scenario: "browse".into(),
                requests: 10,
                rps: 5.0,
                p50_ms: 1.0,
                p95_ms: 2.0,
                p99_ms: 3.0,
                sustainable_rate: Some(400.0),
                ..ScenarioStatus::default()
            }],
            custom: vec![
                CustomMetricStatus {
                    name: "inference_latency".into(),
                    kind: "trend".into(),
                    count: 4,
                    missing: 1,
                    invalid: 1,
                    p50: Some(10.0),
                    p95: Some(20.0),
                    p99: Some(30.0),
                    ..CustomMetricStatus::default()
                },
                CustomMetricStatus {
                    name: "crisis_detections".into(),
                    kind: "counter".into(),
                    value: Some(2.0),
                    ..CustomMetricStatus::default()
                },
            ],
            websocket_steps: vec![StepStatus {
                scenario: "browse".into(),
                step: "stream".into(),
                websocket: Some(WsStepStatus {
                    open: 3,
                    open_max: 4,
                    refused: 1,
                    ..WsStepStatus::default()
                }),
                ..StepStatus::default()
            }],
        },
    );
    // Counter families have no sample line until a series exists: finish one run.
    metrics.status_written("team-a", "web", None, Some(Phase::Succeeded));
    let exported: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_string())
        .collect();

    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        used.contains("volley_runs_finished_total"),
        "no verdicts-over-time panel: {used:?}"
    );
    for family in [
        "volley_run_ws_open",
        "volley_run_ws_errors",
        "volley_run_custom_p95",
    ] {
        assert!(used.contains(family), "no panel charts {family}: {used:?}");
    }
    assert!(
        used.len() >= 8,
        "the dashboard queries too few metrics: {used:?}"
    );
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    // Every panel has a query and a data source.
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            !panel["targets"].as_array().unwrap().is_empty(),
            "{}",
            panel["title"]
        );
    }
}
