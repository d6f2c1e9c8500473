"""The plan's steps and the phase derived from what they wrote (``edgespec.plan``, pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from edgespec.api.deployment import (
    Condition,
    DeviceClassSelection,
    DeviceClassStatus,
    ProfilingStatus,
    SpeculativeDeploymentStatus,
)
from edgespec.plan import Rollout, _Context, _readiness_step, phase_of
from edgespec.status import StuckPod

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SELECTED = DeviceClassSelection(
    draft_model="d", quantization="Q4_0", k=4, predicted_goodput_tokens_per_s=1.0,
    predicted_tokens_per_usd=1.0, predicted_joules_per_token=1.0,
)  # fmt: skip


def _status(conditions: dict[str, str], done: int = 2, selected: bool = True) -> SpeculativeDeploymentStatus:
    return SpeculativeDeploymentStatus(
        conditions=[
            Condition(type=t, status=s, reason="R", message="", last_transition_time=NOW)  # type: ignore[arg-type]
            for t, s in conditions.items()
        ],
        profiling=ProfilingStatus(done=done, needed=2),
        device_classes=[DeviceClassStatus(name="rpi5", nodes=1, selection=SELECTED if selected else None)],
    )


@pytest.mark.parametrize(
    ("conditions", "done", "selected", "phase"),
    [
        ({"NodesResolved": "False", "Ready": "True"}, 2, True, "Pending"),
        ({"NodesResolved": "True", "Ready": "False"}, 1, False, "Profiling"),
        ({"NodesResolved": "True", "Ready": "False"}, 2, False, "Degraded"),  # a class infeasible
        ({"NodesResolved": "True", "Ready": "False"}, 2, True, "Deploying"),
        ({"NodesResolved": "True", "Ready": "True"}, 2, True, "Ready"),
        ({"NodesResolved": "True", "Ready": "True", "ChildrenApplied": "False"}, 2, True, "Degraded"),
        ({"NodesResolved": "False", "ChildrenApplied": "False"}, 0, False, "Degraded"),  # rejection first
    ],
)
def test_the_phase_follows_from_the_conditions(
    conditions: dict[str, str], done: int, selected: bool, phase: str
) -> None:
    assert phase_of(_status(conditions, done, selected)) == phase


def test_a_step_returns_its_condition_its_event_and_when_to_look_again() -> None:
    ctx = _Context(SpeculativeDeploymentStatus(), 3, NOW)
    stuck = StuckPod(
        component="verifier", device_class="", pod="v-0", node="gpu-0", container="fetch-model",
        reason="Error", message="no route to the index",
    )  # fmt: skip
    step = _readiness_step(ctx, {"rpi5": SELECTED}, Rollout(desired=1, ready=0), {}, [stuck])
    (ready,) = step.conditions
    assert ready.type == "Ready" and ready.status == "False" and "no route" in ready.message
    assert ready.observed_generation == 3
    assert [e.reason for e in step.events] == [ready.reason]  # a stuck pod is worth one Warning
    assert step.timers  # a rollout short of ready pods is looked at again
    again = _readiness_step(
        _Context(SpeculativeDeploymentStatus(conditions=[ready]), 3, NOW), {"rpi5": SELECTED},
        Rollout(desired=1, ready=0), {}, [stuck],
    )  # fmt: skip
    assert again.events == []  # once per change, not once per pass
