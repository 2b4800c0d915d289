//! `volley run` as a user runs it: the real binary, a manifest file, the demo target on
//! 127.0.0.1 in this process. Exit codes 0 / 99 / 1, the `--out` JSON, and what the output
//! says when something is wrong. Every run is bounded (the child is killed on timeout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use volley_core::protocol::histogram::decode_histogram;
use volley_demo_target::{DemoConfig, DemoTarget};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");

async fn demo(config: DemoConfig) -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("start demo target")
}

/// Writes `yaml` (with `@BASE@` replaced by `base`) to `dir/name`.
fn write_manifest(dir: &Path, name: &str, yaml: &str, base: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml.replace("@BASE@", base)).unwrap();
    path
}

/// A `volley` command with a clean environment for the variables these tests use.
fn volley(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(args)
        .env_remove("VOLLEY_E2E_EMAIL")
        .env_remove("VOLLEY_E2E_PASSWORD")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    cmd
}

/// Runs the command to the end, at most `limit`.
async fn output(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("volley took longer than {limit:?}"))
        .expect("run volley")
}

/// `volley run FILE -q --out DIR/summary.json EXTRA...` to the end (at most `limit`): its
/// output, and where the summary went.
async fn run_to_summary(file: &Path, extra: &[&str], limit: Duration) -> (Output, PathBuf) {
    let out_file = file.with_file_name("summary.json");
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "-q",
        "--out",
        out_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (output(volley(&args), limit).await, out_file)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A passing run: exit 0, and `--out` holds the whole summary. The scenario submits a job and
/// polls it until done, which pins down what the overall histogram holds: one value per plain
/// request, and one end-to-end value per execution of a polling step (its polls are
/// requests, but not separate latency samples). So its count is `2 × iterations`, fewer than
/// `metrics.requests` (submits + every poll).
///
/// The manifest names an unreachable base URL; `--base-url` points the run at the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_run_exits_0_and_writes_the_summary_json() {
    let target = demo(DemoConfig {
        job_delay: Duration::from_millis(100),
        ..DemoConfig::default()
    })
    .await;
    let dir = tempdir("pass");
    let file = write_manifest(
        &dir,
        "jobs.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: jobs}
spec:
  target: {baseUrl: "http://127.0.0.1:9", timeout: 5s}
  scenarios:
    - name: jobs
      executor: constant-arrival-rate
      rate: 10
      duration: 3s
      maxVUs: 20
      steps:
        - name: submit
          request:
            method: POST
            url: /api/process
            headers: {Idempotency-Key: "${uuid}"}
          check: {status: [202]}
          extract: {jobId: {jsonPath: "$.id"}}
        - name: poll
          request: {url: "/api/jobs/${jobId}"}
          until: {jsonPath: "$.status", equals: done, every: 30ms, timeout: 5s}
  thresholds:
    - "p(95) < 5s"
    - "error_rate < 1%"
    - {expr: "p(50) >= 100ms", scenario: jobs, step: poll}
"#,
        "",
    );
    let base = target.base_url();
    let (out, out_file) =
        run_to_summary(&file, &["--base-url", &base], Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: PASSED"), "{stdout}");
    assert!(stdout.contains("✓ error_rate < 1%"), "{stdout}");

    let json = read_json(&out_file);
    assert_eq!(json["name"], "jobs");
    assert_eq!(json["phase"], "Succeeded");
    assert_eq!(json["verdict"], "Passed");
    assert_eq!(json["runners"], 1);
    let m = &json["metrics"];
    let requests = u(&m["requests"]);
    let iterations = u(&m["iterations"]);
    let stats = target.stats();
    assert_eq!(iterations, 30);
    assert_eq!(requests, stats.requests, "server and summary agree");
    assert_eq!(requests, iterations + stats.polls);
    assert_eq!(u(&m["failures"]), 0);
    assert!(m["latencyMs"]["p95"].as_f64().is_some(), "{m}");
    assert!(json["latencySentMs"]["p99"].as_f64().is_some(), "{json}");

    // Thresholds: each with its actual value.
    let thresholds = json["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 3);
    for t in thresholds {
        assert_eq!(t["passed"], true, "{t}");
        assert!(t["actual"].as_str().is_some_and(|a| !a.is_empty()), "{t}");
    }
    assert_eq!(thresholds[1]["actual"], "0%");
    assert_eq!(thresholds[2]["scope"], "scenario jobs step poll");

    // Series: one point per second of a ~3.1 s run.
    let series = json["series"].as_array().unwrap();
    let duration = json["durationSeconds"].as_f64().unwrap();
    assert!(
        series.len() as f64 >= duration.floor() - 1.0 && series.len() >= 2,
        "{} points for {duration}s: {series:?}",
        series.len()
    );
    let in_series: u64 = series.iter().map(|p| u(&p["requests"])).sum();
    assert_eq!(in_series, requests, "the series adds up to the total");

    // Histograms: the overall one decodes to one value per plain request plus one per
    // polling-step execution.
    let overall = decode_histogram(json["histograms"]["overall"].as_str().unwrap()).unwrap();
    assert_eq!(overall.len(), 2 * iterations);
    assert!(overall.len() < requests);
    let steps = json["histograms"]["steps"].as_array().unwrap();
    let step_count = |name: &str| {
        let st = steps.iter().find(|s| s["step"] == name).unwrap();
        decode_histogram(st["latency"].as_str().unwrap())
            .unwrap()
            .len()
    };
    assert_eq!(step_count("submit"), iterations);
    assert_eq!(step_count("poll"), iterations);
    // And the status rows agree with them.
    let poll_row = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "poll")
        .unwrap();
    assert_eq!(u(&poll_row["requests"]), stats.polls);
    assert!(poll_row["p50Ms"].as_f64().unwrap() >= 100.0, "{poll_row}");

    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// A failed threshold: exit 99, the failure shown, and `--out` says Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_threshold_exits_99() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("fail");
    let file = write_manifest(
        &dir,
        "slow.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: slow}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: slow
      executor: shared-iterations
      vus: 2
      iterations: 10
      steps:
        - {name: item, request: {url: "/api/items/1?delay=20ms"}}
  thresholds: ["p(95) < 5ms", "error_rate < 1%"]
"#,
        &target.base_url(),
    );
    let (out, out_file) = run_to_summary(&file, &[], Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(99), "{stdout}\n{stderr}");
    assert!(stdout.contains("✗ p(95) < 5ms"), "{stdout}");
    assert!(stdout.contains("✓ error_rate < 1%"), "{stdout}");
    assert!(stdout.contains("verdict: FAILED"), "{stdout}");
    let json = read_json(&out_file);
    assert_eq!(json["phase"], "Failed");
    assert_eq!(json["verdict"], "Failed");
    assert_eq!(json["reason"], "ThresholdsFailed");
    assert_eq!(json["thresholds"][0]["passed"], false);
    assert_eq!(u(&json["metrics"]["requests"]), 10);
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// A rate probe (`docs/reference.md` §4.8) against a target that takes 150 requests/s and
/// refuses the excess: two runner processes step 50/s → 100/s → 300/s. Each plateau is judged
/// on its own window, so the summary names 100/s as the sustainable rate and 300/s as where
/// it broke, although the whole run's error rate fails the threshold (exit 99). Every window
/// is checked against the target's own count of refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_probe_reports_the_sustainable_rate() {
    let target = demo(DemoConfig {
        capacity: Some(150.0),
        ..DemoConfig::default()
    })
    .await;
    let dir = tempdir("probe");
    let file = write_manifest(
        &dir,
        "probe.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: probe}
spec:
  target: {baseUrl: "@BASE@", timeout: 2s}
  scenarios:
    - name: probe
      executor: ramping-arrival-rate
      startRate: 50
      maxVUs: 100
      stages:
        - {duration: 3s, target: 50}
        - {duration: 1s, target: 100}
        - {duration: 3s, target: 100}
        - {duration: 0s, target: 300}
        - {duration: 3s, target: 300}
      steps:
        - {name: item, request: {url: /api/items/1}}
  thresholds: ["error_rate < 1%"]
"#,
        &target.base_url(),
    );
    let (out, out_file) = run_to_summary(&file, &["--runners", "2"], Duration::from_secs(60)).await;
    let (stdout, stderr) = text(&out);
    eprintln!("{stdout}");
    assert_eq!(out.status.code(), Some(99), "{stdout}\n{stderr}");
    let json = read_json(&out_file);
    let plateaus = json["plateaus"].as_array().unwrap();
    let rates: Vec<f64> = plateaus
        .iter()
        .map(|p| p["rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [50.0, 100.0, 300.0], "{plateaus:?}");
    let held: Vec<&Value> = plateaus.iter().map(|p| &p["held"]).collect();
    assert_eq!(held, [true, true, false], "{plateaus:?}");
    for p in plateaus {
        let (from, to) = (
            p["fromSeconds"].as_f64().unwrap(),
            p["toSeconds"].as_f64().unwrap(),
        );
        let rate = p["rate"].as_f64().unwrap();
        // The window lies inside its plateau and spans at least one report interval.
        let begin = match rate as u64 {
            50 => 0.0,
            100 => 4.0,
            _ => 7.0,
        };
        assert!(
            from >= begin && to <= begin + 3.2 && to - from >= 0.9,
            "{p}"
        );
        let requests = u(&p["requests"]) as f64;
        let expected = rate * (to - from);
        assert!(
            (requests - expected).abs() <= 0.1 * expected + 5.0,
            "{requests} requests in {:.2}s at {rate}/s: {p}",
            to - from
        );
    }
    // Above capacity about half is refused: 300/s offered, 150/s taken.
    let broken = &plateaus[2];
    let error_rate = broken["errorRate"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&error_rate), "{broken}");
    assert_eq!(
        broken["failed"][0].as_str().unwrap().split(' ').next(),
        Some("error_rate")
    );
    let sustainable = &json["sustainableRates"][0];
    assert_eq!(sustainable["scenario"], "probe");
    assert_eq!(sustainable["rate"], 100.0);
    assert_eq!(sustainable["failedAt"], 300.0);
    assert_eq!(json["scenarios"][0]["sustainableRate"], 100.0);
    // The refusals the windows saw are the target's own, no more.
    let window_failures: u64 = plateaus.iter().map(|p| u(&p["failures"])).sum();
    assert!(window_failures > 0);
    assert!(window_failures <= target.stats().failures_injected);
    assert_eq!(
        u(&json["metrics"]["failures"]),
        target.stats().failures_injected
    );
    assert!(
        stdout.contains("sustainable rate: 100.0/s (the next plateau, 300.0/s, did not hold)"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// Nothing listens on the target's port: the run completes, the errors are `connect`, and
/// the error-rate threshold fails: exit 99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_exits_99_with_connect_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempdir("unreachable");
    let file = write_manifest(
        &dir,
        "down.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: down}
spec:
  target: {baseUrl: "@BASE@", timeout: 2s}
  scenarios:
    - name: down
      executor: constant-arrival-rate
      rate: 10
      duration: 1s
      steps:
        - {name: items, request: {url: /api/items}}
  thresholds: ["error_rate < 1%"]
"#,
        &format!("http://127.0.0.1:{port}"),
    );
    let out = output(
        volley(&["run", file.to_str().unwrap(), "--quiet"]),
        Duration::from_secs(30),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(99), "{stdout}\n{stderr}");
    assert!(stdout.contains("(connect 10)"), "{stdout}");
    assert!(stdout.contains("✗ error_rate < 1%"), "{stdout}");
    assert!(stdout.contains("verdict: FAILED"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A manifest that does not validate: exit 1 before any load, every problem named with its
/// file and field path.
#[tokio::test]
async fn an_invalid_manifest_exits_1_naming_the_field() {
    let dir = tempdir("invalid");
    let file = write_manifest(
        &dir,
        "bad.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: bad}
spec:
  target: {baseUrl: "http://127.0.0.1:9"}
  scenarios:
    - name: main
      executor: constant-arrival-rate
      duration: 10s
      steps:
        - request: {url: /api/items}
"#,
        "",
    );
    let out = output(
        volley(&["run", file.to_str().unwrap(), "--quiet"]),
        Duration::from_secs(10),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("bad.yaml: spec.scenarios[0].rate"),
        "{stderr}"
    );
    assert!(!stdout.contains("verdict"), "no run: {stdout}");

    // Not YAML for a LoadTest at all.
    let file = write_manifest(
        &dir,
        "typo.yaml",
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: t}\nspek: {}\n",
        "",
    );
    let out = output(
        volley(&["run", file.to_str().unwrap()]),
        Duration::from_secs(10),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("typo.yaml"), "{stderr}");

    // A file that does not exist.
    let missing = dir.join("missing.yaml");
    let out = output(
        volley(&["run", missing.to_str().unwrap()]),
        Duration::from_secs(10),
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("missing.yaml: cannot read"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A setup step that fails: exit 1, the step named, no load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_setup_exits_1_naming_the_step() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("setup");
    let file = write_manifest(
        &dir,
        "setup.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: setup}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request: {method: POST, url: /auth/login, json: {email: "", password: ""}}
      check: {status: [200]}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: api
      executor: constant-vus
      vus: 2
      duration: 10s
      steps:
        - request: {url: /api/items, headers: {Authorization: "Bearer ${setup.token}"}}
"#,
        &target.base_url(),
    );
    let (out, out_file) = run_to_summary(&file, &[], Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("setup step `login` failed"), "{stdout}");
    assert!(stdout.contains("verdict: ERROR"), "{stdout}");
    let json = read_json(&out_file);
    assert_eq!(json["phase"], "Error");
    assert_eq!(json["reason"], "SetupFailed");
    assert!(json.get("verdict").is_none(), "{json}");
    assert_eq!(target.stats().requests, 1, "only the setup request");
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// `${env:NAME}` comes from volley's environment: set, setup logs in with it (once) and the
/// run passes without printing the secret; unset, the run fails at once (exit 1) naming every
/// missing variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_come_from_the_environment() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("env");
    let file = write_manifest(
        &dir,
        "env.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: env}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  setup:
    - name: login
      request:
        method: POST
        url: /auth/login
        json: {email: "${env:VOLLEY_E2E_EMAIL}", password: "${env:VOLLEY_E2E_PASSWORD}"}
      check: {status: [200]}
      extract: {token: {jsonPath: "$.token"}}
  scenarios:
    - name: api
      executor: per-vu-iterations
      vus: 2
      iterations: 3
      steps:
        - name: list
          request: {url: /api/items, headers: {Authorization: "Bearer ${setup.token}"}}
          check: {status: [200]}
  thresholds: ["error_rate == 0%"]
"#,
        &target.base_url(),
    );
    let path = file.to_str().unwrap();

    let out = output(volley(&["run", path, "--quiet"]), Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("VOLLEY_E2E_EMAIL"), "{all}");
    assert!(all.contains("VOLLEY_E2E_PASSWORD"), "{all}");
    assert_eq!(target.stats().requests, 0, "nothing sent");

    let secret = "s3cr3t-Volley-E2E";
    let mut cmd = volley(&["run", path, "--quiet"]);
    cmd.env("VOLLEY_E2E_EMAIL", "loadtest@example.com")
        .env("VOLLEY_E2E_PASSWORD", secret);
    let out = output(cmd, Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let stats = target.stats();
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.requests, 1 + 6);
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// SIGINT (Ctrl-C) stops a long run: exit 1 (neither passed nor judged), phase Aborted, and
/// the results so far are kept in the summary and `--out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_aborts_and_keeps_the_results() {
    let (stdout, json) = interrupt_a_long_run("INT").await;
    assert!(
        json["message"].as_str().unwrap().contains("Ctrl-C"),
        "{json}"
    );
    assert!(stdout.contains("Ctrl-C"), "{stdout}");
}

/// SIGTERM (what CI timeouts and `docker stop` send) ends a run like Ctrl-C: the runners
/// stop, the summary is printed and written, exit 1 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_aborts_and_keeps_the_results_like_ctrl_c() {
    let (stdout, json) = interrupt_a_long_run("TERM").await;
    assert!(
        json["message"].as_str().unwrap().contains("SIGTERM"),
        "{json}"
    );
    assert!(stdout.contains("SIGTERM"), "{stdout}");
}

/// Starts a 60-second run, sends it `signal` once load flows, and checks what every
/// interrupted run must give: exit 1, verdict ABORTED, `--out` written with the results so
/// far. Returns stdout and the `--out` JSON.
async fn interrupt_a_long_run(signal: &str) -> (String, Value) {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir(&format!("sig{signal}"));
    let file = write_manifest(
        &dir,
        "long.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: long}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: long
      executor: constant-vus
      vus: 2
      duration: 60s
      steps:
        - {name: items, request: {url: "/api/items?delay=20ms"}}
"#,
        &target.base_url(),
    );
    let out_file = dir.join("summary.json");
    let mut cmd = volley(&[
        "run",
        file.to_str().unwrap(),
        "--quiet",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    // Wait until load is flowing (the handler is installed when the run starts).
    let began = std::time::Instant::now();
    while target.stats().requests < 10 {
        assert!(began.elapsed() < Duration::from_secs(20), "no load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kill = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("volley did not stop after SIG{signal}"))
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: ABORTED"), "{stdout}");
    let json = read_json(&out_file);
    assert_eq!(json["phase"], "Aborted");
    assert_eq!(json["reason"], "Interrupted");
    assert!(u(&json["metrics"]["requests"]) >= 10, "{json}");
    assert!(json["durationSeconds"].as_f64().unwrap() < 20.0);
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
    (stdout, json)
}

/// `cd examples && volley run quickstart.yaml`: a bare file name runs like `./quickstart.yaml`
/// (the runners once got an empty `--manifest-dir` and died on it), and a `file:` path in it
/// is read relative to the current directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_file_name_runs_from_the_current_directory() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("bare");
    std::fs::write(dir.join("ids.csv"), "id\n1\n2\n").unwrap();
    write_manifest(
        &dir,
        "bare.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: bare}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  data:
    - {name: ids, file: ids.csv}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - {name: item, request: {url: "/api/items/${ids.id}"}}
"#,
        &target.base_url(),
    );
    let mut cmd = volley(&["run", "bare.yaml", "-q", "--runners", "2"]);
    cmd.current_dir(&dir);
    let out = output(cmd, Duration::from_secs(30)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("verdict: PASSED"), "{stdout}");
    assert_eq!(target.stats().requests, 4, "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// `--runners` is validated like `runners.parallelism`: 1 VU cannot be split across 2 runners
/// (runner 1 would get none, and its half of the shared iterations would silently not run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_from_the_command_line_are_validated_like_the_manifests() {
    let target = demo(DemoConfig::default()).await;
    let dir = tempdir("runners");
    let file = write_manifest(
        &dir,
        "one-vu.yaml",
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: one-vu}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 1
      iterations: 4
      steps:
        - {name: item, request: {url: /api/items}}
"#,
        &target.base_url(),
    );
    let out = output(
        volley(&["run", file.to_str().unwrap(), "-q", "--runners", "2"]),
        Duration::from_secs(30),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("spec.scenarios[0].vus: vus 1 cannot be split across 2 runners"),
        "{stderr}"
    );
    assert_eq!(target.stats().requests, 0, "nothing is sent");
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// Logs written to a pipe (CI, a file) carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let port = support::closed_port();
    let mut cmd = volley(&[
        "agent",
        "--aggregator",
        &format!("http://127.0.0.1:{port}"),
        "--run",
        "r",
        "--index",
        "0",
    ]);
    // The agent retries an unreachable aggregator, logging at debug level as it goes.
    cmd.env("RUST_LOG", "debug")
        .env("VOLLEY_TOKEN", "t")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let (_, stderr) = text(&out);
    assert!(stderr.contains("DEBUG"), "no log lines: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe: {stderr:?}"
    );
}
