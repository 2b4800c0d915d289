//! The essentials as Markdown a team pastes into a pull request or an issue: the run's
//! parameters and window, the key metrics, and each threshold with pass/fail, as tables.

use std::fmt::Write as _;

use volley_core::metrics::model::SETUP_SCENARIO;
use volley_core::metrics::status::format_latency_ms;

use crate::{CUSTOM_METRIC_COLUMNS, Summary, custom_metric_cells, outcome};

/// The report as GitHub-flavoured Markdown.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let m = &s.metrics;
    let _ = writeln!(out, "## Volley: {} — {}\n", cell(&s.name), outcome(s));
    if let Some(msg) = &s.message {
        let _ = writeln!(out, "> {}\n", cell(msg));
    }

    out.push_str("| Parameter | Value |\n| --- | --- |\n");
    let mut params = vec![
        ("LoadTest", cell(&s.name)),
        ("Phase", format!("{:?}", s.phase)),
        ("Runners", s.runners.to_string()),
        (
            "Window",
            format!("0 s – {:.1} s (load phase)", s.duration_seconds),
        ),
        (
            "Scenarios",
            s.scenarios
                .iter()
                .map(|sc| cell(&sc.scenario))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    if let Some(reason) = &s.reason {
        params.push(("Reason", cell(reason)));
    }
    if let Some(skew) = s.start_skew_ms {
        params.push(("Start skew", format!("{skew:.1} ms")));
    }
    table_rows(&mut out, &params);

    out.push_str("\n### Key metrics\n\n| Metric | Value |\n| --- | --- |\n");
    let checks = m
        .checks_pass_rate
        .map_or("none".to_string(), |r| format!("{:.2}%", r * 100.0));
    let metrics = vec![
        ("Requests", m.requests.to_string()),
        ("Throughput", format!("{:.1}/s", m.rps)),
        ("Failures", m.failures.to_string()),
        ("Error rate", format!("{:.2}%", m.error_rate * 100.0)),
        ("Iterations", m.iterations.to_string()),
        ("Dropped iterations", m.dropped_iterations.to_string()),
        ("Checks passed", checks),
        ("Latency p50", format_latency_ms(m.latency_ms.p50)),
        ("Latency p95", format_latency_ms(m.latency_ms.p95)),
        ("Latency p99", format_latency_ms(m.latency_ms.p99)),
        ("Latency max", format_latency_ms(m.latency_ms.max)),
    ];
    table_rows(&mut out, &metrics);

    if !s.thresholds.is_empty() {
        out.push_str(
            "\n### Thresholds\n\n| Result | Threshold | Scope | Actual |\n| --- | --- | --- | --- |\n",
        );
        for t in &s.thresholds {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {}{} |",
                match (t.skipped.is_some(), t.passed) {
                    (true, _) => "⏭ skipped",
                    (false, true) => "✅ pass",
                    (false, false) => "❌ fail",
                },
                code(&t.expr),
                cell(&t.scope),
                cell(&t.actual),
                if t.aborted { " (aborted the run)" } else { "" },
            );
        }
    }

    if let Some(observed) = &s.prometheus {
        out.push_str("\n### Server metrics\n\n| Query | PromQL | Value |\n| --- | --- | ---: |\n");
        for r in &observed.results {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} |",
                cell(&volley_core::observe::result_label(r)),
                code(&r.query),
                cell(&crate::prometheus_value(r)),
            );
        }
    }
    let custom = custom_metric_cells(s);
    if !custom.is_empty() {
        let _ = writeln!(
            out,
            "\n### Custom metrics\n\n| {} |\n|{}",
            CUSTOM_METRIC_COLUMNS.join(" | "),
            " --- |".repeat(CUSTOM_METRIC_COLUMNS.len())
        );
        for cells in custom {
            let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }

    let scenarios: Vec<_> = s
        .scenarios
        .iter()
        .filter(|sc| sc.scenario != SETUP_SCENARIO)
        .collect();
    if !scenarios.is_empty() {
        out.push_str("\n### Scenarios\n\n| Scenario | Requests | Throughput | Error rate | p50 | p95 | p99 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for sc in scenarios {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1}/s | {:.2}% | {} | {} | {} |",
                cell(&sc.scenario),
                sc.requests,
                sc.rps,
                sc.error_rate * 100.0,
                format_latency_ms(sc.p50_ms),
                format_latency_ms(sc.p95_ms),
                format_latency_ms(sc.p99_ms),
            );
        }
    }
    let ws: Vec<_> = s
        .steps
        .iter()
        .filter_map(|st| st.websocket.as_ref().map(|w| (st, w)))
        .collect();
    if !ws.is_empty() {
        out.push_str("\n### WebSocket\n\n| Scenario | Step | Connections | Connect errors | Connect p95 | Sent | Received | Message p95 | Message p99 | Chunk p95 | Refused | Handshake | Closed abnormally | Expect timeouts | Max open |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (st, w) in ws {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2}% | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&st.scenario),
                cell(&st.step),
                w.connections,
                w.connect_error_rate * 100.0,
                format_latency_ms(w.connect_p95_ms),
                w.messages_sent,
                w.messages_received,
                format_latency_ms(w.message_p95_ms),
                format_latency_ms(w.message_p99_ms),
                format_latency_ms(w.chunk_p95_ms),
                w.refused,
                w.handshake_errors,
                w.closed_abnormally,
                w.expect_timeouts,
                w.open_max,
            );
        }
    }
    out
}

/// `| name | value |` rows.
fn table_rows(out: &mut String, rows: &[(&str, String)]) {
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
}

/// User text made safe for one table cell: a `|` would end the cell, a newline the row, and
/// `<` could open HTML that GitHub renders.
pub fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace(['\r', '\n'], " ")
}

/// User text for inside a code span in a table cell: a backtick would end the span and a `|`
/// the cell; markup inside a code span is shown as written, so `<` stays.
fn code(text: &str) -> String {
    text.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\r', '\n'], " ")
}
