//! Steps over real HTTP against the demo target on 127.0.0.1: templates, extraction, checks,
//! retries, polling, cookies, errors and timing. Every test is bounded in time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use volley_crds::spec::{ErrorKind, Step, Target};
use volley_demo_target::{DemoConfig, DemoTarget};
use volley_runner::step::{
    CompiledStep, RequestSample, StepError, StepOutcome, VuContext, build_client, run_step,
};

/// Fails the test instead of hanging it.
async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .expect("test took longer than 30s");
}

async fn demo(config: DemoConfig) -> DemoTarget {
    DemoTarget::start(([127, 0, 0, 1], 0).into(), config)
        .await
        .expect("start demo target")
}

fn target(base_url: &str) -> Target {
    Target {
        base_url: base_url.to_string(),
        timeout: volley_crds::Duration::from_secs(5),
        ..Target::default()
    }
}

fn step(yaml: &str) -> Step {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("bad step yaml: {e}\n{yaml}"))
}

fn compile(yaml: &str, target: &Target) -> CompiledStep {
    CompiledStep::compile(&step(yaml), target, Path::new(".")).expect("compile")
}

fn compile_err(yaml: &str, target: &Target, dir: &Path) -> StepError {
    CompiledStep::compile(&step(yaml), target, dir).expect_err("compile should fail")
}

fn ctx() -> VuContext {
    VuContext::new(1, 0, Arc::new(BTreeMap::new()))
}

/// Compiles and runs one step now.
async fn run(yaml: &str, target: &Target, ctx: &mut VuContext) -> StepOutcome {
    let step = compile(yaml, target);
    let client = build_client(target).unwrap();
    run_step(&step, &client, ctx, Instant::now()).await
}

fn ok(outcome: &StepOutcome) {
    assert_eq!(outcome.error, None, "{outcome:#?}");
}

fn statuses(samples: &[RequestSample]) -> Vec<Option<u16>> {
    samples.iter().map(|s| s.status).collect()
}

/// A port nothing listens on: bind, note the port, close.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("volley-step-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_step_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let t = target("http://127.0.0.1:1");
    let step = compile("{request: {url: /health}}", &t);
    let client = build_client(&t).unwrap();
    let mut ctx = ctx();
    let fut = run_step(&step, &client, &mut ctx, Instant::now());
    assert_send(&fut);
}

#[tokio::test]
async fn every_reference_kind_renders_into_a_real_request() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        // The demo target echoes the id of /api/items/{id}.
        let t = target(&format!("{}/api", server.base_url()));
        let setup = Arc::new(BTreeMap::from([("t".to_string(), "S".to_string())]));
        let mut ctx = VuContext::new(12, 3, setup);
        ctx.iteration = 5;
        ctx.extracted.insert("x".into(), "X".into());
        ctx.row.insert(
            "users".into(),
            Arc::new(BTreeMap::from([("name".to_string(), "ann".to_string())])),
        );
        let out = run(
            r#"
            request:
              url: "/items/${vu}-${iteration}-${runner}-${setup.t}-${users.name}-${x}-${env:CARGO_PKG_NAME}-$${lit}~${uuid}"
            extract: {echo: {jsonPath: "$.id"}}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        let echo = &ctx.extracted["echo"];
        let (fixed, uuid) = echo.split_once('~').unwrap();
        // `${` is percent-encoded in the path and decoded by the server.
        assert_eq!(fixed, "12-5-3-S-ann-X-volley-runner-${lit}");
        assert_eq!(uuid::Uuid::parse_str(uuid).unwrap().get_version_num(), 4);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn json_body_templates_and_content_type() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        ctx.row.insert(
            "users".into(),
            Arc::new(BTreeMap::from([
                ("email".to_string(), "a@example.com".to_string()),
                ("password".to_string(), "pw \"quoted\"".to_string()),
            ])),
        );
        let login = r#"
            request:
              method: post
              url: /auth/login
              json: {email: "${users.email}", password: "${users.password}", meta: {n: 1, tags: ["${vu}"]}}
            check: {status: [200], jsonPath: "$.token"}
            extract: {token: {jsonPath: "$.token"}}
        "#;
        let out = run(login, &t, &mut ctx).await;
        ok(&out);
        assert_eq!((out.checks_passed, out.checks_failed), (2, 0));
        assert_eq!(ctx.extracted["token"].len(), 32);

        // An empty rendered password is refused by the server: the JSON really was templated.
        ctx.row.insert(
            "users".into(),
            Arc::new(BTreeMap::from([
                ("email".to_string(), "a@example.com".to_string()),
                ("password".to_string(), " ".to_string()),
            ])),
        );
        let out = run(login, &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Status4xx));
        assert_eq!(statuses(&out.samples), [Some(400)]);
        assert!(!ctx.extracted.contains_key("token"), "a failed extraction unsets the name");
        assert_eq!(server.stats().logins, 1);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn login_then_bearer_and_csrf_from_cookie() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let client = build_client(&t).unwrap();
        let login = compile(
            r#"
            request: {method: POST, url: /auth/login, json: {email: a@b.c, password: pw}}
            extract:
              token: {jsonPath: "$.token"}
              csrf: {cookie: csrf_token}
            "#,
            &t,
        );
        let process = compile(
            r#"
            name: convert
            request:
              method: POST
              url: /api/process
              headers: {Authorization: "Bearer ${token}", X-CSRF-Token: "${csrf}"}
              json: {format: webp}
            check: {status: [202]}
            extract: {jobId: {jsonPath: "$.id"}}
            "#,
            &t,
        );
        assert_eq!(process.name(), "convert");
        assert!(process.is_request());
        let mut ctx = ctx();
        ok(&run_step(&login, &client, &mut ctx, Instant::now()).await);
        assert_eq!(
            ctx.cookies.get("csrf_token"),
            Some(ctx.extracted["csrf"].as_str())
        );
        let out = run_step(&process, &client, &mut ctx, Instant::now()).await;
        ok(&out);
        assert_eq!(statuses(&out.samples), [Some(202)]);
        assert!(ctx.extracted.contains_key("jobId"));

        // The server really enforces both: a wrong CSRF header is a 403, a wrong token a 401.
        let mut bad = ctx.clone();
        bad.extracted.insert("csrf".into(), "wrong".into());
        let out = run_step(&process, &client, &mut bad, Instant::now()).await;
        assert_eq!(out.error, Some(ErrorKind::Status4xx));
        assert_eq!(statuses(&out.samples), [Some(403)]);
        assert_eq!((out.checks_passed, out.checks_failed), (0, 1));
        let mut bad = ctx.clone();
        bad.extracted
            .insert("token".into(), uuid::Uuid::new_v4().simple().to_string());
        let out = run_step(&process, &client, &mut bad, Instant::now()).await;
        assert_eq!(statuses(&out.samples), [Some(401)]);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn cookies_persist_across_steps_and_iterations() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        ok(&run(
            "{request: {method: POST, url: /auth/login, json: {email: a, password: b}}}",
            &t,
            &mut ctx,
        )
        .await);
        assert_eq!(ctx.cookies.len(), 1);
        // A later iteration: extracted values are cleared, the jar is not.
        ctx.extracted.clear();
        ctx.iteration += 1;
        // The jar's csrf_token cookie is sent, so a mismatching header is refused...
        let process = r#"
            request: {method: POST, url: /api/process, headers: {X-CSRF-Token: nope}}
        "#;
        let out = run(process, &t, &mut ctx).await;
        assert_eq!(statuses(&out.samples), [Some(403)]);
        // ...and without the cookie the same request passes.
        ctx.cookies.clear();
        let out = run(process, &t, &mut ctx).await;
        ok(&out);
        assert_eq!(statuses(&out.samples), [Some(202)]);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn submit_then_poll_until_done() {
    bounded(async {
        let job_delay = Duration::from_millis(300);
        let server = demo(DemoConfig {
            job_delay,
            ..DemoConfig::default()
        })
        .await;
        let t = target(&server.base_url());
        let client = build_client(&t).unwrap();
        let submit = compile(
            r#"
            request: {method: POST, url: /api/process}
            extract: {jobId: {jsonPath: "$.id"}}
            "#,
            &t,
        );
        let poll = compile(
            r#"
            request: {url: "/api/jobs/${jobId}"}
            until: {jsonPath: "$.status", equals: done, every: 50ms, timeout: 5s}
            check: {jsonPath: "$.status", equals: done}
            "#,
            &t,
        );
        let mut ctx = ctx();
        let t0 = Instant::now();
        ok(&run_step(&submit, &client, &mut ctx, t0).await);
        let poll_due = Instant::now();
        let poll = run_step(&poll, &client, &mut ctx, poll_due).await;
        ok(&poll);
        assert!(poll.samples.len() >= 2, "{poll:#?}");
        assert!(
            poll.samples
                .iter()
                .all(|s| s.status == Some(200) && s.error.is_none())
        );
        // The job was created after t0 and is done job_delay later; the poll step ended after
        // that, and within one poll interval (plus slack) of it.
        let until_done = poll_due.duration_since(t0) + poll.step_latency;
        assert!(until_done >= job_delay, "{until_done:?}");
        assert!(
            until_done < job_delay + Duration::from_millis(500),
            "{until_done:?}"
        );
        assert!(
            poll.step_latency
                >= poll
                    .samples
                    .iter()
                    .map(|s| s.latency_sent)
                    .sum::<Duration>()
        );
        assert_eq!((poll.checks_passed, poll.checks_failed), (1, 0));
        assert_eq!(server.stats().polls, poll.samples.len() as u64);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn until_gives_up_with_timeout() {
    bounded(async {
        let server = demo(DemoConfig {
            job_delay: Duration::from_secs(60),
            ..DemoConfig::default()
        })
        .await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        ok(&run(
            "{request: {method: POST, url: /api/process}, extract: {jobId: {jsonPath: $.id}}}",
            &t,
            &mut ctx,
        )
        .await);
        let poll = run(
            r#"
            request: {url: "/api/jobs/${jobId}"}
            until: {jsonPath: "$.status", equals: done, every: 50ms, timeout: 300ms}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(poll.error, Some(ErrorKind::Timeout));
        assert!(poll.samples.len() >= 3, "{poll:#?}");
        // Each poll succeeded; the step is what timed out.
        assert!(poll.samples.iter().all(|s| s.error.is_none()));
        assert!(
            poll.step_latency >= Duration::from_millis(250)
                && poll.step_latency <= Duration::from_millis(1000),
            "{:?}",
            poll.step_latency
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retries_reuse_the_idempotency_key_of_the_execution() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let client = build_client(&t).unwrap();
        // Every attempt reaches the handler (202) but fails the check, so it is retried:
        // with one key per execution, the server sees 1 creation and 2 duplicates.
        let step = compile(
            r#"
            request: {method: POST, url: /api/process, headers: {Idempotency-Key: "${uuid}"}}
            check: {status: [201]}
            retry: {attempts: 3, on: [check], backoff: 1ms}
            "#,
            &t,
        );
        let mut ctx = ctx();
        let out = run_step(&step, &client, &mut ctx, Instant::now()).await;
        assert_eq!(out.error, Some(ErrorKind::Check));
        assert_eq!(statuses(&out.samples), [Some(202); 3]);
        assert!(
            out.samples
                .iter()
                .all(|s| s.error == Some(ErrorKind::Check))
        );
        // Checks count for the final attempt only.
        assert_eq!((out.checks_passed, out.checks_failed), (0, 1));
        let stats = server.stats();
        assert_eq!((stats.jobs_created, stats.duplicates), (1, 2));
        // A new execution renders a new key.
        run_step(&step, &client, &mut ctx, Instant::now()).await;
        let stats = server.stats();
        assert_eq!((stats.jobs_created, stats.duplicates), (2, 4));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn retries_on_injected_failures_stay_consistent_with_the_server() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let client = build_client(&t).unwrap();
        // Failures are injected before the handler runs, so a failed attempt stores nothing
        // and retrying stops at the first success: no attempt ever repeats a stored key.
        let step = compile(
            r#"
            request: {method: POST, url: "/api/process?fail=0.5", headers: {Idempotency-Key: "${uuid}"}}
            check: {status: [202]}
            retry: {attempts: 30, backoff: 1ms}
            "#,
            &t,
        );
        let mut ctx = ctx();
        let executions = 20;
        let (mut samples, mut failed, mut retried) = (0, 0, 0);
        for _ in 0..executions {
            let out = run_step(&step, &client, &mut ctx, Instant::now()).await;
            ok(&out); // 0.5^30 per execution: never fails in practice
            assert_eq!((out.checks_passed, out.checks_failed), (1, 0));
            let last = out.samples.last().unwrap();
            assert_eq!((last.status, last.error), (Some(202), None));
            for s in &out.samples[..out.samples.len() - 1] {
                assert_eq!((s.status, s.error), (Some(500), Some(ErrorKind::Status5xx)));
            }
            samples += out.samples.len() as u64;
            failed += out.samples.len() as u64 - 1;
            retried += u64::from(out.samples.len() > 1);
        }
        let stats = server.stats();
        assert_eq!(stats.jobs_created, executions);
        assert_eq!(stats.duplicates, 0);
        assert_eq!(stats.failures_injected, failed);
        assert_eq!(stats.requests, samples);
        // With p = 0.5 and 20 executions, some needed a retry (all first-try: 1e-6).
        assert!(retried > 0);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn checks_count_each_condition() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        let out = run(
            r#"
            request: {url: /api/items}
            check: {status: [200, 201], bodyContains: "rocket skates", jsonPath: "$.items[1].price", equals: "4999", maxDuration: 2s}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        assert_eq!((out.checks_passed, out.checks_failed), (4, 0));

        let out = run(
            r#"
            request: {url: /api/items}
            check: {status: [201], bodyContains: "hovercraft", jsonPath: "$.items[0].name", equals: "rocket"}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Check));
        assert_eq!((out.checks_passed, out.checks_failed), (0, 3));
        assert_eq!(out.samples[0].error, Some(ErrorKind::Check));

        // jsonPath without equals: must exist.
        let out = run(
            "{request: {url: /api/items}, check: {jsonPath: '$.items[5]'}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!((out.error, out.checks_failed), (Some(ErrorKind::Check), 1));

        // maxDuration against a slow response.
        let out = run(
            "{request: {url: '/api/items?delay=150ms'}, check: {maxDuration: 50ms}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Check));
        assert_eq!((out.checks_passed, out.checks_failed), (0, 1));
        let out = run(
            "{request: {url: '/api/items?delay=20ms'}, check: {maxDuration: 2s}}",
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn expected_404_is_a_success_and_unexpected_one_is_4xx() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        let out = run(
            "{request: {url: /api/jobs/unknown}, check: {status: [404]}}",
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        assert_eq!(statuses(&out.samples), [Some(404)]);
        assert_eq!(out.samples[0].error, None);
        assert_eq!((out.checks_passed, out.checks_failed), (1, 0));

        let out = run("{request: {url: /api/jobs/unknown}}", &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Status4xx));
        assert_eq!((out.checks_passed, out.checks_failed), (0, 0));
        let out = run("{request: {url: '/api/items?status=503'}}", &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Status5xx));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn connection_refused_is_connect_and_retried() {
    bounded(async {
        let t = target(&format!("http://127.0.0.1:{}", dead_port()));
        let mut ctx = ctx();
        let out = run(
            "{request: {url: /health}, check: {status: [200]}, retry: {attempts: 3, backoff: 1ms}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Connect));
        assert_eq!(out.samples.len(), 3);
        assert!(
            out.samples
                .iter()
                .all(|s| s.error == Some(ErrorKind::Connect)
                    && s.status.is_none()
                    && s.bytes_received == 0)
        );
        // No response: the check counts as failed.
        assert_eq!((out.checks_passed, out.checks_failed), (0, 1));
    })
    .await;
}

#[tokio::test]
async fn slow_response_times_out_at_the_step_timeout() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        let out = run(
            "{request: {url: '/api/items?delay=2s', timeout: 200ms}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Timeout));
        let s = &out.samples[0];
        assert_eq!((s.status, s.error), (None, Some(ErrorKind::Timeout)));
        assert!(
            s.latency_sent >= Duration::from_millis(195)
                && s.latency_sent < Duration::from_millis(1500),
            "{:?}",
            s.latency_sent
        );
        // The target's timeout applies when the step has none.
        let mut t = t;
        t.timeout = volley_crds::Duration::from_millis(150);
        let out = run("{request: {url: '/api/items?delay=2s'}}", &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Timeout));
        assert!(out.step_latency < Duration::from_millis(1500));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn not_before_in_the_past_counts_in_latency_only() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let client = build_client(&t).unwrap();
        let step = compile(
            "{request: {method: POST, url: '/api/process?fail=1'}, retry: {attempts: 2, backoff: 1ms}}",
            &t,
        );
        let mut ctx = ctx();
        let lag = Duration::from_secs(2);
        let due = Instant::now().checked_sub(lag).unwrap();
        let out = run_step(&step, &client, &mut ctx, due).await;
        assert_eq!(out.error, Some(ErrorKind::Status5xx));
        let [first, second] = out.samples.as_slice() else {
            panic!("{out:#?}")
        };
        assert!(first.latency >= lag && first.latency >= first.latency_sent + lag);
        assert!(first.latency_sent < Duration::from_millis(1500));
        // Later attempts are measured from their own send.
        assert_eq!(second.latency, second.latency_sent);
        assert!(out.step_latency >= lag + first.latency_sent + second.latency_sent);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sleep_fixed_and_range() {
    bounded(async {
        let t = target("http://127.0.0.1:1");
        let client = build_client(&t).unwrap();
        let mut ctx = ctx();
        let fixed = compile("{sleep: 60ms}", &t);
        assert!(!fixed.is_request());
        assert_eq!(fixed.name(), "sleep 60ms");
        let out = run_step(&fixed, &client, &mut ctx, Instant::now()).await;
        assert!(out.samples.is_empty() && out.error.is_none());
        assert!(
            out.step_latency >= Duration::from_millis(60)
                && out.step_latency < Duration::from_millis(500)
        );

        let range = compile("{sleep: {min: 20ms, max: 80ms}}", &t);
        for _ in 0..5 {
            let out = run_step(&range, &client, &mut ctx, Instant::now()).await;
            assert!(
                out.step_latency >= Duration::from_millis(20)
                    && out.step_latency < Duration::from_millis(500),
                "{:?}",
                out.step_latency
            );
        }
        let err = compile_err("{sleep: {min: 2s, max: 1s}}", &t, Path::new("."));
        assert!(err.to_string().contains("sleep.min"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn missing_extracted_value_fails_without_sending() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let mut ctx = ctx();
        let out = run(
            "{request: {url: /api/items}, extract: {nope: {jsonPath: $.nope}, id: {jsonPath: '$.items[0].id'}}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Extract));
        assert_eq!(out.samples[0].error, Some(ErrorKind::Extract));
        assert!(!ctx.extracted.contains_key("nope"));
        assert_eq!(ctx.extracted["id"], "1");
        let before = server.stats().requests;
        let out = run("{request: {url: '/api/items/${nope}'}}", &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Extract));
        assert!(out.samples.is_empty());
        assert_eq!(server.stats().requests, before);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn header_and_regex_extraction_and_byte_counts() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = Target {
            headers: BTreeMap::from([("X-Env".to_string(), "test".to_string())]),
            ..target(&server.base_url())
        };
        let mut ctx = ctx();
        let out = run(
            r#"
            request: {url: /api/items/abc, headers: {x-env: step-wins}}
            extract:
              ctype: {header: content-type}
              name: {regex: '"name":"([^"]+)"'}
              whole: {regex: 'item \w+'}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        assert_eq!(ctx.extracted["ctype"], "application/json");
        assert_eq!(ctx.extracted["name"], "item abc");
        assert_eq!(ctx.extracted["whole"], "item abc");
        let s = &out.samples[0];
        // GET /api/items/abc HTTP/1.1 + host, accept, user-agent, x-env: at least 80 bytes.
        assert!(s.bytes_sent > 80 && s.bytes_sent < 400, "{}", s.bytes_sent);
        // Status line + headers + the JSON body.
        assert!(
            s.bytes_received > 100 && s.bytes_received < 400,
            "{}",
            s.bytes_received
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn multipart_file_and_templated_value() {
    bounded(async {
        let server = demo(DemoConfig::default()).await;
        let t = target(&server.base_url());
        let dir = temp_dir("multipart");
        let payload = vec![b'x'; 10_000];
        std::fs::write(dir.join("image.bin"), &payload).unwrap();
        let step = CompiledStep::compile(
            &step(
                r#"
                request:
                  method: POST
                  url: /api/process
                  multipart:
                    - {name: file, file: image.bin, contentType: image/png}
                    - {name: who, value: "vu ${vu}"}
                "#,
            ),
            &t,
            &dir,
        )
        .unwrap();
        let client = build_client(&t).unwrap();
        let mut ctx = ctx();
        let out = run_step(&step, &client, &mut ctx, Instant::now()).await;
        ok(&out);
        assert!(out.samples[0].bytes_sent > 10_000);
        std::fs::remove_dir_all(&dir).ok();

        let err = compile_err(
            "{request: {method: POST, url: /x, multipart: [{name: f, file: missing.bin}]}}",
            &t,
            Path::new("/nonexistent-dir"),
        );
        assert!(err.to_string().contains("missing.bin"), "{err}");
        server.shutdown().await;
    })
    .await;
}

#[test]
fn config_map_multipart_needs_the_cluster() {
    let t = target("http://127.0.0.1:1");
    let err = compile_err(
        "{name: upload, request: {method: POST, url: /x, multipart: [{name: file, configMapRef: {name: imgs, key: a.png}}]}}",
        &t,
        Path::new("."),
    );
    assert!(matches!(err, StepError::ConfigMapPart { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("upload") && msg.contains("configMapRef") && msg.contains("cluster"),
        "{msg}"
    );
}

#[test]
fn unset_env_vars_are_compile_errors_naming_them() {
    let t = Target {
        headers: BTreeMap::from([(
            "X-Key".to_string(),
            "${env:VOLLEY_TEST_UNSET_B}".to_string(),
        )]),
        ..target("http://127.0.0.1:1")
    };
    let err = compile_err(
        r#"
        name: login
        request:
          method: POST
          url: /auth/login
          json: {email: "${env:VOLLEY_TEST_UNSET_A}", password: "${env:VOLLEY_TEST_UNSET_B}"}
        "#,
        &t,
        Path::new("."),
    );
    match &err {
        StepError::MissingEnv { step, names } => {
            assert_eq!(step, "login");
            assert_eq!(names, &["VOLLEY_TEST_UNSET_A", "VOLLEY_TEST_UNSET_B"]);
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("${env:VOLLEY_TEST_UNSET_A}") && msg.contains("are not set"),
        "{msg}"
    );
}

#[test]
fn env_values_never_show_in_debug_output() {
    let t = target("http://127.0.0.1:1");
    // CARGO_PKG_NAME is set by cargo for test processes.
    let step = compile(
        "{request: {url: '/x?k=${env:CARGO_PKG_NAME}', headers: {X-Key: '${env:CARGO_PKG_NAME}'}}}",
        &t,
    );
    let debug = format!("{step:?}");
    assert!(!debug.contains("volley-runner"), "{debug}");
}

#[test]
fn compile_errors_name_what_is_wrong() {
    let t = target("http://127.0.0.1:1/api");
    for (yaml, needle) in [
        ("{request: {url: '/x/${id'}}", "request.url"),
        (
            "{request: {method: 'BAD METHOD', url: /x}}",
            "request.method",
        ),
        (
            "{request: {url: /x, headers: {'bad header': v}}}",
            "request.headers.bad header",
        ),
        (
            "{request: {url: /x, headers: {X-A: \"a\\nb\"}}}",
            "request.headers.X-A",
        ),
        ("{request: {url: /x, body: a, json: {}}}", "at most one"),
        ("{request: {url: /x}, extract: {a: {}}}", "extract.a"),
        (
            "{request: {url: /x}, until: {jsonPath: nope, equals: x}}",
            "until.jsonPath",
        ),
        ("{request: {url: 'ftp://h/x'}}", "scheme"),
        ("{}", "needs `request`, `websocket` or `sleep`"),
    ] {
        let err = compile_err(yaml, &t, Path::new("."));
        assert!(err.to_string().contains(needle), "{yaml}: {err}");
    }
    let err = compile_err("{request: {url: /x}}", &target("not a url"), Path::new("."));
    assert!(err.to_string().contains("target.baseUrl"), "{err}");
    let err = compile_err(
        "{request: {url: /x}}",
        &target("http://h/api?k=1"),
        Path::new("."),
    );
    assert!(err.to_string().contains("query"), "{err}");
}

/// A tiny HTTP/1.1 server for what the demo target does not do: redirects, huge bodies,
/// connections cut mid-body. One request per connection (`Connection: close`).
struct MiniServer {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl MiniServer {
    async fn start() -> MiniServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(mini_handle(socket, port));
            }
        });
        MiniServer {
            base: format!("http://127.0.0.1:{port}"),
            task,
        }
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mini_handle(mut socket: tokio::net::TcpStream, port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let respond = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let reply = match path.as_str() {
        "/login" => respond(
            "302 Found",
            "location: /home\r\nset-cookie: session=s1; Path=/; HttpOnly\r\n",
            "moved",
        ),
        "/home" => {
            let ok = header("cookie").is_some_and(|c| c.contains("session=s1"));
            let body = format!("method={method} body={}", buf.len() - head_end);
            if ok {
                respond("200 OK", "", &body)
            } else {
                respond("401 Unauthorized", "", &body)
            }
        }
        "/keep" => respond("307 Temporary Redirect", "location: /home\r\n", ""),
        "/loop" => respond("302 Found", "location: /loop\r\n", ""),
        "/cross" => respond(
            "302 Found",
            &format!("location: http://localhost:{port}/echo\r\n"),
            "",
        ),
        "/echo" => {
            let body = format!(
                "authorization={} cookie={}",
                header("authorization").is_some(),
                header("cookie").is_some()
            );
            respond("200 OK", "", &body)
        }
        "/big" => {
            // 5 MiB of JSON: past the 4 MiB the engine keeps.
            let mut body = String::from("{\"pad\":\"");
            body.push_str(&"x".repeat(5 << 20));
            body.push_str("\",\"tail\":\"end\"}");
            respond("200 OK", "content-type: application/json\r\n", &body)
        }
        "/cut" => {
            // Promises 1000 bytes, sends 10, closes.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789")
                .await;
            return;
        }
        _ => respond("404 Not Found", "", "no"),
    };
    let _ = socket.write_all(&reply).await;
    let _ = socket.shutdown().await;
}

#[tokio::test]
async fn redirects_are_followed_with_their_cookies() {
    bounded(async {
        let server = MiniServer::start().await;
        let t = target(&server.base);
        let mut ctx = ctx();
        // POST /login answers 302 + Set-Cookie; the GET to /home must carry the cookie.
        let out = run(
            r#"
            request: {method: POST, url: /login, body: "user=a"}
            check: {status: [200], bodyContains: "method=GET body=0"}
            extract: {session: {cookie: session}}
            "#,
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        assert_eq!(out.samples.len(), 1, "a redirect chain is one sample");
        assert_eq!(out.samples[0].status, Some(200));
        assert_eq!(ctx.extracted["session"], "s1");
        assert_eq!(ctx.cookies.get("session"), Some("s1"));

        // 307 keeps method and body.
        let out = run(
            "{request: {method: PUT, url: /keep, body: abc}, check: {bodyContains: 'method=PUT body=3'}}",
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);

        // A loop ends after 10 hops as a connect error.
        let out = run("{request: {url: /loop}}", &t, &mut ctx).await;
        assert_eq!(out.error, Some(ErrorKind::Connect));
        assert_eq!(out.samples[0].status, Some(302));
    })
    .await;
}

#[tokio::test]
async fn cross_origin_redirects_drop_credentials() {
    bounded(async {
        let server = MiniServer::start().await;
        let t = target(&server.base);
        let mut ctx = ctx();
        ctx.cookies.set("session", "s1");
        let out = run(
            "{request: {url: /cross, headers: {Authorization: Bearer x}}, check: {bodyContains: 'authorization=false cookie=false'}}",
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
        // Same origin: both are sent.
        let out = run(
            "{request: {url: /echo, headers: {Authorization: Bearer x}}, check: {bodyContains: 'authorization=true cookie=true'}}",
            &t,
            &mut ctx,
        )
        .await;
        ok(&out);
    })
    .await;
}

#[tokio::test]
async fn bodies_beyond_the_cap_are_counted_not_kept() {
    bounded(async {
        let server = MiniServer::start().await;
        let t = target(&server.base);
        let mut ctx = ctx();
        let out = run(
            "{request: {url: /big}, check: {bodyContains: xxxx}, extract: {tail: {jsonPath: $.tail}}}",
            &t,
            &mut ctx,
        )
        .await;
        // The first 4 MiB are searched; the JSON is cut short, so the path finds nothing.
        assert_eq!(out.error, Some(ErrorKind::Extract));
        assert_eq!((out.checks_passed, out.checks_failed), (1, 0));
        assert!(out.samples[0].bytes_received > 5 << 20);
        // Without body checks the body is only counted.
        let out = run("{request: {url: /big}}", &t, &mut ctx).await;
        ok(&out);
        assert!(out.samples[0].bytes_received > 5 << 20);
    })
    .await;
}

#[tokio::test]
async fn body_cut_short_is_connect() {
    bounded(async {
        let server = MiniServer::start().await;
        let t = target(&server.base);
        let mut ctx = ctx();
        let out = run(
            "{request: {url: /cut}, check: {status: [200]}}",
            &t,
            &mut ctx,
        )
        .await;
        assert_eq!(out.error, Some(ErrorKind::Connect));
        let s = &out.samples[0];
        assert_eq!((s.status, s.error), (Some(200), Some(ErrorKind::Connect)));
        assert_eq!((out.checks_passed, out.checks_failed), (0, 1));
    })
    .await;
}
