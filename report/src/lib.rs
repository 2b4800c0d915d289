//! Reports a person opens, rendered from the summary document of a finished run (the JSON
//! `volley run --out` writes and the operator keeps in the report ConfigMap): a self-contained
//! HTML page, a Markdown note for a pull request, JUnit XML for a CI server and the per-second
//! series as CSV.
//!
//! Every renderer is a pure function, [`Summary`] in, `String` out; reading files and writing
//! them is the caller's job. The summary is read with [`load`], which accepts the document as
//! the operator may have trimmed it to fit a ConfigMap (no series, no step histograms).

pub mod comparison;
pub mod csv;
pub mod html;
pub mod junit;
pub mod markdown;

use serde::Deserialize;
use serde_json::Value;
use volley_core::plateau::{PlateauResult, SustainableRate};
use volley_crds::status::{
    LatencyMs, MetricsStatus, Phase, ScenarioStatus, StepStatus, ThresholdStatus, Verdict,
};

pub use volley_core::metrics::series::{SeriesPoint, SeriesResolution};

/// Why a summary could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The bytes are not a summary document.
    #[error("not a Volley summary document: {0}")]
    Parse(#[from] serde_json::Error),
}

/// The summary document, as `volley run --out` writes it (see `volley_aggregator::summary`
/// and `docs/reference.md`). Fields a trimmed report may lack have defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The LoadTest's name.
    pub name: String,
    /// Succeeded, Failed, Aborted or Error.
    pub phase: Phase,
    /// Passed or Failed; absent when nothing was judged.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Machine-readable reason, e.g. `ThresholdsFailed`.
    #[serde(default)]
    pub reason: Option<String>,
    /// A sentence for humans.
    #[serde(default)]
    pub message: Option<String>,
    /// Wall time of the load phase, in seconds.
    #[serde(default)]
    pub duration_seconds: f64,
    /// How many runners shared the load.
    #[serde(default)]
    pub runners: u32,
    /// Largest gap between the runners' first requests, in milliseconds.
    #[serde(default)]
    pub start_skew_ms: Option<f64>,
    /// Runners that failed.
    #[serde(default)]
    pub runner_failures: Vec<RunnerFailure>,
    /// All scenarios merged (setup excluded).
    pub metrics: MetricsStatus,
    /// Latency from the actual send, in ms.
    #[serde(default)]
    pub latency_sent_ms: Option<LatencyMs>,
    /// Latency of the failed requests alone, in ms.
    #[serde(default)]
    pub failed_latency_ms: Option<LatencyMs>,
    /// Each threshold with its actual value.
    #[serde(default)]
    pub thresholds: Vec<ThresholdStatus>,
    /// Per scenario.
    #[serde(default)]
    pub scenarios: Vec<ScenarioStatus>,
    /// Per step (setup included).
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    /// The run over time, all scenarios merged: one point per second, or for a long run per
    /// second only for the newest part and coarser buckets before (each point's
    /// `interval_ms`; `series_resolution` lists the stretches).
    #[serde(default)]
    pub series: Vec<SeriesPoint>,
    /// Which stretch of the series has which interval, oldest first (absent in summaries
    /// older than downsampling: one point per second).
    #[serde(default)]
    pub series_resolution: Vec<SeriesResolution>,
    /// Rate probes: each plateau's window.
    #[serde(default)]
    pub plateaus: Vec<PlateauResult>,
    /// Rate probes: per scenario, the highest plateau rate that held.
    #[serde(default)]
    pub sustainable_rates: Vec<SustainableRate>,
    /// The merged latency histograms, encoded.
    #[serde(default)]
    pub histograms: Histograms,
    /// Each load scenario's per-second series, labelled as `series`.
    #[serde(default)]
    pub scenario_series: Vec<ScenarioSeries>,
    /// What the operator left out to fit the report into a ConfigMap.
    #[serde(default)]
    pub truncated: Option<Truncated>,
    /// The Prometheus queries' results over the run's window (`spec.observe.prometheus`).
    #[serde(default)]
    pub prometheus: Option<volley_core::observe::Observation>,
}

/// A Prometheus query's value as the reports show it: 4 significant digits, or the error.
pub fn prometheus_value(r: &volley_crds::status::PrometheusResult) -> String {
    match (r.value, &r.error) {
        (Some(v), _) => volley_core::metrics::status::significant(v, 4),
        (None, Some(e)) => format!("error: {e}"),
        (None, None) => "no data".to_string(),
    }
}

/// One scenario's per-second series.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSeries {
    /// The scenario's name.
    pub scenario: String,
    /// One point per second.
    #[serde(default)]
    pub points: Vec<SeriesPoint>,
}

/// What the operator dropped from a report that did not fit its ConfigMap.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Truncated {
    /// The fields left out, e.g. `series`.
    #[serde(default)]
    pub dropped: Vec<String>,
    /// Why.
    #[serde(default)]
    pub why: String,
}

/// A runner that failed.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerFailure {
    /// The runner's index.
    pub index: u32,
    /// Where it ran.
    #[serde(default)]
    pub host: String,
    /// Seconds after the common start; absent before the start.
    #[serde(default)]
    pub at_seconds: Option<f64>,
    /// What happened.
    pub reason: String,
}

/// The encoded merged histograms (HdrHistogram V2 + DEFLATE, base64, microseconds).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histograms {
    /// Every request of every scenario (setup excluded).
    #[serde(default)]
    pub overall: String,
}

/// Reads a summary document.
pub fn load(bytes: &[u8]) -> Result<Summary, ReportError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// The run's outcome in one word, decided by the phase (thresholds can all pass in a run that
/// still failed, e.g. on a timeout), as the text summary of `volley run` says it.
pub fn outcome(s: &Summary) -> &'static str {
    match s.phase {
        Phase::Succeeded => "PASSED",
        Phase::Error => "ERROR",
        Phase::Aborted => "ABORTED",
        _ => "FAILED",
    }
}

/// Shown in place of a value that may be a credential.
pub const REDACTED: &str = "[redacted]";

/// The LoadTest spec (as JSON) with every value that may be a credential replaced by
/// [`REDACTED`]: header values, request bodies (`json`, `body`, multipart `value`) and the
/// password of a URL. A value that is exactly one template (`${env:TOKEN}`,
/// `${data.users.password}`) stays: it names where the secret comes from, not the secret.
pub fn redact_spec(spec: &Value) -> Value {
    let mut spec = spec.clone();
    redact(&mut spec, None);
    spec
}

/// Walks `v`; `key` is the object key `v` sits under.
fn redact(v: &mut Value, key: Option<&str>) {
    match (key, v) {
        (Some("headers" | "json"), v) => redact_all(v),
        (Some("body" | "value"), v @ Value::String(_)) => redact_all(v),
        (Some("baseUrl" | "url"), Value::String(s)) => {
            if let Ok(mut u) = url::Url::parse(s)
                && u.password().is_some()
                && u.set_password(Some(REDACTED)).is_ok()
            {
                *s = u.to_string();
            }
        }
        (_, Value::Object(map)) => {
            for (k, child) in map.iter_mut() {
                redact(child, Some(k));
            }
        }
        (_, Value::Array(items)) => {
            for item in items {
                redact(item, key);
            }
        }
        _ => {}
    }
}

/// Replaces every string under `v` that is not exactly one template.
fn redact_all(v: &mut Value) {
    match v {
        Value::String(s) => {
            let t = s.trim();
            let one_template =
                t.starts_with("${") && t.ends_with('}') && t[2..].find('}') == Some(t.len() - 3);
            if !one_template {
                *s = REDACTED.to_string();
            }
        }
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        _ => {}
    }
}

/// User text for an XML or HTML attribute or element: the five markup characters escaped, and control
/// characters XML 1.0 cannot carry at all replaced.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The headers of the custom metrics table, as HTML and Markdown show it.
pub const CUSTOM_METRIC_COLUMNS: [&str; 12] = [
    "Metric", "Kind", "Count", "Missing", "Invalid", "Value", "min", "avg", "p50", "p95", "p99",
    "max",
];

/// The custom metrics table's cells, one row per metric in [`CUSTOM_METRIC_COLUMNS`] order, as
/// plain text for the renderer to escape; `—` where a figure does not apply.
pub fn custom_metric_cells(s: &Summary) -> Vec<[String; 12]> {
    use volley_core::metrics::status::format_custom_figure;
    s.metrics
        .custom
        .iter()
        .map(|r| {
            let fig = |v: Option<f64>| v.map_or("—".to_owned(), |v| format_custom_figure(r, v));
            let kind = match &r.unit {
                Some(unit) => format!("{} ({unit})", r.kind),
                None => r.kind.clone(),
            };
            [
                r.name.clone(),
                kind,
                r.count.to_string(),
                r.missing.to_string(),
                r.invalid.to_string(),
                fig(r.value),
                fig(r.min),
                fig(r.avg),
                fig(r.p50),
                fig(r.p95),
                fig(r.p99),
                fig(r.max),
            ]
        })
        .collect()
}

/// Error rate of one series point (0 without requests).
pub fn point_error_rate(p: &SeriesPoint) -> f64 {
    if p.requests == 0 {
        0.0
    } else {
        p.failures as f64 / p.requests as f64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_hides_literal_credentials_and_keeps_template_names() {
        let spec = json!({
            "target": {"baseUrl": "https://user:hunter2@api.example.com/", "headers": {"Authorization": "Bearer abc123", "X-Key": "${env:API_KEY}"}},
            "setup": [{"name": "login", "request": {"method": "POST", "url": "/login", "json": {"user": "me", "password": "s3cret", "n": 1}}}],
            "scenarios": [{"name": "s", "steps": [{"request": {"url": "/x", "body": "token=zzz", "multipart": [{"name": "f", "value": "${data.u.pw}"}]}}]}]
        });
        let out = redact_spec(&spec).to_string();
        for secret in ["hunter2", "abc123", "s3cret", "token=zzz", "\"me\""] {
            assert!(!out.contains(secret), "{secret} shown in {out}");
        }
        for kept in [
            "${env:API_KEY}",
            "${data.u.pw}",
            "api.example.com",
            "/login",
            "Authorization",
        ] {
            assert!(out.contains(kept), "{kept} missing from {out}");
        }
        // Two templates with literal text between them are not exactly one template.
        let v = redact_spec(&json!({"headers": {"a": "${env:A}x${env:B}"}}));
        assert_eq!(v["headers"]["a"], REDACTED);
    }

    #[test]
    fn loads_a_trimmed_report() {
        let s = load(br#"{"name":"t","phase":"Succeeded","metrics":{"requests":1,"failures":0,"errorRate":0,"rps":1,"iterations":1,"droppedIterations":0,"latencyMs":{"min":1,"mean":1,"p50":1,"p90":1,"p95":1,"p99":1,"max":1},"dataReceivedBytes":0,"dataSentBytes":0,"p95":"1ms","errors":"0%"},"truncated":{"dropped":["histograms.steps","series"],"why":"too big"}}"#).unwrap();
        assert!(s.series.is_empty());
        assert_eq!(s.truncated.unwrap().dropped, ["histograms.steps", "series"]);
        assert!(load(b"{}").is_err());
    }
}
