//! `volley run`: one LoadTest on this machine, through the same path as a cluster run. An
//! aggregator is served on 127.0.0.1, N runners (`volley agent` processes, or tasks in this
//! process for tests) register with it, start together, report every second and are merged
//! exactly; this module watches the run once a second (progress line, runner deaths,
//! Ctrl-C) and turns the aggregator's final view into the summary.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use volley_aggregator::server::runner_credential;
use volley_aggregator::{Aggregator, RunConfig, RunEnd, RunLifecycle, RunView};
use volley_core::compare::Baseline;
use volley_core::metrics::model::RunMetrics;
use volley_core::metrics::status::{format_latency_ms, format_percent};
use volley_core::observe::{scenario_spans, scenario_windows};
use volley_core::protocol::TOKEN_ENV;
use volley_core::target_policy::{ALLOWED_TARGETS_ENV, TargetPolicy};
use volley_crds::LoadTest;
use volley_crds::spec::PrometheusObserve;
use volley_crds::status::{Phase, Verdict};
use volley_observe::client::DEFAULT_TIMEOUT;
use volley_observe::{Credentials, Observation, Prometheus, Window, observe};

use crate::agent::Agent;
use crate::aggregator_client::AggregatorClient;
use crate::engine::{Engine, EngineError, FileRoots, RunnerPlace};
use crate::exit::{EXIT_ERROR, EXIT_PASSED, EXIT_THRESHOLDS_FAILED};
use crate::signals::Signals;
use crate::summary::{RunSummary, build_summary, summarize};

/// The run id of a local run (each `volley run` has its own aggregator).
const LOCAL_RUN: &str = "local";
/// Local runners are processes on this machine: they register within seconds or not at all.
const LOCAL_BARRIER_TIMEOUT: Duration = Duration::from_secs(60);
/// From barrier to start; on loopback every start poll is answered within milliseconds.
const LOCAL_START_DELAY: Duration = Duration::from_millis(500);
/// How often the run is looked at (abortOnFail, exits, the end).
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// Time runner processes get to exit by themselves once the run has ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Lines of a runner's stderr kept to explain its death.
const KEPT_STDERR_LINES: usize = 20;

/// How the run reports progress while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing until the summary.
    Quiet,
    /// One line rewritten in place (a terminal).
    Live,
    /// A plain line every few seconds (logs, CI).
    Lines,
}

impl Progress {
    /// Live on a terminal, plain lines otherwise.
    pub fn for_stderr(quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Live
        } else {
            Progress::Lines
        }
    }
}

/// Where the runners of a local run live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// `PROGRAM agent ...` child processes: what `volley run` does.
    Processes {
        /// The `volley` executable.
        program: PathBuf,
    },
    /// Tasks in this process speaking the same protocol over loopback (tests).
    Tasks,
}

/// How to run a LoadTest locally.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Progress display.
    pub progress: Progress,
    /// Runner count; `spec.runners.parallelism` when unset.
    pub runners: Option<u32>,
    /// Processes or tasks.
    pub launch: Launch,
    /// The allowed targets (`--allowed-targets`); empty allows everything. Every runner gets
    /// the same list.
    pub allowed_targets: TargetPolicy,
    /// What baseline thresholds compare with (`--baseline`).
    pub baseline: Baseline,
}

/// Runs `lt` with in-process runners (`spec.runners.parallelism` of them) and returns its
/// summary; see [`run_with`].
pub async fn run_local(lt: &LoadTest, roots: &FileRoots, progress: Progress) -> RunSummary {
    let options = LocalOptions {
        progress,
        runners: None,
        launch: Launch::Tasks,
        allowed_targets: TargetPolicy::allow_all(),
        baseline: Baseline::default(),
    };
    run_with(lt, roots, &options).await
}

/// Runs `lt` locally through an aggregator on 127.0.0.1 and returns its summary. Problems
/// found before the load starts (a step that does not compile, a missing feeder file, a
/// failed setup, a runner that cannot start) come back as a summary in phase Error.
pub async fn run_with(lt: &LoadTest, roots: &FileRoots, options: &LocalOptions) -> RunSummary {
    let name = lt
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "loadtest".into());
    let spec = &lt.spec;
    let runners = options.runners.unwrap_or(spec.runners.parallelism).max(1);
    let error_summary = |end: RunEnd| {
        build_summary(
            &name,
            end,
            runners,
            Duration::ZERO,
            None,
            &RunMetrics::for_spec(spec),
            &[],
            Vec::new(),
        )
    };
    // Compile runner 0's share here first, so a mistake is reported once, plainly, before any
    // process starts.
    if let Err(e) = Engine::prepare_with_policy(
        spec,
        RunnerPlace {
            index: 0,
            count: runners,
        },
        roots,
        &options.allowed_targets,
    ) {
        return error_summary(RunEnd::new(Phase::Error, error_reason(&e), e.to_string()));
    }

    let token = new_token();
    let config = RunConfig {
        runners,
        barrier_timeout: LOCAL_BARRIER_TIMEOUT,
        start_delay: LOCAL_START_DELAY,
        baseline: options.baseline.clone(),
        ..RunConfig::new(LOCAL_RUN, &token, &name, spec.clone())
    };
    let aggregator = Aggregator::new();
    aggregator.add_run(config);
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            let message = format!("cannot listen on 127.0.0.1 for the runners: {e}");
            return error_summary(RunEnd::new(Phase::Error, "AggregatorFailed", message));
        }
    };
    let url = match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(e) => {
            let message = format!("cannot read the aggregator's address: {e}");
            return error_summary(RunEnd::new(Phase::Error, "AggregatorFailed", message));
        }
    };
    let router = aggregator.router();
    let server = tokio::spawn(volley_aggregator::server::serve(
        listener,
        router,
        std::future::pending(),
    ));
    let ticker = tokio::spawn(aggregator.clone().run_ticker());

    // Ctrl-C and SIGTERM (CI timeouts, `docker stop`) end the run the same way; listening
    // starts now, so a signal that comes while the runners start is not lost.
    let mut signals = Signals::install();
    let (exits_tx, mut exits) = mpsc::unbounded_channel::<(u32, String)>();
    let (stop_tx, stop_rx) = watch::channel::<Option<String>>(None);
    let mut fleet = Fleet::default();
    for index in 0..runners {
        // Each runner gets only its own credential, derived from the run's token.
        let credential = runner_credential(&token, index);
        let spawned = match &options.launch {
            Launch::Processes { program } => fleet.spawn_process(
                program,
                &url,
                index,
                &credential,
                roots,
                &options.allowed_targets,
                exits_tx.clone(),
            ),
            Launch::Tasks => fleet.spawn_task(
                &url,
                index,
                &credential,
                roots,
                &options.allowed_targets,
                stop_rx.clone(),
                exits_tx.clone(),
            ),
        };
        if let Err(message) = spawned {
            aggregator.runner_failed(LOCAL_RUN, index, &message);
            break;
        }
    }
    drop(exits_tx);

    let mut watch = RunWatch::new(options.progress, volley_core::plan::planned_duration(spec));
    let mut looks = tokio::time::interval(WATCH_INTERVAL);
    looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut interrupted = false;
    let view = loop {
        tokio::select! {
            // The aggregator's own ticker moves its time; here the run is only looked at, and
            // copied out (a merge of every runner's histograms) only when there is something
            // to show.
            _ = looks.tick() => {
                let Some((stage, elapsed)) = aggregator.glance(LOCAL_RUN) else {
                    break None;
                };
                if stage == RunLifecycle::Finished {
                    break aggregator.view(LOCAL_RUN);
                }
                if watch.due(stage, elapsed)
                    && let Some(view) = aggregator.view(LOCAL_RUN)
                {
                    watch.show(&view);
                }
            }
            Some((index, why)) = exits.recv() => {
                aggregator.runner_failed(LOCAL_RUN, index, &why);
            }
            signal = signals.next(), if !interrupted => {
                interrupted = true;
                let _ = stop_tx.send(Some(signal.into()));
                aggregator.abort(
                    LOCAL_RUN,
                    "Interrupted",
                    &format!("interrupted ({signal}); results so far are kept"),
                );
            }
        }
    };
    watch.finish();
    // In-process runners still busy (a setup the timeout cut short) stop like on a signal.
    let _ = stop_tx.send(Some("the run has ended".into()));
    fleet.wind_down().await;
    ticker.abort();
    server.abort();

    let Some(mut view) = view else {
        let message = "the aggregator lost the run".to_string();
        return error_summary(RunEnd::new(Phase::Error, "AggregatorFailed", message));
    };
    // Server-side metrics over the run's window, now that it has one. Whatever Prometheus
    // does, the load results above are kept: a failed query only fails its thresholds.
    if let (Some(prom), Some(window)) = (
        spec.observe.as_ref().and_then(|o| o.prometheus.as_ref()),
        view.window(),
    ) {
        if options.progress != Progress::Quiet {
            eprintln!("querying Prometheus over the run's window ...");
        }
        let scenarios = scenario_windows(&scenario_spans(spec), window);
        let observation =
            query_prometheus(prom, window, &scenarios, &options.allowed_targets).await;
        aggregator.observe(LOCAL_RUN, observation);
        if let Some(observed) = aggregator.view(LOCAL_RUN) {
            view = observed;
        }
    }
    summarize(&name, &view)
}

/// The local credentials for `spec.observe.prometheus.auth`: its Secret references name what
/// the operator reads in a cluster; `volley run` takes the values from the environment.
pub const PROMETHEUS_TOKEN_ENV: &str = "VOLLEY_PROMETHEUS_TOKEN";
/// The basic-auth user name for `volley run` (see [`PROMETHEUS_TOKEN_ENV`]).
pub const PROMETHEUS_USERNAME_ENV: &str = "VOLLEY_PROMETHEUS_USERNAME";
/// The basic-auth password for `volley run` (see [`PROMETHEUS_TOKEN_ENV`]).
pub const PROMETHEUS_PASSWORD_ENV: &str = "VOLLEY_PROMETHEUS_PASSWORD";

/// Runs the queries of `prom` over `window` (and `scenarios`' windows for `window: scenario`
/// queries); a client that cannot be made, or a URL outside
/// the allowed targets, is an error on every query.
async fn query_prometheus(
    prom: &PrometheusObserve,
    window: Window,
    scenarios: &[(String, Window)],
    allowed: &TargetPolicy,
) -> Observation {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let credentials = match &prom.auth {
        None => Ok(None),
        Some(auth) if auth.bearer_token_secret_ref.is_some() => {
            env(PROMETHEUS_TOKEN_ENV).map(|t| Some(Credentials::Bearer(t)))
        }
        Some(_) => env(PROMETHEUS_USERNAME_ENV).and_then(|username| {
            env(PROMETHEUS_PASSWORD_ENV)
                .map(|password| Some(Credentials::Basic { username, password }))
        }),
    }
    .map_err(|e| {
        format!("spec.observe.prometheus.auth names Secrets, which volley run cannot read: {e}")
    });
    let client = credentials.and_then(|credentials| {
        let url = url::Url::parse(&prom.url).map_err(|e| format!("prometheus url: {e}"))?;
        allowed
            .check_url(&url)
            .map_err(|e| format!("not queried: {e}"))?;
        let timeout = prom.timeout.map(|t| t.get()).unwrap_or(DEFAULT_TIMEOUT);
        Prometheus::new(
            &prom.url,
            credentials,
            prom.insecure_skip_tls_verify,
            timeout,
        )
        .map_err(|e| e.to_string())
    });
    match client {
        Ok(client) => observe(&client, &prom.queries, window, scenarios).await,
        Err(why) => {
            tracing::warn!(error = %why, "prometheus not queried");
            Observation::unavailable(&prom.queries, window, &why)
        }
    }
}

/// The exit code for a summary: 0 passed, 99 thresholds failed, 1 anything else.
pub fn exit_code(s: &RunSummary) -> u8 {
    exit_code_of(s.phase, s.verdict, s.reason.as_deref())
}

/// The exit code for a run that ended in `phase` with `verdict` for `reason` (a summary's, or
/// a LoadTest status's when its run left no report): as [`exit_code`].
pub fn exit_code_of(phase: Phase, verdict: Option<Verdict>, reason: Option<&str>) -> u8 {
    match (phase, verdict) {
        (Phase::Succeeded, _) => EXIT_PASSED,
        (Phase::Failed, Some(Verdict::Failed)) if reason != Some("RunnerFailed") => {
            EXIT_THRESHOLDS_FAILED
        }
        _ => EXIT_ERROR,
    }
}

fn error_reason(e: &EngineError) -> &'static str {
    match e {
        EngineError::Setup { .. } => "SetupFailed",
        EngineError::Feeder(_) => "DataUnavailable",
        EngineError::Step { .. } | EngineError::Workload { .. } | EngineError::Client(_) => {
            "InvalidSpec"
        }
        EngineError::TargetNotAllowed(_) => "TargetNotAllowed",
    }
}

/// A fresh bearer token for the run: 128 random bits, hex.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The runners of a local run: one watcher task per runner, which reports the runner's end
/// on the exits channel, and for processes a way to kill it.
#[derive(Default)]
struct Fleet {
    watchers: Vec<tokio::task::JoinHandle<()>>,
    kills: Vec<Option<oneshot::Sender<()>>>,
}

impl Fleet {
    /// Starts `program agent ...` for runner `index`; its exit is sent on `exits` with what
    /// it last said on stderr.
    #[allow(clippy::too_many_arguments)]
    fn spawn_process(
        &mut self,
        program: &PathBuf,
        url: &str,
        index: u32,
        credential: &str,
        roots: &FileRoots,
        allowed_targets: &TargetPolicy,
        exits: mpsc::UnboundedSender<(u32, String)>,
    ) -> Result<(), String> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(["agent", "--aggregator", url, "--run", LOCAL_RUN, "--index"])
            .arg(index.to_string())
            .arg("--manifest-dir")
            .arg(&roots.manifest_dir)
            .env(TOKEN_ENV, credential)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(configmaps) = &roots.configmaps {
            cmd.arg("--configmaps").arg(configmaps);
        }
        // The list is passed explicitly, so a runner never picks up another from its
        // environment.
        cmd.env_remove(ALLOWED_TARGETS_ENV);
        if !allowed_targets.is_empty() {
            cmd.arg("--allowed-targets")
                .arg(allowed_targets.to_string());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start `{} agent`: {e}", program.display()))?;
        let said = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let reader = child.stderr.take().map(|stderr| {
            let said = said.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(runner = index, "{line}");
                    let mut said = said.lock().unwrap_or_else(PoisonError::into_inner);
                    if said.len() == KEPT_STDERR_LINES {
                        said.pop_front();
                    }
                    said.push_back(line);
                }
            })
        });
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        self.kills.push(Some(kill_tx));
        self.watchers.push(tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status.ok(),
                _ = &mut kill_rx => {
                    let _ = child.kill().await;
                    return;
                }
            };
            if let Some(reader) = reader {
                // The pipe closes with the process; this only waits for the last lines.
                let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
            }
            let mut why = describe_exit(status);
            let said = said.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = telling_line(&said) {
                why = format!(
                    "{why}; it last said: {}",
                    volley_crds::text::shorten(last, 300)
                );
            }
            let _ = exits.send((index, why));
        }));
        Ok(())
    }

    /// Runs runner `index` as a task of this process.
    #[allow(clippy::too_many_arguments)]
    fn spawn_task(
        &mut self,
        url: &str,
        index: u32,
        credential: &str,
        roots: &FileRoots,
        allowed_targets: &TargetPolicy,
        stop: watch::Receiver<Option<String>>,
        exits: mpsc::UnboundedSender<(u32, String)>,
    ) -> Result<(), String> {
        let client =
            AggregatorClient::new(url, LOCAL_RUN, index, credential).map_err(|e| e.to_string())?;
        let agent = Agent::new(client, roots.clone(), format!("task-{index}"))
            .with_allowed_targets(allowed_targets.clone());
        self.kills.push(None);
        self.watchers.push(tokio::spawn(async move {
            let why = match agent.run(stop).await {
                Ok(outcome) => format!("ended: {outcome}"),
                Err(e) => format!("failed: {e}"),
            };
            let _ = exits.send((index, why));
        }));
        Ok(())
    }

    /// Gives runners [`EXIT_GRACE`] to end by themselves, then kills what is left.
    async fn wind_down(&mut self) {
        let deadline = Instant::now() + EXIT_GRACE;
        for (watcher, kill) in self.watchers.iter_mut().zip(&mut self.kills) {
            if tokio::time::timeout_at(deadline, &mut *watcher)
                .await
                .is_ok()
            {
                continue;
            }
            match kill.take() {
                Some(kill) => {
                    let _ = kill.send(());
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut *watcher).await;
                }
                None => watcher.abort(),
            }
        }
    }
}

/// The line of a dead runner's stderr that says why it died: the last `error: ...` line when
/// there is one (a command-line error ends with clap's usage and its "For more information,
/// try '--help'." hint, which say nothing), else the last line that is not blank.
fn telling_line(said: &VecDeque<String>) -> Option<&str> {
    said.iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or_else(|| said.iter().rev().find(|l| !l.trim().is_empty()))
        .map(String::as_str)
}

/// `exited with code 1`, `killed by signal 9`.
fn describe_exit(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.map(|s| (s.code(), s.signal())) {
        Some((Some(code), _)) => format!("exited with code {code}"),
        Some((None, Some(signal))) => format!("killed by signal {signal}"),
        _ => "exited".to_string(),
    }
}

/// The figures of one progress line, from the aggregator's view (`volley run`) or from a
/// LoadTest's status (`volley kube run`), so both print the same line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressFigures {
    /// How long the load has run.
    pub elapsed: Duration,
    /// How long it is planned to run.
    pub planned: Duration,
    /// Requests per second.
    pub rps: f64,
    /// p95 latency in ms, when measured.
    pub p95_ms: Option<f64>,
    /// Failed requests so far.
    pub failures: u64,
    /// Requests so far.
    pub requests: u64,
    /// Runners sending load.
    pub running: u32,
    /// Runners of the run.
    pub runners: u32,
    /// Completed iterations.
    pub iterations: u64,
    /// Iterations an arrival-rate executor could not start.
    pub dropped: u64,
}

impl ProgressFigures {
    /// `running 12s/30s  20.0 req/s  p95 4ms  errors 0.00%  runners 2/2  iterations 240 (dropped 0)`.
    pub fn line(&self) -> String {
        format!(
            "running {}/{}  {:.1} req/s  p95 {}  errors {}  runners {}/{}  iterations {} (dropped {})",
            volley_crds::Duration::from(Duration::from_secs(self.elapsed.as_secs())),
            volley_crds::Duration::from(Duration::from_secs(self.planned.as_secs())),
            self.rps,
            self.p95_ms
                .map(format_latency_ms)
                .unwrap_or_else(|| "-".into()),
            format_percent(self.failures, self.requests),
            self.running,
            self.runners,
            self.iterations,
            self.dropped,
        )
    }
}

/// The progress display on stderr: fed by the aggregator's view in `volley run`, by the
/// LoadTest's status in `volley kube run`.
pub struct RunWatch {
    progress: Progress,
    planned: Duration,
    last_shown: Option<u64>,
    live_line_open: bool,
}

impl RunWatch {
    /// A display for a run planned to last `planned`.
    pub fn new(progress: Progress, planned: Duration) -> RunWatch {
        RunWatch {
            progress,
            planned,
            last_shown: None,
            live_line_open: false,
        }
    }

    /// Whether a line is due for a run at `stage` whose newest report is `elapsed` in: once per
    /// second of data on a terminal, every fifth second in logs, never when quiet.
    fn due(&self, stage: RunLifecycle, elapsed: Duration) -> bool {
        let second = elapsed.as_secs();
        let every = match self.progress {
            Progress::Quiet => return false,
            Progress::Live => 1,
            Progress::Lines => 5,
        };
        stage != RunLifecycle::Barrier
            && !elapsed.is_zero()
            && self.last_shown != Some(second)
            && second.is_multiple_of(every)
    }

    /// Whether a line for a run `elapsed` in is due when the figures come at their own pace
    /// (`volley kube run` reads the status every few seconds): a new second on a terminal, five
    /// seconds after the last line in logs, never when quiet.
    pub fn due_after(&self, elapsed: Duration) -> bool {
        let second = elapsed.as_secs();
        match self.progress {
            Progress::Quiet => false,
            Progress::Live => self.last_shown != Some(second),
            Progress::Lines => self.last_shown.is_none_or(|last| second >= last + 5),
        }
    }

    fn show(&mut self, view: &RunView) {
        let overall = view.merged.overall();
        let c = &overall.counters;
        let point = view.series.last();
        self.print(&ProgressFigures {
            elapsed: view.elapsed,
            planned: self.planned,
            rps: point.map(|p| p.rps).unwrap_or(0.0),
            p95_ms: point.map(|p| p.p95_ms),
            failures: c.failures,
            requests: c.requests,
            running: view.running,
            runners: view.runners,
            iterations: c.iterations,
            dropped: c.dropped_iterations,
        });
    }

    /// Prints `figures` (rewriting the line in place on a terminal), unless quiet.
    pub fn print(&mut self, figures: &ProgressFigures) {
        if self.progress == Progress::Quiet {
            return;
        }
        self.last_shown = Some(figures.elapsed.as_secs());
        let line = figures.line();
        let mut err = std::io::stderr().lock();
        if self.progress == Progress::Live {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.live_line_open = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the live line, so what follows starts on a line of its own.
    pub fn finish(&mut self) {
        if self.live_line_open {
            let _ = writeln!(std::io::stderr());
            self.live_line_open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::telling_line;

    fn lines(text: &[&str]) -> VecDeque<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    /// A command-line error names the problem on its `error:` line, not on clap's last one.
    #[test]
    fn a_runner_death_is_told_by_its_error_line() {
        let clap = lines(&[
            "error: a value is required for '--manifest-dir <DIR>' but none was supplied",
            "",
            "For more information, try '--help'.",
        ]);
        assert_eq!(
            telling_line(&clap),
            Some("error: a value is required for '--manifest-dir <DIR>' but none was supplied")
        );
        let agent = lines(&["volley agent (run local, runner 0): refused", "  "]);
        assert_eq!(
            telling_line(&agent),
            Some("volley agent (run local, runner 0): refused")
        );
        assert_eq!(telling_line(&lines(&["", " "])), None);
    }
}
