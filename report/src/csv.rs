//! The per-second series as CSV: one row per second per scenario, with the columns of
//! [`COLUMNS`] in that order (documented in `docs/reference.md`, "Report formats"). Every
//! point of the summary is written, however long the run: nothing is downsampled here.
//!
//! The summary's series merges every scenario, so each row's `scenario` is [`ALL_SCENARIOS`]
//! (the same word a threshold's scope uses for the whole run).

use std::fmt::Write as _;

use crate::{Summary, point_error_rate};

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
    // ~60 bytes per row; one allocation for a 4-hour series.
    let mut out = String::with_capacity(64 * (s.series.len() + 1));
    out.push_str(&COLUMNS.join(","));
    out.push('\n');
    for p in &s.series {
        let _ = writeln!(
            out,
            "{},{ALL_SCENARIOS},{},{},{},{},{},{},{},{}",
            p.second,
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
