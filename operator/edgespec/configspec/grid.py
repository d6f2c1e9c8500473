"""Profiles as numpy arrays: one row per profile, one column per speculative length K.

``build_grid`` turns ``EdgeProfileSpec`` objects (read from files or from the cluster, one shape)
into a ``ProfileGrid``: per-row drafting speed, power, target price, memory figures, and per-cell
alpha(K) (with where it came from, see ``acceptance``) and T_verify(K). Every later step (metrics,
constraints, selection, Pareto front) is array arithmetic over this grid.

Prices are not part of a profile (one target model may be bought at different prices): they come
from the caller, with the paper's two targets known by default (``DEFAULT_PRICES_USD_PER_MILLION``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edgespec.api.profile import EdgeProfileSpec, VerifyLatency
from edgespec.configspec.acceptance import ACCEPTANCE_SOURCES, alpha_on_grid

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

DEFAULT_K_VALUES: tuple[int, ...] = tuple(range(2, 11))
"""Speculative lengths used when no profile measured any K (the paper's range, 2 to 10)."""

DEFAULT_PRICES_USD_PER_MILLION: dict[str, float] = {
    "llama-3.1-70b": 0.90,
    "qwen3-32b": 0.59,
}
"""Verification prices of the paper's two targets, USD per million tokens (ConfigSpec, Li et al. 2026)."""


class MissingPriceError(ValueError):
    """A profile's target has no known price."""

    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)
        names = ", ".join(self.targets)
        example = self.targets[0]
        super().__init__(
            f"no price known for target(s) {names}; give one per target, e.g. --price {example}=0.90 "
            f"(USD per million tokens). Known by default: "
            + ", ".join(f"{k}={v}" for k, v in DEFAULT_PRICES_USD_PER_MILLION.items())
        )


def _price_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def price_for(target: str, prices_usd_per_million: Mapping[str, float] | None = None) -> float | None:
    """Price of ``target`` in USD per million tokens: the caller's prices first, then the defaults.

    Names match ignoring case and punctuation (``Llama-3.1-70B`` is ``llama-3.1-70b``).
    """
    wanted = _price_key(target)
    for table in (prices_usd_per_million or {}, DEFAULT_PRICES_USD_PER_MILLION):
        for name, price in table.items():
            if _price_key(name) == wanted:
                return float(price)
    return None


def verify_latency_on_grid(model: VerifyLatency, k_values: IntArray) -> FloatArray:
    """T_verify per K, seconds: measured points when present, else the linear model.

    Between measured K the points are interpolated linearly; beyond them the nearest measured value
    is extended with the model's per-token slope.
    """
    kf = k_values.astype(np.float64)
    if not model.measured:
        return np.asarray(model.network_rtt_s + model.fixed_s + model.per_token_s * kf, dtype=np.float64)
    ordered = sorted(model.measured, key=lambda p: p.k)
    mk = np.array([p.k for p in ordered], dtype=np.float64)
    ms = np.array([p.seconds for p in ordered], dtype=np.float64)
    latency = np.interp(kf, mk, ms)
    latency = np.where(kf < mk[0], ms[0] + model.per_token_s * (kf - mk[0]), latency)
    latency = np.where(kf > mk[-1], ms[-1] + model.per_token_s * (kf - mk[-1]), latency)
    return np.asarray(np.maximum(latency, 0.0), dtype=np.float64)


@dataclass(frozen=True)
class ProfileGrid:
    """Profiles as arrays. Row ``i`` is one profile (device class, draft, quantisation, target);
    column ``j`` is speculative length ``k_values[j]``."""

    device_class: tuple[str, ...]
    draft_model: tuple[str, ...]
    quantization: tuple[str, ...]
    target_model: tuple[str, ...]
    k_values: IntArray
    draft_tokens_per_s: FloatArray
    power_watts: FloatArray
    price_usd_per_million_tokens: FloatArray
    memory_bytes: IntArray
    """Measured resident memory need per row, bytes (0: not measured)."""
    model_size_bytes: IntArray
    """Draft model file size per row, bytes (0: unknown)."""
    alpha: FloatArray
    acceptance_source: NDArray[np.int8]
    """Per cell, an index into ``ACCEPTANCE_SOURCES``."""
    verify_latency_s: FloatArray
    origin: tuple[str, ...] = ()
    """Per row, the profile's origin (measured, imported, illustrative; unknown when absent)."""
    round_overhead_s: FloatArray | None = None
    """Per row, fixed edge time per round beyond K / v_d and T_verify, s (0 when not measured)."""
    target_per_token_s: FloatArray | None = None
    """Per row, the target's per-token time decoding alone (cloud-only), s; NaN when not measured."""
    target_ttft_s: FloatArray | None = None
    """Per row, the target's time to first token over the link, s; NaN when not measured."""
    device_names: tuple[str, ...] = field(init=False)
    device_index: NDArray[np.intp] = field(init=False)

    def __post_init__(self) -> None:
        names, index = np.unique(np.asarray(self.device_class, dtype=object), return_inverse=True)
        object.__setattr__(self, "device_names", tuple(str(n) for n in names))
        object.__setattr__(self, "device_index", np.asarray(index, dtype=np.intp).reshape(-1))
        n, nk = len(self.device_class), len(self.k_values)
        if not self.origin:
            object.__setattr__(self, "origin", ("unknown",) * n)
        if self.round_overhead_s is None:
            object.__setattr__(self, "round_overhead_s", np.zeros(n, dtype=np.float64))
        for name in ("target_per_token_s", "target_ttft_s"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, np.nan, dtype=np.float64))
        for name in ("alpha", "acceptance_source", "verify_latency_s"):
            if getattr(self, name).shape != (n, nk):
                raise ValueError(f"ProfileGrid.{name} must have shape ({n}, {nk})")

    @property
    def n_profiles(self) -> int:
        return len(self.device_class)

    @property
    def n_configurations(self) -> int:
        return self.n_profiles * len(self.k_values)

    def rows_of(self, device_class: str) -> NDArray[np.intp]:
        """Row indices of one device class."""
        return np.flatnonzero(self.device_index == self.device_names.index(device_class))

    def acceptance_source_name(self, row: int, column: int) -> str:
        return ACCEPTANCE_SOURCES[int(self.acceptance_source[row, column])]


def profile_key(spec: EdgeProfileSpec) -> tuple[str, str, str, str]:
    return (spec.device_class, spec.draft_model, spec.quantization, spec.target_model)


def build_grid(
    profiles: Sequence[EdgeProfileSpec],
    *,
    prices_usd_per_million: Mapping[str, float] | None = None,
    k_values: Sequence[int] | None = None,
    verify_latency_s: float | None = None,
) -> ProfileGrid:
    """Arrays for ``profiles`` over ``k_values``.

    ``k_values`` defaults to every K any profile measured (``DEFAULT_K_VALUES`` if none did).
    ``verify_latency_s``, when given, replaces every profile's T_verify (the paper's fixed-latency
    setting). Rows are sorted by (device class, draft, quantisation, target). Raises
    ``MissingPriceError`` when a target has no price, ``ValueError`` on duplicate profiles or an
    empty list.
    """
    if not profiles:
        raise ValueError("no profiles to rank; give at least one EdgeProfile")
    # rows in key order, not input order: a tie between equal scores is then broken the same way
    # whatever order the files or the API server list the profiles in (``explain.TIE_BREAK``)
    profiles = sorted(profiles, key=profile_key)
    seen: set[tuple[str, str, str, str]] = set()
    for spec in profiles:
        key = profile_key(spec)
        if key in seen:
            raise ValueError(
                f"duplicate profile for device class {key[0]}, draft {key[1]}, quantization {key[2]}, "
                f"target {key[3]}; keep one"
            )
        seen.add(key)
    if k_values is None:
        measured = sorted({p.k for spec in profiles for p in spec.acceptance})
        k_values = measured or list(DEFAULT_K_VALUES)
    if not k_values or min(k_values) < 1:
        raise ValueError(f"speculative lengths must be >= 1, got {list(k_values)}")
    ks = np.array(sorted(set(k_values)), dtype=np.int64)

    prices = [price_for(spec.target_model, prices_usd_per_million) for spec in profiles]
    missing = sorted(
        {spec.target_model for spec, price in zip(profiles, prices, strict=True) if price is None}
    )
    if missing:
        raise MissingPriceError(missing)
    if any(p is not None and p <= 0.0 for p in prices):
        raise ValueError("prices must be > 0 USD per million tokens")

    alphas = np.empty((len(profiles), len(ks)), dtype=np.float64)
    sources = np.empty((len(profiles), len(ks)), dtype=np.int8)
    latencies = np.empty((len(profiles), len(ks)), dtype=np.float64)
    for row, spec in enumerate(profiles):
        alphas[row], sources[row] = alpha_on_grid(spec.acceptance, spec.per_token_acceptance, ks)
        if verify_latency_s is None:
            latencies[row] = verify_latency_on_grid(spec.verify_latency, ks)
    if verify_latency_s is not None:
        if verify_latency_s < 0.0:
            raise ValueError("verify latency must be >= 0 seconds")
        latencies[:] = verify_latency_s

    return ProfileGrid(
        device_class=tuple(s.device_class for s in profiles),
        draft_model=tuple(s.draft_model for s in profiles),
        quantization=tuple(s.quantization for s in profiles),
        target_model=tuple(s.target_model for s in profiles),
        k_values=ks,
        draft_tokens_per_s=np.array([s.draft_tokens_per_s for s in profiles], dtype=np.float64),
        power_watts=np.array([s.power_watts for s in profiles], dtype=np.float64),
        price_usd_per_million_tokens=np.array(prices, dtype=np.float64),
        memory_bytes=np.array([s.memory_bytes for s in profiles], dtype=np.int64),
        model_size_bytes=np.array([s.model_size_bytes for s in profiles], dtype=np.int64),
        alpha=alphas,
        acceptance_source=sources,
        verify_latency_s=latencies,
        origin=tuple(s.origin or "unknown" for s in profiles),
        round_overhead_s=np.array([s.round_overhead_s for s in profiles], dtype=np.float64),
        target_per_token_s=np.array(
            [s.target_decode.per_token_s if s.target_decode else np.nan for s in profiles], dtype=np.float64
        ),
        target_ttft_s=np.array(
            [s.target_decode.ttft_s if s.target_decode else np.nan for s in profiles], dtype=np.float64
        ),
    )
