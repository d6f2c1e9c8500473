"""Run-time adaptation, pure: telemetry folded into the profile, K re-chosen with hysteresis, never flapping.

The plan tests run ``plan_status`` on the paper sample and the illustrative profiles, feeding the
telemetry a class's draft servers would report if the true per-token acceptance were ``a``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from edgespec.adaptation import LiveSample, Pool, effective_profile, fold
from edgespec.api.deployment import (
    LivePoint,
    LiveTelemetry,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
)
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec, VerifyLatency, VerifyLatencyPoint
from edgespec.configspec import fit_per_token_acceptance, geometric_alpha, load_profiles
from edgespec.configspec.grid import verify_latency_on_grid
from edgespec.live import RoundCounts, TelemetryReport
from edgespec.plan import Plan, Rollout, plan_status
from edgespec.status import NodeInfo
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
JETSON = "jetson-agx-orin"


def _profile(**overrides: Any) -> EdgeProfileSpec:
    fields: dict[str, Any] = {
        "device_class": "rpi5",
        "draft_model": "d",
        "quantization": "Q4_K_M",
        "target_model": "t",
        "draft_tokens_per_s": 20.0,
        "power_watts": 8.0,
        "acceptance": [AcceptancePoint(k=k, alpha=float(geometric_alpha(0.8, k))) for k in (2, 4, 6, 8)],
        "verify_latency": VerifyLatency(
            network_rtt_s=0.05, fixed_s=0.2, per_token_s=0.01, measured=[VerifyLatencyPoint(k=4, seconds=0.3)]
        ),
    }
    fields.update(overrides)
    return EdgeProfileSpec(**fields)


def _sample(k: int, a: float, rounds: int = 400, seconds: float = 0.3, draft: str = "d") -> LiveSample:
    drafted = rounds * k
    accepted = round(drafted * float(geometric_alpha(a, k)))
    return LiveSample(draft, "Q4_K_M", k, rounds, drafted, accepted, seconds * rounds)


# ----- fold -----


def test_fold_takes_the_first_sample_then_weights_later_ones() -> None:
    live = fold(None, [_sample(4, 0.5)], draft_model="d", quantization="Q4_K_M", weight=0.25, now=T0)
    assert live is not None and [p.k for p in live.points] == [4]
    first = live.points[0].alpha
    assert first == pytest.approx(float(geometric_alpha(0.5, 4)), abs=1e-3)
    later = fold(live, [_sample(4, 0.9)], draft_model="d", quantization="Q4_K_M", weight=0.25, now=T0)
    assert later is not None
    expected = 0.25 * float(geometric_alpha(0.9, 4)) + 0.75 * first
    assert later.points[0].alpha == pytest.approx(expected, abs=1e-3)
    assert later.points[0].rounds == 800


def test_fold_ignores_other_drafts_and_starts_over_when_the_draft_changes() -> None:
    live = fold(None, [_sample(4, 0.5)], draft_model="d", quantization="Q4_K_M", weight=0.3, now=T0)
    stale = fold(
        live, [_sample(4, 0.9, draft="old")], draft_model="d", quantization="Q4_K_M", weight=0.3, now=T0
    )
    assert stale == live  # a straggler report of the previous draft changes nothing
    other = fold(
        live, [_sample(2, 0.9, draft="e")], draft_model="e", quantization="Q4_K_M", weight=0.3, now=T0
    )
    assert other is not None and other.draft_model == "e" and [p.k for p in other.points] == [2]


# ----- effective profile -----


def _live_at_4(alpha: float, seconds: float) -> LiveTelemetry:
    point = LivePoint(k=4, alpha=alpha, verify_seconds=seconds, rounds=500)
    return LiveTelemetry(draft_model="d", quantization="Q4_K_M", points=[point])


def test_effective_profile_puts_live_points_in_and_scales_the_rest_the_same_way() -> None:
    profile = _profile()
    eff = effective_profile(profile, _live_at_4(alpha=0.3, seconds=0.3))
    alpha = {p.k: p.alpha for p in eff.acceptance}
    old = {p.k: p.alpha for p in profile.acceptance}
    assert alpha[4] == pytest.approx(0.3)
    for k in (2, 6, 8):  # lower live acceptance lowers every K, and keeps alpha decreasing in K
        assert alpha[k] < old[k]
    assert alpha[2] > alpha[4] > alpha[6] > alpha[8]
    # The profile is geometric (per token 0.8); so is the world it now sees: the whole curve follows.
    a_live = fit_per_token_acceptance([AcceptancePoint(k=4, alpha=0.3)])
    for k in (2, 6, 8):
        assert alpha[k] == pytest.approx(float(geometric_alpha(a_live, k)), abs=1e-6)


def test_effective_profile_shifts_verify_time_by_what_the_network_added() -> None:
    profile = _profile()
    eff = effective_profile(profile, _live_at_4(alpha=0.6, seconds=0.4))
    ks = np.array([2, 4, 8], dtype=np.int64)
    before = verify_latency_on_grid(profile.verify_latency, ks)
    after = verify_latency_on_grid(eff.verify_latency, ks)
    assert after == pytest.approx(before + 0.1)  # +100 ms at every K


# ----- wire -----


def test_telemetry_report_rejects_impossible_counts_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="accepted_tokens cannot exceed drafted_tokens"):
        RoundCounts(k=4, rounds=10, drafted_tokens=40, accepted_tokens=41, verify_seconds=1.0)
    with pytest.raises(ValidationError, match="drafted_tokens cannot exceed rounds"):
        RoundCounts(k=4, rounds=10, drafted_tokens=41, accepted_tokens=0, verify_seconds=1.0)


def test_pool_adds_reports_up_per_k() -> None:
    report = TelemetryReport(
        namespace="n",
        deployment="x",
        device_class="c",
        draft_model="d",
        quantization="Q4_K_M",
        counts=[RoundCounts(k=4, rounds=10, drafted_tokens=40, accepted_tokens=20, verify_seconds=3.0)],
    )
    pool = Pool()
    pool.add(report)
    pool.add(report)
    assert pool.rounds() == 20 and pool.rounds("d", "Q4_K_M") == 20 and pool.rounds("e", "Q4_K_M") == 0
    (sample,) = pool.drain()
    assert (sample.rounds, sample.drafted, sample.accepted, sample.verify_seconds) == (20, 80, 40, 6.0)
    assert pool.rounds() == 0


# ----- the loop, through plan_status -----


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    nodes = [
        NodeInfo(name=f"n-{cls}", labels={"edgespec.dev/device-class": cls}, ready=True)
        for cls in ("rpi4b", "rpi5", "jetson-orin")
    ]
    profiles = load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
    return {"doc": doc, "nodes": nodes, "profiles": profiles}


def _spec(world: dict[str, Any], **adaptation: Any) -> SpeculativeDeploymentSpec:
    spec = dict(world["doc"]["spec"])
    spec["adaptation"] = {"minGain": 0.05, "minIntervalSeconds": 300, **adaptation}
    return SpeculativeDeploymentSpec.model_validate(spec)


def _plan(
    world: dict[str, Any],
    spec: SpeculativeDeploymentSpec,
    previous: SpeculativeDeploymentStatus | None,
    now: datetime,
    samples: dict[str, list[LiveSample]] | None = None,
) -> Plan:
    # Through the API's JSON and back, as a restart of the operator would read it.
    prev = SpeculativeDeploymentStatus.model_validate(previous.to_api()) if previous else None
    return plan_status(
        spec=spec,
        generation=1,
        previous=prev,
        nodes=world["nodes"],
        profiles=world["profiles"],
        now=now,
        verifier=Rollout(1, 1),
        drafts={c.name: Rollout(1, 1) for c in spec.device_classes},
        live_samples=samples,
    )


def _selection(plan: Plan, cls: str = JETSON) -> Any:
    return next(c for c in plan.status.device_classes if c.name == cls).selection


def true_alpha(profile: EdgeProfileSpec, k: int, factor: float) -> float:
    """alpha(K) if users' prompts cut the per-token acceptance the profile measured at K by ``factor``."""
    points = sorted(profile.acceptance, key=lambda p: p.k)
    profiled = np.interp(k, [p.k for p in points], [p.alpha for p in points])
    measured_per_token = fit_per_token_acceptance([AcceptancePoint(k=k, alpha=float(profiled))])
    return float(geometric_alpha(factor * measured_per_token, k))


def _reports(
    world: dict[str, Any],
    status: SpeculativeDeploymentStatus,
    factor: float,
    cls: str = JETSON,
    rounds: int = 400,
) -> dict[str, list[LiveSample]]:
    """What the class's servers report at their current K if the per-token acceptance drops by ``factor``."""
    sel = next(c for c in status.device_classes if c.name == cls).selection
    assert sel is not None
    profile = next(
        p
        for p in world["profiles"]
        if (p.device_class, p.draft_model, p.quantization) == (cls, sel.draft_model, sel.quantization)
    )
    seconds = float(verify_latency_on_grid(profile.verify_latency, np.array([sel.k], dtype=np.int64))[0])
    drafted = rounds * sel.k
    accepted = round(drafted * true_alpha(profile, sel.k, factor))
    return {
        cls: [
            LiveSample(sel.draft_model, sel.quantization, sel.k, rounds, drafted, accepted, seconds * rounds)
        ]
    }


def _adapted_events(plan: Plan) -> list[str]:
    return [e.message for e in plan.events if e.reason == "Adapted"]


def test_lower_live_acceptance_moves_k_down_once_and_not_back(world: dict[str, Any]) -> None:
    spec = _spec(world)
    first = _plan(world, spec, None, T0)
    offline = _selection(first)
    assert offline.k >= 8 and not offline.adapted  # the paper's finding: the Jetson drafts long

    # Acceptance well below the profile's: the model says a shorter K now pays.
    now = T0 + timedelta(seconds=600)
    moved = _plan(world, spec, first.status, now, _reports(world, first.status, 0.5))
    new = _selection(moved)
    assert new.adapted and new.k < offline.k
    assert new.draft_model == offline.draft_model and new.quantization == offline.quantization
    assert len(_adapted_events(moved)) == 1 and f"K={new.k}" in _adapted_events(moved)[0]
    assert new.selected_at == now
    assert moved.status.k_summary.count(f"{JETSON}={new.k}") == 1

    # The same truth keeps arriving, now measured at the new K, for an hour: K stays where it is.
    status, k_seen = moved.status, []
    for _ in range(12):
        now += timedelta(seconds=300)
        plan = _plan(world, spec, status, now, _reports(world, status, 0.5))
        assert not _adapted_events(plan)
        k_seen.append(_selection(plan).k)
        status = plan.status
    assert set(k_seen) == {new.k}
    assert _selection(Plan(status=status)).selected_at == T0 + timedelta(seconds=600)


def test_a_better_k_waits_for_the_minimum_interval(world: dict[str, Any]) -> None:
    spec = _spec(world, minIntervalSeconds=3600)
    first = _plan(world, spec, None, T0)
    early = _plan(world, spec, first.status, T0 + timedelta(seconds=60), _reports(world, first.status, 0.5))
    held = _selection(early)
    assert held.k == _selection(first).k and held.adapted
    assert "minIntervalSeconds" in held.reason and not _adapted_events(early)
    assert early.requeue_after_s == pytest.approx(3600 - 60 + 1)  # decide again once the interval is over
    # Later, with nothing new reported, the held decision goes through on the averages kept in status.
    late = _plan(world, spec, early.status, T0 + timedelta(seconds=3601))
    assert _selection(late).k < held.k and len(_adapted_events(late)) == 1


def test_a_small_gain_does_not_move_k(world: dict[str, Any]) -> None:
    spec = _spec(world, minGain=0.5)  # demand a 50% gain
    first = _plan(world, spec, None, T0)
    plan = _plan(world, spec, first.status, T0 + timedelta(seconds=600), _reports(world, first.status, 0.5))
    sel = _selection(plan)
    assert sel.k == _selection(first).k and "under minGain 50%" in sel.reason
    assert not _adapted_events(plan)


def test_a_spec_change_decides_afresh_on_the_live_profile(world: dict[str, Any]) -> None:
    spec = _spec(world, minIntervalSeconds=86400)
    first = _plan(world, spec, None, T0)
    held = _plan(world, spec, first.status, T0 + timedelta(seconds=60), _reports(world, first.status, 0.5))
    assert _selection(held).k == _selection(first).k  # held by the interval
    # The user changes the objective: the class is decided afresh, live telemetry included, at once.
    energy = SpeculativeDeploymentSpec.model_validate({**spec.to_api(), "objective": {"kind": "energy"}})
    plan = _plan(world, energy, held.status, T0 + timedelta(seconds=120))
    assert _selection(plan).adapted and _selection(plan).k == 2  # energy: K = 2 (the paper's finding)


def test_adaptation_disabled_keeps_the_offline_choice(world: dict[str, Any]) -> None:
    spec = _spec(world, enabled=False)
    first = _plan(world, spec, None, T0)
    plan = _plan(world, spec, first.status, T0 + timedelta(seconds=600), _reports(world, first.status, 0.5))
    assert _selection(plan) == _selection(first)
    assert all(c.live is None for c in plan.status.device_classes)
