"""Reasons and plots at the edges: one K, ties, no verification time, no power, zero energy, many K."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from edgespec.api.objective import Constraints, Objective
from edgespec.api.profile import EdgeProfileSpec, VerifyLatency
from edgespec.configspec import rank, select
from edgespec.configspec.explain import TIE_BREAK
from edgespec.configspec.plotting import _QUANT_STYLES, make_figures

from .conftest import make_profile


def sentences(reason: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.;])\s+", reason) if s]


def assert_well_formed(reason: str) -> None:
    """Every sentence starts with a capital letter or a number, none reads 'ahead of' headless."""
    for sentence in re.split(r"(?<=\.)\s+", reason):
        assert sentence[:1].isupper() or sentence[:1].isdigit(), (sentence, reason)


def test_a_single_k_is_said_to_be_the_only_one() -> None:
    selection = select([make_profile()], k_values=[4])["rpi5"]
    assert selection.choice.k == 4
    assert "K=4 is the only speculative length considered" in selection.reason
    assert "balances" not in selection.reason and "shortest" not in selection.reason
    assert_well_formed(selection.reason)


@pytest.mark.parametrize("order", [("b-draft", "a-draft"), ("a-draft", "b-draft")])
def test_ties_are_reported_as_ties_and_broken_the_same_whatever_the_file_order(
    order: tuple[str, str],
) -> None:
    twins = [make_profile(draft_model=name) for name in order]
    selection = select(twins)["rpi5"]
    assert selection.choice.draft_model == "a-draft"  # alphabetical, not first in the input
    assert selection.margin == 0.0
    assert "It ties with the best other draft, b-draft" in selection.reason
    assert TIE_BREAK in selection.reason and "0.0% ahead" not in selection.reason
    assert_well_formed(selection.reason)


def test_a_tiny_lead_is_not_rounded_to_zero() -> None:
    ahead = make_profile(draft_model="fast", draft_tokens_per_s=10.0 * (1 + 1e-6))
    selection = select([ahead, make_profile(draft_model="slow")])["rpi5"]
    assert selection.choice.draft_model == "fast"
    assert "It leads the best other draft" in selection.reason and "less than 0.1%" in selection.reason


def test_zero_verify_time_is_not_blamed_on_slow_drafting() -> None:
    instant = make_profile(verify_latency=VerifyLatency(), draft_tokens_per_s=200.0)
    selection = select([instant])["rpi5"]
    assert "T_verify = 0" in selection.reason and "drafting is slow" not in selection.reason
    assert "maximises alpha + 1/K" in selection.reason
    assert_well_formed(selection.reason)


def test_zero_power_leads_and_ties_read_as_sentences() -> None:
    free = make_profile(draft_model="free", power_watts=0.0)
    paid = make_profile(draft_model="paid", power_watts=5.0)
    energy = Objective(kind="energy")
    leads = select([paid, free], energy)["rpi5"]
    assert leads.choice.draft_model == "free" and leads.choice.joules_per_token == 0.0
    assert "It leads the best other draft, paid" in leads.reason
    assert "0 J/token on the edge at every K" in leads.reason
    assert_well_formed(leads.reason)
    both = select([free, make_profile(draft_model="also-free", power_watts=0.0)], energy)["rpi5"]
    assert both.choice.draft_model == "also-free" and "It ties with" in both.reason
    assert_well_formed(both.reason)


def test_k_at_either_end_of_the_grid_is_said() -> None:
    slow = select([make_profile(draft_tokens_per_s=2.0)])["rpi5"]
    assert slow.choice.k == 2 and "K=2 is the shortest allowed" in slow.reason
    fast = select([make_profile(draft_tokens_per_s=500.0)])["rpi5"]
    assert fast.choice.k == 10 and "longest allowed, and goodput may still rise beyond it" in fast.reason


def _figures(profiles: list[EdgeProfileSpec], **options: Any) -> dict[str, Any]:
    return make_figures(
        {kind: rank(profiles, Objective(kind=kind), **options) for kind in ("goodput", "cost", "energy")}
    )


def test_quantisation_styles_are_distinct_from_ruled_out() -> None:
    quants = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16"]
    profiles = [make_profile(quantization=q, memory_bytes=(i + 1) * 1024**3) for i, q in enumerate(quants)]
    figures = _figures(profiles, device_memory_bytes={"rpi5": int(4.5 * 1024**3)})  # F16 does not fit
    ax = figures["goodput_vs_k"].axes[0]
    drawn = [line for line in ax.get_lines() if len(line.get_xdata()) > 1]
    ruled_out = [line for line in drawn if line.get_marker() == "x"]
    kept = [line for line in drawn if line.get_marker() != "x"]
    assert len(ruled_out) == 1 and len(kept) == 4  # F16 at 5 GiB over a 4.05 GiB budget
    assert all(line.get_linestyle() != ":" for line in kept)  # no kept line looks ruled out
    assert len({repr(style) for style in _QUANT_STYLES}) == len(_QUANT_STYLES) and ":" not in _QUANT_STYLES


def test_zero_energy_stays_visible_and_many_k_do_not_overlap() -> None:
    profiles = [make_profile(draft_model="free", power_watts=0.0), make_profile(draft_model="paid")]
    figures = _figures(profiles, k_values=list(range(1, 65)))
    energy_ax = figures["energy_vs_k"].axes[0]
    assert energy_ax.get_yscale() == "linear"  # a log axis would drop the 0 J/token line
    assert "some values are 0" in energy_ax.get_ylabel()
    zero_line = [
        line for line in energy_ax.get_lines() if len(line.get_ydata()) == 64 and max(line.get_ydata()) == 0
    ]
    assert zero_line and all(line.get_marker() != "x" for line in zero_line)  # 0 J is feasible, not ruled out
    ticks = figures["goodput_vs_k"].axes[0].get_xticks()
    assert len(ticks) <= 18 and np.allclose(ticks, np.round(ticks))


def test_legends_fit_inside_the_saved_image(tmp_path: Any) -> None:
    from edgespec.configspec.plotting import write_plots

    profiles = [
        make_profile(draft_model=f"draft-{i}", quantization=q) for i in range(4) for q in ("Q4_K_M", "Q8_0")
    ]
    rankings = {
        kind: rank(profiles, Objective(kind=kind), Constraints()) for kind in ("goodput", "cost", "energy")
    }
    figures = make_figures(rankings)
    fig = figures["goodput_vs_k"]
    renderer = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(renderer)
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    assert legend_box.transformed(fig.dpi_scale_trans.inverted()).y0 >= tight.y0 - 1e-6
    for path in write_plots(rankings, tmp_path):
        assert path.stat().st_size > 10_000
