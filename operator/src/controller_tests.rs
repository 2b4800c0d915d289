//! The controller's wiring against kube's mock API service (`tower_test::mock::pair`, as in
//! kube-rs's controller-rs fixtures): every HTTP request a reconcile makes is checked in order
//! (method, path, body fields), and answered like an API server would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use serde_json::{Value, json};
use volley_crds::LoadTest;
use volley_crds::status::Phase;

use super::{Context, Error, error_policy, reconcile};
use crate::config::{RunnerDefaults, Timing};
use crate::fixtures::{self, UID};
use crate::observed::RunProgress;
use crate::registry::{RunRegistration, RunRegistry};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// An aggregator that remembers what it was told.
#[derive(Default)]
struct FakeRegistry {
    progress: Mutex<Option<RunProgress>>,
    calls: Mutex<Vec<String>>,
    registered: Mutex<Vec<RunRegistration>>,
    report: Mutex<Option<Value>>,
}

impl RunRegistry for FakeRegistry {
    fn progress(&self, _run: &str) -> Option<RunProgress> {
        self.progress.lock().unwrap().clone()
    }
    fn register(&self, registration: RunRegistration) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("register {}", registration.run_id));
        self.registered.lock().unwrap().push(registration);
    }
    fn abort(&self, run: &str, reason: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("abort {run}: {reason}"));
    }
    fn runner_failed(&self, run: &str, index: u32, reason: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("runner_failed {run} {index}: {reason}"));
    }
    fn forget(&self, run: &str) {
        self.calls.lock().unwrap().push(format!("forget {run}"));
    }
    fn loadtest_gone(&self, namespace: &str, loadtest: &str, uid: Option<&str>) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("gone {namespace}/{loadtest} {uid:?}"));
        uid.map(str::to_string).into_iter().collect()
    }
    fn report(&self, _run: &str) -> Option<Value> {
        self.report.lock().unwrap().clone()
    }
}

fn now() -> Timestamp {
    fixtures::at(30)
}

fn setup(registry: Arc<FakeRegistry>) -> (Arc<Context>, Handle) {
    setup_with(registry, fixtures::defaults())
}

/// [`setup`] with other operator defaults (e.g. an allow-list of targets).
fn setup_with(registry: Arc<FakeRegistry>, defaults: RunnerDefaults) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(
        client,
        registry,
        defaults,
        Timing::default(),
        Some("op-0".into()),
    )
    .with_clock(now);
    (Arc::new(ctx), handle)
}

/// One request as the mock API server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: Value,
}

/// Takes the next request and answers `code` with what `reply` builds from it.
async fn serve(handle: &mut Handle, code: u16, reply: impl FnOnce(&Seen) -> Value) -> Seen {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the reconcile made no further request")
        .expect("the client is gone");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let seen = Seen {
        method,
        uri,
        content_type,
        body,
    };
    let answer = reply(&seen);
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    seen
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn pod_list(pods: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": pods})
}

fn running_pod(index: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("web-runner-{index}"), "namespace": "team-a",
                     "labels": {"volley.dev/run": UID, "volley.dev/runner-index": index.to_string()},
                     "creationTimestamp": "2030-01-01T00:00:00Z"},
        "status": {"phase": "Running"}
    })
}

/// The ownerReference and labels the operator gives the run's objects.
fn owned_metadata(name: &str) -> Value {
    json!({"name": name, "namespace": "team-a", "resourceVersion": "41",
           "labels": {"volley.dev/run": UID, "app.kubernetes.io/managed-by": "volley-operator"},
           "ownerReferences": [{"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest",
                                "name": "web", "uid": UID, "controller": true,
                                "blockOwnerDeletion": true}]})
}

fn token_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": owned_metadata("web-run-token"),
           "data": {"token": "c2VjcmV0LXRva2Vu"}})
}

/// A Secret of the run's name that someone else created (issue #19, finding 5): a chosen
/// token and an unrelated key, no owner.
fn planted_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "web-run-token", "namespace": "team-a", "resourceVersion": "7"},
           "data": {"token": "Y2hvc2Vu", "unrelated": "a2VlcA=="}})
}

/// A ConfigMap of the report's name that someone else created.
fn planted_report() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "web-report", "namespace": "team-a", "resourceVersion": "9",
                        "labels": {"volley.dev/run": UID}},
           "data": {"precious": "yes"}})
}

const REPORT: &str = "/api/v1/namespaces/team-a/configmaps/web-report";

const PODS: &str = "/api/v1/namespaces/team-a/pods";
const SECRET: &str = "/api/v1/namespaces/team-a/secrets/web-run-token";
const STATUS: &str = "/apis/volley.dev/v1alpha1/namespaces/team-a/loadtests/web/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// Expects the two reads every observing reconcile starts with.
async fn expect_reads(handle: &mut Handle, pods: Vec<Value>, secret: Option<Value>) {
    let list = serve(handle, 200, |_| pod_list(pods)).await;
    assert_eq!(list.method, "GET");
    assert_eq!(
        list.uri,
        format!("{PODS}?&labelSelector=volley.dev%2Frun%3D{UID}")
    );
    let code = if secret.is_some() { 200 } else { 404 };
    let get = serve(handle, code, |_| {
        secret.unwrap_or_else(|| status(404, "NotFound", "secrets \"web-run-token\" not found"))
    })
    .await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", SECRET));
}

/// Expects the look for a report ConfigMap someone else created, before the run's Secret: none.
async fn expect_no_report(handle: &mut Handle) {
    let get = serve(handle, 404, |_| {
        status(404, "NotFound", "configmaps \"web-report\" not found")
    })
    .await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", REPORT));
}

/// After the reconcile: nothing else was sent.
async fn expect_no_more(mut handle: Handle, ctx: Arc<Context>) {
    drop(ctx);
    let rest = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the client was dropped");
    assert!(
        rest.is_none(),
        "unexpected request {:?}",
        rest.map(|r| r.0.uri().to_string())
    );
}

fn in_phase(mut lt: LoadTest, phase: Phase) -> LoadTest {
    let complete = if phase.is_finished() { "True" } else { "False" };
    lt.status = Some(
        serde_json::from_value(json!({
            "phase": phase, "reason": "R", "message": "m", "observedGeneration": 1,
            "runners": {"desired": 2, "ready": 2, "running": 2, "succeeded": 0, "failed": 0, "summary": "2/2"},
            "conditions": [{"type": "Complete", "status": complete, "reason": "R", "message": "",
                            "lastTransitionTime": "2030-01-01T00:00:00Z"}]
        }))
        .unwrap(),
    );
    lt
}

#[tokio::test]
async fn the_first_reconcile_creates_secret_pods_and_writes_starting() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 2));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));

    expect_reads(&mut handle, Vec::new(), None).await;
    expect_no_report(&mut handle).await;
    let secret = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(secret.method, "POST");
    assert_eq!(secret.uri, "/api/v1/namespaces/team-a/secrets?");
    assert_eq!(secret.body["metadata"]["name"], "web-run-token");
    assert_eq!(secret.body["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        secret.body["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    let token_b64 = secret.body["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(token_b64.len(), 88);

    let pod0 = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (pod0.method.as_str(), pod0.uri.as_str()),
        ("POST", "/api/v1/namespaces/team-a/pods?")
    );
    assert_eq!(pod0.body["metadata"]["name"], "web-runner-0");
    assert_eq!(pod0.body["spec"]["containers"][0]["command"][7], "0");
    assert_eq!(
        pod0.body["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"],
        json!({"name": "web-run-token", "key": "runner-0", "optional": false})
    );
    // Runner 0's pod gets runner 0's credential, which the Secret holds, not the run's token.
    assert!(secret.body["data"]["runner-0"].is_string());
    assert!(secret.body["data"]["runner-1"].is_string());
    // The second pod exists already (e.g. a reconcile raced this one): 409 is fine.
    let pod1 = serve(&mut handle, 409, |_| {
        status(409, "AlreadyExists", "pods \"web-runner-1\" already exists")
    })
    .await;
    assert_eq!(pod1.body["metadata"]["name"], "web-runner-1");

    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", format!("{STATUS}?").as_str())
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Starting");
    assert_eq!(s["reason"], "WaitingForRunners");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(s["runners"]["summary"], "0/2");
    assert_eq!(s["conditions"][1]["type"], "Complete");
    assert_eq!(s["conditions"][1]["status"], "False");
    assert_eq!(
        s["conditions"][1]["lastTransitionTime"],
        "2030-01-01T00:00:30Z"
    );

    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (event.method.as_str(), event.uri.as_str()),
        ("POST", format!("{EVENTS}?").as_str())
    );
    assert_eq!(event.body["reason"], "Starting");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(event.body["regarding"]["kind"], "LoadTest");
    assert_eq!(event.body["regarding"]["name"], "web");
    assert_eq!(event.body["reportingController"], "volley-operator");
    assert_eq!(event.body["reportingInstance"], "op-0");

    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    let registered = registry.registered.lock().unwrap().clone();
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].run_id, UID);
    assert_eq!(
        crate::aggregator_registry::run_config(&registered[0]).runners,
        2
    );
    use base64::Engine as _;
    let sent = base64::engine::general_purpose::STANDARD
        .decode(token_b64)
        .unwrap();
    assert_eq!(
        registered[0].token.expose().as_bytes(),
        sent,
        "the aggregator gets the Secret's token"
    );
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn a_finished_loadtest_is_not_touched() {
    // Failed under the default OnSuccess policy without a TTL: nothing can ever change, so not
    // even a read is made.
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, handle) = setup(registry.clone());
    let lt = Arc::new(in_phase(fixtures::loadtest("web", 2), Phase::Failed));
    let action = reconcile(lt, ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    expect_no_more(handle, ctx).await;
    assert!(registry.calls.lock().unwrap().is_empty());

    // Succeeded, pods already cleaned up: two reads, no write, no pod.
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(in_phase(fixtures::loadtest("web", 2), Phase::Succeeded));
    let task = tokio::spawn(reconcile(lt, ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
    assert!(registry.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_conflicting_status_patch_is_an_error_and_retried_with_backoff() {
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        running: 2,
        started_at: Some(fixtures::at(20)),
        ..RunProgress::default()
    });
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(in_phase(fixtures::loadtest("web", 2), Phase::Starting));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    let patch = serve(&mut handle, 409, |_| {
        status(
            409,
            "Conflict",
            "Operation cannot be fulfilled on loadtests.volley.dev \"web\"",
        )
    })
    .await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.body["status"]["phase"], "Running");
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Kube(kube::Error::Api(s)) if s.code == 409),
        "{err:?}"
    );
    assert_eq!(
        error_policy(lt.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(lt.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2)),
        "backoff doubles"
    );
    assert!(
        registry.calls.lock().unwrap().is_empty(),
        "no event, no aggregator call after the failed write"
    );
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn spec_abort_stops_the_run_and_writes_aborted() {
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        running: 2,
        started_at: Some(fixtures::at(20)),
        ..RunProgress::default()
    });
    let (ctx, mut handle) = setup(registry.clone());
    let mut lt = in_phase(fixtures::loadtest("web", 2), Phase::Running);
    lt.spec.abort = true;
    lt.metadata.generation = Some(2);
    let lt = Arc::new(lt);
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.uri, format!("{STATUS}?"));
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Aborted");
    assert_eq!(s["reason"], "Aborted");
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(s["completionTime"], "2030-01-01T00:00:30Z");
    assert_eq!(s["startTime"], "2030-01-01T00:00:20Z");
    assert_eq!(s["conditions"][1]["type"], "Complete");
    assert_eq!(s["conditions"][1]["status"], "True");
    assert_eq!(s["conditions"][1]["reason"], "Aborted");
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.uri, format!("{EVENTS}?"));
    assert_eq!(event.body["reason"], "Aborted");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(
        *registry.calls.lock().unwrap(),
        [format!("abort {UID}: stopped by spec.abort")]
    );
    // OnSuccess: an aborted run keeps its pods; nothing is deleted.
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn a_refused_pod_ends_the_run_in_error_with_the_api_servers_message() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 1));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), Some(token_secret())).await;
    let message = "pods \"web-runner-0\" is forbidden: exceeded quota: team-a, requested: cpu=2";
    let pod = serve(&mut handle, 403, |_| status(403, "Forbidden", message)).await;
    assert_eq!(pod.method, "POST");
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "PodRejected");
    assert_eq!(
        s["message"],
        format!("the API server refused runner pod web-runner-0: {message}")
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(
        *registry.calls.lock().unwrap(),
        [
            format!("register {UID}"),
            format!("abort {UID}: the API server refused runner pod web-runner-0: {message}"),
        ]
    );
    expect_no_more(handle, ctx).await;
}

#[test]
fn the_object_reference_of_events_is_the_loadtest() {
    let lt = fixtures::loadtest("web", 1);
    let r = lt.object_ref(&());
    assert_eq!(r.api_version.as_deref(), Some("volley.dev/v1alpha1"));
    assert_eq!(r.uid.as_deref(), Some(UID));
}

#[tokio::test]
async fn the_end_of_a_run_writes_the_report_configmap_and_its_ref() {
    use crate::observed::{RunOutcome, RunResults};
    use volley_crds::status::Verdict;
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        done: 2,
        started_at: Some(fixtures::at(20)),
        outcome: Some(RunOutcome {
            phase: Phase::Succeeded,
            reason: "ThresholdsPassed".into(),
            message: "every threshold held".into(),
        }),
        results: Some(RunResults {
            verdict: Some(Verdict::Passed),
            ..RunResults::default()
        }),
        ..RunProgress::default()
    });
    *registry.report.lock().unwrap() =
        Some(json!({"name": "web", "phase": "Succeeded", "histograms": {"overall": "HIST"}}));
    let (ctx, mut handle) = setup(registry.clone());
    let lt = fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 2}\n  cleanup: {runners: Never}",
    );
    let lt = Arc::new(in_phase(lt, Phase::Running));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    // An earlier attempt already created it: 409, then the ConfigMap is replaced.
    let create = serve(&mut handle, 409, |_| {
        status(
            409,
            "AlreadyExists",
            "configmaps \"web-report\" already exists",
        )
    })
    .await;
    assert_eq!(
        (create.method.as_str(), create.uri.as_str()),
        ("POST", "/api/v1/namespaces/team-a/configmaps?")
    );
    assert_eq!(create.body["kind"], "ConfigMap");
    assert_eq!(create.body["metadata"]["name"], "web-report");
    assert_eq!(
        create.body["metadata"]["ownerReferences"][0]["kind"],
        "LoadTest"
    );
    assert_eq!(create.body["metadata"]["ownerReferences"][0]["uid"], UID);
    assert_eq!(
        create.body["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    let summary: Value =
        serde_json::from_str(create.body["data"]["summary.json"].as_str().unwrap()).unwrap();
    assert_eq!(summary["histograms"]["overall"], "HIST");
    assert_eq!(summary["phase"], "Succeeded");
    assert_eq!(
        summary["reason"], "ThresholdsPassed",
        "the final status's reason"
    );
    // Replaced only after checking it is the run's own, at the version read.
    let get = serve(&mut handle, 200, |_| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": owned_metadata("web-report"),
               "data": {"summary.json": "{}"}})
    })
    .await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", REPORT));
    let replace = serve(&mut handle, 200, |s| s.body.clone()).await;
    assert_eq!(
        (replace.method.as_str(), replace.uri.as_str()),
        ("PUT", "/api/v1/namespaces/team-a/configmaps/web-report?")
    );
    assert_eq!(replace.body["data"], create.body["data"]);
    assert_eq!(replace.body["metadata"]["resourceVersion"], "41");
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.uri, format!("{STATUS}?"));
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Succeeded");
    assert_eq!(s["verdict"], "Passed");
    assert_eq!(s["reportRef"], json!({"configMapName": "web-report"}));
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Succeeded");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn a_target_outside_the_allowed_targets_ends_in_error_without_creating_anything() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup_with(registry.clone(), fixtures::guarded("*.team-b.svc"));
    // Aimed at http://target.team-a.svc:8080.
    let lt = Arc::new(fixtures::loadtest("web", 2));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", format!("{STATUS}?").as_str()),
        "no Secret or pod is created first"
    );
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "TargetNotAllowed");
    assert_eq!(
        s["message"],
        "the spec sends load to a URL outside the allowed targets: spec.target.baseUrl \
         (`target.team-a.svc:8080`); the cluster administrator allows only *.team-b.svc"
    );
    assert_eq!(s["completionTime"], "2030-01-01T00:00:30Z");
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (event.method.as_str(), event.uri.as_str()),
        ("POST", format!("{EVENTS}?").as_str())
    );
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(event.body["type"], "Warning");
    assert!(
        event.body["note"]
            .as_str()
            .unwrap()
            .starts_with("TargetNotAllowed: the spec sends load to a URL outside"),
        "{}",
        event.body["note"]
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(
        registry.calls.lock().unwrap().is_empty(),
        "nothing registered with the aggregator, nothing to stop"
    );
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn an_allowed_target_gets_its_pods_with_the_list_as_an_argument() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup_with(registry.clone(), fixtures::guarded("*.team-a.svc"));
    let lt = Arc::new(fixtures::loadtest("web", 1));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), Some(token_secret())).await;
    let pod = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (pod.method.as_str(), pod.uri.as_str()),
        ("POST", "/api/v1/namespaces/team-a/pods?")
    );
    let command = &pod.body["spec"]["containers"][0]["command"];
    assert_eq!(command[8], "--allowed-targets=*.team-a.svc");
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.body["status"]["phase"], "Starting");
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Starting");
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(*registry.calls.lock().unwrap(), [format!("register {UID}")]);
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn an_own_runner_image_is_refused_while_targets_are_limited() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup_with(registry.clone(), fixtures::guarded("*.team-a.svc"));
    let lt = Arc::new(fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 1, image: 'registry.evil/volley:1'}",
    ));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.method, "PATCH", "no Secret or pod is created first");
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "ImageNotAllowed");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.runners.image: `registry.evil/volley:1` is not allowed"),
        "{}",
        s["message"]
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(registry.calls.lock().unwrap().is_empty());
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn a_deleted_loadtest_is_let_go_with_the_state_kept_for_it() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, handle) = setup(registry.clone());
    super::lock(&ctx.status_writes).insert(UID.to_string(), now());
    super::lock(&ctx.failures).insert("team-a/web".to_string(), 3);
    super::loadtest_gone(&ctx, "team-a", "web", Some(UID));
    assert_eq!(
        registry.calls.lock().unwrap().as_slice(),
        [format!("gone team-a/web Some({UID:?})")]
    );
    assert!(
        super::lock(&ctx.failures).is_empty(),
        "no backoff kept for it"
    );
    assert!(
        super::lock(&ctx.status_writes).is_empty(),
        "no write time kept for it"
    );
    drop(handle);
}

/// After an abort, the runners are still stopping: the next reconciles repeat the stop, write
/// nothing and do not forget the run; once every runner acknowledged, the final figures are
/// written (phase and reason unchanged) and only then is the run forgotten.
#[tokio::test]
async fn an_aborted_run_is_forgotten_only_after_its_runners_acknowledged() {
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        running: 2,
        started_at: Some(fixtures::at(20)),
        ..RunProgress::default()
    });
    let (ctx, mut handle) = setup(registry.clone());
    let mut lt = in_phase(fixtures::loadtest("web", 2), Phase::Aborted);
    lt.spec.abort = true;
    let status = lt.status.as_mut().unwrap();
    status.reason = Some("Aborted".into());
    status.message = Some("stopped by spec.abort".into());
    status.completion_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        fixtures::at(29),
    ));
    let lt = Arc::new(lt);

    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        *registry.calls.lock().unwrap(),
        [format!("abort {UID}: stopped by spec.abort")],
        "the stop is repeated, the run is not forgotten"
    );

    // Both runners sent their final reports.
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        done: 2,
        started_at: Some(fixtures::at(20)),
        outcome: Some(crate::observed::RunOutcome {
            phase: Phase::Aborted,
            reason: "Aborted".into(),
            message: "stopped by spec.abort".into(),
        }),
        results: Some(crate::observed::RunResults {
            metrics: Some(volley_crds::status::MetricsStatus {
                requests: 1040,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..RunProgress::default()
    });
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.uri, format!("{STATUS}?"));
    let s = &patch.body["status"];
    assert_eq!(s["metrics"]["requests"], 1040);
    assert_eq!(
        (s["phase"].clone(), s["reason"].clone()),
        (json!("Aborted"), json!("Aborted"))
    );
    assert_eq!(s["runners"]["succeeded"], 2);
    assert_eq!(s["runners"]["running"], 0);
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert_eq!(
        registry.calls.lock().unwrap().last().unwrap(),
        &format!("forget {UID}")
    );
    expect_no_more(handle, ctx).await;
}

/// A new leader after a failover: its aggregator registered the run as started and has heard
/// from no runner yet. The status it writes keeps the requests already shown, never zero.
#[tokio::test]
async fn a_new_leader_does_not_write_zero_requests_over_the_status() {
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        running: 0,
        started_at: Some(fixtures::at(20)),
        results: Some(crate::observed::RunResults {
            metrics: Some(volley_crds::status::MetricsStatus::default()),
            ..Default::default()
        }),
        ..RunProgress::default()
    });
    let (ctx, mut handle) = setup(registry.clone());
    let mut lt = in_phase(fixtures::loadtest("web", 2), Phase::Running);
    lt.status.as_mut().unwrap().metrics = Some(volley_crds::status::MetricsStatus {
        requests: 1350,
        ..Default::default()
    });
    let lt = Arc::new(lt);
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    // The runner counts changed (none has reported to this aggregator yet): a write is due.
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.uri, format!("{STATUS}?"));
    assert_eq!(patch.body["status"]["metrics"]["requests"], 1350);
    task.await.unwrap().unwrap();
    expect_no_more(handle, ctx).await;
}

/// Issue #19, finding 1: `runners.env` with a proxy variable under an allow-list is refused
/// before any Secret or pod exists, naming the field.
#[tokio::test]
async fn a_proxy_variable_is_refused_while_targets_are_limited() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup_with(registry.clone(), fixtures::guarded("*.team-a.svc"));
    let lt = Arc::new(fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 1, env: [{name: http_proxy, value: 'http://169.254.169.254:80'}]}",
    ));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.method, "PATCH", "no Secret or pod is created first");
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "ProxyNotAllowed");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.runners.env[0].name: `http_proxy` is not allowed"),
        "{}",
        s["message"]
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(registry.calls.lock().unwrap().is_empty());
    expect_no_more(handle, ctx).await;
}

/// Issue #19, finding 5: a Secret `web-run-token` someone else created before the run (a
/// chosen token, an unrelated key, no owner) is never adopted: the run ends in Error naming it,
/// nothing is registered with the aggregator, and no request writes or deletes it.
#[tokio::test]
async fn a_planted_run_secret_is_never_adopted_or_touched() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 2));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), Some(planted_secret())).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", format!("{STATUS}?").as_str()),
        "no Secret, ConfigMap or pod request first"
    );
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "NameTaken");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("Secret team-a/web-run-token already exists and was not created by the operator for this LoadTest"),
        "{}",
        s["message"]
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.uri, format!("{EVENTS}?"));
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(
        registry.registered.lock().unwrap().is_empty(),
        "the planted token never reaches the aggregator"
    );
    expect_no_more(handle, ctx).await;

    // The run, now in Error and due for cleanup (Always), still leaves the Secret alone.
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 2}\n  cleanup: {runners: Always}",
    );
    let lt = Arc::new(in_phase(lt, Phase::Error));
    let task = tokio::spawn(reconcile(lt, ctx.clone()));
    expect_reads(&mut handle, Vec::new(), Some(planted_secret())).await;
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
}

/// The control of the test above: the run's own Secret is deleted by the same cleanup.
#[tokio::test]
async fn the_runs_own_secret_is_deleted_by_the_cleanup() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 2}\n  cleanup: {runners: Always}",
    );
    let lt = Arc::new(in_phase(lt, Phase::Error));
    let task = tokio::spawn(reconcile(lt, ctx.clone()));
    expect_reads(&mut handle, Vec::new(), Some(token_secret())).await;
    let delete = serve(&mut handle, 200, |_| token_secret()).await;
    assert_eq!(
        (delete.method.as_str(), delete.uri.as_str()),
        ("DELETE", format!("{SECRET}?").as_str())
    );
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
}

/// A Secret planted between the reconcile's read and its create (409): read again, found to
/// be someone else's, and the run ends in Error; no pod is created with it.
#[tokio::test]
async fn a_secret_planted_during_the_reconcile_is_not_adopted() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 1));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    expect_no_report(&mut handle).await;
    let create = serve(&mut handle, 409, |_| {
        status(
            409,
            "AlreadyExists",
            "secrets \"web-run-token\" already exists",
        )
    })
    .await;
    assert_eq!(create.method, "POST");
    let get = serve(&mut handle, 200, |_| planted_secret()).await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", SECRET));
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.method, "PATCH", "no pod");
    assert_eq!(patch.body["status"]["reason"], "NameTaken");
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(registry.registered.lock().unwrap().is_empty());
    expect_no_more(handle, ctx).await;
}

/// A report ConfigMap someone else created before the run: found before any Secret or pod
/// exists, the run ends in Error naming it, and it is never written.
#[tokio::test]
async fn a_planted_report_configmap_stops_the_run_before_it_starts() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 2));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    let get = serve(&mut handle, 200, |_| planted_report()).await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", REPORT));
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.method, "PATCH", "no Secret or pod is created");
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Error");
    assert_eq!(s["reason"], "NameTaken");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap team-a/web-report already exists and was not created"),
        "{}",
        s["message"]
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Error");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    assert!(registry.registered.lock().unwrap().is_empty());
    expect_no_more(handle, ctx).await;
}

/// A report ConfigMap planted while the run ran: at the end the create meets 409, the read
/// finds someone else's, and it is neither replaced nor given an ownerReference; the status is
/// written without `reportRef`.
#[tokio::test]
async fn a_report_configmap_planted_during_the_run_is_not_replaced() {
    use crate::observed::RunOutcome;
    let registry = Arc::new(FakeRegistry::default());
    *registry.progress.lock().unwrap() = Some(RunProgress {
        registered: 2,
        done: 2,
        started_at: Some(fixtures::at(20)),
        outcome: Some(RunOutcome {
            phase: Phase::Succeeded,
            reason: "Completed".into(),
            message: "done".into(),
        }),
        ..RunProgress::default()
    });
    *registry.report.lock().unwrap() = Some(json!({"name": "web", "phase": "Succeeded"}));
    let (ctx, mut handle) = setup(registry.clone());
    let lt = fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 2}\n  cleanup: {runners: Never}",
    );
    let lt = Arc::new(in_phase(lt, Phase::Running));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(
        &mut handle,
        vec![running_pod(0), running_pod(1)],
        Some(token_secret()),
    )
    .await;
    let create = serve(&mut handle, 409, |_| {
        status(
            409,
            "AlreadyExists",
            "configmaps \"web-report\" already exists",
        )
    })
    .await;
    assert_eq!(create.method, "POST");
    let get = serve(&mut handle, 200, |_| planted_report()).await;
    assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", REPORT));
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", format!("{STATUS}?").as_str()),
        "no PUT of the planted ConfigMap"
    );
    assert_eq!(patch.body["status"]["phase"], "Succeeded");
    assert!(
        patch.body["status"].get("reportRef").is_none(),
        "{}",
        patch.body
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Succeeded");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
}

/// A Secret an earlier LoadTest of the same name left (its owner, by UID, is gone, so the
/// garbage collector deletes it): waited for, without a status write or any other request.
#[tokio::test]
async fn a_secret_of_an_earlier_loadtest_of_the_same_name_is_waited_for() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let lt = Arc::new(fixtures::loadtest("web", 1));
    let task = tokio::spawn(reconcile(lt, ctx.clone()));
    let mut earlier = token_secret();
    earlier["metadata"]["ownerReferences"][0]["uid"] = json!("0ld-0000");
    earlier["metadata"]["labels"]["volley.dev/run"] = json!("0ld-0000");
    expect_reads(&mut handle, Vec::new(), Some(earlier)).await;
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(registry.registered.lock().unwrap().is_empty());
    expect_no_more(handle, ctx).await;
}

/// Run `n`'s id, as the `volley.dev/run` label and the aggregator know it.
fn run_id(n: u32) -> String {
    crate::names::run_id(UID, n)
}

/// Metadata of an object the operator made for run `n` of the fixture LoadTest.
fn run_metadata(name: &str, n: u32) -> Value {
    let mut meta = owned_metadata(name);
    meta["labels"]["volley.dev/run"] = json!(run_id(n));
    meta["uid"] = json!(format!("uid-of-{name}"));
    meta
}

/// The fixture LoadTest at generation `generation`, finished (Failed) as run `run` of
/// generation `observed`, with `history` before it and a report of its own.
fn finished_run(run: u32, observed: i64, generation: i64, history: Value) -> LoadTest {
    let mut lt = fixtures::loadtest_yaml(
        "web",
        "runners: {parallelism: 2}\n  cleanup: {historyLimit: 1}",
    );
    lt.metadata.generation = Some(generation);
    lt.status = Some(
        serde_json::from_value(json!({
            "phase": "Failed", "verdict": "Failed", "reason": "ThresholdsFailed", "message": "m",
            "observedGeneration": observed, "run": run,
            "startTime": "2030-01-01T00:00:05Z", "completionTime": "2030-01-01T00:00:20Z",
            "metrics": {"requests": 100, "failures": 1, "errorRate": 0.01, "rps": 5.0,
                        "iterations": 100, "droppedIterations": 0, "dataReceivedBytes": 0,
                        "dataSentBytes": 0, "p95": "40ms", "errors": "1%",
                        "latencyMs": {"min": 1.0, "mean": 12.0, "p50": 10.0, "p90": 30.0,
                                      "p95": 40.0, "p99": 90.0, "max": 100.0}},
            "reportRef": {"configMapName": format!("web-report-r{run}")},
            "conditions": [{"type": "Complete", "status": "True", "reason": "Failed", "message": "m",
                            "observedGeneration": observed,
                            "lastTransitionTime": "2030-01-01T00:00:20Z"}],
            "history": history,
        }))
        .unwrap(),
    );
    lt
}

/// Issue 14: a spec changed after run 2 finished starts run 3 in one status write (run 2 into
/// the history, conditions reset, the new generation observed, an event), deletes run 2's pods
/// and Secret by their run-2 names, and the report of run 1, which left the history
/// (`historyLimit: 1`), at the UID read.
#[tokio::test]
async fn a_changed_spec_starts_the_next_run_and_the_history_drops_the_oldest_report() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let history = json!([{"run": 1, "generation": 1, "phase": "Succeeded",
                          "reportRef": {"configMapName": "web-report"}}]);
    let lt = Arc::new(finished_run(2, 2, 3, history));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));

    let list = serve(&mut handle, 200, |_| {
        pod_list(
            (0..2)
                .map(|i| {
                    let name = format!("web-runner-{i}-r2");
                    json!({"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": name, "namespace": "team-a",
                                        "labels": {"volley.dev/run": run_id(2),
                                                   "volley.dev/runner-index": i.to_string()}},
                           "status": {"phase": "Succeeded"}})
                })
                .collect(),
        )
    })
    .await;
    assert_eq!(
        list.uri,
        format!("{PODS}?&labelSelector=volley.dev%2Frun%3D{UID}-r2"),
        "run 2's pods, by its own label"
    );
    let secret = serve(&mut handle, 200, |_| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": run_metadata("web-run-token-r2", 2), "data": {"token": "c2VjcmV0"}})
    })
    .await;
    assert_eq!(secret.uri, format!("{SECRET}-r2"));

    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.uri, format!("{STATUS}?"));
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Pending");
    assert_eq!(s["reason"], "SpecChanged");
    assert_eq!(s["run"], 3);
    assert_eq!(s["observedGeneration"], 3);
    for field in [
        "verdict",
        "metrics",
        "reportRef",
        "startTime",
        "completionTime",
    ] {
        assert_eq!(s[field], Value::Null, "{field} of run 2 is removed");
    }
    let conditions = s["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 3);
    for c in conditions {
        assert_eq!(c["observedGeneration"], 3, "{c}");
        assert_ne!(c["status"], "True", "{c}");
    }
    assert_eq!(
        s["history"],
        json!([{"run": 2, "generation": 2, "phase": "Failed", "verdict": "Failed",
                "reason": "ThresholdsFailed",
                "startTime": "2030-01-01T00:00:05Z", "completionTime": "2030-01-01T00:00:20Z",
                "p50Ms": 10.0, "p95Ms": 40.0, "p99Ms": 90.0, "rps": 5.0, "errorRate": 0.01,
                "reportRef": {"configMapName": "web-report-r2"}}]),
        "run 2 first; run 1 left (historyLimit 1)"
    );
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.uri, format!("{EVENTS}?"));
    assert_eq!(event.body["reason"], "Rerun");
    assert_eq!(event.body["type"], "Normal");
    assert_eq!(
        event.body["note"],
        "the spec changed from generation 2 to 3: run 3 starts; run 2 (Failed) is in the history"
    );
    for i in 0..2 {
        let delete = serve(&mut handle, 200, |_| json!({})).await;
        assert_eq!(
            (delete.method.as_str(), delete.uri.as_str()),
            ("DELETE", format!("{PODS}/web-runner-{i}-r2?").as_str())
        );
    }
    let delete = serve(&mut handle, 200, |_| json!({})).await;
    assert_eq!(
        (delete.method.as_str(), delete.uri.as_str()),
        ("DELETE", format!("{SECRET}-r2?").as_str())
    );
    let read = serve(&mut handle, 200, |_| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": run_metadata("web-report", 1),
               "data": {"summary.json": "{}"}})
    })
    .await;
    assert_eq!((read.method.as_str(), read.uri.as_str()), ("GET", REPORT));
    let delete = serve(&mut handle, 200, |_| json!({})).await;
    assert_eq!(
        (delete.method.as_str(), delete.uri.as_str()),
        ("DELETE", format!("{REPORT}?").as_str())
    );
    assert_eq!(
        delete.body["preconditions"]["uid"], "uid-of-web-report",
        "only the ConfigMap that was read"
    );
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(1))
    );
    assert!(
        registry.calls.lock().unwrap().is_empty(),
        "run 2 was already let go"
    );
    expect_no_more(handle, ctx).await;
}

/// A ConfigMap under the name of a report that left the history, which the operator did not
/// make for this LoadTest, is left alone.
#[tokio::test]
async fn a_foreign_configmap_under_a_dropped_reports_name_is_not_deleted() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry);
    let history = json!([{"run": 1, "reportRef": {"configMapName": "web-report"}}]);
    let lt = Arc::new(finished_run(2, 2, 3, history));
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    serve(&mut handle, 200, |_| pod_list(Vec::new())).await;
    serve(&mut handle, 404, |_| status(404, "NotFound", "not found")).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    assert_eq!(patch.body["status"]["run"], 3);
    serve(&mut handle, 201, |s| s.body.clone()).await;
    let read = serve(&mut handle, 200, |_| planted_report()).await;
    assert_eq!((read.method.as_str(), read.uri.as_str()), ("GET", REPORT));
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(1))
    );
    expect_no_more(handle, ctx).await;
}

/// The next reconcile starts run 3 like a new LoadTest, under run 3's names: its own Secret,
/// pods, label, run id and report name, none of which run 2 used.
#[tokio::test]
async fn a_rerun_creates_objects_under_its_own_names() {
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let mut lt = finished_run(2, 2, 3, json!([]));
    let (pending, _) = crate::rerun::restart(
        &lt,
        lt.status.as_ref().unwrap(),
        &crate::rerun::Trigger::SpecChanged { from: 2, to: 3 },
        fixtures::at(25),
    );
    lt.status = Some(pending);
    let lt = Arc::new(lt);
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    let list = serve(&mut handle, 200, |_| pod_list(Vec::new())).await;
    assert_eq!(
        list.uri,
        format!("{PODS}?&labelSelector=volley.dev%2Frun%3D{UID}-r3")
    );
    let get = serve(&mut handle, 404, |_| status(404, "NotFound", "not found")).await;
    assert_eq!(get.uri, format!("{SECRET}-r3"));
    let get = serve(&mut handle, 404, |_| status(404, "NotFound", "not found")).await;
    assert_eq!(
        get.uri,
        format!("{REPORT}-r3"),
        "run 3's report name is checked"
    );
    let secret = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(secret.body["metadata"]["name"], "web-run-token-r3");
    assert_eq!(
        secret.body["metadata"]["labels"]["volley.dev/run"],
        run_id(3)
    );
    for i in 0..2 {
        let pod = serve(&mut handle, 201, |s| s.body.clone()).await;
        assert_eq!(pod.body["metadata"]["name"], format!("web-runner-{i}-r3"));
        assert_eq!(pod.body["metadata"]["labels"]["volley.dev/run"], run_id(3));
        let container = &pod.body["spec"]["containers"][0];
        assert_eq!(container["command"][5], run_id(3), "--run");
        assert_eq!(
            container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "web-run-token-r3"
        );
    }
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    let s = &patch.body["status"];
    assert_eq!(s["phase"], "Starting");
    assert_eq!(s["run"], 3);
    assert_eq!(s["observedGeneration"], 3);
    assert_eq!(s["history"][0]["run"], 2, "the history stays");
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "Starting");
    task.await.unwrap().unwrap();
    assert_eq!(
        *registry.calls.lock().unwrap(),
        [format!("register {}", run_id(3))]
    );
    expect_no_more(handle, ctx).await;
}

/// `spec.baseline.configMapRef`: the operator reads the ConfigMap once, after the run's Secret
/// and before its pods, and registers the run with its summary as the baseline; a missing
/// ConfigMap registers the run anyway, with the reason its baseline thresholds will be skipped.
#[tokio::test]
async fn the_baseline_config_map_is_read_before_the_run_and_given_to_the_aggregator() {
    const BASELINE: &str = "/api/v1/namespaces/team-a/configmaps/web-before";
    let summary = json!({"name": "web", "durationSeconds": 10, "metrics": {
        "requests": 100, "failures": 0, "errorRate": 0, "rps": 10, "iterations": 100,
        "droppedIterations": 0, "dataReceivedBytes": 0, "dataSentBytes": 0, "p95": "5ms",
        "errors": "0%", "latencyMs": {"min": 1, "mean": 2, "p50": 2, "p90": 4, "p95": 5,
        "p99": 9, "max": 12}}});
    for found in [true, false] {
        let registry = Arc::new(FakeRegistry::default());
        let (ctx, mut handle) = setup(registry.clone());
        let lt = Arc::new(fixtures::loadtest_yaml(
            "web",
            "baseline: {configMapRef: {name: web-before}}",
        ));
        let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
        expect_reads(&mut handle, Vec::new(), None).await;
        expect_no_report(&mut handle).await;
        let secret = serve(&mut handle, 201, |s| s.body.clone()).await;
        assert_eq!(secret.method, "POST");
        let get = if found {
            serve(&mut handle, 200, |_| {
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "web-before", "namespace": "team-a"},
                       "data": {"summary.json": summary.to_string()}})
            })
            .await
        } else {
            serve(&mut handle, 404, |_| {
                status(404, "NotFound", "configmaps \"web-before\" not found")
            })
            .await
        };
        assert_eq!((get.method.as_str(), get.uri.as_str()), ("GET", BASELINE));
        let pod = serve(&mut handle, 201, |s| s.body.clone()).await;
        assert_eq!(pod.body["metadata"]["name"], "web-runner-0");
        serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
        serve(&mut handle, 201, |s| s.body.clone()).await;
        task.await.unwrap().unwrap();
        let registered = registry.registered.lock().unwrap().clone();
        let config = crate::aggregator_registry::run_config(&registered[0]);
        match (&config.baseline, found) {
            (volley_core::compare::Baseline::Run(figures), true) => {
                assert_eq!(figures.overall().p95_ms, 5.0);
            }
            (volley_core::compare::Baseline::Unavailable(why), false) => {
                assert_eq!(why, "baseline ConfigMap web-before not found");
            }
            (other, _) => panic!("found {found}: {other:?}"),
        }
        expect_no_more(handle, ctx).await;
    }
}

/// A run of a LoadTestSchedule without `spec.baseline` and without a passed run of its own:
/// the operator lists the schedule's runs (by its label), picks the newest Passed one the
/// same schedule owns, reads that run's report ConfigMap and registers the run with it as the
/// baseline.
#[tokio::test]
async fn a_scheduled_run_compares_with_the_schedules_newest_passed_run() {
    const LIST: &str = "/apis/volley.dev/v1alpha1/namespaces/team-a/loadtests\
                        ?&labelSelector=volley.dev%2Fschedule%3Dnightly";
    let owner = |uid: &str| {
        json!([{"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTestSchedule",
                "name": "nightly", "uid": uid, "controller": true, "blockOwnerDeletion": true}])
    };
    let sibling = |name: &str, uid: &str, verdict: &str, completed: &str| {
        json!({"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest",
               "metadata": {"name": name, "namespace": "team-a", "uid": name,
                            "labels": {"volley.dev/schedule": "nightly"},
                            "ownerReferences": owner(uid)},
               "spec": {"target": {"baseUrl": "http://target.team-a.svc:8080"}, "scenarios": []},
               "status": {"phase": "Succeeded", "verdict": verdict, "completionTime": completed,
                          "reportRef": {"configMapName": format!("{name}-report")}}})
    };
    let summary = json!({"name": "nightly-2", "durationSeconds": 10, "metrics": {
        "requests": 100, "failures": 0, "errorRate": 0, "rps": 10, "iterations": 100,
        "droppedIterations": 0, "dataReceivedBytes": 0, "dataSentBytes": 0, "p95": "7ms",
        "errors": "0%", "latencyMs": {"min": 1, "mean": 2, "p50": 2, "p90": 4, "p95": 7,
        "p99": 9, "max": 12}}});
    let registry = Arc::new(FakeRegistry::default());
    let (ctx, mut handle) = setup(registry.clone());
    let mut lt = fixtures::loadtest("web", 1);
    lt.metadata.labels = Some([("volley.dev/schedule".into(), "nightly".into())].into());
    lt.metadata.owner_references = Some(serde_json::from_value(owner("sched-1")).unwrap());
    let lt = Arc::new(lt);
    let task = tokio::spawn(reconcile(lt.clone(), ctx.clone()));
    expect_reads(&mut handle, Vec::new(), None).await;
    expect_no_report(&mut handle).await;
    let secret = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(secret.method, "POST");
    let list = serve(&mut handle, 200, |_| {
        json!({"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTestList", "metadata": {},
        "items": [
            sibling("nightly-1", "sched-1", "Passed", "2026-12-01T02:00:00Z"),
            sibling("nightly-2", "sched-1", "Passed", "2026-12-02T02:00:00Z"),
            sibling("nightly-3", "sched-1", "Failed", "2026-12-03T02:00:00Z"),
            sibling("nightly-9", "other-schedule", "Passed", "2026-12-04T02:00:00Z"),
        ]})
    })
    .await;
    assert_eq!((list.method.as_str(), list.uri.as_str()), ("GET", LIST));
    let get = serve(&mut handle, 200, |_| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "nightly-2-report", "namespace": "team-a"},
               "data": {"summary.json": summary.to_string()}})
    })
    .await;
    assert_eq!(
        (get.method.as_str(), get.uri.as_str()),
        (
            "GET",
            "/api/v1/namespaces/team-a/configmaps/nightly-2-report"
        )
    );
    let pod = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(pod.body["metadata"]["name"], "web-runner-0");
    serve(&mut handle, 200, |_| serde_json::to_value(&*lt).unwrap()).await;
    serve(&mut handle, 201, |s| s.body.clone()).await;
    task.await.unwrap().unwrap();
    let registered = registry.registered.lock().unwrap().clone();
    let config = crate::aggregator_registry::run_config(&registered[0]);
    let volley_core::compare::Baseline::Run(figures) = &config.baseline else {
        panic!("the schedule's run is the baseline: {:?}", config.baseline);
    };
    assert_eq!(figures.overall().p95_ms, 7.0);
    expect_no_more(handle, ctx).await;
}
