//! `volley kube run` and `volley report --from-cluster`, the real `volley` binary against a
//! small fake Kubernetes API server on 127.0.0.1 (axum), reached through a kubeconfig file in a
//! temp dir (`KUBECONFIG`). The fake serves exactly the calls the CLI makes (POST, GET and
//! PUT of `loadtests.volley.dev`, GET of the report ConfigMap), moves the LoadTest's status
//! forward one step per GET, and serves summaries produced by real `volley run` processes
//! against the demo target. No Kubernetes runs here: what the fake answers is what the API
//! server documents (objects, `Status` errors), not a cluster's behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use volley_demo_target::{DemoConfig, DemoTarget};

use support::tempdir;

const VOLLEY: &str = env!("CARGO_BIN_EXE_volley");
const LOADTESTS: &str = "/apis/volley.dev/v1alpha1/namespaces/{ns}/loadtests";

/// The test's LoadTest: one short scenario against `@BASE@`; `@THRESHOLD@` decides the verdict.
const MANIFEST: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata:
  name: web
  labels: {team: perf}
spec:
  target: {baseUrl: "@BASE@", timeout: 5s}
  scenarios:
    - name: browse
      executor: constant-arrival-rate
      rate: 20
      duration: 2s
      maxVUs: 5
      steps:
        - {name: list, request: {url: /api/items}, check: {status: [200]}}
  thresholds: ["@THRESHOLD@"]
"#;

/// What a real `volley run` wrote and printed for a passing and a failing run.
struct RealRun {
    /// `--out`: the summary document.
    summary: String,
    /// Its standard output: the summary text.
    stdout: String,
}

struct RealRuns {
    dir: PathBuf,
    passed: RealRun,
    failed: RealRun,
}

/// Two real `volley run`s against the demo target, once per test binary: one whose threshold
/// holds (exit 0), one whose threshold fails (exit 99). Run on a thread of their own, with
/// their own runtime, so every test can share them.
fn real_runs() -> &'static RealRuns {
    static RUNS: OnceLock<RealRuns> = OnceLock::new();
    RUNS.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let target = DemoTarget::start(([127, 0, 0, 1], 0).into(), DemoConfig::default())
                    .await
                    .unwrap();
                let dir = tempdir("kube-run");
                let mut runs = Vec::new();
                for (tag, threshold, code) in [
                    ("passed", "error_rate < 1%", 0),
                    ("failed", "rps > 100000", 99),
                ] {
                    let manifest = dir.join(format!("{tag}.yaml"));
                    std::fs::write(&manifest, manifest_text(&target.base_url(), threshold))
                        .unwrap();
                    let summary = dir.join(format!("{tag}-summary.json"));
                    let out = output(volley(&[
                        "run",
                        manifest.to_str().unwrap(),
                        "-q",
                        "--out",
                        summary.to_str().unwrap(),
                    ]))
                    .await;
                    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
                    runs.push(RealRun {
                        summary: std::fs::read_to_string(&summary).unwrap(),
                        stdout: String::from_utf8(out.stdout).unwrap(),
                    });
                }
                target.shutdown().await;
                let failed = runs.pop().unwrap();
                let passed = runs.pop().unwrap();
                RealRuns {
                    dir,
                    passed,
                    failed,
                }
            })
        })
        .join()
        .unwrap()
    })
}

fn manifest_text(base: &str, threshold: &str) -> String {
    MANIFEST
        .replace("@BASE@", base)
        .replace("@THRESHOLD@", threshold)
}

fn volley(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(VOLLEY);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("volley took longer than 60 s")
        .expect("run volley")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status the fake serves on a GET, made from the stored object (its generation and
/// annotations) when the GET comes.
type StatusStep = Box<dyn Fn(&Value) -> Value + Send>;

/// The fake API server's state.
#[derive(Default)]
struct Fake {
    /// The LoadTest as stored.
    object: Option<Value>,
    /// Statuses served by successive GETs after a write; the last one stays.
    statuses: VecDeque<StatusStep>,
    /// Report ConfigMaps: name -> summary document.
    reports: BTreeMap<String, String>,
    /// Every request: method, path, body.
    seen: Vec<(Method, String, Value)>,
    /// When set, every LoadTest call answers this status code and body.
    refuse: Option<(u16, Value)>,
    /// A report ConfigMap someone else owns (planted under the report's name).
    planted: Option<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn api_status(code: u16, reason: &str, message: &str, details: Value) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
               "reason": reason, "message": message, "details": details}),
    )
}

fn reply((code, body): (u16, Value)) -> Response {
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

async fn get_loadtest(
    State(fake): State<Shared>,
    UrlPath((_ns, name)): UrlPath<(String, String)>,
    uri: Uri,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.seen.push((Method::GET, uri.path().into(), Value::Null));
    if let Some(refused) = f.refuse.clone() {
        return reply(refused);
    }
    let stored = f
        .object
        .clone()
        .filter(|o| o["metadata"]["name"] == name.as_str());
    let Some(mut object) = stored else {
        return reply(api_status(
            404,
            "NotFound",
            &format!("loadtests.volley.dev \"{name}\" not found"),
            json!({"name": name, "group": "volley.dev", "kind": "loadtests"}),
        ));
    };
    if let Some(step) = f.statuses.front() {
        object["status"] = step(&object);
    }
    if f.statuses.len() > 1 {
        f.statuses.pop_front();
    }
    f.object = Some(object.clone());
    reply((200, object))
}

async fn create_loadtest(
    State(fake): State<Shared>,
    UrlPath(ns): UrlPath<String>,
    uri: Uri,
    Json(mut body): Json<Value>,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.seen.push((Method::POST, uri.path().into(), body.clone()));
    if let Some(refused) = f.refuse.clone() {
        return reply(refused);
    }
    if f.object.is_some() {
        return reply(api_status(409, "AlreadyExists", "exists", json!({})));
    }
    let meta = &mut body["metadata"];
    if let Some(prefix) = meta["generateName"].as_str() {
        meta["name"] = json!(format!("{prefix}x7k2p"));
    }
    meta["namespace"] = json!(ns);
    meta["uid"] = json!("uid-1");
    meta["generation"] = json!(1);
    meta["resourceVersion"] = json!("1");
    f.object = Some(body.clone());
    reply((201, body))
}

async fn replace_loadtest(
    State(fake): State<Shared>,
    UrlPath((_ns, _name)): UrlPath<(String, String)>,
    uri: Uri,
    Json(mut body): Json<Value>,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.seen.push((Method::PUT, uri.path().into(), body.clone()));
    let Some(stored) = f.object.clone() else {
        return reply(api_status(404, "NotFound", "gone", json!({"name": "web"})));
    };
    if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
        return reply(api_status(
            409,
            "Conflict",
            "the object has been modified",
            json!({}),
        ));
    }
    // As the API server does: the generation moves with the spec only; the status is kept.
    let generation = stored["metadata"]["generation"].as_i64().unwrap();
    let changed = body["spec"] != stored["spec"];
    body["metadata"]["generation"] = json!(generation + i64::from(changed));
    body["metadata"]["resourceVersion"] = json!("2");
    body["status"] = stored["status"].clone();
    f.object = Some(body.clone());
    reply((200, body))
}

async fn get_configmap(
    State(fake): State<Shared>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    uri: Uri,
) -> Response {
    let mut f = fake.lock().unwrap();
    f.seen.push((Method::GET, uri.path().into(), Value::Null));
    // Owned by the LoadTest, as the operator writes reports (unless the test plants one).
    let owner = match &f.planted {
        Some(planted) if *planted == name => json!("someone-else"),
        _ => f
            .object
            .as_ref()
            .map_or(Value::Null, |o| o["metadata"]["uid"].clone()),
    };
    match f.reports.get(&name) {
        Some(summary) => reply((
            200,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "namespace": ns,
                                "ownerReferences": [{"apiVersion": "volley.dev/v1alpha1",
                                    "kind": "LoadTest", "name": "web", "uid": owner}]},
                   "data": {"summary.json": summary}}),
        )),
        None => reply(api_status(
            404,
            "NotFound",
            &format!("configmaps \"{name}\" not found"),
            json!({"name": name, "kind": "configmaps"}),
        )),
    }
}

/// A fake API server on 127.0.0.1 and a kubeconfig (context namespace `ci`) pointing at it.
struct Cluster {
    fake: Shared,
    kubeconfig: PathBuf,
    dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn start(tag: &str) -> Cluster {
        use axum::routing::get;
        let fake: Shared = Arc::default();
        let app = axum::Router::new()
            .route(LOADTESTS, axum::routing::post(create_loadtest))
            .route(
                &format!("{LOADTESTS}/{{name}}"),
                get(get_loadtest).put(replace_loadtest),
            )
            .route(
                "/api/v1/namespaces/{ns}/configmaps/{name}",
                get(get_configmap),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let dir = tempdir(tag);
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \
                 \"http://{addr}\"}}\nusers:\n- name: ci\n  user: {{token: test-token}}\n\
                 contexts:\n- name: fake\n  context: {{cluster: fake, user: ci, namespace: ci}}\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        Cluster {
            fake,
            kubeconfig,
            dir,
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.fake.lock().unwrap())
    }

    /// `volley ARGS` against this cluster, polling fast.
    fn volley(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = volley(args);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        if args.first() == Some(&"kube") {
            cmd.args(["--poll-interval", "50ms"]);
        }
        cmd
    }

    /// The test's manifest file (threshold of the passing run).
    fn manifest(&self) -> PathBuf {
        let path = self.dir.join("web.yaml");
        std::fs::write(&path, manifest_text("http://demo.test", "error_rate < 1%")).unwrap();
        path
    }

    fn seen(&self) -> Vec<(Method, String, Value)> {
        self.with(|f| f.seen.clone())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The statuses of one run seen by successive GETs: none yet, Pending, Starting, two
/// Running reads, then `summary`'s end with report ConfigMap `report`; `rerun` answers the
/// annotation the CLI set.
fn one_run(summary: &str, run: u32, report: &str) -> Vec<StatusStep> {
    let s: Value = serde_json::from_str(summary).unwrap();
    let of = |object: &Value| {
        (
            object["metadata"]["generation"].clone(),
            object["metadata"]["annotations"]["volley.dev/rerun"].clone(),
        )
    };
    let running = move |secs: u64, requests: u64| -> StatusStep {
        Box::new(move |o: &Value| {
            let (generation, rerun) = of(o);
            json!({"phase": "Running", "observedGeneration": generation, "run": run,
                   "rerunRequest": rerun,
                   "runners": {"desired": 1, "ready": 1, "running": 1, "succeeded": 0, "failed": 0, "summary": "1/1"},
                   "metrics": {"requests": requests, "failures": 0, "errorRate": 0.0, "rps": 20.0,
                               "iterations": requests, "droppedIterations": 0,
                               "latencyMs": {"min": 1.0, "mean": 2.0, "p50": 2.0, "p90": 3.0, "p95": 4.0, "p99": 5.0, "max": 6.0},
                               "dataReceivedBytes": 0, "dataSentBytes": 0, "p95": "4ms", "errors": "0%",
                               "throughput": "20/s", "duration": format!("{secs}s")}})
        })
    };
    let report = report.to_string();
    vec![
        Box::new(|_: &Value| Value::Null),
        Box::new(move |o: &Value| {
            let (generation, rerun) = of(o);
            json!({"phase": "Pending", "observedGeneration": generation, "run": run, "rerunRequest": rerun})
        }),
        Box::new(move |o: &Value| {
            let (generation, rerun) = of(o);
            json!({"phase": "Starting", "observedGeneration": generation, "run": run, "rerunRequest": rerun,
                   "runners": {"desired": 1, "ready": 0, "running": 0, "succeeded": 0, "failed": 0, "summary": "0/1"}})
        }),
        running(1, 20),
        running(2, 40),
        Box::new(move |o: &Value| {
            let (generation, rerun) = of(o);
            json!({"phase": s["phase"], "verdict": s["verdict"], "reason": s["reason"],
                   "message": s["message"], "observedGeneration": generation, "run": run,
                   "rerunRequest": rerun, "reportRef": {"configMapName": report},
                   "conditions": [{"type": "Complete", "status": "True", "observedGeneration": generation,
                                   "reason": "Done", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        }),
    ]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A new LoadTest: the POST body is the manifest's LoadTest, the progress line comes from the
/// status, the summary printed is exactly `volley run`'s for that report, the report files
/// equal `volley report`'s, `--out` is the ConfigMap's document, and the exit code is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_loadtest_is_created_followed_and_reported_like_volley_run() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-new").await;
    cluster.with(|f| {
        f.statuses = one_run(&runs.passed.summary, 1, "web-report").into();
        f.reports
            .insert("web-report".into(), runs.passed.summary.clone());
    });
    let manifest = cluster.manifest();
    let out_dir = tempdir("kube-new-out");
    let [summary, junit, markdown, csv, html] = [
        "summary.json",
        "junit.xml",
        "report.md",
        "series.csv",
        "report.html",
    ]
    .map(|f| out_dir.join(f));
    let out = output(cluster.volley(&[
        "kube",
        "run",
        manifest.to_str().unwrap(),
        "--out",
        summary.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
        "--markdown",
        markdown.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        stdout(&out),
        runs.passed.stdout,
        "the summary of `volley run`"
    );
    assert!(
        err.contains("loadtest.volley.dev/web created in namespace ci"),
        "{err}"
    );
    assert!(
        err.contains("running 1s/2s  20.0 req/s  p95 4ms  errors 0%  runners 1/1  iterations 20"),
        "the progress line from the status: {err}"
    );
    // Not a terminal: a line every 5 s of load at most, as `volley run` writes to logs.
    assert_eq!(err.matches("running ").count(), 1, "{err}");

    // The POST carried the manifest's LoadTest into the kubeconfig context's namespace.
    let seen = cluster.seen();
    let posts: Vec<_> = seen.iter().filter(|(m, ..)| m == Method::POST).collect();
    assert_eq!(posts.len(), 1, "{seen:?}");
    assert_eq!(
        posts[0].1,
        "/apis/volley.dev/v1alpha1/namespaces/ci/loadtests"
    );
    let body = &posts[0].2;
    let lt = volley_core::manifest::parse_manifest(&read(&manifest)).unwrap();
    assert_eq!(body["spec"], serde_json::to_value(&lt.spec).unwrap());
    assert_eq!(body["metadata"]["name"], "web");
    assert_eq!(body["metadata"]["labels"]["team"], "perf");
    assert_eq!(body["kind"], "LoadTest");
    assert_eq!(body["apiVersion"], "volley.dev/v1alpha1");
    assert!(
        seen.iter()
            .any(|(_, path, _)| path == "/api/v1/namespaces/ci/configmaps/web-report"),
        "{seen:?}"
    );

    // The files are the ConfigMap's document and `volley report`'s renderings of it.
    assert_eq!(read(&summary), runs.passed.summary);
    let again = tempdir("kube-new-again");
    let [junit2, markdown2, csv2] = ["junit.xml", "report.md", "series.csv"].map(|f| again.join(f));
    let rendered = output(volley(&[
        "report",
        summary.to_str().unwrap(),
        "--junit",
        junit2.to_str().unwrap(),
        "--markdown",
        markdown2.to_str().unwrap(),
        "--csv",
        csv2.to_str().unwrap(),
    ]))
    .await;
    assert_eq!(rendered.status.code(), Some(0), "{}", stderr(&rendered));
    assert_eq!(read(&junit), read(&junit2));
    assert_eq!(read(&markdown), read(&markdown2));
    assert_eq!(read(&csv), read(&csv2));
    let page = read(&html);
    assert!(
        page.contains("<html") && page.contains("demo.test"),
        "with the spec"
    );
}

/// A threshold failed in the cluster: the summary of that run and exit 99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_threshold_exits_99_with_its_summary() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-failed").await;
    cluster.with(|f| {
        f.statuses = one_run(&runs.failed.summary, 1, "web-report").into();
        f.reports
            .insert("web-report".into(), runs.failed.summary.clone());
    });
    let manifest = cluster.manifest();
    let out = output(cluster.volley(&["kube", "run", manifest.to_str().unwrap(), "-q"])).await;
    assert_eq!(out.status.code(), Some(99), "{}", stderr(&out));
    assert_eq!(stdout(&out), runs.failed.stdout);
    assert!(stdout(&out).contains("verdict: FAILED"));
    assert!(!stderr(&out).contains("running "), "-q: no progress line");
}

/// Re-applying an existing LoadTest whose last run passed: the CLI replaces the spec (PUT
/// with the read resourceVersion) with a new `volley.dev/rerun` value, and waits for the run
/// answering it. The old run's Complete condition, verdict and report stay in the status for
/// a few reads and must not end the wait: the result is the new run's (99), not the old (0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_applying_an_existing_test_waits_for_the_new_run_not_the_old_result() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-rerun").await;
    let manifest = cluster.manifest();
    let lt = volley_core::manifest::parse_manifest(&read(&manifest)).unwrap();
    let old_status = json!({"phase": "Succeeded", "verdict": "Passed", "reason": "ThresholdsPassed",
        "observedGeneration": 1, "run": 1, "reportRef": {"configMapName": "web-report"},
        "conditions": [{"type": "Complete", "status": "True", "observedGeneration": 1,
                        "reason": "Done", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let mut new_run = one_run(&runs.failed.summary, 2, "web-report-r2");
    new_run.drain(..1);
    cluster.with(|f| {
        f.object = Some(json!({
            "apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest",
            "metadata": {"name": "web", "namespace": "ci", "uid": "uid-1", "generation": 1,
                         "resourceVersion": "1", "labels": {"owner": "gitops"}},
            "spec": serde_json::to_value(&lt.spec).unwrap(),
            "status": old_status,
        }));
        // The old status for three more reads, then the re-run.
        let old: Vec<StatusStep> = (0..3)
            .map(|_| -> StatusStep {
                let s = old_status.clone();
                Box::new(move |_: &Value| s.clone())
            })
            .collect();
        f.statuses = old.into_iter().chain(new_run).collect();
        f.reports
            .insert("web-report".into(), runs.passed.summary.clone());
        f.reports
            .insert("web-report-r2".into(), runs.failed.summary.clone());
    });
    let out = output(cluster.volley(&["kube", "run", manifest.to_str().unwrap()])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(99), "the new run's verdict: {err}");
    assert_eq!(stdout(&out), runs.failed.stdout);
    assert!(err.contains("re-run requested"), "{err}");
    let seen = cluster.seen();
    let puts: Vec<_> = seen.iter().filter(|(m, ..)| m == Method::PUT).collect();
    assert_eq!(puts.len(), 1, "{seen:?}");
    let body = &puts[0].2;
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["metadata"]["labels"]["owner"], "gitops", "kept");
    assert_eq!(body["metadata"]["labels"]["team"], "perf", "the manifest's");
    let rerun = body["metadata"]["annotations"]["volley.dev/rerun"]
        .as_str()
        .unwrap();
    assert!(rerun.starts_with("volley-kube-run-"), "{rerun}");
    assert_eq!(body["spec"], serde_json::to_value(&lt.spec).unwrap());
    assert!(!seen.iter().any(|(m, ..)| m == Method::POST));
    assert!(
        seen.iter()
            .any(|(_, p, _)| p.ends_with("/configmaps/web-report-r2"))
    );
    assert!(
        !seen
            .iter()
            .any(|(_, p, _)| p.ends_with("/configmaps/web-report")),
        "the old report is never read"
    );
}

/// `--timeout`: the test is still running when it expires; exit 1 with how to follow and
/// abort it, and nothing deleted (the fake serves no DELETE: it would be seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_exits_1_and_says_how_to_abort() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-timeout").await;
    cluster.with(|f| {
        let mut steps = one_run(&runs.passed.summary, 1, "web-report");
        steps.truncate(4); // ends Running, forever
        f.statuses = steps.into();
    });
    let manifest = cluster.manifest();
    let started = std::time::Instant::now();
    let out = output(cluster.volley(&[
        "kube",
        "run",
        manifest.to_str().unwrap(),
        "--timeout",
        "1s",
        "-n",
        "perf",
    ]))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(err.contains("--timeout 1s reached"), "{err}");
    assert!(err.contains("is still running in namespace perf"), "{err}");
    assert!(
        err.contains(
            r#"kubectl patch loadtest web -n perf --type merge -p '{"spec":{"abort":true}}'"#
        ),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    let seen = cluster.seen();
    assert!(
        seen.iter()
            .all(|(m, p, _)| p.contains("/namespaces/perf/")
                && (m == Method::GET || m == Method::POST)),
        "--namespace wins over the context; only reads and the create: {seen:?}"
    );
}

/// Ctrl-C stops following, says how to abort, exits 1 and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_following_without_deleting() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-sigint").await;
    cluster.with(|f| {
        let mut steps = one_run(&runs.passed.summary, 1, "web-report");
        steps.truncate(4);
        f.statuses = steps.into();
    });
    let manifest = cluster.manifest();
    let child = cluster
        .volley(&["kube", "run", manifest.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once it follows the running test (a few GETs seen), interrupt it.
    support::bounded(Duration::from_secs(30), async {
        while cluster.with(|f| f.seen.len()) < 6 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("stopped following (Ctrl-C)"), "{err}");
    assert!(
        err.contains("to abort it: kubectl patch loadtest web -n ci"),
        "{err}"
    );
    assert!(
        cluster
            .seen()
            .iter()
            .all(|(m, ..)| m == Method::GET || m == Method::POST)
    );
}

/// No CRD (the API server does not serve the resource) and no RBAC: each says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_crd_and_missing_rbac_say_what_to_do() {
    let cluster = Cluster::start("kube-errors").await;
    let manifest = cluster.manifest();
    cluster.with(|f| {
        f.refuse = Some(api_status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Value::Null,
        ));
    });
    let out = output(cluster.volley(&["kube", "run", manifest.to_str().unwrap()])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the Volley CRDs are not installed"), "{err}");
    assert!(err.contains("helm install volley charts/volley"), "{err}");

    cluster.with(|f| {
        f.refuse = Some(api_status(
            403,
            "Forbidden",
            "loadtests.volley.dev is forbidden: User \"ci\" cannot create resource",
            json!({"group": "volley.dev", "kind": "loadtests"}),
        ));
    });
    let out =
        output(cluster.volley(&["kube", "run", manifest.to_str().unwrap(), "--generate-name"]))
            .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("grant the RBAC verb `create` on `loadtests.volley.dev`"),
        "{err}"
    );
}

/// `--generate-name --no-wait`: one POST with `generateName`, the assigned name printed, exit
/// 0 at once. An invalid manifest is refused before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_and_no_wait_and_invalid_manifests() {
    let cluster = Cluster::start("kube-nowait").await;
    let manifest = cluster.manifest();
    let out = output(cluster.volley(&[
        "kube",
        "run",
        manifest.to_str().unwrap(),
        "--generate-name",
        "--no-wait",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "loadtest.volley.dev/web-x7k2p in namespace ci\n"
    );
    let seen = cluster.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].2["metadata"]["generateName"], "web-");
    assert!(seen[0].2["metadata"].get("name").is_none());

    let bad = cluster.dir.join("bad.yaml");
    std::fs::write(&bad, read(&manifest).replace("rate: 20", "rate: 0")).unwrap();
    let out = output(cluster.volley(&["kube", "run", bad.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("rate"), "{}", stderr(&out));
    assert_eq!(
        cluster.seen().len(),
        1,
        "nothing sent for an invalid manifest"
    );
}

/// `volley report --from-cluster NS/NAME`: the current run's report, rendered like `volley
/// report SUMMARY.json`; a test without a report yet says so and where the last one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_from_cluster_renders_the_current_runs_report() {
    let runs = real_runs();
    let cluster = Cluster::start("kube-report").await;
    let status = json!({"phase": "Failed", "verdict": "Failed", "observedGeneration": 2, "run": 2,
        "reportRef": {"configMapName": "web-report-r2"},
        "history": [{"run": 1, "reportRef": {"configMapName": "web-report"}}]});
    cluster.with(|f| {
        f.object = Some(
            json!({"apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest",
            "metadata": {"name": "web", "namespace": "ci", "uid": "u", "generation": 2},
            "spec": {"target": {"baseUrl": "http://demo.test"}, "scenarios": []},
            "status": status}),
        );
        f.reports
            .insert("web-report".into(), runs.passed.summary.clone());
        f.reports
            .insert("web-report-r2".into(), runs.failed.summary.clone());
    });
    let out = output(cluster.volley(&["report", "--from-cluster", "ci/web"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = runs.dir.join("failed-summary.json");
    let local = output(volley(&["report", file.to_str().unwrap()])).await;
    assert_eq!(
        stdout(&out),
        stdout(&local),
        "the current run's, as `volley report`"
    );

    cluster.with(|f| {
        let object = f.object.as_mut().unwrap();
        object["status"] = json!({"phase": "Running", "observedGeneration": 3, "run": 3,
            "history": [{"run": 2, "reportRef": {"configMapName": "web-report-r2"}}]});
    });
    let out = output(cluster.volley(&["report", "--from-cluster", "ci/web"])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("loadtest ci/web has no report yet: run 3 is Running"),
        "{err}"
    );
    assert!(
        err.contains("run 2's report is ConfigMap web-report-r2"),
        "{err}"
    );

    // A ConfigMap under the report's name that the LoadTest does not own is not its report.
    cluster.with(|f| {
        f.planted = Some("web-report-r2".into());
        f.object.as_mut().unwrap()["status"] = status.clone();
    });
    let out = output(cluster.volley(&["report", "--from-cluster", "ci/web"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ConfigMap ci/web-report-r2 is not owned by the LoadTest"),
        "{}",
        stderr(&out)
    );

    let out = output(cluster.volley(&["report", "--from-cluster", "ci/nope"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(r#"loadtests.volley.dev "nope" not found (namespace ci)"#),
        "{}",
        stderr(&out)
    );
}
