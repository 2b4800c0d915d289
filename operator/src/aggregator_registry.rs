//! [`RunRegistry`] over the aggregator embedded in the operator process
//! ([`volley_aggregator::Aggregator`]): registrations become [`RunConfig`]s, and the
//! aggregator's [`RunView`] becomes the plain [`RunProgress`] the phase logic decides from.
//!
//! It also feeds the live per-run gauges of [`OperatorMetrics`]
//! ([`AggregatorRegistry::refresh_metrics`], called on every scrape) and removes them when a
//! run is forgotten, or at once when its LoadTest is deleted (the run itself is then retired:
//! stopped, and dropped by the aggregator's ticker once its runners acknowledged).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;
use volley_aggregator::{Aggregator, RunConfig, RunView};
use volley_core::metrics::status::{
    MAX_STATUS_CUSTOM_METRICS, custom_metric_rows, metrics_status, step_statuses,
};
use volley_core::observe::{ScenarioSpan, scenario_spans, scenario_windows};
use volley_crds::spec::PrometheusObserve;
use volley_crds::status::Phase;
use volley_observe::{Credentials, Observation, Prometheus, Window};

use crate::observed::{RunOutcome, RunProgress, RunResults};
use crate::registry::{RunRegistration, RunRegistry};
use crate::report;
use crate::telemetry::{OperatorMetrics, RunFigures};

/// Per-step rows kept in the status (the report ConfigMap has them all).
pub const MAX_STATUS_STEPS: usize = 20;

/// Which LoadTest a registered run belongs to.
#[derive(Clone, Debug)]
struct RunName {
    namespace: String,
    loadtest: String,
    /// `spec.observe.prometheus`, queried once the run has ended.
    observe: Option<ObserveJob>,
}

/// The Prometheus queries of a run, and whether they were started.
#[derive(Clone, Debug)]
struct ObserveJob {
    prometheus: PrometheusObserve,
    /// Where each scenario lies in the run, for `window: scenario` queries.
    spans: Vec<ScenarioSpan>,
    credentials: Result<Option<Credentials>, String>,
    started: bool,
}

/// The operator's aggregator, as the controller sees it. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct AggregatorRegistry {
    aggregator: Aggregator,
    metrics: Arc<OperatorMetrics>,
    runs: Mutex<HashMap<String, RunName>>,
}

impl AggregatorRegistry {
    /// An adapter over `aggregator`, feeding `metrics`.
    pub fn new(aggregator: Aggregator, metrics: Arc<OperatorMetrics>) -> AggregatorRegistry {
        AggregatorRegistry {
            aggregator,
            metrics,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// The aggregator underneath (for its router and ticker).
    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }

    /// Updates the per-run gauges from every registered run's current view.
    pub fn refresh_metrics(&self) {
        let runs: Vec<(String, RunName)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (run, name) in runs {
            if let Some(view) = self.aggregator.view(&run) {
                self.metrics
                    .set_run(&name.namespace, &name.loadtest, &figures(&view));
            }
        }
    }

    /// Whether run `run` (seen as `view`) waits for its Prometheus results: it ended after its
    /// start, has queries, and has no results yet. The first time, the queries are started
    /// in the background; their results reach the aggregator ([`Aggregator::observe`]),
    /// which judges the `prom()` thresholds and decides the end again.
    fn observing(&self, run: &str, view: &RunView) -> bool {
        let (Some(_), None, Some(window)) = (&view.end, &view.observation, view.window()) else {
            return false;
        };
        let mut runs = self.lock();
        let Some(job) = runs.get_mut(run).and_then(|r| r.observe.as_mut()) else {
            return false;
        };
        if !job.started {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            job.started = true;
            let aggregator = self.aggregator.clone();
            let (prometheus, credentials) = (job.prometheus.clone(), job.credentials.clone());
            let scenarios = scenario_windows(&job.spans, window);
            let run = run.to_string();
            runtime.spawn(async move {
                let observation =
                    query_prometheus(&prometheus, credentials, window, &scenarios).await;
                aggregator.observe(&run, observation);
            });
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunName>> {
        crate::lock(&self.runs)
    }
}

/// The queries of `prometheus` over `window` (and `scenarios`' windows for `window: scenario`
/// queries); credentials that could not be read, or a
/// client that cannot be made, fail every query with the reason. The URL was checked against
/// the allowed targets with the rest of the spec before the run.
async fn query_prometheus(
    prometheus: &PrometheusObserve,
    credentials: Result<Option<Credentials>, String>,
    window: Window,
    scenarios: &[(String, Window)],
) -> Observation {
    let timeout = prometheus
        .timeout
        .map(|t| t.get())
        .unwrap_or(volley_observe::client::DEFAULT_TIMEOUT);
    let client = credentials.and_then(|c| {
        Prometheus::new(
            &prometheus.url,
            c,
            prometheus.insecure_skip_tls_verify,
            timeout,
        )
        .map_err(|e| e.to_string())
    });
    match client {
        Ok(client) => {
            volley_observe::observe(&client, &prometheus.queries, window, scenarios).await
        }
        Err(why) => Observation::unavailable(&prometheus.queries, window, &why),
    }
}

/// The gauges' figures of a view.
pub fn figures(view: &RunView) -> RunFigures {
    RunFigures {
        active_runners: view.running,
        scenarios: view.scenario_statuses(),
        custom: custom_metric_rows(&view.merged.overall().custom, MAX_STATUS_CUSTOM_METRICS),
        websocket_steps: volley_core::metrics::status::step_statuses(
            &view.merged,
            MAX_STATUS_STEPS,
        )
        .into_iter()
        .filter(|st| st.websocket.is_some())
        .collect(),
    }
}

/// The aggregator's configuration of a registered run.
pub fn run_config(registration: &RunRegistration) -> RunConfig {
    let mut config = RunConfig::new(
        &registration.run_id,
        registration.token.expose(),
        &registration.loadtest,
        registration.spec.clone(),
    );
    if let Some(limit) = registration.start_timeout {
        config.barrier_timeout = limit;
    }
    config.started_at_unix_ms = registration
        .started_at
        .and_then(|t| u64::try_from(t.as_millisecond()).ok());
    config.baseline = registration.baseline.clone();
    config
}

/// The phase logic's view of the aggregator's `view`.
pub fn progress(view: &RunView) -> RunProgress {
    let started_at = view
        .start_at_unix_ms
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok());
    let outcome = view.end.as_ref().map(|end| RunOutcome {
        phase: end.phase,
        reason: end
            .reason
            .clone()
            .unwrap_or_else(|| default_reason(end.phase).to_string()),
        message: end
            .message
            .clone()
            .unwrap_or_else(|| format!("the run ended: {}", end.phase)),
    });
    let results = started_at.is_some().then(|| RunResults {
        metrics: Some(metrics_status(&view.merged.overall(), view.elapsed)),
        thresholds: view.thresholds.iter().map(|t| t.status.clone()).collect(),
        scenarios: view.scenario_statuses(),
        steps: step_statuses(&view.merged, MAX_STATUS_STEPS),
        verdict: report::view_verdict(view),
        report_ref: None,
        prometheus: view
            .observation
            .as_ref()
            .map(Observation::status_results)
            .unwrap_or_default(),
    });
    RunProgress {
        registered: view.registered,
        running: view.running,
        done: view.done,
        failed: view
            .failures
            .iter()
            .map(|f| (f.index, f.reason.clone()))
            .collect(),
        outcome,
        started_at,
        results,
    }
}

fn default_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Succeeded => "Completed",
        Phase::Failed => "Failed",
        Phase::Aborted => "Aborted",
        _ => "Error",
    }
}

impl RunRegistry for AggregatorRegistry {
    fn progress(&self, run: &str) -> Option<RunProgress> {
        let view = self.aggregator.view(run)?;
        let mut p = progress(&view);
        if self.observing(run, &view) {
            // Not finished until Prometheus has answered (bounded by the query timeout): the
            // final status, verdict and report include the query results.
            p.outcome = None;
            if let Some(r) = p.results.as_mut() {
                r.verdict = None;
            }
        }
        Some(p)
    }

    fn register(&self, registration: RunRegistration) {
        self.lock().insert(
            registration.run_id.clone(),
            RunName {
                namespace: registration.namespace.clone(),
                loadtest: registration.loadtest.clone(),
                observe: registration
                    .spec
                    .observe
                    .as_ref()
                    .and_then(|o| o.prometheus.clone())
                    .map(|prometheus| ObserveJob {
                        prometheus,
                        spans: scenario_spans(&registration.spec),
                        credentials: registration.prometheus_credentials.clone(),
                        started: false,
                    }),
            },
        );
        self.aggregator.add_run(run_config(&registration));
    }

    fn abort(&self, run: &str, reason: &str) {
        self.aggregator.abort(run, "Aborted", reason);
    }

    fn runner_failed(&self, run: &str, index: u32, reason: &str) {
        self.aggregator.runner_failed(run, index, reason);
    }

    fn forget(&self, run: &str) {
        if let Some(name) = self.lock().remove(run) {
            self.metrics.remove_run(&name.namespace, &name.loadtest);
        }
        self.aggregator.remove_run(run);
    }

    fn loadtest_gone(&self, namespace: &str, loadtest: &str, uid: Option<&str>) -> Vec<String> {
        let gone: Vec<String> = {
            let mut runs = self.lock();
            let ids: Vec<String> = runs
                .iter()
                .filter(|(run, name)| match uid {
                    // Every run of the LoadTest: its id is the UID, or the UID and a re-run's
                    // number (`names::run_id`).
                    Some(uid) => run
                        .strip_prefix(uid)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with("-r")),
                    None => name.namespace == namespace && name.loadtest == loadtest,
                })
                .map(|(run, _)| run.clone())
                .collect();
            for run in &ids {
                runs.remove(run);
            }
            ids
        };
        if !gone.is_empty() {
            self.metrics.remove_run(namespace, loadtest);
        }
        for run in &gone {
            self.aggregator
                .retire(run, "Deleted", "the LoadTest was deleted");
        }
        gone
    }

    fn report(&self, run: &str) -> Option<serde_json::Value> {
        let view = self.aggregator.view(run)?;
        (view.end.is_some() || view.start_at_unix_ms.is_some()).then(|| report::summary_json(&view))
    }
}

#[cfg(test)]
#[path = "aggregator_registry_tests.rs"]
mod tests;
