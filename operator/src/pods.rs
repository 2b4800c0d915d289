//! Runner pods: one per `runners.parallelism`, built from the LoadTest's `runners` settings and
//! the operator's [`RunnerDefaults`]. Pure: the same inputs give the same pod.
//!
//! Each pod runs `volley agent --aggregator URL --run RUN --index N` (see the runner's
//! `agent` module), with `--allowed-targets=LIST` when the administrator limits the load
//! targets (an argument, not only the variable: it beats `VOLLEY_ALLOWED_TARGETS`, so a
//! tenant's `runners.env` cannot loosen the list), gets its own credential (not the run's
//! token) from the run's Secret through the `VOLLEY_TOKEN` variable, and has a restrictive
//! security context (the administrator may replace it, e.g. on OpenShift, which assigns the
//! UID itself; a LoadTest cannot). ConfigMaps that data feeders or multipart parts refer to are mounted read-only under [`CONFIGMAP_ROOT`] as
//! `NAME/KEY`, the layout `volley agent --configmaps` reads.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, LocalObjectReference, Pod, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
    PodSpec, SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use volley_core::protocol::TOKEN_ENV;
use volley_core::scenario::StepKind;
use volley_crds::LoadTest;
use volley_crds::spec::Runners;

use crate::config::RunnerDefaults;
use crate::names::{RUN_LABEL, RUNNER_INDEX_LABEL, RunRef, label_value, runner_pod_name};
use crate::secret::runner_key;

/// Name of the runner container.
pub const CONTAINER_NAME: &str = "runner";
/// Where referenced ConfigMaps are mounted: `CONFIGMAP_ROOT/NAME/KEY`.
pub const CONFIGMAP_ROOT: &str = "/etc/volley/configmaps";
/// User and group the runner runs as (the distroless `nonroot` user).
pub const RUNNER_UID: i64 = 65532;
/// Topology key of `runners.separate`: one runner per node.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// The pod of runner `index` of `lt`'s run `run`.
pub fn runner_pod(lt: &LoadTest, index: u32, defaults: &RunnerDefaults, run: &RunRef) -> Pod {
    let runners = &lt.spec.runners;
    let mut labels = runners.labels.clone();
    // Ours last: the selectors and the adoption of pods rely on them.
    labels.extend(run.labels());
    labels.insert(RUNNER_INDEX_LABEL.to_string(), index.to_string());

    let configmaps = referenced_configmaps(lt);
    let mut command = vec![
        "volley".to_string(),
        "agent".to_string(),
        "--aggregator".to_string(),
        defaults.aggregator_url.clone(),
        "--run".to_string(),
        run.run_id.clone(),
        "--index".to_string(),
        index.to_string(),
    ];
    if !configmaps.is_empty() {
        command.extend(["--configmaps".to_string(), CONFIGMAP_ROOT.to_string()]);
    }
    if !defaults.allowed_targets.is_empty() {
        // One `--flag=value` word: the list is never taken for a flag of its own.
        command.push(format!("--allowed-targets={}", defaults.allowed_targets));
    }

    // The credential first: `env` entries beat `envFrom`, so a user's envFrom cannot replace
    // it (validation rejects a user `env` entry of the same name). Only this runner's own.
    let mut env = vec![EnvVar {
        name: TOKEN_ENV.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: run.secret_name.clone(),
                key: runner_key(index),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }];
    env.extend(runners.env.iter().cloned());

    let mut volumes = vec![Volume {
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_string(),
        mount_path: "/tmp".to_string(),
        ..VolumeMount::default()
    }];
    for (i, name) in configmaps.iter().enumerate() {
        let volume = format!("configmap-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{CONFIGMAP_ROOT}/{name}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(runner_image(runners, defaults).to_string()),
        image_pull_policy: runners
            .image_pull_policy
            .clone()
            .or_else(|| defaults.image_pull_policy.clone()),
        command: Some(command),
        env: Some(env),
        env_from: (!runners.env_from.is_empty()).then(|| runners.env_from.clone()),
        resources: runners
            .resources
            .clone()
            .or_else(|| defaults.resources.clone()),
        volume_mounts: Some(mounts),
        security_context: Some(
            defaults
                .security_context
                .clone()
                .unwrap_or_else(builtin_container_security_context),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Container::default()
    };

    Pod {
        metadata: ObjectMeta {
            name: Some(runner_pod_name(&run.loadtest, run.run, index)),
            namespace: Some(run.namespace.clone()),
            labels: Some(labels),
            annotations: (!runners.annotations.is_empty()).then(|| runners.annotations.clone()),
            owner_references: Some(vec![run.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_string()),
            service_account_name: runners.service_account_name.clone(),
            automount_service_account_token: Some(runners.service_account_name.is_some()),
            node_selector: (!runners.node_selector.is_empty())
                .then(|| runners.node_selector.clone()),
            tolerations: (!runners.tolerations.is_empty()).then(|| runners.tolerations.clone()),
            affinity: affinity(runners.affinity.clone(), runners.separate, run),
            priority_class_name: runners.priority_class_name.clone(),
            security_context: Some(
                defaults
                    .pod_security_context
                    .clone()
                    .unwrap_or_else(builtin_pod_security_context),
            ),
            image_pull_secrets: (!defaults.image_pull_secrets.is_empty()).then(|| {
                defaults
                    .image_pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The image runner pods run: `runners.image`, or the operator's runner image when it is
/// unset or empty.
pub fn runner_image<'a>(runners: &'a Runners, defaults: &'a RunnerDefaults) -> &'a str {
    runners
        .image
        .as_deref()
        .filter(|i| !i.is_empty())
        .unwrap_or(&defaults.image)
}

/// Names of the ConfigMaps the spec reads (data feeders, multipart parts of setup and scenario
/// steps), sorted and without duplicates.
pub fn referenced_configmaps(lt: &LoadTest) -> BTreeSet<String> {
    let spec = &lt.spec;
    let feeders = spec.data.iter().filter_map(|f| f.config_map_ref.as_ref());
    let parts = spec
        .setup
        .iter()
        .chain(spec.scenarios.iter().flat_map(|s| s.steps.iter()))
        .filter_map(|step| match StepKind::of(step) {
            Ok(StepKind::Request(r)) => Some(r),
            Ok(StepKind::Sleep(_) | StepKind::WebSocket(_)) | Err(_) => None,
        })
        .flat_map(|r| r.multipart.iter())
        .filter_map(|p| p.config_map_ref.as_ref());
    feeders.chain(parts).map(|r| r.name.clone()).collect()
}

/// The user's affinity, plus for `separate` a required anti-affinity against the run's other
/// runner pods on the same node.
fn affinity(user: Option<Affinity>, separate: bool, run: &RunRef) -> Option<Affinity> {
    if !separate {
        return user;
    }
    let mut affinity = user.unwrap_or_default();
    let mut anti = affinity.pod_anti_affinity.take().unwrap_or_default();
    let mut required = anti
        .required_during_scheduling_ignored_during_execution
        .take()
        .unwrap_or_default();
    required.push(PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                RUN_LABEL.to_string(),
                label_value(&run.run_id),
            )])),
            match_expressions: None,
        }),
        topology_key: HOSTNAME_TOPOLOGY_KEY.to_string(),
        ..PodAffinityTerm::default()
    });
    anti.required_during_scheduling_ignored_during_execution = Some(required);
    affinity.pod_anti_affinity = Some(PodAntiAffinity { ..anti });
    Some(affinity)
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}

/// The pod security context of runner pods unless the administrator sets one
/// (`--runner-pod-security-context`; the chart's `runner.podSecurityContext` default is the same).
pub fn builtin_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        fs_group: Some(RUNNER_UID),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// The runner container's security context unless the administrator sets one
/// (`--runner-security-context`; the chart's `runner.securityContext` default is the same).
pub fn builtin_container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNNER_UID),
        run_as_group: Some(RUNNER_UID),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fixtures::{self, UID};

    fn pod_json(lt: &LoadTest, index: u32) -> serde_json::Value {
        let run = RunRef::of(lt).unwrap();
        serde_json::to_value(runner_pod(lt, index, &fixtures::defaults(), &run)).unwrap()
    }

    #[test]
    fn a_plain_runner_pod() {
        let lt = fixtures::loadtest("checkout", 4);
        let pod = pod_json(&lt, 2);
        let meta = &pod["metadata"];
        assert_eq!(meta["name"], "checkout-runner-2");
        assert_eq!(meta["namespace"], "team-a");
        assert_eq!(
            meta["labels"],
            serde_json::json!({
                "app.kubernetes.io/name": "volley-runner",
                "app.kubernetes.io/managed-by": "volley-operator",
                "volley.dev/loadtest": "checkout",
                "volley.dev/run": UID,
                "volley.dev/runner-index": "2",
            })
        );
        assert_eq!(
            meta["ownerReferences"],
            serde_json::json!([{
                "apiVersion": "volley.dev/v1alpha1", "kind": "LoadTest", "name": "checkout",
                "uid": UID, "controller": true, "blockOwnerDeletion": true,
            }])
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert!(spec.get("serviceAccountName").is_none());
        assert!(spec.get("affinity").is_none());
        assert_eq!(
            spec["securityContext"],
            serde_json::json!({
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            })
        );
        let c = &spec["containers"][0];
        assert_eq!(c["name"], "runner");
        assert_eq!(c["image"], "ghcr.io/volley-dev/volley:test");
        assert!(c.get("imagePullPolicy").is_none());
        assert_eq!(
            c["command"],
            serde_json::json!([
                "volley",
                "agent",
                "--aggregator",
                "http://volley-operator.volley-system.svc:8080",
                "--run",
                UID,
                "--index",
                "2"
            ])
        );
        assert_eq!(
            c["env"],
            serde_json::json!([{
                "name": "VOLLEY_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "checkout-run-token", "key": "runner-2", "optional": false}},
            }])
        );
        assert_eq!(
            c["securityContext"],
            serde_json::json!({
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                "privileged": false, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            })
        );
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([{"name": "tmp", "mountPath": "/tmp"}])
        );
        assert_eq!(
            spec["volumes"],
            serde_json::json!([{"name": "tmp", "emptyDir": {}}])
        );
    }

    #[test]
    fn the_operators_default_resources_apply_unless_the_loadtest_sets_its_own() {
        let defaults = RunnerDefaults {
            resources: serde_json::from_value(serde_json::json!(
                {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
            ))
            .ok(),
            ..fixtures::defaults()
        };
        let resources = |lt: &LoadTest| {
            let run = RunRef::of(lt).unwrap();
            serde_json::to_value(runner_pod(lt, 0, &defaults, &run)).unwrap()["spec"]["containers"]
                [0]["resources"]
                .clone()
        };
        assert_eq!(
            resources(&fixtures::loadtest("web", 1)),
            serde_json::json!({"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}})
        );
        let own = fixtures::loadtest_yaml("web", "runners: {resources: {limits: {cpu: '2'}}}");
        assert_eq!(resources(&own), serde_json::json!({"limits": {"cpu": "2"}}));
    }

    #[test]
    fn the_administrators_security_contexts_and_pull_secrets_reach_every_runner_pod() {
        // As the chart passes them for OpenShift: no UID, the platform assigns one.
        let cfg = <crate::config::Config as clap::Parser>::try_parse_from([
            "volley-operator",
            "--runner-pod-security-context",
            r#"{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}}"#,
            "--runner-security-context",
            r#"{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}"#,
            "--runner-image-pull-secrets",
            "regcred, mirror",
        ])
        .unwrap();
        let defaults = RunnerDefaults {
            image: "ghcr.io/volley-dev/volley:test".into(),
            ..cfg.runner_defaults()
        };
        // A LoadTest has no field to change them; its own settings leave them alone.
        let lt = fixtures::loadtest_yaml(
            "web",
            "runners: {parallelism: 1, serviceAccountName: runner-sa}",
        );
        let run = RunRef::of(&lt).unwrap();
        let pod = serde_json::to_value(runner_pod(&lt, 0, &defaults, &run)).unwrap();
        let spec = &pod["spec"];
        assert_eq!(
            spec["securityContext"],
            serde_json::json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            spec["containers"][0]["securityContext"],
            serde_json::json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        assert_eq!(
            spec["imagePullSecrets"],
            serde_json::json!([{"name": "regcred"}, {"name": "mirror"}])
        );
        // Without them: the built-in contexts (a_plain_runner_pod) and no pull secrets.
        let plain = pod_json(&lt, 0);
        assert_eq!(plain["spec"]["securityContext"]["runAsUser"], RUNNER_UID);
        assert!(plain["spec"].get("imagePullSecrets").is_none());
    }

    #[test]
    fn user_settings_reach_the_pod() {
        let lt = fixtures::loadtest_yaml(
            "web",
            "runners: {parallelism: 2, image: 'registry.local/volley:1', imagePullPolicy: Always, \
             serviceAccountName: runner-sa, priorityClassName: low, \
             labels: {team: a, volley.dev/run: spoofed}, annotations: {note: hi}, \
             nodeSelector: {pool: load}, tolerations: [{key: load, operator: Exists}], \
             resources: {limits: {cpu: '2'}}, \
             env: [{name: API_KEY, valueFrom: {secretKeyRef: {name: creds, key: k}}}], \
             envFrom: [{configMapRef: {name: settings}}]}",
        );
        let pod = pod_json(&lt, 0);
        let meta = &pod["metadata"];
        assert_eq!(meta["labels"]["team"], "a");
        assert_eq!(meta["labels"]["volley.dev/run"], UID, "ours win");
        assert_eq!(meta["annotations"], serde_json::json!({"note": "hi"}));
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "runner-sa");
        assert_eq!(spec["automountServiceAccountToken"], true);
        assert_eq!(spec["priorityClassName"], "low");
        assert_eq!(spec["nodeSelector"], serde_json::json!({"pool": "load"}));
        assert_eq!(
            spec["tolerations"],
            serde_json::json!([{"key": "load", "operator": "Exists"}])
        );
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "registry.local/volley:1");
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["resources"], serde_json::json!({"limits": {"cpu": "2"}}));
        assert_eq!(c["env"][0]["name"], "VOLLEY_TOKEN");
        assert_eq!(c["env"][1]["name"], "API_KEY");
        assert_eq!(
            c["envFrom"],
            serde_json::json!([{"configMapRef": {"name": "settings"}}])
        );
    }

    #[test]
    fn separate_adds_required_anti_affinity_and_keeps_the_users() {
        let lt = fixtures::loadtest_yaml(
            "web",
            "runners: {parallelism: 3, separate: true, affinity: {podAntiAffinity: \
             {requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: zone, \
             labelSelector: {matchLabels: {app: db}}}]}, nodeAffinity: \
             {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: \
             [{matchExpressions: [{key: pool, operator: In, values: [load]}]}]}}}}",
        );
        let pod = pod_json(&lt, 1);
        let affinity = &pod["spec"]["affinity"];
        assert_eq!(
            affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            serde_json::json!([
                {"topologyKey": "zone", "labelSelector": {"matchLabels": {"app": "db"}}},
                {"topologyKey": "kubernetes.io/hostname",
                 "labelSelector": {"matchLabels": {"volley.dev/run": UID}}},
            ])
        );
        assert!(
            affinity["nodeAffinity"].is_object(),
            "user's node affinity kept"
        );

        let plain = fixtures::loadtest_yaml("web", "runners: {parallelism: 3, separate: true}");
        let pod = pod_json(&plain, 0);
        assert_eq!(
            pod["spec"]["affinity"],
            serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname",
                 "labelSelector": {"matchLabels": {"volley.dev/run": UID}}}
            ]}})
        );
    }

    #[test]
    fn referenced_configmaps_are_mounted_read_only() {
        let mut lt = fixtures::loadtest_yaml(
            "web",
            "data: [{name: users, configMapRef: {name: users-csv, key: users.csv}}, \
             {name: more, configMapRef: {name: users-csv, key: more.csv}}]",
        );
        lt.spec.scenarios[0].steps[0]
            .request
            .as_mut()
            .unwrap()
            .multipart = vec![volley_crds::spec::MultipartPart {
            name: "file".into(),
            config_map_ref: Some(volley_crds::spec::ConfigMapKeyRef {
                name: "images".into(),
                key: "cat.png".into(),
            }),
            ..Default::default()
        }];
        assert_eq!(
            referenced_configmaps(&lt).into_iter().collect::<Vec<_>>(),
            ["images", "users-csv"]
        );
        let pod = pod_json(&lt, 0);
        let c = &pod["spec"]["containers"][0];
        let command: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(&command[8..], ["--configmaps", "/etc/volley/configmaps"]);
        assert_eq!(
            c["volumeMounts"],
            serde_json::json!([
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "configmap-0", "mountPath": "/etc/volley/configmaps/images", "readOnly": true},
                {"name": "configmap-1", "mountPath": "/etc/volley/configmaps/users-csv", "readOnly": true},
            ])
        );
        assert_eq!(
            pod["spec"]["volumes"][2],
            serde_json::json!({"name": "configmap-1", "configMap": {"name": "users-csv", "optional": false}})
        );
    }

    fn command(pod: &serde_json::Value) -> Vec<String> {
        pod["spec"]["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_allowed_targets_are_an_argument_that_the_tenants_env_cannot_override() {
        let lt = fixtures::loadtest_yaml(
            "web",
            "runners: {env: [{name: VOLLEY_ALLOWED_TARGETS, value: ''}]}",
        );
        let run = RunRef::of(&lt).unwrap();
        let defaults = fixtures::guarded(" *.Team-A.svc , 10.0.0.0/8,[fd00::1]:8443");
        let pod = serde_json::to_value(runner_pod(&lt, 1, &defaults, &run)).unwrap();
        assert_eq!(
            command(&pod),
            [
                "volley",
                "agent",
                "--aggregator",
                "http://volley-operator.volley-system.svc:8080",
                "--run",
                UID,
                "--index",
                "1",
                "--allowed-targets=*.team-a.svc,10.0.0.0/8,[fd00::1]:8443",
            ]
        );
        let list = command(&pod)[8]
            .strip_prefix("--allowed-targets=")
            .unwrap()
            .to_string();
        assert_eq!(
            volley_core::target_policy::TargetPolicy::parse(&list).unwrap(),
            defaults.allowed_targets,
            "the runner reads back the operator's list"
        );
        // The tenant's variable is still passed (it is theirs), but the runner's
        // `--allowed-targets` argument takes precedence over it.
        assert_eq!(
            pod["spec"]["containers"][0]["env"][1]["name"],
            "VOLLEY_ALLOWED_TARGETS"
        );
        // After the ConfigMap flags when there are any.
        let lt = fixtures::loadtest_yaml(
            "web",
            "data: [{name: users, configMapRef: {name: users-csv, key: users.csv}}]",
        );
        let pod = serde_json::to_value(runner_pod(&lt, 0, &defaults, &run)).unwrap();
        assert_eq!(
            &command(&pod)[8..],
            [
                "--configmaps",
                "/etc/volley/configmaps",
                "--allowed-targets=*.team-a.svc,10.0.0.0/8,[fd00::1]:8443",
            ]
        );
        // Without a list: no argument (the plain pod's command is checked in full above).
        let pod = pod_json(&lt, 0);
        assert!(
            !command(&pod)
                .iter()
                .any(|a| a.starts_with("--allowed-targets")),
            "{pod}"
        );
    }

    #[test]
    fn one_pod_per_runner() {
        let lt = fixtures::loadtest("web", 3);
        let run = RunRef::of(&lt).unwrap();
        let names: Vec<_> = (0..lt.spec.runners.parallelism)
            .map(|i| runner_pod(&lt, i, &fixtures::defaults(), &run))
            .map(|p| p.metadata.name.unwrap())
            .collect();
        assert_eq!(names, ["web-runner-0", "web-runner-1", "web-runner-2"]);
    }
}
