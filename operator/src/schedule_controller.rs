//! The kube-rs controller of `LoadTestSchedule`s: one [`reconcile`] per schedule lists the
//! LoadTests it owns (label `volley.dev/schedule` and a controller ownerReference with the
//! schedule's UID), asks [`schedule::decide`] what to do, and carries it out:
//!
//! 1. delete runs (the running ones under `Replace`, finished ones beyond the history
//!    limits; 404 is fine);
//! 2. create the due run from the template, owned by the schedule (`controller: true`, so
//!    deleting the schedule deletes its runs and their reports); 409 AlreadyExists is fine:
//!    the name is the scheduled time's, so it is that run;
//! 3. write the status (JSON merge patch of the status subresource) when it changed;
//! 4. record events; requeue at the next scheduled time.
//!
//! It runs beside the LoadTest controller, behind the same leader election ([`crate::serve`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use volley_crds::LoadTest;
use volley_crds::schedule::{LoadTestSchedule, RunSummary};

use crate::config::{Config, RunnerDefaults};
use crate::controller::{
    CONTROLLER_NAME, MAX_BACKOFF, MIN_BACKOFF, api_code, doubling_backoff, publish_events,
};
use crate::lock;
use crate::names::{MissingMetadata, label_value};
use crate::schedule::{
    self, Decision, Facts, NewRun, OwnedRun, SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION,
};

/// Why a reconcile failed; it is retried after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schedule lacks metadata the operator needs.
    #[error(transparent)]
    Metadata(#[from] MissingMetadata),
    /// A call to the API server failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
}

/// What every reconcile of a schedule shares.
pub struct Context {
    client: Client,
    defaults: RunnerDefaults,
    recorder: Recorder,
    clock: fn() -> Timestamp,
    /// Consecutive failed reconciles per schedule, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context over `client`; `defaults` holds the administrator's limits the template must
    /// pass.
    pub fn new(client: Client, defaults: RunnerDefaults, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            defaults,
            clock: Timestamp::now,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The same context with another clock (for tests).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Context {
        self.clock = clock;
        self
    }
}

fn object_key(s: &LoadTestSchedule) -> String {
    format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any())
}

/// Brings one schedule up to date.
pub async fn reconcile(lts: Arc<LoadTestSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let meta = &lts.metadata;
    let name = meta.name.clone().ok_or(MissingMetadata("name"))?;
    let namespace = meta.namespace.clone().ok_or(MissingMetadata("namespace"))?;
    let uid = meta.uid.clone().ok_or(MissingMetadata("uid"))?;
    let now = (ctx.clock)();
    let loadtests: Api<LoadTest> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = loadtests
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={}", label_value(&name))))
        .await?;
    // Only runs this schedule (by UID) created: a LoadTest someone labelled alike, or one of an
    // earlier schedule of the same name, is neither counted nor deleted.
    let runs: Vec<OwnedRun> = listed
        .items
        .iter()
        .filter(|lt| {
            lt.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .map(|lt| owned_run(lt, now))
        .collect();
    let facts = Facts {
        name: &name,
        now,
        spec: &lts.spec,
        generation: meta.generation,
        created: meta.creation_timestamp.as_ref().map_or(now, |t| t.0),
        status: lts.status.clone().unwrap_or_default(),
        runs,
        schedule: schedule::parse(&lts.spec, &ctx.defaults),
    };
    let d = schedule::decide(&facts);
    let requeue = d.requeue;
    apply(&lts, &loadtests, d, &ctx).await?;
    lock(&ctx.failures).remove(&object_key(&lts));
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// A run as [`schedule::decide`] sees it.
fn owned_run(lt: &LoadTest, now: Timestamp) -> OwnedRun {
    let scheduled = lt
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_AT_ANNOTATION))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .or_else(|| lt.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let status = lt.status.clone().unwrap_or_default();
    let metrics = status.metrics.as_ref();
    let name = lt.name_any();
    OwnedRun {
        summary: RunSummary {
            name: name.clone(),
            schedule_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                scheduled,
            )),
            phase: status.phase,
            verdict: status.verdict,
            p95_ms: metrics.map(|m| m.latency_ms.p95),
            rps: metrics.map(|m| m.rps),
            error_rate: metrics.map(|m| m.error_rate),
        },
        name,
        schedule_time: scheduled,
        phase: status.phase,
    }
}

/// The LoadTest of run `new`: the template, owned by the schedule, labelled with its name and
/// annotated with the scheduled time.
pub fn run_loadtest(lts: &LoadTestSchedule, new: &NewRun) -> Result<LoadTest, MissingMetadata> {
    let mut owner = lts
        .controller_owner_ref(&())
        .ok_or(MissingMetadata("uid"))?;
    // As the LoadTest controller's objects: a foreground delete of the schedule waits for its
    // runs (and so their reports).
    owner.block_owner_deletion = Some(true);
    let template = &lts.spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.insert(SCHEDULE_LABEL.to_string(), label_value(&lts.name_any()));
    let mut annotations = template.metadata.annotations.clone();
    annotations.insert(
        SCHEDULED_AT_ANNOTATION.to_string(),
        new.schedule_time.to_string(),
    );
    Ok(LoadTest {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: lts.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

/// Carries `d` out.
async fn apply(
    lts: &LoadTestSchedule,
    loadtests: &Api<LoadTest>,
    d: Decision,
    ctx: &Context,
) -> Result<(), Error> {
    for name in &d.delete {
        match loadtests.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(new) = &d.create {
        match loadtests
            .create(&PostParams::default(), &run_loadtest(lts, new)?)
            .await
        {
            Ok(_) => {}
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if lts.status.as_ref() != Some(&d.status) {
        let mut status = serde_json::to_value(&d.status).unwrap_or_default();
        // A merge patch keeps what it leaves out: an empty list must be sent to clear one.
        if let Some(obj) = status.as_object_mut() {
            obj.entry("active").or_insert_with(|| serde_json::json!([]));
        }
        let api: Api<LoadTestSchedule> =
            Api::namespaced(ctx.client.clone(), &lts.namespace().unwrap_or_default());
        api.patch_status(
            &lts.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({ "status": status })),
        )
        .await?;
    }
    publish_events(&ctx.recorder, &lts.object_ref(&()), &d.events).await;
    if let Some(new) = &d.create {
        tracing::info!(
            namespace = lts.namespace().unwrap_or_default(),
            schedule = %lts.name_any(),
            run = %new.name,
            scheduled = %new.schedule_time,
            "run created"
        );
    }
    Ok(())
}

/// After a failed reconcile: retry after 1 s, doubling with every further failure of the same
/// schedule up to 5 minutes.
pub fn error_policy(lts: Arc<LoadTestSchedule>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = object_key(&lts);
    let mut failures = lock(&ctx.failures);
    let n = failures.entry(key.clone()).or_insert(0);
    let delay = doubling_backoff(MIN_BACKOFF, *n, MAX_BACKOFF);
    *n = n.saturating_add(1);
    tracing::warn!(schedule = %key, error = %error, retry_in = ?delay, "schedule reconcile failed");
    Action::requeue(delay)
}

/// How often to look again for the LoadTestSchedule CRD (or the right to list schedules) when
/// it is missing.
const CRD_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs the schedule controller until `shutdown` resolves: watches LoadTestSchedules (in
/// `config.namespace` or all namespaces) and the LoadTests they own.
///
/// While schedules cannot be listed (an upgrade that has not applied the new CRD yet, or RBAC
/// without the schedule rules) it says so and looks again every 30 seconds: LoadTests keep
/// being served meanwhile.
pub async fn run(
    client: Client,
    config: &Config,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let (schedules, loadtests): (Api<LoadTestSchedule>, Api<LoadTest>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let mut shutdown = Box::pin(shutdown);
    while let Err(e) = schedules.list(&ListParams::default().limit(1)).await {
        tracing::error!(
            error = %e,
            "cannot list LoadTestSchedules, so none is run; is the CRD installed (`kubectl apply --server-side -f charts/volley/crds/`) and the operator's RBAC applied? Looking again in 30 s"
        );
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(CRD_RECHECK) => {}
        }
    }
    let ctx = Arc::new(Context::new(
        client,
        config.runner_defaults(),
        config.identity.clone(),
    ));
    Controller::new(schedules, watcher::Config::default())
        .owns(loadtests, watcher::Config::default().labels(SCHEDULE_LABEL))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(schedule = %object.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "schedule reconcile error"),
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
#[path = "schedule_controller_tests.rs"]
mod tests;
