//! Custom metrics in the runner report (`docs/reference.md` §3.3): one
//! [`CustomMetricReport`] per metric of a step, its histograms encoded like the step's
//! latencies ([`encode_histogram`], [`decode_histogram`], whose hostile-input checks apply).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::custom::{CustomMetric, CustomMetrics, Faults, GaugeReading};
use crate::metrics::error::MetricsError;
use crate::protocol::histogram::{decode_histogram, encode_histogram};

/// Most custom metrics one report may carry over all its steps. Trends and gauges decode to a
/// histogram of about 190 KiB each, so this bounds what a report can make the aggregator
/// allocate beyond its steps; validation keeps a spec's declarations under it.
pub const MAX_REPORT_CUSTOM_METRICS: usize = 256;

/// One custom metric of a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomMetricReport {
    /// The metric's name.
    pub name: String,
    /// Its kind and figures.
    #[serde(flatten)]
    pub data: CustomData,
    /// Values missing from responses.
    #[serde(default)]
    pub missing: u64,
    /// Values that were not numbers the metric takes.
    #[serde(default)]
    pub invalid: u64,
}

/// A custom metric's kind (`kind`: `trend`, `counter`, `gauge`) and figures. Histograms are
/// encoded like the step latencies; values are µs (time trends) or thousandths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum CustomData {
    /// A trend.
    #[serde(rename_all = "camelCase")]
    Trend {
        /// A time trend (µs) rather than plain numbers (thousandths).
        time: bool,
        /// Every value, encoded.
        values: String,
    },
    /// A counter.
    #[serde(rename_all = "camelCase")]
    Counter {
        /// The sum, in thousandths.
        total: u64,
        /// Values added.
        count: u64,
    },
    /// A gauge.
    #[serde(rename_all = "camelCase")]
    Gauge {
        /// The latest reading: when (µs since the Unix epoch) and its value (thousandths).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<[u64; 2]>,
        /// The lowest reading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u64>,
        /// The highest reading.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
        /// Every reading, encoded.
        values: String,
    },
}

/// Encodes a step's custom metrics, in name order.
pub fn encode_custom(m: &CustomMetrics) -> Result<Vec<CustomMetricReport>, MetricsError> {
    m.metrics
        .iter()
        .map(|(name, metric)| {
            let faults = metric.faults();
            let data = match metric {
                CustomMetric::Trend { time, values, .. } => CustomData::Trend {
                    time: *time,
                    values: encode_histogram(values)?,
                },
                CustomMetric::Counter { total, count, .. } => CustomData::Counter {
                    total: *total,
                    count: *count,
                },
                CustomMetric::Gauge {
                    last,
                    min,
                    max,
                    values,
                    ..
                } => CustomData::Gauge {
                    last: last.map(|r| [r.at_us, r.value]),
                    min: *min,
                    max: *max,
                    values: encode_histogram(values)?,
                },
            };
            Ok(CustomMetricReport {
                name: name.clone(),
                data,
                missing: faults.missing,
                invalid: faults.invalid,
            })
        })
        .collect()
}

/// Decodes a step's custom metrics, treating them as hostile: a name twice, a gauge whose
/// min exceeds its max or that has readings without a last one are refused.
pub fn decode_custom(reports: &[CustomMetricReport]) -> Result<CustomMetrics, MetricsError> {
    let mut metrics = BTreeMap::new();
    for r in reports {
        let faults = Faults {
            missing: r.missing,
            invalid: r.invalid,
        };
        let bad = |why: &str| MetricsError::Malformed(why.to_owned()).in_custom_metric(&r.name);
        let metric = match &r.data {
            CustomData::Trend { time, values } => CustomMetric::Trend {
                time: *time,
                values: decode_histogram(values).map_err(|e| e.in_custom_metric(&r.name))?,
                faults,
            },
            CustomData::Counter { total, count } => CustomMetric::Counter {
                total: *total,
                count: *count,
                faults,
            },
            CustomData::Gauge {
                last,
                min,
                max,
                values,
            } => {
                let values = decode_histogram(values).map_err(|e| e.in_custom_metric(&r.name))?;
                let read = !values.is_empty();
                if read != (last.is_some() && min.is_some() && max.is_some()) {
                    return Err(bad(
                        "a gauge has last, min and max exactly when it has readings",
                    ));
                }
                if min > max {
                    return Err(bad("a gauge's min is above its max"));
                }
                CustomMetric::Gauge {
                    last: last.map(|[at_us, value]| GaugeReading { at_us, value }),
                    min: *min,
                    max: *max,
                    values,
                    faults,
                }
            }
        };
        if metrics.insert(r.name.clone(), metric).is_some() {
            return Err(bad("the name appears twice in one step"));
        }
    }
    Ok(CustomMetrics { metrics })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::custom::{CustomKind, Observation, Reading};

    fn sample() -> CustomMetrics {
        let mut m = CustomMetrics::default();
        for v in [3_000, 150_000, 7] {
            m.record("lat", &Observation::Trend(Reading::Value(v)));
        }
        m.record("lat", &Observation::Trend(Reading::Missing));
        m.record("hits", &Observation::Counter(Reading::Value(1000)));
        m.record("hits", &Observation::Counter(Reading::Invalid));
        for (at_us, v) in [(5, 2000), (9, 0)] {
            m.record(
                "depth",
                &Observation::Gauge {
                    at_us,
                    reading: Reading::Value(v),
                },
            );
        }
        m.metrics
            .insert("never".to_owned(), CustomMetric::new(CustomKind::Gauge));
        m
    }

    #[test]
    fn round_trip_through_json_is_exact() {
        let m = sample();
        let json = serde_json::to_string(&encode_custom(&m).unwrap()).unwrap();
        assert!(json.contains(r#""kind":"gauge""#), "{json}");
        assert!(json.contains(r#""last":[9,0]"#), "{json}");
        let back: Vec<CustomMetricReport> = serde_json::from_str(&json).unwrap();
        assert_eq!(decode_custom(&back).unwrap(), m);
    }

    #[test]
    fn hostile_reports_are_refused_with_the_name() {
        let good = encode_custom(&sample()).unwrap();
        let mut twice = good.clone();
        twice.push(good[0].clone());
        let mut inverted = good.clone();
        let mut no_last = good.clone();
        let mut bad_histogram = good.clone();
        for r in &mut inverted {
            if let CustomData::Gauge { min, max, .. } = &mut r.data {
                (*min, *max) = (Some(10), Some(1));
            }
        }
        for r in &mut no_last {
            if let CustomData::Gauge { last, .. } = &mut r.data {
                *last = None;
            }
        }
        for r in &mut bad_histogram {
            if let CustomData::Trend { values, .. } = &mut r.data {
                *values = "not base64!".to_owned();
            }
        }
        for (reports, needle) in [
            (twice, "appears twice"),
            (inverted, "custom metric `depth`"),
            (no_last, "exactly when it has readings"),
            (
                bad_histogram,
                "custom metric `lat`: the encoded histogram is not valid base64",
            ),
        ] {
            let err = decode_custom(&reports).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
