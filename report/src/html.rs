//! The HTML report: one self-contained file a person opens on a laptop or prints. No script,
//! no network: the CSS is inline and every chart is SVG drawn here. Every string that came
//! from the user (names, expressions, messages, the spec) is escaped.
//!
//! Figures a test or a browser check reads carry an `id` (`m-requests`, `m-p95`, ...) and
//! each chart is an `<svg class="chart" id="chart-...">`. With several scenarios (the
//! summary's `scenarioSeries`), each also gets its own error-rate and latency charts.
//!
//! Charts draw at most [`MAX_DRAWN_POINTS`] points per line: a longer series is cut into that
//! many equal stretches of time, each drawn as its request rate and error rate and the highest
//! percentile of a point in it (so a spike stays visible). Points are placed by their
//! `second`, so a long run's coarser older points (see the summary's `seriesResolution`) draw
//! at their place on the time axis. The tables and the CSV keep every number.

use std::fmt::Write as _;

use serde_json::Value;
use volley_core::metrics::model::SETUP_SCENARIO;
use volley_core::metrics::status::format_latency_ms;
use volley_core::protocol::histogram::decode_histogram;
use volley_core::threshold::{Metric, Subject, parse_threshold};
use volley_crds::status::{LatencyMs, Phase};

use crate::{
    CUSTOM_METRIC_COLUMNS, SeriesPoint, Summary, custom_metric_cells, escape as esc, outcome,
    point_error_rate, redact_spec,
};

/// Line colours, as the `l0`.. classes of the style sheet.
const PALETTE: [&str; 6] = [
    "#0969da", "#bf8700", "#cf222e", "#1a7f37", "#8250df", "#57606a",
];

/// The most points one chart line draws; a 4-hour series is downsampled to this.
pub const MAX_DRAWN_POINTS: usize = 720;

const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
.muted{color:var(--muted)}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;font-size:13px;vertical-align:middle}
.PASSED{background:var(--ok)}.FAILED,.ERROR{background:var(--bad)}.ABORTED{background:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 10px;background:var(--bg)}
.card .k{font-size:12px;color:var(--muted)}.card .v{font-size:18px;font-weight:600}
table{border-collapse:collapse;width:100%;margin:4px 0}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:var(--ok);font-weight:600}.fail{color:var(--bad);font-weight:600}.skip{font-weight:600}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{background:var(--bg);border:1px solid var(--line);padding:8px;overflow:auto;white-space:pre-wrap;word-break:break-all}
svg.chart{width:100%;height:auto;display:block;margin:4px 0 12px}
svg text{font:11px system-ui,sans-serif;fill:var(--muted)}
svg .grid{stroke:var(--line);stroke-width:1}
svg .axis{stroke:var(--muted);stroke-width:1}
svg .l0{stroke:#0969da}svg .l1{stroke:#bf8700}svg .l2{stroke:#cf222e}svg .l3{stroke:#1a7f37}svg .l4{stroke:#8250df}svg .l5{stroke:#57606a}
svg polyline{fill:none;stroke-width:1.5}
svg .thr{stroke:var(--bad);stroke-dasharray:6 4;stroke-width:1.2}
svg text.thr-label{fill:var(--bad)}
.legend span{margin-right:14px;font-size:12px}.legend i{display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle}
@media print{body{max-width:none;padding:0;font-size:11px}h2{break-after:avoid}.chart,table,.card{break-inside:avoid}pre{white-space:pre-wrap}}
"#;

/// The report as one HTML document. `spec` is the LoadTest spec that ran (as JSON), shown with
/// its credentials redacted ([`redact_spec`]); the summary document itself does not carry it.
pub fn render(s: &Summary, spec: Option<&Value>) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let verdict = outcome(s);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Volley report: {name}</title><style>{STYLE}</style></head><body>\n\
         <h1>{name} <span class=\"badge {verdict}\" id=\"verdict\">{verdict}</span></h1>\n\
         <p class=\"muted\">Phase {phase:?}{reason} · {runners} runner{pl} · load phase {dur:.1} s</p>\n",
        name = esc(&s.name),
        phase = s.phase,
        reason = s
            .reason
            .as_deref()
            .map(|r| format!(" ({})", esc(r)))
            .unwrap_or_default(),
        runners = s.runners,
        pl = if s.runners == 1 { "" } else { "s" },
        dur = s.duration_seconds,
    );
    if let Some(msg) = &s.message {
        let _ = writeln!(o, "<p id=\"message\">{}</p>", esc(msg));
    }
    if let Some(t) = &s.truncated {
        let _ = writeln!(
            o,
            "<p class=\"fail\" id=\"truncated\">This report was trimmed to fit its ConfigMap; left out: {}.</p>",
            esc(&t.dropped.join(", "))
        );
    }

    thresholds(&mut o, s);
    headline(&mut o, s);
    charts(&mut o, s);
    server_metrics(&mut o, s);
    distribution(&mut o, s);
    scenarios(&mut o, s);
    custom_metrics(&mut o, s);
    errors(&mut o, s);
    runners(&mut o, s);
    if let Some(spec) = spec {
        let shown = serde_json::to_string_pretty(&redact_spec(spec)).unwrap_or_default();
        let _ = writeln!(
            o,
            "<h2>The spec that ran</h2><p class=\"muted\">Header values and request bodies are \
             redacted unless they only name a template such as <code>${{env:TOKEN}}</code>.</p>\
             <pre id=\"spec\">{}</pre>",
            esc(&shown)
        );
    }
    o.push_str("<p class=\"muted\">Generated by Volley from the run's summary document.</p>\n</body></html>\n");
    o
}

/// The thresholds table.
fn thresholds(o: &mut String, s: &Summary) {
    if s.thresholds.is_empty() {
        return;
    }
    o.push_str("<h2>Thresholds</h2><table id=\"thresholds\"><thead><tr><th>Result</th><th>Threshold</th><th>Scope</th><th class=\"n\">Actual</th></tr></thead><tbody>\n");
    for t in &s.thresholds {
        let _ = writeln!(
            o,
            "<tr><td class=\"{c}\">{r}</td><td><code>{e}</code></td><td>{sc}</td><td class=\"n\">{a}{ab}</td></tr>",
            // Skipped (a baseline threshold without a baseline): neither passed nor failed.
            c = match (t.skipped.is_some(), t.passed) {
                (true, _) => "skip",
                (false, true) => "pass",
                (false, false) => "fail",
            },
            r = match (t.skipped.is_some(), t.passed) {
                (true, _) => "– skipped",
                (false, true) => "✓ pass",
                (false, false) => "✗ fail",
            },
            e = esc(&t.expr),
            sc = esc(&t.scope),
            a = esc(&t.actual),
            ab = if t.aborted { " (aborted the run)" } else { "" },
        );
    }
    o.push_str("</tbody></table>\n");
}

/// Headline figures as cards, each with an id.
fn headline(o: &mut String, s: &Summary) {
    let m = &s.metrics;
    let l = &m.latency_ms;
    let checks = m
        .checks_pass_rate
        .map_or("none".to_string(), |r| format!("{:.2}%", r * 100.0));
    let cards = [
        ("requests", "Requests", m.requests.to_string()),
        ("rps", "Throughput", format!("{:.1}/s", m.rps)),
        ("failures", "Failures", m.failures.to_string()),
        (
            "error-rate",
            "Error rate",
            format!("{:.2}%", m.error_rate * 100.0),
        ),
        ("iterations", "Iterations", m.iterations.to_string()),
        (
            "dropped",
            "Dropped iterations",
            m.dropped_iterations.to_string(),
        ),
        ("checks", "Checks passed", checks),
        ("p50", "Latency p50", format_latency_ms(l.p50)),
        ("p90", "Latency p90", format_latency_ms(l.p90)),
        ("p95", "Latency p95", format_latency_ms(l.p95)),
        ("p99", "Latency p99", format_latency_ms(l.p99)),
        ("max", "Latency max", format_latency_ms(l.max)),
        ("received", "Data received", bytes(m.data_received_bytes)),
        ("sent", "Data sent", bytes(m.data_sent_bytes)),
    ];
    o.push_str("<h2>Headline</h2><div class=\"cards\">\n");
    for (id, k, v) in cards {
        let _ = writeln!(
            o,
            "<div class=\"card\"><div class=\"k\">{k}</div><div class=\"v\" id=\"m-{id}\">{}</div></div>",
            esc(&v)
        );
    }
    o.push_str("</div>\n<table id=\"latency\"><thead><tr><th>Latency</th><th class=\"n\">min</th><th class=\"n\">mean</th><th class=\"n\">p50</th><th class=\"n\">p90</th><th class=\"n\">p95</th><th class=\"n\">p99</th><th class=\"n\">max</th></tr></thead><tbody>\n");
    latency_row(o, "from the scheduled start", Some(l));
    latency_row(o, "from the send", s.latency_sent_ms.as_ref());
    latency_row(o, "failed requests only", s.failed_latency_ms.as_ref());
    o.push_str("</tbody></table>\n");
}

fn latency_row(o: &mut String, label: &str, l: Option<&LatencyMs>) {
    let Some(l) = l else { return };
    let _ = write!(o, "<tr><td>{label}</td>");
    for v in [l.min, l.mean, l.p50, l.p90, l.p95, l.p99, l.max] {
        let _ = write!(o, "<td class=\"n\">{}</td>", format_latency_ms(v));
    }
    o.push_str("</tr>\n");
}

/// One drawn point of the over-time charts.
struct Drawn {
    second: f64,
    rps: f64,
    error_pct: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

/// The series cut into at most [`MAX_DRAWN_POINTS`] equal stretches of time (see the module
/// docs); a point already as long as a stretch is drawn alone.
fn downsample(series: &[SeriesPoint]) -> Vec<Drawn> {
    let end = series.last().map_or(1, |p| p.second).max(1);
    let width = end.div_ceil(MAX_DRAWN_POINTS as u64).max(1);
    series
        .chunk_by(|a, b| a.second.div_ceil(width) == b.second.div_ceil(width))
        .map(|c| {
            let requests: u64 = c.iter().map(|p| p.requests).sum();
            let failures: u64 = c.iter().map(|p| p.failures).sum();
            let ms: u64 = c.iter().map(|p| p.interval_ms).sum();
            let max = |f: fn(&SeriesPoint) -> f64| c.iter().map(f).fold(0.0, f64::max);
            Drawn {
                second: c.last().map_or(0.0, |p| p.second as f64),
                rps: if ms == 0 {
                    c.iter().map(|p| p.rps).sum::<f64>() / c.len() as f64
                } else {
                    requests as f64 * 1000.0 / ms as f64
                },
                error_pct: if c.len() == 1 {
                    c.first().map_or(0.0, point_error_rate) * 100.0
                } else if requests == 0 {
                    0.0
                } else {
                    failures as f64 * 100.0 / requests as f64
                },
                p50: max(|p| p.p50_ms),
                p95: max(|p| p.p95_ms),
                p99: max(|p| p.p99_ms),
            }
        })
        .collect()
}

/// What the summary's `seriesResolution` says, when a long run's series is not per second
/// throughout: e.g. ` (every 60 s up to 2h45m, every 10 s up to 3h45m, then every second)`.
fn resolution(s: &Summary) -> String {
    if s.series_resolution.iter().all(|r| r.interval_seconds == 1) {
        return String::new();
    }
    let stretches: Vec<String> = s
        .series_resolution
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let every = match r.interval_seconds {
                1 => "every second".to_string(),
                n => format!(
                    "every {}",
                    volley_crds::Duration::from(std::time::Duration::from_secs(n))
                ),
            };
            if i + 1 == s.series_resolution.len() {
                if i == 0 {
                    every
                } else {
                    format!("then {every}")
                }
            } else {
                format!(
                    "{every} up to {}",
                    volley_crds::Duration::from(std::time::Duration::from_secs(r.to_second))
                )
            }
        })
        .collect();
    format!(" ({})", stretches.join(", "))
}

/// A horizontal threshold line: its label and its value in the chart's unit.
type Limit = (String, f64);

/// The thresholds of `scope` (`all`, or `scenario NAME`) that can be drawn on the over-time
/// charts of that scope: (rps, error %, latency).
fn limits(s: &Summary, scope: &str) -> (Vec<Limit>, Vec<Limit>, Vec<Limit>) {
    let (mut rps, mut err, mut lat) = (Vec::new(), Vec::new(), Vec::new());
    for t in s.thresholds.iter().filter(|t| t.scope == scope) {
        // The charts show HTTP requests; a threshold on another subject has no line there.
        let Ok(parsed) = parse_threshold(&t.expr) else {
            continue;
        };
        if parsed.subject != Subject::Http || parsed.baseline.is_some() {
            continue;
        }
        let label = t.expr.clone();
        match parsed.metric {
            Metric::Rps => rps.push((label, parsed.value)),
            Metric::ErrorRate => err.push((label, parsed.value * 100.0)),
            Metric::Percentile(_) | Metric::Med | Metric::Avg | Metric::Max | Metric::Min => {
                lat.push((label, parsed.value))
            }
            _ => {}
        }
    }
    (rps, err, lat)
}

/// Request rate, error rate and latency percentiles over time.
fn charts(o: &mut String, s: &Summary) {
    o.push_str("<h2>Over time</h2>\n");
    if s.series.is_empty() {
        o.push_str("<p class=\"muted\">This summary carries no per-second series.</p>\n");
        return;
    }
    let drawn = downsample(&s.series);
    let x_max = drawn.last().map_or(1.0, |d| d.second).max(1.0);
    let x_ticks = time_ticks(x_max);
    let (rps_limits, err_limits, lat_limits) = limits(s, "all");
    let scenarios: Vec<&str> = s
        .scenarios
        .iter()
        .map(|sc| sc.scenario.as_str())
        .filter(|n| *n != SETUP_SCENARIO)
        .collect();
    let _ = writeln!(
        o,
        "<p class=\"muted\">All scenarios merged ({}); {} points{}{}.</p>",
        esc(&scenarios.join(", ")),
        s.series.len(),
        resolution(s),
        if drawn.len() < s.series.len() {
            format!(
                ", drawn as {} stretches of time (rates over the stretch, latency the highest point in it)",
                drawn.len()
            )
        } else {
            String::new()
        }
    );
    let line = |f: fn(&Drawn) -> f64| drawn.iter().map(|d| (d.second, f(d))).collect::<Vec<_>>();
    o.push_str(&chart(
        "rps",
        "Request rate (requests/s)",
        &[("requests/s", line(|d| d.rps))],
        &rps_limits,
        &x_ticks,
        x_max,
        None,
    ));
    o.push_str(&chart(
        "errors",
        "Error rate (%)",
        &[("error %", line(|d| d.error_pct))],
        &err_limits,
        &x_ticks,
        x_max,
        None,
    ));
    o.push_str(&chart(
        "latency",
        "Latency (ms)",
        &[
            ("p50", line(|d| d.p50)),
            ("p95", line(|d| d.p95)),
            ("p99", line(|d| d.p99)),
        ],
        &lat_limits,
        &x_ticks,
        x_max,
        None,
    ));
    scenario_charts(o, s, &x_ticks, x_max);
}

/// What Prometheus measured over the run's window: each query's value (or error), and a chart
/// per `series: true` query.
fn server_metrics(o: &mut String, s: &Summary) {
    let Some(observed) = &s.prometheus else {
        return;
    };
    o.push_str(
        "<h2>Server metrics</h2><p class=\"muted\">Prometheus queries over the run's window \
         (start barrier and setup excluded), at its end.</p>\n<table id=\"prometheus\"><thead><tr>\
         <th>Query</th><th>PromQL</th><th class=\"n\">Value</th></tr></thead><tbody>\n",
    );
    for r in &observed.results {
        let class = if r.value.is_some() { "n" } else { "n fail" };
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{class}\">{}</td></tr>",
            esc(&volley_core::observe::result_label(r)),
            esc(&r.query),
            esc(&crate::prometheus_value(r)),
        );
    }
    o.push_str("</tbody></table>\n");
    let window = observed.window.length_ms() as f64 / 1000.0;
    let x_max = window.max(1.0);
    let x_ticks = time_ticks(x_max);
    for series in &observed.series {
        if let Some(e) = &series.error {
            let _ = writeln!(
                o,
                "<p class=\"fail\">{} over time: {}</p>",
                esc(&series.name),
                esc(e)
            );
            continue;
        }
        let points: Vec<(f64, f64)> = series.points.iter().map(|p| (p.t, p.v)).collect();
        o.push_str(&chart(
            &format!("prometheus-{}", esc(&series.name)),
            &format!(
                "{} (Prometheus, every {} s)",
                series.name, series.step_seconds
            ),
            &[(series.name.as_str(), points)],
            &[],
            &x_ticks,
            x_max,
            None,
        ));
    }
}

/// With several scenarios: their request rates on one chart, then each one's error rate and
/// latency with the thresholds scoped to it.
fn scenario_charts(o: &mut String, s: &Summary, x_ticks: &[(f64, String)], x_max: f64) {
    if s.scenario_series.len() < 2 {
        return;
    }
    o.push_str("<h2>Per scenario</h2>\n");
    let drawn: Vec<(&str, Vec<Drawn>)> = s
        .scenario_series
        .iter()
        .map(|sc| (sc.scenario.as_str(), downsample(&sc.points)))
        .collect();
    let line = |d: &[Drawn], f: fn(&Drawn) -> f64| d.iter().map(|p| (p.second, f(p))).collect();
    let rates: Vec<(&str, Vec<(f64, f64)>)> = drawn
        .iter()
        .map(|(name, d)| (*name, line(d, |p| p.rps)))
        .collect();
    o.push_str(&chart(
        "scenario-rps",
        "Request rate per scenario (requests/s)",
        &rates,
        &[],
        x_ticks,
        x_max,
        None,
    ));
    for (i, (name, d)) in drawn.iter().enumerate() {
        let (_, err_limits, lat_limits) = limits(s, &format!("scenario {name}"));
        o.push_str(&chart(
            &format!("scenario-{i}-errors"),
            &format!("{name}: error rate (%)"),
            &[("error %", line(d, |p| p.error_pct))],
            &err_limits,
            x_ticks,
            x_max,
            None,
        ));
        o.push_str(&chart(
            &format!("scenario-{i}-latency"),
            &format!("{name}: latency (ms)"),
            &[
                ("p50", line(d, |p| p.p50)),
                ("p95", line(d, |p| p.p95)),
                ("p99", line(d, |p| p.p99)),
            ],
            &lat_limits,
            x_ticks,
            x_max,
            None,
        ));
    }
}

/// The latency percentile curve of the merged histogram, the x axis on a log scale of
/// `1 / (1 - q)` so the tail (99%, 99.9%, ...) gets as much room as the median.
fn distribution(o: &mut String, s: &Summary) {
    let Ok(h) = decode_histogram(&s.histograms.overall) else {
        return;
    };
    if h.is_empty() {
        return;
    }
    // Up to the percentile where one request remains, at most 99.9999%.
    let top = (1.0 - 1.0 / h.len() as f64).clamp(0.9, 0.999_999);
    let x_of = |q: f64| (1.0 / (1.0 - q)).log10();
    let steps = 200;
    let points: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let x = x_of(top) * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-x);
            (x, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect();
    let x_max = x_of(top);
    let ticks: Vec<(f64, String)> = [
        (0.0, "0%"),
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
        (0.99999, "99.999%"),
        (0.999999, "99.9999%"),
    ]
    .into_iter()
    .map(|(q, l)| (x_of(q), l.to_string()))
    .filter(|(x, _)| *x <= x_max + 1e-9)
    .collect();
    o.push_str("<h2>Latency distribution</h2><p class=\"muted\">Every request of every scenario (setup excluded), from the merged HdrHistogram; percentile on a log scale.</p>\n");
    o.push_str(&chart(
        "distribution",
        "Latency by percentile (ms)",
        &[("latency", points)],
        &[],
        &ticks,
        x_max,
        Some(h.max() as f64 / 1000.0),
    ));
}

/// An SVG line chart. `lines` are (legend, points), `limits` dashed horizontal lines,
/// `x_ticks` (x, label). `y_top` forces the top of the y axis's data range.
fn chart(
    id: &str,
    title: &str,
    lines: &[(&str, Vec<(f64, f64)>)],
    limits: &[Limit],
    x_ticks: &[(f64, String)],
    x_max: f64,
    y_top: Option<f64>,
) -> String {
    const W: f64 = 800.0;
    const H: f64 = 240.0;
    const L: f64 = 56.0;
    const R: f64 = 12.0;
    const T: f64 = 12.0;
    const B: f64 = 28.0;
    let data_max = lines
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .chain(limits.iter().map(|l| l.1))
        .chain(y_top)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(data_max);
    let sx = |x: f64| L + (W - L - R) * (x / x_max).clamp(0.0, 1.0);
    let sy = |y: f64| T + (H - T - B) * (1.0 - (y / y_max).clamp(0.0, 1.0));
    let mut o = String::new();
    let _ = write!(
        o,
        "<figure><figcaption><strong>{t}</strong> <span class=\"legend\">",
        t = esc(title)
    );
    for (i, (name, _)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            o,
            "<span><i style=\"background:{color}\"></i>{}</span>",
            esc(name)
        );
    }
    if !limits.is_empty() {
        o.push_str("<span><i style=\"background:#cf222e\"></i>threshold</span>");
    }
    let _ = write!(
        o,
        "</span></figcaption><svg class=\"chart\" id=\"chart-{id}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\">",
        t = esc(title)
    );
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{L}\" x2=\"{x2}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            x2 = W - R,
            py = sy(y),
            tx = L - 4.0,
            ty = sy(y) + 4.0,
            label = axis_number(y),
        );
        y += y_step;
    }
    for (x, label) in x_ticks {
        let _ = write!(
            o,
            "<line class=\"axis\" x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{y1}\" y2=\"{y2}\"/><text x=\"{px:.1}\" y=\"{ty}\" text-anchor=\"middle\">{}</text>",
            esc(label),
            px = sx(*x),
            y1 = H - B,
            y2 = H - B + 4.0,
            ty = H - B + 16.0,
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{L}\" x2=\"{x2}\" y1=\"{y}\" y2=\"{y}\"/>",
        x2 = W - R,
        y = H - B
    );
    for (i, (name, pts)) in lines.iter().enumerate() {
        let _ = write!(
            o,
            "<polyline class=\"l{}\" data-name=\"{}\" points=\"",
            i % PALETTE.len(),
            esc(name)
        );
        for (x, y) in pts {
            let _ = write!(o, "{:.1},{:.1} ", sx(*x), sy(*y));
        }
        o.push_str("\"/>");
    }
    for (label, v) in limits {
        let _ = write!(
            o,
            "<line class=\"thr\" x1=\"{L}\" x2=\"{x2}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text class=\"thr-label\" x=\"{x2}\" y=\"{ty:.1}\" text-anchor=\"end\">{}</text>",
            esc(label),
            x2 = W - R,
            py = sy(*v),
            ty = sy(*v) - 3.0,
        );
    }
    o.push_str("</svg></figure>\n");
    o
}

/// The top of a y axis at or above `max` and its tick step: 1, 2 or 5 times a power of ten,
/// four to ten ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// Time ticks for an x axis of `x_max` seconds: about six, at round durations.
fn time_ticks(x_max: f64) -> Vec<(f64, String)> {
    let step = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 28800.0, 86400.0,
    ]
    .into_iter()
    .find(|s| x_max / s <= 8.0)
    .unwrap_or(86400.0);
    let mut ticks = Vec::new();
    let mut x = 0.0;
    while x <= x_max {
        let label = if step >= 3600.0 {
            format!("{}h", x / 3600.0)
        } else if step >= 60.0 {
            format!("{}m", x / 60.0)
        } else {
            format!("{x}s")
        };
        ticks.push((x, label));
        x += step;
    }
    ticks
}

/// A number on a y axis: no trailing zeros.
fn axis_number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The custom metrics table (steps' `metrics`, all load scenarios merged).
fn custom_metrics(o: &mut String, s: &Summary) {
    let rows = custom_metric_cells(s);
    if rows.is_empty() {
        return;
    }
    o.push_str("<h2>Custom metrics</h2><table id=\"custom-metrics\"><thead><tr>");
    for (i, h) in CUSTOM_METRIC_COLUMNS.iter().enumerate() {
        let class = if i < 2 { "" } else { " class=\"n\"" };
        let _ = write!(o, "<th{class}>{h}</th>");
    }
    o.push_str("</tr></thead><tbody>\n");
    for cells in rows {
        o.push_str("<tr>");
        for (i, c) in cells.iter().enumerate() {
            let class = if i < 2 { "" } else { " class=\"n\"" };
            let _ = write!(o, "<td{class}>{}</td>", esc(c));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table>\n");
}

/// Per-scenario, per-step and plateau tables.
fn scenarios(o: &mut String, s: &Summary) {
    if !s.scenarios.is_empty() {
        o.push_str("<h2>Scenarios</h2><table id=\"scenarios\"><thead><tr><th>Scenario</th><th class=\"n\">Requests</th><th class=\"n\">Iterations</th><th class=\"n\">Dropped</th><th class=\"n\">Interrupted</th><th class=\"n\">Rate</th><th class=\"n\">Error rate</th><th class=\"n\">p50</th><th class=\"n\">p95</th><th class=\"n\">p99</th><th class=\"n\">Sustainable rate</th></tr></thead><tbody>\n");
        for sc in &s.scenarios {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}/s</td><td class=\"n\">{:.2}%</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&sc.scenario),
                sc.requests,
                sc.iterations,
                sc.dropped_iterations,
                sc.interrupted_iterations,
                sc.rps,
                sc.error_rate * 100.0,
                format_latency_ms(sc.p50_ms),
                format_latency_ms(sc.p95_ms),
                format_latency_ms(sc.p99_ms),
                sc.sustainable_rate
                    .map_or("—".to_string(), |r| format!("{r:.1}/s")),
            );
        }
        o.push_str("</tbody></table>\n");
    }
    if !s.steps.is_empty() {
        o.push_str("<h2>Steps</h2><table id=\"steps\"><thead><tr><th>Scenario</th><th>Step</th><th class=\"n\">Requests</th><th class=\"n\">Error rate</th><th class=\"n\">p50</th><th class=\"n\">p95</th><th class=\"n\">p99</th></tr></thead><tbody>\n");
        for st in &s.steps {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}%</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&st.scenario),
                esc(&st.step),
                st.requests,
                st.error_rate * 100.0,
                format_latency_ms(st.p50_ms),
                format_latency_ms(st.p95_ms),
                format_latency_ms(st.p99_ms),
            );
        }
        o.push_str("</tbody></table>\n");
    }
    websocket(o, s);
    if !s.plateaus.is_empty() {
        o.push_str("<h2>Rate probe plateaus</h2><table id=\"plateaus\"><thead><tr><th>Scenario</th><th class=\"n\">Offered</th><th class=\"n\">Achieved</th><th class=\"n\">Window</th><th class=\"n\">Requests</th><th class=\"n\">Error rate</th><th class=\"n\">p95</th><th>Held</th></tr></thead><tbody>\n");
        for p in &s.plateaus {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"n\">{:.1}/s</td><td class=\"n\">{:.1}/s</td><td class=\"n\">{:.0}–{:.0} s</td><td class=\"n\">{}</td><td class=\"n\">{:.2}%</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&p.scenario),
                p.rate,
                p.achieved_rate,
                p.from_seconds,
                p.to_seconds,
                p.requests,
                p.error_rate * 100.0,
                format_latency_ms(p.p95_ms),
                match p.held {
                    Some(true) => "yes".to_string(),
                    Some(false) => format!("no: {}", esc(&p.failed.join("; "))),
                    None => "—".to_string(),
                },
            );
        }
        o.push_str("</tbody></table>\n");
        for r in &s.sustainable_rates {
            let _ = writeln!(
                o,
                "<p>Sustainable rate of <strong>{}</strong>: {}</p>",
                esc(&r.scenario),
                esc(&r.describe())
            );
        }
    }
}

/// Failed requests by kind.
/// The `websocket` steps: connections, messages, the three latencies, errors by kind.
fn websocket(o: &mut String, s: &Summary) {
    let rows: Vec<_> = s
        .steps
        .iter()
        .filter_map(|st| st.websocket.as_ref().map(|w| (st, w)))
        .collect();
    if rows.is_empty() {
        return;
    }
    o.push_str("<h2>WebSocket</h2><p class=\"muted\">Connect: TCP, TLS and the handshake. Message: a send to the reply its <code>expect</code> matched. Chunk: time between received frames. Max open merges each runner's peak.</p><table id=\"websocket\"><thead><tr><th>Scenario</th><th>Step</th><th class=\"n\">Connections</th><th class=\"n\">Connect errors</th><th class=\"n\">Connect p95</th><th class=\"n\">Sent</th><th class=\"n\">Received</th><th class=\"n\">Message p50</th><th class=\"n\">Message p95</th><th class=\"n\">Message p99</th><th class=\"n\">Chunk p95</th><th class=\"n\">Refused</th><th class=\"n\">Handshake</th><th class=\"n\">Closed abnormally</th><th class=\"n\">Expect timeouts</th><th class=\"n\">Open / max</th></tr></thead><tbody>\n");
    for (st, w) in rows {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}%</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {}</td></tr>",
            esc(&st.scenario),
            esc(&st.step),
            w.connections,
            w.connect_error_rate * 100.0,
            format_latency_ms(w.connect_p95_ms),
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
            w.open,
            w.open_max,
        );
    }
    o.push_str("</tbody></table>\n");
}

fn errors(o: &mut String, s: &Summary) {
    let kinds = &s.metrics.errors_by_kind;
    o.push_str("<h2>Errors by kind</h2>\n");
    if kinds.is_empty() {
        o.push_str("<p id=\"errors-none\">No failed requests.</p>\n");
        return;
    }
    o.push_str("<table id=\"errors\"><thead><tr><th>Kind</th><th class=\"n\">Requests</th><th class=\"n\">Share of failures</th></tr></thead><tbody>\n");
    let total = s.metrics.failures.max(1) as f64;
    for (kind, n) in kinds {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{:.1}%</td></tr>",
            esc(kind),
            *n as f64 * 100.0 / total
        );
    }
    o.push_str("</tbody></table>\n");
}

/// Runner failures and start skew.
fn runners(o: &mut String, s: &Summary) {
    let _ = writeln!(
        o,
        "<h2>Runners</h2><p>{} runner{} shared the load; start skew (largest gap between first requests): <span id=\"start-skew\">{}</span>.</p>",
        s.runners,
        if s.runners == 1 { "" } else { "s" },
        s.start_skew_ms
            .map_or("not measured".to_string(), |ms| format!("{ms:.1} ms")),
    );
    if s.runner_failures.is_empty() {
        if s.phase != Phase::Error {
            o.push_str("<p id=\"runner-failures-none\">No runner failed.</p>\n");
        }
        return;
    }
    o.push_str("<table id=\"runner-failures\"><thead><tr><th class=\"n\">Runner</th><th>Host</th><th class=\"n\">At</th><th>Reason</th></tr></thead><tbody>\n");
    for f in &s.runner_failures {
        let _ = writeln!(
            o,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            f.index,
            esc(&f.host),
            f.at_seconds
                .map_or("before the start".to_string(), |t| format!("{t:.1} s")),
            esc(&f.reason),
        );
    }
    o.push_str("</tbody></table>\n");
}

/// Bytes with a binary unit.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
