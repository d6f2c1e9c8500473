"""How a draft change rolls on a node: Surge when ConfigSpec's memory estimate fits two drafts, else Drain.

Surge starts the new draft server beside the old one (no gap for the node's clients); Drain stops
the old one first. The decision is the selection's own: the chosen draft's memory need plus the
largest need of the class's drafts against the nodes' memory budget (allocatable less headroom).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import Owner, WorkloadImages
from edgespec.configspec import load_profiles
from edgespec.plan import desired_children, draft_rollout, plan_status
from edgespec.status import NodeInfo

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(name="llama70b-edge", namespace="default", uid="u-1")
IMAGES = WorkloadImages(edge="edge:t", verifier="verifier:t", vllm="vllm:t")
GIB = 1 << 30


def test_surge_needs_the_chosen_draft_beside_the_largest_of_the_class() -> None:
    assert draft_rollout(1 * GIB, [1 * GIB, 3 * GIB], budget=4 * GIB) == "Surge"
    assert draft_rollout(1 * GIB, [1 * GIB, 3 * GIB], budget=4 * GIB - 1) == "Drain"
    assert draft_rollout(2 * GIB, [2 * GIB], budget=4 * GIB) == "Surge"  # a re-roll of the same draft


@pytest.mark.parametrize(
    ("current", "needs", "budget"),
    [
        (0, [1 * GIB], 64 * GIB),  # the chosen draft's need is unknown
        (1 * GIB, [1 * GIB, 0], 64 * GIB),  # another draft's need is unknown
        (1 * GIB, [1 * GIB], None),  # the nodes' memory is unknown
        (1 * GIB, [], 64 * GIB),
    ],
)
def test_what_cannot_be_shown_to_fit_drains(current: int, needs: list[int], budget: int | None) -> None:
    assert draft_rollout(current, needs, budget) == "Drain"


def plan_for(memory_bytes: int) -> tuple[dict[str, str | None], dict[str, dict[str, int]]]:
    """Per class, the status's rollout and the DaemonSet's rollingUpdate, for nodes of this memory."""
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
    profiles = load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
    nodes = [
        NodeInfo(
            name=f"n-{c.name}",
            labels=dict(c.node_selector),
            ready=True,
            allocatable_memory_bytes=memory_bytes,
        )
        for c in spec.device_classes
    ]
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=nodes, profiles=profiles, now=T0)
    rollouts = {c.name: c.rollout for c in plan.status.device_classes}
    children = desired_children(spec=spec, owner=OWNER, images=IMAGES, token="t", status=plan.status)
    strategies = {
        c["metadata"]["labels"]["edgespec.dev/device-class"]: c["spec"]["updateStrategy"]["rollingUpdate"]
        for c in children
        if c["kind"] == "DaemonSet"
    }
    return rollouts, strategies


def test_ample_memory_surges_every_class() -> None:
    rollouts, strategies = plan_for(256 * GIB)
    assert set(rollouts.values()) == {"Surge"}
    assert all(s == {"maxSurge": 1, "maxUnavailable": 0} for s in strategies.values())
    assert strategies.keys() == rollouts.keys()


def test_memory_for_one_draft_only_drains() -> None:
    rollouts, strategies = plan_for(4 * GIB)  # a small draft fits; it and the class's largest do not
    assert set(rollouts.values()) == {"Drain"}
    assert all(s == {"maxSurge": 0, "maxUnavailable": 1} for s in strategies.values())


def test_unknown_node_memory_drains() -> None:
    rollouts, _ = plan_for(0)  # the nodes report no allocatable memory: no budget to check against
    assert set(rollouts.values()) == {"Drain"}
