//! The sustainable-rate probe: the plateaus of `ramping-arrival-rate` scenarios (stages that
//! hold the rate the previous stage reached), what each plateau's window measured, and the
//! highest offered rate at which the thresholds held.
//!
//! A probe steps the rate up in plateaus until the target gives way. Whole-run thresholds
//! cannot say where that happened: they average the good plateaus with the bad. So each
//! plateau is judged on its own window (the difference of two cumulative snapshots, exact like
//! every other figure here) by the thresholds that describe a window — latency statistics,
//! `error_rate`, `checks`, `dropped_iterations` — scoped to the whole run or to the plateau's
//! scenario. `rps`, `requests` and `iterations` describe the whole run and are not applied.
//!
//! The sustainable rate is the highest plateau that held before the first one that did not:
//! a plateau that recovers after a failure does not count, since the probe has already found
//! the limit by then.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::model::Measurements;
use crate::metrics::status::{per_second, quantile_ms, ratio};
use crate::scenario::Workload;
use crate::threshold::{Metric, Subject, ThresholdExpr, parse_threshold};
use volley_crds::spec::LoadTestSpec;
use volley_crds::status::ScenarioStatus;

/// One plateau of a ramping-arrival-rate scenario: a stage that holds its rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Plateau {
    /// The scenario's name.
    pub scenario: String,
    /// The stage's index in `stages`.
    pub stage: usize,
    /// The offered rate in iterations per second, total across runners.
    pub rate: f64,
    /// When the plateau begins, since the run's start (`startTime` included).
    pub begin: Duration,
    /// When it ends.
    pub end: Duration,
}

/// The plateaus of every ramping-arrival-rate scenario of `spec`, scenario by scenario, in
/// time order. A stage is a plateau when its target equals the rate it starts from (the
/// previous stage's target, or `startRate` for the first) and it lasts.
pub fn plateaus(spec: &LoadTestSpec) -> Vec<Plateau> {
    let mut out = Vec::new();
    for sc in &spec.scenarios {
        // Only a ramping arrival rate has rate plateaus; a scenario validation would refuse
        // has none either.
        let Ok(Workload::RampingArrivalRate {
            start_rate,
            time_unit: unit,
            stages,
            ..
        }) = Workload::of(sc)
        else {
            continue;
        };
        let mut at = sc.start_time.get();
        let mut from = start_rate;
        for (i, stage) in stages.iter().enumerate() {
            let end = at.saturating_add(stage.duration.get());
            if stage.target == from && stage.target > 0 && end > at {
                out.push(Plateau {
                    scenario: sc.name.clone(),
                    stage: i,
                    rate: stage.target as f64 / unit.as_secs_f64(),
                    begin: at,
                    end,
                });
            }
            at = end;
            from = stage.target;
        }
    }
    out
}

/// What one plateau's window measured and whether it held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlateauResult {
    /// The scenario's name.
    pub scenario: String,
    /// The stage's index in `stages`.
    pub stage: usize,
    /// The offered rate in iterations per second.
    pub rate: f64,
    /// Seconds since the start where the measured window began (at or after the plateau's
    /// begin: the window holds only requests of the plateau).
    pub from_seconds: f64,
    /// Seconds since the start where the measured window ended.
    pub to_seconds: f64,
    /// False when the run ended inside the plateau (e.g. aborted there).
    pub complete: bool,
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub failures: u64,
    /// failures / requests.
    pub error_rate: f64,
    /// Iterations run per second over the window, failed ones included: below `rate` when
    /// `maxVUs` or the runners could not keep up (then `droppedIterations` says so too).
    pub achieved_rate: f64,
    /// Iterations due in the window that found no free VU.
    pub dropped_iterations: u64,
    /// Median latency of the window's requests, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Whether every applicable threshold held on the window; absent when no threshold
    /// applies to a window (then there is no sustainable rate either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// The failed thresholds, as `p(95) 612ms >= 500ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// Whether a threshold describes a window (see the module documentation). Prometheus queries
/// are made once for the whole run.
fn judged_per_window(expr: &ThresholdExpr) -> bool {
    !matches!(expr.subject, Subject::Prom(_))
        && !matches!(
            expr.metric,
            Metric::Rps | Metric::Requests | Metric::Iterations | Metric::Count
        )
}

/// Judges `plateau` on `window` (the plateau scenario's measurements between two cumulative
/// snapshots, taken `from` and `to` after the start).
pub fn judge_plateau(
    spec: &LoadTestSpec,
    plateau: &Plateau,
    window: &Measurements,
    from: Duration,
    to: Duration,
    complete: bool,
) -> PlateauResult {
    let length = to.saturating_sub(from);
    let mut held = None;
    let mut failed = Vec::new();
    for t in &spec.thresholds {
        let t = t.to_threshold();
        let applies =
            t.step.is_none() && t.scenario.as_ref().is_none_or(|s| *s == plateau.scenario);
        let Ok(expr) = parse_threshold(&t.expr) else {
            continue;
        };
        // A baseline threshold compares whole runs; a plateau is a window of one.
        if !applies || !judged_per_window(&expr) || expr.baseline.is_some() {
            continue;
        }
        let outcome = expr.evaluate(&window.scope(&expr.subject, length));
        held = Some(held.unwrap_or(true) && outcome.passed);
        if !outcome.passed {
            failed.push(expr.failure_message(&outcome));
        }
    }
    let c = &window.counters;
    let quantile = |q: f64| quantile_ms(&window.latency, q);
    PlateauResult {
        scenario: plateau.scenario.clone(),
        stage: plateau.stage,
        rate: plateau.rate,
        from_seconds: from.as_secs_f64(),
        to_seconds: to.as_secs_f64(),
        complete,
        requests: c.requests,
        failures: c.failures,
        error_rate: ratio(c.failures, c.requests),
        achieved_rate: per_second(c.iterations, length),
        dropped_iterations: c.dropped_iterations,
        p50_ms: quantile(0.5),
        p95_ms: quantile(0.95),
        p99_ms: quantile(0.99),
        held,
        failed,
    }
}

/// The probe's answer for one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SustainableRate {
    /// The scenario's name.
    pub scenario: String,
    /// The highest plateau rate (iterations per second) that held before the first that did
    /// not; absent when the first plateau already failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// The first plateau rate that did not hold; absent when every measured plateau held (the
    /// limit is higher than the probe went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<f64>,
    /// Why that plateau failed: its failed thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SustainableRate {
    /// The answer in words, e.g. `400.0/s (the next plateau, 500.0/s, did not hold)`.
    pub fn describe(&self) -> String {
        match (self.rate, self.failed_at) {
            (Some(rate), Some(next)) => {
                format!("{rate:.1}/s (the next plateau, {next:.1}/s, did not hold)")
            }
            (Some(rate), None) => {
                format!("at least {rate:.1}/s (every plateau held: probe higher)")
            }
            (None, Some(first)) => format!("below {first:.1}/s (the first plateau did not hold)"),
            (None, None) => "unknown".to_string(),
        }
    }
}

/// The sustainable rate of every scenario with judged plateaus, from its results in time order.
pub fn sustainable_rates(results: &[PlateauResult]) -> Vec<SustainableRate> {
    let mut out: Vec<SustainableRate> = Vec::new();
    for r in results {
        let Some(held) = r.held else { continue };
        let i = match out.iter().position(|s| s.scenario == r.scenario) {
            Some(i) => i,
            None => {
                out.push(SustainableRate {
                    scenario: r.scenario.clone(),
                    rate: None,
                    failed_at: None,
                    reason: None,
                });
                out.len() - 1
            }
        };
        let entry = &mut out[i];
        if entry.failed_at.is_some() {
            // The limit is found; a plateau that recovers after it does not move it.
            continue;
        }
        if held {
            entry.rate = Some(entry.rate.map_or(r.rate, |best| best.max(r.rate)));
        } else {
            entry.failed_at = Some(r.rate);
            entry.reason = Some(r.failed.join("; "));
        }
    }
    out
}

/// Sets each scenario row's `sustainableRate` from `rates`.
pub fn annotate(scenarios: &mut [ScenarioStatus], rates: &[SustainableRate]) {
    for row in scenarios {
        row.sustainable_rate = rates
            .iter()
            .find(|r| r.scenario == row.scenario)
            .and_then(|r| r.rate);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;
    use crate::metrics::histogram::record_latency;
    use crate::metrics::model::Measurements;

    fn spec(scenarios: &str, thresholds: &str) -> LoadTestSpec {
        let yaml = format!(
            "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: p}}\nspec:\n  \
             target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n{scenarios}\n  \
             thresholds: {thresholds}\n"
        );
        parse_manifest(&yaml).unwrap().spec
    }

    const PROBE: &str = "    - name: probe
      executor: ramping-arrival-rate
      startRate: 100
      startTime: 5s
      steps: [{request: {url: /}}]
      stages:
        - {duration: 10s, target: 100}
        - {duration: 2s, target: 200}
        - {duration: 10s, target: 200}
        - {duration: 0s, target: 400}
        - {duration: 10s, target: 400}
        - {duration: 5s, target: 0}
    - name: light
      executor: constant-vus
      vus: 1
      duration: 5s
      steps: [{request: {url: /}}]";

    #[test]
    fn plateaus_are_the_stages_that_hold_their_rate() {
        let s = spec(PROBE, "[]");
        let found: Vec<(usize, f64, u64, u64)> = plateaus(&s)
            .iter()
            .map(|p| (p.stage, p.rate, p.begin.as_secs(), p.end.as_secs()))
            .collect();
        // The ramp (stage 1), the jump (3) and the ramp down (5) are not plateaus.
        assert_eq!(
            found,
            [(0, 100.0, 5, 15), (2, 200.0, 17, 27), (4, 400.0, 27, 37)]
        );
        let per_minute = spec(
            "    - name: m
      executor: ramping-arrival-rate
      timeUnit: 1m
      steps: [{request: {url: /}}]
      stages: [{duration: 1m, target: 120}, {duration: 1m, target: 120}]",
            "[]",
        );
        let p = plateaus(&per_minute);
        assert_eq!(p.len(), 1, "the first stage ramps from 0");
        assert_eq!((p[0].rate, p[0].begin.as_secs()), (2.0, 60));
    }

    fn window(requests: u64, failures: u64, iterations: u64, latency_ms: u64) -> Measurements {
        let mut m = Measurements::default();
        for _ in 0..requests {
            record_latency(&mut m.latency, Duration::from_millis(latency_ms));
        }
        m.counters.requests = requests;
        m.counters.failures = failures;
        m.counters.iterations = iterations;
        m
    }

    #[test]
    fn a_plateau_is_judged_by_the_window_thresholds_of_its_scope() {
        let s = spec(
            PROBE,
            "['error_rate < 1%', 'rps > 1000000', \
             {expr: 'p(95) < 100ms', scenario: probe}, \
             {expr: 'p(95) < 1ms', scenario: light}, \
             {expr: 'p(95) < 1ms', scenario: probe, step: GET /}]",
        );
        let p = &plateaus(&s)[1];
        let from = Duration::from_secs(18);
        let to = Duration::from_secs(26);
        let good = judge_plateau(&s, p, &window(1600, 0, 1600, 20), from, to, true);
        assert_eq!(good.held, Some(true), "{good:?}");
        assert_eq!(good.achieved_rate, 200.0);
        assert_eq!((good.requests, good.error_rate), (1600, 0.0));
        assert!((good.p95_ms - 20.0).abs() < 0.1, "{}", good.p95_ms);

        let slow = judge_plateau(&s, p, &window(1600, 32, 1600, 250), from, to, true);
        assert_eq!(slow.held, Some(false));
        assert_eq!(slow.failed.len(), 2, "{:?}", slow.failed);
        assert!(
            slow.failed[0].starts_with("error_rate 2"),
            "{:?}",
            slow.failed
        );
        assert!(slow.failed[1].starts_with("p(95) 25"), "{:?}", slow.failed);

        let none = spec(PROBE, "['rps > 10']");
        let r = judge_plateau(&none, p, &window(10, 0, 10, 1), from, to, true);
        assert_eq!(r.held, None, "rps describes the run, not a window");
    }

    fn result(rate: f64, held: Option<bool>) -> PlateauResult {
        PlateauResult {
            scenario: "probe".into(),
            stage: 0,
            rate,
            from_seconds: 0.0,
            to_seconds: 1.0,
            complete: true,
            requests: 1,
            failures: 0,
            error_rate: 0.0,
            achieved_rate: rate,
            dropped_iterations: 0,
            p50_ms: 1.0,
            p95_ms: 1.0,
            p99_ms: 1.0,
            held,
            failed: if held == Some(false) {
                vec![format!("error_rate at {rate}")]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn the_sustainable_rate_is_the_last_plateau_that_held_before_the_first_failure() {
        let rates = |held: &[(f64, Option<bool>)]| {
            let results: Vec<PlateauResult> = held.iter().map(|(r, h)| result(*r, *h)).collect();
            sustainable_rates(&results)
        };
        let found = rates(&[
            (100.0, Some(true)),
            (200.0, Some(true)),
            (300.0, Some(false)),
            (400.0, Some(true)),
        ]);
        assert_eq!(
            found,
            [SustainableRate {
                scenario: "probe".into(),
                rate: Some(200.0),
                failed_at: Some(300.0),
                reason: Some("error_rate at 300".into()),
            }],
            "a plateau after the first failure does not count"
        );
        let all = rates(&[(100.0, Some(true)), (200.0, Some(true))]);
        assert_eq!((all[0].rate, all[0].failed_at), (Some(200.0), None));
        let first = rates(&[(100.0, Some(false)), (200.0, Some(true))]);
        assert_eq!((first[0].rate, first[0].failed_at), (None, Some(100.0)));
        assert!(
            rates(&[(100.0, None)]).is_empty(),
            "no threshold, no answer"
        );
    }
}
