"""Acceptance alpha(K) on a grid of speculative lengths, from whatever a profile measured.

A profile carries either measured alpha per K, or a per-token acceptance estimate, or both. This
module turns that into one alpha per K of the grid and records where each value came from:
``measured`` (the profile has that K), ``interpolated`` (linear between the measured K around it),
``geometric`` (the standard model, independent per-token acceptance ``a``: the expected number of
accepted draft tokens out of K is ``a + a^2 + ... + a^K``), or ``extrapolated`` (beyond the measured
K: the geometric curve of the per-token acceptance that best explains the measured points, scaled to
meet the nearest measured point, so the curve stays continuous).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from edgespec.api.profile import AcceptancePoint

ACCEPTANCE_SOURCES: tuple[str, ...] = ("measured", "interpolated", "geometric", "extrapolated")
"""Names of the acceptance source codes stored in ``ProfileGrid.acceptance_source``."""
MEASURED, INTERPOLATED, GEOMETRIC, EXTRAPOLATED = range(4)

FloatArray = NDArray[np.float64]


def geometric_alpha(
    per_token_acceptance: float | FloatArray, k: int | NDArray[np.int64] | FloatArray
) -> FloatArray:
    """alpha(K) under independent per-token acceptance ``a``: ``(a + a^2 + ... + a^K) / K``.

    Evaluated as ``a (1 - a^K) / ((1 - a) K)`` in a form that stays exact near ``a = 1`` (no
    tolerance, no snapping): with ``b = 1 - a`` (exact in floating point for ``a`` in [0.5, 1]),
    ``1 - a^K = -expm1(K log1p(-b))``, so the ratio ``(1 - a^K) / b`` keeps full relative precision
    however small ``b`` is; only ``a = 1`` exactly is the limit, alpha = 1. Broadcasts over both.
    """
    a = np.asarray(per_token_acceptance, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    b = 1.0 - a
    exactly_one = b == 0.0
    safe_b = np.where(exactly_one, 1.0, b)
    with np.errstate(divide="ignore"):  # log1p(-1) = -inf at a = 0 gives expm1(-inf) = -1: alpha 0
        geometric_sum = -np.expm1(kk * np.log1p(-safe_b)) / safe_b  # 1 + a + ... + a^(K-1)
    alpha = a * geometric_sum / kk
    return np.asarray(np.where(exactly_one, 1.0, alpha), dtype=np.float64)


def fit_per_token_acceptance(points: Sequence[AcceptancePoint]) -> float:
    """The per-token acceptance whose geometric alpha(K) best matches the measured points.

    Each point is inverted exactly (alpha(K) is increasing in ``a``, so bisection finds it); the
    estimate is the sample-weighted mean of the inversions (equal weights when no samples are given).
    """
    ks = np.array([p.k for p in points], dtype=np.float64)
    alphas = np.array([p.alpha for p in points], dtype=np.float64)
    weights = np.array([max(p.samples, 1) for p in points], dtype=np.float64)
    low = np.zeros_like(alphas)
    high = np.ones_like(alphas)
    for _ in range(50):
        mid = (low + high) / 2.0
        too_low = geometric_alpha(mid, ks) < alphas
        low = np.where(too_low, mid, low)
        high = np.where(too_low, high, mid)
    return float(np.average((low + high) / 2.0, weights=weights))


def alpha_on_grid(
    points: Sequence[AcceptancePoint],
    per_token_acceptance: float | None,
    k_values: NDArray[np.int64],
) -> tuple[FloatArray, NDArray[np.int8]]:
    """alpha for each K of ``k_values`` and the source code of each (see ``ACCEPTANCE_SOURCES``)."""
    if not points:
        if per_token_acceptance is None:
            raise ValueError("a profile needs acceptance points or a per-token acceptance")
        alpha = geometric_alpha(per_token_acceptance, k_values)
        return alpha, np.full(k_values.shape, GEOMETRIC, dtype=np.int8)

    ordered = sorted(points, key=lambda p: p.k)
    measured_k = np.array([p.k for p in ordered], dtype=np.float64)
    measured_alpha = np.array([p.alpha for p in ordered], dtype=np.float64)
    kf = k_values.astype(np.float64)
    alpha = np.interp(kf, measured_k, measured_alpha)
    source = np.where(np.isin(kf, measured_k), MEASURED, INTERPOLATED).astype(np.int8)

    below = kf < measured_k[0]
    above = kf > measured_k[-1]
    if below.any() or above.any():
        a = per_token_acceptance if per_token_acceptance is not None else fit_per_token_acceptance(ordered)
        curve = geometric_alpha(a, kf)
        for mask, end_k, end_alpha in (
            (below, measured_k[0], measured_alpha[0]),
            (above, measured_k[-1], measured_alpha[-1]),
        ):
            if mask.any():
                anchor = float(geometric_alpha(a, end_k))
                scale = end_alpha / anchor if anchor > 0.0 else 1.0
                alpha = np.where(mask, np.clip(curve * scale, 0.0, 1.0), alpha)
                source = np.where(mask, EXTRAPOLATED, source).astype(np.int8)
    return np.asarray(alpha, dtype=np.float64), source
