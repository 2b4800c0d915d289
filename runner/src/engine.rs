//! The load engine of one runner: compiles a LoadTest, runs `setup`, runs every scenario's
//! share side by side, and records every request into one cumulative [`RunMetrics`].
//!
//! It knows nothing about where the results go: `volley run` reads [`Engine::snapshot`] for
//! its progress line and summary, and the agent (distributed runs) sends the same snapshots
//! to the aggregator.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;
use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::model::RunMetrics;
use volley_core::scenario::{ShapeError, StepKind, Workload, is_measured};
use volley_core::split::split_spec;
use volley_core::target_policy::{TargetPolicy, check_spec};
use volley_core::template::{Reference, Template};
use volley_core::validate::FieldError;
use volley_crds::spec::{ErrorKind, LoadTestSpec, Step};

use crate::executor::{self, ExecutorCounters, ExecutorSummary, IterationEnd, Ticket, Vu};
use crate::feeder::{Feeder, FeederError};
use crate::step::{CompiledStep, StepError, StepOutcome, VuContext, build_client, run_step};

/// The async runtime a runner's load runs on: a current-thread runtime when the process may
/// use one CPU (a runner pod limited to one core, or a generator pinned to one), else the
/// multi-threaded one.
///
/// On one CPU the work-stealing scheduler buys nothing and costs its atomics, cross-worker
/// wake-ups and the spare worker it keeps for blocking I/O; measured on the closed model,
/// `benches/throughput.sh` (see the README's performance section).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Where this runner stands among the runners of a test.
#[derive(Clone, Debug)]
pub struct RunnerPlace {
    /// This runner's index, 0-based.
    pub index: u32,
    /// How many runners share the load.
    pub count: u32,
}

/// Where files a manifest refers to are found.
#[derive(Clone, Debug, Default)]
pub struct FileRoots {
    /// Directory of the manifest: `file:` paths of feeders and multipart parts are relative to it.
    pub manifest_dir: PathBuf,
    /// Where ConfigMaps are mounted (`ROOT/NAME/KEY`), inside a runner pod.
    pub configmaps: Option<PathBuf>,
}

/// Why a test could not start or finish on this runner.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A step could not be prepared.
    #[error("scenario `{scenario}`: {source}")]
    Step {
        /// Scenario (or `setup`).
        scenario: String,
        /// What is wrong.
        source: StepError,
    },
    /// A scenario's executor fields do not make a workload (a spec validation would refuse).
    #[error("scenario `{scenario}`: {source}")]
    Workload {
        /// The scenario.
        scenario: String,
        /// The missing or conflicting field.
        source: ShapeError,
    },
    /// A data feeder could not be loaded.
    #[error(transparent)]
    Feeder(#[from] FeederError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(StepError),
    /// URLs of the test are outside the allowed targets (`--allowed-targets`); nothing was
    /// sent. One entry per URL, naming its field.
    #[error(
        "outside the allowed targets: {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    TargetNotAllowed(Vec<FieldError>),
    /// A setup step failed, so the test cannot run.
    #[error("setup step `{step}` failed: {detail}")]
    Setup {
        /// The step's name.
        step: String,
        /// What happened.
        detail: String,
    },
}

/// One scenario ready to run.
struct PreparedScenario {
    /// Index in `RunMetrics::scenarios`.
    metrics_index: usize,
    /// This runner's share of the scenario.
    share: volley_crds::spec::Scenario,
    /// How the share schedules iterations.
    workload: Workload,
    steps: Arc<[PreparedStep]>,
    counters: Arc<ExecutorCounters>,
    /// The feeders this scenario's steps refer to; only these hand it rows (and can run out).
    feeders: Arc<[Arc<Feeder>]>,
    /// This runner's VUs of earlier scenarios, so `${vu}` is unique across scenarios.
    vu_offset: u64,
}

/// A compiled step and where its measurements go.
struct PreparedStep {
    compiled: CompiledStep,
    /// Index in the scenario's `steps` metrics; `None` for sleeps, which are not measured.
    metrics_index: Option<usize>,
    /// Polling steps record their end-to-end time as the step's latency.
    end_to_end: bool,
}

/// A runner's engine for one test.
pub struct Engine {
    place: RunnerPlace,
    client: reqwest::Client,
    setup: Vec<PreparedStep>,
    scenarios: Vec<PreparedScenario>,
    metrics: Arc<Mutex<RunMetrics>>,
    /// Wall-clock time of the first load request, ms since the Unix epoch (0 = none yet).
    first_request: Arc<AtomicU64>,
}

impl Engine {
    /// Compiles everything the test needs (steps, feeders, the HTTP client) before any load,
    /// so configuration errors surface at once, naming what is wrong.
    ///
    /// `spec` is the whole test; the engine keeps this runner's share of it. Every target is
    /// allowed; see [`Engine::prepare_with_policy`].
    pub fn prepare(
        spec: &LoadTestSpec,
        place: RunnerPlace,
        roots: &FileRoots,
    ) -> Result<Engine, EngineError> {
        Self::prepare_with_policy(spec, place, roots, &TargetPolicy::allow_all())
    }

    /// [`Engine::prepare`] limited to `policy`'s targets (`--allowed-targets`): the static
    /// check ([`check_spec`]) and then every URL known once compiled (`${env:...}` resolved)
    /// must pass, or the test fails here with [`EngineError::TargetNotAllowed`] before any
    /// request; URLs rendered per iteration and redirect hops are checked before each send and
    /// refused ones count as errors of kind `blocked` (see [`crate::step`]).
    pub fn prepare_with_policy(
        spec: &LoadTestSpec,
        place: RunnerPlace,
        roots: &FileRoots,
        policy: &TargetPolicy,
    ) -> Result<Engine, EngineError> {
        let refused = check_spec(spec, policy);
        if !refused.is_empty() {
            return Err(EngineError::TargetNotAllowed(refused));
        }
        let policy = Arc::new(policy.clone());
        let client = build_client(&spec.target).map_err(EngineError::Client)?;
        // The split follows the runners actually running, which for `volley run` may differ
        // from the manifest's `runners.parallelism`.
        let mut planned = spec.clone();
        planned.runners.parallelism = place.count.max(1);
        let share = split_spec(&planned, place.index);
        let metrics = RunMetrics::for_spec(spec);
        let offset = usize::from(!spec.setup.is_empty());

        let setup = prepare_steps(&spec.setup, spec, roots, "setup", "spec.setup", &policy)?;
        let feeders: Vec<Arc<Feeder>> = spec
            .data
            .iter()
            .map(|f| {
                Feeder::load(
                    f,
                    &roots.manifest_dir,
                    roots.configmaps.as_deref(),
                    place.index,
                    place.count,
                )
                .map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        let mut scenarios = Vec::with_capacity(share.scenarios.len());
        let mut vu_offset = 0;
        for (i, sc) in share.scenarios.iter().enumerate() {
            let used = referenced_feeders(&sc.steps);
            let workload = Workload::of(sc).map_err(|source| EngineError::Workload {
                scenario: sc.name.clone(),
                source,
            })?;
            let max_vus = executor::max_vus(&workload);
            scenarios.push(PreparedScenario {
                metrics_index: i + offset,
                steps: prepare_steps(
                    &sc.steps,
                    spec,
                    roots,
                    &sc.name,
                    &format!("spec.scenarios[{i}].steps"),
                    &policy,
                )?
                .into(),
                share: sc.clone(),
                workload,
                counters: Arc::new(ExecutorCounters::default()),
                feeders: feeders
                    .iter()
                    .filter(|f| used.contains(f.name()))
                    .cloned()
                    .collect(),
                vu_offset,
            });
            vu_offset += max_vus;
        }
        Ok(Engine {
            place,
            client,
            setup,
            scenarios,
            metrics: Arc::new(Mutex::new(metrics)),
            first_request: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Runs the setup steps once, in order, and returns the values they extract.
    ///
    /// Setup requests are measured like any other (scenario `setup`); a failed setup step
    /// stops the test, because every iteration depends on what setup provides.
    pub async fn run_setup(&self) -> Result<BTreeMap<String, String>, EngineError> {
        let mut ctx = VuContext::new(0, self.place.index, Arc::new(BTreeMap::new()));
        for step in &self.setup {
            let outcome = run_step(&step.compiled, &self.client, &mut ctx, Instant::now()).await;
            self.record(0, step, &outcome);
            if let Some(kind) = outcome.error {
                let status = outcome
                    .samples
                    .last()
                    .and_then(|s| s.status)
                    .map(|s| format!(", HTTP status {s}"))
                    .unwrap_or_default();
                return Err(EngineError::Setup {
                    step: step.compiled.name().to_string(),
                    detail: format!("{}{status}", kind_name(kind)),
                });
            }
        }
        Ok(ctx.extracted)
    }

    /// Runs every scenario's share side by side from `start` until each is done or `stop`
    /// turns true. Returns each scenario's executor summary, in spec order.
    pub async fn run(
        &self,
        setup_values: BTreeMap<String, String>,
        start: Instant,
        stop: watch::Receiver<bool>,
    ) -> Vec<ExecutorSummary> {
        let setup_values = Arc::new(setup_values);
        let runs = self.scenarios.iter().map(|sc| {
            let arrival = sc.workload.is_open_model();
            let place = self.place.clone();
            let setup_values = setup_values.clone();
            let make_vu = move |local: u64| HttpVu {
                // Numbered after earlier scenarios' VUs, then interleaved by runner, so `${vu}`
                // is unique across scenarios and runners.
                ctx: VuContext::new(
                    (sc.vu_offset + local) * u64::from(place.count.max(1)) + u64::from(place.index),
                    place.index,
                    setup_values.clone(),
                ),
                steps: sc.steps.clone(),
                scenario: sc.metrics_index,
                arrival,
                client: self.client.clone(),
                feeders: sc.feeders.clone(),
                metrics: self.metrics.clone(),
                first_request: self.first_request.clone(),
            };
            executor::run_scenario(
                &sc.share,
                &sc.workload,
                start,
                make_vu,
                sc.counters.clone(),
                stop.clone(),
            )
        });
        futures::future::join_all(runs).await
    }

    /// A copy of the cumulative metrics so far, with the executors' dropped and interrupted
    /// iteration counts.
    pub fn snapshot(&self) -> RunMetrics {
        let mut run = self
            .metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for sc in &self.scenarios {
            if let Some(m) = run.scenarios.get_mut(sc.metrics_index) {
                m.iterations.dropped_iterations = sc.counters.dropped.load(Ordering::Relaxed);
                m.iterations.interrupted_iterations =
                    sc.counters.interrupted.load(Ordering::Relaxed);
            }
        }
        let setup = self.setup.iter().map(|st| (0, st));
        let load = self
            .scenarios
            .iter()
            .flat_map(|sc| sc.steps.iter().map(move |st| (sc.metrics_index, st)));
        for (scenario, step) in setup.chain(load) {
            // WebSocket connections are a gauge the step keeps live; read it now.
            if let (Some((open, max)), Some(index)) =
                (step.compiled.websocket_open(), step.metrics_index)
                && let Some(m) = run.step_mut(scenario, index)
            {
                let ws = m.websocket.get_or_insert_with(Default::default);
                ws.counters.open = open;
                ws.counters.open_max = max;
            }
        }
        run
    }

    /// When this runner sent its first load request, in ms since the Unix epoch, if it has;
    /// runners compare these to measure how closely they started together.
    pub fn first_request_unix_ms(&self) -> Option<u64> {
        match self.first_request.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    fn record(&self, scenario: usize, step: &PreparedStep, outcome: &StepOutcome) {
        let Some(index) = step.metrics_index else {
            return;
        };
        let mut run = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = run.step_mut(scenario, index) {
            record_outcome(m, outcome, step.end_to_end);
        }
    }
}

/// Adds one step execution to its measurements.
///
/// Every attempt and poll is a request. A step that failed without any attempt carrying the
/// error (an `until` that timed out, or a request that could not be built) counts the error on
/// its last attempt, or as one failed request when nothing was sent, so `failures <= requests`
/// always holds.
fn record_outcome(
    m: &mut volley_core::metrics::model::Measurements,
    outcome: &StepOutcome,
    end_to_end: bool,
) {
    outcome.custom.record_into(&mut m.custom);
    if let Some(ws) = &outcome.websocket {
        crate::websocket::record(m.websocket.get_or_insert_with(Default::default), ws);
    }
    let c = &mut m.counters;
    c.checks_passed += u64::from(outcome.checks_passed);
    c.checks_failed += u64::from(outcome.checks_failed);
    if outcome.samples.is_empty() {
        if let Some(kind) = outcome.error {
            c.requests += 1;
            c.count_error(kind);
            record_latency(&mut m.failed_latency, outcome.step_latency);
        }
        return;
    }
    let last = outcome.samples.len() - 1;
    for (i, s) in outcome.samples.iter().enumerate() {
        let error = match (s.error, i == last) {
            (Some(kind), _) => Some(kind),
            (None, true) => outcome.error,
            (None, false) => None,
        };
        let c = &mut m.counters;
        c.requests += 1;
        c.bytes_sent += s.bytes_sent;
        c.bytes_received += s.bytes_received;
        if let Some(kind) = error {
            c.count_error(kind);
            record_latency(&mut m.failed_latency, s.latency);
        }
        record_latency(&mut m.latency_sent, s.latency_sent);
        if !end_to_end {
            record_latency(&mut m.latency, s.latency);
        }
    }
    if end_to_end {
        record_latency(&mut m.latency, outcome.step_latency);
    }
}

/// Names of the feeders whose columns `steps` use.
fn referenced_feeders(steps: &[Step]) -> std::collections::BTreeSet<String> {
    steps
        .iter()
        .flat_map(|s| match StepKind::of(s) {
            Ok(StepKind::Request(r)) => r.texts(),
            Ok(StepKind::WebSocket(ws)) => ws.texts(),
            Ok(StepKind::Sleep(_)) | Err(_) => Vec::new(),
        })
        .filter_map(|text| Template::parse(text).ok())
        .flat_map(|t| {
            t.references()
                .filter_map(|r| match r {
                    Reference::Feeder { feeder, .. } => Some(feeder.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Compiles `steps` (found at `path` in the spec, e.g. `spec.scenarios[0].steps`) and limits
/// each to `policy`.
fn prepare_steps(
    steps: &[Step],
    spec: &LoadTestSpec,
    roots: &FileRoots,
    scenario: &str,
    path: &str,
    policy: &Arc<TargetPolicy>,
) -> Result<Vec<PreparedStep>, EngineError> {
    let mut measured = 0;
    let mut refused = Vec::new();
    let prepared = steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let mut compiled = CompiledStep::compile(step, &spec.target, &roots.manifest_dir)
                .map_err(|source| EngineError::Step {
                    scenario: scenario.to_string(),
                    source,
                })?;
            if let Err(e) = compiled.restrict(policy) {
                // Known once `${env:...}` is resolved: the administrator's list decides before
                // any load.
                refused.push(FieldError {
                    path: format!("{path}[{i}].request.url"),
                    message: format!("{e} (the URL's host comes from ${{env:...}})"),
                });
            }
            let metrics_index = is_measured(step).then(|| {
                measured += 1;
                measured - 1
            });
            Ok(PreparedStep {
                compiled,
                metrics_index,
                end_to_end: step.until.is_some(),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    if refused.is_empty() {
        Ok(prepared)
    } else {
        Err(EngineError::TargetNotAllowed(refused))
    }
}

/// One virtual user: its context (cookies, extracted values) lives across iterations.
struct HttpVu {
    ctx: VuContext,
    steps: Arc<[PreparedStep]>,
    scenario: usize,
    arrival: bool,
    client: reqwest::Client,
    feeders: Arc<[Arc<Feeder>]>,
    metrics: Arc<Mutex<RunMetrics>>,
    first_request: Arc<AtomicU64>,
}

impl Vu for HttpVu {
    async fn iterate(&mut self, ticket: Ticket) -> IterationEnd {
        self.ctx.iteration = ticket.iteration;
        self.ctx.extracted.clear();
        for feeder in self.feeders.iter() {
            match feeder.next_row() {
                Some(row) => {
                    self.ctx.row.insert(feeder.name().to_string(), row);
                }
                None => return IterationEnd::Exhausted,
            }
        }
        if self.first_request.load(Ordering::Relaxed) == 0 {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(1)
                .max(1);
            // Only the first VU to get here records; later ones see a non-zero value.
            let _ = self.first_request.compare_exchange(
                0,
                now_ms,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let mut end = IterationEnd::Completed;
        for (i, step) in self.steps.iter().enumerate() {
            // The first step of an open-model iteration is timed from its slot on the
            // schedule, so a server that stalls shows up in latency instead of hiding in
            // fewer requests (coordinated omission).
            let not_before = if i == 0 && self.arrival {
                ticket.scheduled
            } else {
                Instant::now()
            };
            let outcome = run_step(&step.compiled, &self.client, &mut self.ctx, not_before).await;
            if let Some(index) = step.metrics_index {
                let mut run = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(m) = run.step_mut(self.scenario, index) {
                    record_outcome(m, &outcome, step.end_to_end);
                }
            }
            // A failed step breaks the user's flow: later steps would act on values it did
            // not produce, so the iteration ends here.
            if outcome.error.is_some() {
                end = IterationEnd::Failed;
                break;
            }
        }
        let mut run = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sc) = run.scenarios.get_mut(self.scenario) {
            sc.iterations.iterations += 1;
        }
        end
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    volley_core::metrics::model::error_kind_name(kind)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::step::RequestSample;
    use std::time::Duration;
    use volley_core::metrics::model::Measurements;

    fn sample(ms: u64, error: Option<ErrorKind>) -> RequestSample {
        RequestSample {
            latency: Duration::from_millis(ms),
            latency_sent: Duration::from_millis(ms),
            bytes_sent: 10,
            bytes_received: 100,
            status: Some(200),
            error,
        }
    }

    #[test]
    fn retried_attempts_are_requests_and_their_errors_count() {
        let mut m = Measurements::default();
        let outcome = StepOutcome {
            samples: vec![sample(5, Some(ErrorKind::Status5xx)), sample(7, None)],
            step_latency: Duration::from_millis(12),
            checks_passed: 1,
            checks_failed: 0,
            error: None,
            custom: Default::default(),
            websocket: None,
        };
        record_outcome(&mut m, &outcome, false);
        assert_eq!(m.counters.requests, 2);
        assert_eq!(m.counters.failures, 1);
        assert_eq!(m.counters.errors.get("5xx"), Some(&1));
        assert_eq!(m.latency.len(), 2);
        assert_eq!(m.failed_latency.len(), 1);
        assert_eq!(m.counters.bytes_received, 200);
        assert_eq!(m.counters.checks_passed, 1);
    }

    #[test]
    fn polling_records_end_to_end_time_once_and_a_timeout_on_the_last_poll() {
        let mut m = Measurements::default();
        let outcome = StepOutcome {
            samples: vec![sample(2, None), sample(2, None), sample(2, None)],
            step_latency: Duration::from_millis(900),
            checks_passed: 0,
            checks_failed: 0,
            error: Some(ErrorKind::Timeout),
            custom: Default::default(),
            websocket: None,
        };
        record_outcome(&mut m, &outcome, true);
        assert_eq!(m.counters.requests, 3);
        assert_eq!(m.counters.failures, 1);
        assert_eq!(m.counters.errors.get("timeout"), Some(&1));
        assert_eq!(m.latency.len(), 1);
        assert!(m.latency.max() >= 899_000);
        assert_eq!(m.latency_sent.len(), 3);
    }

    #[test]
    fn a_request_that_could_not_be_built_is_one_failed_request() {
        let mut m = Measurements::default();
        let outcome = StepOutcome {
            samples: Vec::new(),
            step_latency: Duration::ZERO,
            checks_passed: 0,
            checks_failed: 0,
            error: Some(ErrorKind::Extract),
            custom: Default::default(),
            websocket: None,
        };
        record_outcome(&mut m, &outcome, false);
        assert_eq!((m.counters.requests, m.counters.failures), (1, 1));
        assert!(m.latency.is_empty());
    }
}
