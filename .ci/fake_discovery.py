#!/usr/bin/env python3
"""A stand-in for an API server's discovery endpoints, so `kubectl apply --dry-run=client`
can map rendered objects to resources without a cluster. It knows only the kinds Volley's
manifests use; an object of any other kind fails the dry run ("no matches for kind").

Usage: fake_discovery.py PORTFILE  (listens on 127.0.0.1:0, writes the port to PORTFILE)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# group/version -> [(resource, kind, namespaced)]
RESOURCES = {
    "v1": [
        ("namespaces", "Namespace", False),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("pods", "Pod", True),
        ("events", "Event", True),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
    ],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "apiextensions.k8s.io/v1": [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
    "admissionregistration.k8s.io/v1": [
        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False)
    ],
    "cert-manager.io/v1": [("issuers", "Issuer", True), ("certificates", "Certificate", True)],
    "volley.dev/v1alpha1": [("loadtests", "LoadTest", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resource_list(gv):
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": [
            {"name": r, "singularName": "", "namespaced": ns, "kind": k, "verbs": VERBS}
            for r, k, ns in RESOURCES[gv]
        ],
    }


def group_list():
    groups = {}
    for gv in RESOURCES:
        if "/" in gv:
            g, v = gv.split("/")
            groups.setdefault(g, []).append(v)
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in groups.items()
        ],
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0].rstrip("/")
        body = None
        if path == "/api":
            body = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        elif path == "/apis":
            body = group_list()
        elif path == "/api/v1":
            body = resource_list("v1")
        elif path.startswith("/apis/") and path[len("/apis/"):] in RESOURCES:
            body = resource_list(path[len("/apis/"):])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
