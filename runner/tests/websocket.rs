//! `websocket` steps end to end: real WebSocket connections on 127.0.0.1 to the demo target's
//! `/ws/echo` and `/ws/stream`, compared with what the server counted; error kinds from a
//! server that drops connections, stays silent, refuses the handshake or is not there; the
//! allow-list checked before any connection; three runners merged exactly through the report
//! codec, and through `volley run`'s aggregator.
//!
//! Timing assertions are orderings against server-imposed delays (a reply can never come
//! sooner than the server waits), never upper bounds a busy machine could miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;
use volley_core::metrics::model::RunMetrics;
use volley_core::metrics::websocket::WsMeasurements;
use volley_core::protocol::report::Report;
use volley_core::target_policy::TargetPolicy;
use volley_crds::LoadTest;
use volley_crds::status::Phase;
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::engine::{Engine, EngineError, FileRoots, RunnerPlace};
use volley_runner::local::{Progress, run_local};

use support::{bounded, closed_port, manifest};

async fn demo() -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap()
}

/// Runs `lt` as runner `index` of `count`, at most 60 s.
async fn run_engine(lt: &LoadTest, index: u32, count: u32) -> RunMetrics {
    let engine = Engine::prepare(
        &lt.spec,
        RunnerPlace { index, count },
        &FileRoots::default(),
    )
    .unwrap();
    let values = engine.run_setup().await.unwrap();
    let (_stop_tx, stop_rx) = watch::channel(false);
    bounded(
        Duration::from_secs(60),
        engine.run(values, Instant::now(), stop_rx),
    )
    .await;
    engine.snapshot()
}

/// The WebSocket figures of step `step` of scenario `scenario`.
fn ws<'a>(run: &'a RunMetrics, scenario: &str, step: &str) -> &'a WsMeasurements {
    let sc = run.scenario(scenario).unwrap();
    let st = sc.steps.iter().find(|s| s.name == step).unwrap();
    st.m.websocket.as_deref().expect("websocket figures")
}

const ECHO: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: ws-echo}
spec:
  target: {baseUrl: "@BASE@"}
  scenarios:
    - name: chat
      executor: shared-iterations
      vus: 4
      iterations: 12
      steps:
        - name: echo
          websocket:
            url: /ws/echo?replyDelay=40ms
            messages:
              - send: '{"n":1,"vu":"${vu}"}'
                expect: {jsonPath: "$.n", equals: 1, timeout: 10s}
              - send: 'plain ${iteration}'
                expect: {contains: "plain", timeout: 10s}
              - send: 'no reply awaited'
            hold: 1s
          check: {bodyContains: "plain"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echo_session_counts_what_the_server_saw_and_latency_includes_the_server_delay() {
    let target = demo().await;
    let lt = manifest(ECHO, &target.base_url());
    let run = run_engine(&lt, 0, 1).await;
    let seen = target.stats();
    let w = ws(&run, "chat", "echo");
    eprintln!("{w:?}\nserver: {seen:?}");

    // Counts: exactly what the server saw.
    assert_eq!(w.counters.connections, 12);
    assert_eq!(w.counters.connected, 12);
    assert_eq!(seen.ws_connections, 12);
    assert_eq!(w.counters.messages_sent, 36);
    assert_eq!(w.counters.messages_sent, seen.ws_messages_received);
    assert_eq!(w.counters.messages_expecting, 24);
    // The third message's echo arrives during `hold` (1 s, after a 40 ms delay).
    assert_eq!(w.counters.messages_received, seen.ws_messages_sent);
    assert_eq!(w.counters.messages_received, 36);
    assert!(w.counters.errors.is_empty(), "{:?}", w.counters.errors);
    assert_eq!(w.connect.len(), 12);
    // Two expected replies per session, each at least the server's 40 ms late.
    assert_eq!(w.message.len(), 24);
    assert!(w.message.min() >= 40_000, "min {}", w.message.min());
    // Every received frame has an interval (the first from its send).
    assert_eq!(w.chunk.len(), 36);
    // All closed again; at most the 4 VUs' connections were open at once.
    assert_eq!(w.counters.open, 0);
    assert!(
        (1..=4).contains(&w.counters.open_max),
        "{}",
        w.counters.open_max
    );

    // The handshake is the step's request; payload bytes both ways.
    let step = run.step_total("chat", "echo").unwrap();
    assert_eq!((step.counters.requests, step.counters.failures), (12, 0));
    assert_eq!(step.counters.checks_passed, 12);
    assert_eq!(step.counters.bytes_sent, w.counters.bytes_sent);
    assert!(w.counters.bytes_sent > 0);
    assert_eq!(w.counters.bytes_received, w.counters.bytes_sent);
    target.shutdown().await;
}

const STREAM: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: ws-stream}
spec:
  target: {baseUrl: "@BASE@"}
  scenarios:
    - name: infer
      executor: per-vu-iterations
      vus: 2
      iterations: 3
      steps:
        - name: stream
          websocket:
            url: /ws/stream?chunks=4&interval=30ms
            subprotocols: [json]
            messages:
              - send: '{"op":"infer","id":"${uuid}"}'
                expect: {jsonPath: "$.done", equals: true, timeout: 10s}
          check: {jsonPath: "$.chunks", equals: "4"}
          extract:
            chunks: {jsonPath: "$.chunks"}
            proto: {header: Sec-WebSocket-Protocol}
        - name: after
          websocket:
            url: /ws/echo
            messages:
              - send: 'got ${chunks} ${proto}'
                expect: {regex: "^got 4 json$", timeout: 10s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunks_are_timed_and_the_done_message_is_checked_and_extracted() {
    let target = demo().await;
    let lt = manifest(STREAM, &target.base_url());
    let run = run_engine(&lt, 0, 1).await;
    let w = ws(&run, "infer", "stream");
    eprintln!("{w:?}");
    assert_eq!(w.counters.connections, 6);
    // 4 chunks and the done message per session.
    assert_eq!(w.counters.messages_received, 30);
    assert_eq!(w.chunk.len(), 30);
    // 4 of every 5 frames come an interval (30 ms) after the one before.
    assert!(
        w.chunk.value_at_quantile(0.5) >= 25_000,
        "{}",
        w.chunk.value_at_quantile(0.5)
    );
    // The done message comes after four intervals.
    assert_eq!(w.message.len(), 6);
    assert!(w.message.min() >= 120_000, "min {}", w.message.min());
    let step = run.step_total("infer", "stream").unwrap();
    assert_eq!(
        (step.counters.checks_passed, step.counters.failures),
        (6, 0)
    );
    // The value extracted from the done message reached the next step.
    let after = run.step_total("infer", "after").unwrap();
    assert_eq!((after.counters.requests, after.counters.failures), (6, 0));
    assert_eq!(ws(&run, "infer", "after").message.len(), 6);
    target.shutdown().await;
}

const FAULTS: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: ws-faults}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: dropped
      executor: shared-iterations
      vus: 1
      iterations: 3
      steps:
        - name: dropped
          websocket:
            url: /ws/echo?dropAfter=1
            messages:
              - send: hello
                expect: {contains: hello, timeout: 10s}
    - name: dropped-in-hold
      executor: shared-iterations
      vus: 1
      iterations: 3
      steps:
        - name: dropped-in-hold
          websocket:
            url: /ws/echo?dropAfter=1
            messages:
              - send: hello
            hold: 10s
    - name: silent
      executor: shared-iterations
      vus: 1
      iterations: 3
      steps:
        - name: silent
          websocket:
            url: /ws/echo?silent=true
            messages:
              - send: hello
                expect: {contains: hello, timeout: 200ms}
    - name: refused
      executor: shared-iterations
      vus: 1
      iterations: 3
      steps:
        - name: refused
          websocket: {url: "ws://127.0.0.1:@CLOSED@/ws/echo"}
    - name: unavailable
      executor: shared-iterations
      vus: 1
      iterations: 3
      steps:
        - name: unavailable
          websocket: {url: /ws/echo?status=503}
          retry: {attempts: 2, on: [5xx], backoff: 10ms}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abnormal_closes_expect_timeouts_refusals_and_failed_handshakes_are_counted_by_kind() {
    let target = demo().await;
    let yaml = FAULTS.replace("@CLOSED@", &closed_port().to_string());
    let lt = manifest(&yaml, &target.base_url());
    let run = run_engine(&lt, 0, 1).await;
    let kinds = |scenario: &str| {
        let w = ws(&run, scenario, scenario);
        eprintln!("{scenario}: {w:?}");
        w.counters.errors.clone()
    };
    let only = |kind: &str, n: u64| std::collections::BTreeMap::from([(kind.to_owned(), n)]);
    assert_eq!(kinds("dropped"), only("closed", 3));
    assert_eq!(kinds("dropped-in-hold"), only("closed", 3));
    assert_eq!(kinds("silent"), only("expect_timeout", 3));
    assert_eq!(kinds("refused"), only("refused", 3));
    // Retried once each: 6 attempts, each a failed handshake.
    assert_eq!(kinds("unavailable"), only("handshake", 6));
    assert_eq!(
        ws(&run, "unavailable", "unavailable").counters.connections,
        6
    );
    // A dropped connection never reaches 10 s of hold: it ends the session.
    assert!(ws(&run, "silent", "silent").message.is_empty());

    // The step's verdicts, by request error kind.
    let errors = |scenario: &str| run.step_total(scenario, scenario).unwrap().counters.errors;
    assert_eq!(errors("dropped"), only("connect", 3));
    assert_eq!(errors("silent"), only("timeout", 3));
    assert_eq!(errors("refused"), only("connect", 3));
    assert_eq!(errors("unavailable"), only("5xx", 6));
    assert_eq!(target.stats().ws_dropped, 6);
    target.shutdown().await;
}

#[tokio::test]
async fn a_websocket_url_outside_the_allowed_targets_is_refused_before_connecting() {
    let target = demo().await;
    let lt = manifest(ECHO, &target.base_url());
    let policy = TargetPolicy::parse("api.example.com").unwrap();
    let err = Engine::prepare_with_policy(
        &lt.spec,
        RunnerPlace { index: 0, count: 1 },
        &FileRoots::default(),
        &policy,
    )
    .err()
    .expect("refused");
    assert!(matches!(err, EngineError::TargetNotAllowed(_)), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    // An absolute ws:// URL is checked as written.
    let yaml = ECHO.replace("/ws/echo?replyDelay=40ms", "ws://127.0.0.2:9/ws");
    let lt = manifest(&yaml, "http://api.example.com");
    let err = Engine::prepare_with_policy(
        &lt.spec,
        RunnerPlace { index: 0, count: 1 },
        &FileRoots::default(),
        &policy,
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string()
            .contains("spec.scenarios[0].steps[0].websocket.url"),
        "{err}"
    );
    assert_eq!(target.stats().ws_connections, 0);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_merge_exactly_through_the_report_codec() {
    let target = demo().await;
    let lt = manifest(
        &ECHO.replace("iterations: 12", "iterations: 30"),
        &target.base_url(),
    );
    let runs = futures::future::join_all((0..3).map(|i| run_engine(&lt, i, 3))).await;
    // Each runner's figures go over the wire as a report and are merged as the aggregator does.
    let mut merged = RunMetrics::for_spec(&lt.spec);
    let mut union = WsMeasurements::default();
    for (i, run) in runs.iter().enumerate() {
        let report = Report::from_metrics(i as u32, 1, Duration::ZERO, true, run).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        merged.merge(&back.to_metrics().unwrap()).unwrap();
        union.add_checked(ws(run, "chat", "echo")).unwrap();
    }
    let m = ws(&merged, "chat", "echo");
    let seen = target.stats();
    assert_eq!(m.counters.connections, 30);
    assert_eq!(m.counters.connections, seen.ws_connections);
    assert_eq!(m.counters.messages_sent, seen.ws_messages_received);
    assert_eq!(m.counters.messages_received, seen.ws_messages_sent);
    // Exact: the same count at every recorded value as one histogram of all samples.
    assert_eq!(m, &union);
    for h in [&m.connect, &m.message, &m.chunk] {
        assert!(!h.is_empty());
    }
    let same = |a: &Histogram<u64>, b: &Histogram<u64>| {
        a.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .eq(b
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value())))
    };
    assert!(same(&m.message, &union.message));
    assert_eq!(
        m.message.value_at_quantile(0.99),
        union.message.value_at_quantile(0.99)
    );
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volley_run_with_three_runners_reports_the_merged_websocket_figures() {
    let target = demo().await;
    let yaml = ECHO
        .replace("iterations: 12", "iterations: 30")
        .replace("  target:", "  runners: {parallelism: 3}\n  target:");
    let lt = manifest(&yaml, &target.base_url());
    let summary = bounded(
        Duration::from_secs(60),
        run_local(&lt, &FileRoots::default(), Progress::Quiet),
    )
    .await;
    assert_eq!(summary.phase, Phase::Succeeded, "{:?}", summary.message);
    let seen = target.stats();
    let step = summary
        .steps
        .iter()
        .find(|s| s.step == "echo")
        .expect("step row");
    let w = step.websocket.as_ref().expect("websocket row");
    assert_eq!(w.connections, 30);
    assert_eq!(w.connections, seen.ws_connections);
    assert_eq!(w.messages_sent, seen.ws_messages_received);
    assert_eq!(w.messages_received, seen.ws_messages_sent);
    assert!(w.message_p50_ms >= 40.0, "{}", w.message_p50_ms);
    assert_eq!(w.open, 0);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_thresholds_are_judged_on_the_merged_figures() {
    let target = demo().await;
    let yaml = format!(
        "{}  thresholds:\n    - \"ws_message p(50) >= 40ms\"\n    - \"ws_connect error_rate < 5%\"\n    - \"ws_connect count >= 12\"\n    - \"ws_chunk count >= 36\"\n    - \"ws_message p(99) < 1ms\"\n",
        ECHO.replace("  target:", "  runners: {parallelism: 2}\n  target:")
    );
    let lt = manifest(&yaml, &target.base_url());
    let s = bounded(
        Duration::from_secs(60),
        run_local(&lt, &FileRoots::default(), Progress::Quiet),
    )
    .await;
    let results: Vec<(bool, &str)> = s
        .thresholds
        .iter()
        .map(|t| (t.passed, t.actual.as_str()))
        .collect();
    eprintln!("{results:?}");
    // The server waits 40 ms before each reply: the median cannot be below it, nor the p99
    // under a millisecond.
    assert_eq!(
        s.thresholds.iter().map(|t| t.passed).collect::<Vec<_>>(),
        [true, true, true, true, false],
        "{:?}",
        s.thresholds
    );
    assert_eq!(s.thresholds[2].actual, "12");
    assert_eq!(s.phase, Phase::Failed);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_on_fail_stops_a_run_whose_replies_never_come() {
    let target = demo().await;
    let lt = manifest(
        r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: ws-abort}
spec:
  target: {baseUrl: "@BASE@"}
  scenarios:
    - name: silent
      executor: constant-vus
      vus: 2
      duration: 60s
      steps:
        - name: silent
          websocket:
            url: /ws/echo?silent=true
            messages:
              - send: hello
                expect: {contains: hello, timeout: 100ms}
  thresholds:
    - {expr: "ws_message error_rate < 1%", abortOnFail: true}
"#,
        &target.base_url(),
    );
    let s = bounded(
        Duration::from_secs(60),
        run_local(&lt, &FileRoots::default(), Progress::Quiet),
    )
    .await;
    eprintln!(
        "{:?} after {}s: {:?}",
        s.phase, s.duration_seconds, s.thresholds
    );
    assert_eq!(
        s.reason.as_deref(),
        Some("ThresholdAborted"),
        "{:?}",
        s.message
    );
    assert!(s.thresholds[0].aborted);
    assert_eq!(s.thresholds[0].actual, "100%");
    // Stopped long before the 60 s the scenario asks for.
    assert!(s.duration_seconds < 30.0, "{}", s.duration_seconds);
    target.shutdown().await;
}

/// A `wss://` echo server on 127.0.0.1 with a self-signed certificate; returns its port.
async fn wss_echo_server() -> u16 {
    use futures::{SinkExt as _, StreamExt as _};
    use std::sync::Arc;
    use tokio_rustls::rustls;

    let key =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_needs_insecure_skip_tls_verify_for_a_self_signed_certificate() {
    let port = wss_echo_server().await;
    let yaml = |insecure: bool| {
        format!(
            r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: wss}}
spec:
  target: {{baseUrl: "https://127.0.0.1:{port}", insecureSkipTlsVerify: {insecure}}}
  scenarios:
    - name: tls
      executor: shared-iterations
      vus: 1
      iterations: 2
      steps:
        - name: echo
          websocket:
            url: /echo
            messages:
              - send: over tls
                expect: {{contains: over tls, timeout: 10s}}
"#
        )
    };
    // Relative to an https base URL: wss. The certificate is nobody's: refused...
    let run = run_engine(&manifest(&yaml(false), ""), 0, 1).await;
    let w = ws(&run, "tls", "echo");
    assert_eq!(
        w.counters.errors,
        std::collections::BTreeMap::from([("handshake".to_owned(), 2)])
    );
    // ... unless the target says to accept any certificate.
    let run = run_engine(&manifest(&yaml(true), ""), 0, 1).await;
    let w = ws(&run, "tls", "echo");
    assert!(w.counters.errors.is_empty(), "{:?}", w.counters.errors);
    assert_eq!((w.counters.connected, w.message.len()), (2, 2));
}

const CUSTOM: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: ws-custom}
spec:
  target: {baseUrl: "@BASE@"}
  scenarios:
    - name: infer
      executor: shared-iterations
      vus: 2
      iterations: 6
      steps:
        - name: echo
          websocket:
            url: /ws/echo
            messages:
              - send: '{"latency_ms": 42, "crisis": true, "depth": 7}'
                expect: {jsonPath: "$.latency_ms", equals: 42, timeout: 10s}
          metrics:
            - {name: inference_latency, trend: {jsonPath: "$.latency_ms", unit: ms}}
            - {name: crisis_detections, counter: {when: {jsonPath: "$.crisis", equals: true}}}
            - {name: queue_depth, gauge: {jsonPath: "$.depth"}}
            - {name: absent, trend: {jsonPath: "$.nothing_here"}}
"#;

/// A websocket step records its custom metrics from the reply its checks judge: one value per
/// session, and a value the reply does not carry counted as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_step_records_custom_metrics_from_the_judged_reply() {
    let target = demo().await;
    let lt = manifest(CUSTOM, &target.base_url());
    let run = run_engine(&lt, 0, 1).await;
    let step = run.step_total("infer", "echo").unwrap();
    assert_eq!(step.counters.requests, 6);
    let custom = &step.custom.metrics;
    let latency = &custom["inference_latency"];
    assert_eq!(latency.count(), 6);
    let h = latency.histogram().unwrap();
    // Every value is 42 ms (42,000 µs), kept at the histogram's precision.
    assert!(h.equivalent(h.min(), 42_000) && h.equivalent(h.max(), 42_000));
    assert_eq!(custom["crisis_detections"].value(), Some(6.0));
    assert_eq!(custom["queue_depth"].value(), Some(7.0));
    assert_eq!(custom["absent"].count(), 0);
    assert_eq!(custom["absent"].faults().missing, 6);
    target.shutdown().await;
}
