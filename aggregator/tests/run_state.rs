//! The run state machine, driven call by call with a hand-held clock: barrier, setup hand-off,
//! exact merging under lost, repeated and stale reports, runner failures under both policies,
//! silent runners, abortOnFail on merged data, timeouts, resume after a restart, the series.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use volley_aggregator::run::{DecodedReport, ProtocolError, RunConfig, RunLifecycle, RunState};
use volley_core::manifest::parse_manifest;
use volley_core::metrics::histogram::record_latency;
use volley_core::metrics::model::RunMetrics;
use volley_core::protocol::{PROTOCOL_VERSION, ReadyRequest, SetupResult, StartResponse};
use volley_crds::spec::LoadTestSpec;
use volley_crds::status::Phase;

fn spec(extra: &str) -> LoadTestSpec {
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: t}}\n\
         spec:\n  target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n  \
         - {{name: main, executor: constant-arrival-rate, rate: 10, duration: 10s, maxVUs: 5,\n     \
         steps: [{{name: get, request: {{url: /}}}}]}}\n{extra}"
    );
    parse_manifest(&yaml).unwrap().spec
}

struct Clock {
    t0: Instant,
    wall0: SystemTime,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            wall0: SystemTime::now(),
        }
    }
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
    fn wall_ms(&self, ms: u64) -> u64 {
        (self.wall0 + Duration::from_millis(ms))
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }
}

fn state(spec: LoadTestSpec, runners: u32, clock: &Clock) -> RunState {
    let config = RunConfig {
        runners,
        ..RunConfig::new("run-1", "token", "t", spec)
    };
    RunState::new(config, clock.t0, clock.wall0)
}

fn ready() -> ReadyRequest {
    ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host: "host-x".into(),
    }
}

/// Metrics of `spec` with `latencies_ms` recorded on the first step, `failures` of them failed.
fn metrics(spec: &LoadTestSpec, latencies_ms: &[u64], failures: u64) -> RunMetrics {
    let mut run = RunMetrics::for_spec(spec);
    let sc = run.scenarios.last_mut().unwrap();
    sc.iterations.iterations = latencies_ms.len() as u64;
    let m = &mut sc.steps[0].m;
    for ms in latencies_ms {
        record_latency(&mut m.latency, Duration::from_millis(*ms));
        record_latency(&mut m.latency_sent, Duration::from_millis(*ms));
    }
    m.counters.requests = latencies_ms.len() as u64;
    m.counters.failures = failures;
    run
}

fn report(runner: u32, seq: u64, elapsed_ms: u64, done: bool, run: RunMetrics) -> DecodedReport {
    DecodedReport {
        runner,
        seq,
        elapsed: Duration::from_millis(elapsed_ms),
        done,
        metrics: run,
        first_request_unix_ms: None,
        error: None,
    }
}

fn started(spec: LoadTestSpec, runners: u32, clock: &Clock) -> RunState {
    let mut s = state(spec, runners, clock);
    for i in 0..runners {
        s.ready(i, &ready(), clock.at(10)).unwrap();
    }
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    s
}

fn requests(s: &mut RunState) -> u64 {
    s.view().merged.overall().counters.requests
}

#[test]
fn the_barrier_holds_until_every_runner_registered_then_all_get_one_start() {
    let clock = Clock::new();
    let mut s = state(spec(""), 3, &clock);
    s.ready(0, &ready(), clock.at(0)).unwrap();
    s.ready(2, &ready(), clock.at(5)).unwrap();
    assert_eq!(s.poll_start(0, clock.at(6)).unwrap(), StartResponse::Wait);
    assert_eq!(s.view().registered, 2);
    let answer = s.ready(1, &ready(), clock.at(100)).unwrap();
    assert_eq!(answer.runners, 3);
    assert_eq!(answer.report_interval_ms, 1000);
    let expected = StartResponse::Start {
        start_at_unix_ms: clock.wall_ms(100) + 1000,
        setup: BTreeMap::new(),
    };
    for i in 0..3 {
        assert_eq!(s.poll_start(i, clock.at(150)).unwrap(), expected);
    }
}

#[test]
fn calls_outside_the_run_are_refused_without_changing_it() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = state(sp.clone(), 2, &clock);
    let old = ReadyRequest {
        protocol: PROTOCOL_VERSION + 1,
        ..ready()
    };
    assert!(matches!(
        s.ready(0, &old, clock.at(0)),
        Err(ProtocolError::ProtocolMismatch { .. })
    ));
    assert!(matches!(
        s.ready(2, &ready(), clock.at(0)),
        Err(ProtocolError::UnknownRunner {
            index: 2,
            runners: 2
        })
    ));
    assert_eq!(s.view().registered, 0);
    assert!(matches!(
        s.setup(&SetupResult::default(), None, clock.at(0)),
        Err(ProtocolError::NotInSetup)
    ));
    s.ready(0, &ready(), clock.at(0)).unwrap();
    s.ready(1, &ready(), clock.at(0)).unwrap();
    let wrong = report(0, 1, 1000, false, metrics(&sp, &[5], 0));
    assert!(matches!(
        s.report(1, wrong, clock.at(2000)),
        Err(ProtocolError::WrongRunner { path: 1, body: 0 })
    ));
    assert_eq!(requests(&mut s), 0);
}

#[test]
fn runner_0_runs_setup_and_everyone_starts_with_its_values() {
    let clock = Clock::new();
    let sp = spec("  setup: [{name: login, request: {url: /login}}]\n");
    let mut s = state(sp.clone(), 2, &clock);
    s.ready(0, &ready(), clock.at(0)).unwrap();
    s.ready(1, &ready(), clock.at(0)).unwrap();
    assert_eq!(s.lifecycle(), RunLifecycle::Setup);
    assert_eq!(
        s.poll_start(0, clock.at(1)).unwrap(),
        StartResponse::RunSetup
    );
    assert_eq!(s.poll_start(1, clock.at(1)).unwrap(), StartResponse::Wait);

    // The setup figures stand in for runner 0 until its first run report.
    let mut setup_metrics = RunMetrics::for_spec(&sp);
    setup_metrics.scenarios[0].steps[0].m.counters.requests = 1;
    let values = BTreeMap::from([("token".to_string(), "abc".to_string())]);
    let result = SetupResult {
        values: values.clone(),
        error: None,
        report: None,
    };
    s.setup(
        &result,
        Some(report(0, 0, 0, false, setup_metrics)),
        clock.at(300),
    )
    .unwrap();
    let start = StartResponse::Start {
        start_at_unix_ms: clock.wall_ms(300) + 1000,
        setup: values,
    };
    assert_eq!(s.poll_start(1, clock.at(301)).unwrap(), start);
    assert_eq!(s.poll_start(0, clock.at(301)).unwrap(), start);
    let view = s.view();
    assert_eq!(
        view.merged
            .scenario_total("setup")
            .unwrap()
            .counters
            .requests,
        1
    );
    // A repeated post (its answer was lost) changes nothing.
    s.setup(&result, None, clock.at(400)).unwrap();
    assert_eq!(s.poll_start(1, clock.at(401)).unwrap(), start);
}

#[test]
fn a_failed_setup_ends_the_run_in_error_and_releases_everyone() {
    let clock = Clock::new();
    let mut s = state(spec("  setup: [{request: {url: /login}}]\n"), 2, &clock);
    s.ready(0, &ready(), clock.at(0)).unwrap();
    s.ready(1, &ready(), clock.at(0)).unwrap();
    let failed = SetupResult {
        error: Some("step `POST /login`: 503".into()),
        ..SetupResult::default()
    };
    s.setup(&failed, None, clock.at(100)).unwrap();
    let view = s.view();
    assert_eq!(view.lifecycle, RunLifecycle::Finished);
    let end = view.end.unwrap();
    assert_eq!(end.phase, Phase::Error);
    assert_eq!(end.reason.as_deref(), Some("SetupFailed"));
    assert_eq!(
        end.message.as_deref(),
        Some("setup failed: step `POST /login`: 503")
    );
    match s.poll_start(1, clock.at(200)).unwrap() {
        StartResponse::Abort { reason } => assert!(reason.contains("SetupFailed"), "{reason}"),
        other => panic!("expected abort, got {other:?}"),
    }
}

#[test]
fn only_each_runners_newest_report_counts_so_lost_repeated_and_stale_reports_change_nothing() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    let r0 = |n: usize| metrics(&sp, &vec![10; n], 0);
    s.report(0, report(0, 1, 1000, false, r0(10)), clock.at(2010))
        .unwrap();
    // Report 2 of runner 0 is lost; 3 carries everything since the start.
    s.report(0, report(0, 3, 3000, false, r0(30)), clock.at(4010))
        .unwrap();
    s.report(
        1,
        report(1, 1, 1000, false, metrics(&sp, &[20; 5], 1)),
        clock.at(2020),
    )
    .unwrap();
    // Repeated: accepted, ignored.
    let again = s
        .report(
            1,
            report(1, 1, 1000, false, metrics(&sp, &[20; 5], 1)),
            clock.at(2030),
        )
        .unwrap();
    assert!(!again.stop);
    // Stale (a delayed copy of report 2): refused, ignored.
    let stale = s.report(0, report(0, 2, 2000, false, r0(20)), clock.at(4020));
    assert!(matches!(
        stale,
        Err(ProtocolError::StaleReport {
            index: 0,
            seq: 2,
            latest: 3
        })
    ));
    let view = s.view();
    let overall = view.merged.overall();
    assert_eq!(overall.counters.requests, 35);
    assert_eq!(overall.counters.failures, 1);
    assert_eq!(overall.latency.len(), 35);
    assert_eq!(overall.latency.count_at(10_000), 30);
    assert_eq!(overall.latency.count_at(20_000), 5);
    assert_eq!(view.elapsed, Duration::from_secs(3));
    assert_eq!(view.running, 2);
}

#[test]
fn the_run_ends_when_every_runner_sent_its_final_report() {
    let clock = Clock::new();
    let sp = spec("  thresholds: ['p(95) < 15ms', 'error_rate < 1%']\n");
    let mut s = started(sp.clone(), 2, &clock);
    s.report(
        0,
        report(0, 11, 10_000, true, metrics(&sp, &[10; 50], 0)),
        clock.at(11_100),
    )
    .unwrap();
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    s.report(
        1,
        report(1, 11, 10_020, true, metrics(&sp, &[12; 50], 0)),
        clock.at(11_120),
    )
    .unwrap();
    let view = s.view();
    assert_eq!(view.lifecycle, RunLifecycle::Finished);
    assert_eq!(view.done, 2);
    let end = view.end.unwrap();
    assert_eq!(
        (end.phase, end.reason.as_deref()),
        (Phase::Succeeded, Some("ThresholdsPassed"))
    );
    assert_eq!(view.thresholds.len(), 2);
    assert!(view.thresholds.iter().all(|t| t.status.passed));
    // After the end, reports are answered `stop` and change nothing.
    let late = s
        .report(
            0,
            report(0, 12, 11_000, true, metrics(&sp, &[10; 99], 0)),
            clock.at(12_000),
        )
        .unwrap();
    assert!(late.stop);
    assert_eq!(requests(&mut s), 100);
}

/// A baseline whose overall p95 was 10 ms.
fn baseline_p95_10ms() -> volley_core::compare::Baseline {
    let mut figures = volley_core::compare::RunFigures {
        duration_seconds: 10.0,
        ..Default::default()
    };
    figures.metrics.requests = 100;
    figures.metrics.latency_ms.p95 = 10.0;
    volley_core::compare::Baseline::Run(Box::new(figures))
}

#[test]
fn baseline_thresholds_abort_on_the_baseline_values_given_in_the_run_config() {
    let clock = Clock::new();
    let sp = spec(
        "  thresholds: ['p(95) < baseline * 2', {expr: 'p(95) < baseline * 0.1', abortOnFail: true}]\n",
    );
    let config = RunConfig {
        runners: 1,
        baseline: baseline_p95_10ms(),
        ..RunConfig::new("run-1", "token", "t", sp.clone())
    };
    let mut s = RunState::new(config, clock.t0, clock.wall0);
    s.ready(0, &ready(), clock.at(10)).unwrap();
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 20], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.tick(clock.at(2100));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping, "5ms >= 1ms");
    s.report(
        0,
        report(0, 2, 1500, true, metrics(&sp, &[5; 20], 0)),
        clock.at(2300),
    )
    .unwrap();
    let view = s.view();
    let end = view.end.unwrap();
    assert_eq!(end.reason.as_deref(), Some("ThresholdAborted"));
    assert_eq!(
        end.message.as_deref(),
        Some("p(95) 5.003ms >= 1ms (baseline 10ms * 0.1)")
    );
    assert!(view.thresholds[0].status.passed, "5ms < 20ms");
    assert!(view.thresholds[1].status.aborted);
}

#[test]
fn without_a_baseline_baseline_thresholds_are_skipped_and_never_abort() {
    let clock = Clock::new();
    let sp = spec("  thresholds: [{expr: 'p(95) < baseline * 0.1', abortOnFail: true}]\n");
    let mut s = started(sp.clone(), 1, &clock);
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 20], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.tick(clock.at(2100));
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    s.report(
        0,
        report(0, 2, 10_000, true, metrics(&sp, &[5; 20], 0)),
        clock.at(11_000),
    )
    .unwrap();
    let view = s.view();
    let end = view.end.unwrap();
    assert_eq!(end.phase, Phase::Succeeded);
    let row = &view.thresholds[0].status;
    assert!(!row.passed && !row.aborted);
    assert_eq!(
        row.skipped.as_deref(),
        Some(volley_core::compare::NO_BASELINE)
    );
}

#[test]
fn abort_on_fail_judges_the_merged_result_not_each_runner() {
    let clock = Clock::new();
    // 60 requests per runner passes `requests < 100` alone; the merged 120 does not.
    let sp = spec("  thresholds: [{expr: 'requests < 100', abortOnFail: true}]\n");
    let mut s = started(sp.clone(), 2, &clock);
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 60], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.tick(clock.at(2100));
    assert_eq!(
        s.lifecycle(),
        RunLifecycle::Running,
        "one runner's share alone passes"
    );
    s.report(
        1,
        report(1, 1, 1000, false, metrics(&sp, &[5; 60], 0)),
        clock.at(2010),
    )
    .unwrap();
    s.tick(clock.at(2200));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping);
    let answer = s
        .report(
            0,
            report(0, 2, 1500, true, metrics(&sp, &[5; 70], 0)),
            clock.at(2300),
        )
        .unwrap();
    assert!(answer.stop);
    assert!(answer.reason.unwrap().contains("ThresholdAborted"));
    s.report(
        1,
        report(1, 2, 1500, true, metrics(&sp, &[5; 70], 0)),
        clock.at(2310),
    )
    .unwrap();
    let view = s.view();
    let end = view.end.unwrap();
    assert_eq!(end.phase, Phase::Failed);
    assert_eq!(end.reason.as_deref(), Some("ThresholdAborted"));
    assert_eq!(end.message.as_deref(), Some("requests 120 >= 100"));
    assert!(view.thresholds[0].status.aborted);
    assert_eq!(view.merged.overall().counters.requests, 140);
}

#[test]
fn delay_abort_eval_holds_the_abort_until_the_run_is_old_enough() {
    let clock = Clock::new();
    let sp =
        spec("  thresholds: [{expr: 'requests < 10', abortOnFail: true, delayAbortEval: 3s}]\n");
    let mut s = started(sp.clone(), 1, &clock);
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 20], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.tick(clock.at(2100));
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    s.report(
        0,
        report(0, 3, 3000, false, metrics(&sp, &[5; 40], 0)),
        clock.at(4000),
    )
    .unwrap();
    s.tick(clock.at(4100));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping);
}

#[test]
fn a_dead_runner_fails_the_run_by_default_and_the_survivors_finish() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    s.report(
        1,
        report(1, 2, 2000, false, metrics(&sp, &[5; 20], 0)),
        clock.at(3000),
    )
    .unwrap();
    s.runner_failed(1, "exited: killed by signal 9", clock.at(4200));
    assert_eq!(s.lifecycle(), RunLifecycle::Running, "the survivors go on");
    s.report(
        0,
        report(0, 11, 10_000, true, metrics(&sp, &[5; 100], 0)),
        clock.at(11_000),
    )
    .unwrap();
    let view = s.view();
    let end = view.end.unwrap();
    assert_eq!(end.phase, Phase::Failed);
    assert_eq!(end.reason.as_deref(), Some("RunnerFailed"));
    assert_eq!(
        end.message.as_deref(),
        Some("runner 1 (host-x) failed at 3.2s: exited: killed by signal 9")
    );
    assert_eq!(view.failures.len(), 1);
    // The dead runner's figures up to its last report are kept.
    assert_eq!(view.merged.overall().counters.requests, 120);
}

#[test]
fn failure_policy_continue_keeps_the_survivors_verdict() {
    let clock = Clock::new();
    let sp = spec("  thresholds: ['error_rate < 1%']\n  runners: {failurePolicy: Continue}\n");
    let mut s = started(sp.clone(), 2, &clock);
    s.runner_failed(0, "pod deleted", clock.at(5000));
    s.report(
        1,
        report(1, 11, 10_000, true, metrics(&sp, &[5; 100], 0)),
        clock.at(11_000),
    )
    .unwrap();
    let end = s.view().end.unwrap();
    assert_eq!(end.phase, Phase::Succeeded);
    assert!(
        end.message
            .unwrap()
            .contains("runner 0 (host-x) failed at 4.0s: pod deleted")
    );
}

#[test]
fn an_error_report_counts_as_a_failure_and_before_the_start_ends_the_run() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = state(sp.clone(), 2, &clock);
    s.ready(0, &ready(), clock.at(0)).unwrap();
    let mut bad = report(0, 1, 0, true, RunMetrics::for_spec(&sp));
    bad.error = Some("the spec is invalid: feeder file users.csv not found".into());
    s.report(0, bad, clock.at(50)).unwrap();
    let view = s.view();
    let end = view.end.unwrap();
    assert_eq!(end.phase, Phase::Error);
    assert_eq!(
        end.message.as_deref(),
        Some(
            "runner 0 (host-x) failed before the start: the spec is invalid: feeder file \
             users.csv not found"
        )
    );
    assert!(matches!(
        s.poll_start(1, clock.at(60)).unwrap(),
        StartResponse::Abort { .. }
    ));
}

#[test]
fn a_silent_runner_is_failed_after_the_silence_timeout() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    // Start at 1.01 s; runner 1 never reports.
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5], 0)),
        clock.at(2010),
    )
    .unwrap();
    s.tick(clock.at(30_000));
    assert!(s.view().failures.is_empty());
    s.report(
        0,
        report(0, 30, 30_000, false, metrics(&sp, &[5], 0)),
        clock.at(31_010),
    )
    .unwrap();
    s.tick(clock.at(31_100));
    let failures = s.view().failures;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].index, 1);
    assert_eq!(failures[0].reason, "no report for 30s");
}

#[test]
fn the_timeout_stops_the_run_and_a_runner_that_never_reports_again_is_given_up() {
    let clock = Clock::new();
    let sp = spec("  timeout: 5s\n");
    let config = RunConfig {
        runners: 2,
        silence_timeout: Duration::from_secs(3600),
        ..RunConfig::new("r", "t", "t", sp.clone())
    };
    let mut s = RunState::new(config, clock.t0, clock.wall0);
    s.ready(0, &ready(), clock.at(0)).unwrap();
    s.ready(1, &ready(), clock.at(0)).unwrap();
    s.tick(clock.at(5000));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping);
    let answer = s
        .report(
            0,
            report(0, 4, 4000, true, metrics(&sp, &[5; 40], 0)),
            clock.at(5100),
        )
        .unwrap();
    assert!(answer.stop);
    // Runner 1 never answers; the grace is gracefulStop (30s default) + 2 reports + 10s.
    s.tick(clock.at(5000 + 41_000));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping);
    s.tick(clock.at(5000 + 42_100));
    let view = s.view();
    assert_eq!(view.lifecycle, RunLifecycle::Finished);
    let end = view.end.unwrap();
    assert_eq!(
        (end.phase, end.reason.as_deref()),
        (Phase::Failed, Some("Timeout"))
    );
    assert_eq!(view.failures[0].index, 1);
    assert!(
        view.failures[0]
            .reason
            .starts_with("no final report within 42s")
    );
}

#[test]
fn the_barrier_gives_up_naming_the_missing_runners() {
    let clock = Clock::new();
    let config = RunConfig {
        runners: 3,
        barrier_timeout: Duration::from_secs(60),
        ..RunConfig::new("r", "t", "t", spec(""))
    };
    let mut s = RunState::new(config, clock.t0, clock.wall0);
    s.ready(1, &ready(), clock.at(0)).unwrap();
    s.tick(clock.at(59_999));
    assert_eq!(s.lifecycle(), RunLifecycle::Barrier);
    s.tick(clock.at(60_000));
    let end = s.view().end.unwrap();
    assert_eq!(
        (end.phase, end.reason.as_deref()),
        (Phase::Error, Some("RunnersNotReady"))
    );
    assert_eq!(
        end.message.as_deref(),
        Some("not every runner registered within 1m: 1 of 3 runner(s) registered (missing: 0, 2)")
    );
}

#[test]
fn abort_before_the_start_ends_at_once_and_during_the_run_stops_the_runners() {
    let clock = Clock::new();
    let mut s = state(spec(""), 1, &clock);
    s.abort("Aborted", "spec.abort was set", clock.at(10));
    assert_eq!(s.view().end.unwrap().phase, Phase::Aborted);

    let sp = spec("");
    let mut s = started(sp.clone(), 1, &clock);
    s.abort("Aborted", "spec.abort was set", clock.at(3000));
    let answer = s
        .report(
            0,
            report(0, 3, 3000, true, metrics(&sp, &[5; 30], 0)),
            clock.at(3100),
        )
        .unwrap();
    assert!(answer.stop);
    let view = s.view();
    assert_eq!(view.end.unwrap().phase, Phase::Aborted);
    assert_eq!(
        view.merged.overall().counters.requests,
        30,
        "partial figures kept"
    );
}

#[test]
fn a_fresh_state_rebuilds_a_running_run_from_the_next_reports() {
    let clock = Clock::new();
    let sp = spec("");
    // The aggregator restarted 5 s into the run: its state is new, the runners go on.
    let mut s = state(sp.clone(), 2, &clock);
    // One runner alone does not move the run from the barrier: its report is refused, and
    // counts as its ready.
    assert!(matches!(
        s.report(
            0,
            report(0, 5, 5000, false, metrics(&sp, &[5; 50], 0)),
            clock.at(10),
        ),
        Err(ProtocolError::NotStarted)
    ));
    assert_eq!(s.lifecycle(), RunLifecycle::Barrier);
    assert_eq!(requests(&mut s), 0);
    // The last one completes the barrier; the run resumes from the earliest claim.
    s.report(
        1,
        report(1, 5, 5000, false, metrics(&sp, &[7; 50], 0)),
        clock.at(20),
    )
    .unwrap();
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    s.report(
        0,
        report(0, 6, 6000, false, metrics(&sp, &[5; 50], 0)),
        clock.at(1010),
    )
    .unwrap();
    assert_eq!(requests(&mut s), 100);
    s.report(
        0,
        report(0, 10, 10_000, true, metrics(&sp, &[5; 100], 0)),
        clock.at(5010),
    )
    .unwrap();
    s.report(
        1,
        report(1, 10, 10_000, true, metrics(&sp, &[7; 100], 0)),
        clock.at(5020),
    )
    .unwrap();
    let view = s.view();
    assert_eq!(view.end.unwrap().phase, Phase::Succeeded);
    assert_eq!(view.merged.overall().counters.requests, 200);
    // The start is back-dated from the reports' elapsed time.
    assert_eq!(view.start_at_unix_ms, Some(clock.wall_ms(10) - 5000));
}

#[test]
fn a_known_start_skips_the_barrier() {
    let clock = Clock::new();
    let config = RunConfig {
        runners: 2,
        started_at_unix_ms: Some(clock.wall_ms(0) - 3000),
        ..RunConfig::new("r", "t", "t", spec(""))
    };
    let mut s = RunState::new(config, clock.t0, clock.wall0);
    assert_eq!(s.lifecycle(), RunLifecycle::Running);
    assert!(matches!(
        s.poll_start(0, clock.at(1)).unwrap(),
        StartResponse::Start { .. }
    ));
}

#[test]
fn the_series_has_a_point_per_second_and_start_skew_is_measured() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    // Start at 1010 ms.
    let mut first = report(0, 1, 1000, false, metrics(&sp, &[5; 10], 0));
    first.first_request_unix_ms = Some(clock.wall_ms(1010));
    s.report(0, first, clock.at(2010)).unwrap();
    let mut other = report(1, 1, 1000, false, metrics(&sp, &[5; 10], 0));
    other.first_request_unix_ms = Some(clock.wall_ms(1043));
    s.report(1, other, clock.at(2015)).unwrap();
    s.tick(clock.at(2600));
    s.report(
        0,
        report(0, 2, 2000, true, metrics(&sp, &[5; 20], 0)),
        clock.at(3010),
    )
    .unwrap();
    s.report(
        1,
        report(1, 2, 2000, true, metrics(&sp, &[5; 25], 0)),
        clock.at(3012),
    )
    .unwrap();
    let view = s.view();
    assert_eq!(view.start_skew, Some(Duration::from_millis(33)));
    let series: Vec<(u64, u64)> = view.series.iter().map(|p| (p.second, p.requests)).collect();
    assert_eq!(series, vec![(1, 20), (2, 25)]);
}

#[test]
fn a_runner_that_was_released_before_starting_is_owed_nothing() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    s.abort("Aborted", "stop", clock.at(20));
    // Runner 1 asks for the start only now: it is told to abort and owes no report.
    assert!(matches!(
        s.poll_start(1, clock.at(30)).unwrap(),
        StartResponse::Abort { .. }
    ));
    s.report(
        0,
        report(0, 1, 100, true, metrics(&sp, &[5], 0)),
        clock.at(1200),
    )
    .unwrap();
    let view = s.view();
    assert_eq!(view.lifecycle, RunLifecycle::Finished);
    assert!(view.failures.is_empty());
    assert_eq!(view.end.unwrap().phase, Phase::Aborted);
}

#[test]
fn after_a_restart_at_the_barrier_the_waiting_runners_polls_complete_it() {
    let clock = Clock::new();
    // The new state never saw the runners' ready calls; they are all polling for the start.
    let mut s = state(spec(""), 2, &clock);
    assert_eq!(s.poll_start(0, clock.at(10)).unwrap(), StartResponse::Wait);
    assert_eq!(s.lifecycle(), RunLifecycle::Barrier);
    match s.poll_start(1, clock.at(20)).unwrap() {
        StartResponse::Start {
            start_at_unix_ms, ..
        } => {
            assert_eq!(start_at_unix_ms, clock.wall_ms(20) + 1000)
        }
        other => panic!("expected the start, got {other:?}"),
    }
    assert!(matches!(
        s.poll_start(0, clock.at(30)).unwrap(),
        StartResponse::Start { .. }
    ));
}

#[test]
fn a_runner_cut_short_by_a_signal_fails_unless_the_run_was_being_stopped() {
    let clock = Clock::new();
    let sp = spec("");
    let cut = |runner: u32, at: u64| {
        let mut r = report(runner, 3, at, true, metrics(&sp, &[5; 30], 0));
        r.error = Some("stopped by SIGTERM before its share was done".into());
        r
    };
    let mut s = started(sp.clone(), 2, &clock);
    s.report(0, cut(0, 3000), clock.at(4000)).unwrap();
    let failures = s.view().failures;
    assert_eq!(failures.len(), 1);
    assert!(failures[0].reason.starts_with("stopped by SIGTERM"));
    assert_eq!(requests(&mut s), 30, "its figures are kept");

    let mut s = started(sp.clone(), 2, &clock);
    s.abort("Interrupted", "Ctrl-C", clock.at(3000));
    s.report(0, cut(0, 3000), clock.at(3100)).unwrap();
    s.report(1, cut(1, 3000), clock.at(3100)).unwrap();
    let view = s.view();
    assert!(view.failures.is_empty(), "{:?}", view.failures);
    assert_eq!(view.end.unwrap().phase, Phase::Aborted);
}

/// A rate probe through the state machine: plateaus of 100/s (0–3 s) and 200/s (3–6 s) over
/// two runners, the second plateau failing 20% of its requests, and runner 1 dying at 2.2 s.
/// The dead runner, whose last report stays at 2 s, does not hold the second window back;
/// each window holds exactly the merged difference of its edges; the scenario row carries the
/// sustainable rate.
#[test]
fn a_probe_is_judged_plateau_by_plateau_on_the_merged_reports() {
    let clock = Clock::new();
    let sp = parse_manifest(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: t}\nspec:\n  \
         target: {baseUrl: 'http://127.0.0.1:1'}\n  scenarios:\n  \
         - {name: probe, executor: ramping-arrival-rate, startRate: 100, maxVUs: 50,\n     \
         stages: [{duration: 3s, target: 100}, {duration: 0s, target: 200}, \
         {duration: 3s, target: 200}],\n     steps: [{name: get, request: {url: /}}]}\n  \
         thresholds: ['error_rate < 1%']\n",
    )
    .unwrap()
    .spec;
    let mut s = started(sp.clone(), 2, &clock);
    // One runner's cumulative figures after `k` seconds: 50/s, then 100/s with 20 failures/s.
    let cumulative = |k: u64| {
        let requests = if k <= 3 { 50 * k } else { 150 + 100 * (k - 3) };
        let failures = k.saturating_sub(3) * 20;
        metrics(&sp, &vec![5; requests as usize], failures)
    };
    // The load starts at 1010 ms; reports land just after each second, ticks half a second on.
    for k in 1..=6u64 {
        let at = 1010 + k * 1000;
        let done = k == 6;
        s.report(
            0,
            report(0, k, k * 1000, done, cumulative(k)),
            clock.at(at + 5),
        )
        .unwrap();
        if k <= 2 {
            s.report(
                1,
                report(1, k, k * 1000, false, cumulative(k)),
                clock.at(at + 8),
            )
            .unwrap();
        }
        if k == 2 {
            s.runner_failed(1, "killed by signal 9", clock.at(at + 200));
        }
        s.tick(clock.at(at + 600));
    }
    let view = s.view();
    assert_eq!(view.lifecycle, RunLifecycle::Finished);
    let windows: Vec<(f64, u64, u64, Option<bool>, bool)> = view
        .plateaus
        .iter()
        .map(|p| (p.rate, p.requests, p.failures, p.held, p.complete))
        .collect();
    assert_eq!(
        windows,
        [
            // From 1 s (both runners) to 3 s (runner 0; runner 1 stopped at 2 s).
            (100.0, 50 + 50 + 50, 0, Some(true), true),
            // From 3 s to the end, runner 0 alone.
            (200.0, 300, 60, Some(false), true),
        ]
    );
    let rows = view.scenario_statuses();
    assert_eq!(rows[0].sustainable_rate, Some(100.0));
    let message = view.end.unwrap().message.unwrap();
    assert!(
        message.ends_with(
            "; sustainable rate of probe: 100.0/s (the next plateau, 200.0/s, did not hold)"
        ),
        "{message}"
    );
}

/// A stopped run keeps answering `stop` to every runner until each acknowledged with its final
/// report or is known gone; only then is it drained (and may be forgotten). Reports made
/// before the stop that arrive while it is stopping still count.
#[test]
fn a_stopped_run_answers_stop_until_every_runner_acknowledged_then_is_drained() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 3, &clock);
    for i in 0..3 {
        s.report(
            i,
            report(i, 1, 1000, false, metrics(&sp, &[5; 10], 0)),
            clock.at(2010),
        )
        .unwrap();
    }
    s.abort("Aborted", "spec.abort", clock.at(2100));
    assert_eq!(s.lifecycle(), RunLifecycle::Stopping);
    assert!(!s.drained(), "stopping is not drained");
    // Runner 0 acknowledges; runner 1's last periodic report (made before the stop) arrives
    // late and counts; runner 2's pod dies.
    let a = s
        .report(
            0,
            report(0, 2, 2300, true, metrics(&sp, &[5; 13], 0)),
            clock.at(2400),
        )
        .unwrap();
    assert!(a.stop);
    let b = s
        .report(
            1,
            report(1, 2, 2000, false, metrics(&sp, &[5; 12], 0)),
            clock.at(2500),
        )
        .unwrap();
    assert!(
        b.stop,
        "a runner that has not acknowledged is told stop again"
    );
    assert!(!s.drained(), "runner 1 has not acknowledged");
    assert_eq!(requests(&mut s), 13 + 12 + 10);
    s.runner_failed(2, "its pod was deleted", clock.at(2600));
    assert!(!s.drained(), "runner 1 still owes its final report");
    s.tick(clock.at(3000));
    assert!(!s.drained());
    let c = s
        .report(
            1,
            report(1, 3, 2600, true, metrics(&sp, &[5; 14], 0)),
            clock.at(3100),
        )
        .unwrap();
    assert!(c.stop);
    assert!(s.drained(), "every runner acknowledged or is gone");
    assert_eq!(requests(&mut s), 13 + 14 + 10);
    let view = s.view();
    assert_eq!(view.end.unwrap().phase, Phase::Aborted);
    assert_eq!((view.done, view.failures.len(), view.running), (2, 1, 0));
    // After the end, a runner is still told to stop (until the run is forgotten).
    assert!(
        s.report(
            1,
            report(1, 4, 2700, true, metrics(&sp, &[5; 14], 0)),
            clock.at(3200)
        )
        .unwrap()
        .stop
    );
}

/// A runner that never acknowledges holds the drain back for the stop's grace at most.
#[test]
fn a_runner_that_never_acknowledges_the_stop_is_given_up_after_the_grace() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 2, &clock);
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 3], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.abort("Aborted", "spec.abort", clock.at(2000));
    s.report(
        0,
        report(0, 2, 1100, true, metrics(&sp, &[5; 4], 0)),
        clock.at(2100),
    )
    .unwrap();
    // Runner 1 keeps reporting without ever acknowledging (so it is not silent either).
    for (seq, at) in (1..).zip((3_000..43_000).step_by(10_000)) {
        let answer = s
            .report(
                1,
                report(1, seq, at - 1000, false, metrics(&sp, &[5; 2], 0)),
                clock.at(at),
            )
            .unwrap();
        assert!(answer.stop);
        s.tick(clock.at(at));
    }
    // The grace: the longest gracefulStop (30 s by default) + 2 report intervals + 10 s.
    s.tick(clock.at(2000 + 41_000));
    assert!(!s.drained());
    s.tick(clock.at(2000 + 42_000));
    assert!(s.drained());
}

/// A run whose LoadTest is gone is stopped and dropped once drained, not before.
#[test]
fn a_retired_run_is_stopped_and_released_once_drained() {
    let clock = Clock::new();
    let sp = spec("");
    let mut s = started(sp.clone(), 1, &clock);
    s.report(
        0,
        report(0, 1, 1000, false, metrics(&sp, &[5; 3], 0)),
        clock.at(2000),
    )
    .unwrap();
    s.retire("Deleted", "the LoadTest was deleted", clock.at(2100));
    assert!(!s.retired(), "runner 0 has not heard stop yet");
    let a = s
        .report(
            0,
            report(0, 2, 2000, false, metrics(&sp, &[5; 5], 0)),
            clock.at(3000),
        )
        .unwrap();
    assert!(a.stop);
    assert!(!s.retired());
    s.report(
        0,
        report(0, 3, 2100, true, metrics(&sp, &[5; 5], 0)),
        clock.at(3200),
    )
    .unwrap();
    assert!(s.retired());
    // Before the start, a retired run ends at once.
    let mut early = state(sp, 2, &clock);
    early.retire("Deleted", "the LoadTest was deleted", clock.at(10));
    assert!(early.retired());
}
