#!/usr/bin/env python3
"""Validates LoadTest and LoadTestSchedule manifests against the generated CRDs' schemas, as the
API server would.

`kubectl apply` of a LoadTest is checked by the API server against the CRD's openAPIV3Schema,
not by Volley's own parser: a manifest Volley accepts but the schema refuses (a type, a
pattern, an enum, a field the schema lacks) fails only in a cluster. This runs every example
and every valid corpus manifest through the schema with the API server's rules:

- unknown fields are refused (kubectl's default field validation is Strict since 1.27), except
  under `x-kubernetes-preserve-unknown-fields`;
- `nullable: true` admits null; `x-kubernetes-int-or-string` admits an integer or a string;
- type, enum, pattern, minimum/maximum, required, items and the formats int32/int64 (ranges)
  as in JSON Schema.

It also checks that it can fail: a manifest with a misspelled field and one with a wrong type
must be refused (and, when a LoadTestSchedule was checked, one with a misspelled field in its
template).

And every status field the given files tell users to read (`status.x.y`, `.status.x[0].y`, as
in a `kubectl -o jsonpath`) must exist in a CRD's status schema: a misspelled path in the docs
prints nothing in a cluster, silently.

Usage: check_crd_schema.py CRD.yaml[,CRD.yaml...] FILE...  (YAML files, or Markdown whose
```yaml blocks are read)
"""

import copy
import re
import sys

import jsonschema
import yaml

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def to_json_schema(node):
    """The structural schema `node` as JSON Schema with the API server's semantics."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: to_json_schema(v) for name, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [to_json_schema(v) for v in value]
        elif key == "not":
            out[key] = to_json_schema(value)
        elif key in ("nullable", "x-kubernetes-preserve-unknown-fields",
                     "x-kubernetes-int-or-string", "format", "default"):
            continue
        elif key.startswith("x-kubernetes-") or key in ("description", "example"):
            continue
        else:
            out[key] = value
    fmt = node.get("format")
    if node.get("type") == "integer" and fmt in INT_RANGES:
        low, high = INT_RANGES[fmt]
        out["minimum"] = max(out.get("minimum", low), low)
        out["maximum"] = min(out.get("maximum", high), high)
    if (node.get("type") == "object" and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"allOf": [out, {"anyOf": [{"type": "integer"}, {"type": "string"}]}]}
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def load_schema(crd):
    schemas = {}
    for version in crd["spec"]["versions"]:
        raw = version["schema"]["openAPIV3Schema"]
        schema = to_json_schema(raw)
        # The API server adds apiVersion, kind and metadata to every root schema and
        # validates metadata itself.
        implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}}
        for name, node in implicit.items():
            schema.setdefault("properties", {}).setdefault(name, node)
        schemas[f'{crd["spec"]["group"]}/{version["name"]}'] = schema
    return schemas


STATUS_PATH = re.compile(r"\bstatus((?:\.[A-Za-z][A-Za-z0-9]*(?:\[[^\]]*\])?)+)")


def status_path_problem(status, path):
    """Why `path` (`.a.b[0].c`) is not a field of the status schema, or None."""
    node = status
    for name, index in re.findall(r"\.([A-Za-z][A-Za-z0-9]*)(\[[^\]]*\])?", path):
        props = node.get("properties", {})
        if name in props:
            node = props[name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return f"`{name}` is not a field here (fields: {', '.join(sorted(props)) or 'none'})"
        if index:
            if node.get("type") == "array":
                node = node.get("items", {})
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return f"`{name}` is neither a list nor a map"
    return None


def problems(schema, doc):
    validator = jsonschema.Draft7Validator(schema)
    return [
        f'{"/".join(str(p) for p in e.absolute_path) or "(root)"}: {e.message[:300]}'
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    crds = []
    for crd_path in argv[1].split(","):
        with open(crd_path, encoding="utf-8") as f:
            crds.append(yaml.safe_load(f))
    # kind -> apiVersion -> schema
    schemas = {crd["spec"]["names"]["kind"]: load_schema(crd) for crd in crds}
    statuses = [version["schema"]["openAPIV3Schema"]["properties"]["status"]
                for crd in crds for version in crd["spec"]["versions"]]
    failed = False
    checked = 0
    paths = set()
    first = {}
    for path in argv[2:]:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
        for match in STATUS_PATH.finditer(text):
            paths.add(match.group(1))
            # A path is fine when some CRD's status has it (LoadTest or LoadTestSchedule).
            whys = [status_path_problem(status, match.group(1)) for status in statuses]
            if all(whys):
                # The CRD whose status has the path's first field says best what is wrong.
                first_field = re.match(r"\.([A-Za-z0-9]+)", match.group(1)).group(1)
                why = next((w for w, st in zip(whys, statuses)
                            if first_field in st.get("properties", {})), whys[0])
                print(f"{path}: status{match.group(1)}: {why}", file=sys.stderr)
                failed = True
        if path.endswith(".txt"):
            continue
        if path.endswith(".md"):
            blocks = re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M)
            docs = [d for b in blocks if "kind: LoadTest" in b for d in yaml.safe_load_all(b)]
        else:
            docs = list(yaml.safe_load_all(text))
        docs = [d for d in docs if d]
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") not in schemas:
                continue
            kind = doc["kind"]
            schema = schemas[kind].get(doc.get("apiVersion"))
            if schema is None:
                print(f"{path}: no CRD version serves {doc.get('apiVersion')}", file=sys.stderr)
                failed = True
                continue
            found = problems(schema, doc)
            for p in found:
                print(f"{path}: {p}", file=sys.stderr)
            failed |= bool(found)
            checked += 1
            first.setdefault(kind, (schema, doc))
    if "LoadTest" not in first:
        print("no LoadTest manifests were given", file=sys.stderr)
        return 1

    # The check must be able to fail.
    schema, doc = first["LoadTest"]
    typo = copy.deepcopy(doc)
    typo["spec"]["scenarios"][0]["maxVus"] = 10
    wrong_type = copy.deepcopy(doc)
    wrong_type["spec"]["runners"] = {"parallelism": "two"}
    bad_docs = [(schema, "an unknown field", typo), (schema, "a wrong type", wrong_type)]
    if "LoadTestSchedule" in first:
        schema, doc = first["LoadTestSchedule"]
        template_typo = copy.deepcopy(doc)
        template_typo["spec"]["template"]["spec"]["scenarios"][0]["maxVus"] = 10
        bad_docs.append((schema, "an unknown field in a schedule's template", template_typo))
    for schema, name, bad in bad_docs:
        if not problems(schema, bad):
            print(f"the schema check accepted {name}; it cannot be trusted", file=sys.stderr)
            failed = True

    if failed:
        return 1
    if any(status_path_problem(status, ".reportRef.name") is None for status in statuses):
        print("the status path check accepted reportRef.name; it cannot be trusted", file=sys.stderr)
        return 1
    print(f"CRD schema: {checked} manifests ({', '.join(sorted(first))}) accepted (unknown "
          f"fields refused); {len(paths)} status paths in the docs exist")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
