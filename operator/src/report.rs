//! The full report of a finished run: `summary.json` (the shape `volley run --out` writes) in
//! the ConfigMap `{loadtest}-report` (`{loadtest}-report-r{n}` for re-run `n`, see
//! [`crate::names::report_name`]), owned by the LoadTest.
//!
//! A ConfigMap holds at most 1 MiB. When the report does not fit, its series are downsampled
//! first: the finest level of detail that fits (newest points per second, older ones in
//! exact 10 s, 60 s, ... buckets; `seriesResolution` says which) is chosen, so a soak of hours
//! or days keeps every series. Only what cannot be downsampled is dropped, when even the
//! coarsest series do not fit: the per-step histograms first, then the per-scenario and the
//! overall series, and `truncated` says what was left out; the status keeps its own bounded
//! copy of the figures either way.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use volley_aggregator::RunView;
use volley_aggregator::series::SeriesArchive;
use volley_aggregator::summary::{RunSummary, downsample_to_fit, run_verdict, summarize};
use volley_crds::LoadTestStatus;
use volley_crds::status::Verdict;

use crate::names::RunRef;

/// The key of the report in its ConfigMap (the API's, so `volley kube run` reads it too).
pub use volley_crds::status::REPORT_KEY;
/// Largest report written: the API server refuses ConfigMaps over 1 MiB, and the object's
/// metadata needs some room.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024 - 16 * 1024;

/// The verdict of a view: known once the run ended (and not in Error); Passed without
/// thresholds.
pub fn view_verdict(view: &RunView) -> Option<Verdict> {
    let end = view.end.as_ref()?;
    run_verdict(end.phase, &view.thresholds)
}

/// The summary document of `view` (exactly what `volley run --out` writes, see
/// [`volley_aggregator::summary`]), fitted into [`MAX_REPORT_BYTES`].
pub fn summary_json(view: &RunView) -> Value {
    fit_summary(
        summarize(&view.name, view),
        &view.series_archive,
        MAX_REPORT_BYTES,
    )
}

/// `summary` fitted into `limit` bytes as [`report_configmap`] stores it: its series at the
/// finest level of detail of `archive` that fits; only when even the coarsest does not, parts
/// are left out by [`fit`] (the per-step histograms first, and the series get the room
/// they leave).
pub fn fit_summary(mut summary: RunSummary, archive: &SeriesArchive, limit: usize) -> Value {
    let size = |s: &RunSummary| {
        serde_json::to_string_pretty(s)
            .map(|t| t.len())
            .unwrap_or(usize::MAX)
    };
    if !downsample_to_fit(&mut summary, archive, |s| size(s) <= limit) {
        let steps = std::mem::take(&mut summary.histograms.steps);
        let without = size(&summary);
        summary.histograms.steps = steps;
        let step_bytes = size(&summary).saturating_sub(without);
        downsample_to_fit(&mut summary, archive, |s| {
            size(s).saturating_sub(step_bytes) <= limit
        });
    }
    match serde_json::to_value(&summary) {
        Ok(value) => fit(value, limit),
        Err(e) => {
            json!({"name": summary.name, "error": format!("cannot encode the report: {e}")})
        }
    }
}

/// `summary` with per-step histograms, then the series, dropped until it serializes to at most
/// `limit` bytes (what downsampling could not save, see [`fit_summary`]); `truncated` lists
/// what was dropped. Measured as [`report_configmap`] stores
/// it (pretty-printed): the indentation of a long series is far more than the headroom.
pub fn fit(mut summary: Value, limit: usize) -> Value {
    let size = |v: &Value| {
        serde_json::to_string_pretty(v)
            .map(|s| s.len())
            .unwrap_or(usize::MAX)
    };
    let mut dropped = Vec::new();
    if size(&summary) > limit {
        summary["histograms"]["steps"] = json!([]);
        dropped.push("histograms.steps");
    }
    if size(&summary) > limit && summary.get("scenarioSeries").is_some() {
        summary["scenarioSeries"] = json!([]);
        dropped.push("scenarioSeries");
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
            name: Some(run.report_name.clone()),
            namespace: Some(run.namespace.clone()),
            labels: Some(run.labels()),
            owner_references: Some(vec![run.owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(REPORT_KEY.to_string(), text)])),
        ..ConfigMap::default()
    }
}

/// The report ConfigMap of a finished run: the aggregator's `summary` with the final status's
/// phase, reason and message, which the operator decides (it may end a run the aggregator has
/// not, e.g. on `spec.abort` or a timeout).
pub fn final_report(run: &RunRef, mut summary: Value, status: &LoadTestStatus) -> ConfigMap {
    if let Some(fields) = summary.as_object_mut() {
        if let Ok(phase) = serde_json::to_value(status.phase) {
            fields.insert("phase".into(), phase);
        }
        for (key, value) in [("reason", &status.reason), ("message", &status.message)] {
            if let Some(value) = value {
                fields.insert(key.into(), Value::String(value.clone()));
            }
        }
    }
    report_configmap(run, &summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        use crate::names::{MAX_OBJECT_NAME, report_name};
        assert_eq!(report_name("web", 1), "web-report");
        assert!(report_name(&"x".repeat(300), 7).len() <= MAX_OBJECT_NAME);
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
    fn per_scenario_series_go_before_the_overall_series() {
        let points: Vec<Value> = (0..50).map(|i| json!({"second": i, "rps": 1})).collect();
        let summary = json!({
            "name": "web",
            "series": [{"second": 1}],
            "scenarioSeries": [{"scenario": "a", "points": points}],
            "histograms": {"steps": []},
        });
        let cut = fit(summary, 500);
        assert_eq!(cut["scenarioSeries"], json!([]));
        assert_eq!(cut["series"], json!([{"second": 1}]));
        assert_eq!(
            cut["truncated"]["dropped"],
            json!(["histograms.steps", "scenarioSeries"])
        );
    }

    #[test]
    fn a_report_is_measured_as_it_is_stored() {
        let series: Vec<Value> = (0..100).map(|i| json!({"second": i, "rps": 1})).collect();
        let summary = json!({"name": "web", "series": series, "histograms": {"steps": []}});
        let compact = serde_json::to_string(&summary).unwrap().len();
        let pretty = serde_json::to_string_pretty(&summary).unwrap().len();
        assert!(compact < pretty);
        // Fits compact, not as stored: the series goes.
        let cut = fit(summary.clone(), (compact + pretty) / 2);
        assert_eq!(cut["series"], json!([]));
        assert!(fit(summary.clone(), pretty).get("truncated").is_none());
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

    #[test]
    fn the_final_report_carries_the_operators_ending() {
        let lt = crate::fixtures::loadtest("web", 2);
        let run = RunRef::of(&lt).unwrap();
        // The aggregator saw a run still going; the operator aborted it.
        let summary = json!({"name": "web", "phase": "Running", "reason": null, "requests": 7});
        let status = LoadTestStatus {
            phase: Some(volley_crds::status::Phase::Aborted),
            reason: Some("Aborted".into()),
            message: Some("spec.abort was set".into()),
            ..LoadTestStatus::default()
        };
        let cm = final_report(&run, summary, &status);
        let report: Value = serde_json::from_str(&cm.data.unwrap()[REPORT_KEY]).unwrap();
        assert_eq!(report["phase"], "Aborted");
        assert_eq!(report["reason"], "Aborted");
        assert_eq!(report["message"], "spec.abort was set");
        assert_eq!(report["requests"], 7, "the figures are the aggregator's");
    }

    /// A soak of `hours` at ~50 requests/s with the overall series and one scenario's, a
    /// report every `every` seconds (with a few ms of jitter, as real ticks have).
    fn soak(hours: u64, every: u64) -> (RunSummary, SeriesArchive) {
        use std::time::Duration;
        use volley_aggregator::series::SeriesBuilder;
        use volley_core::metrics::histogram::record_latency;
        use volley_core::metrics::series::SeriesSnapshot;
        let mut b = SeriesBuilder::new();
        let mut cumulative = SeriesSnapshot::default();
        let end = hours * 3_600;
        for second in (every..=end).step_by(every as usize) {
            for i in 0..50 * every {
                let us = 8_000 + (second * 7_919 + i * 104_729) % 290_000;
                record_latency(&mut cumulative.latency, Duration::from_micros(us));
            }
            cumulative.requests += 50 * every;
            cumulative.failures += second % 2;
            let jitter = (second * 7) % 13;
            b.push(
                cumulative.clone(),
                Duration::from_millis(second * 1_000 + 200 + jitter),
            );
        }
        b.finish(cumulative, Duration::from_millis(end * 1_000 + 600));
        let archive = SeriesArchive {
            overall: b.tiers().clone(),
            scenarios: vec![("steady".into(), b.tiers().clone())],
        };
        let lt = crate::fixtures::loadtest("checkout-soak", 2);
        let summary = volley_aggregator::summary::build_summary(
            "checkout-soak",
            volley_aggregator::end::RunEnd::new(
                volley_crds::status::Phase::Succeeded,
                "ThresholdsPassed",
                "every threshold passed",
            ),
            2,
            Duration::from_secs(end),
            None,
            &volley_core::metrics::model::RunMetrics::for_spec(&lt.spec),
            &[],
            Vec::new(),
        );
        (summary, archive)
    }

    #[test]
    fn a_four_hour_soak_fits_with_both_series_downsampled() {
        let (summary, archive) = soak(4, 1);
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap().len();
        // Every second of both series would not fit: 14 400 points each.
        let mut every_second = summary.clone();
        volley_aggregator::summary::downsample_to_fit(&mut every_second, &archive, |_| true);
        let report = fit_summary(summary, &archive, MAX_REPORT_BYTES);
        let size = pretty(&report);
        println!(
            "4-hour soak: finest level {} bytes ({} points per series), report {size} bytes, resolution {}",
            pretty(&serde_json::to_value(&every_second).unwrap()),
            every_second.series.len(),
            report["seriesResolution"]
        );
        assert!(size <= MAX_REPORT_BYTES, "{size}");
        assert!(report.get("truncated").is_none(), "{}", report["truncated"]);
        let series = report["series"].as_array().unwrap();
        let scenario = report["scenarioSeries"][0]["points"].as_array().unwrap();
        assert!(series.len() > 200 && series.len() == scenario.len());
        // Both series cover the whole run: 4 hours of requests, none dropped.
        let requests = |points: &[Value]| {
            points
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum::<u64>()
        };
        assert_eq!(requests(series), 50 * 14_400);
        assert_eq!(requests(scenario), 50 * 14_400);
        // The newest stretch is per second, older ones coarser, and the report says so.
        let resolution = report["seriesResolution"].as_array().unwrap();
        assert_eq!(resolution.last().unwrap()["intervalSeconds"], 1);
        assert_eq!(resolution.first().unwrap()["fromSecond"], 0);
        assert!(
            resolution.first().unwrap()["intervalSeconds"]
                .as_u64()
                .unwrap()
                >= 10
        );
        assert_eq!(
            series.first().unwrap()["intervalMs"].as_u64().unwrap() / 1000,
            resolution.first().unwrap()["intervalSeconds"]
                .as_u64()
                .unwrap()
        );
    }

    /// `examples/soak.yaml`: 2 hours, one scenario. Its comments promise the last 15 minutes
    /// per second, the 75 before in 10 s buckets and the first 30 minutes in 60 s buckets.
    #[test]
    fn the_two_hour_soak_example_keeps_what_its_comments_say() {
        let (summary, archive) = soak(2, 1);
        let report = fit_summary(summary, &archive, MAX_REPORT_BYTES);
        assert!(report.get("truncated").is_none());
        let stretches: Vec<(u64, u64, u64)> = report["seriesResolution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let n = |k: &str| r[k].as_u64().unwrap();
                (n("fromSecond"), n("toSecond"), n("intervalSeconds"))
            })
            .collect();
        assert_eq!(
            stretches,
            [(0, 1_800, 60), (1_800, 6_300, 10), (6_300, 7_201, 1)]
        );
    }

    #[test]
    fn a_day_long_soak_fits_too() {
        // A report a minute keeps the test quick; every tier still fills.
        let (summary, archive) = soak(24, 60);
        let report = fit_summary(summary, &archive, MAX_REPORT_BYTES);
        let size = serde_json::to_string_pretty(&report).unwrap().len();
        println!(
            "24-hour soak: report {size} bytes, resolution {}",
            report["seriesResolution"]
        );
        assert!(size <= MAX_REPORT_BYTES && report.get("truncated").is_none());
        assert_eq!(
            report["scenarioSeries"][0]["points"]
                .as_array()
                .unwrap()
                .len(),
            report["series"].as_array().unwrap().len()
        );
    }

    #[test]
    fn series_are_downsampled_before_anything_is_dropped_and_fill_the_room_step_histograms_leave() {
        let (mut summary, archive) = soak(1, 1);
        summary.histograms.steps = vec![volley_aggregator::summary::StepHistogram {
            scenario: "steady".into(),
            step: "list-items".into(),
            latency: "x".repeat(150_000),
        }];
        // Room for the document without the step histogram at some coarser level only.
        let limit = 120_000;
        let report = fit_summary(summary, &archive, limit);
        assert!(serde_json::to_string_pretty(&report).unwrap().len() <= limit);
        assert_eq!(report["truncated"]["dropped"], json!(["histograms.steps"]));
        // Not left at the coarsest level the first search ended on: the newest stretch is
        // per second again.
        assert_eq!(
            report["seriesResolution"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()["intervalSeconds"],
            1
        );
        assert!(report["series"].as_array().unwrap().len() > 100);
        assert!(
            !report["scenarioSeries"][0]["points"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}
