//! `volley`: run LoadTests locally or in a cluster (`volley kube run`), validate manifests,
//! compare runs, render reports, print the CRD.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod kube_run;
mod manifest_file;
mod report_cli;
mod report_files;

/// Volley: load tests with exact merged percentiles and a pass/fail verdict.
#[derive(Parser)]
#[command(name = "volley", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a LoadTest on this machine and print a summary. Exit code: 0 thresholds passed,
    /// 99 a threshold failed, 1 the run could not be carried out.
    Run {
        /// The LoadTest manifest (YAML).
        file: PathBuf,
        /// Also write the summary as JSON (thresholds, per-second series, merged histograms).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// No progress line; only the summary.
        #[arg(long, short)]
        quiet: bool,
        /// Send the load here instead of the manifest's `spec.target.baseUrl` (e.g. the same
        /// manifest against a local build and against staging).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Runner processes sharing the load (default: the manifest's
        /// `spec.runners.parallelism`, 1 if unset). Their results are merged exactly, as in a
        /// cluster.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        runners: Option<u32>,
        /// Send requests only to these targets, as a cluster's runners do under the
        /// operator's `--allowed-targets`: comma-separated host names (`api.example.com`,
        /// `api.example.com:8443`), wildcards (`*.staging.example.com`), IP addresses and CIDR
        /// blocks (`10.0.0.0/8`, `fd00::/8`). Host names are matched as written, never
        /// resolved. A spec whose URLs are outside the list exits 1 before sending anything.
        #[arg(
            long,
            value_name = "LIST",
            env = volley_core::target_policy::ALLOWED_TARGETS_ENV,
            value_parser = volley_core::target_policy::TargetPolicy::parse,
        )]
        allowed_targets: Option<volley_core::target_policy::TargetPolicy>,
        /// A finished run's summary (`--out` of an earlier run, or the `summary.json` of a
        /// report ConfigMap) for baseline thresholds like `p(95) < baseline * 1.10`. Without
        /// it, those thresholds are skipped. The HTML and Markdown reports compare the run
        /// with it.
        #[arg(long, value_name = "SUMMARY")]
        baseline: Option<PathBuf>,
        /// Read `spec.observe.prometheus` queries from this Prometheus instead of the
        /// manifest's URL (checked against --allowed-targets like the targets).
        #[arg(long, value_name = "URL")]
        prometheus_url: Option<String>,
        #[command(flatten)]
        budget: cli::BudgetArgs,
        #[command(flatten)]
        reports: report_files::ReportFiles,
    },
    /// Run a LoadTest in a Kubernetes cluster: create it (or re-run the existing one with
    /// this spec), follow it with the progress line of `volley run`, print the same summary
    /// from its report and write the same report files. Exit code as `volley run`: 0 passed,
    /// 99 a threshold failed, 1 the run could not be carried out (or following stopped).
    Kube {
        #[command(subcommand)]
        command: KubeCommand,
    },
    /// Print two runs side by side (overall, per scenario, per step: p50/p95/p99, rps, error
    /// rate, change in %). Exit code: 99 when B exceeds a budget, 0 otherwise, 1 when a file
    /// is not a run summary.
    Compare {
        /// The earlier run's summary (`volley run --out`, or a report's `summary.json`).
        a: PathBuf,
        /// The later run's summary, compared with A.
        b: PathBuf,
        #[command(flatten)]
        budget: cli::BudgetArgs,
    },
    /// Render a run's summary document (`volley run --out`, or the `summary.json` key of a
    /// LoadTest's report ConfigMap) as HTML, Markdown, JUnit XML or CSV; `-` reads standard
    /// input. Without a format flag, prints the Markdown.
    Report {
        /// The summary document (JSON); `-` reads standard input.
        #[arg(required_unless_present = "from_cluster")]
        summary: Option<PathBuf>,
        /// Read the report of LoadTest NAMESPACE/NAME's current run from the cluster (its
        /// report ConfigMap, named in the status) instead of a file; the HTML shows its spec.
        #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with = "summary")]
        from_cluster: Option<String>,
        /// The LoadTest manifest that ran, shown in the HTML report with credentials redacted.
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// An earlier run's summary: the HTML and Markdown reports compare this run with it.
        #[arg(long, value_name = "SUMMARY")]
        baseline: Option<PathBuf>,
        #[command(flatten)]
        budget: cli::BudgetArgs,
        #[command(flatten)]
        files: report_files::ReportFiles,
    },
    /// Check LoadTest manifests offline and print every problem with its field path.
    /// A file may hold several YAML documents (a ConfigMap beside a LoadTest): each LoadTest
    /// is checked, the others skipped with a note.
    Validate {
        /// Manifest files (YAML); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also apply the rules the operator adds in a cluster (no local `file:` sources,
        /// every `${env:NAME}` given to runner pods, ...), which `volley run` does not need.
        #[arg(long)]
        cluster: bool,
    },
    /// Print a CustomResourceDefinition (YAML): LoadTest, or LoadTestSchedule.
    Crd {
        /// Which CRD: `loadtest` or `loadtestschedule`.
        #[arg(value_enum, default_value = "loadtest")]
        kind: cli::CrdKind,
    },
    /// Run one runner of a distributed test (inside a runner pod): register with the
    /// aggregator, wait for the common start, run this runner's share, report every second.
    /// Exit code: 0 this runner did its part (also when the run was stopped or aborted),
    /// 1 it could not.
    Agent(cli::AgentArgs),
}

/// `volley kube ...`.
#[derive(Subcommand)]
enum KubeCommand {
    /// Create (or re-run) the LoadTest of FILE in the cluster and follow it to its verdict.
    Run(kube_run::KubeRunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(volley_crds::text::colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    match cli.command {
        Command::Run {
            file,
            out,
            quiet,
            base_url,
            runners,
            allowed_targets,
            baseline,
            budget,
            prometheus_url,
            reports,
        } => cli::run_file(
            &file,
            out.as_deref(),
            cli::RunOptions {
                quiet,
                base_url,
                runners,
                allowed_targets: allowed_targets.unwrap_or_default(),
                baseline,
                budget: budget.budget(),
                prometheus_url,
                reports,
            },
        ),
        Command::Compare { a, b, budget } => cli::compare_files(&a, &b, &budget.budget()),
        Command::Report {
            summary,
            from_cluster,
            manifest,
            baseline,
            budget,
            files,
        } => {
            let source = match (summary, from_cluster) {
                (_, Some(name)) => report_cli::Source::Cluster(name),
                (Some(path), None) => report_cli::Source::File(path),
                // clap requires one of the two.
                (None, None) => return ExitCode::FAILURE,
            };
            if baseline.is_none() && budget.budget() != volley_core::compare::Budget::default() {
                eprintln!("the budget flags compare with the baseline: pass --baseline SUMMARY");
                return ExitCode::FAILURE;
            }
            let baseline = baseline.map(|file| (file, budget.budget()));
            report_cli::report(&source, manifest.as_deref(), baseline.as_ref(), files)
        }
        Command::Kube {
            command: KubeCommand::Run(args),
        } => kube_run::kube_run(args),
        Command::Validate { files, cluster } => cli::validate_files(&files, cluster),
        Command::Crd { kind } => cli::print_crd(kind),
        Command::Agent(args) => cli::run_agent(args),
    }
}
