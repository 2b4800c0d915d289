//! What a reconcile observed, as plain data: the run's pods ([`RunnerPod`]) and the
//! aggregator's view of the run ([`RunProgress`]). The phase logic decides from these alone.

use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::jiff::Timestamp;
use volley_crds::status::{
    MetricsStatus, Phase, PrometheusResult, ReportRef, ScenarioStatus, StepStatus, ThresholdStatus,
    Verdict,
};

use crate::names::RUNNER_INDEX_LABEL;
use crate::pods::CONTAINER_NAME;

/// A pod's lifecycle phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Not running yet: scheduling, pulling the image, creating the container.
    Pending,
    /// The container runs.
    Running,
    /// The container exited 0.
    Succeeded,
    /// The container exited non-zero or was killed.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

/// A container that has not started, and why (e.g. `ImagePullBackOff`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The kubelet's reason, e.g. `ErrImagePull`, `CreateContainerConfigError`.
    pub reason: String,
    /// The kubelet's message.
    pub message: String,
}

/// A container that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// Its exit code.
    pub exit_code: i32,
    /// The kubelet's reason, e.g. `Error`, `OOMKilled`, `Completed`.
    pub reason: String,
    /// Its termination message (or the end of its log).
    pub message: String,
}

/// What the operator knows about one runner pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerPod {
    /// Pod name.
    pub name: String,
    /// Runner index from the `volley.dev/runner-index` label.
    pub index: Option<u32>,
    /// Lifecycle phase.
    pub phase: PodPhase,
    /// When the pod was created.
    pub created: Option<Timestamp>,
    /// Why the runner container has not started, if it has not.
    pub waiting: Option<Waiting>,
    /// The scheduler's message when the pod cannot be placed (`PodScheduled=False`,
    /// reason `Unschedulable`).
    pub unschedulable: Option<String>,
    /// What the pod's conditions that are not True say (`PodScheduled=False (reason):
    /// message`, joined by `; `), or `None` when it has no such condition: why a Pending pod
    /// has not started, when nothing else says.
    pub conditions: Option<String>,
    /// How the runner container ended, if it has.
    pub terminated: Option<Terminated>,
    /// The pod is being deleted.
    pub deleting: bool,
}

impl RunnerPod {
    /// The facts of `pod` the phase logic uses.
    pub fn from_pod(pod: &Pod) -> RunnerPod {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.name == CONTAINER_NAME)
                    .or_else(|| cs.first())
            });
        let state: Option<&ContainerState> = container.and_then(|c| c.state.as_ref());
        let waiting = state.and_then(|s| s.waiting.as_ref()).map(|w| Waiting {
            reason: w.reason.clone().unwrap_or_default(),
            message: w.message.clone().unwrap_or_default(),
        });
        let terminated = state
            .and_then(|s| s.terminated.as_ref())
            .map(|t| Terminated {
                exit_code: t.exit_code,
                reason: t.reason.clone().unwrap_or_default(),
                message: t.message.clone().unwrap_or_default(),
            });
        let unschedulable = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
            .map(|c| c.message.clone().unwrap_or_else(|| "Unschedulable".into()));
        let conditions: Vec<String> = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.status != "True")
            .map(|c| {
                let mut text = format!("{}={}", c.type_, c.status);
                if let Some(reason) = c.reason.as_deref().filter(|r| !r.is_empty()) {
                    text.push_str(&format!(" ({reason})"));
                }
                if let Some(message) = c.message.as_deref().filter(|m| !m.is_empty()) {
                    text.push_str(&format!(": {message}"));
                }
                text
            })
            .collect();
        let phase = match status.and_then(|s| s.phase.as_deref()) {
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some("Unknown") => PodPhase::Unknown,
            _ => PodPhase::Pending,
        };
        RunnerPod {
            name: meta.name.clone().unwrap_or_default(),
            index: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(RUNNER_INDEX_LABEL))
                .and_then(|v| v.parse().ok()),
            phase,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            waiting,
            unschedulable,
            conditions: (!conditions.is_empty()).then(|| conditions.join("; ")),
            terminated,
            deleting: meta.deletion_timestamp.is_some(),
        }
    }

    /// A pending pod with no start problem, created at `created` (for tests and fakes).
    pub fn pending(name: &str, index: u32, created: Timestamp) -> RunnerPod {
        RunnerPod {
            name: name.to_string(),
            index: Some(index),
            phase: PodPhase::Pending,
            created: Some(created),
            waiting: None,
            unschedulable: None,
            conditions: None,
            terminated: None,
            deleting: false,
        }
    }

    /// Why this runner failed, if it did: a non-zero exit or a failed pod.
    pub fn failure(&self) -> Option<String> {
        match (&self.terminated, self.phase) {
            (Some(t), _) if t.exit_code != 0 => {
                let mut text = format!("exited with code {}", t.exit_code);
                if !t.reason.is_empty() {
                    text.push_str(&format!(" ({})", t.reason));
                }
                let message = t.message.trim();
                if !message.is_empty() {
                    text.push_str(&format!(": {}", last_line(message)));
                }
                Some(text)
            }
            (_, PodPhase::Failed) => Some("the pod failed".to_string()),
            _ => None,
        }
    }

    /// Why this runner cannot start, if it is stuck before starting: an image or container
    /// configuration problem, or no node to run on.
    pub fn start_problem(&self) -> Option<String> {
        if self.phase != PodPhase::Pending || self.terminated.is_some() {
            return None;
        }
        if let Some(w) = &self.waiting
            && STUCK_REASONS.contains(&w.reason.as_str())
        {
            return Some(if w.message.is_empty() {
                w.reason.clone()
            } else {
                format!("{}: {}", w.reason, w.message)
            });
        }
        self.unschedulable
            .as_ref()
            .map(|m| format!("Unschedulable: {m}"))
    }

    /// Why this pod, still Pending, has not started, when [`RunnerPod::start_problem`] has
    /// nothing to say (no container status, no scheduler verdict): its conditions, or that it
    /// has none (no scheduler took it: e.g. a `schedulerName` nobody serves). `None` for a pod
    /// that is not Pending.
    pub fn pending_reason(&self) -> Option<String> {
        if self.phase != PodPhase::Pending || self.terminated.is_some() {
            return None;
        }
        let waiting = self
            .waiting
            .as_ref()
            .map(|w| format!("container waiting ({}); ", w.reason))
            .unwrap_or_default();
        Some(match &self.conditions {
            Some(c) => format!("still Pending: {waiting}{c}"),
            None => format!(
                "still Pending: {waiting}no condition reported (no scheduler or node has taken \
                 the pod: check its schedulerName, nodeSelector and the nodes)"
            ),
        })
    }

    /// The start problem cannot go away by waiting (e.g. an invalid image name).
    pub fn start_problem_is_permanent(&self) -> bool {
        self.waiting
            .as_ref()
            .is_some_and(|w| PERMANENT_REASONS.contains(&w.reason.as_str()))
    }
}

/// Waiting reasons of a container that is stuck rather than merely slow.
pub const STUCK_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Waiting reasons that waiting cannot fix.
pub const PERMANENT_REASONS: &[&str] = &["InvalidImageName", "ErrImageNeverPull"];

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

/// The aggregator's view of a run, mapped into plain data by the operator.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunProgress {
    /// Runners registered at the start barrier.
    pub registered: u32,
    /// Runners sending load.
    pub running: u32,
    /// Runners that sent their final report.
    pub done: u32,
    /// Runners that reported a fatal error: index and reason.
    pub failed: Vec<(u32, String)>,
    /// The run's end, once the aggregator has decided it.
    pub outcome: Option<RunOutcome>,
    /// The common start of the load, once given.
    pub started_at: Option<Timestamp>,
    /// The merged results so far.
    pub results: Option<RunResults>,
}

/// How a run ended, as the aggregator decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// A finished phase: Succeeded, Failed, Aborted or Error.
    pub phase: Phase,
    /// Machine-readable reason, e.g. `ThresholdsFailed`.
    pub reason: String,
    /// Sentence for humans.
    pub message: String,
}

/// Merged results, as they go into the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResults {
    /// All requests merged.
    pub metrics: Option<MetricsStatus>,
    /// Each threshold with its actual value.
    pub thresholds: Vec<ThresholdStatus>,
    /// Per-scenario results.
    pub scenarios: Vec<ScenarioStatus>,
    /// Per-step results.
    pub steps: Vec<StepStatus>,
    /// The thresholds' verdict, once known.
    pub verdict: Option<Verdict>,
    /// The ConfigMap holding the full report, once written.
    pub report_ref: Option<ReportRef>,
    /// The Prometheus queries' results, once read after the run.
    pub prometheus: Vec<PrometheusResult>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> RunnerPod {
        RunnerPod::from_pod(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn an_image_pull_error_is_a_start_problem() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-runner-1", "labels": {"volley.dev/runner-index": "1"},
                         "creationTimestamp": "2030-01-01T00:00:00Z"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope:1\""}}
            }]}
        }));
        assert_eq!(p.index, Some(1));
        assert_eq!(p.phase, PodPhase::Pending);
        assert_eq!(p.created, Some(crate::fixtures::t0()));
        assert_eq!(
            p.start_problem().as_deref(),
            Some("ImagePullBackOff: Back-off pulling image \"nope:1\"")
        );
        assert!(!p.start_problem_is_permanent());
        assert_eq!(p.failure(), None);
    }

    #[test]
    fn unschedulable_pods_say_why() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-runner-0", "labels": {"volley.dev/runner-index": "0"}},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu."
            }]}
        }));
        assert_eq!(
            p.start_problem().as_deref(),
            Some("Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.")
        );
        assert_eq!(p.created, None);
    }

    #[test]
    fn a_container_creating_pod_has_no_problem_yet() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-runner-0", "labels": {"volley.dev/runner-index": "0"}},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]}
        }));
        assert_eq!(p.start_problem(), None);
    }

    #[test]
    fn exits_and_deletion() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-runner-2", "labels": {"volley.dev/runner-index": "2"},
                         "deletionTimestamp": "2030-01-01T00:01:00Z"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "line 1\nkilled\n"}}
            }]}
        }));
        assert!(p.deleting);
        assert_eq!(p.phase, PodPhase::Failed);
        assert_eq!(
            p.failure().as_deref(),
            Some("exited with code 137 (OOMKilled): killed")
        );
        assert_eq!(p.start_problem(), None);
        let ok = pod(serde_json::json!({
            "metadata": {"name": "web-runner-3", "labels": {"volley.dev/runner-index": "x"}},
            "status": {"phase": "Succeeded", "containerStatuses": [{
                "name": "runner", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}
            }]}
        }));
        assert_eq!(ok.index, None, "an unreadable index label is no index");
        assert_eq!(ok.failure(), None);
    }
}
