"""The plan wakes itself when time alone changes the answer: a profile turning stale, a silent Job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec
from edgespec.plan import PROFILE_GRACE_S, JobOutcome, Plan, plan_status
from edgespec.status import NodeInfo

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
KEYS = [("rpi5", "gemma-17l", "Q4_K_M"), ("rpi5", "gemma-270m", "Q4_0")]


@pytest.fixture
def spec() -> SpeculativeDeploymentSpec:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["spec"]["profiling"] = {"maxAge": "1h", "concurrencyPerClass": 2}
    return SpeculativeDeploymentSpec.model_validate(doc["spec"])


def _profiles(measured_at: datetime) -> list[EdgeProfileSpec]:
    common = {
        "target_model": "gemma-3-270m",
        "draft_tokens_per_s": 40.0,
        "power_watts": 6.0,
        "acceptance": [AcceptancePoint(k=2, alpha=0.6)],
        "measured_at": measured_at,
    }
    return [EdgeProfileSpec(device_class=c, draft_model=d, quantization=q, **common) for c, d, q in KEYS]


def _plan(spec: SpeculativeDeploymentSpec, now: datetime, **kwargs: object) -> Plan:
    return plan_status(
        spec=spec,
        generation=1,
        previous=None,
        nodes=[NodeInfo(name="pi", labels={"edgespec.dev/device-class": "rpi5"}, ready=True)],
        now=now,
        **kwargs,  # type: ignore[arg-type]
    )


def _profiled(plan: Plan) -> tuple[str, str]:
    cond = next(c for c in plan.status.conditions if c.type == "Profiled")
    return cond.status, cond.reason


def test_a_profile_turning_stale_wakes_the_plan_and_is_profiled_again(
    spec: SpeculativeDeploymentSpec,
) -> None:
    profiles = _profiles(T0 - timedelta(minutes=59, seconds=50))  # stale in 10 s
    fresh = _plan(spec, T0, profiles=profiles)
    assert fresh.profiling_jobs == [] and _profiled(fresh) == ("True", "ProfilesPresent")
    assert fresh.requeue_after_s == pytest.approx(11.0)  # 10 s, and a second to be past the edge
    stale = _plan(spec, T0 + timedelta(seconds=11), profiles=profiles)
    assert sorted(j.key for j in stale.profiling_jobs) == KEYS
    assert _profiled(stale) == ("True", "RefreshingStaleProfiles")
    assert stale.status.device_classes[0].selection is not None  # the stale profiles still serve meanwhile


def test_a_job_that_completed_without_a_profile_fails_after_the_grace(
    spec: SpeculativeDeploymentSpec,
) -> None:
    done = {KEYS[0]: JobOutcome(failed=False, finished_at=T0)}
    early = _plan(spec, T0 + timedelta(seconds=5), profiles=[], finished_profiling=done)
    assert _profiled(early) == ("False", "ProfilesMissing")
    assert early.requeue_after_s == pytest.approx(PROFILE_GRACE_S - 5 + 1)
    assert [j.key for j in early.profiling_jobs] == [KEYS[1]]  # the finished key is not re-run
    late = _plan(spec, T0 + timedelta(seconds=PROFILE_GRACE_S), profiles=[], finished_profiling=done)
    assert _profiled(late) == ("False", "ProfilingFailed")
    assert late.status.profiling.failed == ["rpi5/gemma-17l/Q4_K_M"]
    assert [e.reason for e in late.events if e.type == "Warning"] == ["ProfilingFailed"]
