//! Runs compared with runs: [`RunFigures`] (what a finished run's `summary.json` says about
//! each scope), which baseline thresholds (`p(95) < baseline * 1.10`) read their baseline from,
//! and [`compare`], which puts two runs side by side for `volley compare` and checks them
//! against a [`Budget`].
//!
//! Everything here is data in, data out: reading the files and printing are the CLI's.

use std::fmt::Write as _;

use serde::Deserialize;
use volley_crds::status::{MetricsStatus, ScenarioStatus, StepStatus};

use crate::metrics::status::{format_latency_ms, format_rate, significant};
use crate::observe::Observation;
use crate::threshold::Metric;

/// The figures of a finished run that comparisons need, read from its `summary.json` (the
/// document `volley run --out` writes and the report ConfigMap holds): the load phase's
/// length, the overall metrics, one row per scenario and one per step. The rest of the
/// document (series, histograms, thresholds) is not needed and not read.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunFigures {
    /// The LoadTest's name.
    #[serde(default)]
    pub name: String,
    /// Wall time of the load phase, in seconds: a step's rps is its requests over this.
    pub duration_seconds: f64,
    /// All scenarios merged (setup excluded).
    pub metrics: MetricsStatus,
    /// Per scenario.
    #[serde(default)]
    pub scenarios: Vec<ScenarioStatus>,
    /// Per step.
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    /// The Prometheus queries' results, when the run made them.
    #[serde(default)]
    pub prometheus: Option<Observation>,
}

/// Why a document is not a usable summary: the field (a path like `metrics.rps`, or `.` for
/// the whole document) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct SummaryError {
    /// Where in the document.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Reads the figures of a `summary.json`.
pub fn parse_summary(json: &[u8]) -> Result<RunFigures, SummaryError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let figures: RunFigures = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        SummaryError {
            field,
            message: e.inner().to_string(),
        }
    })?;
    let bad = |field: &str, value: f64| SummaryError {
        field: field.to_owned(),
        message: format!("must be a finite number of at least 0, not {value}"),
    };
    if !figures.duration_seconds.is_finite() || figures.duration_seconds < 0.0 {
        return Err(bad("durationSeconds", figures.duration_seconds));
    }
    Ok(figures)
}

/// What one scope (the whole run, a scenario or a step) of a finished run measured. Latencies
/// in milliseconds, ratios as fractions, rates per second: each metric's canonical unit.
/// Figures the summary keeps only for some scopes are `None` elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScopeFigures {
    /// Requests sent.
    pub requests: u64,
    /// failures / requests.
    pub error_rate: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 90th percentile latency (the whole run only).
    pub p90_ms: Option<f64>,
    /// Mean latency (the whole run only).
    pub mean_ms: Option<f64>,
    /// Fastest request (the whole run only).
    pub min_ms: Option<f64>,
    /// Slowest request (the whole run only).
    pub max_ms: Option<f64>,
    /// Share of checks that passed (the whole run only, and only when checks ran).
    pub checks: Option<f64>,
    /// Completed iterations (of the scenario, for a step).
    pub iterations: Option<u64>,
    /// Dropped iterations (of the scenario, for a step).
    pub dropped_iterations: Option<u64>,
}

impl RunFigures {
    /// The value of the Prometheus result matching `r` (same query, scenario and label
    /// value) in this run, when it has one.
    pub fn prometheus_value(&self, r: &volley_crds::status::PrometheusResult) -> Option<f64> {
        self.prometheus.as_ref()?.matching(r)
    }

    /// The whole run.
    pub fn overall(&self) -> ScopeFigures {
        let m = &self.metrics;
        let l = &m.latency_ms;
        ScopeFigures {
            requests: m.requests,
            error_rate: m.error_rate,
            rps: m.rps,
            p50_ms: l.p50,
            p95_ms: l.p95,
            p99_ms: l.p99,
            p90_ms: Some(l.p90),
            mean_ms: Some(l.mean),
            min_ms: Some(l.min),
            max_ms: Some(l.max),
            checks: m.checks_pass_rate,
            iterations: Some(m.iterations),
            dropped_iterations: Some(m.dropped_iterations),
        }
    }

    /// A scope as thresholds name it: the whole run (`None, None`), a scenario, or a step of
    /// a scenario; `None` when the summary has no row for it.
    pub fn scope(&self, scenario: Option<&str>, step: Option<&str>) -> Option<ScopeFigures> {
        match (scenario, step) {
            (None, None) => Some(self.overall()),
            (None, Some(_)) => None,
            (Some(sc), None) => {
                self.scenarios
                    .iter()
                    .find(|s| s.scenario == sc)
                    .map(|s| ScopeFigures {
                        requests: s.requests,
                        error_rate: s.error_rate,
                        rps: s.rps,
                        p50_ms: s.p50_ms,
                        p95_ms: s.p95_ms,
                        p99_ms: s.p99_ms,
                        iterations: Some(s.iterations),
                        dropped_iterations: Some(s.dropped_iterations),
                        ..ScopeFigures::default()
                    })
            }
            (Some(sc), Some(st)) => {
                let row = self
                    .steps
                    .iter()
                    .find(|s| s.scenario == sc && s.step == st)?;
                // As in threshold evaluation: a step's iterations are its scenario's, and its
                // rate is over the whole run.
                let scenario = self.scenarios.iter().find(|s| s.scenario == sc);
                Some(ScopeFigures {
                    requests: row.requests,
                    error_rate: row.error_rate,
                    rps: if self.duration_seconds > 0.0 {
                        row.requests as f64 / self.duration_seconds
                    } else {
                        0.0
                    },
                    p50_ms: row.p50_ms,
                    p95_ms: row.p95_ms,
                    p99_ms: row.p99_ms,
                    iterations: scenario.map(|s| s.iterations),
                    dropped_iterations: scenario.map(|s| s.dropped_iterations),
                    ..ScopeFigures::default()
                })
            }
        }
    }
}

impl ScopeFigures {
    /// `metric`'s figure in its canonical unit, or why there is none: the scope sent no
    /// requests (latencies, `error_rate`, `rps`), ran no checks, or the summary does not keep
    /// that figure for this scope (it keeps p50/p95/p99 everywhere; p90, avg, min, max and
    /// checks for the whole run only).
    pub fn value(&self, metric: Metric) -> Result<f64, String> {
        let kept = |v: Option<f64>| {
            v.ok_or_else(|| {
                format!(
                    "the baseline summary keeps {metric} for the whole run only \
                     (per scenario and step: p(50), p(95), p(99), error_rate, rps, requests)"
                )
            })
        };
        let needs_requests = !matches!(
            metric,
            Metric::Requests | Metric::Iterations | Metric::DroppedIterations | Metric::Checks
        );
        if needs_requests && self.requests == 0 {
            return Err(format!(
                "the baseline sent no requests here, so it has no {metric}"
            ));
        }
        match metric {
            Metric::Percentile(50.0) => Ok(self.p50_ms),
            Metric::Med => Ok(self.p50_ms),
            Metric::Percentile(95.0) => Ok(self.p95_ms),
            Metric::Percentile(99.0) => Ok(self.p99_ms),
            Metric::Percentile(90.0) => kept(self.p90_ms),
            Metric::Percentile(_) => Err(format!(
                "the baseline summary keeps p(50), p(90), p(95) and p(99), not {metric}"
            )),
            Metric::Avg => kept(self.mean_ms),
            Metric::Min => kept(self.min_ms),
            Metric::Max => kept(self.max_ms),
            Metric::ErrorRate => Ok(self.error_rate),
            Metric::Rps => Ok(self.rps),
            Metric::Checks => self.checks.ok_or_else(|| {
                "the baseline ran no checks here (or keeps checks for the whole run only)"
                    .to_owned()
            }),
            Metric::Requests => Ok(self.requests as f64),
            Metric::Iterations => kept(self.iterations.map(|n| n as f64)),
            Metric::DroppedIterations => kept(self.dropped_iterations.map(|n| n as f64)),
            // Only thresholds with a subject use these; their baselines are looked up by
            // subject, never here.
            Metric::Count | Metric::Value => Err(format!(
                "the baseline summary has no {metric} of HTTP requests"
            )),
        }
    }
}

/// What baseline thresholds compare with: a finished run's figures, or why there are none
/// (no baseline configured, a ConfigMap that is missing or does not hold a summary). Either
/// way the run goes ahead; without figures, baseline thresholds are skipped with the reason.
#[derive(Clone, Debug, PartialEq)]
pub enum Baseline {
    /// The baseline run's figures.
    Run(Box<RunFigures>),
    /// No figures, and why: the reason a skipped threshold reports.
    Unavailable(String),
}

/// The reason baseline thresholds are skipped when nothing named a baseline.
pub const NO_BASELINE: &str =
    "no baseline run to compare with (volley run --baseline FILE, or spec.baseline)";

impl Default for Baseline {
    fn default() -> Self {
        Baseline::Unavailable(NO_BASELINE.to_owned())
    }
}

/// How much worse run B may be than run A before `volley compare` calls it a regression.
/// Unset budgets are not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Budget {
    /// p95 may grow by at most this fraction of A's (0.10: 10% slower).
    pub max_p95_regression: Option<f64>,
    /// The error rate may grow by at most this many percentage points, as a fraction (0.005:
    /// from 0.1% to 0.6%).
    pub max_error_rate_increase: Option<f64>,
    /// rps must stay at least this fraction of A's (0.95).
    pub min_rps_ratio: Option<f64>,
}

/// A percentage from the command line (`10%`, `0.5%`) as a fraction; with `bare_ratio`, a
/// plain number (`0.95`) is accepted as a fraction too.
pub fn parse_percent(text: &str, bare_ratio: bool) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, percent) = match trimmed.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (trimmed, false),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("`{text}` is not a percentage like 10% or 0.5%"))?;
    match (percent, bare_ratio) {
        (true, _) => Ok(value / 100.0),
        (false, true) => Ok(value),
        (false, false) => Err(format!(
            "`{text}` needs the `%`: write `{number}%` (or `{}%` if {number} was a fraction)",
            significant(value * 100.0, 15)
        )),
    }
}

/// One figure of one scope in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct FigureChange {
    /// `p50`, `p95`, `p99`, `rps` or `error rate`.
    pub figure: &'static str,
    /// A's value in its canonical unit.
    pub a: f64,
    /// B's value.
    pub b: f64,
    /// The change from A to B: percent of A for latencies and rps (`None` when A is 0),
    /// percentage points for the error rate.
    pub change: Option<f64>,
    /// When B exceeds the budget for this figure: the budget, in words.
    pub regressed: Option<String>,
}

/// One scope in both runs: its figures, or which run lacks it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeComparison {
    /// `all`, `scenario NAME`, or `scenario NAME step NAME`, as in threshold results.
    pub scope: String,
    /// The figures when both runs have the scope with requests; else empty.
    pub figures: Vec<FigureChange>,
    /// When the scope cannot be compared: why (`only in A`, `no requests in B`).
    pub note: Option<String>,
}

/// Two runs side by side.
#[derive(Clone, Debug, PartialEq)]
pub struct RunComparison {
    /// The whole run, then each scenario, then each step (setup included), in A's order and
    /// then B's extra scopes.
    pub scopes: Vec<ScopeComparison>,
    /// The Prometheus queries both runs have a value of, in A's order: what the server
    /// measured before and after (never judged against the budget).
    pub prometheus: Vec<QueryChange>,
}

/// One Prometheus query's value in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryChange {
    /// The query's name.
    pub name: String,
    /// A's value.
    pub a: f64,
    /// B's value.
    pub b: f64,
    /// The change from A to B in percent of A (`None` when A is 0).
    pub change: Option<f64>,
}

/// The queries both runs have a value of, in A's order.
fn compare_prometheus(a: &RunFigures, b: &RunFigures) -> Vec<QueryChange> {
    let Some(observed) = &a.prometheus else {
        return Vec::new();
    };
    observed
        .results
        .iter()
        .filter_map(|r| {
            let (va, vb) = (r.value?, b.prometheus_value(r)?);
            Some(QueryChange {
                name: crate::observe::result_label(r),
                a: va,
                b: vb,
                change: (va != 0.0).then(|| (vb - va) / va.abs() * 100.0),
            })
        })
        .collect()
}

impl RunComparison {
    /// Whether any figure exceeded its budget.
    pub fn regressed(&self) -> bool {
        self.scopes
            .iter()
            .flat_map(|s| &s.figures)
            .any(|f| f.regressed.is_some())
    }
}

/// Compares run B with run A, scope by scope, and marks each figure of B that exceeds
/// `budget`. A scope either run lacks, or where either sent no requests, is listed with a note
/// and never counts as a regression: a regression needs two measurements.
pub fn compare(a: &RunFigures, b: &RunFigures, budget: &Budget) -> RunComparison {
    let mut keys: Vec<(Option<String>, Option<String>)> = vec![(None, None)];
    for run in [a, b] {
        for s in &run.scenarios {
            keys.push((Some(s.scenario.clone()), None));
        }
    }
    for run in [a, b] {
        for s in &run.steps {
            keys.push((Some(s.scenario.clone()), Some(s.step.clone())));
        }
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    let scopes = keys
        .into_iter()
        .map(|(sc, st)| {
            let scope = match (&sc, &st) {
                (Some(sc), Some(st)) => format!("scenario {sc} step {st}"),
                (Some(sc), None) => format!("scenario {sc}"),
                _ => "all".to_owned(),
            };
            let fa = a.scope(sc.as_deref(), st.as_deref());
            let fb = b.scope(sc.as_deref(), st.as_deref());
            let note = match (&fa, &fb) {
                (None, _) => Some("only in B".to_owned()),
                (_, None) => Some("only in A".to_owned()),
                (Some(x), Some(y)) if x.requests == 0 && y.requests == 0 => {
                    Some("no requests in either run".to_owned())
                }
                (Some(x), _) if x.requests == 0 => Some("no requests in A".to_owned()),
                (_, Some(y)) if y.requests == 0 => Some("no requests in B".to_owned()),
                _ => None,
            };
            let figures = match (fa, fb, &note) {
                (Some(x), Some(y), None) => compare_scope(&x, &y, budget),
                _ => Vec::new(),
            };
            ScopeComparison {
                scope,
                figures,
                note,
            }
        })
        .collect();
    RunComparison {
        scopes,
        prometheus: compare_prometheus(a, b),
    }
}

fn compare_scope(a: &ScopeFigures, b: &ScopeFigures, budget: &Budget) -> Vec<FigureChange> {
    let percent = |a: f64, b: f64| (a > 0.0).then(|| (b - a) / a * 100.0);
    let latency = |figure, a: f64, b: f64, budget: Option<f64>| FigureChange {
        figure,
        a,
        b,
        change: percent(a, b),
        regressed: budget
            .filter(|max| a > 0.0 && b > a * (1.0 + max) * (1.0 + 1e-9))
            .map(|max| format!("more than +{}%", significant(max * 100.0, 4))),
    };
    vec![
        latency("p50", a.p50_ms, b.p50_ms, None),
        latency("p95", a.p95_ms, b.p95_ms, budget.max_p95_regression),
        latency("p99", a.p99_ms, b.p99_ms, None),
        FigureChange {
            figure: "rps",
            a: a.rps,
            b: b.rps,
            change: percent(a.rps, b.rps),
            regressed: budget
                .min_rps_ratio
                .filter(|min| b.rps < a.rps * min * (1.0 - 1e-9))
                .map(|min| format!("below {}% of A", significant(min * 100.0, 4))),
        },
        FigureChange {
            figure: "error rate",
            a: a.error_rate,
            b: b.error_rate,
            change: Some((b.error_rate - a.error_rate) * 100.0),
            regressed: budget
                .max_error_rate_increase
                .filter(|max| b.error_rate - a.error_rate > max + 1e-12)
                .map(|max| {
                    format!(
                        "more than +{} percentage points",
                        significant(max * 100.0, 4)
                    )
                }),
        },
    ]
}

/// The comparison as text: a header naming the runs, then one block per scope with A, B and
/// the change, `REGRESSED` and the budget on each figure over it, and a last line saying
/// whether any budget was exceeded.
pub fn render_comparison(
    (a_label, a): (&str, &RunFigures),
    (b_label, b): (&str, &RunFigures),
    comparison: &RunComparison,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A: {a_label} ({}, {}s)\nB: {b_label} ({}, {}s)",
        a.name,
        significant(a.duration_seconds, 4),
        b.name,
        significant(b.duration_seconds, 4)
    );
    for scope in &comparison.scopes {
        let _ = writeln!(out, "\n{}", scope.scope);
        if let Some(note) = &scope.note {
            let _ = writeln!(out, "  ({note})");
            continue;
        }
        let _ = writeln!(out, "  {:<11}{:>12}{:>12}{:>12}", "", "A", "B", "change");
        for f in &scope.figures {
            let show = |v: f64| match f.figure {
                "rps" => format_rate(v),
                "error rate" => format!("{}%", significant(v * 100.0, 3)),
                _ => format_latency_ms(v),
            };
            let change = match (f.figure, f.change) {
                (_, None) => "-".to_owned(),
                ("error rate", Some(pp)) => format!("{:+} pp", rounded(pp)),
                (_, Some(pct)) => format!("{:+}%", rounded(pct)),
            };
            let _ = write!(
                out,
                "  {:<11}{:>12}{:>12}{:>12}",
                f.figure,
                show(f.a),
                show(f.b),
                change
            );
            match &f.regressed {
                Some(budget) => {
                    let _ = writeln!(out, "  REGRESSED ({budget})");
                }
                None => out.push('\n'),
            }
        }
    }
    if !comparison.prometheus.is_empty() {
        let _ = writeln!(out, "\nprometheus");
        let _ = writeln!(out, "  {:<15}{:>12}{:>12}{:>12}", "", "A", "B", "change");
        for q in &comparison.prometheus {
            let change = q
                .change
                .map_or("-".to_owned(), |pct| format!("{:+}%", rounded(pct)));
            let _ = writeln!(
                out,
                "  {:<15}{:>12}{:>12}{:>12}",
                q.name,
                significant(q.a, 4),
                significant(q.b, 4),
                change
            );
        }
    }
    let regressions = comparison
        .scopes
        .iter()
        .flat_map(|s| &s.figures)
        .filter(|f| f.regressed.is_some())
        .count();
    if regressions == 0 {
        out.push_str("\nno budget exceeded\n");
    } else {
        let _ = writeln!(out, "\n{regressions} figure(s) over budget");
    }
    out
}

/// `x` to 2 decimals, without trailing zeros.
fn rounded(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use volley_crds::status::LatencyMs;

    fn run(p95: f64, rps: f64, error_rate: f64) -> RunFigures {
        RunFigures {
            name: "t".to_owned(),
            duration_seconds: 10.0,
            metrics: MetricsStatus {
                requests: 100,
                error_rate,
                rps,
                latency_ms: LatencyMs {
                    p50: p95 / 2.0,
                    p95,
                    p99: p95 * 2.0,
                    ..LatencyMs::default()
                },
                ..MetricsStatus::default()
            },
            scenarios: vec![ScenarioStatus {
                scenario: "browse".to_owned(),
                requests: 100,
                error_rate,
                rps,
                p50_ms: p95 / 2.0,
                p95_ms: p95,
                p99_ms: p95 * 2.0,
                ..ScenarioStatus::default()
            }],
            steps: vec![StepStatus {
                scenario: "browse".to_owned(),
                step: "GET /".to_owned(),
                requests: 100,
                error_rate,
                p50_ms: p95 / 2.0,
                p95_ms: p95,
                p99_ms: p95 * 2.0,
                websocket: None,
            }],
            prometheus: None,
        }
    }

    #[test]
    fn scopes_read_the_summary_rows() {
        let r = run(100.0, 10.0, 0.01);
        assert_eq!(r.overall().p95_ms, 100.0);
        let step = r.scope(Some("browse"), Some("GET /")).unwrap();
        assert_eq!(step.rps, 10.0, "a step's rate is its requests over the run");
        assert_eq!(step.value(Metric::Percentile(99.0)), Ok(200.0));
        assert!(r.scope(Some("nope"), None).is_none());
        assert!(r.scope(None, Some("GET /")).is_none());
        let scenario = r.scope(Some("browse"), None).unwrap();
        assert!(
            scenario
                .value(Metric::Avg)
                .unwrap_err()
                .contains("whole run only")
        );
        assert!(
            scenario
                .value(Metric::Percentile(99.9))
                .unwrap_err()
                .contains("not p(99.9)")
        );
        let empty = ScopeFigures::default();
        assert!(
            empty
                .value(Metric::Percentile(95.0))
                .unwrap_err()
                .contains("no requests")
        );
        assert_eq!(empty.value(Metric::Requests), Ok(0.0));
    }

    #[test]
    fn comparison_marks_only_figures_over_budget() {
        let a = run(100.0, 100.0, 0.001);
        let b = run(115.0, 96.0, 0.004);
        let budget = Budget {
            max_p95_regression: Some(0.10),
            max_error_rate_increase: Some(0.005),
            min_rps_ratio: Some(0.95),
        };
        let c = compare(&a, &b, &budget);
        assert_eq!(
            c.scopes
                .iter()
                .map(|s| s.scope.as_str())
                .collect::<Vec<_>>(),
            ["all", "scenario browse", "scenario browse step GET /"]
        );
        for scope in &c.scopes {
            let over: Vec<&str> = scope
                .figures
                .iter()
                .filter(|f| f.regressed.is_some())
                .map(|f| f.figure)
                .collect();
            // p95 +15% > 10%; rps 96% >= 95%; errors +0.3 pp <= 0.5 pp. The step's rps is
            // 100/10 s in both runs.
            assert_eq!(over, ["p95"], "{}", scope.scope);
        }
        assert!(c.regressed());
        let p95 = &c.scopes[0].figures[1];
        assert!((p95.change.unwrap() - 15.0).abs() < 1e-9);
        // Within every budget, and without budgets, nothing regressed.
        assert!(!compare(&a, &run(109.0, 96.0, 0.005), &budget).regressed());
        assert!(!compare(&a, &run(1000.0, 1.0, 1.0), &Budget::default()).regressed());
        let text = render_comparison(("a.json", &a), ("b.json", &b), &c);
        assert!(text.contains("REGRESSED (more than +10%)"), "{text}");
        assert!(text.contains("+15%"), "{text}");
        assert!(text.ends_with("3 figure(s) over budget\n"), "{text}");
    }

    #[test]
    fn error_rate_and_rps_budgets() {
        let a = run(100.0, 100.0, 0.001);
        let budget = Budget {
            max_error_rate_increase: Some(0.005),
            min_rps_ratio: Some(0.95),
            ..Budget::default()
        };
        let c = compare(&a, &run(100.0, 90.0, 0.007), &budget);
        let over: Vec<&str> = c.scopes[0]
            .figures
            .iter()
            .filter(|f| f.regressed.is_some())
            .map(|f| f.figure)
            .collect();
        assert_eq!(over, ["rps", "error rate"]);
    }

    #[test]
    fn scopes_in_one_run_only_are_noted_not_regressions() {
        let a = run(100.0, 100.0, 0.0);
        let mut b = run(100.0, 100.0, 0.0);
        b.scenarios[0].scenario = "checkout".to_owned();
        b.steps[0].requests = 0;
        let c = compare(&a, &b, &Budget::default());
        let notes: Vec<(&str, Option<&str>)> = c
            .scopes
            .iter()
            .map(|s| (s.scope.as_str(), s.note.as_deref()))
            .collect();
        assert_eq!(
            notes,
            [
                ("all", None),
                ("scenario browse", Some("only in A")),
                ("scenario checkout", Some("only in B")),
                ("scenario browse step GET /", Some("no requests in B")),
            ]
        );
    }

    /// Queries both runs have a value of are compared (the seeds' "queue wait p95 before vs
    /// after"); a query only one run has, or that failed in either, is left out.
    #[test]
    fn prometheus_results_are_compared_when_both_runs_have_them() {
        let observed = |values: &[(&str, Option<f64>)]| {
            Some(Observation {
                results: values
                    .iter()
                    .map(|(name, value)| volley_crds::status::PrometheusResult {
                        name: (*name).into(),
                        query: "q".into(),
                        value: *value,
                        error: value.is_none().then(|| "no data".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Observation::default()
            })
        };
        let mut a = run(100.0, 100.0, 0.0);
        a.prometheus = observed(&[
            ("queue_wait_p95_s", Some(0.5)),
            ("failed_in_b", Some(1.0)),
            ("only_a", Some(3.0)),
            ("zero", Some(0.0)),
        ]);
        let mut b = run(100.0, 100.0, 0.0);
        b.prometheus = observed(&[
            ("zero", Some(2.0)),
            ("failed_in_b", None),
            ("queue_wait_p95_s", Some(0.25)),
        ]);
        let c = compare(&a, &b, &Budget::default());
        assert_eq!(
            c.prometheus,
            vec![
                QueryChange {
                    name: "queue_wait_p95_s".into(),
                    a: 0.5,
                    b: 0.25,
                    change: Some(-50.0)
                },
                QueryChange {
                    name: "zero".into(),
                    a: 0.0,
                    b: 2.0,
                    change: None
                },
            ]
        );
        assert!(!c.regressed());
        let text = render_comparison(("a.json", &a), ("b.json", &b), &c);
        assert!(
            text.contains("\nprometheus\n") && text.contains("queue_wait_p95_s"),
            "{text}"
        );
        assert!(text.contains("-50%"), "{text}");
        // Without results in one run, nothing to compare.
        b.prometheus = None;
        assert!(compare(&a, &b, &Budget::default()).prometheus.is_empty());
    }

    #[test]
    fn summaries_name_the_bad_field() {
        let e =
            parse_summary(br#"{"durationSeconds": 1, "metrics": {"requests": "x"}}"#).unwrap_err();
        assert_eq!(e.field, "metrics.requests");
        let e = parse_summary(br#"{"name": "t"}"#).unwrap_err();
        assert!(e.message.contains("durationSeconds"), "{e}");
        let e = parse_summary(b"not json").unwrap_err();
        assert!(e.to_string().starts_with("field `.`"), "{e}");
    }

    #[test]
    fn budgets_are_percentages() {
        assert_eq!(parse_percent("10%", false), Ok(0.10));
        assert_eq!(parse_percent("0.5 %", false), Ok(0.005));
        assert!(parse_percent("10", false).unwrap_err().contains("`10%`"));
        assert_eq!(parse_percent("0.95", true), Ok(0.95));
        assert_eq!(parse_percent("95%", true), Ok(0.95));
        assert!(parse_percent("-1%", false).is_err());
        assert!(parse_percent("lots", true).is_err());
    }
}
