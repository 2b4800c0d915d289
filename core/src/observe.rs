//! What the system under test measured during a run, as Prometheus saw it: the results of the
//! `spec.observe.prometheus` queries over the run's window. Plain data shared by the summary
//! document, the report, `prom(NAME)` thresholds and `volley compare`; the queries themselves
//! are run by the `volley-observe` crate.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use volley_crds::spec::{LoadTestSpec, PrometheusQuery};
use volley_crds::status::PrometheusResult;

use crate::plan;

/// The run's load window in Unix milliseconds: from the common start (after the start barrier
/// and setup) to the end of the merged data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// When the load started.
    pub start_unix_ms: u64,
    /// When the load ended.
    pub end_unix_ms: u64,
}

impl Window {
    /// The window's length in milliseconds (zero for a reversed window).
    pub fn length_ms(&self) -> u64 {
        self.end_unix_ms.saturating_sub(self.start_unix_ms)
    }
}

/// Where one scenario's load lies in the run, as offsets from the run's start: from its
/// `startTime` to its planned end (`startTime` plus its duration, stages or `maxDuration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioSpan {
    /// The scenario's name.
    pub scenario: String,
    /// Its `startTime`.
    pub from: Duration,
    /// Its planned end.
    pub to: Duration,
}

/// The spans of the spec's scenarios, in the spec's order (what `window: scenario` queries
/// cover).
pub fn scenario_spans(spec: &LoadTestSpec) -> Vec<ScenarioSpan> {
    spec.scenarios
        .iter()
        .map(|s| ScenarioSpan {
            scenario: s.name.clone(),
            from: s.start_time.get(),
            to: plan::scenario_duration(s),
        })
        .collect()
}

/// Each span's window within the run's `window`: both edges capped at the run's end, so a
/// scenario a run stopped early covers only what ran (an empty window when it never started).
pub fn scenario_windows(spans: &[ScenarioSpan], window: Window) -> Vec<(String, Window)> {
    let at = |offset: Duration| {
        let ms = u64::try_from(offset.as_millis()).unwrap_or(u64::MAX);
        window
            .start_unix_ms
            .saturating_add(ms)
            .min(window.end_unix_ms)
    };
    spans
        .iter()
        .map(|s| {
            (
                s.scenario.clone(),
                Window {
                    start_unix_ms: at(s.from),
                    end_unix_ms: at(s.to),
                },
            )
        })
        .collect()
}

/// A result as the report and messages name it: `depth`, `depth{pod="a"}`, `depth (scenario
/// s)`.
pub fn result_label(r: &PrometheusResult) -> String {
    let mut label = r.name.clone();
    match (&r.by, &r.label_value) {
        (Some(by), Some(value)) => label.push_str(&format!("{{{by}={value:?}}}")),
        (Some(by), None) => label.push_str(&format!("{{{by}=...}}")),
        _ => {}
    }
    if let Some(s) = &r.scenario {
        label.push_str(&format!(" (scenario {s})"));
    }
    label
}

/// The most Prometheus results `status.prometheus` holds (a `by` query has up to 51, a
/// `window: scenario` query one per scenario): the summary and the report have them all.
pub const MAX_STATUS_PROMETHEUS_RESULTS: usize = 100;

/// The Prometheus queries' results for one run: in `summary.json` as `prometheus`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// The window the queries covered.
    pub window: Window,
    /// One result per query, in the spec's order.
    pub results: Vec<PrometheusResult>,
    /// The `series: true` queries over the window, for the report's charts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ObservedSeries>,
}

impl Observation {
    /// The results of queries that could not be run at all, each failed with `why`.
    pub fn unavailable(queries: &[PrometheusQuery], window: Window, why: &str) -> Observation {
        Observation {
            window,
            results: queries
                .iter()
                .map(|q| PrometheusResult {
                    name: q.name.clone(),
                    query: q.query.clone(),
                    value: None,
                    error: Some(why.to_string()),
                    ..PrometheusResult::default()
                })
                .collect(),
            series: Vec::new(),
        }
    }

    /// The value of query `name`, or why there is none (the query's error, or that no query
    /// of that name ran).
    pub fn value(&self, name: &str) -> Result<f64, String> {
        match self.results.iter().find(|r| r.name == name) {
            None => Err(format!("no Prometheus query named {name} ran")),
            Some(r) => match (r.value, &r.error) {
                (Some(v), _) => Ok(v),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err("no data".to_string()),
            },
        }
    }
}

impl Observation {
    /// The results a `prom(name)` threshold judges: every result of query `name` (one per
    /// label value for a `by` query), only `scenario`'s when the threshold is scoped to one
    /// (a result that covers no particular scenario, such as a failure of every query,
    /// counts for all). Empty when no such query ran.
    pub fn results_of(&self, name: &str, scenario: Option<&str>) -> Vec<&PrometheusResult> {
        self.results
            .iter()
            .filter(|r| r.name == name)
            .filter(|r| match (scenario, &r.scenario) {
                (Some(want), Some(s)) => want == s,
                _ => true,
            })
            .collect()
    }

    /// The results for `status.prometheus`: the first [`MAX_STATUS_PROMETHEUS_RESULTS`] in
    /// the spec's order, each query's failures first so a failed query is never the one left
    /// out.
    pub fn status_results(&self) -> Vec<PrometheusResult> {
        let mut kept: Vec<usize> = (0..self.results.len()).collect();
        // Stable: the spec's order is kept within the failed and within the valued results.
        kept.sort_by_key(|&i| self.results[i].value.is_some());
        kept.truncate(MAX_STATUS_PROMETHEUS_RESULTS);
        kept.sort_unstable();
        kept.into_iter().map(|i| self.results[i].clone()).collect()
    }

    /// The value of the result matching `r` (same query, scenario and label value), for a
    /// baseline comparison.
    pub fn matching(&self, r: &PrometheusResult) -> Option<f64> {
        self.results
            .iter()
            .find(|o| {
                o.name == r.name && o.scenario == r.scenario && o.label_value == r.label_value
            })?
            .value
    }
}

/// One query sampled over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSeries {
    /// The query's name.
    pub name: String,
    /// Seconds between samples.
    pub step_seconds: f64,
    /// The samples, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<ObservedPoint>,
    /// Why there are no samples, when the range query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One sample of an [`ObservedSeries`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedPoint {
    /// Seconds since the window's start.
    pub t: f64,
    /// The value.
    pub v: f64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn result(name: &str, value: Option<f64>, error: Option<&str>) -> PrometheusResult {
        PrometheusResult {
            name: name.into(),
            query: "q".into(),
            value,
            error: error.map(String::from),
            ..PrometheusResult::default()
        }
    }

    #[test]
    fn each_scenario_window_is_its_planned_span_within_the_run() {
        let yaml = "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: t}\nspec:\n  \
             target: {baseUrl: 'http://127.0.0.1:1'}\n  scenarios:\n  \
             - {name: warm, executor: constant-vus, vus: 1, duration: 10s, steps: [{request: {url: /}}]}\n  \
             - {name: peak, executor: constant-vus, vus: 1, startTime: 10s, duration: 20s, steps: [{request: {url: /}}]}\n  \
             - {name: late, executor: constant-vus, vus: 1, startTime: 40s, duration: 5s, steps: [{request: {url: /}}]}\n";
        let spec = crate::manifest::parse_manifest(yaml).unwrap().spec;
        let spans = scenario_spans(&spec);
        assert_eq!(
            spans[1],
            ScenarioSpan {
                scenario: "peak".into(),
                from: Duration::from_secs(10),
                to: Duration::from_secs(30),
            }
        );
        // The run was stopped at 25 s: peak is cut there, late never started.
        let run = Window {
            start_unix_ms: 1_000_000,
            end_unix_ms: 1_025_000,
        };
        let window = |start_unix_ms, end_unix_ms| Window {
            start_unix_ms,
            end_unix_ms,
        };
        assert_eq!(
            scenario_windows(&spans, run),
            vec![
                ("warm".to_string(), window(1_000_000, 1_010_000)),
                ("peak".to_string(), window(1_010_000, 1_025_000)),
                ("late".to_string(), window(1_025_000, 1_025_000)),
            ]
        );
    }

    #[test]
    fn results_are_named_by_label_value_and_scenario() {
        let mut r = result("depth", Some(1.0), None);
        assert_eq!(result_label(&r), "depth");
        r.by = Some("pod".into());
        r.label_value = Some("a-1".into());
        r.scenario = Some("peak".into());
        assert_eq!(result_label(&r), "depth{pod=\"a-1\"} (scenario peak)");
        let o = Observation {
            results: vec![r.clone(), result("depth", Some(2.0), None)],
            ..Observation::default()
        };
        assert_eq!(o.results_of("depth", Some("peak")).len(), 2);
        assert_eq!(o.matching(&r), Some(1.0));
        r.label_value = Some("b".into());
        assert_eq!(o.matching(&r), None);
    }

    #[test]
    fn the_status_holds_a_bounded_share_of_the_results_keeping_every_failure() {
        let mut results: Vec<PrometheusResult> = (0..MAX_STATUS_PROMETHEUS_RESULTS + 20)
            .map(|i| {
                let mut r = result("pods", Some(i as f64), None);
                r.label_value = Some(format!("p{i:03}"));
                r
            })
            .collect();
        results.push(result("down", None, Some("no data")));
        let o = Observation {
            results,
            ..Observation::default()
        };
        let kept = o.status_results();
        assert_eq!(kept.len(), MAX_STATUS_PROMETHEUS_RESULTS);
        assert_eq!(kept[0].label_value.as_deref(), Some("p000"));
        assert_eq!(kept.last().unwrap().name, "down");
    }

    #[test]
    fn a_value_or_why_there_is_none() {
        let o = Observation {
            results: vec![
                result("depth", Some(3.0), None),
                result("p95", None, Some("Prometheus timed out after 10s")),
                result("empty", None, None),
            ],
            ..Observation::default()
        };
        assert_eq!(o.value("depth"), Ok(3.0));
        assert_eq!(
            o.value("p95"),
            Err("Prometheus timed out after 10s".to_string())
        );
        assert_eq!(o.value("empty"), Err("no data".to_string()));
        assert_eq!(
            o.value("other"),
            Err("no Prometheus query named other ran".to_string())
        );
    }
}
