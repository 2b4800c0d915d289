//! Custom metrics read from responses (a step's `metrics:` list): trends, counters and gauges,
//! recorded per step beside the HTTP measurements and merged exactly across runners.
//!
//! Every value is an integer, so merges are exact and independent of order:
//! - a **trend** is an HdrHistogram with the latency bounds: microseconds for a time trend
//!   (unit `us`, `ms` or `s`), thousandths for a plain-number trend (any other unit or none);
//! - a **counter** is a sum of thousandths (a counting counter adds 1000 per match);
//! - a **gauge** keeps its last reading (the latest by wall-clock time across runners; the
//!   larger value on a tie), its min and max (exact, thousandths) and every reading in a
//!   histogram of thousandths for avg and percentiles.
//!
//! A value that is missing from a response, or is not a number, or is negative (histograms and
//! sums of thousandths take none) is never dropped silently: it is counted per metric as
//! `missing` or `invalid` ([`Faults`]). Histograms take values from 1 to 3.6·10^9 of their unit
//! (1 µs to 1 h for time, 0.001 to 3 600 000 for plain numbers): a smaller value counts as the
//! lowest and a larger one as the highest, as latencies are clamped.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;

use crate::metrics::error::MetricsError;
use crate::metrics::histogram::{
    HistogramSummary, LATENCY_HIGH_US, LATENCY_LOW_US, add_clamped, fits, histogram_since,
    new_latency_histogram, same_histogram,
};
use volley_crds::spec::{self, Step};

/// Plain numbers are kept in thousandths (3 decimals), so sums and histograms stay integers.
pub const PLAIN_SCALE: f64 = 1000.0;

/// Microseconds per unit of a time trend's `unit`, or `None` when the unit is not a time unit
/// (the trend then holds plain numbers).
pub fn time_unit_micros(unit: &str) -> Option<f64> {
    match unit {
        "us" | "µs" => Some(1.0),
        "ms" => Some(1_000.0),
        "s" => Some(1_000_000.0),
        _ => None,
    }
}

/// The kind of a custom metric, as written in manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CustomKind {
    /// A distribution; `time` when its unit is a time unit.
    Trend {
        /// Microseconds (time unit) rather than thousandths (plain numbers).
        time: bool,
    },
    /// A running total.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl CustomKind {
    /// The kind a spec entry declares, or `None` unless exactly one of `trend`, `counter`,
    /// `gauge` is set (validation refuses that).
    pub fn of(metric: &spec::CustomMetric) -> Option<CustomKind> {
        match (&metric.trend, &metric.counter, &metric.gauge) {
            (Some(t), None, None) => Some(CustomKind::Trend {
                time: t.unit.as_deref().and_then(time_unit_micros).is_some(),
            }),
            (None, Some(_), None) => Some(CustomKind::Counter),
            (None, None, Some(_)) => Some(CustomKind::Gauge),
            _ => None,
        }
    }

    /// `trend`, `counter` or `gauge`.
    pub fn name(self) -> &'static str {
        match self {
            CustomKind::Trend { .. } => "trend",
            CustomKind::Counter => "counter",
            CustomKind::Gauge => "gauge",
        }
    }
}

impl fmt::Display for CustomKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomKind::Trend { time: true } => f.write_str("time trend"),
            CustomKind::Trend { time: false } => f.write_str("plain-number trend"),
            other => f.write_str(other.name()),
        }
    }
}

/// Values a metric could not record, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The response had no value where the source looks (or there was no response).
    pub missing: u64,
    /// The value was there but is not a number the metric can take (text, negative, NaN).
    pub invalid: u64,
}

impl Faults {
    fn add(&mut self, other: &Faults) {
        self.missing = self.missing.saturating_add(other.missing);
        self.invalid = self.invalid.saturating_add(other.invalid);
    }

    fn since(&self, earlier: &Faults) -> Result<Faults, MetricsError> {
        Ok(Faults {
            missing: diff("missing custom values", earlier.missing, self.missing)?,
            invalid: diff("invalid custom values", earlier.invalid, self.invalid)?,
        })
    }

    fn count(&mut self, reading: Reading) {
        match reading {
            Reading::Missing => self.missing = self.missing.saturating_add(1),
            Reading::Invalid => self.invalid = self.invalid.saturating_add(1),
            Reading::Value(_) => {}
        }
    }
}

fn diff(what: &'static str, prev: u64, cur: u64) -> Result<u64, MetricsError> {
    cur.checked_sub(prev)
        .ok_or(MetricsError::NotCumulative { what, prev, cur })
}

/// One gauge reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaugeReading {
    /// When it was read, µs since the Unix epoch (runner clock).
    pub at_us: u64,
    /// The value, in thousandths.
    pub value: u64,
}

impl GaugeReading {
    /// The later of two readings; the larger value when both were read at the same µs, so the
    /// merge does not depend on its order.
    fn latest(a: Option<GaugeReading>, b: Option<GaugeReading>) -> Option<GaugeReading> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if (b.at_us, b.value) > (a.at_us, a.value) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }
}

/// One custom metric's data.
#[derive(Clone)]
pub enum CustomMetric {
    /// A distribution.
    Trend {
        /// Microseconds (time unit) rather than thousandths.
        time: bool,
        /// Every value read.
        values: Histogram<u64>,
        /// Values not recorded.
        faults: Faults,
    },
    /// A running total.
    Counter {
        /// The sum, in thousandths.
        total: u64,
        /// Values added (matched or not, for a counting counter: the responses judged).
        count: u64,
        /// Values not recorded.
        faults: Faults,
    },
    /// A value that goes up and down.
    Gauge {
        /// The latest reading.
        last: Option<GaugeReading>,
        /// The lowest reading, in thousandths.
        min: Option<u64>,
        /// The highest reading, in thousandths.
        max: Option<u64>,
        /// Every reading, in thousandths.
        values: Histogram<u64>,
        /// Values not recorded.
        faults: Faults,
    },
}

impl CustomMetric {
    /// An empty metric of `kind`.
    pub fn new(kind: CustomKind) -> CustomMetric {
        match kind {
            CustomKind::Trend { time } => CustomMetric::Trend {
                time,
                values: new_latency_histogram(),
                faults: Faults::default(),
            },
            CustomKind::Counter => CustomMetric::Counter {
                total: 0,
                count: 0,
                faults: Faults::default(),
            },
            CustomKind::Gauge => CustomMetric::Gauge {
                last: None,
                min: None,
                max: None,
                values: new_latency_histogram(),
                faults: Faults::default(),
            },
        }
    }

    /// The metric's kind.
    pub fn kind(&self) -> CustomKind {
        match self {
            CustomMetric::Trend { time, .. } => CustomKind::Trend { time: *time },
            CustomMetric::Counter { .. } => CustomKind::Counter,
            CustomMetric::Gauge { .. } => CustomKind::Gauge,
        }
    }

    /// The values not recorded.
    pub fn faults(&self) -> Faults {
        match self {
            CustomMetric::Trend { faults, .. }
            | CustomMetric::Counter { faults, .. }
            | CustomMetric::Gauge { faults, .. } => *faults,
        }
    }

    /// The histogram of values (trends and gauges).
    pub fn histogram(&self) -> Option<&Histogram<u64>> {
        match self {
            CustomMetric::Trend { values, .. } | CustomMetric::Gauge { values, .. } => Some(values),
            CustomMetric::Counter { .. } => None,
        }
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        match self {
            CustomMetric::Trend { values, .. } | CustomMetric::Gauge { values, .. } => values.len(),
            CustomMetric::Counter { count, .. } => *count,
        }
    }

    /// The metric's own value in its unit: a counter's total, a gauge's last reading; `None`
    /// for trends and for a gauge never read.
    pub fn value(&self) -> Option<f64> {
        match self {
            CustomMetric::Trend { .. } => None,
            CustomMetric::Counter { total, .. } => Some(*total as f64 / PLAIN_SCALE),
            CustomMetric::Gauge { last, .. } => last.map(|r| r.value as f64 / PLAIN_SCALE),
        }
    }

    /// Records one observation. One of another kind (impossible for a spec that validated)
    /// counts as invalid rather than vanishing.
    pub fn record(&mut self, observation: &Observation) {
        match (self, observation) {
            (CustomMetric::Trend { values, faults, .. }, Observation::Trend(reading)) => {
                match reading {
                    Reading::Value(v) => record_value(values, *v),
                    other => faults.count(*other),
                }
            }
            (
                CustomMetric::Counter {
                    total,
                    count,
                    faults,
                },
                Observation::Counter(reading),
            ) => match reading {
                Reading::Value(v) => {
                    *total = total.saturating_add(*v);
                    *count = count.saturating_add(1);
                }
                other => faults.count(*other),
            },
            (
                CustomMetric::Gauge {
                    last,
                    min,
                    max,
                    values,
                    faults,
                },
                Observation::Gauge { at_us, reading },
            ) => match reading {
                Reading::Value(v) => {
                    *last = GaugeReading::latest(
                        *last,
                        Some(GaugeReading {
                            at_us: *at_us,
                            value: *v,
                        }),
                    );
                    *min = Some(min.map_or(*v, |m| m.min(*v)));
                    *max = Some(max.map_or(*v, |m| m.max(*v)));
                    record_value(values, *v);
                }
                other => faults.count(*other),
            },
            (metric, _) => match metric {
                CustomMetric::Trend { faults, .. }
                | CustomMetric::Counter { faults, .. }
                | CustomMetric::Gauge { faults, .. } => faults.count(Reading::Invalid),
            },
        }
    }

    fn check_addable(&self, other: &CustomMetric) -> Result<(), MetricsError> {
        match (self, other) {
            (CustomMetric::Trend { values: a, .. }, CustomMetric::Trend { values: b, .. })
            | (CustomMetric::Gauge { values: a, .. }, CustomMetric::Gauge { values: b, .. })
                if self.kind() == other.kind() =>
            {
                fits(a, b)
            }
            (CustomMetric::Counter { .. }, CustomMetric::Counter { .. }) => Ok(()),
            _ => Err(MetricsError::CustomKind {
                ours: self.kind().to_string(),
                theirs: other.kind().to_string(),
            }),
        }
    }

    /// Adds `other` (checked by `check_addable`); histograms clamp as a fallback only.
    fn add_clamped(&mut self, other: &CustomMetric) {
        match (self, other) {
            (
                CustomMetric::Trend { values, faults, .. },
                CustomMetric::Trend {
                    values: ov,
                    faults: of,
                    ..
                },
            ) => {
                add_clamped(values, ov);
                faults.add(of);
            }
            (
                CustomMetric::Counter {
                    total,
                    count,
                    faults,
                },
                CustomMetric::Counter {
                    total: ot,
                    count: oc,
                    faults: of,
                },
            ) => {
                *total = total.saturating_add(*ot);
                *count = count.saturating_add(*oc);
                faults.add(of);
            }
            (
                CustomMetric::Gauge {
                    last,
                    min,
                    max,
                    values,
                    faults,
                },
                CustomMetric::Gauge {
                    last: ol,
                    min: omin,
                    max: omax,
                    values: ov,
                    faults: of,
                },
            ) => {
                *last = GaugeReading::latest(*last, *ol);
                *min = [*min, *omin].into_iter().flatten().min();
                *max = [*max, *omax].into_iter().flatten().max();
                add_clamped(values, ov);
                faults.add(of);
            }
            // Kinds differ: refused by check_addable before any merge.
            _ => {}
        }
    }

    /// What happened between the cumulative `earlier` and `self`. A gauge's last reading, min
    /// and max are not differences: they are `self`'s (the run's so far).
    fn since(&self, earlier: &CustomMetric) -> Result<CustomMetric, MetricsError> {
        match (self, earlier) {
            (
                CustomMetric::Trend {
                    time,
                    values,
                    faults,
                },
                CustomMetric::Trend {
                    values: ev,
                    faults: ef,
                    ..
                },
            ) => Ok(CustomMetric::Trend {
                time: *time,
                values: histogram_since(ev, values)?,
                faults: faults.since(ef)?,
            }),
            (
                CustomMetric::Counter {
                    total,
                    count,
                    faults,
                },
                CustomMetric::Counter {
                    total: et,
                    count: ec,
                    faults: ef,
                },
            ) => Ok(CustomMetric::Counter {
                total: diff("custom counter total", *et, *total)?,
                count: diff("custom counter values", *ec, *count)?,
                faults: faults.since(ef)?,
            }),
            (
                CustomMetric::Gauge {
                    last,
                    min,
                    max,
                    values,
                    faults,
                },
                CustomMetric::Gauge {
                    values: ev,
                    faults: ef,
                    ..
                },
            ) => Ok(CustomMetric::Gauge {
                last: *last,
                min: *min,
                max: *max,
                values: histogram_since(ev, values)?,
                faults: faults.since(ef)?,
            }),
            _ => Err(MetricsError::CustomKind {
                ours: self.kind().to_string(),
                theirs: earlier.kind().to_string(),
            }),
        }
    }
}

/// Histograms compared by value, like [`crate::metrics::model::Measurements`].
impl PartialEq for CustomMetric {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                CustomMetric::Trend {
                    time,
                    values,
                    faults,
                },
                CustomMetric::Trend {
                    time: ot,
                    values: ov,
                    faults: of,
                },
            ) => time == ot && faults == of && same_histogram(values, ov),
            (
                CustomMetric::Counter {
                    total,
                    count,
                    faults,
                },
                CustomMetric::Counter {
                    total: ot,
                    count: oc,
                    faults: of,
                },
            ) => (total, count, faults) == (ot, oc, of),
            (
                CustomMetric::Gauge {
                    last,
                    min,
                    max,
                    values,
                    faults,
                },
                CustomMetric::Gauge {
                    last: ol,
                    min: omin,
                    max: omax,
                    values: ov,
                    faults: of,
                },
            ) => (last, min, max, faults) == (ol, omin, omax, of) && same_histogram(values, ov),
            _ => false,
        }
    }
}

impl fmt::Debug for CustomMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomMetric::Trend {
                time,
                values,
                faults,
            } => f
                .debug_struct("Trend")
                .field("time", time)
                .field("values", &HistogramSummary(values))
                .field("faults", faults)
                .finish(),
            CustomMetric::Counter {
                total,
                count,
                faults,
            } => f
                .debug_struct("Counter")
                .field("total", total)
                .field("count", count)
                .field("faults", faults)
                .finish(),
            CustomMetric::Gauge {
                last,
                min,
                max,
                values,
                faults,
            } => f
                .debug_struct("Gauge")
                .field("last", last)
                .field("min", min)
                .field("max", max)
                .field("values", &HistogramSummary(values))
                .field("faults", faults)
                .finish(),
        }
    }
}

/// Records `v` (µs or thousandths) into a histogram with the latency bounds, clamped into them.
fn record_value(h: &mut Histogram<u64>, v: u64) {
    h.saturating_record(v.clamp(LATENCY_LOW_US, LATENCY_HIGH_US));
}

/// What a source gave for one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// A number, scaled: µs for time trends, thousandths otherwise.
    Value(u64),
    /// No value where the source looks.
    Missing,
    /// A value that is not a number the metric can take.
    Invalid,
}

impl Reading {
    /// Reads `text` (absent: missing) as a number of the unit `scale` converts from, e.g.
    /// `1000.0` for thousandths or [`time_unit_micros`]'s factor. Negative numbers, NaN and
    /// infinities are invalid; a number too large for 64 bits saturates.
    pub fn parse(text: Option<&str>, scale: f64) -> Reading {
        let Some(text) = text else {
            return Reading::Missing;
        };
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => {
                // `as` saturates at u64::MAX for a too large float, which is what we want.
                Reading::Value((v * scale).round() as u64)
            }
            _ => Reading::Invalid,
        }
    }
}

/// One metric's reading of one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// For a trend.
    Trend(Reading),
    /// For a counter: thousandths to add (1000 for a match, 0 for a response that does not
    /// match).
    Counter(Reading),
    /// For a gauge, with when it was read (µs since the Unix epoch).
    Gauge {
        /// When the response was read.
        at_us: u64,
        /// What it said.
        reading: Reading,
    },
}

/// A step's custom metrics by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomMetrics {
    /// Every metric, by name.
    pub metrics: BTreeMap<String, CustomMetric>,
}

impl CustomMetrics {
    /// Empty metrics for what `step` declares (entries whose kind is unclear are left out:
    /// validation refuses them).
    pub fn for_step(step: &Step) -> CustomMetrics {
        CustomMetrics {
            metrics: step
                .metrics
                .iter()
                .filter_map(|m| Some((m.name.clone(), CustomMetric::new(CustomKind::of(m)?))))
                .collect(),
        }
    }

    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Records one observation of metric `name`, creating the metric if this step has not
    /// declared it (a runner's model always has; this keeps a stray name from being lost).
    pub fn record(&mut self, name: &str, observation: &Observation) {
        if let Some(m) = self.metrics.get_mut(name) {
            m.record(observation);
            return;
        }
        let kind = match observation {
            // A time trend's values are in µs; an undeclared one cannot say, so it is plain.
            Observation::Trend(_) => CustomKind::Trend { time: false },
            Observation::Counter(_) => CustomKind::Counter,
            Observation::Gauge { .. } => CustomKind::Gauge,
        };
        let mut m = CustomMetric::new(kind);
        m.record(observation);
        self.metrics.insert(name.to_owned(), m);
    }

    /// Records every observation of one response.
    pub fn record_all<'a>(
        &mut self,
        observations: impl IntoIterator<Item = (&'a str, &'a Observation)>,
    ) {
        for (name, o) in observations {
            self.record(name, o);
        }
    }

    /// Whether [`CustomMetrics::add`] would take `other`: same kinds by name, histograms that
    /// fit.
    pub fn check_addable(&self, other: &CustomMetrics) -> Result<(), MetricsError> {
        for (name, theirs) in &other.metrics {
            if let Some(ours) = self.metrics.get(name) {
                ours.check_addable(theirs)
                    .map_err(|e| e.in_custom_metric(name))?;
            }
        }
        Ok(())
    }

    /// Adds `other` in, matched by name; names not here are copied. Fails, changing nothing,
    /// when a name has another kind here or a histogram does not fit.
    pub fn add(&mut self, other: &CustomMetrics) -> Result<(), MetricsError> {
        self.check_addable(other)?;
        self.add_clamped(other);
        Ok(())
    }

    /// Like [`CustomMetrics::add`] after `check_addable`; a name of another kind is skipped.
    pub(crate) fn add_clamped(&mut self, other: &CustomMetrics) {
        for (name, theirs) in &other.metrics {
            match self.metrics.get_mut(name) {
                Some(ours) => ours.add_clamped(theirs),
                None => {
                    self.metrics.insert(name.clone(), theirs.clone());
                }
            }
        }
    }

    /// What happened between the cumulative `earlier` and `self`, metric by metric.
    pub fn since(&self, earlier: &CustomMetrics) -> Result<CustomMetrics, MetricsError> {
        let mut out = BTreeMap::new();
        for (name, cur) in &self.metrics {
            let interval = match earlier.metrics.get(name) {
                Some(prev) => cur.since(prev).map_err(|e| e.in_custom_metric(name))?,
                None => cur.clone(),
            };
            out.insert(name.clone(), interval);
        }
        if let Some(name) = earlier
            .metrics
            .keys()
            .find(|n| !self.metrics.contains_key(*n))
        {
            return Err(MetricsError::NotCumulative {
                what: "custom metrics",
                prev: 1,
                cur: 0,
            }
            .in_custom_metric(name));
        }
        Ok(CustomMetrics { metrics: out })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn trend(time: bool, values: &[u64]) -> CustomMetric {
        let mut m = CustomMetric::new(CustomKind::Trend { time });
        for v in values {
            m.record(&Observation::Trend(Reading::Value(*v)));
        }
        m
    }

    #[test]
    fn readings_parse_numbers_and_count_the_rest() {
        assert_eq!(Reading::parse(Some("12.5"), 1000.0), Reading::Value(12_500));
        assert_eq!(Reading::parse(Some(" 7 "), 1.0), Reading::Value(7));
        assert_eq!(Reading::parse(Some("0.0004"), 1000.0), Reading::Value(0));
        assert_eq!(
            Reading::parse(Some("1e3"), 1000.0),
            Reading::Value(1_000_000)
        );
        assert_eq!(Reading::parse(None, 1000.0), Reading::Missing);
        for bad in ["", "abc", "-1", "NaN", "inf", "true", "[1]"] {
            assert_eq!(Reading::parse(Some(bad), 1000.0), Reading::Invalid, "{bad}");
        }
        assert_eq!(
            Reading::parse(Some("1e300"), 1000.0),
            Reading::Value(u64::MAX)
        );
        assert_eq!(time_unit_micros("ms"), Some(1000.0));
        assert_eq!(time_unit_micros("tokens"), None);
    }

    #[test]
    fn each_kind_records_values_and_counts_faults() {
        let mut t = trend(true, &[5_000, 7_000]);
        t.record(&Observation::Trend(Reading::Missing));
        t.record(&Observation::Trend(Reading::Invalid));
        t.record(&Observation::Trend(Reading::Invalid));
        assert_eq!(t.count(), 2);
        assert_eq!(
            t.faults(),
            Faults {
                missing: 1,
                invalid: 2
            }
        );
        assert_eq!(t.value(), None);

        let mut c = CustomMetric::new(CustomKind::Counter);
        for r in [
            Reading::Value(1000),
            Reading::Value(0),
            Reading::Value(2500),
            Reading::Missing,
        ] {
            c.record(&Observation::Counter(r));
        }
        assert_eq!(c.value(), Some(3.5));
        assert_eq!(c.count(), 3);
        assert_eq!(c.faults().missing, 1);

        let mut g = CustomMetric::new(CustomKind::Gauge);
        assert_eq!(g.value(), None);
        for (at_us, v) in [(10, 4000), (30, 1000), (20, 9000)] {
            g.record(&Observation::Gauge {
                at_us,
                reading: Reading::Value(v),
            });
        }
        // The latest by time, not the last recorded.
        assert_eq!(g.value(), Some(1.0));
        let CustomMetric::Gauge { min, max, .. } = &g else {
            unreachable!()
        };
        assert_eq!((*min, *max), (Some(1000), Some(9000)));
        assert_eq!(g.count(), 3);
        // An observation of another kind is counted, not lost.
        g.record(&Observation::Trend(Reading::Value(1)));
        assert_eq!(g.faults().invalid, 1);
    }

    #[test]
    fn merge_is_exact_and_order_free_and_refuses_other_kinds() {
        let gauge = |readings: &[(u64, u64)]| {
            let mut g = CustomMetric::new(CustomKind::Gauge);
            for (at_us, v) in readings {
                g.record(&Observation::Gauge {
                    at_us: *at_us,
                    reading: Reading::Value(*v),
                });
            }
            CustomMetrics {
                metrics: BTreeMap::from([("q".to_owned(), g)]),
            }
        };
        let a = gauge(&[(1, 5), (9, 7)]);
        let b = gauge(&[(5, 100), (9, 8)]);
        let mut ab = a.clone();
        ab.add(&b).unwrap();
        let mut ba = b.clone();
        ba.add(&a).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab, gauge(&[(1, 5), (9, 7), (5, 100), (9, 8)]));
        assert_eq!(
            ab.metrics["q"].value(),
            Some(0.008),
            "tie at 9 µs: the larger value"
        );

        let mut t = CustomMetrics {
            metrics: BTreeMap::from([("q".to_owned(), trend(false, &[1]))]),
        };
        let before = t.clone();
        let err = t.add(&a).unwrap_err().to_string();
        assert!(err.contains("custom metric `q`"), "{err}");
        assert!(err.contains("gauge"), "{err}");
        assert_eq!(t, before);
        let time = CustomMetrics {
            metrics: BTreeMap::from([("q".to_owned(), trend(true, &[1]))]),
        };
        assert!(t.add(&time).is_err(), "a time trend is not a plain one");
    }

    #[test]
    fn since_is_the_difference_of_two_snapshots() {
        let mut early = CustomMetrics::default();
        early.record("t", &Observation::Trend(Reading::Value(10)));
        early.record("c", &Observation::Counter(Reading::Value(1000)));
        let mut late = early.clone();
        late.record("t", &Observation::Trend(Reading::Value(20)));
        late.record("t", &Observation::Trend(Reading::Missing));
        late.record("c", &Observation::Counter(Reading::Value(2000)));
        let d = late.since(&early).unwrap();
        assert_eq!(d.metrics["t"], {
            let mut t = trend(false, &[20]);
            t.record(&Observation::Trend(Reading::Missing));
            t
        });
        assert_eq!(d.metrics["c"].value(), Some(2.0));
        assert!(early.since(&late).is_err());
    }

    #[test]
    fn thresholds_judge_the_merged_custom_metrics_of_their_scope() {
        use crate::compare::Baseline;
        use crate::metrics::model::RunMetrics;
        use crate::metrics::test_support::spec;
        use crate::threshold::evaluate::evaluate_thresholds;
        use volley_crds::spec::{CustomMetric as Declared, ThresholdSpec, TrendMetric};

        let mut spec = spec();
        let declare = |name: &str, unit: &str| Declared {
            name: name.to_owned(),
            trend: Some(TrendMetric {
                json_path: Some("$.x".to_owned()),
                unit: Some(unit.to_owned()),
                ..TrendMetric::default()
            }),
            ..Declared::default()
        };
        spec.scenarios[0].steps[0].metrics = vec![
            declare("lat", "ms"),
            Declared {
                name: "hits".to_owned(),
                counter: Some(Default::default()),
                ..Declared::default()
            },
        ];
        spec.scenarios[1].steps[0].metrics = vec![
            declare("lat", "s"),
            Declared {
                name: "depth".to_owned(),
                gauge: Some(Default::default()),
                ..Declared::default()
            },
        ];
        spec.thresholds = [
            "trend(lat) p(50) < 150ms",
            "trend(lat) count == 4",
            "trend(lat) max > 1s",
            "counter(hits) == 2.5",
            "gauge(depth) < 4",
            "gauge(depth) max >= 9",
            "gauge(nothing) < 1",
        ]
        .map(|e| ThresholdSpec::Expr(e.to_owned()))
        .to_vec();
        // Two runners.
        let mut run = RunMetrics::for_spec(&spec);
        let mut other = RunMetrics::for_spec(&spec);
        let light = run.step_mut(1, 0).unwrap();
        for v in [100_000, 120_000] {
            light
                .custom
                .record("lat", &Observation::Trend(Reading::Value(v)));
        }
        light
            .custom
            .record("hits", &Observation::Counter(Reading::Value(1500)));
        let light = other.step_mut(1, 0).unwrap();
        light
            .custom
            .record("hits", &Observation::Counter(Reading::Value(1000)));
        light
            .custom
            .record("lat", &Observation::Trend(Reading::Missing));
        let heavy = other.step_mut(2, 0).unwrap();
        heavy
            .custom
            .record("lat", &Observation::Trend(Reading::Value(2_000_000)));
        heavy
            .custom
            .record("lat", &Observation::Trend(Reading::Value(90_000)));
        for (at_us, v) in [(1, 9000), (3, 3000), (2, 5000)] {
            heavy.custom.record(
                "depth",
                &Observation::Gauge {
                    at_us,
                    reading: Reading::Value(v),
                },
            );
        }
        run.merge(&other).unwrap();
        let results = evaluate_thresholds(
            &spec,
            &run,
            std::time::Duration::from_secs(1),
            &Baseline::default(),
        );
        let got: Vec<(&str, bool)> = results
            .iter()
            .map(|r| (r.status.actual.as_str(), r.status.passed))
            .collect();
        assert_eq!(
            got,
            [
                ("100ms", true),
                ("4", true),
                // Statistics come from the histogram: to its 3 significant digits, the
                // highest equivalent value for max (as for latencies).
                ("2.001s", true),
                ("2.5", true),
                ("3", true),
                ("9.007", true),
                ("no data", false),
            ],
            "{results:#?}"
        );
        assert_eq!(run.overall().custom.metrics["lat"].faults().missing, 1);
    }
}
