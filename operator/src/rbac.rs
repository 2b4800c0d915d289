//! The operator's RBAC: exactly the permissions it uses, as objects. The Helm chart
//! (`charts/volley/templates/rbac.yaml`) is what installs them: a test fails when the chart's
//! rendering (`deploy/volley-operator.yaml`, see `.ci/render-manifests.sh`) grants other rules
//! or binds them differently, and `.ci/check-chart.sh` checks every other rendering grants the
//! same rules.
//!
//! Two roles, so that what only concerns the operator itself stays in its own namespace:
//!
//! The ClusterRole (or, in namespaced mode, a Role in the watched namespace), for LoadTests
//! wherever they live:
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | `volley.dev` | `loadtests` | get, list, watch, create, delete | the controller's watch; a schedule's runs (created on schedule, deleted beyond the history limits or replaced; listed for a scheduled run's baseline) |
//! | `volley.dev` | `loadtests/status` | patch | status writes (JSON merge patch) |
//! | `volley.dev` | `loadtests/finalizers` | update | ownerReferences with `blockOwnerDeletion` (required where the OwnerReferencesPermissionEnforcement admission plugin runs) |
//! | `volley.dev` | `loadtestschedules` | get, list, watch | the schedule controller's watch |
//! | `volley.dev` | `loadtestschedules/status` | patch | schedule status writes |
//! | `volley.dev` | `loadtestschedules/finalizers` | update | the runs' ownerReferences with `blockOwnerDeletion` |
//! | core | `pods` | list, watch, create, delete | runner pods |
//! | core | `secrets` | get, create, delete | the per-run token Secret (read back by name after a restart) |
//! | core | `configmaps` | get, create, update, delete | the report ConfigMap of each run (created, or replaced when it is the run's own: read first to check its owner); deleted when its run leaves `status.history` |
//! | `events.k8s.io` | `events` | create, patch | events (kube's recorder patches repeated ones) |
//!
//! The Role in the operator's own namespace ([`LEADER_ROLE`]):
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | `coordination.k8s.io` | `leases` | get, create, update | leader election |
//! | core | `pods` | patch | the leader label on the operator's own pod |
//!
//! With the admission webhook (the chart's `webhook.enabled`), a third ClusterRole
//! ([`webhook_rules`], cluster-wide in every mode: both resources are cluster-scoped):
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | `authorization.k8s.io` | `subjectaccessreviews` | create | may the LoadTest's author read the Secrets it names |
//! | `admissionregistration.k8s.io` | `validatingwebhookconfigurations` (its one name) | get, patch | the generated CA into `caBundle` (not with cert-manager) |

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{APP_NAME_LABEL, MANAGED_BY_LABEL};

/// Name of the ClusterRole, its binding and the operator's ServiceAccount.
pub const NAME: &str = "volley-operator";
/// Name of the Role (and its binding) in the operator's own namespace.
pub const LEADER_ROLE: &str = "volley-operator-leader";
/// Namespace the operator runs in by default.
pub const DEFAULT_NAMESPACE: &str = "volley-system";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// The rules of the operator's ClusterRole: what it needs for LoadTests in any namespace.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "volley.dev",
            &["loadtests"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule("volley.dev", &["loadtests/status"], &["patch"]),
        rule("volley.dev", &["loadtests/finalizers"], &["update"]),
        rule(
            "volley.dev",
            &["loadtestschedules"],
            &["get", "list", "watch"],
        ),
        rule("volley.dev", &["loadtestschedules/status"], &["patch"]),
        rule("volley.dev", &["loadtestschedules/finalizers"], &["update"]),
        rule("", &["pods"], &["list", "watch", "create", "delete"]),
        rule("", &["secrets"], &["get", "create", "delete"]),
        rule("", &["configmaps"], &["get", "create", "update", "delete"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// The rules of the Role in the operator's own namespace: its Lease and its own pod's label.
pub fn leader_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        ),
        rule("", &["pods"], &["patch"]),
    ]
}

/// The rules of the webhook's ClusterRole: `SubjectAccessReview`s, and, when the operator
/// generates its certificate, reading and patching the ValidatingWebhookConfiguration named
/// `configuration` (and no other).
pub fn webhook_rules(configuration: Option<&str>) -> Vec<PolicyRule> {
    let mut rules = vec![rule(
        "authorization.k8s.io",
        &["subjectaccessreviews"],
        &["create"],
    )];
    if let Some(name) = configuration {
        rules.push(PolicyRule {
            resource_names: Some(vec![name.to_string()]),
            ..rule(
                "admissionregistration.k8s.io",
                &["validatingwebhookconfigurations"],
                &["get", "patch"],
            )
        });
    }
    rules
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([
            (APP_NAME_LABEL.to_string(), NAME.to_string()),
            (MANAGED_BY_LABEL.to_string(), "volley".to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The operator's ClusterRole.
pub fn cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(NAME, None),
        rules: Some(rules()),
        aggregation_rule: None,
    }
}

/// The ServiceAccount the operator runs as, in `namespace`.
pub fn service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(NAME, Some(namespace)),
        ..ServiceAccount::default()
    }
}

/// Binds the ClusterRole to the ServiceAccount in `namespace`.
pub fn cluster_role_binding(namespace: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(NAME, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: NAME.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: NAME.to_string(),
            namespace: Some(namespace.to_string()),
            api_group: None,
        }]),
    }
}

/// The Role in the operator's own `namespace`.
pub fn leader_role(namespace: &str) -> Role {
    Role {
        metadata: meta(LEADER_ROLE, Some(namespace)),
        rules: Some(leader_rules()),
    }
}

/// Binds the leader Role to the ServiceAccount, both in `namespace`.
pub fn leader_role_binding(namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(LEADER_ROLE, Some(namespace)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name: LEADER_ROLE.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: NAME.to_string(),
            namespace: Some(namespace.to_string()),
            api_group: None,
        }]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_rules() {
        let json = serde_json::to_value(rules()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"apiGroups": ["volley.dev"], "resources": ["loadtests"], "verbs": ["get", "list", "watch", "create", "delete"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtests/status"], "verbs": ["patch"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtests/finalizers"], "verbs": ["update"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtestschedules"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtestschedules/status"], "verbs": ["patch"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtestschedules/finalizers"], "verbs": ["update"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "delete"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "delete"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update", "delete"]},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ])
        );
        let json = serde_json::to_value(leader_rules()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]},
            ])
        );
    }

    #[test]
    fn the_leader_role_stays_in_the_operators_namespace() {
        let json = serde_json::to_value(leader_role_binding("ops")).unwrap();
        assert_eq!(json["metadata"]["namespace"], "ops");
        assert_eq!(
            json["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "volley-operator-leader"})
        );
        assert_eq!(
            json["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "volley-operator", "namespace": "ops"}])
        );
    }

    #[test]
    fn the_binding_names_the_role_and_the_service_account() {
        let json = serde_json::to_value(cluster_role_binding("ops")).unwrap();
        assert_eq!(
            json["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "volley-operator"})
        );
        assert_eq!(
            json["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "volley-operator", "namespace": "ops"}])
        );
    }

    /// The chart's objects, as `.ci/render-manifests.sh` renders them with the default values.
    fn rendered_chart() -> Vec<serde_json::Value> {
        rendered("volley-operator.yaml")
    }

    /// The objects of `deploy/{file}`.
    fn rendered(file: &str) -> Vec<serde_json::Value> {
        let path = format!("{}/../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        serde_norway::Deserializer::from_str(&text)
            .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    #[test]
    fn the_chart_grants_and_binds_exactly_these_rules() {
        let docs = rendered_chart();
        let find = |kind: &str, name: &str| {
            let found: Vec<&serde_json::Value> = docs
                .iter()
                .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .collect();
            assert_eq!(found.len(), 1, "one {kind} {name} in the chart");
            found[0].clone()
        };
        let expected = [
            serde_json::to_value(service_account(DEFAULT_NAMESPACE)).unwrap(),
            serde_json::to_value(cluster_role()).unwrap(),
            serde_json::to_value(cluster_role_binding(DEFAULT_NAMESPACE)).unwrap(),
            serde_json::to_value(leader_role(DEFAULT_NAMESPACE)).unwrap(),
            serde_json::to_value(leader_role_binding(DEFAULT_NAMESPACE)).unwrap(),
        ];
        let kinds = [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ];
        for (kind, want) in kinds.iter().zip(&expected) {
            let name = want["metadata"]["name"].as_str().unwrap();
            let got = find(kind, name);
            // The chart's labels are Helm's; everything that grants or binds must be the same.
            assert_eq!(
                got["metadata"]["namespace"], want["metadata"]["namespace"],
                "{kind} {name}"
            );
            for field in ["rules", "roleRef", "subjects"] {
                assert_eq!(got[field], want[field], "{kind} {name}: {field}");
            }
        }
        assert_eq!(
            find("ClusterRole", NAME)["rules"],
            serde_json::to_value(rules()).unwrap()
        );
        assert_eq!(
            find("Role", LEADER_ROLE)["rules"],
            serde_json::to_value(leader_rules()).unwrap()
        );
    }

    #[test]
    fn the_webhook_rules_are_granted_only_with_the_webhook() {
        let name = format!("{NAME}-webhook");
        let with_name = |docs: &[serde_json::Value], kind: &str| -> Vec<serde_json::Value> {
            docs.iter()
                .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name.as_str())
                .cloned()
                .collect()
        };
        let plain = rendered_chart();
        assert!(with_name(&plain, "ClusterRole").is_empty());
        let docs = rendered("volley-operator-webhook.yaml");
        let role = with_name(&docs, "ClusterRole");
        assert_eq!(role.len(), 1);
        assert_eq!(
            role[0]["rules"],
            serde_json::to_value(webhook_rules(Some(NAME))).unwrap()
        );
        assert_eq!(
            role[0]["rules"],
            serde_json::json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
                {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
                 "resourceNames": ["volley-operator"], "verbs": ["get", "patch"]},
            ])
        );
        let binding = with_name(&docs, "ClusterRoleBinding");
        assert_eq!(binding.len(), 1);
        assert_eq!(binding[0]["roleRef"]["name"], name.as_str());
        assert_eq!(
            binding[0]["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": NAME, "namespace": DEFAULT_NAMESPACE}])
        );
        // The rest grants exactly what the plain rendering grants.
        for (kind, n) in [("ClusterRole", NAME), ("Role", LEADER_ROLE)] {
            let pick = |docs: &[serde_json::Value]| {
                docs.iter()
                    .find(|d| d["kind"] == kind && d["metadata"]["name"] == n)
                    .unwrap()["rules"]
                    .clone()
            };
            assert_eq!(pick(&docs), pick(&plain), "{kind} {n}");
        }
    }
}
