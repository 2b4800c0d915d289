//! The engine end to end: whole manifests run in-process with [`run_local`] against the demo
//! target on 127.0.0.1, asserting on the [`RunSummary`] and on what the server counted.
//!
//! Every test is bounded (see [`bounded`]); the long ones are the executor-rate tests
//! (10 s and 8 s) and the coordinated-omission test (6 s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use volley_core::protocol::histogram::decode_histogram;
use volley_crds::status::{Phase, StepStatus, Verdict};
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::engine::{Engine, FileRoots, RunnerPlace};
use volley_runner::local::{Progress, exit_code, run_local};
use volley_runner::summary::RunSummary;

use support::{bounded, closed_port, manifest, tempdir};

async fn demo(config: DemoConfig) -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("start demo target")
}

/// Runs `yaml` (with `@BASE@` = `base`) to the end, at most `limit`.
async fn run_with(yaml: &str, base: &str, roots: &FileRoots, limit: Duration) -> RunSummary {
    let lt = manifest(yaml, base);
    bounded(limit, run_local(&lt, roots, Progress::Quiet)).await
}

async fn run(yaml: &str, base: &str) -> RunSummary {
    run_with(yaml, base, &FileRoots::default(), Duration::from_secs(60)).await
}

fn step<'a>(s: &'a RunSummary, scenario: &str, name: &str) -> &'a StepStatus {
    s.steps
        .iter()
        .find(|st| st.scenario == scenario && st.step == name)
        .unwrap_or_else(|| panic!("no step {scenario}/{name} in {:#?}", s.steps))
}

fn describe(s: &RunSummary) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "phase": s.phase,
        "verdict": s.verdict,
        "reason": s.reason,
        "message": s.message,
        "durationSeconds": s.duration_seconds,
        "metrics": s.metrics,
        "thresholds": s.thresholds,
        "scenarios": s.scenarios,
        "steps": s.steps,
    }))
    .unwrap()
}

fn assert_passed(s: &RunSummary) {
    assert_eq!(
        (s.phase, s.verdict),
        (Phase::Succeeded, Some(Verdict::Passed)),
        "{}",
        describe(s)
    );
    assert_eq!(exit_code(s), 0);
}

// ---------------------------------------------------------------------------------------------
// Executors: the achieved figures.
// ---------------------------------------------------------------------------------------------

/// 100/s for 10 s is exactly 1000 due times (`i × 10 ms < 10 s`); 1% allows for nothing but
/// rounding. Each per-second point of the series must also be near 100/s (loosely: the
/// points are cut by a 1 s ticker, so a point can hold a few iterations more or less).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_arrival_rate_achieves_its_rate() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: car}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: steady
      executor: constant-arrival-rate
      rate: 100
      duration: 10s
      maxVUs: 100
      steps:
        - name: item
          request: {url: "/api/items/${iteration}"}
          check: {status: [200]}
  thresholds: ["error_rate == 0%", "iterations >= 990"]
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    eprintln!(
        "constant-arrival-rate 100/s x 10s: {} iterations, {} dropped, run {:.3}s, p99 {}ms",
        m.iterations, m.dropped_iterations, s.duration_seconds, m.latency_ms.p99
    );
    assert!(
        (990..=1010).contains(&m.iterations),
        "{} iterations for 100/s x 10s",
        m.iterations
    );
    assert_eq!(m.dropped_iterations, 0);
    assert_eq!(m.requests, m.iterations);
    assert_eq!(m.failures, 0);
    assert_eq!(
        target.stats().requests,
        m.requests,
        "server and client agree"
    );
    assert!(
        s.duration_seconds >= 9.9 && s.duration_seconds < 14.0,
        "{}",
        s.duration_seconds
    );
    // The series: one point per second; the full seconds in the middle run at ~100/s.
    assert!(s.series.len() >= 9, "{:?}", s.series);
    for p in s.series.iter().filter(|p| (2..=9).contains(&p.second)) {
        assert!(
            (80.0..=120.0).contains(&p.rps),
            "second {}: {} req/s ({:?})",
            p.second,
            p.rps,
            s.series
        );
    }
    target.shutdown().await;
}

/// startRate 20, up to 120/s over 3 s, 120/s for 2 s, down to 0 over 3 s:
/// ∫ = (20+120)/2·3 + 120·2 + 120/2·3 = 210 + 240 + 180 = 630 iterations, ±1%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_arrival_rate_total_matches_the_integral() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: rar}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: ramp
      executor: ramping-arrival-rate
      startRate: 20
      maxVUs: 100
      stages:
        - {duration: 3s, target: 120}
        - {duration: 2s, target: 120}
        - {duration: 3s, target: 0}
      steps:
        - name: items
          request: {url: /api/items}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    eprintln!(
        "ramping-arrival-rate (integral 630): {} iterations, {} dropped, run {:.3}s",
        m.iterations, m.dropped_iterations, s.duration_seconds
    );
    assert!(
        (624..=636).contains(&m.iterations),
        "{} iterations, want 630 ± 1%",
        m.iterations
    );
    assert_eq!(m.dropped_iterations, 0);
    assert_eq!(m.requests, m.iterations);
    assert_eq!(target.stats().requests, m.requests);
    // The point for second 5 (the interval 4..5 s) lies on the 120/s plateau (3..5 s).
    for p in s.series.iter().filter(|p| p.second == 5) {
        assert!((100.0..=140.0).contains(&p.rps), "{:?}", s.series);
    }
    target.shutdown().await;
}

/// 5 VUs × 3 s with 100 ms per iteration: at most 5 × 30 = 150 iterations (an iteration
/// starts only before the end, and a VU cannot start more than one per 100 ms). At least
/// 135 (90%): that leaves 11 ms of client and loopback overhead per iteration, about five
/// times the ~2 ms measured in a debug build, for a CI box running other tests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_vus_loop_back_to_back() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: cv}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: closed
      executor: constant-vus
      vus: 5
      duration: 3s
      steps:
        - name: slow
          request: {url: "/api/items?delay=100ms"}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    eprintln!(
        "constant-vus 5 x 3s @100ms: {} iterations (ideal 150), run {:.3}s, p50 {}ms",
        m.iterations, s.duration_seconds, m.latency_ms.p50
    );
    assert!(
        (135..=150).contains(&m.iterations),
        "{} iterations",
        m.iterations
    );
    assert_eq!(m.requests, m.iterations);
    assert!(m.latency_ms.min >= 100.0, "{}", m.latency_ms.min);
    // The last iterations started before 3 s and finish within ~100 ms after.
    // Generous: a loaded CI machine may be slow; the point is that it ends near its plan.
    assert!(s.duration_seconds < 6.0, "{}", s.duration_seconds);
    target.shutdown().await;
}

/// startVUs 0 → 4 over 2 s, 4 for 2 s, 4 → 0 over 1 s. k6 moves the count only once the line
/// reaches the next whole VU (up: rounded down; down: rounded up), so VU k (0-based) lives
/// from (k+1)·0.5 s until 5 s − k·0.25 s: 4.5 + 3.75 + 3 + 2.25 = 13.5 VU·s. At 100 ms per
/// iteration that is at most ⌈45⌉+⌈37.5⌉+⌈30⌉+⌈22.5⌉ = 136 iterations (a ramped-down VU
/// finishes the iteration it is in), and at least 115 (85%, the overhead margin of the
/// constant-vus test plus the controller's wake-up jitter at each of the 8 VU changes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_vus_follow_their_stages() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: rv}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: ramp
      executor: ramping-vus
      startVUs: 0
      stages:
        - {duration: 2s, target: 4}
        - {duration: 2s, target: 4}
        - {duration: 1s, target: 0}
      steps:
        - name: slow
          request: {url: "/api/items?delay=100ms"}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    eprintln!(
        "ramping-vus (13.5 VU-s @100ms, max 136): {} iterations, run {:.3}s",
        m.iterations, s.duration_seconds
    );
    assert!(
        (115..=136).contains(&m.iterations),
        "{} iterations",
        m.iterations
    );
    // The series shows the ramp: second 1 has at most 1 VU busy (≤ 10 iterations), the
    // plateau 4 VUs (~40).
    let at = |second: u64| s.series.iter().find(|p| p.second == second);
    if let Some(p) = at(1) {
        assert!(p.requests <= 11, "{:?}", s.series);
    }
    if let Some(p) = at(4) {
        assert!((30..=41).contains(&p.requests), "{:?}", s.series);
    }
    assert!(s.duration_seconds < 8.0, "{}", s.duration_seconds);
    target.shutdown().await;
}

/// shared-iterations: exactly the total, however the VUs share it; per-vu-iterations: exactly
/// vus × iterations. Both side by side in one run, each with its own counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iteration_executors_run_exact_counts() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: iters}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: shared
      executor: shared-iterations
      vus: 5
      iterations: 137
      maxDuration: 30s
      steps:
        - name: items
          request: {url: /api/items}
    - name: per-vu
      executor: per-vu-iterations
      vus: 4
      iterations: 13
      maxDuration: 30s
      steps:
        - name: item
          request: {url: "/api/items/${vu}-${iteration}"}
        - sleep: 1ms
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let sc = |name: &str| {
        s.scenarios
            .iter()
            .find(|x| x.scenario == name)
            .unwrap_or_else(|| panic!("{}", describe(&s)))
    };
    assert_eq!(sc("shared").iterations, 137);
    assert_eq!(sc("shared").requests, 137);
    assert_eq!(sc("per-vu").iterations, 4 * 13);
    assert_eq!(sc("per-vu").requests, 4 * 13);
    assert_eq!(s.metrics.iterations, 137 + 52);
    assert_eq!(target.stats().requests, 137 + 52);
    // They end when the work is done, not at maxDuration.
    assert!(s.duration_seconds < 10.0, "{}", s.duration_seconds);
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Open model: latency from the schedule.
// ---------------------------------------------------------------------------------------------

/// 50/s for 6 s; from 2 s to 3 s the server answers everything after 1 s. About 50 of the 300
/// requests take ≥ 1 s, so p99 must be ≥ 1 s: a closed-loop tool would have sent only a
/// handful during the stall and reported a tiny p99.
///
/// The summary's `latencySentMs` (from the actual send) can only be lower: every sample's
/// scheduled-start latency is ≥ its from-send latency. With ample `maxVUs` nothing waits for a
/// VU, so here the two differ by scheduling jitter only (the stall is in the server, and both
/// views see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_shows_in_p99() {
    let target = demo(DemoConfig::default()).await;
    let base = target.base_url();
    let lt = manifest(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: co}
spec:
  target: {baseUrl: "@BASE@", timeout: 10s}
  scenarios:
    - name: open
      executor: constant-arrival-rate
      rate: 50
      duration: 6s
      maxVUs: 500
      steps:
        - name: items
          request: {url: /api/items}
          check: {status: [200]}
  thresholds: ["p(99) < 1s"]
"#,
        &base,
    );
    let start = Instant::now();
    let runner =
        tokio::spawn(async move { run_local(&lt, &FileRoots::default(), Progress::Quiet).await });

    let admin = reqwest::Client::new();
    let set_delay = |delay: &'static str| {
        let admin = admin.clone();
        let url = format!("{base}/admin/config");
        async move {
            let res = admin
                .post(url)
                .json(&serde_json::json!({ "delay": delay }))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
        }
    };
    tokio::time::sleep_until(start + Duration::from_secs(2)).await;
    set_delay("1s").await;
    tokio::time::sleep_until(start + Duration::from_secs(3)).await;
    set_delay("0s").await;

    let s = bounded(Duration::from_secs(30), runner).await.unwrap();
    let m = &s.metrics;
    let h = decode_histogram(&s.histograms.overall).unwrap();
    let slow = h.count_between(1_000_000, u64::MAX);
    eprintln!(
        "stall 1s at 50/s: {} requests, {slow} >= 1s, p50 {}ms p99 {}ms max {}ms; \
         from send: p99 {}ms, mean {:.3}ms vs scheduled mean {:.3}ms; dropped {}",
        m.requests,
        m.latency_ms.p50,
        m.latency_ms.p99,
        m.latency_ms.max,
        s.latency_sent_ms.p99,
        s.latency_sent_ms.mean,
        m.latency_ms.mean,
        m.dropped_iterations,
    );
    assert_eq!(s.phase, Phase::Failed, "{}", describe(&s));
    assert!(!s.thresholds[0].passed, "the threshold sees the stall");
    assert!((297..=303).contains(&m.iterations), "{}", m.iterations);
    assert_eq!(m.dropped_iterations, 0, "maxVUs is ample");
    assert_eq!(m.failures, 0);
    assert!(
        m.latency_ms.p99 >= 1000.0,
        "p99 {}ms hides the stall",
        m.latency_ms.p99
    );
    // Roughly one second's worth of requests hit the stall.
    assert!((35..=65).contains(&slow), "{slow} requests took >= 1s");
    assert!(m.latency_ms.p50 < 100.0, "{}", m.latency_ms.p50);
    // The from-send view never exceeds the from-schedule view.
    assert!(s.latency_sent_ms.p99 <= m.latency_ms.p99);
    assert!(s.latency_sent_ms.mean <= m.latency_ms.mean);
    assert!(s.latency_sent_ms.max <= m.latency_ms.max);
    target.shutdown().await;
}

/// The open model drops what it cannot start: 50/s for 2 s (100 due) with 2 VUs and 200 ms
/// per iteration can start only ~10/s; the rest are dropped, not queued, so
/// `iterations + dropped` is exactly the schedule and latency stays the server's 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrival_rate_drops_what_max_vus_cannot_start() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: drops}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: capped
      executor: constant-arrival-rate
      rate: 50
      duration: 2s
      maxVUs: 2
      steps:
        - name: slow
          request: {url: "/api/items?delay=200ms"}
  thresholds: ["error_rate == 0%"]
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    eprintln!(
        "maxVUs 2 at 50/s x 2s @200ms: {} iterations, {} dropped, p99 {}ms",
        m.iterations, m.dropped_iterations, m.latency_ms.p99
    );
    assert_eq!(m.iterations + m.dropped_iterations, 100);
    assert!((16..=22).contains(&m.iterations), "{}", m.iterations);
    assert!(m.latency_ms.p99 < 400.0, "{}", m.latency_ms.p99);
    target.shutdown().await;
}

/// Iteration executors stop at `maxDuration`; an iteration still running `gracefulStop`
/// later is interrupted and not counted. 300 ms iterations start at 0, 0.3, 0.6 and 0.9 s:
/// with no grace the 4th is cut at 1 s (3 per VU); with 500 ms it finishes at 1.2 s (4).
/// `startTime` delays a scenario: `late` starts at 1 s and ends at ~1.1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_graceful_stop_and_start_time() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: grace}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: no-grace
      executor: per-vu-iterations
      vus: 2
      iterations: 100
      maxDuration: 1s
      gracefulStop: 0s
      steps:
        - {name: slow, request: {url: "/api/items?delay=300ms"}}
    - name: grace
      executor: per-vu-iterations
      vus: 2
      iterations: 100
      maxDuration: 1s
      gracefulStop: 500ms
      steps:
        - {name: slow, request: {url: "/api/items?delay=300ms"}}
    - name: late
      executor: shared-iterations
      iterations: 1
      startTime: 1s
      steps:
        - {name: slow, request: {url: "/api/items?delay=100ms"}}
"#,
        &target.base_url(),
    )
    .await;
    let sc = |name: &str| {
        s.scenarios
            .iter()
            .find(|x| x.scenario == name)
            .unwrap_or_else(|| panic!("{}", describe(&s)))
            .clone()
    };
    eprintln!(
        "maxDuration 1s: no-grace {} iterations, grace {} iterations, run {:.3}s",
        sc("no-grace").iterations,
        sc("grace").iterations,
        s.duration_seconds
    );
    assert_passed(&s);
    assert_eq!(sc("no-grace").iterations, 6);
    assert_eq!(
        sc("no-grace").requests,
        6,
        "the interrupted request is not counted"
    );
    assert_eq!(sc("no-grace").interrupted_iterations, 2, "one per VU");
    assert_eq!(sc("grace").iterations, 8);
    assert_eq!(sc("grace").interrupted_iterations, 0);
    assert_eq!(sc("late").iterations, 1);
    assert_eq!(s.metrics.interrupted_iterations, 2);
    // The server saw the two interrupted requests too.
    assert_eq!(target.stats().requests, 8 + 8 + 1);
    assert!(
        (1.1..1.5).contains(&s.duration_seconds),
        "{}",
        s.duration_seconds
    );
    target.shutdown().await;
}

/// Each error kind counted as such: timeout, 5xx, 4xx, check, extract; one scenario each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: kinds}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: timeout
      executor: per-vu-iterations
      iterations: 2
      steps:
        - {name: x, request: {url: "/api/items?delay=2s", timeout: 100ms}}
    - name: server
      executor: per-vu-iterations
      iterations: 2
      steps:
        - {name: x, request: {url: "/api/items?status=503"}}
    - name: client
      executor: per-vu-iterations
      iterations: 2
      steps:
        - {name: x, request: {url: "/api/items?status=404"}}
    - name: check
      executor: per-vu-iterations
      iterations: 2
      steps:
        - {name: x, request: {url: /api/items}, check: {bodyContains: "no such text"}}
    - name: extract
      executor: per-vu-iterations
      iterations: 2
      steps:
        - {name: x, request: {url: /api/items}, extract: {missing: {jsonPath: "$.nope"}}}
"#,
        &target.base_url(),
    )
    .await;
    let m = &s.metrics;
    eprintln!("errors by kind: {:?}", m.errors_by_kind);
    assert_eq!(
        m.errors_by_kind,
        BTreeMap::from(["timeout", "5xx", "4xx", "check", "extract"].map(|k| (k.to_string(), 2))),
        "{}",
        describe(&s)
    );
    assert_eq!((m.requests, m.failures), (10, 10));
    for sc in &s.scenarios {
        assert_eq!(sc.error_rate, 1.0, "{sc:?}");
    }
    let timeout = &s.scenarios[0];
    assert!(
        (100.0..500.0).contains(&timeout.p50_ms),
        "a timed-out request is measured to its timeout: {}",
        timeout.p50_ms
    );
    target.shutdown().await;
}

/// `spec.timeout` bounds the whole run: a 30 s scenario under a 2 s timeout ends at ~2 s
/// (plus its in-flight iterations), phase Failed, reason Timeout, exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_timeout_stops_the_run() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: timeout}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  timeout: 2s
  scenarios:
    - name: long
      executor: constant-vus
      vus: 2
      duration: 30s
      steps:
        - {name: x, request: {url: "/api/items?delay=50ms"}}
"#,
        &target.base_url(),
    )
    .await;
    eprintln!("spec.timeout 2s: ended after {:.3}s", s.duration_seconds);
    assert_eq!(s.phase, Phase::Failed, "{}", describe(&s));
    assert_eq!(s.reason.as_deref(), Some("Timeout"));
    assert!(
        (2.0..3.0).contains(&s.duration_seconds),
        "{}",
        s.duration_seconds
    );
    assert_eq!(exit_code(&s), 1);
    assert!(s.metrics.iterations > 40, "{}", s.metrics.iterations);
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Steps: extraction, polling, retries, checks, feeders, setup.
// ---------------------------------------------------------------------------------------------

/// Submit, extract the job id, poll every 70 ms until done. The job is done 300 ms after it
/// was created, so polls at 0, 70, …, 280 ms see `pending` and the one at ~350 ms `done`:
/// the poll step's end-to-end time is ≥ 300 ms (p50 too) and below 300 + 70 + slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_then_poll_until_done() {
    let target = demo(DemoConfig {
        job_delay: Duration::from_millis(300),
        ..DemoConfig::default()
    })
    .await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: jobs}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: jobs
      executor: constant-arrival-rate
      rate: 10
      duration: 2s
      maxVUs: 20
      steps:
        - name: submit
          request:
            method: POST
            url: /api/process
            headers: {Idempotency-Key: "${uuid}"}
            json: {format: webp}
          check: {status: [202], jsonPath: "$.status", equals: pending}
          extract: {jobId: {jsonPath: "$.id"}}
        - name: poll
          request: {url: "/api/jobs/${jobId}"}
          check: {status: [200], jsonPath: "$.status", equals: done}
          until: {jsonPath: "$.status", equals: done, every: 70ms, timeout: 5s}
  thresholds:
    - "error_rate == 0%"
    - "checks == 100%"
    - {expr: "p(50) >= 300ms", scenario: jobs, step: poll}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let m = &s.metrics;
    let submit = step(&s, "jobs", "submit");
    let poll = step(&s, "jobs", "poll");
    let stats = target.stats();
    eprintln!(
        "polling: {} iterations, submit p50 {}ms, poll p50 {}ms p99 {}ms, {} polls ({:.1}/job)",
        m.iterations,
        submit.p50_ms,
        poll.p50_ms,
        poll.p99_ms,
        poll.requests,
        poll.requests as f64 / m.iterations as f64
    );
    assert_eq!(m.iterations, 20);
    assert_eq!(m.failures, 0);
    assert_eq!(m.checks_pass_rate, Some(1.0));
    assert_eq!(submit.requests, 20);
    assert_eq!(stats.jobs_created, 20);
    assert_eq!(stats.polls, poll.requests, "every poll is a request");
    assert!(poll.requests >= 5 * 20, "{} polls", poll.requests);
    assert!(
        poll.p50_ms >= 300.0,
        "poll p50 {}ms < job delay",
        poll.p50_ms
    );
    assert!(poll.p99_ms < 450.0, "poll p99 {}ms", poll.p99_ms);
    target.shutdown().await;
}

/// A poll that never sees its value gives up at `until.timeout`: the step fails once (kind
/// `timeout`, counted on its last poll), while every poll is still a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_that_never_finishes_times_out_once() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: poll-timeout}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: jobs
      executor: per-vu-iterations
      vus: 2
      iterations: 1
      steps:
        - name: submit
          request: {method: POST, url: /api/process}
          extract: {jobId: {jsonPath: "$.id"}}
        - name: poll
          request: {url: "/api/jobs/${jobId}"}
          until: {jsonPath: "$.status", equals: never, every: 50ms, timeout: 400ms}
"#,
        &target.base_url(),
    )
    .await;
    let poll = step(&s, "jobs", "poll");
    eprintln!(
        "poll timeout: {} polls, p50 {}ms, errors {:?}",
        poll.requests, poll.p50_ms, s.metrics.errors_by_kind
    );
    assert_eq!(s.metrics.iterations, 2);
    assert_eq!(
        s.metrics.errors_by_kind,
        BTreeMap::from([("timeout".to_string(), 2)])
    );
    assert_eq!(s.metrics.failures, 2);
    assert_eq!(poll.requests, target.stats().polls);
    assert!(
        poll.requests >= 2 * 6,
        "{} polls in 400ms every 50ms",
        poll.requests
    );
    assert!((300.0..600.0).contains(&poll.p50_ms), "{}", poll.p50_ms);
    target.shutdown().await;
}

/// Cookies live per VU across steps and iterations: login sets `csrf_token`, the jar sends it
/// back, so a POST without the matching `X-CSRF-Token` header is refused (403, which proves
/// the cookie went out) and one with it is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_cookies_are_kept_per_vu() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: csrf}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: browser
      executor: per-vu-iterations
      vus: 2
      iterations: 3
      steps:
        - name: login
          request: {method: POST, url: /auth/login, json: {email: "u${vu}@example.com", password: pw}}
          check: {status: [200]}
          extract:
            token: {jsonPath: "$.token"}
            csrf: {cookie: csrf_token}
        - name: without-header
          request:
            method: POST
            url: /api/process
            headers: {Authorization: "Bearer ${token}"}
          check: {status: [403]}
        - name: with-header
          request:
            method: POST
            url: /api/process
            headers: {Authorization: "Bearer ${token}", X-CSRF-Token: "${csrf}"}
          check: {status: [202]}
  thresholds: ["checks == 100%", "error_rate == 0%"]
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let stats = target.stats();
    assert_eq!(stats.logins, 6);
    assert_eq!(stats.jobs_created, 6);
    assert_eq!(step(&s, "browser", "without-header").requests, 6);
    target.shutdown().await;
}

/// `check: {status: [201]}` fails on every 202, and `retry.on: [check]` resends the same
/// rendered request, so all 3 attempts of an iteration carry the same `Idempotency-Key`:
/// the first creates the job, the 2 retries are duplicates on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_resend_the_same_idempotency_key() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: retries}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: storm
      executor: per-vu-iterations
      vus: 3
      iterations: 4
      steps:
        - name: submit
          request:
            method: POST
            url: /api/process
            headers: {Idempotency-Key: "${uuid}"}
            json: {format: webp}
          check: {status: [201]}
          retry: {attempts: 3, on: [check], backoff: 10ms}
"#,
        &target.base_url(),
    )
    .await;
    let m = &s.metrics;
    let submit = step(&s, "storm", "submit");
    let stats = target.stats();
    let retries = submit.requests - m.iterations;
    eprintln!(
        "retries: {} iterations, {} requests, {retries} retries; server: {} jobs, {} duplicates",
        m.iterations, submit.requests, stats.jobs_created, stats.duplicates
    );
    assert_eq!(s.phase, Phase::Succeeded, "no thresholds: {}", describe(&s));
    assert_eq!(m.iterations, 12);
    assert_eq!(submit.requests, 3 * 12, "3 attempts per iteration");
    assert_eq!(stats.jobs_created, 12, "one job per key");
    assert_eq!(
        stats.duplicates, retries,
        "every retry repeated a stored key"
    );
    assert_eq!(retries, 2 * 12);
    // Every attempt failed its check and counts as a failed request.
    assert_eq!(m.failures, 36);
    assert_eq!(m.errors_by_kind.get("check"), Some(&36));
    assert_eq!(m.checks_pass_rate, Some(0.0));
    target.shutdown().await;
}

/// Per iteration: a status check that passes, a status + bodyContains check that passes
/// (2 conditions), then a forced 404 against `status: [200]` that fails: 3 of 4 conditions,
/// 75%, exactly. The forced 404 is also a `4xx` error and ends the iteration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_counted_per_condition() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: checks}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: mix
      executor: per-vu-iterations
      vus: 2
      iterations: 5
      steps:
        - name: list
          request: {url: /api/items}
          check: {status: [200]}
        - name: one
          request: {url: /api/items/7}
          check: {status: [200], bodyContains: "item 7"}
        - name: missing
          request: {url: "/api/items?status=404"}
          check: {status: [200]}
        - name: never-reached
          request: {url: /api/items}
  thresholds: ["checks > 74%", "checks > 76%"]
"#,
        &target.base_url(),
    )
    .await;
    let m = &s.metrics;
    eprintln!(
        "checks: pass rate {:?}, failures {} of {}",
        m.checks_pass_rate, m.failures, m.requests
    );
    assert_eq!(m.iterations, 10);
    assert_eq!(m.checks_pass_rate, Some(0.75));
    assert_eq!(m.requests, 30, "the step after the failed one never runs");
    assert_eq!(step(&s, "mix", "never-reached").requests, 0);
    assert_eq!(m.failures, 10);
    assert_eq!(m.errors_by_kind.get("4xx"), Some(&10));
    assert_eq!(target.stats().failures_injected, 10);
    assert!(s.thresholds[0].passed, "{:?}", s.thresholds);
    assert!(!s.thresholds[1].passed, "{:?}", s.thresholds);
    assert_eq!(s.thresholds[0].actual, "75%");
    assert_eq!((s.phase, s.verdict), (Phase::Failed, Some(Verdict::Failed)));
    assert_eq!(s.reason.as_deref(), Some("ThresholdsFailed"));
    assert_eq!(exit_code(&s), 99);
    target.shutdown().await;
}

/// A `unique` feeder with 7 rows under a schedule of 100 iterations: 7 iterations, each with
/// its own row (7 logins), then the scenario stops early and the run ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_feeder_ends_the_run_when_rows_run_out() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("feeder");
    let mut csv = String::from("email,password\n");
    for i in 0..7 {
        csv.push_str(&format!("user{i}@example.com,pw{i}\n"));
    }
    std::fs::write(dir.join("users.csv"), csv).unwrap();
    let roots = FileRoots {
        manifest_dir: dir.clone(),
        configmaps: None,
    };
    let s = run_with(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: feeder}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  data:
    - {name: users, file: users.csv, order: unique}
  scenarios:
    - name: logins
      executor: constant-arrival-rate
      rate: 20
      duration: 5s
      maxVUs: 10
      steps:
        - name: login
          request:
            method: POST
            url: /auth/login
            json: {email: "${users.email}", password: "${users.password}"}
          check: {status: [200]}
          extract: {token: {jsonPath: "$.token"}}
        - name: with-token
          request:
            url: /api/items
            headers: {Authorization: "Bearer ${token}"}
          check: {status: [200]}
  thresholds: ["error_rate == 0%", "iterations == 7"]
"#,
        &target.base_url(),
        &roots,
        Duration::from_secs(30),
    )
    .await;
    eprintln!(
        "unique feeder (7 rows, 100 planned): {} iterations in {:.3}s",
        s.metrics.iterations, s.duration_seconds
    );
    assert_passed(&s);
    assert_eq!(s.metrics.iterations, 7);
    assert_eq!(s.metrics.requests, 14);
    assert_eq!(target.stats().logins, 7);
    // Rows run out after ~0.35 s of a 5 s schedule.
    assert!(s.duration_seconds < 4.0, "{}", s.duration_seconds);
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// Setup logs in once; its token reaches every VU. A token the server did not issue would get
/// 401, so zero failures proves the token arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_once_and_its_values_reach_every_vu() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: setup}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request:
        method: POST
        url: /auth/login
        json: {email: "loadtest@example.com", password: "secret"}
      check: {status: [200]}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 3
      iterations: 4
      steps:
        - name: list
          request:
            url: /api/items
            headers: {Authorization: "Bearer ${setup.token}"}
          check: {status: [200]}
        - name: submit
          request:
            method: POST
            url: /api/process
            headers: {Authorization: "Bearer ${setup.token}", Idempotency-Key: "${uuid}"}
            json: {format: webp}
          check: {status: [202]}
  thresholds: ["error_rate == 0%"]
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let stats = target.stats();
    assert_eq!(stats.logins, 1, "one login for the whole test");
    assert_eq!(stats.jobs_created, 12);
    // Setup has its own row but is not load.
    assert_eq!(step(&s, "setup", "login").requests, 1);
    assert_eq!(s.metrics.requests, 24);
    assert_eq!(stats.requests, 25);
    target.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Thresholds and errors.
// ---------------------------------------------------------------------------------------------

/// `error_rate < 1%` with abortOnFail against a target failing half the requests: the check
/// once a second stops a 30 s run after about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_the_run_early() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: abort}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: failing
      executor: constant-arrival-rate
      rate: 20
      duration: 30s
      maxVUs: 20
      steps:
        - name: flaky
          request: {url: "/api/items?fail=0.5"}
  thresholds:
    - "p(99) < 10s"
    - {expr: "error_rate < 1%", abortOnFail: true}
"#,
        &target.base_url(),
    )
    .await;
    eprintln!(
        "abortOnFail: stopped after {:.3}s, {} requests, error rate {:.2}, message {:?}",
        s.duration_seconds, s.metrics.requests, s.metrics.error_rate, s.message
    );
    assert!(s.duration_seconds < 8.0, "{}", describe(&s));
    assert_eq!(s.phase, Phase::Failed, "{}", describe(&s));
    assert_eq!(s.verdict, Some(Verdict::Failed));
    assert_eq!(s.reason.as_deref(), Some("ThresholdAborted"));
    assert!(s.thresholds[1].aborted, "{:?}", s.thresholds);
    assert!(!s.thresholds[1].passed);
    assert!(!s.thresholds[0].aborted && s.thresholds[0].passed);
    let message = s.message.as_deref().unwrap_or_default();
    assert!(message.contains("error_rate"), "{message}");
    assert_eq!(exit_code(&s), 99);
    assert!(s.metrics.errors_by_kind.get("5xx").is_some_and(|n| *n > 0));
    target.shutdown().await;
}

/// `delayAbortEval` holds the abort back: the same failing threshold with a 2 s delay stops
/// the run at the first check at or after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_abort_eval_holds_the_abort_back() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: abort-later}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: failing
      executor: constant-arrival-rate
      rate: 20
      duration: 30s
      steps:
        - {name: flaky, request: {url: "/api/items?fail=0.5"}}
  thresholds:
    - {expr: "error_rate < 1%", abortOnFail: true, delayAbortEval: 2s}
"#,
        &target.base_url(),
    )
    .await;
    eprintln!(
        "delayAbortEval 2s: stopped after {:.3}s",
        s.duration_seconds
    );
    assert_eq!(
        s.reason.as_deref(),
        Some("ThresholdAborted"),
        "{}",
        describe(&s)
    );
    assert!(s.thresholds[0].aborted);
    assert!(
        (2.0..4.0).contains(&s.duration_seconds),
        "{}",
        s.duration_seconds
    );
    target.shutdown().await;
}

/// Nothing listens on the port: every request fails as `connect`, the run still completes,
/// and the thresholds judge it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails_the_thresholds_without_panicking() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: unreachable}
spec:
  target: {baseUrl: "@BASE@", timeout: 2s}
  scenarios:
    - name: nowhere
      executor: constant-arrival-rate
      rate: 20
      duration: 1s
      maxVUs: 20
      steps:
        - name: items
          request: {url: /api/items}
          check: {status: [200]}
  thresholds: ["error_rate < 1%"]
"#,
        &base,
    )
    .await;
    eprintln!("unreachable: {}", describe(&s));
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.verdict, Some(Verdict::Failed));
    assert_eq!(s.reason.as_deref(), Some("ThresholdsFailed"));
    assert_eq!(s.metrics.iterations, 20);
    assert_eq!(s.metrics.requests, 20);
    assert_eq!(s.metrics.failures, 20);
    assert_eq!(
        s.metrics.errors_by_kind,
        BTreeMap::from([("connect".to_string(), 20)])
    );
    assert_eq!(
        s.metrics.checks_pass_rate,
        Some(0.0),
        "no response fails every check"
    );
    assert_eq!(s.thresholds[0].actual, "100%");
    assert_eq!(exit_code(&s), 99);
}

/// A setup step that fails stops the test before any load: phase Error, the step named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_setup_step_is_an_error_naming_the_step() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: bad-setup}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request: {method: POST, url: /auth/login, json: {email: "", password: ""}}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: api
      executor: constant-vus
      vus: 2
      duration: 5s
      steps:
        - request:
            url: /api/items
            headers: {Authorization: "Bearer ${setup.token}"}
"#,
        &target.base_url(),
    )
    .await;
    assert_eq!(s.phase, Phase::Error, "{}", describe(&s));
    assert_eq!(s.verdict, None);
    assert_eq!(s.reason.as_deref(), Some("SetupFailed"));
    let message = s.message.as_deref().unwrap_or_default();
    assert!(message.contains("setup step `login`"), "{message}");
    assert!(message.contains("400"), "{message}");
    assert_eq!(exit_code(&s), 1);
    assert_eq!(s.metrics.requests, 0, "no load");
    assert_eq!(step(&s, "setup", "login").requests, 1);
    assert_eq!(target.stats().requests, 1);
    target.shutdown().await;
}

/// A file the manifest needs is missing: phase Error before any request.
#[tokio::test]
async fn a_missing_feeder_file_is_an_error_naming_the_feeder() {
    let dir = tempdir("missing");
    let roots = FileRoots {
        manifest_dir: dir.clone(),
        configmaps: None,
    };
    let s = run_with(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: missing}
spec:
  target: {baseUrl: "@BASE@"}
  data:
    - {name: users, file: nope.csv}
  scenarios:
    - name: api
      executor: shared-iterations
      iterations: 1
      steps:
        - request: {url: "/api/items/${users.id}"}
"#,
        "http://127.0.0.1:9",
        &roots,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(s.phase, Phase::Error, "{}", describe(&s));
    assert_eq!(s.reason.as_deref(), Some("DataUnavailable"));
    let message = s.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("feeder `users`") && message.contains("nope.csv"),
        "{message}"
    );
    assert_eq!(s.duration_seconds, 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// The merged overall histogram holds one value per request of plain steps: its count is the
/// request count, and any quantile of it is the summary's figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_histogram_matches_its_figures() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: hist}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: a
      executor: shared-iterations
      vus: 2
      iterations: 40
      steps:
        - {name: fast, request: {url: /api/items}}
        - {name: slow, request: {url: "/api/items/1?delay=20ms"}}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let h = decode_histogram(&s.histograms.overall).unwrap();
    assert_eq!(h.len(), s.metrics.requests);
    assert_eq!(h.len(), 80);
    assert_eq!(
        h.value_at_quantile(0.99) as f64 / 1000.0,
        s.metrics.latency_ms.p99
    );
    let slow = s
        .histograms
        .steps
        .iter()
        .find(|st| st.step == "slow")
        .unwrap();
    let slow = decode_histogram(&slow.latency).unwrap();
    assert_eq!(slow.len(), 40);
    assert!(slow.min() >= 20_000, "{}", slow.min());
    target.shutdown().await;
}

/// `${vu}` must identify a VU within the whole test, as k6's `__VU` / `exec.vu.idInTest` do
/// ("unique across the whole test, including all scenarios"), so that keys built from
/// `${vu}-${iteration}` never collide. Two scenarios of 2 VUs × 1 iteration each send
/// `Idempotency-Key: k-${vu}-${iteration}`: 4 distinct keys are expected, 4 jobs, 0
/// duplicates.
///
/// Regression test of a fixed engine bug: every scenario numbered its VUs from 0, so scenario
/// `b` reused scenario `a`'s keys and the server saw 2 jobs and 2 duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vu_numbers_are_unique_across_scenarios() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: vu-ids}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: a
      executor: per-vu-iterations
      vus: 2
      iterations: 1
      steps:
        - name: submit
          request: {method: POST, url: /api/process, headers: {Idempotency-Key: "k-${vu}-${iteration}"}}
    - name: b
      executor: per-vu-iterations
      vus: 2
      iterations: 1
      startTime: 500ms
      steps:
        - name: submit
          request: {method: POST, url: /api/process, headers: {Idempotency-Key: "k-${vu}-${iteration}"}}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let stats = target.stats();
    assert_eq!(
        (stats.jobs_created, stats.duplicates),
        (4, 0),
        "4 VUs must render 4 distinct ${{vu}} values: {stats:?}"
    );
    target.shutdown().await;
}

/// Two runners of one test, in-process, against one target (what `volley agent` pods do):
/// each takes its exact share (§3 "Load split") and the merged figures are the totals.
/// Shares: per-vu-iterations vus 3 → 2 + 1 VUs of 2 iterations each; constant-arrival-rate
/// 15/s → 8/s + 7/s for 2 s; shared-iterations 7 → 4 + 3. `${vu}` interleaves across runners
/// (runner 0: 0, 2; runner 1: 1), so the 6 keys of scenario `keys` are distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_split_the_load_exactly() {
    let target = demo(DemoConfig::default()).await;
    let lt = manifest(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: split}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request: {method: POST, url: /auth/login, json: {email: a@example.com, password: pw}}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: keys
      executor: per-vu-iterations
      vus: 3
      iterations: 2
      steps:
        - name: submit
          request:
            method: POST
            url: /api/process
            headers: {Authorization: "Bearer ${setup.token}", Idempotency-Key: "k-${vu}-${iteration}"}
          check: {status: [202]}
    - name: rate
      executor: constant-arrival-rate
      rate: 15
      duration: 2s
      steps:
        - {name: items, request: {url: /api/items}}
    - name: shared
      executor: shared-iterations
      vus: 2
      iterations: 7
      steps:
        - {name: items, request: {url: /api/items}}
  runners: {parallelism: 2}
"#,
        &target.base_url(),
    );
    let prepare = |index| {
        std::sync::Arc::new(
            Engine::prepare(
                &lt.spec,
                RunnerPlace { index, count: 2 },
                &FileRoots::default(),
            )
            .unwrap(),
        )
    };
    let (r0, r1) = (prepare(0), prepare(1));
    // Runner 0 runs setup; its values reach both (the aggregator hands them out).
    let values = r0.run_setup().await.unwrap();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now() + Duration::from_millis(50);
    let spawn = |engine: std::sync::Arc<Engine>| {
        let (values, stop_rx) = (values.clone(), stop_rx.clone());
        tokio::spawn(async move { engine.run(values, start, stop_rx).await })
    };
    let (t0, t1) = (spawn(r0.clone()), spawn(r1.clone()));
    let s0 = bounded(Duration::from_secs(20), t0).await.unwrap();
    let s1 = bounded(Duration::from_secs(20), t1).await.unwrap();
    let started: Vec<(u64, u64)> = s0
        .iter()
        .zip(&s1)
        .map(|(a, b)| (a.started, b.started))
        .collect();
    eprintln!("two runners, iterations per scenario (runner 0, runner 1): {started:?}");
    assert_eq!(started[0], (4, 2), "keys: 2 + 1 VUs x 2 iterations");
    assert_eq!(started[1].0 + started[1].1, 30, "rate: 8/s + 7/s for 2 s");
    assert!(
        (started[1].0 as i64 - started[1].1 as i64).abs() == 2,
        "{started:?}"
    );
    assert_eq!(started[2].0 + started[2].1, 7);
    assert!(started[2].0.abs_diff(started[2].1) == 1, "{started:?}");

    let mut merged = r0.snapshot();
    merged.merge(&r1.snapshot()).unwrap();
    let overall = merged.overall();
    assert_eq!(overall.counters.iterations, 6 + 30 + 7);
    assert_eq!(overall.counters.requests, 6 + 30 + 7);
    assert_eq!(overall.counters.failures, 0);
    let stats = target.stats();
    assert_eq!(stats.logins, 1);
    assert_eq!((stats.jobs_created, stats.duplicates), (6, 0), "{stats:?}");
    assert_eq!(stats.requests, 1 + 6 + 30 + 7);
    target.shutdown().await;
}

/// A `unique` feeder feeds the iterations that use it. Here only scenario `users` refers to
/// `${users.email}` (3 rows, 3 iterations); scenario `other` never does and must run its 10
/// iterations regardless.
///
/// Regression test of a fixed engine bug: an iteration took a row from every feeder and ended
/// `Exhausted` when any feeder was out of rows, so `other` consumed `users`' rows and both
/// scenarios stopped once the 3 rows were gone: 3 iterations in all instead of 13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeder_only_gates_the_scenarios_that_use_it() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("feeder-scope");
    std::fs::write(
        dir.join("users.csv"),
        "email,password\na@example.com,1\nb@example.com,2\nc@example.com,3\n",
    )
    .unwrap();
    let roots = FileRoots {
        manifest_dir: dir.clone(),
        configmaps: None,
    };
    let s = run_with(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: feeder-scope}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  data:
    - {name: users, file: users.csv, order: unique}
  scenarios:
    - name: users
      executor: shared-iterations
      iterations: 3
      steps:
        - name: login
          request:
            method: POST
            url: /auth/login
            json: {email: "${users.email}", password: "${users.password}"}
    - name: other
      executor: shared-iterations
      iterations: 10
      steps:
        - {name: items, request: {url: /api/items}}
"#,
        &target.base_url(),
        &roots,
        Duration::from_secs(30),
    )
    .await;
    let sc = |name: &str| {
        s.scenarios
            .iter()
            .find(|x| x.scenario == name)
            .unwrap()
            .iterations
    };
    assert_eq!((sc("users"), sc("other")), (3, 10), "{}", describe(&s));
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// `spec.timeout` is the whole run, start barrier and setup included (`docs/reference.md`
/// §4.5), so a setup step that hangs must not outlive it: with a 2 s timeout and a 6 s setup
/// request the run must end after ~2 s as Failed/Timeout (the bound leaves a busy machine 3 s
/// of slack and is still below the 6 s a run that waited for setup would take).
///
/// Regression test of a fixed bug: `volley run` awaited setup with no bound and measured the
/// timeout from the start of the load, so the run outlived its timeout and Succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_timeout_bounds_setup_too() {
    let target = demo(DemoConfig::default()).await;
    let began = Instant::now();
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: slow-setup}
spec:
  target: {baseUrl: "@BASE@", timeout: 10s}
  timeout: 2s
  setup:
    - {name: slow-setup, request: {url: "/api/items?delay=6s"}}
  scenarios:
    - name: a
      executor: constant-arrival-rate
      rate: 10
      duration: 1500ms
      steps:
        - {name: x, request: {url: /api/items}}
"#,
        &target.base_url(),
    )
    .await;
    let wall = began.elapsed();
    eprintln!(
        "timeout 2s with a 6s setup: ended after {wall:?}, {:?}",
        s.reason
    );
    assert_eq!(s.reason.as_deref(), Some("Timeout"), "{}", describe(&s));
    assert_eq!(s.phase, Phase::Failed);
    assert!(wall < Duration::from_secs(5), "{wall:?}");
    target.shutdown().await;
}

/// The per-second series has one point per second: `second` strictly increases. A run that
/// ends 0.3 s after its last tick gets a final point for that tail.
///
/// Regression test of a fixed bug: every point was labelled with `elapsed.round()`, so the
/// final point of a run ending at 1.3 s was labelled 1 like the tick at 1.0 s: two points for
/// second 1, the second with a 300 ms interval (after an abortOnFail at ~1.005 s the tail was a
/// few ms long and its rps hundreds of times the real rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_seconds_strictly_increase() {
    let target = demo(DemoConfig::default()).await;
    let s = run(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: tail}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: one
      executor: shared-iterations
      iterations: 1
      steps:
        - {name: slow, request: {url: "/api/items?delay=1300ms"}}
"#,
        &target.base_url(),
    )
    .await;
    assert_passed(&s);
    let seconds: Vec<u64> = s.series.iter().map(|p| p.second).collect();
    assert!(
        seconds.windows(2).all(|w| w[0] < w[1]),
        "seconds {seconds:?} in {:?}",
        s.series
    );
    target.shutdown().await;
}
