//! A finished run's report over HTTP, on the observability port (for `kubectl port-forward`):
//! `GET /reports/{namespace}/{name}` is the HTML report and `.../junit.xml` the JUnit XML, both
//! rendered ([`volley_report`]) from the `summary.json` of the LoadTest's report ConfigMap.
//!
//! Only a ConfigMap the operator wrote is served: named `{name}-report` and owned by the
//! LoadTest `name`; any other ConfigMap is a 404, so this route reads nothing but Volley's own
//! reports (which carry figures and names, never the spec or a credential).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use volley_report::Summary;

use crate::report::{REPORT_KEY, report_name};

/// The HTML report of a LoadTest.
pub const REPORT_PATH: &str = "/reports/{namespace}/{name}";
/// Its JUnit XML.
pub const JUNIT_PATH: &str = "/reports/{namespace}/{name}/junit.xml";

/// The two report routes, reading ConfigMaps with `client`.
pub fn reports_router(client: Client) -> Router {
    Router::new()
        .route(REPORT_PATH, get(html))
        .route(JUNIT_PATH, get(junit))
        .with_state(client)
}

async fn html(State(client): State<Client>, Path((ns, name)): Path<(String, String)>) -> Response {
    match summary(client, &ns, &name).await {
        Ok(s) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            volley_report::html::render(&s, None),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn junit(State(client): State<Client>, Path((ns, name)): Path<(String, String)>) -> Response {
    match summary(client, &ns, &name).await {
        Ok(s) => (
            [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
            volley_report::junit::render(&s),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The summary in the report ConfigMap of LoadTest `ns/name`, or the status and text to answer.
async fn summary(client: Client, ns: &str, name: &str) -> Result<Summary, (StatusCode, String)> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!("no report of LoadTest {ns}/{name} (has it finished?)\n"),
        )
    };
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let cm = match api.get_opt(&report_name(name)).await {
        Ok(Some(cm)) => cm,
        Ok(None) => return Err(not_found()),
        Err(e) => {
            tracing::warn!(namespace = ns, loadtest = name, error = %e, "cannot read a report ConfigMap");
            return Err((
                StatusCode::BAD_GATEWAY,
                format!("cannot read the report of {ns}/{name} from the API server\n"),
            ));
        }
    };
    let ours = cm
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "LoadTest" && o.name == name);
    let json = cm.data.as_ref().and_then(|d| d.get(REPORT_KEY));
    let (true, Some(json)) = (ours, json) else {
        return Err(not_found());
    };
    volley_report::load(json.as_bytes()).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the report of {ns}/{name} cannot be read: {e}\n"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;

    const SUMMARY: &str = r#"{"name":"web","phase":"Failed","verdict":"Failed","reason":"ThresholdsFailed","durationSeconds":3.0,"runners":2,
      "metrics":{"requests":4711,"failures":9,"errorRate":0.0019,"rps":1570.3,"iterations":4711,"droppedIterations":0,
      "latencyMs":{"min":1,"mean":2,"p50":2,"p90":3,"p95":4,"p99":5,"max":9},"dataReceivedBytes":1,"dataSentBytes":1,"p95":"4ms","errors":"0.19%"},
      "thresholds":[{"expr":"error_rate < 0.1%","scope":"all","actual":"0.19%","passed":false}],
      "series":[{"second":1,"intervalMs":1000,"requests":1570,"failures":3,"rps":1570.0,"p50Ms":2,"p95Ms":4,"p99Ms":5}]}"#;

    fn configmap(owner: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "web-report", "namespace": "team-a",
                 "ownerReferences": [{"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest", "name": owner, "uid": "u"}]},
               "data": {"summary.json": SUMMARY}})
    }

    /// Serves the report routes on 127.0.0.1 with a mock API server answering each ConfigMap
    /// read with `answers` in turn; returns the base URL and the paths the API server saw.
    async fn start(answers: Vec<(u16, Value)>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let api = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (code, body) in answers {
                let (req, send) =
                    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
                        .await
                        .expect("a read")
                        .expect("a request");
                seen.push(format!("{} {}", req.method(), req.uri()));
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
            seen
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, reports_router(client)).await });
        (base, api)
    }

    #[tokio::test]
    async fn serves_the_report_configmap_as_html_and_junit() {
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
        let (base, api) = start(vec![
            (200, configmap("web")),
            (200, configmap("web")),
            (404, not_found),
            (200, configmap("someone-else")),
        ])
        .await;
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}")).send();

        let page = get("/reports/team-a/web").await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let page = page.text().await.unwrap();
        assert!(page.contains("id=\"m-requests\">4711<"), "{page}");
        assert!(page.contains("id=\"chart-rps\""));

        let xml = get("/reports/team-a/web/junit.xml").await.unwrap();
        assert_eq!(xml.status(), 200);
        let xml = xml.text().await.unwrap();
        assert!(xml.contains("<testsuite name=\"web\""), "{xml}");
        assert!(xml.contains("<failure message=\"error_rate &lt; 0.1% failed: actual 0.19%\""));

        // No ConfigMap, and a ConfigMap of that name the run does not own: both 404.
        assert_eq!(get("/reports/team-a/web").await.unwrap().status(), 404);
        assert_eq!(get("/reports/team-a/web").await.unwrap().status(), 404);

        let seen = api.await.unwrap();
        assert_eq!(seen.len(), 4);
        for s in seen {
            assert_eq!(s, "GET /api/v1/namespaces/team-a/configmaps/web-report");
        }
    }
}
