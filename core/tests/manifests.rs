//! The manifest corpus: every file under `manifests/invalid/` declares the errors it must
//! produce in `# expect: PATH: TEXT` lines; every file under `manifests/valid/` must pass.
//! `# expect-cluster: PATH: TEXT` lines declare errors only the operator's view gives (rules
//! that hold in a runner pod but not for `volley run`).
//!
//! Every manifest is judged twice, each time on its own thread with a time limit, so a panic
//! or a hang fails the test naming the file:
//! - the `volley validate` view: [`parse_manifest_bytes`] then [`validate`];
//! - the operator's view: what the API server hands the operator (the object as JSON, read
//!   back with `serde_json`), then the rules of `operator/src/spec_check.rs`, mirrored here
//!   because `volley-crds` cannot depend on the operator.
//!
//! Hostile inputs too big to commit (megabyte strings, 10 000-level nesting, the 3 MiB size
//! limit itself) are built at run time by [`generated_hostile_manifests`]. Adding a case is
//! adding a file; the corpus is also the seed of `tests/fuzz_parsers.rs` and `fuzz/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use volley_core::manifest::{MAX_MANIFEST_BYTES, ManifestError, parse_manifest_bytes};
use volley_core::validate::{FieldError, MAX_ERRORS, validate, validate_for_cluster};
use volley_crds::LoadTest;

/// Longest any one manifest may take to judge (a debug build on a loaded CI machine; the
/// slowest case, 3 MiB of nesting, takes about a second).
const TIME_LIMIT: Duration = Duration::from_secs(20);

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

fn parse_errors(e: ManifestError) -> Vec<String> {
    match e {
        ManifestError::UnknownFields(fields) => fields
            .iter()
            .map(|f| format!("{f}: unknown field"))
            .collect(),
        ManifestError::Several(errors) => errors.iter().map(ToString::to_string).collect(),
        e => vec![e.to_string()],
    }
}

fn strings(errors: Vec<FieldError>) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

/// `volley validate`'s view: every message, each as `PATH: MESSAGE`.
fn problems(bytes: &[u8]) -> Vec<String> {
    match parse_manifest_bytes(bytes) {
        Err(e) => parse_errors(e),
        Ok(lt) => validate(&lt.spec).err().map(strings).unwrap_or_default(),
    }
}

/// The operator's view. A manifest that does not parse never reaches it (kubectl and the
/// API server refuse it), so those errors are the parser's; a LoadTest that does reaches the
/// operator as JSON, and must read back as the same spec.
fn cluster_problems(bytes: &[u8]) -> Vec<String> {
    let lt = match parse_manifest_bytes(bytes) {
        Err(e) => return parse_errors(e),
        Ok(lt) => lt,
    };
    let json = serde_json::to_string(&lt).expect("a parsed LoadTest serializes");
    let mut de = serde_json::Deserializer::from_str(&json);
    let seen: LoadTest = serde_path_to_error::deserialize(&mut de)
        .unwrap_or_else(|e| panic!("the operator cannot read what the API server stores: {e}"));
    assert_eq!(seen.spec, lt.spec, "the JSON round trip changed the spec");
    strings(spec_check(&seen))
}

/// What the operator admits: [`validate_for_cluster`].
fn spec_check(lt: &LoadTest) -> Vec<FieldError> {
    validate_for_cluster(&lt.spec).err().unwrap_or_default()
}

/// Runs `f` on its own thread: a panic or a run longer than [`TIME_LIMIT`] fails, naming
/// `label`. (A hung thread is left behind; the test fails anyway.)
fn bounded<T: Send + 'static>(label: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .name(label.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(TIME_LIMIT) {
        Ok(v) => {
            let _ = handle.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "{label}: still running after {:?} (a hang)",
                started.elapsed()
            )
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let payload = handle.join().err();
            let why = payload
                .as_deref()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                })
                .unwrap_or_default();
            panic!("{label}: panicked: {why}")
        }
    }
}

/// Both views of one manifest, each time-bounded.
fn judge(label: &str, bytes: Vec<u8>) -> (Vec<String>, Vec<String>) {
    let shared = std::sync::Arc::new(bytes);
    let b = shared.clone();
    let local = bounded(&format!("{label} (volley validate)"), move || problems(&b));
    let cluster = bounded(&format!("{label} (operator)"), move || {
        cluster_problems(&shared)
    });
    (local, cluster)
}

/// Checks one invalid manifest's errors against what it declares; returns the failures.
fn check_declared(label: &str, got: &[String], want: &[String], view: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for w in want {
        if !got.iter().any(|g| g.contains(w.as_str())) {
            failures.push(format!(
                "{label} ({view}): expected an error containing {w:?}, got {got:#?}"
            ));
        }
    }
    if got.is_empty() {
        failures.push(format!("{label} ({view}): no error at all"));
    }
    // Hostile input must not be echoed back whole.
    if let Some(long) = got.iter().find(|g| g.len() > 1_000) {
        failures.push(format!(
            "{label} ({view}): an error of {} bytes: {}…",
            long.len(),
            long.chars().take(200).collect::<String>()
        ));
    }
    // Each declared error must be the whole story: no unexpected extras.
    if got.len() > want.len() {
        failures.push(format!(
            "{label} ({view}): {} errors, {} declared: {got:#?}",
            got.len(),
            want.len()
        ));
    }
    failures
}

#[test]
fn invalid_manifests_give_the_declared_errors() {
    let cases = files("invalid");
    assert!(cases.len() >= 40, "the corpus shrank to {}", cases.len());
    let mut failures = Vec::new();
    for path in cases {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let declared = |prefix: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(str::to_string)
                .collect()
        };
        let expected = declared("# expect: ");
        let cluster_only = declared("# expect-cluster: ");
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !expected.is_empty() || !cluster_only.is_empty(),
            "{label} declares no `# expect:` line"
        );
        let (local, cluster) = judge(&label, bytes);
        if expected.is_empty() {
            // Valid for `volley run`, refused in the cluster only.
            if !local.is_empty() {
                failures.push(format!(
                    "{label}: volley validate should accept it: {local:#?}"
                ));
            }
        } else {
            failures.extend(check_declared(&label, &local, &expected, "volley validate"));
        }
        let all: Vec<String> = expected.iter().chain(&cluster_only).cloned().collect();
        failures.extend(check_declared(&label, &cluster, &all, "operator"));
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
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                // A LoadTestSchedule is not a LoadTest: the operator's tests check those.
                .filter(|p| !p.to_string_lossy().ends_with("-schedule.yaml")),
        );
    }
    for path in all {
        let label = path.display().to_string();
        // The operator's view may refuse `file:` sources; it must still not panic or hang.
        let (local, _cluster) = judge(&label, std::fs::read(&path).unwrap());
        assert!(local.is_empty(), "{label}: {local:#?}");
    }
}

const BASE: &str = r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: case}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  scenarios:
    - name: main
      executor: constant-arrival-rate
      rate: 20
      duration: 10s
      steps:
        - name: get
          request: {url: /api/items}
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

const MB: usize = 1_000_000;

/// Hostile manifests too large to commit, each with the texts its errors must contain.
fn generated_hostile_manifests() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let x = "x".repeat(MB);
    let deep_list = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_map = format!("{}1{}", "{a: ".repeat(10_000), "}".repeat(10_000));
    let max_nesting = "[".repeat(MAX_MANIFEST_BYTES - BASE.len() - 100);
    let many_unknown: String = (0..50_000).map(|i| format!("      k{i}: 1\n")).collect();
    let many_thresholds = format!("  thresholds: [{}]\n", vec!["\"x\""; 100_000].join(","));
    let many_aliases = format!(
        "x-list: &l [{}]\n{}",
        vec!["1"; 1000].join(","),
        BASE.replacen(
            "spec:\n",
            &format!("x-refs: [{}]\nspec:\n", vec!["*l"; 100_000].join(",")),
            1
        )
    );
    vec![
        (
            "1 MB method",
            with(
                "{url: /api/items}",
                &format!("{{method: {x}, url: /api/items}}"),
            ),
            vec!["spec.scenarios[0].steps[0].request.method: `xxx"],
        ),
        (
            "1 MB threshold",
            format!("{BASE}  thresholds: [\"{x}\"]\n"),
            vec!["spec.thresholds[0]: unknown metric"],
        ),
        (
            "1 MB URL",
            with("{url: /api/items}", &format!("{{url: \"/{x}\"}}")),
            vec!["spec.scenarios[0].steps[0].request.url: is 1000001 bytes long"],
        ),
        (
            "1 MB header value",
            with(
                "{url: /api/items}",
                &format!("{{url: /api/items, headers: {{X-Big: \"{x}\"}}}}"),
            ),
            vec!["spec.scenarios[0].steps[0].request.headers.X-Big: the value is 1000000 bytes"],
        ),
        (
            "1 MB header name",
            with(
                "{url: /api/items}",
                &format!("{{url: /api/items, headers: {{? {x} : v}}}}"),
            ),
            vec![
                "spec.scenarios[0].steps[0].request.headers.xxx",
                "not a valid HTTP header name",
            ],
        ),
        (
            "1 MB scenario name",
            with("name: main", &format!("name: {x}")),
            vec![
                "spec.scenarios[0].name: `xxx",
                "is not a valid scenario name",
            ],
        ),
        (
            "1 MB number",
            with("rate: 20", &format!("rate: {}", "9".repeat(MB))),
            vec!["spec.scenarios[0].rate: invalid type: string \"999"],
        ),
        (
            "1 MB duration",
            with("duration: 10s", &format!("duration: {}s", "9".repeat(MB))),
            vec!["spec.scenarios[0].duration: invalid duration `999"],
        ),
        (
            "1 MB JSON path",
            with(
                "{url: /api/items}",
                &format!(
                    "{{url: /api/items}}\n          extract: {{id: {{jsonPath: \"$.{x}[\"}}}}"
                ),
            ),
            vec!["spec.scenarios[0].steps[0].extract.id.jsonPath: `$.xxx"],
        ),
        (
            "1 MB regex",
            with(
                "{url: /api/items}",
                &format!("{{url: /api/items}}\n          extract: {{id: {{regex: \"({x})\"}}}}"),
            ),
            vec!["spec.scenarios[0].steps[0].extract.id.regex: not a valid regular expression"],
        ),
        (
            "1 MB template reference",
            with("{url: /api/items}", &format!("{{url: \"/${{{x}}}\"}}")),
            vec!["spec.scenarios[0].steps[0].request.url: ${xxx"],
        ),
        (
            "1 MB unknown key",
            with("rate: 20", &format!("rate: 20\n      ? {x}\n      : 1")),
            vec!["spec.scenarios[0].xxx", "unknown field"],
        ),
        (
            "50 000 unknown keys",
            with("rate: 20\n", &format!("rate: 20\n{many_unknown}")),
            vec!["spec.scenarios[0].k0: unknown field", "… and 49980 more"],
        ),
        (
            "100 000 broken thresholds",
            format!("{BASE}{many_thresholds}"),
            vec![
                "spec.thresholds[0]: unknown metric",
                "spec: … and 99900 more problems",
            ],
        ),
        (
            "100 000 aliases of a 1000-item list",
            many_aliases,
            vec![
                "x-refs[",
                "the manifest expands to more than 1000000 values",
            ],
        ),
        (
            "JSON body nested 10 000 levels (lists)",
            with(
                "{url: /api/items}",
                &format!("{{method: POST, url: /api/items, json: {deep_list}}}"),
            ),
            vec![
                ".: brackets are nested more than 200 levels deep",
                "(line 13, column 257)",
            ],
        ),
        (
            "JSON body nested 150 levels",
            with(
                "{url: /api/items}",
                &format!(
                    "{{method: POST, url: /api/items, json: {}{}}}",
                    "[".repeat(150),
                    "]".repeat(150)
                ),
            ),
            vec![
                "spec.scenarios[0].steps[0].request.json[0][0]",
                "recursion limit exceeded",
            ],
        ),
        (
            "closing brackets hidden in quotes",
            with(
                "{url: /api/items}",
                &format!(
                    "{{method: POST, url: /api/items, json: {}}}",
                    "[\"]]\", '}}}', ".repeat(5000)
                ),
            ),
            vec![".: brackets are nested more than 200 levels deep"],
        ),
        (
            "JSON body nested 10 000 levels (maps)",
            with(
                "{url: /api/items}",
                &format!("{{method: POST, url: /api/items, json: {deep_map}}}"),
            ),
            vec![".: brackets are nested more than 200 levels deep"],
        ),
        (
            "3 MiB of nesting under an unknown key",
            format!("{BASE}  x: {max_nesting}\n"),
            vec![
                ".: brackets are nested more than 200 levels deep",
                "(line 14, column 206)",
            ],
        ),
        (
            "one byte over the size limit",
            format!("{BASE}#{}", "x".repeat(MAX_MANIFEST_BYTES - BASE.len())),
            vec!["a LoadTest is at most 3145728 bytes"],
        ),
    ]
}

#[test]
fn generated_hostile_manifests_give_short_errors_in_time() {
    let mut failures = Vec::new();
    let mut timings = Vec::new();
    for (label, text, want) in generated_hostile_manifests() {
        let want: Vec<String> = want.into_iter().map(str::to_string).collect();
        let started = Instant::now();
        let (local, cluster) = judge(label, text.into_bytes());
        timings.push(format!("{label}: {:?}", started.elapsed()));
        // Several expected texts may describe one error, and a long list is capped.
        let n = want.len().max(local.len().min(101));
        let mut declared = want.clone();
        declared.resize(n, String::new());
        failures.extend(check_declared(label, &local, &declared, "volley validate"));
        failures.extend(check_declared(label, &cluster, &declared, "operator"));
    }
    eprintln!("{}", timings.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cluster-only rules share [`validate`]'s cap: 300 local `file:` feeders give
/// [`MAX_ERRORS`] errors and one line counting the rest, not 300 errors.
#[test]
fn cluster_only_errors_are_capped() {
    let n = MAX_ERRORS * 3;
    let feeders: String = (0..n)
        .map(|i| format!("    - {{name: f{i}, file: f{i}.csv}}\n"))
        .collect();
    let text = format!("{BASE}  data:\n{feeders}");
    let lt = parse_manifest_bytes(text.as_bytes()).expect("the manifest parses");
    assert_eq!(
        validate(&lt.spec),
        Ok(()),
        "`volley run` accepts local files"
    );
    let errors = strings(validate_for_cluster(&lt.spec).expect_err("the operator refuses it"));
    assert!(
        errors.len() <= MAX_ERRORS + 1,
        "{} errors: {errors:#?}",
        errors.len()
    );
    assert_eq!(
        errors.last().map(String::as_str),
        Some(format!("spec: … and {} more problems", n - MAX_ERRORS).as_str()),
    );
    assert_eq!(
        errors[0],
        "spec.data[0].file: a local file works with `volley run` only; in the cluster use configMapRef"
    );
}
