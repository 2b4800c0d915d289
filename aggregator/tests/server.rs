//! The aggregator over real HTTP on 127.0.0.1: every refusal has its status code and leaves
//! the run unchanged (auth, unknown runs and runners, oversized and malformed bodies, stale
//! reports), and the start long-poll is answered as soon as the barrier completes. Attacks by
//! hostile peers are in `hostile.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::{cred, runner_report, serve};
use volley_aggregator::server::MAX_BODY_BYTES;
use volley_core::protocol::{self, ReportResponse, StartResponse};

#[tokio::test]
async fn reports_without_the_runs_token_are_refused_and_change_nothing() {
    let s = serve(&[("a", "token-a", 1), ("b", "token-b", 1)]).await;
    assert_eq!(s.ready("a", "token-a", 0).await, StatusCode::OK);
    let (status, body) = s.report("a", Some("token-a"), 0, 1, 10).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: ReportResponse = serde_json::from_str(&body).unwrap();
    assert!(!answer.stop);

    for token in [None, Some("token-b"), Some("token-a-but-longer"), Some("")] {
        let (status, body) = s.report("a", token, 0, 2, 999).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
        assert!(body.contains("wrong token"), "{body}");
    }
    assert_eq!(s.ready("a", "token-b", 0).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.requests("a"), 10);
    assert_eq!(s.requests("b"), 0);
}

#[tokio::test]
async fn unknown_runners_are_404_and_stale_reports_409() {
    let s = serve(&[("a", "t", 2)]).await;
    assert_eq!(s.ready("a", "t", 2).await, StatusCode::NOT_FOUND);
    s.ready("a", "t", 0).await;
    s.ready("a", "t", 1).await;
    let (status, body) = s.report("a", Some("t"), 5, 1, 10).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body.contains("runner 5 is outside the run's 2 runner(s)"),
        "{body}"
    );

    assert_eq!(s.report("a", Some("t"), 0, 4, 40).await.0, StatusCode::OK);
    let (status, body) = s.report("a", Some("t"), 0, 3, 30).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("older than report 4"), "{body}");
    // The same report again (a retried post whose answer was lost) is fine.
    assert_eq!(s.report("a", Some("t"), 0, 4, 40).await.0, StatusCode::OK);
    assert_eq!(s.requests("a"), 40);

    // A report for runner 1 posted on runner 0's path.
    let body = serde_json::to_vec(&runner_report(1, 9, 5)).unwrap();
    let (status, text) = s
        .post(&protocol::report_path("a", 0), Some(&cred("t", 0)), body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(s.requests("a"), 40);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let s = serve(&[("a", "t", 1)]).await;
    s.ready("a", "t", 0).await;
    let path = protocol::report_path("a", 0);

    let (status, body) = s
        .post(&path, Some(&cred("t", 0)), b"{not json".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("malformed body"), "{body}");

    let mut report = runner_report(0, 1, 3);
    report.report.scenarios[0].steps[0].latency = "AAAA".into();
    let (status, body) = s
        .post(
            &path,
            Some(&cred("t", 0)),
            serde_json::to_vec(&report).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("malformed report"), "{body}");
    assert!(body.contains("main"), "names the scenario: {body}");

    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, _) = s.post(&path, Some(&cred("t", 0)), huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    assert_eq!(s.requests("a"), 0);
    assert_eq!(s.report("a", Some("t"), 0, 1, 3).await.0, StatusCode::OK);
    assert_eq!(s.requests("a"), 3);
}

#[tokio::test]
async fn the_start_poll_is_answered_when_the_barrier_completes() {
    let s = serve(&[("a", "t", 2)]).await;
    s.ready("a", "t", 0).await;
    let url = format!("{}{}", s.base, protocol::start_path("a", 0));
    // Alone at the barrier: held, then `wait`.
    let answer: StartResponse = s
        .http
        .get(&url)
        .bearer_auth(cred("t", 0))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, StartResponse::Wait);

    let agg = s.agg.clone().with_poll_hold(Duration::from_secs(10));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(volley_aggregator::server::serve(
        listener,
        agg.router(),
        std::future::pending(),
    ));
    let http = s.http.clone();
    let poll = tokio::spawn(async move {
        let began = std::time::Instant::now();
        let answer: StartResponse = http
            .get(format!("{base}{}", protocol::start_path("a", 0)))
            .bearer_auth(cred("t", 0))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (answer, began.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.ready("a", "t", 1).await;
    let (answer, waited) = poll.await.unwrap();
    assert!(matches!(answer, StartResponse::Start { .. }), "{answer:?}");
    assert!(
        waited < Duration::from_secs(9),
        "answered when ready, not at the hold's end"
    );
}
