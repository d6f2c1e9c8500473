"""Laws of the ConfigSpec model, checked on random inputs (hypothesis)."""

from __future__ import annotations

import numpy as np
from edgespec.api.profile import AcceptancePoint
from edgespec.configspec import (
    build_grid,
    compute_metrics,
    fit_per_token_acceptance,
    geometric_alpha,
    goodput_tokens_per_s,
    joules_per_token,
    pareto_mask,
    tokens_per_usd,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import make_profile

alphas = st.floats(0.0, 1.0)
ks = st.integers(1, 32)
speeds = st.floats(0.1, 1000.0)
latencies = st.floats(0.0, 5.0)
powers = st.floats(0.1, 100.0)


@given(alphas, ks, speeds, speeds, latencies)
def test_goodput_rises_with_drafting_speed(alpha: float, k: int, v1: float, v2: float, t: float) -> None:
    slow, fast = sorted((v1, v2))
    assert goodput_tokens_per_s(alpha, k, fast, t) >= goodput_tokens_per_s(alpha, k, slow, t) * (1 - 1e-12)
    if fast > slow * 1.01:
        assert goodput_tokens_per_s(alpha, k, fast, t) > goodput_tokens_per_s(alpha, k, slow, t)


@given(alphas, ks, speeds, latencies, latencies)
def test_goodput_falls_with_verify_latency(alpha: float, k: int, v: float, t1: float, t2: float) -> None:
    short, long = sorted((t1, t2))
    assert goodput_tokens_per_s(alpha, k, v, long) <= goodput_tokens_per_s(alpha, k, v, short) * (1 + 1e-12)
    if long > short + 0.01:
        assert goodput_tokens_per_s(alpha, k, v, long) < goodput_tokens_per_s(alpha, k, v, short)


@given(st.floats(0.1, 1000.0), powers, st.floats(0.0, 2.0), st.floats(0.01, 0.99))
@settings(max_examples=50)
def test_tokens_per_usd_do_not_depend_on_the_device(v: float, p: float, t: float, a: float) -> None:
    fast = make_profile(device_class="jetson", draft_tokens_per_s=v * 10, power_watts=p * 3)
    slow = make_profile(device_class="rpi4b", draft_tokens_per_s=v, power_watts=p, per_token_acceptance=a)
    slow = slow.model_copy(update={"verify_latency": slow.verify_latency.model_copy(update={"fixed_s": t})})
    metrics = compute_metrics(build_grid([fast, slow]))
    np.testing.assert_allclose(metrics.tokens_per_usd[0], metrics.tokens_per_usd[1], rtol=1e-12)
    assert not np.allclose(metrics.goodput_tokens_per_s[0], metrics.goodput_tokens_per_s[1])


@given(alphas, ks, speeds, powers, st.floats(0.01, 100.0))
def test_joules_per_token_scale_with_power(alpha: float, k: int, v: float, p: float, factor: float) -> None:
    base = joules_per_token(alpha, k, v, p)
    np.testing.assert_allclose(joules_per_token(alpha, k, v, p * factor), base * factor, rtol=1e-12)


@given(alphas, ks, st.floats(0.01, 1000.0))
def test_tokens_per_usd_formula(alpha: float, k: int, price: float) -> None:
    # committed tokens per round over paid positions per round, at price per token
    expected = (k * alpha + 1) / (k * price / 1e6)
    np.testing.assert_allclose(tokens_per_usd(alpha, k, price), expected, rtol=1e-12)


@given(st.floats(0.0, 0.999), ks)
def test_geometric_alpha_sums_the_acceptance_chain(a: float, k: int) -> None:
    expected = sum(a**i for i in range(1, k + 1)) / k
    np.testing.assert_allclose(geometric_alpha(a, k), expected, rtol=1e-9, atol=1e-12)
    assert float(geometric_alpha(1.0, k)) == 1.0


@given(st.floats(0.05, 0.98))
def test_fit_recovers_the_per_token_acceptance(a: float) -> None:
    points = [AcceptancePoint(k=k, alpha=float(geometric_alpha(a, k))) for k in (2, 5, 8)]
    assert abs(fit_per_token_acceptance(points) - a) < 1e-6


def test_acceptance_sources_are_recorded() -> None:
    measured = make_profile(acceptance=[AcceptancePoint(k=k, alpha=0.8 - 0.05 * k) for k in (2, 4, 6)])
    geometric = make_profile(draft_model="geo", acceptance=[], per_token_acceptance=0.8)
    grid = build_grid([measured, geometric], k_values=[1, 2, 3, 4, 6, 8])
    names = [[grid.acceptance_source_name(r, c) for c in range(6)] for r in range(2)]
    assert names[0] == ["extrapolated", "measured", "interpolated", "measured", "measured", "extrapolated"]
    assert names[1] == ["geometric"] * 6
    assert abs(grid.alpha[0, 2] - 0.65) < 1e-12  # halfway between K=2 (0.70) and K=4 (0.60)
    np.testing.assert_allclose(grid.alpha[1], geometric_alpha(0.8, grid.k_values))
    # extrapolation meets the measured ends and keeps alpha falling with K
    assert grid.alpha[0, 0] > grid.alpha[0, 1] and grid.alpha[0, 5] < grid.alpha[0, 4]


def _brute_force_front(g: np.ndarray, c: np.ndarray, e: np.ndarray) -> np.ndarray:
    n = len(g)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if g[j] >= g[i] and c[j] >= c[i] and e[j] <= e[i] and (g[j] > g[i] or c[j] > c[i] or e[j] < e[i]):
                keep[i] = False
                break
    return keep


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=40))
def test_pareto_mask_matches_brute_force(points: list[tuple[int, int, int]]) -> None:
    g, c, e = (np.array(col, dtype=float) for col in zip(*points, strict=True))
    np.testing.assert_array_equal(pareto_mask(g, c, e), _brute_force_front(g, c, e))
