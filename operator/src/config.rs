//! The operator's configuration: command-line flags, each also settable from the environment
//! (so a Deployment can use either), and the parts of it the pure modules need
//! ([`RunnerDefaults`], [`Timing`]).

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSecurityContext, ResourceRequirements, SecurityContext};
use volley_core::target_policy::TargetPolicy;

/// Runner image used when a LoadTest does not set `runners.image`.
pub const DEFAULT_RUNNER_IMAGE: &str =
    concat!("ghcr.io/volley-dev/volley:", env!("CARGO_PKG_VERSION"));

/// `volley-operator` flags.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "volley-operator",
    version,
    about = "Volley's Kubernetes controller for LoadTests"
)]
pub struct Config {
    /// Watch LoadTests in this namespace only (default: all namespaces).
    #[arg(long, env = "VOLLEY_WATCH_NAMESPACE", value_name = "NS")]
    pub namespace: Option<String>,
    /// Runner image for LoadTests that do not set `runners.image`.
    #[arg(long, env = "VOLLEY_RUNNER_IMAGE", default_value = DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,
    /// Image pull policy for runner pods whose LoadTest does not set one (default: the
    /// cluster's default for the image tag).
    #[arg(long, env = "VOLLEY_RUNNER_IMAGE_PULL_POLICY", value_name = "POLICY")]
    pub runner_image_pull_policy: Option<String>,
    /// The aggregator's URL as runner pods reach it, e.g. the operator's Service.
    #[arg(
        long,
        env = "VOLLEY_AGGREGATOR_URL",
        default_value = "http://volley-operator.volley-system.svc:8080"
    )]
    pub aggregator_url: String,
    /// Address the aggregator (runner protocol) listens on.
    #[arg(long, env = "VOLLEY_AGGREGATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub aggregator_listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "VOLLEY_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "VOLLEY_LEASE_NAME", default_value = "volley-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the operator's own namespace, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the pod name, from POD_NAME).
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    pub identity: Option<String>,
    /// How long a runner pod may fail to start (image pull errors, unschedulable) before the
    /// run ends in Error.
    #[arg(long, env = "VOLLEY_RUNNER_START_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub runner_start_timeout: Duration,
    /// Least time between two status writes of a running LoadTest that only update metrics.
    #[arg(long, env = "VOLLEY_STATUS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// Log format: `json` (one object per line, for log collectors) or `plain`.
    #[arg(long, env = "VOLLEY_LOG_FORMAT", default_value = "plain", value_enum)]
    pub log_format: LogFormat,
    /// The hosts LoadTests may send load to, comma-separated: `api.example.com`,
    /// `*.team-a.svc.cluster.local`, `10.0.0.0/8`, `10.1.2.3:8080`, `[fd00::1]:443` (see
    /// docs/security.md). A LoadTest aimed elsewhere ends in Error before any pod is created,
    /// and runner pods get the same list. While it is set, `spec.runners.image` may only name
    /// the operator's runner image. Default: every target is allowed.
    // The env name is spelled out (not ALLOWED_TARGETS_ENV): .ci/check_manifests.py matches the
    // chart's variables against `env = "..."` in these sources.
    #[arg(
        long,
        env = "VOLLEY_ALLOWED_TARGETS",
        value_name = "LIST",
        value_parser = TargetPolicy::parse,
    )]
    pub allowed_targets: Option<TargetPolicy>,
    /// Resources of runner pods whose LoadTest sets no `runners.resources`, as JSON, e.g.
    /// `{"requests":{"cpu":"500m","memory":"256Mi"},"limits":{"memory":"512Mi"}}` (the chart's
    /// `runner.resources`). Default: none (the namespace's LimitRange decides).
    #[arg(
        long,
        env = "VOLLEY_RUNNER_RESOURCES",
        value_name = "JSON",
        value_parser = parse_resources,
    )]
    pub runner_resources: Option<ResourceRequirements>,
    /// Image pull secrets of every runner pod, comma-separated Secret names in the LoadTest's
    /// namespace (the chart's `runner.imagePullSecrets`), for a runner image in a private
    /// registry. Default: none.
    #[arg(
        long,
        env = "VOLLEY_RUNNER_IMAGE_PULL_SECRETS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub runner_image_pull_secrets: Vec<String>,
    /// Pod security context of runner pods, as JSON, replacing the built-in one (non-root UID
    /// 65532, RuntimeDefault seccomp); e.g. `{"runAsNonRoot":true,"seccompProfile":{"type":
    /// "RuntimeDefault"}}` on OpenShift, which assigns the UID itself. A LoadTest cannot change
    /// it.
    #[arg(
        long,
        env = "VOLLEY_RUNNER_POD_SECURITY_CONTEXT",
        value_name = "JSON",
        value_parser = parse_pod_security_context,
    )]
    pub runner_pod_security_context: Option<PodSecurityContext>,
    /// Security context of the runner container, as JSON, replacing the built-in one (non-root
    /// UID 65532, read-only root filesystem, no privilege escalation, all capabilities
    /// dropped). A LoadTest cannot change it.
    #[arg(
        long,
        env = "VOLLEY_RUNNER_SECURITY_CONTEXT",
        value_name = "JSON",
        value_parser = parse_security_context,
    )]
    pub runner_security_context: Option<SecurityContext>,
    /// Serve the validating admission webhook (HTTPS) on this address, e.g. `0.0.0.0:9443`
    /// (the chart's `webhook.enabled`). Default: no webhook.
    #[arg(long, env = "VOLLEY_WEBHOOK_LISTEN", value_name = "ADDR")]
    pub webhook_listen: Option<SocketAddr>,
    /// Directory holding the webhook's `tls.crt` and `tls.key` (a mounted Secret, e.g. from
    /// cert-manager), read again when they change. Default: generate a CA and a certificate at
    /// start and write the CA into `--webhook-configuration`.
    #[arg(long, env = "VOLLEY_WEBHOOK_CERT_DIR", value_name = "DIR")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// The Service the API server calls the webhook through (in the operator's namespace):
    /// the generated certificate's names.
    #[arg(
        long,
        env = "VOLLEY_WEBHOOK_SERVICE",
        default_value = "volley-operator"
    )]
    pub webhook_service: String,
    /// The ValidatingWebhookConfiguration whose `caBundle` the leader writes when it
    /// generates the certificate.
    #[arg(
        long,
        env = "VOLLEY_WEBHOOK_CONFIGURATION",
        default_value = "volley-operator"
    )]
    pub webhook_configuration: String,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// What runner pods default to.
    pub fn runner_defaults(&self) -> RunnerDefaults {
        RunnerDefaults {
            image: self.runner_image.clone(),
            image_pull_policy: self.runner_image_pull_policy.clone(),
            aggregator_url: self.aggregator_url.clone(),
            allowed_targets: self.allowed_targets.clone().unwrap_or_default(),
            resources: self.runner_resources.clone(),
            image_pull_secrets: self
                .runner_image_pull_secrets
                .iter()
                .map(|name| name.trim())
                .filter(|name| !name.is_empty())
                .map(str::to_string)
                .collect(),
            pod_security_context: self.runner_pod_security_context.clone(),
            security_context: self.runner_security_context.clone(),
        }
    }

    /// The time bounds of the phase logic.
    pub fn timing(&self) -> Timing {
        Timing {
            runner_start_timeout: self.runner_start_timeout,
            status_interval: self.status_interval,
        }
    }
}

/// Runner resources from JSON; an empty string or `{}` means none.
fn parse_resources(text: &str) -> Result<ResourceRequirements, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(ResourceRequirements::default());
    }
    serde_json::from_str(text).map_err(|e| {
        format!(
            "runner resources must be a Kubernetes ResourceRequirements object in JSON, e.g. \
             {{\"requests\":{{\"cpu\":\"500m\"}}}}: {e}"
        )
    })
}

fn parse_pod_security_context(text: &str) -> Result<PodSecurityContext, String> {
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "the runner pod security context must be a Kubernetes PodSecurityContext object in \
             JSON, e.g. {{\"runAsNonRoot\":true}}: {e}"
        )
    })
}

fn parse_security_context(text: &str) -> Result<SecurityContext, String> {
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "the runner security context must be a Kubernetes SecurityContext object in JSON, \
             e.g. {{\"allowPrivilegeEscalation\":false}}: {e}"
        )
    })
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<volley_crds::Duration>()
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// Operator-wide defaults of runner pods.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerDefaults {
    /// Image when the LoadTest sets none.
    pub image: String,
    /// Pull policy when the LoadTest sets none.
    pub image_pull_policy: Option<String>,
    /// The aggregator's URL as seen from runner pods.
    pub aggregator_url: String,
    /// The targets LoadTests may send load to: checked before a run starts
    /// ([`crate::spec_check::admit`]) and handed to every runner pod (`--allowed-targets`).
    /// Allow-all when the administrator set no list.
    pub allowed_targets: TargetPolicy,
    /// Resources when the LoadTest sets none.
    pub resources: Option<ResourceRequirements>,
    /// Names of the image pull secrets every runner pod gets.
    pub image_pull_secrets: Vec<String>,
    /// The administrator's pod security context of runner pods; `None` is the built-in
    /// restrictive one ([`crate::pods`]).
    pub pod_security_context: Option<PodSecurityContext>,
    /// The administrator's security context of the runner container; `None` is the built-in
    /// restrictive one.
    pub security_context: Option<SecurityContext>,
}

/// Time bounds of the phase logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a runner pod may be stuck before it starts (image pull errors, unschedulable)
    /// before the run ends in Error.
    pub runner_start_timeout: Duration,
    /// Least time between two status writes that only update metrics; also how often a running
    /// LoadTest is reconciled.
    pub status_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            runner_start_timeout: Duration::from_secs(300),
            status_interval: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn defaults_and_flags() {
        let cfg = Config::try_parse_from(["volley-operator"]).unwrap();
        assert_eq!(cfg.namespace, None);
        assert_eq!(cfg.runner_image, DEFAULT_RUNNER_IMAGE);
        assert_eq!(cfg.timing(), Timing::default());
        let cfg = Config::try_parse_from([
            "volley-operator",
            "--namespace",
            "team-a",
            "--runner-image",
            "registry.local/volley:dev",
            "--aggregator-url",
            "http://agg:8080",
            "--runner-start-timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(cfg.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            cfg.runner_defaults(),
            RunnerDefaults {
                image: "registry.local/volley:dev".into(),
                image_pull_policy: None,
                aggregator_url: "http://agg:8080".into(),
                allowed_targets: TargetPolicy::allow_all(),
                resources: None,
                image_pull_secrets: Vec::new(),
                pod_security_context: None,
                security_context: None,
            }
        );
        assert_eq!(cfg.runner_start_timeout, Duration::from_secs(90));
        assert!(Config::try_parse_from(["volley-operator", "--status-interval", "soon"]).is_err());
        assert_eq!(cfg.log_format, LogFormat::Plain);
        let cfg = Config::try_parse_from([
            "volley-operator",
            "--runner-resources",
            r#"{"requests":{"cpu":"500m"},"limits":{"memory":"512Mi"}}"#,
        ])
        .unwrap();
        let r = cfg.runner_defaults().resources.unwrap();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"requests": {"cpu": "500m"}, "limits": {"memory": "512Mi"}})
        );
        let bad = Config::try_parse_from(["volley-operator", "--runner-resources", "cpu=1"]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("ResourceRequirements object in JSON")
        );
        let cfg = Config::try_parse_from(["volley-operator", "--log-format", "json"]).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
    }

    #[test]
    fn runner_pod_settings_of_the_administrator_are_parsed_at_startup() {
        let cfg = Config::try_parse_from(["volley-operator"]).unwrap();
        let d = cfg.runner_defaults();
        assert!(d.image_pull_secrets.is_empty());
        assert_eq!(d.pod_security_context, None, "the built-in one");
        assert_eq!(d.security_context, None, "the built-in one");
        // Blank entries (a trailing comma in a values file) are dropped.
        let cfg = Config::try_parse_from([
            "volley-operator",
            "--runner-image-pull-secrets",
            "regcred,,mirror,",
            "--runner-pod-security-context",
            "{}",
            "--runner-security-context",
            r#"{"readOnlyRootFilesystem":true}"#,
        ])
        .unwrap();
        let d = cfg.runner_defaults();
        assert_eq!(d.image_pull_secrets, ["regcred", "mirror"]);
        assert_eq!(d.pod_security_context, Some(PodSecurityContext::default()));
        assert_eq!(
            d.security_context.and_then(|c| c.read_only_root_filesystem),
            Some(true)
        );
        // A bad value refuses to start and says what is expected.
        let err = Config::try_parse_from([
            "volley-operator",
            "--runner-pod-security-context",
            "runAsUser=1000",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("PodSecurityContext object in JSON"), "{err}");
        let err = Config::try_parse_from([
            "volley-operator",
            "--runner-security-context",
            r#"{"privileged":"no"}"#,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SecurityContext object in JSON"), "{err}");
    }

    #[test]
    fn allowed_targets_are_parsed_at_startup() {
        let cfg = Config::try_parse_from(["volley-operator"]).unwrap();
        assert!(
            cfg.runner_defaults().allowed_targets.is_empty(),
            "allow-all"
        );
        let cfg = Config::try_parse_from([
            "volley-operator",
            "--allowed-targets",
            " *.Team-A.svc.cluster.local, 10.0.0.0/8 ,api.example.com:8443",
        ])
        .unwrap();
        assert_eq!(
            cfg.runner_defaults().allowed_targets.to_string(),
            "*.team-a.svc.cluster.local,10.0.0.0/8,api.example.com:8443"
        );
        let blank =
            Config::try_parse_from(["volley-operator", "--allowed-targets", " , "]).unwrap();
        assert!(blank.runner_defaults().allowed_targets.is_empty());
        // A bad entry refuses to start, naming the entry and what is wrong.
        let err = Config::try_parse_from([
            "volley-operator",
            "--allowed-targets",
            "ok.example.com,http://api.example.com",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--allowed-targets"), "{err}");
        assert!(err.contains("`http://api.example.com`"), "{err}");
        assert!(err.contains("not a URL"), "{err}");
    }

    #[test]
    fn the_charts_allow_list_example_is_valid() {
        // The example in the comment above the chart's `allowedTargets` value.
        let values = include_str!("../../charts/volley/values.yaml");
        let example = values
            .lines()
            .take_while(|l| !l.starts_with("allowedTargets:"))
            .filter_map(|l| l.split_once("(e.g. "))
            .last()
            .and_then(|(_, rest)| rest.split_once(')'))
            .expect("the values name an example")
            .0;
        let hosts: Vec<String> = serde_json::from_str(example).unwrap();
        let cfg =
            Config::try_parse_from(["volley-operator", "--allowed-targets", &hosts.join(",")])
                .unwrap();
        assert!(!cfg.runner_defaults().allowed_targets.is_empty());
    }

    #[test]
    fn allowed_targets_come_from_the_environment_the_chart_sets() {
        // Exactly the name the Helm chart sets (charts/volley/templates/deployment.yaml) and
        // the runners read.
        let command = <Config as clap::CommandFactory>::command();
        let env = command
            .get_arguments()
            .find(|a| a.get_id() == "allowed_targets")
            .and_then(|a| a.get_env());
        assert_eq!(
            env,
            Some(std::ffi::OsStr::new(
                volley_core::target_policy::ALLOWED_TARGETS_ENV
            ))
        );
    }
}
