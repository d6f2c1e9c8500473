"""What ``kubectl explain``, ``kubectl get`` and ``docs/api.md`` tell a user about the API.

Every field of every kind carries one line of plain prose (no hard wraps, no reStructuredText), the
API reference is the one the types generate, and ``kubectl get specdeploy`` shows readiness and the
verifier's URL (``-o wide``: the objective and K per class). The committed CRDs are read, since they
are what a cluster serves (``crdgen --check`` keeps them equal to the types).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.api import docgen
from edgespec.api.base import ApiModel
from edgespec.api.crdgen import build_crds, json_path, prose, structural_schema
from edgespec.api.deployment import SpeculativeDeployment
from pydantic import Field

REPO = Path(__file__).resolve().parents[2]
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))


def field_descriptions(schema: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    """(path, description or None) of every field below ``schema``, as kubectl explain walks them.

    The root's ``metadata`` is the API server's ObjectMeta, which it describes itself (a CRD may not
    say anything of it but its type).
    """
    for name, sub in schema.get("properties", {}).items():
        if path.count(".") == 0 and name == "metadata":
            assert sub == {"type": "object"}, "a CRD may specify nothing of metadata but its type"
            continue
        yield f"{path}.{name}", sub.get("description")
        yield from field_descriptions(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
        if isinstance(schema.get(key), dict):
            yield from field_descriptions(schema[key], path + suffix)


def explain_problems(schema: dict[str, Any], path: str) -> list[str]:
    """Fields whose description is missing, empty, more than one line, or carries markup."""
    problems = []
    for field, text in field_descriptions(schema, path):
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{field}: no description")
        elif "\n" in text or text != text.strip():
            problems.append(f"{field}: description is not one line: {text!r}")
        elif "`" in text or ":class:" in text or "**" in text:
            problems.append(f"{field}: description has markup: {text!r}")
    return problems


def test_the_committed_crds_are_found() -> None:
    assert {p.name for p in CRD_FILES} == {
        "edgespec.dev_speculativedeployments.yaml",
        "edgespec.dev_edgeprofiles.yaml",
    }


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=lambda p: p.name)
def test_every_field_is_explained_in_one_line_of_prose(crd_file: Path) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    kind = crd["spec"]["names"]["kind"]
    assert root.get("description"), f"{kind} itself has no description"
    fields = list(field_descriptions(root, kind))
    assert len(fields) > 20  # the walk reached nested and list fields, not just the envelope
    assert explain_problems(root, kind) == []


def test_the_check_catches_a_field_without_a_description() -> None:
    class Inner(ApiModel):
        """An object in a list."""

        bare: int = 0

    class Undocumented(ApiModel):
        """A model with one documented field, one without, and a list of objects without."""

        documented: int = Field(default=1, description="Has one.")
        bare: int = 0
        items: list[Inner] = Field(default_factory=list, description="Nested ones.")

    schema = structural_schema(Undocumented)
    assert explain_problems(schema, "x") == ["x.bare: no description", "x.items[].bare: no description"]
    multi = {"properties": {"a": {"description": "wrapped\nline"}, "b": {"description": "has ``code``"}}}
    assert [p.split(":")[0] for p in explain_problems(multi, "y")] == ["y.a", "y.b"]


def test_docstrings_become_one_line_of_prose() -> None:
    wrapped = """Limits every chosen configuration must respect; all optional.

    Memory: the profile's ``memoryBytes`` when present,
    else the model file size."""
    assert prose(wrapped) == (
        "Limits every chosen configuration must respect; all optional. Memory: the profile's "
        "memoryBytes when present, else the model file size."
    )


def test_the_api_reference_is_generated_from_the_types() -> None:
    committed = (REPO / "docs" / "api.md").read_text()
    assert committed == docgen.render(), "docs/api.md is stale: run python -m edgespec.api.docgen"


def test_the_api_reference_lists_every_field_with_its_description() -> None:
    text = docgen.render()
    for crd in build_crds().values():
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for top in ("spec", "status"):
            if top not in root["properties"]:
                continue
            for path, description in field_descriptions(root["properties"][top], top):
                row = next((line for line in text.splitlines() if line.startswith(f"| `{path}` |")), None)
                assert row is not None, f"{path} missing from docs/api.md"
                assert description.replace("|", "\\|") in row
    assert "`spec.speculativeLength.min`" in text and "`status.verifier.endpoint`" in text


def test_the_api_reference_check_fails_when_stale(tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    assert docgen.main(["--out", str(out), "--check"]) == 1  # missing
    assert docgen.main(["--out", str(out)]) == 0
    assert docgen.main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("Smallest K considered", "Smallest K"))
    assert docgen.main(["--out", str(out), "--check"]) == 1


def test_kubectl_get_shows_readiness_and_the_verifier_endpoint() -> None:
    crd = build_crds()["edgespec.dev_speculativedeployments.yaml"]
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    default = [name for name, c in columns.items() if c.get("priority", 0) == 0]
    wide = [name for name, c in columns.items() if c.get("priority", 0) > 0]
    assert {"Ready", "Reason", "Endpoint"} <= set(default)
    assert {"Objective", "K"} <= set(wide)
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Endpoint"]["jsonPath"] == ".status.verifier.endpoint"
    assert columns["K"]["jsonPath"] == ".status.kSummary"


def test_the_scale_subresource_scales_the_verifier_replicas_field() -> None:
    """kubectl scale and HPAs act on spec.verifier.replicas; paths come from the pydantic types."""
    crd = build_crds()["edgespec.dev_speculativedeployments.yaml"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.verifier.replicas",
        "statusReplicasPath": ".status.verifier.replicas",
        "labelSelectorPath": ".status.verifier.selector",
    }
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    replicas = schema["spec"]["properties"]["verifier"]["properties"]["replicas"]
    assert replicas["type"] == "integer" and (replicas["minimum"], replicas["maximum"]) == (1, 64)
    status = schema["status"]["properties"]["verifier"]["properties"]
    assert status["replicas"]["type"] == "integer" and status["selector"]["type"] == "string"
    assert json_path(SpeculativeDeployment, "status", "verifier", "ready_replicas") == (
        ".status.verifier.readyReplicas"  # the wire (camelCase) name
    )
    with pytest.raises(KeyError):
        json_path(SpeculativeDeployment, "spec", "verifier", "replica")


@pytest.mark.cluster
def test_kubectl_explain_shows_the_descriptions(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    cases = {
        "specdeploy.spec.speculativeLength.min": "Smallest K considered (draft tokens per round).",
        "specdeploy.spec.deviceClasses.tolerations": "Taints the class's draft servers and profilers",
        "specdeploy.status.verifier.endpoint": "URL of the verifier Service inside the cluster",
        "edgeprofile.spec.verifyLatency": "T_verify model.",
    }
    for field, text in cases.items():
        for _ in range(60):  # discovery and OpenAPI publish a new CRD a moment after it is Established
            result = cluster.kubectl("explain", field, check=False)
            if result.returncode == 0:
                break
            time.sleep(1)
        assert result.returncode == 0, result.stderr
        assert text in " ".join(result.stdout.split()), result.stdout
