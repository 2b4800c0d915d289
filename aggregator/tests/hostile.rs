//! The aggregator against hostile peers, over real HTTP on 127.0.0.1 (the attacks of issue
//! #19): connections that send headers or bodies slowly are cut, bodies without a valid
//! credential are never read (memory stays bounded: RSS is measured and printed), a runner's
//! credential speaks only for that runner, reports outside the run's spec and reports before
//! the barrier change nothing, unknown runs answer 401 like known ones, and peer strings reach
//! the log escaped and bounded. The legitimate run still counts exactly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Served, cred, rss_bytes, runner_report, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use volley_aggregator::RunLifecycle;
use volley_aggregator::server::{BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT, MAX_BODY_BYTES};
use volley_core::protocol::custom::{CustomData, CustomMetricReport};
use volley_core::protocol::report::MAX_REPORT_STEPS;
use volley_core::protocol::{self, PROTOCOL_VERSION, ReadyRequest, RunnerReport, SetupResult};

/// Held by the tests that allocate tens of MiB (the RSS measurement, the 400k error kinds),
/// so one does not measure the other: the tests of this file run side by side.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads what the server sends until it closes the connection (or `limit` passes: `None`).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the status line and headers of an answer arrived (or `limit` passes).
async fn read_answer_head(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn report_head(run: &str, index: u32, auth: Option<&str>, length: usize) -> String {
    let auth = auth
        .map(|a| format!("Authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {} HTTP/1.1\r\nHost: aggregator\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n",
        protocol::report_path(run, index)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut() {
    let s = serve(&[("a", "t", 1)]).await;
    let began = Instant::now();
    // Connections that never finish their headers: silent, a partial request line, headers
    // dripping a byte a second.
    let mut slow = Vec::new();
    for i in 0..30 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        if i % 3 == 1 {
            c.write_all(b"POST /v1/runs/a/runners/0/rep").await.unwrap();
        }
        slow.push(c);
    }
    let mut drip = TcpStream::connect(s.addr).await.unwrap();
    drip.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..60 {
            if drip.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        false
    });
    // An authorized request whose body stops after 10 of 1000 bytes.
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled
        .write_all(report_head("a", 0, Some(&cred("t", 0)), 1000).as_bytes())
        .await
        .unwrap();
    stalled.write_all(b"{\"runner\":").await.unwrap();

    // Meanwhile the run goes on.
    assert_eq!(s.ready("a", "t", 0).await, StatusCode::OK);

    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(20);
    for c in &mut slow {
        assert!(
            read_until_closed(c, limit).await.is_some(),
            "a connection without complete headers stayed open for {limit:?}"
        );
    }
    let cut = began.elapsed();
    eprintln!("30 slow-header connections closed after {cut:?}");
    assert!(
        cut >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "{cut:?}"
    );
    assert!(
        dripping.await.unwrap(),
        "a connection dripping its headers was cut"
    );
    let answer = read_until_closed(&mut stalled, BODY_READ_TIMEOUT + Duration::from_secs(20))
        .await
        .expect("a stalled body was cut");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(s.requests("a"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_without_a_valid_credential_are_not_read_and_memory_stays_bounded() {
    let _heavy = HEAVY.lock().await;
    let s = serve(&[("a", "t", 1)]).await;
    assert_eq!(s.ready("a", "t", 0).await, StatusCode::OK);
    // Warm up allocator and server with one legitimate report.
    assert_eq!(s.report("a", Some("t"), 0, 1, 3).await.0, StatusCode::OK);
    let before = rss_bytes();

    // 24 connections announce a body of 16 MiB - 1 and send 8 MiB of it: without a valid
    // credential (none, wrong, another runner's, for an unknown run). Read before the token
    // check, that is 192 MiB held by the server.
    const SENT: usize = 8 * 1024 * 1024;
    let chunk = Arc::new(vec![b' '; 64 * 1024]);
    let mut attackers = Vec::new();
    for i in 0..24u32 {
        let addr = s.addr;
        let chunk = chunk.clone();
        attackers.push(tokio::spawn(async move {
            let (run, auth) = match i % 4 {
                0 => ("a", None),
                1 => ("a", Some("wrong".to_string())),
                2 => ("a", Some(cred("t", 1))),
                _ => ("nope", Some(cred("t", 0))),
            };
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(report_head(run, 0, auth.as_deref(), MAX_BODY_BYTES - 1).as_bytes())
                .await
                .unwrap();
            // The answer comes before the body is sent.
            let head = read_answer_head(&mut c, Duration::from_secs(20)).await;
            let mut sent = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while sent < SENT {
                match tokio::time::timeout_at(deadline, c.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    _ => break,
                }
            }
            (head, c)
        }));
    }
    let mut held = Vec::new();
    for a in attackers {
        held.push(a.await.unwrap());
    }
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    eprintln!(
        "RSS with 24 unauthenticated 16 MiB bodies held open: {} MiB before, {} MiB after \
         (+{} MiB)",
        before >> 20,
        after >> 20,
        grown >> 20
    );
    assert!(grown < 64 << 20, "the server grew by {} MiB", grown >> 20);
    for (head, c) in &mut held {
        let head = head.as_deref().expect("answered before the body was sent");
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        // And the connection is closed rather than kept for the rest of the body.
        assert!(
            read_until_closed(c, HEADER_READ_TIMEOUT + Duration::from_secs(10))
                .await
                .is_some(),
            "a refused upload stayed connected"
        );
    }
    drop(held);
    // The legitimate run still counts exactly.
    assert_eq!(s.report("a", Some("t"), 0, 2, 7).await.0, StatusCode::OK);
    assert_eq!(s.requests("a"), 7);
}

/// A started one-runner run of `spec()` with one accepted report of 5 requests.
async fn started() -> Served {
    let s = serve(&[("a", "t", 1)]).await;
    assert_eq!(s.ready("a", "t", 0).await, StatusCode::OK);
    assert_eq!(s.report("a", Some("t"), 0, 1, 5).await.0, StatusCode::OK);
    s
}

async fn post_report(s: &Served, report: &RunnerReport) -> (StatusCode, String) {
    s.post(
        &protocol::report_path("a", 0),
        Some(&cred("t", 0)),
        serde_json::to_vec(report).unwrap(),
    )
    .await
}

#[tokio::test]
async fn reports_outside_the_runs_spec_are_refused_and_change_nothing() {
    let _heavy = HEAVY.lock().await;
    let s = started().await;
    let legit = runner_report(0, 2, 9);
    let mut attacks: Vec<(&str, RunnerReport)> = Vec::new();

    let mut r = legit.clone();
    r.report.scenarios[0].steps[0].name = "not-a-step".into();
    attacks.push(("an unknown step", r));

    let mut r = legit.clone();
    let step = r.report.scenarios[0].steps[0].clone();
    r.report.scenarios[0].steps = (0..MAX_REPORT_STEPS)
        .map(|i| {
            let mut st = step.clone();
            st.name = format!("step-{i}");
            st
        })
        .collect();
    attacks.push(("512 unknown steps", r));

    let mut r = legit.clone();
    let step = r.report.scenarios[0].steps[0].clone();
    r.report.scenarios[0].steps.push(step);
    attacks.push(("a step twice", r));

    let mut r = legit.clone();
    let mut other = r.report.scenarios[0].clone();
    other.name = "other".into();
    r.report.scenarios.push(other);
    attacks.push(("an unknown scenario", r));

    let mut r = legit.clone();
    let again = r.report.scenarios[0].clone();
    r.report.scenarios.push(again);
    attacks.push(("a scenario twice", r));

    let mut r = legit.clone();
    r.report.scenarios[0].steps[0]
        .counters
        .errors
        .insert("made-up".into(), 1);
    attacks.push(("an unknown error kind", r));

    let mut r = legit.clone();
    let empty = volley_core::protocol::histogram::encode_histogram(
        &volley_core::metrics::histogram::new_latency_histogram(),
    )
    .unwrap();
    let mut ws = volley_core::metrics::websocket::WsCounters::default();
    ws.count_error("made-up");
    r.report.scenarios[0].steps[0].websocket = Some(volley_core::protocol::report::WsStepReport {
        counters: ws,
        connect: empty.clone(),
        message: empty.clone(),
        chunk: empty,
    });
    attacks.push(("an unknown websocket error kind", r));

    let mut r = legit.clone();
    r.report.scenarios[0]
        .iterations
        .errors
        .insert("\u{1b}[31mred".into(), 1);
    attacks.push(("an unknown error kind of the iterations", r));

    let mut r = legit.clone();
    r.report.scenarios[0].steps[0].counters.errors =
        (0..400_000).map(|i| (format!("e{i}"), 1)).collect();
    attacks.push(("400k error kinds", r));

    let mut r = legit.clone();
    r.report.scenarios[0].steps[0].custom = vec![CustomMetricReport {
        name: "made_up".into(),
        data: CustomData::Counter {
            total: 1000,
            count: 1,
        },
        missing: 0,
        invalid: 0,
    }];
    attacks.push(("a custom metric the step does not declare", r));

    let shape = s.agg.view("a").unwrap().merged;
    for (what, report) in &attacks {
        let (status, body) = post_report(&s, report).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(
            body.starts_with("the report does not fit the run's spec"),
            "{what}: {body}"
        );
        assert!(body.len() < 1000, "{what}: a short refusal");
        let view = s.agg.view("a").unwrap();
        assert_eq!(view.merged.overall().counters.requests, 5, "{what}");
        assert_eq!(view.merged.scenarios.len(), shape.scenarios.len(), "{what}");
        assert_eq!(
            view.merged.scenarios[0].steps.len(),
            shape.scenarios[0].steps.len(),
            "{what}"
        );
        assert!(view.merged.overall().counters.errors.is_empty(), "{what}");
        // What the status is made of stays the size the spec gives it.
        let status = serde_json::to_string(&view.scenario_statuses()).unwrap();
        assert!(
            status.len() < 2000,
            "{what}: {} bytes of status",
            status.len()
        );
    }
    // The known error kinds are taken; the run goes on exactly.
    let mut r = legit.clone();
    let errors = &mut r.report.scenarios[0].steps[0].counters;
    errors.failures = 2;
    errors.errors.insert("5xx".into(), 1);
    errors.errors.insert("blocked".into(), 1);
    let (status, body) = post_report(&s, &r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view = s.agg.view("a").unwrap();
    assert_eq!(view.merged.overall().counters.requests, 9);
    assert_eq!(view.merged.overall().counters.errors.len(), 2);
}

#[tokio::test]
async fn a_runners_credential_speaks_only_for_that_runner() {
    let s = serve(&[("a", "t", 2)]).await;
    let two = |s: &Served| s.agg.view("a").unwrap().registered;
    // Runner 1's credential (and the run's own token, which no runner holds) cannot register,
    // poll, post setup or report for runner 0.
    let ready = serde_json::to_vec(&ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host: "h".into(),
    })
    .unwrap();
    for credential in [cred("t", 1), "t".to_string()] {
        let (status, _) = s
            .post(
                &protocol::ready_path("a", 0),
                Some(&credential),
                ready.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let poll = s
            .http
            .get(format!("{}{}", s.base, protocol::start_path("a", 0)))
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        assert_eq!(poll.status(), StatusCode::UNAUTHORIZED);
        let setup = serde_json::to_vec(&SetupResult::default()).unwrap();
        let (status, _) = s
            .post(&protocol::setup_path("a"), Some(&credential), setup)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(two(&s), 0);
    assert_eq!(s.ready("a", "t", 0).await, StatusCode::OK);
    assert_eq!(s.ready("a", "t", 1).await, StatusCode::OK);

    // A forged report for runner 0 with the highest sequence number, by runner 1.
    let forged = serde_json::to_vec(&runner_report(0, u64::MAX, 1_000_000)).unwrap();
    let (status, _) = s
        .post(
            &protocol::report_path("a", 0),
            Some(&cred("t", 1)),
            forged.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // On its own path it is another runner's report.
    let (status, _) = s
        .post(&protocol::report_path("a", 1), Some(&cred("t", 1)), forged)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.requests("a"), 0);
    // Runner 0 is not locked out: its own reports count, exactly.
    assert_eq!(s.report("a", Some("t"), 0, 1, 4).await.0, StatusCode::OK);
    assert_eq!(s.report("a", Some("t"), 1, 1, 6).await.0, StatusCode::OK);
    assert_eq!(s.requests("a"), 10);
}

#[tokio::test]
async fn a_report_before_the_barrier_does_not_start_the_run() {
    let s = serve(&[("a", "t", 2)]).await;
    // Runner 0 reports before anyone registered (its pod up, runner 1's still Pending).
    for seq in [u64::MAX, 3] {
        let (status, body) = s.report("a", Some("t"), 0, seq, 1_000_000).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(body.contains("has not started"), "{body}");
    }
    let view = s.agg.view("a").unwrap();
    assert_eq!(view.lifecycle, RunLifecycle::Barrier);
    assert_eq!(view.start_at_unix_ms, None);
    assert_eq!(s.requests("a"), 0);
    // The run starts only when runner 1 registers, and counts only real reports.
    assert_eq!(s.ready("a", "t", 1).await, StatusCode::OK);
    assert_eq!(s.agg.view("a").unwrap().lifecycle, RunLifecycle::Running);
    assert_eq!(s.report("a", Some("t"), 0, 1, 4).await.0, StatusCode::OK);
    assert_eq!(s.report("a", Some("t"), 1, 1, 6).await.0, StatusCode::OK);
    assert_eq!(s.requests("a"), 10);
}

#[tokio::test]
async fn unauthenticated_calls_get_401_whatever_the_run() {
    let s = serve(&[("a", "t", 2)]).await;
    let ready = serde_json::to_vec(&ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host: "h".into(),
    })
    .unwrap();
    let report = serde_json::to_vec(&runner_report(0, 1, 1)).unwrap();
    let setup = serde_json::to_vec(&SetupResult::default()).unwrap();
    for run in ["a", "nope"] {
        for credential in [None, Some("wrong".to_string()), Some(cred("other", 0))] {
            let c = credential.as_deref();
            let calls = [
                s.post(&protocol::ready_path(run, 0), c, ready.clone())
                    .await,
                s.post(&protocol::report_path(run, 0), c, report.clone())
                    .await,
                s.post(&protocol::setup_path(run), c, setup.clone()).await,
            ];
            for (status, body) in calls {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{run} {c:?}: {body}");
            }
            let mut poll = s
                .http
                .get(format!("{}{}", s.base, protocol::start_path(run, 0)));
            if let Some(c) = c {
                poll = poll.bearer_auth(c);
            }
            assert_eq!(
                poll.send().await.unwrap().status(),
                StatusCode::UNAUTHORIZED,
                "{run} {c:?}"
            );
        }
    }
    // With a valid credential, an unknown run is no different from a wrong credential.
    assert_eq!(s.ready("nope", "t", 0).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.agg.view("a").unwrap().registered, 0);
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn peer_strings_reach_the_log_escaped_and_bounded() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // Global, not scoped to this thread: tracing caches whether a log call is wanted per
    // call site, which a thread-local subscriber loses to the tests running beside it. Their
    // lines land here too and must hold to the same rules.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let s = serve(&[("a", "t", 2)]).await;
    let host = format!(
        "pod-0\nINFO volley_aggregator: forged line\u{1b}[2J\u{1b}]0;title\u{7}{}",
        "x".repeat(100_000)
    );
    let ready = serde_json::to_vec(&ReadyRequest {
        protocol: PROTOCOL_VERSION,
        host,
    })
    .unwrap();
    let (status, _) = s
        .post(&protocol::ready_path("a", 0), Some(&cred("t", 0)), ready)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.ready("a", "t", 1).await, StatusCode::OK);
    // A runner's error goes to the log too.
    let mut failed = runner_report(1, 1, 1);
    failed.error = Some(format!(
        "boom\nERROR forged\u{1b}[31m{}",
        "y".repeat(10_000)
    ));
    let (status, _) = s
        .post(
            &protocol::report_path("a", 1),
            Some(&cred("t", 1)),
            serde_json::to_vec(&failed).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A refusal quoting a name from the body.
    let mut foreign = runner_report(0, 1, 1);
    foreign.report.scenarios[0].steps[0].name = "step\nWARN forged".into();
    let (status, _) = s
        .post(
            &protocol::report_path("a", 0),
            Some(&cred("t", 0)),
            serde_json::to_vec(&foreign).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("runner registered"), "{log}");
    assert!(log.contains("runner failed"), "{log}");
    assert!(log.contains("protocol call refused"), "{log}");
    assert!(log.contains("pod-0\\nINFO"), "escaped: {log}");
    assert!(!log.contains('\u{1b}'), "no escape sequence: {log}");
    assert!(!log.contains('\u{7}'), "no bell: {log}");
    for line in log.lines() {
        assert!(
            !line
                .trim_start()
                .starts_with("INFO volley_aggregator: forged")
                && !line.contains("] forged")
                && !line.starts_with("ERROR forged")
                && !line.starts_with("WARN forged"),
            "a forged line: {line}"
        );
        assert!(line.len() < 2000, "a line of {} bytes", line.len());
    }
}
