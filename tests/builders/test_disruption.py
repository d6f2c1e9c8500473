"""The verifier's PodDisruptionBudget: one pod at a time may go when there is more than one."""

from __future__ import annotations

from builder_samples import IMAGES, OWNER, SPEC
from edgespec.api.deployment import SpeculativeDeploymentSpec, SpeculativeDeploymentStatus
from edgespec.builders import (
    DeploymentInput,
    DraftServerInput,
    VerifierInput,
    build_draft_servers,
    build_verifier_deployment,
    build_verifier_disruption_budget,
)
from edgespec.plan import desired_children


def _spec(replicas: int) -> SpeculativeDeploymentSpec:
    return SpeculativeDeploymentSpec.model_validate(
        {**SPEC, "verifier": {**SPEC["verifier"], "replicas": replicas}}
    )


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_one_verifier_replica_gets_no_budget() -> None:
    assert build_verifier_disruption_budget(DeploymentInput(owner=OWNER, spec=_spec(1), images=IMAGES)) == []


def test_several_verifier_replicas_may_be_drained_one_at_a_time() -> None:
    inp = VerifierInput(owner=OWNER, spec=_spec(3), images=IMAGES, token="t")
    (budget,) = build_verifier_disruption_budget(inp)
    assert budget["apiVersion"] == "policy/v1" and budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    assert budget["metadata"]["namespace"] == OWNER.namespace
    assert budget["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid  # removed with the deployment
    selector = budget["spec"]["selector"]["matchLabels"]
    verifier_pod = build_verifier_deployment(inp)["spec"]["template"]["metadata"]["labels"]
    assert _selects(selector, verifier_pod)
    draft = DraftServerInput(
        owner=OWNER,
        spec=inp.spec,
        images=IMAGES,
        device_class_name="rpi5",
        draft_model="gemma-17b",
        quantization="Q4_K_M",
        k=4,
    )
    (daemon_set,) = [m for m in build_draft_servers(draft) if m["kind"] == "DaemonSet"]
    assert not _selects(selector, daemon_set["spec"]["template"]["metadata"]["labels"])


def test_the_operator_applies_the_budget_with_the_verifier() -> None:
    kinds = [
        m["kind"]
        for m in desired_children(
            spec=_spec(2), owner=OWNER, images=IMAGES, token="t", status=SpeculativeDeploymentStatus()
        )
    ]
    assert kinds.index("PodDisruptionBudget") > kinds.index("Deployment")
    single = desired_children(
        spec=_spec(1), owner=OWNER, images=IMAGES, token="t", status=SpeculativeDeploymentStatus()
    )
    assert "PodDisruptionBudget" not in [m["kind"] for m in single]
