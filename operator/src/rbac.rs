//! The operator's RBAC: exactly the permissions it uses, as objects and as the committed
//! `operator/rbac.yaml` (a test fails when the file and this module differ; regenerate with
//! `VOLLEY_UPDATE_RBAC=1 cargo test -p volley-operator rbac`).
//!
//! Two roles, so that what only concerns the operator itself stays in its own namespace:
//!
//! The ClusterRole (or, in namespaced mode, a Role in the watched namespace), for LoadTests
//! wherever they live:
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | `volley.dev` | `loadtests` | get, list, watch | the controller's watch |
//! | `volley.dev` | `loadtests/status` | patch | status writes (JSON merge patch) |
//! | `volley.dev` | `loadtests/finalizers` | update | ownerReferences with `blockOwnerDeletion` (required where the OwnerReferencesPermissionEnforcement admission plugin runs) |
//! | core | `pods` | list, watch, create, delete | runner pods |
//! | core | `secrets` | get, create, delete | the per-run token Secret (read back by name after a restart) |
//! | core | `configmaps` | get, create, update | the report ConfigMap (created, or replaced when it is the run's own: read first to check its owner) |
//! | `events.k8s.io` | `events` | create, patch | events (kube's recorder patches repeated ones) |
//!
//! The Role in the operator's own namespace ([`LEADER_ROLE`]):
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | `coordination.k8s.io` | `leases` | get, create, update | leader election |
//! | core | `pods` | patch | the leader label on the operator's own pod |

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
/// The committed RBAC manifest, relative to the `operator/` directory.
pub const RBAC_FILE: &str = "rbac.yaml";

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
        rule("volley.dev", &["loadtests"], &["get", "list", "watch"]),
        rule("volley.dev", &["loadtests/status"], &["patch"]),
        rule("volley.dev", &["loadtests/finalizers"], &["update"]),
        rule("", &["pods"], &["list", "watch", "create", "delete"]),
        rule("", &["secrets"], &["get", "create", "delete"]),
        rule("", &["configmaps"], &["get", "create", "update"]),
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

/// ServiceAccount, ClusterRole, ClusterRoleBinding, Role and RoleBinding as one multi-document
/// YAML.
pub fn rbac_yaml(namespace: &str) -> Result<String, serde_norway::Error> {
    let mut out = String::from(
        "# Generated by volley-operator's rbac module. Do not edit; regenerate with\n\
         # `VOLLEY_UPDATE_RBAC=1 cargo test -p volley-operator rbac`.\n",
    );
    let docs = [
        serde_json::to_value(service_account(namespace)),
        serde_json::to_value(cluster_role()),
        serde_json::to_value(cluster_role_binding(namespace)),
        serde_json::to_value(leader_role(namespace)),
        serde_json::to_value(leader_role_binding(namespace)),
    ];
    for doc in docs {
        let doc = doc.map_err(<serde_norway::Error as serde::ser::Error>::custom)?;
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&doc)?);
    }
    Ok(out)
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
                {"apiGroups": ["volley.dev"], "resources": ["loadtests"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtests/status"], "verbs": ["patch"]},
                {"apiGroups": ["volley.dev"], "resources": ["loadtests/finalizers"], "verbs": ["update"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "delete"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "delete"]},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
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

    #[test]
    fn committed_rbac_matches() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RBAC_FILE);
        let generated = rbac_yaml(DEFAULT_NAMESPACE).unwrap();
        if std::env::var_os("VOLLEY_UPDATE_RBAC").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale: regenerate it with `VOLLEY_UPDATE_RBAC=1 cargo test -p volley-operator rbac`",
            path.display()
        );
        let docs: Vec<serde_json::Value> = committed
            .split("\n---\n")
            .skip(1)
            .map(|d| serde_norway::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
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
        assert_eq!(docs[1]["rules"], serde_json::to_value(rules()).unwrap());
        assert_eq!(
            docs[3]["rules"],
            serde_json::to_value(leader_rules()).unwrap()
        );
    }
}
