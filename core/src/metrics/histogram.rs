//! Latency histograms: the bounds of `docs/reference.md` §4.4 (1 µs to 1 h, 3 significant
//! digits, in microseconds), recording into them, and the exact histogram arithmetic the model
//! and the series build on. Histograms with equal bounds merge by adding their counts, so
//! percentiles of a merge are *exactly* those of one histogram fed every sample.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::error::MetricsError;

/// Lowest latency a histogram tells apart, in microseconds (`docs/reference.md` §4.4).
pub const LATENCY_LOW_US: u64 = 1;
/// Highest latency a histogram tracks, in microseconds: one hour. Longer ones are recorded as
/// one hour.
pub const LATENCY_HIGH_US: u64 = 3_600_000_000;
/// Significant decimal digits every latency histogram keeps (values are within 0.1%).
pub const LATENCY_SIGFIG: u8 = 3;

/// Most samples one decoded histogram may hold (2^48, about 2.8·10^14: 10 million requests per
/// second for 7 days is 6·10^12). Keeping counts far below `u64::MAX` means merging thousands
/// of reports can never overflow.
pub const MAX_HISTOGRAM_COUNT: u64 = 1 << 48;

/// An empty latency histogram with the bounds of `docs/reference.md` §4.4: 1 µs to 1 h, 3
/// significant digits, in microseconds. Auto-resize is off, so its memory is fixed (about
/// 190 KiB); [`record_latency`] clamps what is longer than an hour.
pub fn new_latency_histogram() -> Histogram<u64> {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid bounds (1 < 2 * 1 <= high, sigfig <= 5); a test creates one"
    )]
    Histogram::new_with_bounds(LATENCY_LOW_US, LATENCY_HIGH_US, LATENCY_SIGFIG)
        .expect("Volley's latency histogram bounds are valid")
}

/// Records one latency: whole microseconds (saturating), clamped to 1 µs .. 1 h. Never fails:
/// a sub-microsecond response counts as 1 µs and one over an hour as exactly an hour.
pub fn record_latency(h: &mut Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.clamp(LATENCY_LOW_US, LATENCY_HIGH_US));
}

/// Whether every value of `source` fits into `target` (so that `target.add(source)` and
/// `target.subtract(source)` cannot fail on range).
pub(crate) fn fits(target: &Histogram<u64>, source: &Histogram<u64>) -> Result<(), MetricsError> {
    let high = target.highest_equivalent(target.high());
    if source.is_empty() || source.max() <= high {
        Ok(())
    } else {
        Err(MetricsError::Incompatible {
            max: source.max(),
            high: target.high(),
        })
    }
}

/// Adds `source` into `target`, which [`fits`] has approved.
pub(crate) fn add_checked(
    target: &mut Histogram<u64>,
    source: &Histogram<u64>,
) -> Result<(), MetricsError> {
    fits(target, source)?;
    target.add(source).map_err(|_| MetricsError::Incompatible {
        max: source.max(),
        high: target.high(),
    })
}

/// Adds `source` into `target` and never fails: values out of `target`'s range are clamped
/// into it. Only used where the API has no error to return; histograms built by this module
/// always take the exact path.
pub(crate) fn add_clamped(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    if add_checked(target, source).is_err() {
        for v in source.iter_recorded() {
            target.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Two histograms hold the same samples: same count at every recorded value.
pub(crate) fn same_histogram(a: &Histogram<u64>, b: &Histogram<u64>) -> bool {
    a.len() == b.len()
        && a.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .eq(b
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value())))
}

/// A histogram in one line, for `Debug` (the derived form prints ~23 000 counters).
pub(crate) struct HistogramSummary<'a>(pub(crate) &'a Histogram<u64>);

impl fmt::Debug for HistogramSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.0;
        if h.is_empty() {
            return f.write_str("Histogram(empty)");
        }
        write!(
            f,
            "Histogram(len {}, min {}us, p50 {}us, p99 {}us, max {}us, {} distinct)",
            h.len(),
            h.min(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max(),
            h.iter_recorded().count()
        )
    }
}

/// `cur − prev` for one histogram of two cumulative snapshots (exact, count by count).
pub(crate) fn histogram_since(
    prev: &Histogram<u64>,
    cur: &Histogram<u64>,
) -> Result<Histogram<u64>, MetricsError> {
    let not_cumulative = || MetricsError::NotCumulative {
        what: "latency samples at some value",
        prev: prev.len(),
        cur: cur.len(),
    };
    if cur.len() < prev.len() {
        return Err(not_cumulative());
    }
    fits(cur, prev)?;
    let mut h = cur.clone();
    h.subtract(prev).map_err(|_| not_cumulative())?;
    Ok(h)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // ---- recording ----

    #[test]
    fn latency_histogram_has_the_design_bounds() {
        let h = new_latency_histogram();
        assert_eq!((h.low(), h.high(), h.sigfig()), (1, 3_600_000_000, 3));
        assert!(!h.is_auto_resize());
        assert!(h.is_empty());
    }

    #[test]
    fn record_latency_rounds_to_microseconds_and_clamps() {
        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::ZERO);
        record_latency(&mut h, Duration::from_nanos(999));
        assert_eq!((h.len(), h.min(), h.max()), (2, 1, 1));

        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::from_nanos(1_500_999));
        assert_eq!(h.max(), 1500);
        assert_eq!(h.min(), 1500);

        let mut h = new_latency_histogram();
        record_latency(&mut h, Duration::from_secs(7200));
        record_latency(&mut h, Duration::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.equivalent(h.min(), LATENCY_HIGH_US));
        assert_eq!(h.max(), h.highest_equivalent(LATENCY_HIGH_US));
        assert_eq!(h.count_at(LATENCY_HIGH_US), 2);
    }
}
