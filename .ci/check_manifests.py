#!/usr/bin/env python3
"""Checks rendered Kubernetes YAML for what a real API server requires and a mock would not.

Usage: check_manifests.py FILE...

- every object has apiVersion, kind and metadata.name (a DNS-1123 name of the right length),
  and a known apiVersion for its kind;
- every container has a non-empty image with a tag, and named ports referenced by probes exist;
- RBAC rules use only valid verbs, and the operator's (Cluster)Role grants exactly the rules of
  the chart's default rendering, deploy/volley-operator.yaml (which a cargo test holds to
  operator/src/rbac.rs, the rules the operator's code needs), whatever the values; the
  webhook's ClusterRole (`*-webhook`) grants those of deploy/volley-operator-webhook.yaml, less
  the webhook configuration's when cert-manager injects the CA;
- every VOLLEY_* / POD_* environment variable set on the operator is one the operator reads
  (a misspelt variable would be silently ignored; for `allowedTargets` that would be a hole).
"""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
API_VERSIONS = {
    "ServiceAccount": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Namespace": "v1",
    "Deployment": "apps/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "ValidatingWebhookConfiguration": "admissionregistration.k8s.io/v1",
    "Issuer": "cert-manager.io/v1",
    "Certificate": "cert-manager.io/v1",
}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "*"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_NAME_KINDS = {"Service", "Namespace"}


def rule_set(rules):
    return {
        (group, resource, verb)
        for r in rules
        for group in r.get("apiGroups", [])
        for resource in r.get("resources", [])
        for verb in r.get("verbs", [])
    }


def operator_rules():
    """(ClusterRole rules, own-namespace Role rules) of deploy/volley-operator.yaml."""
    text = (ROOT / "deploy" / "volley-operator.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    cluster = next(d for d in docs if d.get("kind") == "ClusterRole")
    own = next(d for d in docs if d.get("kind") == "Role")
    return rule_set(cluster["rules"]), rule_set(own["rules"])


def webhook_rules():
    """The webhook ClusterRole's rules of deploy/volley-operator-webhook.yaml."""
    text = (ROOT / "deploy" / "volley-operator-webhook.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    role = next(
        d for d in docs if d.get("kind") == "ClusterRole" and d["metadata"]["name"].endswith("-webhook")
    )
    return rule_set(role["rules"])


def operator_env_names():
    names = set()
    for path in (ROOT / "operator" / "src").rglob("*.rs"):
        names.update(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', path.read_text()))
    return names


def check(path, errors):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not docs:
        errors.append(f"{path}: no objects rendered")
    want_rules, want_own = operator_rules()
    want_webhook = webhook_rules()
    cert_manager = any(d.get("kind") == "Certificate" for d in docs)
    if cert_manager:
        want_webhook = {r for r in want_webhook if r[0] != "admissionregistration.k8s.io"}
    env_names = operator_env_names()
    for doc in docs:
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name")
        where = f"{path}: {kind}/{name}"
        if not kind or not doc.get("apiVersion") or not name:
            errors.append(f"{where}: apiVersion, kind and metadata.name are required")
            continue
        expected = API_VERSIONS.get(kind)
        if expected is None:
            errors.append(f"{where}: unexpected kind (add it to API_VERSIONS if intended)")
        elif doc["apiVersion"] != expected:
            errors.append(f"{where}: apiVersion {doc['apiVersion']}, expected {expected}")
        pattern = DNS_LABEL if kind in LABEL_NAME_KINDS else DNS_SUBDOMAIN
        if not pattern.match(name):
            errors.append(f"{where}: metadata.name is not a valid {kind} name")
        if kind in ("Role", "ClusterRole"):
            for rule in doc.get("rules", []):
                bad = set(rule.get("verbs", [])) - VERBS
                if bad:
                    errors.append(f"{where}: invalid verbs {sorted(bad)}")
            got = rule_set(doc.get("rules", []))
            if name.endswith("-leader"):
                want = want_own
            elif name.endswith("-webhook"):
                want = want_webhook
            else:
                want = want_rules
            if got != want:
                errors.append(
                    f"{where}: rules differ from deploy/volley-operator.yaml (operator/src/rbac.rs): "
                    f"missing {sorted(want - got)}, extra {sorted(got - want)}"
                )
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            if not doc.get("roleRef", {}).get("name") or not doc.get("subjects"):
                errors.append(f"{where}: roleRef and subjects are required")
        if kind == "Deployment":
            spec = doc["spec"]
            labels = spec["template"]["metadata"].get("labels", {})
            for k, v in spec["selector"]["matchLabels"].items():
                if labels.get(k) != v:
                    errors.append(f"{where}: selector {k}={v} does not match the pod labels")
            for c in spec["template"]["spec"]["containers"]:
                image = c.get("image", "")
                if not image or image.endswith(":") or ":" not in image.rsplit("/", 1)[-1]:
                    errors.append(f"{where}: container {c.get('name')} image {image!r} needs a tag")
                ports = {p.get("name") for p in c.get("ports", [])}
                for probe in ("livenessProbe", "readinessProbe"):
                    port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        errors.append(f"{where}: {probe} uses unknown port {port!r}")
                for env in c.get("env", []):
                    n = env.get("name", "")
                    if (n.startswith("VOLLEY_") or n.startswith("POD_")) and n not in env_names:
                        errors.append(f"{where}: the operator does not read env {n}")
        if kind == "Service":
            for p in doc["spec"].get("ports", []):
                if not isinstance(p.get("port"), int):
                    errors.append(f"{where}: port {p} must be a number")


def main():
    errors = []
    for path in sys.argv[1:]:
        check(path, errors)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
