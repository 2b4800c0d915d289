//! How a run ends: its phase, reason and message, decided from why it stopped, which runners
//! failed, the failure policy and the thresholds on the merged result.

use std::time::Duration;

use volley_core::threshold::evaluate::ThresholdResult;
use volley_crds::spec::FailurePolicy;
use volley_crds::status::Phase;

/// How a run ended, before it is summarized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunEnd {
    /// Succeeded, Failed, Aborted or Error.
    pub phase: Phase,
    /// Machine-readable reason, e.g. `ThresholdsFailed`, `RunnerFailed`, `Timeout`.
    pub reason: Option<String>,
    /// A sentence for humans.
    pub message: Option<String>,
}

impl RunEnd {
    /// An end with a reason and a message.
    pub fn new(phase: Phase, reason: &str, message: impl Into<String>) -> RunEnd {
        RunEnd {
            phase,
            reason: Some(reason.to_owned()),
            message: Some(message.into()),
        }
    }

    /// Adds `note` to the message, after what it already says.
    pub fn add_note(&mut self, note: String) {
        self.message = Some(match self.message.take() {
            Some(m) => format!("{m}; {note}"),
            None => note,
        });
    }
}

/// A runner that died, could not start, or went silent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerFailure {
    /// The runner's index.
    pub index: u32,
    /// Where it ran (pod or host name), when it said.
    pub host: String,
    /// When it failed, since the common start (none before the start).
    pub at: Option<Duration>,
    /// What happened, as a sentence.
    pub reason: String,
}

impl RunnerFailure {
    /// `runner 1 (pod-x) failed at 3.2s: killed by signal 9`.
    pub fn describe(&self) -> String {
        let host = if self.host.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.host)
        };
        let at = match self.at {
            Some(at) => format!(" at {:.1}s", at.as_secs_f64()),
            None => " before the start".to_owned(),
        };
        format!("runner {}{host} failed{at}: {}", self.index, self.reason)
    }
}

/// Everything that decides a finished run's end.
#[derive(Debug)]
pub struct EndFacts<'a> {
    /// Why the run was stopped early, if it was (abort, abortOnFail, timeout).
    pub stopped: Option<&'a RunEnd>,
    /// Runners that failed.
    pub failures: &'a [RunnerFailure],
    /// How many runners the run had.
    pub runners: u32,
    /// What a runner failure means.
    pub policy: FailurePolicy,
    /// The thresholds on the merged result.
    pub thresholds: &'a [ThresholdResult],
}

/// The end of a finished run. An early stop decides first (it is why the run ended); then
/// runner failures (all runners failed: Error; otherwise Failed under `Fail`, or the
/// survivors' verdict under `Continue`, with the failures named in the message); then the
/// thresholds.
pub fn decide_end(facts: &EndFacts<'_>) -> RunEnd {
    if let Some(stopped) = facts.stopped {
        return stopped.clone();
    }
    let failed = describe_failures(facts.failures);
    if !facts.failures.is_empty() {
        let all_failed = facts.failures.len() >= facts.runners as usize;
        if all_failed {
            return RunEnd::new(Phase::Error, "RunnerFailed", failed);
        }
        if facts.policy == FailurePolicy::Fail {
            return RunEnd::new(Phase::Failed, "RunnerFailed", failed);
        }
    }
    let mut end = threshold_end(facts.thresholds);
    if !facts.failures.is_empty() {
        end.add_note(format!(
            "{failed} (failurePolicy Continue: the survivors' results decide)"
        ));
    }
    end
}

/// Succeeded when every threshold passed (skipped ones decide nothing), else Failed naming the
/// first failure.
pub fn threshold_end(results: &[ThresholdResult]) -> RunEnd {
    let failed = |r: &&ThresholdResult| !r.status.passed && !r.skipped();
    match results.iter().find(failed) {
        None => RunEnd {
            phase: Phase::Succeeded,
            reason: Some("ThresholdsPassed".into()),
            message: None,
        },
        Some(first) => {
            let failed = results.iter().filter(failed).count();
            let more = if failed > 1 {
                format!(" (and {} more)", failed - 1)
            } else {
                String::new()
            };
            RunEnd {
                phase: Phase::Failed,
                reason: Some("ThresholdsFailed".into()),
                message: first.failure_message.clone().map(|m| format!("{m}{more}")),
            }
        }
    }
}

fn describe_failures(failures: &[RunnerFailure]) -> String {
    failures
        .iter()
        .map(RunnerFailure::describe)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_crds::status::ThresholdStatus;

    fn threshold(passed: bool, message: &str) -> ThresholdResult {
        ThresholdResult {
            status: ThresholdStatus {
                expr: "p(95) < 500ms".into(),
                scope: "all".into(),
                actual: "612ms".into(),
                passed,
                aborted: false,
                skipped: None,
            },
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
            failure_message: (!passed).then(|| message.to_owned()),
            has_data: true,
        }
    }

    fn failure(index: u32) -> RunnerFailure {
        RunnerFailure {
            index,
            host: format!("pod-{index}"),
            at: Some(Duration::from_millis(3200)),
            reason: "killed by signal 9".into(),
        }
    }

    fn facts<'a>(
        failures: &'a [RunnerFailure],
        policy: FailurePolicy,
        thresholds: &'a [ThresholdResult],
    ) -> EndFacts<'a> {
        EndFacts {
            stopped: None,
            failures,
            runners: 3,
            policy,
            thresholds,
        }
    }

    #[test]
    fn skipped_thresholds_decide_nothing() {
        let mut skipped = threshold(false, "");
        skipped.status.skipped = Some("no baseline".into());
        skipped.failure_message = None;
        let end = threshold_end(std::slice::from_ref(&skipped));
        assert_eq!(end.phase, Phase::Succeeded);
        let end = threshold_end(&[skipped, threshold(false, "p(95) 612ms >= 500ms")]);
        assert_eq!(end.phase, Phase::Failed);
        assert_eq!(end.message.as_deref(), Some("p(95) 612ms >= 500ms"));
    }

    #[test]
    fn thresholds_decide_when_nothing_else_happened() {
        let passed = [threshold(true, "")];
        let end = decide_end(&facts(&[], FailurePolicy::Fail, &passed));
        assert_eq!(end.phase, Phase::Succeeded);
        assert_eq!(end.reason.as_deref(), Some("ThresholdsPassed"));
        let failed = [
            threshold(false, "p(95) 612ms >= 500ms"),
            threshold(false, "x"),
        ];
        let end = decide_end(&facts(&[], FailurePolicy::Fail, &failed));
        assert_eq!(end.phase, Phase::Failed);
        assert_eq!(
            end.message.as_deref(),
            Some("p(95) 612ms >= 500ms (and 1 more)")
        );
    }

    #[test]
    fn a_runner_failure_fails_the_run_under_the_default_policy() {
        let passed = [threshold(true, "")];
        let failures = [failure(1)];
        let end = decide_end(&facts(&failures, FailurePolicy::Fail, &passed));
        assert_eq!(end.phase, Phase::Failed);
        assert_eq!(end.reason.as_deref(), Some("RunnerFailed"));
        assert_eq!(
            end.message.as_deref(),
            Some("runner 1 (pod-1) failed at 3.2s: killed by signal 9")
        );
    }

    #[test]
    fn continue_keeps_the_survivors_verdict_and_names_the_failure() {
        let passed = [threshold(true, "")];
        let failures = [failure(2)];
        let end = decide_end(&facts(&failures, FailurePolicy::Continue, &passed));
        assert_eq!(end.phase, Phase::Succeeded);
        let message = end.message.unwrap_or_default();
        assert!(
            message.contains("runner 2 (pod-2) failed at 3.2s"),
            "{message}"
        );
        assert!(message.contains("failurePolicy Continue"), "{message}");
        let failed = [threshold(false, "p(95) 612ms >= 500ms")];
        let end = decide_end(&facts(&failures, FailurePolicy::Continue, &failed));
        assert_eq!(end.phase, Phase::Failed);
        assert_eq!(end.reason.as_deref(), Some("ThresholdsFailed"));
    }

    #[test]
    fn all_runners_failing_is_an_error_whatever_the_policy() {
        let failures = [failure(0), failure(1), failure(2)];
        let end = decide_end(&facts(&failures, FailurePolicy::Continue, &[]));
        assert_eq!(end.phase, Phase::Error);
        assert_eq!(end.reason.as_deref(), Some("RunnerFailed"));
    }

    #[test]
    fn an_early_stop_is_the_end() {
        let stop = RunEnd::new(Phase::Aborted, "Aborted", "spec.abort was set");
        let failures = [failure(0)];
        let end = decide_end(&EndFacts {
            stopped: Some(&stop),
            ..facts(&failures, FailurePolicy::Fail, &[])
        });
        assert_eq!(end, stop);
    }

    #[test]
    fn a_failure_before_the_start_says_so() {
        let f = RunnerFailure {
            at: None,
            host: String::new(),
            ..failure(0)
        };
        assert_eq!(
            f.describe(),
            "runner 0 failed before the start: killed by signal 9"
        );
    }
}
