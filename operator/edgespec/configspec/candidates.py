"""The result types of a selection: a ``Candidate`` configuration, a device class's ``Selection``,
and, when nothing fits, an ``Infeasible`` verdict (raised by ``select`` as ``InfeasibleError``).

Plain frozen dataclasses, no behaviour beyond conversions: ``to_dict`` for JSON/YAML output (camelCase,
as on the API) and ``status_fields`` giving the keyword arguments of the API's status types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgespec.api.objective import ObjectiveKind

CONSTRAINT_MEMORY = "memory"
CONSTRAINT_MIN_GOODPUT = "minGoodputTokensPerS"
CONSTRAINT_MAX_JOULES = "maxJoulesPerToken"
CONSTRAINT_MAX_COST = "maxUsdPerMillionTokens"
CONSTRAINT_NAMES: tuple[str, ...] = (
    CONSTRAINT_MEMORY,
    CONSTRAINT_MIN_GOODPUT,
    CONSTRAINT_MAX_JOULES,
    CONSTRAINT_MAX_COST,
)
"""Names a binding constraint can have: the ``Constraints`` field (camelCase), or ``memory``."""


@dataclass(frozen=True)
class Candidate:
    """One configuration (draft model, quantisation, target, K) on one device class, with predictions."""

    device_class: str
    draft_model: str
    quantization: str
    target_model: str
    k: int
    goodput_tokens_per_s: float
    tokens_per_usd: float
    joules_per_token: float
    alpha: float
    acceptance_source: str
    draft_tokens_per_s: float
    power_watts: float
    verify_latency_s: float
    price_usd_per_million_tokens: float
    memory_need_bytes: int | None
    """Bytes the draft needs on the node; None when the profile gives neither memory nor model size."""
    score: float
    """The objective's score, higher is better (goodput, tokens per USD, tokens per joule, or weighted)."""
    origin: str = "unknown"
    """The profile's origin: measured, imported, illustrative, or unknown when it does not say."""

    @property
    def usd_per_million_tokens(self) -> float:
        return 1e6 / self.tokens_per_usd

    @property
    def label(self) -> str:
        return f"{self.draft_model} {self.quantization} K={self.k}"

    def choice_fields(self) -> dict[str, Any]:
        """Keyword arguments of the API's ``ConfigChoice`` (status of a SpeculativeDeployment)."""
        return {
            "draft_model": self.draft_model,
            "quantization": self.quantization,
            "k": self.k,
            "predicted_goodput_tokens_per_s": self.goodput_tokens_per_s,
            "predicted_tokens_per_usd": self.tokens_per_usd,
            "predicted_joules_per_token": self.joules_per_token,
            "acceptance_source": self.acceptance_source,
            "origin": self.origin,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "deviceClass": self.device_class,
            "draftModel": self.draft_model,
            "quantization": self.quantization,
            "targetModel": self.target_model,
            "k": self.k,
            "goodputTokensPerS": self.goodput_tokens_per_s,
            "tokensPerUsd": self.tokens_per_usd,
            "usdPerMillionTokens": self.usd_per_million_tokens,
            "joulesPerToken": self.joules_per_token,
            "alpha": self.alpha,
            "acceptanceSource": self.acceptance_source,
            "draftTokensPerS": self.draft_tokens_per_s,
            "powerWatts": self.power_watts,
            "verifyLatencyS": self.verify_latency_s,
            "priceUsdPerMillionTokens": self.price_usd_per_million_tokens,
            "memoryNeedBytes": self.memory_need_bytes,
            "origin": self.origin,
            "score": self.score,
        }


@dataclass(frozen=True)
class NoSpeculation:
    """The target decoding alone on a device class (cloud-only decoding), from the profiles'
    ``targetDecode``: every token is the target's own, so it is one paid position, and the edge
    drafts nothing (0 J/token on the edge; the model counts edge energy only)."""

    device_class: str
    target_model: str
    goodput_tokens_per_s: float
    tokens_per_usd: float
    joules_per_token: float
    ttft_s: float | None
    score: float
    """The objective's score, on the same scale as the candidates' (``inf`` for energy: 0 J/token)."""
    feasible: bool
    """Meets the constraints that apply to it (goodput floor, cost and energy ceilings)."""

    @property
    def usd_per_million_tokens(self) -> float:
        return 1e6 / self.tokens_per_usd

    def status_fields(self) -> dict[str, Any]:
        """Keyword arguments of the API's ``NoSpeculation``."""
        return {
            "predicted_goodput_tokens_per_s": self.goodput_tokens_per_s,
            "predicted_tokens_per_usd": self.tokens_per_usd,
            "predicted_joules_per_token": self.joules_per_token,
            "ttft_s": self.ttft_s,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "goodputTokensPerS": self.goodput_tokens_per_s,
            "tokensPerUsd": self.tokens_per_usd,
            "usdPerMillionTokens": self.usd_per_million_tokens,
            "joulesPerToken": self.joules_per_token,
            "ttftS": self.ttft_s,
            "score": self.score,
            "feasible": self.feasible,
        }


@dataclass(frozen=True)
class Selection:
    """What was chosen for one device class, what came next, and why."""

    device_class: str
    objective: ObjectiveKind
    choice: Candidate
    runners_up: tuple[Candidate, ...]
    """The best configuration of each other (draft, quantisation, target), best first."""
    margin: float | None
    """Relative lead of the choice's score over the first runner-up (0.05: 5% better); None if alone."""
    next_k: Candidate | None
    """The same draft at its next-best K (how sharp the K optimum is); None if only one K is feasible."""
    pareto_front: tuple[Candidate, ...]
    """Feasible configurations no other beats on goodput, cost and energy at once; by goodput."""
    reason: str
    configurations: int
    feasible: int
    excluded_by: dict[str, int] = field(default_factory=dict)
    """Configurations failing each constraint (one may fail several)."""
    memory_budget_bytes: int | None = None
    """Allocatable memory less headroom; None when the device's memory was not given."""
    memory_assumed: bool = False
    """A memory budget was given but the choice's need is unknown: it was assumed to fit."""
    no_speculation: NoSpeculation | None = None
    """The target decoding alone, when the class's profiles measured it."""
    speculation_gain: float | None = None
    """The choice's relative lead over ``no_speculation`` on the objective; negative: it does not pay."""

    @property
    def speculation_pays(self) -> bool | None:
        """False when the target decoding alone beats the choice; None when not measured."""
        return None if self.speculation_gain is None else self.speculation_gain > 0.0

    def status_fields(self, fallback_requested: bool = False) -> dict[str, Any]:
        """Keyword arguments of the API's ``DeviceClassSelection`` (all but ``selected_at``).

        ``fallback_requested``: the deployment asks for cloud-only decoding where speculation does not
        pay (``spec.cloudOnlyFallback``); where it does not pay, as the profiles measured, the class
        runs cloud-only (``mode``) and the reason says so."""
        reason = self.reason
        cloud_only = fallback_requested and self.speculation_pays is False
        if cloud_only:
            reason += (
                " spec.cloudOnlyFallback: this class runs cloud-only, since speculation does not pay "
                "here: its draft servers load no draft model and stream the verifier's own generation; "
                "the configuration above is what it would speculate with."
            )
        return {
            "mode": "cloudOnly" if cloud_only else "speculative",
            **self.choice.choice_fields(),
            "memory_assumed": self.memory_assumed,
            "no_speculation": None if self.no_speculation is None else self.no_speculation.status_fields(),
            "speculation_gain": self.speculation_gain,
            "reason": reason,
            "margin": self.margin,
            "runners_up": [c.choice_fields() for c in self.runners_up],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "deviceClass": self.device_class,
            "objective": self.objective,
            "choice": self.choice.to_dict(),
            "margin": self.margin,
            "reason": self.reason,
            "nextK": None if self.next_k is None else self.next_k.to_dict(),
            "runnersUp": [c.to_dict() for c in self.runners_up],
            "paretoFront": [c.to_dict() for c in self.pareto_front],
            "configurations": self.configurations,
            "feasible": self.feasible,
            "excludedBy": dict(self.excluded_by),
            "memoryBudgetBytes": self.memory_budget_bytes,
            "memoryAssumed": self.memory_assumed,
            "noSpeculation": None if self.no_speculation is None else self.no_speculation.to_dict(),
            "speculationGain": self.speculation_gain,
        }


@dataclass(frozen=True)
class Infeasible:
    """No configuration of a device class meets the constraints: which one binds, and what came closest."""

    device_class: str
    binding_constraint: str
    """One of ``CONSTRAINT_NAMES``: the constraint whose relaxation frees the most configurations."""
    closest: Candidate
    """The configuration with the smallest total relative violation."""
    violations: dict[str, float]
    """Relative violation of each constraint by ``closest`` (0.25: misses the limit by 25%)."""
    message: str
    configurations: int
    excluded_by: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "deviceClass": self.device_class,
            "bindingConstraint": self.binding_constraint,
            "closest": self.closest.to_dict(),
            "violations": dict(self.violations),
            "message": self.message,
            "configurations": self.configurations,
            "excludedBy": dict(self.excluded_by),
        }


class InfeasibleError(ValueError):
    """Raised by ``select`` when at least one device class has no feasible configuration."""

    def __init__(self, infeasible: tuple[Infeasible, ...], selections: dict[str, Selection]) -> None:
        self.infeasible = infeasible
        self.selections = selections
        super().__init__("\n".join(i.message for i in infeasible))
