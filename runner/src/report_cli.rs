//! `volley report SUMMARY.json` (or `--from-cluster NAMESPACE/NAME`) and the report flags of
//! `volley run` and `volley kube run`: render the summary
//! document as HTML, Markdown, JUnit XML and CSV ([`volley_report`]) and write the files.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use volley_core::compare::{Budget, RunComparison, compare, parse_summary, render_comparison};
use volley_report::Summary;

/// Largest summary document read: the operator keeps reports under 1 MiB, `volley run --out`
/// of a multi-day soak stays far below this.
const MAX_SUMMARY_BYTES: u64 = 256 * 1024 * 1024;

/// Where to write each report format; `-` is standard output.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ReportFiles {
    /// Write the HTML report (one self-contained file: inline CSS, SVG charts, no network).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the Markdown summary (parameters, key metrics, thresholds) for a PR or an issue.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write JUnit XML: one testcase per threshold, for the CI server's test report.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the per-second series as CSV (columns in docs/reference.md).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

impl ReportFiles {
    /// Whether any format was asked for.
    pub fn any(&self) -> bool {
        self.html.is_some() || self.markdown.is_some() || self.junit.is_some() || self.csv.is_some()
    }
}

/// Renders every asked format of `summary` and writes it; `spec` (the LoadTest spec that ran)
/// appears in the HTML report, redacted; `comparison` (this run against `--baseline`) is added
/// to the HTML and the Markdown. Returns the first failure as a message.
pub fn write_reports(
    summary: &Summary,
    spec: Option<&Value>,
    comparison: Option<&RunComparison>,
    files: &ReportFiles,
) -> Result<(), String> {
    let jobs: [(&Option<PathBuf>, &dyn Fn() -> String); 4] = [
        (&files.html, &|| {
            let page = volley_report::html::render(summary, spec);
            match comparison {
                Some(c) => volley_report::comparison::add_to_html(page, c),
                None => page,
            }
        }),
        (&files.markdown, &|| {
            let mut text = volley_report::markdown::render(summary);
            if let Some(c) = comparison {
                text.push('\n');
                text.push_str(&volley_report::comparison::markdown(c));
            }
            text
        }),
        (&files.junit, &|| volley_report::junit::render(summary)),
        (&files.csv, &|| volley_report::csv::render(summary)),
    ];
    for (path, render) in jobs {
        let Some(path) = path else { continue };
        let text = render();
        let written = if path == Path::new("-") {
            std::io::stdout().lock().write_all(text.as_bytes())
        } else {
            std::fs::write(path, text)
        };
        written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The summary document `volley run --out` wrote, for the report renderers (the run's own
/// summary type is the writer's, this is the reader's: the round trip is the contract).
pub fn reader_summary(summary: &impl serde::Serialize) -> Result<Summary, String> {
    let json =
        serde_json::to_vec(summary).map_err(|e| format!("cannot encode the summary: {e}"))?;
    volley_report::load(&json).map_err(|e| e.to_string())
}

/// This run (the summary document `run`) compared with the summary in file `baseline`, each
/// figure over `budget` marked: the comparison, and the text `volley compare` prints for it.
pub fn baseline_comparison(
    baseline: &Path,
    run: &[u8],
    budget: &Budget,
) -> Result<(RunComparison, String), String> {
    let a = std::fs::read(baseline)
        .map_err(|e| format!("{}: cannot read: {e}", baseline.display()))
        .and_then(|b| parse_summary(&b).map_err(|e| format!("{}: {e}", baseline.display())))?;
    let b = parse_summary(run).map_err(|e| format!("the run's summary: {e}"))?;
    let comparison = compare(&a, &b, budget);
    let text = render_comparison(
        (&baseline.display().to_string(), &a),
        ("this run", &b),
        &comparison,
    );
    Ok((comparison, text))
}

/// Where `volley report` reads the summary document.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file; `-` is standard input.
    File(PathBuf),
    /// `--from-cluster NAMESPACE/NAME`: the report ConfigMap of the LoadTest's current run.
    Cluster(String),
}

/// The summary document of `source`, the name to prefix messages with and, from a cluster,
/// the spec that ran.
fn read_source(source: &Source) -> Result<(Vec<u8>, String, Option<Value>), String> {
    let path = match source {
        Source::Cluster(reference) => {
            let (namespace, name) = crate::kube_run::parse_ref(reference)?;
            let (bytes, spec) = crate::kube_run::fetch_report(&namespace, &name)?;
            return Ok((bytes, format!("{namespace}/{name}"), Some(spec)));
        }
        Source::File(path) => path,
    };
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_SUMMARY_BYTES)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_SUMMARY_BYTES).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    Ok((bytes, path.display().to_string(), None))
}

/// `volley report SUMMARY|--from-cluster NS/NAME [--manifest FILE] [--html F] [--markdown F]
/// [--junit F] [--csv F]`: without a format flag the Markdown goes to standard output. Exit 0
/// written, 1 not.
pub fn report(
    source: &Source,
    manifest: Option<&Path>,
    baseline: Option<&(PathBuf, Budget)>,
    mut files: ReportFiles,
) -> ExitCode {
    let (bytes, label, cluster_spec) = match read_source(source) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let parsed = match volley_report::load(&bytes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{label}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spec = match manifest {
        None => cluster_spec,
        Some(path) => match crate::cli::load_manifest_with(path, |_| {}) {
            Ok(lt) => serde_json::to_value(&lt.spec).ok(),
            Err(problems) => {
                crate::cli::print_problems(path.display(), &problems);
                return ExitCode::FAILURE;
            }
        },
    };
    let comparison = baseline.map(|(file, budget)| baseline_comparison(file, &bytes, budget));
    let comparison = match comparison.transpose() {
        Ok(c) => c.map(|(c, _)| c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if !files.any() {
        files.markdown = Some(PathBuf::from("-"));
    }
    match write_reports(&parsed, spec.as_ref(), comparison.as_ref(), &files) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
