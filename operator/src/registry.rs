//! The aggregator as the controller sees it: [`RunRegistry`]. The operator process implements
//! it over its embedded aggregator; tests use a fake.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use volley_core::compare::{Baseline, parse_summary};
use volley_crds::schedule::LoadTestSchedule;
use volley_crds::status::Verdict;
use volley_crds::{LoadTest, LoadTestSpec};

use crate::names::RunRef;
use crate::observed::RunProgress;
use crate::report::REPORT_KEY;
use crate::schedule::SCHEDULE_LABEL;
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
    /// What the run's baseline thresholds compare with, read before the run starts
    /// ([`baseline_source`], [`baseline_from_config_map`]).
    pub baseline: Baseline,
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
            baseline: Baseline::default(),
        }
    }

    /// The same registration comparing with `baseline`.
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = baseline;
        self
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

/// Where a run's baseline is read from before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaselineSource {
    /// Nothing names a baseline: baseline thresholds are skipped.
    None,
    /// A `summary.json` in a ConfigMap of the LoadTest's namespace.
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// The key holding the summary.
        key: String,
    },
}

/// Where `lt`'s baseline comes from: `spec.baseline.configMapRef` when set, else the report
/// of the newest run in `status.history` that passed (each run keeps its own report ConfigMap
/// while it is in the history), else none.
pub fn baseline_source(lt: &LoadTest) -> BaselineSource {
    if let Some(b) = &lt.spec.baseline {
        return BaselineSource::ConfigMap {
            name: b.config_map_ref.name.clone(),
            key: b.config_map_ref.key.clone(),
        };
    }
    let history = lt
        .status
        .as_ref()
        .map(|s| s.history.as_slice())
        .unwrap_or_default();
    history
        .iter()
        .find(|r| r.verdict == Some(Verdict::Passed))
        .and_then(|r| r.report_ref.as_ref())
        .map_or(BaselineSource::None, |report| BaselineSource::ConfigMap {
            name: report.config_map_name.clone(),
            key: REPORT_KEY.to_string(),
        })
}

/// The label selector of the runs of the LoadTestSchedule that owns `lt` (its controller
/// ownerReference of kind `LoadTestSchedule`), from `lt`'s own schedule label; `None` for a
/// LoadTest no schedule owns.
pub fn schedule_selector(lt: &LoadTest) -> Option<String> {
    schedule_owner(lt)?;
    let value = lt.metadata.labels.as_ref()?.get(SCHEDULE_LABEL)?;
    Some(format!("{SCHEDULE_LABEL}={value}"))
}

/// The UID of the LoadTestSchedule that owns `lt` as its controller.
fn schedule_owner(lt: &LoadTest) -> Option<&str> {
    lt.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.kind == <LoadTestSchedule as kube::Resource>::kind(&()) && o.controller == Some(true)
        })
        .map(|o| o.uid.as_str())
}

/// The baseline of a run of a LoadTestSchedule that has none of its own ([`baseline_source`]
/// says [`BaselineSource::None`]): the report of the newest Passed run of the same schedule
/// among `runs` (the LoadTests listed under its label; only those the same schedule owns,
/// by UID, count, and `lt` itself never does). A run is each LoadTest's current run and every
/// run in its history; the newest is the one that completed last, and a run without a
/// report or a completion time cannot be one.
pub fn schedule_baseline(lt: &LoadTest, runs: &[LoadTest]) -> BaselineSource {
    let Some(schedule) = schedule_owner(lt) else {
        return BaselineSource::None;
    };
    let passed = |verdict: Option<Verdict>,
                  report: Option<&volley_crds::status::ReportRef>,
                  completed: Option<&Time>| {
        match (verdict, report, completed) {
            (Some(Verdict::Passed), Some(r), Some(t)) => Some((t.0, r.config_map_name.clone())),
            _ => None,
        }
    };
    runs.iter()
        .filter(|run| run.metadata.uid != lt.metadata.uid && schedule_owner(run) == Some(schedule))
        .filter_map(|run| run.status.as_ref())
        .flat_map(|status| {
            let current = passed(
                status.verdict,
                status.report_ref.as_ref(),
                status.completion_time.as_ref(),
            );
            let earlier = status
                .history
                .iter()
                .map(|r| passed(r.verdict, r.report_ref.as_ref(), r.completion_time.as_ref()));
            std::iter::once(current).chain(earlier).flatten()
        })
        .max_by_key(|(completed, _)| *completed)
        .map_or(BaselineSource::None, |(_, name)| {
            BaselineSource::ConfigMap {
                name,
                key: REPORT_KEY.to_string(),
            }
        })
}

/// The baseline in `cm` (the ConfigMap `name` as read; `None` when it does not exist) under
/// `key`. A missing ConfigMap or key, or a value that is not a summary, makes the baseline
/// unavailable with the reason, so the run goes ahead and its baseline thresholds are skipped
/// saying why.
pub fn baseline_from_config_map(name: &str, key: &str, cm: Option<&ConfigMap>) -> Baseline {
    let Some(cm) = cm else {
        return Baseline::Unavailable(format!("baseline ConfigMap {name} not found"));
    };
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(String::as_bytes);
    let binary = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice());
    match text.or(binary) {
        None => Baseline::Unavailable(format!("baseline ConfigMap {name} has no key {key}")),
        Some(json) => match parse_summary(json) {
            Ok(figures) => Baseline::Run(Box::new(figures)),
            Err(e) => Baseline::Unavailable(format!(
                "baseline ConfigMap {name} key {key} is not a run summary: {e}"
            )),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::fixtures;

    fn config_map(key: &str, value: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..ConfigMap::default()
        }
    }

    /// Without `spec.baseline`, the newest passed run of the history is the baseline; a
    /// newer failed run is not, and an explicit `spec.baseline` wins over the history.
    #[test]
    fn the_source_is_the_newest_passed_run_of_the_history() {
        let mut lt = fixtures::loadtest_yaml("web", "");
        lt.status = Some(
            serde_json::from_value(serde_json::json!({"history": [
                {"run": 3, "verdict": "Failed", "reportRef": {"configMapName": "web-report-r3"}},
                {"run": 2, "verdict": "Passed", "reportRef": {"configMapName": "web-report-r2"}},
                {"run": 1, "verdict": "Passed", "reportRef": {"configMapName": "web-report"}},
            ]}))
            .unwrap(),
        );
        assert_eq!(
            baseline_source(&lt),
            BaselineSource::ConfigMap {
                name: "web-report-r2".into(),
                key: REPORT_KEY.into()
            }
        );
        lt.spec =
            fixtures::loadtest_yaml("web", "baseline: {configMapRef: {name: web-before}}").spec;
        assert_eq!(
            baseline_source(&lt),
            BaselineSource::ConfigMap {
                name: "web-before".into(),
                key: "summary.json".into()
            }
        );
        lt.spec.baseline = None;
        lt.status = Some(
            serde_json::from_value(serde_json::json!({"history": [
                {"run": 1, "verdict": "Failed", "reportRef": {"configMapName": "web-report"}},
            ]}))
            .unwrap(),
        );
        assert_eq!(baseline_source(&lt), BaselineSource::None);
    }

    /// A run of schedule `owner` named `name` (uid `name`), with `status`.
    fn scheduled(name: &str, owner: &str, status: serde_json::Value) -> LoadTest {
        let mut lt = fixtures::loadtest_yaml(name, "");
        lt.metadata.uid = Some(name.into());
        lt.metadata.labels = Some(BTreeMap::from([(SCHEDULE_LABEL.into(), "nightly".into())]));
        lt.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "volley.dev/v1alpha1".into(),
                kind: "LoadTestSchedule".into(),
                name: "nightly".into(),
                uid: owner.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        lt.status = Some(serde_json::from_value(status).unwrap());
        lt
    }

    fn passed(report: &str, completed: &str) -> serde_json::Value {
        serde_json::json!({"phase": "Succeeded", "verdict": "Passed",
            "completionTime": completed, "reportRef": {"configMapName": report}})
    }

    /// A run of a schedule without its own baseline compares with the newest Passed run of
    /// the same schedule: by completion, across runs and their histories; never a failed run,
    /// one of another schedule (same label, other UID), itself, or a run without a report.
    #[test]
    fn a_scheduled_run_compares_with_the_schedules_newest_passed_run() {
        let me = scheduled("nightly-3", "s1", serde_json::json!({"phase": "Pending"}));
        assert_eq!(
            schedule_selector(&me).as_deref(),
            Some("volley.dev/schedule=nightly")
        );
        let report = |name: &str| BaselineSource::ConfigMap {
            name: name.into(),
            key: REPORT_KEY.into(),
        };
        let t = |h: u32| format!("2026-12-0{h}T02:00:00Z");
        let older = scheduled("nightly-1", "s1", passed("nightly-1-report", &t(1)));
        let newer = scheduled("nightly-2", "s1", passed("nightly-2-report", &t(2)));
        let failed = scheduled(
            "nightly-4",
            "s1",
            serde_json::json!({"phase": "Failed", "verdict": "Failed", "completionTime": t(4),
                "reportRef": {"configMapName": "nightly-4-report"}}),
        );
        let foreign = scheduled("nightly-x", "s2", passed("nightly-x-report", &t(5)));
        let no_report = scheduled(
            "nightly-5",
            "s1",
            serde_json::json!({"phase": "Succeeded", "verdict": "Passed", "completionTime": t(6)}),
        );
        let mut myself = me.clone();
        myself.status = Some(serde_json::from_value(passed("nightly-3-report", &t(7))).unwrap());
        let all = [
            older.clone(),
            newer.clone(),
            failed.clone(),
            foreign,
            no_report,
            myself,
        ];
        assert_eq!(schedule_baseline(&me, &all), report("nightly-2-report"));
        assert_eq!(
            schedule_baseline(&me, &[newer.clone(), older.clone()]),
            report("nightly-2-report"),
            "the order of the list does not matter"
        );
        assert_eq!(
            schedule_baseline(&me, std::slice::from_ref(&failed)),
            BaselineSource::None
        );
        assert_eq!(schedule_baseline(&me, &[]), BaselineSource::None);

        // A re-run run of the schedule: its history counts as much as its current run.
        let rerun = scheduled(
            "nightly-6",
            "s1",
            serde_json::json!({"phase": "Failed", "verdict": "Failed", "completionTime": t(9),
                "reportRef": {"configMapName": "nightly-6-report-r2"},
                "history": [{"run": 1, "verdict": "Passed", "completionTime": t(8),
                             "reportRef": {"configMapName": "nightly-6-report"}}]}),
        );
        assert_eq!(
            schedule_baseline(&me, &[older, newer, rerun]),
            report("nightly-6-report")
        );

        // Not owned by a schedule (only labelled): no schedule baseline, no list.
        let mut loose = me.clone();
        loose.metadata.owner_references = None;
        assert_eq!(schedule_selector(&loose), None);
        assert_eq!(schedule_baseline(&loose, &[failed]), BaselineSource::None);
    }

    #[test]
    fn the_source_is_the_spec_baseline_with_its_default_key() {
        let lt = fixtures::loadtest_yaml("web", "");
        assert_eq!(baseline_source(&lt), BaselineSource::None);
        let lt = fixtures::loadtest_yaml("web", "baseline: {configMapRef: {name: web-before}}");
        assert_eq!(
            baseline_source(&lt),
            BaselineSource::ConfigMap {
                name: "web-before".into(),
                key: "summary.json".into()
            }
        );
    }

    #[test]
    fn a_config_map_summary_is_the_baseline_and_anything_else_says_why_not() {
        let summary = r#"{"name": "web", "durationSeconds": 10,
            "metrics": {"requests": 100, "failures": 0, "errorRate": 0, "rps": 10,
              "iterations": 100, "droppedIterations": 0, "dataReceivedBytes": 0,
              "dataSentBytes": 0, "p95": "5ms", "errors": "0%",
              "latencyMs": {"min": 1, "mean": 2, "p50": 2, "p90": 4, "p95": 5, "p99": 9, "max": 12}},
            "scenarios": [], "steps": [], "series": []}"#;
        let Baseline::Run(figures) = baseline_from_config_map(
            "b",
            "summary.json",
            Some(&config_map("summary.json", summary)),
        ) else {
            panic!("a summary is a baseline");
        };
        assert_eq!(figures.overall().p95_ms, 5.0);
        let why = |cm: Option<&ConfigMap>| match baseline_from_config_map("b", "summary.json", cm) {
            Baseline::Unavailable(why) => why,
            Baseline::Run(_) => panic!("not a baseline"),
        };
        assert_eq!(why(None), "baseline ConfigMap b not found");
        assert_eq!(
            why(Some(&config_map("other", summary))),
            "baseline ConfigMap b has no key summary.json"
        );
        let broken = why(Some(&config_map(
            "summary.json",
            r#"{"durationSeconds": "x"}"#,
        )));
        assert!(broken.contains("field `durationSeconds`"), "{broken}");
    }
}
