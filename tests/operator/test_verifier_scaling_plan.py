"""Scaling the verifier (what kubectl scale and an HPA write: spec.verifier.replicas) touches the
verifier alone: the selection is not redone and no draft server rolls; the status reports the pods'
selector for the scale subresource."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import Owner, WorkloadImages
from edgespec.builders.naming import verifier_selector
from edgespec.configspec import load_profiles
from edgespec.plan import desired_children, plan_status
from edgespec.status import NodeInfo

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(name="llama70b-edge", namespace="default", uid="u-1")
IMAGES = WorkloadImages(edge="edge:t", verifier="verifier:t", vllm="vllm:t")


def children_at(replicas: int) -> tuple[dict[str, dict[str, Any]], Any]:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["spec"]["verifier"]["replicas"] = replicas
    spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
    nodes = [
        NodeInfo(
            name=f"n-{c.name}", labels=dict(c.node_selector), ready=True, allocatable_memory_bytes=8 << 30
        )
        for c in spec.device_classes
    ]
    profiles = load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
    plan = plan_status(
        spec=spec, generation=replicas, previous=None, nodes=nodes, profiles=profiles, now=T0,
        verifier_selector=verifier_selector(OWNER),
    )  # fmt: skip
    children = desired_children(spec=spec, owner=OWNER, images=IMAGES, token="t", status=plan.status)
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in children}, plan.status


def test_scaling_the_verifier_changes_the_verifier_alone() -> None:
    one, status_one = children_at(1)
    three, status_three = children_at(3)
    changed = sorted(k for k in one.keys() | three.keys() if one.get(k) != three.get(k))
    kinds = sorted(k.split("/")[0] for k in changed)
    assert kinds == ["Deployment", "PodDisruptionBudget"]  # the verifier's; the budget once there are 2+
    deployment = next(k for k in changed if k.startswith("Deployment/"))
    assert (one[deployment]["spec"]["replicas"], three[deployment]["spec"]["replicas"]) == (1, 3)
    assert [c.selection for c in status_one.device_classes] == [
        c.selection for c in status_three.device_classes
    ]


def test_the_status_reports_the_verifier_pods_selector() -> None:
    children, status = children_at(2)
    deployment = next(c for c in children.values() if c["kind"] == "Deployment")
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert status.verifier.selector == ",".join(f"{k}={v}" for k, v in labels.items())
