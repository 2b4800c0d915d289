//! The end-of-run summary: the text a k6 user reads at a glance, rendered from the summary
//! document ([`RunSummary`], built by the aggregator crate so that `--out` and the operator's
//! report are the same JSON).

use std::fmt::Write as _;

use volley_core::metrics::model::SETUP_SCENARIO;
use volley_core::metrics::status::{format_custom_figure, format_latency_ms, format_percent};
use volley_crds::status::{CustomMetricStatus, LatencyMs, Phase, StepStatus, ThresholdStatus};

pub use volley_aggregator::RunEnd;
pub use volley_aggregator::summary::{
    Histograms, RunSummary, RunnerFailureRow, StepHistogram, build_summary, failure_rows,
    run_verdict, summarize,
};

/// The human summary printed at the end of `volley run`.
pub fn render_text(s: &RunSummary) -> String {
    let mut out = String::new();
    let m = &s.metrics;
    let secs = s.duration_seconds.max(f64::EPSILON);
    let _ = writeln!(
        out,
        "\n  {}  ·  {} runner{}  ·  {:.1}s\n",
        s.name,
        s.runners,
        if s.runners == 1 { "" } else { "s" },
        s.duration_seconds
    );
    if !s.thresholds.is_empty() {
        out.push_str("  thresholds\n");
        let width = s
            .thresholds
            .iter()
            .map(|t| label(t).len())
            .max()
            .unwrap_or(0);
        for t in &s.thresholds {
            let _ = writeln!(
                out,
                "    {} {:width$}  {}{}",
                // Skipped (a baseline threshold without a baseline): neither passed nor failed.
                if t.skipped.is_some() {
                    "-"
                } else if t.passed {
                    "✓"
                } else {
                    "✗"
                },
                label(t),
                t.actual,
                if t.aborted { "  (aborted the run)" } else { "" },
            );
        }
        out.push('\n');
    }
    if let Some(observed) = &s.prometheus {
        out.push_str("  prometheus (over the run's window)\n");
        let labels: Vec<String> = observed
            .results
            .iter()
            .map(volley_core::observe::result_label)
            .collect();
        let width = labels.iter().map(String::len).max().unwrap_or(0);
        for (r, label) in observed.results.iter().zip(&labels) {
            let value = match (r.value, &r.error) {
                (Some(v), _) => volley_core::metrics::status::significant(v, 4),
                (None, Some(e)) => format!("error: {e}"),
                (None, None) => "no data".to_string(),
            };
            let _ = writeln!(out, "    {label:width$}  {value}");
        }
        out.push('\n');
    }
    let l = &m.latency_ms;
    let mut rows: Vec<(&str, String)> = vec![
        (
            "requests",
            format!("{}  {:.1}/s", m.requests, m.requests as f64 / secs),
        ),
        (
            "failures",
            format!(
                "{}  {}{}",
                m.failures,
                format_percent(m.failures, m.requests),
                error_kinds(&m.errors_by_kind)
            ),
        ),
        (
            "iterations",
            format!(
                "{}  {:.1}/s  dropped {}{}",
                m.iterations,
                m.iterations as f64 / secs,
                m.dropped_iterations,
                interrupted(m.interrupted_iterations, "  interrupted ")
            ),
        ),
        (
            "checks",
            match m.checks_pass_rate {
                Some(rate) => format!("{:.2}% passed", rate * 100.0),
                None => "none".to_string(),
            },
        ),
        ("latency", latency_row(l)),
        ("from send", latency_row(&s.latency_sent_ms)),
    ];
    if let Some(failed) = &s.failed_latency_ms {
        rows.push(("failed only", latency_row(failed)));
    }
    rows.extend([(
        "data",
        format!(
            "sent {}  received {}",
            bytes(m.data_sent_bytes),
            bytes(m.data_received_bytes)
        ),
    )]);
    for (name, value) in rows {
        let _ = writeln!(out, "  {name:.<14} {value}");
    }
    custom_rows(&mut out, &m.custom);
    for sc in &s.scenarios {
        let _ = writeln!(
            out,
            "\n  scenario {}: {} iterations ({} dropped{}), {:.1} req/s, errors {:.2}%, p95 {}",
            sc.scenario,
            sc.iterations,
            sc.dropped_iterations,
            interrupted(sc.interrupted_iterations, ", interrupted "),
            sc.rps,
            sc.error_rate * 100.0,
            format_latency_ms(sc.p95_ms),
        );
        step_rows(
            &mut out,
            s.steps.iter().filter(|st| st.scenario == sc.scenario),
        );
        plateau_rows(&mut out, s, &sc.scenario);
    }
    let setup: Vec<&StepStatus> = s
        .steps
        .iter()
        .filter(|st| st.scenario == SETUP_SCENARIO)
        .collect();
    if !setup.is_empty() {
        out.push_str("\n  setup\n");
        step_rows(&mut out, setup.into_iter());
    }
    // The phase decides: thresholds can all pass in a run that still failed (a timeout).
    let verdict = match s.phase {
        Phase::Succeeded => "PASSED",
        Phase::Error => "ERROR",
        Phase::Aborted => "ABORTED",
        _ => "FAILED",
    };
    let _ = write!(out, "\n  verdict: {verdict}");
    if let Some(msg) = &s.message {
        let _ = write!(out, "  ({msg})");
    }
    out.push('\n');
    out
}

/// Custom metrics, one line each: the figures that apply to the kind, and what could not be
/// recorded (`missing`, `invalid`) whenever it is not zero.
fn custom_rows(out: &mut String, rows: &[CustomMetricStatus]) {
    if rows.is_empty() {
        return;
    }
    out.push_str("\n  custom metrics\n");
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in rows {
        let fig = |v: Option<f64>| v.map_or("-".to_owned(), |v| format_custom_figure(r, v));
        let figures = match r.kind.as_str() {
            "counter" => format!("total {}  of {} values", fig(r.value), r.count),
            "gauge" => format!(
                "last {}  min {}  avg {}  max {}  ({} readings)",
                fig(r.value),
                fig(r.min),
                fig(r.avg),
                fig(r.max),
                r.count
            ),
            _ => format!(
                "count {}  min {}  avg {}  p95 {}  p99 {}  max {}",
                r.count,
                fig(r.min),
                fig(r.avg),
                fig(r.p95),
                fig(r.p99),
                fig(r.max)
            ),
        };
        let faults = if r.missing + r.invalid > 0 {
            format!("  missing {}  invalid {}", r.missing, r.invalid)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<width$}  {:<7}  {figures}{faults}",
            r.name, r.kind
        );
    }
}

/// A rate probe's plateaus, one line each, and its sustainable rate.
fn plateau_rows(out: &mut String, s: &RunSummary, scenario: &str) {
    let rows: Vec<_> = s
        .plateaus
        .iter()
        .filter(|p| p.scenario == scenario)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "    plateaus (iterations/s offered → run, in the measured window):"
    );
    for p in rows {
        let mut verdict = match p.held {
            Some(true) => "held".to_string(),
            Some(false) => format!("failed: {}", p.failed.join("; ")),
            None => "not judged (no threshold applies to a plateau)".to_string(),
        };
        if !p.complete {
            verdict.push_str(" (the run ended inside this plateau)");
        }
        let window = format!("{:.1}-{:.1}s", p.from_seconds, p.to_seconds);
        let _ = writeln!(
            out,
            "    {:>9.1}/s → {:>9.1}/s  {window:<13} errors {:>6.2}%  p95 {:>8}  dropped {}  {verdict}",
            p.rate,
            p.achieved_rate,
            p.error_rate * 100.0,
            format_latency_ms(p.p95_ms),
            p.dropped_iterations,
        );
    }
    if let Some(r) = s.sustainable_rates.iter().find(|r| r.scenario == scenario) {
        let _ = writeln!(out, "    sustainable rate: {}", r.describe());
    }
}

fn latency_row(l: &LatencyMs) -> String {
    format!(
        "min {}  avg {}  p50 {}  p90 {}  p95 {}  p99 {}  max {}",
        format_latency_ms(l.min),
        format_latency_ms(l.mean),
        format_latency_ms(l.p50),
        format_latency_ms(l.p90),
        format_latency_ms(l.p95),
        format_latency_ms(l.p99),
        format_latency_ms(l.max),
    )
}

fn step_rows<'a>(out: &mut String, steps: impl Iterator<Item = &'a StepStatus>) {
    for st in steps {
        let _ = writeln!(
            out,
            "    {:<24} {:>8} req  errors {:>6.2}%  p50 {:>8}  p95 {:>8}  p99 {:>8}",
            st.step,
            st.requests,
            st.error_rate * 100.0,
            format_latency_ms(st.p50_ms),
            format_latency_ms(st.p95_ms),
            format_latency_ms(st.p99_ms),
        );
        if let Some(w) = &st.websocket {
            let _ = writeln!(
                out,
                "      websocket: {} connections (connect errors {:.2}%, p95 {}), max open {}, messages {} sent / {} received, message p50 {} p95 {} p99 {}, chunk p95 {}, refused {}, handshake {}, closed {}, expect timeouts {}",
                w.connections,
                w.connect_error_rate * 100.0,
                format_latency_ms(w.connect_p95_ms),
                w.open_max,
                w.messages_sent,
                w.messages_received,
                format_latency_ms(w.message_p50_ms),
                format_latency_ms(w.message_p95_ms),
                format_latency_ms(w.message_p99_ms),
                format_latency_ms(w.chunk_p95_ms),
                w.refused,
                w.handshake_errors,
                w.closed_abnormally,
                w.expect_timeouts,
            );
        }
    }
}

fn label(t: &ThresholdStatus) -> String {
    if t.scope == "all" {
        t.expr.clone()
    } else {
        format!("{} [{}]", t.expr, t.scope)
    }
}

fn error_kinds(kinds: &std::collections::BTreeMap<String, u64>) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = kinds.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("  ({})", parts.join(", "))
}

/// `{label}{n}` when iterations were interrupted, nothing otherwise: most runs have none, and
/// the column would only be noise.
fn interrupted(n: u64, label: &str) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("{label}{n}")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use volley_core::compare::Baseline;
    use volley_core::manifest::parse_manifest;
    use volley_core::metrics::histogram::record_latency;
    use volley_core::metrics::model::RunMetrics;
    use volley_core::protocol::histogram::decode_histogram;
    use volley_core::threshold::evaluate::evaluate_thresholds;
    use volley_crds::status::Verdict;

    const SPEC: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: demo}
spec:
  target: {baseUrl: "http://127.0.0.1:1"}
  scenarios:
    - name: browse
      executor: constant-vus
      vus: 1
      duration: 1s
      steps:
        - {name: list, request: {url: /items}}
        - {name: item, request: {url: /items/1}}
  thresholds: ["p(95) < 50ms", {expr: "error_rate < 1%", scenario: browse}]
"#;

    fn measured() -> (volley_crds::LoadTest, RunMetrics) {
        let lt = parse_manifest(SPEC).unwrap();
        let mut run = RunMetrics::for_spec(&lt.spec);
        for (step, ms) in [(0usize, 10u64), (1, 100)] {
            let m = run.step_mut(0, step).unwrap();
            for _ in 0..100 {
                record_latency(&mut m.latency, Duration::from_millis(ms));
                // Sent 2ms after it was due: the schedule's view is slower than the send's.
                record_latency(&mut m.latency_sent, Duration::from_millis(ms - 2));
                m.counters.requests += 1;
            }
        }
        let failed = run.step_mut(0, 1).unwrap();
        failed
            .counters
            .count_error(volley_crds::spec::ErrorKind::Status5xx);
        record_latency(&mut failed.failed_latency, Duration::from_millis(100));
        run.scenarios[0].iterations.iterations = 100;
        (lt, run)
    }

    #[test]
    fn summary_carries_merged_figures_and_verdict() {
        let (lt, run) = measured();
        let elapsed = Duration::from_secs(10);
        let results = evaluate_thresholds(&lt.spec, &run, elapsed, &Baseline::default());
        let end = RunEnd {
            phase: Phase::Failed,
            reason: Some("ThresholdsFailed".into()),
            message: None,
        };
        let s = build_summary("demo", end, 2, elapsed, None, &run, &results, Vec::new());
        assert_eq!(s.metrics.requests, 200);
        assert_eq!(s.metrics.failures, 1);
        assert!((s.metrics.rps - 20.0).abs() < 1e-9);
        assert_eq!(s.verdict, Some(Verdict::Failed));
        assert_eq!(s.thresholds.len(), 2);
        assert!(!s.thresholds[0].passed, "p95 is 100ms");
        assert!(s.thresholds[1].passed, "1 of 200 is 0.5%");
        assert_eq!(s.steps.len(), 2);
        let decoded = decode_histogram(&s.histograms.overall).unwrap();
        assert_eq!(decoded.len(), 200);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["metrics"]["requests"], 200);
        assert_eq!(json["thresholds"][1]["scope"], "scenario browse");
        let sent_p99 = json["latencySentMs"]["p99"].as_f64().unwrap();
        assert!((sent_p99 - 98.0).abs() < 0.1, "{sent_p99}");
        assert!(s.metrics.latency_ms.p99 > sent_p99);
        let failed_max = json["failedLatencyMs"]["max"].as_f64().unwrap();
        assert!((failed_max - 100.0).abs() < 0.1, "{failed_max}");
    }

    #[test]
    fn text_shows_thresholds_steps_and_verdict() {
        let (lt, run) = measured();
        let elapsed = Duration::from_secs(10);
        let results = evaluate_thresholds(&lt.spec, &run, elapsed, &Baseline::default());
        let end = RunEnd {
            phase: Phase::Failed,
            reason: None,
            message: Some("p(95) 100ms >= 50ms".into()),
        };
        let text = render_text(&build_summary(
            "demo",
            end,
            1,
            elapsed,
            None,
            &run,
            &results,
            Vec::new(),
        ));
        assert!(text.contains("✗ p(95) < 50ms"), "{text}");
        assert!(
            text.contains("✓ error_rate < 1% [scenario browse]"),
            "{text}"
        );
        assert!(text.contains("requests...... 200  20.0/s"), "{text}");
        assert!(text.contains("(5xx 1)"), "{text}");
        assert!(text.contains("from send..... min 8ms"), "{text}");
        assert!(text.contains("failed only... min 100ms"), "{text}");
        assert!(text.contains("scenario browse: 100 iterations"), "{text}");
        assert!(text.contains("    list "), "{text}");
        assert!(
            text.contains("verdict: FAILED  (p(95) 100ms >= 50ms)"),
            "{text}"
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500), "1.5 kB");
        assert_eq!(bytes(2_000_000), "2.0 MB");
    }
}
