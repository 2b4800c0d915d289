//! Leader election: the pure decision, the Lease calls and the leader label on the operator's
//! own pod, against kube's mock API service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{at, t0};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/volley-system/leases";

fn lease(holder: Option<&str>, renewed: i64) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "volley-operator", "namespace": "volley-system", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2,
                 "renewTime": at(renewed).to_string(), "acquireTime": t0().to_string()}
    }))
    .unwrap()
}

#[test]
fn decisions() {
    assert_eq!(decide(None, "a", t0()), LeaseAction::Create);
    assert_eq!(
        decide(Some(&lease(Some("a"), 0)), "a", at(100)),
        LeaseAction::Renew
    );
    assert_eq!(
        decide(Some(&lease(Some("b"), 0)), "a", at(14)),
        LeaseAction::Wait { holder: "b".into() }
    );
    assert_eq!(
        decide(Some(&lease(Some("b"), 0)), "a", at(15)),
        LeaseAction::TakeOver,
        "expired at renewTime + leaseDurationSeconds"
    );
    assert_eq!(
        decide(Some(&lease(None, 0)), "a", at(1)),
        LeaseAction::TakeOver
    );
}

#[test]
fn a_takeover_counts_a_transition_and_keeps_the_resource_version() {
    let config = LeaseConfig::new("volley-operator", "a");
    let read = lease(Some("b"), 0);
    let l = claimed(
        Some(&read),
        &LeaseAction::TakeOver,
        &config,
        "volley-system",
        at(20),
    );
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(3));
    assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
    assert_eq!(l.metadata.resource_version.as_deref(), Some("7"));
    let renewed = claimed(
        Some(&lease(Some("a"), 0)),
        &LeaseAction::Renew,
        &config,
        "ns",
        at(5),
    );
    let spec = renewed.spec.unwrap();
    assert_eq!(
        spec.acquire_time,
        Some(MicroTime(t0())),
        "a renewal keeps it"
    );
    assert_eq!(spec.renew_time, Some(MicroTime(at(5))));
    assert_eq!(spec.lease_transitions, Some(2));
}

fn lock() -> (LeaseLock, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let l = LeaseLock::new(
        client,
        "volley-system",
        LeaseConfig::new("volley-operator", "op-a"),
    );
    (l, handle)
}

async fn serve(handle: &mut Handle, code: u16, answer: Value) -> (String, String, Value) {
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(60), handle.next_request())
            .await
            .unwrap()
            .unwrap();
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    (method, uri, body)
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}

fn conflict_status() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

#[tokio::test]
async fn the_first_replica_creates_the_lease() {
    let (l, mut handle) = lock();
    let task = tokio::spawn(async move { l.try_acquire(at(1)).await });
    let (m, uri, _) = serve(&mut handle, 404, not_found()).await;
    assert_eq!(
        (m.as_str(), uri.as_str()),
        ("GET", &*format!("{LEASE}/volley-operator"))
    );
    let (m, uri, body) = serve(&mut handle, 201, json!({})).await;
    assert_eq!((m.as_str(), uri.as_str()), ("POST", &*format!("{LEASE}?")));
    assert_eq!(body["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["name"], "volley-operator");
    assert_eq!(body["spec"]["holderIdentity"], "op-a");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert!(body["spec"]["renewTime"].is_string());
    assert!(task.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_live_holder_is_left_alone_and_a_lost_race_is_no_error() {
    let (l, mut handle) = lock();
    let live = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let task = tokio::spawn(async move { l.try_acquire(at(5)).await });
    let (m, _, _) = serve(&mut handle, 200, live).await;
    assert_eq!(m, "GET");
    assert!(!task.await.unwrap().unwrap(), "op-b renewed 5 s ago");

    let (l, mut handle) = lock();
    let expired = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let task = tokio::spawn(async move { l.try_acquire(at(60)).await });
    serve(&mut handle, 200, expired).await;
    let (m, uri, body) = serve(&mut handle, 409, conflict_status()).await;
    assert_eq!(
        (m.as_str(), uri.as_str()),
        ("PUT", &*format!("{LEASE}/volley-operator?"))
    );
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "the replace is conditional on the version read"
    );
    assert_eq!(body["spec"]["holderIdentity"], "op-a");
    assert_eq!(body["spec"]["leaseTransitions"], 3);
    assert!(!task.await.unwrap().unwrap(), "409: another replica won");
}

#[tokio::test]
async fn release_clears_the_holder_only_when_it_is_us() {
    let (l, mut handle) = lock();
    let ours = serde_json::to_value(lease(Some("op-a"), 0)).unwrap();
    let task = tokio::spawn(async move { l.release().await });
    serve(&mut handle, 200, ours.clone()).await;
    let (m, _, body) = serve(&mut handle, 200, ours).await;
    assert_eq!(m, "PUT");
    assert!(
        body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null)
    );
    task.await.unwrap().unwrap();

    let (l, mut handle) = lock();
    let theirs = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let task = tokio::spawn(async move { l.release().await });
    serve(&mut handle, 200, theirs).await;
    task.await.unwrap().unwrap();
    drop(handle);
}

// The leader label. An elector's calls go through one mock API server that answers with
// `answer` and reports every call, in order, on the returned channel.

const POD: &str = "/api/v1/namespaces/volley-system/pods/op-a";

/// One API call: method, path (without the query), `Content-Type`, body.
#[derive(Clone, Debug)]
struct Call {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

impl Call {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    /// The value this call gives the leader label, if it is a patch of our pod.
    fn label(&self) -> Option<Value> {
        self.is("PATCH", POD)
            .then(|| self.body["metadata"]["labels"][LEADER_LABEL].clone())
    }
}

type Answer = Box<dyn FnMut(&Call) -> (u16, Value) + Send>;

fn elector(
    with_pod: bool,
    mut answer: Answer,
) -> (Elector, tokio::sync::mpsc::UnboundedReceiver<Call>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let lock = LeaseLock::new(
        client.clone(),
        "volley-system",
        LeaseConfig::new("volley-operator", "op-a"),
    );
    let pod = with_pod.then(|| OwnPod::new(client, "volley-system", "op-a"));
    let (calls_tx, calls) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let call = Call {
                method: request.method().to_string(),
                path: request.uri().path().to_string(),
                content_type,
                body: {
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    if bytes.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&bytes).unwrap()
                    }
                },
            };
            let (code, body) = answer(&call);
            let _ = calls_tx.send(call);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Elector::new(lock, pod), calls)
}

fn pod(leader: Option<&str>) -> Value {
    let mut labels = json!({"app.kubernetes.io/name": "volley-operator"});
    if let Some(v) = leader {
        labels[LEADER_LABEL] = json!(v);
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "op-a", "namespace": "volley-system", "labels": labels}})
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "code": code, "message": reason})
}

/// A cluster where the Lease does not exist until we create it and our pod accepts every
/// patch; `lease_after_create` answers the GETs of the Lease once it is created.
fn cluster(mut lease_after_create: impl FnMut() -> Value + Send + 'static) -> Answer {
    let mut created = false;
    Box::new(move |call| {
        if call.path == POD {
            let leader = call.label().and_then(|v| v.as_str().map(str::to_string));
            (200, pod(leader.as_deref()))
        } else if call.is("GET", &format!("{LEASE}/volley-operator")) {
            if created {
                (200, lease_after_create())
            } else {
                (404, not_found())
            }
        } else if call.is("POST", LEASE) {
            created = true;
            (201, call.body.clone())
        } else if call.is("PUT", &format!("{LEASE}/volley-operator")) {
            (200, call.body.clone())
        } else {
            panic!("unexpected call {call:?}")
        }
    })
}

async fn next(calls: &mut tokio::sync::mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(std::time::Duration::from_secs(600), calls.recv())
        .await
        .expect("a call")
        .expect("the mock API server is running")
}

/// (method, path) of a call, for comparing sequences.
fn mp(call: &Call) -> (String, String) {
    (call.method.clone(), call.path.clone())
}

fn expect(method: &str, path: &str) -> (String, String) {
    (method.to_string(), path.to_string())
}

#[test]
fn the_label_patches_set_and_remove_the_leader_label() {
    assert_eq!(LEADER_LABEL, "volley.dev/leader");
    assert_eq!(
        leader_label_patch(true),
        json!({"metadata": {"labels": {"volley.dev/leader": "true"}}})
    );
    assert_eq!(
        leader_label_patch(false),
        json!({"metadata": {"labels": {"volley.dev/leader": null}}}),
        "null removes the label in a JSON merge patch"
    );
}

#[tokio::test(start_paused = true)]
async fn a_term_clears_the_label_then_leads_labelled_then_unlabels_before_releasing() {
    let ours = serde_json::to_value(lease(Some("op-a"), 0)).unwrap();
    let (elector, mut calls) = elector(true, cluster(move || ours.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (working_tx, working_rx) = tokio::sync::oneshot::channel();
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |stop| async move {
                let _ = working_tx.send(());
                stop.await;
                "stopped"
            })
            .await
    });

    // Startup: the label goes before the Lease is even read.
    let clear = next(&mut calls).await;
    assert_eq!(mp(&clear), expect("PATCH", POD));
    assert_eq!(clear.content_type, "application/merge-patch+json");
    assert_eq!(
        clear.body,
        json!({"metadata": {"labels": {"volley.dev/leader": null}}})
    );
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(mp(&next(&mut calls).await), expect("POST", LEASE));
    // Leading: the pod gets the label, and the work runs.
    let set = next(&mut calls).await;
    assert_eq!(mp(&set), expect("PATCH", POD));
    assert_eq!(set.content_type, "application/merge-patch+json");
    assert_eq!(
        set.body,
        json!({"metadata": {"labels": {"volley.dev/leader": "true"}}})
    );
    working_rx.await.unwrap();

    // Shutdown: the label goes, then the Lease is released.
    stop_tx.send(true).unwrap();
    assert_eq!(next(&mut calls).await.label(), Some(Value::Null));
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    let release = next(&mut calls).await;
    assert_eq!(
        mp(&release),
        expect("PUT", &format!("{LEASE}/volley-operator"))
    );
    assert!(
        release.body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null)
    );
    assert_eq!(
        term.await.unwrap(),
        Term::Led {
            lost: false,
            result: "stopped"
        }
    );
    assert!(calls.recv().await.is_none(), "no call after the term");
}

#[tokio::test(start_paused = true)]
async fn losing_the_lease_removes_the_label_before_the_work_has_stopped() {
    // Once created, the Lease is found renewed by op-b: the first renewal finds it lost.
    let theirs = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let (elector, mut calls) = elector(true, cluster(move || theirs.clone()));
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (unlabelled_tx, unlabelled_rx) = tokio::sync::oneshot::channel::<()>();
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |stop| async move {
                stop.await;
                // The work may take a while to stop; the label is gone already.
                unlabelled_rx.await.unwrap();
                "lost"
            })
            .await
    });
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(next(&mut calls).await);
    }
    assert_eq!(
        seen.iter().map(mp).collect::<Vec<_>>(),
        [
            expect("PATCH", POD),
            expect("GET", &format!("{LEASE}/volley-operator")),
            expect("POST", LEASE),
            expect("PATCH", POD),
            expect("GET", &format!("{LEASE}/volley-operator")),
        ]
    );
    assert_eq!(seen[0].label(), Some(Value::Null));
    assert_eq!(seen[3].label(), Some(json!("true")));
    // The renewal found op-b holding the Lease: the label goes while the work still runs.
    let unlabel = next(&mut calls).await;
    assert_eq!(unlabel.label(), Some(Value::Null));
    assert!(!term.is_finished());
    unlabelled_tx.send(()).unwrap();
    // Release: the Lease is op-b's, so it is only read.
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(
        term.await.unwrap(),
        Term::Led {
            lost: true,
            result: "lost"
        }
    );
    assert!(calls.recv().await.is_none(), "no PUT of op-b's Lease");
}

#[tokio::test(start_paused = true)]
async fn failed_label_patches_are_retried_and_the_elector_carries_on() {
    // The first two patches of the pod fail (a 500, then a 403 while leading); the rest succeed.
    let ours = serde_json::to_value(lease(Some("op-a"), 0)).unwrap();
    let mut inner = cluster(move || ours.clone());
    let mut pod_patches = 0;
    let answer: Answer = Box::new(move |call| {
        if call.path == POD {
            pod_patches += 1;
            match pod_patches {
                1 => return (500, status(500, "InternalError")),
                3 => return (403, status(403, "Forbidden")),
                _ => {}
            }
        }
        inner(call)
    });
    let (elector, mut calls) = elector(true, answer);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |stop| async move {
                stop.await;
                "stopped"
            })
            .await
    });
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(next(&mut calls).await);
    }
    assert_eq!(
        seen.iter().map(mp).collect::<Vec<_>>(),
        [
            expect("PATCH", POD),
            expect("PATCH", POD),
            expect("GET", &format!("{LEASE}/volley-operator")),
            expect("POST", LEASE),
            expect("PATCH", POD),
            expect("PATCH", POD),
        ],
        "the failed removal is retried before campaigning; the failed label after winning"
    );
    let labels: Vec<Option<Value>> = seen.iter().map(Call::label).collect();
    assert_eq!(labels[0], Some(Value::Null));
    assert_eq!(labels[1], Some(Value::Null), "retried");
    assert_eq!(labels[4], Some(json!("true")));
    assert_eq!(labels[5], Some(json!("true")), "retried");
    // Backoff from retry_every: 2 s after the 500, 2 s after the 403.
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(4));
    stop_tx.send(true).unwrap();
    assert_eq!(next(&mut calls).await.label(), Some(Value::Null));
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("PUT", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(
        term.await.unwrap(),
        Term::Led {
            lost: false,
            result: "stopped"
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_label_that_cannot_be_written_delays_but_never_stops_the_elector() {
    // Patching the pod is forbidden (no RBAC): the elector campaigns after waiting the Lease
    // duration for the removal, leads, and steps down, retrying the label with backoff.
    let ours = serde_json::to_value(lease(Some("op-a"), 0)).unwrap();
    let mut inner = cluster(move || ours.clone());
    let answer: Answer = Box::new(move |call| {
        if call.path == POD {
            (403, status(403, "Forbidden"))
        } else {
            inner(call)
        }
    });
    let (elector, mut calls) = elector(true, answer);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (working_tx, working_rx) = tokio::sync::oneshot::channel();
    let started = tokio::time::Instant::now();
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |stop| async move {
                let _ = working_tx.send(tokio::time::Instant::now());
                stop.await;
                "stopped"
            })
            .await
    });
    let working_at = working_rx.await.unwrap();
    assert_eq!(
        working_at - started,
        std::time::Duration::from_secs(15),
        "campaigned after the Lease duration"
    );
    stop_tx.send(true).unwrap();
    assert_eq!(
        term.await.unwrap(),
        Term::Led {
            lost: false,
            result: "stopped"
        }
    );
    let mut seen = Vec::new();
    while let Ok(call) = calls.try_recv() {
        seen.push(call);
    }
    let removals_before_campaign = seen
        .iter()
        .take_while(|c| c.path == POD)
        .filter(|c| c.label() == Some(Value::Null))
        .count();
    // At 0, 2, 6 and 14 s (backoff 2, 4, 8 s); the next one would be at 30 s.
    assert_eq!(removals_before_campaign, 4);
    assert!(
        seen.iter().any(|c| c.label() == Some(json!("true"))),
        "tried to label"
    );
    assert!(
        seen.iter()
            .any(|c| c.method == "PUT" && c.path == format!("{LEASE}/volley-operator")),
        "released the Lease although the label could not be removed"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_pod_nothing_is_labelled() {
    let ours = serde_json::to_value(lease(Some("op-a"), 0)).unwrap();
    let (elector, mut calls) = elector(false, cluster(move || ours.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |stop| async move {
                stop.await;
            })
            .await
    });
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(mp(&next(&mut calls).await), expect("POST", LEASE));
    stop_tx.send(true).unwrap();
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("PUT", &format!("{LEASE}/volley-operator"))
    );
    assert_eq!(
        term.await.unwrap(),
        Term::Led {
            lost: false,
            result: ()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn stopped_while_campaigning_it_never_leads() {
    let theirs = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let mut answered = cluster(move || theirs.clone());
    // op-b holds the Lease from the start.
    let held = serde_json::to_value(lease(Some("op-b"), 0)).unwrap();
    let answer: Answer = Box::new(move |call| {
        if call.method == "GET" {
            (200, held.clone())
        } else {
            answered(call)
        }
    });
    let (elector, mut calls) = elector(true, answer);
    let (stop_tx, stop_rx) = watch::channel(false);
    let term = tokio::spawn(async move {
        elector
            .run(stop_rx, |_stop| async { unreachable!("never leads") })
            .await
    });
    assert_eq!(next(&mut calls).await.label(), Some(Value::Null));
    assert_eq!(
        mp(&next(&mut calls).await),
        expect("GET", &format!("{LEASE}/volley-operator"))
    );
    stop_tx.send(true).unwrap();
    assert_eq!(term.await.unwrap(), Term::<()>::NeverLed);
    while let Ok(call) = calls.try_recv() {
        assert_eq!(call.method, "GET", "only reads: no label, no Lease write");
    }
}

#[test]
fn a_failed_leader_label_write_says_what_actually_happened() {
    let api = |code: u16| {
        kube::Error::Api(
            kube::core::Status {
                code,
                ..Default::default()
            }
            .boxed(),
        )
    };
    let not_found = label_failure(&api(404), "op-a");
    assert!(
        not_found.contains("no pod `op-a`") && !not_found.contains("RBAC"),
        "{not_found}"
    );
    assert!(label_failure(&api(403), "op-a").contains("RBAC needs `patch` on pods"));
    assert_eq!(
        label_failure(&api(500), "op-a"),
        "the API server answered 500"
    );
}
