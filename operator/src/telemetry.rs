//! The operator's Prometheus metrics (`GET /metrics`, text exposition format):
//!
//! - its own work: `volley_operator_reconciles_total{result}` and
//!   `volley_operator_reconcile_duration_seconds` (histogram);
//! - live figures of every run the aggregator holds, labelled `namespace`, `loadtest` and
//!   `scenario`, so a Grafana panel can chart a running test: `volley_run_rps`,
//!   `volley_run_error_rate`, `volley_run_latency_p50_ms` / `_p95_ms` / `_p99_ms` (since the
//!   start of the run), `volley_run_sustainable_rate` (a rate probe's answer so far, once a
//!   plateau has held), and `volley_run_active_runners{namespace,loadtest}`. A run's series
//!   disappear when the run is forgotten;
//! - custom metrics read from responses (steps' `metrics`), all load scenarios merged, labelled
//!   `namespace`, `loadtest` and `metric`: `volley_run_custom_value` (a counter's total, a
//!   gauge's last reading), `volley_run_custom_p50` / `_p95` / `_p99` (trends and gauges; ms for
//!   time trends) and `volley_run_custom_unrecorded{why="missing"|"invalid"}`. Only the first
//!   20 metrics by name get series (the status's bound), so a run adds at most 120;
//! - `volley_runs_finished_total{namespace,loadtest,phase}`: runs that ended, by final phase
//!   (Succeeded, Failed, Aborted, Error), counted once when the operator first writes the final
//!   phase. Unlike the live figures it is kept when the run is forgotten (that happens right
//!   as the run finishes, so removing it would lose every count): its series are bounded by the
//!   LoadTest names times four phases, and a LoadTest re-created under the same name reuses them;
//! - per `websocket` step of a live run, labelled `namespace`, `loadtest`, `scenario` and
//!   `step`: `volley_run_ws_open` and `volley_run_ws_open_max` (connections), `volley_run_ws_
//!   connect_error_rate`, `volley_run_ws_connect_p95_ms`, `volley_run_ws_message_p95_ms` /
//!   `_p99_ms`, `volley_run_ws_chunk_p95_ms`, `volley_run_ws_messages_sent` / `_received`, and
//!   `volley_run_ws_errors{kind}` (refused, handshake, closed, expect_timeout); removed with
//!   the run's other live series.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use volley_core::metrics::status::MAX_STATUS_CUSTOM_METRICS;
use volley_crds::status::{CustomMetricStatus, Phase, ScenarioStatus, StepStatus};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Labels of a run's per-scenario figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScenarioLabels {
    namespace: String,
    loadtest: String,
    scenario: String,
}

/// Labels of a run's whole-run figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    namespace: String,
    loadtest: String,
}

/// Labels of a run's custom metric figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CustomLabels {
    namespace: String,
    loadtest: String,
    metric: String,
}

/// Labels of a custom metric's unrecorded values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnrecordedLabels {
    namespace: String,
    loadtest: String,
    metric: String,
    why: String,
}

/// Labels of the finished-runs counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    namespace: String,
    loadtest: String,
    phase: String,
}

/// Labels of a `websocket` step's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    namespace: String,
    loadtest: String,
    scenario: String,
    step: String,
}

/// Labels of a `websocket` step's errors by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepKindLabels {
    namespace: String,
    loadtest: String,
    scenario: String,
    step: String,
    kind: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// A step of a run: (scenario, step).
type StepKey = (String, String);

/// The WebSocket gauges, one series per `websocket` step of a live run.
#[derive(Debug, Default)]
struct WsFamilies {
    open: Family<StepLabels, FloatGauge>,
    open_max: Family<StepLabels, FloatGauge>,
    connect_error_rate: Family<StepLabels, FloatGauge>,
    connect_p95: Family<StepLabels, FloatGauge>,
    message_p95: Family<StepLabels, FloatGauge>,
    message_p99: Family<StepLabels, FloatGauge>,
    chunk_p95: Family<StepLabels, FloatGauge>,
    messages_sent: Family<StepLabels, FloatGauge>,
    messages_received: Family<StepLabels, FloatGauge>,
    errors: Family<StepKindLabels, FloatGauge>,
}

impl WsFamilies {
    fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            (
                "volley_run_ws_open",
                "WebSocket connections open now",
                &self.open,
            ),
            (
                "volley_run_ws_open_max",
                "Most WebSocket connections open at once (sum of each runner's peak)",
                &self.open_max,
            ),
            (
                "volley_run_ws_connect_error_rate",
                "Refused or failed WebSocket handshakes / connection attempts",
                &self.connect_error_rate,
            ),
            (
                "volley_run_ws_connect_p95_ms",
                "95th percentile WebSocket connect (handshake) time, ms",
                &self.connect_p95,
            ),
            (
                "volley_run_ws_message_p95_ms",
                "95th percentile WebSocket message latency (send to matching reply), ms",
                &self.message_p95,
            ),
            (
                "volley_run_ws_message_p99_ms",
                "99th percentile WebSocket message latency, ms",
                &self.message_p99,
            ),
            (
                "volley_run_ws_chunk_p95_ms",
                "95th percentile interval between received WebSocket frames, ms",
                &self.chunk_p95,
            ),
            (
                "volley_run_ws_messages_sent",
                "WebSocket messages sent since the run's start",
                &self.messages_sent,
            ),
            (
                "volley_run_ws_messages_received",
                "WebSocket messages received since the run's start",
                &self.messages_received,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "volley_run_ws_errors",
            "WebSocket errors since the run's start, by kind (refused, handshake, closed, expect_timeout)",
            self.errors.clone(),
        );
    }

    fn set(&self, labels: &StepLabels, st: &StepStatus) {
        let Some(w) = &st.websocket else {
            return;
        };
        self.open.get_or_create(labels).set(w.open as f64);
        self.open_max.get_or_create(labels).set(w.open_max as f64);
        self.connect_error_rate
            .get_or_create(labels)
            .set(w.connect_error_rate);
        self.connect_p95.get_or_create(labels).set(w.connect_p95_ms);
        self.message_p95.get_or_create(labels).set(w.message_p95_ms);
        self.message_p99.get_or_create(labels).set(w.message_p99_ms);
        self.chunk_p95.get_or_create(labels).set(w.chunk_p95_ms);
        self.messages_sent
            .get_or_create(labels)
            .set(w.messages_sent as f64);
        self.messages_received
            .get_or_create(labels)
            .set(w.messages_received as f64);
        for (kind, n) in [
            ("refused", w.refused),
            ("handshake", w.handshake_errors),
            ("closed", w.closed_abnormally),
            ("expect_timeout", w.expect_timeouts),
        ] {
            self.errors
                .get_or_create(&kind_labels(labels, kind))
                .set(n as f64);
        }
    }

    fn remove(&self, labels: &StepLabels) {
        for family in [
            &self.open,
            &self.open_max,
            &self.connect_error_rate,
            &self.connect_p95,
            &self.message_p95,
            &self.message_p99,
            &self.chunk_p95,
            &self.messages_sent,
            &self.messages_received,
        ] {
            family.remove(labels);
        }
        for kind in ["refused", "handshake", "closed", "expect_timeout"] {
            self.errors.remove(&kind_labels(labels, kind));
        }
    }
}

fn kind_labels(labels: &StepLabels, kind: &str) -> StepKindLabels {
    StepKindLabels {
        namespace: labels.namespace.clone(),
        loadtest: labels.loadtest.clone(),
        scenario: labels.scenario.clone(),
        step: labels.step.clone(),
        kind: kind.to_string(),
    }
}

/// A run's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFigures {
    /// Runners sending load.
    pub active_runners: u32,
    /// One row per scenario.
    pub scenarios: Vec<ScenarioStatus>,
    /// Custom metrics, all load scenarios merged (at most the status's 20).
    pub custom: Vec<CustomMetricStatus>,
    /// The step rows of `websocket` steps (others are left out).
    pub websocket_steps: Vec<StepStatus>,
}

/// Every metric the operator exposes.
#[derive(Debug)]
pub struct OperatorMetrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    rps: Family<ScenarioLabels, FloatGauge>,
    error_rate: Family<ScenarioLabels, FloatGauge>,
    p50: Family<ScenarioLabels, FloatGauge>,
    p95: Family<ScenarioLabels, FloatGauge>,
    p99: Family<ScenarioLabels, FloatGauge>,
    sustainable_rate: Family<ScenarioLabels, FloatGauge>,
    active_runners: Family<RunLabels, Gauge>,
    runs_finished: Family<FinishedLabels, Counter>,
    custom_value: Family<CustomLabels, FloatGauge>,
    custom_p50: Family<CustomLabels, FloatGauge>,
    custom_p95: Family<CustomLabels, FloatGauge>,
    custom_p99: Family<CustomLabels, FloatGauge>,
    custom_unrecorded: Family<UnrecordedLabels, Gauge>,
    /// The custom metric names each run currently has series for, so they can be removed.
    known_custom: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<String>>>,
    websocket: WsFamilies,
    /// The scenario labels each run currently has, so they can be removed.
    known: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<String>>>,
    /// The (scenario, step) labels of each run's `websocket` steps, so they can be removed.
    known_ws: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<StepKey>>>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        OperatorMetrics::new()
    }
}

impl OperatorMetrics {
    /// All metrics, registered and at zero.
    pub fn new() -> OperatorMetrics {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let rps = Family::<ScenarioLabels, FloatGauge>::default();
        let error_rate = Family::<ScenarioLabels, FloatGauge>::default();
        let p50 = Family::<ScenarioLabels, FloatGauge>::default();
        let p95 = Family::<ScenarioLabels, FloatGauge>::default();
        let p99 = Family::<ScenarioLabels, FloatGauge>::default();
        let sustainable_rate = Family::<ScenarioLabels, FloatGauge>::default();
        let active_runners = Family::<RunLabels, Gauge>::default();
        let runs_finished = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "volley_operator_reconciles",
            "LoadTest reconciles by result (ok or error)",
            reconciles.clone(),
        );
        registry.register(
            "volley_operator_reconcile_duration_seconds",
            "Time one LoadTest reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "volley_run_rps",
            "Requests per second since the run's start",
            rps.clone(),
        );
        registry.register(
            "volley_run_error_rate",
            "Failed requests / requests since the run's start",
            error_rate.clone(),
        );
        registry.register(
            "volley_run_latency_p50_ms",
            "Median request latency since the run's start, ms",
            p50.clone(),
        );
        registry.register(
            "volley_run_latency_p95_ms",
            "95th percentile request latency since the run's start, ms",
            p95.clone(),
        );
        registry.register(
            "volley_run_latency_p99_ms",
            "99th percentile request latency since the run's start, ms",
            p99.clone(),
        );
        registry.register(
            "volley_run_sustainable_rate",
            "Rate probes: the highest plateau rate (iterations/s) that held so far",
            sustainable_rate.clone(),
        );
        registry.register(
            "volley_run_active_runners",
            "Runners of the run sending load",
            active_runners.clone(),
        );
        let custom_value = Family::<CustomLabels, FloatGauge>::default();
        let custom_p50 = Family::<CustomLabels, FloatGauge>::default();
        let custom_p95 = Family::<CustomLabels, FloatGauge>::default();
        let custom_p99 = Family::<CustomLabels, FloatGauge>::default();
        let custom_unrecorded = Family::<UnrecordedLabels, Gauge>::default();
        registry.register(
            "volley_run_custom_value",
            "Custom metrics: a counter's total or a gauge's last reading since the run's start",
            custom_value.clone(),
        );
        registry.register(
            "volley_run_custom_p50",
            "Custom metrics: median of a trend or gauge since the run's start (ms for time trends)",
            custom_p50.clone(),
        );
        registry.register(
            "volley_run_custom_p95",
            "Custom metrics: 95th percentile of a trend or gauge (ms for time trends)",
            custom_p95.clone(),
        );
        registry.register(
            "volley_run_custom_p99",
            "Custom metrics: 99th percentile of a trend or gauge (ms for time trends)",
            custom_p99.clone(),
        );
        registry.register(
            "volley_run_custom_unrecorded",
            "Custom metrics: values not recorded because they were missing or not a number",
            custom_unrecorded.clone(),
        );
        registry.register(
            "volley_runs_finished",
            "Runs that ended, by final phase (Succeeded, Failed, Aborted, Error)",
            runs_finished.clone(),
        );
        let websocket = WsFamilies::default();
        websocket.register(&mut registry);
        OperatorMetrics {
            registry,
            reconciles,
            reconcile_duration,
            rps,
            error_rate,
            p50,
            p95,
            p99,
            sustainable_rate,
            active_runners,
            runs_finished,
            custom_value,
            custom_p50,
            custom_p95,
            custom_p99,
            custom_unrecorded,
            known_custom: Default::default(),
            websocket,
            known: Default::default(),
            known_ws: Default::default(),
        }
    }

    /// Counts one reconcile that took `took`.
    pub fn reconciled(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Counts the run of `namespace/loadtest` as finished when the status being written
    /// (`written`) ends it and the status it replaces (`before`) did not: a later reconcile of
    /// the finished LoadTest writes the same final phase again and is not counted twice.
    pub fn status_written(
        &self,
        namespace: &str,
        loadtest: &str,
        before: Option<Phase>,
        written: Option<Phase>,
    ) {
        if let Some(phase) = newly_finished(before, written) {
            self.runs_finished
                .get_or_create(&FinishedLabels {
                    namespace: namespace.into(),
                    loadtest: loadtest.into(),
                    phase: phase.to_string(),
                })
                .inc();
        }
    }

    /// Sets the figures of the run of LoadTest `namespace/loadtest`.
    pub fn set_run(&self, namespace: &str, loadtest: &str, figures: &RunFigures) {
        let run = RunLabels {
            namespace: namespace.into(),
            loadtest: loadtest.into(),
        };
        self.active_runners
            .get_or_create(&run)
            .set(i64::from(figures.active_runners));
        let mut names = Vec::new();
        for s in &figures.scenarios {
            let labels = ScenarioLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                scenario: s.scenario.clone(),
            };
            self.rps.get_or_create(&labels).set(s.rps);
            self.error_rate.get_or_create(&labels).set(s.error_rate);
            self.p50.get_or_create(&labels).set(s.p50_ms);
            self.p95.get_or_create(&labels).set(s.p95_ms);
            self.p99.get_or_create(&labels).set(s.p99_ms);
            if let Some(rate) = s.sustainable_rate {
                self.sustainable_rate.get_or_create(&labels).set(rate);
            }
            names.push(s.scenario.clone());
        }
        crate::lock(&self.known).insert((namespace.into(), loadtest.into()), names);
        let mut steps = Vec::new();
        for st in &figures.websocket_steps {
            let labels = StepLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                scenario: st.scenario.clone(),
                step: st.step.clone(),
            };
            self.websocket.set(&labels, st);
            steps.push((st.scenario.clone(), st.step.clone()));
        }
        crate::lock(&self.known_ws).insert((namespace.into(), loadtest.into()), steps);
        self.set_custom(namespace, loadtest, &figures.custom);
    }

    /// Sets the custom metric series of a run (the first [`MAX_STATUS_CUSTOM_METRICS`] rows,
    /// which the status bound already makes them), dropping those of names it no longer has.
    fn set_custom(&self, namespace: &str, loadtest: &str, rows: &[CustomMetricStatus]) {
        let rows = &rows[..rows.len().min(MAX_STATUS_CUSTOM_METRICS)];
        let key = (namespace.to_string(), loadtest.to_string());
        let gone = crate::lock(&self.known_custom)
            .insert(key, rows.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        for name in gone.iter().filter(|n| !rows.iter().any(|r| &r.name == *n)) {
            self.remove_custom(namespace, loadtest, name);
        }
        for r in rows {
            let labels = CustomLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                metric: r.name.clone(),
            };
            for (family, v) in [
                (&self.custom_value, r.value),
                (&self.custom_p50, r.p50),
                (&self.custom_p95, r.p95),
                (&self.custom_p99, r.p99),
            ] {
                if let Some(v) = v {
                    family.get_or_create(&labels).set(v);
                }
            }
            for (why, n) in [("missing", r.missing), ("invalid", r.invalid)] {
                self.custom_unrecorded
                    .get_or_create(&UnrecordedLabels {
                        namespace: namespace.into(),
                        loadtest: loadtest.into(),
                        metric: r.name.clone(),
                        why: why.into(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// Removes every series of custom metric `metric` of a run.
    fn remove_custom(&self, namespace: &str, loadtest: &str, metric: &str) {
        let labels = CustomLabels {
            namespace: namespace.into(),
            loadtest: loadtest.into(),
            metric: metric.into(),
        };
        for family in [
            &self.custom_value,
            &self.custom_p50,
            &self.custom_p95,
            &self.custom_p99,
        ] {
            family.remove(&labels);
        }
        for why in ["missing", "invalid"] {
            self.custom_unrecorded.remove(&UnrecordedLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                metric: metric.into(),
                why: why.into(),
            });
        }
    }

    /// Removes every series of the run of `namespace/loadtest`.
    pub fn remove_run(&self, namespace: &str, loadtest: &str) {
        let names = crate::lock(&self.known)
            .remove(&(namespace.to_string(), loadtest.to_string()))
            .unwrap_or_default();
        for scenario in names {
            let labels = ScenarioLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                scenario,
            };
            for family in [
                &self.rps,
                &self.error_rate,
                &self.p50,
                &self.p95,
                &self.p99,
                &self.sustainable_rate,
            ] {
                family.remove(&labels);
            }
        }
        let steps = crate::lock(&self.known_ws)
            .remove(&(namespace.to_string(), loadtest.to_string()))
            .unwrap_or_default();
        for (scenario, step) in steps {
            self.websocket.remove(&StepLabels {
                namespace: namespace.into(),
                loadtest: loadtest.into(),
                scenario,
                step,
            });
        }
        self.active_runners.remove(&RunLabels {
            namespace: namespace.into(),
            loadtest: loadtest.into(),
        });
        let custom = crate::lock(&self.known_custom)
            .remove(&(namespace.to_string(), loadtest.to_string()))
            .unwrap_or_default();
        for metric in custom {
            self.remove_custom(namespace, loadtest, &metric);
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// The final phase a status write ends a run in, when the status it replaces had not ended it.
fn newly_finished(before: Option<Phase>, written: Option<Phase>) -> Option<Phase> {
    let written = written.filter(|p| p.is_finished())?;
    match before {
        Some(p) if p.is_finished() => None,
        _ => Some(written),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn scenario(name: &str, rps: f64) -> ScenarioStatus {
        ScenarioStatus {
            scenario: name.into(),
            requests: 100,
            rps,
            error_rate: 0.25,
            p50_ms: 1.5,
            p95_ms: 9.0,
            p99_ms: 12.0,
            ..ScenarioStatus::default()
        }
    }

    #[test]
    fn the_exposition_has_reconcile_and_run_series() {
        let m = OperatorMetrics::new();
        m.reconciled(true, Duration::from_millis(3));
        m.reconciled(true, Duration::from_millis(3));
        m.reconciled(false, Duration::from_millis(40));
        m.set_run(
            "team-a",
            "web",
            &RunFigures {
                active_runners: 2,
                scenarios: vec![
                    scenario("browse", 50.0),
                    ScenarioStatus {
                        sustainable_rate: Some(400.0),
                        ..scenario("buy", 5.0)
                    },
                ],
                websocket_steps: vec![StepStatus {
                    scenario: "buy".into(),
                    step: "stream".into(),
                    websocket: Some(volley_crds::status::WsStepStatus {
                        open: 40,
                        open_max: 50,
                        message_p99_ms: 480.0,
                        expect_timeouts: 3,
                        ..Default::default()
                    }),
                    ..StepStatus::default()
                }],
                ..RunFigures::default()
            },
        );
        let text = m.encode();
        assert!(
            !text.contains("volley_run_sustainable_rate{namespace=\"team-a\",loadtest=\"web\",scenario=\"browse\"}"),
            "no probe, no series: {text}"
        );
        for line in [
            "volley_operator_reconciles_total{result=\"ok\"} 2",
            "volley_operator_reconciles_total{result=\"error\"} 1",
            "volley_operator_reconcile_duration_seconds_count 3",
            "volley_run_rps{namespace=\"team-a\",loadtest=\"web\",scenario=\"browse\"} 50.0",
            "volley_run_rps{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\"} 5.0",
            "volley_run_error_rate{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\"} 0.25",
            "volley_run_latency_p50_ms{namespace=\"team-a\",loadtest=\"web\",scenario=\"browse\"} 1.5",
            "volley_run_latency_p95_ms{namespace=\"team-a\",loadtest=\"web\",scenario=\"browse\"} 9.0",
            "volley_run_latency_p99_ms{namespace=\"team-a\",loadtest=\"web\",scenario=\"browse\"} 12.0",
            "volley_run_sustainable_rate{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\"} 400.0",
            "volley_run_active_runners{namespace=\"team-a\",loadtest=\"web\"} 2",
            "volley_run_ws_open{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\",step=\"stream\"} 40.0",
            "volley_run_ws_open_max{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\",step=\"stream\"} 50.0",
            "volley_run_ws_message_p99_ms{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\",step=\"stream\"} 480.0",
            "volley_run_ws_errors{namespace=\"team-a\",loadtest=\"web\",scenario=\"buy\",step=\"stream\",kind=\"expect_timeout\"} 3.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        m.remove_run("team-a", "web");
        let text = m.encode();
        assert!(!text.contains("loadtest=\"web\""), "{text}");
        assert!(text.contains("volley_operator_reconciles_total"));
    }

    #[test]
    fn custom_metrics_get_bounded_series_that_leave_with_the_run() {
        let m = OperatorMetrics::new();
        let row = |name: String| CustomMetricStatus {
            name,
            kind: "trend".into(),
            unit: Some("ms".into()),
            count: 10,
            missing: 2,
            invalid: 1,
            p50: Some(12.5),
            p95: Some(40.0),
            p99: Some(41.0),
            ..CustomMetricStatus::default()
        };
        let mut custom: Vec<CustomMetricStatus> =
            (0..30).map(|i| row(format!("m{i:02}"))).collect();
        custom[0] = CustomMetricStatus {
            kind: "counter".into(),
            unit: None,
            value: Some(7.0),
            p50: None,
            p95: None,
            p99: None,
            ..row("m00".into())
        };
        let figures = RunFigures {
            custom,
            ..RunFigures::default()
        };
        m.set_run("team-a", "web", &figures);
        let text = m.encode();
        for line in [
            "volley_run_custom_value{namespace=\"team-a\",loadtest=\"web\",metric=\"m00\"} 7.0",
            "volley_run_custom_p95{namespace=\"team-a\",loadtest=\"web\",metric=\"m01\"} 40.0",
            "volley_run_custom_unrecorded{namespace=\"team-a\",loadtest=\"web\",metric=\"m01\",why=\"missing\"} 2",
            "volley_run_custom_unrecorded{namespace=\"team-a\",loadtest=\"web\",metric=\"m19\",why=\"invalid\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Bounded: the 21st name and later get no series.
        assert!(!text.contains("metric=\"m20\""), "{text}");
        // A name the run no longer reports loses its series; the rest leave with the run.
        m.set_run(
            "team-a",
            "web",
            &RunFigures {
                custom: vec![row("m05".into())],
                ..RunFigures::default()
            },
        );
        let text = m.encode();
        assert!(!text.contains("metric=\"m01\""), "{text}");
        assert!(text.contains("metric=\"m05\""), "{text}");
        m.remove_run("team-a", "web");
        assert!(
            !m.encode().contains("volley_run_custom_p95{"),
            "{}",
            m.encode()
        );
    }

    #[test]
    fn a_run_is_counted_once_when_its_final_phase_is_first_written() {
        let m = OperatorMetrics::new();
        let line =
            "volley_runs_finished_total{namespace=\"team-a\",loadtest=\"web\",phase=\"Failed\"}";
        // Progress writes while running count nothing.
        m.status_written("team-a", "web", None, Some(Phase::Pending));
        m.status_written("team-a", "web", Some(Phase::Pending), Some(Phase::Running));
        m.status_written("team-a", "web", Some(Phase::Running), None);
        assert!(!m.encode().contains(line), "{}", m.encode());
        // The write that ends the run counts it ...
        m.status_written("team-a", "web", Some(Phase::Running), Some(Phase::Failed));
        // ... and a repeated reconcile of the finished LoadTest, writing the same phase, does not.
        m.status_written("team-a", "web", Some(Phase::Failed), Some(Phase::Failed));
        m.status_written("team-a", "web", Some(Phase::Failed), None);
        // Forgetting the run keeps the count.
        m.remove_run("team-a", "web");
        let text = m.encode();
        assert!(text.lines().any(|l| l == format!("{line} 1")), "{text}");
        // A re-run (back to Pending) that finishes again is a second run.
        m.status_written("team-a", "web", Some(Phase::Failed), Some(Phase::Pending));
        m.status_written(
            "team-a",
            "web",
            Some(Phase::Running),
            Some(Phase::Succeeded),
        );
        m.status_written("team-a", "web", None, Some(Phase::Error));
        let text = m.encode();
        for l in [
            format!("{line} 1"),
            "volley_runs_finished_total{namespace=\"team-a\",loadtest=\"web\",phase=\"Succeeded\"} 1".to_string(),
            "volley_runs_finished_total{namespace=\"team-a\",loadtest=\"web\",phase=\"Error\"} 1".to_string(),
        ] {
            assert!(text.lines().any(|x| x == l), "missing `{l}` in:\n{text}");
        }
    }
}
