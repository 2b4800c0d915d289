//! The kube-rs controller: one [`reconcile`] per LoadTest that gathers the facts
//! ([`Observed`]: the run's pods by label, its Secret, the aggregator's progress), asks
//! [`phase::next_step`] what to do, and carries the [`Decision`] out:
//!
//! 1. create the Secret (an existing one is kept: 409 is fine) and register the run with the
//!    aggregator;
//!
//!    Only objects the operator created for this LoadTest are used, replaced or deleted
//!    ([`RunRef::ownership`]): a Secret `{loadtest}-run-token` or ConfigMap `{loadtest}-report`
//!    someone else created first ends the run in Error with reason [`NAME_TAKEN`], naming it,
//!    before any pod exists; one left by an earlier LoadTest of the same name is waited for
//!    (the garbage collector deletes it);
//! 2. create the missing runner pods (409 AlreadyExists is fine; a pod the API server refuses,
//!    e.g. 403 from PodSecurity or a quota, or 422, ends the run in Error with the API server's
//!    message);
//! 3. at the end of a run, write its full report to the ConfigMap `{loadtest}-report`
//!    ([`crate::report`]; created, or replaced when it exists and is the run's own) and set
//!    `status.reportRef`;
//!    then write the status (JSON merge patch of the status subresource);
//! 4. record events, tell the aggregator to stop or forget runs;
//! 5. delete pods and the Secret when cleanup is due (or a new run starts: they were the
//!    finished run's), and the report ConfigMaps of earlier runs that left `status.history`.
//!
//! Every name above is the current run's ([`RunRef`]: the run number in `status.run`): a
//! re-run's pods are `{loadtest}-runner-{i}-r{n}`, its Secret `{loadtest}-run-token-r{n}` and
//! its report `{loadtest}-report-r{n}`, so it never meets the objects of the run before.
//!
//! A LoadTest that is deleted comes back once more as a reconcile of an object no longer in the
//! store (a requeue, or its pods going): [`loadtest_gone`] stops its run and lets it go, with no
//! warning.
//!
//! Any other API error is returned, and [`error_policy`] requeues with exponential backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller, Error as ControllerError};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use volley_crds::status::{Phase, ReportRef};
use volley_crds::{LoadTest, LoadTestStatus};

use crate::config::{Config, RunnerDefaults, Timing};
use crate::lock;
use crate::names::{MANAGED_BY, MANAGED_BY_LABEL, MissingMetadata, Ownership, RunRef};
use crate::observed::RunnerPod;
use crate::phase::{self, Decision, EventKind, EventNote, Observed};
use crate::pods::runner_pod;
use crate::registry::{
    BaselineSource, RunRegistration, RunRegistry, baseline_from_config_map, baseline_source,
    prometheus_credentials, prometheus_secret_refs, schedule_baseline, schedule_selector,
};
use crate::report::final_report;
use crate::secret::{Token, run_secret};
use crate::status_patch::status_patch;
use crate::telemetry::OperatorMetrics;
use volley_core::compare::Baseline;

/// Name the operator records events under.
pub const CONTROLLER_NAME: &str = "volley-operator";
/// Shortest wait after a failed reconcile.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait after repeated failed reconciles.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Reason of a run that cannot start because its Secret's or report ConfigMap's name is taken
/// by an object the operator did not create for it.
pub const NAME_TAKEN: &str = "NameTaken";
/// How often to look again for an object an earlier LoadTest of the same name left behind.
const EARLIER_OBJECT_RECHECK: Duration = Duration::from_secs(5);

/// Why a reconcile failed; it is retried after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The LoadTest lacks metadata the operator needs.
    #[error(transparent)]
    Metadata(#[from] MissingMetadata),
    /// A call to the API server failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The run's Secret exists but holds no token.
    #[error("the run's Secret {0} holds no token; delete it so the operator creates a new one")]
    NoToken(String),
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    registry: Arc<dyn RunRegistry>,
    defaults: RunnerDefaults,
    timing: Timing,
    recorder: Recorder,
    clock: fn() -> Timestamp,
    /// When the status of each run was last written by this process.
    status_writes: Mutex<HashMap<String, Timestamp>>,
    /// Consecutive failed reconciles per LoadTest, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Where reconcile counts and durations go.
    metrics: Option<Arc<OperatorMetrics>>,
}

impl Context {
    /// A context over `client` and the aggregator `registry`.
    pub fn new(
        client: Client,
        registry: Arc<dyn RunRegistry>,
        defaults: RunnerDefaults,
        timing: Timing,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            defaults,
            timing,
            clock: Timestamp::now,
            status_writes: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            metrics: None,
        }
    }

    /// The same context counting reconciles in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<OperatorMetrics>) -> Context {
        self.metrics = Some(metrics);
        self
    }

    /// The same context with another clock (for tests).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Context {
        self.clock = clock;
        self
    }
}

/// The HTTP status code of an error the API server returned; `None` for any other error.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// `base` doubled once per earlier failed attempt (`retries`, counting at most 16), at most
/// `max`.
pub(crate) fn doubling_backoff(base: Duration, retries: u32, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(retries.min(16)))
        .min(max)
}

fn object_key(lt: &LoadTest) -> String {
    format!("{}/{}", lt.namespace().unwrap_or_default(), lt.name_any())
}

/// Records `notes` as Events of the object `reference` points to (a LoadTest or a
/// LoadTestSchedule). An Event that cannot be written is logged and skipped: events inform
/// `kubectl describe`, they never decide anything.
pub(crate) async fn publish_events(
    recorder: &Recorder,
    reference: &ObjectReference,
    notes: &[EventNote],
) {
    for note in notes {
        let event = Event {
            type_: match note.kind {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: note.reason.clone(),
            note: Some(note.note.clone()),
            action: note.action.clone(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, reference).await {
            let object = reference.name.as_deref().unwrap_or_default();
            tracing::warn!(object, reason = %note.reason, error = %e, "could not record an event");
        }
    }
}

/// Brings one LoadTest one step further, counting the reconcile in the metrics.
pub async fn reconcile(lt: Arc<LoadTest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let began = std::time::Instant::now();
    let result = reconcile_once(lt, ctx.clone()).await;
    if let Some(m) = &ctx.metrics {
        m.reconciled(result.is_ok(), began.elapsed());
    }
    result
}

async fn reconcile_once(lt: Arc<LoadTest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let run = RunRef::of(&lt)?;
    let progress = ctx.registry.progress(&run.run_id);
    if progress.is_none() && !phase::needs_observation(&lt) {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&run.selector()))
        .await?;
    // A Secret of that name the operator did not create for this run is not the run's: never
    // read, deleted or counted as existing.
    let (secret, other_secret) = match secrets.get_opt(&run.secret_name).await? {
        Some(s) if run.ownership(&s.metadata) != Ownership::Ours => (None, Some(s)),
        found => (found, None),
    };
    let facts = Observed {
        loadtest: &lt,
        now: (ctx.clock)(),
        pods: listed.items.iter().map(RunnerPod::from_pod).collect(),
        secret_exists: secret.is_some(),
        progress,
        last_status_write: lock(&ctx.status_writes).get(&run.run_id).copied(),
        timing: ctx.timing,
        defaults: ctx.defaults.clone(),
    };
    let decision = phase::next_step(&facts);
    let action = match other_secret {
        // Only a run that wants its Secret cares; cleanup ignores the stranger.
        Some(other) if decision.create_secret => {
            name_taken(&facts, &run, "Secret", &other.metadata, &ctx).await?
        }
        _ => apply(&facts, &run, decision, secret.as_ref(), &ctx).await?,
    };
    lock(&ctx.failures).remove(&object_key(&lt));
    Ok(action)
}

/// Carries `d` out.
async fn apply(
    facts: &Observed<'_>,
    run: &RunRef,
    d: Decision,
    secret: Option<&Secret>,
    ctx: &Context,
) -> Result<Action, Error> {
    let lt = facts.loadtest;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let mut token = secret.and_then(Token::from_secret);
    if d.create_secret {
        // The run's report will need its ConfigMap's name: find out now, before any load,
        // whether someone else holds it.
        let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &run.namespace);
        if let Some(cm) = configmaps.get_opt(&run.report_name).await?
            && run.ownership(&cm.metadata) != Ownership::Ours
        {
            return name_taken(facts, run, "ConfigMap", &cm.metadata, ctx).await;
        }
        let fresh = Token::generate();
        match secrets
            .create(
                &PostParams::default(),
                &run_secret(run, &fresh, lt.spec.runners.parallelism),
            )
            .await
        {
            Ok(_) => token = Some(fresh),
            Err(e) if api_code(&e) == Some(409) => {
                // Created since this reconcile read it: by an earlier attempt, or by someone
                // else.
                let existing = secrets.get_opt(&run.secret_name).await?;
                if let Some(other) = &existing
                    && run.ownership(&other.metadata) != Ownership::Ours
                {
                    return name_taken(facts, run, "Secret", &other.metadata, ctx).await;
                }
                token = existing.as_ref().and_then(Token::from_secret);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if d.register {
        let token = token.ok_or_else(|| Error::NoToken(run.secret_name.clone()))?;
        // The baseline is read once, before the aggregator first knows the run; registering
        // a known run again keeps its state, baseline included.
        let baseline = if ctx.registry.progress(&run.run_id).is_some() {
            Baseline::default()
        } else {
            // A run of a schedule without a baseline of its own compares with the schedule's
            // newest passed run (each run of a schedule is a LoadTest of its own).
            let source = match (baseline_source(lt), schedule_selector(lt)) {
                (BaselineSource::None, Some(selector)) => {
                    let loadtests: Api<LoadTest> =
                        Api::namespaced(ctx.client.clone(), &run.namespace);
                    let runs = loadtests
                        .list(&ListParams::default().labels(&selector))
                        .await?;
                    schedule_baseline(lt, &runs.items)
                }
                (source, _) => source,
            };
            match source {
                BaselineSource::ConfigMap { name, key } => {
                    let configmaps: Api<ConfigMap> =
                        Api::namespaced(ctx.client.clone(), &run.namespace);
                    let cm = configmaps.get_opt(&name).await?;
                    baseline_from_config_map(&name, &key, cm.as_ref())
                }
                BaselineSource::None => Baseline::default(),
            }
        };
        // Prometheus credentials likewise: read once, before the run; a Secret that is
        // missing fails the queries (and only the thresholds on them), not the run.
        let mut prometheus_secrets = std::collections::BTreeMap::new();
        if ctx.registry.progress(&run.run_id).is_none() {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &run.namespace);
            for r in prometheus_secret_refs(&lt.spec) {
                if !prometheus_secrets.contains_key(&r.name)
                    && let Some(secret) = secrets.get_opt(&r.name).await?
                {
                    prometheus_secrets.insert(r.name.clone(), secret);
                }
            }
        }
        let prometheus_credentials = prometheus_credentials(&lt.spec, &prometheus_secrets);
        ctx.registry.register(
            RunRegistration::for_run(lt, run, token)
                .with_start_timeout(
                    ctx.timing.runner_start_timeout,
                    phase::run_began(lt),
                    facts.now,
                )
                .with_baseline(baseline)
                .with_prometheus_credentials(prometheus_credentials),
        );
    }
    for index in &d.create_pods {
        let pod = runner_pod(lt, *index, &ctx.defaults, run);
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(409) => {}
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
                let message = format!(
                    "the API server refused runner pod {}: {}",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    status.message
                );
                let failed = phase::fail_now(facts, Phase::Error, "PodRejected", &message);
                return finish_applying(facts, run, failed, ctx).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    finish_applying(facts, run, d, ctx).await
}

/// A `kind` object named as the run's own exists but is not ([`RunRef::ownership`]): one of an
/// earlier LoadTest of the same name is waited for; anyone else's ends the run in Error with
/// reason [`NAME_TAKEN`]. Either way it is neither used, replaced nor deleted.
async fn name_taken(
    facts: &Observed<'_>,
    run: &RunRef,
    kind: &str,
    other: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = other.name.as_deref().unwrap_or_default();
    if run.ownership(other) == Ownership::EarlierLoadTest {
        tracing::info!(
            namespace = %run.namespace,
            loadtest = %run.loadtest,
            kind,
            name,
            "waiting for the garbage collector to delete what an earlier LoadTest of this name left"
        );
        return Ok(Action::requeue(EARLIER_OBJECT_RECHECK));
    }
    let message = format!(
        "{kind} {}/{name} already exists and was not created by the operator for this \
         LoadTest, so the run cannot use that name; the operator neither uses, replaces nor \
         deletes it: delete it, or give the LoadTest another name",
        run.namespace
    );
    let failed = phase::fail_now(facts, Phase::Error, NAME_TAKEN, &message);
    finish_applying(facts, run, failed, ctx).await
}

/// Status, events, aggregator calls and deletes of `d`.
async fn finish_applying(
    facts: &Observed<'_>,
    run: &RunRef,
    mut d: Decision,
    ctx: &Context,
) -> Result<Action, Error> {
    let lt = facts.loadtest;
    let mut status = d.status.take();
    if let Some(status) = status.as_mut()
        && status.phase.is_some_and(Phase::is_finished)
        && let Some(name) = write_report(run, status, ctx).await?
    {
        status.report_ref = Some(ReportRef {
            config_map_name: name,
        });
    }
    if let Some(status) = &status {
        let api: Api<LoadTest> = Api::namespaced(ctx.client.clone(), &run.namespace);
        let patch = status_patch(lt.status.as_ref(), status);
        api.patch_status(
            &run.loadtest,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        lock(&ctx.status_writes).insert(run.run_id.clone(), facts.now);
        if let Some(m) = &ctx.metrics {
            m.status_written(
                &run.namespace,
                &run.loadtest,
                lt.status.as_ref().and_then(|s| s.phase),
                status.phase,
            );
        }
        tracing::info!(
            namespace = %run.namespace,
            loadtest = %run.loadtest,
            phase = ?status.phase,
            reason = status.reason.as_deref().unwrap_or_default(),
            "status written"
        );
    }
    publish_events(&ctx.recorder, &lt.object_ref(&()), &d.events).await;
    if let Some(reason) = &d.abort {
        ctx.registry.abort(&run.run_id, reason);
    }
    for (index, reason) in &d.runner_failures {
        ctx.registry.runner_failed(&run.run_id, *index, reason);
    }
    if d.forget_run {
        ctx.registry.forget(&run.run_id);
        lock(&ctx.status_writes).remove(&run.run_id);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    for name in &d.delete_pods {
        match pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if d.delete_secret {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &run.namespace);
        match secrets
            .delete(&run.secret_name, &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !d.delete_reports.is_empty() {
        let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &run.namespace);
        for name in &d.delete_reports {
            delete_earlier_report(&configmaps, run, name).await?;
        }
    }
    Ok(match d.requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Deletes the report ConfigMap `name` of an earlier run that left the history, when it is one
/// the operator made for this LoadTest ([`RunRef::owns_earlier_run`]), at the UID read (so a
/// ConfigMap created under that name since is not deleted). Anything else of that name is
/// left alone; one already gone is fine.
async fn delete_earlier_report(
    configmaps: &Api<ConfigMap>,
    run: &RunRef,
    name: &str,
) -> Result<(), Error> {
    let Some(cm) = configmaps.get_opt(name).await? else {
        return Ok(());
    };
    if !run.owns_earlier_run(&cm.metadata) {
        tracing::warn!(
            namespace = %run.namespace,
            loadtest = %run.loadtest,
            configmap = %name,
            "a report that left the history is not the operator's; left alone"
        );
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: cm.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match configmaps.delete(name, &params).await {
        Ok(_) => {}
        // Gone, or replaced by another object since it was read: not ours to delete.
        Err(e) if matches!(api_code(&e), Some(404 | 409)) => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        namespace = %run.namespace,
        loadtest = %run.loadtest,
        configmap = %name,
        "deleted the report of a run that left the history"
    );
    Ok(())
}

/// Writes the report of the finished run to its ConfigMap (created, or replaced when it
/// exists and is the run's own, at the version read) and returns the ConfigMap's name; `None`
/// when the aggregator has no report (e.g. the run never started), the name is taken by a
/// ConfigMap the operator did not create for this run (left alone), or the API server refuses
/// the ConfigMap (the status is written anyway, without `reportRef`). Transient API errors are
/// returned, so the reconcile is retried.
async fn write_report(
    run: &RunRef,
    status: &LoadTestStatus,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let Some(summary) = ctx.registry.report(&run.run_id) else {
        return Ok(None);
    };
    let mut cm = final_report(run, summary, status);
    let name = cm.metadata.name.clone().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let written = match api.create(&PostParams::default(), &cm).await {
        Err(e) if api_code(&e) == Some(409) => match api.get_opt(&name).await? {
            Some(existing) if run.ownership(&existing.metadata) == Ownership::Ours => {
                // Replaced only at the version checked: a 409 means it changed since.
                cm.metadata.resource_version = existing.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &cm).await
            }
            Some(_) => {
                tracing::warn!(
                    namespace = %run.namespace,
                    loadtest = %run.loadtest,
                    configmap = %name,
                    "the report's ConfigMap name is taken by one the operator did not create for this run; left alone, the status is written without the report"
                );
                return Ok(None);
            }
            // Deleted since: the next attempt creates it.
            None => Err(e),
        },
        other => other,
    };
    match written {
        Ok(_) => Ok(Some(name)),
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 413 | 422) => {
            tracing::warn!(
                namespace = %run.namespace,
                loadtest = %run.loadtest,
                error = %status.message,
                "the API server refused the report ConfigMap; the status is written without it"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// After a failed reconcile: retry after 1 s, doubling with every further failure of the same
/// LoadTest up to 5 minutes.
pub fn error_policy(lt: Arc<LoadTest>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&lt);
    let mut failures = lock(&ctx.failures);
    let n = failures.entry(key.clone()).or_insert(0);
    let delay = doubling_backoff(MIN_BACKOFF, *n, MAX_BACKOFF);
    *n = n.saturating_add(1);
    tracing::warn!(loadtest = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until `shutdown` resolves (then in-flight reconciles finish): watches
/// LoadTests (in `config.namespace` or all namespaces) and the runner pods the operator
/// created.
pub async fn run(
    client: Client,
    config: &Config,
    registry: Arc<dyn RunRegistry>,
    metrics: Arc<OperatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (loadtests, pods): (Api<LoadTest>, Api<Pod>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    loadtests
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list LoadTests ({e}); is the CRD installed (`kubectl apply --server-side -f charts/volley/crds/`) and the operator's RBAC applied?"
            )
        })?;
    let ctx = Arc::new(
        Context::new(
            client,
            registry,
            config.runner_defaults(),
            config.timing(),
            config.identity.clone(),
        )
        .with_metrics(metrics),
    );
    Controller::new(loadtests, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((object, _)) => tracing::debug!(loadtest = %object.name, "reconciled"),
                    // A LoadTest that is no longer there: it was deleted (a requeue or its pods
                    // being deleted brought it back). Not an error: its run is let go.
                    Err(ControllerError::ObjectNotFound(object)) => loadtest_gone(
                        &ctx,
                        object.namespace.as_deref().unwrap_or_default(),
                        &object.name,
                        object.extra.uid.as_deref(),
                    ),
                    Err(e) => tracing::warn!(error = %e, "reconcile error"),
                }
            }
        })
        .await;
    Ok(())
}

/// The LoadTest `namespace/name` (uid `uid` when known) was deleted: its run is stopped (its
/// runners are told `stop` at their next report), its gauges leave `/metrics` at once, the
/// aggregator lets the run go once its runners acknowledged, and this controller forgets what
/// it kept about it. Its pods and Secret go with it (owner references).
pub fn loadtest_gone(ctx: &Context, namespace: &str, name: &str, uid: Option<&str>) {
    let runs = ctx.registry.loadtest_gone(namespace, name, uid);
    let mut writes = lock(&ctx.status_writes);
    for run in &runs {
        writes.remove(run);
    }
    drop(writes);
    lock(&ctx.failures).remove(&format!("{namespace}/{name}"));
    if runs.is_empty() {
        tracing::debug!(%namespace, loadtest = %name, "LoadTest gone; it had no run here");
    } else {
        tracing::info!(%namespace, loadtest = %name, runs = ?runs, "LoadTest deleted: its run is stopped and let go");
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
