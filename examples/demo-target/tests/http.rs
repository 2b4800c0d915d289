//! End-to-end tests of the library: a real server on an ephemeral loopback
//! port, driven with reqwest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use volley_demo_target::{DemoConfig, DemoStats, DemoTarget};

async fn start(config: DemoConfig) -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("start demo target")
}

/// Every request is bounded, so a broken server fails the test instead of
/// hanging it.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

async fn login(client: &reqwest::Client, base: &str) -> (String, String) {
    let response = client
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": "a@example.com", "password": "pw" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .expect("Set-Cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let csrf = cookie
        .strip_prefix("csrf_token=")
        .and_then(|rest| rest.strip_suffix("; Path=/"))
        .unwrap_or_else(|| panic!("unexpected cookie {cookie:?}"))
        .to_owned();
    let token = json_of(response).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, csrf)
}

#[tokio::test]
async fn health() {
    let target = start(DemoConfig::default()).await;
    let response = client()
        .get(format!("{}/health", target.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await, json!({ "status": "ok" }));
    assert_eq!(target.stats().requests, 1);
    target.shutdown().await;
}

#[tokio::test]
async fn login_returns_token_and_csrf_cookie() {
    let target = start(DemoConfig::default()).await;
    let (token, csrf) = login(&client(), &target.base_url()).await;
    assert!(!token.is_empty());
    assert!(!csrf.is_empty());
    assert_ne!(token, csrf);
    assert_eq!(target.stats().logins, 1);
    target.shutdown().await;
}

#[tokio::test]
async fn bad_login_is_400() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let url = format!("{}/auth/login", target.base_url());
    for body in [
        json!({ "email": "a@example.com" }),
        json!({ "email": "", "password": "pw" }),
        json!({ "email": "a@example.com", "password": null }),
        json!([]),
    ] {
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(json_of(response).await["error"].is_string());
    }
    let response = client.post(&url).body("not json").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(target.stats().logins, 0);
    target.shutdown().await;
}

#[tokio::test]
async fn process_honours_idempotency_key() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let url = format!("{}/api/process", target.base_url());
    let mut ids = Vec::new();
    for key in ["k1", "k1", "k2", "k1"] {
        let response = client
            .post(&url)
            .header("Idempotency-Key", key)
            .body("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body = json_of(response).await;
        assert_eq!(body["status"], "pending");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[3]);
    assert_ne!(ids[0], ids[2]);
    // Without a key every request is a new job.
    let a = json_of(client.post(&url).send().await.unwrap()).await;
    let b = json_of(client.post(&url).send().await.unwrap()).await;
    assert_ne!(a["id"], b["id"]);

    let stats = target.stats();
    assert_eq!((stats.jobs_created, stats.duplicates), (4, 2));
    target.shutdown().await;
}

#[tokio::test]
async fn job_goes_pending_then_done() {
    let job_delay = Duration::from_millis(300);
    let target = start(DemoConfig {
        job_delay,
        ..DemoConfig::default()
    })
    .await;
    let client = client();
    let base = target.base_url();
    let created = Instant::now();
    let body = json_of(
        client
            .post(format!("{base}/api/process"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = body["id"].as_str().unwrap();
    let url = format!("{base}/api/jobs/{id}");

    let first = json_of(client.get(&url).send().await.unwrap()).await;
    // Only assert "pending" if we really polled early; a slow machine may not.
    if created.elapsed() < job_delay {
        assert_eq!(first, json!({ "id": id, "status": "pending" }));
    }
    tokio::time::sleep(job_delay).await;
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await,
        json!({ "id": id, "status": "done" })
    );
    assert_eq!(target.stats().polls, 2);
    target.shutdown().await;
}

#[tokio::test]
async fn unknown_job_is_404() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    for id in ["00000000-0000-4000-8000-000000000000", "not-a-uuid"] {
        let response = client
            .get(format!("{}/api/jobs/{id}", target.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(json_of(response).await["error"].is_string());
    }
    assert_eq!(target.stats().polls, 2);
    target.shutdown().await;
}

#[tokio::test]
async fn bearer_must_be_an_issued_token() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    let url = format!("{base}/api/process");
    for auth in [
        "Bearer 0123456789abcdef0123456789abcdef",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
    ] {
        let response = client
            .post(&url)
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    let (token, _) = login(&client, &base).await;
    let response = client.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(target.stats().jobs_created, 1);
    target.shutdown().await;
}

#[tokio::test]
async fn csrf_cookie_must_match_header() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    let (token, csrf) = login(&client, &base).await;
    let url = format!("{base}/api/process");
    let send = |header: Option<&str>| {
        let mut request = client
            .post(&url)
            .bearer_auth(&token)
            .header("Cookie", format!("theme=dark; csrf_token={csrf}"));
        if let Some(header) = header {
            request = request.header("X-CSRF-Token", header.to_owned());
        }
        request.send()
    };
    assert_eq!(send(None).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(
        send(Some("wrong")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Some(&csrf)).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    // No cookie, no check.
    let response = client.post(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    target.shutdown().await;
}

#[tokio::test]
async fn cookie_jar_client_flow() {
    // What a scenario with a cookie-aware client does: log in, then echo the
    // cookie into the header.
    let target = start(DemoConfig::default()).await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = target.base_url();
    let (token, csrf) = login(&client, &base).await;
    let url = format!("{base}/api/process");
    let response = client.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    target.shutdown().await;
}

#[tokio::test]
async fn items() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    let list = json_of(
        client
            .get(format!("{base}/api/items"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    let one = json_of(
        client
            .get(format!("{base}/api/items/42"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(one["id"], "42");
    let response = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    target.shutdown().await;
}

#[tokio::test]
async fn query_delay_adds_latency() {
    let target = start(DemoConfig::default()).await;
    let started = Instant::now();
    let response = client()
        .get(format!("{}/api/items?delay=100ms", target.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));
    target.shutdown().await;
}

#[tokio::test]
async fn query_fail_1_gives_500_and_counts() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    for _ in 0..3 {
        let response = client
            .post(format!("{base}/api/process?fail=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    let response = client
        .get(format!("{base}/api/items?fail=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stats = target.stats();
    assert_eq!(stats.failures_injected, 3);
    assert_eq!(
        stats.jobs_created, 0,
        "a failed request must not create a job"
    );
    assert_eq!(stats.requests, 4);
    target.shutdown().await;
}

#[tokio::test]
async fn query_status_forces_status() {
    let target = start(DemoConfig::default()).await;
    let response = client()
        .get(format!("{}/api/items?status=503", target.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(json_of(response).await["error"].is_string());
    assert_eq!(target.stats().failures_injected, 1);
    target.shutdown().await;
}

#[tokio::test]
async fn bad_knobs_are_400() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    for query in ["delay=soon", "fail=2", "status=42"] {
        let response = client
            .get(format!("{}/api/items?{query}", target.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    target.shutdown().await;
}

#[tokio::test]
async fn admin_config_changes_knobs_at_runtime() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    let admin = format!("{base}/admin/config");
    let items = format!("{base}/api/items");

    let config = json_of(client.get(&admin).send().await.unwrap()).await;
    assert_eq!(
        config,
        json!({ "delay": "0s", "failRate": 0.0, "jobDelay": "200ms" })
    );

    // Stall the server (by a second: a request that is not stalled stays well below that
    // even on a busy machine)...
    let response = client
        .post(&admin)
        .json(&json!({ "delay": "1s" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["delay"], "1s");
    let started = Instant::now();
    assert_eq!(
        client.get(&items).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    // ...while health and admin stay reachable...
    let started = Instant::now();
    client.get(format!("{base}/health")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));

    // ...then make it fail, with a partial update that keeps the delay...
    let config = json_of(
        client
            .post(&admin)
            .json(&json!({ "failRate": 1.0 }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(config["delay"], "1s");
    let response = client.get(&items).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // ...and recover.
    let response = client
        .post(&admin)
        .json(&json!({ "delay": "0s", "failRate": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    assert_eq!(
        client.get(&items).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Invalid updates change nothing.
    for bad in [
        json!({ "failRate": 2 }),
        json!({ "delay": "soon" }),
        json!({ "delay": "1s", "fail_rate": 0.5 }),
    ] {
        let response = client.post(&admin).json(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let config = json_of(client.get(&admin).send().await.unwrap()).await;
    assert_eq!(config["delay"], "0s");
    target.shutdown().await;
}

#[tokio::test]
async fn stats_endpoint_and_reset() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let base = target.base_url();
    client
        .post(format!("{base}/api/process"))
        .send()
        .await
        .unwrap();
    client.get(format!("{base}/health")).send().await.unwrap();

    let stats: DemoStats = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Reading the stats is not itself counted.
    assert_eq!(
        stats,
        DemoStats {
            requests: 2,
            jobs_created: 1,
            // The /api request (not /health) went through the queue /metrics exports.
            processed: 1,
            max_queue_depth: 1,
            ..DemoStats::default()
        }
    );

    let response = client
        .post(format!("{base}/stats/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // What /metrics exports only grows, as Prometheus counters do.
    assert_eq!(
        target.stats(),
        DemoStats {
            processed: 1,
            max_queue_depth: 1,
            ..DemoStats::default()
        }
    );
    target.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_prompt_even_when_stalled() {
    let target = start(DemoConfig {
        delay: Duration::from_secs(3600),
        ..DemoConfig::default()
    })
    .await;
    let url = format!("{}/api/items", target.base_url());
    let stalled = tokio::spawn(async move { client().get(url).send().await });
    // Let the request reach the server and start its delay.
    tokio::time::timeout(Duration::from_secs(5), async {
        while target.stats().requests == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("request reached the server");
    let started = Instant::now();
    target.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let response = stalled.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// With a capacity, a burst beyond it is refused with 503 (counted as injected failures) while
/// `/health` is not limited; once the bucket has refilled, requests pass again.
#[tokio::test]
async fn capacity_refuses_the_excess_and_refills() {
    let target = start(DemoConfig {
        capacity: Some(20.0),
        ..DemoConfig::default()
    })
    .await;
    let client = client();
    let base = target.base_url();
    // Let the bucket fill: 20/s holds two tokens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut statuses = Vec::new();
    let burst = Instant::now();
    for _ in 0..20 {
        let response = client
            .get(format!("{base}/api/items"))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let took = burst.elapsed();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + refused, 20, "{statuses:?}");
    // Two tokens plus what refilled while the burst ran (20 per second).
    let most = 2 + (took.as_secs_f64() * 20.0).ceil() as usize;
    assert!(
        (2..=most).contains(&ok),
        "{ok} passed in {took:?}: {statuses:?}"
    );
    assert_eq!(target.stats().failures_injected, refused as u64);
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "only /api/* is limited");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let again = client
        .get(format!("{base}/api/items"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK, "the bucket refills");
    target.shutdown().await;
}

#[tokio::test]
async fn capacity_must_be_positive() {
    for capacity in [0.0, -1.0, f64::NAN] {
        let err = volley_demo_target::DemoTarget::start(
            ([127, 0, 0, 1], 0).into(),
            DemoConfig {
                capacity: Some(capacity),
                ..DemoConfig::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{capacity}");
    }
}

/// `/metrics` counts the work it did and its queue rises with concurrent slow requests:
/// 5 requests at once, each held 300 ms, show a queue of 5 and 5 processing times of at least
/// 250 ms; reading `/metrics` and `/stats` counts as no request.
#[tokio::test]
async fn metrics_move_with_the_load() {
    let target = start(DemoConfig::default()).await;
    let base = target.base_url();
    let c = client();
    let slow: Vec<_> = (0..5)
        .map(|_| tokio::spawn(c.get(format!("{base}/api/items?delay=300ms")).send()))
        .collect();
    for response in slow {
        assert_eq!(response.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(sample("demo_processed_total"), 5.0);
    assert_eq!(sample("demo_queue_depth"), 0.0);
    assert_eq!(sample("demo_processing_seconds_count"), 5.0);
    assert_eq!(sample("demo_processing_seconds_bucket{le=\"0.25\"}"), 0.0);
    assert_eq!(sample("demo_processing_seconds_bucket{le=\"0.5\"}"), 5.0);
    let stats = target.stats();
    assert_eq!((stats.processed, stats.max_queue_depth), (5, 5));
    assert_eq!(stats.requests, 5);
    target.shutdown().await;
}

#[tokio::test]
async fn infer_sends_values_derived_from_the_response_number_and_tallies_them() {
    let target = start(DemoConfig::default()).await;
    let client = client();
    let url = format!("{}/api/infer?omit=5&garble=3&crisis=4", target.base_url());
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let depth: u64 = response.headers()["x-queue-depth"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        bodies.push((depth, json_of(response).await));
    }
    // n = 1..=10: omitted at 5 and 10, garbled at 3, 6, 9; crisis at 4 and 8.
    let (depth, body) = &bodies[0];
    assert_eq!(*depth, 1);
    assert_eq!(
        body,
        &json!({"latency_ms": 47, "crisis": false, "tokens": 1})
    );
    assert_eq!(bodies[2].1["latency_ms"], json!("n/a"));
    assert!(bodies[4].1.get("latency_ms").is_none());
    assert_eq!(bodies[3].1["crisis"], json!(true));
    let numbers: Vec<u64> = bodies
        .iter()
        .filter_map(|(_, b)| b["latency_ms"].as_u64())
        .collect();
    assert_eq!(numbers, [47, 84, 158, 79, 116]);
    let infer = target.stats().infer;
    assert_eq!(
        (infer.responses, infer.latency_values, infer.latency_omitted),
        (10, 5, 2)
    );
    assert_eq!(infer.latency_garbled, 3);
    assert_eq!(infer.latency_ms_sum, numbers.iter().sum::<u64>());
    assert_eq!(infer.latency_ms_min, numbers.iter().min().copied());
    assert_eq!(infer.crisis, 2);
    assert_eq!(infer.tokens_sum, 55);
    assert_eq!(
        (infer.depth_min, infer.depth_max, infer.depth_last),
        (Some(1), Some(10), Some(10))
    );
    target.shutdown().await;
}
