//! The schedule controller's wiring against kube's mock API service (`tower_test::mock::pair`,
//! as in `controller_tests.rs`): every request a reconcile makes is checked in order (method,
//! path, body fields) and answered like an API server would. The clock is fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use http::{Request, Response};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use volley_crds::schedule::LoadTestSchedule;

use super::{Context, reconcile};
use crate::fixtures;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const SCHEDULE_UID: &str = "5c8e0000-0000-4000-8000-00000000beef";
const LOADTESTS: &str = "/apis/volley.dev/v1alpha1/namespaces/team-a/loadtests";
const STATUS: &str = "/apis/volley.dev/v1alpha1/namespaces/team-a/loadtestschedules/nightly/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// 00:05:30 on the fixtures' day: the 00:05 run of `*/5 * * * *` is due.
fn now() -> Timestamp {
    fixtures::at(330)
}

fn setup() -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Context::new(client, fixtures::defaults(), Some("op-0".into())).with_clock(now);
    (Arc::new(ctx), handle)
}

/// The schedule `nightly` in `team-a`, created at the fixtures' t0, with `spec` merged over a
/// valid one (`*/5 * * * *`, the fixture LoadTest as template).
fn schedule(spec: Value) -> Arc<LoadTestSchedule> {
    let template = serde_json::to_value(fixtures::loadtest("web", 1).spec).unwrap();
    let mut base = json!({
        "apiVersion": "volley.dev/v1alpha1", "kind": "LoadTestSchedule",
        "metadata": {"name": "nightly", "namespace": "team-a", "uid": SCHEDULE_UID,
                     "generation": 2, "creationTimestamp": "2030-01-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *",
                 "template": {"metadata": {"labels": {"team": "a"}}, "spec": template}}
    });
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    Arc::new(serde_json::from_value(base).unwrap())
}

/// A LoadTest the schedule (or, with another `uid`, someone else) owns.
fn run(name: &str, phase: &str, scheduled: &str, owner_uid: &str) -> Value {
    json!({
        "apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest",
        "metadata": {"name": name, "namespace": "team-a",
                     "labels": {"volley.dev/schedule": "nightly"},
                     "annotations": {"volley.dev/scheduled-at": scheduled},
                     "ownerReferences": [{"apiVersion": "volley.dev/v1alpha1",
                                          "kind": "LoadTestSchedule", "name": "nightly",
                                          "uid": owner_uid, "controller": true}]},
        "spec": serde_json::to_value(fixtures::loadtest("web", 1).spec).unwrap(),
        "status": {"phase": phase, "verdict": if phase == "Succeeded" { "Passed" } else { "Failed" },
                   "metrics": {"requests": 10, "failures": 0, "errorRate": 0.01, "rps": 42.0,
                               "iterations": 10, "droppedIterations": 0,
                               "latencyMs": {"min": 1.0, "mean": 2.0, "p50": 2.0, "p90": 3.0,
                                             "p95": 3.5, "p99": 4.0, "max": 5.0},
                               "dataReceivedBytes": 0, "dataSentBytes": 0,
                               "p95": "3.5ms", "errors": "1%"}}
    })
}

/// One request as the mock API server saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    uri: String,
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
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    let seen = Seen { method, uri, body };
    let answer = reply(&seen);
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    seen
}

/// Expects the list of the schedule's runs, answered with `items`.
async fn expect_list(handle: &mut Handle, items: Vec<Value>) {
    let list = serve(handle, 200, |_| {
        json!({"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTestList",
               "metadata": {"resourceVersion": "1"}, "items": items})
    })
    .await;
    assert_eq!(
        (list.method.as_str(), list.uri.as_str()),
        (
            "GET",
            format!("{LOADTESTS}?&labelSelector=volley.dev%2Fschedule%3Dnightly").as_str()
        )
    );
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

#[tokio::test]
async fn a_due_run_is_created_from_the_template_and_owned_by_the_schedule() {
    let (ctx, mut handle) = setup();
    let lts = schedule(json!({}));
    let task = tokio::spawn(reconcile(lts.clone(), ctx.clone()));
    expect_list(&mut handle, Vec::new()).await;

    let minutes = fixtures::at(300).as_second() / 60;
    let name = format!("nightly-{minutes}");
    let create = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (create.method.as_str(), create.uri.as_str()),
        ("POST", format!("{LOADTESTS}?").as_str())
    );
    let meta = &create.body["metadata"];
    assert_eq!(meta["name"], name.as_str());
    assert_eq!(meta["namespace"], "team-a");
    assert_eq!(
        meta["ownerReferences"],
        json!([{"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTestSchedule",
                "name": "nightly", "uid": SCHEDULE_UID, "controller": true,
                "blockOwnerDeletion": true}])
    );
    assert_eq!(
        meta["labels"],
        json!({"team": "a", "volley.dev/schedule": "nightly"})
    );
    assert_eq!(
        meta["annotations"]["volley.dev/scheduled-at"],
        "2030-01-01T00:05:00Z"
    );
    assert_eq!(
        create.body["spec"],
        serde_json::to_value(&lts.spec.template.spec).unwrap()
    );

    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lts).unwrap()).await;
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", format!("{STATUS}?").as_str())
    );
    let s = &patch.body["status"];
    assert_eq!(s["lastScheduleTime"], "2030-01-01T00:05:00Z");
    assert_eq!(s["active"], json!([{"name": name}]));
    assert_eq!(s["activeCount"], 1);
    assert_eq!(s["observedGeneration"], 2);
    assert_eq!(s["conditions"][0]["type"], "Ready");
    assert_eq!(s["conditions"][0]["status"], "True");

    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(
        (event.method.as_str(), event.uri.as_str()),
        ("POST", format!("{EVENTS}?").as_str())
    );
    assert_eq!(event.body["reason"], "RunCreated");
    assert_eq!(event.body["regarding"]["kind"], "LoadTestSchedule");
    assert_eq!(event.body["regarding"]["name"], "nightly");

    // Next due at 00:10: 4 min 30 s from now, plus a second.
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(271))
    );
    expect_no_more(handle, ctx).await;
}

#[tokio::test]
async fn an_invalid_template_creates_nothing_and_names_the_field() {
    let (ctx, mut handle) = setup();
    let mut template = serde_json::to_value(fixtures::loadtest("web", 1).spec).unwrap();
    template["data"] = json!([{"name": "users", "file": "users.csv"}]);
    let lts = schedule(json!({"template": {"spec": template}}));
    let task = tokio::spawn(reconcile(lts.clone(), ctx.clone()));
    expect_list(&mut handle, Vec::new()).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lts).unwrap()).await;
    assert_eq!(patch.method, "PATCH", "no LoadTest is created first");
    let ready = &patch.body["status"]["conditions"][0];
    assert_eq!(ready["type"], "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.template.spec.data[0].file: "),
        "{}",
        ready["message"]
    );
    assert_eq!(patch.body["status"]["active"], json!([]));
    let event = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(event.body["reason"], "InvalidSpec");
    assert_eq!(event.body["type"], "Warning");
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    expect_no_more(handle, ctx).await;
}

/// Replace: the running run is deleted and the new one created; finished runs beyond the
/// history limit are deleted; a LoadTest labelled alike but owned by another object is never
/// touched. The status keeps the trend and clears the replaced run from `active`.
#[tokio::test]
async fn replace_deletes_the_running_run_and_the_history_beyond_its_limit() {
    let (ctx, mut handle) = setup();
    let lts = schedule(json!({"concurrencyPolicy": "Replace", "failedRunsHistoryLimit": 1}));
    let task = tokio::spawn(reconcile(lts.clone(), ctx.clone()));
    expect_list(
        &mut handle,
        vec![
            run(
                "nightly-old-1",
                "Failed",
                "2029-12-31T23:50:00Z",
                SCHEDULE_UID,
            ),
            run(
                "nightly-old-2",
                "Failed",
                "2029-12-31T23:55:00Z",
                SCHEDULE_UID,
            ),
            run(
                "nightly-going",
                "Running",
                "2030-01-01T00:00:00Z",
                SCHEDULE_UID,
            ),
            run("stranger", "Failed", "2029-12-31T23:00:00Z", "0ther-uid"),
        ],
    )
    .await;
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let delete = serve(
            &mut handle,
            200,
            |_| json!({"kind": "Status", "status": "Success"}),
        )
        .await;
        assert_eq!(delete.method, "DELETE");
        deleted.push(delete.uri.clone());
    }
    assert_eq!(
        deleted,
        [
            format!("{LOADTESTS}/nightly-old-1?"),
            format!("{LOADTESTS}/nightly-going?")
        ]
    );
    // An earlier attempt created it already: 409 is fine.
    let create = serve(&mut handle, 409, |_| {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "already exists", "reason": "AlreadyExists", "code": 409})
    })
    .await;
    assert_eq!(create.method, "POST");
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lts).unwrap()).await;
    let s = &patch.body["status"];
    let name = format!("nightly-{}", fixtures::at(300).as_second() / 60);
    assert_eq!(s["active"], json!([{"name": name}]));
    assert_eq!(s["lastRun"]["name"], "nightly-old-2");
    assert_eq!(s["lastRun"]["verdict"], "Failed");
    assert_eq!(s["lastRun"]["p95Ms"], 3.5);
    assert_eq!(s["lastRun"]["rps"], 42.0);
    assert_eq!(s["lastRun"]["errorRate"], 0.01);
    let trend: Vec<&str> = s["recentRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(trend, ["nightly-old-2", "nightly-old-1"]);
    let replaced = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(replaced.body["reason"], "Replaced");
    let created = serve(&mut handle, 201, |s| s.body.clone()).await;
    assert_eq!(created.body["reason"], "RunCreated");
    task.await.unwrap().unwrap();
    expect_no_more(handle, ctx).await;
}

/// An unchanged status is not written again, and nothing is due: one read, no write.
#[tokio::test]
async fn nothing_due_and_nothing_changed_is_one_read() {
    let (ctx, mut handle) = setup();
    let lts = schedule(json!({"schedule": "0 2 * * *"}));
    // The status the first reconcile writes, read back.
    let task = tokio::spawn(reconcile(lts.clone(), ctx.clone()));
    expect_list(&mut handle, Vec::new()).await;
    let patch = serve(&mut handle, 200, |_| serde_json::to_value(&*lts).unwrap()).await;
    task.await.unwrap().unwrap();
    let mut again = (*lts).clone();
    again.status = Some(serde_json::from_value(patch.body["status"].clone()).unwrap());
    let task = tokio::spawn(reconcile(Arc::new(again), ctx.clone()));
    expect_list(&mut handle, Vec::new()).await;
    // 02:00 is 1 h 54 min 30 s away.
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(6871))
    );
    expect_no_more(handle, ctx).await;
}

/// Without the LoadTestSchedule CRD (an upgrade that has not applied it yet) the schedule
/// controller neither fails nor ends the operator: it looks again every 30 s, and stops on
/// shutdown.
#[tokio::test(start_paused = true)]
async fn a_missing_crd_is_waited_for_and_shutdown_still_stops() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let config = crate::config::Config::try_parse_from(["volley-operator"]).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let began = tokio::time::Instant::now();
    let task = tokio::spawn(async move {
        super::run(client, &config, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    for attempt in 0..2u64 {
        let (request, send) = handle.next_request().await.expect("a list");
        assert_eq!(
            request.uri().to_string(),
            "/apis/volley.dev/v1alpha1/loadtestschedules?&limit=1"
        );
        assert!(began.elapsed() >= Duration::from_secs(30 * attempt));
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(
                    serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Failure", "message": "the server could not find the requested resource",
                        "reason": "NotFound", "code": 404}))
                    .unwrap(),
                ))
                .unwrap(),
        );
    }
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
