//! Custom metrics read from responses, as a user runs them: `volley run --runners 3` (real
//! processes: the aggregator and three `volley agent` children) against the demo target's
//! `/api/infer` on 127.0.0.1, which tallies exactly what it sent. The merged trend, counters
//! and gauge of the summary must equal those tallies (trend statistics to the histogram's
//! precision), missing and not-a-number values must be counted as such, and thresholds on them
//! must pass or fail the run with its exit code. Bounded in requests (fixed iteration counts)
//! and time (the child is killed after a minute); nothing depends on speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use volley_demo_target::{DemoConfig, DemoTarget, InferStats};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const LIMIT: Duration = Duration::from_secs(90);
const RUNNERS: &str = "3";

/// `iterations` calls of `/api/infer` (every 5th without `latency_ms`, every 3rd with it as
/// text, every 4th a crisis) by 6 VUs, each reading five custom metrics; then `thresholds`.
fn manifest(base: &str, iterations: u32, thresholds: &str) -> String {
    let workload =
        format!("executor: shared-iterations\n      vus: 6\n      iterations: {iterations}");
    manifest_with(base, &workload, thresholds)
}

/// [`manifest`] with another executor and its fields.
fn manifest_with(base: &str, workload: &str, thresholds: &str) -> String {
    format!(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: custom-metrics}}
spec:
  target: {{baseUrl: "{base}", timeout: 10s}}
  scenarios:
    - name: infer
      {workload}
      steps:
        - name: infer
          request: {{url: "/api/infer?omit=5&garble=3&crisis=4"}}
          metrics:
            - {{name: inference_latency, trend: {{jsonPath: "$.latency_ms", unit: ms}}}}
            - {{name: tokens, trend: {{jsonPath: "$.tokens", unit: tokens}}}}
            - {{name: crisis_detections, counter: {{when: {{jsonPath: "$.crisis", equals: true}}}}}}
            - {{name: tokens_total, counter: {{jsonPath: "$.tokens"}}}}
            - {{name: queue_depth, gauge: {{header: X-Queue-Depth}}}}
  thresholds: {thresholds}
"#
    )
}

/// `volley run FILE --runners 3 -q --out summary.json --html report.html --markdown
/// report.md`, at most [`LIMIT`]: its output, the summary and the directory of the files.
async fn run(yaml: &str, tag: &str) -> (Output, Value, PathBuf) {
    let dir = tempdir(tag);
    let file = dir.join("lt.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = dir.join("summary.json");
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.arg("run")
        .arg(&file)
        .args(["-q", "--runners", RUNNERS, "--out"])
        .arg(&out)
        .arg("--html")
        .arg(dir.join("report.html"))
        .arg("--markdown")
        .arg(dir.join("report.md"))
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    let output = tokio::time::timeout(LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("volley run took longer than {LIMIT:?}"))
        .expect("run volley");
    let summary = read_summary(&out, &output);
    (output, summary, dir)
}

fn read_summary(out: &Path, output: &Output) -> Value {
    match std::fs::read(out) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        Err(e) => panic!("no summary ({e}): {}", text(output)),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The summary row of custom metric `name`.
fn row<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["metrics"]["custom"]
        .as_array()
        .unwrap_or_else(|| panic!("no custom metrics in {summary}"))
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no custom metric {name} in {summary}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Within the histogram's 3 significant digits.
fn close(actual: f64, exact: f64) -> bool {
    (actual - exact).abs() <= exact.abs() * 0.001 + 1e-9
}

const PASSING: &str = r#"
    - "trend(inference_latency) p(95) < 1s"
    - "trend(inference_latency) count > 0"
    - "trend(tokens) max < 100"
    - "counter(crisis_detections) > 0"
    - {expr: "gauge(queue_depth) max < 50", scenario: infer}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_record_exactly_what_the_target_sent() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let iterations = 150;
    let (out, summary, dir) =
        run(&manifest(&target.base_url(), iterations, PASSING), "custom").await;
    let sent: InferStats = target.stats().infer;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(summary["verdict"], "Passed", "{summary}");
    assert_eq!(summary["runners"], 3);
    assert_eq!(sent.responses, u64::from(iterations));

    // The time trend: every number sent, nothing else; the rest counted by why.
    let lat = row(&summary, "inference_latency");
    assert_eq!(lat["kind"], "trend");
    assert_eq!(lat["unit"], "ms");
    assert_eq!(lat["count"], sent.latency_values, "{lat}");
    assert_eq!(lat["missing"], sent.latency_omitted, "{lat}");
    assert_eq!(lat["invalid"], sent.latency_garbled, "{lat}");
    assert_eq!(
        sent.latency_values + sent.latency_omitted + sent.latency_garbled,
        sent.responses
    );
    assert!(sent.latency_omitted > 0 && sent.latency_garbled > 0);
    let mean = sent.latency_ms_sum as f64 / sent.latency_values as f64;
    assert!(close(f(&lat["avg"]), mean), "avg {} vs {mean}", lat["avg"]);
    assert!(
        close(f(&lat["min"]), sent.latency_ms_min.unwrap() as f64),
        "{lat}"
    );
    assert!(
        close(f(&lat["max"]), sent.latency_ms_max.unwrap() as f64),
        "{lat}"
    );

    // A plain-number trend and the counters: exact.
    let tokens = row(&summary, "tokens");
    assert!(tokens.get("unit").is_none(), "{tokens}");
    assert_eq!(tokens["count"], sent.responses);
    assert_eq!(
        row(&summary, "tokens_total")["value"].as_f64(),
        Some(sent.tokens_sum as f64)
    );
    let crisis = row(&summary, "crisis_detections");
    assert_eq!(crisis["kind"], "counter");
    assert_eq!(
        crisis["value"].as_f64(),
        Some(sent.crisis as f64),
        "{crisis}"
    );
    assert_eq!(crisis["count"], sent.responses, "every response was judged");
    assert_eq!(
        (crisis["missing"].as_u64(), crisis["invalid"].as_u64()),
        (Some(0), Some(0))
    );

    // The gauge: exact min and max, every reading; the last is the latest read, one of the
    // final responses (6 VUs may have had the last 6 in flight together).
    let depth = row(&summary, "queue_depth");
    assert_eq!(depth["count"], sent.responses);
    assert_eq!(depth["min"].as_f64(), sent.depth_min.map(|v| v as f64));
    assert_eq!(depth["max"].as_f64(), sent.depth_max.map(|v| v as f64));
    let last = f(&depth["value"]);
    let n = sent.responses;
    assert!(
        (n - 5..=n).any(|k| (k % 50) as f64 == last),
        "last {last} is not the depth of one of responses {}..={n}",
        n - 5
    );

    // The thresholds show the same figures.
    let actuals: Vec<&str> = summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["actual"].as_str().unwrap())
        .collect();
    assert_eq!(actuals[1], sent.latency_values.to_string());
    assert_eq!(actuals[3], sent.crisis.to_string());

    // So do the text summary's lines.
    let printed = text(&out);
    let line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("crisis_detections"))
        .unwrap_or_else(|| panic!("no custom metric line in {printed}"));
    assert!(
        line.ends_with(&format!(
            "counter  total {}  of {} values",
            sent.crisis, sent.responses
        )),
        "{line}"
    );
    let line = printed
        .lines()
        .find(|l| l.trim_start().starts_with("inference_latency"))
        .unwrap();
    assert!(
        line.ends_with(&format!(
            "missing {}  invalid {}",
            sent.latency_omitted, sent.latency_garbled
        )),
        "{line}"
    );

    // The reports' custom metrics tables show the summary's rows.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let table = html
        .split("<table id=\"custom-metrics\">")
        .nth(1)
        .expect("an HTML custom metrics table")
        .split("</table>")
        .next()
        .unwrap();
    assert!(
        table.contains(&format!(
            "<td>crisis_detections</td><td>counter</td><td class=\"n\">{}</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">{}</td>",
            sent.responses, sent.crisis
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "<td>inference_latency</td><td>trend (ms)</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
            sent.latency_values, sent.latency_omitted, sent.latency_garbled
        )),
        "{table}"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("### Custom metrics"), "{md}");
    assert!(
        md.contains(&format!(
            "| tokens_total | counter | {} | 0 | 0 | {} |",
            sent.responses, sent.tokens_sum
        )),
        "{md}"
    );
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_custom_metric_threshold_fails_the_run_with_exit_99() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let thresholds = r#"
    - "counter(crisis_detections) > 0"
    - "counter(crisis_detections) < 1"
    - "gauge(queue_depth) max < 5""#;
    let (out, summary, _) = run(&manifest(&target.base_url(), 30, thresholds), "custom-fail").await;
    assert_eq!(out.status.code(), Some(99), "{}", text(&out));
    assert_eq!(summary["verdict"], "Failed", "{summary}");
    let passed: Vec<bool> = summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, false, false], "{summary}");
    let sent = target.stats().infer;
    assert!(
        text(&out).contains(&format!("counter(crisis_detections) {}", sent.crisis)),
        "{}",
        text(&out)
    );
    target.shutdown().await;
}

/// abortOnFail on a custom metric stops the run on the merged figure: 50 calls/s over three
/// runners for 30 s would be 1500 calls; the merged crisis count reaches 20 after about 80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_acts_on_a_merged_custom_metric() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let workload =
        "executor: constant-arrival-rate\n      rate: 50\n      duration: 30s\n      maxVUs: 30";
    let thresholds = r#"
    - {expr: "counter(crisis_detections) < 20", abortOnFail: true}"#;
    let (out, summary, _) = run(
        &manifest_with(&target.base_url(), workload, thresholds),
        "custom-abort",
    )
    .await;
    assert_eq!(out.status.code(), Some(99), "{}", text(&out));
    assert_eq!(summary["reason"], "ThresholdAborted", "{summary}");
    assert_eq!(summary["thresholds"][0]["aborted"], true, "{summary}");
    let crisis = f(&row(&summary, "crisis_detections")["value"]);
    let sent = target.stats().infer;
    assert!(crisis >= 20.0, "{crisis}");
    assert!(
        sent.responses < 1500,
        "aborted early: {} calls",
        sent.responses
    );
    target.shutdown().await;
}
