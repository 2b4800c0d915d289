//! `volley run`: one LoadTest on this machine, with a live progress line, thresholds watched
//! every second (abortOnFail), the spec's timeout, Ctrl-C, and a final summary.

use std::io::{IsTerminal, Write};
use std::pin::pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use volley_crds::LoadTest;
use volley_crds::metrics::{
    self, Measurements, RunMetrics, SeriesPoint, ThresholdResult, format_latency_ms, format_percent,
};
use volley_crds::status::{Phase, Verdict};

use crate::engine::{Engine, EngineError, FileRoots, RunnerPlace};
use crate::summary::{RunEnd, RunSummary, build_summary};

/// Exit code when every threshold passed.
pub const EXIT_PASSED: u8 = 0;
/// Exit code when the run could not be carried out.
pub const EXIT_ERROR: u8 = 1;
/// Exit code when a threshold failed.
pub const EXIT_THRESHOLDS_FAILED: u8 = 99;

/// Extra time the whole run may take beyond its plan when `spec.timeout` is not set.
const DEFAULT_TIMEOUT_MARGIN: Duration = Duration::from_secs(600);

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

/// Runs `lt` locally and returns its summary. Errors before the load starts (a step that does
/// not compile, a missing feeder file, a failed setup) come back as a summary in phase Error.
pub async fn run_local(lt: &LoadTest, roots: &FileRoots, progress: Progress) -> RunSummary {
    let name = lt
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| "loadtest".into());
    let spec = &lt.spec;
    let error_summary = |e: &EngineError, run: &RunMetrics| {
        let end = RunEnd {
            phase: Phase::Error,
            reason: Some(error_reason(e).into()),
            message: Some(e.to_string()),
        };
        build_summary(&name, end, 1, Duration::ZERO, None, run, &[], Vec::new())
    };
    let place = RunnerPlace { index: 0, count: 1 };
    let engine = match Engine::prepare(spec, place, roots) {
        Ok(engine) => engine,
        Err(e) => return error_summary(&e, &RunMetrics::for_spec(spec)),
    };
    // The timeout covers the whole run, setup included.
    let began = Instant::now();
    let timeout = spec
        .timeout
        .map(|t| t.get())
        .unwrap_or_else(|| engine.longest_duration() + DEFAULT_TIMEOUT_MARGIN);
    let timed_out = || RunEnd {
        phase: Phase::Failed,
        reason: Some("Timeout".into()),
        message: Some(format!(
            "the run did not finish within its timeout of {}",
            volley_crds::Duration::from(timeout)
        )),
    };
    let setup_values = match tokio::time::timeout(timeout, engine.run_setup()).await {
        Ok(Ok(values)) => values,
        Ok(Err(e)) => return error_summary(&e, &engine.snapshot()),
        Err(_) => {
            let run = engine.snapshot();
            return build_summary(
                &name,
                timed_out(),
                1,
                Duration::ZERO,
                None,
                &run,
                &[],
                Vec::new(),
            );
        }
    };

    let start = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut run = pin!(engine.run(setup_values, start, stop_rx));
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    let mut watch = RunWatch::new(progress, engine.planned_duration());
    let mut stopped_by: Option<RunEnd> = None;

    loop {
        tokio::select! {
            _ = &mut run => break,
            _ = ticker.tick() => {
                let snapshot = engine.snapshot();
                let elapsed = start.elapsed();
                watch.tick(&snapshot, elapsed, engine.active_vus());
                if stopped_by.is_some() {
                    continue;
                }
                let results = metrics::evaluate_thresholds(spec, &snapshot, elapsed);
                if let Some(i) = metrics::abort_trigger(&results, elapsed) {
                    watch.aborted = Some(i);
                    stopped_by = Some(RunEnd {
                        phase: Phase::Failed,
                        reason: Some("ThresholdAborted".into()),
                        message: results[i].failure_message.clone(),
                    });
                    let _ = stop_tx.send(true);
                } else if began.elapsed() >= timeout {
                    stopped_by = Some(timed_out());
                    let _ = stop_tx.send(true);
                }
            }
            _ = &mut ctrl_c, if stopped_by.is_none() => {
                stopped_by = Some(RunEnd {
                    phase: Phase::Aborted,
                    reason: Some("Interrupted".into()),
                    message: Some("interrupted (Ctrl-C); results so far are kept".into()),
                });
                let _ = stop_tx.send(true);
            }
        }
    }
    watch.finish();

    let elapsed = start.elapsed();
    let snapshot = engine.snapshot();
    watch.add_final_point(&snapshot, elapsed);
    let mut results = metrics::evaluate_thresholds(spec, &snapshot, elapsed);
    if let Some(i) = watch.aborted
        && let Some(r) = results.get_mut(i)
    {
        // The final figures may have moved; the threshold still stopped the run.
        r.status.aborted = true;
    }
    let end = stopped_by.unwrap_or_else(|| verdict_end(&results));
    build_summary(
        &name,
        end,
        1,
        elapsed,
        None,
        &snapshot,
        &results,
        watch.series,
    )
}

/// The exit code for a summary: 0 passed, 99 thresholds failed, 1 anything else.
pub fn exit_code(s: &RunSummary) -> u8 {
    match (s.phase, s.verdict) {
        (Phase::Succeeded, _) => EXIT_PASSED,
        (Phase::Failed, Some(Verdict::Failed)) => EXIT_THRESHOLDS_FAILED,
        _ => EXIT_ERROR,
    }
}

fn verdict_end(results: &[ThresholdResult]) -> RunEnd {
    match results.iter().find(|r| !r.status.passed) {
        None => RunEnd {
            phase: Phase::Succeeded,
            reason: Some("ThresholdsPassed".into()),
            message: None,
        },
        Some(first) => {
            let failed = results.iter().filter(|r| !r.status.passed).count();
            let more = if failed > 1 {
                format!(" (and {} more)", failed - 1)
            } else {
                String::new()
            };
            RunEnd {
                phase: Phase::Failed,
                reason: Some("ThresholdsFailed".into()),
                message: first.failure_message.clone().map(|m| format!("{m}{more}")),
            }
        }
    }
}

fn error_reason(e: &EngineError) -> &'static str {
    match e {
        EngineError::Setup { .. } => "SetupFailed",
        EngineError::Feeder(_) => "DataUnavailable",
        EngineError::Step { .. } | EngineError::Client(_) => "InvalidSpec",
    }
}

/// Follows the run once a second: the per-second series and the progress display.
struct RunWatch {
    progress: Progress,
    planned: Duration,
    /// The last two cumulative snapshots (newest last), with their elapsed times.
    previous: Option<(Measurements, Duration)>,
    before_previous: Option<(Measurements, Duration)>,
    series: Vec<SeriesPoint>,
    /// Index of the threshold that stopped the run.
    aborted: Option<usize>,
    live_line_open: bool,
}

impl RunWatch {
    fn new(progress: Progress, planned: Duration) -> RunWatch {
        RunWatch {
            progress,
            planned,
            previous: None,
            before_previous: None,
            series: Vec::new(),
            aborted: None,
            live_line_open: false,
        }
    }

    fn tick(&mut self, snapshot: &RunMetrics, elapsed: Duration, vus: u64) {
        let overall = snapshot.overall();
        let point = self.push_point(overall.clone(), elapsed, false);
        let show = match self.progress {
            Progress::Quiet => false,
            Progress::Live => true,
            Progress::Lines => elapsed.as_secs().is_multiple_of(5),
        };
        if !show {
            return;
        }
        let c = &overall.counters;
        let line = format!(
            "running {}/{}  {:.1} req/s  p95 {}  errors {}  VUs {}  iterations {} (dropped {})",
            volley_crds::Duration::from(Duration::from_secs(elapsed.as_secs())),
            volley_crds::Duration::from(Duration::from_secs(self.planned.as_secs())),
            point.as_ref().map(|p| p.rps).unwrap_or(0.0),
            point
                .as_ref()
                .map(|p| format_latency_ms(p.p95_ms))
                .unwrap_or_else(|| "-".into()),
            format_percent(c.failures, c.requests),
            vus,
            snapshot
                .scenarios
                .iter()
                .map(|s| s.iterations.iterations)
                .sum::<u64>(),
            snapshot
                .scenarios
                .iter()
                .map(|s| s.iterations.dropped_iterations)
                .sum::<u64>(),
        );
        let mut err = std::io::stderr().lock();
        if self.progress == Progress::Live {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.live_line_open = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// The tail after the last tick. A tail shorter than a quarter second would be a noisy
    /// point of its own (a few requests over a few ms), so it is folded into the last point.
    fn add_final_point(&mut self, snapshot: &RunMetrics, elapsed: Duration) {
        let tail = self
            .previous
            .as_ref()
            .map(|(_, at)| elapsed.saturating_sub(*at))
            .unwrap_or(elapsed);
        if tail < Duration::from_millis(250) && !self.series.is_empty() {
            self.series.pop();
            self.previous = self.before_previous.take();
        }
        self.push_point(snapshot.overall(), elapsed, true);
    }

    /// The interval since the previous snapshot; nothing is lost when a tick was late, because
    /// both ends are cumulative. Points are labelled by whole seconds since the start, always
    /// later than the previous point; the final point rounds up.
    fn push_point(
        &mut self,
        overall: Measurements,
        elapsed: Duration,
        last: bool,
    ) -> Option<SeriesPoint> {
        let (prev, prev_elapsed) = self
            .previous
            .take()
            .unwrap_or_else(|| (Measurements::default(), Duration::ZERO));
        let interval = elapsed.saturating_sub(prev_elapsed);
        let secs = elapsed.as_secs_f64();
        let label = if last { secs.ceil() } else { secs.floor() } as u64;
        let label = match self.series.last() {
            Some(p) => label.max(p.second + 1),
            None => label.max(1),
        };
        let point = if interval.is_zero() {
            None
        } else {
            metrics::series_point(&prev, &overall, label, interval).ok()
        };
        if let Some(p) = &point {
            self.series.push(p.clone());
        }
        self.before_previous = Some((prev, prev_elapsed));
        self.previous = Some((overall, elapsed));
        point
    }

    fn finish(&mut self) {
        if self.live_line_open {
            let _ = writeln!(std::io::stderr());
            self.live_line_open = false;
        }
    }
}
