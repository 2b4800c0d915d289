//! The Prometheus client against a tiny fake server on 127.0.0.1: each failure a real server
//! can produce (down, slow, an error document, no data, several series) gives its own message,
//! credentials reach the server but never a message, and one failing query does not take the
//! others with it. The real Prometheus is exercised by `.ci/check-prometheus.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use volley_crds::spec::PrometheusQuery;
use volley_observe::{Credentials, Prometheus, QueryError, Window, observe};

const WINDOW: Window = Window {
    start_unix_ms: 1_767_225_600_000,
    end_unix_ms: 1_767_225_660_500,
};

/// What the fake server was asked: (path, params, Authorization header).
type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>, Option<String>)>>>;

/// Answers by the query text: `slow` sleeps past any test timeout, `bad` is an error
/// document, `empty` no series, `many` two series, `proxy` a plain 502; anything else one
/// series whose value is the query's length; `many` and `nolabel` (one series without `pod`)
/// serve `by` queries.
async fn fake() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    async fn answer(
        State(seen): State<Seen>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        Query(params): Query<HashMap<String, String>>,
    ) -> (StatusCode, String) {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        seen.lock()
            .unwrap()
            .push((uri.path().to_string(), params.clone(), auth));
        let query = params.get("query").cloned().unwrap_or_default();
        let vector = |series: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#
            )
        };
        match query.as_str() {
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (StatusCode::OK, vector(""))
            }
            "bad" => (
                StatusCode::BAD_REQUEST,
                r#"{"status":"error","errorType":"bad_data","error":"parse error: unexpected end of input"}"#.into(),
            ),
            "empty" => (StatusCode::OK, vector("")),
            "many" => (
                StatusCode::OK,
                vector(r#"{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}"#),
            ),
            "nolabel" => (
                StatusCode::OK,
                vector(r#"{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"__name__":"up","job":"x"},"value":[1,"2"]}"#),
            ),
            "proxy" => (StatusCode::BAD_GATEWAY, "upstream down".into()),
            q if uri.path().ends_with("query_range") => (
                StatusCode::OK,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[[1767225600,"{}"],[1767225601,"2"]]}}]}}}}"#,
                    q.len()
                ),
            ),
            q => (
                StatusCode::OK,
                vector(&format!(r#"{{"metric":{{}},"value":[1,"{}"]}}"#, q.len())),
            ),
        }
    }
    let app = axum::Router::new()
        .route("/prom/api/v1/query", get(answer))
        .route("/prom/api/v1/query_range", get(answer))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/prom"), seen, server)
}

fn query(name: &str, query: &str, series: bool) -> PrometheusQuery {
    PrometheusQuery {
        name: name.into(),
        query: query.into(),
        series,
        ..PrometheusQuery::default()
    }
}

#[tokio::test]
async fn every_failure_has_its_own_message_and_spares_the_other_queries() {
    let (url, seen, server) = fake().await;
    let prometheus = Prometheus::new(&url, None, false, Duration::from_millis(500)).unwrap();
    let queries = [
        query("ok", "sum(x[$__range])", true),
        query("slow", "slow", false),
        query("bad", "bad", false),
        query("empty", "empty", false),
        query("many", "many", false),
        query("proxy", "proxy", false),
    ];
    let observed = observe(&prometheus, &queries, WINDOW, &[]).await;
    let errors: Vec<(&str, Option<f64>, Option<&str>)> = observed
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.value, r.error.as_deref()))
        .collect();
    let slow = format!("Prometheus at {url} did not answer within 500ms");
    assert_eq!(
        errors,
        vec![
            ("ok", Some("sum(x[60500ms])".len() as f64), None),
            ("slow", None, Some(slow.as_str())),
            (
                "bad",
                None,
                Some(
                    "Prometheus refused the query (bad_data): parse error: unexpected end of input"
                )
            ),
            ("empty", None, Some("no data: the query returned no series")),
            (
                "many",
                None,
                Some(
                    "the query returned 2 series where one was expected: {pod=\"a\"}, {pod=\"b\"}; \
                     aggregate them (e.g. sum(...) or max(...)) or narrow the selector"
                )
            ),
            (
                "proxy",
                None,
                Some("Prometheus answered HTTP 502: upstream down")
            ),
        ]
    );
    assert_eq!(observed.results[0].query, "sum(x[60500ms])");
    // The series query also ran as a range over the window, one sample a second.
    assert_eq!(observed.series.len(), 1);
    assert_eq!(observed.series[0].step_seconds, 1.0);
    assert_eq!(observed.series[0].points.len(), 2);
    let seen = seen.lock().unwrap();
    let range = seen
        .iter()
        .find(|(path, _, _)| path.ends_with("query_range"))
        .expect("a range query");
    assert_eq!(range.1["start"], "1767225600.000");
    assert_eq!(range.1["end"], "1767225660.500");
    assert_eq!(range.1["step"], "1s");
    let instant = seen
        .iter()
        .find(|(path, p, _)| path.ends_with("/query") && p["query"] == "bad")
        .expect("an instant query");
    assert_eq!(instant.1["time"], "1767225660.500");
    server.abort();
}

#[tokio::test]
async fn a_server_that_is_down_is_named_without_credentials() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://admin:hunter2@127.0.0.1:{port}");
    let prometheus = Prometheus::new(&url, None, false, Duration::from_secs(5)).unwrap();
    let err = prometheus
        .instant("up", WINDOW.end_unix_ms)
        .await
        .unwrap_err();
    let QueryError::Unreachable { at, why } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(at, &format!("http://127.0.0.1:{port}"));
    assert!(why.to_lowercase().contains("refused"), "{why}");
    let text = err.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("admin"),
        "{text}"
    );
    assert!(!format!("{prometheus:?}").contains("hunter2"));
}

#[tokio::test]
async fn credentials_are_sent_to_the_server() {
    let (url, seen, server) = fake().await;
    let bearer = Credentials::Bearer("s3cret-token".into());
    let prometheus = Prometheus::new(&url, Some(bearer), false, Duration::from_secs(5)).unwrap();
    assert_eq!(prometheus.instant("up", 0).await, Ok(2.0));
    let basic = Credentials::Basic {
        username: "volley".into(),
        password: "pw".into(),
    };
    assert_eq!(format!("{basic:?}"), "Basic(redacted)");
    let prometheus = Prometheus::new(&url, Some(basic), false, Duration::from_secs(5)).unwrap();
    assert_eq!(prometheus.instant("up", 0).await, Ok(2.0));
    let auth: Vec<Option<String>> = seen.lock().unwrap().iter().map(|s| s.2.clone()).collect();
    assert_eq!(
        auth,
        vec![
            Some("Bearer s3cret-token".to_string()),
            // base64("volley:pw")
            Some("Basic dm9sbGV5OnB3".to_string()),
        ]
    );
    server.abort();
}

#[test]
fn a_url_that_is_not_http_is_refused() {
    let err = Prometheus::new("ftp://x", None, false, Duration::from_secs(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "prometheus url: ftp://x is not an http(s) URL with a host"
    );
}

/// A `by` query is one result per label value (a series without the label is an error naming
/// it); a `window: scenario` query is one result per scenario, each asked at its own window's
/// end with its own `$__range`.
#[tokio::test]
async fn by_queries_report_each_label_value_and_scenario_queries_each_window() {
    use volley_crds::spec::QueryWindow;
    let (url, seen, server) = fake().await;
    let prometheus = Prometheus::new(&url, None, false, Duration::from_secs(5)).unwrap();
    let queries = [
        PrometheusQuery {
            by: Some("pod".into()),
            ..query("pods", "many", false)
        },
        PrometheusQuery {
            by: Some("pod".into()),
            ..query("broken", "nolabel", false)
        },
        PrometheusQuery {
            window: QueryWindow::Scenario,
            ..query("each", "x[$__range]", false)
        },
    ];
    let scenarios = [
        (
            "warm".to_string(),
            Window {
                start_unix_ms: WINDOW.start_unix_ms,
                end_unix_ms: WINDOW.start_unix_ms + 10_000,
            },
        ),
        (
            "peak".to_string(),
            Window {
                start_unix_ms: WINDOW.start_unix_ms + 10_000,
                end_unix_ms: WINDOW.end_unix_ms,
            },
        ),
    ];
    let observed = observe(&prometheus, &queries, WINDOW, &scenarios).await;
    let rows: Vec<String> = observed
        .results
        .iter()
        .map(|r| {
            let value = r
                .value
                .map_or_else(|| r.error.clone().unwrap(), |v| v.to_string());
            format!("{} = {value}", volley_core::observe::result_label(r))
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            "pods{pod=\"a\"} = 1".to_string(),
            "pods{pod=\"b\"} = 2".to_string(),
            "broken{pod=...} = a series has no label pod to report by: up{job=\"x\"}; keep the \
             label in the query's result (e.g. sum by (pod) (...))"
                .to_string(),
            format!("each (scenario warm) = {}", "x[10000ms]".len()),
            format!("each (scenario peak) = {}", "x[50500ms]".len()),
        ]
    );
    assert_eq!(observed.results[3].query, "x[10000ms]");
    // Each scenario's query is evaluated at its own window's end.
    let seen = seen.lock().unwrap();
    let at = |q: &str| {
        seen.iter()
            .find(|(_, params, _)| params["query"] == q)
            .map(|(_, params, _)| params["time"].clone())
    };
    assert_eq!(at("x[10000ms]").as_deref(), Some("1767225610.000"));
    assert_eq!(at("x[50500ms]").as_deref(), Some("1767225660.500"));
    server.abort();
}
