//! The standard conditions of a LoadTest's status: `Started`, `Complete` and
//! `ThresholdsPassed`, so that `kubectl wait --for=condition=Complete lt/NAME` works.
//!
//! - `Started`: True once the load started; False before (and for a run that ended without
//!   starting).
//! - `Complete`: True once the run finished, whatever the outcome; False while it runs. Its
//!   `lastTransitionTime` while False is when the run began, which the timeout counts from.
//! - `ThresholdsPassed`: True or False once the verdict is known, Unknown before.
//!
//! A condition keeps its `lastTransitionTime` while its status stays the same; reason and
//! message follow the latest reconcile, and `observedGeneration` is the generation of the run
//! the status describes (`status.observedGeneration`), never a newer edit queued behind it: so
//! a `Complete` of generation N is True only once the run of generation N finished.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use volley_crds::status::{Phase, Verdict};

/// Type of the condition that turns True when load starts.
pub const STARTED: &str = "Started";
/// Type of the condition that turns True when the run finished.
pub const COMPLETE: &str = "Complete";
/// Type of the condition that tells the thresholds' verdict.
pub const THRESHOLDS_PASSED: &str = "ThresholdsPassed";
/// Longest message of a finished run, in characters (plus `…` when cut): the status message
/// and the Complete condition's, long enough to list a few field errors or a runner's last words.
pub const MAX_MESSAGE_CHARS: usize = 900;

/// Everything the conditions are derived from.
#[derive(Clone, Copy, Debug)]
pub struct ConditionInputs<'a> {
    /// The phase being written.
    pub phase: Phase,
    /// Whether load ever started.
    pub started: bool,
    /// The verdict, once known.
    pub verdict: Option<Verdict>,
    /// The status message being written.
    pub message: &'a str,
    /// The generation of the run the status describes (`status.observedGeneration`).
    pub generation: Option<i64>,
    /// Now.
    pub now: Timestamp,
}

/// The three conditions for `inputs`, keeping each `lastTransitionTime` from `previous` when
/// the condition's status did not change. Conditions of other types in `previous` are kept.
pub fn conditions(previous: &[Condition], inputs: &ConditionInputs<'_>) -> Vec<Condition> {
    let finished = inputs.phase.is_finished();
    let started = if inputs.started {
        (
            "True",
            "LoadStarted",
            "all runners started the load".to_string(),
        )
    } else if finished {
        (
            "False",
            "NeverStarted",
            "the run ended before the load started".to_string(),
        )
    } else {
        (
            "False",
            "WaitingForRunners",
            "waiting for every runner at the start barrier".to_string(),
        )
    };
    let complete = if finished {
        ("True", inputs.phase.to_string(), inputs.message.to_string())
    } else {
        (
            "False",
            "InProgress".to_string(),
            format!("the run is {}", inputs.phase),
        )
    };
    let thresholds = match inputs.verdict {
        Some(Verdict::Passed) => ("True", "ThresholdsPassed", "every threshold held"),
        Some(Verdict::Failed) => ("False", "ThresholdsFailed", inputs.message),
        None => (
            "Unknown",
            "NotEvaluated",
            "the thresholds have not been evaluated yet",
        ),
    };
    let mut out: Vec<Condition> = previous
        .iter()
        .filter(|c| ![STARTED, COMPLETE, THRESHOLDS_PASSED].contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let wanted = [
        (STARTED, started.0, started.1.to_string(), started.2),
        (COMPLETE, complete.0, complete.1, complete.2),
        (
            THRESHOLDS_PASSED,
            thresholds.0,
            thresholds.1.to_string(),
            thresholds.2.to_string(),
        ),
    ];
    for (type_, status, reason, message) in wanted {
        let kept = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone());
        out.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message,
            observed_generation: inputs.generation,
            last_transition_time: kept.unwrap_or(Time(inputs.now)),
        });
    }
    out
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{at, t0};

    fn inputs(
        phase: Phase,
        started: bool,
        verdict: Option<Verdict>,
        now: Timestamp,
    ) -> ConditionInputs<'static> {
        ConditionInputs {
            phase,
            started,
            verdict,
            message: "p(95) 612ms >= 500ms",
            generation: Some(3),
            now,
        }
    }

    fn by_type(cs: &[Condition]) -> Vec<(&str, &str, &str, i64)> {
        cs.iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.last_transition_time.0.as_second() - t0().as_second(),
                )
            })
            .collect()
    }

    #[test]
    fn the_life_of_a_run() {
        let starting = conditions(&[], &inputs(Phase::Starting, false, None, at(0)));
        assert_eq!(
            by_type(&starting),
            [
                ("Started", "False", "WaitingForRunners", 0),
                ("Complete", "False", "InProgress", 0),
                ("ThresholdsPassed", "Unknown", "NotEvaluated", 0),
            ]
        );
        assert!(starting.iter().all(|c| c.observed_generation == Some(3)));
        let running = conditions(&starting, &inputs(Phase::Running, true, None, at(10)));
        assert_eq!(
            by_type(&running),
            [
                ("Started", "True", "LoadStarted", 10),
                ("Complete", "False", "InProgress", 0),
                ("ThresholdsPassed", "Unknown", "NotEvaluated", 0),
            ]
        );
        let failed = conditions(
            &running,
            &inputs(Phase::Failed, true, Some(Verdict::Failed), at(70)),
        );
        assert_eq!(
            by_type(&failed),
            [
                ("Started", "True", "LoadStarted", 10),
                ("Complete", "True", "Failed", 70),
                ("ThresholdsPassed", "False", "ThresholdsFailed", 70),
            ]
        );
        assert_eq!(
            find(&failed, COMPLETE).unwrap().message,
            "p(95) 612ms >= 500ms"
        );
        let again = conditions(
            &failed,
            &inputs(Phase::Failed, true, Some(Verdict::Failed), at(99)),
        );
        assert_eq!(again, failed, "nothing changes when nothing changed");
    }

    #[test]
    fn a_run_that_never_started_and_foreign_conditions() {
        let foreign = Condition {
            type_: "Custom".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(t0()),
        };
        let error = conditions(
            std::slice::from_ref(&foreign),
            &inputs(Phase::Error, false, None, at(5)),
        );
        assert_eq!(error[0], foreign);
        assert_eq!(
            by_type(&error[1..]),
            [
                ("Started", "False", "NeverStarted", 5),
                ("Complete", "True", "Error", 5),
                ("ThresholdsPassed", "Unknown", "NotEvaluated", 5),
            ]
        );
        let passed = conditions(
            &[],
            &inputs(Phase::Succeeded, true, Some(Verdict::Passed), at(1)),
        );
        assert_eq!(find(&passed, THRESHOLDS_PASSED).unwrap().status, "True");
    }
}
