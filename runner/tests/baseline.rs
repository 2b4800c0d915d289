//! Baseline thresholds and `volley compare` as a user runs them: real `volley run` processes
//! against the demo target on 127.0.0.1, the first run's `--out` summary as the second run's
//! `--baseline`, and `volley compare` on the real summaries. Every run is bounded in requests
//! (a fixed iteration count) and time (the child is killed on timeout). Nothing depends on
//! speed: the failing threshold and the regression are made so by a factor of thousands or a
//! one-second delay, never by a close margin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use volley_demo_target::{DemoConfig, DemoTarget};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const LIMIT: Duration = Duration::from_secs(60);

/// Ten requests to `/api/items/1` with the added `delay`, by two VUs, judged by `thresholds`.
fn manifest(dir: &Path, name: &str, base: &str, delay: &str, thresholds: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: {name}}}
spec:
  target: {{baseUrl: "{base}", timeout: 10s}}
  scenarios:
    - name: items
      executor: shared-iterations
      vus: 2
      iterations: 10
      steps:
        - {{name: item, request: {{url: "/api/items/1?delay={delay}"}}}}
  thresholds: {thresholds}
"#
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `volley ARGS...` to the end, at most [`LIMIT`].
async fn volley(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(args).env_remove("RUST_LOG").kill_on_drop(true);
    tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("volley {args:?} took longer than {LIMIT:?}"))
        .expect("run volley")
}

/// `volley run FILE -q --out FILE.json EXTRA...`: its output and the summary's path.
async fn run(file: &Path, extra: &[&str]) -> (Output, PathBuf) {
    let out = file.with_extension("json");
    let mut args = vec![
        "run",
        file.to_str().unwrap(),
        "-q",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (volley(&args).await, out)
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const BASELINE_THRESHOLDS: &str = r#"
    - "p(95) < baseline * 1000"
    - {expr: "error_rate <= baseline + 1%", scenario: items}
    - {expr: "rps > baseline * 0.001", scenario: items, step: item}"#;

/// Run 1 has no baseline: its baseline thresholds are skipped with the reason and it passes
/// on nothing else. Run 2 compares with run 1's summary and passes; run 3, same load, holds a
/// threshold no real run can meet (a thousandth of the baseline's p95) and exits 99 naming
/// the baseline figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_is_judged_on_the_first_runs_summary() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let base = target.base_url();
    let dir = tempdir("baseline");

    let first = manifest(&dir, "first", &base, "5ms", BASELINE_THRESHOLDS);
    let (out, first_json) = run(&first, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("- p(95) < baseline * 1000"),
        "{}",
        text(&out)
    );
    let json = read_json(&first_json);
    assert_eq!(json["verdict"], "Passed", "{json}");
    for t in json["thresholds"].as_array().unwrap() {
        assert_eq!(t["passed"], false, "{t}");
        assert!(
            t["skipped"].as_str().unwrap().contains("no baseline run"),
            "{t}"
        );
    }

    let second = manifest(&dir, "second", &base, "5ms", BASELINE_THRESHOLDS);
    let baseline = first_json.to_str().unwrap();
    let (out, second_json) = run(&second, &["--baseline", baseline]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json = read_json(&second_json);
    assert_eq!(json["verdict"], "Passed", "{json}");
    let thresholds = json["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 3);
    for t in thresholds {
        assert_eq!(t["passed"], true, "{t}");
        assert!(t.get("skipped").is_none(), "{t}");
    }

    let third = manifest(
        &dir,
        "third",
        &base,
        "5ms",
        r#"["p(95) < baseline * 0.0001", "error_rate <= baseline + 1%"]"#,
    );
    let (out, third_json) = run(&third, &["--baseline", baseline]).await;
    assert_eq!(out.status.code(), Some(99), "{}", text(&out));
    let json = read_json(&third_json);
    assert_eq!(json["verdict"], "Failed");
    assert_eq!(json["reason"], "ThresholdsFailed");
    assert_eq!(json["thresholds"][0]["passed"], false);
    assert_eq!(json["thresholds"][1]["passed"], true);
    let message = json["message"].as_str().unwrap();
    assert!(message.starts_with("p(95) "), "{message}");
    assert!(message.contains("(baseline "), "{message}");
    assert!(message.ends_with(" * 0.0001)"), "{message}");

    // A baseline that is not a summary stops the run before anything is sent.
    let before = target.stats().requests;
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        r#"{"durationSeconds": 1, "metrics": {"rps": "fast"}}"#,
    )
    .unwrap();
    let (out, _) = run(&second, &["--baseline", broken.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.json"), "{stderr}");
    assert!(stderr.contains("metrics.rps"), "{stderr}");
    assert_eq!(target.stats().requests, before, "nothing was sent");

    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// `volley compare` on two real summaries: the same load compared with itself is within
/// budget (exit 0); a run one second slower per request is over a 10% p95 budget in every
/// scope (exit 99); a file that is not a summary exits 1 naming the file and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_prints_both_runs_and_exits_99_over_budget() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let base = target.base_url();
    let dir = tempdir("compare");
    let fast = manifest(&dir, "fast", &base, "0ms", "[]");
    let (out, fast_json) = run(&fast, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let slow = manifest(&dir, "slow", &base, "1s", "[]");
    let (out, slow_json) = run(&slow, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (fast_json, slow_json) = (fast_json.to_str().unwrap(), slow_json.to_str().unwrap());

    let out = volley(&[
        "compare",
        fast_json,
        slow_json,
        "--max-p95-regression",
        "10%",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "{}", text(&out));
    for scope in [
        "\nall\n",
        "\nscenario items\n",
        "\nscenario items step item\n",
    ] {
        assert!(stdout.contains(scope), "{scope:?} in {stdout}");
    }
    assert_eq!(
        stdout.matches("REGRESSED (more than +10%)").count(),
        3,
        "p95 in each scope: {stdout}"
    );
    assert!(stdout.ends_with("3 figure(s) over budget\n"), "{stdout}");

    // Without a budget nothing regresses; a run is within any budget of itself.
    let out = volley(&["compare", fast_json, slow_json]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = volley(&[
        "compare",
        slow_json,
        slow_json,
        "--max-p95-regression",
        "0%",
        "--max-error-rate-increase",
        "0%",
        "--min-rps-ratio",
        "1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("no budget exceeded\n"),
        "{}",
        text(&out)
    );

    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        r#"{"durationSeconds": 1, "metrics": {"requests": -1}}"#,
    )
    .unwrap();
    let out = volley(&["compare", fast_json, broken.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.json: not a volley run summary: field `metrics.requests`"),
        "{stderr}"
    );
    let out = volley(&[
        "compare",
        fast_json,
        dir.join("missing.json").to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json: cannot read"));

    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}

/// The budget flags of `volley compare` on `volley run --baseline` and `volley report
/// --baseline`: a run whose thresholds all pass but whose p95 is a second over the baseline's
/// prints the comparison with each regression marked and exits 99; its Markdown and HTML mark
/// the regressed figures; `volley report` marks them too (and exits 0: it only renders); a
/// budget without a baseline is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_on_run_and_report_marks_the_regression_and_gates_the_run() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let base = target.base_url();
    let dir = tempdir("budget");
    let fast = manifest(&dir, "fast", &base, "0ms", "[]");
    let (out, fast_json) = run(&fast, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let fast_json = fast_json.to_str().unwrap();

    let slow = manifest(&dir, "slow", &base, "1s", "[]");
    let markdown = dir.join("slow.md");
    let html = dir.join("slow.html");
    let (out, slow_json) = run(
        &slow,
        &[
            "--baseline",
            fast_json,
            "--max-p95-regression",
            "10%",
            "--markdown",
            markdown.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(99), "over budget: {}", text(&out));
    assert!(
        stdout.contains("verdict: PASSED"),
        "thresholds passed: {stdout}"
    );
    assert_eq!(
        stdout.matches("REGRESSED (more than +10%)").count(),
        3,
        "p95 in each scope: {stdout}"
    );
    assert!(stdout.ends_with("3 figure(s) over budget\n"), "{stdout}");
    let md = std::fs::read_to_string(&markdown).unwrap();
    assert_eq!(md.matches("REGRESSED").count(), 3, "{md}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"comparison\""), "comparison section");
    assert!(page.contains("REGRESSED"), "marked in the HTML");

    // Within budget (the same load again): the run's own verdict decides, exit 0. The
    // baseline is a copy: this run's `--out` overwrites slow.json.
    let slow_before = dir.join("slow-before.json");
    std::fs::copy(&slow_json, &slow_before).unwrap();
    let (out, _) = run(
        &slow,
        &[
            "--baseline",
            slow_before.to_str().unwrap(),
            "--max-p95-regression",
            "50%",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("no budget exceeded\n"));

    let out = volley(&[
        "report",
        slow_json.to_str().unwrap(),
        "--baseline",
        fast_json,
        "--max-p95-regression",
        "10%",
        "--markdown",
        "-",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("REGRESSED")
            .count(),
        3,
        "{}",
        text(&out)
    );

    let out = volley(&[
        "run",
        fast.to_str().unwrap(),
        "-q",
        "--max-p95-regression",
        "10%",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --baseline SUMMARY"));
    std::fs::remove_dir_all(&dir).ok();
    target.shutdown().await;
}
