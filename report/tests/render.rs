//! Rendering synthetic summaries: hostile strings stay text in every format, a run that failed
//! for another reason than its thresholds is a JUnit error, and a 4-hour soak (14 400 points)
//! renders fast and small, with every point in the CSV. Reports of real runs are checked in
//! `runner/tests/report.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use serde_json::{Value, json};
use volley_report::{Summary, csv, html, junit, load, markdown};

/// A summary document as `volley run --out` writes it, with `series_len` seconds of series.
fn summary(name: &str, series_len: u64) -> Value {
    let series: Vec<Value> = (1..=series_len)
        .map(|s| {
            let requests = 1000 + s % 97;
            json!({"second": s, "intervalMs": 1000, "requests": requests, "failures": s % 7,
                   "rps": requests as f64, "p50Ms": 10.0 + (s % 13) as f64,
                   "p95Ms": 40.0 + (s % 31) as f64, "p99Ms": 90.0 + (s % 61) as f64})
        })
        .collect();
    let scenario_series: Vec<Value> = ["<script>alert(1)</script>", "checkout, \"v2\""]
        .iter()
        .map(|n| json!({"scenario": n, "points": series}))
        .collect();
    json!({
        "name": name, "phase": "Failed", "verdict": "Failed", "reason": "ThresholdsFailed",
        "message": "1 of 2 thresholds failed", "durationSeconds": series_len as f64, "runners": 4,
        "startSkewMs": 12.5,
        "runnerFailures": [{"index": 2, "host": "node-<b>", "atSeconds": 30.5, "reason": "exit <1> & \"gone\""}],
        "metrics": {"requests": 123456, "failures": 42, "errorRate": 0.00034, "rps": 1000.5,
            "iterations": 123000, "droppedIterations": 3, "latencyMs": {"min": 1.0, "mean": 12.0,
            "p50": 10.0, "p90": 30.0, "p95": 44.2, "p99": 120.0, "max": 900.0},
            "errorsByKind": {"5xx": 40, "<timeout>": 2}, "dataReceivedBytes": 10485760,
            "dataSentBytes": 2048, "p95": "44.2ms", "errors": "0.03%"},
        "latencySentMs": {"min": 1.0, "mean": 11.0, "p50": 9.0, "p90": 29.0, "p95": 43.0, "p99": 110.0, "max": 800.0},
        "thresholds": [
            {"expr": "p(95) < 500ms", "scope": "all", "actual": "44.2ms", "passed": true},
            {"expr": "error_rate < 0.01%", "scope": "scenario <script>alert(1)</script>", "actual": "0.03% <&>", "passed": false, "aborted": true}
        ],
        "scenarios": [{"scenario": "<script>alert(1)</script>", "requests": 123456, "iterations": 123000,
            "droppedIterations": 3, "errorRate": 0.00034, "rps": 1000.5, "p50Ms": 10.0, "p95Ms": 44.2, "p99Ms": 120.0}],
        "steps": [{"scenario": "<script>alert(1)</script>", "step": "a|b`c\nd", "requests": 123456,
            "errorRate": 0.00034, "p50Ms": 10.0, "p95Ms": 44.2, "p99Ms": 120.0}],
        "series": series,
        "scenarioSeries": scenario_series,
        "histograms": {"overall": histogram(), "steps": []}
    })
}

/// An encoded merged histogram of 100 000 latencies from 1 ms to 2 s (microseconds).
fn histogram() -> String {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for i in 0..100_000u64 {
        h.record(1_000 + (i * i) % 2_000_000).unwrap();
    }
    volley_core::protocol::histogram::encode_histogram(&h).unwrap()
}

fn parse(v: &Value) -> Summary {
    load(serde_json::to_string(v).unwrap().as_bytes()).unwrap()
}

#[test]
fn user_strings_stay_text_in_every_format() {
    let s = parse(&summary("<img src=x onerror=alert(1)>", 10));
    let spec = json!({"target": {"baseUrl": "http://a/</pre><script>x</script>"}});
    let page = html::render(&s, Some(&spec));
    for raw in ["<script", "<img", "<b>", "exit <1>"] {
        assert!(!page.contains(raw), "{raw} unescaped in HTML");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("exit &lt;1&gt; &amp; &quot;gone&quot;"));
    assert!(page.contains("&lt;timeout&gt;"));

    let xml = junit::render(&s);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc.root_element().first_element_child().unwrap();
    assert_eq!(
        suite.attribute("name"),
        Some("<img src=x onerror=alert(1)>")
    );
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(failure.attribute("message").unwrap().contains("0.03% <&>"));

    let md = markdown::render(&s);
    assert!(!md.contains("<script"), "{md}");
    // The step name's `|` and newline would break the table: every table line keeps its shape.
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        assert!(line.ends_with(" |"), "{line}");
    }
}

#[test]
fn junit_reports_a_run_that_failed_without_a_failed_threshold_as_an_error() {
    let mut v = summary("t", 3);
    v["phase"] = json!("Failed");
    v["reason"] = json!("RunnerFailed");
    v["message"] = json!("runner 2 died");
    v["thresholds"] =
        json!([{"expr": "p(95) < 500ms", "scope": "all", "actual": "44.2ms", "passed": true}]);
    let xml = junit::render(&parse(&v));
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.attribute("tests"), Some("2"));
    assert_eq!(root.attribute("errors"), Some("1"));
    assert_eq!(root.attribute("failures"), Some("0"));
    let error = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
    assert_eq!(error.attribute("type"), Some("RunnerFailed"));
    assert!(
        error
            .attribute("message")
            .unwrap()
            .contains("runner 2 died")
    );
    assert_eq!(error.parent().unwrap().attribute("name"), Some("run"));

    // A passed run has no error testcase.
    v["phase"] = json!("Succeeded");
    v["reason"] = Value::Null;
    let xml = junit::render(&parse(&v));
    assert!(!xml.contains("<error"));
    assert!(xml.contains("tests=\"1\""));
}

/// The 4-hour soak: 14 400 seconds of series. Prints the render time and sizes (figures for
/// the docs); the bounds are generous so a busy machine does not fail it: the size bound is the
/// real requirement (< 5 MB), the time bound only catches something quadratic.
#[test]
fn four_hour_soak_renders_small_and_keeps_every_second_in_the_csv() {
    let doc = serde_json::to_vec(&summary("soak", 14_400)).unwrap();
    let started = Instant::now();
    let s = load(&doc).unwrap();
    let loaded = started.elapsed();
    let started = Instant::now();
    let page = html::render(&s, None);
    let html_time = started.elapsed();
    let started = Instant::now();
    let table = csv::render(&s);
    let csv_time = started.elapsed();
    let started = Instant::now();
    let md = markdown::render(&s);
    let xml = junit::render(&s);
    let rest = started.elapsed();
    println!(
        "4-hour soak: summary {} bytes loaded in {loaded:?}; HTML {} bytes in {html_time:?}; \
         CSV {} bytes in {csv_time:?}; Markdown {} + JUnit {} bytes in {rest:?}",
        doc.len(),
        page.len(),
        table.len(),
        md.len(),
        xml.len()
    );
    assert!(page.len() < 5 * 1024 * 1024, "HTML {} bytes", page.len());
    assert!(html_time.as_secs() < 20, "{html_time:?}");
    // Drawn downsampled, never more points than the bound per line.
    let drawn = page
        .split("<polyline")
        .skip(1)
        .map(|p| {
            let points = &p[p.find("points=\"").unwrap() + 8..];
            points[..points.find('"').unwrap()]
                .split_whitespace()
                .count()
        })
        .max()
        .unwrap();
    assert!(drawn <= html::MAX_DRAWN_POINTS, "{drawn}");
    assert!(page.contains("id=\"chart-distribution\""));
    // The CSV keeps every second: the whole run and each of the two scenarios.
    let mut reader = ::csv::Reader::from_reader(table.as_bytes());
    let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3 * 14_400);
    // A scenario name with a comma and quotes reads back whole.
    assert_eq!(
        rows.iter().filter(|r| &r[1] == "checkout, \"v2\"").count(),
        14_400
    );
}

/// A skipped threshold (a baseline threshold without a baseline) is neither a pass nor a
/// failure: JUnit's `<skipped>` with the reason, `skipped` in HTML and Markdown.
#[test]
fn skipped_thresholds_are_skipped_in_every_format() {
    let mut v = summary("gated", 3);
    v["thresholds"] = json!([
        {"expr": "p(95) < baseline * 1.1", "scope": "all", "actual": "skipped: no baseline run",
         "passed": false, "skipped": "no baseline run <to compare>"},
        {"expr": "p(95) < 500ms", "scope": "all", "actual": "44.2ms", "passed": true}
    ]);
    let s = parse(&v);
    let xml = junit::render(&s);
    assert!(xml.contains("skipped=\"1\""), "{xml}");
    assert!(
        xml.contains("<skipped message=\"no baseline run &lt;to compare&gt;\"/>"),
        "{xml}"
    );
    assert!(
        !xml.contains("<failure message=\"p(95) < baseline"),
        "{xml}"
    );
    assert!(markdown::render(&s).contains("| ⏭ skipped | `p(95) < baseline * 1.1`"));
    assert!(html::render(&s, None).contains("<td class=\"skip\">– skipped</td>"));
}

/// A 4-hour soak as the operator's report has it: older points in 60 s and 10 s buckets, the
/// newest 15 minutes per second. The CSV keeps each point with its interval; the HTML places
/// the coarse points on the time axis and says the resolution.
#[test]
fn a_downsampled_series_renders_with_its_intervals() {
    let point = |second: u64, interval: u64| {
        json!({"second": second, "intervalMs": interval * 1000, "requests": 50 * interval,
               "failures": interval / 10, "rps": 50.0, "p50Ms": 12.0,
               "p95Ms": 40.0 + (second % 31) as f64, "p99Ms": 90.0})
    };
    let mut series: Vec<Value> = (1..=165).map(|k| point(k * 60, 60)).collect();
    series.extend((1..=360).map(|k| point(9_900 + k * 10, 10)));
    series.extend((1..=900).map(|k| point(13_500 + k, 1)));
    let mut v = summary("soak", 0);
    v["series"] = json!(series);
    v["scenarioSeries"] = json!([{"scenario": "steady", "points": series}]);
    v["seriesResolution"] = json!([
        {"fromSecond": 0, "toSecond": 9_900, "intervalSeconds": 60},
        {"fromSecond": 9_900, "toSecond": 13_500, "intervalSeconds": 10},
        {"fromSecond": 13_500, "toSecond": 14_400, "intervalSeconds": 1},
    ]);
    let s = load(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(s.series_resolution.len(), 3);

    let table = csv::render(&s);
    let mut reader = ::csv::Reader::from_reader(table.as_bytes());
    let rows: Vec<_> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2 * 1_425);
    // Each row carries its interval, and the rows add up to the whole run.
    let all: Vec<_> = rows.iter().filter(|r| &r[1] == "all").collect();
    assert_eq!((&all[0][0], &all[0][2]), ("60", "60000"));
    assert_eq!((&all[165][0], &all[165][2]), ("9910", "10000"));
    assert_eq!((&all[1_424][0], &all[1_424][2]), ("14400", "1000"));
    let ms: u64 = all.iter().map(|r| r[2].parse::<u64>().unwrap()).sum();
    assert_eq!(ms, 14_400_000);
    let requests: u64 = all.iter().map(|r| r[3].parse::<u64>().unwrap()).sum();
    assert_eq!(requests, 50 * 14_400);

    let page = html::render(&s, None);
    assert!(
        page.contains(
            "1425 points (every 1m up to 2h45m, every 10s up to 3h45m, then every second)"
        ),
        "{}",
        &page[page.find("All scenarios merged").unwrap()..][..300]
    );
    // The latency line reaches across the whole run: its first point is at 60 s, its last at
    // the end, evenly in time (the 60 s points are not squeezed into the first buckets).
    let latency = &page[page.find("id=\"chart-latency\"").unwrap()..];
    let points = &latency[latency.find("points=\"").unwrap() + 8..];
    let xs: Vec<f64> = points[..points.find('"').unwrap()]
        .split_whitespace()
        .map(|p| p.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        xs.len() <= html::MAX_DRAWN_POINTS && xs.len() > 165,
        "{}",
        xs.len()
    );
    assert!(xs.windows(2).all(|w| w[0] < w[1]));
    let (first, last) = (xs[0], xs[xs.len() - 1]);
    // 60 s is 1/240 of the run; the 165 coarse points take 9900/14400 of the axis.
    let at_9900 = xs[164];
    assert!(((at_9900 - first) / (last - first) - (9_840.0 / 14_340.0)).abs() < 0.01);
    assert!(page.contains("id=\"chart-scenario-rps\"") || s.scenario_series.len() < 2);
}

#[test]
fn the_comparison_with_the_baseline_shows_the_compare_functions_figures() {
    use volley_core::compare::{Budget, compare, parse_summary};
    use volley_report::comparison;
    let baseline = summary("web", 10);
    let mut run = baseline.clone();
    run["metrics"]["latencyMs"]["p95"] = json!(66.3);
    run["metrics"]["rps"] = json!(800.4);
    run["scenarios"][0]["p95Ms"] = json!(88.4);
    let figures = |v: &Value| parse_summary(serde_json::to_string(v).unwrap().as_bytes()).unwrap();
    let budget = Budget {
        max_p95_regression: Some(0.10),
        ..Budget::default()
    };
    let c = compare(&figures(&baseline), &figures(&run), &budget);
    assert!(c.regressed());
    let html = comparison::html(&c);
    let md = comparison::markdown(&c);
    assert!(html.starts_with("<section id=\"comparison\">"), "{html}");
    assert!(
        !html.contains("<script>"),
        "scenario names are escaped: {html}"
    );
    assert!(
        html.contains("scenario &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    let rows: Vec<&str> = html.split("<tr>").skip(2).collect();
    let mut shown = 0;
    for scope in &c.scopes {
        for f in &scope.figures {
            let change = f.change.unwrap();
            let change = if f.figure == "error rate" {
                format!("{change:+.2} pp")
            } else {
                format!("{change:+.1}%")
            };
            let row = rows
                .iter()
                .find(|r| r.contains(&format!("<td>{}</td>", f.figure)) && r.contains(&change))
                .unwrap_or_else(|| panic!("no row for {} {change} in {html}", f.figure));
            assert_eq!(row.contains("REGRESSED"), f.regressed.is_some(), "{row}");
            let md_row = md
                .lines()
                .find(|l| l.contains(&format!("| {} |", f.figure)) && l.contains(&change));
            assert!(
                md_row.is_some(),
                "no markdown row for {} {change}: {md}",
                f.figure
            );
            shown += 1;
        }
    }
    // Overall and the scenario: p95 +50% regressed over the 10% budget, rps -20%.
    assert!(shown >= 10, "{html}");
    assert!(html.contains("+50.0%") && html.contains("-20.0%"), "{html}");
    assert_eq!(html.matches("REGRESSED").count(), 2, "{html}");
    // In the report page, the section comes once, inside the body.
    let page = comparison::add_to_html(html::render(&parse(&run), None), &c);
    let at = page.find("<section id=\"comparison\">").unwrap();
    assert!(at < page.rfind("</body>").unwrap());
    assert_eq!(page.matches("id=\"comparison\"").count(), 1);
}

/// The Prometheus results are a "Server metrics" section: every query with its value or its
/// error (hostile text escaped), and a chart with every sample of a series query.
#[test]
fn server_metrics_show_each_query_and_chart_each_series() {
    let mut v = summary("t", 10);
    v["prometheus"] = json!({
        "window": {"startUnixMs": 1_000_000, "endUnixMs": 1_010_000},
        "results": [
            {"name": "queue_depth_max", "query": "max(max_over_time(q[10000ms]))", "value": 17.0},
            {"name": "worker_p95_s", "query": "histogram_quantile(0.95, x) > <b>", "value": 0.073_75},
            {"name": "down", "query": "up", "error": "cannot reach Prometheus at http://p:9090: <refused>"}
        ],
        "series": [{"name": "queue_depth", "stepSeconds": 1.0,
                    "points": (0..10).map(|t| json!({"t": t as f64, "v": (t % 3) as f64})).collect::<Vec<_>>()}]
    });
    let s = parse(&v);
    let page = html::render(&s, None);
    assert!(page.contains("<table id=\"prometheus\">"), "{page}");
    assert!(page.contains("<td class=\"n\">0.07375</td>"));
    assert!(page.contains("<td class=\"n\">17</td>"));
    assert!(page.contains("error: cannot reach Prometheus at http://p:9090: &lt;refused&gt;"));
    assert!(page.contains("histogram_quantile(0.95, x) &gt; &lt;b&gt;"));
    assert!(!page.contains("<b>"));
    let chart = page
        .split("id=\"chart-prometheus-queue_depth\"")
        .nth(1)
        .expect("a chart of the series");
    let polyline = chart.split("<polyline").nth(1).unwrap();
    let points = polyline
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(points.split_whitespace().count(), 10);

    let md = markdown::render(&s);
    assert!(md.contains("### Server metrics"), "{md}");
    assert!(
        md.contains("| queue_depth_max | `max(max_over_time(q[10000ms]))` | 17 |"),
        "{md}"
    );
    assert!(!md.contains("<refused>"), "{md}");
    // Without results, no section.
    assert!(!html::render(&parse(&summary("t", 3)), None).contains("Server metrics"));
}

#[test]
fn websocket_steps_get_a_table_in_html_and_markdown() {
    let mut v = summary("ws", 10);
    v["steps"] = json!([
        {"scenario": "http", "step": "GET /", "requests": 10, "errorRate": 0.0,
         "p50Ms": 1.0, "p95Ms": 2.0, "p99Ms": 3.0},
        {"scenario": "stream", "step": "<ws>", "requests": 1000, "errorRate": 0.01,
         "p50Ms": 1.0, "p95Ms": 2.0, "p99Ms": 3.0,
         "websocket": {"connections": 1000, "connectErrorRate": 0.01, "connectP95Ms": 4.5,
            "messagesSent": 2000, "messagesReceived": 12000, "messageP50Ms": 120.0,
            "messageP95Ms": 310.0, "messageP99Ms": 480.0, "chunkP95Ms": 52.0, "refused": 4,
            "handshakeErrors": 6, "closedAbnormally": 3, "expectTimeouts": 7, "open": 0,
            "openMax": 997}}
    ]);
    let s = parse(&v);
    let page = html::render(&s, None);
    let table = &page[page
        .find("<table id=\"websocket\">")
        .expect("a WebSocket table")..];
    let table = &table[..table.find("</table>").unwrap()];
    // One row, the websocket step's, with its figures; the HTTP step has none.
    assert_eq!(table.matches("<tr><td>").count(), 1, "{table}");
    for text in [
        "&lt;ws&gt;",
        "1000",
        "1.00%",
        "310ms",
        "480ms",
        "52ms",
        "997",
    ] {
        assert!(table.contains(text), "{text} in {table}");
    }
    let md = markdown::render(&s);
    let section = &md[md.find("### WebSocket").expect("a WebSocket section")..];
    assert!(
        section.contains("| stream | &lt;ws> | 1000 | 1.00% | 4.5ms | 2000 | 12000 | 310ms | 480ms | 52ms | 4 | 6 | 3 | 7 | 997 |"),
        "{section}"
    );
    // Without websocket steps there is no such section.
    let plain = parse(&summary("plain", 10));
    assert!(!html::render(&plain, None).contains("id=\"websocket\""));
    assert!(!markdown::render(&plain).contains("WebSocket"));
}
