//! Re-runs and the run history, as pure functions [`crate::phase::next_step`] calls.
//!
//! - A finished LoadTest (any of Succeeded, Failed, Aborted, Error) runs again when its spec
//!   changed (`metadata.generation` is not the `status.observedGeneration` its status
//!   describes) or when the annotation `volley.dev/rerun` has a value the status has not
//!   answered yet (`status.rerunRequest`): [`trigger`]. A spec with `abort: true` never starts
//!   a run (it would be aborted at once); clearing `abort` does.
//! - The new run starts with one status write ([`restart`]): the finished run becomes the
//!   newest entry of `status.history`, the run number goes up by one (and with it the names of
//!   the run's pods, Secret and report, see [`crate::names::run_suffix`]),
//!   `observedGeneration` becomes the new spec's, and the conditions are reset in the same
//!   write, so no condition of the new generation says Complete before the new run finished.
//! - A change while a run is under way does not touch that run: it is queued
//!   (`status.nextRun`, with an event) and starts once the run finished and its runners
//!   stopped.
//! - The history keeps at most `spec.cleanup.historyLimit` entries ([`history_limit`]); the
//!   report ConfigMap of an entry that falls off is deleted with it ([`push_history`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use volley_crds::status::{Phase, RunRecord};
use volley_crds::{LoadTest, LoadTestStatus};

use crate::conditions::{self, COMPLETE, ConditionInputs, STARTED, THRESHOLDS_PASSED};

/// The annotation that asks for a new run of an unchanged spec (the API's, so `volley kube run`
/// sets it too).
pub use volley_crds::status::RERUN_ANNOTATION;
/// Entries `status.history` keeps when `spec.cleanup.historyLimit` is not set.
pub const DEFAULT_HISTORY_LIMIT: u32 = 10;
/// The most entries `status.history` keeps, whatever the spec says: the status is one object
/// of bounded size.
pub const MAX_HISTORY_LIMIT: u32 = 50;

/// Why a new run is wanted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The spec changed: `metadata.generation` is `to`, the status describes `from`.
    SpecChanged {
        /// The generation the status describes.
        from: i64,
        /// The LoadTest's generation now.
        to: i64,
    },
    /// The `volley.dev/rerun` annotation has a value not answered yet.
    Requested {
        /// The annotation's value.
        value: String,
    },
}

impl Trigger {
    /// The CamelCase reason of the new run's status and event.
    pub fn reason(&self) -> &'static str {
        match self {
            Trigger::SpecChanged { .. } => "SpecChanged",
            Trigger::Requested { .. } => "RerunRequested",
        }
    }

    /// What asked for the run, for people.
    pub fn describe(&self) -> String {
        match self {
            Trigger::SpecChanged { from, to } => {
                format!("the spec changed from generation {from} to {to}")
            }
            Trigger::Requested { value } => {
                format!("the annotation {RERUN_ANNOTATION}={value:?} asked for a new run")
            }
        }
    }
}

/// The value of the `volley.dev/rerun` annotation, if set.
pub fn rerun_annotation(lt: &LoadTest) -> Option<&str> {
    lt.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RERUN_ANNOTATION))
        .map(String::as_str)
}

/// Whether `lt` asks for a run other than the one of generation `observed` that answered the
/// rerun request `answered`: a spec change first, then a new annotation value. `None` while
/// `spec.abort` is set: that spec would be aborted as soon as it started.
pub fn trigger(lt: &LoadTest, observed: Option<i64>, answered: Option<&str>) -> Option<Trigger> {
    if lt.spec.abort {
        return None;
    }
    if let (Some(from), Some(to)) = (observed, lt.metadata.generation)
        && from != to
    {
        return Some(Trigger::SpecChanged { from, to });
    }
    match rerun_annotation(lt) {
        Some(value) if Some(value) != answered => Some(Trigger::Requested {
            value: value.to_string(),
        }),
        _ => None,
    }
}

/// The trigger of a new run for `lt` as its status `old` stands.
pub fn wanted(lt: &LoadTest, old: &LoadTestStatus) -> Option<Trigger> {
    trigger(lt, old.observed_generation, old.rerun_request.as_deref())
}

/// How many earlier runs `lt`'s history keeps.
pub fn history_limit(lt: &LoadTest) -> usize {
    let limit = lt
        .spec
        .cleanup
        .history_limit
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .min(MAX_HISTORY_LIMIT);
    usize::try_from(limit).unwrap_or(0)
}

/// The history entry of the finished run `status` describes.
pub fn record(status: &LoadTestStatus) -> RunRecord {
    let metrics = status.metrics.as_ref();
    // A run that sent no request measured no latency: its zeros are not figures.
    let measured = metrics.filter(|m| m.requests > 0);
    RunRecord {
        run: status.run.unwrap_or(1),
        generation: status.observed_generation,
        phase: status.phase,
        verdict: status.verdict,
        reason: status.reason.clone(),
        start_time: status.start_time.clone(),
        completion_time: status.completion_time.clone(),
        p50_ms: measured.map(|m| m.latency_ms.p50),
        p95_ms: measured.map(|m| m.latency_ms.p95),
        p99_ms: measured.map(|m| m.latency_ms.p99),
        rps: metrics.map(|m| m.rps),
        error_rate: metrics.map(|m| m.error_rate),
        report_ref: status.report_ref.clone(),
    }
}

/// `newest` before `history`, at most `limit` entries; also the names of the report
/// ConfigMaps of the entries that fell off, which go with them.
pub fn push_history(
    history: &[RunRecord],
    newest: RunRecord,
    limit: usize,
) -> (Vec<RunRecord>, Vec<String>) {
    let mut all = Vec::with_capacity(history.len() + 1);
    all.push(newest);
    all.extend(history.iter().cloned());
    let dropped = all
        .split_off(limit.min(all.len()))
        .into_iter()
        .filter_map(|r| r.report_ref.map(|r| r.config_map_name))
        .collect();
    (all, dropped)
}

/// A new run of `lt`, whose finished run `old` describes, asked for by `why`, at `now`: the
/// status of the new run (Pending, with the finished run first in the history and the
/// conditions reset) and the report ConfigMaps to delete (those that left the history).
pub fn restart(
    lt: &LoadTest,
    old: &LoadTestStatus,
    why: &Trigger,
    now: Timestamp,
) -> (LoadTestStatus, Vec<String>) {
    let run = old.run.unwrap_or(1).saturating_add(1);
    let (history, dropped) = push_history(&old.history, record(old), history_limit(lt));
    let message = format!(
        "{}: run {run} starts; run {} ({}) is in the history",
        why.describe(),
        old.run.unwrap_or(1),
        old.phase.map(|p| p.to_string()).unwrap_or_default(),
    );
    // Ours are derived afresh (lastTransitionTime now); any other condition is kept.
    let foreign: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| ![STARTED, COMPLETE, THRESHOLDS_PASSED].contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let conditions = conditions::conditions(
        &foreign,
        &ConditionInputs {
            phase: Phase::Pending,
            started: false,
            verdict: None,
            message: &message,
            generation: lt.metadata.generation,
            now,
        },
    );
    let status = LoadTestStatus {
        phase: Some(Phase::Pending),
        reason: Some(why.reason().to_string()),
        message: Some(message),
        observed_generation: lt.metadata.generation,
        run: Some(run),
        rerun_request: rerun_annotation(lt).map(str::to_string),
        conditions,
        history,
        ..LoadTestStatus::default()
    };
    (status, dropped)
}

/// Whether `kubectl wait` as `docs/guide.md` documents it for CI after applying generation
/// `generation` would be satisfied by `status`: first
/// `--for=jsonpath='{.status.observedGeneration}'=GEN`, then `--for=condition=Complete`. Both
/// hold only once the run of that generation finished.
pub fn ci_wait_satisfied(status: Option<&LoadTestStatus>, generation: i64) -> bool {
    let Some(status) = status else {
        return false;
    };
    status.observed_generation == Some(generation)
        && conditions::find(&status.conditions, COMPLETE).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use volley_crds::status::{LatencyMs, MetricsStatus, ReportRef, Verdict};

    use super::*;
    use crate::fixtures::{self, at};

    fn annotated(value: Option<&str>, generation: i64) -> LoadTest {
        let mut lt = fixtures::loadtest("web", 1);
        lt.metadata.generation = Some(generation);
        lt.metadata.annotations =
            value.map(|v| BTreeMap::from([(RERUN_ANNOTATION.to_string(), v.to_string())]));
        lt
    }

    #[test]
    fn what_asks_for_a_new_run() {
        let spec = |from, to| Some(Trigger::SpecChanged { from, to });
        let asked = |v: &str| {
            Some(Trigger::Requested {
                value: v.to_string(),
            })
        };
        // (annotation, generation, observed, answered, abort, expected)
        let cases = [
            (None, 1, Some(1), None, false, None),
            (None, 2, Some(1), None, false, spec(1, 2)),
            (None, 2, Some(1), None, true, None),
            (Some("a"), 1, Some(1), None, false, asked("a")),
            (Some("a"), 1, Some(1), Some("a"), false, None),
            (Some("b"), 1, Some(1), Some("a"), false, asked("b")),
            (Some("b"), 1, Some(1), Some("a"), true, None),
            // A spec change wins: one run answers both.
            (Some("b"), 3, Some(1), Some("a"), false, spec(1, 3)),
            // A status that never recorded a generation is not a change.
            (None, 2, None, None, false, None),
            // Removing the annotation asks for nothing.
            (None, 1, Some(1), Some("a"), false, None),
        ];
        for (value, generation, observed, answered, abort, want) in cases {
            let mut lt = annotated(value, generation);
            lt.spec.abort = abort;
            assert_eq!(
                trigger(&lt, observed, answered),
                want,
                "{value:?} gen {generation} observed {observed:?} answered {answered:?} abort {abort}"
            );
        }
    }

    fn finished(run: Option<u32>, report: &str) -> LoadTestStatus {
        LoadTestStatus {
            phase: Some(Phase::Failed),
            verdict: Some(Verdict::Failed),
            reason: Some("ThresholdsFailed".into()),
            observed_generation: Some(2),
            run,
            start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5))),
            completion_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(65))),
            metrics: Some(MetricsStatus {
                requests: 100,
                rps: 30.5,
                error_rate: 0.01,
                latency_ms: LatencyMs {
                    p50: 10.0,
                    p95: 40.0,
                    p99: 90.0,
                    ..LatencyMs::default()
                },
                ..MetricsStatus::default()
            }),
            report_ref: Some(ReportRef {
                config_map_name: report.into(),
            }),
            ..LoadTestStatus::default()
        }
    }

    #[test]
    fn a_record_holds_the_runs_figures() {
        let r = record(&finished(None, "web-report"));
        assert_eq!(r.run, 1);
        assert_eq!(r.generation, Some(2));
        assert_eq!(r.phase, Some(Phase::Failed));
        assert_eq!(r.verdict, Some(Verdict::Failed));
        assert_eq!(r.reason.as_deref(), Some("ThresholdsFailed"));
        assert_eq!(r.start_time.unwrap().0, at(5));
        assert_eq!(r.completion_time.unwrap().0, at(65));
        assert_eq!(
            (r.p50_ms, r.p95_ms, r.p99_ms, r.rps, r.error_rate),
            (Some(10.0), Some(40.0), Some(90.0), Some(30.5), Some(0.01))
        );
        assert_eq!(r.report_ref.unwrap().config_map_name, "web-report");
        // An Error before any request: no latency figures, not zeros.
        let never = record(&LoadTestStatus {
            phase: Some(Phase::Error),
            ..LoadTestStatus::default()
        });
        assert_eq!(
            (never.p95_ms, never.rps, never.report_ref),
            (None, None, None)
        );
    }

    #[test]
    fn the_history_is_bounded_newest_first_and_drops_reports_with_entries() {
        let rec = |run: u32| RunRecord {
            run,
            report_ref: Some(ReportRef {
                config_map_name: format!("web-report-r{run}"),
            }),
            ..RunRecord::default()
        };
        // (history before, limit, runs after, reports deleted)
        type Case = (Vec<u32>, usize, Vec<u32>, Vec<&'static str>);
        let cases: [Case; 5] = [
            (vec![], 10, vec![5], vec![]),
            (vec![4, 3], 10, vec![5, 4, 3], vec![]),
            (vec![4, 3], 3, vec![5, 4, 3], vec![]),
            (
                vec![4, 3, 2],
                2,
                vec![5, 4],
                vec!["web-report-r3", "web-report-r2"],
            ),
            (vec![4], 0, vec![], vec!["web-report-r5", "web-report-r4"]),
        ];
        for (before, limit, after, deleted) in cases {
            let history: Vec<RunRecord> = before.iter().map(|r| rec(*r)).collect();
            let (kept, dropped) = push_history(&history, rec(5), limit);
            let runs: Vec<u32> = kept.iter().map(|r| r.run).collect();
            assert_eq!(runs, after, "{before:?} limit {limit}");
            assert_eq!(dropped, deleted, "{before:?} limit {limit}");
        }
        // An entry without a report deletes nothing.
        let (_, dropped) = push_history(&[RunRecord::default()], RunRecord::default(), 0);
        assert!(dropped.is_empty());
    }

    #[test]
    fn the_history_limit_has_a_default_and_a_ceiling() {
        let mut lt = fixtures::loadtest("web", 1);
        assert_eq!(history_limit(&lt), 10);
        lt.spec.cleanup.history_limit = Some(3);
        assert_eq!(history_limit(&lt), 3);
        lt.spec.cleanup.history_limit = Some(0);
        assert_eq!(history_limit(&lt), 0);
        lt.spec.cleanup.history_limit = Some(1000);
        assert_eq!(history_limit(&lt), 50);
    }

    #[test]
    fn a_restart_resets_the_status_and_moves_the_run_into_the_history() {
        let mut old = finished(Some(2), "web-report-r2");
        old.history = vec![record(&finished(None, "web-report"))];
        old.history[0].run = 1;
        old.conditions = conditions::conditions(
            &[],
            &ConditionInputs {
                phase: Phase::Failed,
                started: true,
                verdict: Some(Verdict::Failed),
                message: "p(95)",
                generation: Some(2),
                now: at(65),
            },
        );
        let mut lt = annotated(Some("x"), 3);
        lt.spec.cleanup.history_limit = Some(1);
        let why = wanted(&lt, &old).unwrap();
        assert_eq!(why, Trigger::SpecChanged { from: 2, to: 3 });
        let (status, dropped) = restart(&lt, &old, &why, at(100));
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(status.reason.as_deref(), Some("SpecChanged"));
        assert_eq!(
            status.message.as_deref(),
            Some(
                "the spec changed from generation 2 to 3: run 3 starts; run 2 (Failed) is in the history"
            )
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.run, Some(3));
        assert_eq!(
            status.rerun_request.as_deref(),
            Some("x"),
            "answered with the same run"
        );
        assert_eq!(
            (
                status.verdict,
                &status.metrics,
                &status.report_ref,
                &status.start_time
            ),
            (None, &None, &None, &None),
            "nothing of the finished run is left outside the history"
        );
        assert_eq!(status.history.len(), 1);
        assert_eq!(status.history[0].run, 2);
        assert_eq!(
            dropped,
            ["web-report"],
            "run 1 left the history with its report"
        );
        for c in &status.conditions {
            assert_eq!(c.observed_generation, Some(3), "{}", c.type_);
            assert_eq!(c.last_transition_time.0, at(100), "{}", c.type_);
            assert_ne!(c.status, "True", "{} is reset", c.type_);
        }
        assert_eq!(
            wanted(&lt, &status),
            None,
            "the new run answered the change"
        );
        assert!(!ci_wait_satisfied(Some(&status), 3));
    }
}
