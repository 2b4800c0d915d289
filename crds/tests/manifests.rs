//! The manifest corpus: every file under `manifests/invalid/` declares the errors it must
//! produce in `# expect: PATH: TEXT` lines; every file under `manifests/valid/` must pass.
//!
//! Adding a case is adding a file; this is also the seed corpus for fuzzing the parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use volley_crds::manifest::parse_manifest;
use volley_crds::validate::validate;

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

/// Every message a manifest produces, each as `PATH: MESSAGE`.
fn problems(text: &str) -> Vec<String> {
    match parse_manifest(text) {
        Err(volley_crds::manifest::ManifestError::UnknownFields(fields)) => fields
            .iter()
            .map(|f| format!("{f}: unknown field"))
            .collect(),
        Err(e) => vec![e.to_string()],
        Ok(lt) => match validate(&lt.spec) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        },
    }
}

#[test]
fn invalid_manifests_give_the_declared_errors() {
    let cases = files("invalid");
    assert!(cases.len() >= 25, "the corpus shrank to {}", cases.len());
    let mut failures = Vec::new();
    for path in cases {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} declares no `# expect:` line",
            path.display()
        );
        let got = problems(&text);
        for want in &expected {
            if !got.iter().any(|g| g.contains(want)) {
                failures.push(format!(
                    "{}: expected an error containing {want:?}, got {got:#?}",
                    path.display()
                ));
            }
        }
        // Hostile input must not be echoed back whole.
        if let Some(long) = got.iter().find(|g| g.len() > 1_000) {
            failures.push(format!(
                "{}: an error of {} bytes",
                path.display(),
                long.len()
            ));
        }
        // Each declared error must be the whole story: no unexpected extras.
        if got.len() > expected.len() {
            failures.push(format!(
                "{}: {} errors, {} declared: {got:#?}",
                path.display(),
                got.len(),
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_manifests_pass() {
    let mut all = files("valid");
    // The user-facing examples are part of the contract too.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    if let Ok(entries) = std::fs::read_dir(&examples) {
        all.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml")),
        );
    }
    for path in all {
        let text = std::fs::read_to_string(&path).unwrap();
        let got = problems(&text);
        assert!(got.is_empty(), "{}: {got:#?}", path.display());
    }
}
