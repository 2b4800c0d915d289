//! The webhook's decisions on real AdmissionReview JSON, and the `SubjectAccessReview` it sends,
//! against kube's mock API service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::fixtures;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A LoadTest object as the API server sends it (the fixture, plus `extra` spec keys merged
/// into `spec.runners`).
pub(crate) fn object(runners: Value) -> Value {
    let mut v = serde_json::to_value(fixtures::loadtest("web", 2)).unwrap();
    if let Some(map) = runners.as_object() {
        for (k, x) in map {
            v["spec"]["runners"][k] = x.clone();
        }
    }
    v
}

/// A whole AdmissionReview (admission.k8s.io/v1) as the API server posts it.
pub(crate) fn review_json(operation: &str, object: Value, old: Option<Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "volley.dev", "version": "v1alpha1", "kind": "LoadTest"},
            "resource": {"group": "volley.dev", "version": "v1alpha1", "resource": "loadtests"},
            "requestKind": {"group": "volley.dev", "version": "v1alpha1", "kind": "LoadTest"},
            "requestResource": {"group": "volley.dev", "version": "v1alpha1", "resource": "loadtests"},
            "name": "web", "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "alice", "uid": "u-1", "groups": ["devs", "system:authenticated"],
                         "extra": {"scopes": ["view"]}},
            "object": object, "oldObject": old, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

fn request(operation: &str, object: Value, old: Option<Value>) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review_json(operation, object, old)).unwrap();
    review.try_into().unwrap()
}

fn denied_paths(d: Decision) -> Vec<String> {
    match d {
        Decision::Deny(errors) => errors.into_iter().map(|e| e.path).collect(),
        other => panic!("not denied: {other:?}"),
    }
}

fn secret_env(name: &str, secret: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}})
}

#[test]
fn a_valid_loadtest_is_allowed() {
    let d = decide(
        &request("CREATE", object(json!({})), None),
        &fixtures::defaults(),
    );
    assert_eq!(d, Decision::Allow);
}

#[test]
fn every_semantic_and_cluster_error_is_listed_with_its_path() {
    let mut o = object(json!({"env": [{"name": "VOLLEY_TOKEN", "value": "x"}]}));
    o["spec"]["data"] = json!([{"name": "users", "file": "users.csv"}]);
    o["spec"]["scenarios"][0]["vus"] = json!(0);
    let paths = denied_paths(decide(&request("CREATE", o, None), &fixtures::defaults()));
    assert!(
        paths.contains(&"spec.data[0].file".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"spec.runners.env[0].name".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p.starts_with("spec.scenarios[0].vus")),
        "{paths:?}"
    );
}

#[test]
fn an_unknown_field_is_refused() {
    // The API server prunes undeclared fields before admission (docs/security.md); one that
    // reaches the webhook (a CRD newer than the operator) is refused, not silently ignored.
    let mut o = object(json!({}));
    o["spec"]["scenarios"][0]["maxVus"] = json!(10);
    let paths = denied_paths(decide(&request("CREATE", o, None), &fixtures::defaults()));
    assert_eq!(paths, ["spec.scenarios[0].maxVus"]);
}

#[test]
fn a_value_of_the_wrong_type_is_refused() {
    let mut o = object(json!({}));
    o["spec"]["scenarios"][0]["duration"] = json!("soon");
    let paths = denied_paths(decide(&request("CREATE", o, None), &fixtures::defaults()));
    assert_eq!(paths, ["spec.scenarios[0].duration"]);
}

#[test]
fn the_operators_allow_list_image_and_proxy_rules_apply() {
    let guarded = fixtures::guarded("*.team-b.svc");
    let paths = denied_paths(decide(
        &request("CREATE", object(json!({})), None),
        &guarded,
    ));
    assert_eq!(paths, ["spec.target.baseUrl"]);

    let allowed = fixtures::guarded("*.team-a.svc");
    let image = object(json!({"image": "evil/runner:1"}));
    let paths = denied_paths(decide(&request("CREATE", image, None), &allowed));
    assert_eq!(paths, ["spec.runners.image"]);
    let proxy = object(json!({"env": [{"name": "https_proxy", "value": "http://p:3128"}]}));
    let paths = denied_paths(decide(&request("CREATE", proxy, None), &allowed));
    assert_eq!(paths, ["spec.runners.env[0].name"]);
    // Without a list, the same spec is fine.
    let image = object(json!({"image": "evil/runner:1"}));
    assert_eq!(
        decide(&request("CREATE", image, None), &fixtures::defaults()),
        Decision::Allow
    );
}

#[test]
fn secrets_the_spec_names_are_checked_once_each() {
    let o = object(json!({
        "env": [secret_env("A", "db"), {"name": "B", "value": "x"}, secret_env("C", "db")],
        "envFrom": [{"secretRef": {"name": "api-keys"}}, {"configMapRef": {"name": "cfg"}}]
    }));
    let d = decide(&request("CREATE", o, None), &fixtures::defaults());
    assert_eq!(
        d,
        Decision::CheckSecrets(vec![
            SecretRef {
                path: "spec.runners.env[0].valueFrom.secretKeyRef.name".into(),
                name: "db".into()
            },
            SecretRef {
                path: "spec.runners.envFrom[0].secretRef.name".into(),
                name: "api-keys".into()
            },
        ])
    );
}

#[test]
fn an_update_checks_only_secrets_it_adds() {
    let old = object(json!({"env": [secret_env("A", "db")]}));
    let new = object(json!({"env": [secret_env("A", "db"), secret_env("B", "other")]}));
    let d = decide(&request("UPDATE", new, Some(old)), &fixtures::defaults());
    assert_eq!(
        d,
        Decision::CheckSecrets(vec![SecretRef {
            path: "spec.runners.env[1].valueFrom.secretKeyRef.name".into(),
            name: "other".into()
        }])
    );
}

#[test]
fn an_update_that_keeps_the_spec_is_allowed_even_when_the_spec_is_invalid() {
    // A LoadTest stored before the webhook existed must stay labelable and deletable (the
    // operator's finalizer removal is such an update).
    let mut bad = object(json!({}));
    bad["spec"]["data"] = json!([{"name": "users", "file": "users.csv"}]);
    let mut labelled = bad.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    assert_eq!(
        decide(
            &request("UPDATE", labelled, Some(bad.clone())),
            &fixtures::defaults()
        ),
        Decision::Allow
    );
    // Changing the spec of a stored LoadTest (running or not) is judged like a creation.
    let mut changed = bad.clone();
    changed["spec"]["runners"]["parallelism"] = json!(3);
    let paths = denied_paths(decide(
        &request("UPDATE", changed, Some(bad)),
        &fixtures::defaults(),
    ));
    assert_eq!(paths, ["spec.data[0].file"]);
}

#[test]
fn a_denial_lists_every_problem_for_kubectl() {
    let req = request("CREATE", object(json!({})), None);
    let errors = vec![
        FieldError {
            path: "spec.a".into(),
            message: "first".into(),
        },
        FieldError {
            path: "spec.b".into(),
            message: "second".into(),
        },
    ];
    let json = serde_json::to_value(respond(&req, &errors).into_review()).unwrap();
    let response = &json["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    assert_eq!(
        response["status"]["message"],
        "2 problems with this LoadTest: spec.a: first; spec.b: second"
    );
    assert_eq!(
        response["status"]["details"]["causes"][1]["field"],
        "spec.b"
    );
    let ok = serde_json::to_value(respond(&req, &[]).into_review()).unwrap();
    assert_eq!(ok["response"]["allowed"], true);
    assert_eq!(ok["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(ok["kind"], "AdmissionReview");
}

/// Answers the next API call, a SubjectAccessReview, allowing it when it asks about a Secret
/// in `readable`; returns the review that was sent.
pub(crate) async fn answer_access_review(handle: &mut Handle, readable: &[&str]) -> Value {
    let (request, send) =
        tokio::time::timeout(std::time::Duration::from_secs(60), handle.next_request())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(request.method(), "POST");
    assert_eq!(
        request.uri().path(),
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    let body: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    let mut answer = body.clone();
    let name = body["spec"]["resourceAttributes"]["name"].as_str().unwrap();
    answer["status"] = if readable.contains(&name) {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding"})
    } else {
        json!({"allowed": false})
    };
    send.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    body
}

#[tokio::test]
async fn a_secret_the_user_cannot_read_is_refused_after_asking_the_api_server() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let o = object(json!({"env": [secret_env("A", "db"), secret_env("B", "prod-db")]}));
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review_json("CREATE", o, None)).unwrap();
    let task =
        tokio::spawn(async move { super::review(&client, &fixtures::defaults(), review).await });
    let mut sent = [
        answer_access_review(&mut handle, &["db"]).await,
        answer_access_review(&mut handle, &["db"]).await,
    ];
    sent.sort_by_key(|r| r["spec"]["resourceAttributes"]["name"].to_string());
    assert_eq!(
        sent[0]["spec"],
        json!({
            "user": "alice", "uid": "u-1", "groups": ["devs", "system:authenticated"],
            "extra": {"scopes": ["view"]},
            "resourceAttributes": {"namespace": "team-a", "verb": "get", "group": "",
                                   "version": "v1", "resource": "secrets", "name": "db"}
        })
    );
    assert_eq!(sent[1]["spec"]["resourceAttributes"]["name"], "prod-db");
    let answered = serde_json::to_value(task.await.unwrap()).unwrap();
    let response = &answered["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "1 problem with this LoadTest: spec.runners.env[1].valueFrom.secretKeyRef.name: user \
             `alice` may not get Secret `prod-db` in namespace `team-a`"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn secrets_the_user_can_read_are_admitted_and_an_unanswered_check_denies() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let o = object(json!({"envFrom": [{"secretRef": {"name": "api-keys"}}]}));
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review_json("CREATE", o.clone(), None)).unwrap();
    let c = client.clone();
    let task = tokio::spawn(async move { super::review(&c, &fixtures::defaults(), review).await });
    answer_access_review(&mut handle, &["api-keys"]).await;
    let answered = serde_json::to_value(task.await.unwrap()).unwrap();
    assert_eq!(answered["response"]["allowed"], true);

    // The API server fails the SubjectAccessReview: deny (failing open would hand out the
    // Secret).
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review_json("CREATE", o, None)).unwrap();
    let task =
        tokio::spawn(async move { super::review(&client, &fixtures::defaults(), review).await });
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(
        Response::builder()
            .status(500)
            .body(Body::from(
                serde_json::to_vec(
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "InternalError", "code": 500, "message": "etcd is down"}),
                )
                .unwrap(),
            ))
            .unwrap(),
    );
    let answered = serde_json::to_value(task.await.unwrap()).unwrap();
    assert_eq!(answered["response"]["allowed"], false);
    assert!(
        answered["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("could not ask the API server")
    );
}

#[tokio::test(start_paused = true)]
async fn an_api_server_that_does_not_answer_in_time_denies() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let o = object(json!({"envFrom": [{"secretRef": {"name": "api-keys"}}]}));
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(review_json("CREATE", o, None)).unwrap();
    let task =
        tokio::spawn(async move { super::review(&client, &fixtures::defaults(), review).await });
    // Take the request and never answer it.
    let (_request, _send) = handle.next_request().await.unwrap();
    let answered = serde_json::to_value(task.await.unwrap()).unwrap();
    assert_eq!(answered["response"]["allowed"], false);
    assert!(
        answered["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{answered}"
    );
}

/// The Secrets of the Prometheus credentials are checked like the runners' (the operator
/// reads them on the author's behalf).
#[test]
fn prometheus_credentials_are_secrets_the_author_must_be_able_to_read() {
    let lt = fixtures::loadtest_yaml(
        "web",
        "observe: {prometheus: {url: 'http://p:9090', auth: {basicAuth: {usernameSecretRef: {name: u, key: k}, \
         passwordSecretRef: {name: pw, key: k}}}, queries: [{name: q, query: up}]}}",
    );
    let refs: Vec<(String, String)> = secret_refs(&lt.spec)
        .into_iter()
        .map(|r| (r.path, r.name))
        .collect();
    assert_eq!(
        refs,
        [
            (
                "spec.observe.prometheus.auth.basicAuth.usernameSecretRef.name".to_string(),
                "u".to_string()
            ),
            (
                "spec.observe.prometheus.auth.basicAuth.passwordSecretRef.name".to_string(),
                "pw".to_string()
            ),
        ]
    );
}
