//! Reports rendered from real runs: `volley run` against the demo target on 127.0.0.1 writes
//! the summary and every report format, `volley report` renders the same files again from the
//! summary, and each format is parsed back (CSV with the csv crate, JUnit with an XML parser,
//! Markdown tables split into cells, HTML figures read by id) and compared with the summary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use volley_demo_target::{DemoConfig, DemoTarget};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");

/// Two scenarios, one of them failing on a 404; a passing, a failing and a scoped threshold;
/// a literal credential in a header that the HTML must never show.
const MANIFEST: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: report-demo}
spec:
  target:
    baseUrl: "@BASE@"
    timeout: 5s
    headers: {Authorization: "Bearer topsecret-4711"}
  scenarios:
    - name: browse
      executor: constant-arrival-rate
      rate: 20
      duration: 3s
      maxVUs: 10
      steps:
        - name: list
          request: {url: /api/items}
          check: {status: [200]}
    - name: missing
      executor: constant-arrival-rate
      rate: 5
      duration: 3s
      maxVUs: 5
      steps:
        - name: nope
          request: {url: /api/does-not-exist}
          check: {status: [200]}
  thresholds:
    - "p(95) < 5s"
    - "error_rate < 1%"
    - {expr: "rps > 1", scenario: browse}
"#;

fn volley(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(args).env_remove("RUST_LOG").kill_on_drop(true);
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("volley took longer than 60 s")
        .expect("run volley")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The five files of one run: summary, html, markdown, junit, csv.
struct Files {
    summary: PathBuf,
    html: PathBuf,
    markdown: PathBuf,
    junit: PathBuf,
    csv: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path, tag: &str) -> Self {
        Files {
            summary: dir.join(format!("{tag}summary.json")),
            html: dir.join(format!("{tag}report.html")),
            markdown: dir.join(format!("{tag}report.md")),
            junit: dir.join(format!("{tag}junit.xml")),
            csv: dir.join(format!("{tag}series.csv")),
        }
    }

    fn flags(&self) -> Vec<String> {
        [
            ("--html", &self.html),
            ("--markdown", &self.markdown),
            ("--junit", &self.junit),
            ("--csv", &self.csv),
        ]
        .into_iter()
        .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
        .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_every_report_and_each_reads_back_as_the_summary() {
    let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let dir = tempdir("report");
    let manifest = dir.join("loadtest.yaml");
    std::fs::write(&manifest, MANIFEST.replace("@BASE@", &target.base_url())).unwrap();
    let files = Files::in_dir(&dir, "");

    let mut args = vec![
        "run".to_string(),
        manifest.display().to_string(),
        "-q".into(),
        "--out".into(),
        files.summary.display().to_string(),
    ];
    args.extend(files.flags());
    let out = output(volley(&args.iter().map(String::as_str).collect::<Vec<_>>())).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // error_rate < 1% fails on the 404s: exit 99, and the reports are written all the same.
    assert_eq!(out.status.code(), Some(99), "{stderr}");

    let summary: Value = serde_json::from_str(&read(&files.summary)).unwrap();
    assert!(summary["metrics"]["failures"].as_u64().unwrap() > 0);
    check_csv(&summary, &read(&files.csv));
    check_junit(&summary, &read(&files.junit));
    check_markdown(&summary, &read(&files.markdown));
    check_html(&summary, &read(&files.html), true);

    // `volley report` renders the same files from the summary (with the manifest, the HTML
    // too), and reads the summary from standard input.
    let again = Files::in_dir(&dir, "again-");
    let mut args = vec![
        "report".to_string(),
        files.summary.display().to_string(),
        "--manifest".into(),
        manifest.display().to_string(),
    ];
    args.extend(again.flags());
    let out = output(volley(&args.iter().map(String::as_str).collect::<Vec<_>>())).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (a, b) in [
        (&files.html, &again.html),
        (&files.markdown, &again.markdown),
        (&files.junit, &again.junit),
        (&files.csv, &again.csv),
    ] {
        assert_eq!(
            read(a),
            read(b),
            "{} differs from {}",
            b.display(),
            a.display()
        );
    }

    let mut cmd = volley(&["report", "-"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(read(&files.summary).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read(&files.markdown)
    );

    // Without the manifest there is no spec section; every number is still there.
    let out = output(volley(&[
        "report",
        files.summary.to_str().unwrap(),
        "--html",
        again.html.to_str().unwrap(),
    ]))
    .await;
    assert!(out.status.success());
    check_html(&summary, &read(&again.html), false);

    // With --baseline, the HTML and the Markdown compare the run with it (here: itself, so
    // every change is 0) with the figures of volley_core::compare.
    let out = output(volley(&[
        "report",
        files.summary.to_str().unwrap(),
        "--baseline",
        files.summary.to_str().unwrap(),
        "--html",
        again.html.to_str().unwrap(),
        "--markdown",
        again.markdown.to_str().unwrap(),
    ]))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures = volley_core::compare::parse_summary(read(&files.summary).as_bytes()).unwrap();
    let c = volley_core::compare::compare(&figures, &figures, &Default::default());
    let html = read(&again.html);
    assert!(
        html.contains(&volley_report::comparison::html(&c)),
        "{html}"
    );
    assert!(html.contains("<td>p95</td>") && html.contains("+0.0%"));
    let md = read(&again.markdown);
    assert!(md.starts_with(&read(&files.markdown)));
    assert!(
        md.ends_with(&volley_report::comparison::markdown(&c)),
        "{md}"
    );

    // Not a summary: exit 1 with the file named.
    std::fs::write(dir.join("bad.json"), "{\"name\": 1}").unwrap();
    let out = output(volley(&["report", dir.join("bad.json").to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// CSV: the documented header; the `all` rows are the series with its exact numbers, each
/// scenario's rows its own series, and in every second the scenarios add up to `all`.
fn check_csv(summary: &Value, text: &str) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, volley_report::csv::COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let num = |r: &csv::StringRecord, i: usize| r[i].parse::<u64>().unwrap();
    let of = |scenario: &str| -> Vec<&csv::StringRecord> {
        rows.iter().filter(|r| &r[1] == scenario).collect()
    };
    let check = |rows: Vec<&csv::StringRecord>, series: &Vec<Value>| {
        assert!(!series.is_empty());
        assert_eq!(rows.len(), series.len());
        for (row, point) in rows.iter().zip(series) {
            assert_eq!(num(row, 0), u(&point["second"]));
            assert_eq!(num(row, 3), u(&point["requests"]));
            assert_eq!(num(row, 4), u(&point["failures"]));
            assert_eq!(row[5].parse::<f64>().unwrap(), f(&point["rps"]));
            assert_eq!(row[8].parse::<f64>().unwrap(), f(&point["p95Ms"]));
        }
    };
    check(of("all"), summary["series"].as_array().unwrap());
    let per_scenario = summary["scenarioSeries"].as_array().unwrap();
    let names: Vec<&str> = per_scenario
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["browse", "missing"]);
    for s in per_scenario {
        check(
            of(s["scenario"].as_str().unwrap()),
            s["points"].as_array().unwrap(),
        );
    }
    assert_eq!(rows.len(), 3 * of("all").len());
    for all in of("all") {
        let second = num(all, 0);
        let (requests, failures) = rows
            .iter()
            .filter(|r| &r[1] != "all" && num(r, 0) == second)
            .fold((0, 0), |(q, f), r| (q + num(r, 3), f + num(r, 4)));
        assert_eq!(
            (requests, failures),
            (num(all, 3), num(all, 4)),
            "second {second}"
        );
    }
    // The scenario rows hold every failure of the run, and the 404 scenario only failures.
    let scenario_failures: u64 = rows
        .iter()
        .filter(|r| &r[1] != "all")
        .map(|r| num(r, 4))
        .sum();
    assert_eq!(scenario_failures, u(&summary["metrics"]["failures"]));
    for r in of("missing") {
        assert_eq!(num(r, 3), num(r, 4));
    }
}

/// JUnit: the structure Jenkins and GitLab read, counts consistent, one testcase per
/// threshold, a failure with the actual value exactly for the failed ones.
fn check_junit(summary: &Value, text: &str) {
    let doc = roxmltree::Document::parse(text).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), 1);
    let suite = suites[0];
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert_eq!(suite.attribute("name"), Some("report-demo"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let thresholds = summary["thresholds"].as_array().unwrap();
    assert_eq!(cases.len(), thresholds.len(), "{text}");
    let num = |n: roxmltree::Node, a: &str| -> usize {
        n.attribute(a)
            .unwrap_or_else(|| panic!("no {a}"))
            .parse()
            .unwrap()
    };
    for n in [root, suite] {
        assert_eq!(num(n, "tests"), cases.len());
        assert_eq!(
            num(n, "failures"),
            cases
                .iter()
                .filter(|c| c.children().any(|e| e.has_tag_name("failure")))
                .count()
        );
        assert_eq!(num(n, "errors"), 0);
        n.attribute("time").unwrap().parse::<f64>().unwrap();
    }
    for (case, t) in cases.iter().zip(thresholds) {
        let name = case.attribute("name").unwrap();
        assert!(name.contains(t["expr"].as_str().unwrap()), "{name}");
        assert!(name.contains(t["scope"].as_str().unwrap()), "{name}");
        assert_eq!(case.attribute("classname"), Some("volley.report-demo"));
        case.attribute("time").unwrap().parse::<f64>().unwrap();
        let failure = case.children().find(|e| e.has_tag_name("failure"));
        assert_eq!(failure.is_none(), t["passed"].as_bool().unwrap(), "{name}");
        if let Some(failure) = failure {
            let actual = t["actual"].as_str().unwrap();
            assert!(failure.attribute("message").unwrap().contains(actual));
            assert_eq!(failure.attribute("type"), Some("threshold"));
        }
    }
    assert!(
        cases
            .iter()
            .any(|c| c.children().any(|e| e.has_tag_name("failure")))
    );
}

/// Markdown table rows of the section `heading`, split into trimmed cells.
fn table(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading}"));
    text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Markdown: the key metrics and the thresholds table read back equal the summary.
fn check_markdown(summary: &Value, text: &str) {
    assert!(
        text.starts_with("## Volley: report-demo — FAILED"),
        "{text}"
    );
    let metrics = table(text, "### Key metrics");
    let value = |name: &str| {
        metrics
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name} row"))[1]
            .clone()
    };
    assert_eq!(
        value("Requests"),
        summary["metrics"]["requests"].to_string()
    );
    assert_eq!(
        value("Failures"),
        summary["metrics"]["failures"].to_string()
    );
    assert_eq!(
        value("Latency p95"),
        summary["metrics"]["p95"].as_str().unwrap()
    );
    let rows = table(text, "### Thresholds");
    let thresholds = summary["thresholds"].as_array().unwrap();
    assert_eq!(rows.len(), thresholds.len());
    for (row, t) in rows.iter().zip(thresholds) {
        assert_eq!(row.len(), 4, "{row:?}");
        assert_eq!(row[0].ends_with("pass"), t["passed"].as_bool().unwrap());
        assert_eq!(row[1], format!("`{}`", t["expr"].as_str().unwrap()));
        assert_eq!(row[2], t["scope"].as_str().unwrap());
        assert_eq!(row[3], t["actual"].as_str().unwrap());
    }
    let params = table(text, "| Parameter");
    assert!(params.iter().any(|r| r[0] == "Runners" && r[1] == "1"));
}

/// The text of the element with `id` (up to the next tag).
fn by_id<'a>(html: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id}")) + marker.len();
    &html[start..start + html[start..].find('<').unwrap()]
}

/// HTML: the figures shown are the summary's, the charts are there, nothing is loaded from
/// the network, and the header's credential never appears.
fn check_html(summary: &Value, html: &str, with_spec: bool) {
    let m = &summary["metrics"];
    assert_eq!(by_id(html, "m-requests"), m["requests"].to_string());
    assert_eq!(by_id(html, "m-failures"), m["failures"].to_string());
    assert_eq!(by_id(html, "m-p95"), m["p95"].as_str().unwrap());
    assert_eq!(by_id(html, "verdict"), "FAILED");
    for chart in [
        "rps",
        "errors",
        "latency",
        "distribution",
        "scenario-rps",
        "scenario-0-latency",
        "scenario-1-errors",
    ] {
        let at = html
            .find(&format!("<svg class=\"chart\" id=\"chart-{chart}\""))
            .unwrap_or_else(|| panic!("no chart {chart}"));
        assert!(html[at..].find("<polyline").unwrap() < html[at..].find("</svg>").unwrap());
    }
    // The whole-run thresholds are drawn on their charts; the scoped one is not.
    assert!(html.contains("class=\"thr-label\" x=\"788\""));
    assert_eq!(html.matches("class=\"thr\"").count(), 2);
    for kind in summary["metrics"]["errorsByKind"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(html.contains(&format!("<tr><td>{kind}</td>")), "{kind}");
    }
    for scenario in ["browse", "missing"] {
        assert!(html.contains(&format!("<tr><td>{scenario}</td>")));
    }
    for offline in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(offline), "{offline} in the report");
    }
    assert!(!html.contains("topsecret-4711"));
    assert_eq!(html.contains("id=\"spec\""), with_spec);
    if with_spec {
        assert!(by_id(html, "spec").contains("[redacted]"));
    }
}
