//! The series as CSV: one row per point per scenario, with the columns of [`COLUMNS`] in that
//! order (documented in `docs/reference.md`, "Report formats"). Every point of the summary is
//! written and nothing is downsampled here; a long run's summary already has its older points
//! in coarser buckets, and each row's `interval_ms` says how long its point is (sum
//! `requests`, or weigh `rps` by `interval_ms`, rather than averaging rows).
//!
//! Each second has a row of the whole run, whose `scenario` is [`ALL_SCENARIOS`] (the word a
//! threshold's scope uses for the whole run), then one row per load scenario (from the
//! summary's `scenarioSeries`; a summary without it, e.g. one trimmed to fit a ConfigMap, has
//! only the `all` rows). Sum the scenario rows or read the `all` rows, not both.

use std::fmt::Write as _;

use crate::{SeriesPoint, Summary, point_error_rate};

/// The header row. New columns are only ever appended, so a consumer reading by position keeps
/// working.
pub const COLUMNS: [&str; 10] = [
    "second",
    "scenario",
    "interval_ms",
    "requests",
    "failures",
    "rps",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
];

/// The `scenario` of a row that merges every scenario.
pub const ALL_SCENARIOS: &str = "all";

/// The series as CSV (header included, `\n` line ends, numbers as plain decimals).
pub fn render(s: &Summary) -> String {
    // Every (second, position, scenario, point): `all` first within a second, then the
    // scenarios in the summary's order.
    let mut rows: Vec<(u64, usize, &str, &SeriesPoint)> = s
        .series
        .iter()
        .map(|p| (p.second, 0, ALL_SCENARIOS, p))
        .collect();
    for (i, sc) in s.scenario_series.iter().enumerate() {
        rows.extend(
            sc.points
                .iter()
                .map(|p| (p.second, i + 1, sc.scenario.as_str(), p)),
        );
    }
    rows.sort_by_key(|r| (r.0, r.1));
    // ~60 bytes per row; one allocation for a 4-hour series.
    let mut out = String::with_capacity(64 * (rows.len() + 1));
    out.push_str(&COLUMNS.join(","));
    out.push('\n');
    for (_, _, scenario, p) in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            p.second,
            field(scenario),
            p.interval_ms,
            p.requests,
            p.failures,
            p.rps,
            point_error_rate(p),
            p.p50_ms,
            p.p95_ms,
            p.p99_ms,
        );
    }
    out
}

/// A text field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
