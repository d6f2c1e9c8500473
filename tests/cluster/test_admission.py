"""Admission: the real API server accepts the samples and rejects bad input naming the field.

Each bad manifest is a valid sample with one mistake; the test asserts that the server refuses it
and that its message names the offending field path, so a user knows what to fix. Nothing is
created by a refused request (checked at the end).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "speculativedeployment-paper.yaml"
Manifest = dict[str, Any]


def _base() -> Manifest:
    doc: Manifest = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["name"] = "invalid-probe"
    return doc


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def mutate(doc: Manifest) -> None:
        node: Any = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is _DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


_DELETE = object()


def _dup_draft(doc: Manifest) -> None:
    doc["spec"]["drafts"].append(copy.deepcopy(doc["spec"]["drafts"][0]))


def _dup_class(doc: Manifest) -> None:
    doc["spec"]["deviceClasses"].append(copy.deepcopy(doc["spec"]["deviceClasses"][0]))


# (case id, mutation, field path the message must name)
INVALID: list[tuple[str, Callable[[Manifest], None], str]] = [
    ("k-min-above-max", _set("spec.speculativeLength", {"min": 8, "max": 3}), "spec.speculativeLength.min"),
    ("k-zero", _set("spec.speculativeLength.min", 0), "spec.speculativeLength.min"),
    ("k-too-large", _set("spec.speculativeLength.max", 100), "spec.speculativeLength.max"),
    ("price-zero", _set("spec.target.priceUsdPerMillionTokens", 0), "spec.target.priceUsdPerMillionTokens"),
    (
        "price-negative",
        _set("spec.target.priceUsdPerMillionTokens", -1.5),
        "spec.target.priceUsdPerMillionTokens",
    ),
    ("empty-selector", _set("spec.deviceClasses.0.nodeSelector", {}), "spec.deviceClasses[0].nodeSelector"),
    ("no-device-classes", _set("spec.deviceClasses", []), "spec.deviceClasses"),
    ("no-drafts", _set("spec.drafts", []), "spec.drafts"),
    ("duplicate-draft-name", _dup_draft, "spec.drafts[3]"),
    ("duplicate-class-name", _dup_class, "spec.deviceClasses[3]"),
    ("bad-class-name", _set("spec.deviceClasses.0.name", "Raspberry Pi!"), "spec.deviceClasses[0].name"),
    ("unknown-objective", _set("spec.objective.kind", "latency"), "spec.objective.kind"),
    ("weighted-without-weights", _set("spec.objective", {"kind": "weighted"}), "spec.objective"),
    (
        "bad-model-source",
        _set("spec.drafts.0.quantizations.0.source.uri", "s3://bucket/x"),
        "spec.drafts[0].quantizations[0].source.uri",
    ),
    ("vllm-without-model", _set("spec.target.vllmModel", _DELETE), "spec.target.vllmModel"),
    ("bad-max-age", _set("spec.profiling.maxAge", "one week"), "spec.profiling.maxAge"),
    ("replicas-zero", _set("spec.verifier.replicas", 0), "spec.verifier.replicas"),
    ("min-gain-above-one", _set("spec.adaptation", {"minGain": 2.0}), "spec.adaptation.minGain"),
    ("missing-target", _set("spec.target", _DELETE), "spec.target"),
]


@pytest.fixture(scope="module")
def crds(cluster: Any) -> Any:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return cluster


@pytest.mark.parametrize("sample", sorted((ROOT / "samples").glob("*.yaml")), ids=lambda p: p.name)
def test_samples_are_accepted(crds: Any, sample: Path) -> None:
    result = crds.kubectl("apply", "--dry-run=server", "-f", str(sample))
    assert "created (server dry run)" in result.stdout or "configured (server dry run)" in result.stdout


def test_profile_samples_are_accepted(crds: Any) -> None:
    profiles = ROOT / "samples" / "profiles" / "paper-illustrative.yaml"
    result = crds.kubectl("apply", "--dry-run=server", "-f", str(profiles))
    assert result.stdout.count("created (server dry run)") == len(
        list(yaml.safe_load_all(profiles.read_text()))
    )


@pytest.mark.parametrize(("case", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(
    crds: Any, case: str, mutate: Callable[[Manifest], None], field: str
) -> None:
    doc = _base()
    mutate(doc)
    result = crds.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert result.returncode != 0, f"{case}: the API server accepted an invalid manifest"
    assert (
        "Invalid value" in result.stderr
        or "Required value" in result.stderr
        or "Unsupported value" in result.stderr
        or "Duplicate value" in result.stderr
        or "Invalid" in result.stderr
    ), result.stderr
    assert field in result.stderr, f"{case}: message does not name {field}: {result.stderr}"
    # A refused request stores nothing.
    got = crds.kubectl("get", "specdeploy", "invalid-probe", "-n", "default", check=False)
    assert got.returncode != 0
