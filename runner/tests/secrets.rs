//! A tenant's secret never leaves the requests it is meant for.
//!
//! The real `volley run --runners 2 --out summary.json` runs a manifest that hands a known
//! secret to the runners through the environment (`${env:VOLLEY_E2E_SECRET}`, declared in
//! `runners.env` from a Secret, as a tenant would write it) and uses it wherever a careless
//! implementation would echo it: an `Authorization: Bearer` header, a URL query parameter, a
//! JSON body field, a setup login whose extracted value (the secret again) is sent later, and
//! every failure path that produces a message: a 5xx with retries, a 401, a failing check on a
//! response that echoes the secret, a failing extraction, a refused connection, a request
//! timeout, failing thresholds and (second variant) a setup step that fails.
//!
//! The secret must appear nowhere in stdout, stderr (which carries the runner processes' own
//! output when they fail), the `--out` JSON, also with `RUST_LOG=debug`. The test also proves
//! the secret was sent: a small recording server on 127.0.0.1 sees every request with the
//! secret in it, and the demo target (`volley_demo_target`) takes the failure-knob requests.
//! Every run is bounded; all traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use volley_demo_target::{DemoConfig, DemoTarget};

use support::{closed_port, tempdir};

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
/// The known secret. No part of Volley's output may contain it.
const SECRET: &str = "volley-e2e-SECRET-7f3a9c";
const SECRET_ENV: &str = "VOLLEY_E2E_SECRET";
/// Bound of one `volley run`.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// One request as the recording server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A server that records every request and answers:
/// - `POST /login`: `{"token": <the password it was sent>}`, so the value setup extracts is
///   the secret itself and must stay as hidden as the `${env:...}` it came from;
/// - anything else: the request echoed back as JSON (headers, URI, body), with the status of
///   `?status=NNN` if given, so a response body holds the secret too.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start() -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().fallback(record).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Recorder { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let entry = Seen {
        method,
        uri: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    seen.lock().unwrap().push(entry.clone());
    if uri.path() == "/login" {
        let password = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["password"].as_str().map(str::to_string))
            .unwrap_or_default();
        return axum::Json(json!({ "token": password })).into_response();
    }
    let status = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("status="))
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let echo = json!({
        "uri": entry.uri,
        "headers": entry.headers,
        "body": entry.body,
    });
    (status, axum::Json(echo)).into_response()
}

/// The manifest. `setup_fails` makes the setup login answer 500 (with the secret echoed in
/// the body), so the run ends in a setup failure before any load.
fn manifest(demo: &str, recorder: &str, refused: &str, setup_fails: bool) -> String {
    let login = if setup_fails {
        format!("{recorder}/echo?status=500&api_key=${{env:{SECRET_ENV}}}")
    } else {
        format!("{recorder}/login")
    };
    format!(
        r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: secrets}}
spec:
  target: {{baseUrl: "{demo}", timeout: 5s}}
  setup:
    - name: login
      request:
        method: POST
        url: "{login}"
        headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
        json: {{user: e2e, password: "${{env:{SECRET_ENV}}}"}}
      check: {{status: [200]}}
      extract: {{session: {{jsonPath: "$.token"}}}}
  scenarios:
    # Succeeds: the secret in a header, a query parameter and a JSON body, and the
    # setup-extracted value in another header.
    - name: carries
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: bearer-and-query
          request:
            url: "{recorder}/echo?api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}", X-Session: "${{setup.session}}"}}
          check: {{status: [200]}}
        - name: json-body
          request:
            method: POST
            url: "{recorder}/echo"
            json: {{apiKey: "${{env:{SECRET_ENV}}}", session: "${{setup.session}}", nested: {{list: ["${{env:{SECRET_ENV}}}"]}}}}
          check: {{status: [200], bodyContains: "{SECRET}"}}
    # 5xx from the demo target, retried, with the secret in the query and a header.
    - name: server-error
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: five-hundred
          request:
            url: "/api/items?status=503&api_key=${{env:{SECRET_ENV}}}"
            headers: {{X-Api-Key: "${{env:{SECRET_ENV}}}"}}
          check: {{status: [200]}}
          retry: {{attempts: 2, on: [5xx], backoff: 10ms}}
        - name: injected-failure
          request:
            method: POST
            url: "/api/process?fail=1&api_key=${{env:{SECRET_ENV}}}"
            json: {{apiKey: "${{env:{SECRET_ENV}}}"}}
          check: {{status: [202]}}
    # 401 from the demo target: it does not know the secret as a bearer token.
    - name: unauthorized
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: bad-bearer
          request:
            url: "/api/items?api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
          check: {{status: [200]}}
    # Failing checks on a response that echoes the secret.
    - name: check-fails
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: body-check
          request:
            method: POST
            url: "{recorder}/echo?api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
            json: {{apiKey: "${{env:{SECRET_ENV}}}"}}
          check: {{status: [200], bodyContains: "never-in-the-body", jsonPath: "$.uri", equals: "/nope"}}
        - name: status-check
          request:
            url: "{recorder}/echo?status=418&api_key=${{env:{SECRET_ENV}}}"
          check: {{status: [200], jsonPath: "$.body", equals: "${{env:{SECRET_ENV}}}"}}
    # A failing extraction, and a later step that would use the missing value.
    - name: extract-fails
      executor: shared-iterations
      vus: 2
      iterations: 4
      steps:
        - name: extract
          request:
            url: "{recorder}/echo?api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
          extract: {{missing: {{jsonPath: "$.no.such.field"}}, cut: {{regex: "never-(matches)"}}}}
        - name: uses-missing
          request:
            url: "{recorder}/echo?value=${{missing}}&api_key=${{env:{SECRET_ENV}}}"
    # A request timeout and (next scenario) a refused connection, the secret in both URLs.
    - name: transport
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: slow
          request:
            url: "/api/items?delay=2s&api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
            timeout: 150ms
          retry: {{attempts: 2, on: [timeout], backoff: 10ms}}
    - name: refused
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: refused
          request:
            url: "{refused}/x?api_key=${{env:{SECRET_ENV}}}"
            headers: {{Authorization: "Bearer ${{env:{SECRET_ENV}}}"}}
  thresholds:
    - "error_rate < 1%"
    - "checks > 99%"
    - {{expr: "p(95) < 1ms", scenario: transport, step: slow}}
  runners:
    parallelism: 2
    env:
      - name: {SECRET_ENV}
        valueFrom: {{secretKeyRef: {{name: e2e-credentials, key: api-key}}}}
  timeout: 60s
"#
    )
}

/// What one `volley run` left behind.
struct Ran {
    out: Output,
    summary: String,
    seen: Vec<Seen>,
    demo_requests: u64,
    demo_failures: u64,
}

/// Runs `volley run --runners 2 --out summary.json` on the manifest, at most [`RUN_LIMIT`].
async fn run_volley(tag: &str, setup_fails: bool, debug: bool) -> Ran {
    let demo = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
        .await
        .unwrap();
    let recorder = Recorder::start().await;
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let dir = tempdir(tag);
    let file = dir.join("secrets.yaml");
    std::fs::write(
        &file,
        manifest(&demo.base_url(), &recorder.url(), &refused, setup_fails),
    )
    .unwrap();
    let out_file = dir.join("summary.json");

    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.arg("run")
        .arg(&file)
        .args(["--runners", "2", "--out"])
        .arg(&out_file)
        .env(SECRET_ENV, SECRET)
        .env_remove("VOLLEY_ALLOWED_TARGETS")
        .kill_on_drop(true);
    if debug {
        cmd.env("RUST_LOG", "debug");
    } else {
        cmd.env_remove("RUST_LOG");
    }
    let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{tag}: volley run took longer than {RUN_LIMIT:?}"))
        .expect("run volley");
    let summary = std::fs::read_to_string(&out_file).unwrap_or_default();
    let stats = demo.stats();
    demo.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ran {
        out,
        summary,
        seen: recorder.seen(),
        demo_requests: stats.requests,
        demo_failures: stats.failures_injected,
    }
}

/// Fails naming the place and the surrounding text if `haystack` holds the secret.
fn assert_no_secret(tag: &str, place: &str, haystack: &str) {
    if let Some(at) = haystack.find(SECRET) {
        let from = haystack[..at]
            .char_indices()
            .rev()
            .nth(200)
            .map_or(0, |(i, _)| i);
        let to = (at + SECRET.len() + 200).min(haystack.len());
        let to = (to..=haystack.len())
            .find(|i| haystack.is_char_boundary(*i))
            .unwrap_or(haystack.len());
        panic!(
            "{tag}: the secret leaked into {place}:\n…{}…",
            &haystack[from..to]
        );
    }
}

fn assert_clean(tag: &str, ran: &Ran) {
    let stdout = String::from_utf8_lossy(&ran.out.stdout);
    let stderr = String::from_utf8_lossy(&ran.out.stderr);
    assert_no_secret(tag, "stdout", &stdout);
    assert_no_secret(tag, "stderr", &stderr);
    assert_no_secret(tag, "the --out summary JSON", &ran.summary);
}

fn counted(summary: &Value, kind: &str) -> u64 {
    summary["metrics"]["errorsByKind"][kind]
        .as_u64()
        .unwrap_or(0)
}

/// The load ran every failure path, sent the secret everywhere it was written, and nothing
/// Volley printed or wrote holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_secret_is_sent_but_never_printed_or_reported() {
    let (plain, debug) = tokio::join!(
        run_volley("load", false, false),
        run_volley("load-debug", false, true)
    );
    for (tag, ran) in [("plain", &plain), ("RUST_LOG=debug", &debug)] {
        let stderr = String::from_utf8_lossy(&ran.out.stderr);
        assert_eq!(
            ran.out.status.code(),
            Some(99),
            "{tag}: the thresholds fail (exit 99); stderr:\n{stderr}"
        );
        assert_clean(tag, ran);

        // The failure paths really ran.
        let summary: Value = serde_json::from_str(&ran.summary)
            .unwrap_or_else(|e| panic!("{tag}: no summary JSON ({e}); stderr:\n{stderr}"));
        for kind in ["5xx", "4xx", "timeout", "connect", "check", "extract"] {
            assert!(
                counted(&summary, kind) > 0,
                "{tag}: no `{kind}` errors counted: {}",
                summary["metrics"]["errorsByKind"]
            );
        }
        assert_eq!(summary["verdict"], "Failed", "{tag}");
        assert!(ran.demo_requests > 0 && ran.demo_failures > 0, "{tag}");

        // The secret was sent, every way the manifest says.
        let seen = &ran.seen;
        let bearer = format!("Bearer {SECRET}");
        let login: Vec<&Seen> = seen.iter().filter(|s| s.uri == "/login").collect();
        assert_eq!(login.len(), 1, "{tag}: one setup login");
        assert!(login[0].body.contains(SECRET), "{tag}: login body");
        assert_eq!(login[0].header("authorization"), Some(bearer.as_str()));
        let query = format!("api_key={SECRET}");
        assert!(
            seen.iter().any(|s| s.method == Method::GET
                && s.uri.contains(&query)
                && s.header("authorization") == Some(bearer.as_str())
                && s.header("x-session") == Some(SECRET)),
            "{tag}: a GET with the secret in the query, the Authorization header and (from \
             setup) X-Session"
        );
        assert!(
            seen.iter().any(|s| s.method == Method::POST
                && s.uri == "/echo"
                && serde_json::from_str::<Value>(&s.body).is_ok_and(|b| b["apiKey"] == SECRET
                    && b["session"] == SECRET
                    && b["nested"]["list"][0] == SECRET)),
            "{tag}: a JSON body with the secret in its fields"
        );
        assert!(
            !seen.iter().any(|s| s.uri.contains("value=")),
            "{tag}: a step whose value failed to extract is not sent"
        );
    }
}

/// Setup fails (500, with the secret in the URL, the headers and the echoed body): the run
/// ends with exit 1 before any load, and says so without the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_setup_does_not_print_the_secret() {
    let (plain, debug) = tokio::join!(
        run_volley("setup", true, false),
        run_volley("setup-debug", true, true)
    );
    for (tag, ran) in [("plain", &plain), ("RUST_LOG=debug", &debug)] {
        let stderr = String::from_utf8_lossy(&ran.out.stderr);
        assert_eq!(
            ran.out.status.code(),
            Some(1),
            "{tag}: a failed setup is exit 1; stderr:\n{stderr}"
        );
        let stdout = String::from_utf8_lossy(&ran.out.stdout);
        assert!(
            stderr.contains("login") || stdout.contains("login"),
            "{tag}: the failure names the setup step:\n{stdout}\n{stderr}"
        );
        assert_clean(tag, ran);
        assert_eq!(ran.seen.len(), 1, "{tag}: only the setup request was sent");
        let login = &ran.seen[0];
        assert!(login.uri.contains(SECRET) && login.body.contains(SECRET));
        assert_eq!(ran.demo_requests, 0, "{tag}: no load after a failed setup");
    }
}

/// A secret that makes a URL invalid (a password with a `/` in the user-info part) once it is
/// filled in: the run ends with exit 1 and an error that names the field, not the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_the_secret_breaks_is_not_shown() {
    let dir = tempdir("bad-url");
    let file = dir.join("bad-url.yaml");
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: bad-url}}
spec:
  target: {{baseUrl: "http://127.0.0.1:{port}", timeout: 1s}}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 2
      iterations: 2
      steps:
        - name: basic-auth
          request: {{url: "http://e2e:${{env:{SECRET_ENV}}}@127.0.0.1:{port}/x"}}
  runners:
    parallelism: 2
    env:
      - name: {SECRET_ENV}
        valueFrom: {{secretKeyRef: {{name: e2e-credentials, key: password}}}}
"#,
            port = closed_port()
        ),
    )
    .unwrap();
    let out_file = dir.join("summary.json");
    for debug in [false, true] {
        let mut cmd = tokio::process::Command::new(VOLLEY);
        cmd.arg("run")
            .arg(&file)
            .args(["--runners", "2", "--out"])
            .arg(&out_file)
            .env(SECRET_ENV, format!("{SECRET}/with-a-slash"))
            .env("RUST_LOG", if debug { "debug" } else { "warn" })
            .kill_on_drop(true);
        let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
            .await
            .expect("volley run is bounded")
            .expect("run volley");
        let ran = Ran {
            summary: std::fs::read_to_string(&out_file).unwrap_or_default(),
            out,
            seen: Vec::new(),
            demo_requests: 0,
            demo_failures: 0,
        };
        let tag = if debug { "RUST_LOG=debug" } else { "plain" };
        assert_eq!(ran.out.status.code(), Some(1), "{tag}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ran.out.stdout),
            String::from_utf8_lossy(&ran.out.stderr)
        );
        assert!(
            said.contains("request.url") && said.contains("not shown"),
            "{tag}: the error names the field:\n{said}"
        );
        assert_clean(tag, &ran);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_manifest_is_valid() {
    let dir = tempdir("validate");
    for setup_fails in [false, true] {
        let file: &Path = &dir.join("m.yaml");
        std::fs::write(
            file,
            manifest(
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                "http://127.0.0.1:9",
                setup_fails,
            ),
        )
        .unwrap();
        let out = std::process::Command::new(VOLLEY)
            .arg("validate")
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue #19, finding 9: a secret inside a host name (`http://${env:SECRET}.example.com`), or
/// inside a `Host` header, refused by the allow-list. The refusal says what is refused without
/// the host, in stdout, stderr and `--out`. Host names are lowercased when parsed, so the
/// outputs are searched for the lowercased secret too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_refused_host_is_not_shown() {
    let dir = tempdir("host-secret");
    let port = closed_port();
    let write = |step: &str| {
        let file = dir.join("host-secret.yaml");
        std::fs::write(
            &file,
            format!(
                r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {{name: host-secret}}
spec:
  target: {{baseUrl: "http://127.0.0.1:{port}", timeout: 1s}}
  scenarios:
    - name: s
      executor: shared-iterations
      vus: 1
      iterations: 2
      steps:
{step}
  runners:
    env:
      - name: {SECRET_ENV}
        valueFrom: {{secretKeyRef: {{name: e2e-credentials, key: password}}}}
"#
            ),
        )
        .unwrap();
        file
    };
    let in_url = write(&format!(
        "        - name: tenant-host\n          request: {{url: \"http://${{env:{SECRET_ENV}}}.example.com/x\"}}"
    ));
    let out_file = dir.join("summary.json");
    let run = |file: std::path::PathBuf, debug: bool| {
        let out_file = out_file.clone();
        async move {
            let _ = std::fs::remove_file(&out_file);
            let mut cmd = tokio::process::Command::new(VOLLEY);
            cmd.arg("run")
                .arg(&file)
                .args(["--allowed-targets", &format!("127.0.0.1:{port}"), "--out"])
                .arg(&out_file)
                .env(SECRET_ENV, SECRET)
                .env("RUST_LOG", if debug { "debug" } else { "warn" })
                .kill_on_drop(true);
            let out = tokio::time::timeout(RUN_LIMIT, cmd.output())
                .await
                .expect("volley run is bounded")
                .expect("run volley");
            Ran {
                summary: std::fs::read_to_string(&out_file).unwrap_or_default(),
                out,
                seen: Vec::new(),
                demo_requests: 0,
                demo_failures: 0,
            }
        }
    };
    let lower = SECRET.to_lowercase();
    for debug in [false, true] {
        let tag = if debug { "url, RUST_LOG=debug" } else { "url" };
        let ran = run(in_url.clone(), debug).await;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ran.out.stdout),
            String::from_utf8_lossy(&ran.out.stderr)
        );
        assert_eq!(ran.out.status.code(), Some(1), "{tag}:\n{said}");
        assert!(
            said.contains("request.url") && said.contains("not shown"),
            "{tag}: the refusal names the field:\n{said}"
        );
        assert!(
            ran.summary.contains("TargetNotAllowed"),
            "{tag}: {}",
            ran.summary
        );
        assert_clean(tag, &ran);
        for (place, text) in [("output", &said), ("--out", &ran.summary)] {
            assert!(
                !text.to_lowercase().contains(&lower),
                "{tag}: the lowercased secret leaked into {place}:\n{text}"
            );
        }
    }

    // In a `Host` header: refused at each send; the warning does not show it either.
    let in_header = write(&format!(
        "        - name: tenant-vhost\n          request: {{url: /x, headers: {{Host: \"${{env:{SECRET_ENV}}}.example.com\"}}}}"
    ));
    for debug in [false, true] {
        let tag = if debug {
            "header, RUST_LOG=debug"
        } else {
            "header"
        };
        let ran = run(in_header.clone(), debug).await;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&ran.out.stdout),
            String::from_utf8_lossy(&ran.out.stderr)
        );
        let summary: Value = serde_json::from_str(&ran.summary)
            .unwrap_or_else(|e| panic!("{tag}: no summary ({e}):\n{said}"));
        assert_eq!(counted(&summary, "blocked"), 2, "{tag}: {summary}");
        assert_clean(tag, &ran);
        for (place, text) in [("output", &said), ("--out", &ran.summary)] {
            assert!(
                !text.to_lowercase().contains(&lower),
                "{tag}: the lowercased secret leaked into {place}:\n{text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
