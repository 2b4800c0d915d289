//! The operator's decisions as one pure function: [`next_step`] takes what a reconcile
//! observed ([`Observed`]) and says what to do ([`Decision`]). The controller only gathers the
//! facts and carries the decision out, so every rule below is tested without a cluster.
//!
//! The phases (`docs/reference.md` §2.2, with the reasons of §2.3):
//!
//! - *(none)* or Pending → **Starting**: the spec passes validation; the run's Secret and one
//!   pod per runner are created (pods that already exist, e.g. after an operator restart, are
//!   adopted, never duplicated) and the run is registered with the aggregator.
//! - Starting → **Running**: the aggregator gave the runners their common start.
//! - → **Succeeded | Failed | Aborted | Error**, first match wins:
//!   1. the aggregator decided the outcome (all runners done, thresholds, abortOnFail, setup);
//!   2. the LoadTest is being deleted (a finalizer or foreground deletion keeps it a while):
//!      Aborted with reason `Deleted`, as `spec.abort` does; `spec.abort` is set: Aborted, the
//!      aggregator stops the runners, results so far are kept;
//!   3. the run (start barrier included) exceeded its timeout (`spec.timeout`, or the plan
//!      plus a margin): Failed with reason `Timeout`;
//!   4. a runner pod cannot start (image pull errors, unschedulable, container configuration,
//!      or Pending with no reason at all: no scheduler for its `schedulerName`, a node that
//!      never runs it) for longer than [`Timing::runner_start_timeout`], or for a reason
//!      waiting cannot fix: Error with reason `RunnerCannotStart` and the pod's own reason (or
//!      its conditions) in the message;
//!   5. a runner failed (its pod exited non-zero, or the aggregator says so) and
//!      `runners.failurePolicy` is Fail: Failed with reason `RunnerFailed`.
//!
//!   Before the first pod, an invalid spec ends the run in Error with reason `InvalidSpec`
//!   and every field error in the message; then a spec the cluster administrator's limits
//!   refuse ([`spec_check::admit`]) ends it in Error with reason `TargetNotAllowed` (a URL
//!   outside `--allowed-targets`), `ImageNotAllowed` (its own runner image while targets are
//!   limited) or `ProxyNotAllowed` (a proxy variable in `runners.env` while targets are
//!   limited). Either way no Secret and no pod is created and nothing is registered.
//! - A finished run is final: no pod or Secret is ever created for it again, and its phase,
//!   reason and message are never rewritten. A change of its spec (or of the `volley.dev/rerun`
//!   annotation) starts a *new* run ([`crate::rerun`]): once the finished run's runners
//!   stopped, one status write moves it into `status.history`, resets the conditions and
//!   makes the new run Pending under a new run number, and its pods and Secret are deleted
//!   (the new run has its own names). A change while a run is under way is queued behind it
//!   (`status.nextRun`, event `RerunQueued`): the run goes on as it started. Its runners may still be stopping (a run the
//!   operator ends: abort, timeout, a runner failure, a pod that cannot start): the aggregator
//!   keeps answering `stop` until every runner acknowledged with its final report or is gone,
//!   and only then is the run forgotten and its final figures written (every report the
//!   runners made before they stopped), or [`drain_limit`] after the finish at the latest.
//! - Cleanup: runner pods and the Secret are deleted at the finish when `cleanup.runners` says
//!   so (Always; OnSuccess and the run succeeded), so the pods of a run that ended early go at
//!   once under Always; what the policy keeps is deleted `ttlSecondsAfterFinished` after the
//!   finish when that is set, otherwise never. The LoadTest itself is never deleted.
//!
//! Status writes: every change of phase, reason, message, runner counts, conditions or
//! generation is written at once; changes of the metrics alone at most once per
//! [`Timing::status_interval`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use volley_crds::LoadTest;
use volley_crds::LoadTestStatus;
use volley_crds::spec::{CleanupPolicy, FailurePolicy};
use volley_crds::status::{Phase, RunnerCounts, Verdict};
use volley_crds::text::{shorten, shorten_bytes};

use crate::conditions::{self, COMPLETE, ConditionInputs, MAX_MESSAGE_CHARS};
use crate::config::{RunnerDefaults, Timing};
use crate::observed::{PodPhase, RunProgress, RunResults, RunnerPod};
use crate::rerun;
use crate::spec_check;

/// Longest event note, in bytes: the API server refuses an events.k8s.io/v1 Event whose note
/// is over 1 KiB, and the event is then lost.
pub const MAX_EVENT_NOTE_BYTES: usize = 1024;

/// Everything one reconcile knows.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// The LoadTest as read: spec, generation and current status.
    pub loadtest: &'a LoadTest,
    /// Now.
    pub now: Timestamp,
    /// The run's pods (selected by the `volley.dev/run` label).
    pub pods: Vec<RunnerPod>,
    /// Whether the run's Secret exists.
    pub secret_exists: bool,
    /// The aggregator's view of the run; `None` when it does not know the run (not registered
    /// yet, or the operator restarted).
    pub progress: Option<RunProgress>,
    /// When this operator last wrote this LoadTest's status, if it remembers.
    pub last_status_write: Option<Timestamp>,
    /// Time bounds.
    pub timing: Timing,
    /// The operator's runner defaults: its runner image and the allowed targets a run that has
    /// not begun is checked against.
    pub defaults: RunnerDefaults,
}

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Progress.
    Normal,
    /// Something went wrong.
    Warning,
}

/// An event to record on the LoadTest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventKind,
    /// Short CamelCase reason: the new phase, or `RunnerFailed`.
    pub reason: String,
    /// What the operator did, CamelCase.
    pub action: String,
    /// A sentence for `kubectl describe`.
    pub note: String,
}

impl EventNote {
    /// An event whose note is cut to [`MAX_EVENT_NOTE_BYTES`]: a runner's failure or a list of
    /// field errors can be longer, and a non-ASCII one longer in bytes than in characters.
    fn new(kind: EventKind, reason: &str, action: &str, note: &str) -> Self {
        EventNote {
            kind,
            reason: reason.into(),
            action: action.into(),
            note: shorten_bytes(note, MAX_EVENT_NOTE_BYTES),
        }
    }
}

/// What to do, in the order the controller does it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Create the run's token Secret.
    pub create_secret: bool,
    /// Register the run with the aggregator (with the Secret's token).
    pub register: bool,
    /// Create the pods of these runner indices.
    pub create_pods: Vec<u32>,
    /// Write this status (merge patch of the status subresource).
    pub status: Option<LoadTestStatus>,
    /// Tell the aggregator to stop the run, with this reason.
    pub abort: Option<String>,
    /// Tell the aggregator these runners failed (index, reason), so it does not wait for them.
    pub runner_failures: Vec<(u32, String)>,
    /// Drop the run from the aggregator: its final status is written.
    pub forget_run: bool,
    /// Delete these pods (cleanup).
    pub delete_pods: Vec<String>,
    /// Delete the run's Secret (cleanup).
    pub delete_secret: bool,
    /// Delete these report ConfigMaps: of earlier runs that left the history.
    pub delete_reports: Vec<String>,
    /// Events to record.
    pub events: Vec<EventNote>,
    /// Reconcile again after this long (besides watch events); `None`: only on changes.
    pub requeue: Option<Duration>,
}

/// How a run ends.
struct Ending {
    phase: Phase,
    reason: String,
    message: String,
    abort: Option<String>,
}

/// The LoadTest's status as read, or the empty one before the first write; borrowed, since a
/// running test's status (metrics, steps, thresholds) is read on every reconcile.
fn old_status(lt: &LoadTest) -> &LoadTestStatus {
    static NONE: std::sync::LazyLock<LoadTestStatus> = std::sync::LazyLock::new(Default::default);
    lt.status.as_ref().unwrap_or(&NONE)
}

/// The next step for the observed state.
pub fn next_step(facts: &Observed<'_>) -> Decision {
    let lt = facts.loadtest;
    let old = old_status(lt);
    if let Some(phase) = old.phase.filter(|p| p.is_finished()) {
        return after_finish(facts, phase, old);
    }
    let mut d = Decision::default();
    let not_begun = matches!(old.phase, None | Some(Phase::Pending));
    if not_begun && facts.pods.is_empty() && facts.progress.is_none() {
        if let Err(errors) = spec_check::check(&lt.spec) {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let ending = Ending {
                phase: Phase::Error,
                reason: "InvalidSpec".into(),
                message: format!("the spec is invalid: {}", list.join("; ")),
                abort: None,
            };
            return finish(facts, old, ending, &BTreeMap::new(), d);
        }
        if let Err(refusal) = spec_check::admit(&lt.spec, &facts.defaults) {
            let ending = Ending {
                phase: Phase::Error,
                reason: refusal.reason.into(),
                message: refusal.message,
                abort: None,
            };
            return finish(facts, old, ending, &BTreeMap::new(), d);
        }
    }

    let failures = runner_failures(facts);
    // Tell the aggregator about failures it cannot see (a pod killed before its final report).
    if let Some(progress) = &facts.progress {
        d.runner_failures = failures
            .iter()
            .filter(|(i, _)| !progress.failed.iter().any(|(j, _)| j == *i))
            .map(|(i, f)| (*i, f.clone()))
            .collect();
    }
    d.events.extend(new_failure_events(old, &failures));
    // A runner pod gone while the run runs (the cleanup only deletes after the finish): someone
    // deleted it. The aggregator hears of it (and ignores it for a runner that had finished);
    // its failure then comes back through the progress, with an event.
    if old.phase == Some(Phase::Running) && facts.progress.is_some() {
        for i in 0..lt.spec.runners.parallelism {
            if !failures.contains_key(&i) && !facts.pods.iter().any(|p| p.index == Some(i)) {
                d.runner_failures
                    .push((i, "its runner pod was deleted during the run".into()));
            }
        }
    }

    if let Some(ending) = ending(facts, old, not_begun, &failures) {
        return finish(facts, old, ending, &failures, d);
    }

    let started = facts
        .progress
        .as_ref()
        .is_some_and(|p| p.started_at.is_some())
        || old.phase == Some(Phase::Running);
    let phase = if started {
        Phase::Running
    } else {
        Phase::Starting
    };
    let desired = lt.spec.runners.parallelism;
    d.create_secret = !facts.secret_exists;
    d.register = facts.progress.is_none();
    if !started {
        d.create_pods = (0..desired)
            .filter(|i| !facts.pods.iter().any(|p| p.index == Some(*i)))
            .collect();
    }
    let counts = runner_counts(facts, phase, failures.len());
    let (reason, message) = if started {
        let mut m = format!("{}/{desired} runners sending load", counts.running);
        if !failures.is_empty() {
            m.push_str(&format!("; {} failed", failures.len()));
        }
        ("LoadRunning", m)
    } else {
        (
            "WaitingForRunners",
            format!(
                "waiting for every runner at the start barrier: {}/{desired} ready",
                counts.ready
            ),
        )
    };
    let status = build_status(facts, old, phase, reason, &message, counts, None);
    if let Some(next) = &status.next_run
        && old.next_run.as_ref() != Some(next)
    {
        d.events.push(EventNote::new(
            EventKind::Normal,
            "RerunQueued",
            "QueueRun",
            &format!(
                "{next}; the {phase} run goes on as it started (generation {}), and the next run starts once it finished",
                status.observed_generation.unwrap_or_default()
            ),
        ));
    }
    if old.phase != Some(phase) {
        let note = if started {
            format!("all {desired} runners started the load")
        } else {
            format!(
                "created the run's runner pods; waiting for all {desired} of them at the start barrier"
            )
        };
        let action = if started {
            "StartLoad"
        } else {
            "CreateRunners"
        };
        d.events.push(EventNote::new(
            EventKind::Normal,
            &phase.to_string(),
            action,
            &note,
        ));
    }
    if should_write(old, &status, facts) {
        d.status = Some(status);
    }
    let mut next = facts.timing.status_interval;
    if let Some(deadline) = deadline_ms(facts, old) {
        next = next.min(until(facts.now, deadline));
    }
    for pod in &facts.pods {
        if let (Some(_), Some(created)) = (pod.pending_reason(), pod.created) {
            let limit = created
                .as_millisecond()
                .saturating_add(ms(facts.timing.runner_start_timeout));
            next = next.min(until(facts.now, limit));
        }
    }
    d.requeue = Some(next.max(Duration::from_secs(1)));
    d
}

/// Ends the run now in `phase` with `reason` and `message`, e.g. when the API server rejected
/// a runner pod: final status, event, stop in the aggregator, cleanup.
pub fn fail_now(facts: &Observed<'_>, phase: Phase, reason: &str, message: &str) -> Decision {
    let old = old_status(facts.loadtest);
    let ending = Ending {
        phase,
        reason: reason.to_string(),
        message: message.to_string(),
        abort: Some(message.to_string()),
    };
    finish(
        facts,
        old,
        ending,
        &runner_failures(facts),
        Decision::default(),
    )
}

/// Whether a reconcile of `lt` has anything to look at: false for a finished run whose cleanup
/// policy can never delete anything, so that resyncs of old LoadTests cost no API calls.
pub fn needs_observation(lt: &LoadTest) -> bool {
    let Some(phase) = lt.status.as_ref().and_then(|s| s.phase) else {
        return true;
    };
    if !phase.is_finished() || rerun::wanted(lt, old_status(lt)).is_some() {
        return true;
    }
    let cleanup = &lt.spec.cleanup;
    cleanup.ttl_seconds_after_finished.is_some() || deletes_at_finish(cleanup.runners, phase)
}

/// Whether `policy` deletes runner pods and the Secret as soon as a run ends in `phase`.
fn deletes_at_finish(policy: CleanupPolicy, phase: Phase) -> bool {
    match policy {
        CleanupPolicy::Always => true,
        CleanupPolicy::OnSuccess => phase == Phase::Succeeded,
        CleanupPolicy::Never => false,
    }
}

/// The first reason for the run to end now, if any.
fn ending(
    facts: &Observed<'_>,
    old: &LoadTestStatus,
    not_begun: bool,
    failures: &BTreeMap<u32, String>,
) -> Option<Ending> {
    let lt = facts.loadtest;
    if let Some(outcome) = facts.progress.as_ref().and_then(|p| p.outcome.as_ref()) {
        return Some(Ending {
            phase: outcome.phase,
            reason: outcome.reason.clone(),
            message: outcome.message.clone(),
            abort: None,
        });
    }
    if lt.metadata.deletion_timestamp.is_some() {
        // Deleted with finalizers or foreground propagation, so still here for a while: the
        // run stops now rather than when its pods are taken from under it. (A plain delete
        // removes it at once: see `controller::loadtest_gone`.)
        let reason = "the LoadTest is being deleted".to_string();
        return Some(Ending {
            phase: Phase::Aborted,
            reason: "Deleted".into(),
            message: format!("{reason}; the results are those measured until then"),
            abort: Some(reason),
        });
    }
    if lt.spec.abort {
        let reason = "stopped by spec.abort".to_string();
        return Some(Ending {
            phase: Phase::Aborted,
            reason: "Aborted".into(),
            message: format!("{reason}; the results are those measured until then"),
            abort: Some(reason),
        });
    }
    if !not_begun
        && let Some(deadline) = deadline_ms(facts, old)
        && facts.now.as_millisecond() >= deadline
    {
        let timeout = volley_crds::Duration(volley_core::plan::timeout(&lt.spec));
        let set = if lt.spec.timeout.is_some() {
            "spec.timeout"
        } else {
            &format!(
                "the default timeout (the plan plus {})",
                volley_crds::Duration(volley_core::plan::DEFAULT_TIMEOUT_MARGIN)
            )
        };
        let message =
            format!("the run did not finish within {timeout} ({set}), start barrier included");
        return Some(Ending {
            phase: Phase::Failed,
            reason: "Timeout".into(),
            message: message.clone(),
            abort: Some(message),
        });
    }
    for pod in &facts.pods {
        let waited = pod.created.map(|c| {
            facts
                .now
                .as_millisecond()
                .saturating_sub(c.as_millisecond())
        });
        let limit = ms(facts.timing.runner_start_timeout);
        let waited_out = waited.is_some_and(|w| w >= limit);
        // A pod Pending for no reason anyone gives (no scheduler for its schedulerName, a node
        // that never runs it) is stuck too once the timeout has passed.
        let problem = match pod.start_problem() {
            Some(problem) => problem,
            None if waited_out => match pod.pending_reason() {
                Some(pending) => format!(
                    "{pending} after {}",
                    volley_crds::Duration(facts.timing.runner_start_timeout)
                ),
                None => continue,
            },
            None => continue,
        };
        if pod.start_problem_is_permanent() || waited_out {
            let runner = pod
                .index
                .map(|i| format!("runner {i} "))
                .unwrap_or_default();
            let message = format!("{runner}(pod {}) cannot start: {problem}", pod.name);
            return Some(Ending {
                phase: Phase::Error,
                reason: "RunnerCannotStart".into(),
                message: message.clone(),
                abort: Some(message),
            });
        }
    }
    if lt.spec.runners.failure_policy == FailurePolicy::Fail
        && let Some((index, why)) = failures.iter().next()
    {
        let message = format!("{}{why}", runner_label(facts, *index));
        let more = failures.len() - 1;
        let message = if more > 0 {
            format!("{message} (and {more} more)")
        } else {
            message
        };
        return Some(Ending {
            phase: Phase::Failed,
            reason: "RunnerFailed".into(),
            message: message.clone(),
            abort: Some(message),
        });
    }
    None
}

/// The decision for a run that ends now: final status, event, aggregator stop, cleanup.
fn finish(
    facts: &Observed<'_>,
    old: &LoadTestStatus,
    ending: Ending,
    failures: &BTreeMap<u32, String>,
    mut d: Decision,
) -> Decision {
    let counts = runner_counts(facts, ending.phase, failures.len());
    let message = shorten(&ending.message, MAX_MESSAGE_CHARS);
    let status = build_status(
        facts,
        old,
        ending.phase,
        &ending.reason,
        &message,
        counts,
        Some(facts.now),
    );
    let kind = if ending.phase == Phase::Succeeded {
        EventKind::Normal
    } else {
        EventKind::Warning
    };
    d.events.push(EventNote::new(
        kind,
        &ending.phase.to_string(),
        "Finish",
        &format!("{}: {}", ending.reason, message),
    ));
    // A Prometheus query without a value says so once, whether or not a threshold used it.
    let failed: Vec<String> = status
        .prometheus
        .iter()
        .filter_map(|r| {
            let label = volley_core::observe::result_label(r);
            r.error.as_ref().map(|e| format!("{label}: {e}"))
        })
        .collect();
    if !failed.is_empty() {
        d.events.push(EventNote::new(
            EventKind::Warning,
            "PrometheusQueryFailed",
            "Observe",
            &failed.join("; "),
        ));
    }
    d.abort = ending.abort;
    d.create_pods.clear();
    d.create_secret = false;
    d.register = false;
    d.status = Some(status);
    d.requeue = None;
    cleanup(facts, ending.phase, facts.now, &mut d);
    d
}

/// A finished run whose runners may still be stopping: the aggregator keeps answering `stop`
/// until every runner acknowledged (its final report) or is gone ([`RunProgress::outcome`] is
/// set then), so the run is forgotten only once drained, or [`drain_limit`] after the finish
/// at the latest. Until then the stop is repeated (it changes nothing for a run already
/// stopping, and makes sure of it whatever happened between the finish and now) and the run is
/// looked at again every second; once
/// drained, the final figures (every report the runners made before they stopped) are
/// written, with the phase, reason and message the finish wrote. Then only cleanup remains.
///
/// A new run that is wanted ([`rerun::wanted`]) starts once the finished run is drained (the
/// aggregator no longer knows it): see [`start_again`].
fn after_finish(facts: &Observed<'_>, phase: Phase, old: &LoadTestStatus) -> Decision {
    let rerun = rerun::wanted(facts.loadtest, old);
    if let Some(why) = &rerun
        && facts.progress.is_none()
    {
        return start_again(facts, old, why);
    }
    let mut d = Decision::default();
    let completion = old
        .completion_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| conditions::find(&old.conditions, COMPLETE).map(|c| c.last_transition_time.0))
        .unwrap_or(facts.now);
    let mut drain_requeue = None;
    if let Some(progress) = &facts.progress {
        let limit = completion
            .as_millisecond()
            .saturating_add(ms(drain_limit(&facts.loadtest.spec)));
        if progress.outcome.is_some() || facts.now.as_millisecond() >= limit {
            d.forget_run = true;
            let status = drained_status(facts, old, phase);
            if status != *old {
                d.status = Some(status);
            }
            if rerun.is_some() {
                // The run waiting behind this one starts at the next look.
                drain_requeue = Some(DRAIN_POLL);
            }
        } else {
            d.abort = Some(
                old.message
                    .clone()
                    .unwrap_or_else(|| format!("the run ended: {phase}")),
            );
            drain_requeue = Some(DRAIN_POLL);
        }
    }
    cleanup(facts, phase, completion, &mut d);
    d.requeue = match (d.requeue, drain_requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    d
}

/// The first step of a new run of `facts.loadtest`, whose drained, finished run `old`
/// describes, asked for by `why`: the status of the new run (Pending, the finished run first
/// in the history, conditions reset), an event, and the finished run's pods and Secret deleted
/// (the new run has its own; the old run's logs go with them) as well as the reports of runs
/// that left the history. The next reconcile sees a Pending run and starts it like a new
/// LoadTest: validation first.
fn start_again(facts: &Observed<'_>, old: &LoadTestStatus, why: &rerun::Trigger) -> Decision {
    let (status, dropped) = rerun::restart(facts.loadtest, old, why, facts.now);
    let note = status.message.clone().unwrap_or_default();
    Decision {
        delete_pods: facts
            .pods
            .iter()
            .filter(|p| !p.deleting)
            .map(|p| p.name.clone())
            .collect(),
        delete_secret: facts.secret_exists,
        delete_reports: dropped,
        events: vec![EventNote::new(
            EventKind::Normal,
            "Rerun",
            "StartRun",
            &note,
        )],
        status: Some(status),
        // Written at once: the status write brings the next reconcile, which starts the run.
        requeue: Some(Duration::from_secs(1)),
        ..Decision::default()
    }
}

/// How often a finished run whose runners are still stopping is looked at.
pub const DRAIN_POLL: Duration = Duration::from_secs(1);

/// The longest a finished run waits for its runners to acknowledge the stop before it is
/// forgotten anyway: the aggregator's own bound on a stop (the longest `gracefulStop`, two
/// report intervals and 10 s) plus a margin. Runners that still send after it are told the
/// run is unknown and stop by themselves (see `volley agent`).
pub fn drain_limit(spec: &volley_crds::LoadTestSpec) -> Duration {
    volley_core::plan::longest_graceful_stop(spec) + Duration::from_secs(30)
}

/// The finished status `old` with the final figures and runner counts of the drained run.
fn drained_status(facts: &Observed<'_>, old: &LoadTestStatus, phase: Phase) -> LoadTestStatus {
    let failures = runner_failures(facts);
    let counts = runner_counts(facts, phase, failures.len());
    let mut status = build_status(
        facts,
        old,
        phase,
        old.reason.as_deref().unwrap_or_default(),
        old.message.as_deref().unwrap_or_default(),
        counts,
        None,
    );
    status.reason.clone_from(&old.reason);
    status.message.clone_from(&old.message);
    status.completion_time.clone_from(&old.completion_time);
    status.observed_generation = old.observed_generation;
    if status.report_ref.is_none() {
        // Set by the controller once the report is written; a drained run whose figures did
        // not change is not written again for it.
        status.report_ref.clone_from(&old.report_ref);
    }
    status
}

/// Deletes pods and Secret when the cleanup policy says so, or asks to come back when due.
fn cleanup(facts: &Observed<'_>, phase: Phase, completion: Timestamp, d: &mut Decision) {
    let live: Vec<String> = facts
        .pods
        .iter()
        .filter(|p| !p.deleting)
        .map(|p| p.name.clone())
        .collect();
    if live.is_empty() && !facts.secret_exists {
        return;
    }
    let cleanup = &facts.loadtest.spec.cleanup;
    let due = if deletes_at_finish(cleanup.runners, phase) {
        Some(completion.as_millisecond())
    } else {
        cleanup.ttl_seconds_after_finished.map(|s| {
            completion
                .as_millisecond()
                .saturating_add(i64::from(s) * 1000)
        })
    };
    match due {
        Some(t) if facts.now.as_millisecond() >= t => {
            d.delete_pods = live;
            d.delete_secret = facts.secret_exists;
        }
        Some(t) => d.requeue = Some(until(facts.now, t).max(Duration::from_secs(1))),
        None => {}
    }
}

/// Failed runners by index: the aggregator's word first, then pods that exited non-zero.
fn runner_failures(facts: &Observed<'_>) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    if let Some(p) = &facts.progress {
        for (i, why) in &p.failed {
            out.insert(*i, why.clone());
        }
    }
    for pod in &facts.pods {
        if let (Some(i), Some(why)) = (pod.index, pod.failure()) {
            out.entry(i).or_insert(why);
        }
    }
    out
}

/// Events for failures the status does not count yet.
fn new_failure_events(old: &LoadTestStatus, failures: &BTreeMap<u32, String>) -> Vec<EventNote> {
    let known = old.runners.as_ref().map(|r| r.failed as usize).unwrap_or(0);
    failures
        .iter()
        .skip(known)
        .map(|(i, why)| {
            EventNote::new(
                EventKind::Warning,
                "RunnerFailed",
                "ObserveRunner",
                &format!("runner {i} failed: {why}"),
            )
        })
        .collect()
}

fn runner_label(facts: &Observed<'_>, index: u32) -> String {
    match facts.pods.iter().find(|p| p.index == Some(index)) {
        Some(p) => format!("runner {index} (pod {}) failed: ", p.name),
        None => format!("runner {index} failed: "),
    }
}

fn runner_counts(facts: &Observed<'_>, phase: Phase, failed: usize) -> RunnerCounts {
    let desired = facts.loadtest.spec.runners.parallelism;
    let count = |ph: PodPhase| {
        u32::try_from(facts.pods.iter().filter(|p| p.phase == ph).count()).unwrap_or(u32::MAX)
    };
    let (ready, running, succeeded) = match &facts.progress {
        Some(p) => (p.registered, p.running, p.done),
        None => {
            let running = count(PodPhase::Running);
            let done = count(PodPhase::Succeeded);
            let load = if phase == Phase::Running { running } else { 0 };
            (running + done, load, done)
        }
    };
    let failed = u32::try_from(failed).unwrap_or(u32::MAX);
    // The counts add up: a runner whose failure the aggregator has not heard of yet (its pod
    // just died) is counted failed, not running too.
    let running = running.min(desired.saturating_sub(failed).saturating_sub(succeeded));
    let shown = match phase {
        Phase::Pending | Phase::Starting => ready,
        Phase::Running => running,
        _ => succeeded,
    };
    RunnerCounts {
        desired,
        ready,
        running,
        succeeded,
        failed,
        summary: format!("{shown}/{desired}"),
    }
}

fn build_status(
    facts: &Observed<'_>,
    old: &LoadTestStatus,
    phase: Phase,
    reason: &str,
    message: &str,
    counts: RunnerCounts,
    completion: Option<Timestamp>,
) -> LoadTestStatus {
    let progress = facts.progress.as_ref();
    let start_time = progress
        .and_then(|p| p.started_at)
        .map(Time)
        .or_else(|| old.start_time.clone());
    let requests = |m: &Option<volley_crds::status::MetricsStatus>| m.as_ref().map(|m| m.requests);
    // Totals are cumulative and never go down within a run: fewer requests than the status
    // already shows means an aggregator that is rebuilding them (a new leader after a failover,
    // a restart) and has not heard from every runner yet. The status keeps what it had.
    let fresh = progress
        .and_then(|p| p.results.clone())
        .filter(|r| requests(&r.metrics) >= requests(&old.metrics));
    let mut results: RunResults = match fresh {
        Some(r) => r,
        None => RunResults {
            metrics: old.metrics.clone(),
            thresholds: old.thresholds.clone(),
            scenarios: old.scenarios.clone(),
            steps: old.steps.clone(),
            verdict: old.verdict,
            report_ref: old.report_ref.clone(),
            prometheus: old.prometheus.clone(),
        },
    };
    if results.verdict.is_none()
        && phase.is_finished()
        && phase != Phase::Error
        && !results.thresholds.is_empty()
    {
        // A run the operator ends (abort, timeout, a failed runner) is judged on the
        // thresholds it shows, so that ThresholdsPassed agrees with `status.thresholds`.
        // Skipped thresholds (no baseline) decide nothing, as in the aggregator's verdict.
        let held = |t: &volley_crds::status::ThresholdStatus| t.passed || t.skipped.is_some();
        results.verdict = Some(if results.thresholds.iter().all(held) {
            Verdict::Passed
        } else {
            Verdict::Failed
        });
    }
    let lt = facts.loadtest;
    // The generation the run started with: an edit during the run is queued, not run, so the
    // status (and every condition) keeps describing the spec that runs. Except `abort: true`,
    // which the run answers at once: the aborted status describes the spec that stopped it.
    let generation = match old.phase {
        None | Some(Phase::Pending) => lt.metadata.generation,
        Some(_) if lt.spec.abort => lt.metadata.generation,
        Some(_) => old.observed_generation.or(lt.metadata.generation),
    };
    // The annotation value the run answers: the one there when it started.
    let rerun_request = match old.phase {
        None => rerun::rerun_annotation(lt).map(str::to_string),
        Some(_) => old.rerun_request.clone(),
    };
    let next_run = if phase.is_finished() {
        None
    } else {
        rerun::trigger(lt, generation, rerun_request.as_deref()).map(|why| why.describe())
    };
    let conditions = conditions::conditions(
        &old.conditions,
        &ConditionInputs {
            phase,
            started: start_time.is_some() || phase == Phase::Running,
            verdict: results.verdict,
            message,
            generation,
            now: facts.now,
        },
    );
    LoadTestStatus {
        phase: Some(phase),
        verdict: results.verdict,
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        observed_generation: generation,
        run: old.run,
        rerun_request,
        next_run,
        start_time,
        completion_time: completion.map(Time),
        runners: Some(counts),
        metrics: results.metrics,
        thresholds: results.thresholds,
        scenarios: results.scenarios,
        steps: results.steps,
        report_ref: results.report_ref,
        conditions,
        history: old.history.clone(),
        prometheus: results.prometheus,
    }
}

/// Write when anything but the metrics changed, or the metrics changed and the last write is
/// at least one status interval old.
fn should_write(old: &LoadTestStatus, new: &LoadTestStatus, facts: &Observed<'_>) -> bool {
    let strip = |s: &LoadTestStatus| LoadTestStatus {
        metrics: None,
        thresholds: Vec::new(),
        scenarios: Vec::new(),
        steps: Vec::new(),
        ..s.clone()
    };
    if strip(old) != strip(new) {
        return true;
    }
    if old == new {
        return false;
    }
    facts.last_status_write.is_none_or(|last| {
        facts
            .now
            .as_millisecond()
            .saturating_sub(last.as_millisecond())
            >= ms(facts.timing.status_interval)
    })
}

/// When the run times out (ms since the epoch): its beginning plus the timeout. The run began
/// when `Complete` turned False (the first status write); failing that, at the LoadTest's
/// creation.
fn deadline_ms(facts: &Observed<'_>, old: &LoadTestStatus) -> Option<i64> {
    let began = began(facts.loadtest, old)?;
    let timeout = ms(volley_core::plan::timeout(&facts.loadtest.spec));
    Some(began.as_millisecond().saturating_add(timeout))
}

/// When `lt`'s run began: when `Complete` turned False (the first status write), failing that
/// the LoadTest's creation. The run's timeout and the runners' start timeout count from it.
pub fn run_began(lt: &LoadTest) -> Option<Timestamp> {
    began(lt, old_status(lt))
}

fn began(lt: &LoadTest, old: &LoadTestStatus) -> Option<Timestamp> {
    conditions::find(&old.conditions, COMPLETE)
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.0)
        .or_else(|| lt.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn until(now: Timestamp, deadline_ms: i64) -> Duration {
    Duration::from_millis(
        u64::try_from(deadline_ms.saturating_sub(now.as_millisecond())).unwrap_or(0),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use volley_crds::status::MetricsStatus;

    use super::*;
    use crate::fixtures::{self, at};
    use crate::observed::{RunOutcome, Terminated, Waiting};

    /// `lt` as it looks after the operator wrote `phase` at `fixtures::t0()`.
    fn in_phase(mut lt: LoadTest, phase: Phase) -> LoadTest {
        let facts = Observed {
            loadtest: &lt,
            now: fixtures::t0(),
            pods: Vec::new(),
            secret_exists: true,
            progress: None,
            last_status_write: None,
            timing: Timing::default(),
            defaults: fixtures::defaults(),
        };
        let counts = runner_counts(&facts, phase, 0);
        let status = build_status(
            &facts,
            &LoadTestStatus::default(),
            phase,
            "R",
            "m",
            counts,
            phase.is_finished().then(fixtures::t0),
        );
        lt.status = Some(status);
        lt
    }

    fn observe(lt: &LoadTest, now: Timestamp) -> Observed<'_> {
        Observed {
            loadtest: lt,
            now,
            pods: Vec::new(),
            secret_exists: lt.status.is_some(),
            progress: None,
            last_status_write: None,
            timing: Timing::default(),
            defaults: fixtures::defaults(),
        }
    }

    fn pods(n: u32, phase: PodPhase) -> Vec<RunnerPod> {
        (0..n)
            .map(|i| RunnerPod {
                phase,
                ..RunnerPod::pending(&format!("web-runner-{i}"), i, fixtures::t0())
            })
            .collect()
    }

    fn progress(registered: u32, started: bool) -> RunProgress {
        RunProgress {
            registered,
            running: if started { registered } else { 0 },
            started_at: started.then(|| at(5)),
            ..RunProgress::default()
        }
    }

    fn outcome(phase: Phase, reason: &str, verdict: Option<Verdict>) -> RunProgress {
        RunProgress {
            registered: 3,
            done: 3,
            started_at: Some(at(5)),
            outcome: Some(RunOutcome {
                phase,
                reason: reason.into(),
                message: format!("{reason} message"),
            }),
            results: Some(RunResults {
                metrics: Some(MetricsStatus {
                    requests: 1200,
                    ..MetricsStatus::default()
                }),
                verdict,
                ..RunResults::default()
            }),
            ..RunProgress::default()
        }
    }

    /// The summary of a decision a table row compares.
    #[derive(Debug, PartialEq)]
    struct Seen {
        phase: Option<Phase>,
        reason: Option<String>,
        create_secret: bool,
        create_pods: Vec<u32>,
        register: bool,
        abort: bool,
        delete: (usize, bool),
        events: Vec<String>,
    }

    fn seen(d: &Decision) -> Seen {
        Seen {
            phase: d.status.as_ref().and_then(|s| s.phase),
            reason: d.status.as_ref().and_then(|s| s.reason.clone()),
            create_secret: d.create_secret,
            create_pods: d.create_pods.clone(),
            register: d.register,
            abort: d.abort.is_some(),
            delete: (d.delete_pods.len(), d.delete_secret),
            events: d.events.iter().map(|e| e.reason.clone()).collect(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        phase: Option<Phase>,
        reason: Option<&str>,
        create_secret: bool,
        create_pods: &[u32],
        register: bool,
        abort: bool,
        delete: (usize, bool),
        events: &[&str],
    ) -> Seen {
        Seen {
            phase,
            reason: reason.map(str::to_string),
            create_secret,
            create_pods: create_pods.to_vec(),
            register,
            abort,
            delete,
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn every_transition() {
        let fresh = fixtures::loadtest("web", 3);
        let starting = in_phase(fixtures::loadtest("web", 3), Phase::Starting);
        let running = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let mut aborting = running.clone();
        aborting.spec.abort = true;
        let mut invalid = fixtures::loadtest("web", 3);
        invalid.spec.runners.parallelism = 0;
        let mut short = in_phase(fixtures::loadtest("web", 3), Phase::Starting);
        short.spec.timeout = Some(volley_crds::Duration::from_secs(60));
        let mut continuing = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        continuing.spec.runners.failure_policy = FailurePolicy::Continue;
        let own_image = fixtures::loadtest_yaml(
            "web",
            "runners: {parallelism: 3, image: 'registry.evil/volley:1'}",
        );
        // The fixtures aim at http://target.team-a.svc:8080.
        let guarded = |list: &str, lt, now| Observed {
            defaults: fixtures::guarded(list),
            ..observe(lt, at(now))
        };

        let failed_pod = |i: u32| RunnerPod {
            phase: PodPhase::Failed,
            terminated: Some(Terminated {
                exit_code: 1,
                reason: "Error".into(),
                message: "cannot reach aggregator".into(),
            }),
            ..RunnerPod::pending(&format!("web-runner-{i}"), i, fixtures::t0())
        };
        let pulling = |reason: &str| RunnerPod {
            waiting: Some(Waiting {
                reason: reason.into(),
                message: "Back-off pulling image \"nope:1\"".into(),
            }),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };

        type Case<'a> = (&'a str, Observed<'a>, Seen);
        let cases: Vec<Case<'_>> = vec![
            (
                "a new LoadTest starts: Secret, every pod, registration",
                observe(&fresh, at(0)),
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    true,
                    &[0, 1, 2],
                    true,
                    false,
                    (0, false),
                    &["Starting"],
                ),
            ),
            (
                "an invalid spec ends in Error before anything is created",
                observe(&invalid, at(0)),
                row(
                    Some(Phase::Error),
                    Some("InvalidSpec"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "a target outside the allowed targets ends in Error before anything is created",
                guarded("*.team-b.svc", &fresh, 0),
                row(
                    Some(Phase::Error),
                    Some("TargetNotAllowed"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "an allowed target starts as usual",
                guarded("*.team-a.svc", &fresh, 0),
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    true,
                    &[0, 1, 2],
                    true,
                    false,
                    (0, false),
                    &["Starting"],
                ),
            ),
            (
                "an invalid spec is reported as such, before the allowed targets",
                guarded("*.team-b.svc", &invalid, 0),
                row(
                    Some(Phase::Error),
                    Some("InvalidSpec"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "a tenant's own runner image is refused while targets are limited",
                guarded("*.team-a.svc", &own_image, 0),
                row(
                    Some(Phase::Error),
                    Some("ImageNotAllowed"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "a tenant's own runner image is fine without a list",
                observe(&own_image, at(0)),
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    true,
                    &[0, 1, 2],
                    true,
                    false,
                    (0, false),
                    &["Starting"],
                ),
            ),
            (
                "a run that has begun is not re-checked (the list changed since)",
                Observed {
                    pods: pods(3, PodPhase::Running),
                    progress: Some(progress(3, false)),
                    ..guarded("*.team-b.svc", &starting, 1)
                },
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &[],
                ),
            ),
            (
                "existing pods are adopted after a restart lost the status",
                Observed {
                    pods: vec![
                        pods(3, PodPhase::Pending).remove(0),
                        pods(3, PodPhase::Pending).remove(2),
                    ],
                    secret_exists: true,
                    ..observe(&fresh, at(1))
                },
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    false,
                    &[1],
                    true,
                    false,
                    (0, false),
                    &["Starting"],
                ),
            ),
            (
                "starting, some runners ready: nothing to create, counts change",
                Observed {
                    pods: pods(3, PodPhase::Running),
                    progress: Some(progress(2, false)),
                    ..observe(&starting, at(10))
                },
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &[],
                ),
            ),
            (
                "the aggregator started the load: Running",
                Observed {
                    pods: pods(3, PodPhase::Running),
                    progress: Some(progress(3, true)),
                    ..observe(&starting, at(10))
                },
                row(
                    Some(Phase::Running),
                    Some("LoadRunning"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Running"],
                ),
            ),
            (
                "running after an operator restart: re-register, never recreate pods",
                Observed {
                    pods: pods(2, PodPhase::Running),
                    ..observe(&running, at(20))
                },
                row(
                    Some(Phase::Running),
                    Some("LoadRunning"),
                    false,
                    &[],
                    true,
                    false,
                    (0, false),
                    &[],
                ),
            ),
            (
                "the aggregator says Succeeded: final status, OnSuccess cleanup",
                Observed {
                    pods: pods(3, PodPhase::Succeeded),
                    progress: Some(outcome(
                        Phase::Succeeded,
                        "ThresholdsPassed",
                        Some(Verdict::Passed),
                    )),
                    ..observe(&running, at(70))
                },
                row(
                    Some(Phase::Succeeded),
                    Some("ThresholdsPassed"),
                    false,
                    &[],
                    false,
                    false,
                    (3, true),
                    &["Succeeded"],
                ),
            ),
            (
                "the aggregator says Failed: OnSuccess keeps the pods for kubectl logs",
                Observed {
                    pods: pods(3, PodPhase::Succeeded),
                    progress: Some(outcome(
                        Phase::Failed,
                        "ThresholdsFailed",
                        Some(Verdict::Failed),
                    )),
                    ..observe(&running, at(70))
                },
                row(
                    Some(Phase::Failed),
                    Some("ThresholdsFailed"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["Failed"],
                ),
            ),
            (
                "spec.abort: Aborted, the aggregator stops the runners",
                Observed {
                    pods: pods(3, PodPhase::Running),
                    progress: Some(progress(3, true)),
                    ..observe(&aborting, at(30))
                },
                row(
                    Some(Phase::Aborted),
                    Some("Aborted"),
                    false,
                    &[],
                    false,
                    true,
                    (0, false),
                    &["Aborted"],
                ),
            ),
            (
                "spec.timeout bounds the start barrier",
                Observed {
                    pods: pods(3, PodPhase::Running),
                    progress: Some(progress(1, false)),
                    ..observe(&short, at(61))
                },
                row(
                    Some(Phase::Failed),
                    Some("Timeout"),
                    false,
                    &[],
                    false,
                    true,
                    (0, false),
                    &["Failed"],
                ),
            ),
            (
                "an image pull error within the bounded wait: keep waiting",
                Observed {
                    pods: vec![pulling("ImagePullBackOff")],
                    progress: Some(progress(0, false)),
                    ..observe(&starting, at(60))
                },
                row(
                    Some(Phase::Starting),
                    Some("WaitingForRunners"),
                    false,
                    &[0, 2],
                    false,
                    false,
                    (0, false),
                    &[],
                ),
            ),
            (
                "an image pull error past the bounded wait: Error",
                Observed {
                    pods: vec![pulling("ImagePullBackOff")],
                    progress: Some(progress(0, false)),
                    ..observe(&starting, at(301))
                },
                row(
                    Some(Phase::Error),
                    Some("RunnerCannotStart"),
                    false,
                    &[],
                    false,
                    true,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "an invalid image name cannot be waited out",
                Observed {
                    pods: vec![pulling("InvalidImageName")],
                    progress: Some(progress(0, false)),
                    ..observe(&starting, at(2))
                },
                row(
                    Some(Phase::Error),
                    Some("RunnerCannotStart"),
                    false,
                    &[],
                    false,
                    true,
                    (0, false),
                    &["Error"],
                ),
            ),
            (
                "a runner exits non-zero under failurePolicy Fail: Failed",
                Observed {
                    pods: vec![failed_pod(0)],
                    progress: Some(progress(3, true)),
                    ..observe(&running, at(30))
                },
                row(
                    Some(Phase::Failed),
                    Some("RunnerFailed"),
                    false,
                    &[],
                    false,
                    true,
                    (0, false),
                    &["RunnerFailed", "Failed"],
                ),
            ),
            (
                "a runner exits non-zero under failurePolicy Continue: the run goes on",
                Observed {
                    pods: vec![failed_pod(2)],
                    progress: Some(progress(3, true)),
                    ..observe(&continuing, at(30))
                },
                row(
                    Some(Phase::Running),
                    Some("LoadRunning"),
                    false,
                    &[],
                    false,
                    false,
                    (0, false),
                    &["RunnerFailed"],
                ),
            ),
        ];
        for (name, facts, want) in cases {
            assert_eq!(seen(&next_step(&facts)), want, "{name}");
        }
    }

    #[test]
    fn the_first_status_of_a_run() {
        let lt = fixtures::loadtest("web", 3);
        let d = next_step(&observe(&lt, at(0)));
        let s = d.status.unwrap();
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(
            s.message.as_deref(),
            Some("waiting for every runner at the start barrier: 0/3 ready")
        );
        assert_eq!(
            s.runners,
            Some(RunnerCounts {
                desired: 3,
                summary: "0/3".into(),
                ..RunnerCounts::default()
            })
        );
        let types: Vec<(&str, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Started", "False"),
                ("Complete", "False"),
                ("ThresholdsPassed", "Unknown")
            ]
        );
        assert_eq!(s.completion_time, None);
        assert_eq!(d.requeue, Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_final_status_carries_results_times_and_conditions() {
        let lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let facts = Observed {
            progress: Some(outcome(
                Phase::Failed,
                "ThresholdsFailed",
                Some(Verdict::Failed),
            )),
            ..observe(&lt, at(70))
        };
        let d = next_step(&facts);
        let s = d.status.unwrap();
        assert_eq!(s.verdict, Some(Verdict::Failed));
        assert_eq!(s.message.as_deref(), Some("ThresholdsFailed message"));
        assert_eq!(s.metrics.unwrap().requests, 1200);
        assert_eq!(s.start_time, Some(Time(at(5))));
        assert_eq!(s.completion_time, Some(Time(at(70))));
        assert_eq!(s.runners.unwrap().summary, "3/3");
        let complete = conditions::find(&s.conditions, COMPLETE).unwrap();
        assert_eq!(
            (complete.status.as_str(), complete.reason.as_str()),
            ("True", "Failed")
        );
        assert_eq!(d.events[0].kind, EventKind::Warning);
        assert_eq!(
            d.events[0].note,
            "ThresholdsFailed: ThresholdsFailed message"
        );
        assert_eq!(d.abort, None, "the aggregator decided; nothing to stop");
        assert_eq!(d.requeue, None);
    }

    #[test]
    fn the_error_message_names_the_pod_and_its_reason() {
        let lt = in_phase(fixtures::loadtest("web", 2), Phase::Starting);
        let stuck = RunnerPod {
            unschedulable: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };
        let facts = Observed {
            pods: vec![stuck],
            ..observe(&lt, at(300))
        };
        let s = next_step(&facts).status.unwrap();
        assert_eq!(
            s.message.as_deref(),
            Some(
                "runner 1 (pod web-runner-1) cannot start: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
            )
        );
        let mut lt = lt;
        let waiting = vec![RunnerPod {
            unschedulable: Some("no nodes".into()),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        }];
        lt.status = next_step(&Observed {
            pods: waiting.clone(),
            ..observe(&lt, at(100))
        })
        .status;
        let facts = Observed {
            pods: waiting,
            ..observe(&lt, at(200))
        };
        let d = next_step(&facts);
        assert_eq!(d.status, None);
        assert_eq!(d.requeue, Some(Duration::from_secs(5)));
        let facts = Observed {
            timing: Timing {
                runner_start_timeout: Duration::from_secs(202),
                ..Timing::default()
            },
            ..facts
        };
        assert_eq!(
            next_step(&facts).requeue,
            Some(Duration::from_secs(2)),
            "requeued when the wait ends"
        );
    }

    #[test]
    fn invalid_spec_message_lists_field_errors() {
        let mut lt = fixtures::loadtest_yaml("web", "data: [{name: users, file: users.csv}]");
        lt.spec.runners.parallelism = 0;
        let s = next_step(&observe(&lt, at(0))).status.unwrap();
        let message = s.message.unwrap();
        assert!(
            message.starts_with("the spec is invalid: spec.runners.parallelism: "),
            "{message}"
        );
        assert!(
            message.contains("; spec.data[0].file: a local file works with `volley run` only"),
            "{message}"
        );
        assert_eq!(s.completion_time, Some(Time(at(0))));
    }

    #[test]
    fn a_refused_target_is_final_and_names_fields_and_hosts() {
        let mut lt = fixtures::loadtest_yaml(
            "web",
            "setup: [{request: {url: 'http://169.254.169.254/latest/meta-data'}}]",
        );
        let defaults = fixtures::guarded("*.team-a.svc,10.0.0.0/8");
        let d = next_step(&facts_at(&lt, &defaults, 0));
        assert_eq!(d.abort, None, "nothing was registered, nothing to stop");
        assert!(d.runner_failures.is_empty() && !d.forget_run);
        assert_eq!(d.requeue, None);
        let s = d.status.unwrap();
        assert_eq!(
            s.message.as_deref(),
            Some(
                "the spec sends load to a URL outside the allowed targets: \
                 spec.setup[0].request.url (`169.254.169.254:80`); the cluster administrator \
                 allows only *.team-a.svc,10.0.0.0/8"
            )
        );
        assert_eq!(s.completion_time, Some(Time(at(0))));
        let complete = conditions::find(&s.conditions, COMPLETE).unwrap();
        assert_eq!(
            (complete.status.as_str(), complete.reason.as_str()),
            ("True", "Error")
        );
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.events[0].kind, EventKind::Warning);
        assert!(
            d.events[0]
                .note
                .starts_with("TargetNotAllowed: the spec sends load"),
            "{}",
            d.events[0].note
        );
        // Written once: the next reconcile sees a finished run and does nothing.
        lt.status = Some(s);
        assert_eq!(
            next_step(&Observed {
                secret_exists: false,
                ..facts_at(&lt, &defaults, 5)
            }),
            Decision::default()
        );
    }

    #[test]
    fn every_ending_bounds_its_message_and_event_note() {
        // 200 long field errors: a header per undeclared `${env:...}` variable.
        let mut invalid = fixtures::loadtest("web", 2);
        let headers = &mut invalid.spec.scenarios[0].steps[0]
            .request
            .as_mut()
            .unwrap()
            .headers;
        for i in 0..200 {
            headers.insert(
                format!("X-Header-{i:03}"),
                format!("${{env:{}_{i:03}}}", "UNDECLARED".repeat(8)),
            );
        }
        let errors = spec_check::check(&invalid.spec).unwrap_err();
        let listed: usize = errors.iter().map(|e| e.to_string().len()).sum();
        assert!(
            listed > 10 * MAX_MESSAGE_CHARS,
            "{} errors of {listed} bytes in all",
            errors.len()
        );
        // Non-ASCII, so that a note bounded in characters would still be too long in bytes.
        let long = "the runner's log goes on — and on; ".repeat(200);
        let starting = in_phase(fixtures::loadtest("web", 2), Phase::Starting);
        let running = in_phase(fixtures::loadtest("web", 2), Phase::Running);
        let stuck = RunnerPod {
            unschedulable: Some(long.clone()),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };
        let mut failed = progress(2, true);
        failed.failed = vec![(1, long.clone())];
        let mut decided = outcome(Phase::Failed, "ThresholdsFailed", Some(Verdict::Failed));
        decided.outcome.as_mut().unwrap().message = long.clone();
        let cases: [(&str, Decision, &str); 5] = [
            (
                "InvalidSpec",
                next_step(&observe(&invalid, at(0))),
                "the spec is invalid: spec.scenarios[0].steps[0].request.headers",
            ),
            (
                "RunnerCannotStart",
                next_step(&Observed {
                    pods: vec![stuck],
                    ..observe(&starting, at(300))
                }),
                "runner 1 (pod web-runner-1) cannot start: ",
            ),
            (
                "RunnerFailed",
                next_step(&Observed {
                    progress: Some(failed),
                    ..observe(&running, at(30))
                }),
                "runner 1 ",
            ),
            (
                "ThresholdsFailed",
                next_step(&Observed {
                    progress: Some(decided),
                    ..observe(&running, at(30))
                }),
                "the runner's log goes on — and on; ",
            ),
            (
                "PodRejected",
                fail_now(
                    &observe(&starting, at(1)),
                    Phase::Error,
                    "PodRejected",
                    &long,
                ),
                "the runner's log goes on — and on; ",
            ),
        ];
        for (reason, d, start) in cases {
            let s = d.status.as_ref().expect(reason);
            assert_eq!(s.reason.as_deref(), Some(reason));
            let message = s.message.as_deref().unwrap();
            assert!(message.starts_with(start), "{reason}: {message}");
            assert!(message.ends_with('…'), "{reason}: {message}");
            assert!(
                message.chars().count() <= MAX_MESSAGE_CHARS + 1,
                "{reason}: {} characters",
                message.chars().count()
            );
            let complete = conditions::find(&s.conditions, COMPLETE).unwrap();
            assert_eq!(complete.message, message, "{reason}");
            let finish: Vec<&EventNote> =
                d.events.iter().filter(|e| e.action == "Finish").collect();
            assert_eq!(finish.len(), 1, "{reason}: {:?}", d.events);
            let whole = format!("{reason}: {message}");
            assert_eq!(finish[0].note, shorten_bytes(&whole, MAX_EVENT_NOTE_BYTES));
            for event in &d.events {
                assert!(
                    event.note.len() <= 1024,
                    "{reason}: a {} note of {} bytes does not fit an event",
                    event.reason,
                    event.note.len()
                );
            }
            if reason == "RunnerFailed" {
                assert!(
                    d.events.iter().any(|e| e.reason == "RunnerFailed"),
                    "{:?}",
                    d.events
                );
            }
        }
    }

    fn facts_at<'a>(lt: &'a LoadTest, defaults: &RunnerDefaults, secs: i64) -> Observed<'a> {
        Observed {
            defaults: defaults.clone(),
            ..observe(lt, at(secs))
        }
    }

    #[test]
    fn runner_failure_events_are_emitted_once_and_reported_to_the_aggregator() {
        let mut lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        lt.spec.runners.failure_policy = FailurePolicy::Continue;
        let killed = RunnerPod {
            phase: PodPhase::Failed,
            terminated: Some(Terminated {
                exit_code: 137,
                reason: "OOMKilled".into(),
                message: String::new(),
            }),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };
        let mut p = progress(3, true);
        p.failed = vec![(2, "setup failed".into())];
        let running = |i: u32| RunnerPod {
            phase: PodPhase::Running,
            ..RunnerPod::pending(&format!("web-runner-{i}"), i, fixtures::t0())
        };
        let facts = Observed {
            pods: vec![running(0), killed.clone(), running(2)],
            progress: Some(p.clone()),
            ..observe(&lt, at(30))
        };
        let d = next_step(&facts);
        let notes: Vec<&str> = d.events.iter().map(|e| e.note.as_str()).collect();
        assert_eq!(
            notes,
            [
                "runner 1 failed: exited with code 137 (OOMKilled)",
                "runner 2 failed: setup failed"
            ]
        );
        assert_eq!(
            d.runner_failures,
            [(1, "exited with code 137 (OOMKilled)".to_string())],
            "the aggregator only needs to hear about what it cannot see"
        );
        let s = d.status.unwrap();
        assert_eq!(s.runners.as_ref().unwrap().failed, 2);
        assert_eq!(
            s.message.as_deref(),
            Some("1/3 runners sending load; 2 failed"),
            "the counts add up: 1 running + 2 failed of 3"
        );
        lt.status = Some(s);
        let again = next_step(&Observed {
            pods: vec![running(0), killed, running(2)],
            progress: Some(p),
            ..observe(&lt, at(31))
        });
        assert!(again.events.is_empty(), "{:?}", again.events);
    }

    #[test]
    fn a_runner_pod_deleted_mid_run_is_reported_to_the_aggregator() {
        let lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let running = |i: u32| RunnerPod {
            phase: PodPhase::Running,
            ..RunnerPod::pending(&format!("web-runner-{i}"), i, fixtures::t0())
        };
        let facts = Observed {
            pods: vec![running(0), running(2)],
            progress: Some(progress(3, true)),
            ..observe(&lt, at(30))
        };
        let d = next_step(&facts);
        assert_eq!(
            d.runner_failures,
            [(1, "its runner pod was deleted during the run".to_string())]
        );
        assert!(
            d.create_pods.is_empty(),
            "a runner is never restarted mid-run"
        );
        // Before the start, a missing pod is simply created.
        let starting = in_phase(fixtures::loadtest("web", 3), Phase::Starting);
        let d = next_step(&Observed {
            pods: vec![running(0), running(2)],
            progress: Some(progress(3, false)),
            ..observe(&starting, at(30))
        });
        assert!(d.runner_failures.is_empty());
        assert_eq!(d.create_pods, [1]);
    }

    #[test]
    fn a_finished_run_is_never_rerun_and_is_cleaned_up_by_policy() {
        for phase in [
            Phase::Succeeded,
            Phase::Failed,
            Phase::Aborted,
            Phase::Error,
        ] {
            let lt = in_phase(fixtures::loadtest("web", 3), phase);
            let d = next_step(&Observed {
                secret_exists: false,
                ..observe(&lt, at(10))
            });
            assert_eq!(d, Decision::default(), "{phase}: nothing at all");
        }
        let cases = [
            (CleanupPolicy::Always, Phase::Failed, None, 10, Some(true)),
            // The TTL is for what the policy keeps: Always deletes at the finish (a run that
            // ended early included), and the TTL does not hold it back.
            (
                CleanupPolicy::Always,
                Phase::Failed,
                Some(10),
                0,
                Some(true),
            ),
            (
                CleanupPolicy::OnSuccess,
                Phase::Succeeded,
                Some(10),
                0,
                Some(true),
            ),
            (
                CleanupPolicy::OnSuccess,
                Phase::Succeeded,
                None,
                10,
                Some(true),
            ),
            (CleanupPolicy::OnSuccess, Phase::Failed, None, 10, None),
            (CleanupPolicy::Never, Phase::Succeeded, None, 10_000, None),
            (
                CleanupPolicy::Never,
                Phase::Succeeded,
                Some(60),
                59,
                Some(false),
            ),
            (
                CleanupPolicy::Never,
                Phase::Succeeded,
                Some(60),
                60,
                Some(true),
            ),
            (
                CleanupPolicy::OnSuccess,
                Phase::Error,
                Some(3600),
                100,
                Some(false),
            ),
        ];
        for (policy, phase, ttl, now, want) in cases {
            let mut lt = fixtures::loadtest("web", 2);
            lt.spec.cleanup.runners = policy;
            lt.spec.cleanup.ttl_seconds_after_finished = ttl;
            let lt = in_phase(lt, phase);
            let mut pods = pods(2, PodPhase::Succeeded);
            pods[1].deleting = true;
            let d = next_step(&Observed {
                pods,
                ..observe(&lt, at(now))
            });
            let label = format!("{policy:?} {phase} ttl {ttl:?} at {now}s");
            assert!(
                d.create_pods.is_empty() && !d.create_secret && !d.register,
                "{label}"
            );
            assert_eq!(d.status, None, "{label}");
            match want {
                Some(true) => {
                    assert_eq!(
                        d.delete_pods,
                        ["web-runner-0"],
                        "{label}: not the one already deleting"
                    );
                    assert!(d.delete_secret, "{label}");
                    assert_eq!(d.requeue, None, "{label}");
                }
                Some(false) => {
                    assert!(d.delete_pods.is_empty() && !d.delete_secret, "{label}");
                    let left = ttl.unwrap() as u64 - now as u64;
                    assert_eq!(d.requeue, Some(Duration::from_secs(left)), "{label}");
                }
                None => {
                    assert_eq!(d, Decision::default(), "{label}");
                }
            }
        }
    }

    #[test]
    fn a_finished_run_is_forgotten_by_the_aggregator() {
        let lt = in_phase(fixtures::loadtest("web", 2), Phase::Succeeded);
        let d = next_step(&Observed {
            secret_exists: false,
            progress: Some(outcome(
                Phase::Succeeded,
                "ThresholdsPassed",
                Some(Verdict::Passed),
            )),
            ..observe(&lt, at(10))
        });
        assert!(d.forget_run);
        // The final figures replace those of the finish; nothing else changes.
        let s = d.status.expect("the final figures are written");
        assert_eq!(s.metrics.unwrap().requests, 1200);
        let old = lt.status.clone().unwrap();
        assert_eq!(
            (s.phase, s.reason, s.message, s.completion_time),
            (old.phase, old.reason, old.message, old.completion_time)
        );
    }

    /// A running run's progress with `requests` measured so far and two thresholds that hold.
    fn measured(requests: u64, outcome: Option<(Phase, &str)>) -> RunProgress {
        let threshold = |expr: &str| volley_crds::status::ThresholdStatus {
            expr: expr.into(),
            scope: "all".into(),
            actual: "1".into(),
            passed: true,
            aborted: false,
            skipped: None,
        };
        let finished = outcome.is_some();
        RunProgress {
            registered: 3,
            running: if finished { 0 } else { 3 },
            done: if finished { 3 } else { 0 },
            started_at: Some(at(5)),
            outcome: outcome.map(|(phase, reason)| RunOutcome {
                phase,
                reason: reason.into(),
                message: format!("{reason} message"),
            }),
            results: Some(RunResults {
                metrics: Some(MetricsStatus {
                    requests,
                    ..MetricsStatus::default()
                }),
                thresholds: vec![threshold("error_rate < 1%"), threshold("p(95) < 2s")],
                verdict: finished.then_some(Verdict::Passed),
                ..RunResults::default()
            }),
            ..RunProgress::default()
        }
    }

    /// Every early end, from the finish to the forget: the finish stops the runners and writes
    /// the phase at once; while the runners stop, the run is not forgotten (the aggregator
    /// keeps answering `stop`) and the stop is repeated every second; once every runner
    /// acknowledged, the final figures are written (with a verdict that agrees with the
    /// thresholds, and runner counts that add up) and the run is forgotten; an aggregator
    /// that never drains is forgotten after [`drain_limit`].
    #[test]
    fn every_early_end_stops_the_runners_and_is_forgotten_only_once_drained() {
        let running = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let mut aborted = running.clone();
        aborted.spec.abort = true;
        let mut deleting = running.clone();
        deleting.metadata.deletion_timestamp = Some(Time(at(19)));
        let mut timed_out = running.clone();
        timed_out.spec.timeout = Some(volley_crds::Duration::from_secs(60));
        let killed = RunnerPod {
            phase: PodPhase::Failed,
            terminated: Some(Terminated {
                exit_code: 137,
                reason: "Error".into(),
                message: String::new(),
            }),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };
        let live = |i: u32| RunnerPod {
            phase: PodPhase::Running,
            ..RunnerPod::pending(&format!("web-runner-{i}"), i, fixtures::t0())
        };
        // (case, LoadTest, pods, progress at the end, when, phase, reason, operator stops it)
        let abort_on_fail = measured(800, Some((Phase::Failed, "ThresholdAborted")));
        #[allow(clippy::type_complexity)]
        let cases: [(
            &str,
            &LoadTest,
            Vec<RunnerPod>,
            RunProgress,
            i64,
            Phase,
            &str,
            bool,
        ); 5] = [
            (
                "deletion",
                &deleting,
                vec![live(0), live(1), live(2)],
                measured(240, None),
                20,
                Phase::Aborted,
                "Deleted",
                true,
            ),
            (
                "abort",
                &aborted,
                vec![live(0), live(1), live(2)],
                measured(240, None),
                20,
                Phase::Aborted,
                "Aborted",
                true,
            ),
            (
                "timeout",
                &timed_out,
                vec![live(0), live(1), live(2)],
                measured(800, None),
                61,
                Phase::Failed,
                "Timeout",
                true,
            ),
            (
                "runner failure under Fail",
                &running,
                vec![live(0), killed, live(2)],
                measured(1350, None),
                20,
                Phase::Failed,
                "RunnerFailed",
                true,
            ),
            (
                "abortOnFail",
                &running,
                vec![live(0), live(1), live(2)],
                abort_on_fail,
                20,
                Phase::Failed,
                "ThresholdAborted",
                false,
            ),
        ];
        for (case, lt, pods, at_end, now, phase, reason, stops) in cases {
            let end = next_step(&Observed {
                pods: pods.clone(),
                progress: Some(at_end.clone()),
                ..observe(lt, at(now))
            });
            let status = end.status.clone().expect(case);
            assert_eq!(
                (status.phase, status.reason.as_deref()),
                (Some(phase), Some(reason)),
                "{case}"
            );
            assert_eq!(
                end.abort.is_some(),
                stops,
                "{case}: the operator stops the runners"
            );
            assert!(!end.forget_run, "{case}: not forgotten at the finish");
            let counts = status.runners.clone().unwrap();
            assert!(
                counts.running + counts.succeeded + counts.failed <= counts.desired,
                "{case}: the counts add up: {counts:?}"
            );
            assert_eq!(
                conditions::find(&status.conditions, conditions::THRESHOLDS_PASSED)
                    .map(|c| c.status.as_str()),
                Some("True"),
                "{case}: ThresholdsPassed agrees with status.thresholds at once"
            );
            let mut finished = (*lt).clone();
            finished.status = Some(status.clone());

            if stops {
                // The runners are still stopping: not forgotten, the stop is repeated.
                let stopping = next_step(&Observed {
                    pods: pods.clone(),
                    progress: Some(measured(
                        at_end
                            .results
                            .as_ref()
                            .unwrap()
                            .metrics
                            .as_ref()
                            .unwrap()
                            .requests
                            + 50,
                        None,
                    )),
                    ..observe(&finished, at(now + 1))
                });
                assert!(
                    !stopping.forget_run,
                    "{case}: forgotten before the runners stopped"
                );
                assert!(stopping.abort.is_some(), "{case}: the stop is repeated");
                assert_eq!(stopping.requeue, Some(DRAIN_POLL), "{case}");
                assert_eq!(stopping.status, None, "{case}: no status while stopping");
            }

            // Every runner acknowledged: the final figures, then forgotten.
            let mut acknowledged = measured(1500, Some((Phase::Aborted, "Aborted")));
            let failed: Vec<(u32, String)> = pods
                .iter()
                .filter_map(|p| Some((p.index?, p.failure()?)))
                .collect();
            acknowledged.done -= u32::try_from(failed.len()).unwrap();
            acknowledged.failed = failed;
            let drained = next_step(&Observed {
                pods: pods.clone(),
                progress: Some(acknowledged),
                ..observe(&finished, at(now + 2))
            });
            assert!(drained.forget_run, "{case}: forgotten once drained");
            assert_eq!(drained.abort, None, "{case}");
            let last = drained.status.expect(case);
            assert_eq!(
                last.metrics.as_ref().unwrap().requests,
                1500,
                "{case}: every report before the stop counts"
            );
            assert_eq!(
                (last.phase, last.reason.as_deref()),
                (Some(phase), Some(reason)),
                "{case}: the end stays"
            );
            assert_eq!(last.completion_time, status.completion_time, "{case}");
            let counts = last.runners.unwrap();
            assert_eq!(counts.running, 0, "{case}: {counts:?}");
            assert_eq!(
                counts.succeeded + counts.failed,
                counts.desired,
                "{case}: {counts:?}"
            );
            assert_eq!(last.verdict, Some(Verdict::Passed), "{case}");

            if stops {
                // An aggregator that never drains: forgotten after the bound, not before.
                let limit = i64::try_from(drain_limit(&lt.spec).as_secs()).unwrap();
                let completed = status.completion_time.as_ref().unwrap().0.as_second()
                    - fixtures::t0().as_second();
                for (secs, forget) in [(completed + limit - 1, false), (completed + limit, true)] {
                    let d = next_step(&Observed {
                        pods: pods.clone(),
                        progress: Some(measured(900, None)),
                        ..observe(&finished, at(secs))
                    });
                    assert_eq!(d.forget_run, forget, "{case} at {secs}s");
                }
            }
        }
    }

    /// The Prometheus results reach the finished status, and a query without a value is a
    /// Warning event naming it.
    #[test]
    fn prometheus_results_are_in_the_status_and_a_failed_query_is_an_event() {
        use volley_crds::status::PrometheusResult;
        let lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let mut ended = outcome(Phase::Succeeded, "ThresholdsPassed", Some(Verdict::Passed));
        let results = vec![
            PrometheusResult {
                name: "depth".into(),
                query: "max(q)".into(),
                value: Some(4.0),
                error: None,
                ..Default::default()
            },
            PrometheusResult {
                name: "p95".into(),
                query: "histogram_quantile(0.95, x)".into(),
                value: None,
                error: Some("no data: the query returned no series".into()),
                ..Default::default()
            },
        ];
        if let Some(r) = ended.results.as_mut() {
            r.prometheus = results.clone();
        }
        let d = next_step(&Observed {
            progress: Some(ended),
            ..observe(&lt, at(40))
        });
        assert_eq!(d.status.unwrap().prometheus, results);
        let events: Vec<(&str, &str)> = d
            .events
            .iter()
            .filter(|e| e.reason == "PrometheusQueryFailed")
            .map(|e| (e.action.as_str(), e.note.as_str()))
            .collect();
        assert_eq!(
            events,
            [("Observe", "p95: no data: the query returned no series")]
        );
    }

    #[test]
    fn a_run_the_aggregator_ended_is_forgotten_without_writing_the_same_status_again() {
        let lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let ended = outcome(Phase::Succeeded, "ThresholdsPassed", Some(Verdict::Passed));
        let d = next_step(&Observed {
            progress: Some(ended.clone()),
            ..observe(&lt, at(40))
        });
        assert!(!d.forget_run);
        let mut finished = lt.clone();
        let mut status = d.status.unwrap();
        status.report_ref = Some(volley_crds::status::ReportRef {
            config_map_name: "web-report".into(),
        });
        finished.status = Some(status);
        let d = next_step(&Observed {
            progress: Some(ended),
            ..observe(&finished, at(41))
        });
        assert!(d.forget_run);
        assert_eq!(d.status, None, "nothing new to write");
    }

    #[test]
    fn a_new_leader_never_writes_fewer_requests_than_the_status_shows() {
        // The status shows 1350 requests; the new leader's aggregator has just registered the
        // run as started and heard from no runner yet (or from one of three).
        let mut lt = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        let mut status = lt.status.clone().unwrap();
        status.metrics = Some(MetricsStatus {
            requests: 1350,
            ..MetricsStatus::default()
        });
        lt.status = Some(status);
        for rebuilt in [0, 400] {
            let d = next_step(&Observed {
                progress: Some(measured(rebuilt, None)),
                last_status_write: None,
                ..observe(&lt, at(40))
            });
            if let Some(s) = &d.status {
                assert_eq!(
                    s.metrics.as_ref().unwrap().requests,
                    1350,
                    "rebuilding from {rebuilt}"
                );
            }
        }
        // Once every runner has reported again, the totals go on.
        let d = next_step(&Observed {
            progress: Some(measured(4053, None)),
            ..observe(&lt, at(40))
        });
        assert_eq!(d.status.unwrap().metrics.unwrap().requests, 4053);
    }

    #[test]
    fn a_pod_pending_for_no_reason_ends_the_run_after_the_start_timeout() {
        let lt = in_phase(fixtures::loadtest("web", 2), Phase::Starting);
        let timing = Timing {
            runner_start_timeout: Duration::from_secs(30),
            ..Timing::default()
        };
        let no_scheduler = RunnerPod::pending("web-runner-0", 0, fixtures::t0());
        let not_ready = RunnerPod {
            conditions: Some("PodScheduled=False (SchedulerError): no scheduler".into()),
            ..RunnerPod::pending("web-runner-1", 1, fixtures::t0())
        };
        for (pod, says) in [
            (no_scheduler, "no condition reported"),
            (
                not_ready,
                "PodScheduled=False (SchedulerError): no scheduler",
            ),
        ] {
            let before = next_step(&Observed {
                pods: vec![pod.clone()],
                progress: Some(progress(0, false)),
                timing,
                ..observe(&lt, at(29))
            });
            assert_ne!(
                before.status.as_ref().and_then(|s| s.phase),
                Some(Phase::Error)
            );
            assert_eq!(
                before.requeue,
                Some(Duration::from_secs(1)),
                "comes back at the timeout"
            );
            let after = next_step(&Observed {
                pods: vec![pod.clone()],
                progress: Some(progress(0, false)),
                timing,
                ..observe(&lt, at(30))
            });
            let s = after.status.expect("the run ends");
            assert_eq!(
                (s.phase, s.reason.as_deref()),
                (Some(Phase::Error), Some("RunnerCannotStart"))
            );
            let message = s.message.unwrap();
            assert!(
                message.contains(&pod.name)
                    && message.contains(says)
                    && message.contains("after 30s"),
                "{message}"
            );
            assert!(
                after.abort.is_some(),
                "the aggregator's barrier is ended too"
            );
        }
    }

    #[test]
    fn metrics_alone_are_written_at_most_once_per_interval() {
        let lt = in_phase(fixtures::loadtest("web", 1), Phase::Running);
        let mut p = progress(1, true);
        p.results = Some(RunResults {
            metrics: Some(MetricsStatus {
                requests: 10,
                ..MetricsStatus::default()
            }),
            ..RunResults::default()
        });
        let mut lt = lt;
        let first = next_step(&Observed {
            pods: pods(1, PodPhase::Running),
            progress: Some(p.clone()),
            ..observe(&lt, at(6))
        });
        let mut written = first.status.expect("start time and counts changed");
        lt.status = Some(written.clone());
        p.results
            .as_mut()
            .unwrap()
            .metrics
            .as_mut()
            .unwrap()
            .requests = 20;
        let facts = |lt: &LoadTest, now, last| {
            next_step(&Observed {
                pods: pods(1, PodPhase::Running),
                progress: Some(p.clone()),
                last_status_write: Some(at(last)),
                ..observe(lt, at(now))
            })
        };
        assert_eq!(facts(&lt, 8, 6).status, None, "2s after the last write");
        let later = facts(&lt, 11, 6).status.expect("5s after the last write");
        assert_eq!(later.metrics.as_ref().unwrap().requests, 20);
        written.metrics.as_mut().unwrap().requests = 20;
        lt.status = Some(written);
        assert_eq!(facts(&lt, 30, 11).status, None, "unchanged: no write");
    }

    #[test]
    fn the_timeout_counts_from_the_first_status_write() {
        let mut lt = fixtures::loadtest("web", 1);
        lt.spec.timeout = Some(volley_crds::Duration::from_secs(60));
        // Created long before the operator saw it: the run still gets its full minute.
        lt.metadata.creation_timestamp = Some(Time(at(-3600)));
        let first = next_step(&observe(&lt, at(0)));
        lt.status = first.status;
        let facts = observe(&lt, at(59));
        let d = next_step(&facts);
        assert_eq!(d.status, None);
        assert_eq!(d.requeue, Some(Duration::from_secs(1)));
        let d = next_step(&Observed {
            now: at(60),
            ..facts
        });
        assert_eq!(d.status.unwrap().reason.as_deref(), Some("Timeout"));
    }

    #[test]
    fn the_default_timeout_is_named_with_its_margin() {
        let mut lt = fixtures::loadtest("web", 1);
        lt.spec.timeout = None;
        let first = next_step(&observe(&lt, at(0)));
        lt.status = first.status;
        let limit = volley_core::plan::timeout(&lt.spec).as_secs() as i64;
        let d = next_step(&observe(&lt, at(limit)));
        let status = d.status.unwrap();
        assert_eq!(status.reason.as_deref(), Some("Timeout"));
        assert!(
            status
                .message
                .unwrap()
                .contains("(the default timeout (the plan plus 10m))"),
        );
    }

    /// `lt` with the status `d` writes, if any.
    fn written(mut lt: LoadTest, d: &Decision) -> LoadTest {
        if let Some(status) = &d.status {
            lt.status = Some(status.clone());
        }
        lt
    }

    fn with_rerun(mut lt: LoadTest, value: &str) -> LoadTest {
        lt.metadata.annotations = Some(BTreeMap::from([(
            rerun::RERUN_ANNOTATION.to_string(),
            value.to_string(),
        )]));
        lt
    }

    #[test]
    fn a_change_to_a_finished_run_starts_a_new_run_once_its_runners_stopped() {
        let finished = |phase| in_phase(fixtures::loadtest("web", 2), phase);
        let edited = |phase| {
            let mut lt = finished(phase);
            lt.metadata.generation = Some(2);
            lt
        };
        let mut aborting = edited(Phase::Aborted);
        aborting.spec.abort = true;
        let draining = RunProgress {
            registered: 2,
            ..RunProgress::default()
        };
        let drained = outcome(Phase::Aborted, "Aborted", None);
        // (label, LoadTest, progress, reason of the new run (None: no new run yet))
        let cases: Vec<(&str, LoadTest, Option<RunProgress>, Option<&str>)> = vec![
            ("unchanged", finished(Phase::Succeeded), None, None),
            (
                "Succeeded, spec changed",
                edited(Phase::Succeeded),
                None,
                Some("SpecChanged"),
            ),
            (
                "Failed, spec changed",
                edited(Phase::Failed),
                None,
                Some("SpecChanged"),
            ),
            (
                "Aborted, spec changed",
                edited(Phase::Aborted),
                None,
                Some("SpecChanged"),
            ),
            (
                "Error, spec fixed",
                edited(Phase::Error),
                None,
                Some("SpecChanged"),
            ),
            ("abort still set", aborting, None, None),
            (
                "a new rerun value",
                with_rerun(finished(Phase::Failed), "deploy-42"),
                None,
                Some("RerunRequested"),
            ),
            (
                "runners still stopping",
                edited(Phase::Aborted),
                Some(draining),
                None,
            ),
            (
                "runners just stopped",
                edited(Phase::Aborted),
                Some(drained),
                None,
            ),
        ];
        for (label, lt, progress, want) in cases {
            let d = next_step(&Observed {
                pods: pods(2, PodPhase::Succeeded),
                progress: progress.clone(),
                // Within the drain limit of the finish at t0.
                ..observe(&lt, at(10))
            });
            let Some(reason) = want else {
                assert!(
                    d.status
                        .as_ref()
                        .is_none_or(|s| s.phase != Some(Phase::Pending)),
                    "{label}: no new run"
                );
                assert!(!d.events.iter().any(|e| e.reason == "Rerun"), "{label}");
                if let Some(progress) = progress {
                    // The stop of #18 goes on per run; the next run waits for it.
                    assert_eq!(d.requeue, Some(DRAIN_POLL), "{label}");
                    assert_eq!(d.forget_run, progress.outcome.is_some(), "{label}");
                }
                continue;
            };
            let status = d.status.clone().unwrap();
            assert_eq!(status.phase, Some(Phase::Pending), "{label}");
            assert_eq!(status.reason.as_deref(), Some(reason), "{label}");
            assert_eq!(status.run, Some(2), "{label}");
            assert_eq!(
                status.observed_generation, lt.metadata.generation,
                "{label}"
            );
            assert_eq!(status.history.len(), 1, "{label}");
            assert_eq!(status.history[0].phase, lt.status.as_ref().unwrap().phase);
            assert_eq!(status.history[0].generation, Some(1), "{label}");
            assert_eq!(
                d.delete_pods.len(),
                2,
                "{label}: the finished run's pods go"
            );
            assert!(d.delete_secret, "{label}: and its Secret");
            assert!(d.create_pods.is_empty() && !d.create_secret && !d.register);
            assert_eq!(d.events.len(), 1, "{label}");
            assert_eq!(d.events[0].reason, "Rerun", "{label}");
            assert_eq!(d.events[0].kind, EventKind::Normal, "{label}");
            assert_eq!(&d.events[0].note, status.message.as_ref().unwrap());
            assert!(needs_observation(&lt), "{label}: a resync sees it");
            // The new run starts like a new LoadTest, and is not started again by the change
            // it answered.
            let pending = written(lt.clone(), &d);
            let next = next_step(&Observed {
                secret_exists: false,
                ..observe(&pending, at(11))
            });
            let started = next.status.unwrap();
            assert_eq!(started.phase, Some(Phase::Starting), "{label}");
            assert_eq!(next.create_pods, [0, 1], "{label}");
            assert!(next.create_secret && next.register, "{label}");
            assert_eq!(started.run, Some(2), "{label}");
            assert_eq!(started.history.len(), 1, "{label}: the history is kept");
            assert_eq!(rerun::wanted(&pending, &started), None, "{label}");
        }
    }

    #[test]
    fn a_rerun_of_an_invalid_spec_ends_in_error_again_and_is_in_the_history() {
        let mut lt = fixtures::loadtest("web", 2);
        lt.spec.runners.parallelism = 0;
        let d = next_step(&observe(&lt, at(0)));
        assert_eq!(d.status.as_ref().unwrap().phase, Some(Phase::Error));
        let mut lt = written(lt, &d);
        lt = with_rerun(lt, "again");
        let d = next_step(&observe(&lt, at(10)));
        let lt = written(lt, &d);
        let d = next_step(&observe(&lt, at(11)));
        let status = d.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Error));
        assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
        assert_eq!(status.run, Some(2));
        assert_eq!(status.rerun_request.as_deref(), Some("again"));
        assert_eq!(status.history[0].phase, Some(Phase::Error));
        assert_eq!(
            status.history[0].p95_ms, None,
            "no figures for a run that never ran"
        );
    }

    #[test]
    fn an_edit_during_a_run_is_queued_with_one_event_and_runs_next() {
        let mut original = in_phase(fixtures::loadtest("web", 3), Phase::Running);
        original.metadata.generation = Some(2);
        let lt = original.clone();
        let facts = Observed {
            pods: pods(3, PodPhase::Running),
            progress: Some(progress(3, true)),
            ..observe(&original, at(30))
        };
        let d = next_step(&facts);
        let status = d.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Running), "the run goes on");
        assert_eq!(
            status.observed_generation,
            Some(1),
            "describing the spec that runs"
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
        assert_eq!(
            status.next_run.as_deref(),
            Some("the spec changed from generation 1 to 2")
        );
        assert_eq!(
            d.events
                .iter()
                .map(|e| e.reason.as_str())
                .collect::<Vec<_>>(),
            ["RerunQueued"]
        );
        assert!(d.create_pods.is_empty() && d.delete_pods.is_empty() && d.abort.is_none());
        // Once is enough.
        let lt = written(lt, &d);
        let d = next_step(&Observed {
            loadtest: &lt,
            ..facts.clone()
        });
        assert!(d.events.is_empty(), "{:?}", d.events);
        // The run ends: its status is of generation 1 and nothing is queued any more ...
        let d = next_step(&Observed {
            loadtest: &lt,
            progress: Some(outcome(
                Phase::Succeeded,
                "ThresholdsPassed",
                Some(Verdict::Passed),
            )),
            ..facts.clone()
        });
        let done = d.status.clone().unwrap();
        assert_eq!(done.phase, Some(Phase::Succeeded));
        assert_eq!(done.observed_generation, Some(1));
        assert_eq!(done.next_run, None);
        // ... and the queued run starts once the finished one was let go.
        let lt = written(lt, &d);
        let d = next_step(&observe(&lt, at(40)));
        let next = d.status.unwrap();
        assert_eq!(next.phase, Some(Phase::Pending));
        assert_eq!(next.observed_generation, Some(2));
        assert_eq!(next.history[0].verdict, Some(Verdict::Passed));
        assert_eq!(next.history[0].generation, Some(1));
    }

    #[test]
    fn a_rerun_request_present_at_the_first_run_is_answered_by_it() {
        let lt = with_rerun(fixtures::loadtest("web", 1), "v1");
        let d = next_step(&observe(&lt, at(0)));
        assert_eq!(
            d.status.as_ref().unwrap().rerun_request.as_deref(),
            Some("v1")
        );
        let lt = written(lt, &d);
        // Failed: OnSuccess keeps its pods, so only a new run could need a look.
        let lt = in_phase_kept(lt, Phase::Failed);
        assert_eq!(rerun::wanted(&lt, lt.status.as_ref().unwrap()), None);
        assert!(
            !needs_observation(&lt),
            "a finished, answered run costs no API calls"
        );
        let lt = with_rerun(lt, "v2");
        assert!(needs_observation(&lt));
    }

    /// `lt`'s status with the phase `phase` (and Complete True when finished), all else kept.
    fn in_phase_kept(mut lt: LoadTest, phase: Phase) -> LoadTest {
        let mut status = lt.status.take().unwrap();
        status.phase = Some(phase);
        lt.status = Some(status);
        lt
    }

    /// What the CI command of `docs/guide.md` ("Re-run by commit") waits for, checked against
    /// every status the phase machine writes after a re-apply: no status of the previous run,
    /// nor any step of the new one before it finished, satisfies it.
    #[test]
    fn the_documented_kubectl_wait_is_satisfied_only_by_the_new_run() {
        // A Complete condition of generation `gen` that is True: what
        // `--for=condition=Complete` after `--for=jsonpath='{.status.observedGeneration}'=GEN`
        // accepts, also read per condition.
        let complete_of = |lt: &LoadTest, generation: i64| {
            let s = lt.status.as_ref();
            let by_condition = s
                .and_then(|s| conditions::find(&s.conditions, COMPLETE))
                .is_some_and(|c| c.status == "True" && c.observed_generation == Some(generation));
            let by_command = rerun::ci_wait_satisfied(s, generation);
            (by_condition, by_command)
        };
        for edit_while_running in [false, true] {
            let label = if edit_while_running {
                "edited while running"
            } else {
                "edited after"
            };
            let mut lt = next_step_to(fixtures::loadtest("web", 2), 0);
            if edit_while_running {
                lt.metadata.generation = Some(2);
            }
            // Running, then the aggregator ends the run.
            lt = step(&lt, 10, pods(2, PodPhase::Running), Some(progress(2, true)));
            assert_eq!(complete_of(&lt, 2), (false, false), "{label}");
            let passed = outcome(Phase::Succeeded, "ThresholdsPassed", Some(Verdict::Passed));
            lt = step(&lt, 60, pods(2, PodPhase::Running), Some(passed));
            assert_eq!(lt.status.as_ref().unwrap().phase, Some(Phase::Succeeded));
            assert_eq!(
                complete_of(&lt, 1),
                (true, true),
                "{label}: the first run is done"
            );
            if !edit_while_running {
                lt.metadata.generation = Some(2);
            }
            // The re-apply, before and after the operator saw it.
            assert_eq!(
                complete_of(&lt, 2),
                (false, false),
                "{label}: before the operator"
            );
            lt = step(&lt, 70, pods(2, PodPhase::Succeeded), None);
            let s = lt.status.as_ref().unwrap();
            assert_eq!(s.phase, Some(Phase::Pending), "{label}");
            assert_eq!(s.observed_generation, Some(2), "{label}");
            assert_eq!(
                complete_of(&lt, 2),
                (false, false),
                "{label}: the new run is pending"
            );
            lt = step(&lt, 71, Vec::new(), None);
            assert_eq!(lt.status.as_ref().unwrap().phase, Some(Phase::Starting));
            assert_eq!(complete_of(&lt, 2), (false, false), "{label}: starting");
            lt = step(&lt, 80, pods(2, PodPhase::Running), Some(progress(2, true)));
            assert_eq!(lt.status.as_ref().unwrap().phase, Some(Phase::Running));
            assert_eq!(complete_of(&lt, 2), (false, false), "{label}: running");
            let failed = outcome(Phase::Failed, "ThresholdsFailed", Some(Verdict::Failed));
            lt = step(&lt, 140, pods(2, PodPhase::Running), Some(failed));
            assert_eq!(
                complete_of(&lt, 2),
                (true, true),
                "{label}: the new run is done"
            );
            let s = lt.status.as_ref().unwrap();
            assert_eq!(s.history.len(), 1);
            assert_eq!(s.history[0].phase, Some(Phase::Succeeded));
        }
    }

    /// `lt` after one step at `now` with `pods` and `progress`.
    fn step(
        lt: &LoadTest,
        now: i64,
        pods: Vec<RunnerPod>,
        progress: Option<RunProgress>,
    ) -> LoadTest {
        let d = next_step(&Observed {
            pods,
            progress,
            ..observe(lt, at(now))
        });
        written(lt.clone(), &d)
    }

    /// `lt` after its first step at `now` (Starting).
    fn next_step_to(lt: LoadTest, now: i64) -> LoadTest {
        let d = next_step(&observe(&lt, at(now)));
        written(lt, &d)
    }
}
