"""Run-time adaptation, pure: live telemetry folded into a class's profile, and K re-chosen with hysteresis.

The paper selects offline, from profiles. At run time acceptance drifts with what users actually ask,
and the verify round trip with the network and the verifier's load. Draft servers report counts per K
(``edgespec.live``); the operator pools them per class (``Pool``) until they cover
``minRounds`` verify rounds, then:

1. ``fold``: each K's pooled acceptance (accepted / drafted) and mean verify time enter an
   exponentially weighted average, kept in the class's status (``LiveTelemetry``), so an operator
   restart resumes from it.
2. ``effective_profile``: the chosen profile with the live points in place of the measured ones at
   those K. Acceptance at a K not observed keeps the profile's shape: the profile's per-token
   acceptance at that K times the factor by which the live per-token acceptance differs from the
   profiled one at the observed K. Verify time is shifted by the mean live-minus-profiled difference
   (a network or load change adds time, whatever K is).
3. ``decide``: ConfigSpec ranks K for the running draft on the effective profile. K changes only when
   the best K beats the current one by ``minGain`` on the objective *and* ``minIntervalSeconds`` have
   passed since the last change. Together with the average this keeps K from flapping.

Only K adapts: it lives in a ConfigMap the servers re-read, so a change restarts nothing. A different
draft or quantisation would mean new pods and a model download; that follows profiles and the spec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from edgespec.api.deployment import AdaptationSpec, LivePoint, LiveTelemetry, SpeculativeDeploymentSpec
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec, VerifyLatency, VerifyLatencyPoint
from edgespec.configspec import rank
from edgespec.configspec.acceptance import fit_per_token_acceptance, geometric_alpha
from edgespec.configspec.candidates import Candidate
from edgespec.configspec.grid import verify_latency_on_grid
from edgespec.live import TelemetryReport


@dataclass(frozen=True)
class LiveSample:
    """Pooled counts of one class's draft servers at one K."""

    draft_model: str
    quantization: str
    k: int
    rounds: int
    drafted: int
    accepted: int
    verify_seconds: float


class Pool:
    """Counts reported by a class's servers since the last fold, per (draft, quantisation, K)."""

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str, int], LiveSample] = {}

    def add(self, report: TelemetryReport) -> None:
        for c in report.counts:
            key = (report.draft_model, report.quantization, c.k)
            old = self._samples.get(key) or LiveSample(
                report.draft_model, report.quantization, c.k, 0, 0, 0, 0.0
            )
            self._samples[key] = LiveSample(
                old.draft_model,
                old.quantization,
                old.k,
                old.rounds + c.rounds,
                old.drafted + c.drafted_tokens,
                old.accepted + c.accepted_tokens,
                old.verify_seconds + c.verify_seconds,
            )

    def rounds(self, draft_model: str | None = None, quantization: str | None = None) -> int:
        """Rounds pooled (of one draft and quantisation, when given)."""
        return sum(
            s.rounds
            for (m, q, _), s in self._samples.items()
            if draft_model is None or (m, q) == (draft_model, quantization)
        )

    def drain(self) -> list[LiveSample]:
        samples = list(self._samples.values())
        self._samples.clear()
        return samples


def fold(
    previous: LiveTelemetry | None,
    samples: Iterable[LiveSample],
    *,
    draft_model: str,
    quantization: str,
    weight: float,
    now: datetime,
) -> LiveTelemetry | None:
    """The live telemetry after folding in ``samples`` of the running draft (others are dropped).

    A K seen for the first time takes its sample as is; after that each sample enters with ``weight``.
    Telemetry of another draft or quantisation than the running one starts over.
    """
    if previous is not None and (previous.draft_model, previous.quantization) != (draft_model, quantization):
        previous = None
    points = {p.k: p for p in (previous.points if previous else [])}
    folded = False
    for s in samples:
        if (s.draft_model, s.quantization) != (draft_model, quantization) or s.drafted <= 0 or s.rounds <= 0:
            continue
        alpha = min(1.0, s.accepted / s.drafted)
        seconds = s.verify_seconds / s.rounds
        old = points.get(s.k)
        if old is None:
            points[s.k] = LivePoint(k=s.k, alpha=alpha, verify_seconds=seconds, rounds=s.rounds)
        else:
            old_seconds = old.verify_seconds if old.verify_seconds is not None else seconds
            points[s.k] = LivePoint(
                k=s.k,
                alpha=weight * alpha + (1.0 - weight) * old.alpha,
                verify_seconds=weight * seconds + (1.0 - weight) * old_seconds,
                rounds=old.rounds + s.rounds,
            )
        folded = True
    if not points:
        return None
    return LiveTelemetry(
        draft_model=draft_model,
        quantization=quantization,
        points=[points[k] for k in sorted(points)],
        updated_at=now if folded or previous is None else previous.updated_at,
    )


def per_token(alpha: float, k: int) -> float:
    """The per-token acceptance whose geometric alpha(K) is ``alpha`` at ``k`` (exact inversion)."""
    return fit_per_token_acceptance([AcceptancePoint(k=k, alpha=alpha)])


def profiled_per_token(profile: EdgeProfileSpec, k: int) -> float:
    """The profile's per-token acceptance at ``k``: its measured points inverted, interpolated in K."""
    points = sorted(profile.acceptance, key=lambda p: p.k)
    if not points:
        assert profile.per_token_acceptance is not None  # the profile's validator guarantees one of the two
        return profile.per_token_acceptance
    return float(np.interp(k, [p.k for p in points], [per_token(p.alpha, p.k) for p in points]))


def effective_profile(profile: EdgeProfileSpec, live: LiveTelemetry) -> EdgeProfileSpec:
    """``profile`` with ``live`` folded in (see the module's docstring); unchanged without live points.

    Acceptance is compared per token: at each live K, the factor between the per-token acceptance that
    explains the live alpha and the profile's at that K. Every profiled K keeps its own per-token value
    times the factor (interpolated between live K, constant beyond), so the curve keeps its measured
    shape, and meets every live point exactly.
    """
    if not live.points:
        return profile
    live_ks = [p.k for p in live.points]
    factors = []
    for p in live.points:
        base = profiled_per_token(profile, p.k)
        factors.append(per_token(p.alpha, p.k) / base if base > 0.0 else 1.0)

    def factor(k: int) -> float:
        return float(np.interp(k, live_ks, factors))

    acceptance = [AcceptancePoint(k=p.k, alpha=p.alpha, samples=p.rounds) for p in live.points]
    for point in profile.acceptance:
        if point.k not in live_ks:
            a = min(1.0, per_token(point.alpha, point.k) * factor(point.k))
            acceptance.append(point.model_copy(update={"alpha": float(geometric_alpha(a, point.k))}))
    acceptance.sort(key=lambda p: p.k)
    per_token_acceptance = (
        None
        if profile.per_token_acceptance is None
        else min(1.0, profile.per_token_acceptance * float(np.mean(factors)))
    )

    latency = profile.verify_latency
    timed = [p for p in live.points if p.verify_seconds is not None]
    if timed:
        profile_seconds = verify_latency_on_grid(latency, np.array([p.k for p in timed], dtype=np.int64))
        weights = [max(p.rounds, 1) for p in timed]
        shift = float(
            np.average(
                [(p.verify_seconds or 0.0) - s for p, s in zip(timed, profile_seconds, strict=True)],
                weights=weights,
            )
        )
        measured = {
            p.k: p.model_copy(update={"seconds": max(0.0, p.seconds + shift)}) for p in latency.measured
        }
        for p in timed:
            measured[p.k] = VerifyLatencyPoint(k=p.k, seconds=p.verify_seconds or 0.0, samples=p.rounds)
        latency = VerifyLatency(
            fixed_s=latency.fixed_s,
            per_token_s=latency.per_token_s,
            network_rtt_s=max(0.0, latency.network_rtt_s + shift),
            measured=[measured[k] for k in sorted(measured)],
        )
    return profile.model_copy(
        update={
            "acceptance": acceptance,
            "per_token_acceptance": per_token_acceptance,
            "verify_latency": latency,
        }
    )


def selection_basis(
    spec: SpeculativeDeploymentSpec, profiles: Sequence[EdgeProfileSpec], memory_bytes: int | None
) -> str:
    """A digest of everything the offline selection of one class depends on.

    While it holds, a K chosen on live telemetry stays (with hysteresis); when it changes (objective,
    constraints, K range, price, the class's profiles or memory) the class is decided afresh.
    """
    inputs = {
        "objective": spec.objective.model_dump(mode="json"),
        "constraints": spec.constraints.model_dump(mode="json"),
        "k": spec.speculative_length.model_dump(mode="json"),
        "target": [spec.target.name, spec.target.price_usd_per_million_tokens],
        "memory": memory_bytes,
        "profiles": sorted(json.dumps(p.model_dump(mode="json"), sort_keys=True) for p in profiles),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """K for a class on its live profile: kept or changed, with the predictions at that K and why."""

    k: int
    candidate: Candidate
    changed: bool
    reason: str
    retry_after_s: float | None = None
    """Held only by the minimum interval: decide again after this many seconds."""


def _live_phrase(live: LiveTelemetry, profile: EdgeProfileSpec, k: int) -> str:
    point = next((p for p in live.points if p.k == k), None) or live.points[-1]
    profiled = float(geometric_alpha(profiled_per_token(profile, point.k), point.k))
    phrase = (
        f"live acceptance {point.alpha:.2f} at K={point.k} over {point.rounds} rounds "
        f"(profiled {profiled:.2f})"
    )
    if point.verify_seconds is not None:
        phrase += f", verify {point.verify_seconds * 1000:.0f} ms"
    return phrase


def decide(
    *,
    spec: SpeculativeDeploymentSpec,
    device_class: str,
    profile: EdgeProfileSpec,
    live: LiveTelemetry,
    current_k: int,
    last_change: datetime | None,
    now: datetime,
    device_memory_bytes: Mapping[str, int],
) -> Decision | None:
    """K for the running draft of ``device_class`` given its live telemetry; None when no K is feasible.

    ``last_change`` None means a fresh decision (the offline inputs changed): the best K is taken with
    no hysteresis. Otherwise K moves only for a gain of at least ``minGain`` on the objective, and
    not within ``minIntervalSeconds`` of the last change.
    """
    adaptation: AdaptationSpec = spec.adaptation
    effective = effective_profile(profile, live)
    ranking = rank(
        [effective],
        spec.objective,
        spec.constraints,
        prices_usd_per_million={spec.target.name: spec.target.price_usd_per_million_tokens},
        device_memory_bytes={k: v for k, v in device_memory_bytes.items() if k == device_class},
        k_values=spec.speculative_length.values(),
        target_model=spec.target.name,
        device_classes=[device_class],
        assume_fits=True,  # as the offline selection does
    )
    selection = ranking.selections.get(device_class)
    if selection is None:
        return None
    best = selection.choice
    current = ranking.candidate_at(device_class, profile.draft_model, profile.quantization, current_k)
    live_phrase = _live_phrase(live, profile, current_k)
    if current is None or best.k == current_k:
        return Decision(best.k, best, best.k != current_k, f"{live_phrase}: K={best.k} is still best")
    gain = (
        best.score / current.score - 1.0 if np.isfinite(current.score) and current.score > 0 else float("inf")
    )
    what = f"K={best.k} would gain {gain:+.1%} on {spec.objective.kind} over K={current_k}"
    if last_change is not None:
        if gain < adaptation.min_gain:
            return Decision(
                current_k, current, False, f"{live_phrase}; {what}, under minGain {adaptation.min_gain:.0%}"
            )
        waited = (now - last_change).total_seconds()
        if waited < adaptation.min_interval_seconds:
            return Decision(
                current_k,
                current,
                False,
                f"{live_phrase}; {what}, held until minIntervalSeconds ({adaptation.min_interval_seconds} s) "
                f"have passed since the last change ({waited:.0f} s)",
                retry_after_s=adaptation.min_interval_seconds - waited,
            )
    return Decision(
        best.k,
        best,
        True,
        f"{live_phrase}: moved from K={current_k} to K={best.k} ({gain:+.1%} {spec.objective.kind})",
    )
