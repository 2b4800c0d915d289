//! Status rows and display strings: [`metrics_status`], [`scenario_statuses`] and
//! [`step_statuses`] turn merged data into the status types of [`volley_crds::status`], and
//! the `format_*` functions write the figures `kubectl get` shows.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::custom::{CustomKind, CustomMetric, CustomMetrics};
use crate::metrics::model::{Measurements, RunMetrics, add_scenario};
use crate::metrics::websocket::WsMeasurements;
use volley_crds::status::{
    CustomMetricStatus, LatencyMs, MetricsStatus, ScenarioStatus, StepStatus, WsStepStatus,
};

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The latency at quantile `q` in ms, 0 when empty. Same formula as threshold evaluation, so
/// status and thresholds always show the same figure.
pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        us_to_ms(h.value_at_quantile(q))
    }
}

pub(crate) fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub(crate) fn per_second(n: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        n as f64 / elapsed.as_secs_f64()
    }
}

/// A latency for `kubectl get`, to the histogram's 3 significant digits: `512us`, `44.2ms`,
/// `1.23s`, `125s`.
pub fn format_latency_ms(ms: f64) -> String {
    if ms > 0.0 && ms < 1.0 {
        format!("{}us", significant(ms * 1000.0, 3))
    } else if ms < 1000.0 {
        format!("{}ms", significant(ms, 3))
    } else {
        format!("{}s", significant(ms / 1000.0, 3))
    }
}

/// A share as a percentage for `kubectl get`: at most 2 decimals, `0%` only for exactly none,
/// `<0.01%` for fewer than one in 10 000, `>99.99%` for all but fewer than one in 10 000.
pub fn format_percent(part: u64, whole: u64) -> String {
    if part == 0 || whole == 0 {
        return "0%".to_owned();
    }
    if part >= whole {
        return "100%".to_owned();
    }
    // Integer comparisons, so exactly 1 in 10 000 is `0.01%` whatever the float rounding.
    let (part_wide, whole_wide) = (u128::from(part), u128::from(whole));
    if part_wide * 10_000 < whole_wide {
        return "<0.01%".to_owned();
    }
    if part_wide * 10_000 > whole_wide * 9_999 {
        return ">99.99%".to_owned();
    }
    let pct = part as f64 / whole as f64 * 100.0;
    let text = format!("{pct:.2}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Latency statistics of a histogram of microseconds, in milliseconds (all 0 when empty).
pub fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs::default();
    }
    LatencyMs {
        min: us_to_ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: quantile_ms(h, 0.5),
        p90: quantile_ms(h, 0.9),
        p95: quantile_ms(h, 0.95),
        p99: quantile_ms(h, 0.99),
        max: us_to_ms(h.max()),
    }
}

/// The status figures of `m` (normally [`RunMetrics::overall`]) after `elapsed`: rps over
/// `elapsed` (0 when it is zero), error rate (0 without requests), checks pass rate (absent
/// without checks), latency in ms from `latency` (all 0 when empty), and the display strings
/// `p95` (`-` when empty) and `errors`.
pub fn metrics_status(m: &Measurements, elapsed: Duration) -> MetricsStatus {
    let c = &m.counters;
    let h = &m.latency;
    let latency_ms = latency_ms(h);
    let checks = c.checks_passed.saturating_add(c.checks_failed);
    MetricsStatus {
        requests: c.requests,
        failures: c.failures,
        error_rate: ratio(c.failures, c.requests),
        rps: per_second(c.requests, elapsed),
        iterations: c.iterations,
        dropped_iterations: c.dropped_iterations,
        interrupted_iterations: c.interrupted_iterations,
        checks_pass_rate: (checks > 0).then(|| ratio(c.checks_passed, checks)),
        p95: if h.is_empty() {
            "-".to_owned()
        } else {
            format_latency_ms(latency_ms.p95)
        },
        latency_ms,
        errors_by_kind: c.errors.clone(),
        data_received_bytes: c.bytes_received,
        data_sent_bytes: c.bytes_sent,
        errors: format_percent(c.failures, c.requests),
        throughput: format_rate(per_second(c.requests, elapsed)),
        duration: volley_crds::Duration::from(Duration::from_secs(elapsed.as_secs())).to_string(),
        custom: custom_metric_rows(&m.custom, MAX_STATUS_CUSTOM_METRICS),
    }
}

/// Most custom metrics the status lists (an object in etcd must stay small).
pub const MAX_STATUS_CUSTOM_METRICS: usize = 20;

/// Rows for custom metrics, the first `limit` by name. Statistics use the same formula as
/// threshold evaluation (`value / 1000` of the histogram), so a threshold and its row agree.
pub fn custom_metric_rows(m: &CustomMetrics, limit: usize) -> Vec<CustomMetricStatus> {
    m.metrics
        .iter()
        .take(limit)
        .map(|(name, metric)| {
            let kind = metric.kind();
            let faults = metric.faults();
            let h = metric.histogram().filter(|h| !h.is_empty());
            let stat = |f: &dyn Fn(&Histogram<u64>) -> f64| h.map(|h| f(h) / 1000.0);
            let thousandths = |v: Option<u64>| v.map(|v| v as f64 / 1000.0);
            let (min, max) = match metric {
                // Exact: kept beside the histogram.
                CustomMetric::Gauge { min, max, .. } => (thousandths(*min), thousandths(*max)),
                _ => (stat(&|h| h.min() as f64), stat(&|h| h.max() as f64)),
            };
            CustomMetricStatus {
                name: name.clone(),
                kind: kind.name().to_owned(),
                unit: matches!(kind, CustomKind::Trend { time: true }).then(|| "ms".to_owned()),
                count: metric.count(),
                missing: faults.missing,
                invalid: faults.invalid,
                value: metric.value(),
                min,
                avg: stat(&|h| h.mean()),
                p50: stat(&|h| h.value_at_quantile(0.5) as f64),
                p95: stat(&|h| h.value_at_quantile(0.95) as f64),
                p99: stat(&|h| h.value_at_quantile(0.99) as f64),
                max,
            }
        })
        .collect()
}

/// One figure of a custom metric row for people: a time trend's as a latency (`44.2ms`),
/// anything else as a plain number to 4 significant digits (integer digits kept: `7275`).
pub fn format_custom_figure(row: &CustomMetricStatus, v: f64) -> String {
    if row.unit.as_deref() == Some("ms") {
        format_latency_ms(v)
    } else {
        significant(v, 4)
    }
}

/// A rate for `kubectl get`, to 3 significant digits: `30/s`, `1235/s`, `0.5/s`.
pub fn format_rate(per_second: f64) -> String {
    format!("{}/s", significant(per_second, 3))
}

/// One row per scenario but setup, in order. `rps` is over the run's `elapsed`.
pub fn scenario_statuses(run: &RunMetrics, elapsed: Duration) -> Vec<ScenarioStatus> {
    run.load_scenarios()
        .map(|s| {
            let mut m = Measurements::default();
            add_scenario(&mut m, s);
            let c = &m.counters;
            ScenarioStatus {
                scenario: s.name.clone(),
                requests: c.requests,
                iterations: c.iterations,
                dropped_iterations: c.dropped_iterations,
                interrupted_iterations: c.interrupted_iterations,
                error_rate: ratio(c.failures, c.requests),
                rps: per_second(c.requests, elapsed),
                p50_ms: quantile_ms(&m.latency, 0.5),
                p95_ms: quantile_ms(&m.latency, 0.95),
                p99_ms: quantile_ms(&m.latency, 0.99),
                sustainable_rate: None,
            }
        })
        .collect()
}

/// One row per step of every scenario, setup included, in order; only the first `limit`, so
/// the status stays bounded.
pub fn step_statuses(run: &RunMetrics, limit: usize) -> Vec<StepStatus> {
    run.scenarios
        .iter()
        .flat_map(|s| s.steps.iter().map(move |st| (s, st)))
        .take(limit)
        .map(|(s, st)| StepStatus {
            scenario: s.name.clone(),
            step: st.name.clone(),
            requests: st.m.counters.requests,
            error_rate: ratio(st.m.counters.failures, st.m.counters.requests),
            p50_ms: quantile_ms(&st.m.latency, 0.5),
            p95_ms: quantile_ms(&st.m.latency, 0.95),
            p99_ms: quantile_ms(&st.m.latency, 0.99),
            websocket: st.m.websocket.as_deref().map(ws_status),
        })
        .collect()
}

/// A step's WebSocket figures as a status row part.
pub fn ws_status(ws: &WsMeasurements) -> WsStepStatus {
    let c = &ws.counters;
    WsStepStatus {
        connections: c.connections,
        connect_error_rate: ratio(c.connect_failures(), c.connections),
        connect_p95_ms: quantile_ms(&ws.connect, 0.95),
        messages_sent: c.messages_sent,
        messages_received: c.messages_received,
        message_p50_ms: quantile_ms(&ws.message, 0.5),
        message_p95_ms: quantile_ms(&ws.message, 0.95),
        message_p99_ms: quantile_ms(&ws.message, 0.99),
        chunk_p95_ms: quantile_ms(&ws.chunk, 0.95),
        refused: c.error_count("refused"),
        handshake_errors: c.error_count("handshake"),
        closed_abnormally: c.error_count("closed"),
        expect_timeouts: c.error_count("expect_timeout"),
        open: c.open,
        open_max: c.open_max,
    }
}

/// `x` rounded to `digits` significant digits, without dropping integer
/// digits (`1234.5` stays `1235`), and without trailing zeros.
pub fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let integer_digits = x.abs().log10().floor() as i32 + 1;
    let decimals = (digits - integer_digits).clamp(0, 17) as usize;
    let text = format!("{x:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn custom_metric_rows_are_bounded_and_show_what_thresholds_see() {
        use crate::metrics::custom::{Observation, Reading};
        let mut m = CustomMetrics::default();
        for i in 0..25 {
            m.record(
                &format!("c{i:02}"),
                &Observation::Counter(Reading::Value(500)),
            );
        }
        m.metrics.insert(
            "lat".to_owned(),
            CustomMetric::new(CustomKind::Trend { time: true }),
        );
        m.record("lat", &Observation::Trend(Reading::Value(44_200)));
        m.record("lat", &Observation::Trend(Reading::Invalid));
        for (at_us, v) in [(1, 3_000), (2, 9_000), (3, 4_500)] {
            m.record(
                "q",
                &Observation::Gauge {
                    at_us,
                    reading: Reading::Value(v),
                },
            );
        }
        let rows = custom_metric_rows(&m, MAX_STATUS_CUSTOM_METRICS);
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[0].name, "c00");
        assert_eq!(rows[0].value, Some(0.5));
        let all = custom_metric_rows(&m, usize::MAX);
        assert_eq!(all.len(), 27);
        let lat = all.iter().find(|r| r.name == "lat").unwrap();
        assert_eq!(
            (lat.unit.as_deref(), lat.count, lat.invalid),
            (Some("ms"), 1, 1)
        );
        assert_eq!(format_custom_figure(lat, lat.p95.unwrap()), "44.2ms");
        let q = all.iter().find(|r| r.name == "q").unwrap();
        assert_eq!((q.value, q.min, q.max), (Some(4.5), Some(3.0), Some(9.0)));
        assert_eq!(format_custom_figure(q, 7275.0), "7275");
        assert_eq!(format_custom_figure(q, 0.125), "0.125");
    }

    use crate::metrics::histogram::record_latency;
    use crate::metrics::model::Counters;
    use crate::metrics::test_support::{record, spec};
    use crate::threshold::parse_threshold;
    use volley_crds::spec::ErrorKind;

    // ---- status ----

    #[test]
    fn metrics_status_on_known_data() {
        // 1..=1000 ms, 10 of them failed (5xx), 990 checks passed and 10 failed, over 10 s.
        let mut m = Measurements::default();
        for ms in 1..=1000u64 {
            let d = Duration::from_millis(ms);
            record_latency(&mut m.latency, d);
            record_latency(&mut m.latency_sent, d);
            m.counters.requests += 1;
            if ms % 100 == 0 {
                m.counters.count_error(ErrorKind::Status5xx);
                m.counters.checks_failed += 1;
            } else {
                m.counters.checks_passed += 1;
            }
        }
        m.counters.iterations = 500;
        m.counters.dropped_iterations = 3;
        m.counters.bytes_sent = 123;
        m.counters.bytes_received = 456;
        let s = metrics_status(&m, Duration::from_secs(10));
        assert_eq!(s.requests, 1000);
        assert_eq!(s.failures, 10);
        assert_eq!(s.error_rate, 0.01);
        assert_eq!(s.rps, 100.0);
        assert_eq!(s.iterations, 500);
        assert_eq!(s.dropped_iterations, 3);
        assert_eq!(s.checks_pass_rate, Some(0.99));
        assert_eq!(s.errors_by_kind, BTreeMap::from([("5xx".to_owned(), 10)]));
        assert_eq!((s.data_sent_bytes, s.data_received_bytes), (123, 456));
        let close = |actual: f64, expected: f64| {
            assert!(
                (actual - expected).abs() <= expected * 1e-3,
                "{actual} vs {expected}"
            );
        };
        close(s.latency_ms.min, 1.0);
        close(s.latency_ms.mean, 500.5);
        close(s.latency_ms.p50, 500.0);
        close(s.latency_ms.p90, 900.0);
        close(s.latency_ms.p95, 950.0);
        close(s.latency_ms.p99, 990.0);
        close(s.latency_ms.max, 1000.0);
        assert_eq!(
            s.latency_ms.p95,
            m.latency.value_at_quantile(0.95) as f64 / 1000.0
        );
        assert_eq!(s.p95, "950ms");
        assert_eq!(s.errors, "1%");
        assert_eq!(
            (s.throughput.as_str(), s.duration.as_str()),
            ("100/s", "10s")
        );

        // `kubectl get` once showed the rate as 29.993334814485667.
        let odd = metrics_status(&m, Duration::from_micros(33_340_741));
        assert_eq!(odd.rps, 1000.0 / 33.340741);
        assert_eq!(
            (odd.throughput.as_str(), odd.duration.as_str()),
            ("30/s", "33s")
        );
        assert_eq!(format_rate(1234.6), "1235/s");
        assert_eq!(format_rate(0.4567), "0.457/s");

        // Nothing yet.
        let empty = metrics_status(&Measurements::default(), Duration::ZERO);
        assert_eq!(empty.rps, 0.0);
        assert_eq!(empty.error_rate, 0.0);
        assert_eq!(empty.checks_pass_rate, None);
        assert_eq!(empty.latency_ms, LatencyMs::default());
        assert_eq!((empty.p95.as_str(), empty.errors.as_str()), ("-", "0%"));
        assert_eq!(
            (empty.throughput.as_str(), empty.duration.as_str()),
            ("0/s", "0s")
        );
        // Status and thresholds agree on the figure.
        let t = parse_threshold("p(95) < 1s").unwrap();
        let outcome = t.evaluate(&m.scope(&t.subject, Duration::from_secs(10)));
        assert_eq!(outcome.actual, Some(s.latency_ms.p95));
    }

    #[test]
    fn display_strings() {
        for (ms, text) in [
            (44.2, "44.2ms"),
            (44.223, "44.2ms"),
            (1234.0, "1.23s"),
            (950.271, "950ms"),
            (0.512, "512us"),
            (0.001, "1us"),
            (1.5, "1.5ms"),
            (125_300.0, "125s"),
            (3_600_000.0, "3600s"),
        ] {
            assert_eq!(format_latency_ms(ms), text, "{ms}");
        }
        for (part, whole, text) in [
            (0, 0, "0%"),
            (0, 1000, "0%"),
            (1, 10_000, "0.01%"),
            (1, 1_000_000, "<0.01%"),
            (42, 10_000, "0.42%"),
            (1, 3, "33.33%"),
            (15, 1000, "1.5%"),
            (1, 2, "50%"),
            (999_999, 1_000_000, ">99.99%"),
            (5, 5, "100%"),
        ] {
            assert_eq!(format_percent(part, whole), text, "{part}/{whole}");
        }
        let mut m = Measurements::default();
        record(&mut m, 44_200, 1, 0);
        assert_eq!(metrics_status(&m, Duration::from_secs(1)).p95, "44.2ms");
        let mut m = Measurements::default();
        record(&mut m, 1_230_000, 1, 0);
        assert_eq!(metrics_status(&m, Duration::from_secs(1)).p95, "1.23s");
    }

    #[test]
    fn scenario_and_step_rows() {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 50_000, 1, 0);
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5);
        record(run.step_mut(1, 1).unwrap(), 2_000, 10, 0);
        run.scenarios[1].iterations = Counters {
            iterations: 10,
            dropped_iterations: 1,
            ..Counters::default()
        };
        let rows = scenario_statuses(&run, Duration::from_secs(2));
        assert_eq!(rows.len(), 2, "no setup row");
        assert_eq!(rows[0].scenario, "light");
        assert_eq!(
            (
                rows[0].requests,
                rows[0].iterations,
                rows[0].dropped_iterations
            ),
            (20, 10, 1)
        );
        assert_eq!(rows[0].error_rate, 0.1);
        assert_eq!(rows[0].rps, 10.0);
        assert_eq!(rows[0].p50_ms, 2.0);
        assert_eq!(
            rows[0].p99_ms,
            run.step_total("light", "convert").unwrap().latency.max() as f64 / 1000.0
        );
        assert_eq!(rows[1].scenario, "heavy");
        assert_eq!(
            (rows[1].requests, rows[1].p95_ms, rows[1].rps),
            (0, 0.0, 0.0)
        );

        let steps = step_statuses(&run, 100);
        let names: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| (s.scenario.as_str(), s.step.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("setup", "login"),
                ("light", "convert"),
                ("light", "GET /api/jobs"),
                ("heavy", "upload")
            ]
        );
        assert_eq!((steps[1].requests, steps[1].error_rate), (10, 0.2));
        assert_eq!(
            steps[0].p50_ms,
            run.scenarios[0].steps[0].m.latency.max() as f64 / 1000.0
        );
        assert_eq!(step_statuses(&run, 2).len(), 2);
        assert!(step_statuses(&run, 0).is_empty());
    }
}
