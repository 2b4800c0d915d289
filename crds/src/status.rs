//! The `LoadTest` status: what the operator (and `volley run --out`) reports back.
//!
//! Shaped for the people reading it: `kubectl get` columns come from the short display fields,
//! `kubectl wait --for=condition=Complete` from the standard conditions, and the exact numbers
//! from `metrics`, `thresholds`, `scenarios` and `steps`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a LoadTest.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoadTestStatus {
    /// Pending, Starting, Running, Succeeded, Failed, Aborted or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Passed or Failed: the thresholds' verdict on the merged results. Empty until known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Machine-readable reason for the phase, e.g. `ThresholdsFailed`, `RunnerFailed`,
    /// `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for humans, e.g. `p(95) 612ms >= 500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The spec generation this status describes: the generation the current run started
    /// with. An edit made while a run is under way is queued (see `nextRun`) and this stays at
    /// the running spec's generation until the next run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of the run this status describes: 1 for the first run, one more for every
    /// re-run (absent means 1). Part of the run's identity: the names of its runner pods,
    /// token Secret and report ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
    /// The value of the `volley.dev/rerun` annotation when this run started: setting the
    /// annotation to any other value starts a new run (once per value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_request: Option<String>,
    /// Why a next run is queued behind the current one (the spec or the `volley.dev/rerun`
    /// annotation changed while it ran); it starts when the current run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// When load started (the common start of all runners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Runner pod counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runners: Option<RunnerCounts>,
    /// Merged results of all runners, all scenarios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsStatus>,
    /// Each threshold with its actual value and whether it passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdStatus>,
    /// Per-scenario results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<ScenarioStatus>,
    /// Per-step results (bounded; the report ConfigMap has all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// Where the full merged report (histograms, per-second series) is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_ref: Option<ReportRef>,
    /// Standard conditions: `Started`, `Complete`, `ThresholdsPassed`. Each carries the
    /// `observedGeneration` of the run it describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Earlier runs of this LoadTest, newest first, at most `spec.cleanup.historyLimit` of
    /// them: how p95, throughput and errors moved from run to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RunRecord>,
    /// The `spec.observe.prometheus` queries' results over the run's window, read after the
    /// load (a query that failed says why in `error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prometheus: Vec<PrometheusResult>,
}

/// The outcome of an earlier run, kept in `status.history`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's number (`status.run` while it was the current run).
    pub run: u32,
    /// The spec generation it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// How it ended: Succeeded, Failed, Aborted or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The thresholds' verdict, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The reason of its ending, e.g. `ThresholdsFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When its load started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Median latency in ms (absent when no request was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    /// 99th percentile latency in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<f64>,
    /// failures / requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The ConfigMap holding its full report, kept while the run is in the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_ref: Option<ReportRef>,
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, nothing started yet.
    Pending,
    /// Runner pods created; waiting for all of them at the start barrier.
    Starting,
    /// Load is running.
    Running,
    /// All runners finished and every threshold passed.
    Succeeded,
    /// A threshold failed, or runners failed.
    Failed,
    /// Stopped by `spec.abort`.
    Aborted,
    /// The run could not be carried out (invalid spec, pods could not start); the message says
    /// what to fix.
    Error,
}

impl Phase {
    /// Succeeded, Failed, Aborted and Error are final: a finished run never runs again (a
    /// change of spec or the `volley.dev/rerun` annotation starts a new run).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::Error
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The thresholds' verdict.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Every threshold held.
    Passed,
    /// At least one threshold failed.
    Failed,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Runner pod counts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerCounts {
    /// Runners the test asks for (`runners.parallelism`).
    pub desired: u32,
    /// Runners registered at the start barrier.
    pub ready: u32,
    /// Runners currently sending load.
    pub running: u32,
    /// Runners that finished their share.
    pub succeeded: u32,
    /// Runners that died or could not start.
    pub failed: u32,
    /// Short form for `kubectl get`, e.g. `4/4`.
    pub summary: String,
}

/// Merged results.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricsStatus {
    /// Requests sent (each retry and poll counts).
    pub requests: u64,
    /// Requests that failed (any error kind).
    pub failures: u64,
    /// failures / requests.
    pub error_rate: f64,
    /// Requests per second over the run so far.
    pub rps: f64,
    /// Completed iterations.
    pub iterations: u64,
    /// Iterations an arrival-rate executor could not start because every VU was busy.
    pub dropped_iterations: u64,
    /// Iterations cut off because they outlived `gracefulStop`; their last request is not
    /// counted.
    #[serde(default)]
    pub interrupted_iterations: u64,
    /// Share of checks that passed; absent when no check ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_pass_rate: Option<f64>,
    /// Request latency in milliseconds (from the scheduled start for arrival-rate executors).
    pub latency_ms: LatencyMs,
    /// Failed requests by kind: connect, timeout, 4xx, 5xx, check, extract.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Response bytes received.
    pub data_received_bytes: u64,
    /// Request bytes sent.
    pub data_sent_bytes: u64,
    /// p95 latency with its unit, for `kubectl get` (e.g. `44.2ms`).
    pub p95: String,
    /// Error rate as a percentage, for `kubectl get` (e.g. `0.01%`).
    pub errors: String,
    /// Requests per second to 3 significant digits, for `kubectl get` (e.g. `30/s`, where
    /// `rps` holds 29.993334814485667).
    #[serde(default)]
    pub throughput: String,
    /// How long the load has run so far, in whole seconds, for `kubectl get -o wide` (e.g.
    /// `2m30s`).
    #[serde(default)]
    pub duration: String,
    /// Custom metrics read from responses (steps' `metrics`), all load scenarios merged, by
    /// name; at most 20 in the status (the summary lists every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomMetricStatus>,
}

/// One custom metric, all load scenarios merged. Time trends are in milliseconds; other trends,
/// counters and gauges in their own unit. Statistics come from the metric's histogram (3
/// significant digits); `value`, and a gauge's `min` and `max`, are exact.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetricStatus {
    /// The metric's name.
    pub name: String,
    /// `trend`, `counter` or `gauge`.
    pub kind: String,
    /// `ms` for a time trend (its figures are in milliseconds); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Values recorded (a counter: values added, matching or not).
    pub count: u64,
    /// Responses the value was missing from (or no response at all).
    #[serde(default)]
    pub missing: u64,
    /// Values that were not numbers the metric takes (text, negative).
    #[serde(default)]
    pub invalid: u64,
    /// A counter's total, a gauge's last reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Smallest value (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Mean (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<f64>,
    /// Median (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 95th percentile (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    /// 99th percentile (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Largest value (trends, gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// Latency statistics in milliseconds.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyMs {
    /// Fastest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// One threshold's result.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdStatus {
    /// The expression as written.
    pub expr: String,
    /// `all`, `scenario NAME`, or `scenario NAME step NAME`.
    pub scope: String,
    /// The measured value with its unit, or `no data`.
    pub actual: String,
    /// Whether it held.
    pub passed: bool,
    /// Whether its failure aborted the run.
    #[serde(default)]
    pub aborted: bool,
    /// Set when the threshold was not judged, with why: a baseline threshold
    /// (`p(95) < baseline * 1.1`) without a baseline run, or whose baseline lacks the figure.
    /// A skipped threshold is neither passed nor failed and does not decide the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// One Prometheus query's result over the run's window.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusResult {
    /// The query's name (`prom(NAME)` in thresholds).
    pub name: String,
    /// The PromQL as sent, with `$__range`, `$__start` and `$__end` filled in.
    pub query: String,
    /// Its value at the window's end; absent when the query failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Why there is no value: Prometheus unreachable or slow, an error it returned, no data,
    /// or several series (named by their labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The scenario whose window the query covered (`window: scenario` queries; one result
    /// per scenario).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// The label a `by` query reports by: this result is one series, whose value of the label
    /// is `labelValue` (absent on the row counting the series beyond the kept ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The series' value of the `by` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value: Option<String>,
}

/// One scenario's results.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioStatus {
    /// Scenario name.
    pub scenario: String,
    /// Requests sent.
    pub requests: u64,
    /// Completed iterations.
    pub iterations: u64,
    /// Dropped iterations (arrival-rate executors).
    pub dropped_iterations: u64,
    /// Iterations cut off by `gracefulStop`.
    #[serde(default)]
    pub interrupted_iterations: u64,
    /// failures / requests.
    pub error_rate: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency in ms.
    pub p50_ms: f64,
    /// 95th percentile latency in ms.
    pub p95_ms: f64,
    /// 99th percentile latency in ms.
    pub p99_ms: f64,
    /// For a rate probe (ramping-arrival-rate with plateaus): the highest plateau rate, in
    /// iterations per second, at which every threshold that judges a window held, before the
    /// first plateau that did not. Absent for other scenarios and until a plateau held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sustainable_rate: Option<f64>,
}

/// One step's results.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Scenario name (`setup` for setup steps).
    pub scenario: String,
    /// Step name.
    pub step: String,
    /// Requests sent.
    pub requests: u64,
    /// failures / requests.
    pub error_rate: f64,
    /// Median latency in ms.
    pub p50_ms: f64,
    /// 95th percentile latency in ms.
    pub p95_ms: f64,
    /// 99th percentile latency in ms.
    pub p99_ms: f64,
    /// A `websocket` step's own figures (its handshakes are the requests above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsStepStatus>,
}

/// A `websocket` step's figures in status: a fixed set of numbers, so a row stays small.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WsStepStatus {
    /// Connection attempts.
    pub connections: u64,
    /// Failed connection attempts (refused or handshake) / attempts.
    pub connect_error_rate: f64,
    /// 95th percentile connect (handshake) time in ms.
    pub connect_p95_ms: f64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Median message latency (send to matching reply) in ms.
    pub message_p50_ms: f64,
    /// 95th percentile message latency in ms.
    pub message_p95_ms: f64,
    /// 99th percentile message latency in ms.
    pub message_p99_ms: f64,
    /// 95th percentile interval between received frames in ms.
    pub chunk_p95_ms: f64,
    /// Connections refused.
    pub refused: u64,
    /// Handshakes that failed.
    pub handshake_errors: u64,
    /// Connections closed abnormally.
    pub closed_abnormally: u64,
    /// Expected replies that did not come in time.
    pub expect_timeouts: u64,
    /// Connections open now.
    pub open: u64,
    /// Most connections open at once (merged: the sum of each runner's peak).
    pub open_max: u64,
}

/// The annotation that asks for a new run of an unchanged spec: any value the status has not
/// answered yet (`status.rerunRequest`) starts one run.
pub const RERUN_ANNOTATION: &str = "volley.dev/rerun";

/// The key of the full report (the summary document `volley run --out` writes) in the report
/// ConfigMap [`ReportRef`] names.
pub const REPORT_KEY: &str = "summary.json";

/// Where the full report is stored.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportRef {
    /// ConfigMap in the LoadTest's namespace, owned by the LoadTest.
    pub config_map_name: String,
}
