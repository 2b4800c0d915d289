//! The webhook over real HTTPS on 127.0.0.1: a generated certificate, an AdmissionReview
//! posted by a client that trusts only the generated CA, the certificate reload, and the CA
//! bundle patch; the Kubernetes API through kube's mock service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::admission::tests::{answer_access_review, object, review_json};
use crate::fixtures;

const LOCAL: &str = "127.0.0.1";

/// Starts the webhook with `store` on 127.0.0.1; its base URL and the stop sender.
async fn start(store: Arc<CertStore>, client: kube::Client) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(serve_tls(
        listener,
        router(client, fixtures::defaults()),
        store,
        stop_rx,
    ));
    (base, stop_tx)
}

/// An HTTPS client trusting only `ca_pem`.
fn trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

fn mock_client() -> (
    kube::Client,
    tower_test::mock::Handle<Request<Body>, Response<Body>>,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

#[tokio::test]
async fn an_admission_review_over_https_is_answered() {
    let generated = generate(&[LOCAL.to_string()], Timestamp::now()).unwrap();
    let store = CertStore::new(certified_key(&generated.serving).unwrap());
    let (client, mut handle) = mock_client();
    let (base, stop) = start(store, client).await;
    let http = trusting(&generated.ca_pem);

    // Valid, with a Secret the user may not read: the webhook asks the API server, then denies.
    let o = object(
        json!({"env": [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "prod-db", "key": "password"}}}]}),
    );
    let post = http
        .post(format!("{base}{VALIDATE_PATH}"))
        .json(&review_json("CREATE", o, None))
        .send();
    let (answer, _) = tokio::join!(post, answer_access_review(&mut handle, &[]));
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(
        body["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.runners.env[0].valueFrom.secretKeyRef.name: user `alice` may not get Secret `prod-db`"),
        "{body}"
    );

    // An invalid spec is denied without any API call.
    let mut bad = object(json!({}));
    bad["spec"]["data"] = json!([{"name": "users", "file": "users.csv"}]);
    let body: Value = http
        .post(format!("{base}{VALIDATE_PATH}"))
        .json(&review_json("CREATE", bad, None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(
        body["response"]["status"]["details"]["causes"][0]["field"],
        "spec.data[0].file"
    );

    // A client that does not trust the generated CA gets no answer.
    let other = generate(&[LOCAL.to_string()], Timestamp::now()).unwrap();
    assert!(
        trusting(&other.ca_pem)
            .post(format!("{base}{VALIDATE_PATH}"))
            .json(&review_json("CREATE", object(json!({})), None))
            .send()
            .await
            .is_err()
    );
    stop.send(true).unwrap();
}

#[tokio::test]
async fn changed_certificate_files_are_served_after_a_refresh() {
    let dir = std::env::temp_dir().join(format!("volley-webhook-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |g: &Generated| {
        std::fs::write(dir.join("tls.crt"), &g.serving.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &g.serving.key).unwrap();
    };
    let first = generate(&[LOCAL.to_string()], Timestamp::now()).unwrap();
    write(&first);
    let mut certs = Certificates::start(CertSource::Dir(dir.clone())).unwrap();
    assert!(
        certs.configuration().is_none(),
        "mounted files publish no CA"
    );
    let (client, _handle) = mock_client();
    let (base, stop) = start(certs.store.clone(), client).await;
    let valid = || review_json("CREATE", object(json!({})), None);
    let url = format!("{base}{VALIDATE_PATH}");
    let ok = trusting(&first.ca_pem)
        .post(&url)
        .json(&valid())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.json::<Value>().await.unwrap()["response"]["allowed"],
        true
    );

    let second = generate(&[LOCAL.to_string()], Timestamp::now()).unwrap();
    write(&second);
    assert!(!certs.refresh(Timestamp::now()).unwrap());
    let ok = trusting(&second.ca_pem)
        .post(&url)
        .json(&valid())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok.json::<Value>().await.unwrap()["response"]["allowed"],
        true
    );
    assert!(
        trusting(&first.ca_pem)
            .post(&url)
            .json(&valid())
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // A broken file keeps the last good certificate.
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    assert!(certs.refresh(Timestamp::now()).is_err());
    let ok = trusting(&second.ca_pem)
        .post(&url)
        .json(&valid())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    stop.send(true).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generated_certificate_is_renewed_when_a_third_of_its_life_is_left() {
    let now = fixtures::t0();
    let g = generate(&service_dns_names("volley-operator", "volley-system"), now).unwrap();
    assert!(!needs_renewal(g.not_after, now));
    let late = now + GENERATED_LIFETIME - GENERATED_LIFETIME / 3 + SignedDuration::from_secs(1);
    assert!(needs_renewal(g.not_after, late));
    assert!(!needs_renewal(
        g.not_after,
        late - SignedDuration::from_secs(3600)
    ));
    assert!(g.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    certified_key(&g.serving).unwrap();
}

#[test]
fn the_generated_certificate_names_the_service() {
    assert_eq!(
        service_dns_names("volley-operator", "ops"),
        [
            "volley-operator.ops.svc",
            "volley-operator.ops.svc.cluster.local",
            "volley-operator.ops",
            "volley-operator"
        ]
    );
}

#[tokio::test]
async fn the_leader_publishes_the_ca_into_every_webhook_of_the_configuration() {
    let (client, mut handle) = mock_client();
    let task =
        tokio::spawn(async move { publish_ca_bundle(&client, "volley-operator", "CA-PEM").await });
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.method(), "GET");
    assert_eq!(
        request.uri().path(),
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/volley-operator"
    );
    let hook = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"name": "volley-operator", "namespace": "volley-system"}}})
    };
    let config = json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "volley-operator"},
        "webhooks": [hook("loadtests.volley.dev"), hook("other.volley.dev")]});
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&config).unwrap()))
            .unwrap(),
    );
    let (request, send) = handle.next_request().await.unwrap();
    assert_eq!(request.method(), "PATCH");
    assert_eq!(
        request.headers()["content-type"],
        "application/strategic-merge-patch+json"
    );
    let body: Value =
        serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
    // base64("CA-PEM")
    assert_eq!(
        body,
        json!({"webhooks": [
            {"name": "loadtests.volley.dev", "clientConfig": {"caBundle": "Q0EtUEVN"}},
            {"name": "other.volley.dev", "clientConfig": {"caBundle": "Q0EtUEVN"}}
        ]})
    );
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&config).unwrap()))
            .unwrap(),
    );
    task.await.unwrap().unwrap();

    // Already published: no patch.
    let mut published: ValidatingWebhookConfiguration = serde_json::from_value(config).unwrap();
    for h in published.webhooks.iter_mut().flatten() {
        h.client_config.ca_bundle = Some(k8s_openapi::ByteString(b"CA-PEM".to_vec()));
    }
    assert_eq!(ca_bundle_patch(&published, "CA-PEM"), None);
}

#[tokio::test]
async fn a_generated_certificate_is_renewed_with_a_new_ca_to_publish() {
    let mut certs = Certificates::start(CertSource::Generated {
        names: vec![LOCAL.to_string()],
        configuration: "volley-operator".into(),
    })
    .unwrap();
    assert_eq!(certs.configuration(), Some("volley-operator"));
    let first_ca = certs.ca_pem.read().unwrap().clone().unwrap();
    let (client, _handle) = mock_client();
    let (base, stop) = start(certs.store.clone(), client).await;
    let url = format!("{base}{VALIDATE_PATH}");
    let valid = || review_json("CREATE", object(json!({})), None);
    assert!(
        trusting(&first_ca)
            .post(&url)
            .json(&valid())
            .send()
            .await
            .is_ok()
    );

    assert!(!certs.refresh(Timestamp::now()).unwrap(), "young: kept");
    let late = Timestamp::now() + SignedDuration::from_hours(300 * 24);
    assert!(
        certs.refresh(late).unwrap(),
        "a third of its life left: renewed"
    );
    let second_ca = certs.ca_pem.read().unwrap().clone().unwrap();
    assert_ne!(first_ca, second_ca);
    // Renewed as of `late`, so not valid yet now: only that the old one is no longer served
    // can be seen from here.
    assert!(
        trusting(&first_ca)
            .post(&url)
            .json(&valid())
            .send()
            .await
            .is_err(),
        "the renewed certificate is served"
    );
    stop.send(true).unwrap();
}
