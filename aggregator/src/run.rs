//! One run at the aggregator: the start barrier, setup on runner 0, the runners' latest
//! cumulative reports, the merged result, and how the run ends.
//!
//! [`RunState`] is plain data. Every method takes the time as an argument and returns what to
//! answer, so the whole protocol (barrier, lost and repeated reports, silent runners,
//! abortOnFail, timeouts) is tested without a network or a clock; the HTTP side
//! ([`crate::server`]) only decodes, locks and calls.
//!
//! Exactness rests on two rules: every report is cumulative, and only the report with the
//! highest sequence number of each runner counts. The merged result is the exact sum of those
//! latest reports, so a lost report is made up for by the next, a repeated or late one changes
//! nothing, and an aggregator that lost its state rebuilds it from the next round of reports.
//!
//! A run that is stopped (abort, timeout, abortOnFail, a deleted LoadTest) answers `stop` to
//! every report, and counts every report it receives until each runner has acknowledged
//! with its final report, failed (its pod gone, an error report), or stayed silent past the
//! stop's grace; only then is it finished and [`RunState::drained`], so the final figures hold
//! every report the runners made before they stopped. Whoever holds the run forgets it only
//! once drained: a runner told the run is unknown cannot hear `stop`. A report that arrives
//! after the finish changes nothing (the result is final) and is answered `stop`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use volley_core::compare::Baseline;
use volley_core::metrics::error::MetricsError;
use volley_core::metrics::model::{Counters, RunMetrics, error_kind_name};
use volley_core::metrics::series::SeriesPoint;
use volley_core::metrics::status::scenario_statuses;
use volley_core::metrics::websocket::WS_ERROR_KINDS;
use volley_core::observe::{Observation, Window};
use volley_core::plan;
use volley_core::plateau::{self, PlateauResult, SustainableRate};
use volley_core::protocol::report::Report;
use volley_core::protocol::{
    PROTOCOL_VERSION, ReadyRequest, ReadyResponse, ReportResponse, RunnerReport, SetupResult,
    StartResponse,
};
use volley_core::threshold::evaluate::{
    ThresholdResult, abort_trigger, evaluate_thresholds, judge_prometheus,
};
use volley_crds::spec::{ErrorKind, LoadTestSpec};
use volley_crds::status::{Phase, ScenarioStatus};
use volley_crds::text::shorten;

use crate::end::{EndFacts, RunEnd, RunnerFailure, decide_end};
use crate::probe::PlateauWatch;
use crate::series::{RunSeries, ScenarioSeries, SeriesArchive};

/// Time between the barrier completing and the common start: long enough for every runner's
/// start poll to be answered, short enough not to waste the run's time.
pub const DEFAULT_START_DELAY: Duration = Duration::from_secs(1);
/// How long the barrier waits for every runner to register (pods may pull images first).
pub const DEFAULT_BARRIER_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A running runner that has not reported for this long is counted as failed.
pub const DEFAULT_SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest runner error message kept (it goes into status messages).
const MAX_RUNNER_ERROR_CHARS: usize = 500;
/// Longest host name kept.
const MAX_HOST_CHARS: usize = 253;
/// Longest name quoted back in a refusal.
const MAX_QUOTED_CHARS: usize = 80;

/// What the aggregator needs to know about a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The run's id in URLs (`/v1/runs/{run}/...`).
    pub run: String,
    /// The run's bearer token.
    pub token: String,
    /// The LoadTest's name.
    pub name: String,
    /// The whole spec; every runner takes its share of it.
    pub spec: Arc<LoadTestSpec>,
    /// How many runners share the load.
    pub runners: u32,
    /// How often runners report.
    pub report_interval: Duration,
    /// Time from the barrier completing to the common start.
    pub start_delay: Duration,
    /// How long the barrier waits for every runner to register.
    pub barrier_timeout: Duration,
    /// How long a running runner may stay silent before it counts as failed.
    pub silence_timeout: Duration,
    /// The bound on the whole run from its registration, barrier and setup included.
    pub timeout: Duration,
    /// When the run is known to have started already (an operator restarting mid-run): the
    /// barrier is skipped and the runners' next reports rebuild the result.
    pub started_at_unix_ms: Option<u64>,
    /// What baseline thresholds (`p(95) < baseline * 1.1`) compare with; unavailable (the
    /// default) skips them with the reason.
    pub baseline: Baseline,
}

impl RunConfig {
    /// A run with the defaults: `spec.runners.parallelism` runners, 1 s reports, the spec's
    /// timeout (or its plan plus ten minutes).
    pub fn new(run: &str, token: &str, name: &str, spec: LoadTestSpec) -> RunConfig {
        RunConfig {
            run: run.to_owned(),
            token: token.to_owned(),
            name: name.to_owned(),
            runners: spec.runners.parallelism.max(1),
            report_interval: Duration::from_secs(1),
            start_delay: DEFAULT_START_DELAY,
            barrier_timeout: DEFAULT_BARRIER_TIMEOUT,
            silence_timeout: DEFAULT_SILENCE_TIMEOUT,
            timeout: plan::timeout(&spec),
            started_at_unix_ms: None,
            baseline: Baseline::default(),
            spec: Arc::new(spec),
        }
    }
}

/// Where a run is in its lifecycle (not to be confused with a ramp stage of the spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLifecycle {
    /// Waiting for every runner to register.
    Barrier,
    /// Runner 0 is running `spec.setup`.
    Setup,
    /// The common start is set; runners are (about to be) sending load.
    Running,
    /// Runners were told to stop and are sending their final reports.
    Stopping,
    /// Over; [`RunView::end`] says how.
    Finished,
}

/// Why a protocol call was refused. The run is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// No run by that id.
    #[error("no run `{0}` here")]
    UnknownRun(String),
    /// Missing or wrong bearer token.
    #[error("missing or wrong token for run `{0}`")]
    Unauthorized(String),
    /// The runner index is outside the run.
    #[error("runner {index} is outside the run's {runners} runner(s)")]
    UnknownRunner {
        /// The index asked for.
        index: u32,
        /// How many runners the run has.
        runners: u32,
    },
    /// The runner speaks another protocol version.
    #[error("the runner speaks protocol {runner}, this aggregator {ours}: use matching versions")]
    ProtocolMismatch {
        /// The runner's version.
        runner: u32,
        /// Ours.
        ours: u32,
    },
    /// A setup result outside [`RunLifecycle::Setup`].
    #[error("the run is not waiting for setup")]
    NotInSetup,
    /// A report older than one already received.
    #[error("report {seq} is older than report {latest} already received from runner {index}")]
    StaleReport {
        /// The runner.
        index: u32,
        /// The report's sequence number.
        seq: u64,
        /// The newest one received.
        latest: u64,
    },
    /// The body names another runner than the path.
    #[error("the report says runner {body} but was posted for runner {path}")]
    WrongRunner {
        /// Index in the path.
        path: u32,
        /// Index in the body.
        body: u32,
    },
    /// The histograms could not be decoded or merged.
    #[error("malformed report: {0}")]
    BadReport(#[from] MetricsError),
    /// The report names a scenario, step or error kind the run's spec does not have.
    #[error("the report does not fit the run's spec: {0}")]
    NotInSpec(String),
    /// A report before every runner registered: it does not move the run.
    #[error(
        "the run has not started: reports are accepted once every runner has registered \
         (and setup, if any, is done)"
    )]
    NotStarted,
    /// The body is not the expected JSON.
    #[error("malformed body: {0}")]
    BadBody(String),
}

/// A report with its histograms decoded, ready to be applied under the lock.
#[derive(Clone, Debug)]
pub struct DecodedReport {
    /// The runner's index.
    pub runner: u32,
    /// Its sequence number.
    pub seq: u64,
    /// Time since the common start.
    pub elapsed: Duration,
    /// The runner's final report.
    pub done: bool,
    /// The cumulative metrics.
    pub metrics: RunMetrics,
    /// When the runner sent its first request.
    pub first_request_unix_ms: Option<u64>,
    /// A fatal error that ended the runner.
    pub error: Option<String>,
}

impl DecodedReport {
    /// Decodes `report` and checks that it merges into a result of the run's `shape`
    /// ([`RunState::shape`]), so applying it later cannot fail half-way.
    ///
    /// The report may carry only the scenarios and steps of the run's spec, each once, and
    /// only the closed set of error kinds: anything else is refused before a histogram is
    /// decoded, so a report can neither grow the run's result nor its status beyond what the
    /// spec shapes.
    pub fn decode(report: &RunnerReport, shape: &RunMetrics) -> Result<Self, ProtocolError> {
        fits_shape(&report.report, shape).map_err(ProtocolError::NotInSpec)?;
        let metrics = report.report.to_metrics()?;
        shape.check_merge(&metrics)?;
        Ok(DecodedReport {
            runner: report.report.runner,
            seq: report.report.seq,
            elapsed: report.report.elapsed(),
            done: report.report.done,
            metrics,
            first_request_unix_ms: report.first_request_unix_ms,
            error: report
                .error
                .as_deref()
                .map(|e| shorten(e, MAX_RUNNER_ERROR_CHARS)),
        })
    }
}

/// Checks that `report` names only the scenarios and steps of `shape`, each at most once, only
/// the custom metrics each step declares, and only error kinds of [`ErrorKind::ALL`] (and, for
/// WebSocket figures, of [`WS_ERROR_KINDS`]); says what does not fit.
fn fits_shape(report: &Report, shape: &RunMetrics) -> Result<(), String> {
    let quote = |name: &str| format!("{:?}", shorten(name, MAX_QUOTED_CHARS));
    let mut seen_scenarios = Vec::with_capacity(report.scenarios.len());
    for scenario in &report.scenarios {
        let Some(expected) = shape.scenario(&scenario.name) else {
            return Err(format!("no scenario {}", quote(&scenario.name)));
        };
        if seen_scenarios.contains(&scenario.name.as_str()) {
            return Err(format!("scenario {} twice", quote(&scenario.name)));
        }
        seen_scenarios.push(scenario.name.as_str());
        known_error_kinds(&scenario.iterations).map_err(|kind| {
            format!(
                "error kind {} in scenario {}",
                quote(kind),
                quote(&scenario.name)
            )
        })?;
        let mut seen_steps = Vec::with_capacity(scenario.steps.len());
        for step in &scenario.steps {
            let Some(expected_step) = expected.steps.iter().find(|s| s.name == step.name) else {
                return Err(format!(
                    "no step {} in scenario {}",
                    quote(&step.name),
                    quote(&scenario.name)
                ));
            };
            // Custom metrics: only those the step declares (their kinds are checked by the
            // merge check), so a report cannot add names to the result.
            if let Some(c) = step
                .custom
                .iter()
                .find(|c| !expected_step.m.custom.metrics.contains_key(&c.name))
            {
                return Err(format!(
                    "custom metric {} in step {} of scenario {}, which does not declare it",
                    quote(&c.name),
                    quote(&step.name),
                    quote(&scenario.name)
                ));
            }
            if seen_steps.contains(&step.name.as_str()) {
                return Err(format!(
                    "step {} twice in scenario {}",
                    quote(&step.name),
                    quote(&scenario.name)
                ));
            }
            seen_steps.push(step.name.as_str());
            known_error_kinds(&step.counters).map_err(|kind| {
                format!(
                    "error kind {} in step {} of scenario {} (known: {})",
                    quote(kind),
                    quote(&step.name),
                    quote(&scenario.name),
                    ErrorKind::ALL.map(error_kind_name).join(", ")
                )
            })?;
            if let Some(ws) = &step.websocket
                && let Some(kind) = ws
                    .counters
                    .errors
                    .keys()
                    .find(|k| !WS_ERROR_KINDS.contains(&k.as_str()))
            {
                return Err(format!(
                    "websocket error kind {} in step {} of scenario {} (known: {})",
                    quote(kind),
                    quote(&step.name),
                    quote(&scenario.name),
                    WS_ERROR_KINDS.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The first error kind of `counters` outside [`ErrorKind::ALL`], if any.
fn known_error_kinds(counters: &Counters) -> Result<(), &str> {
    match counters.errors.keys().find(|k| {
        !ErrorKind::ALL
            .iter()
            .any(|kind| error_kind_name(*kind) == k.as_str())
    }) {
        Some(unknown) => Err(unknown.as_str()),
        None => Ok(()),
    }
}

/// The run as seen now: what status, progress lines and the summary are made of.
#[derive(Clone, Debug)]
pub struct RunView {
    /// The LoadTest's name.
    pub name: String,
    /// Where the run is.
    pub lifecycle: RunLifecycle,
    /// Runners in the run.
    pub runners: u32,
    /// Runners that registered.
    pub registered: u32,
    /// Runners that reported and have not finished.
    pub running: u32,
    /// Runners that sent their final report.
    pub done: u32,
    /// Runners that failed, in the order they failed.
    pub failures: Vec<RunnerFailure>,
    /// The common start, ms since the Unix epoch.
    pub start_at_unix_ms: Option<u64>,
    /// Time since the start covered by the merged data (the newest report's).
    pub elapsed: Duration,
    /// All runners' latest reports, merged exactly.
    pub merged: RunMetrics,
    /// The thresholds on the merged result (aborted marked on the one that stopped the run).
    pub thresholds: Vec<ThresholdResult>,
    /// Largest gap between the runners' first requests.
    pub start_skew: Option<Duration>,
    /// The series of the merged result at its finest level of detail: one point per second
    /// for the newest hour, older points in coarser buckets (see [`crate::series`]).
    pub series: Vec<SeriesPoint>,
    /// The same, per load scenario.
    pub scenario_series: Vec<ScenarioSeries>,
    /// Every series at every resolution kept, from which a report picks the level of detail
    /// that fits its budget.
    pub series_archive: SeriesArchive,
    /// The plateaus of ramping-arrival-rate scenarios measured so far, judged one by one.
    pub plateaus: Vec<PlateauResult>,
    /// The probes' answers so far, from `plateaus`.
    pub sustainable_rates: Vec<SustainableRate>,
    /// How the run ended, once it has.
    pub end: Option<RunEnd>,
    /// The Prometheus queries' results, once [`RunState::observe`] has them.
    pub observation: Option<Observation>,
}

impl RunView {
    /// The load window in Unix milliseconds (the common start to the end of the merged data,
    /// so the start barrier and setup are outside it); `None` before the start.
    pub fn window(&self) -> Option<Window> {
        let start = self.start_at_unix_ms?;
        Some(Window {
            start_unix_ms: start,
            end_unix_ms: start + u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// One row per scenario, a rate probe's with its sustainable rate.
    pub fn scenario_statuses(&self) -> Vec<ScenarioStatus> {
        let mut rows = scenario_statuses(&self.merged, self.elapsed);
        plateau::annotate(&mut rows, &self.sustainable_rates);
        rows
    }
}

/// What the run knows of one runner (its slot in the run, by index).
#[derive(Debug, Default)]
struct RunnerState {
    host: String,
    registered: bool,
    latest: Option<Latest>,
    done: bool,
    /// Told to abort before it started: it sends nothing more and is owed nothing.
    released: bool,
    failure: Option<RunnerFailure>,
    last_heard: Option<Instant>,
    /// Reported since thresholds were last judged for abortOnFail.
    fresh: bool,
    /// When a report refused at the barrier says the run started (ms since the Unix epoch):
    /// this state is new and the run was already under way.
    claimed_start_unix_ms: Option<u64>,
}

impl RunnerState {
    fn settled(&self) -> bool {
        self.done || self.released || self.failure.is_some()
    }
}

#[derive(Debug)]
struct Latest {
    seq: u64,
    metrics: RunMetrics,
    elapsed: Duration,
    first_request_unix_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Start {
    at: Instant,
    unix_ms: u64,
}

/// One run's state. See the module documentation.
#[derive(Debug)]
pub struct RunState {
    config: RunConfig,
    /// The empty result shaped by the spec, which every report must merge into.
    shape: Arc<RunMetrics>,
    created: Instant,
    created_wall: SystemTime,
    lifecycle: RunLifecycle,
    slots: Vec<RunnerState>,
    setup_values: BTreeMap<String, String>,
    start: Option<Start>,
    stop: Option<RunEnd>,
    stopped_at: Option<Instant>,
    aborted_by: Option<usize>,
    end: Option<RunEnd>,
    merged: RunMetrics,
    merged_elapsed: Duration,
    /// A report arrived since `merged` was computed.
    dirty: bool,
    /// When thresholds were last judged for abortOnFail.
    judged_at: Option<Instant>,
    thresholds: Vec<ThresholdResult>,
    series: RunSeries,
    next_point: u64,
    plateaus: PlateauWatch,
    version: u64,
    /// Its LoadTest is gone: the run is dropped once drained ([`RunState::retired`]).
    retiring: bool,
    /// The Prometheus results, once the finished run has them.
    observation: Option<Observation>,
}

impl RunState {
    /// A new run, registered `now` (wall clock `now_wall`).
    pub fn new(config: RunConfig, now: Instant, now_wall: SystemTime) -> RunState {
        let runners = config.runners.max(1);
        let shape = Arc::new(RunMetrics::for_spec(&config.spec));
        let mut state = RunState {
            merged: (*shape).clone(),
            shape,
            created: now,
            created_wall: now_wall,
            lifecycle: RunLifecycle::Barrier,
            slots: (0..runners).map(|_| RunnerState::default()).collect(),
            setup_values: BTreeMap::new(),
            start: None,
            stop: None,
            stopped_at: None,
            aborted_by: None,
            end: None,
            merged_elapsed: Duration::ZERO,
            dirty: false,
            judged_at: None,
            thresholds: Vec::new(),
            series: RunSeries::default(),
            next_point: 1,
            plateaus: PlateauWatch::new(&config.spec),
            version: 0,
            retiring: false,
            observation: None,
            config: RunConfig { runners, ..config },
        };
        if let Some(unix_ms) = state.config.started_at_unix_ms {
            state.resume_at(unix_ms, now);
        }
        state
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The empty result shaped by the spec, to check reports against
    /// ([`DecodedReport::decode`]) outside the lock.
    pub fn shape(&self) -> Arc<RunMetrics> {
        self.shape.clone()
    }

    /// Where the run is.
    pub fn lifecycle(&self) -> RunLifecycle {
        self.lifecycle
    }

    /// Changes whenever the run moves on in its lifecycle or the start changes, so long-polls know to look again.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A runner registers. The last one to register completes the barrier.
    pub fn ready(
        &mut self,
        index: u32,
        request: &ReadyRequest,
        now: Instant,
    ) -> Result<ReadyResponse, ProtocolError> {
        if request.protocol != PROTOCOL_VERSION {
            return Err(ProtocolError::ProtocolMismatch {
                runner: request.protocol,
                ours: PROTOCOL_VERSION,
            });
        }
        let slot = self.slot_mut(index)?;
        slot.registered = true;
        slot.host = shorten(&request.host, MAX_HOST_CHARS);
        slot.last_heard = Some(now);
        self.complete_barrier(now);
        Ok(ReadyResponse {
            name: self.config.name.clone(),
            runners: self.config.runners,
            spec: (*self.config.spec).clone(),
            report_interval_ms: u64::try_from(self.config.report_interval.as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    /// What runner `index` should do now; [`StartResponse::Wait`] means ask again later (the
    /// server holds the poll until [`RunState::version`] changes).
    pub fn poll_start(&mut self, index: u32, now: Instant) -> Result<StartResponse, ProtocolError> {
        let slot = self.slot_mut(index)?;
        slot.last_heard = Some(now);
        if !slot.registered {
            // Only a registered runner polls: this state is new (the aggregator restarted
            // while the runners waited at the barrier), so the poll stands for the ready.
            slot.registered = true;
            self.complete_barrier(now);
        }
        let lifecycle = self.lifecycle;
        let start = self.start;
        let reason = self.end_or_stop_reason();
        let slot = &mut self.slots[index as usize];
        Ok(match (lifecycle, start) {
            (RunLifecycle::Setup, _) if index == 0 => StartResponse::RunSetup,
            (RunLifecycle::Barrier | RunLifecycle::Setup, _) => StartResponse::Wait,
            (RunLifecycle::Running, Some(start)) => StartResponse::Start {
                start_at_unix_ms: start.unix_ms,
                setup: self.setup_values.clone(),
            },
            _ => {
                if slot.latest.is_none() && !slot.settled() {
                    slot.released = true;
                }
                StartResponse::Abort { reason }
            }
        })
    }

    /// Runner 0's setup result: the values go to every runner with the start, or a failure
    /// ends the run in Error. A repeated post after the start is accepted and ignored.
    pub fn setup(
        &mut self,
        result: &SetupResult,
        report: Option<DecodedReport>,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        match self.lifecycle {
            RunLifecycle::Setup => {}
            RunLifecycle::Running | RunLifecycle::Stopping | RunLifecycle::Finished
                if self.start.is_some() =>
            {
                return Ok(());
            }
            _ => return Err(ProtocolError::NotInSetup),
        }
        // Runner 0's run reports include the setup figures; until the first one arrives,
        // the setup report stands in for it (sequence 0, replaced by any run report).
        if let (Some(report), Some(slot)) = (report, self.slots.first_mut())
            && slot.latest.is_none()
        {
            slot.latest = Some(Latest {
                seq: 0,
                metrics: report.metrics,
                elapsed: Duration::ZERO,
                first_request_unix_ms: None,
            });
            self.dirty = true;
        }
        match &result.error {
            Some(e) => {
                let message = format!("setup failed: {}", shorten(e, MAX_RUNNER_ERROR_CHARS));
                self.finish_early(RunEnd::new(Phase::Error, "SetupFailed", message));
            }
            None => {
                self.setup_values = result.values.clone();
                self.start_load(now);
            }
        }
        Ok(())
    }

    /// Runner `index`'s cumulative report. Older than one already received: refused
    /// ([`ProtocolError::StaleReport`]) and ignored; the same sequence number again: accepted
    /// and ignored. The answer says whether to stop.
    pub fn report(
        &mut self,
        index: u32,
        report: DecodedReport,
        now: Instant,
    ) -> Result<ReportResponse, ProtocolError> {
        if report.runner != index {
            return Err(ProtocolError::WrongRunner {
                path: index,
                body: report.runner,
            });
        }
        self.slot_mut(index)?;
        if self.lifecycle == RunLifecycle::Finished {
            return Ok(self.answer());
        }
        if report.error.is_none()
            && matches!(self.lifecycle, RunLifecycle::Barrier | RunLifecycle::Setup)
        {
            self.early_report(index, report.elapsed, now)?;
        }
        let slot = &mut self.slots[index as usize];
        if let Some(latest) = &slot.latest {
            if report.seq < latest.seq {
                return Err(ProtocolError::StaleReport {
                    index,
                    seq: report.seq,
                    latest: latest.seq,
                });
            }
            if report.seq == latest.seq && latest.seq > 0 {
                return Ok(self.answer());
            }
        }
        slot.last_heard = Some(now);
        let first_request_unix_ms = report
            .first_request_unix_ms
            .or_else(|| slot.latest.as_ref()?.first_request_unix_ms);
        slot.latest = Some(Latest {
            seq: report.seq,
            metrics: report.metrics,
            elapsed: report.elapsed,
            first_request_unix_ms,
        });
        self.slots[index as usize].fresh = true;
        self.dirty = true;
        if let Some(error) = report.error {
            if self.stop.is_some() && report.done {
                // The run is being stopped anyway (abort, Ctrl-C, timeout): a runner cut short
                // by the same stop finished as told.
                self.slots[index as usize].done = true;
            } else {
                self.runner_failed(index, &error, now);
            }
        } else {
            if report.done {
                self.slots[index as usize].done = true;
            }
        }
        self.finish_if_settled();
        Ok(self.answer())
    }

    /// A report without an error before the barrier completed. Only a runner that has started
    /// sends one: either this state is new (the aggregator restarted while the run was under
    /// way) or the runner jumps the gun. It counts as the runner's ready and its claim of when
    /// the run started, and is refused ([`ProtocolError::NotStarted`]) unless it completes
    /// the barrier: no runner moves the run on its own. Once every runner has registered or
    /// reported, the run resumes from the earliest claim, and the next reports count (they are
    /// cumulative, so nothing is lost).
    fn early_report(
        &mut self,
        index: u32,
        elapsed: Duration,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        if self.lifecycle == RunLifecycle::Barrier {
            // No run started longer ago than its timeout allows.
            let elapsed = elapsed.min(self.config.timeout);
            let claim = self.wall_ms(now).saturating_sub(millis(elapsed));
            let slot = &mut self.slots[index as usize];
            slot.registered = true;
            slot.last_heard = Some(now);
            slot.claimed_start_unix_ms = Some(claim);
            self.complete_barrier(now);
        }
        if matches!(self.lifecycle, RunLifecycle::Barrier | RunLifecycle::Setup) {
            return Err(ProtocolError::NotStarted);
        }
        Ok(())
    }

    /// Runner `index` died or could not start (a process exit, a failed pod, an error
    /// report). Its figures so far stay in the result. Before the start this ends the run in
    /// Error: it cannot start without every runner.
    pub fn runner_failed(&mut self, index: u32, reason: &str, now: Instant) {
        let at = self.since_start(now);
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if slot.settled() || self.lifecycle == RunLifecycle::Finished {
            return;
        }
        let failure = RunnerFailure {
            index,
            host: slot.host.clone(),
            at,
            reason: shorten(reason, MAX_RUNNER_ERROR_CHARS),
        };
        // The reason may come from the runner's report: one escaped line.
        let logged = volley_crds::text::for_log(&failure.reason, MAX_RUNNER_ERROR_CHARS);
        tracing::warn!(run = %self.config.run, runner = index, reason = %logged, "runner failed");
        slot.failure = Some(failure.clone());
        self.version += 1;
        if matches!(self.lifecycle, RunLifecycle::Barrier | RunLifecycle::Setup) {
            self.finish_early(RunEnd::new(
                Phase::Error,
                "RunnerFailed",
                failure.describe(),
            ));
        } else {
            self.finish_if_settled();
        }
    }

    /// Stops the run (`spec.abort`, Ctrl-C): runners are told at their next report, the
    /// figures so far are kept, and the run ends Aborted with `reason` (e.g. `Aborted`) and
    /// `message`. Before the start it ends at once.
    pub fn abort(&mut self, reason: &str, message: &str, now: Instant) {
        let end = RunEnd::new(Phase::Aborted, reason, message);
        if matches!(self.lifecycle, RunLifecycle::Barrier | RunLifecycle::Setup) {
            self.finish_early(end);
        } else {
            self.request_stop(end, now);
        }
    }

    /// Whether every runner is through with the run: it finished, which a run that was
    /// stopped only does once every runner acknowledged the stop with its final report, failed
    /// (its pod gone, an error report), was released before its start, or stayed silent past
    /// the stop's grace (the longest `gracefulStop`, two report intervals and 10 s). Until
    /// then the run must stay: a runner that is told the run is unknown cannot hear `stop`.
    pub fn drained(&self) -> bool {
        self.lifecycle == RunLifecycle::Finished
    }

    /// The run's LoadTest is gone: stop the run (`reason`, `message`, as [`RunState::abort`])
    /// and let it go once drained ([`RunState::retired`]).
    pub fn retire(&mut self, reason: &str, message: &str, now: Instant) {
        self.retiring = true;
        self.abort(reason, message, now);
    }

    /// Retired and drained: nothing is owed to anyone any more, the run can be dropped.
    pub fn retired(&self) -> bool {
        self.retiring && self.drained()
    }

    /// Moves time forward: the barrier and run timeouts, silent runners, abortOnFail on the
    /// merged result, the per-second series, and the end once every runner is settled. Call
    /// it a few times a second.
    pub fn tick(&mut self, now: Instant) {
        if self.lifecycle == RunLifecycle::Finished {
            return;
        }
        let age = now.saturating_duration_since(self.created);
        if age >= self.config.timeout {
            let limit = volley_crds::Duration::from(self.config.timeout);
            let end = match self.lifecycle {
                RunLifecycle::Barrier => RunEnd::new(
                    Phase::Failed,
                    "Timeout",
                    format!(
                        "the run did not start within its timeout of {limit}: {}",
                        self.missing_runners()
                    ),
                ),
                _ => RunEnd::new(
                    Phase::Failed,
                    "Timeout",
                    format!("the run did not finish within its timeout of {limit}"),
                ),
            };
            if matches!(self.lifecycle, RunLifecycle::Barrier | RunLifecycle::Setup) {
                self.finish_early(end);
                return;
            }
            self.request_stop(end, now);
        }
        if self.lifecycle == RunLifecycle::Barrier && age >= self.config.barrier_timeout {
            let limit = volley_crds::Duration::from(self.config.barrier_timeout);
            let message = format!(
                "not every runner registered within {limit}: {}",
                self.missing_runners()
            );
            self.finish_early(RunEnd::new(Phase::Error, "RunnersNotReady", message));
            return;
        }
        if let Some(start) = self.start {
            self.fail_silent_runners(start, now);
            self.judge_abort(now);
            self.add_series_points(start, now);
        }
        if self.lifecycle == RunLifecycle::Stopping
            && let Some(stopped_at) = self.stopped_at
        {
            let grace = self.stop_grace();
            if now.saturating_duration_since(stopped_at) >= grace {
                let why = format!(
                    "no final report within {} of the stop",
                    volley_crds::Duration::from(grace)
                );
                for index in 0..self.config.runners {
                    if !self.slots[index as usize].settled() {
                        self.runner_failed(index, &why, now);
                    }
                }
            }
        }
        self.finish_if_settled();
    }

    /// Where the run is and how far its newest report got: a cheap look, without the merge
    /// and the copy [`RunState::view`] makes.
    pub fn glance(&self) -> (RunLifecycle, Duration) {
        let elapsed = self
            .slots
            .iter()
            .filter_map(|s| s.latest.as_ref().map(|l| l.elapsed))
            .max()
            .unwrap_or_default();
        (self.lifecycle, elapsed)
    }

    /// The run as it stands.
    pub fn view(&mut self) -> RunView {
        self.refresh();
        if self.lifecycle != RunLifecycle::Finished {
            self.thresholds = evaluate_thresholds(
                &self.config.spec,
                &self.merged,
                self.merged_elapsed,
                &self.config.baseline,
            );
        }
        let plateaus = self.plateaus.results(&self.config.spec);
        let count = |f: fn(&RunnerState) -> bool| self.slots.iter().filter(|s| f(s)).count() as u32;
        let series_archive = self.series.archive();
        let finest = series_archive.compose(0);
        RunView {
            name: self.config.name.clone(),
            lifecycle: self.lifecycle,
            runners: self.config.runners,
            registered: count(|s| s.registered),
            running: count(|s| s.latest.is_some() && !s.settled()),
            done: count(|s| s.done),
            failures: self.failures(),
            start_at_unix_ms: self.start.map(|s| s.unix_ms),
            elapsed: self.merged_elapsed,
            merged: self.merged.clone(),
            thresholds: self.thresholds.clone(),
            start_skew: self.start_skew(),
            series: finest.series,
            scenario_series: finest.scenario_series,
            series_archive,
            sustainable_rates: plateau::sustainable_rates(&plateaus),
            plateaus,
            end: self.end.clone(),
            observation: self.observation.clone(),
        }
    }

    /// Records the Prometheus results of the finished run: its `prom()` thresholds are judged
    /// on them and the end is decided again (a failed query fails only the thresholds on it;
    /// the load results stay as they are). Ignored before the run has finished, or for a run
    /// that never started.
    pub fn observe(&mut self, observation: Observation) {
        if self.lifecycle != RunLifecycle::Finished || self.start.is_none() {
            return;
        }
        judge_prometheus(
            &self.config.spec,
            &mut self.thresholds,
            &observation,
            &self.config.baseline,
        );
        let end = self.decide_end();
        tracing::info!(run = %self.config.run, phase = %end.phase, reason = ?end.reason, "run judged with its Prometheus results");
        self.end = Some(end);
        self.observation = Some(observation);
        self.version += 1;
    }

    // ---- transitions ------------------------------------------------------------------------

    fn set_lifecycle(&mut self, lifecycle: RunLifecycle) {
        if self.lifecycle != lifecycle {
            tracing::info!(run = %self.config.run, from = ?self.lifecycle, to = ?lifecycle, "run stage");
            self.lifecycle = lifecycle;
            self.version += 1;
        }
    }

    /// Once every runner has registered: setup first if there is one, else the start.
    fn complete_barrier(&mut self, now: Instant) {
        if self.lifecycle == RunLifecycle::Barrier && self.slots.iter().all(|s| s.registered) {
            let claimed = self
                .slots
                .iter()
                .filter_map(|s| s.claimed_start_unix_ms)
                .min();
            if let Some(started) = claimed {
                // Some runner is under way (see `early_report`): everyone joins its start.
                self.resume_at(started, now);
            } else if self.config.spec.setup.is_empty() {
                self.start_load(now);
            } else {
                self.set_lifecycle(RunLifecycle::Setup);
            }
        }
    }

    fn start_load(&mut self, now: Instant) {
        let at = now + self.config.start_delay;
        let unix_ms = self
            .wall_ms(now)
            .saturating_add(millis(self.config.start_delay));
        self.start = Some(Start { at, unix_ms });
        self.set_lifecycle(RunLifecycle::Running);
    }

    /// The run started at `unix_ms` (wall clock), before this state knew of it.
    fn resume_at(&mut self, unix_ms: u64, now: Instant) {
        let ago = Duration::from_millis(self.wall_ms(now).saturating_sub(unix_ms));
        let at = now.checked_sub(ago).unwrap_or(self.created);
        self.start = Some(Start { at, unix_ms });
        for slot in &mut self.slots {
            slot.registered = true;
        }
        // Points before the resume are lost with the old state; the series goes on from here.
        self.next_point = now.saturating_duration_since(at).as_secs() + 1;
        self.set_lifecycle(RunLifecycle::Running);
    }

    fn request_stop(&mut self, end: RunEnd, now: Instant) {
        if self.stop.is_some() || self.end.is_some() {
            return;
        }
        tracing::info!(run = %self.config.run, reason = ?end.reason, "stopping the run");
        self.stop = Some(end);
        self.stopped_at = Some(now);
        self.set_lifecycle(RunLifecycle::Stopping);
    }

    /// Ends a run that never got going (or cannot): no thresholds are judged.
    fn finish_early(&mut self, end: RunEnd) {
        self.refresh();
        self.end = Some(end);
        self.stop = None;
        self.set_lifecycle(RunLifecycle::Finished);
    }

    fn finish_if_settled(&mut self) {
        if !matches!(
            self.lifecycle,
            RunLifecycle::Running | RunLifecycle::Stopping
        ) || !self.slots.iter().all(RunnerState::settled)
        {
            return;
        }
        self.refresh();
        let mut results = evaluate_thresholds(
            &self.config.spec,
            &self.merged,
            self.merged_elapsed,
            &self.config.baseline,
        );
        if let Some(r) = self.aborted_by.and_then(|i| results.get_mut(i)) {
            // The final figures may have moved; the threshold still stopped the run.
            r.status.aborted = true;
        }
        if self.start.is_some() {
            self.series.finish(&self.merged, self.merged_elapsed);
            self.observe_plateaus();
        }
        self.thresholds = results;
        let end = self.decide_end();
        tracing::info!(run = %self.config.run, phase = %end.phase, reason = ?end.reason, "run finished");
        self.end = Some(end);
        self.set_lifecycle(RunLifecycle::Finished);
    }

    /// The end of a settled run from its stop, failures and current threshold results.
    fn decide_end(&self) -> RunEnd {
        let failures = self.failures();
        let mut end = decide_end(&EndFacts {
            stopped: self.stop.as_ref(),
            failures: &failures,
            runners: self.config.runners,
            policy: self.config.spec.runners.failure_policy,
            thresholds: &self.thresholds,
        });
        if end.phase != Phase::Error {
            // A probe's answer belongs in the sentence `kubectl describe` shows.
            let results = self.plateaus.results(&self.config.spec);
            for rate in plateau::sustainable_rates(&results) {
                end.add_note(format!(
                    "sustainable rate of {}: {}",
                    rate.scenario,
                    rate.describe()
                ));
            }
        }
        end
    }

    fn fail_silent_runners(&mut self, start: Start, now: Instant) {
        if now < start.at {
            return;
        }
        let limit = self.config.silence_timeout;
        for index in 0..self.config.runners {
            let slot = &self.slots[index as usize];
            if slot.settled() {
                continue;
            }
            let heard = slot.last_heard.map_or(start.at, |t| t.max(start.at));
            if now.saturating_duration_since(heard) >= limit {
                let why = format!(
                    "no report for {}",
                    volley_crds::Duration::from(Duration::from_secs(limit.as_secs()))
                );
                self.runner_failed(index, &why, now);
            }
        }
    }

    /// Judges abortOnFail once a round of reports is complete: every running runner reported
    /// since the last judgment (or two report intervals passed, so one lagging runner cannot
    /// hold the judgment back). A half-merged round would understate sums such as
    /// `requests` or `rps` and could abort a run that is fine.
    fn judge_abort(&mut self, now: Instant) {
        if self.lifecycle != RunLifecycle::Running || !self.slots.iter().any(|s| s.fresh) {
            return;
        }
        let round_complete = self.slots.iter().all(|s| s.fresh || s.settled());
        let since = self.judged_at.or(self.start.map(|s| s.at)).unwrap_or(now);
        let overdue = now.saturating_duration_since(since) >= self.config.report_interval * 2;
        if !round_complete && !overdue {
            return;
        }
        self.judged_at = Some(now);
        for slot in &mut self.slots {
            slot.fresh = false;
        }
        self.refresh();
        let results = evaluate_thresholds(
            &self.config.spec,
            &self.merged,
            self.merged_elapsed,
            &self.config.baseline,
        );
        if let Some(i) = abort_trigger(&results, self.merged_elapsed) {
            self.aborted_by = Some(i);
            let message = results[i]
                .failure_message
                .clone()
                .unwrap_or_else(|| format!("threshold `{}` failed", results[i].status.expr));
            self.request_stop(RunEnd::new(Phase::Failed, "ThresholdAborted", message), now);
        }
        self.thresholds = results;
    }

    /// One point per whole second since the start, taken half a second after it so that
    /// every runner's report for that second has arrived.
    fn add_series_points(&mut self, start: Start, now: Instant) {
        let since = now.saturating_duration_since(start.at);
        let due = Duration::from_secs(self.next_point) + Duration::from_millis(500);
        if now < start.at || since < due {
            return;
        }
        self.refresh();
        self.series.push(&self.merged, self.merged_elapsed);
        self.observe_plateaus();
        self.next_point = since.as_secs() + 1;
    }

    /// Shows the freshly merged result to the plateau windows, with how far the least and the
    /// most advanced live runner got (a runner that has not reported yet has got nowhere; a
    /// failed one no longer counts, or it would hold every later window back).
    fn observe_plateaus(&mut self) {
        let live = self
            .slots
            .iter()
            .filter(|s| s.failure.is_none() && !s.released);
        let mut oldest: Option<Duration> = None;
        let mut newest = Duration::ZERO;
        for slot in live {
            let reached = slot.latest.as_ref().map_or(Duration::ZERO, |l| l.elapsed);
            oldest = Some(oldest.map_or(reached, |o| o.min(reached)));
            newest = newest.max(reached);
        }
        if let Some(oldest) = oldest {
            self.plateaus.observe(&self.merged, oldest, newest);
        }
    }

    // ---- reading ----------------------------------------------------------------------------

    fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        let mut merged = (*self.shape).clone();
        let mut elapsed = Duration::ZERO;
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(latest) = &slot.latest {
                // Checked when the report was decoded; cannot fail here.
                if let Err(e) = merged.merge(&latest.metrics) {
                    tracing::error!(run = %self.config.run, runner = index, error = %e, "report left out of the merge");
                }
                elapsed = elapsed.max(latest.elapsed);
            }
        }
        self.merged = merged;
        self.merged_elapsed = elapsed;
        self.dirty = false;
    }

    fn answer(&self) -> ReportResponse {
        match (&self.stop, &self.end) {
            (None, None) => ReportResponse::default(),
            _ => ReportResponse {
                stop: true,
                reason: Some(self.end_or_stop_reason()),
            },
        }
    }

    fn end_or_stop_reason(&self) -> String {
        let end = self.stop.as_ref().or(self.end.as_ref());
        match end {
            Some(e) => match (&e.reason, &e.message) {
                (Some(r), Some(m)) => format!("{r}: {m}"),
                (Some(r), None) => r.clone(),
                (None, Some(m)) => m.clone(),
                (None, None) => e.phase.to_string(),
            },
            None => "the run is over".to_owned(),
        }
    }

    fn failures(&self) -> Vec<RunnerFailure> {
        let mut failures: Vec<RunnerFailure> = self
            .slots
            .iter()
            .filter_map(|s| s.failure.clone())
            .collect();
        failures.sort_by_key(|f| (f.at, f.index));
        failures
    }

    fn start_skew(&self) -> Option<Duration> {
        let firsts = self
            .slots
            .iter()
            .filter_map(|s| s.latest.as_ref()?.first_request_unix_ms);
        let (min, max) = firsts.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        (min <= max).then(|| Duration::from_millis(max - min))
    }

    fn missing_runners(&self) -> String {
        let missing: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.registered)
            .map(|(i, _)| i.to_string())
            .collect();
        format!(
            "{} of {} runner(s) registered (missing: {})",
            self.config.runners as usize - missing.len(),
            self.config.runners,
            missing.join(", ")
        )
    }

    fn stop_grace(&self) -> Duration {
        plan::longest_graceful_stop(&self.config.spec)
            + self.config.report_interval * 2
            + Duration::from_secs(10)
    }

    fn since_start(&self, now: Instant) -> Option<Duration> {
        match self.lifecycle {
            RunLifecycle::Barrier | RunLifecycle::Setup => None,
            _ => self.start.map(|s| now.saturating_duration_since(s.at)),
        }
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        let wall = self.created_wall + now.saturating_duration_since(self.created);
        wall.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
    }

    fn slot_mut(&mut self, index: u32) -> Result<&mut RunnerState, ProtocolError> {
        let runners = self.config.runners;
        self.slots
            .get_mut(index as usize)
            .ok_or(ProtocolError::UnknownRunner { index, runners })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
