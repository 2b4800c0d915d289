//! The summary of a finished run: the JSON `volley run --out` writes and the operator stores in
//! the report ConfigMap, built from the aggregator's final [`RunView`] so both are the same
//! document with the same numbers.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use volley_core::metrics::model::RunMetrics;
use volley_core::metrics::series::{SeriesPoint, SeriesResolution};
use volley_core::metrics::status::{
    custom_metric_rows, latency_ms, metrics_status, scenario_statuses, step_statuses,
};
use volley_core::observe::Observation;
use volley_core::plateau::{self, PlateauResult, SustainableRate};
use volley_core::protocol::histogram::encode_histogram;
use volley_core::threshold::evaluate::{ThresholdResult, verdict};
use volley_crds::status::{
    LatencyMs, MetricsStatus, Phase, ScenarioStatus, StepStatus, ThresholdStatus, Verdict,
};

use crate::end::{RunEnd, RunnerFailure};
use crate::run::RunView;
use crate::series::{ComposedSeries, ScenarioSeries, SeriesArchive, fit};

/// Per-step rows kept in the summary (the status keeps fewer; the JSON has them all).
const MAX_STEP_ROWS: usize = 1_000;

/// Everything a finished run reports; serialized as `summary.json`, and read back from a
/// report ConfigMap by `volley kube run` (fields a trimmed report may lack have defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The LoadTest's name.
    pub name: String,
    /// Succeeded, Failed, Aborted or Error.
    pub phase: Phase,
    /// Passed or Failed; absent when the run ended before thresholds could be judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Machine-readable reason, e.g. `ThresholdsFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall time of the load phase, in seconds.
    pub duration_seconds: f64,
    /// How many runners shared the load.
    pub runners: u32,
    /// Largest gap between the runners' first requests, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_skew_ms: Option<f64>,
    /// Runners that died, could not start or went silent, with when and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runner_failures: Vec<RunnerFailureRow>,
    /// All scenarios merged (setup excluded).
    pub metrics: MetricsStatus,
    /// Latency measured from the actual send rather than the scheduled start, in ms. The gap
    /// between this and `metrics.latencyMs` is time iterations spent waiting to be sent: a
    /// large gap means the load generator (or `maxVUs`) could not keep up with the schedule.
    #[serde(default)]
    pub latency_sent_ms: LatencyMs,
    /// Latency of the failed requests alone, in ms (absent without failures): a timeout shows
    /// up here as a slow failure, a refused connection as a fast one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// The run over time: one point per second for the newest part of the run, older points
    /// in coarser buckets (each point's `intervalMs` says; `series_resolution` lists them).
    #[serde(default)]
    pub series: Vec<SeriesPoint>,
    /// The same for each load scenario, labelled as `series`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenario_series: Vec<ScenarioSeries>,
    /// Which stretch of `series` (and `scenario_series`) has which interval, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series_resolution: Vec<SeriesResolution>,
    /// Rate probes: each plateau of a ramping-arrival-rate scenario, measured and judged on
    /// its own window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plateaus: Vec<PlateauResult>,
    /// Rate probes: per scenario, the highest plateau rate that held and the first that did
    /// not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sustainable_rates: Vec<SustainableRate>,
    /// The merged latency histograms, HdrHistogram V2 + DEFLATE, base64.
    #[serde(default)]
    pub histograms: Histograms,
    /// The `spec.observe.prometheus` queries' results over the run's window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Observation>,
}

/// Encoded merged histograms, so other tools can recompute any percentile exactly.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histograms {
    /// Every request of every scenario (setup excluded), in microseconds.
    pub overall: String,
    /// Each step's histogram.
    #[serde(default)]
    pub steps: Vec<StepHistogram>,
}

/// One step's encoded histogram.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepHistogram {
    /// Scenario name.
    pub scenario: String,
    /// Step name.
    pub step: String,
    /// Latency in microseconds, encoded.
    pub latency: String,
}

/// A runner that failed, in the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerFailureRow {
    /// The runner's index.
    pub index: u32,
    /// Where it ran.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Seconds after the common start when it failed; absent before the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_seconds: Option<f64>,
    /// What happened.
    pub reason: String,
}

/// The summary rows of the aggregator's runner failures.
pub fn failure_rows(failures: &[RunnerFailure]) -> Vec<RunnerFailureRow> {
    failures
        .iter()
        .map(|f| RunnerFailureRow {
            index: f.index,
            host: f.host.clone(),
            at_seconds: f.at.map(|d| d.as_secs_f64()),
            reason: f.reason.clone(),
        })
        .collect()
}

/// Builds the summary from merged metrics and evaluated thresholds.
#[allow(clippy::too_many_arguments)]
pub fn build_summary(
    name: &str,
    end: RunEnd,
    runners: u32,
    elapsed: Duration,
    start_skew: Option<Duration>,
    run: &RunMetrics,
    thresholds: &[ThresholdResult],
    series: Vec<SeriesPoint>,
) -> RunSummary {
    let overall = run.overall();
    let mut steps = Vec::new();
    for sc in &run.scenarios {
        for st in &sc.steps {
            steps.push(StepHistogram {
                scenario: sc.name.clone(),
                step: st.name.clone(),
                latency: encode_histogram(&st.m.latency).unwrap_or_default(),
            });
        }
    }
    let verdict = run_verdict(end.phase, thresholds);
    RunSummary {
        name: name.to_string(),
        phase: end.phase,
        verdict,
        reason: end.reason,
        message: end.message,
        duration_seconds: elapsed.as_secs_f64(),
        runners,
        start_skew_ms: start_skew.map(|d| d.as_secs_f64() * 1000.0),
        runner_failures: Vec::new(),
        // The status keeps the first few custom metrics; the summary has room for all.
        metrics: MetricsStatus {
            custom: custom_metric_rows(&overall.custom, usize::MAX),
            ..metrics_status(&overall, elapsed)
        },
        latency_sent_ms: latency_ms(&overall.latency_sent),
        failed_latency_ms: (!overall.failed_latency.is_empty())
            .then(|| latency_ms(&overall.failed_latency)),
        thresholds: thresholds.iter().map(|t| t.status.clone()).collect(),
        scenarios: scenario_statuses(run, elapsed),
        steps: step_statuses(run, MAX_STEP_ROWS),
        series,
        scenario_series: Vec::new(),
        series_resolution: Vec::new(),
        plateaus: Vec::new(),
        sustainable_rates: Vec::new(),
        histograms: Histograms {
            overall: encode_histogram(&overall.latency).unwrap_or_default(),
            steps,
        },
        prometheus: None,
    }
}

/// The verdict of a run that ended in `phase`: none for Error (nothing was judged), Passed
/// without thresholds, else the thresholds' verdict.
pub fn run_verdict(phase: Phase, thresholds: &[ThresholdResult]) -> Option<Verdict> {
    match phase {
        Phase::Error => None,
        _ if thresholds.is_empty() => Some(Verdict::Passed),
        _ => Some(verdict(thresholds)),
    }
}

/// The summary of a finished run's view, its series at the finest level of detail kept.
pub fn summarize(name: &str, view: &RunView) -> RunSummary {
    let end = view.end.clone().unwrap_or(RunEnd {
        phase: Phase::Error,
        reason: Some("Unfinished".into()),
        message: Some("the run had not finished".into()),
    });
    let mut summary = build_summary(
        name,
        end,
        view.runners,
        view.elapsed,
        view.start_skew,
        &view.merged,
        &view.thresholds,
        Vec::new(),
    );
    summary.runner_failures = failure_rows(&view.failures);
    set_series(&mut summary, view.series_archive.compose(0));
    summary.sustainable_rates = view.sustainable_rates.clone();
    summary.plateaus = view.plateaus.clone();
    summary.prometheus = view.observation.clone();
    plateau::annotate(&mut summary.scenarios, &summary.sustainable_rates);
    summary
}

/// Puts `composed` in `summary`.
fn set_series(summary: &mut RunSummary, composed: ComposedSeries) {
    summary.series = composed.series;
    summary.scenario_series = composed.scenario_series;
    summary.series_resolution = composed.resolution;
}

/// Gives `summary` the finest level of detail of `archive` at which `fits` accepts the whole
/// document (e.g. its encoded size within a ConfigMap's budget), the coarsest when none does;
/// returns whether one did. Downsampling, never dropping: every series stays.
pub fn downsample_to_fit(
    summary: &mut RunSummary,
    archive: &SeriesArchive,
    fits: impl Fn(&RunSummary) -> bool,
) -> bool {
    let mut candidate = summary.clone();
    let (composed, fitted) = fit(archive, |c| {
        set_series(&mut candidate, c.clone());
        fits(&candidate)
    });
    set_series(summary, composed);
    fitted
}
