//! The series of a run, built from successive cumulative snapshots of the merged results:
//! each point is the exact difference of two snapshots, so a late or missed tick makes one
//! longer interval and loses nothing.
//!
//! A run of many hours can neither keep nor report one point per second (a report of more
//! than about 85 minutes would not fit its ConfigMap), so a [`SeriesBuilder`] keeps each
//! series at every resolution of [`TIERS`] at once, round-robin style, as the run goes: the
//! newest hour per second, 6 hours in 10 s buckets, a day in 60 s, a week in 10 min, and hours
//! for ever. A coarse bucket's point is the difference of the cumulative snapshots at its
//! boundaries, exactly what its seconds add up to (percentiles of the merged histogram,
//! counts summed), never an average of finer points. Memory is bounded by the tiers' sizes
//! plus one snapshot per open bucket, however long the run.
//!
//! [`SeriesArchive::compose`] stitches one series from the tiers at a level of detail
//! ([`LEVELS`]): the newest points at the finest interval, older ones coarser; the same
//! stretches for every series of the run, so their points line up. [`fit`] picks the finest
//! level a budget allows.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use volley_core::metrics::model::{Measurements, RunMetrics};
use volley_core::metrics::series::{SeriesPoint, SeriesResolution, SeriesSnapshot, series_point};

/// A tail shorter than this after the last tick would be a noisy point of its own (a few
/// requests over a few ms), so it is folded into the last point instead.
const SHORTEST_FINAL_TAIL: Duration = Duration::from_millis(250);

/// One resolution a series is kept at while the run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Bucket length in seconds: bucket `k` holds the points labelled `(k-1)·interval` to
    /// `k·interval`. Each tier's interval divides the next one's, so a boundary of a coarse
    /// bucket is one of every finer tier.
    pub interval: u64,
    /// How many of the newest buckets are kept: enough for the finest level of [`LEVELS`]
    /// (its age plus a bucket of the next tier for alignment and one still open).
    pub keep: usize,
}

/// The resolutions kept, finest first. The last keeps everything (24 points a day).
pub const TIERS: [Tier; 5] = [
    Tier {
        interval: 1,
        keep: 3_700,
    },
    Tier {
        interval: 10,
        keep: 2_200,
    },
    Tier {
        interval: 60,
        keep: 1_460,
    },
    Tier {
        interval: 600,
        keep: 1_030,
    },
    Tier {
        interval: 3_600,
        keep: usize::MAX,
    },
];

/// The levels of detail [`fit`] tries, finest first. Entry `i` of a level is the age (seconds
/// before the newest point) up to which points are reported at `TIERS[i]`'s interval; older
/// ones go to the next tier, and what is older than every age to the last tier.
pub const LEVELS: [[u64; 4]; 10] = [
    [3_600, 6 * 3_600, 24 * 3_600, 7 * 86_400],
    [1_800, 3 * 3_600, 24 * 3_600, 7 * 86_400],
    [900, 5_400, 24 * 3_600, 7 * 86_400],
    [600, 2_700, 24 * 3_600, 7 * 86_400],
    [300, 1_200, 12 * 3_600, 7 * 86_400],
    [120, 600, 6 * 3_600, 3 * 86_400],
    [60, 300, 2 * 3_600, 86_400],
    [0, 0, 3_600, 12 * 3_600],
    [0, 0, 0, 6 * 3_600],
    [0, 0, 0, 0],
];

/// One scenario's series (`scenarioSeries` in the summary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSeries {
    /// The scenario's name.
    pub scenario: String,
    /// Its points, labelled and bucketed as the overall series.
    pub points: Vec<SeriesPoint>,
}

/// One series at every resolution of [`TIERS`]: the points of closed buckets, newest last.
#[derive(Clone, Debug, Default)]
pub struct Tiers {
    points: [VecDeque<SeriesPoint>; TIERS.len()],
    /// Per tier, the end (`k·interval`) of the newest closed bucket.
    closed_through: [u64; TIERS.len()],
}

impl Tiers {
    /// The points of tier `tier`, oldest first.
    pub fn points(&self, tier: usize) -> &VecDeque<SeriesPoint> {
        &self.points[tier]
    }

    /// Every point kept, all tiers together (what the memory bound is about).
    pub fn len(&self) -> usize {
        self.points.iter().map(VecDeque::len).sum()
    }

    /// No point yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, tier: usize, point: SeriesPoint) {
        let kept = &mut self.points[tier];
        kept.push_back(point);
        if kept.len() > TIERS[tier].keep {
            kept.pop_front();
        }
    }

    /// The stretches of a level of detail: `(after, through, tier)`, newest first.
    fn stretches(&self, ages: &[u64; 4]) -> Vec<(u64, u64, usize)> {
        let Some(end) = self.points[0].back().map(|p| p.second) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut hi = end;
        for (tier, age) in ages.iter().enumerate() {
            let next = tier + 1;
            // Only closed buckets of the coarser tier can take over; its boundary is aligned.
            let cut = end.saturating_sub(*age).min(self.closed_through[next]);
            let lo = if cut >= hi && hi == end {
                // The run is over and every bucket closed: the coarser tier takes all.
                hi
            } else {
                cut.min(hi) / TIERS[next].interval * TIERS[next].interval
            };
            out.push((lo, hi, tier));
            hi = lo;
        }
        out.push((0, hi, TIERS.len() - 1));
        out.retain(|(lo, hi, _)| lo < hi);
        out
    }

    /// The points of the stretches, oldest first.
    fn compose(&self, stretches: &[(u64, u64, usize)]) -> Vec<SeriesPoint> {
        stretches
            .iter()
            .rev()
            .flat_map(|&(lo, hi, tier)| {
                self.points[tier]
                    .iter()
                    .filter(move |p| lo < p.second && p.second <= hi)
                    .cloned()
            })
            .collect()
    }
}

/// Every series of a run at every resolution kept: what [`fit`] chooses from.
#[derive(Clone, Debug, Default)]
pub struct SeriesArchive {
    /// The whole run.
    pub overall: Tiers,
    /// Each load scenario's, by name.
    pub scenarios: Vec<(String, Tiers)>,
}

/// The series of a run stitched at one level of detail.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComposedSeries {
    /// The whole run.
    pub series: Vec<SeriesPoint>,
    /// Each load scenario's, with the same stretches.
    pub scenario_series: Vec<ScenarioSeries>,
    /// The stretches and their intervals, oldest first.
    pub resolution: Vec<SeriesResolution>,
}

impl SeriesArchive {
    /// The series at level `level` of [`LEVELS`] (the coarsest past the end): the stretches
    /// are the overall series', so every scenario's points carry the same labels.
    pub fn compose(&self, level: usize) -> ComposedSeries {
        let ages = LEVELS[level.min(LEVELS.len() - 1)];
        let stretches = self.overall.stretches(&ages);
        ComposedSeries {
            series: self.overall.compose(&stretches),
            scenario_series: self
                .scenarios
                .iter()
                .map(|(name, tiers)| ScenarioSeries {
                    scenario: name.clone(),
                    points: tiers.compose(&stretches),
                })
                .collect(),
            resolution: stretches
                .iter()
                .rev()
                .map(|&(lo, hi, tier)| SeriesResolution {
                    from_second: lo,
                    to_second: hi,
                    interval_seconds: TIERS[tier].interval,
                })
                .collect(),
        }
    }
}

/// The finest level of detail whose series `fits` accepts (the caller measures: a byte
/// budget for the document they go into), and whether one did; the coarsest level when none
/// does. Levels that stitch the same stretches as a finer one are not tried again.
pub fn fit(
    archive: &SeriesArchive,
    mut fits: impl FnMut(&ComposedSeries) -> bool,
) -> (ComposedSeries, bool) {
    let mut tried: Option<ComposedSeries> = None;
    for level in 0..LEVELS.len() {
        let composed = archive.compose(level);
        if tried
            .as_ref()
            .is_some_and(|t| t.resolution == composed.resolution)
        {
            continue;
        }
        if fits(&composed) {
            return (composed, true);
        }
        tried = Some(composed);
    }
    (tried.unwrap_or_default(), false)
}

/// The overall series and one per load scenario, fed the same snapshots at the same moments
/// so their points carry the same labels.
#[derive(Debug, Default)]
pub struct RunSeries {
    overall: SeriesBuilder,
    scenarios: Vec<(String, SeriesBuilder)>,
}

impl RunSeries {
    /// Every series at every resolution kept, for a view (points only, no snapshots).
    pub fn archive(&self) -> SeriesArchive {
        SeriesArchive {
            overall: self.overall.tiers.clone(),
            scenarios: self
                .scenarios
                .iter()
                .map(|(name, b)| (name.clone(), b.tiers.clone()))
                .collect(),
        }
    }

    /// [`SeriesBuilder::push`] of the whole run and of each scenario.
    pub fn push(&mut self, merged: &RunMetrics, elapsed: Duration) {
        self.overall.push(merged.overall(), elapsed);
        for (name, total) in scenario_totals(merged) {
            self.builder(name).push(total, elapsed);
        }
    }

    /// [`SeriesBuilder::finish`] of the whole run and of each scenario.
    pub fn finish(&mut self, merged: &RunMetrics, elapsed: Duration) {
        self.overall.finish(merged.overall(), elapsed);
        for (name, total) in scenario_totals(merged) {
            self.builder(name).finish(total, elapsed);
        }
    }

    fn builder(&mut self, name: &str) -> &mut SeriesBuilder {
        let at = match self.scenarios.iter().position(|(n, _)| n == name) {
            Some(at) => at,
            None => {
                self.scenarios
                    .push((name.to_string(), SeriesBuilder::new()));
                self.scenarios.len() - 1
            }
        };
        &mut self.scenarios[at].1
    }
}

/// Each load scenario's cumulative measurements.
fn scenario_totals(merged: &RunMetrics) -> Vec<(&str, Measurements)> {
    merged
        .load_scenarios()
        .filter_map(|s| Some((s.name.as_str(), merged.scenario_total(&s.name)?)))
        .collect()
}

/// A coarse bucket still filling: the snapshot at its start (the end of the previous one).
#[derive(Debug)]
struct OpenBucket {
    bucket: u64,
    start: SeriesSnapshot,
    start_elapsed: Duration,
    last_label: u64,
}

/// Builds one series point by point, at every resolution of [`TIERS`].
#[derive(Debug, Default)]
pub struct SeriesBuilder {
    /// The last two cumulative snapshots (newest last), with their elapsed times.
    previous: Option<(SeriesSnapshot, Duration)>,
    before_previous: Option<(SeriesSnapshot, Duration)>,
    /// The newest one-second point, from `before_previous` to `previous`, is not yet in the
    /// coarse buckets: [`SeriesBuilder::finish`] may still fold the final tail into it.
    pending: bool,
    /// The open bucket of each coarse tier (index 0, the seconds, has none).
    open: [Option<OpenBucket>; TIERS.len()],
    tiers: Tiers,
}

impl SeriesBuilder {
    /// An empty series.
    pub fn new() -> SeriesBuilder {
        SeriesBuilder::default()
    }

    /// The one-second points kept (the newest [`TIERS`]`[0].keep`).
    pub fn points(&self) -> &VecDeque<SeriesPoint> {
        self.tiers.points(0)
    }

    /// Every resolution kept.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// Adds the interval from the previous snapshot to `overall`, taken `elapsed` after the
    /// start. Points are labelled by whole seconds since the start, always later than the
    /// previous point. Returns the new point (none for an empty interval or a snapshot that
    /// went backwards, which only a restarted runner could send).
    pub fn push(
        &mut self,
        overall: impl Into<SeriesSnapshot>,
        elapsed: Duration,
    ) -> Option<&SeriesPoint> {
        self.push_labelled(overall.into(), elapsed, false)
    }

    /// Adds the final point and closes every coarse bucket; the label rounds up, and a tail
    /// shorter than a quarter second is folded into the previous point.
    pub fn finish(&mut self, overall: impl Into<SeriesSnapshot>, elapsed: Duration) {
        let tail = self
            .previous
            .as_ref()
            .map(|(_, at)| elapsed.saturating_sub(*at))
            .unwrap_or(elapsed);
        if tail < SHORTEST_FINAL_TAIL && self.pending && self.before_previous.is_some() {
            self.tiers.points[0].pop_back();
            self.pending = false;
            self.previous = self.before_previous.take();
        }
        self.push_labelled(overall.into(), elapsed, true);
        self.settle_pending();
        let Some((end, end_elapsed)) = self.previous.take() else {
            return;
        };
        for tier in 1..TIERS.len() {
            if let Some(open) = self.open[tier].take() {
                self.close(tier, open, &end, end_elapsed);
            }
        }
        self.previous = Some((end, end_elapsed));
    }

    fn push_labelled(
        &mut self,
        overall: SeriesSnapshot,
        elapsed: Duration,
        last: bool,
    ) -> Option<&SeriesPoint> {
        let prev_elapsed = self.previous.as_ref().map_or(Duration::ZERO, |(_, at)| *at);
        if elapsed <= prev_elapsed {
            // Backwards, or no time passed: nothing to add; what did arrive goes into the
            // next point.
            return None;
        }
        let (prev, prev_elapsed) = self
            .previous
            .take()
            .unwrap_or_else(|| (SeriesSnapshot::default(), Duration::ZERO));
        let interval = elapsed - prev_elapsed;
        let secs = elapsed.as_secs_f64();
        let label = if last { secs.ceil() } else { secs.floor() } as u64;
        let label = match self.tiers.points[0].back() {
            Some(p) => label.max(p.second + 1),
            None => label.max(1),
        };
        // The newest point is final now: a new one follows it (or the snapshots restart).
        self.settle_pending();
        let point = series_point(&prev, &overall, label, interval).ok();
        let pushed = point.is_some();
        if let Some(p) = point {
            self.tiers.push(0, p);
            self.pending = true;
        }
        self.before_previous = Some((prev, prev_elapsed));
        self.previous = Some((overall, elapsed));
        if pushed {
            self.tiers.points[0].back()
        } else {
            None
        }
    }

    /// Puts the pending one-second point into the coarse buckets: a point of a later bucket
    /// closes the open one at the point's start (the end of the bucket's last second).
    fn settle_pending(&mut self) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        let (Some((start, start_elapsed)), Some(label)) = (
            self.before_previous.take(),
            self.tiers.points[0].back().map(|p| p.second),
        ) else {
            return;
        };
        for (tier, kept) in TIERS.iter().enumerate().skip(1) {
            let bucket = label.div_ceil(kept.interval);
            match &mut self.open[tier] {
                Some(open) if open.bucket == bucket => open.last_label = label,
                slot => {
                    let closing = slot.replace(OpenBucket {
                        bucket,
                        start: start.clone(),
                        start_elapsed,
                        last_label: label,
                    });
                    if let Some(closing) = closing {
                        self.close(tier, closing, &start, start_elapsed);
                    }
                }
            }
        }
        self.before_previous = Some((start, start_elapsed));
    }

    /// Ends `open` at the cumulative snapshot `end`: its point is the exact difference.
    fn close(
        &mut self,
        tier: usize,
        open: OpenBucket,
        end: &SeriesSnapshot,
        end_elapsed: Duration,
    ) {
        self.tiers.closed_through[tier] = open.bucket * TIERS[tier].interval;
        if end_elapsed > open.start_elapsed
            && let Ok(p) = series_point(
                &open.start,
                end,
                open.last_label,
                end_elapsed - open.start_elapsed,
            )
        {
            self.tiers.push(tier, p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use volley_core::metrics::histogram::{new_latency_histogram, record_latency};

    fn snapshot(requests: u64, latencies_ms: &[u64], base: &Measurements) -> Measurements {
        let mut m = base.clone();
        m.counters.requests += requests;
        for ms in latencies_ms {
            record_latency(&mut m.latency, Duration::from_millis(*ms));
        }
        m
    }

    #[test]
    fn points_are_exact_differences_labelled_by_second() {
        let mut s = SeriesBuilder::new();
        let a = snapshot(2, &[10, 10], &Measurements::default());
        let b = snapshot(3, &[50, 50, 50], &a);
        let p1 = s
            .push(a.clone(), Duration::from_millis(1010))
            .cloned()
            .unwrap();
        assert_eq!((p1.second, p1.requests), (1, 2));
        let p2 = s
            .push(b.clone(), Duration::from_millis(2020))
            .cloned()
            .unwrap();
        assert_eq!((p2.second, p2.requests, p2.interval_ms), (2, 3, 1010));
        assert!((p2.p50_ms - 50.0).abs() < 0.1, "{}", p2.p50_ms);
        assert_eq!(s.points().len(), 2);
    }

    #[test]
    fn a_missed_tick_makes_one_longer_interval_and_loses_nothing() {
        let mut s = SeriesBuilder::new();
        let a = snapshot(10, &[], &Measurements::default());
        let c = snapshot(20, &[], &a);
        s.push(a, Duration::from_secs(1));
        let p = s.push(c, Duration::from_secs(3)).cloned().unwrap();
        assert_eq!((p.second, p.requests, p.interval_ms), (3, 20, 2000));
        assert!((p.rps - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_short_final_tail_is_folded_into_the_last_point() {
        let mut s = SeriesBuilder::new();
        let a = snapshot(10, &[], &Measurements::default());
        let b = snapshot(10, &[], &a);
        let c = snapshot(1, &[], &b);
        s.push(a, Duration::from_secs(1));
        s.push(b, Duration::from_secs(2));
        s.finish(c, Duration::from_millis(2100));
        let points = s.points();
        assert_eq!(points.len(), 2);
        assert_eq!((points[1].second, points[1].requests), (3, 11));
    }

    #[test]
    fn a_snapshot_going_backwards_adds_no_point() {
        let mut s = SeriesBuilder::new();
        let a = snapshot(10, &[], &Measurements::default());
        s.push(a, Duration::from_secs(2));
        let smaller = snapshot(5, &[], &Measurements::default());
        assert!(s.push(smaller, Duration::from_secs(3)).is_none());
        assert!(
            s.push(Measurements::default(), Duration::from_secs(1))
                .is_none()
        );
        assert_eq!(s.points().len(), 1);
    }

    /// A run of `seconds` seconds, one report a second (at `k + 0.2` s), with a different
    /// latency spread each second; returns the builder and each second's interval histogram
    /// and failures.
    fn simulated(seconds: u64) -> (SeriesBuilder, Vec<(Histogram<u64>, u64)>) {
        let mut s = SeriesBuilder::new();
        let mut cumulative = SeriesSnapshot::default();
        let mut intervals = Vec::new();
        for second in 1..=seconds {
            let mut h = new_latency_histogram();
            for i in 0..(5 + second % 7) {
                let ms = 10 + (second * 37 + i * 101) % 400;
                record_latency(&mut h, Duration::from_millis(ms));
                record_latency(&mut cumulative.latency, Duration::from_millis(ms));
            }
            let failures = second % 3;
            cumulative.requests += h.len();
            cumulative.failures += failures;
            intervals.push((h, failures));
            s.push(
                cumulative.clone(),
                Duration::from_millis(second * 1000 + 200),
            );
        }
        s.finish(cumulative, Duration::from_millis(seconds * 1000 + 900));
        (s, intervals)
    }

    #[test]
    fn a_coarse_point_is_the_exact_merge_of_its_seconds() {
        let (s, intervals) = simulated(125);
        let seconds: Vec<&SeriesPoint> = s.points().iter().collect();
        // 125 reported seconds and the final 0.7 s, labelled 126.
        assert_eq!(seconds.len(), 126);
        for (tier, width) in [(1, 10u64), (2, 60)] {
            let coarse = s.tiers().points(tier);
            assert_eq!(coarse.len() as u64, 126u64.div_ceil(width), "tier {tier}");
            for p in coarse {
                let first = (p.second - 1) / width * width + 1;
                let mut merged = new_latency_histogram();
                let mut failures = 0;
                let own = (first - 1) as usize..(p.second as usize).min(intervals.len());
                for (h, f) in &intervals[own] {
                    merged.add(h).unwrap();
                    failures += f;
                }
                let ms = |q: f64| merged.value_at_quantile(q) as f64 / 1000.0;
                assert_eq!(p.requests, merged.len(), "{p:?}");
                assert_eq!(p.failures, failures);
                assert_eq!(
                    (p.p50_ms, p.p95_ms, p.p99_ms),
                    (ms(0.5), ms(0.95), ms(0.99))
                );
                // Its seconds' intervals and counts add up to it.
                let own: Vec<&&SeriesPoint> = seconds
                    .iter()
                    .filter(|q| first <= q.second && q.second <= p.second)
                    .collect();
                assert_eq!(
                    own.iter().map(|q| q.interval_ms).sum::<u64>(),
                    p.interval_ms
                );
                assert_eq!(own.iter().map(|q| q.requests).sum::<u64>(), p.requests);
                assert!((p.rps - p.requests as f64 * 1000.0 / p.interval_ms as f64).abs() < 1e-9);
            }
        }
        // The last, partial bucket ends with the run (the final label rounds up).
        let last = s.tiers().points(1).back().unwrap();
        assert_eq!((last.second, last.interval_ms), (126, 5_700));
    }

    #[test]
    fn a_level_stitches_fine_new_points_onto_coarse_old_ones_and_loses_nothing() {
        let (s, _) = simulated(1_300);
        let archive = SeriesArchive {
            overall: s.tiers().clone(),
            scenarios: vec![("a".into(), s.tiers().clone())],
        };
        let total: u64 = s.tiers().points(4).iter().map(|p| p.requests).sum();
        for level in 0..LEVELS.len() {
            let c = archive.compose(level);
            assert_eq!(
                c.series.iter().map(|p| p.requests).sum::<u64>(),
                total,
                "{level}"
            );
            assert!(c.series.windows(2).all(|w| w[0].second < w[1].second));
            assert_eq!(c.scenario_series[0].points, c.series);
            // The stretches tile the run and say each point's bucket.
            assert_eq!(c.resolution.first().unwrap().from_second, 0);
            assert_eq!(c.resolution.last().unwrap().to_second, 1_301);
            assert!(
                c.resolution
                    .windows(2)
                    .all(|w| w[0].to_second == w[1].from_second)
            );
            for p in &c.series {
                let r = c
                    .resolution
                    .iter()
                    .find(|r| r.from_second < p.second && p.second <= r.to_second)
                    .unwrap();
                assert!(
                    p.interval_ms <= r.interval_seconds * 1000 + 1000,
                    "{p:?} {r:?}"
                );
            }
        }
        let at = |level: usize| {
            archive
                .compose(level)
                .resolution
                .iter()
                .map(|r| (r.from_second, r.to_second, r.interval_seconds))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(0), [(0, 1_301, 1)]);
        assert_eq!(at(3), [(0, 700, 10), (700, 1_301, 1)]);
        // 2 minutes per second, the 8 before in 10 s, older in 60 s.
        assert_eq!(at(5), [(0, 660, 60), (660, 1_180, 10), (1_180, 1_301, 1)]);
        assert_eq!(at(9), [(0, 1_301, 3_600)]);
        assert_eq!(archive.compose(9).series.len(), 1);
    }

    #[test]
    fn fit_picks_the_finest_level_within_the_budget() {
        let (s, _) = simulated(1_300);
        let archive = SeriesArchive {
            overall: s.tiers().clone(),
            scenarios: Vec::new(),
        };
        let bytes = |c: &ComposedSeries| serde_json::to_string_pretty(&c.series).unwrap().len();
        let finest = bytes(&archive.compose(0));
        let (c, fitted) = fit(&archive, |c| bytes(c) <= finest);
        assert!(fitted);
        assert_eq!(c, archive.compose(0));
        for budget in [100_000, 20_000, 2_000] {
            let (c, fitted) = fit(&archive, |c| bytes(c) <= budget);
            assert!(fitted && bytes(&c) <= budget, "{budget}");
            // Finest: the next finer level would not have fitted.
            let level = (0..LEVELS.len())
                .find(|l| archive.compose(*l) == c)
                .unwrap();
            assert!(level > 0 && bytes(&archive.compose(level - 1)) > budget);
        }
        let (c, fitted) = fit(&archive, |_| false);
        assert!(!fitted);
        assert_eq!(c, archive.compose(LEVELS.len() - 1));
    }

    #[test]
    fn memory_stays_bounded_over_a_day() {
        // A report every 10 s for 24 hours (each point a 10 s interval): every tier fills.
        let mut s = SeriesBuilder::new();
        let mut cumulative = SeriesSnapshot::default();
        let day = 86_400;
        for second in (10..=day).step_by(10) {
            cumulative.requests += 10;
            record_latency(
                &mut cumulative.latency,
                Duration::from_millis(second % 500 + 1),
            );
            s.push(cumulative.clone(), Duration::from_secs(second));
        }
        s.finish(cumulative, Duration::from_secs(day));
        let kept: Vec<usize> = (0..TIERS.len())
            .map(|t| s.tiers().points(t).len())
            .collect();
        assert_eq!(kept, [3_700, 2_200, 1_440, 144, 24]);
        assert_eq!(s.tiers().len(), 7_508);
        // The finest level still covers the whole day, and nothing was counted twice.
        let archive = SeriesArchive {
            overall: s.tiers().clone(),
            scenarios: Vec::new(),
        };
        let c = archive.compose(0);
        assert_eq!(c.series.iter().map(|p| p.requests).sum::<u64>(), 86_400);
        assert_eq!(
            c.resolution
                .iter()
                .map(|r| (r.from_second, r.to_second, r.interval_seconds))
                .collect::<Vec<_>>(),
            [(0, 64_800, 60), (64_800, 82_800, 10), (82_800, 86_400, 1)]
        );
    }

    #[test]
    fn a_view_during_the_run_uses_only_closed_buckets() {
        let mut s = SeriesBuilder::new();
        let mut cumulative = SeriesSnapshot::default();
        for second in 1..=700u64 {
            cumulative.requests += 1;
            s.push(
                cumulative.clone(),
                Duration::from_millis(second * 1000 + 300),
            );
        }
        let archive = SeriesArchive {
            overall: s.tiers().clone(),
            scenarios: Vec::new(),
        };
        for level in 0..LEVELS.len() {
            let c = archive.compose(level);
            // Every second but the open buckets' is in, once.
            assert_eq!(
                c.series.iter().map(|p| p.requests).sum::<u64>(),
                700,
                "{level}"
            );
            assert_eq!(c.series.last().unwrap().second, 700);
        }
    }
}
