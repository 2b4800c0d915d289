//! Reading a LoadTest manifest from YAML, with errors that name the field and the line.
//!
//! Unknown keys are reported instead of silently dropped (a typo like `maxVus` would otherwise
//! run a test without its VU cap). The types themselves do not deny unknown fields, so an
//! operator reading objects written by a newer CRD keeps working.

use crate::spec::LoadTest;
use crate::text::shorten;

/// API version of the LoadTest resource.
pub const API_VERSION: &str = "volley.dev/v1alpha1";
/// Kind of the LoadTest resource.
pub const KIND: &str = "LoadTest";
/// Largest manifest accepted (the API server's own limit on an object is about 1.5 MiB).
pub const MAX_MANIFEST_BYTES: usize = 3 * 1024 * 1024;

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid YAML, or a value of the wrong type.
    #[error("{path}: {message}{}", location(.line, .column))]
    Invalid {
        /// Field path, e.g. `spec.scenarios[0].rate` (`.` when the document itself is wrong).
        path: String,
        /// What is wrong.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
    },
    /// Keys that no LoadTest field has.
    #[error("unknown field{} {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    UnknownFields(Vec<String>),
    /// The document is not a `volley.dev/v1alpha1` LoadTest.
    #[error("{0}")]
    WrongKind(String),
    /// The file is too large to be a LoadTest.
    #[error("the manifest is {0} bytes; a LoadTest is at most {MAX_MANIFEST_BYTES} bytes")]
    TooLarge(usize),
}

fn location(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

/// Parses one LoadTest from YAML (or JSON, which is YAML).
///
/// Checks `apiVersion` and `kind`, and reports unknown keys as errors. Cross-field rules are
/// [`crate::validate::validate`]'s job.
pub fn parse_manifest(yaml: &str) -> Result<LoadTest, ManifestError> {
    if yaml.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(yaml.len()));
    }
    check_header(yaml)?;
    let mut unknown = Vec::new();
    let de = serde_norway::Deserializer::from_str(yaml);
    let mut record =
        |path: serde_ignored::Path<'_>| unknown.push(bracket_indexes(&path.to_string()));
    let ignored = serde_ignored::Deserializer::new(de, &mut record);
    let parsed: Result<LoadTest, _> = serde_path_to_error::deserialize(ignored);
    let lt = parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let loc = inner.location();
        let message = strip_location(&inner.to_string());
        let message = shorten(&strip_path_prefix(&message, &path), 400);
        ManifestError::Invalid {
            path,
            message,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
        }
    })?;
    // `status` is the operator's to write; keys under it are not the author's typos.
    // apiVersion and kind were checked by `check_header`.
    unknown.retain(|p| !p.starts_with("status") && p != "apiVersion" && p != "kind");
    if !unknown.is_empty() {
        return Err(ManifestError::UnknownFields(unknown));
    }
    Ok(lt)
}

/// Checks apiVersion and kind first, so a Deployment fed to `volley validate` gets "this is a
/// Deployment" rather than a complaint about a missing `spec.target`.
fn check_header(yaml: &str) -> Result<(), ManifestError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Header {
        api_version: Option<String>,
        kind: Option<String>,
    }
    let header: Header = match serde_norway::from_str(yaml) {
        Ok(h) => h,
        Err(e) => {
            let loc = e.location();
            return Err(ManifestError::Invalid {
                path: ".".to_string(),
                message: strip_location(&e.to_string()),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
            });
        }
    };
    match (header.api_version.as_deref(), header.kind.as_deref()) {
        (Some(API_VERSION), Some(KIND)) => Ok(()),
        (None, _) | (_, None) => Err(ManifestError::WrongKind(format!(
            "the manifest needs `apiVersion: {API_VERSION}` and `kind: {KIND}`"
        ))),
        (Some(v), Some(k)) => Err(ManifestError::WrongKind(format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, found apiVersion {v} and kind {k}"
        ))),
    }
}

/// serde_ignored writes `spec.scenarios.0.maxVus`; validation errors write `spec.scenarios[0]`.
fn bracket_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for (i, segment) in path.split('.').enumerate() {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(segment);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

/// serde_norway prefixes some messages with its own (sometimes shorter) view of the path;
/// `path` already says where, so the prefix only repeats it.
fn strip_path_prefix(message: &str, path: &str) -> String {
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.is_empty()
        && path.starts_with(prefix)
    {
        return rest.to_string();
    }
    message.to_string()
}

/// serde_norway appends "at line L column C" to messages; the error carries those separately.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: smoke}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  scenarios:
    - name: s
      executor: constant-vus
      vus: 1
      duration: 1s
      steps: [{request: {url: /health}}]
"#;

    #[test]
    fn minimal_manifest_gets_defaults() {
        let lt = parse_manifest(MINIMAL).unwrap();
        assert_eq!(lt.metadata.name.as_deref(), Some("smoke"));
        assert_eq!(lt.spec.target.timeout.to_string(), "30s");
        assert_eq!(lt.spec.runners.parallelism, 1);
        assert_eq!(lt.spec.scenarios[0].graceful_stop.to_string(), "30s");
        let req = lt.spec.scenarios[0].steps[0].request.as_ref().unwrap();
        assert_eq!(req.method, "GET");
    }

    #[test]
    fn wrong_type_names_the_field_and_line() {
        let yaml = MINIMAL.replace("vus: 1", "vus: lots");
        let err = parse_manifest(&yaml).unwrap_err();
        match &err {
            ManifestError::Invalid { path, line, .. } => {
                assert_eq!(path, "spec.scenarios[0].vus");
                assert_eq!(*line, Some(10));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("spec.scenarios[0].vus: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn bad_duration_names_the_field() {
        let yaml = MINIMAL.replace("duration: 1s", "duration: -1s");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].duration"), "{err}");
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn unknown_executor_lists_the_valid_ones() {
        let yaml = MINIMAL.replace("constant-vus", "constant-users");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].executor"), "{err}");
        assert!(err.contains("ramping-arrival-rate"), "{err}");
    }

    #[test]
    fn typos_are_reported_as_unknown_fields() {
        let yaml = MINIMAL.replace("vus: 1", "vus: 1\n      maxVus: 3");
        let err = parse_manifest(&yaml).unwrap_err();
        assert_eq!(
            err,
            ManifestError::UnknownFields(vec!["spec.scenarios[0].maxVus".into()])
        );
    }

    #[test]
    fn missing_required_field() {
        let yaml = MINIMAL.replace("      steps: [{request: {url: /health}}]\n", "");
        let err = parse_manifest(&yaml).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0]"), "{err}");
        assert!(err.contains("missing field `steps`"), "{err}");
    }

    #[test]
    fn other_kinds_are_named() {
        let err = parse_manifest("apiVersion: apps/v1\nkind: Deployment\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("found apiVersion apps/v1 and kind Deployment")
        );
        let err = parse_manifest("spec: {}\n").unwrap_err();
        assert!(err.to_string().contains("needs `apiVersion"));
    }

    #[test]
    fn broken_yaml_has_a_line() {
        let err = parse_manifest("apiVersion: [\n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Invalid { line: Some(_), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn threshold_and_sleep_forms() {
        let yaml = MINIMAL.replace(
            "steps: [{request: {url: /health}}]",
            "steps: [{request: {url: /health}}, {sleep: 1s}, {sleep: {min: 1s, max: 3s}}]\n  thresholds: [\"p(95) < 500ms\", {expr: \"error_rate < 1%\", scenario: s, abortOnFail: true}]",
        );
        let lt = parse_manifest(&yaml).unwrap();
        assert_eq!(lt.spec.thresholds.len(), 2);
        assert!(lt.spec.thresholds[1].to_threshold().abort_on_fail);
        let bad = yaml.replace("{min: 1s, max: 3s}", "{min: 1s, maxx: 3s}");
        let err = parse_manifest(&bad).unwrap_err().to_string();
        assert!(err.contains("spec.scenarios[0].steps[2].sleep"), "{err}");
        assert!(err.contains("maxx"), "{err}");
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let huge = "#".repeat(MAX_MANIFEST_BYTES + 1);
        assert!(matches!(
            parse_manifest(&huge),
            Err(ManifestError::TooLarge(_))
        ));
    }
}
