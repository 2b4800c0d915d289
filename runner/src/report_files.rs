//! The files a finished run's summary becomes: HTML, Markdown, JUnit XML and CSV
//! ([`volley_report`]), and its comparison with a baseline summary. Shared by `volley run`,
//! `volley kube run` and `volley report`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use volley_core::compare::{Budget, RunComparison, compare, parse_summary, render_comparison};
use volley_report::Summary;

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
