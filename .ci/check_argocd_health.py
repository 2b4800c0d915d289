#!/usr/bin/env python3
"""Runs the Argo CD health check for LoadTest that docs/guide.md tells users to install.

Argo CD runs health checks in gopher-lua (Lua 5.1); this runs the documented script in Lua 5.1
(lupa) against a LoadTest in every phase the CRD declares, and without a status, and checks
the health Argo CD would show: Progressing while the test runs, Healthy when it Succeeded,
Degraded when it Failed, was Aborted or hit an Error, with the phase and the status message.
A phase added to the CRD without a decision here fails the check.

Usage: check_argocd_health.py CRD.yaml GUIDE.md
"""

import re
import sys

import yaml
from lupa import lua51

KEY = "resource.customizations.health.volley.dev_LoadTest"
EXPECTED = {
    "Pending": "Progressing",
    "Starting": "Progressing",
    "Running": "Progressing",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
    "Aborted": "Degraded",
    "Error": "Degraded",
}


def documented_script(guide_path):
    with open(guide_path, encoding="utf-8") as f:
        text = f.read()
    for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M):
        if KEY in block:
            return yaml.safe_load(block)["data"][KEY]
    raise SystemExit(f"{guide_path}: no ```yaml block with {KEY}")


def phases(crd_path):
    with open(crd_path, encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["status"]["properties"]["phase"]["enum"]


def health(script, obj):
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(script)
    return hs["status"], hs["message"]


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    script = documented_script(argv[2])
    failed = False
    declared = phases(argv[1])
    for phase in declared:
        want = EXPECTED.get(phase)
        if want is None:
            print(f"phase {phase} is new: decide its Argo CD health here and in the guide",
                  file=sys.stderr)
            failed = True
            continue
        obj = {"status": {"phase": phase, "message": "p(95) 612ms >= 500ms"}}
        status, message = health(script, obj)
        if (status, message) != (want, f"{phase}: p(95) 612ms >= 500ms"):
            print(f"{phase}: Argo CD would show {status} ({message}), want {want}",
                  file=sys.stderr)
            failed = True
        status, message = health(script, {"status": {"phase": phase}})
        if (status, message) != (want, phase):
            print(f"{phase} without a message: {status} ({message})", file=sys.stderr)
            failed = True
    for obj in ({}, {"status": {}}):
        status, _ = health(script, obj)
        if status != "Progressing":
            print(f"{obj}: {status}, want Progressing before the operator writes a phase",
                  file=sys.stderr)
            failed = True
    if failed:
        return 1
    print(f"Argo CD health check (Lua 5.1): {len(declared)} phases and a missing status map "
          "as documented")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
