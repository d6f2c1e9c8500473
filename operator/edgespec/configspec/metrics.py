"""ConfigSpec's analytical model: goodput, tokens per dollar and joules per token, vectorised.

The formulas are those of ConfigSpec (Li et al., EuroSys 2026 TDIS workshop, arXiv 2604.09722), see
``shared/CONFIGSPEC.md``. Each round drafts K tokens (K / v_d seconds), is verified in T_verify
seconds, and commits the accepted prefix plus one token of the target's own: ``K * alpha(K) + 1``
tokens in expectation. The functions broadcast, so one call covers a whole ``ProfileGrid``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edgespec.configspec.grid import ProfileGrid

FloatArray = NDArray[np.float64]


def committed_tokens_per_round(alpha: ArrayLike, k: ArrayLike) -> FloatArray:
    """Expected tokens committed per round: accepted drafts plus the target's correction/bonus token."""
    return np.asarray(np.asarray(k, dtype=np.float64) * np.asarray(alpha, dtype=np.float64) + 1.0)


def goodput_tokens_per_s(
    alpha: ArrayLike,
    k: ArrayLike,
    draft_tokens_per_s: ArrayLike,
    verify_latency_s: ArrayLike,
    round_overhead_s: ArrayLike = 0.0,
) -> FloatArray:
    """G(K) = (K alpha(K) + 1) / (K / v_d + T_verify + o), committed tokens per second.

    ``o`` is the fixed edge time of a round that neither drafting K tokens nor verification covers
    (0 in the paper's model; measured by the profiler as ``roundOverheadS``)."""
    kf = np.asarray(k, dtype=np.float64)
    round_s = (
        kf / np.asarray(draft_tokens_per_s, dtype=np.float64)
        + np.asarray(verify_latency_s, dtype=np.float64)
        + np.asarray(round_overhead_s, dtype=np.float64)
    )
    return np.asarray(committed_tokens_per_round(alpha, kf) / round_s, dtype=np.float64)


def tokens_per_usd(alpha: ArrayLike, k: ArrayLike, price_usd_per_million_tokens: ArrayLike) -> FloatArray:
    """eta(K) = (alpha(K) + 1/K) / p: committed tokens per USD when each verified position costs p.

    Independent of the device: only acceptance, K and the target's price enter.
    """
    kf = np.asarray(k, dtype=np.float64)
    price_per_token = np.asarray(price_usd_per_million_tokens, dtype=np.float64) / 1e6
    return np.asarray((np.asarray(alpha, dtype=np.float64) + 1.0 / kf) / price_per_token, dtype=np.float64)


def joules_per_token(
    alpha: ArrayLike,
    k: ArrayLike,
    draft_tokens_per_s: ArrayLike,
    power_watts: ArrayLike,
    round_overhead_s: ArrayLike = 0.0,
) -> FloatArray:
    """E(K) = P (K / v_d + o) / (K alpha(K) + 1): edge drafting energy per committed token, joules
    (the round's fixed edge time ``o`` is edge work too)."""
    kf = np.asarray(k, dtype=np.float64)
    drafting_s = kf / np.asarray(draft_tokens_per_s, dtype=np.float64) + np.asarray(
        round_overhead_s, dtype=np.float64
    )
    return np.asarray(
        np.asarray(power_watts, dtype=np.float64) * drafting_s / committed_tokens_per_round(alpha, kf),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class GridMetrics:
    """The three metrics for every cell of a ``ProfileGrid`` (shape: profiles x K)."""

    goodput_tokens_per_s: FloatArray
    tokens_per_usd: FloatArray
    joules_per_token: FloatArray

    @property
    def usd_per_million_tokens(self) -> FloatArray:
        return np.asarray(1e6 / self.tokens_per_usd, dtype=np.float64)


def compute_metrics(grid: ProfileGrid) -> GridMetrics:
    """Goodput, tokens per USD and joules per token over the whole grid in three array expressions."""
    k = grid.k_values[np.newaxis, :]
    v_d = grid.draft_tokens_per_s[:, np.newaxis]
    assert grid.round_overhead_s is not None  # filled in by ProfileGrid
    overhead = grid.round_overhead_s[:, np.newaxis]
    return GridMetrics(
        goodput_tokens_per_s=goodput_tokens_per_s(grid.alpha, k, v_d, grid.verify_latency_s, overhead),
        tokens_per_usd=tokens_per_usd(grid.alpha, k, grid.price_usd_per_million_tokens[:, np.newaxis]),
        joules_per_token=joules_per_token(grid.alpha, k, v_d, grid.power_watts[:, np.newaxis], overhead),
    )
