//! The chart's objects, as rendered with the default values (`deploy/volley-operator.yaml`,
//! written by `.ci/render-manifests.sh`, which `.ci/check-chart.sh` keeps current), parse as
//! the exact Kubernetes types (typos in field names fail), agree with each other, with the
//! operator's flags and defaults, and with the routes the operator serves; the chart's default
//! runner security contexts are the operator's built-in ones.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use volley_aggregator::Aggregator;
use volley_operator::aggregator_registry::AggregatorRegistry;
use volley_operator::config::Config;
use volley_operator::leader::{LEADER_LABEL, LEADER_LABEL_VALUE};
use volley_operator::serve::{HEALTHZ_PATH, READYZ_PATH, observability_router};
use volley_operator::telemetry::OperatorMetrics;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The chart's rendering with the default values, relative to `operator/`.
const RENDERED: &str = "../deploy/volley-operator.yaml";

/// Every document of a YAML file, as JSON.
fn docs(path: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(&read(path))
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses `value` as `T` and checks nothing was dropped (an unknown or misspelt field).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(value: &serde_json::Value) -> T {
    let t: T = serde_json::from_value(value.clone()).unwrap();
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, value, "a field did not survive the typed round trip");
    t
}

/// The rendered objects of `kind`, in the chart's order.
fn rendered(kind: &str) -> Vec<serde_json::Value> {
    docs(RENDERED)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect()
}

fn deployment() -> (serde_json::Value, Deployment) {
    let raw = rendered("Deployment");
    assert_eq!(raw.len(), 1);
    let d = typed::<Deployment>(&raw[0]);
    (raw[0].clone(), d)
}

fn container(d: &Deployment) -> Container {
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    pod.containers[0].clone()
}

/// The operator's command line in the container: its args, and every `VOLLEY_*` variable as the
/// flag that reads it (clap reads both the same way), so parsing it checks both.
fn command_line(c: &Container) -> Vec<String> {
    let command = Config::command();
    let mut line = vec!["volley-operator".to_string()];
    line.extend(
        c.args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| a.replace("$(POD_NAMESPACE)", "volley-system")),
    );
    for e in c.env.clone().unwrap_or_default() {
        if !e.name.starts_with("VOLLEY_") {
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_env() == Some(std::ffi::OsStr::new(&e.name)))
            .unwrap_or_else(|| panic!("the operator reads no {}", e.name));
        line.push(format!(
            "--{}={}",
            arg.get_long().unwrap(),
            e.value.clone().unwrap()
        ));
    }
    line
}

fn defaults() -> Config {
    Config::try_parse_from(["volley-operator"]).unwrap()
}

#[test]
fn the_deployment_runs_the_operator_image_with_valid_flags() {
    let (raw, d) = deployment();
    assert_eq!(raw["apiVersion"], "apps/v1");
    assert_eq!(raw["kind"], "Deployment");
    assert_eq!(d.metadata.name.as_deref(), Some("volley-operator"));
    assert_eq!(
        d.metadata.namespace.as_deref(),
        Some(volley_operator::rbac::DEFAULT_NAMESPACE),
        "rendered for the namespace the operator's defaults name"
    );
    let spec = &d.spec;
    let selector = spec.selector.match_labels.as_ref().unwrap();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the selector matches the pod labels"
        );
    }
    assert!(
        !labels.contains_key(LEADER_LABEL),
        "only the elected leader labels its own pod"
    );
    // Every replica is ready, so a rolling update progresses (Recreate is not needed).
    let strategy = spec.strategy.clone().unwrap_or_default();
    assert!(
        matches!(strategy.type_.as_deref(), None | Some("RollingUpdate")),
        "{strategy:?}"
    );
    let c = container(&d);
    assert_eq!(
        c.image.as_deref(),
        Some(concat!(
            "ghcr.io/volley-dev/volley-operator:",
            env!("CARGO_PKG_VERSION")
        ))
    );
    // The args and variables are flags the operator accepts (with the namespace Kubernetes
    // substitutes).
    let env: Vec<String> = c
        .env
        .clone()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(env.contains(&"POD_NAME".into()) && env.contains(&"POD_NAMESPACE".into()));
    let cfg = Config::try_parse_from(command_line(&c))
        .expect("the Deployment's args and variables are valid flags");
    assert_eq!(cfg.aggregator_url, defaults().aggregator_url);
    // Ports: the container's named ports are the ones the operator listens on.
    let ports = c.ports.clone().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap()
            .container_port
    };
    assert_eq!(port("aggregator"), i32::from(cfg.aggregator_listen.port()));
    assert_eq!(port("metrics"), i32::from(cfg.metrics_listen.port()));
    assert_eq!(
        port("aggregator"),
        i32::from(defaults().aggregator_listen.port())
    );
    assert_eq!(port("metrics"), i32::from(defaults().metrics_listen.port()));
    // Restrictive security context (the container's, or where the pod's applies, the pod's).
    let sc = c.security_context.clone().unwrap();
    let pod_sc = d
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .security_context
        .clone()
        .unwrap_or_default();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root.or(pod_sc.run_as_non_root), Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(
        sc.seccomp_profile.or(pod_sc.seccomp_profile).unwrap().type_,
        "RuntimeDefault"
    );
    let resources = c.resources.clone().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
}

#[test]
fn the_charts_default_runner_security_contexts_are_the_operators_built_in_ones() {
    // The chart always passes runner.podSecurityContext and runner.securityContext (so that
    // `--set runner.podSecurityContext.runAsUser=null` works on OpenShift); its defaults must
    // not quietly differ from what the operator does without them.
    let values = &docs("../charts/volley/values.yaml")[0]["runner"];
    assert_eq!(
        values["podSecurityContext"],
        serde_json::to_value(volley_operator::pods::builtin_pod_security_context()).unwrap()
    );
    assert_eq!(
        values["securityContext"],
        serde_json::to_value(volley_operator::pods::builtin_container_security_context()).unwrap()
    );
    // Both parse as the flags the chart sets them through.
    let cfg = Config::try_parse_from([
        "volley-operator".to_string(),
        format!(
            "--runner-pod-security-context={}",
            values["podSecurityContext"]
        ),
        format!("--runner-security-context={}", values["securityContext"]),
    ])
    .unwrap();
    assert_eq!(
        cfg.runner_defaults().pod_security_context,
        Some(volley_operator::pods::builtin_pod_security_context())
    );
}

#[tokio::test]
async fn the_probes_hit_routes_the_operator_serves() {
    let (_, d) = deployment();
    let c = container(&d);
    let metrics = Arc::new(OperatorMetrics::new());
    let registry = Arc::new(AggregatorRegistry::new(Aggregator::new(), metrics.clone()));
    let ready = Arc::new(AtomicBool::new(true));
    // Each named port with what the operator serves on it.
    let mut bases = std::collections::BTreeMap::new();
    let mut servers = Vec::new();
    for (port, router) in [
        ("metrics", observability_router(metrics, registry, ready)),
        ("aggregator", Aggregator::new().router()),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.insert(port, format!("http://{}", listener.local_addr().unwrap()));
        servers.push(tokio::spawn(
            async move { axum::serve(listener, router).await },
        ));
    }
    let http = reqwest::Client::new();
    let probes = [
        (c.liveness_probe.unwrap(), HEALTHZ_PATH),
        (c.readiness_probe.unwrap(), READYZ_PATH),
    ];
    for (probe, expected) in probes {
        let get = probe.http_get.unwrap();
        let path = get.path.unwrap();
        assert_eq!(path, expected);
        let IntOrString::String(port) = get.port else {
            panic!("probes name their port")
        };
        let base = &bases[port.as_str()];
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on {port}");
    }
    for server in servers {
        server.abort();
    }
}

#[test]
fn the_service_exposes_the_ports_runners_and_prometheus_use() {
    let raw = rendered("Service");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0]["apiVersion"], "v1");
    assert_eq!(raw[0]["kind"], "Service");
    let s = typed::<Service>(&raw[0]);
    let cfg = defaults();
    // The default aggregator URL names this Service and its port.
    let url = url_host_port(&cfg.aggregator_url);
    assert_eq!(
        url.0,
        format!("{}.volley-system.svc", s.metadata.name.as_deref().unwrap())
    );
    let spec = s.spec.unwrap();
    let ports = spec.ports.unwrap();
    let agg = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("aggregator"))
        .unwrap();
    assert_eq!(agg.port, i32::from(url.1));
    assert_eq!(
        agg.target_port,
        Some(IntOrString::String("aggregator".into()))
    );
    let metrics = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap();
    assert_eq!(
        metrics.target_port,
        Some(IntOrString::String("metrics".into()))
    );
    // The Service selects the operator pods, and of them only the leader's.
    let (_, d) = deployment();
    let pod_labels = d.spec.template.metadata.unwrap().labels.unwrap();
    let mut selector = spec.selector.unwrap();
    assert_eq!(
        selector.remove(LEADER_LABEL).as_deref(),
        Some(LEADER_LABEL_VALUE),
        "the Service selects the leader label"
    );
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            pod_labels.get(&k),
            Some(&v),
            "the Service selects the operator pods"
        );
    }
}

fn url_host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, port) = rest.split_once(':').unwrap();
    (
        host.to_string(),
        port.trim_end_matches('/').parse().unwrap(),
    )
}

#[test]
fn rbac_binds_the_deployments_service_account() {
    let raw: Vec<serde_json::Value> = docs(RENDERED)
        .into_iter()
        .filter(|d| {
            d["apiVersion"] == "v1" && d["kind"] == "ServiceAccount"
                || d["apiVersion"] == "rbac.authorization.k8s.io/v1"
        })
        .collect();
    let kinds: Vec<&str> = raw.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let sa = typed::<ServiceAccount>(&raw[0]);
    let role = typed::<ClusterRole>(&raw[1]);
    let binding = typed::<ClusterRoleBinding>(&raw[2]);
    let leader = typed::<Role>(&raw[3]);
    let leader_binding = typed::<RoleBinding>(&raw[4]);
    assert_eq!(raw[1]["apiVersion"], "rbac.authorization.k8s.io/v1");
    let (_, d) = deployment();
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name, sa.metadata.name);
    assert_eq!(binding.role_ref.name, role.metadata.name.clone().unwrap());
    assert_eq!(
        leader_binding.role_ref.name,
        leader.metadata.name.clone().unwrap()
    );
    assert_eq!(leader_binding.role_ref.kind, "Role");
    for subjects in [binding.subjects.unwrap(), leader_binding.subjects.unwrap()] {
        assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
        assert_eq!(subjects[0].namespace, sa.metadata.namespace);
    }
    assert_eq!(leader.metadata.namespace, sa.metadata.namespace);
    let allows = |rules: &[PolicyRule], group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.as_ref().unwrap().iter().any(|g| g == group)
                && r.resources.as_ref().unwrap().iter().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    let cluster = role.rules.unwrap();
    let own = leader.rules.unwrap();
    // The operator's own calls: the Lease and the leader label on its own pod, only in its own
    // namespace; the report ConfigMap and runner pods wherever LoadTests are.
    for verb in ["get", "create", "update"] {
        assert!(
            allows(&own, "coordination.k8s.io", "leases", verb),
            "leases {verb}"
        );
        assert!(
            !allows(&cluster, "coordination.k8s.io", "leases", verb),
            "leases {verb}"
        );
    }
    assert!(allows(&own, "", "pods", "patch"), "own pod patch");
    assert!(
        !allows(&cluster, "", "pods", "patch"),
        "no cluster-wide pod patch"
    );
    for verb in ["create", "update"] {
        assert!(
            allows(&cluster, "", "configmaps", verb),
            "configmaps {verb}"
        );
    }
    for verb in ["list", "watch", "create", "delete"] {
        assert!(allows(&cluster, "", "pods", verb), "pods {verb}");
    }
    assert!(
        !allows(&cluster, "", "secrets", "list") && !allows(&cluster, "", "secrets", "watch"),
        "secrets are read by name only"
    );
}

/// The rendering with `webhook.enabled=true` (`deploy/volley-operator-webhook.yaml`).
const RENDERED_WEBHOOK: &str = "../deploy/volley-operator-webhook.yaml";

#[test]
fn the_webhook_configuration_reaches_the_operators_webhook_server() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let all = docs(RENDERED_WEBHOOK);
    let of = |kind: &str| -> Vec<serde_json::Value> {
        all.iter().filter(|d| d["kind"] == kind).cloned().collect()
    };
    let raw = of("ValidatingWebhookConfiguration");
    assert_eq!(raw.len(), 1);
    let config = typed::<ValidatingWebhookConfiguration>(&raw[0]);
    let hooks = config.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert_eq!(hook.admission_review_versions, ["v1"]);
    assert_eq!(hook.side_effects, "None", "dry runs may call it");
    assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
    let rules = hook.rules.clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&["volley.dev".to_string()][..])
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["loadtests".to_string()][..])
    );
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_string(), "UPDATE".to_string()][..])
    );
    assert!(
        hook.client_config.ca_bundle.is_none(),
        "the leading operator writes its generated CA"
    );
    let target = hook.client_config.service.clone().unwrap();
    assert_eq!(
        target.path.as_deref(),
        Some(volley_operator::webhook::VALIDATE_PATH)
    );

    // The Service port it calls leads to the container port the operator listens on.
    let services = of("Service");
    let service = typed::<Service>(&services[0]);
    assert_eq!(service.metadata.name.as_deref(), Some(target.name.as_str()));
    assert_eq!(service.metadata.namespace, Some(target.namespace.clone()));
    let port = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| Some(p.port) == target.port)
        .unwrap();
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("webhook".into()))
    );
    let raw = of("Deployment");
    let d = typed::<Deployment>(&raw[0]);
    let c = container(&d);
    let container_port = c
        .ports
        .clone()
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("webhook"))
        .unwrap();
    let cfg = Config::try_parse_from(command_line(&c)).unwrap();
    let listen = cfg.webhook_listen.expect("VOLLEY_WEBHOOK_LISTEN is set");
    assert_eq!(i32::from(listen.port()), container_port.container_port);
    // The generated certificate names the Service the API server dials, and the leader
    // patches this configuration.
    assert_eq!(cfg.webhook_service, target.name);
    assert_eq!(
        Some(cfg.webhook_configuration.as_str()),
        config.metadata.name.as_deref()
    );
    assert!(cfg.webhook_cert_dir.is_none());
    assert!(
        volley_operator::webhook::service_dns_names(&cfg.webhook_service, &target.namespace)
            .contains(&format!("{}.{}.svc", target.name, target.namespace))
    );

    // Without the webhook, none of it is rendered.
    assert!(rendered("ValidatingWebhookConfiguration").is_empty());
    assert!(defaults().webhook_listen.is_none());
}
