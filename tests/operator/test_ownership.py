"""The pure side of owning children: rejections made visible once, events once per change, and the
desired set (what pruning keeps) without draft servers for a class with no node."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.api.profile import EdgeProfileSpec
from edgespec.builders import Owner, WorkloadImages
from edgespec.handlers.workqueue import BACKOFF_CAP_S, backoff_delay
from edgespec.plan import (
    TOKEN_DIGEST_ANNOTATION,
    ChildRejection,
    desired_children,
    plan_status,
    with_apply_outcome,
)
from edgespec.status import NodeInfo
from operator_samples import uniform_profiles

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OWNER = Owner(name="gemma", namespace="team-a", uid="u-1")
IMAGES = WorkloadImages(edge="edge:t", verifier="verifier:t", vllm="vllm:t")
REJECTED = ChildRejection(
    kind="Deployment",
    name="gemma-verifier-0123456789",
    field="spec.template.spec.nodeSelector",
    message='Deployment.apps "gemma-verifier-0123456789" is invalid: spec.template.spec.nodeSelector: '
    'Invalid value: "bad key!": name part must consist of alphanumeric characters',
)


@pytest.fixture
def spec() -> SpeculativeDeploymentSpec:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    return SpeculativeDeploymentSpec.model_validate(doc["spec"])


def _profiles(spec: SpeculativeDeploymentSpec) -> list[EdgeProfileSpec]:
    return uniform_profiles(spec, T0)


def test_a_rejected_child_is_named_once_and_degrades(spec: SpeculativeDeploymentSpec) -> None:
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=[], profiles=[], now=T0)
    status, events = with_apply_outcome(plan.status, None, [REJECTED], generation=1, now=T0)
    cond = next(c for c in status.conditions if c.type == "ChildrenApplied")
    assert (cond.status, cond.reason) == ("False", "ChildRejected")
    assert "gemma-verifier-0123456789" in cond.message and "spec.template.spec.nodeSelector" in cond.message
    assert "Invalid value" in cond.message and status.phase == "Degraded"
    assert [(e.type, e.reason) for e in events] == [("Warning", "ChildRejected")]
    # Nine more passes with the same rejection: the same status, no further event.
    for n in range(1, 10):
        again, more = with_apply_outcome(
            plan.status, status, [REJECTED], generation=1, now=T0 + timedelta(seconds=n)
        )
        assert more == [] and again == status
    fixed, after = with_apply_outcome(plan.status, status, [], generation=2, now=T0 + timedelta(seconds=11))
    cond = next(c for c in fixed.conditions if c.type == "ChildrenApplied")
    assert cond.status == "True" and after == [] and fixed.phase == plan.status.phase


def test_infeasible_is_posted_once_per_verdict(spec: SpeculativeDeploymentSpec) -> None:
    spec.constraints.min_goodput_tokens_per_s = 1e6  # no configuration can meet it
    nodes = [
        NodeInfo(
            name=f"n-{c.name}", labels=dict(c.node_selector), ready=True, allocatable_memory_bytes=8 << 30
        )
        for c in spec.device_classes
    ]
    first = plan_status(spec=spec, generation=1, previous=None, nodes=nodes, profiles=_profiles(spec), now=T0)
    assert [e.reason for e in first.events].count("Infeasible") == len(spec.device_classes)
    previous = first.status
    for n in range(1, 10):
        again = plan_status(
            spec=spec,
            generation=1,
            previous=previous,
            nodes=nodes,
            profiles=_profiles(spec),
            now=T0 + timedelta(seconds=n),
        )
        assert [e.reason for e in again.events if e.reason in ("Infeasible", "Selected")] == []
        previous = again.status


def test_a_class_without_nodes_gets_no_draft_servers(spec: SpeculativeDeploymentSpec) -> None:
    first, *others = spec.device_classes
    nodes = [
        NodeInfo(name="only", labels=dict(first.node_selector), ready=True, allocatable_memory_bytes=8 << 30)
    ]
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=nodes, profiles=_profiles(spec), now=T0)
    children = desired_children(spec=spec, owner=OWNER, images=IMAGES, token="t", status=plan.status)
    classes = {
        c["metadata"]["labels"].get("edgespec.dev/device-class") for c in children if c["kind"] == "DaemonSet"
    }
    assert classes == {first.name}, "only the class with a node gets a DaemonSet"
    assert others, "the sample has a second class to leave out"


def test_pods_holding_the_token_roll_when_it_changes(spec: SpeculativeDeploymentSpec) -> None:
    nodes = [
        NodeInfo(
            name=f"n-{c.name}", labels=dict(c.node_selector), ready=True, allocatable_memory_bytes=8 << 30
        )
        for c in spec.device_classes
    ]
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=nodes, profiles=_profiles(spec), now=T0)

    def digests(token: str) -> dict[str, str]:
        return {
            c["metadata"]["name"]: c["spec"]["template"]["metadata"]["annotations"][TOKEN_DIGEST_ANNOTATION]
            for c in desired_children(spec=spec, owner=OWNER, images=IMAGES, token=token, status=plan.status)
            if c["kind"] in ("Deployment", "DaemonSet")
        }

    same, rotated = digests("one"), digests("two")
    assert same == digests("one") and set(same) == set(rotated)
    assert all(same[n] != rotated[n] for n in same) and len(set(rotated.values())) == 1


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, rng) for n in range(1, 20)]
    assert all(d <= BACKOFF_CAP_S for d in delays)
    assert delays[0] < 2.0 <= delays[3]  # 2 s * [0.5, 1) first; 16 s * [0.5, 1) by the fourth
    assert min(delays[10:]) >= BACKOFF_CAP_S / 2  # capped, still jittered
    assert len({round(d, 6) for d in delays[10:]}) > 1
