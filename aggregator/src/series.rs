//! The per-second series of a run, built from successive cumulative snapshots of the merged
//! results: each point is the exact difference of two snapshots, so a late or missed tick
//! makes one longer interval and loses nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use volley_core::metrics::model::{Measurements, RunMetrics};
use volley_core::metrics::series::{SeriesPoint, series_point};

/// A tail shorter than this after the last tick would be a noisy point of its own (a few
/// requests over a few ms), so it is folded into the last point instead.
const SHORTEST_FINAL_TAIL: Duration = Duration::from_millis(250);

/// One scenario's per-second series (`scenarioSeries` in the summary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSeries {
    /// The scenario's name.
    pub scenario: String,
    /// One point per second of the scenario's own requests, labelled as the overall series.
    pub points: Vec<SeriesPoint>,
}

/// The overall series and one per load scenario, fed the same snapshots at the same moments
/// so their points carry the same labels.
#[derive(Debug, Default)]
pub struct RunSeries {
    overall: SeriesBuilder,
    scenarios: Vec<(String, SeriesBuilder)>,
}

impl RunSeries {
    /// The overall points so far.
    pub fn points(&self) -> &[SeriesPoint] {
        self.overall.points()
    }

    /// Each load scenario's points so far.
    pub fn scenario_points(&self) -> Vec<ScenarioSeries> {
        self.scenarios
            .iter()
            .map(|(name, b)| ScenarioSeries {
                scenario: name.clone(),
                points: b.points().to_vec(),
            })
            .collect()
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

/// Builds the series point by point.
#[derive(Debug, Default)]
pub struct SeriesBuilder {
    /// The last two cumulative snapshots (newest last), with their elapsed times.
    previous: Option<(Measurements, Duration)>,
    before_previous: Option<(Measurements, Duration)>,
    points: Vec<SeriesPoint>,
}

impl SeriesBuilder {
    /// An empty series.
    pub fn new() -> SeriesBuilder {
        SeriesBuilder::default()
    }

    /// The points so far.
    pub fn points(&self) -> &[SeriesPoint] {
        &self.points
    }

    /// Adds the interval from the previous snapshot to `overall`, taken `elapsed` after the
    /// start. Points are labelled by whole seconds since the start, always later than the
    /// previous point. Returns the new point (none for an empty interval or a snapshot that
    /// went backwards, which only a restarted runner could send).
    pub fn push(&mut self, overall: Measurements, elapsed: Duration) -> Option<&SeriesPoint> {
        self.push_labelled(overall, elapsed, false)
    }

    /// Adds the final point; the label rounds up, and a tail shorter than a quarter second is
    /// folded into the previous point.
    pub fn finish(&mut self, overall: Measurements, elapsed: Duration) {
        let tail = self
            .previous
            .as_ref()
            .map(|(_, at)| elapsed.saturating_sub(*at))
            .unwrap_or(elapsed);
        if tail < SHORTEST_FINAL_TAIL && !self.points.is_empty() {
            self.points.pop();
            self.previous = self.before_previous.take();
        }
        self.push_labelled(overall, elapsed, true);
    }

    fn push_labelled(
        &mut self,
        overall: Measurements,
        elapsed: Duration,
        last: bool,
    ) -> Option<&SeriesPoint> {
        let (prev, prev_elapsed) = self
            .previous
            .take()
            .unwrap_or_else(|| (Measurements::default(), Duration::ZERO));
        if elapsed < prev_elapsed {
            self.previous = Some((prev, prev_elapsed));
            return None;
        }
        let interval = elapsed - prev_elapsed;
        let secs = elapsed.as_secs_f64();
        let label = if last { secs.ceil() } else { secs.floor() } as u64;
        let label = match self.points.last() {
            Some(p) => label.max(p.second + 1),
            None => label.max(1),
        };
        let point = if interval.is_zero() {
            None
        } else {
            series_point(&prev, &overall, label, interval).ok()
        };
        let pushed = point.is_some();
        if let Some(p) = point {
            self.points.push(p);
        }
        self.before_previous = Some((prev, prev_elapsed));
        self.previous = Some((overall, elapsed));
        if pushed { self.points.last() } else { None }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use volley_core::metrics::histogram::record_latency;

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
}
