//! The LoadTest CustomResourceDefinition, generated from the Rust types.
//!
//! The Helm chart's `charts/volley/crds/loadtests.volley.dev.yaml` is this module's output,
//! committed there and nowhere else (Helm installs it, and `kubectl apply` can use it without
//! Helm); a test fails when the two differ. Regenerate with
//! `cargo run -p volley-runner -- crd > charts/volley/crds/loadtests.volley.dev.yaml`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::spec::LoadTest;

/// The committed CRD, the chart's, relative to the repository's root.
pub const CRD_FILE: &str = "charts/volley/crds/loadtests.volley.dev.yaml";

/// The CRD object.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = LoadTest::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        // Round-trip through JSON to edit the schema tree generically; both directions are
        // infallible for a schema that came from serde in the first place.
        if let Ok(mut value) = serde_json::to_value(&*schema) {
            normalize_integer_formats(&mut value);
            join_description_lines(&mut value);
            if let Ok(fixed) = serde_json::from_value(value) {
                *schema = fixed;
            }
        }
    }
    crd
}

/// Integer formats the API server recognizes are int32 and int64; schemars writes Rust's
/// unsigned types as `uint16`/`uint32`/`uint64`, which API servers warn about ("unrecognized
/// format"). Express them as recognized formats with explicit bounds instead, so the API
/// server also rejects values the Rust types cannot hold.
fn normalize_integer_formats(node: &mut serde_json::Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let bounds = match obj.get("format").and_then(|f| f.as_str()) {
        Some("uint8") => Some(("int32", Some(u64::from(u8::MAX)))),
        Some("uint16") => Some(("int32", Some(u64::from(u16::MAX)))),
        Some("uint32") => Some(("int64", Some(u64::from(u32::MAX)))),
        // No maximum: the API server stores integers as int64, which is the real bound.
        Some("uint64") | Some("uint") => Some(("int64", None)),
        _ => None,
    };
    if let Some((format, max)) = bounds {
        obj.insert("format".into(), format.into());
        // A field's own `#[schemars(range(...))]` is kept where it is tighter than the type's.
        let own = |key: &str| obj.get(key).and_then(serde_json::Value::as_f64);
        let min = own("minimum")
            .filter(|m| *m > 0.0)
            .map_or(0, |m| m.ceil() as u64);
        let own_max = own("maximum")
            .filter(|m| *m >= 0.0)
            .map(|m| m.floor() as u64);
        obj.insert("minimum".into(), min.into());
        match (own_max, max) {
            (Some(a), Some(b)) => obj.insert("maximum".into(), a.min(b).into()),
            (Some(m), None) | (None, Some(m)) => obj.insert("maximum".into(), m.into()),
            (None, None) => None,
        };
    }
    for (_, child) in obj.iter_mut() {
        match child {
            serde_json::Value::Object(_) => normalize_integer_formats(child),
            serde_json::Value::Array(items) => items.iter_mut().for_each(normalize_integer_formats),
            _ => {}
        }
    }
}

/// Descriptions come from doc comments, which schemars keeps line by line; `kubectl explain`
/// wraps text itself, so a kept newline breaks a sentence in the middle ("one row per /
/// iteration"). Lines of a paragraph are joined with a space; blank-line paragraph breaks and
/// list items (`- `, `* `) keep their line.
fn join_description_lines(node: &mut serde_json::Value) {
    match node {
        serde_json::Value::Object(obj) => {
            for (key, child) in obj.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = join_lines(text);
                    }
                    _ => join_description_lines(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(join_description_lines),
        _ => {}
    }
}

/// `text` with each paragraph's lines joined; see [`join_description_lines`].
fn join_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            let mut joined = String::with_capacity(paragraph.len());
            for (i, line) in paragraph.lines().enumerate() {
                let line = line.trim();
                if i > 0 {
                    let list_item = line.starts_with("- ") || line.starts_with("* ");
                    joined.push(if list_item { '\n' } else { ' ' });
                }
                joined.push_str(line);
            }
            joined
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The CRD as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    let body = serde_norway::to_string(&crd())?;
    Ok(format!(
        "# Generated from the Rust types in crds/src by `volley crd`. Do not edit.\n---\n{body}"
    ))
}

/// Reasons a schema is not *structural* in the API server's sense, one sentence per node.
///
/// The API server rejects non-structural CRDs; checking here catches it without a cluster.
pub fn structural_problems(schema: &serde_json::Value) -> Vec<String> {
    let mut problems = Vec::new();
    check_node(schema, "openAPIV3Schema", &mut problems);
    problems
}

fn check_node(node: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        problems.push(format!("{path}: schema node is not an object"));
        return;
    };
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "additionalItems",
        "patternProperties",
    ] {
        if obj.contains_key(forbidden) {
            problems.push(format!("{path}: `{forbidden}` is not allowed"));
        }
    }
    let preserve = obj
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let int_or_string = obj
        .get("x-kubernetes-int-or-string")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let ty = obj.get("type").and_then(|t| t.as_str());
    if ty.is_none() && !preserve && !int_or_string {
        problems.push(format!("{path}: no `type`"));
    }
    if let Some(t) = obj.get("type")
        && !t.is_string()
    {
        problems.push(format!("{path}: `type` must be a single string"));
    }
    if obj.get("nullable").is_some() && ty.is_none() && !int_or_string {
        problems.push(format!("{path}: `nullable` without a type"));
    }
    for junctor in ["anyOf", "oneOf", "allOf", "not"] {
        if let Some(branches) = obj.get(junctor) {
            // Junctors may only restrict values; types and properties belong outside them.
            let list: Vec<&serde_json::Value> = match branches {
                serde_json::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for (i, b) in list.iter().enumerate() {
                for key in [
                    "type",
                    "properties",
                    "items",
                    "additionalProperties",
                    "default",
                ] {
                    if b.get(key).is_some() && !int_or_string {
                        problems.push(format!("{path}.{junctor}[{i}]: `{key}` inside a junctor"));
                    }
                }
            }
        }
    }
    if let Some(format) = obj.get("format").and_then(|f| f.as_str()) {
        let known = match ty {
            Some("integer") => ["int32", "int64"].contains(&format),
            Some("number") => ["float", "double", "int32", "int64"].contains(&format),
            Some("string") => [
                "date-time",
                "date",
                "byte",
                "int-or-string",
                "duration",
                "uri",
                "email",
                "uuid",
                "hostname",
                "password",
                "binary",
            ]
            .contains(&format),
            _ => false,
        };
        if !known {
            problems.push(format!(
                "{path}: format `{format}` is not one the API server recognizes"
            ));
        }
    }
    if let Some(default) = obj.get("default") {
        check_default(default, obj, path, problems);
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (name, child) in props {
            check_node(child, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_node(items, &format!("{path}[]"), problems);
    }
    if let Some(additional) = obj.get("additionalProperties")
        && additional.is_object()
    {
        check_node(additional, &format!("{path}{{}}"), problems);
    }
}

/// Defaults must validate against their own node, or the API server refuses the CRD.
fn check_default(
    default: &serde_json::Value,
    node: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let ty = node.get("type").and_then(|t| t.as_str());
    let ok = match (ty, default) {
        (Some("string"), serde_json::Value::String(s)) => {
            match node.get("pattern").and_then(|p| p.as_str()) {
                Some(pattern) => regex::Regex::new(pattern)
                    .map(|re| re.is_match(s))
                    .unwrap_or(false),
                None => true,
            }
        }
        (Some("string"), _) => false,
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("array"), v) => v.is_array(),
        (Some("object"), v) => v.is_object(),
        _ => true,
    };
    if !ok {
        problems.push(format!(
            "{path}: default {default} does not match its schema"
        ));
    }
    if let Some(allowed) = node.get("enum").and_then(|e| e.as_array())
        && !allowed.contains(default)
    {
        problems.push(format!(
            "{path}: default {default} is not one of the enum values"
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        let crd = crd();
        let version = &crd.spec.versions[0];
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        serde_json::to_value(schema).unwrap()
    }

    #[test]
    fn committed_crd_matches_the_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CRD_FILE);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = crd_yaml().unwrap();
        assert!(
            committed == generated,
            "{} is stale: regenerate it with `cargo run -p volley-runner -- crd > {CRD_FILE}`",
            path.display()
        );
    }

    /// `kubectl explain` wraps text itself: a description keeps a line break only between
    /// paragraphs and before a list item, never in the middle of a sentence.
    #[test]
    fn descriptions_break_lines_only_between_paragraphs() {
        let s = schema();
        let data = s["properties"]["spec"]["properties"]["data"]["description"]
            .as_str()
            .unwrap();
        assert!(data.contains("one row per iteration"), "{data}");
        fn walk(node: &serde_json::Value, path: &str, broken: &mut Vec<String>) {
            match node {
                serde_json::Value::Object(obj) => {
                    for (key, child) in obj {
                        if key == "description"
                            && let Some(text) = child.as_str()
                        {
                            let mid_sentence = text.split("\n\n").any(|p| {
                                p.lines()
                                    .skip(1)
                                    .any(|l| !l.starts_with("- ") && !l.starts_with("* "))
                            });
                            if mid_sentence {
                                broken.push(format!("{path}: {text:?}"));
                            }
                        } else {
                            walk(child, &format!("{path}.{key}"), broken);
                        }
                    }
                }
                serde_json::Value::Array(items) => {
                    items.iter().for_each(|i| walk(i, path, broken));
                }
                _ => {}
            }
        }
        let mut broken = Vec::new();
        walk(&s, "", &mut broken);
        assert!(broken.is_empty(), "{}", broken.join("\n"));
        assert_eq!(
            join_lines("one row per\n  iteration.\n\nNext:\n- a\n- b"),
            "one row per iteration.\n\nNext:\n- a\n- b"
        );
    }

    #[test]
    fn schema_is_structural() {
        let problems = structural_problems(&schema());
        assert!(
            problems.is_empty(),
            "non-structural schema:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_checker_catches_what_the_api_server_rejects() {
        let bad = serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"description": "untyped"},
                "b": {"$ref": "#/definitions/X"},
                "c": {"type": "string", "pattern": "^[0-9]+s$", "default": "soon"},
                "d": {"type": "object", "anyOf": [{"type": "string"}]},
                "e": {"x-kubernetes-preserve-unknown-fields": true},
                "f": {"type": "integer", "format": "uint32"},
            }
        });
        let problems = structural_problems(&bad);
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }

    #[test]
    fn unsigned_fields_get_recognized_formats_and_bounds() {
        let s = schema();
        let ttl = &s["properties"]["spec"]["properties"]["cleanup"]["properties"]["ttlSecondsAfterFinished"];
        assert_eq!(ttl["format"], "int64");
        assert_eq!(ttl["minimum"].as_f64(), Some(0.0));
        assert_eq!(ttl["maximum"].as_f64(), Some(f64::from(u32::MAX)));
        // A field's own, tighter range survives the type's.
        let parallelism =
            &s["properties"]["spec"]["properties"]["runners"]["properties"]["parallelism"];
        assert_eq!(parallelism["format"], "int64");
        assert_eq!(parallelism["minimum"].as_f64(), Some(1.0));
        assert_eq!(parallelism["maximum"].as_f64(), Some(1000.0));
        let status_code = &s["properties"]["spec"]["properties"]["scenarios"]["items"]["properties"]
            ["steps"]["items"]["properties"]["check"]["properties"]["status"]["items"];
        assert_eq!(status_code["format"], "int32");
        assert_eq!(status_code["minimum"].as_f64(), Some(100.0));
        assert_eq!(status_code["maximum"].as_f64(), Some(599.0));
    }

    #[test]
    fn names_and_columns() {
        let crd = crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("loadtests.volley.dev"));
        assert_eq!(crd.spec.group, "volley.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "LoadTest");
        assert_eq!(crd.spec.names.short_names, Some(vec!["lt".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Phase", "Verdict", "Runners", "RPS", "P95", "Errors", "Reason", "Age", "Duration",
                "Started", "Message"
            ]
        );
        // `kubectl get` shows a rounded rate, not 29.993334814485667; `-o wide` adds the
        // rest; every column points at a field the status has.
        let columns = v.additional_printer_columns.as_ref().unwrap();
        let by_name = |n: &str| columns.iter().find(|c| c.name == n).unwrap();
        assert_eq!(by_name("RPS").json_path, ".status.metrics.throughput");
        assert_eq!(by_name("RPS").type_, "string");
        for wide in ["Duration", "Started", "Message"] {
            assert_eq!(by_name(wide).priority, Some(1), "{wide}");
        }
        assert_eq!(by_name("Reason").priority, None);
        let status = &schema()["properties"]["status"];
        for c in columns
            .iter()
            .filter(|c| c.json_path.starts_with(".status."))
        {
            let mut node = status;
            for key in c.json_path.trim_start_matches(".status.").split('.') {
                node = &node["properties"][key];
            }
            assert!(node.is_object(), "{} points nowhere", c.json_path);
        }
    }

    #[test]
    fn every_field_is_documented() {
        fn walk(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
            if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let p = format!("{path}.{name}");
                    // metadata is Kubernetes' own; apiVersion/kind are documented by k8s.
                    if p == ".metadata" || p == ".apiVersion" || p == ".kind" {
                        continue;
                    }
                    let has_doc = child
                        .get("description")
                        .and_then(|d| d.as_str())
                        .is_some_and(|d| !d.trim().is_empty());
                    if !has_doc {
                        missing.push(p.clone());
                    }
                    walk(child, &p, missing);
                }
            }
            if let Some(items) = node.get("items") {
                walk(items, &format!("{path}[]"), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&schema(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:#?}"
        );
    }
}
