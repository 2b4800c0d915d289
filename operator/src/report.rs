//! The full report of a finished run: `summary.json` (the shape `volley run --out` writes) in
//! the ConfigMap `{loadtest}-report`, owned by the LoadTest.
//!
//! A ConfigMap holds at most 1 MiB. When the report does not fit, the per-step histograms are
//! dropped first, then the per-second series, and `truncated` says what was left out; the
//! status keeps its own bounded copy of the figures either way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use volley_aggregator::{RunEnd, RunView};
use volley_crds::metrics::{self, encode_histogram, latency_ms};
use volley_crds::status::{Phase, Verdict};

use crate::names::{MAX_OBJECT_NAME, RunRef, bounded};

/// The key of the report in its ConfigMap.
pub const REPORT_KEY: &str = "summary.json";
/// Largest report written: the API server refuses ConfigMaps over 1 MiB, and the object's
/// metadata needs some room.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// Per-step rows kept in the report.
const MAX_STEP_ROWS: usize = 1_000;

/// Name of the report ConfigMap of `loadtest`.
pub fn report_name(loadtest: &str) -> String {
    bounded(loadtest, "-report", MAX_OBJECT_NAME)
}

/// The verdict of a view: known once the run ended (and not in Error); Passed without
/// thresholds.
pub fn view_verdict(view: &RunView) -> Option<Verdict> {
    let end = view.end.as_ref()?;
    match end.phase {
        Phase::Error => None,
        _ if view.thresholds.is_empty() => Some(Verdict::Passed),
        _ => Some(metrics::verdict(&view.thresholds)),
    }
}

/// `summary.json` of a finished (or stopped) run, as `volley run --out` writes it, bounded to
/// [`MAX_REPORT_BYTES`] when serialized.
pub fn summary_json(view: &RunView) -> Value {
    let overall = view.merged.overall();
    let end = view.end.clone().unwrap_or(RunEnd {
        phase: Phase::Error,
        reason: Some("Unfinished".into()),
        message: Some("the run had not finished when the report was written".into()),
    });
    let steps: Vec<Value> = view
        .merged
        .scenarios
        .iter()
        .flat_map(|sc| sc.steps.iter().map(move |st| (sc, st)))
        .map(|(sc, st)| {
            json!({
                "scenario": sc.name,
                "step": st.name,
                "latency": encode_histogram(&st.m.latency).unwrap_or_default(),
            })
        })
        .collect();
    let failures: Vec<Value> = view
        .failures
        .iter()
        .map(|f| {
            let mut row = json!({"index": f.index, "reason": f.reason});
            if !f.host.is_empty() {
                row["host"] = json!(f.host);
            }
            if let Some(at) = f.at {
                row["atSeconds"] = json!(at.as_secs_f64());
            }
            row
        })
        .collect();
    let mut summary = json!({
        "name": view.name,
        "phase": end.phase,
        "durationSeconds": view.elapsed.as_secs_f64(),
        "runners": view.runners,
        "metrics": metrics::metrics_status(&overall, view.elapsed),
        "latencySentMs": latency_ms(&overall.latency_sent),
        "thresholds": view.thresholds.iter().map(|t| &t.status).collect::<Vec<_>>(),
        "scenarios": metrics::scenario_statuses(&view.merged, view.elapsed),
        "steps": metrics::step_statuses(&view.merged, MAX_STEP_ROWS),
        "series": view.series,
        "histograms": {
            "overall": encode_histogram(&overall.latency).unwrap_or_default(),
            "steps": steps,
        },
    });
    let extra = [
        ("verdict", view_verdict(view).map(|v| json!(v))),
        ("reason", end.reason.map(Value::String)),
        ("message", end.message.map(Value::String)),
        (
            "startSkewMs",
            view.start_skew.map(|d| json!(d.as_secs_f64() * 1000.0)),
        ),
        (
            "runnerFailures",
            (!failures.is_empty()).then(|| json!(failures)),
        ),
    ];
    for (key, value) in extra {
        if let Some(value) = value {
            summary[key] = value;
        }
    }
    fit(summary, MAX_REPORT_BYTES)
}

/// `summary` with per-step histograms, then the series, dropped until it serializes to at most
/// `limit` bytes; `truncated` lists what was dropped.
pub fn fit(mut summary: Value, limit: usize) -> Value {
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    let mut dropped = Vec::new();
    if size(&summary) > limit {
        summary["histograms"]["steps"] = json!([]);
        dropped.push("histograms.steps");
    }
    if size(&summary) > limit {
        summary["series"] = json!([]);
        dropped.push("series");
    }
    if size(&summary) > limit {
        summary["steps"] = json!([]);
        dropped.push("steps");
    }
    if !dropped.is_empty() {
        summary["truncated"] = json!({
            "dropped": dropped,
            "why": format!("the report exceeded the {limit}-byte ConfigMap budget"),
        });
    }
    summary
}

/// The report ConfigMap of `run` holding `summary`, owned by the LoadTest.
pub fn report_configmap(run: &RunRef, summary: &Value) -> ConfigMap {
    let text = serde_json::to_string_pretty(summary).unwrap_or_else(|_| "{}".into());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(report_name(&run.loadtest)),
            namespace: Some(run.namespace.clone()),
            labels: Some(run.labels()),
            owner_references: Some(vec![run.owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(REPORT_KEY.to_string(), text)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        assert_eq!(report_name("web"), "web-report");
        assert!(report_name(&"x".repeat(300)).len() <= MAX_OBJECT_NAME);
    }

    #[test]
    fn oversized_reports_drop_step_histograms_first() {
        let summary = json!({
            "name": "web",
            "series": [{"second": 1}],
            "steps": [{"scenario": "a", "step": "b"}],
            "histograms": {"overall": "AAAA", "steps": [{"latency": "x".repeat(2000)}]},
        });
        let kept = fit(summary.clone(), 10_000);
        assert_eq!(kept, summary, "a report that fits is unchanged");
        let cut = fit(summary, 1_000);
        assert_eq!(cut["histograms"]["steps"], json!([]));
        assert_eq!(cut["histograms"]["overall"], "AAAA");
        assert_eq!(cut["series"], json!([{"second": 1}]));
        assert_eq!(cut["truncated"]["dropped"], json!(["histograms.steps"]));
    }

    #[test]
    fn the_configmap_is_owned_and_keyed() {
        let lt = crate::fixtures::loadtest("web", 2);
        let run = RunRef::of(&lt).unwrap();
        let cm = report_configmap(&run, &json!({"name": "web"}));
        assert_eq!(cm.metadata.name.as_deref(), Some("web-report"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "LoadTest");
        assert_eq!(owner.uid, crate::fixtures::UID);
        let data = cm.data.unwrap();
        let parsed: Value = serde_json::from_str(&data[REPORT_KEY]).unwrap();
        assert_eq!(parsed["name"], "web");
    }
}
