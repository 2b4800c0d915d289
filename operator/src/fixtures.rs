//! Test fixtures shared by the unit tests: LoadTests, pods and times.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::jiff::Timestamp;
use volley_core::manifest::parse_manifest;
use volley_crds::LoadTest;

use volley_core::target_policy::TargetPolicy;

use crate::config::RunnerDefaults;

/// UID of every fixture LoadTest (and so its run id).
pub const UID: &str = "6f1c1d2e-0000-4000-8000-00000000abcd";

/// A valid LoadTest `name` in namespace `team-a` with `parallelism` runners, generation 1.
pub fn loadtest(name: &str, parallelism: u32) -> LoadTest {
    loadtest_yaml(name, &format!("runners: {{parallelism: {parallelism}}}"))
}

/// A valid LoadTest whose spec ends with `extra` (YAML at spec level, one line).
pub fn loadtest_yaml(name: &str, extra: &str) -> LoadTest {
    let yaml = format!(
        "apiVersion: volley.dev/v1alpha1\nkind: LoadTest\nmetadata: {{name: {name}}}\nspec:\n  \
         target: {{baseUrl: 'http://target.team-a.svc:8080'}}\n  \
         scenarios:\n  - {{name: browse, executor: constant-vus, vus: 4, duration: 1m, \
         steps: [{{request: {{url: /}}}}]}}\n  {extra}\n"
    );
    let mut lt = parse_manifest(&yaml).expect("fixture manifest");
    lt.metadata.namespace = Some("team-a".into());
    lt.metadata.uid = Some(UID.into());
    lt.metadata.generation = Some(1);
    lt.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t0()));
    lt
}

/// The operator defaults the fixtures use.
pub fn defaults() -> RunnerDefaults {
    RunnerDefaults {
        image: "ghcr.io/volley-dev/volley:test".into(),
        image_pull_policy: None,
        aggregator_url: "http://volley-operator.volley-system.svc:8080".into(),
        allowed_targets: TargetPolicy::allow_all(),
        resources: None,
        image_pull_secrets: Vec::new(),
        pod_security_context: None,
        security_context: None,
    }
}

/// [`defaults`] with the allow-list `list` (`--allowed-targets`). The fixture LoadTests aim at
/// `http://target.team-a.svc:8080`.
pub fn guarded(list: &str) -> RunnerDefaults {
    RunnerDefaults {
        allowed_targets: TargetPolicy::parse(list).expect("fixture allow-list"),
        ..defaults()
    }
}

/// A fixed moment the tests measure from.
pub fn t0() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().expect("timestamp")
}

/// `secs` seconds after [`t0`].
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(t0().as_second() + secs).expect("timestamp")
}
