//! The CLI's subcommands: `volley run`, `volley validate`, `volley compare`, `volley crd` and
//! `volley agent`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use reqwest::StatusCode;
use volley_core::compare::{
    Baseline, Budget, RunFigures, compare, parse_summary, render_comparison,
};
use volley_core::manifest::{KIND, MAX_DOCUMENTS, ManifestError, documents, parse_manifest};
use volley_core::protocol::TOKEN_ENV;
use volley_core::target_policy::{ALLOWED_TARGETS_ENV, TargetPolicy, check_spec};
use volley_core::validate::{CLUSTER_RULES, validate, validate_for_cluster};
use volley_crds::{LoadTest, crd};
use volley_runner::agent::{Agent, AgentError};
use volley_runner::aggregator_client::AggregatorClient;
use volley_runner::engine::FileRoots;
use volley_runner::exit::{EXIT_ERROR, EXIT_PASSED, EXIT_THRESHOLDS_FAILED};
use volley_runner::local::{Launch, LocalOptions, Progress, exit_code, run_with};
use volley_runner::signals::shutdown_on_signals;
use volley_runner::summary::render_text;

use crate::manifest_file::{
    ManifestProblems, load_manifest_with, parse_one, print_problems, read_source,
};

/// `volley validate FILE...` (`-` is stdin): exit 0 when every file is valid, 1 otherwise. A
/// file may hold several YAML documents: each LoadTest among them is validated, the others
/// are skipped with a note. `cluster` adds the operator's cluster-only rules
/// ([`validate_for_cluster`]); without it, the output says which rules were skipped.
pub fn validate_files(files: &[PathBuf], cluster: bool) -> ExitCode {
    let mut failed = 0;
    let mut checked = 0;
    for path in files {
        let name = if path == Path::new("-") {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        match validate_source(&name, path, cluster) {
            Ok(0) => {}
            Ok(n) => checked += n,
            Err(()) => failed += 1,
        }
    }
    if checked > 0 && !cluster {
        println!("not checked without --cluster (the operator's rules): {CLUSTER_RULES}");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {} manifest(s) invalid", files.len());
        ExitCode::FAILURE
    }
}

/// Validates every LoadTest document of one file, printing each result: the number of valid
/// LoadTests, or `Err` when anything in the file is wrong.
fn validate_source(name: &str, path: &Path, cluster: bool) -> Result<usize, ()> {
    let check = |spec: &volley_crds::LoadTestSpec| {
        if cluster {
            validate_for_cluster(spec)
        } else {
            validate(spec)
        }
    };
    let fail = |problems: ManifestProblems| {
        print_problems(name, &problems);
        Err(())
    };
    let bytes = match read_source(path) {
        Ok(bytes) => bytes,
        Err(problems) => return fail(problems),
    };
    // Text that is not UTF-8 gets its line and column from the one-document reader.
    let docs = match std::str::from_utf8(&bytes) {
        Ok(text) => documents(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(_) => Some(Vec::new()),
    };
    let Some(docs) = docs else {
        return fail(ManifestProblems::Parse(ManifestError::WrongKind(format!(
            "more than {MAX_DOCUMENTS} YAML documents in one file"
        ))));
    };
    if docs.len() <= 1 {
        // One document: exactly what `volley run` reads.
        let lt = match parse_one(&bytes) {
            Ok(lt) => lt,
            Err(e) => return fail(ManifestProblems::Parse(e)),
        };
        return match check(&lt.spec) {
            Ok(()) => {
                println!("{name}: ok ({})", describe(&lt));
                Ok(1)
            }
            Err(errors) => fail(ManifestProblems::Invalid(errors)),
        };
    }
    let (mut ok, mut bad) = (0, 0);
    for (i, doc) in docs.iter().enumerate() {
        let label = format!("{name}: document {}", i + 1);
        let kind = serde_norway::from_str::<DocumentKind>(doc)
            .ok()
            .and_then(|d| d.kind);
        if let Some(kind) = kind.filter(|k| k != KIND) {
            println!("{label}: skipped (a {kind}, not a {KIND})");
            continue;
        }
        let problems = match parse_manifest(doc) {
            Ok(lt) => match check(&lt.spec) {
                Ok(()) => {
                    println!("{label}: ok ({})", describe(&lt));
                    ok += 1;
                    continue;
                }
                Err(errors) => ManifestProblems::Invalid(errors),
            },
            Err(e) => ManifestProblems::Parse(e),
        };
        print_problems(&label, &problems);
        bad += 1;
    }
    if bad > 0 {
        Err(())
    } else if ok == 0 {
        fail(ManifestProblems::Parse(ManifestError::WrongKind(format!(
            "none of its {} YAML documents is a {KIND}",
            docs.len()
        ))))
    } else {
        Ok(ok)
    }
}

/// The `kind` of a YAML document, to skip what is not a LoadTest.
#[derive(serde::Deserialize)]
struct DocumentKind {
    kind: Option<String>,
}

/// `LoadTest NAME, N scenarios`.
fn describe(lt: &LoadTest) -> String {
    let n = lt.spec.scenarios.len();
    format!(
        "LoadTest {}, {n} scenario{}",
        lt.metadata.name.as_deref().unwrap_or("<unnamed>"),
        if n == 1 { "" } else { "s" }
    )
}

/// Which CRD `volley crd` prints.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CrdKind {
    /// The LoadTest CRD.
    #[value(alias = "lt")]
    Loadtest,
    /// The LoadTestSchedule CRD.
    #[value(alias = "lts")]
    Loadtestschedule,
}

/// `volley crd [KIND]`: the CRD YAML on stdout.
pub fn print_crd(kind: CrdKind) -> ExitCode {
    let yaml = match kind {
        CrdKind::Loadtest => crd::crd_yaml(),
        CrdKind::Loadtestschedule => crd::schedule_crd_yaml(),
    };
    match yaml {
        // A closed pipe (`volley crd | head`) is the reader's choice, not a failure to panic on.
        Ok(yaml) => match std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes())
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the CRD: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("cannot render the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The directory `file:` paths of the manifest at `path` are relative to. A bare file name
/// (`quickstart.yaml`) has the empty path as its parent, which is no directory a runner can
/// be given: it is the current directory.
fn manifest_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The budget flags of `volley compare`, also on `volley run --baseline` and `volley report
/// --baseline` (where A is the baseline and B this run).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct BudgetArgs {
    /// B's p95 may be at most this much slower than A's, in every scope, e.g. `10%`.
    #[arg(long, value_name = "PERCENT", value_parser = |s: &str| volley_core::compare::parse_percent(s, false))]
    pub max_p95_regression: Option<f64>,
    /// B's error rate may be at most this many percentage points above A's, e.g. `0.5%`.
    #[arg(long, value_name = "PERCENT", value_parser = |s: &str| volley_core::compare::parse_percent(s, false))]
    pub max_error_rate_increase: Option<f64>,
    /// B's rps must be at least this share of A's, e.g. `0.95` or `95%`.
    #[arg(long, value_name = "RATIO", value_parser = |s: &str| volley_core::compare::parse_percent(s, true))]
    pub min_rps_ratio: Option<f64>,
}

impl BudgetArgs {
    /// The budget the flags give (unset ones are not checked).
    pub fn budget(&self) -> Budget {
        Budget {
            max_p95_regression: self.max_p95_regression,
            max_error_rate_increase: self.max_error_rate_increase,
            min_rps_ratio: self.min_rps_ratio,
        }
    }
}

/// `volley run`'s options besides the file.
#[derive(Debug)]
pub struct RunOptions {
    /// No progress line.
    pub quiet: bool,
    /// Replaces `spec.target.baseUrl`.
    pub base_url: Option<String>,
    /// Replaces `spec.runners.parallelism`.
    pub runners: Option<u32>,
    /// The allowed targets (`--allowed-targets`); empty allows everything.
    pub allowed_targets: TargetPolicy,
    /// A finished run's `summary.json` for baseline thresholds (`--baseline`).
    pub baseline: Option<PathBuf>,
    /// How much worse than the baseline this run may be (`--max-p95-regression`, ...): over
    /// it, `volley run` exits 99.
    pub budget: Budget,
    /// Replaces `spec.observe.prometheus.url`.
    pub prometheus_url: Option<String>,
    /// The report files to write (`--html`, `--markdown`, `--junit`, `--csv`).
    pub reports: crate::report_files::ReportFiles,
}

/// Reads the figures of a `summary.json`, or says which file and field are wrong.
fn read_summary(path: &Path) -> Result<RunFigures, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse_summary(&bytes).map_err(|e| format!("{}: not a volley run summary: {e}", path.display()))
}

/// The baseline of `volley run`: `--baseline FILE`, else unavailable, naming `spec.baseline`'s
/// ConfigMap when there is one, since only the operator can read it.
fn local_baseline(
    file: Option<&Path>,
    spec: &volley_crds::LoadTestSpec,
) -> Result<Baseline, String> {
    if let Some(path) = file {
        return read_summary(path).map(|figures| Baseline::Run(Box::new(figures)));
    }
    Ok(match &spec.baseline {
        Some(b) => Baseline::Unavailable(format!(
            "spec.baseline names ConfigMap {}, which only the operator reads: pass --baseline FILE",
            b.config_map_ref.name
        )),
        None => Baseline::default(),
    })
}

/// `volley compare A B`: prints run B beside run A (overall, per scenario, per step) and exits
/// 99 when B exceeds `budget`, 0 when not, 1 when a file is not a summary.
pub fn compare_files(a: &Path, b: &Path, budget: &Budget) -> ExitCode {
    let (fa, fb) = match (read_summary(a), read_summary(b)) {
        (Ok(fa), Ok(fb)) => (fa, fb),
        (fa, fb) => {
            for e in [fa.err(), fb.err()].into_iter().flatten() {
                eprintln!("{e}");
            }
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let comparison = compare(&fa, &fb, budget);
    print!(
        "{}",
        render_comparison(
            (&a.display().to_string(), &fa),
            (&b.display().to_string(), &fb),
            &comparison
        )
    );
    ExitCode::from(if comparison.regressed() {
        EXIT_THRESHOLDS_FAILED
    } else {
        EXIT_PASSED
    })
}

/// `volley run FILE`: validates, runs, prints the summary, writes `--out`, and exits 0 / 99 / 1.
pub fn run_file(path: &Path, out: Option<&Path>, options: RunOptions) -> ExitCode {
    let loaded = load_manifest_with(path, |lt| {
        if let Some(url) = options.base_url {
            lt.spec.target.base_url = url;
        }
        if let (Some(url), Some(prom)) = (
            options.prometheus_url,
            lt.spec.observe.as_mut().and_then(|o| o.prometheus.as_mut()),
        ) {
            prom.url = url;
        }
        // Validated with the count it runs with: `vus: 1` split across `--runners 2` would
        // leave runner 1 without a VU and its share of the iterations undone.
        if let Some(n) = options.runners {
            lt.spec.runners.parallelism = n;
        }
    });
    let lt = match loaded {
        Ok(lt) => lt,
        Err(problems) => {
            print_problems(path.display(), &problems);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // The static part of the guard, before anything starts: the base URL and every URL whose
    // host is written out. Hosts from templates are checked by the runners.
    let refused = check_spec(&lt.spec, &options.allowed_targets);
    if !refused.is_empty() {
        print_problems(path.display(), &ManifestProblems::Invalid(refused));
        eprintln!("nothing was sent: the run needs targets outside --allowed-targets");
        return ExitCode::from(EXIT_ERROR);
    }
    if options.baseline.is_none() && options.budget != Budget::default() {
        eprintln!(
            "--max-p95-regression, --max-error-rate-increase and --min-rps-ratio compare with \
             the baseline: pass --baseline SUMMARY"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let baseline = match local_baseline(options.baseline.as_deref(), &lt.spec) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let roots = FileRoots {
        manifest_dir: manifest_dir(path),
        configmaps: None,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            eprintln!("cannot find the volley executable to start runners from: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let local = LocalOptions {
        progress: Progress::for_stderr(options.quiet),
        runners: options.runners,
        launch: Launch::Processes { program },
        allowed_targets: options.allowed_targets,
        baseline,
    };
    let summary = runtime.block_on(run_with(&lt, &roots, &local));
    print!("{}", render_text(&summary));
    if let Some(out) = out {
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(out, json));
        if let Err(e) = written {
            eprintln!("cannot write {}: {e}", out.display());
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let comparison = match &options.baseline {
        Some(b) => serde_json::to_vec(&summary)
            .map_err(|e| format!("cannot encode the summary: {e}"))
            .and_then(|run| crate::report_files::baseline_comparison(b, &run, &options.budget))
            .map(Some),
        None => Ok(None),
    };
    let comparison = match comparison {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if options.reports.any() {
        let spec = serde_json::to_value(&lt.spec).ok();
        let written = crate::report_files::reader_summary(&summary).and_then(|s| {
            crate::report_files::write_reports(
                &s,
                spec.as_ref(),
                comparison.as_ref().map(|(c, _)| c),
                &options.reports,
            )
        });
        if let Err(e) = written {
            eprintln!("{e}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let code = exit_code(&summary);
    // With a budget, the comparison is printed as `volley compare` prints it, and a run
    // whose thresholds passed still fails the gate when it is over budget.
    if options.budget != Budget::default()
        && let Some((comparison, text)) = &comparison
    {
        print!("\n{text}");
        if code == EXIT_PASSED && comparison.regressed() {
            return ExitCode::from(EXIT_THRESHOLDS_FAILED);
        }
    }
    ExitCode::from(code)
}

/// Arguments of `volley agent`.
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// Base URL of the aggregator, e.g. `http://volley-operator.volley-system.svc:8080`.
    #[arg(long, value_name = "URL")]
    pub aggregator: String,
    /// The run's id, as the aggregator knows it (letters, digits, `-`, `.`, `_`, `~`).
    #[arg(long, value_name = "RUN")]
    pub run: String,
    /// This runner's index among the run's runners, 0-based.
    #[arg(long, value_name = "N")]
    pub index: u32,
    /// Environment variable holding this runner's bearer token (its own credential, from the
    /// run's Secret). The token itself is never a command-line argument: `ps` would show it.
    #[arg(long, value_name = "NAME", default_value = TOKEN_ENV)]
    pub token_env: String,
    /// Directory that `file:` paths in the spec are relative to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub manifest_dir: PathBuf,
    /// Where ConfigMaps are mounted (`DIR/NAME/KEY`).
    #[arg(long, value_name = "DIR")]
    pub configmaps: Option<PathBuf>,
    /// The only targets this runner may send requests to, set by the cluster administrator:
    /// comma-separated host names (`api.example.com`, `api.example.com:8443`), wildcards
    /// (`*.staging.example.com`), IP addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`).
    /// Host names are matched as written, never resolved. Empty or unset: any target.
    #[arg(
        long,
        value_name = "LIST",
        env = ALLOWED_TARGETS_ENV,
        value_parser = TargetPolicy::parse,
    )]
    pub allowed_targets: Option<TargetPolicy>,
}

/// `volley agent`: runs one runner to the end. Exit code 0 when the runner did its part (the
/// run finished, was stopped by the aggregator or a signal, or was aborted before the start),
/// 1 when it could not (refused, unreachable, a spec it cannot run, a final report that could
/// not be delivered).
pub fn run_agent(args: AgentArgs) -> ExitCode {
    let prefix = format!("volley agent (run {}, runner {})", args.run, args.index);
    let fail = |message: String| {
        eprintln!("{prefix}: {message}");
        ExitCode::from(EXIT_ERROR)
    };
    let token = match read_token(&args.token_env) {
        Ok(token) => token,
        Err(message) => return fail(message),
    };
    let client = match AggregatorClient::new(&args.aggregator, &args.run, args.index, &token) {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
    drop(token);
    let runtime = match volley_runner::engine::runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let agent = Agent::new(
        client,
        FileRoots {
            manifest_dir: args.manifest_dir,
            configmaps: args.configmaps,
        },
        host_name(),
    )
    .with_allowed_targets(args.allowed_targets.unwrap_or_default());
    let ended = runtime.block_on(async {
        let shutdown = shutdown_on_signals(prefix.clone());
        agent.run(shutdown).await
    });
    match ended {
        Ok(outcome) => {
            eprintln!("{prefix}: {outcome}");
            ExitCode::from(EXIT_PASSED)
        }
        Err(e) => {
            let hint = match &e {
                AgentError::Aggregator(c) if c.status() == Some(StatusCode::UNAUTHORIZED) => {
                    format!(
                        " (the token is read from the environment variable {}; \
                         --token-env names another)",
                        args.token_env
                    )
                }
                _ => String::new(),
            };
            fail(format!("{e}{hint}"))
        }
    }
}

/// Reads the bearer token from the environment variable `name`.
fn read_token(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Err(format!(
            "this runner's bearer token is missing: the environment variable {name} is not set \
             (in a runner pod it comes from the run's Secret)"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "this runner's bearer token in the environment variable {name} is not valid UTF-8"
        )),
    }
}

/// The pod or host name, for the aggregator's messages about this runner.
fn host_name() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_files = || {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
    };
    from_env
        .or_else(from_files)
        .map(|h| h.trim().chars().take(253).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_string())
}
