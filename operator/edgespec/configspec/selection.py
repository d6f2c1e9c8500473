"""Selection: per device class, the configuration that best serves the objective within the constraints.

``rank`` takes profiles, an ``Objective`` and ``Constraints`` and returns, per device class, either a
``Selection`` (the choice, the best configuration of each other draft, the margin, the Pareto front
and a reason) or an ``Infeasible`` verdict naming the binding constraint and the closest
configuration. ``select`` is the strict form the operator calls: selections, or ``InfeasibleError``.
Everything is array arithmetic over the ``ProfileGrid``; only the handful of reported configurations
become Python objects.

Scores are "higher is better": goodput (tokens/s), tokens per USD, tokens per joule (1 / E), or for a
weighted objective the normalised weights times each metric relative to the best feasible value of
the device class (energy as best joules per token over the configuration's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgespec.api.objective import Constraints, Objective
from edgespec.api.profile import EdgeProfileSpec
from edgespec.configspec.acceptance import ACCEPTANCE_SOURCES
from edgespec.configspec.candidates import (
    CONSTRAINT_MAX_COST,
    CONSTRAINT_MAX_JOULES,
    CONSTRAINT_MEMORY,
    CONSTRAINT_MIN_GOODPUT,
    Candidate,
    Infeasible,
    InfeasibleError,
    NoSpeculation,
    Selection,
)
from edgespec.configspec.explain import infeasible_message, selection_reason
from edgespec.configspec.grid import ProfileGrid, build_grid
from edgespec.configspec.metrics import GridMetrics, compute_metrics
from edgespec.configspec.pareto import pareto_mask

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class MixedTargetsError(ValueError):
    """Profiles against several target models were given to one ranking: drafts verified by different
    targets produce different text at different prices, so they are never ranked against each other."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)
        super().__init__(
            f"the profiles are against {len(self.targets)} target models ({', '.join(self.targets)}); "
            f"drafts for different targets are not comparable: choose one with --target "
            f"(e.g. --target {self.targets[0]}), or rank each target separately"
        )


@dataclass(frozen=True)
class Ranking:
    """The outcome for every device class of a grid."""

    grid: ProfileGrid
    metrics: GridMetrics
    objective: Objective
    constraints: Constraints
    selections: dict[str, Selection]
    infeasible: dict[str, Infeasible]
    scores: dict[str, FloatArray] = field(default_factory=dict)
    """Per device class, the objective score of its rows x K (-inf where a constraint fails)."""
    need: NDArray[np.int64] | None = None
    """Per row, the memory the draft needs (bytes; 0 unknown)."""

    def candidate_at(self, device: str, draft_model: str, quantization: str, k: int) -> Candidate | None:
        """One configuration of ``device`` with its predictions and score; None if not on the grid."""
        rows = self.grid.rows_of(device)
        cols = np.flatnonzero(self.grid.k_values == k)
        if device not in self.scores or not len(cols):
            return None
        for local_row, row in enumerate(rows):
            if (self.grid.draft_model[row], self.grid.quantization[row]) == (draft_model, quantization):
                assert self.need is not None
                score = self.scores[device]
                return _candidate(
                    self.grid, self.metrics, self.need, score, int(row), int(cols[0]), local_row
                )
        return None


def memory_need_bytes(grid: ProfileGrid, constraints: Constraints) -> NDArray[np.int64]:
    """Per row, bytes the draft needs: measured memory, else model size + KV cache + overhead (0: unknown)."""
    estimated = grid.model_size_bytes + constraints.kv_cache() + constraints.runtime_overhead()
    need = np.where(
        grid.memory_bytes > 0, grid.memory_bytes, np.where(grid.model_size_bytes > 0, estimated, 0)
    )
    return np.asarray(need, dtype=np.int64)


@dataclass(frozen=True)
class _Checks:
    """Per constraint: the limit, a pass mask and a relative violation (>0 fails) over cells."""

    limits: dict[str, float]
    passes: dict[str, BoolArray]
    violation: dict[str, FloatArray]

    def feasible(self, shape: tuple[int, ...], skip: str | None = None) -> BoolArray:
        mask = np.ones(shape, dtype=np.bool_)
        for name, ok in self.passes.items():
            if name != skip:
                mask &= ok
        return mask


def _checks(
    constraints: Constraints,
    goodput: FloatArray,
    joules: FloatArray,
    usd_per_million: FloatArray,
    need: NDArray[np.int64],
    budget: float | None,
    assume_fits: bool = False,
) -> _Checks:
    limits: dict[str, float] = {}
    passes: dict[str, BoolArray] = {}
    violation: dict[str, FloatArray] = {}
    if budget is not None:
        need_cells = np.broadcast_to(need[:, np.newaxis].astype(np.float64), goodput.shape)
        unknown = need_cells <= 0.0
        limits[CONSTRAINT_MEMORY] = budget
        # an unknown need is not a fit: it passes only when the caller says to assume it
        passes[CONSTRAINT_MEMORY] = np.where(unknown, assume_fits, need_cells <= budget)
        violation[CONSTRAINT_MEMORY] = np.where(
            unknown, 0.0 if assume_fits else 1.0, need_cells / max(budget, 1.0) - 1.0
        )
    if constraints.min_goodput_tokens_per_s is not None:
        floor = constraints.min_goodput_tokens_per_s
        limits[CONSTRAINT_MIN_GOODPUT] = floor
        passes[CONSTRAINT_MIN_GOODPUT] = goodput >= floor
        with np.errstate(divide="ignore", over="ignore"):
            shortfall = 1.0 - goodput / floor if floor > 0 else np.full_like(goodput, -1.0)
        violation[CONSTRAINT_MIN_GOODPUT] = shortfall
    if constraints.max_joules_per_token is not None:
        ceiling = constraints.max_joules_per_token
        limits[CONSTRAINT_MAX_JOULES] = ceiling
        passes[CONSTRAINT_MAX_JOULES] = joules <= ceiling
        violation[CONSTRAINT_MAX_JOULES] = joules / ceiling - 1.0
    if constraints.max_usd_per_million_tokens is not None:
        ceiling = constraints.max_usd_per_million_tokens
        limits[CONSTRAINT_MAX_COST] = ceiling
        passes[CONSTRAINT_MAX_COST] = usd_per_million <= ceiling
        violation[CONSTRAINT_MAX_COST] = usd_per_million / ceiling - 1.0
    return _Checks(limits, passes, violation)


def _scores(
    objective: Objective,
    goodput: FloatArray,
    tokens_per_usd: FloatArray,
    joules: FloatArray,
    feasible: BoolArray,
) -> tuple[FloatArray, dict[str, float]]:
    """Objective score per cell (higher is better) and the best feasible value of each metric."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tokens_per_joule = np.where(joules > 0.0, 1.0 / joules, np.inf)
    any_feasible = bool(feasible.any())
    best = {
        "goodput": float(goodput[feasible].max()) if any_feasible else float("nan"),
        "cost": float(tokens_per_usd[feasible].max()) if any_feasible else float("nan"),
        "energy": float(joules[feasible].min()) if any_feasible else float("nan"),
    }
    if objective.kind == "goodput":
        return goodput, best
    if objective.kind == "cost":
        return tokens_per_usd, best
    if objective.kind == "energy":
        return np.asarray(tokens_per_joule, dtype=np.float64), best
    assert objective.weights is not None  # the Objective validator guarantees it
    w_goodput, w_cost, w_energy = objective.weights.normalised()
    with np.errstate(divide="ignore", invalid="ignore"):
        energy_part = np.where(joules > 0.0, best["energy"] / joules, 1.0)
        score = (
            w_goodput * goodput / best["goodput"]
            + w_cost * tokens_per_usd / best["cost"]
            + w_energy * energy_part
        )
    return np.asarray(score, dtype=np.float64), best


def _no_speculation(
    grid: ProfileGrid,
    rows: NDArray[np.intp],
    device: str,
    objective: Objective,
    constraints: Constraints,
    best: Mapping[str, float],
) -> NoSpeculation | None:
    """The target decoding alone on ``device``, scored like the candidates; None when no profile of
    the class measured it (the median when several did: they measure one target over one link)."""
    assert grid.target_per_token_s is not None and grid.target_ttft_s is not None
    per_token = grid.target_per_token_s[rows]
    measured = np.isfinite(per_token)
    if not measured.any():
        return None
    goodput = 1.0 / float(np.median(per_token[measured]))
    tokens_per_usd_ = 1e6 / float(grid.price_usd_per_million_tokens[rows[0]])
    ttft = grid.target_ttft_s[rows][measured]
    if objective.kind == "goodput":
        score = goodput
    elif objective.kind == "cost":
        score = tokens_per_usd_
    elif objective.kind == "energy":
        score = float("inf")  # 0 J/token on the edge
    else:
        assert objective.weights is not None
        w_goodput, w_cost, w_energy = objective.weights.normalised()
        score = w_goodput * goodput / best["goodput"] + w_cost * tokens_per_usd_ / best["cost"] + w_energy
    floor, ceiling = constraints.min_goodput_tokens_per_s, constraints.max_usd_per_million_tokens
    feasible = (floor is None or goodput >= floor) and (ceiling is None or 1e6 / tokens_per_usd_ <= ceiling)
    return NoSpeculation(
        device_class=device,
        target_model=grid.target_model[int(rows[0])],
        goodput_tokens_per_s=goodput,
        tokens_per_usd=tokens_per_usd_,
        joules_per_token=0.0,
        ttft_s=float(np.median(ttft)) if np.isfinite(ttft).any() else None,
        score=score,
        feasible=bool(feasible),
    )


def _gain(choice: float, baseline: float) -> float:
    """Relative lead of ``choice`` over ``baseline`` (higher-is-better scores); -1 against an infinite one."""
    if np.isinf(baseline):
        return 0.0 if np.isinf(choice) else -1.0
    return choice / baseline - 1.0 if baseline > 0.0 else float("inf")


def _candidate(
    grid: ProfileGrid,
    metrics: GridMetrics,
    need: NDArray[np.int64],
    score: FloatArray,
    row: int,
    col: int,
    local_row: int,
) -> Candidate:
    return Candidate(
        device_class=grid.device_class[row],
        draft_model=grid.draft_model[row],
        quantization=grid.quantization[row],
        target_model=grid.target_model[row],
        k=int(grid.k_values[col]),
        goodput_tokens_per_s=float(metrics.goodput_tokens_per_s[row, col]),
        tokens_per_usd=float(metrics.tokens_per_usd[row, col]),
        joules_per_token=float(metrics.joules_per_token[row, col]),
        alpha=float(grid.alpha[row, col]),
        acceptance_source=ACCEPTANCE_SOURCES[int(grid.acceptance_source[row, col])],
        draft_tokens_per_s=float(grid.draft_tokens_per_s[row]),
        power_watts=float(grid.power_watts[row]),
        verify_latency_s=float(grid.verify_latency_s[row, col]),
        price_usd_per_million_tokens=float(grid.price_usd_per_million_tokens[row]),
        memory_need_bytes=int(need[row]) if need[row] > 0 else None,
        origin=grid.origin[row],
        score=float(score[local_row, col]),
    )


def _margin(choice: float, runner_up: float) -> float | None:
    if not (np.isfinite(choice) and np.isfinite(runner_up)) or runner_up <= 0.0:
        return None
    return choice / runner_up - 1.0


def rank_grid(
    grid: ProfileGrid,
    objective: Objective | None = None,
    constraints: Constraints | None = None,
    *,
    metrics: GridMetrics | None = None,
    device_memory_bytes: Mapping[str, int] | None = None,
    runners_up: int = 3,
    pareto: bool = True,
    assume_fits: bool = False,
) -> Ranking:
    """Rank every device class of ``grid``; see ``rank`` for the arguments."""
    targets = sorted(set(grid.target_model))
    if len(targets) > 1:
        raise MixedTargetsError(targets)
    objective = objective or Objective()
    constraints = constraints or Constraints()
    metrics = metrics or compute_metrics(grid)
    need = memory_need_bytes(grid, constraints)
    memory = device_memory_bytes or {}
    k_span = (int(grid.k_values.min()), int(grid.k_values.max()))
    selections: dict[str, Selection] = {}
    infeasible: dict[str, Infeasible] = {}
    scores: dict[str, FloatArray] = {}

    for device in grid.device_names:
        rows = grid.rows_of(device)
        goodput = metrics.goodput_tokens_per_s[rows]
        cost = metrics.tokens_per_usd[rows]
        joules = metrics.joules_per_token[rows]
        allocatable = memory.get(device)
        budget = None if allocatable is None else allocatable * (1.0 - constraints.memory_headroom_fraction)
        checks = _checks(constraints, goodput, joules, 1e6 / cost, need[rows], budget, assume_fits)
        feasible = checks.feasible(goodput.shape) & np.isfinite(goodput) & np.isfinite(cost)
        excluded_by = {name: int((~ok).sum()) for name, ok in checks.passes.items()}
        n_configs = int(goodput.size)

        if not feasible.any():
            infeasible[device] = _infeasible(
                grid, metrics, need, rows, device, checks, n_configs, excluded_by
            )
            continue

        score, best = _scores(objective, goodput, cost, joules, feasible)
        masked = np.where(feasible, score, -np.inf)
        scores[device] = masked
        local_row, col = (int(i) for i in np.unravel_index(int(np.argmax(masked)), masked.shape))
        choice = _candidate(grid, metrics, need, score, int(rows[local_row]), col, local_row)

        row_best_col = np.argmax(masked, axis=1)
        row_best = masked[np.arange(len(rows)), row_best_col]
        # a feasible row has a score above -inf (an energy score is +inf at 0 J/token: still a contender)
        contenders = np.flatnonzero((row_best > -np.inf) & (np.arange(len(rows)) != local_row))
        if runners_up > 0 and len(contenders) > runners_up:  # only the best few need sorting
            contenders = contenders[np.argpartition(-row_best[contenders], runners_up - 1)[:runners_up]]
        others = contenders[np.argsort(-row_best[contenders], kind="stable")][: max(runners_up, 0)]
        alternatives = tuple(
            _candidate(grid, metrics, need, score, int(rows[r]), int(row_best_col[r]), int(r)) for r in others
        )
        same_row = masked[local_row].copy()
        same_row[col] = -np.inf
        next_k = (
            _candidate(grid, metrics, need, score, int(rows[local_row]), int(np.argmax(same_row)), local_row)
            if same_row.max() > -np.inf
            else None
        )
        front: tuple[Candidate, ...] = ()
        if pareto:
            cells = np.flatnonzero(feasible.ravel())
            on_front = cells[pareto_mask(goodput.ravel()[cells], cost.ravel()[cells], joules.ravel()[cells])]
            members = [divmod(int(i), goodput.shape[1]) for i in on_front]
            front = tuple(
                sorted(
                    (_candidate(grid, metrics, need, score, int(rows[r]), c, r) for r, c in members),
                    key=lambda cand: -cand.goodput_tokens_per_s,
                )
            )
        margin = _margin(choice.score, alternatives[0].score) if alternatives else None
        baseline = _no_speculation(grid, rows, device, objective, constraints, best)
        gain = None if baseline is None else _gain(choice.score, baseline.score)
        reason = selection_reason(
            kind=objective.kind,
            choice=choice,
            runner_up=alternatives[0] if alternatives else None,
            margin=margin,
            k_values=k_span,
            best=best,
            weights=objective.weights.normalised() if objective.weights else None,
            configurations=n_configs,
            excluded_by=excluded_by,
            feasible=int(feasible.sum()),
            memory_checked=budget is not None,
            memory_budget=budget,
            no_speculation=baseline,
            speculation_gain=gain,
        )
        selections[device] = Selection(
            device_class=device,
            objective=objective.kind,
            choice=choice,
            runners_up=alternatives,
            margin=margin,
            next_k=next_k,
            pareto_front=front,
            reason=reason,
            configurations=n_configs,
            feasible=int(feasible.sum()),
            excluded_by=excluded_by,
            memory_budget_bytes=None if budget is None else int(budget),
            memory_assumed=budget is not None and choice.memory_need_bytes is None,
            no_speculation=baseline,
            speculation_gain=gain,
        )
    return Ranking(grid, metrics, objective, constraints, selections, infeasible, scores, need)


def _infeasible(
    grid: ProfileGrid,
    metrics: GridMetrics,
    need: NDArray[np.int64],
    rows: NDArray[np.intp],
    device: str,
    checks: _Checks,
    n_configs: int,
    excluded_by: dict[str, int],
) -> Infeasible:
    """Name the binding constraint: the one whose relaxation alone frees the most configurations
    (or, when no single relaxation is enough, the one failed by the most); the closest configuration
    is the one with the smallest summed relative violation."""
    shape = metrics.goodput_tokens_per_s[rows].shape
    freed = {name: int(checks.feasible(shape, skip=name).sum()) for name in checks.passes}
    if any(freed.values()):
        binding = max(freed, key=lambda name: freed[name])
        jointly: list[str] = []
    else:
        binding = max(excluded_by, key=lambda name: excluded_by[name])
        jointly = [name for name in checks.passes if name != binding and excluded_by[name]]

    total = np.zeros(shape, dtype=np.float64)
    for v in checks.violation.values():
        total += np.maximum(v, 0.0)
    local_row, col = (int(i) for i in np.unravel_index(int(np.argmin(total)), shape))
    closest = _candidate(grid, metrics, need, -total, int(rows[local_row]), col, local_row)
    violations = {name: float(max(v[local_row, col], 0.0)) for name, v in checks.violation.items()}

    reachable: float | None = None
    others_ok = checks.feasible(shape, skip=binding)
    if others_ok.any():
        values = {
            CONSTRAINT_MEMORY: np.broadcast_to(
                np.where(need[rows] > 0, need[rows], np.inf)[:, np.newaxis], shape
            ).astype(np.float64),
            CONSTRAINT_MIN_GOODPUT: metrics.goodput_tokens_per_s[rows],
            CONSTRAINT_MAX_JOULES: metrics.joules_per_token[rows],
            CONSTRAINT_MAX_COST: metrics.usd_per_million_tokens[rows],
        }[binding][others_ok]
        reachable = float(values.max() if binding == CONSTRAINT_MIN_GOODPUT else values.min())
        if not np.isfinite(reachable):  # every need unknown
            reachable = None
    message = infeasible_message(
        device_class=device,
        binding=binding,
        limit=checks.limits[binding],
        reachable=reachable,
        jointly_with=jointly,
        closest=closest,
        violations=violations,
        configurations=n_configs,
    )
    return Infeasible(
        device_class=device,
        binding_constraint=binding,
        closest=closest,
        violations=violations,
        message=message,
        configurations=n_configs,
        excluded_by=excluded_by,
    )


def rank(
    profiles: Sequence[EdgeProfileSpec],
    objective: Objective | None = None,
    constraints: Constraints | None = None,
    *,
    prices_usd_per_million: Mapping[str, float] | None = None,
    device_memory_bytes: Mapping[str, int] | None = None,
    k_values: Sequence[int] | None = None,
    verify_latency_s: float | None = None,
    target_model: str | None = None,
    device_classes: Sequence[str] | None = None,
    runners_up: int = 3,
    assume_fits: bool = False,
) -> Ranking:
    """Rank the configurations of ``profiles`` for each device class.

    - ``objective``/``constraints``: the API types (defaults: goodput, no constraints).
    - ``prices_usd_per_million``: target name -> USD per million tokens, over the built-in defaults.
    - ``device_memory_bytes``: device class -> allocatable memory; classes left out are not checked.
      A profile with no memory figures (neither ``memoryBytes`` nor ``modelSizeBytes``) has an unknown
      need: with a budget it is infeasible unless ``assume_fits`` (then the reason says so).
    - ``k_values``: speculative lengths to consider (default: those the profiles measured).
    - ``verify_latency_s``: a fixed T_verify for every profile (default: each profile's own).
    - ``target_model``/``device_classes``: keep only profiles of that target / those classes.

    Drafts verified by different targets are never compared: with profiles for several targets,
    ``target_model`` is required (``MixedTargetsError`` otherwise); ``rank_per_target`` ranks each.
    """
    chosen = list(profiles)
    if target_model is not None:
        chosen = [p for p in chosen if p.target_model == target_model]
        if not chosen:
            known = sorted({p.target_model for p in profiles})
            raise ValueError(f"no profile has target {target_model!r}; the profiles have: {', '.join(known)}")
    else:
        targets = sorted({p.target_model for p in chosen})
        if len(targets) > 1:
            raise MixedTargetsError(targets)
    if device_classes is not None:
        wanted = set(device_classes)
        unknown = wanted - {p.device_class for p in chosen}
        if unknown:
            known = sorted({p.device_class for p in chosen})
            raise ValueError(
                f"no profile for device class(es) {', '.join(sorted(unknown))}; "
                f"the profiles have: {', '.join(known)}"
            )
        chosen = [p for p in chosen if p.device_class in wanted]
    grid = build_grid(
        chosen,
        prices_usd_per_million=prices_usd_per_million,
        k_values=k_values,
        verify_latency_s=verify_latency_s,
    )
    return rank_grid(
        grid,
        objective,
        constraints,
        device_memory_bytes=device_memory_bytes,
        runners_up=runners_up,
        assume_fits=assume_fits,
    )


def rank_per_target(
    profiles: Sequence[EdgeProfileSpec],
    objective: Objective | None = None,
    constraints: Constraints | None = None,
    *,
    target_model: str | None = None,
    **options: Any,
) -> dict[str, Ranking]:
    """One ``Ranking`` per target model of ``profiles`` (only ``target_model``'s when given), by target
    name. Keyword options as for ``rank``; no ranking ever holds two targets."""
    targets = [target_model] if target_model is not None else sorted({p.target_model for p in profiles})
    return {
        target: rank(profiles, objective, constraints, target_model=target, **options) for target in targets
    }


def select(
    profiles: Sequence[EdgeProfileSpec],
    objective: Objective | None = None,
    constraints: Constraints | None = None,
    *,
    prices_usd_per_million: Mapping[str, float] | None = None,
    device_memory_bytes: Mapping[str, int] | None = None,
    k_values: Sequence[int] | None = None,
    verify_latency_s: float | None = None,
    target_model: str | None = None,
    device_classes: Sequence[str] | None = None,
    runners_up: int = 3,
    assume_fits: bool = False,
) -> dict[str, Selection]:
    """The selection per device class; raises ``InfeasibleError`` (with the feasible ones attached)
    when any class has no configuration meeting the constraints. Arguments as for ``rank``."""
    ranking = rank(
        profiles,
        objective,
        constraints,
        prices_usd_per_million=prices_usd_per_million,
        device_memory_bytes=device_memory_bytes,
        k_values=k_values,
        verify_latency_s=verify_latency_s,
        target_model=target_model,
        device_classes=device_classes,
        runners_up=runners_up,
        assume_fits=assume_fits,
    )
    if ranking.infeasible:
        raise InfeasibleError(tuple(ranking.infeasible.values()), ranking.selections)
    return ranking.selections
