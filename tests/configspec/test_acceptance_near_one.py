"""alpha(K) of the geometric model is exact near a = 1, checked against exact rational arithmetic.

The reference sums ``a + a^2 + ... + a^K`` over ``fractions.Fraction(a)`` (the float's exact value),
so it has no rounding at all; the model must agree to a few units in the last place, at every K the
API allows (1..64), including per-token acceptances a hair below 1 that a tolerance used to round up
to exactly 1.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from edgespec.configspec import geometric_alpha
from hypothesis import given, settings
from hypothesis import strategies as st

ULP = 2.0**-52
NEAR_ONE = [1 - 10.0**-j for j in range(1, 16)] + [0.999995, float(np.nextafter(1.0, 0.0))]
K_VALUES = [1, 2, 3, 7, 10, 32, 63, 64]


def exact_alpha(a: float, k: int) -> Fraction:
    x = Fraction(a)
    total, power = Fraction(0), Fraction(1)
    for _ in range(k):
        power *= x
        total += power
    return total / k


def relative_error(a: float, k: int) -> float:
    exact = exact_alpha(a, k)
    got = Fraction(float(geometric_alpha(a, k)))
    return float(abs(got - exact) / exact)


@pytest.mark.parametrize("k", K_VALUES)
@pytest.mark.parametrize("a", NEAR_ONE)
def test_alpha_near_one_matches_exact_arithmetic(a: float, k: int) -> None:
    assert relative_error(a, k) <= 8 * ULP


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-290, 1.0, exclude_max=True), st.integers(1, 64))
def test_alpha_matches_exact_arithmetic_everywhere(a: float, k: int) -> None:
    """Every per-token acceptance down to 1e-290 (below, alpha itself would be subnormal: fewer bits)."""
    assert relative_error(a, k) <= 8 * ULP


def test_just_below_one_is_not_one() -> None:
    """0.999995 is not 1: alpha(K) falls with K, by about (K + 1) / 2 * 5e-6 (was reported as 1.0)."""
    ks = np.arange(1, 65)
    alpha = geometric_alpha(0.999995, ks)
    assert np.all(alpha < 1.0) and np.all(np.diff(alpha) < 0.0)
    assert float(alpha[-1]) == pytest.approx(float(exact_alpha(0.999995, 64)), rel=1e-15)
    assert 1.0 - float(alpha[-1]) == pytest.approx(65 / 2 * 5e-6, rel=1e-3)
    assert float(geometric_alpha(1.0, 64)) == 1.0 and float(geometric_alpha(0.0, 64)) == 0.0


def test_pareto_front_near_one_matches_exact_arithmetic() -> None:
    """Three drafts accepted almost always, K = 1..64: the front equals the one computed in exact
    rationals (snapping alpha to 1 used to flatten alpha(K) and drop members)."""
    from edgespec.configspec import rank

    from .conftest import make_profile

    drafts = [("d0", 0.999995, 40.0, 5.0), ("d1", 0.99999, 60.0, 8.0), ("d2", 0.9999995, 20.0, 3.0)]
    profiles = [
        make_profile(
            draft_model=n, acceptance=[], per_token_acceptance=a, draft_tokens_per_s=v, power_watts=w
        )
        for n, a, v, w in drafts
    ]
    front = rank(profiles, k_values=list(range(1, 65))).selections["rpi5"].pareto_front
    price, t_verify = Fraction(9, 10) / 10**6, Fraction(1, 2)  # the profiles' target price and T_verify
    cells = []
    for name, a, v, w in drafts:
        for k in range(1, 65):
            alpha = exact_alpha(a, k)
            committed = k * alpha + 1
            drafting = Fraction(k) / Fraction(v)
            cells.append(
                (
                    name,
                    k,
                    committed / (drafting + t_verify),
                    (alpha + Fraction(1, k)) / price,
                    Fraction(w) * drafting / committed,
                )
            )
    exact = {
        (n, k)
        for n, k, g, c, e in cells
        if not any(
            g2 >= g and c2 >= c and e2 <= e and (g2 > g or c2 > c or e2 < e) for _, _, g2, c2, e2 in cells
        )
    }
    assert {(c.draft_model, c.k) for c in front} == exact and len(exact) > 100
