//! `volley report SUMMARY.json` (or `--from-cluster NAMESPACE/NAME`) and the report flags of
//! `volley run` and `volley kube run`: render the summary
//! document as HTML, Markdown, JUnit XML and CSV ([`volley_report`]) and write the files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use volley_core::compare::Budget;

use crate::report_files::{ReportFiles, baseline_comparison, write_reports};

/// Largest summary document read: the operator keeps reports under 1 MiB, `volley run --out`
/// of a multi-day soak stays far below this.
const MAX_SUMMARY_BYTES: u64 = 256 * 1024 * 1024;

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
        Some(path) => match crate::manifest_file::load_manifest_with(path, |_| {}) {
            Ok(lt) => serde_json::to_value(&lt.spec).ok(),
            Err(problems) => {
                crate::manifest_file::print_problems(path.display(), &problems);
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
