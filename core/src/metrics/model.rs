//! The run model: [`RunMetrics`] holds everything a run measured, cumulative since its start:
//! one [`ScenarioMetrics`] per scenario (setup steps live in a scenario named
//! [`SETUP_SCENARIO`]), one [`StepMetrics`] per request step, each with its [`Measurements`]
//! (histograms and [`Counters`]). Runs from several runners merge exactly, matched by name.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::custom::CustomMetrics;
use crate::metrics::error::MetricsError;
use crate::metrics::histogram::{
    HistogramSummary, add_checked, add_clamped, fits, histogram_since, new_latency_histogram,
    same_histogram,
};
use crate::metrics::websocket::{self, WsMeasurements};
use volley_crds::spec::{ErrorKind, LoadTestSpec, Step};

/// The name of the pseudo-scenario that holds the `setup` steps. It is left out of the overall
/// figures, the scenario rows and the thresholds; its steps still get status rows.
pub const SETUP_SCENARIO: &str = "setup";

// ---------------------------------------------------------------------------------------------
// Counters and measurements
// ---------------------------------------------------------------------------------------------

/// Everything counted (rather than timed) for a step, a scenario, or a whole run. All
/// additions saturate, so figures from the network can never overflow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Requests sent (each retry and poll counts).
    #[serde(default)]
    pub requests: u64,
    /// Requests that failed, any kind.
    #[serde(default)]
    pub failures: u64,
    /// Iterations completed (scenario level).
    #[serde(default)]
    pub iterations: u64,
    /// Iterations an arrival-rate executor could not start (scenario level).
    #[serde(default)]
    pub dropped_iterations: u64,
    /// Iterations cut off because they outlived `gracefulStop` (scenario level): started but
    /// neither completed nor failed, their last request not counted.
    #[serde(default)]
    pub interrupted_iterations: u64,
    /// Checks that held.
    #[serde(default)]
    pub checks_passed: u64,
    /// Checks that did not hold.
    #[serde(default)]
    pub checks_failed: u64,
    /// Request bytes sent.
    #[serde(default)]
    pub bytes_sent: u64,
    /// Response bytes received.
    #[serde(default)]
    pub bytes_received: u64,
    /// Failed requests by kind, keyed by [`ErrorKind`]'s name in manifests: `connect`,
    /// `timeout`, `4xx`, `5xx`, `check`, `extract`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, u64>,
}

/// The name of an error kind in manifests, metrics and status (its serde name).
pub fn error_kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connect => "connect",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Status4xx => "4xx",
        ErrorKind::Status5xx => "5xx",
        ErrorKind::Check => "check",
        ErrorKind::Extract => "extract",
        ErrorKind::Blocked => "blocked",
    }
}

impl Counters {
    /// Adds every figure of `other` (saturating).
    pub fn add(&mut self, other: &Counters) {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        self.iterations = self.iterations.saturating_add(other.iterations);
        self.dropped_iterations = self
            .dropped_iterations
            .saturating_add(other.dropped_iterations);
        self.interrupted_iterations = self
            .interrupted_iterations
            .saturating_add(other.interrupted_iterations);
        self.checks_passed = self.checks_passed.saturating_add(other.checks_passed);
        self.checks_failed = self.checks_failed.saturating_add(other.checks_failed);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        for (kind, n) in &other.errors {
            let c = self.errors.entry(kind.clone()).or_insert(0);
            *c = c.saturating_add(*n);
        }
    }

    /// What happened between the cumulative `earlier` and `self`, field by field. Fails when
    /// `self` holds less than `earlier` anywhere: they are not successive snapshots of one run.
    pub fn since(&self, earlier: &Counters) -> Result<Counters, MetricsError> {
        let diff = |what: &'static str, prev: u64, cur: u64| {
            cur.checked_sub(prev)
                .ok_or(MetricsError::NotCumulative { what, prev, cur })
        };
        let mut interval = Counters {
            requests: diff("requests", earlier.requests, self.requests)?,
            failures: diff("failures", earlier.failures, self.failures)?,
            iterations: diff("iterations", earlier.iterations, self.iterations)?,
            dropped_iterations: diff(
                "dropped iterations",
                earlier.dropped_iterations,
                self.dropped_iterations,
            )?,
            interrupted_iterations: diff(
                "interrupted iterations",
                earlier.interrupted_iterations,
                self.interrupted_iterations,
            )?,
            checks_passed: diff("checks passed", earlier.checks_passed, self.checks_passed)?,
            checks_failed: diff("checks failed", earlier.checks_failed, self.checks_failed)?,
            bytes_sent: diff("bytes sent", earlier.bytes_sent, self.bytes_sent)?,
            bytes_received: diff(
                "bytes received",
                earlier.bytes_received,
                self.bytes_received,
            )?,
            errors: BTreeMap::new(),
        };
        for (kind, prev) in &earlier.errors {
            let cur = self.errors.get(kind).copied().unwrap_or(0);
            diff("errors of a kind", *prev, cur)?;
        }
        for (kind, cur) in &self.errors {
            let prev = earlier.errors.get(kind).copied().unwrap_or(0);
            let n = diff("errors of a kind", prev, *cur)?;
            if n > 0 {
                interval.errors.insert(kind.clone(), n);
            }
        }
        Ok(interval)
    }

    /// Counts one failed request of `kind`: `failures` and `errors[kind]` both go up by one, so
    /// the error map always sums to `failures`. Call it once per failed request, instead of
    /// (not in addition to) incrementing `failures`. `requests` is counted separately.
    pub fn count_error(&mut self, kind: ErrorKind) {
        self.failures = self.failures.saturating_add(1);
        let c = self
            .errors
            .entry(error_kind_name(kind).to_owned())
            .or_insert(0);
        *c = c.saturating_add(1);
    }
}

/// Everything measured for one step of one scenario (or the scenario's iteration-level
/// counters, or a merge of several). Latencies are in microseconds.
#[derive(Clone)]
pub struct Measurements {
    /// Every request's latency: from the scheduled start for arrival-rate executors (free of
    /// coordinated omission), from the send otherwise.
    pub latency: Histogram<u64>,
    /// Every request's latency from the moment it was actually sent.
    pub latency_sent: Histogram<u64>,
    /// Failed requests only, so slow (or fast) failures can be told apart from successes.
    pub failed_latency: Histogram<u64>,
    /// Requests, failures, iterations, checks, bytes, errors by kind.
    pub counters: Counters,
    /// Custom metrics read from responses (the step's `metrics:` list), by name.
    pub custom: CustomMetrics,
    /// What `websocket` steps measured besides their handshakes (which count as requests
    /// above); `None` where no WebSocket step contributed.
    pub websocket: Option<Box<WsMeasurements>>,
}

impl Default for Measurements {
    fn default() -> Self {
        Measurements {
            latency: new_latency_histogram(),
            latency_sent: new_latency_histogram(),
            failed_latency: new_latency_histogram(),
            counters: Counters::default(),
            custom: CustomMetrics::default(),
            websocket: None,
        }
    }
}

/// Histograms are compared by value: the same count at every recorded value.
impl PartialEq for Measurements {
    fn eq(&self, other: &Self) -> bool {
        self.counters == other.counters
            && same_histogram(&self.latency, &other.latency)
            && same_histogram(&self.latency_sent, &other.latency_sent)
            && same_histogram(&self.failed_latency, &other.failed_latency)
            && self.custom == other.custom
            && self.websocket == other.websocket
    }
}

/// Summarises the histograms (count, min, p50, p99, max) instead of dumping their counters.
impl fmt::Debug for Measurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Measurements")
            .field("latency", &HistogramSummary(&self.latency))
            .field("latency_sent", &HistogramSummary(&self.latency_sent))
            .field("failed_latency", &HistogramSummary(&self.failed_latency))
            .field("counters", &self.counters)
            .field("custom", &self.custom)
            .field("websocket", &self.websocket)
            .finish()
    }
}

impl Measurements {
    /// What happened between the cumulative snapshot `earlier` and `self`: every histogram and
    /// counter minus the earlier one (exact). Fails when the two are not successive
    /// snapshots of one run.
    pub fn since(&self, earlier: &Measurements) -> Result<Measurements, MetricsError> {
        Ok(Measurements {
            latency: histogram_since(&earlier.latency, &self.latency)?,
            latency_sent: histogram_since(&earlier.latency_sent, &self.latency_sent)?,
            failed_latency: histogram_since(&earlier.failed_latency, &self.failed_latency)?,
            counters: self.counters.since(&earlier.counters)?,
            custom: self.custom.since(&earlier.custom)?,
            websocket: websocket::since_optional(
                self.websocket.as_deref(),
                earlier.websocket.as_deref(),
            )?,
        })
    }

    /// Adds `other` into `self`: histograms count by count (exact), counters saturating.
    /// Fails, leaving `self` unchanged, when `other` holds values `self`'s histograms cannot
    /// track (never the case for histograms made by this module).
    pub fn add(&mut self, other: &Measurements) -> Result<(), MetricsError> {
        self.check_addable(other)?;
        add_checked(&mut self.latency, &other.latency)?;
        add_checked(&mut self.latency_sent, &other.latency_sent)?;
        add_checked(&mut self.failed_latency, &other.failed_latency)?;
        self.counters.add(&other.counters);
        self.custom.add_clamped(&other.custom);
        websocket::add_optional(&mut self.websocket, other.websocket.as_deref());
        Ok(())
    }

    fn check_addable(&self, other: &Measurements) -> Result<(), MetricsError> {
        fits(&self.latency, &other.latency)?;
        fits(&self.latency_sent, &other.latency_sent)?;
        fits(&self.failed_latency, &other.failed_latency)?;
        self.custom.check_addable(&other.custom)?;
        match (&self.websocket, &other.websocket) {
            (Some(mine), Some(theirs)) => mine.check_addable(theirs),
            // An empty side takes any histogram made by this crate; check against a fresh one.
            (None, Some(theirs)) => WsMeasurements::default().check_addable(theirs),
            (_, None) => Ok(()),
        }
    }

    /// Like [`Measurements::add`], clamping out-of-range values instead of failing.
    fn add_clamped(&mut self, other: &Measurements) {
        add_clamped(&mut self.latency, &other.latency);
        add_clamped(&mut self.latency_sent, &other.latency_sent);
        add_clamped(&mut self.failed_latency, &other.failed_latency);
        self.counters.add(&other.counters);
        self.custom.add_clamped(&other.custom);
        websocket::add_optional(&mut self.websocket, other.websocket.as_deref());
    }
}

// ---------------------------------------------------------------------------------------------
// The run model
// ---------------------------------------------------------------------------------------------

/// One scenario: iteration-level counters plus per-step measurements, in step order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScenarioMetrics {
    /// Scenario name ([`SETUP_SCENARIO`] for the setup steps).
    pub name: String,
    /// Iteration-level counters: `iterations` and `dropped_iterations` are counted here, not
    /// in the steps.
    pub iterations: Counters,
    /// One entry per request step (sleep steps have none), in step order.
    pub steps: Vec<StepMetrics>,
}

/// One request step's measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    /// The step's [`Step::display_name`].
    pub name: String,
    /// What was measured.
    pub m: Measurements,
}

/// All of a run's metrics, cumulative since its start. Setup steps live in a scenario named
/// [`SETUP_SCENARIO`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunMetrics {
    /// Scenarios in spec order, setup first.
    pub scenarios: Vec<ScenarioMetrics>,
}

/// Where an entry of `other` lands in `list` when merging: the same position if the name
/// matches there (the usual case, both sides shaped by the same spec), else the first entry
/// of that name.
fn position_by_name<T>(
    list: &[T],
    hint: usize,
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Option<usize> {
    if list.get(hint).is_some_and(|x| name_of(x) == name) {
        return Some(hint);
    }
    list.iter().position(|x| name_of(x) == name)
}

impl RunMetrics {
    /// An empty model shaped like the spec: a [`SETUP_SCENARIO`] entry first if `spec.setup`
    /// is non-empty, then one entry per scenario, each with one [`StepMetrics`] per step that
    /// has a request (named by [`Step::display_name`]). Sleep steps get no entry. The runner
    /// records by index into this shape ([`RunMetrics::step_mut`]).
    pub fn for_spec(spec: &LoadTestSpec) -> RunMetrics {
        fn scenario(name: &str, steps: &[Step]) -> ScenarioMetrics {
            ScenarioMetrics {
                name: name.to_owned(),
                iterations: Counters::default(),
                steps: steps
                    .iter()
                    .filter(|s| crate::scenario::is_measured(s))
                    .map(|s| StepMetrics {
                        name: s.display_name(),
                        m: Measurements {
                            custom: CustomMetrics::for_step(s),
                            // A WebSocket step shows its (zero) figures from the start.
                            websocket: s.websocket.is_some().then(Default::default),
                            ..Measurements::default()
                        },
                    })
                    .collect(),
            }
        }
        let setup = (!spec.setup.is_empty()).then(|| scenario(SETUP_SCENARIO, &spec.setup));
        RunMetrics {
            scenarios: setup
                .into_iter()
                .chain(spec.scenarios.iter().map(|s| scenario(&s.name, &s.steps)))
                .collect(),
        }
    }

    /// Merges another runner's metrics into these: scenarios and steps are matched by name
    /// (by position first, then by name), so reports from runners of one spec line up; names
    /// not found here are appended, so nothing is lost. Histograms add exactly.
    ///
    /// Fails, leaving `self` unchanged, if a histogram of `other` holds values the matching
    /// histogram here cannot track (never the case for histograms made by this module).
    pub fn merge(&mut self, other: &RunMetrics) -> Result<(), MetricsError> {
        // Check first, so that applying, which finds the same targets, cannot fail half-way.
        self.check_merge(other)?;
        for (i, os) in other.scenarios.iter().enumerate() {
            let si = match position_by_name(&self.scenarios, i, &os.name, |s| s.name.as_str()) {
                Some(si) => si,
                None => {
                    self.scenarios.push(ScenarioMetrics {
                        name: os.name.clone(),
                        ..ScenarioMetrics::default()
                    });
                    self.scenarios.len() - 1
                }
            };
            let Some(scenario) = self.scenarios.get_mut(si) else {
                continue;
            };
            scenario.iterations.add(&os.iterations);
            for (j, ost) in os.steps.iter().enumerate() {
                match position_by_name(&scenario.steps, j, &ost.name, |s| s.name.as_str())
                    .and_then(|k| scenario.steps.get_mut(k))
                {
                    // Checked by check_merge; clamping is only a fallback that cannot be reached.
                    Some(target) => target.m.add_clamped(&ost.m),
                    None => scenario.steps.push(ost.clone()),
                }
            }
        }
        Ok(())
    }

    /// Whether [`RunMetrics::merge`] would take `other`: every histogram of `other` that lands on
    /// one of these can be added to it. Changes nothing; allocates no histogram, so a server can
    /// check each incoming report against the empty shape of its run cheaply.
    pub fn check_merge(&self, other: &RunMetrics) -> Result<(), MetricsError> {
        // Find every target on a copy of the names, as merge will.
        let mut plan: Vec<(&str, Vec<(&str, &Measurements)>)> = self
            .scenarios
            .iter()
            .map(|s| {
                let steps = s.steps.iter().map(|st| (st.name.as_str(), &st.m)).collect();
                (s.name.as_str(), steps)
            })
            .collect();
        for (i, os) in other.scenarios.iter().enumerate() {
            let si = match position_by_name(&plan, i, &os.name, |s| s.0) {
                Some(si) => si,
                None => {
                    plan.push((os.name.as_str(), Vec::new()));
                    plan.len() - 1
                }
            };
            let Some((_, steps)) = plan.get_mut(si) else {
                continue;
            };
            for (j, ost) in os.steps.iter().enumerate() {
                match position_by_name(steps, j, &ost.name, |s| s.0) {
                    Some(k) => {
                        if let Some((_, target)) = steps.get(k) {
                            target
                                .check_addable(&ost.m)
                                .map_err(|e| e.in_step(&os.name, &ost.name, "histograms"))?;
                        }
                    }
                    None => steps.push((ost.name.as_str(), &ost.m)),
                }
            }
        }
        Ok(())
    }

    /// The first scenario with this name.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioMetrics> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// Step `step` of scenario `scenario`, by index in [`RunMetrics::for_spec`]'s shape: the
    /// runner's recording fast path.
    pub fn step_mut(&mut self, scenario: usize, step: usize) -> Option<&mut Measurements> {
        self.scenarios
            .get_mut(scenario)?
            .steps
            .get_mut(step)
            .map(|s| &mut s.m)
    }

    /// Scenarios that count towards the overall figures and thresholds: all but setup.
    pub fn load_scenarios(&self) -> impl Iterator<Item = &ScenarioMetrics> {
        self.scenarios.iter().filter(|s| s.name != SETUP_SCENARIO)
    }

    /// The whole run: every step and the iteration counters of every scenario but
    /// [`SETUP_SCENARIO`] (setup has its own step rows, and is not load).
    pub fn overall(&self) -> Measurements {
        let mut total = Measurements::default();
        for s in self.load_scenarios() {
            add_scenario(&mut total, s);
        }
        total
    }

    /// One scenario (the first of that name): its steps merged, plus its iteration counters.
    pub fn scenario_total(&self, name: &str) -> Option<Measurements> {
        let s = self.scenario(name)?;
        let mut total = Measurements::default();
        add_scenario(&mut total, s);
        Some(total)
    }

    /// One step's measurements (the first step of that name in the first scenario of that
    /// name). Iterations are counted per scenario, so its `iterations` are 0.
    pub fn step_total(&self, scenario: &str, step: &str) -> Option<Measurements> {
        self.scenario(scenario)?
            .steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.m.clone())
    }
}

/// Adds one scenario into `total`: every step, plus its iteration counters.
pub(crate) fn add_scenario(total: &mut Measurements, s: &ScenarioMetrics) {
    for step in &s.steps {
        total.add_clamped(&step.m);
    }
    total.counters.add(&s.iterations);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::histogram::{LATENCY_HIGH_US, record_latency};
    use crate::metrics::test_support::{Rng, measurements, record, spec};
    use crate::protocol::report::Report;
    use proptest::prelude::*;

    // ---- counters and measurements ----

    #[test]
    fn counters_add_every_field_and_merge_error_kinds() {
        let mut a = Counters {
            requests: 10,
            failures: 2,
            iterations: 5,
            dropped_iterations: 1,
            interrupted_iterations: 2,
            checks_passed: 7,
            checks_failed: 1,
            bytes_sent: 100,
            bytes_received: 1000,
            errors: BTreeMap::from([("5xx".to_owned(), 2)]),
        };
        let b = Counters {
            requests: 1,
            failures: 1,
            iterations: 2,
            dropped_iterations: 3,
            interrupted_iterations: 5,
            checks_passed: 4,
            checks_failed: 5,
            bytes_sent: 6,
            bytes_received: 7,
            errors: BTreeMap::from([("5xx".to_owned(), 1), ("timeout".to_owned(), 4)]),
        };
        a.add(&b);
        assert_eq!(
            a,
            Counters {
                requests: 11,
                failures: 3,
                iterations: 7,
                dropped_iterations: 4,
                interrupted_iterations: 7,
                checks_passed: 11,
                checks_failed: 6,
                bytes_sent: 106,
                bytes_received: 1007,
                errors: BTreeMap::from([("5xx".to_owned(), 3), ("timeout".to_owned(), 4)]),
            }
        );
        let mut big = Counters {
            requests: u64::MAX - 1,
            errors: BTreeMap::from([("connect".to_owned(), u64::MAX)]),
            ..Counters::default()
        };
        big.add(&Counters {
            requests: 5,
            errors: BTreeMap::from([("connect".to_owned(), 5)]),
            ..Counters::default()
        });
        assert_eq!(big.requests, u64::MAX);
        assert_eq!(big.errors["connect"], u64::MAX);
    }

    #[test]
    fn since_is_the_exact_difference_of_two_snapshots() {
        let mut early = Measurements::default();
        record_latency(&mut early.latency, Duration::from_millis(1));
        early.counters.requests = 1;
        early.counters.errors = BTreeMap::from([("5xx".to_owned(), 1)]);
        let mut late = early.clone();
        record_latency(&mut late.latency, Duration::from_millis(50));
        record_latency(&mut late.failed_latency, Duration::from_millis(50));
        late.counters.requests = 2;
        late.counters.failures = 1;
        late.counters.errors.insert("timeout".to_owned(), 1);
        let d = late.since(&early).unwrap();
        assert_eq!(d.latency.len(), 1);
        assert!(d.latency.equivalent(d.latency.min(), 50_000));
        assert_eq!(d.failed_latency.len(), 1);
        assert_eq!((d.counters.requests, d.counters.failures), (1, 1));
        assert_eq!(
            d.counters.errors,
            BTreeMap::from([("timeout".to_owned(), 1)])
        );
        // Backwards, or an error kind that vanished: not successive snapshots.
        assert!(early.since(&late).is_err());
        let mut lost = late.clone();
        lost.counters.errors.remove("5xx");
        assert!(matches!(
            lost.since(&early),
            Err(MetricsError::NotCumulative { .. })
        ));
    }

    #[test]
    fn count_error_counts_a_failure_under_the_serde_name() {
        let kinds = [
            ErrorKind::Connect,
            ErrorKind::Timeout,
            ErrorKind::Status4xx,
            ErrorKind::Status5xx,
            ErrorKind::Check,
            ErrorKind::Extract,
        ];
        let mut c = Counters::default();
        for (i, kind) in kinds.into_iter().enumerate() {
            let serde_name = serde_json::to_value(kind).unwrap();
            assert_eq!(serde_name.as_str(), Some(error_kind_name(kind)));
            for _ in 0..=i {
                c.count_error(kind);
            }
        }
        assert_eq!(c.failures, 21);
        assert_eq!(c.errors.values().sum::<u64>(), c.failures);
        assert_eq!(c.errors["connect"], 1);
        assert_eq!(c.errors["4xx"], 3);
        assert_eq!(c.errors["extract"], 6);
        assert_eq!(c.requests, 0);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["checksPassed"], 0);
        assert_eq!(json["errors"]["5xx"], 4);
    }

    #[test]
    fn measurements_add_equals_recording_everything_in_one() {
        let mut rng = Rng(7);
        let mut all = Measurements::default();
        let mut parts = [Measurements::default(), Measurements::default()];
        for i in 0..5000u64 {
            let us = rng.lognormal_us(20_000.0, 1.0);
            let fail = if i % 17 == 0 { 1 } else { 0 };
            record(&mut all, us, 1, fail);
            record(&mut parts[(i % 2) as usize], us, 1, fail);
        }
        assert_ne!(parts[0], all);
        let [mut a, b] = parts;
        a.add(&b).unwrap();
        assert_eq!(a, all);
        assert_eq!(a.counters.requests, 5000);
        assert_eq!(a.failed_latency.len(), a.counters.failures);
    }

    #[test]
    fn measurements_equality_is_by_value() {
        assert_eq!(
            measurements(&[5, 900, 40_000]),
            measurements(&[40_000, 5, 900])
        );
        assert_ne!(measurements(&[5, 900]), measurements(&[5, 901]));
        assert_ne!(measurements(&[5, 900]), measurements(&[5, 900, 900]));
        // A histogram of other bounds holding the same samples is still the same data.
        let mut other = measurements(&[5, 900]);
        other.latency = Histogram::new_with_bounds(1, 10_000, 3).unwrap();
        other.latency.record(5).unwrap();
        other.latency.record(900).unwrap();
        assert_eq!(other, measurements(&[5, 900]));
        let mut counted = measurements(&[5, 900]);
        counted.counters.bytes_sent = 1;
        assert_ne!(counted, measurements(&[5, 900]));
        // Debug is a summary, not 23 000 counters.
        assert!(format!("{:?}", measurements(&[5, 900])).len() < 600);
    }

    #[test]
    fn add_rejects_out_of_range_histograms_and_changes_nothing() {
        let mut wide = Measurements {
            latency_sent: Histogram::new_with_bounds(1, 100 * LATENCY_HIGH_US, 3).unwrap(),
            ..Measurements::default()
        };
        wide.latency_sent.record(50 * LATENCY_HIGH_US).unwrap();
        wide.latency.record(1000).unwrap();
        let mut m = measurements(&[10, 20]);
        let before = m.clone();
        let err = m.add(&wide).unwrap_err();
        assert!(matches!(err, MetricsError::Incompatible { .. }), "{err}");
        assert!(err.to_string().contains("tracks up to 3600000000"), "{err}");
        assert_eq!(m, before);

        // The same in a run merge: nothing at all is merged.
        let mut run = RunMetrics::for_spec(&spec());
        *run.step_mut(1, 0).unwrap() = measurements(&[10]);
        let before = run.clone();
        let mut other = RunMetrics::for_spec(&spec());
        *other.step_mut(0, 0).unwrap() = measurements(&[30]);
        *other.step_mut(1, 1).unwrap() = wide;
        let err = run.merge(&other).unwrap_err();
        assert!(
            err.to_string()
                .contains("scenario `light` step `GET /api/jobs`"),
            "{err}"
        );
        assert_eq!(run, before);
        // check_merge says the same against the empty shape, without merging.
        let shape = RunMetrics::for_spec(&spec());
        let err = shape.check_merge(&other).unwrap_err();
        assert!(
            err.to_string()
                .contains("scenario `light` step `GET /api/jobs`"),
            "{err}"
        );
        assert_eq!(shape, RunMetrics::for_spec(&spec()));
        *other.step_mut(1, 1).unwrap() = measurements(&[40]);
        assert!(shape.check_merge(&other).is_ok());
    }

    // ---- the run model ----

    #[test]
    fn for_spec_is_shaped_like_the_spec() {
        let run = RunMetrics::for_spec(&spec());
        let shape: Vec<(&str, Vec<&str>)> = run
            .scenarios
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.steps.iter().map(|st| st.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("setup", vec!["login"]),
                ("light", vec!["convert", "GET /api/jobs"]),
                ("heavy", vec!["upload"]),
            ]
        );
        assert!(
            run.scenarios
                .iter()
                .flat_map(|s| &s.steps)
                .all(|s| s.m == Measurements::default())
        );

        let no_setup = RunMetrics::for_spec(&LoadTestSpec {
            setup: vec![],
            ..spec()
        });
        assert_eq!(no_setup.scenarios[0].name, "light");
        assert_eq!(no_setup.scenarios.len(), 2);
    }

    #[test]
    fn step_mut_scenario_and_totals() {
        let mut run = RunMetrics::for_spec(&spec());
        record(run.step_mut(0, 0).unwrap(), 50_000, 1, 0); // setup login
        record(run.step_mut(1, 0).unwrap(), 10_000, 10, 5); // light convert
        record(run.step_mut(1, 1).unwrap(), 2_000, 20, 0); // light GET /api/jobs
        record(run.step_mut(2, 0).unwrap(), 400_000, 4, 0); // heavy upload
        run.scenarios[1].iterations.iterations = 10;
        run.scenarios[1].iterations.dropped_iterations = 2;
        run.scenarios[2].iterations.iterations = 4;
        assert!(run.step_mut(1, 2).is_none());
        assert!(run.step_mut(3, 0).is_none());
        assert_eq!(run.scenario("heavy").unwrap().steps.len(), 1);
        assert!(run.scenario("nope").is_none());

        let overall = run.overall();
        assert_eq!(overall.counters.requests, 34, "setup is not counted");
        assert_eq!(overall.counters.failures, 2);
        assert_eq!(overall.counters.iterations, 14);
        assert_eq!(overall.counters.dropped_iterations, 2);
        assert_eq!(overall.latency.len(), 34);
        assert_eq!(
            overall.latency.max(),
            overall.latency.highest_equivalent(400_000)
        );
        assert_eq!(overall.failed_latency.len(), 2);

        let light = run.scenario_total("light").unwrap();
        assert_eq!(light.counters.requests, 30);
        assert_eq!(light.counters.iterations, 10);
        assert_eq!(light, {
            let mut m = run.step_total("light", "convert").unwrap();
            m.add(&run.step_total("light", "GET /api/jobs").unwrap())
                .unwrap();
            m.counters.add(&run.scenarios[1].iterations);
            m
        });
        assert_eq!(run.scenario_total("setup").unwrap().counters.requests, 1);
        let convert = run.step_total("light", "convert").unwrap();
        assert_eq!(convert.counters.requests, 10);
        assert_eq!(convert.counters.iterations, 0);
        assert!(run.step_total("light", "upload").is_none());
        assert!(run.scenario_total("nope").is_none());
        assert_eq!(RunMetrics::default().overall(), Measurements::default());
    }

    #[test]
    fn merge_matches_by_name_and_appends_unknown_names() {
        let mut a = RunMetrics::for_spec(&spec());
        record(a.step_mut(1, 0).unwrap(), 1000, 3, 0);
        a.scenarios[1].iterations.iterations = 3;

        // Another runner whose model lists things in another order, with extra names.
        let mut b = RunMetrics {
            scenarios: vec![
                ScenarioMetrics {
                    name: "heavy".to_owned(),
                    iterations: Counters {
                        iterations: 1,
                        ..Counters::default()
                    },
                    steps: vec![StepMetrics {
                        name: "upload".to_owned(),
                        m: measurements(&[9_000]),
                    }],
                },
                ScenarioMetrics {
                    name: "light".to_owned(),
                    iterations: Counters {
                        iterations: 2,
                        dropped_iterations: 1,
                        ..Counters::default()
                    },
                    steps: vec![
                        StepMetrics {
                            name: "new step".to_owned(),
                            m: measurements(&[7]),
                        },
                        StepMetrics {
                            name: "convert".to_owned(),
                            m: measurements(&[2000, 3000]),
                        },
                    ],
                },
                ScenarioMetrics {
                    name: "surprise".to_owned(),
                    iterations: Counters::default(),
                    steps: vec![StepMetrics {
                        name: "x".to_owned(),
                        m: measurements(&[1]),
                    }],
                },
            ],
        };
        b.scenarios[1].steps[1]
            .m
            .counters
            .count_error(ErrorKind::Timeout);
        a.merge(&b).unwrap();

        let names: Vec<&str> = a.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["setup", "light", "heavy", "surprise"]);
        let light = a.scenario("light").unwrap();
        let steps: Vec<&str> = light.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(steps, ["convert", "GET /api/jobs", "new step"]);
        assert_eq!(light.iterations.iterations, 5);
        assert_eq!(light.iterations.dropped_iterations, 1);
        let convert = a.step_total("light", "convert").unwrap();
        let mut expected = measurements(&[1000, 1000, 1000, 2000, 3000]);
        expected.counters.count_error(ErrorKind::Timeout);
        assert_eq!(convert, expected);
        assert_eq!(
            a.step_total("light", "new step").unwrap(),
            measurements(&[7])
        );
        assert_eq!(
            a.step_total("heavy", "upload").unwrap(),
            measurements(&[9_000])
        );
        assert_eq!(a.step_total("surprise", "x").unwrap(), measurements(&[1]));
        assert_eq!(a.overall().counters.requests, 3 + 2 + 1 + 1 + 1);
        assert_eq!(a.overall().counters.iterations, 3 + 1 + 2);

        // Merging into an empty model copies everything.
        let mut empty = RunMetrics::default();
        empty.merge(&a).unwrap();
        assert_eq!(empty, a);
    }

    #[test]
    fn merge_of_runners_is_exact() {
        // 100 000 samples spread over 4 runners and 2 steps: the merge must be identical to
        // one histogram fed every sample, not just close.
        let spec = spec();
        let mut rng = Rng(42);
        let mut runners: Vec<RunMetrics> = (0..4).map(|_| RunMetrics::for_spec(&spec)).collect();
        let mut reference = new_latency_histogram();
        let mut reference_convert = new_latency_histogram();
        for i in 0..100_000u64 {
            // Mostly log-normal around 20 ms, some tail up to minutes, a few over an hour.
            let us = match i % 1000 {
                0 => rng.next() % (2 * LATENCY_HIGH_US),
                1..=20 => rng.next() % 120_000_000,
                _ => rng.lognormal_us(20_000.0, 0.8),
            };
            let runner = (rng.next() % 4) as usize;
            let step = (rng.next() % 2) as usize;
            let d = Duration::from_micros(us);
            let m = runners[runner].step_mut(1, step).unwrap();
            record_latency(&mut m.latency, d);
            m.counters.requests += 1;
            record_latency(&mut reference, d);
            if step == 0 {
                record_latency(&mut reference_convert, d);
            }
        }
        let mut merged = RunMetrics::for_spec(&spec);
        for r in &runners {
            // Through the wire format too: what the aggregator sees.
            let report = Report::from_metrics(0, 1, Duration::from_secs(1), false, r).unwrap();
            let json = serde_json::to_string(&report).unwrap();
            let back: Report = serde_json::from_str(&json).unwrap();
            merged.merge(&back.to_metrics().unwrap()).unwrap();
        }
        let overall = merged.overall();
        let h = &overall.latency;
        assert_eq!(h.len(), 100_000);
        assert_eq!(overall.counters.requests, 100_000);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                h.value_at_quantile(q),
                reference.value_at_quantile(q),
                "q={q}"
            );
        }
        assert_eq!(h.max(), reference.max());
        assert_eq!(h.min(), reference.min());
        assert_eq!(h.mean(), reference.mean());
        assert!(same_histogram(h, &reference));
        let convert = merged.step_total("light", "convert").unwrap();
        assert!(same_histogram(&convert.latency, &reference_convert));
        // Clamped samples are kept, at one hour.
        assert_eq!(h.max(), h.highest_equivalent(LATENCY_HIGH_US));
    }

    fn arb_measurements() -> impl Strategy<Value = Measurements> {
        (
            prop::collection::vec(1u64..=LATENCY_HIGH_US, 0..12),
            prop::collection::vec(1u64..=5_000u64, 0..6),
            0u64..50,
            0u64..5,
        )
            .prop_map(|(lat, failed, requests, errors)| {
                let mut m = Measurements::default();
                for v in &lat {
                    m.latency.record(*v).unwrap();
                    m.latency_sent.record((*v / 2).max(1)).unwrap();
                }
                for v in failed {
                    m.failed_latency.record(v).unwrap();
                }
                m.counters.requests = requests;
                for _ in 0..errors {
                    m.counters.count_error(ErrorKind::Connect);
                }
                m
            })
    }

    /// A small run with names drawn from small sets, so merges both match and append.
    fn arb_run() -> impl Strategy<Value = RunMetrics> {
        prop::collection::vec(
            (
                0usize..3,
                0u64..10,
                prop::collection::vec((0usize..3, arb_measurements()), 0..3),
            ),
            0..3,
        )
        .prop_map(|scenarios| {
            let mut run = RunMetrics::default();
            for (s, iterations, steps) in scenarios {
                let mut sc = ScenarioMetrics {
                    name: ["a", "b", "setup"][s].to_owned(),
                    iterations: Counters {
                        iterations,
                        ..Counters::default()
                    },
                    steps: vec![],
                };
                for (st, m) in steps {
                    sc.steps.push(StepMetrics {
                        name: ["x", "y", "z"][st].to_owned(),
                        m,
                    });
                }
                // Build through merge, so names are unique within the run, like for_spec's.
                run.merge(&RunMetrics {
                    scenarios: vec![sc],
                })
                .unwrap();
            }
            run
        })
    }

    /// Merge order decides where appended names land; content must not depend on it.
    type Normalized = Vec<(String, Counters, Vec<(String, Measurements)>)>;

    fn normalized(run: &RunMetrics) -> Normalized {
        let mut v: Vec<_> = run
            .scenarios
            .iter()
            .map(|s| {
                let mut steps: Vec<_> = s
                    .steps
                    .iter()
                    .map(|st| (st.name.clone(), st.m.clone()))
                    .collect();
                steps.sort_by(|x, y| x.0.cmp(&y.0));
                (s.name.clone(), s.iterations.clone(), steps)
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    }

    fn merged(parts: &[&RunMetrics]) -> RunMetrics {
        let mut out = RunMetrics::default();
        for p in parts {
            out.merge(p).unwrap();
        }
        out
    }

    proptest! {
        // 64 cases by default (each merges whole runs); `PROPTEST_CASES` raises it for a sweep.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn merge_is_commutative(a in arb_run(), b in arb_run()) {
            prop_assert_eq!(normalized(&merged(&[&a, &b])), normalized(&merged(&[&b, &a])));
        }

        #[test]
        fn merge_is_associative(a in arb_run(), b in arb_run(), c in arb_run()) {
            let left = merged(&[&merged(&[&a, &b]), &c]);
            let mut bc = b.clone();
            bc.merge(&c).unwrap();
            let mut right = a.clone();
            right.merge(&bc).unwrap();
            prop_assert_eq!(normalized(&left), normalized(&right));
        }

        #[test]
        fn merge_of_same_shaped_runs_commutes_exactly(a in arb_measurements(), b in arb_measurements()) {
            let spec = spec();
            let mut x = RunMetrics::for_spec(&spec);
            *x.step_mut(1, 1).unwrap() = a;
            let mut y = RunMetrics::for_spec(&spec);
            *y.step_mut(1, 1).unwrap() = b;
            let mut xy = x.clone();
            xy.merge(&y).unwrap();
            let mut yx = y.clone();
            yx.merge(&x).unwrap();
            prop_assert_eq!(xy, yx);
        }
    }
}
