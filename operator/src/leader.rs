//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles and aggregates; and the leader label on the leader's own pod, so that runner
//! traffic reaches the replica that holds the runs.
//!
//! kube 5 has no leader election of its own, so this is the usual protocol, small enough to
//! test against the mock API server:
//!
//! - read the Lease; [`decide`] what to do: create it (none exists), renew it (we hold it),
//!   take it over (its holder stopped renewing for longer than `leaseDurationSeconds`, or it
//!   has no holder), or wait (someone else holds it);
//! - every write is a create (409 if someone was faster) or a replace carrying the
//!   `resourceVersion` that was read (409 if the Lease changed since), so two replicas can
//!   never both believe they won;
//! - the leader renews every [`LeaseConfig::renew_every`]; when it cannot renew for
//!   [`LeaseConfig::duration`], or finds the Lease taken, it has lost and must stop
//!   reconciling (the operator exits and is restarted as a follower);
//! - on shutdown the leader releases the Lease (no holder), so a successor takes over at once.
//!
//! Every replica is ready (`/readyz`); the aggregator Service selects the pod labelled
//! [`LEADER_LABEL`]` = "true"` as well as the app labels. [`Elector::run`] owns that label: it
//! removes it at startup before campaigning (a restarted container of a former leader keeps its
//! pod, and so its labels), sets it once the Lease is won, and removes it as soon as the Lease
//! is lost and before it is released. [`LeaderLabel`] is the label's only writer and retries a
//! failed patch with backoff; a label that cannot be written is logged, never fatal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::controller::{api_code, doubling_backoff};

/// How the Lease is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower tries to acquire.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// The usual timings: 15 s lease, renewed every 5 s, acquisition retried every 2 s.
    pub fn new(name: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            name: name.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// There is none: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder is gone (expired, or released): take it over.
    TakeOver,
    /// Someone else holds it.
    Wait {
        /// Who.
        holder: String,
    },
}

/// What to do with `lease` (as read) at `now`, as `identity`.
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder.is_empty() {
        return LeaseAction::TakeOver;
    }
    if holder == identity {
        return LeaseAction::Renew;
    }
    let renewed = spec
        .renew_time
        .or(spec.acquire_time)
        .map(|t| t.0.as_millisecond());
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1)) * 1000;
    match renewed {
        Some(at) if at.saturating_add(duration_ms) > now.as_millisecond() => {
            LeaseAction::Wait { holder }
        }
        _ => LeaseAction::TakeOver,
    }
}

/// The Lease to write for `action` (not [`LeaseAction::Wait`]): `read` with us as holder,
/// renewed `now`, its `resourceVersion` kept as the write's precondition.
pub fn claimed(
    read: Option<&Lease>,
    action: &LeaseAction,
    config: &LeaseConfig,
    namespace: &str,
    now: Timestamp,
) -> Lease {
    let mut lease = read.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_else(LeaseSpec::default);
    if *action != LeaseAction::Renew {
        spec.acquire_time = Some(MicroTime(now));
        if *action == LeaseAction::TakeOver {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        } else {
            spec.lease_transitions = Some(0);
        }
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(i32::try_from(config.duration.as_secs()).unwrap_or(15));
    spec.renew_time = Some(MicroTime(now));
    lease.spec = Some(spec);
    lease
}

/// One replica's side of the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    config: LeaseConfig,
}

impl LeaseLock {
    /// The Lease `config.name` in `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str, config: LeaseConfig) -> LeaseLock {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            config,
        }
    }

    /// One round: acquires or renews the Lease at `now`. `Ok(true)`: we hold it until
    /// `now + duration`; `Ok(false)`: someone else does (or won a race).
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let read = self.api.get_opt(&self.config.name).await?;
        let action = decide(read.as_ref(), &self.config.identity, now);
        if let LeaseAction::Wait { holder } = &action {
            tracing::debug!(%holder, lease = %self.config.name, "the Lease is held by another replica");
            return Ok(false);
        }
        let lease = claimed(read.as_ref(), &action, &self.config, &self.namespace, now);
        let written = match action {
            LeaseAction::Create => self.api.create(&PostParams::default(), &lease).await,
            _ => {
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(e) if api_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire(Timestamp::now()).await {
                Ok(true) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.name, "leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read or write the Lease"),
            }
            tokio::time::sleep(self.config.retry_every).await;
        }
    }

    /// Renews the Lease until it is lost: returns when another replica took it, or when no
    /// renewal succeeded for [`LeaseConfig::duration`].
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            match self.try_acquire(Timestamp::now()).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.config.name, "another replica took the Lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the Lease");
                    if last_renewal.elapsed() >= self.config.duration {
                        tracing::error!(lease = %self.config.name, "the Lease expired");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up if we hold it, so a successor need not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What a failed leader-label write means, for the warning: the API server's answer says
/// which of the usual causes it is.
pub fn label_failure(e: &kube::Error, pod: &str) -> String {
    match api_code(e) {
        Some(403) => "the operator may not patch pods (RBAC needs `patch` on pods)".into(),
        Some(404) => format!(
            "there is no pod `{pod}` in the operator's namespace (is POD_NAME/POD_NAMESPACE, \
             from the downward API, this replica's own pod?)"
        ),
        Some(code) => format!("the API server answered {code}"),
        None => "the API server could not be reached".into(),
    }
}

/// The label the leader sets on its own pod. The aggregator Service selects it (with the app
/// labels), so runners report to the replica that holds the runs.
pub const LEADER_LABEL: &str = "volley.dev/leader";
/// [`LEADER_LABEL`]'s value on the leader's pod; the other replicas' pods do not have the label.
pub const LEADER_LABEL_VALUE: &str = "true";
/// Longest wait between two attempts to write the leader label.
pub const LABEL_RETRY_MAX: Duration = Duration::from_secs(30);

/// The JSON merge patch that sets [`LEADER_LABEL`] (`leading`) or removes it (`null`).
pub fn leader_label_patch(leading: bool) -> Value {
    let value = if leading {
        Value::from(LEADER_LABEL_VALUE)
    } else {
        Value::Null
    };
    json!({"metadata": {"labels": {LEADER_LABEL: value}}})
}

/// This replica's own pod (`POD_NAME` in `POD_NAMESPACE`), labelled while it leads.
#[derive(Clone)]
pub struct OwnPod {
    api: Api<Pod>,
    name: String,
}

impl OwnPod {
    /// The pod `name` in `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> OwnPod {
        OwnPod {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    /// Sets (`leading`) or removes the leader label: one JSON merge patch, which leaves the
    /// pod's other labels alone. Removing it from a pod that does not exist is no error.
    pub async fn label(&self, leading: bool) -> Result<(), kube::Error> {
        let patch = Patch::Merge(leader_label_patch(leading));
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if !leading && api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Keeps the leader label of this replica's pod as wanted, from a task of its own. That task is
/// the label's only writer, so a late retry of an old wish never overwrites a newer one. A
/// failed patch is logged and retried, after [`LeaseConfig::retry_every`] doubling up to
/// [`LABEL_RETRY_MAX`], for as long as it takes; it never stops the elector.
pub struct LeaderLabel {
    /// The wish: its generation (counts changes) and whether the label should be set.
    want: watch::Sender<(u64, bool)>,
    /// The generation of the last wish written.
    applied: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderLabel {
    /// Starts keeping `pod`, removing the label first.
    pub fn start(pod: OwnPod, retry_every: Duration) -> LeaderLabel {
        let (want, want_rx) = watch::channel((1, false));
        let (applied_tx, applied) = watch::channel(0);
        let task = tokio::spawn(keep_label(pod, want_rx, applied_tx, retry_every));
        LeaderLabel {
            want,
            applied,
            task,
        }
    }

    /// Wants the label set (`leading`) or removed. Returns at once; see [`LeaderLabel::settled`].
    pub fn want(&self, leading: bool) {
        self.want.send_if_modified(|(generation, wanted)| {
            if *wanted == leading {
                return false;
            }
            *generation = generation.saturating_add(1);
            *wanted = leading;
            true
        });
    }

    /// Waits up to `within` for the current wish to be written. `false`: it is not yet (the
    /// keeper goes on trying).
    pub async fn settled(&self, within: Duration) -> bool {
        let target = self.want.borrow().0;
        let mut applied = self.applied.clone();
        matches!(
            tokio::time::timeout(within, applied.wait_for(|g| *g >= target)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for LeaderLabel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_label(
    pod: OwnPod,
    mut want: watch::Receiver<(u64, bool)>,
    applied: watch::Sender<u64>,
    retry_every: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        let (generation, leading) = *want.borrow_and_update();
        match pod.label(leading).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(pod = %pod.name, leading, "wrote the leader label after {failures} failed attempts");
                }
                failures = 0;
                applied.send_replace(generation);
                if want.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay =
                    doubling_backoff(retry_every, failures.saturating_sub(1), LABEL_RETRY_MAX);
                tracing::warn!(
                    error = %e,
                    pod = %pod.name,
                    leading,
                    attempt = failures,
                    retry_in = ?delay,
                    "cannot write this replica's leader label: {}",
                    label_failure(&e, &pod.name)
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    changed = want.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Resolves when the leader's work must stop: on shutdown, or when the Lease is lost.
pub type StopWork = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// How [`Elector::run`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term<T> {
    /// Stopped before this replica led.
    NeverLed,
    /// This replica led; its work returned `result`.
    Led {
        /// Whether the Lease was lost (rather than the work stopped on shutdown).
        lost: bool,
        /// What the work returned.
        result: T,
    },
}

/// One replica's part in the election: the Lease, and the leader label on its own pod.
pub struct Elector {
    lock: LeaseLock,
    label: Option<Arc<LeaderLabel>>,
}

impl Elector {
    /// Campaigns with `lock`, labelling `pod` while leading (no labelling without a pod).
    /// Starts removing the label from `pod` at once.
    pub fn new(lock: LeaseLock, pod: Option<OwnPod>) -> Elector {
        let label = pod.map(|p| Arc::new(LeaderLabel::start(p, lock.config.retry_every)));
        Elector { lock, label }
    }

    /// One term, until `stop` turns true or the Lease is lost:
    ///
    /// 1. waits (up to [`LeaseConfig::duration`]) for the leader label to be removed from this
    ///    pod, then campaigns until it holds the Lease;
    /// 2. sets the label, and runs `work` with a [`StopWork`] that resolves on `stop` or when
    ///    the Lease is lost (then the label is removed at once, before `work` has returned);
    /// 3. when `work` returns: removes the label (waiting up to [`LeaseConfig::renew_every`])
    ///    and then releases the Lease.
    pub async fn run<T, W, F>(&self, mut stop: watch::Receiver<bool>, work: W) -> Term<T>
    where
        W: FnOnce(StopWork) -> F,
        F: Future<Output = T>,
    {
        let campaign = async {
            if let Some(label) = &self.label
                && !label.settled(self.lock.config.duration).await
            {
                tracing::warn!(
                    "campaigning although this pod may still carry the leader label; still trying to remove it"
                );
            }
            self.lock.acquire().await;
        };
        let leading = tokio::select! {
            () = campaign => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        if !leading {
            if let Some(label) = &self.label {
                label.settled(self.lock.config.renew_every).await;
            }
            return Term::NeverLed;
        }
        if let Some(label) = &self.label {
            label.want(true);
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let holder = self.lock.clone();
        let label = self.label.clone();
        let hold = tokio::spawn(async move {
            holder.hold().await;
            if let Some(label) = label {
                label.want(false);
            }
            let _ = lost_tx.send(true);
        });
        let mut lost = lost_rx.clone();
        let stop_work: StopWork = Box::pin(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = lost.wait_for(|l| *l) => {}
            }
        });
        let result = work(stop_work).await;
        let lost = *lost_rx.borrow();
        hold.abort();
        if let Some(label) = &self.label {
            label.want(false);
            if !label.settled(self.lock.config.renew_every).await {
                tracing::warn!(
                    "cannot remove the leader label from this pod; the aggregator Service may send runners here until the pod is gone"
                );
            }
        }
        if let Err(e) = self.lock.release().await {
            tracing::warn!(error = %e, "cannot release the Lease");
        }
        Term::Led { lost, result }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
