//! The rules the generated CRD makes the API server enforce agree with `volley_core::validate`.
//!
//! The CRD copies some of `validate`'s rules (crds/src/spec.rs): CEL `x-kubernetes-validations`
//! for cross-field ones, and the OpenAPI keywords `minimum`, `maximum`, `maxLength`, `pattern`
//! and `x-kubernetes-list-type: map` for ranges, lengths, names and unique names. A copy may
//! only refuse what `validate` refuses, or a manifest `volley validate` passes would fail at
//! `kubectl apply`. So:
//! - every valid corpus manifest and every example passes every rule;
//! - for each rule, a manifest built to break it is refused by the rule, with the field path
//!   the API server would print, and `validate` refuses it at that path (or below it);
//! - manifests at the edge of each range pass both;
//! - every CEL rule in the CRD is broken by at least one case here.
//!
//! The CEL rules are evaluated by `kube-cel`, kube-rs's implementation of the API server's CEL
//! environment (`self`, `has()` on absent and null fields, schema defaults applied first). The
//! OpenAPI keywords are checked by [`keyword_errors`], which applies the API server's semantics
//! for the few keywords the spec's own attributes add (`.ci/check_crd_schema.py` checks the
//! whole schema with jsonschema for the valid manifests and examples too).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use volley_core::manifest::{documents, parse_manifest};
use volley_core::validate::{
    MAX_ITERATIONS, MAX_NAME_LEN, MAX_PARALLELISM, MAX_RATE, MAX_URL_BYTES, MAX_VUS, validate,
};

/// The LoadTest schema of the generated CRD (the committed file is compared with it by
/// volley-crds' `committed_crd_matches_the_types`).
fn schema() -> Value {
    let crd = serde_json::to_value(volley_crds::crd::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// What the API server would say about `object`, as `PATH: MESSAGE` lines, and the CEL rules
/// that failed.
fn schema_errors(schema: &Value, object: &Value) -> (Vec<String>, BTreeSet<String>) {
    let mut out = Vec::new();
    keyword_errors(schema, object, "", &mut out);
    let mut failed_rules = BTreeSet::new();
    let mut object = object.clone();
    drop_null_fields(schema, &mut object);
    if let Err(errors) = kube_cel::validate(schema, &object, None) {
        for e in errors.iter() {
            out.push(format!("{}: {}", e.field_path, e.message));
            failed_rules.insert(e.rule.clone());
        }
    }
    (out, failed_rules)
}

/// The API server's CEL treats a null-valued field of an object with `properties` as absent
/// (`has(self.request)` is false for `request: null`); kube-cel 0.8 sees it as set. Dropping
/// those fields first gives kube-cel what the API server's rules see.
fn drop_null_fields(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) if schema["properties"].is_object() => {
            map.retain(|_, v| !v.is_null());
            for (key, child) in map.iter_mut() {
                drop_null_fields(&schema["properties"][key.as_str()], child);
            }
        }
        Value::Object(map) => {
            for child in map.values_mut() {
                drop_null_fields(&schema["additionalProperties"], child);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| drop_null_fields(&schema["items"], i)),
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The OpenAPI keywords the spec's attributes add, with the API server's semantics: `pattern`
/// is an unanchored RE2 search (ASCII classes), `maxLength` counts characters, and a
/// `map`-type list refuses two items with the same key.
fn keyword_errors(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            out.push(format!("{path}: should be greater than or equal to {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            out.push(format!("{path}: should be less than or equal to {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        if let Some(max) = schema["maxLength"].as_u64()
            && s.chars().count() as u64 > max
        {
            out.push(format!("{path}: may not be more than {max} bytes"));
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            let re = regex::bytes::RegexBuilder::new(pattern)
                .unicode(false)
                .build()
                .unwrap();
            if !re.is_match(s.as_bytes()) {
                out.push(format!("{path}: should match '{pattern}'"));
            }
        }
    }
    if let Some(map) = value.as_object() {
        for (key, child) in map {
            if let Some(prop) = schema["properties"].get(key) {
                keyword_errors(prop, child, &join(path, key), out);
            } else if schema["additionalProperties"].is_object() {
                keyword_errors(
                    &schema["additionalProperties"],
                    child,
                    &join(path, key),
                    out,
                );
            }
        }
    }
    if let Some(items) = value.as_array() {
        let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            keyword_errors(&schema["items"], item, &p, out);
            if schema["x-kubernetes-list-type"] == "map" {
                let key: Vec<String> = keys.iter().map(|k| item[k].to_string()).collect();
                if !seen.insert(key) {
                    out.push(format!("{p}: Duplicate value"));
                }
            }
        }
    }
}

/// Every rule the CRD carries, as CEL text.
fn all_rules(node: &Value, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "x-kubernetes-validations" {
                    for rule in child.as_array().unwrap() {
                        out.insert(rule["rule"].as_str().unwrap().to_string());
                    }
                } else {
                    all_rules(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| all_rules(i, out)),
        _ => {}
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    out
}

/// The LoadTest documents of every valid corpus manifest and every example, as written.
fn valid_manifests() -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = yaml_files(&root.join("tests/manifests/valid"));
    files.extend(yaml_files(&root.join("../examples")));
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.trim_start_matches('\u{feff}');
        for (i, doc) in documents(text).unwrap().into_iter().enumerate() {
            let value: Value = serde_norway::from_str(&doc).unwrap();
            if value["kind"] == "LoadTest" {
                out.push((format!("{} (document {})", file.display(), i + 1), value));
            }
        }
    }
    assert!(out.len() >= 10, "the corpus went missing: {}", out.len());
    out
}

#[test]
fn every_valid_manifest_and_example_passes_every_schema_rule() {
    let schema = schema();
    for (name, manifest) in valid_manifests() {
        let (errors, _) = schema_errors(&schema, &manifest);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

/// A small valid LoadTest that the cases below break one rule at a time.
fn base() -> Value {
    json!({
        "apiVersion": "volley.dev/v1alpha1",
        "kind": "LoadTest",
        "metadata": {"name": "base"},
        "spec": {
            "target": {"baseUrl": "http://127.0.0.1:8080"},
            "setup": [{"name": "login", "request": {"method": "POST", "url": "/login"}}],
            "data": [{"name": "users", "configMapRef": {"name": "users", "key": "users.csv"}}],
            "scenarios": [{
                "name": "open",
                "executor": "constant-arrival-rate",
                "rate": 10,
                "duration": "10s",
                "maxVUs": 20,
                "steps": [
                    {"name": "home", "request": {"method": "get", "url": "/"},
                     "check": {"status": [200]}, "retry": {"attempts": 3}},
                    {"sleep": "1s"},
                ],
            }],
            "runners": {"parallelism": 1, "imagePullPolicy": "IfNotPresent"},
            "observe": {"prometheus": {
                "url": "http://prometheus.monitoring.svc:9090",
                "auth": {"bearerTokenSecretRef": {"name": "prom", "key": "token"}},
                "queries": [{"name": "depth", "query": "max_over_time(q[$__range])"}],
            }},
        },
    })
}

/// Changes to `base()`: `(JSON pointer, Some(value))` sets, `(pointer, None)` removes.
type Changes = Vec<(String, Option<Value>)>;

/// `base()` with `changes` applied, in order (as in [`Changes`]).
fn with(changes: &[(&str, Option<Value>)]) -> Value {
    let mut v = base();
    for (pointer, new) in changes {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"));
        match (parent, new) {
            (Value::Object(map), Some(new)) => {
                map.insert(key.to_string(), new.clone());
            }
            (Value::Object(map), None) => {
                map.remove(key);
            }
            (Value::Array(items), Some(new)) => {
                let i: usize = key.parse().unwrap();
                if i == items.len() {
                    items.push(new.clone());
                } else {
                    items[i] = new.clone();
                }
            }
            (other, _) => panic!("{pointer}: cannot change {other}"),
        }
    }
    v
}

/// `volley validate`'s errors for `manifest`, as `PATH: MESSAGE` lines.
fn validate_errors(manifest: &Value) -> Vec<String> {
    let yaml = serde_norway::to_string(manifest).unwrap();
    match parse_manifest(&yaml) {
        Err(e) => vec![format!("(parse) {e}")],
        Ok(lt) => validate(&lt.spec)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

const SCENARIO: &str = "/spec/scenarios/0";

/// Changes that turn the base scenario into one of executor `name`, without the
/// constant-arrival-rate fields, with the fields in `set`.
fn executor(name: &str, set: &[(&str, Value)]) -> Changes {
    let mut out = vec![(format!("{SCENARIO}/executor"), Some(json!(name)))];
    for field in ["rate", "duration", "maxVUs"] {
        out.push((format!("{SCENARIO}/{field}"), None));
    }
    for (field, value) in set {
        out.push((format!("{SCENARIO}/{field}"), Some(value.clone())));
    }
    out
}

fn one(pointer: &str, value: Value) -> Changes {
    vec![(pointer.to_string(), Some(value))]
}

fn remove(pointer: &str) -> Changes {
    vec![(pointer.to_string(), None)]
}

/// Manifests that break one schema rule: (what, changes, the API server's error: path and a
/// piece of the message).
fn broken() -> Vec<(&'static str, Changes, &'static str, &'static str)> {
    let sc = |f: &str| format!("{SCENARIO}/{f}");
    let long = |n: usize| json!("a".repeat(n));
    vec![
        // CEL rules.
        (
            "a step with request and sleep",
            one(&format!("{SCENARIO}/steps/1/request"), json!({"url": "/x"})),
            "spec.scenarios[0].steps[1]",
            "a step is either a request, a websocket or a sleep",
        ),
        (
            "a step with neither",
            remove(&format!("{SCENARIO}/steps/1/sleep")),
            "spec.scenarios[0].steps[1]",
            "a step is either a request, a websocket or a sleep",
        ),
        (
            "a step with request, websocket and sleep",
            vec![
                (
                    format!("{SCENARIO}/steps/1/request"),
                    Some(json!({"url": "/x"})),
                ),
                (
                    format!("{SCENARIO}/steps/1/websocket"),
                    Some(json!({"url": "/ws"})),
                ),
            ],
            "spec.scenarios[0].steps[1]",
            "a step is either a request, a websocket or a sleep",
        ),
        (
            "a setup step with neither",
            one("/spec/setup/0", json!({"name": "nothing"})),
            "spec.setup[0]",
            "a step is either a request, a websocket or a sleep",
        ),
        (
            "constant-arrival-rate without rate",
            remove(&sc("rate")),
            "spec.scenarios[0]",
            "constant-arrival-rate needs `rate`",
        ),
        (
            "constant-arrival-rate without duration",
            remove(&sc("duration")),
            "spec.scenarios[0]",
            "constant-arrival-rate needs `duration`",
        ),
        (
            "ramping-arrival-rate without stages",
            executor("ramping-arrival-rate", &[("maxVUs", json!(20))]),
            "spec.scenarios[0]",
            "ramping-arrival-rate needs `stages`",
        ),
        (
            "constant-vus without vus",
            executor("constant-vus", &[("duration", json!("10s"))]),
            "spec.scenarios[0]",
            "constant-vus needs `vus`",
        ),
        (
            "constant-vus without duration",
            executor("constant-vus", &[("vus", json!(2))]),
            "spec.scenarios[0]",
            "constant-vus needs `duration`",
        ),
        (
            "ramping-vus without stages",
            executor("ramping-vus", &[]),
            "spec.scenarios[0]",
            "ramping-vus needs `stages`",
        ),
        (
            "shared-iterations without iterations",
            executor("shared-iterations", &[]),
            "spec.scenarios[0]",
            "shared-iterations needs `iterations`",
        ),
        (
            "per-vu-iterations without iterations",
            executor("per-vu-iterations", &[]),
            "spec.scenarios[0]",
            "per-vu-iterations needs `iterations`",
        ),
        (
            "a scenario named setup",
            one(&sc("name"), json!("setup")),
            "spec.scenarios[0].name",
            "`setup` is reserved",
        ),
        (
            "a feeder named env",
            one("/spec/data/0/name", json!("env")),
            "spec.data[0].name",
            "are reserved",
        ),
        (
            "a feeder named setup",
            one("/spec/data/0/name", json!("setup")),
            "spec.data[0].name",
            "are reserved",
        ),
        (
            "a feeder with two sources",
            one("/spec/data/0/file", json!("users.csv")),
            "spec.data[0]",
            "exactly one of configMapRef",
        ),
        (
            "a feeder without a source",
            remove("/spec/data/0/configMapRef"),
            "spec.data[0]",
            "exactly one of configMapRef",
        ),
        (
            "an unknown pull policy",
            one("/spec/runners/imagePullPolicy", json!("always")),
            "spec.runners.imagePullPolicy",
            "one of Always, IfNotPresent, Never",
        ),
        // OpenAPI keywords.
        (
            "rate 0",
            one(&sc("rate"), json!(0)),
            "spec.scenarios[0].rate",
            "greater than or equal to 1",
        ),
        (
            "rate over the limit",
            one(&sc("rate"), json!(MAX_RATE + 1)),
            "spec.scenarios[0].rate",
            "less than or equal",
        ),
        (
            "maxVUs 0",
            one(&sc("maxVUs"), json!(0)),
            "spec.scenarios[0].maxVUs",
            "greater than or equal to 1",
        ),
        (
            "maxVUs over the limit",
            one(&sc("maxVUs"), json!(MAX_VUS + 1)),
            "spec.scenarios[0].maxVUs",
            "less than or equal",
        ),
        (
            "vus 0",
            executor(
                "constant-vus",
                &[("duration", json!("10s")), ("vus", json!(0))],
            ),
            "spec.scenarios[0].vus",
            "greater than or equal to 1",
        ),
        (
            "vus over the limit",
            executor(
                "constant-vus",
                &[("duration", json!("10s")), ("vus", json!(MAX_VUS + 1))],
            ),
            "spec.scenarios[0].vus",
            "less than or equal",
        ),
        (
            "startVUs over the limit",
            executor(
                "ramping-vus",
                &[
                    ("startVUs", json!(MAX_VUS + 1)),
                    ("stages", json!([{"duration": "1s", "target": 2}])),
                ],
            ),
            "spec.scenarios[0].startVUs",
            "less than or equal",
        ),
        (
            "startRate over the limit",
            executor(
                "ramping-arrival-rate",
                &[
                    ("startRate", json!(MAX_RATE + 1)),
                    ("stages", json!([{"duration": "1s", "target": 2}])),
                ],
            ),
            "spec.scenarios[0].startRate",
            "less than or equal",
        ),
        (
            "a stage target over the limit",
            executor(
                "ramping-arrival-rate",
                &[(
                    "stages",
                    json!([{"duration": "1s", "target": MAX_RATE + 1}]),
                )],
            ),
            "spec.scenarios[0].stages[0].target",
            "less than or equal",
        ),
        (
            "iterations 0",
            executor("shared-iterations", &[("iterations", json!(0))]),
            "spec.scenarios[0].iterations",
            "greater than or equal to 1",
        ),
        (
            "iterations over the limit",
            executor(
                "per-vu-iterations",
                &[("iterations", json!(MAX_ITERATIONS + 1))],
            ),
            "spec.scenarios[0].iterations",
            "less than or equal",
        ),
        (
            "parallelism 0",
            one("/spec/runners/parallelism", json!(0)),
            "spec.runners.parallelism",
            "greater than or equal to 1",
        ),
        (
            "parallelism over the limit",
            one("/spec/runners/parallelism", json!(MAX_PARALLELISM + 1)),
            "spec.runners.parallelism",
            "less than or equal",
        ),
        (
            "retry.attempts 0",
            one(&sc("steps/0/retry/attempts"), json!(0)),
            "spec.scenarios[0].steps[0].retry.attempts",
            "greater than or equal to 1",
        ),
        (
            "retry.attempts 101",
            one(&sc("steps/0/retry/attempts"), json!(101)),
            "spec.scenarios[0].steps[0].retry.attempts",
            "less than or equal",
        ),
        (
            "status 99",
            one(&sc("steps/0/check/status/0"), json!(99)),
            "spec.scenarios[0].steps[0].check.status[0]",
            "greater than or equal to 100",
        ),
        (
            "status 600",
            one(&sc("steps/0/check/status/0"), json!(600)),
            "spec.scenarios[0].steps[0].check.status[0]",
            "less than or equal",
        ),
        (
            "a scenario name starting with a digit",
            one(&sc("name"), json!("9lives")),
            "spec.scenarios[0].name",
            "should match",
        ),
        (
            "a scenario name with a space",
            one(&sc("name"), json!("a b")),
            "spec.scenarios[0].name",
            "should match",
        ),
        (
            "an empty scenario name",
            one(&sc("name"), json!("")),
            "spec.scenarios[0].name",
            "should match",
        ),
        (
            "a long scenario name",
            one(&sc("name"), long(MAX_NAME_LEN + 1)),
            "spec.scenarios[0].name",
            "more than 63",
        ),
        (
            "a feeder name with a dot",
            one("/spec/data/0/name", json!("us.ers")),
            "spec.data[0].name",
            "should match",
        ),
        (
            "a long feeder name",
            one("/spec/data/0/name", long(MAX_NAME_LEN + 1)),
            "spec.data[0].name",
            "more than 63",
        ),
        (
            "a blank step name",
            one(&sc("steps/0/name"), json!("  ")),
            "spec.scenarios[0].steps[0].name",
            "should match",
        ),
        (
            "a long step name",
            one(&sc("steps/0/name"), long(129)),
            "spec.scenarios[0].steps[0].name",
            "more than 128",
        ),
        (
            "an unknown method",
            one(&sc("steps/0/request/method"), json!("FETCH")),
            "spec.scenarios[0].steps[0].request.method",
            "should match",
        ),
        (
            "a method with a suffix",
            one("/spec/setup/0/request/method", json!("POSTS")),
            "spec.setup[0].request.method",
            "should match",
        ),
        (
            "an empty URL",
            one(&sc("steps/0/request/url"), json!("")),
            "spec.scenarios[0].steps[0].request.url",
            "should match",
        ),
        (
            "a blank URL",
            one(&sc("steps/0/request/url"), json!(" \t")),
            "spec.scenarios[0].steps[0].request.url",
            "should match",
        ),
        (
            "a long URL",
            one(
                &sc("steps/0/request/url"),
                json!(format!("/{}", "a".repeat(MAX_URL_BYTES))),
            ),
            "spec.scenarios[0].steps[0].request.url",
            "more than 8192",
        ),
        (
            "two scenarios of one name",
            one("/spec/scenarios/1", base()["spec"]["scenarios"][0].clone()),
            "spec.scenarios[1]",
            "Duplicate value",
        ),
        (
            "two feeders of one name",
            one("/spec/data/1", base()["spec"]["data"][0].clone()),
            "spec.data[1]",
            "Duplicate value",
        ),
        (
            "two Prometheus queries of one name",
            one(
                "/spec/observe/prometheus/queries/1",
                base()["spec"]["observe"]["prometheus"]["queries"][0].clone(),
            ),
            "spec.observe.prometheus.queries[1]",
            "Duplicate value",
        ),
        (
            "an empty Prometheus query",
            one("/spec/observe/prometheus/queries/0/query", json!(" ")),
            "spec.observe.prometheus.queries[0].query",
            "should match",
        ),
        (
            "a Prometheus query name that is not a name",
            one("/spec/observe/prometheus/queries/0/name", json!("p 95")),
            "spec.observe.prometheus.queries[0].name",
            "should match",
        ),
        (
            "a Prometheus URL that is not http",
            one("/spec/observe/prometheus/url", json!("ftp://prometheus")),
            "spec.observe.prometheus.url",
            "should match",
        ),
        (
            "both kinds of Prometheus credentials",
            one(
                "/spec/observe/prometheus/auth/basicAuth",
                json!({"usernameSecretRef": {"name": "p", "key": "u"},
                       "passwordSecretRef": {"name": "p", "key": "p"}}),
            ),
            "spec.observe.prometheus.auth",
            "set exactly one of bearerTokenSecretRef and basicAuth",
        ),
    ]
}

#[test]
fn the_base_manifest_passes_both() {
    let (errors, _) = schema_errors(&schema(), &base());
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(
        validate_errors(&base()).is_empty(),
        "{:#?}",
        validate_errors(&base())
    );
}

#[test]
fn each_rule_refuses_its_case_at_the_field_and_validate_refuses_it_there_too() {
    let schema = schema();
    let mut broken_rules = BTreeSet::new();
    for (what, changes, path, message) in broken() {
        let changes: Vec<(&str, Option<Value>)> = changes
            .iter()
            .map(|(p, v)| (p.as_str(), v.clone()))
            .collect();
        let manifest = with(&changes);
        let (errors, failed) = schema_errors(&schema, &manifest);
        broken_rules.extend(failed);
        let expected = format!("{path}: ");
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&expected) && e.contains(message)),
            "{what}: the schema should refuse {path} with `{message}`, it says {errors:#?}"
        );
        let by_validate = validate_errors(&manifest);
        assert!(
            by_validate.iter().any(|e| e.starts_with(path)),
            "{what}: validate should refuse {path} (or a field below it), it says {by_validate:#?}"
        );
    }
    let mut every_rule = BTreeSet::new();
    all_rules(&schema, &mut every_rule);
    assert!(every_rule.len() >= 10, "{every_rule:#?}");
    let untested: Vec<&String> = every_rule.difference(&broken_rules).collect();
    assert!(
        untested.is_empty(),
        "CEL rules no case breaks: {untested:#?}"
    );
}

#[test]
fn the_edges_of_each_range_pass_both() {
    let schema = schema();
    let stages = json!([{"duration": "1s", "target": MAX_RATE}]);
    let cases: Vec<(&str, Value)> = vec![
        (
            "highest rate",
            with(&[("/spec/scenarios/0/rate", Some(json!(MAX_RATE)))]),
        ),
        (
            "highest maxVUs",
            with(&[("/spec/scenarios/0/maxVUs", Some(json!(MAX_VUS)))]),
        ),
        (
            "most runners",
            with(&[
                ("/spec/runners/parallelism", Some(json!(MAX_PARALLELISM))),
                ("/spec/scenarios/0/rate", Some(json!(MAX_PARALLELISM))),
                ("/spec/scenarios/0/maxVUs", Some(json!(MAX_PARALLELISM))),
            ]),
        ),
        (
            "most attempts",
            with(&[("/spec/scenarios/0/steps/0/retry/attempts", Some(json!(100)))]),
        ),
        (
            "lowest and highest status",
            with(&[(
                "/spec/scenarios/0/steps/0/check/status",
                Some(json!([100, 599])),
            )]),
        ),
        (
            "longest names",
            with(&[
                (
                    "/spec/scenarios/0/name",
                    Some(json!("s".repeat(MAX_NAME_LEN))),
                ),
                (
                    "/spec/data/0/name",
                    Some(json!(format!("_{}", "-".repeat(MAX_NAME_LEN - 1)))),
                ),
                (
                    "/spec/scenarios/0/steps/0/name",
                    Some(json!(format!(" {} ", "n".repeat(126)))),
                ),
            ]),
        ),
        (
            "longest URL",
            with(&[(
                "/spec/scenarios/0/steps/0/request/url",
                Some(json!(format!("/{}", "a".repeat(MAX_URL_BYTES - 1)))),
            )]),
        ),
        (
            "any case of a method",
            with(&[(
                "/spec/scenarios/0/steps/0/request/method",
                Some(json!("oPtIoNs")),
            )]),
        ),
        (
            "highest stage target and start rate",
            with(&[
                (
                    "/spec/scenarios/0/executor",
                    Some(json!("ramping-arrival-rate")),
                ),
                ("/spec/scenarios/0/rate", None),
                ("/spec/scenarios/0/duration", None),
                ("/spec/scenarios/0/startRate", Some(json!(MAX_RATE))),
                ("/spec/scenarios/0/stages", Some(stages)),
            ]),
        ),
        (
            "highest iterations",
            with(&[
                (
                    "/spec/scenarios/0/executor",
                    Some(json!("shared-iterations")),
                ),
                ("/spec/scenarios/0/rate", None),
                ("/spec/scenarios/0/duration", None),
                ("/spec/scenarios/0/maxVUs", None),
                ("/spec/scenarios/0/iterations", Some(json!(MAX_ITERATIONS))),
                ("/spec/scenarios/0/vus", Some(json!(MAX_VUS))),
            ]),
        ),
        (
            "a second scenario and feeder of other names",
            with(&[
                (
                    "/spec/scenarios/1",
                    Some({
                        let mut sc = base()["spec"]["scenarios"][0].clone();
                        sc["name"] = json!("other");
                        sc
                    }),
                ),
                (
                    "/spec/data/1",
                    Some(json!({"name": "more", "file": "more.csv"})),
                ),
            ]),
        ),
        (
            "null optional fields",
            with(&[("/spec/scenarios/0/steps/1/request", Some(Value::Null))]),
        ),
    ];
    for (what, manifest) in cases {
        let (errors, _) = schema_errors(&schema, &manifest);
        assert!(errors.is_empty(), "{what}: {errors:#?}");
        let by_validate = validate_errors(&manifest);
        assert!(by_validate.is_empty(), "{what}: {by_validate:#?}");
    }
}

/// The API server's request size limit (3 MiB), from which it bounds how often a node under a
/// list without `maxItems` can occur.
const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// Most estimated cost one rule may have, times how often its node can occur.
const RULE_COST_LIMIT: u64 = 10_000_000;
/// Most estimated cost all rules of the CRD together may have.
const CRD_COST_LIMIT: u64 = 100_000_000;

/// Every CEL rule with how often its node can occur, as the API server estimates it: once
/// outside lists; under a list without `maxItems` (none of Volley's has one), as often as the
/// node's smallest JSON form (`{}`, `""`: 2 bytes; a number: 1) plus a comma fits in a request.
fn rules_with_cardinality(node: &Value, under_list: bool, out: &mut Vec<(String, u64)>) {
    let Some(map) = node.as_object() else {
        return;
    };
    if let Some(rules) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        let min_size = match map.get("type").and_then(Value::as_str) {
            Some("integer" | "number" | "boolean") => 1,
            _ => 2,
        };
        let cardinality = if under_list {
            MAX_REQUEST_BYTES / (min_size + 1)
        } else {
            1
        };
        for rule in rules {
            out.push((rule["rule"].as_str().unwrap().to_string(), cardinality));
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        props
            .values()
            .for_each(|p| rules_with_cardinality(p, under_list, out));
    }
    if let Some(items) = map.get("items") {
        rules_with_cardinality(items, true, out);
    }
    if let Some(extra) = map.get("additionalProperties") {
        rules_with_cardinality(extra, true, out);
    }
}

/// A rule's cost as the API server's estimator (cel-go's) counts it, for the forms Volley's
/// rules use: `self` 1, a field select 1 more, `has(self.x)` 1 (a presence test adds nothing),
/// `==`/`!=` 1 plus a tenth of the compared literal's length (strings compare in linear time;
/// the field's side is bounded by `maxLength` or a shorter enum), `&&`/`||` nothing of their
/// own. Any other form fails the test: teach this estimator its cost first.
fn estimated_cost(rule: &str) -> u64 {
    let token =
        regex::Regex::new(r"has\(self\.\w+\)|self\.\w+|self|==|!=|&&|\|\||'[^']*'|\S+").unwrap();
    let tokens: Vec<&str> = token.find_iter(rule).map(|m| m.as_str()).collect();
    let mut cost = 0;
    for (i, t) in tokens.iter().enumerate() {
        cost += match *t {
            "&&" | "||" => 0,
            "self" => 1,
            "==" | "!=" => {
                let literal = tokens.get(i + 1).filter(|n| n.starts_with('\''));
                1 + literal.map_or(0, |l| (l.len() as u64 - 2).div_ceil(10))
            }
            t if t.starts_with("has(self.") => 1,
            t if t.starts_with("self.") => 2,
            t if t.starts_with('\'') => 0,
            other => panic!("`{rule}`: the cost estimate does not know `{other}`"),
        };
    }
    cost
}

#[test]
fn the_rules_stay_within_the_api_servers_cost_budget() {
    assert_eq!(
        estimated_cost("has(self.rate) || self.executor != 'constant-vus'"),
        6
    );
    let schema = schema();
    // The executor's maxLength bounds its comparisons; it must still admit every executor.
    let executor =
        &schema["properties"]["spec"]["properties"]["scenarios"]["items"]["properties"]["executor"];
    let longest = volley_crds::spec::Executor::ALL
        .iter()
        .map(|e| e.as_str().len())
        .max()
        .unwrap();
    assert_eq!(executor["maxLength"].as_u64(), Some(longest as u64));

    let mut rules = Vec::new();
    rules_with_cardinality(&schema, false, &mut rules);
    let mut total = 0;
    for (rule, cardinality) in &rules {
        let cost = estimated_cost(rule) * cardinality;
        assert!(
            cost <= RULE_COST_LIMIT,
            "`{rule}`: estimated cost {cost} is over the API server's {RULE_COST_LIMIT} per rule"
        );
        total += cost;
    }
    assert!(
        total <= CRD_COST_LIMIT,
        "the rules' estimated cost {total} is over the API server's {CRD_COST_LIMIT} per CRD"
    );
    println!(
        "{} rules, estimated cost {total} of {CRD_COST_LIMIT}",
        rules.len()
    );
}
