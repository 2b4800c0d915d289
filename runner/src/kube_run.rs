//! `volley kube run FILE` and `volley report --from-cluster NAMESPACE/NAME`: a LoadTest in a
//! cluster, driven from a CI job or a laptop through the API server (kubeconfig, or the pod's
//! service account in a cluster).
//!
//! `volley kube run` reads and validates the manifest as `volley run` does (plus the rules the
//! operator adds in a cluster), creates the LoadTest (or replaces the spec of the existing one
//! and asks for a new run), follows the run with the progress line of `volley run` fed from
//! the status, then reads the run's report ConfigMap and prints the summary of `volley run`,
//! writes the same report files and exits 0 / 99 / 1 like it.
//!
//! The decisions are pure functions: [`follow`] (a status in: still waiting, progress, or
//! done with an exit code), [`replacement`] (the object that re-runs an existing LoadTest) and
//! [`explain`] (an API error as something to do). The API calls are at the edge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::time::{Instant, MissedTickBehavior};
use volley_core::validate::validate_for_cluster;
use volley_crds::LoadTest;
use volley_crds::status::{LoadTestStatus, Phase, REPORT_KEY, RERUN_ANNOTATION};
use volley_runner::exit::EXIT_ERROR;
use volley_runner::local::{ProgressFigures, RunWatch, exit_code, exit_code_of};
use volley_runner::signals::Signals;
use volley_runner::summary::{RunSummary, render_text};

use crate::manifest_file::{ManifestProblems, load_manifest_with, print_problems};
use crate::report_files::{ReportFiles, reader_summary, write_reports};

/// The resource as RBAC and error messages name it.
const RESOURCE: &str = "loadtests.volley.dev";
/// Polls in a row that may fail to reach the API server before following gives up.
const MAX_UNREACHABLE_POLLS: u32 = 5;
/// Times a replace is retried when someone else changed the LoadTest between our read and our
/// write (HTTP 409).
const REPLACE_ATTEMPTS: u32 = 3;

/// Arguments of `volley kube run`.
#[derive(clap::Args, Debug)]
pub struct KubeRunArgs {
    /// The LoadTest manifest (YAML), as for `volley run`.
    pub file: PathBuf,
    /// The namespace (default: the manifest's `metadata.namespace`, else the kubeconfig
    /// context's namespace, else `default`).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Create a new LoadTest named `<metadata.name>-<random>` (the API server's
    /// `generateName`) instead of creating or re-running `metadata.name`.
    #[arg(long)]
    pub generate_name: bool,
    /// Follow the run to its end and exit 0 / 99 / 1 like `volley run` (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Only create (or re-run) the LoadTest, print its name and exit 0.
    #[arg(long, overrides_with = "wait", conflicts_with_all = ["timeout", "out", "html", "markdown", "junit", "csv"])]
    pub no_wait: bool,
    /// Stop following after this long (e.g. `30m`) and exit 1; the test keeps running in the
    /// cluster (the message says how to abort it). Default: until the run ends (the
    /// operator ends it at `spec.timeout`).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<volley_crds::Duration>,
    /// No progress line; only the summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the run's summary document (the report ConfigMap's `summary.json`, the
    /// shape `volley run --out` writes).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub reports: ReportFiles,
    /// How often the LoadTest is read while it runs.
    #[arg(long, value_name = "DURATION", default_value = "2s", hide = true)]
    pub poll_interval: volley_crds::Duration,
}

/// The run `volley kube run` waits for: the one of the generation it created or replaced,
/// and, when it re-ran an existing LoadTest, the one answering its `volley.dev/rerun` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awaited {
    /// The LoadTest's UID when created or replaced: another UID is another object.
    pub uid: Option<String>,
    /// `metadata.generation` after our write.
    pub generation: i64,
    /// The `volley.dev/rerun` value we set, when we re-ran an existing LoadTest.
    pub rerun: Option<String>,
}

/// Where the awaited run is, from one read of the LoadTest.
#[derive(Clone, Debug, PartialEq)]
pub enum Follow {
    /// Not running yet (or the status still describes an earlier run), with why.
    Waiting(String),
    /// Load is running: the figures of the progress line.
    Running(ProgressFigures),
    /// The run finished.
    Done {
        /// Its final phase.
        phase: Phase,
        /// Its report ConfigMap, when it left one.
        report: Option<String>,
        /// The exit code from the status, for a run without a report (with one, the report's
        /// summary decides, as in `volley run`).
        exit: u8,
        /// The status message.
        message: String,
    },
}

/// Where the run `awaited` is, as `status` stands; `planned` is the spec's planned duration
/// (for the progress line). Pure: the table tests below hold it to every case, including a
/// re-apply whose old run's `Complete` condition and report are still in the status.
pub fn follow(awaited: &Awaited, status: Option<&LoadTestStatus>, planned: Duration) -> Follow {
    let Some(status) = status else {
        return Follow::Waiting("waiting for the operator to pick it up".into());
    };
    let observed = status.observed_generation.unwrap_or(0);
    if observed < awaited.generation {
        return Follow::Waiting(match status.phase {
            Some(phase) if !phase.is_finished() => format!(
                "run {} (generation {observed}) is still {phase}; this spec runs next",
                status.run.unwrap_or(1)
            ),
            _ => format!(
                "waiting for the operator to start generation {}",
                awaited.generation
            ),
        });
    }
    if let Some(rerun) = &awaited.rerun
        && status.rerun_request.as_deref() != Some(rerun.as_str())
    {
        return Follow::Waiting(match status.phase {
            Some(phase) if !phase.is_finished() => format!(
                "run {} is still {phase}; the re-run starts after it",
                status.run.unwrap_or(1)
            ),
            _ => "waiting for the operator to start the re-run".into(),
        });
    }
    let phase = status.phase.unwrap_or(Phase::Pending);
    let runners = status.runners.as_ref();
    match phase {
        Phase::Pending | Phase::Starting => Follow::Waiting(format!(
            "run {} {phase}{}",
            status.run.unwrap_or(1),
            runners
                .map(|r| format!(": runners ready {}/{}", r.ready, r.desired))
                .unwrap_or_default()
        )),
        Phase::Running => {
            let m = status.metrics.clone().unwrap_or_default();
            Follow::Running(ProgressFigures {
                elapsed: m
                    .duration
                    .parse::<volley_crds::Duration>()
                    .map(|d| d.get())
                    .unwrap_or_default(),
                planned,
                rps: m.rps,
                p95_ms: (m.requests > 0).then_some(m.latency_ms.p95),
                failures: m.failures,
                requests: m.requests,
                running: runners.map_or(0, |r| r.running),
                runners: runners.map_or(0, |r| r.desired),
                iterations: m.iterations,
                dropped: m.dropped_iterations,
            })
        }
        Phase::Succeeded | Phase::Failed | Phase::Aborted | Phase::Error => Follow::Done {
            phase,
            report: status
                .report_ref
                .as_ref()
                .map(|r| r.config_map_name.clone()),
            exit: exit_code_of(phase, status.verdict, status.reason.as_deref()),
            message: status.message.clone().unwrap_or_default(),
        },
    }
}

/// The existing LoadTest `existing` with the manifest's spec, labels and annotations, and
/// `volley.dev/rerun` set to `rerun`, so it runs again even when the spec is unchanged (a
/// changed spec raises the generation, which alone would re-run it). Everything else of
/// `existing` (its resourceVersion for the optimistic write, owner references, finalizers)
/// is kept.
pub fn replacement(existing: &LoadTest, manifest: &LoadTest, rerun: &str) -> LoadTest {
    let mut lt = existing.clone();
    lt.spec = manifest.spec.clone();
    lt.status = None;
    let labels = lt.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.extend(manifest.metadata.labels.clone().unwrap_or_default());
    let annotations = lt.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.extend(manifest.metadata.annotations.clone().unwrap_or_default());
    annotations.insert(RERUN_ANNOTATION.into(), rerun.into());
    lt
}

/// The LoadTest to create from `manifest` in `namespace`: its name, or with `generate` a
/// `generateName` of `<name>-`, and its labels, annotations and spec.
pub fn to_create(manifest: &LoadTest, namespace: &str, generate: bool) -> LoadTest {
    let name = manifest.metadata.name.clone();
    let metadata = ObjectMeta {
        name: if generate { None } else { name.clone() },
        generate_name: generate.then(|| format!("{}-", name.as_deref().unwrap_or("loadtest"))),
        namespace: Some(namespace.to_string()),
        labels: manifest.metadata.labels.clone(),
        annotations: manifest.metadata.annotations.clone(),
        ..ObjectMeta::default()
    };
    LoadTest {
        metadata,
        spec: manifest.spec.clone(),
        status: None,
    }
}

/// What a failed API call means for the person running the CLI: `verb` on `resource` in
/// `namespace` failed with `e`. A 404 from a collection means the CRD is missing (or the
/// namespace), a 403 names the RBAC verb to grant.
pub fn explain(verb: &str, resource: &str, namespace: &str, e: &kube::Error) -> String {
    let kube::Error::Api(status) = e else {
        return format!(
            "cannot {verb} {resource} in namespace {namespace}: the API server could not be \
             reached or answered oddly: {e}"
        );
    };
    let details = status.details.as_ref();
    match status.code {
        404 if details.is_some_and(|d| d.kind == "namespaces") => {
            format!("namespace {namespace} does not exist ({})", status.message)
        }
        404 if details.is_none_or(|d| d.name.is_empty()) => format!(
            "the cluster does not serve {resource}: the Volley CRDs are not installed (install \
             the chart: `helm install volley charts/volley -n volley-system --create-namespace`, \
             or `kubectl apply --server-side -f charts/volley/crds/`)"
        ),
        404 => format!("{} (namespace {namespace})", status.message),
        403 => format!(
            "forbidden: your user may not `{verb}` {resource} in namespace {namespace}; grant \
             the RBAC verb `{verb}` on `{resource}` there (docs/reference.md lists what \
             `volley kube run` needs). The API server said: {}",
            status.message
        ),
        401 => format!(
            "unauthorized: the API server refused the kubeconfig's credentials ({})",
            status.message
        ),
        422 => format!(
            "the API server refused the LoadTest (its CRD schema or CEL rules): {}",
            status.message
        ),
        code => format!(
            "cannot {verb} {resource} in namespace {namespace}: HTTP {code}: {}",
            status.message
        ),
    }
}

/// How to stop the test `name` in `namespace` (the operator aborts on `spec.abort`).
fn abort_hint(namespace: &str, name: &str) -> String {
    format!(
        "to abort it: kubectl patch loadtest {name} -n {namespace} --type merge -p \
         '{{\"spec\":{{\"abort\":true}}}}'"
    )
}

/// A fresh `volley.dev/rerun` value: the time and a random part, so two CI jobs re-running
/// the same LoadTest never ask with the same value.
fn rerun_value() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("volley-kube-run-{millis}-{:04x}", rand::random::<u16>())
}

/// `volley kube run FILE ...`: see the module documentation.
pub fn kube_run(args: KubeRunArgs) -> ExitCode {
    let manifest = match load_manifest_with(&args.file, |_| {}) {
        Ok(lt) => lt,
        Err(problems) => {
            print_problems(args.file.display(), &problems);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // The operator applies these too: refused here, before anything is created.
    if let Err(errors) = validate_for_cluster(&manifest.spec) {
        print_problems(args.file.display(), &ManifestProblems::Invalid(errors));
        return ExitCode::from(EXIT_ERROR);
    }
    if manifest.metadata.name.is_none() && !args.generate_name {
        eprintln!(
            "{}: metadata.name is not set: name the LoadTest or pass --generate-name",
            args.file.display()
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(&args, &manifest)) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("volley kube run: {message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A kube client from the kubeconfig (`KUBECONFIG`, `~/.kube/config`) or the pod's service
/// account.
async fn client() -> Result<Client, String> {
    Client::try_default().await.map_err(|e| {
        format!(
            "no Kubernetes cluster to talk to: {e} (set KUBECONFIG or a current context, or run \
             in a pod with a service account)"
        )
    })
}

/// Creates or re-runs the LoadTest, follows it and reports: the exit code, or why it failed.
async fn run(args: &KubeRunArgs, manifest: &LoadTest) -> Result<u8, String> {
    let client = client().await?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| manifest.metadata.namespace.clone())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<LoadTest> = Api::namespaced(client.clone(), &namespace);
    let (lt, awaited) = submit(&api, manifest, &namespace, args.generate_name).await?;
    let name = lt.name_any();
    if args.no_wait {
        println!("loadtest.volley.dev/{name} in namespace {namespace}");
        return Ok(volley_runner::exit::EXIT_PASSED);
    }
    let planned = volley_core::plan::planned_duration(&manifest.spec);
    let progress = volley_runner::local::Progress::for_stderr(args.quiet);
    let Some((report, exit)) =
        watch_run(args, &api, &namespace, &name, &awaited, planned, progress).await?
    else {
        return Ok(EXIT_ERROR);
    };
    let Some(report) = report else {
        return Ok(exit);
    };
    let cms: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let bytes = read_report(&cms, &namespace, &report, awaited.uid.as_deref()).await?;
    let summary: RunSummary = serde_json::from_slice(&bytes).map_err(|e| {
        format!("the report ConfigMap {namespace}/{report} is not a run summary: {e}")
    })?;
    print!("{}", render_text(&summary));
    if let Some(out) = &args.out {
        std::fs::write(out, &bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    if args.reports.any() {
        let spec = serde_json::to_value(&manifest.spec).ok();
        let parsed = reader_summary(&summary)?;
        write_reports(&parsed, spec.as_ref(), None, &args.reports)?;
    }
    Ok(exit_code(&summary))
}

/// Creates the LoadTest, or replaces the spec of the existing one and asks for a re-run; says
/// which on stderr. Returns the written object and the run to wait for.
async fn submit(
    api: &Api<LoadTest>,
    manifest: &LoadTest,
    namespace: &str,
    generate: bool,
) -> Result<(LoadTest, Awaited), String> {
    let create = || async {
        let lt = api
            .create(
                &PostParams::default(),
                &to_create(manifest, namespace, generate),
            )
            .await
            .map_err(|e| explain("create", RESOURCE, namespace, &e))?;
        eprintln!(
            "loadtest.volley.dev/{} created in namespace {namespace}",
            lt.name_any()
        );
        let awaited = Awaited {
            uid: lt.metadata.uid.clone(),
            generation: lt.metadata.generation.unwrap_or(1),
            rerun: None,
        };
        Ok((lt, awaited))
    };
    if generate {
        return create().await;
    }
    let name = manifest.metadata.name.clone().unwrap_or_default();
    for _ in 0..REPLACE_ATTEMPTS {
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| explain("get", RESOURCE, namespace, &e))?;
        let Some(existing) = existing else {
            return create().await;
        };
        let rerun = rerun_value();
        let wanted = replacement(&existing, manifest, &rerun);
        match api.replace(&name, &PostParams::default(), &wanted).await {
            Ok(lt) => {
                eprintln!(
                    "loadtest.volley.dev/{name} exists in namespace {namespace}: spec replaced, \
                     re-run requested ({RERUN_ANNOTATION}={rerun})"
                );
                let awaited = Awaited {
                    uid: lt.metadata.uid.clone(),
                    generation: lt.metadata.generation.unwrap_or(1),
                    rerun: Some(rerun),
                };
                return Ok((lt, awaited));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(explain("update", RESOURCE, namespace, &e)),
        }
    }
    Err(format!(
        "loadtest {name} in namespace {namespace} kept changing while it was being replaced \
         ({REPLACE_ATTEMPTS} attempts); try again"
    ))
}

/// Follows the run until it is done: its report ConfigMap and exit code; `None` when
/// following stopped first (timeout, Ctrl-C, the LoadTest deleted), after saying why.
async fn watch_run(
    args: &KubeRunArgs,
    api: &Api<LoadTest>,
    namespace: &str,
    name: &str,
    awaited: &Awaited,
    planned: Duration,
    progress: volley_runner::local::Progress,
) -> Result<Option<(Option<String>, u8)>, String> {
    let mut display = RunWatch::new(progress, planned);
    let mut signals = Signals::install();
    let mut polls = tokio::time::interval(args.poll_interval.get().max(Duration::from_millis(10)));
    polls.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.timeout.map(|t| Instant::now() + t.get());
    let timed_out = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timed_out);
    let mut last_waiting = String::new();
    let mut unreachable_polls = 0;
    let stopped = loop {
        tokio::select! {
            _ = polls.tick() => {
                let lt = match api.get_opt(name).await {
                    Ok(lt) => {
                        unreachable_polls = 0;
                        lt
                    }
                    // The API server out of reach for a moment (a control-plane upgrade, a
                    // flaky CI network) does not end a run of many minutes; an answer does.
                    Err(e) if !matches!(e, kube::Error::Api(_)) && unreachable_polls < MAX_UNREACHABLE_POLLS => {
                        unreachable_polls += 1;
                        tracing::warn!(error = %e, attempt = unreachable_polls, "cannot read the LoadTest; trying again");
                        continue;
                    }
                    Err(e) => return Err(explain("get", RESOURCE, namespace, &e)),
                };
                let Some(lt) = lt.filter(|lt| awaited.uid.is_none() || lt.metadata.uid == awaited.uid) else {
                    display.finish();
                    eprintln!("loadtest {name} in namespace {namespace} was deleted (or replaced by another object) while it ran");
                    return Ok(None);
                };
                match follow(awaited, lt.status.as_ref(), planned) {
                    Follow::Waiting(why) => {
                        if why != last_waiting && progress != volley_runner::local::Progress::Quiet {
                            display.finish();
                            eprintln!("{name}: {why}");
                        }
                        last_waiting = why;
                    }
                    Follow::Running(figures) => {
                        if display.due_after(figures.elapsed) {
                            display.print(&figures);
                        }
                    }
                    Follow::Done { phase, report, exit, message } => {
                        display.finish();
                        if report.is_none() {
                            eprintln!("{name}: {phase} without a report: {message}");
                        }
                        return Ok(Some((report, exit)));
                    }
                }
            }
            () = &mut timed_out => break format!(
                "--timeout {} reached",
                args.timeout.unwrap_or_default()
            ),
            signal = signals.next() => break signal.to_string(),
        }
    };
    display.finish();
    eprintln!(
        "stopped following ({stopped}): loadtest {name} is still running in namespace \
         {namespace} (follow it with `kubectl get loadtest {name} -n {namespace} -w`); {}",
        abort_hint(namespace, name)
    );
    Ok(None)
}

/// The `summary.json` of the report ConfigMap `name`, which the LoadTest of UID `owner` must
/// own (as the operator's reports are): a ConfigMap someone else put under that name is not
/// its report.
async fn read_report(
    cms: &Api<ConfigMap>,
    namespace: &str,
    name: &str,
    owner: Option<&str>,
) -> Result<Vec<u8>, String> {
    let cm = cms
        .get_opt(name)
        .await
        .map_err(|e| explain("get", "configmaps", namespace, &e))?
        .ok_or_else(|| {
            format!("the report ConfigMap {namespace}/{name} does not exist (deleted?)")
        })?;
    let owned = cm
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "LoadTest" && Some(o.uid.as_str()) == owner);
    if owner.is_some() && !owned {
        return Err(format!(
            "the ConfigMap {namespace}/{name} is not owned by the LoadTest: not its report"
        ));
    }
    cm.data
        .and_then(|mut d| d.remove(REPORT_KEY))
        .map(String::into_bytes)
        .ok_or_else(|| format!("the report ConfigMap {namespace}/{name} has no {REPORT_KEY}"))
}

/// `NAMESPACE/NAME` of `--from-cluster`.
pub fn parse_ref(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!(
            "`{text}`: expected NAMESPACE/NAME, e.g. default/checkout"
        )),
    }
}

/// The summary document of the current run of LoadTest `namespace/name` (its report
/// ConfigMap, named in the status) and the spec that ran, for `volley report --from-cluster`.
pub fn fetch_report(namespace: &str, name: &str) -> Result<(Vec<u8>, serde_json::Value), String> {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = client().await?;
        let api: Api<LoadTest> = Api::namespaced(client.clone(), namespace);
        let lt = api
            .get(name)
            .await
            .map_err(|e| explain("get", RESOURCE, namespace, &e))?;
        let status = lt.status.clone().unwrap_or_default();
        let Some(report) = status
            .report_ref
            .as_ref()
            .map(|r| r.config_map_name.clone())
        else {
            return Err(no_report_yet(namespace, name, &status));
        };
        let cms: Api<ConfigMap> = Api::namespaced(client, namespace);
        let bytes = read_report(&cms, namespace, &report, lt.metadata.uid.as_deref()).await?;
        let spec = serde_json::to_value(&lt.spec).unwrap_or_default();
        Ok((bytes, spec))
    })
}

/// Why LoadTest `namespace/name` has no report for `volley report --from-cluster`, and where
/// an earlier run's is.
pub fn no_report_yet(namespace: &str, name: &str, status: &LoadTestStatus) -> String {
    let phase = status
        .phase
        .map(|p| p.to_string())
        .unwrap_or_else(|| "not started".into());
    let mut message = format!(
        "loadtest {namespace}/{name} has no report yet: run {} is {phase} (the report is written \
         when a run finishes)",
        status.run.unwrap_or(1)
    );
    if let Some(earlier) = status
        .history
        .iter()
        .find_map(|r| r.report_ref.as_ref().map(|c| (r.run, &c.config_map_name)))
    {
        message.push_str(&format!(
            "; run {}'s report is ConfigMap {}: `kubectl get configmap {} -n {namespace} -o \
             jsonpath='{{.data.summary\\.json}}' | volley report -`",
            earlier.0, earlier.1, earlier.1
        ));
    }
    message
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::core::{Status, response::StatusDetails};
    use volley_crds::status::{MetricsStatus, ReportRef, RunnerCounts, Verdict};

    use super::*;

    const PLANNED: Duration = Duration::from_secs(30);

    fn status(generation: i64, run: u32, phase: Phase) -> LoadTestStatus {
        LoadTestStatus {
            phase: Some(phase),
            observed_generation: Some(generation),
            run: Some(run),
            ..LoadTestStatus::default()
        }
    }

    fn finished(
        generation: i64,
        run: u32,
        phase: Phase,
        verdict: Option<Verdict>,
    ) -> LoadTestStatus {
        LoadTestStatus {
            verdict,
            reason: Some(match phase {
                Phase::Failed => "ThresholdsFailed".into(),
                _ => "Done".into(),
            }),
            message: Some("the message".into()),
            report_ref: Some(ReportRef {
                config_map_name: format!("web-report-r{run}"),
            }),
            conditions: vec![Condition {
                type_: "Complete".into(),
                status: "True".into(),
                observed_generation: Some(generation),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                message: String::new(),
                reason: "Done".into(),
            }],
            ..status(generation, run, phase)
        }
    }

    fn created(generation: i64) -> Awaited {
        Awaited {
            uid: Some("u1".into()),
            generation,
            rerun: None,
        }
    }

    fn rerun(generation: i64, value: &str) -> Awaited {
        Awaited {
            rerun: Some(value.into()),
            ..created(generation)
        }
    }

    fn done_with(f: &Follow) -> Option<(Option<&str>, u8)> {
        match f {
            Follow::Done { report, exit, .. } => Some((report.as_deref(), *exit)),
            _ => None,
        }
    }

    /// A table row: name, the awaited run, the status read, the report and exit code when done.
    type Case = (
        &'static str,
        Awaited,
        Option<LoadTestStatus>,
        Option<(Option<&'static str>, u8)>,
    );

    /// Every status a follower can read, and what it makes of it: only the awaited run's own
    /// final status ends the wait, with that run's report and `volley run`'s exit code.
    #[test]
    fn only_the_awaited_runs_end_is_done() {
        let answered = |mut s: LoadTestStatus, value: &str| {
            s.rerun_request = Some(value.into());
            s
        };
        let cases: Vec<Case> = vec![
            ("no status yet", created(1), None, None),
            (
                "status without a generation",
                created(1),
                Some(LoadTestStatus::default()),
                None,
            ),
            (
                "pending",
                created(1),
                Some(status(1, 1, Phase::Pending)),
                None,
            ),
            (
                "starting",
                created(1),
                Some(status(1, 1, Phase::Starting)),
                None,
            ),
            (
                "running",
                created(1),
                Some(status(1, 1, Phase::Running)),
                None,
            ),
            (
                "passed",
                created(1),
                Some(finished(1, 1, Phase::Succeeded, Some(Verdict::Passed))),
                Some((Some("web-report-r1"), 0)),
            ),
            (
                "thresholds failed",
                created(1),
                Some(finished(1, 1, Phase::Failed, Some(Verdict::Failed))),
                Some((Some("web-report-r1"), 99)),
            ),
            (
                "aborted",
                created(1),
                Some(finished(1, 1, Phase::Aborted, None)),
                Some((Some("web-report-r1"), 1)),
            ),
            (
                "error without a report",
                created(1),
                Some(LoadTestStatus {
                    report_ref: None,
                    ..finished(1, 1, Phase::Error, None)
                }),
                Some((None, 1)),
            ),
            // A re-apply with a changed spec (generation 3): the old run's Complete condition,
            // verdict and report are still there until the operator starts run 2.
            (
                "re-apply, old run complete",
                rerun(3, "v2"),
                Some(answered(
                    finished(2, 1, Phase::Succeeded, Some(Verdict::Passed)),
                    "v1",
                )),
                None,
            ),
            // The same spec re-applied: the generation does not move, only the annotation
            // tells the old run from the new one.
            (
                "same spec re-applied, old run complete",
                rerun(2, "v2"),
                Some(answered(
                    finished(2, 1, Phase::Failed, Some(Verdict::Failed)),
                    "v1",
                )),
                None,
            ),
            (
                "same spec re-applied, never asked before",
                rerun(2, "v2"),
                Some(finished(2, 1, Phase::Succeeded, Some(Verdict::Passed))),
                None,
            ),
            (
                "re-apply while the old run runs (queued)",
                rerun(3, "v2"),
                Some(status(2, 1, Phase::Running)),
                None,
            ),
            (
                "the re-run pending",
                rerun(3, "v2"),
                Some(answered(status(3, 2, Phase::Pending), "v2")),
                None,
            ),
            (
                "the re-run finished",
                rerun(3, "v2"),
                Some(answered(
                    finished(3, 2, Phase::Failed, Some(Verdict::Failed)),
                    "v2",
                )),
                Some((Some("web-report-r2"), 99)),
            ),
            (
                "a later edit by someone else ran after ours",
                rerun(3, "v2"),
                Some(answered(
                    finished(4, 3, Phase::Succeeded, Some(Verdict::Passed)),
                    "v2",
                )),
                Some((Some("web-report-r3"), 0)),
            ),
            (
                "runners failed: an error, not a threshold failure",
                created(1),
                Some(LoadTestStatus {
                    reason: Some("RunnerFailed".into()),
                    ..finished(1, 1, Phase::Failed, Some(Verdict::Failed))
                }),
                Some((Some("web-report-r1"), 1)),
            ),
        ];
        for (name, awaited, status, want) in cases {
            let got = follow(&awaited, status.as_ref(), PLANNED);
            assert_eq!(done_with(&got), want, "{name}: {got:?}");
            if want.is_none() && status.as_ref().and_then(|s| s.phase) != Some(Phase::Running) {
                assert!(matches!(got, Follow::Waiting(_)), "{name}: {got:?}");
            }
        }
    }

    /// The progress line of a running test comes from its status: overall figures, runners,
    /// the elapsed time the operator wrote.
    #[test]
    fn a_running_status_feeds_the_progress_line() {
        let s = LoadTestStatus {
            runners: Some(RunnerCounts {
                desired: 2,
                running: 2,
                ..RunnerCounts::default()
            }),
            metrics: Some(MetricsStatus {
                requests: 400,
                failures: 4,
                rps: 20.0,
                iterations: 380,
                dropped_iterations: 3,
                duration: "20s".into(),
                latency_ms: volley_crds::status::LatencyMs {
                    p95: 12.5,
                    ..Default::default()
                },
                ..MetricsStatus::default()
            }),
            ..status(1, 1, Phase::Running)
        };
        let Follow::Running(figures) = follow(&created(1), Some(&s), PLANNED) else {
            panic!("running");
        };
        assert_eq!(
            figures.line(),
            "running 20s/30s  20.0 req/s  p95 12.5ms  errors 1%  runners 2/2  iterations 380 (dropped 3)"
        );
        // Nothing measured yet: no p95 rather than a 0 that looks like a figure.
        let empty = LoadTestStatus { metrics: None, ..s };
        let Follow::Running(figures) = follow(&created(1), Some(&empty), PLANNED) else {
            panic!("running");
        };
        assert!(figures.line().contains("p95 -"), "{}", figures.line());
    }

    /// The waiting messages say what is being waited for.
    #[test]
    fn waiting_says_why() {
        let queued = follow(
            &rerun(3, "v2"),
            Some(&status(2, 4, Phase::Running)),
            PLANNED,
        );
        assert_eq!(
            queued,
            Follow::Waiting("run 4 (generation 2) is still Running; this spec runs next".into())
        );
        let mut starting = status(1, 1, Phase::Starting);
        starting.runners = Some(RunnerCounts {
            desired: 3,
            ready: 1,
            ..RunnerCounts::default()
        });
        assert_eq!(
            follow(&created(1), Some(&starting), PLANNED),
            Follow::Waiting("run 1 Starting: runners ready 1/3".into())
        );
    }

    fn manifest() -> LoadTest {
        volley_core::manifest::parse_manifest(
            r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: web, namespace: perf, labels: {team: a}, annotations: {note: new}}
spec:
  target: {baseUrl: "http://127.0.0.1:1"}
  scenarios:
    - {name: s, executor: constant-vus, vus: 1, duration: 1s, steps: [{name: x, request: {url: /}}]}
"#,
        )
        .unwrap()
    }

    /// A re-run keeps what is not ours to change (resourceVersion for the optimistic write,
    /// owner, other labels), takes the manifest's spec and asks for a run with a new value.
    #[test]
    fn a_replacement_takes_the_spec_and_asks_for_a_run() {
        let new = manifest();
        let mut existing = new.clone();
        existing.metadata.resource_version = Some("42".into());
        existing.metadata.uid = Some("u1".into());
        existing.metadata.labels = Some(BTreeMap::from([("owner".into(), "ci".into())]));
        existing.metadata.annotations = Some(BTreeMap::from([
            (RERUN_ANNOTATION.into(), "old".into()),
            ("note".into(), "old".into()),
        ]));
        existing.spec.abort = true;
        existing.status = Some(status(1, 1, Phase::Succeeded));
        let lt = replacement(&existing, &new, "v2");
        assert_eq!(lt.spec, new.spec);
        assert!(!lt.spec.abort, "the manifest's spec, abort included");
        assert_eq!(lt.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(lt.metadata.uid.as_deref(), Some("u1"));
        let labels = lt.metadata.labels.unwrap();
        assert_eq!(
            (labels["owner"].as_str(), labels["team"].as_str()),
            ("ci", "a")
        );
        let annotations = lt.metadata.annotations.unwrap();
        assert_eq!(annotations[RERUN_ANNOTATION], "v2");
        assert_eq!(annotations["note"], "new");
        assert!(lt.status.is_none(), "the status is the operator's");
    }

    #[test]
    fn created_objects_carry_the_manifest() {
        let m = manifest();
        let lt = to_create(&m, "ci", false);
        assert_eq!(lt.metadata.name.as_deref(), Some("web"));
        assert_eq!(lt.metadata.namespace.as_deref(), Some("ci"));
        assert_eq!(lt.metadata.generate_name, None);
        assert_eq!(lt.spec, m.spec);
        let generated = to_create(&m, "ci", true);
        assert_eq!(generated.metadata.name, None);
        assert_eq!(generated.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(generated.metadata.labels, m.metadata.labels);
    }

    fn api_error(code: u16, kind: &str, name: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status {
            code,
            message: "said".into(),
            details: (!kind.is_empty() || !name.is_empty()).then(|| StatusDetails {
                kind: kind.into(),
                name: name.into(),
                group: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..Status::default()
        }))
    }

    /// Each failure names what to do: install the chart, which RBAC verb, which namespace.
    #[test]
    fn api_errors_say_what_to_do() {
        let say = |e| explain("create", RESOURCE, "ci", &e);
        assert!(say(api_error(404, "", "")).contains("install the chart"));
        assert!(say(api_error(404, "namespaces", "ci")).starts_with("namespace ci does not exist"));
        assert_eq!(
            say(api_error(404, "loadtests", "web")),
            "said (namespace ci)"
        );
        let forbidden = say(api_error(403, "loadtests", "web"));
        assert!(
            forbidden.contains("grant the RBAC verb `create` on `loadtests.volley.dev`"),
            "{forbidden}"
        );
        assert!(say(api_error(401, "", "")).starts_with("unauthorized"));
        assert!(say(api_error(422, "", "")).contains("refused the LoadTest"));
        assert!(say(api_error(500, "", "")).contains("HTTP 500: said"));
    }

    #[test]
    fn references_are_namespace_slash_name() {
        assert_eq!(parse_ref("ci/web").unwrap(), ("ci".into(), "web".into()));
        for bad in ["web", "/web", "ci/", "a/b/c"] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_report_yet_points_at_the_last_one() {
        let mut s = status(2, 2, Phase::Running);
        assert!(no_report_yet("ci", "web", &s).contains("run 2 is Running"));
        s.history = vec![volley_crds::status::RunRecord {
            run: 1,
            report_ref: Some(ReportRef {
                config_map_name: "web-report".into(),
            }),
            ..Default::default()
        }];
        let m = no_report_yet("ci", "web", &s);
        assert!(m.contains("run 1's report is ConfigMap web-report"), "{m}");
    }
}
