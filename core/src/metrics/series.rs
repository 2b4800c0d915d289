//! The per-second series: [`series_point`] turns two cumulative snapshots of the overall
//! measurements into one [`SeriesPoint`], the exact interval between them. A coarser point of
//! a long run is the same difference taken between snapshots further apart, so it is exact
//! too (never an average of finer points' percentiles); [`SeriesResolution`] says which
//! stretch of a series has which interval.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::error::MetricsError;
use crate::metrics::histogram::{histogram_since, new_latency_histogram};
use crate::metrics::model::Measurements;
use crate::metrics::status::{per_second, quantile_ms};

/// One point of the series: what happened between two cumulative snapshots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// Seconds since the start at the end of the interval.
    pub second: u64,
    /// Length of the interval in ms (normally 1000, or the point's coarser bucket, e.g. 10 000
    /// or 60 000, in the older part of a long run; longer when a report was lost).
    pub interval_ms: u64,
    /// Requests in the interval.
    pub requests: u64,
    /// Failed requests in the interval.
    pub failures: u64,
    /// Requests per second over the interval.
    pub rps: f64,
    /// Median latency of the interval's requests, ms (0 without requests).
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// One stretch of a series at one resolution (the summary's `seriesResolution`): the points
/// whose `second` is after `from_second` and at most `to_second` are buckets of
/// `interval_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesResolution {
    /// The stretch starts after this second.
    pub from_second: u64,
    /// The stretch ends with this second.
    pub to_second: u64,
    /// The length of its points' buckets, in seconds.
    pub interval_seconds: u64,
}

/// What the series needs of a cumulative snapshot: the request and failure counts and the
/// latency histogram. A third of a [`Measurements`]' memory, which matters because a builder
/// keeps one at each open bucket of every resolution.
#[derive(Clone, Debug)]
pub struct SeriesSnapshot {
    /// Requests so far.
    pub requests: u64,
    /// Failed requests so far.
    pub failures: u64,
    /// Every request's latency so far.
    pub latency: Histogram<u64>,
}

impl Default for SeriesSnapshot {
    fn default() -> Self {
        SeriesSnapshot {
            requests: 0,
            failures: 0,
            latency: new_latency_histogram(),
        }
    }
}

impl From<Measurements> for SeriesSnapshot {
    fn from(m: Measurements) -> Self {
        SeriesSnapshot {
            requests: m.counters.requests,
            failures: m.counters.failures,
            latency: m.latency,
        }
    }
}

/// The interval between two cumulative snapshots: `cur − prev`, counts and histogram (exact).
/// Fails if `cur` holds less than `prev` anywhere, i.e. the two are not successive snapshots
/// of one run.
pub fn series_point(
    prev: &SeriesSnapshot,
    cur: &SeriesSnapshot,
    second: u64,
    interval: Duration,
) -> Result<SeriesPoint, MetricsError> {
    let diff = |what: &'static str, prev: u64, cur: u64| {
        cur.checked_sub(prev)
            .ok_or(MetricsError::NotCumulative { what, prev, cur })
    };
    let requests = diff("requests", prev.requests, cur.requests)?;
    let failures = diff("failures", prev.failures, cur.failures)?;
    let h = histogram_since(&prev.latency, &cur.latency)?;
    Ok(SeriesPoint {
        second,
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        requests,
        failures,
        rps: per_second(requests, interval),
        p50_ms: quantile_ms(&h, 0.5),
        p95_ms: quantile_ms(&h, 0.95),
        p99_ms: quantile_ms(&h, 0.99),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::test_support::{Rng, measurements, record};

    // ---- series ----

    #[test]
    fn series_point_is_the_interval_between_snapshots() {
        let mut rng = Rng(5);
        let mut cumulative = Measurements::default();
        let mut snapshots = vec![SeriesSnapshot::from(cumulative.clone())];
        let mut intervals = Vec::new();
        for second in 0..3 {
            let mut interval = Measurements::default();
            for i in 0..(1000 * (second + 1)) {
                let us = rng.lognormal_us(10_000.0 * (second + 1) as f64, 0.5);
                record(&mut interval, us, 1, if i % 100 == 0 { 1 } else { 0 });
            }
            cumulative.add(&interval).unwrap();
            snapshots.push(SeriesSnapshot::from(cumulative.clone()));
            intervals.push(interval);
        }
        for (i, interval) in intervals.iter().enumerate() {
            let p = series_point(
                &snapshots[i],
                &snapshots[i + 1],
                i as u64 + 1,
                Duration::from_millis(1000),
            )
            .unwrap();
            assert_eq!(
                p,
                SeriesPoint {
                    second: i as u64 + 1,
                    interval_ms: 1000,
                    requests: interval.counters.requests,
                    failures: interval.counters.failures,
                    rps: interval.counters.requests as f64,
                    p50_ms: interval.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    p95_ms: interval.latency.value_at_quantile(0.95) as f64 / 1000.0,
                    p99_ms: interval.latency.value_at_quantile(0.99) as f64 / 1000.0,
                }
            );
        }
        // A lost report widens one interval.
        let wide =
            series_point(&snapshots[1], &snapshots[3], 3, Duration::from_millis(2000)).unwrap();
        let mut both = intervals[1].clone();
        both.add(&intervals[2]).unwrap();
        assert_eq!(wide.requests, 5000);
        assert_eq!(wide.rps, 2500.0);
        assert_eq!(
            wide.p99_ms,
            both.latency.value_at_quantile(0.99) as f64 / 1000.0
        );
        // Nothing happened.
        let idle = series_point(&snapshots[3], &snapshots[3], 4, Duration::ZERO).unwrap();
        assert_eq!((idle.requests, idle.rps, idle.p50_ms), (0, 0.0, 0.0));
        // Out of order.
        let err =
            series_point(&snapshots[2], &snapshots[1], 2, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("fewer requests"), "{err}");
        // Same counters but a latency sample moved: not cumulative.
        let a = SeriesSnapshot::from(measurements(&[1000, 2000]));
        let b = SeriesSnapshot::from(measurements(&[1000, 3000]));
        let err = series_point(&a, &b, 1, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, MetricsError::NotCumulative { .. }), "{err}");
        let json = serde_json::to_value(&wide).unwrap();
        assert!(json.get("intervalMs").is_some() && json.get("p95Ms").is_some());
    }
}
