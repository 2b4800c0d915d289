//! Manifest files as the CLI reads them: one file (or stdin) read with a size cap, parsed as one
//! LoadTest, validated, and its problems printed one per line with the file's name. Shared by
//! `volley run`, `volley validate`, `volley kube run` and `volley report --manifest`.

use std::fmt::Display;
use std::io::Read;
use std::path::Path;

use volley_core::manifest::{
    MAX_MANIFEST_BYTES, ManifestError, documents, parse_manifest, parse_manifest_bytes,
};
use volley_core::validate::{FieldError, validate};
use volley_crds::LoadTest;

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

/// Reads, parses and validates one manifest, with command-line overrides applied before
/// validation so they are checked like the rest of the manifest.
pub fn load_manifest_with(
    path: &Path,
    overrides: impl FnOnce(&mut LoadTest),
) -> Result<LoadTest, ManifestProblems> {
    // Bytes, not a String: text that is not UTF-8 gets a line and column, not an I/O error.
    let bytes = read_source(path)?;
    let mut lt = parse_one(&bytes).map_err(ManifestProblems::Parse)?;
    overrides(&mut lt);
    validate(&lt.spec).map_err(ManifestProblems::Invalid)?;
    Ok(lt)
}

/// Prints the problems of one file (or document), one per line, each starting with `file`.
pub fn print_problems(file: impl Display, problems: &ManifestProblems) {
    match problems {
        ManifestProblems::Io(e) => eprintln!("{file}: cannot read: {e}"),
        ManifestProblems::Parse(ManifestError::UnknownFields(fields)) => {
            for f in fields {
                eprintln!(
                    "{file}: {f}: unknown field (check the spelling; `volley crd` shows every field)"
                );
            }
        }
        ManifestProblems::Parse(ManifestError::Several(errors)) => {
            for e in errors {
                eprintln!("{file}: {e}");
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

/// The LoadTest of a file holding one YAML document, possibly between `---` markers (an
/// empty document before or after it is no second document). Text that is not UTF-8 gets the
/// line and column of its first bad byte.
pub fn parse_one(bytes: &[u8]) -> Result<LoadTest, ManifestError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return parse_manifest_bytes(bytes);
    };
    match documents(text.strip_prefix('\u{feff}').unwrap_or(text)) {
        Some(docs) if docs.len() == 1 => parse_manifest(&docs[0]),
        _ => parse_manifest(text),
    }
}

/// The bytes of a manifest file, or of stdin for `-`, refusing more than
/// [`MAX_MANIFEST_BYTES`] before reading them all.
pub fn read_source(path: &Path) -> Result<Vec<u8>, ManifestProblems> {
    let limit = MAX_MANIFEST_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(ManifestProblems::Io)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestProblems::Parse(ManifestError::TooLarge(
            bytes.len(),
        )));
    }
    Ok(bytes)
}
