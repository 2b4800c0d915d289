//! Measuring the plateaus of a rate probe while it runs ([`volley_core::plateau`] says what a
//! plateau is and how it is judged).
//!
//! A plateau's window is the difference of two cumulative snapshots of its scenario: the first
//! taken once every runner's report has passed the plateau's begin, the last taken while no
//! runner's report has passed its end. Reports are cumulative and every runner's elapsed time
//! is known, so the window holds only requests of the plateau (it may miss up to one report
//! interval at each edge), and its histograms are exact.

use std::time::Duration;

use volley_core::metrics::model::{Measurements, RunMetrics};
use volley_core::plateau::{Plateau, PlateauResult, judge_plateau, plateaus};
use volley_crds::LoadTestSpec;

/// A snapshot of one scenario, with how far the least and the most advanced runner had got.
#[derive(Clone, Debug)]
struct Mark {
    oldest: Duration,
    newest: Duration,
    scenario: Measurements,
}

impl Mark {
    /// The moment the snapshot stands for: runners start within milliseconds of each other
    /// and report on the same beat, so the middle is within half a report interval of each.
    fn at(&self) -> Duration {
        (self.oldest + self.newest) / 2
    }
}

#[derive(Clone, Debug)]
struct Window {
    plateau: Plateau,
    begin: Option<Mark>,
    end: Option<Mark>,
    /// A runner's report passed the plateau's end: `end` is final.
    closed: bool,
}

/// The plateau windows of one run.
#[derive(Clone, Debug, Default)]
pub struct PlateauWatch {
    windows: Vec<Window>,
}

impl PlateauWatch {
    /// The windows of `spec`'s plateaus, none measured yet.
    pub fn new(spec: &LoadTestSpec) -> PlateauWatch {
        PlateauWatch {
            windows: plateaus(spec)
                .into_iter()
                .map(|plateau| Window {
                    plateau,
                    begin: None,
                    end: None,
                    closed: false,
                })
                .collect(),
        }
    }

    /// Takes the snapshots `merged` stands for: `oldest` and `newest` are how far the least and
    /// the most advanced runner's reports in it reach.
    pub fn observe(&mut self, merged: &RunMetrics, oldest: Duration, newest: Duration) {
        for w in self.windows.iter_mut().filter(|w| !w.closed) {
            if w.begin.is_none() && oldest < w.plateau.begin {
                continue;
            }
            let mark = Mark {
                oldest,
                newest,
                scenario: merged
                    .scenario_total(&w.plateau.scenario)
                    .unwrap_or_default(),
            };
            if w.begin.is_none() {
                w.begin = Some(mark.clone());
            }
            if newest <= w.plateau.end {
                w.end = Some(mark);
            } else {
                w.closed = true;
            }
        }
    }

    /// Every plateau measured so far, judged; a window the run ended inside is marked
    /// incomplete. Plateaus that never began, or passed within one report, are left out.
    pub fn results(&self, spec: &LoadTestSpec) -> Vec<PlateauResult> {
        self.windows
            .iter()
            .filter_map(|w| {
                let (begin, end) = (w.begin.as_ref()?, w.end.as_ref()?);
                let window = match end.scenario.since(&begin.scenario) {
                    Ok(window) => window,
                    Err(e) => {
                        tracing::error!(scenario = %w.plateau.scenario, stage = w.plateau.stage, error = %e, "plateau window left out");
                        return None;
                    }
                };
                let to = end.at().max(begin.at());
                // A run whose last report lands exactly on the plateau's end completed it.
                let complete = w.closed || end.newest >= w.plateau.end;
                Some(judge_plateau(
                    spec,
                    &w.plateau,
                    &window,
                    begin.at(),
                    to,
                    complete,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use volley_core::manifest::parse_manifest;
    use volley_core::metrics::histogram::record_latency;

    /// Plateaus 100/s over 0–10 s and 200/s over 12–22 s.
    fn spec() -> LoadTestSpec {
        parse_manifest(
            "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {name: p}\nspec:\n  \
             target: {baseUrl: 'http://127.0.0.1:1'}\n  scenarios:\n    - name: probe\n      \
             executor: ramping-arrival-rate\n      startRate: 100\n      steps: [{request: {url: /}}]\n      \
             stages: [{duration: 10s, target: 100}, {duration: 2s, target: 200}, \
             {duration: 10s, target: 200}]\n  thresholds: ['error_rate < 1%']\n",
        )
        .unwrap()
        .spec
    }

    /// A cumulative snapshot: `fast` requests of 1 ms, then `slow` failed ones of 80 ms.
    fn snapshot(spec: &LoadTestSpec, fast: u64, slow: u64) -> RunMetrics {
        let mut run = RunMetrics::for_spec(spec);
        let sc = &mut run.scenarios[0];
        let m = &mut sc.steps[0].m;
        for (n, ms) in [(fast, 1), (slow, 80)] {
            for _ in 0..n {
                record_latency(&mut m.latency, Duration::from_millis(ms));
            }
        }
        m.counters.requests = fast + slow;
        m.counters.failures = slow;
        sc.iterations.iterations = fast + slow;
        run
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_window_is_what_happened_between_the_plateaus_edges() {
        let spec = spec();
        let mut watch = PlateauWatch::new(&spec);
        // The first plateau begins with the run: the empty result is its begin.
        watch.observe(&snapshot(&spec, 0, 0), secs(0.0), secs(0.0));
        watch.observe(&snapshot(&spec, 100, 0), secs(0.0), secs(1.0));
        // 9 s: the last snapshot before the end.
        watch.observe(&snapshot(&spec, 900, 0), secs(9.0), secs(9.0));
        // 11 s: past the end of the first plateau (the ramp), not yet into the second.
        watch.observe(&snapshot(&spec, 1150, 0), secs(11.0), secs(11.0));
        let first = &watch.results(&spec)[0];
        assert_eq!(
            (first.requests, first.from_seconds, first.to_seconds),
            (900, 0.0, 9.0)
        );
        assert_eq!((first.held, first.complete), (Some(true), true));
        assert_eq!(first.achieved_rate, 100.0);
        // The second plateau begins at 12 s: while one runner's report is still at 11.5 s
        // (its ramp requests are not all in), the begin is held back.
        watch.observe(&snapshot(&spec, 1400, 0), secs(11.5), secs(12.5));
        assert_eq!(watch.results(&spec).len(), 1);
        watch.observe(&snapshot(&spec, 1600, 0), secs(12.5), secs(12.5));
        // Errors appear; then the run is aborted at 15 s, inside the plateau.
        watch.observe(&snapshot(&spec, 1900, 300), secs(15.0), secs(15.0));
        let results = watch.results(&spec);
        assert_eq!(results.len(), 2);
        let second = &results[1];
        assert_eq!(
            (second.rate, second.requests, second.failures),
            (200.0, 600, 300)
        );
        assert_eq!((second.held, second.complete), (Some(false), false));
        assert!(
            second.p99_ms >= 79.0,
            "only the window's requests: {second:?}"
        );
        assert_eq!(
            volley_core::plateau::sustainable_rates(&results)[0].rate,
            Some(100.0)
        );
    }

    #[test]
    fn a_plateau_passed_within_one_report_has_no_window() {
        let spec = spec();
        let mut watch = PlateauWatch::new(&spec);
        // The first report a resumed aggregator sees is already past the first plateau.
        watch.observe(&snapshot(&spec, 1100, 0), secs(11.0), secs(11.0));
        assert!(watch.results(&spec).is_empty());
    }
}
