//! `volley agent`: one runner of a distributed run, inside a runner pod (or a process of
//! `volley run --runners N`), speaking the protocol of `docs/reference.md` §3 "Runner
//! protocol" ([`volley_core::protocol`]).
//!
//! The agent:
//!
//! 1. registers (`ready`), retrying while the aggregator cannot be reached (it may come up
//!    after the pod); a refused call (401, 404, 409, ...) is fatal and says what was refused;
//! 2. compiles its share of the test ([`Engine::prepare`]); a problem is reported to the
//!    aggregator as a final report carrying the error, and the agent exits 1;
//! 3. long-polls `start`: runs `setup` when told to (runner 0) and posts the values, then
//!    waits for the common `startAt`; an `abort` answer ends the agent (exit 0: the run
//!    decided, nothing failed here);
//! 4. runs its share while reporting cumulative snapshots every `reportIntervalMs`, each with
//!    the next sequence number; a lost report is made up for by the next one; an answer with
//!    `stop` stops scheduling new iterations at once (in-flight ones get their
//!    `gracefulStop`);
//! 5. sends a final report (`done`), retried with backoff because it carries the last figures,
//!    and exits 0 (1 if it could not be delivered).
//!
//! A runner that has had no report accepted for [`LOST_RUN_LIMIT`] (the aggregator unreachable,
//! or answering that it does not know the run, e.g. a run forgotten while this runner was cut
//! off) stops its load the same way: a run nobody measures any more must not go on loading the
//! target.
//!
//! SIGTERM or Ctrl-C (a pod being deleted) during the run acts like a `stop` answer: graceful
//! stop, final report, exit 0. Before the load starts it ends the agent with a final report
//! carrying the reason, and exit 1 (this runner's share did not run). A second signal exits at
//! once ([`crate::signals::shutdown_on_signals`] turns signals into the shutdown request).
//!
//! The HTTP side (paths, bearer token, timeouts, retry policy) is [`AggregatorClient`], in
//! [`crate::aggregator_client`]; the run logic is [`Agent`]; the command line (`volley agent`'s
//! arguments, the token, the exit code) is the `volley` binary's. The token is this runner's
//! own credential (derived from the run's secret and the runner's index: it lets the runner
//! speak only for itself); it comes from an environment variable, never from the command line
//! (which `ps` shows), and is never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::report::Report;
use volley_core::protocol::{
    PROTOCOL_VERSION, ReadyRequest, ReadyResponse, ReportResponse, RunnerReport, SetupResult,
    StartResponse,
};
use volley_core::target_policy::TargetPolicy;

use crate::aggregator_client::{AggregatorClient, ClientError};
use crate::engine::{Engine, FileRoots, RunnerPlace};

/// Report interval used when the aggregator answers 0.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest report interval the agent accepts (a smaller answer is raised to it).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(100);
/// Longest report interval the agent accepts (a larger answer is lowered to it).
pub const MAX_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Least time between two start polls, in case an aggregator answers `wait` without holding.
const MIN_POLL_SPACING: Duration = Duration::from_millis(100);
/// How long a runner sending load goes on without any report accepted (the aggregator
/// unreachable, or saying it does not know the run) before it stops its load by itself. An
/// aggregator that restarts, or a new operator leader, registers the run again within seconds
/// and the reports go on; past this, the aggregator has counted the runner as failed anyway
/// (its silence timeout is as long), so more load would only reach a target nobody measures
/// and that may have been meant to be spared (a run that was aborted, or whose LoadTest was
/// deleted, while the operator was away).
pub const LOST_RUN_LIMIT: Duration = Duration::from_secs(30);

/// How an agent ended when it did its part (exit code 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentOutcome {
    /// The load ran and the final report was delivered. `stopped` says why it ended early,
    /// if it did (the aggregator's `stop` reason, or a signal).
    Finished {
        /// Why the run was stopped before its plan ended.
        stopped: Option<String>,
        /// Requests this runner sent (in its final report).
        requests: u64,
    },
    /// The aggregator aborted the run before it started.
    Aborted {
        /// The aggregator's reason.
        reason: String,
    },
}

impl fmt::Display for AgentOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentOutcome::Finished {
                stopped: None,
                requests,
            } => write!(f, "done: {requests} requests; final report delivered"),
            AgentOutcome::Finished {
                stopped: Some(why),
                requests,
            } => write!(
                f,
                "stopped early ({why}): {requests} requests; final report delivered"
            ),
            AgentOutcome::Aborted { reason } => write!(
                f,
                "the run was aborted before the start ({reason}); nothing ran here"
            ),
        }
    }
}

/// Why an agent could not do its part (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A call to the aggregator failed for good.
    #[error(transparent)]
    Aggregator(#[from] ClientError),
    /// This runner cannot run the test it was given (reported to the aggregator).
    #[error("cannot run this test: {0}")]
    Prepare(String),
    /// A signal arrived before the load started.
    #[error("interrupted ({0}) before the load started")]
    Interrupted(String),
    /// The load ran, but its final report could not be delivered.
    #[error(
        "the final report could not be delivered, so the aggregator misses this runner's last figures: {0}"
    )]
    FinalReport(ClientError),
}

/// One runner of a distributed run: [`Agent::run`] takes it from registration to the final
/// report.
#[derive(Debug)]
pub struct Agent {
    client: AggregatorClient,
    roots: FileRoots,
    host: String,
    allowed_targets: TargetPolicy,
}

/// What the start long-poll ended with.
enum Begin {
    Start {
        at: Instant,
        setup: BTreeMap<String, String>,
    },
    Abort(String),
}

impl Agent {
    /// An agent speaking through `client`, finding files under `roots`, calling itself `host`.
    pub fn new(client: AggregatorClient, roots: FileRoots, host: String) -> Agent {
        Agent {
            client,
            roots,
            host,
            allowed_targets: TargetPolicy::allow_all(),
        }
    }

    /// Limits the requests this runner sends to `policy`'s targets (`--allowed-targets`); a
    /// spec with a URL outside it fails before the load, and is reported to the aggregator as
    /// this runner's error. See [`Engine::prepare_with_policy`].
    pub fn with_allowed_targets(mut self, policy: TargetPolicy) -> Agent {
        self.allowed_targets = policy;
        self
    }

    fn say(&self, message: impl fmt::Display) {
        eprintln!("{}: {message}", self.client.log_prefix());
    }

    /// Runs this runner to the end. `shutdown` turning `Some(why)` (a signal) stops the run
    /// gracefully, like the aggregator's `stop`; before the load starts it ends the agent
    /// with an error.
    pub async fn run(
        &self,
        mut shutdown: watch::Receiver<Option<String>>,
    ) -> Result<AgentOutcome, AgentError> {
        let index = self.client.index();
        let request = ReadyRequest {
            protocol: PROTOCOL_VERSION,
            host: self.host.clone(),
        };
        let ready = tokio::select! {
            ready = self.client.ready(&request) => ready?,
            why = requested(&mut shutdown) => return Err(AgentError::Interrupted(why)),
        };
        let interval = report_interval(ready.report_interval_ms);
        self.say(format_args!(
            "registered: LoadTest `{}`, runner {index} of {}, reports every {}ms",
            ready.name,
            ready.runners,
            interval.as_millis()
        ));

        let engine = match self.prepare(&ready) {
            Ok(engine) => engine,
            Err(message) => {
                let run = RunMetrics::for_spec(&ready.spec);
                self.report_failure(1, &run, message.clone()).await;
                return Err(AgentError::Prepare(message));
            }
        };

        let begin = tokio::select! {
            begin = self.wait_for_start(&engine) => begin?,
            why = requested(&mut shutdown) => {
                let message = format!("interrupted ({why}) before the load started");
                self.report_failure(1, &engine.snapshot(), message).await;
                return Err(AgentError::Interrupted(why));
            }
        };
        let (start, setup) = match begin {
            Begin::Start { at, setup } => (at, setup),
            Begin::Abort(reason) => return Ok(AgentOutcome::Aborted { reason }),
        };
        let wait = start.saturating_duration_since(Instant::now());
        self.say(format_args!(
            "starting in {}ms (setup values: {})",
            wait.as_millis(),
            if setup.is_empty() {
                "none".to_string()
            } else {
                setup.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        ));

        let (stop_tx, stop_rx) = watch::channel(false);
        let (finished_tx, mut finished_rx) = watch::channel(false);
        let load = async {
            let summaries = engine.run(setup, start, stop_rx).await;
            let _ = finished_tx.send(true);
            summaries
        };
        let reports = self.report_loop(
            &engine,
            start,
            interval,
            &stop_tx,
            &mut finished_rx,
            &mut shutdown,
        );
        let (summaries, (last_seq, stopped, signalled)) = tokio::join!(load, reports);
        let interrupted: u64 = summaries.iter().map(|s| s.interrupted).sum();
        if interrupted > 0 {
            self.say(format_args!(
                "{interrupted} in-flight iteration(s) did not finish within gracefulStop"
            ));
        }

        let snapshot = engine.snapshot();
        let requests = snapshot.overall().counters.requests;
        let report =
            match Report::from_metrics(index, last_seq + 1, start.elapsed(), true, &snapshot) {
                Ok(report) => RunnerReport {
                    report,
                    first_request_unix_ms: engine.first_request_unix_ms(),
                    // A signal (the pod deleted or evicted) cut this runner's share short: the
                    // aggregator must count it as a runner failure, not a runner that finished.
                    error: signalled.map(|why| {
                        format!(
                            "stopped by {why} before its share was done (pod deleted or \
                             evicted?); its figures so far are kept"
                        )
                    }),
                },
                Err(e) => {
                    let message = format!("cannot encode the final figures: {e}");
                    let run = RunMetrics::for_spec(&ready.spec);
                    self.report_failure(last_seq + 1, &run, message.clone())
                        .await;
                    return Err(AgentError::FinalReport(ClientError::Config(message)));
                }
            };
        self.client
            .final_report(&report)
            .await
            .map_err(AgentError::FinalReport)?;
        Ok(AgentOutcome::Finished { stopped, requests })
    }

    /// Checks the plan the aggregator sent and compiles this runner's share.
    fn prepare(&self, ready: &ReadyResponse) -> Result<Engine, String> {
        let index = self.client.index();
        if index >= ready.runners {
            return Err(format!(
                "runner index {index} is outside the run's {} runner(s)",
                ready.runners
            ));
        }
        if let Err(errors) = volley_core::validate::validate(&ready.spec) {
            let listed = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!("the spec is invalid: {listed}"));
        }
        let place = RunnerPlace {
            index,
            count: ready.runners,
        };
        Engine::prepare_with_policy(&ready.spec, place, &self.roots, &self.allowed_targets)
            .map_err(|e| e.to_string())
    }

    /// Sends a final report number `seq` carrying `message` as this runner's error (best
    /// effort, with retries), and says so.
    async fn report_failure(&self, seq: u64, run: &RunMetrics, message: String) {
        self.say("sending an error report to the aggregator");
        let index = self.client.index();
        // Figures that cannot be encoded are left out: the error is what matters here.
        let report =
            Report::from_metrics(index, seq, Duration::ZERO, true, run).unwrap_or(Report {
                runner: index,
                seq,
                elapsed_ms: 0,
                done: true,
                scenarios: Vec::new(),
            });
        let report = RunnerReport {
            report,
            first_request_unix_ms: None,
            error: Some(message),
        };
        if let Err(e) = self.client.final_report(&report).await {
            self.say(format_args!("the error report was not delivered: {e}"));
        }
    }

    /// Long-polls the start; runs setup when asked (once: a repeated ask gets the same result).
    async fn wait_for_start(&self, engine: &Engine) -> Result<Begin, AgentError> {
        let mut setup_result: Option<SetupResult> = None;
        loop {
            let asked = Instant::now();
            match self.client.poll_start().await? {
                StartResponse::Wait => {
                    tokio::time::sleep_until(asked + MIN_POLL_SPACING).await;
                }
                StartResponse::RunSetup => {
                    let result = match &setup_result {
                        Some(result) => result.clone(),
                        None => {
                            let result = self.run_setup(engine).await;
                            setup_result = Some(result.clone());
                            result
                        }
                    };
                    self.client.post_setup(&result).await?;
                }
                StartResponse::Start {
                    start_at_unix_ms,
                    setup,
                } => {
                    let at = start_instant(start_at_unix_ms, SystemTime::now(), Instant::now());
                    return Ok(Begin::Start { at, setup });
                }
                StartResponse::Abort { reason } => return Ok(Begin::Abort(reason)),
            }
        }
    }

    async fn run_setup(&self, engine: &Engine) -> SetupResult {
        self.say("running setup");
        let outcome = engine.run_setup().await;
        let report = Report::from_metrics(
            self.client.index(),
            0,
            Duration::ZERO,
            false,
            &engine.snapshot(),
        )
        .map_err(|e| self.say(format_args!("cannot encode the setup figures: {e}")))
        .ok();
        match outcome {
            Ok(values) => SetupResult {
                values,
                error: None,
                report,
            },
            Err(e) => {
                self.say(format_args!(
                    "setup failed: {e}; waiting for the aggregator to end the run"
                ));
                SetupResult {
                    values: BTreeMap::new(),
                    error: Some(e.to_string()),
                    report,
                }
            }
        }
    }

    /// Reports every `interval` from `start` until the load is `finished`; turns a `stop`
    /// answer or a shutdown request into `stop_tx`. Returns the last sequence number used, why
    /// the run was stopped early, if it was, and the signal that stopped it, if one did before
    /// the aggregator said stop.
    async fn report_loop(
        &self,
        engine: &Engine,
        start: Instant,
        interval: Duration,
        stop_tx: &watch::Sender<bool>,
        finished: &mut watch::Receiver<bool>,
        shutdown: &mut watch::Receiver<Option<String>>,
    ) -> (u64, Option<String>, Option<String>) {
        let index = self.client.index();
        let timeout = post_timeout(interval);
        let mut ticker = tokio::time::interval_at(start + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0u64;
        let mut stopped: Option<String> = None;
        let mut signalled: Option<String> = None;
        // Since when no report has been accepted (none yet: the start).
        let mut last_accepted = start;
        loop {
            tokio::select! {
                biased;
                () = is_true(finished) => break,
                why = requested(shutdown), if stopped.is_none() => {
                    self.say(format_args!(
                        "{why}: stopping; in-flight iterations get their gracefulStop"
                    ));
                    stopped = Some(format!("interrupted ({why})"));
                    signalled = Some(why);
                    let _ = stop_tx.send(true);
                }
                _ = ticker.tick() => {
                    let snapshot = engine.snapshot();
                    let report = match Report::from_metrics(
                        index, seq + 1, start.elapsed(), false, &snapshot,
                    ) {
                        Ok(report) => report,
                        Err(e) => {
                            self.say(format_args!("cannot encode a report: {e}"));
                            continue;
                        }
                    };
                    seq += 1;
                    let report = RunnerReport {
                        report,
                        first_request_unix_ms: engine.first_request_unix_ms(),
                        error: None,
                    };
                    let answer = self.client.report(&report, timeout).await;
                    if answer.is_ok() {
                        last_accepted = Instant::now();
                    }
                    match answer {
                        Ok(ReportResponse { stop: true, reason }) if stopped.is_none() => {
                            let why = reason.unwrap_or_else(|| "no reason given".into());
                            self.say(format_args!(
                                "the aggregator says stop ({why}); in-flight iterations get \
                                 their gracefulStop"
                            ));
                            stopped = Some(why);
                            let _ = stop_tx.send(true);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let lost = lost_run(&e, last_accepted.elapsed());
                            match lost {
                                Some(why) if stopped.is_none() => {
                                    self.say(format_args!(
                                        "{why}; stopping, in-flight iterations get their \
                                         gracefulStop"
                                    ));
                                    stopped = Some(why);
                                    let _ = stop_tx.send(true);
                                }
                                _ => self.say(format_args!(
                                    "report {seq} not delivered ({e}); the next one makes up for it"
                                )),
                            }
                        }
                    }
                }
            }
        }
        (seq, stopped, signalled)
    }
}

/// Whether a runner whose report just failed with `error`, `since` its last accepted one, has
/// lost its run and must stop its load: no report went through for [`LOST_RUN_LIMIT`], whatever
/// the failure (the aggregator unreachable, a run it does not know: one that restarted
/// re-learns its runs within seconds, so a shorter loss is ridden out). Says why, for the log.
pub fn lost_run(error: &ClientError, since: Duration) -> Option<String> {
    (since >= LOST_RUN_LIMIT).then(|| {
        format!(
            "no report accepted for {}s ({error}): the run is lost, its load stops here",
            since.as_secs()
        )
    })
}

/// Waits until `rx` holds `true`; never returns if its sender is gone without sending it.
async fn is_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for a shutdown request and returns its reason; never returns if none can come.
async fn requested(rx: &mut watch::Receiver<Option<String>>) -> String {
    let why = match rx.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    };
    match why {
        Some(why) => why,
        None => std::future::pending().await,
    }
}

/// The report interval for the aggregator's `reportIntervalMs`: 0 means the default (1 s);
/// others are kept within [`MIN_REPORT_INTERVAL`] and [`MAX_REPORT_INTERVAL`].
pub fn report_interval(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_REPORT_INTERVAL
    } else {
        Duration::from_millis(ms).clamp(MIN_REPORT_INTERVAL, MAX_REPORT_INTERVAL)
    }
}

/// How long a periodic report may take: less than the interval, so reports never pile up.
pub fn post_timeout(interval: Duration) -> Duration {
    interval.mul_f64(0.8)
}

/// The local instant of the wall-clock `startAt`, given the wall clock and the instant now; a
/// moment already past means now.
pub fn start_instant(start_at_unix_ms: u64, now_wall: SystemTime, now: Instant) -> Instant {
    let start_at = UNIX_EPOCH + Duration::from_millis(start_at_unix_ms);
    match start_at.duration_since(now_wall) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::aggregator_client::Call;
    use reqwest::StatusCode;

    #[test]
    fn a_run_is_lost_after_the_limit_without_an_accepted_report_whatever_the_failure() {
        let unknown = ClientError::Unavailable {
            call: Call::Report,
            detail: "the aggregator answered 404 Not Found".into(),
            status: Some(StatusCode::NOT_FOUND),
        };
        let refused = ClientError::Refused {
            call: Call::Report,
            status: StatusCode::UNAUTHORIZED,
            hint: String::new(),
            body: String::new(),
        };
        for e in [&unknown, &refused] {
            // An aggregator that restarted re-learns its runs within seconds: ridden out.
            assert_eq!(lost_run(e, Duration::from_secs(5)), None);
            assert_eq!(lost_run(e, LOST_RUN_LIMIT - Duration::from_millis(1)), None);
            let why = lost_run(e, LOST_RUN_LIMIT).unwrap();
            assert!(why.contains("no report accepted for 30s"), "{why}");
        }
    }

    #[test]
    fn start_at_becomes_a_local_instant_saturating_at_now() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        assert_eq!(
            start_instant(1_700_000_000_750, wall, now),
            now + Duration::from_millis(750)
        );
        assert_eq!(start_instant(1_699_999_999_000, wall, now), now);
        assert_eq!(start_instant(0, wall, now), now);
    }

    #[test]
    fn report_intervals_are_bounded_and_posts_time_out_before_the_next() {
        assert_eq!(report_interval(0), DEFAULT_REPORT_INTERVAL);
        assert_eq!(report_interval(1), MIN_REPORT_INTERVAL);
        assert_eq!(report_interval(1000), Duration::from_secs(1));
        assert_eq!(report_interval(u64::MAX), MAX_REPORT_INTERVAL);
        assert!(post_timeout(Duration::from_secs(1)) < Duration::from_secs(1));
    }
}
