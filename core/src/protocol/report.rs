//! The runner report wire codec (`docs/reference.md` §3.3): [`Report`] is the runner →
//! aggregator body, the run model with each histogram as base64 of HdrHistogram's V2 compressed
//! format ([`crate::protocol::histogram`], whose decoder treats its input as hostile).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::error::MetricsError;
use crate::metrics::model::{Counters, Measurements, RunMetrics, ScenarioMetrics, StepMetrics};
use crate::metrics::websocket::{WsCounters, WsMeasurements};
use crate::protocol::custom::{
    CustomMetricReport, MAX_REPORT_CUSTOM_METRICS, decode_custom, encode_custom,
};
use crate::protocol::histogram::{decode_histogram, encode_histogram};

/// Most steps (over all scenarios) a [`Report`] may carry. Each decoded step holds three
/// histograms of about 190 KiB each, so this bounds what one report can make the aggregator
/// allocate. A step with WebSocket figures holds three more and counts twice.
pub const MAX_REPORT_STEPS: usize = 512;

/// A runner's report to the aggregator (`docs/reference.md` §3.3): everything it measured since
/// the start, so a lost or repeated report loses nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The runner's index.
    pub runner: u32,
    /// Increases with every report of this runner; the aggregator keeps the highest.
    pub seq: u64,
    /// Time since the common start, in ms.
    pub elapsed_ms: u64,
    /// The runner has finished; this is its final report.
    pub done: bool,
    /// Per-scenario data, setup first when there is one.
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario of a [`Report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Iteration-level counters.
    pub iterations: Counters,
    /// Per-step data, in step order.
    pub steps: Vec<StepReport>,
}

/// One step of a [`ScenarioReport`]. Histograms are HdrHistogram V2 compressed, in base64
/// (standard alphabet, padded), as made by [`encode_histogram`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// The step's counters.
    pub counters: Counters,
    /// [`Measurements::latency`], encoded.
    pub latency: String,
    /// [`Measurements::latency_sent`], encoded.
    pub latency_sent: String,
    /// [`Measurements::failed_latency`], encoded.
    pub failed_latency: String,
    /// [`Measurements::custom`]: the step's custom metrics, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomMetricReport>,
    /// [`Measurements::websocket`], for `websocket` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsStepReport>,
}

/// The WebSocket figures of a [`StepReport`]: counters and three encoded histograms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WsStepReport {
    /// [`WsMeasurements::counters`].
    pub counters: WsCounters,
    /// [`WsMeasurements::connect`], encoded.
    pub connect: String,
    /// [`WsMeasurements::message`], encoded.
    pub message: String,
    /// [`WsMeasurements::chunk`], encoded.
    pub chunk: String,
}

impl Report {
    /// Encodes `m` as report number `seq` of runner `runner`.
    pub fn from_metrics(
        runner: u32,
        seq: u64,
        elapsed: Duration,
        done: bool,
        m: &RunMetrics,
    ) -> Result<Report, MetricsError> {
        let scenarios = m
            .scenarios
            .iter()
            .map(|s| {
                let steps = s
                    .steps
                    .iter()
                    .map(|st| {
                        let enc = |h: &Histogram<u64>, field: &'static str| {
                            encode_histogram(h).map_err(|e| e.in_step(&s.name, &st.name, field))
                        };
                        Ok(StepReport {
                            name: st.name.clone(),
                            counters: st.m.counters.clone(),
                            latency: enc(&st.m.latency, "latency")?,
                            latency_sent: enc(&st.m.latency_sent, "latencySent")?,
                            failed_latency: enc(&st.m.failed_latency, "failedLatency")?,
                            custom: encode_custom(&st.m.custom)
                                .map_err(|e| e.in_step(&s.name, &st.name, "custom"))?,
                            websocket: match st.m.websocket.as_deref() {
                                Some(ws) => Some(WsStepReport {
                                    counters: ws.counters.clone(),
                                    connect: enc(&ws.connect, "websocket.connect")?,
                                    message: enc(&ws.message, "websocket.message")?,
                                    chunk: enc(&ws.chunk, "websocket.chunk")?,
                                }),
                                None => None,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, MetricsError>>()?;
                Ok(ScenarioReport {
                    name: s.name.clone(),
                    iterations: s.iterations.clone(),
                    steps,
                })
            })
            .collect::<Result<Vec<_>, MetricsError>>()?;
        Ok(Report {
            runner,
            seq,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            done,
            scenarios,
        })
    }

    /// Decodes the report's histograms. Fails, naming the scenario, step and histogram, on
    /// anything [`decode_histogram`] rejects, and on more than [`MAX_REPORT_STEPS`] steps.
    pub fn to_metrics(&self) -> Result<RunMetrics, MetricsError> {
        let steps = self
            .scenarios
            .iter()
            .flat_map(|s| &s.steps)
            .fold(0usize, |n, st| {
                n.saturating_add(1 + usize::from(st.websocket.is_some()))
            });
        if steps > MAX_REPORT_STEPS {
            return Err(MetricsError::TooManySteps {
                steps,
                limit: MAX_REPORT_STEPS,
            });
        }
        let custom = self
            .scenarios
            .iter()
            .flat_map(|s| &s.steps)
            .fold(0usize, |n, st| n.saturating_add(st.custom.len()));
        if custom > MAX_REPORT_CUSTOM_METRICS {
            return Err(MetricsError::TooManyCustomMetrics {
                metrics: custom,
                limit: MAX_REPORT_CUSTOM_METRICS,
            });
        }
        let scenarios = self
            .scenarios
            .iter()
            .map(|s| {
                let steps = s
                    .steps
                    .iter()
                    .map(|st| {
                        let dec = |text: &str, field: &'static str| {
                            decode_histogram(text).map_err(|e| e.in_step(&s.name, &st.name, field))
                        };
                        Ok(StepMetrics {
                            name: st.name.clone(),
                            m: Measurements {
                                latency: dec(&st.latency, "latency")?,
                                latency_sent: dec(&st.latency_sent, "latencySent")?,
                                failed_latency: dec(&st.failed_latency, "failedLatency")?,
                                counters: st.counters.clone(),
                                custom: decode_custom(&st.custom)
                                    .map_err(|e| e.in_step(&s.name, &st.name, "custom"))?,
                                websocket: match &st.websocket {
                                    Some(ws) => Some(Box::new(WsMeasurements {
                                        connect: dec(&ws.connect, "websocket.connect")?,
                                        message: dec(&ws.message, "websocket.message")?,
                                        chunk: dec(&ws.chunk, "websocket.chunk")?,
                                        counters: ws.counters.clone(),
                                    })),
                                    None => None,
                                },
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, MetricsError>>()?;
                Ok(ScenarioMetrics {
                    name: s.name.clone(),
                    iterations: s.iterations.clone(),
                    steps,
                })
            })
            .collect::<Result<Vec<_>, MetricsError>>()?;
        Ok(RunMetrics { scenarios })
    }

    /// The elapsed time as a duration.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::histogram::record_latency;
    use crate::metrics::test_support::{Rng, record, request_step, spec};
    use volley_crds::spec::{ErrorKind, LoadTestSpec, Scenario};
    // ---- reports ----

    fn busy_run(seed: u64, requests_per_step: u64, sigma: f64) -> RunMetrics {
        let spec = LoadTestSpec {
            scenarios: vec![Scenario {
                name: "checkout".to_owned(),
                steps: (0..10)
                    .map(|i| request_step(Some(&format!("step-{i}")), "GET", "/x"))
                    .collect(),
                ..Scenario::default()
            }],
            ..LoadTestSpec::default()
        };
        let mut run = RunMetrics::for_spec(&spec);
        let mut rng = Rng(seed);
        for step in 0..10 {
            let median = 5_000.0 * (step as f64 + 1.0);
            let m = run.step_mut(0, step).unwrap();
            for i in 0..requests_per_step {
                // Latency from the schedule >= latency from the send.
                let sent = rng.lognormal_us(median, sigma).max(100);
                let queued = if rng.next().is_multiple_of(50) {
                    rng.next() % 200_000
                } else {
                    0
                };
                record_latency(&mut m.latency, Duration::from_micros(sent + queued));
                record_latency(&mut m.latency_sent, Duration::from_micros(sent));
                m.counters.requests += 1;
                m.counters.bytes_sent += 300;
                m.counters.bytes_received += 2000;
                m.counters.checks_passed += 1;
                if i % 200 == 0 {
                    record_latency(&mut m.failed_latency, Duration::from_micros(sent));
                    m.counters.count_error(ErrorKind::Status5xx);
                }
            }
        }
        run.scenarios[0].iterations.iterations = requests_per_step;
        run
    }

    #[test]
    fn report_round_trips_through_json() {
        let mut run = busy_run(1, 500, 0.7);
        run.scenarios
            .insert(0, RunMetrics::for_spec(&spec()).scenarios.remove(0));
        record(run.step_mut(0, 0).unwrap(), 80_000, 1, 0);
        let report =
            Report::from_metrics(3, 17, Duration::from_millis(12_345), true, &run).unwrap();
        assert_eq!(
            (report.runner, report.seq, report.elapsed_ms, report.done),
            (3, 17, 12_345, true)
        );
        assert_eq!(report.elapsed(), Duration::from_millis(12_345));
        let json = serde_json::to_value(&report).unwrap();
        for key in ["runner", "seq", "elapsedMs", "done", "scenarios"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        let step = &json["scenarios"][1]["steps"][0];
        for key in [
            "name",
            "counters",
            "latency",
            "latencySent",
            "failedLatency",
        ] {
            assert!(step.get(key).is_some(), "{key}");
        }
        assert_eq!(step["counters"]["errors"]["5xx"], 3);
        assert_eq!(json["scenarios"][1]["iterations"]["iterations"], 500);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.to_metrics().unwrap(), run);
    }

    #[test]
    fn report_decoding_errors_name_the_histogram() {
        let mut report =
            Report::from_metrics(0, 1, Duration::ZERO, false, &busy_run(2, 10, 0.7)).unwrap();
        report.scenarios[0].steps[4].latency_sent = "garbage!".to_owned();
        let err = report.to_metrics().unwrap_err();
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            "scenario `checkout` step `step-4` latencySent"
        );
        assert!(matches!(err, MetricsError::InStep { .. }));
        assert!(std::error::Error::source(&err).is_some());

        let one = report.scenarios[0].steps[0].clone();
        report.scenarios[0].steps = vec![one; MAX_REPORT_STEPS + 1];
        assert!(matches!(
            report.to_metrics(),
            Err(MetricsError::TooManySteps {
                steps: 513,
                limit: 512
            })
        ));
    }

    #[test]
    fn custom_metrics_travel_in_the_report_and_their_count_is_capped() {
        use crate::metrics::custom::{Observation, Reading};
        use crate::protocol::custom::MAX_REPORT_CUSTOM_METRICS;
        let mut run = busy_run(2, 10, 0.7);
        let step = run.step_mut(0, 1).unwrap();
        step.custom
            .record("lat", &Observation::Trend(Reading::Value(1234)));
        step.custom
            .record("hits", &Observation::Counter(Reading::Missing));
        let report = Report::from_metrics(0, 1, Duration::ZERO, false, &run).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_metrics().unwrap(), run);
        // A step without custom metrics carries no `custom` key (reports stay as they were).
        assert_eq!(json.matches("\"custom\"").count(), 1, "{json}");

        let mut big = back.clone();
        let one = big.scenarios[0].steps[1].custom[0].clone();
        big.scenarios[0].steps[1].custom = (0..=MAX_REPORT_CUSTOM_METRICS)
            .map(|i| CustomMetricReport {
                name: format!("m{i}"),
                ..one.clone()
            })
            .collect();
        assert!(matches!(
            big.to_metrics(),
            Err(MetricsError::TooManyCustomMetrics {
                metrics: 257,
                limit: 256
            })
        ));
        let mut bad = back;
        bad.scenarios[0].steps[1].custom[1].name = "hits".to_owned();
        let err = bad.to_metrics().unwrap_err().to_string();
        assert!(
            err.contains("step `step-1` custom: custom metric `hits`"),
            "{err}"
        );
    }

    #[test]
    fn report_size_at_realistic_load() {
        let mut sizes = Vec::new();
        // Step medians 5, 10, .. 50 ms; log-normal spread `sigma` (0.7: p99 ≈ 5× median, a
        // wide, realistic service; 0.25: a tight one); 2% queued up to 200 ms before sending;
        // 0.5% failures. Size depends on how many distinct buckets are used, not on the count.
        for (label, per_step, sigma, bound) in [
            ("idle (no requests yet)", 0u64, 0.7, 5_000usize),
            ("60 s at 100 rps per step, wide", 6_000, 0.7, 80_000),
            ("5 min at 500 rps per step, wide", 150_000, 0.7, 200_000),
            ("60 s at 100 rps per step, tight", 6_000, 0.25, 40_000),
            ("5 min at 500 rps per step, tight", 150_000, 0.25, 120_000),
        ] {
            let run = busy_run(9, per_step, sigma);
            let report =
                Report::from_metrics(0, 300, Duration::from_secs(300), false, &run).unwrap();
            let json = serde_json::to_string(&report).unwrap();
            let hist_bytes: usize = report.scenarios[0]
                .steps
                .iter()
                .map(|s| s.latency.len() + s.latency_sent.len() + s.failed_latency.len())
                .sum();
            println!(
                "report size, 10 steps, {label}: {} bytes of JSON ({} in histograms, {} per step)",
                json.len(),
                hist_bytes,
                json.len() / 10
            );
            assert!(json.len() < bound, "{label}: {} bytes", json.len());
            sizes.push(json.len());
        }
        assert!(sizes[0] < sizes[3] && sizes[3] < sizes[1] && sizes[1] < sizes[2]);
    }
}
