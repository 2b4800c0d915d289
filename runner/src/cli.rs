//! The CLI's subcommands: `volley run`, `volley validate` and `volley crd`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use volley_crds::manifest::{MAX_MANIFEST_BYTES, ManifestError, parse_manifest_bytes};
use volley_crds::target_policy::{TargetPolicy, check_spec};
use volley_crds::validate::{FieldError, validate};
use volley_crds::{LoadTest, crd};
use volley_runner::engine::FileRoots;
use volley_runner::local::{EXIT_ERROR, Launch, LocalOptions, Progress, exit_code, run_with};
use volley_runner::summary::render_text;

/// Everything wrong with one manifest file.
#[derive(Debug)]
pub enum ManifestProblems {
    /// The file could not be read.
    Io(std::io::Error),
    /// The YAML does not describe a LoadTest.
    Parse(ManifestError),
    /// The LoadTest breaks validation rules.
    Invalid(Vec<FieldError>),
}

/// Reads, parses and validates one manifest.
pub fn load_manifest(path: &Path) -> Result<LoadTest, ManifestProblems> {
    load_manifest_with(path, |_| {})
}

/// Like [`load_manifest`], with command-line overrides applied before validation so they are
/// checked like the rest of the manifest.
pub fn load_manifest_with(
    path: &Path,
    overrides: impl FnOnce(&mut LoadTest),
) -> Result<LoadTest, ManifestProblems> {
    let meta = std::fs::metadata(path).map_err(ManifestProblems::Io)?;
    if meta.len() > MAX_MANIFEST_BYTES as u64 {
        return Err(ManifestProblems::Parse(ManifestError::TooLarge(
            usize::try_from(meta.len()).unwrap_or(usize::MAX),
        )));
    }
    // Bytes, not a String: text that is not UTF-8 gets a line and column, not an I/O error.
    let bytes = std::fs::read(path).map_err(ManifestProblems::Io)?;
    let mut lt = parse_manifest_bytes(&bytes).map_err(ManifestProblems::Parse)?;
    overrides(&mut lt);
    validate(&lt.spec).map_err(ManifestProblems::Invalid)?;
    Ok(lt)
}

/// Prints the problems of one file, one per line, each starting with the file name.
pub fn print_problems(path: &Path, problems: &ManifestProblems) {
    let file = path.display();
    match problems {
        ManifestProblems::Io(e) => eprintln!("{file}: cannot read: {e}"),
        ManifestProblems::Parse(ManifestError::UnknownFields(fields)) => {
            for f in fields {
                eprintln!(
                    "{file}: {f}: unknown field (check the spelling; `volley crd` shows every field)"
                );
            }
        }
        ManifestProblems::Parse(e) => eprintln!("{file}: {e}"),
        ManifestProblems::Invalid(errors) => {
            for e in errors {
                eprintln!("{file}: {e}");
            }
        }
    }
}

/// `volley validate FILE...`: exit 0 when every file is valid, 1 otherwise.
pub fn validate_files(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for path in files {
        match load_manifest(path) {
            Ok(lt) => println!(
                "{}: ok (LoadTest {}, {} scenario{})",
                path.display(),
                lt.metadata.name.as_deref().unwrap_or("<unnamed>"),
                lt.spec.scenarios.len(),
                if lt.spec.scenarios.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
            Err(problems) => {
                failed += 1;
                print_problems(path, &problems);
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {} manifest(s) invalid", files.len());
        ExitCode::FAILURE
    }
}

/// `volley crd`: the CRD YAML on stdout.
pub fn print_crd() -> ExitCode {
    match crd::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
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
}

/// `volley run FILE`: validates, runs, prints the summary, writes `--out`, and exits 0 / 99 / 1.
pub fn run_file(path: &Path, out: Option<&Path>, options: RunOptions) -> ExitCode {
    let loaded = load_manifest_with(path, |lt| {
        if let Some(url) = options.base_url {
            lt.spec.target.base_url = url;
        }
    });
    let lt = match loaded {
        Ok(lt) => lt,
        Err(problems) => {
            print_problems(path, &problems);
            return ExitCode::from(EXIT_ERROR);
        }
    };
    // The static part of the guard, before anything starts: the base URL and every URL whose
    // host is written out. Hosts from templates are checked by the runners.
    let refused = check_spec(&lt.spec, &options.allowed_targets);
    if !refused.is_empty() {
        print_problems(path, &ManifestProblems::Invalid(refused));
        eprintln!("nothing was sent: the run needs targets outside --allowed-targets");
        return ExitCode::from(EXIT_ERROR);
    }
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
    ExitCode::from(exit_code(&summary))
}
