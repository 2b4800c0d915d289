//! Threshold evaluation on a run's merged metrics: [`evaluate_thresholds`] judges every
//! threshold of a spec in its scope (the whole run, a scenario, or a step) with
//! [`ThresholdExpr::evaluate`](crate::threshold::ThresholdExpr::evaluate), [`abort_trigger`]
//! says whether a failure should stop the run now, and [`verdict`] turns the results into the
//! run's verdict.
//!
//! A baseline threshold (`p(95) < baseline * 1.1`) is judged on the baseline run's figure for
//! the same scope ([`Baseline`]). Without a baseline, or without that figure in it, it is
//! skipped: `passed` false, `skipped` saying why, and it neither fails nor passes the verdict.

use std::time::Duration;

use crate::compare::Baseline;
use crate::metrics::custom::CustomKind;
use crate::metrics::model::{Measurements, RunMetrics, add_scenario};
use crate::observe::Observation;
use crate::threshold::{ScopeMetrics, Subject, SubjectFigures, parse_threshold};
use volley_crds::spec::LoadTestSpec;
use volley_crds::status::{ThresholdStatus, Verdict};

impl Measurements {
    /// The figures thresholds on `subject` are evaluated on.
    pub(crate) fn scope(&self, subject: &Subject, elapsed: Duration) -> ScopeMetrics<'_> {
        let c = &self.counters;
        ScopeMetrics {
            subject: self.subject_figures(subject),
            latency_us: &self.latency,
            requests: c.requests,
            failures: c.failures,
            iterations: c.iterations,
            dropped_iterations: c.dropped_iterations,
            checks_passed: c.checks_passed,
            checks_failed: c.checks_failed,
            elapsed,
        }
    }

    /// What `subject` recorded in this scope, or `None` when it recorded nothing here (its
    /// thresholds then have no data). HTTP requests are the scope's own counters and latency.
    fn subject_figures(&self, subject: &Subject) -> Option<SubjectFigures<'_>> {
        match subject {
            Subject::Http => None,
            // WebSocket steps: `error_rate` is failed connection attempts (refused or
            // handshake) per attempt for `ws_connect`, and expected replies that never came
            // (timed out, or the connection ended) per message expecting one for `ws_message`.
            Subject::WsConnect => self.websocket.as_deref().map(|ws| SubjectFigures {
                histogram: Some(&ws.connect),
                failures: ws.counters.connect_failures(),
                attempts: ws.counters.connections,
                value: None,
            }),
            Subject::WsMessage => self.websocket.as_deref().map(|ws| SubjectFigures {
                histogram: Some(&ws.message),
                failures: ws
                    .counters
                    .messages_expecting
                    .saturating_sub(ws.message.len()),
                attempts: ws.counters.messages_expecting,
                value: None,
            }),
            Subject::WsChunk => self.websocket.as_deref().map(|ws| SubjectFigures {
                histogram: Some(&ws.chunk),
                failures: ws.counters.error_count("closed"),
                attempts: ws.counters.connected,
                value: None,
            }),
            // Custom metrics read from responses: the scope's merge of every step that
            // declares the name (validation holds the kind to the subject's).
            Subject::Trend { name, .. } | Subject::Counter(name) | Subject::Gauge(name) => {
                let m = self.custom.metrics.get(name)?;
                let kind_matches = matches!(
                    (subject, m.kind()),
                    (Subject::Trend { .. }, CustomKind::Trend { .. })
                        | (Subject::Counter(_), CustomKind::Counter)
                        | (Subject::Gauge(_), CustomKind::Gauge)
                );
                kind_matches.then(|| SubjectFigures {
                    histogram: m.histogram(),
                    failures: 0,
                    attempts: 0,
                    value: m.value(),
                })
            }
            // Prometheus queries are judged on the run's query results, not per scope: not
            // queried yet.
            Subject::Prom(_) => None,
        }
    }
}

/// One threshold evaluated on merged data.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdResult {
    /// The status row: expression as written, scope (`all`, `scenario NAME`,
    /// `scenario NAME step NAME`), actual value, passed. `aborted` is left false for the
    /// caller to set when this failure stops the run.
    pub status: ThresholdStatus,
    /// The threshold asks to stop the run as soon as it fails.
    pub abort_on_fail: bool,
    /// Do not act on `abort_on_fail` before the run has lasted this long (zero if unset).
    pub delay_abort_eval: Duration,
    /// When failed: a sentence for the status message, e.g. `p(95) 612ms >= 500ms`, with
    /// ` (scenario NAME step NAME)` appended for scoped thresholds; or what is wrong with the
    /// threshold itself.
    pub failure_message: Option<String>,
    /// There was data to judge. A threshold without data fails the final verdict, but must
    /// not abort a run that simply has not sent anything yet. False when skipped.
    pub has_data: bool,
}

impl ThresholdResult {
    /// Whether the threshold was not judged (`status.skipped` says why).
    pub fn skipped(&self) -> bool {
        self.status.skipped.is_some()
    }
}

/// Evaluates every threshold of `spec` on `run`'s merged data after `elapsed`. The scope is
/// the whole run without setup ([`RunMetrics::overall`]), one scenario, or one step of one
/// scenario; a step scope takes its `iterations` and `dropped_iterations` from its scenario.
///
/// Never panics and never skips a threshold: one that does not parse, or names a scenario or
/// step the spec does not have, fails with `actual` saying why (validation normally rejects
/// those earlier). A scope with no data fails (`no data`), except for counts, where zero is a
/// count. A scenario or step the spec has but `run` has no entry for yet counts as empty.
///
/// The one exception to "never skips": a baseline threshold is skipped, with the reason, when
/// `baseline` is unavailable or lacks the scope or the figure.
pub fn evaluate_thresholds(
    spec: &LoadTestSpec,
    run: &RunMetrics,
    elapsed: Duration,
    baseline: &Baseline,
) -> Vec<ThresholdResult> {
    spec.thresholds
        .iter()
        .map(|t| evaluate_one(&t.to_threshold(), spec, run, elapsed, baseline))
        .collect()
}

fn evaluate_one(
    t: &volley_crds::spec::Threshold,
    spec: &LoadTestSpec,
    run: &RunMetrics,
    elapsed: Duration,
    baseline: &Baseline,
) -> ThresholdResult {
    let scope = match (&t.scenario, &t.step) {
        (None, None) => "all".to_owned(),
        (Some(sc), None) => format!("scenario {sc}"),
        (Some(sc), Some(st)) => format!("scenario {sc} step {st}"),
        (None, Some(st)) => format!("step {st}"),
    };
    let result = |actual: String, passed: bool, has_data: bool, failure_message: Option<String>| {
        ThresholdResult {
            status: ThresholdStatus {
                expr: t.expr.clone(),
                scope: scope.clone(),
                actual,
                passed,
                aborted: false,
                skipped: None,
            },
            abort_on_fail: t.abort_on_fail,
            delay_abort_eval: t.delay_abort_eval.map(|d| d.get()).unwrap_or_default(),
            failure_message,
            has_data,
        }
    };
    let invalid = |why: String| {
        let message = format!("threshold `{}` ({scope}): {why}", t.expr);
        result(why, false, false, Some(message))
    };

    let expr = match parse_threshold(&t.expr) {
        Ok(expr) => expr,
        Err(e) => return invalid(format!("invalid threshold: {e}")),
    };
    let data: Measurements = match (&t.scenario, &t.step) {
        (None, None) => run.overall(),
        (None, Some(st)) => {
            return invalid(format!(
                "`step: {st}` needs `scenario` to say which scenario's step it is"
            ));
        }
        (Some(sc), step) => {
            let Some(spec_scenario) = spec.scenarios.iter().find(|s| &s.name == sc) else {
                let known: Vec<&str> = spec.scenarios.iter().map(|s| s.name.as_str()).collect();
                return invalid(format!(
                    "unknown scenario `{sc}` (scenarios: {})",
                    known.join(", ")
                ));
            };
            let scenario_data = run
                .load_scenarios()
                .find(|s| &s.name == sc)
                .cloned()
                .unwrap_or_default();
            match step {
                None => {
                    let mut m = Measurements::default();
                    add_scenario(&mut m, &scenario_data);
                    m
                }
                Some(st) => {
                    let is_request_step = spec_scenario
                        .steps
                        .iter()
                        .any(|s| crate::scenario::is_measured(s) && &s.display_name() == st);
                    if !is_request_step {
                        return invalid(format!(
                            "scenario `{sc}` has no request step named `{st}`"
                        ));
                    }
                    let mut m = scenario_data
                        .steps
                        .iter()
                        .find(|s| &s.name == st)
                        .map(|s| s.m.clone())
                        .unwrap_or_default();
                    m.counters.iterations = scenario_data.iterations.iterations;
                    m.counters.dropped_iterations = scenario_data.iterations.dropped_iterations;
                    m
                }
            }
        }
    };
    // The baseline's figure for this scope, or why there is none (the threshold is skipped).
    let baseline_figure = match (expr.baseline, baseline) {
        (None, _) => None,
        (Some(_), _) if expr.subject != Subject::Http => Some(Err(format!(
            "baselines hold figures of HTTP requests only, not of `{}`",
            expr.subject
        ))),
        (Some(_), Baseline::Unavailable(why)) => Some(Err(why.clone())),
        (Some(_), Baseline::Run(figures)) => Some(
            figures
                .scope(t.scenario.as_deref(), t.step.as_deref())
                .ok_or_else(|| format!("the baseline run has no {scope}"))
                .and_then(|f| f.value(expr.metric)),
        ),
    };
    let outcome = match baseline_figure {
        None => expr.evaluate(&data.scope(&expr.subject, elapsed)),
        Some(Ok(b)) => expr.evaluate_on_baseline(&data.scope(&expr.subject, elapsed), b),
        Some(Err(why)) => {
            let mut skipped = result(format!("skipped: {why}"), false, false, None);
            skipped.status.skipped = Some(why);
            return skipped;
        }
    };
    let failure_message = (!outcome.passed).then(|| {
        let message = match baseline_figure {
            Some(Ok(b)) => expr.baseline_failure_message(&outcome, b),
            _ => expr.failure_message(&outcome),
        };
        if scope == "all" {
            message
        } else {
            format!("{message} ({scope})")
        }
    });
    let has_data = outcome.actual.is_some();
    result(
        outcome.actual_display,
        outcome.passed,
        has_data,
        failure_message,
    )
}

/// Judges the `prom(NAME)` thresholds of `spec` on the run's Prometheus results, replacing
/// their entries in `results` ([`evaluate_thresholds`]'s, in the spec's order, where they had
/// no data: Prometheus is read after the run). A threshold judges every result of its query
/// ([`Observation::results_of`]: one per label value of a `by` query, one per scenario of a
/// `window: scenario` query unless the threshold is scoped to a scenario) and fails if any
/// fails, its message naming that result. A query that failed fails only the thresholds on
/// it, with its error as the actual value. A baseline threshold reads the baseline run's
/// result of the same query (scenario and label value), and is skipped when that run has none.
pub fn judge_prometheus(
    spec: &LoadTestSpec,
    results: &mut [ThresholdResult],
    observation: &Observation,
    baseline: &Baseline,
) {
    for (t, r) in spec.thresholds.iter().zip(results.iter_mut()) {
        let t = t.to_threshold();
        let Ok(expr) = parse_threshold(&t.expr) else {
            continue;
        };
        let Subject::Prom(name) = &expr.subject else {
            continue;
        };
        let rows = observation.results_of(name, t.scenario.as_deref());
        let judged = judge_prom_results(&expr, &rows, baseline);
        let fail = |r: &mut ThresholdResult, why: String| {
            r.status.actual = volley_crds::text::shorten(&why, 300);
            r.status.passed = false;
            r.status.skipped = None;
            r.has_data = false;
            r.failure_message = Some(format!("`{}`: {why}", t.expr));
        };
        match judged {
            PromJudgement::Missing => {
                let scope = t
                    .scenario
                    .as_ref()
                    .map(|s| format!(" for scenario {s}"))
                    .unwrap_or_default();
                fail(r, format!("no Prometheus query named {name} ran{scope}"));
            }
            PromJudgement::Error(why) => fail(r, why),
            PromJudgement::Skipped(why) => {
                r.status.actual = format!("skipped: {why}");
                r.status.passed = false;
                r.status.skipped = Some(why);
                r.has_data = false;
                r.failure_message = None;
            }
            PromJudgement::Judged {
                actual,
                passed,
                message,
            } => {
                r.status.actual = volley_crds::text::shorten(&actual, 300);
                r.status.passed = passed;
                r.status.skipped = None;
                r.has_data = true;
                r.failure_message = message;
            }
        }
    }
}

/// What a `prom()` threshold made of its query's results.
enum PromJudgement {
    /// The query did not run (for this scope).
    Missing,
    /// A result has no value: the first one's error, named.
    Error(String),
    /// A baseline threshold whose baseline has none of the results.
    Skipped(String),
    /// Judged on every result.
    Judged {
        actual: String,
        passed: bool,
        message: Option<String>,
    },
}

/// Judges `expr` on each of `rows` (one query's results): the first result without a value,
/// or the first that fails, decides; a single result reads as before (`42`), several are
/// named (`depth{pod="a"} 120`). A baseline threshold judges the results the baseline run
/// has a match for, and is skipped when it has none.
fn judge_prom_results(
    expr: &crate::threshold::ThresholdExpr,
    rows: &[&volley_crds::status::PrometheusResult],
    baseline: &Baseline,
) -> PromJudgement {
    if rows.is_empty() {
        return PromJudgement::Missing;
    }
    let named = rows.len() > 1 || rows.iter().any(|r| r.by.is_some() || r.scenario.is_some());
    let label = |r: &volley_crds::status::PrometheusResult| {
        if named {
            format!("{}: ", crate::observe::result_label(r))
        } else {
            String::new()
        }
    };
    let none = Measurements::default();
    let (mut judged, mut failed) = (0usize, Vec::new());
    let mut last_actual = String::new();
    let mut unmatched = None;
    for row in rows {
        let value = match (row.value, &row.error) {
            (Some(v), _) => v,
            (None, why) => {
                let why = why.as_deref().unwrap_or("no data");
                return PromJudgement::Error(format!("{}{why}", label(row)));
            }
        };
        let mut scope = none.scope(&expr.subject, Duration::ZERO);
        scope.subject = Some(SubjectFigures {
            value: Some(value),
            ..SubjectFigures::default()
        });
        let (outcome, message) = match (expr.baseline, baseline) {
            (None, _) => {
                let outcome = expr.evaluate(&scope);
                let message = expr.failure_message(&outcome);
                (outcome, message)
            }
            (Some(_), Baseline::Unavailable(why)) => return PromJudgement::Skipped(why.clone()),
            (Some(_), Baseline::Run(figures)) => {
                match figures.prometheus.as_ref().and_then(|o| o.matching(row)) {
                    Some(b) => {
                        let outcome = expr.evaluate_on_baseline(&scope, b);
                        let message = expr.baseline_failure_message(&outcome, b);
                        (outcome, message)
                    }
                    None => {
                        unmatched.get_or_insert_with(|| {
                            format!(
                                "the baseline run has no result of query {}",
                                crate::observe::result_label(row)
                            )
                        });
                        continue;
                    }
                }
            }
        };
        judged += 1;
        last_actual = format!("{}{}", label(row), outcome.actual_display);
        if !outcome.passed {
            failed.push((
                format!("{}{}", label(row), outcome.actual_display),
                format!("{}{message}", label(row)),
            ));
        }
    }
    if judged == 0 {
        return PromJudgement::Skipped(unmatched.unwrap_or_else(|| "no results".into()));
    }
    match failed.first() {
        None if judged == 1 => PromJudgement::Judged {
            actual: last_actual,
            passed: true,
            message: None,
        },
        None => PromJudgement::Judged {
            actual: format!("all {judged} results pass"),
            passed: true,
            message: None,
        },
        Some((actual, message)) => {
            let of = if judged > 1 {
                format!(" ({} of {judged} results fail)", failed.len())
            } else {
                String::new()
            };
            PromJudgement::Judged {
                actual: actual.clone(),
                passed: false,
                message: Some(format!("{message}{of}")),
            }
        }
    }
}

/// The first threshold whose failure should stop the run now: `abortOnFail`, failed on real
/// data, and past its `delayAbortEval`. Shared by `volley run` and the aggregator so both
/// abort on exactly the same rule.
pub fn abort_trigger(results: &[ThresholdResult], elapsed: Duration) -> Option<usize> {
    results.iter().position(|r| {
        r.abort_on_fail && !r.status.passed && r.has_data && elapsed >= r.delay_abort_eval
    })
}

/// Passed iff every result passed or was skipped; an empty list is Passed. Skipped results do
/// not count either way: with only skipped thresholds the run passes as if it had none.
pub fn verdict(results: &[ThresholdResult]) -> Verdict {
    if results.iter().all(|r| r.status.passed || r.skipped()) {
        Verdict::Passed
    } else {
        Verdict::Failed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::test_support::{record, spec};
    use volley_crds::spec::{Threshold, ThresholdSpec};

    fn with_thresholds(thresholds: Vec<ThresholdSpec>) -> LoadTestSpec {
        LoadTestSpec {
            thresholds,
            ..spec()
        }
    }

    fn scoped(expr: &str, scenario: Option<&str>, step: Option<&str>) -> ThresholdSpec {
        ThresholdSpec::Detailed(Threshold {
            expr: expr.to_owned(),
            scenario: scenario.map(str::to_owned),
            step: step.map(str::to_owned),
            ..Threshold::default()
        })
    }

    // ---- thresholds ----

    /// During the run a `prom()` threshold has no data (and so can never abort it); after the
    /// run it is judged on the query's result, a failed query failing only its own thresholds.
    #[test]
    fn prom_thresholds_are_judged_on_the_query_results_after_the_run() {
        use crate::observe::Observation;
        use volley_crds::status::PrometheusResult;
        let spec = with_thresholds(vec![
            ThresholdSpec::Expr("prom(depth) < 100".into()),
            ThresholdSpec::Expr("prom(p95) < 0.5".into()),
            ThresholdSpec::Expr("prom(down) < 1".into()),
            ThresholdSpec::Expr("p(95) < 1s".into()),
            ThresholdSpec::Expr("prom(depth) < baseline * 1.1".into()),
        ]);
        let run = threshold_run();
        let mut results =
            evaluate_thresholds(&spec, &run, Duration::from_secs(10), &Baseline::default());
        assert_eq!(results[0].status.actual, "no data");
        assert!(!results[0].has_data);
        let result = |name: &str, value: Option<f64>, error: Option<&str>| PrometheusResult {
            name: name.into(),
            query: "q".into(),
            value,
            error: error.map(String::from),
            ..Default::default()
        };
        let observation = Observation {
            results: vec![
                result("depth", Some(42.0), None),
                result("p95", Some(0.75), None),
                result(
                    "down",
                    None,
                    Some("cannot reach Prometheus at http://p:9090: refused"),
                ),
            ],
            ..Observation::default()
        };
        let http_before = results[3].clone();
        judge_prometheus(&spec, &mut results, &observation, &Baseline::default());
        let row = |r: &ThresholdResult| (r.status.actual.clone(), r.status.passed);
        assert_eq!(row(&results[0]), ("42".to_string(), true));
        assert_eq!(row(&results[1]), ("0.75".to_string(), false));
        assert_eq!(
            results[1].failure_message.as_deref(),
            Some("prom(p95) 0.75 >= 0.5")
        );
        assert_eq!(
            row(&results[2]),
            (
                "cannot reach Prometheus at http://p:9090: refused".to_string(),
                false
            )
        );
        assert_eq!(
            results[2].failure_message.as_deref(),
            Some("`prom(down) < 1`: cannot reach Prometheus at http://p:9090: refused")
        );
        // Other thresholds are untouched; a baseline threshold without a baseline is skipped.
        assert_eq!(results[3], http_before);
        assert!(results[4].skipped(), "{:?}", results[4]);
        // With a baseline that has the query's result, it is judged on it: 42 < 40 * 1.1.
        let mut figures = match baseline() {
            Baseline::Run(f) => *f,
            Baseline::Unavailable(_) => unreachable!(),
        };
        figures.prometheus = Some(Observation {
            results: vec![result("depth", Some(40.0), None)],
            ..Observation::default()
        });
        judge_prometheus(
            &spec,
            &mut results,
            &observation,
            &Baseline::Run(Box::new(figures)),
        );
        assert!(!results[4].skipped());
        assert!(results[4].status.passed, "{:?}", results[4]);
    }

    /// A `by` query's threshold judges every label value and names the one that fails; a
    /// `window: scenario` query's threshold judges its scenario's result when scoped to one,
    /// every scenario's otherwise.
    #[test]
    fn prom_thresholds_judge_every_series_and_each_scenario_of_their_query() {
        use crate::observe::Observation;
        use volley_crds::spec::Threshold;
        use volley_crds::status::PrometheusResult;
        let scoped = |expr: &str, scenario: &str| {
            ThresholdSpec::Detailed(Threshold {
                expr: expr.into(),
                scenario: Some(scenario.into()),
                ..Threshold::default()
            })
        };
        let spec = with_thresholds(vec![
            ThresholdSpec::Expr("prom(pods) < 100".into()),
            ThresholdSpec::Expr("prom(pods) < 10".into()),
            scoped("prom(wait) < 0.5", "light"),
            scoped("prom(wait) < 0.5", "heavy"),
            ThresholdSpec::Expr("prom(wait) < 0.5".into()),
            ThresholdSpec::Expr("prom(broken) < 1".into()),
        ]);
        let mut results = evaluate_thresholds(
            &spec,
            &threshold_run(),
            Duration::from_secs(10),
            &Baseline::default(),
        );
        let pod = |value: &str, v: f64| PrometheusResult {
            name: "pods".into(),
            value: Some(v),
            by: Some("pod".into()),
            label_value: Some(value.into()),
            ..PrometheusResult::default()
        };
        let wait = |scenario: &str, v: f64| PrometheusResult {
            name: "wait".into(),
            value: Some(v),
            scenario: Some(scenario.into()),
            ..PrometheusResult::default()
        };
        let observation = Observation {
            results: vec![
                pod("a", 3.0),
                pod("b", 42.0),
                pod("c", 12.0),
                wait("light", 0.1),
                wait("heavy", 0.9),
                PrometheusResult {
                    name: "broken".into(),
                    by: Some("pod".into()),
                    error: Some("a series has no label pod to report by: up{}".into()),
                    ..PrometheusResult::default()
                },
            ],
            ..Observation::default()
        };
        judge_prometheus(&spec, &mut results, &observation, &Baseline::default());
        let row = |r: &ThresholdResult| (r.status.actual.clone(), r.status.passed);
        assert_eq!(row(&results[0]), ("all 3 results pass".to_string(), true));
        assert_eq!(row(&results[1]), ("pods{pod=\"b\"}: 42".to_string(), false));
        assert_eq!(
            results[1].failure_message.as_deref(),
            Some("pods{pod=\"b\"}: prom(pods) 42 >= 10 (2 of 3 results fail)")
        );
        assert_eq!(
            row(&results[2]),
            ("wait (scenario light): 0.1".to_string(), true)
        );
        assert_eq!(
            row(&results[3]),
            ("wait (scenario heavy): 0.9".to_string(), false)
        );
        assert_eq!(
            results[3].failure_message.as_deref(),
            Some("wait (scenario heavy): prom(wait) 0.9 >= 0.5")
        );
        // Unscoped, it judges every scenario's result.
        assert!(!results[4].status.passed);
        assert_eq!(
            results[5].failure_message.as_deref(),
            Some(
                "`prom(broken) < 1`: broken{pod=...}: a series has no label pod to report by: up{}"
            )
        );
    }

    /// light/convert: 10 × 10 ms, 2 failed; light/GET /api/jobs: 10 × 2 ms; heavy/upload:
    /// 10 × 400 ms; setup/login: 1 × 5 s (must not count anywhere). 10 s elapsed.
    fn threshold_run() -> RunMetrics {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 5_000_000, 1, 0);
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5);
        record(run.step_mut(1, 1).unwrap(), 2_000, 10, 0);
        record(run.step_mut(2, 0).unwrap(), 400_000, 10, 0);
        run.scenarios[1].iterations.iterations = 10;
        run.scenarios[2].iterations.iterations = 10;
        run
    }

    fn evaluate(thresholds: Vec<ThresholdSpec>) -> Vec<ThresholdResult> {
        evaluate_thresholds(
            &with_thresholds(thresholds),
            &threshold_run(),
            Duration::from_secs(10),
            &Baseline::default(),
        )
    }

    #[test]
    fn thresholds_are_scoped() {
        let results = evaluate(vec![
            ThresholdSpec::Expr("max < 1s".to_owned()),
            ThresholdSpec::Expr("requests == 30".to_owned()),
            ThresholdSpec::Expr("iterations == 20".to_owned()),
            scoped("p(99) < 100ms", Some("light"), None),
            scoped("requests == 20", Some("light"), None),
            scoped("error_rate == 10%", Some("light"), None),
            scoped("error_rate == 20%", Some("light"), Some("convert")),
            scoped("max < 5ms", Some("light"), Some("GET /api/jobs")),
            scoped("iterations == 10", Some("light"), Some("convert")),
            scoped("p(50) < 100ms", Some("heavy"), None),
            scoped("rps > 1", Some("heavy"), Some("upload")),
        ]);
        let rows: Vec<(&str, &str, bool)> = results
            .iter()
            .map(|r| {
                (
                    r.status.scope.as_str(),
                    r.status.actual.as_str(),
                    r.status.passed,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("all", "400.1ms", true),
                ("all", "30", true),
                ("all", "20", true),
                ("scenario light", "10.01ms", true),
                ("scenario light", "20", true),
                ("scenario light", "10%", true),
                ("scenario light step convert", "20%", true),
                ("scenario light step GET /api/jobs", "2ms", true),
                ("scenario light step convert", "10", true),
                ("scenario heavy", "400.1ms", false),
                ("scenario heavy step upload", "1/s", false),
            ]
        );
        assert!(results.iter().all(|r| !r.status.aborted));
        assert_eq!(results[0].status.expr, "max < 1s");
        assert_eq!(results[0].failure_message, None);
        assert_eq!(
            results[9].failure_message.as_deref(),
            Some("p(50) 400.1ms >= 100ms (scenario heavy)")
        );
        assert_eq!(verdict(&results), Verdict::Failed);
        assert_eq!(verdict(&results[..9]), Verdict::Passed);
    }

    #[test]
    fn unscoped_failure_message_is_the_threshold_sentence() {
        let results = evaluate(vec![ThresholdSpec::Expr("p(95) < 100ms".to_owned())]);
        assert_eq!(
            results[0].failure_message.as_deref(),
            Some("p(95) 400.1ms >= 100ms")
        );
        assert!(!results[0].status.passed);
    }

    #[test]
    fn invalid_thresholds_fail_with_an_explanation() {
        let results = evaluate(vec![
            scoped("p(95) < 1s", Some("nope"), None),
            scoped("p(95) < 1s", Some("light"), Some("upload")),
            scoped("p(95) < 1s", Some("light"), Some("sleep 1s")),
            scoped("p(95) < 1s", None, Some("convert")),
            ThresholdSpec::Expr("p95 < 1s".to_owned()),
            scoped("p(95) < 1s", Some("setup"), None),
        ]);
        for r in &results {
            assert!(!r.status.passed, "{r:?}");
            let message = r.failure_message.as_deref().unwrap();
            assert!(message.contains(&r.status.actual), "{message}");
        }
        assert_eq!(
            results[0].status.actual,
            "unknown scenario `nope` (scenarios: light, heavy)"
        );
        assert_eq!(results[0].status.scope, "scenario nope");
        assert_eq!(
            results[1].status.actual,
            "scenario `light` has no request step named `upload`"
        );
        assert_eq!(
            results[2].status.actual,
            "scenario `light` has no request step named `sleep 1s`"
        );
        assert!(results[3].status.actual.contains("needs `scenario`"));
        assert_eq!(results[3].status.scope, "step convert");
        assert!(
            results[4]
                .status
                .actual
                .starts_with("invalid threshold: unknown metric `p95`")
        );
        assert!(
            results[5]
                .status
                .actual
                .starts_with("unknown scenario `setup`")
        );
        assert_eq!(verdict(&results), Verdict::Failed);
    }

    #[test]
    fn thresholds_without_data_fail() {
        let spec = with_thresholds(vec![
            ThresholdSpec::Expr("p(95) < 1s".to_owned()),
            ThresholdSpec::Expr("error_rate < 1%".to_owned()),
            ThresholdSpec::Expr("rps >= 0".to_owned()),
            ThresholdSpec::Expr("checks > 0%".to_owned()),
            ThresholdSpec::Expr("requests == 0".to_owned()),
            scoped("p(95) < 1s", Some("heavy"), Some("upload")),
        ]);
        // Only setup ran: the load scopes are empty.
        let mut run = RunMetrics::for_spec(&spec);
        record(run.step_mut(0, 0).unwrap(), 1000, 5, 0);
        for run in [run, RunMetrics::default()] {
            let results =
                evaluate_thresholds(&spec, &run, Duration::from_secs(10), &Baseline::default());
            let rows: Vec<(&str, bool)> = results
                .iter()
                .map(|r| (r.status.actual.as_str(), r.status.passed))
                .collect();
            assert_eq!(
                rows,
                [
                    ("no data", false),
                    ("no data", false),
                    ("no data", false),
                    ("no data", false),
                    ("0", true),
                    ("no data", false),
                ]
            );
            assert_eq!(
                results[0].failure_message.as_deref(),
                Some("p(95) has no data")
            );
            assert_eq!(verdict(&results), Verdict::Failed);
        }
    }

    /// A baseline that measured: overall p95 400ms; scenario light 5% errors; heavy/upload 10
    /// requests over 10 s (1/s).
    fn baseline() -> Baseline {
        use volley_crds::status::{LatencyMs, MetricsStatus, ScenarioStatus, StepStatus};
        Baseline::Run(Box::new(crate::compare::RunFigures {
            name: "before".to_owned(),
            duration_seconds: 10.0,
            metrics: MetricsStatus {
                requests: 30,
                latency_ms: LatencyMs {
                    p95: 400.0,
                    ..LatencyMs::default()
                },
                ..MetricsStatus::default()
            },
            scenarios: vec![ScenarioStatus {
                scenario: "light".to_owned(),
                requests: 20,
                error_rate: 0.05,
                ..ScenarioStatus::default()
            }],
            steps: vec![StepStatus {
                scenario: "heavy".to_owned(),
                step: "upload".to_owned(),
                requests: 10,
                ..StepStatus::default()
            }],
            prometheus: None,
        }))
    }

    fn evaluate_on(baseline: &Baseline, thresholds: Vec<ThresholdSpec>) -> Vec<ThresholdResult> {
        evaluate_thresholds(
            &with_thresholds(thresholds),
            &threshold_run(),
            Duration::from_secs(10),
            baseline,
        )
    }

    #[test]
    fn baseline_thresholds_compare_with_the_same_scope_of_the_baseline() {
        let results = evaluate_on(
            &baseline(),
            vec![
                ThresholdSpec::Expr("p(95) < baseline * 1.10".to_owned()),
                ThresholdSpec::Expr("p(95) < baseline * 0.5".to_owned()),
                scoped("error_rate <= baseline + 5%", Some("light"), None),
                scoped("error_rate <= baseline + 1%", Some("light"), None),
                scoped("rps > baseline * 0.95", Some("heavy"), Some("upload")),
                scoped("rps > baseline", Some("heavy"), Some("upload")),
            ],
        );
        let rows: Vec<(&str, bool, bool)> = results
            .iter()
            .map(|r| (r.status.actual.as_str(), r.status.passed, r.skipped()))
            .collect();
        assert_eq!(
            rows,
            [
                ("400.1ms", true, false),
                ("400.1ms", false, false),
                ("10%", true, false),
                ("10%", false, false),
                ("1/s", true, false),
                ("1/s", false, false),
            ]
        );
        assert_eq!(
            results[1].failure_message.as_deref(),
            Some("p(95) 400.1ms >= 200ms (baseline 400ms * 0.5)")
        );
        assert_eq!(
            results[3].failure_message.as_deref(),
            Some("error_rate 10% > 6% (baseline 5% + 1%) (scenario light)")
        );
        assert_eq!(
            results[5].failure_message.as_deref(),
            Some("rps 1/s <= 1/s (baseline 1/s) (scenario heavy step upload)")
        );
        assert!(results.iter().all(|r| r.has_data));
        assert_eq!(verdict(&results), Verdict::Failed);
    }

    #[test]
    fn baseline_thresholds_without_a_baseline_are_skipped_not_judged() {
        let thresholds = vec![
            ThresholdSpec::Expr("p(95) < baseline * 1.1".to_owned()),
            scoped("p(95) < baseline * 1.1", Some("heavy"), None),
            ThresholdSpec::Expr("p(99.9) < baseline * 1.1".to_owned()),
            ThresholdSpec::Detailed(Threshold {
                expr: "p(95) < baseline".to_owned(),
                abort_on_fail: true,
                ..Threshold::default()
            }),
        ];
        let none = evaluate_on(&Baseline::default(), thresholds.clone());
        for r in &none {
            assert_eq!(
                r.status.skipped.as_deref(),
                Some(crate::compare::NO_BASELINE)
            );
            assert!(!r.status.passed && !r.has_data && r.failure_message.is_none());
        }
        assert_eq!(abort_trigger(&none, Duration::from_secs(60)), None);
        let partial = evaluate_on(&baseline(), thresholds);
        let skipped: Vec<Option<&str>> = partial
            .iter()
            .map(|r| r.status.skipped.as_deref())
            .collect();
        assert_eq!(skipped[0], None, "judged on the baseline's p95");
        assert_eq!(skipped[1], Some("the baseline run has no scenario heavy"));
        assert!(skipped[2].unwrap().contains("not p(99.9)"), "{skipped:?}");
        assert_eq!(skipped[3], None);

        // Skipped thresholds decide nothing: the others do, and alone they pass like none.
        let fixed = |expr: &str| ThresholdSpec::Expr(expr.to_owned());
        let skipped = || fixed("p(95) < baseline * 1.1");
        let run = |t: Vec<ThresholdSpec>| verdict(&evaluate_on(&Baseline::default(), t));
        assert_eq!(run(vec![skipped()]), Verdict::Passed);
        assert_eq!(run(vec![skipped(), fixed("max < 1s")]), Verdict::Passed);
        assert_eq!(run(vec![skipped(), fixed("max < 1ms")]), Verdict::Failed);
    }

    #[test]
    fn abort_on_fail_works_on_baseline_values() {
        let threshold = |expr: &str| {
            ThresholdSpec::Detailed(Threshold {
                expr: expr.to_owned(),
                abort_on_fail: true,
                ..Threshold::default()
            })
        };
        let failing = evaluate_on(&baseline(), vec![threshold("p(95) < baseline * 0.5")]);
        assert_eq!(abort_trigger(&failing, Duration::from_secs(1)), Some(0));
        let holding = evaluate_on(&baseline(), vec![threshold("p(95) < baseline * 2")]);
        assert_eq!(abort_trigger(&holding, Duration::from_secs(1)), None);
    }

    #[test]
    fn abort_trigger_needs_failure_data_and_the_delay() {
        let r = |passed: bool, abort: bool, has_data: bool, delay: u64| ThresholdResult {
            status: ThresholdStatus {
                passed,
                ..ThresholdStatus::default()
            },
            abort_on_fail: abort,
            delay_abort_eval: Duration::from_secs(delay),
            failure_message: None,
            has_data,
        };
        let t = Duration::from_secs(10);
        assert_eq!(abort_trigger(&[r(false, true, true, 0)], t), Some(0));
        assert_eq!(abort_trigger(&[r(true, true, true, 0)], t), None, "passing");
        assert_eq!(
            abort_trigger(&[r(false, false, true, 0)], t),
            None,
            "no abortOnFail"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, false, 0)], t),
            None,
            "no data yet"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, true, 30)], t),
            None,
            "before the delay"
        );
        assert_eq!(
            abort_trigger(&[r(false, true, true, 30), r(false, true, true, 5)], t),
            Some(1)
        );
    }

    #[test]
    fn abort_settings_are_carried() {
        let results = evaluate(vec![
            ThresholdSpec::Detailed(Threshold {
                expr: "p(99) < 1s".to_owned(),
                scenario: Some("light".to_owned()),
                step: Some("convert".to_owned()),
                abort_on_fail: true,
                delay_abort_eval: Some(volley_crds::Duration::from_secs(30)),
            }),
            ThresholdSpec::Expr("rps > 1".to_owned()),
        ]);
        assert!(results[0].abort_on_fail);
        assert_eq!(results[0].delay_abort_eval, Duration::from_secs(30));
        assert!(!results[1].abort_on_fail);
        assert_eq!(results[1].delay_abort_eval, Duration::ZERO);
        assert_eq!(results[1].status.actual, "3/s");
    }

    #[test]
    fn verdict_of_results() {
        assert_eq!(verdict(&[]), Verdict::Passed);
        let results = evaluate(vec![ThresholdSpec::Expr("requests > 0".to_owned())]);
        assert_eq!(verdict(&results), Verdict::Passed);
        let results = evaluate(vec![
            ThresholdSpec::Expr("requests > 0".to_owned()),
            ThresholdSpec::Expr("requests > 1000".to_owned()),
        ]);
        assert_eq!(verdict(&results), Verdict::Failed);
    }
}
