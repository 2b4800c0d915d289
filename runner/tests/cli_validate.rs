//! `volley validate` and `volley crd` as a user runs them: the real binary, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::tempdir;

fn volley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .output()
        .expect("run volley")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn validate_accepts_the_examples() {
    let mut files: Vec<String> = std::fs::read_dir(repo("examples"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // A LoadTestSchedule is not a LoadTest: the operator's tests check those.
        .filter(|p| !p.to_string_lossy().ends_with("-schedule.yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let out = volley(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches(": ok (LoadTest").count(),
        files.len(),
        "{stdout}"
    );
}

#[test]
fn validate_prints_every_error_with_its_path_and_fails() {
    let dir = tempdir("validate");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: bad}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  scenarios:
    - name: main
      executor: constant-vus
      rate: 10
      vus: 2
      duration: 10s
      steps:
        - request: {url: "/api/jobs/${jobId}"}
  thresholds: ["p(95) < 5%"]
  runners: {parallelism: 3}
"#,
    )
    .unwrap();
    let out = volley(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.yaml: spec.scenarios[0].rate: `rate` does not apply to executor constant-vus",
        "bad.yaml: spec.scenarios[0].vus: vus 2 cannot be split across 3 runners",
        "bad.yaml: spec.scenarios[0].steps[0].request.url: ${jobId} is used before any earlier step extracts `jobId`",
        "bad.yaml: spec.thresholds[0]: ",
        "1 of 1 manifest(s) invalid",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn validate_reports_unreadable_and_malformed_files() {
    let dir = tempdir("validate");
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, "apiVersion: [\n").unwrap();
    let missing = dir.join("missing.yaml");
    let out = volley(&[
        "validate",
        broken.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.yaml: .: "), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    assert!(stderr.contains("missing.yaml: cannot read"), "{stderr}");
    assert!(stderr.contains("2 of 2 manifest(s) invalid"), "{stderr}");
}

#[test]
fn crd_prints_the_committed_yaml() {
    let out = volley(&["crd"]);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(repo("charts/volley/crds/loadtests.volley.dev.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// Runs `volley validate` with a time limit; a hang is killed and fails the test.
fn volley_bounded(args: &[&str], limit: std::time::Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run volley");
    let started = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("volley {args:?} still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The hostile corpus of core/tests/manifests/invalid (wrong types, huge numbers, YAML bombs,
/// invalid UTF-8, ...), one file at a time: each is refused with exit code 1 and at least one
/// line `FILE: PATH: MESSAGE` that contains its first `# expect:` text, quickly, and nothing
/// panics.
#[test]
fn validate_refuses_every_hostile_manifest_with_the_field_named() {
    let dir = repo("core/tests/manifests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "{} files", files.len());
    let mut failures = Vec::new();
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        let Some(want) = text.lines().find_map(|l| l.strip_prefix("# expect: ")) else {
            continue; // refused by the operator only (`# expect-cluster:`)
        };
        if text.contains("\n---\n") {
            // `volley validate` checks each document of a file on its own
            // (validate_checks_each_loadtest_of_a_multi_document_file); one LoadTest is one
            // document only for `volley run` and the library reader.
            continue;
        }
        let out = volley_bounded(
            &["validate", file.to_str().unwrap()],
            std::time::Duration::from_secs(20),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if out.status.code() != Some(1)
            || stderr.contains("panicked")
            || !stderr
                .lines()
                .any(|l| l.starts_with(&format!("{}: ", file.display())) && l.contains(want))
            || stderr.lines().any(|l| l.len() > 2_000)
        {
            failures.push(format!("{name}: {:?}\n{stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every value of the wrong type is reported in one round, each at its own line and column
/// (serde stops at the first, and places an error inside `{...}` at the `{`).
#[test]
fn validate_reports_every_bad_value_at_its_own_line_and_column() {
    let dir = tempdir("validate-types");
    let file = dir.join("three.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: three}
spec:
  target: {baseUrl: "http://127.0.0.1:8080", timeout: 5x}
  scenarios:
    - name: a
      executor: constant-vus
      vus: many
      duration: ten seconds
      steps:
        - name: get
          request: {url: /api/items}
          sleep: 1y
"#,
    )
    .unwrap();
    let out = volley(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for needle in [
        format!("{f}: spec.target.timeout: invalid duration `5x`"),
        format!("{f}: spec.scenarios[0].vus: invalid type: string \"many\""),
        format!("{f}: spec.scenarios[0].duration: invalid duration `ten seconds`"),
        format!("{f}: spec.scenarios[0].steps[0].sleep: invalid duration `1y`"),
    ] {
        assert!(stderr.contains(&needle), "missing {needle:?} in:\n{stderr}");
    }
    for (field, place) in [
        ("timeout", "(line 5, column 55)"),
        ("vus", "(line 9, column 12)"),
        ("duration", "(line 10, column 17)"),
        ("sleep", "(line 14, column 18)"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!(".{field}: ")))
            .unwrap_or_else(|| panic!("no {field} line in:\n{stderr}"));
        assert!(line.ends_with(place), "{field}: want {place} in {line}");
    }
}

const CONFIGMAP_AND_LOADTEST: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: users-csv}
data:
  users.csv: |
    email
    a@example.com
---
apiVersion: volley.dev/v1alpha1
kind: LoadTest
metadata: {name: gitops}
spec:
  target: {baseUrl: "http://127.0.0.1:8080"}
  data:
    - {name: users, file: users.csv}
  scenarios:
    - name: a
      executor: constant-vus
      vus: 2
      duration: @DURATION@
      steps:
        - name: get
          request: {url: "/api/items?u=${users.email}"}
"#;

/// A ConfigMap beside a LoadTest, as GitOps repositories keep them: the LoadTest is checked,
/// the ConfigMap skipped with a note, and an error in the LoadTest has the file's own line.
#[test]
fn validate_checks_each_loadtest_of_a_multi_document_file() {
    let dir = tempdir("validate-multi");
    let good = dir.join("good.yaml");
    std::fs::write(&good, CONFIGMAP_AND_LOADTEST.replace("@DURATION@", "10s")).unwrap();
    let out = volley(&["validate", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let g = good.display();
    assert!(
        stdout.contains(&format!(
            "{g}: document 1: skipped (a ConfigMap, not a LoadTest)"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{g}: document 2: ok (LoadTest gitops, 1 scenario)"
        )),
        "{stdout}"
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, CONFIGMAP_AND_LOADTEST.replace("@DURATION@", "10x")).unwrap();
    let out = volley(&["validate", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: document 2: spec.scenarios[0].duration: invalid duration `10x`",
            bad.display()
        )) && stderr.contains("(line 20, column 17)"),
        "{stderr}"
    );
}

/// `volley validate -` reads the manifest from standard input.
#[test]
fn validate_reads_stdin_for_a_dash() {
    use std::io::Write;
    let manifest = CONFIGMAP_AND_LOADTEST.replace("@DURATION@", "10s");
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("<stdin>: document 2: ok (LoadTest gitops, 1 scenario)"),
        "{stdout}"
    );
}

/// `examples/authenticated.yaml` runs locally but the operator refuses it (`data[0].file`):
/// plain `validate` passes it and says which rules it skipped, `--cluster` applies them.
#[test]
fn validate_cluster_applies_the_operators_rules_offline() {
    let example = repo("examples/authenticated.yaml");
    let file = example.to_str().unwrap();
    let plain = volley(&["validate", file]);
    let stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(plain.status.success(), "{stdout}");
    assert!(
        stdout.contains("not checked without --cluster")
            && stdout.contains("no local `file:` sources"),
        "{stdout}"
    );

    let cluster = volley(&["validate", "--cluster", file]);
    let stderr = String::from_utf8_lossy(&cluster.stderr);
    assert_eq!(cluster.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: spec.data[0].file: a local file works with `volley run` only"
        )),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&cluster.stdout).contains("not checked"),
        "--cluster skips nothing"
    );
}

/// A LoadTest between `---` markers (as `kubectl get -o yaml` and many editors write it) is one
/// document: the empty ones around it are not a second.
#[test]
fn validate_reads_one_loadtest_between_document_markers() {
    let dir = tempdir("validate-markers");
    let file = dir.join("marked.yaml");
    let example = std::fs::read_to_string(repo("examples/quickstart.yaml")).unwrap();
    std::fs::write(&file, format!("---\n{example}---\n")).unwrap();
    let out = volley(&["validate", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok (LoadTest quickstart"), "{stdout}");
}
