//! The aggregator as the controller sees it: [`RunRegistry`]. The operator process implements
//! it over its embedded aggregator; tests use a fake.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use volley_crds::{LoadTest, LoadTestSpec};

use crate::names::RunRef;
use crate::observed::RunProgress;
use crate::secret::Token;

/// A run the aggregator should accept runners for.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRegistration {
    /// The run's id (the `--run` of `volley agent`).
    pub run_id: String,
    /// Namespace of the LoadTest.
    pub namespace: String,
    /// Name of the LoadTest.
    pub loadtest: String,
    /// The spec every runner gets its share of.
    pub spec: LoadTestSpec,
    /// The bearer token runners present.
    pub token: Token,
    /// The common start recorded in the status, when the run had started before this
    /// registration (an operator restarting mid-run): the aggregator skips the barrier and
    /// rebuilds the totals from the runners' next cumulative reports.
    pub started_at: Option<Timestamp>,
    /// How much longer the start barrier may wait for every runner: the operator's
    /// `--runner-start-timeout` less the time since the run began, so that the limit follows
    /// the operator's setting and survives an operator restart. `None`: the aggregator's
    /// default.
    pub start_timeout: Option<Duration>,
}

impl RunRegistration {
    /// The registration of `lt`'s run with the run's `token`; a run whose status records a
    /// start is registered as started.
    pub fn for_run(lt: &LoadTest, run: &RunRef, token: Token) -> Self {
        RunRegistration {
            run_id: run.run_id.clone(),
            namespace: run.namespace.clone(),
            loadtest: run.loadtest.clone(),
            spec: lt.spec.clone(),
            token,
            started_at: lt
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            start_timeout: None,
        }
    }

    /// The same registration whose start barrier gives up `timeout` after `began` (when the
    /// run began; unknown: now).
    pub fn with_start_timeout(
        mut self,
        timeout: Duration,
        began: Option<Timestamp>,
        now: Timestamp,
    ) -> Self {
        let spent = began.map_or(0, |b| {
            now.as_millisecond()
                .saturating_sub(b.as_millisecond())
                .max(0)
        });
        let spent = Duration::from_millis(u64::try_from(spent).unwrap_or(0));
        self.start_timeout = Some(timeout.saturating_sub(spent));
        self
    }
}

/// The aggregator's side of the runs the controller drives.
pub trait RunRegistry: Send + Sync {
    /// The aggregator's view of `run`, or `None` when it does not know the run.
    fn progress(&self, run: &str) -> Option<RunProgress>;
    /// Accepts runners of `registration.run_id` from now on. Registering a known run again
    /// keeps its state.
    fn register(&self, registration: RunRegistration);
    /// Stops `run`: runners are told to stop at their next report, the results so far stay.
    fn abort(&self, run: &str, reason: &str);
    /// Runner `index` of `run` is gone (e.g. its pod was killed): stop waiting for it.
    fn runner_failed(&self, run: &str, index: u32, reason: &str);
    /// The run's final status is written and its runners are through with it: release what
    /// the aggregator holds for it.
    fn forget(&self, run: &str);
    /// The LoadTest `namespace/loadtest` (uid `uid`, when known) is gone: stop its run, drop
    /// its per-run gauges at once, and release the run once its runners acknowledged the stop.
    /// Returns the ids of the runs concerned.
    fn loadtest_gone(&self, namespace: &str, loadtest: &str, uid: Option<&str>) -> Vec<String>;
    /// The full report of a run that started (`summary.json`): its results so far, e.g. when
    /// the operator ends it (abort, timeout); `None` when it never started.
    fn report(&self, _run: &str) -> Option<serde_json::Value> {
        None
    }
}
