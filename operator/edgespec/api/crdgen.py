"""Generate the CustomResourceDefinitions from the pydantic API types.

Pydantic's JSON schema is close to, but not, a Kubernetes structural schema. This module fixes the
differences: ``$ref``s are inlined, ``anyOf [X, null]`` becomes ``nullable``, ``anyOf [integer,
string]`` becomes ``x-kubernetes-int-or-string``, titles go, ``const`` becomes a one-value enum, and
Kubernetes markers carried in ``json_schema_extra`` (CEL validations, list types) are kept where
they belong. Descriptions become what ``kubectl explain`` prints: one line of plain prose, so a
docstring's hard wraps are joined and its reStructuredText literals lose their backticks.
``python -m edgespec.api.crdgen`` writes ``crds/``; ``--check`` (run by ``make test``) diffs.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from edgespec.api.base import GROUP, VERSION
from edgespec.api.deployment import (
    SpeculativeDeployment,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
)
from edgespec.api.profile import EdgeProfile, EdgeProfileSpec

JsonSchema = dict[str, Any]

_DROP_KEYS = {"title", "examples"}
_RST_LITERAL = re.compile(r"``([^`]+)``")


def prose(text: str) -> str:
    """``text`` as one line of plain prose: wraps joined, ``literal`` markup reduced to its text."""
    return " ".join(_RST_LITERAL.sub(r"\1", text).split())


def _resolve(node: Any, defs: dict[str, JsonSchema]) -> Any:
    """Inline refs and rewrite pydantic idioms into structural-schema idioms, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # field-level description/default win over the referenced model's
        node = target
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        inner.update(node)
        node = inner
    if "anyOf" in node:
        options = node.pop("anyOf")
        non_null = [o for o in options if o.get("type") != "null"]
        kinds = sorted(o.get("type", "") for o in non_null)
        if len(non_null) < len(options):
            node["nullable"] = True
        if kinds == ["integer", "string"]:
            node["x-kubernetes-int-or-string"] = True
        elif len(non_null) == 1:
            merged = dict(non_null[0])
            merged.update(node)
            node = _resolve(merged, defs)
        else:
            raise ValueError(f"cannot express anyOf {options!r} in a structural schema")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]  # structural schemas prune unknown fields instead
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node.pop(bound)  # OpenAPI v3.0 spells exclusive bounds as a flag
            node[bound] = True
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _resolve(value, defs)
        elif key == "default" and value in ([], {}):
            continue  # an empty default adds noise to every object; absence means the same
        elif key == "description":
            out[key] = prose(value)
        else:
            out[key] = _resolve(value, defs) if isinstance(value, dict | list) and key != "enum" else value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("format") == "date-time":
        out["type"] = "string"
    return out


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The model's OpenAPI v3 structural schema, as the CRD's ``openAPIV3Schema`` expects it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    resolved: JsonSchema = _resolve(raw, defs)
    return resolved


# The descriptions every Kubernetes kind gives its envelope fields (as in the built-in types).
_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object; servers convert "
    "recognized schemas to the latest internal value."
)
_KIND_DOC = "Kind is a string value representing the REST resource this object represents, in CamelCase."


def _described(schema: JsonSchema, description: str) -> JsonSchema:
    """``schema`` with ``description`` (the field's) replacing the model docstring's."""
    return {"description": prose(description), **{k: v for k, v in schema.items() if k != "description"}}


def json_path(model: type[BaseModel], *fields: str) -> str:
    """The wire path (``.spec.verifier.replicas``) of the Python field path ``fields`` of ``model``.

    Walks the pydantic types, so a renamed or removed field fails here, not in the API server."""
    parts: list[str] = []
    current: Any = model
    for name in fields:
        field = current.model_fields[name]  # KeyError: no such field
        parts.append(field.alias or name)
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return "." + ".".join(parts)


def verifier_scale() -> dict[str, str]:
    """The scale subresource of SpeculativeDeployment: it scales the verifier (kubectl scale, HPAs)."""
    return {
        "specReplicasPath": json_path(SpeculativeDeployment, "spec", "verifier", "replicas"),
        "statusReplicasPath": json_path(SpeculativeDeployment, "status", "verifier", "replicas"),
        "labelSelectorPath": json_path(SpeculativeDeployment, "status", "verifier", "selector"),
    }


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    scope: str,
    description: str,
    spec_schema: JsonSchema,
    status_schema: JsonSchema | None,
    columns: list[dict[str, Any]],
    categories: list[str],
    scale: dict[str, str] | None = None,
) -> dict[str, Any]:
    properties: JsonSchema = {
        "apiVersion": {"description": _API_VERSION_DOC, "type": "string"},
        "kind": {"description": _KIND_DOC, "type": "string"},
        "metadata": {"type": "object"},  # the API server forbids anything else here, a description too
        "spec": spec_schema,
    }
    root = {
        "description": prose(description),
        "type": "object",
        "required": ["spec"],
        "properties": properties,
    }
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "additionalPrinterColumns": columns,
    }
    if status_schema is not None:
        properties["status"] = status_schema
        version["subresources"] = {"status": {}}
    if scale is not None:
        version["subresources"]["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": categories,
            },
            "versions": [version],
        },
    }


def _doc(model: type[BaseModel]) -> str:
    return model.__doc__ or ""


def build_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, for every kind of the API."""
    deployment = _crd(
        kind="SpeculativeDeployment",
        plural="speculativedeployments",
        short_names=["specdeploy", "sd"],
        scope="Namespaced",
        description=_doc(SpeculativeDeployment),
        spec_schema=_described(
            structural_schema(SpeculativeDeploymentSpec),
            "What the user asks for: target, drafts, classes, objective.",
        ),
        status_schema=_described(
            structural_schema(SpeculativeDeploymentStatus),
            "What the operator observed and chose; written by it.",
        ),
        categories=["edgespec"],
        scale=verifier_scale(),
        # kubectl get shows readiness and where the verifier listens; -o wide adds the choice per class
        columns=[
            {
                "name": "Ready",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                "description": "Status of the Ready condition",
            },
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
                "description": "Reason of the Ready condition",
            },
            {
                "name": "Phase",
                "type": "string",
                "jsonPath": ".status.phase",
                "description": "Lifecycle phase",
            },
            {
                "name": "Endpoint",
                "type": "string",
                "jsonPath": ".status.verifier.endpoint",
                "description": "URL of the verifier Service",
            },
            {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": "Time since creation",
            },
            {
                "name": "Objective",
                "type": "string",
                "jsonPath": ".spec.objective.kind",
                "description": "What the selection maximises",
                "priority": 1,
            },
            {
                "name": "Target",
                "type": "string",
                "jsonPath": ".spec.target.name",
                "description": "Target model",
                "priority": 1,
            },
            {
                "name": "K",
                "type": "string",
                "jsonPath": ".status.kSummary",
                "description": "Chosen K per class",
                "priority": 1,
            },
            {
                "name": "Nodes",
                "type": "string",
                "jsonPath": ".status.nodesSummary",
                "description": "Nodes per class",
                "priority": 1,
            },
        ],
    )
    profile = _crd(
        kind="EdgeProfile",
        plural="edgeprofiles",
        short_names=["edgeprof", "ep"],
        scope="Cluster",
        description=_doc(EdgeProfile),
        spec_schema=_described(structural_schema(EdgeProfileSpec), "What was measured, and for which key."),
        status_schema=None,
        categories=["edgespec"],
        columns=[
            {
                "name": "Class",
                "type": "string",
                "jsonPath": ".spec.deviceClass",
                "description": "Device class",
            },
            {"name": "Draft", "type": "string", "jsonPath": ".spec.draftModel", "description": "Draft model"},
            {
                "name": "Quant",
                "type": "string",
                "jsonPath": ".spec.quantization",
                "description": "Quantisation of the draft",
            },
            {
                "name": "Target",
                "type": "string",
                "jsonPath": ".spec.targetModel",
                "description": "Target model",
            },
            {
                "name": "Tok/s",
                "type": "number",
                "jsonPath": ".spec.draftTokensPerS",
                "description": "Drafting speed, tokens/s",
            },
            {
                "name": "Watts",
                "type": "number",
                "jsonPath": ".spec.powerWatts",
                "description": "Power while drafting, W",
            },
            {
                "name": "Measured",
                "type": "date",
                "jsonPath": ".spec.measuredAt",
                "description": "When measured",
            },
        ],
    )
    return {
        f"{GROUP}_speculativedeployments.yaml": deployment,
        f"{GROUP}_edgeprofiles.yaml": profile,
    }


HEADER = "# Generated by `python -m edgespec.api.crdgen` from operator/edgespec/api; do not edit.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) the CRDs generated from the API types.")
    parser.add_argument("--out", type=Path, default=Path("crds"), help="output directory (default: crds)")
    parser.add_argument("--check", action="store_true", help="fail if the files differ from the types")
    args = parser.parse_args(argv)
    stale = []
    for name, crd in build_crds().items():
        path = args.out / name
        text = render(crd)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale CRDs: {', '.join(stale)}; run: python -m edgespec.api.crdgen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
