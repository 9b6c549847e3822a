#!/usr/bin/env python3
"""Turns a CustomResourceDefinition into JSON Schemas for check_manifests.py.

    python3 tests/deploy/schemas/from_crd.py CRD.yaml \
        --source "kedacore/keda@<commit>:config/crd/bases/keda.sh_scaledobjects.yaml"

For every served version of the CRD it writes
``<kind>_<group>_<version>.json`` (lower case) next to this script (or into
``--out-dir``): the version's ``schema.openAPIV3Schema``, converted to JSON
Schema draft 2020-12, which is what the API server would accept.

Conversion rules (Kubernetes' structural-schema extensions in JSON Schema
terms):

* An object with ``properties``, no ``additionalProperties`` and no
  ``x-kubernetes-preserve-unknown-fields: true`` gets
  ``additionalProperties: false``. The API server prunes such unknown fields
  silently, or rejects them under kubectl's default ``--validate=strict``;
  here a typo'd field is an error either way.
* An object with ``x-kubernetes-preserve-unknown-fields: true``, or with
  neither ``properties`` nor ``additionalProperties``, stays open.
* ``x-kubernetes-embedded-resource: true`` also admits ``apiVersion``,
  ``kind`` and ``metadata``, as the API server does.
* ``x-kubernetes-int-or-string: true`` becomes ``anyOf: [integer, string]``.
* ``nullable: true`` adds ``null`` to the allowed types.
* Every other ``x-kubernetes-*`` key (CEL ``validations``, ``list-type``,
  ``list-map-keys``, ...) is dropped: JSON Schema cannot evaluate them.
  check_manifests.py checks the CEL rule that matters to it (a
  ScaledObject's min <= max replicas) itself.
* ``description`` is dropped to keep the files small; ``format`` stays (an
  annotation in draft 2020-12).
* At the top, ``apiVersion`` and ``kind`` become constants and ``metadata``
  must have a string ``name`` and string-valued ``labels``/``annotations``.

Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DRAFT = "https://json-schema.org/draft/2020-12/schema"

#: What ``metadata`` of a custom resource must look like (the rest of
#: ObjectMeta is left open).
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

#: Structural-schema keys with a JSON Schema meaning handled by `convert`.
HANDLED_EXTENSIONS = {
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
}


def convert(node: Any) -> Any:
    """Converts one OpenAPI v3 schema node (recursively) to JSON Schema."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" or key == "nullable":
            continue
        if key.startswith("x-kubernetes-"):
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = convert(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(sub) for sub in value]
        else:
            out[key] = value

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if "anyOf" not in out:
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    if node.get("x-kubernetes-embedded-resource") and "properties" in out:
        out["properties"].setdefault("apiVersion", {"type": "string"})
        out["properties"].setdefault("kind", {"type": "string"})
        out["properties"].setdefault("metadata", {"type": "object"})

    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False

    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"]
    return out


def unhandled_extensions(node: Any, path: str = "") -> set[str]:
    """The x-kubernetes-* keys of a schema that `convert` drops."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("x-kubernetes-") and key not in HANDLED_EXTENSIONS:
                found.add(key)
            found |= unhandled_extensions(value, f"{path}/{key}")
    elif isinstance(node, list):
        for item in node:
            found |= unhandled_extensions(item, path)
    return found


def schemas_of(crd: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The JSON Schema of each served version of `crd`, by output file name."""
    if crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not a CustomResourceDefinition: kind {crd.get('kind')!r}")
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    result = {}
    for version in spec["versions"]:
        if not version.get("served"):
            continue
        api_version = f"{group}/{version['name']}"
        schema = convert(version["schema"]["openAPIV3Schema"])
        schema.setdefault("properties", {})
        schema["properties"]["apiVersion"] = {"const": api_version}
        schema["properties"]["kind"] = {"const": kind}
        schema["properties"]["metadata"] = OBJECT_META
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        dropped = sorted(unhandled_extensions(version["schema"]["openAPIV3Schema"]))
        document = {
            "$schema": DRAFT,
            "$comment": (
                f"Generated by tests/deploy/schemas/from_crd.py from {source} "
                f"(CRD {crd['metadata']['name']}, version {version['name']}); do not edit. "
                f"Not checked here: {', '.join(dropped) or 'nothing'}."
            ),
            "title": f"{kind} {api_version}",
            **schema,
        }
        name = f"{kind.lower()}_{group}_{version['name']}.json"
        result[name] = document
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path, help="the CRD YAML file")
    parser.add_argument("--source", required=True, help="repo@commit:path the CRD came from")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    documents = [d for d in yaml.safe_load_all(args.crd.read_text()) if d]
    if len(documents) != 1:
        parser.error(f"{args.crd}: expected one CRD, found {len(documents)} documents")
    for name, schema in schemas_of(documents[0], args.source).items():
        target = args.out_dir / name
        target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
