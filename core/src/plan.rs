//! How long a LoadTest is planned to take, read off its spec: what `volley run`, the
//! aggregator and the operator use to show progress and to bound a run that has no
//! `spec.timeout`.

use std::time::Duration;

use volley_crds::spec::{LoadTestSpec, Scenario};

pub use crate::scenario::DEFAULT_MAX_DURATION;
use crate::scenario::Workload;

/// Extra time a run may take beyond its plan when `spec.timeout` is not set.
pub const DEFAULT_TIMEOUT_MARGIN: Duration = Duration::from_secs(10 * 60);

/// How long iterations may start, from the scenario's begin (after `startTime`): see
/// [`Workload::run_length`]. A scenario validation would refuse has none (0s).
pub fn run_length(scenario: &Scenario) -> Duration {
    Workload::of(scenario).map_or(Duration::ZERO, |w| w.run_length())
}

/// Planned duration of a scenario excluding gracefulStop (startTime + duration / sum of stages /
/// maxDuration for iteration executors, default 10m).
pub fn scenario_duration(scenario: &Scenario) -> Duration {
    scenario
        .start_time
        .get()
        .saturating_add(run_length(scenario))
}

/// When the last scenario is planned to stop starting iterations.
pub fn planned_duration(spec: &LoadTestSpec) -> Duration {
    spec.scenarios
        .iter()
        .map(scenario_duration)
        .max()
        .unwrap_or_default()
}

/// The latest a run can end by itself: the planned duration plus graceful stops.
pub fn longest_duration(spec: &LoadTestSpec) -> Duration {
    spec.scenarios
        .iter()
        .map(|s| scenario_duration(s).saturating_add(s.graceful_stop.get()))
        .max()
        .unwrap_or_default()
}

/// The longest `gracefulStop` of any scenario: how long a stopped run may take to wind down.
pub fn longest_graceful_stop(spec: &LoadTestSpec) -> Duration {
    spec.scenarios
        .iter()
        .map(|s| s.graceful_stop.get())
        .max()
        .unwrap_or_default()
}

/// The bound on the whole run (setup and start barrier included): `spec.timeout`, or the
/// longest duration plus [`DEFAULT_TIMEOUT_MARGIN`].
pub fn timeout(spec: &LoadTestSpec) -> Duration {
    spec.timeout
        .map(|t| t.get())
        .unwrap_or_else(|| longest_duration(spec).saturating_add(DEFAULT_TIMEOUT_MARGIN))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifest;

    fn spec(scenarios: &str) -> LoadTestSpec {
        let yaml = format!(
            "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: t}}\n\
             spec:\n  target: {{baseUrl: 'http://127.0.0.1:1'}}\n  scenarios:\n{scenarios}"
        );
        parse_manifest(&yaml).unwrap().spec
    }

    #[test]
    fn the_plan_is_the_latest_scenario_and_graceful_stop_extends_it() {
        let s = spec(
            "  - {name: a, executor: constant-vus, vus: 1, duration: 30s, gracefulStop: 5s,\n     \
             steps: [{request: {url: /}}]}\n  \
             - {name: b, executor: ramping-arrival-rate, startTime: 10s, maxVUs: 2,\n     \
             stages: [{duration: 20s, target: 5}, {duration: 15s, target: 0}],\n     \
             steps: [{request: {url: /}}]}\n",
        );
        assert_eq!(planned_duration(&s), Duration::from_secs(45));
        // b: 45s + default gracefulStop 30s; a: 35s.
        assert_eq!(longest_duration(&s), Duration::from_secs(75));
        assert_eq!(longest_graceful_stop(&s), Duration::from_secs(30));
        assert_eq!(timeout(&s), Duration::from_secs(75 + 600));
    }

    #[test]
    fn iteration_executors_are_bounded_by_max_duration() {
        let s = spec(
            "  - {name: a, executor: shared-iterations, vus: 1, iterations: 3,\n     \
             steps: [{request: {url: /}}]}\n",
        );
        assert_eq!(planned_duration(&s), DEFAULT_MAX_DURATION);
        let s = spec(
            "  - {name: a, executor: per-vu-iterations, vus: 1, iterations: 3, maxDuration: 1m,\n     \
             steps: [{request: {url: /}}]}\n",
        );
        assert_eq!(planned_duration(&s), Duration::from_secs(60));
    }
}
