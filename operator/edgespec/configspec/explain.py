"""Plain-words reasons for a selection and for an infeasible request.

The sentences go into ``kubectl describe`` (status and events) and the ``edgespec rank`` table, so
they say what was chosen, by how much it leads, what drives K, and what the constraints ruled out,
with units, in a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgespec.api.objective import ObjectiveKind
from edgespec.configspec.candidates import (
    CONSTRAINT_MAX_COST,
    CONSTRAINT_MAX_JOULES,
    CONSTRAINT_MEMORY,
    CONSTRAINT_MIN_GOODPUT,
    Candidate,
    NoSpeculation,
)

_HEADLINE: dict[str, str] = {
    "goodput": "Highest goodput",
    "cost": "Most tokens per USD",
    "energy": "Fewest joules per token",
    "weighted": "Best weighted score",
}


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 1024**3:.2f} GiB"


def metrics_phrase(c: Candidate) -> str:
    return (
        f"{c.goodput_tokens_per_s:.2f} tokens/s, {c.tokens_per_usd:,.0f} tokens/USD "
        f"({c.usd_per_million_tokens:.3f} USD per 1M), {c.joules_per_token:.3f} J/token"
    )


def _objective_value(kind: ObjectiveKind, c: Candidate) -> str:
    if kind == "goodput":
        return f"{c.goodput_tokens_per_s:.2f} tokens/s"
    if kind == "cost":
        return f"{c.tokens_per_usd:,.0f} tokens/USD"
    if kind == "energy":
        return f"{c.joules_per_token:.3f} J/token"
    return f"score {c.score:.3f}"


def _k_sentence(kind: ObjectiveKind, c: Candidate, k_min: int, k_max: int) -> str:
    if k_min == k_max:
        return f"K={c.k} is the only speculative length considered, so K was not chosen."
    drafting_s = c.k / c.draft_tokens_per_s
    per_token_s = 1.0 / c.draft_tokens_per_s
    if kind == "goodput":
        if c.verify_latency_s <= 0.0:
            return (
                f"Verification takes no time here (T_verify = 0), so a round costs only drafting "
                f"({per_token_s:.3f} s per draft token) and goodput is v_d (alpha + 1/K): K={c.k} maximises "
                f"alpha + 1/K (alpha={c.alpha:.2f})."
            )
        if c.k == k_min:
            return (
                f"K={c.k} is the shortest allowed: a longer K adds more drafting time ({per_token_s:.3f} s "
                f"per draft token, against {c.verify_latency_s:.2f} s to verify a round) than it adds in "
                "expected accepted tokens."
            )
        if c.k == k_max:
            return (
                f"K={c.k} is the longest allowed, and goodput may still rise beyond it: verification "
                f"({c.verify_latency_s:.2f} s per round) outweighs drafting ({drafting_s:.2f} s at "
                f"{c.draft_tokens_per_s:.1f} tokens/s), so extra draft tokens are nearly free."
            )
        return (
            f"K={c.k} balances drafting ({drafting_s:.2f} s per round at "
            f"{c.draft_tokens_per_s:.1f} tokens/s) against verification ({c.verify_latency_s:.2f} s): "
            "one more draft token would cost more time than it adds in expected accepted tokens."
        )
    if kind == "cost":
        edge = " (the shortest allowed)" if c.k == k_min else ""
        return (
            f"Tokens per USD depend only on acceptance, K and the target's price "
            f"({c.price_usd_per_million_tokens:.2f} USD per 1M), not on the device: each round pays for K "
            f"positions and commits K alpha + 1 tokens, so K={c.k}{edge} maximises alpha + 1/K "
            f"(alpha={c.alpha:.2f})."
        )
    if kind == "energy":
        if c.power_watts <= 0.0:
            return (
                f"The profile reports {c.power_watts:.1f} W while drafting, so this draft costs 0 J/token on "
                "the edge at every K; K did not matter for energy."
            )
        why = (
            "short rounds spend the least drafting on tokens that are then rejected"
            if c.k == k_min
            else "at this K acceptance is high enough that fewer drafted tokens are wasted per committed one"
        )
        return (
            f"Energy per token is drafting power times drafting time per committed token "
            f"({c.power_watts:.1f} W at {c.draft_tokens_per_s:.1f} tokens/s); {why} "
            f"(alpha={c.alpha:.2f} at K={c.k})."
        )
    return ""


TIE_BREAK = (
    "ties go to the draft model first in alphabetical order, then its quantisation, then the smaller K"
)
"""The documented, deterministic tie-break (the grid's rows are sorted; the first best cell wins)."""
_TIE = 1e-12
"""Relative lead at or below which two scores are reported as a tie (floating-point equality)."""


def _lead_sentence(kind: ObjectiveKind, choice: Candidate, runner_up: Candidate, margin: float | None) -> str:
    other = (
        f"the best other draft, {runner_up.draft_model} {runner_up.quantization} "
        f"(target {runner_up.target_model}) at K={runner_up.k} ({_objective_value(kind, runner_up)})"
    )
    tied = (margin is not None and margin <= _TIE) or (margin is None and choice.score == runner_up.score)
    if tied:
        return f"It ties with {other}; {TIE_BREAK}."
    if margin is None:  # an infinite or zero score on one side (0 J/token)
        return f"It leads {other}."
    if margin < 0.001:
        return f"It leads {other} by a relative {margin:.2g}, less than 0.1%."
    return f"It is {margin:.1%} ahead of {other}."


def selection_reason(
    *,
    kind: ObjectiveKind,
    choice: Candidate,
    runner_up: Candidate | None,
    margin: float | None,
    k_values: tuple[int, int],
    best: Mapping[str, float],
    weights: tuple[float, float, float] | None,
    configurations: int,
    excluded_by: Mapping[str, int],
    feasible: int,
    memory_checked: bool,
    memory_budget: float | None = None,
    no_speculation: NoSpeculation | None = None,
    speculation_gain: float | None = None,
) -> str:
    """Why ``choice`` won on its device class, in a few sentences."""
    parts = [
        f"{_HEADLINE[kind]} on {choice.device_class}: {choice.draft_model} {choice.quantization} "
        f"(target {choice.target_model}) with K={choice.k}: {metrics_phrase(choice)}."
    ]
    if runner_up is None:
        parts.append("It is the only draft that meets the constraints.")
    else:
        parts.append(_lead_sentence(kind, choice, runner_up, margin))
    if kind == "weighted" and weights is not None:
        parts.append(
            f"Weights (normalised): goodput {weights[0]:.2f}, cost {weights[1]:.2f}, "
            f"energy {weights[2]:.2f}; "
            f"the choice reaches {choice.goodput_tokens_per_s / best['goodput']:.0%} of the best goodput, "
            f"{choice.tokens_per_usd / best['cost']:.0%} of the best tokens per USD and "
            f"{_ratio(best['energy'], choice.joules_per_token):.0%} of the best tokens per joule "
            "of this class."
        )
    else:
        parts.append(_k_sentence(kind, choice, *k_values))
    excluded = configurations - feasible
    if excluded:
        detail = ", ".join(f"{name} {n}" for name, n in excluded_by.items() if n)
        parts.append(f"{excluded} of {configurations} configurations ruled out ({detail}).")
    if not memory_checked:
        parts.append(f"Memory fit not checked: no allocatable memory given for {choice.device_class}.")
    elif choice.memory_need_bytes is None:
        budget = f" the {gib(memory_budget)} budget" if memory_budget is not None else " the memory budget"
        parts.append(
            f"Memory need of {choice.draft_model} {choice.quantization} is unknown (its profile has neither "
            f"memoryBytes nor modelSizeBytes): assumed to fit{budget}."
        )
    if no_speculation is not None and speculation_gain is not None:
        parts.append(speculation_sentence(kind, choice, no_speculation, speculation_gain))
    parts.append(origin_sentence(choice.origin))
    return " ".join(p for p in parts if p)


def speculation_sentence(kind: ObjectiveKind, choice: Candidate, alone: NoSpeculation, gain: float) -> str:
    """Whether speculating beats the target decoding alone on the objective, and by how much."""
    if kind == "energy":
        return (
            "On edge energy speculation never pays: the target decoding alone drafts nothing, 0 J/token "
            f"on the edge (against {choice.joules_per_token:.3f}); the model counts no cloud energy."
        )
    if kind == "goodput":
        ours, theirs = choice.goodput_tokens_per_s, alone.goodput_tokens_per_s
        unit = f"{theirs:.2f} tokens/s"
    elif kind == "cost":
        ours, theirs = choice.tokens_per_usd, alone.tokens_per_usd
        unit = f"{theirs:,.0f} tokens/USD"
    else:
        ours, theirs = choice.score, alone.score
        unit = f"score {theirs:.3f}"
    if gain > 0.0:
        return f"Speculation pays: {gain:.1%} better than the target decoding alone ({unit})."
    return (
        f"Speculation does NOT pay here: the target decoding alone gives {unit}, "
        f"{theirs / ours - 1.0 if ours > 0 else float('inf'):.1%} better than this configuration."
    )


def origin_sentence(origin: str) -> str:
    """What the profile behind a prediction is; empty for a measured one."""
    if origin == "measured":
        return ""
    if origin == "unknown":
        return "The profile does not say how it was obtained (origin unknown), so it may not be measured."
    return f"The profile is {origin}, not measured on this device."


def _ratio(best_joules: float, joules: float) -> float:
    return 1.0 if joules <= 0.0 else best_joules / joules


def describe_constraint(name: str, limit: float) -> str:
    if name == CONSTRAINT_MEMORY:
        return f"memory budget {gib(limit)}"
    if name == CONSTRAINT_MIN_GOODPUT:
        return f"{name} >= {limit:g} tokens/s"
    if name == CONSTRAINT_MAX_JOULES:
        return f"{name} <= {limit:g} J/token"
    if name == CONSTRAINT_MAX_COST:
        return f"{name} <= {limit:g} USD per 1M tokens"
    return name


def reachable_phrase(name: str, value: float) -> str:
    """What the best configuration reaches on ``name`` when the other constraints are kept."""
    if name == CONSTRAINT_MEMORY:
        return f"the smallest memory need is {gib(value)}"
    if name == CONSTRAINT_MIN_GOODPUT:
        return f"the highest goodput reachable is {value:.2f} tokens/s"
    if name == CONSTRAINT_MAX_JOULES:
        return f"the lowest energy reachable is {value:.3f} J/token"
    return f"the lowest cost reachable is {value:.3f} USD per 1M tokens"


def infeasible_message(
    *,
    device_class: str,
    binding: str,
    limit: float,
    reachable: float | None,
    jointly_with: list[str],
    closest: Candidate,
    violations: Mapping[str, float],
    configurations: int,
) -> str:
    """Why nothing fits on ``device_class`` and what to relax."""
    text = (
        f"{device_class}: none of {configurations} configurations meets the constraints. "
        f"Binding constraint: {describe_constraint(binding, limit)}"
    )
    if reachable is not None:
        text += f"; keeping the other constraints, {reachable_phrase(binding, reachable)}"
    if jointly_with:
        text += f"; relaxing it alone is not enough, {', '.join(jointly_with)} also bind"
    unknown_memory = binding == CONSTRAINT_MEMORY and closest.memory_need_bytes is None
    missed = ", ".join(
        "memory (need unknown)" if name == CONSTRAINT_MEMORY and unknown_memory else f"{name} by {v:.0%}"
        for name, v in violations.items()
        if v > 0.0
    )
    text += (
        f". Closest configuration: {closest.draft_model} {closest.quantization} "
        f"(target {closest.target_model}) "
        f"K={closest.k} ({metrics_phrase(closest)}"
        + (f", needs {gib(closest.memory_need_bytes)}" if closest.memory_need_bytes else "")
        + f"), missing {missed}. "
        + (
            "Its profile has neither memoryBytes nor modelSizeBytes: add them to the EdgeProfile, or "
            "accept the risk with --assume-fits."
            if unknown_memory
            else f"Relax {binding}"
            + (" or give the device more memory" if binding == CONSTRAINT_MEMORY else "")
            + ", or profile other drafts."
        )
    )
    return text
