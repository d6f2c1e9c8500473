"""Cloud-only decoding beside every configuration, and the per-round overhead term of the model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from edgespec.api.deployment import DeviceClassSelection
from edgespec.api.objective import Constraints, Objective
from edgespec.api.profile import TargetDecode, VerifyLatency
from edgespec.cli import EXIT_OK, main
from edgespec.configspec import rank, select
from edgespec.configspec.metrics import goodput_tokens_per_s, joules_per_token
from hypothesis import given
from hypothesis import strategies as st

from .conftest import make_profile

ALONE = TargetDecode(per_token_s=0.1, ttft_s=0.35, samples=64)  # the target alone: 10 tokens/s


@given(
    st.floats(0.0, 1.0), st.integers(1, 64), st.floats(0.5, 500.0), st.floats(0.0, 2.0), st.floats(0.0, 0.05)
)
def test_the_round_overhead_is_added_to_every_round(
    alpha: float, k: int, v_d: float, t_verify: float, overhead: float
) -> None:
    expected = (k * alpha + 1) / (k / v_d + t_verify + overhead)
    np.testing.assert_allclose(goodput_tokens_per_s(alpha, k, v_d, t_verify, overhead), expected, rtol=1e-12)
    energy = 5.0 * (k / v_d + overhead) / (k * alpha + 1)
    np.testing.assert_allclose(joules_per_token(alpha, k, v_d, 5.0, overhead), energy, rtol=1e-12)


def test_overhead_in_a_profile_lowers_goodput_most_at_small_k() -> None:
    plain = rank([make_profile()]).metrics.goodput_tokens_per_s[0]
    slowed = rank([make_profile(round_overhead_s=0.05)]).metrics.goodput_tokens_per_s[0]
    loss = 1 - slowed / plain
    assert np.all(loss > 0) and np.all(np.diff(loss) < 0)  # a fixed cost weighs most on short rounds


def test_speculation_that_does_not_pay_is_said_plainly() -> None:
    slow = make_profile(draft_tokens_per_s=3.0, target_decode=ALONE)
    selection = select([slow])["rpi5"]
    alone = selection.no_speculation
    assert alone is not None and alone.goodput_tokens_per_s == pytest.approx(10.0)
    assert alone.tokens_per_usd == pytest.approx(1e6 / 0.90) and alone.joules_per_token == 0.0
    assert selection.speculation_gain is not None and selection.speculation_gain < 0
    assert selection.speculation_pays is False
    by_how_much = 10.0 / selection.choice.goodput_tokens_per_s - 1
    assert (
        f"Speculation does NOT pay here: the target decoding alone gives 10.00 tokens/s, {by_how_much:.1%}"
        in (selection.reason)
    )


def test_speculation_that_pays_says_by_how_much() -> None:
    fast = make_profile(
        draft_tokens_per_s=200.0, verify_latency=VerifyLatency(fixed_s=0.05), target_decode=ALONE
    )
    selection = select([fast])["rpi5"]
    assert selection.speculation_pays is True
    gain = selection.choice.goodput_tokens_per_s / 10.0 - 1
    assert selection.speculation_gain == pytest.approx(gain)
    assert f"Speculation pays: {gain:.1%} better than the target decoding alone" in selection.reason


def test_every_objective_compares_against_the_target_alone() -> None:
    profile = make_profile(
        draft_tokens_per_s=200.0, verify_latency=VerifyLatency(fixed_s=0.05), target_decode=ALONE
    )
    cost = select([profile], Objective(kind="cost"))["rpi5"]
    # a round pays K positions for K alpha + 1 tokens; the target alone pays one position per token
    assert cost.speculation_gain == pytest.approx(cost.choice.alpha + 1 / cost.choice.k - 1)
    energy = select([profile], Objective(kind="energy"))["rpi5"]
    assert energy.speculation_gain == -1.0 and "On edge energy speculation never pays" in energy.reason
    floor = select([profile], constraints=Constraints(min_goodput_tokens_per_s=11.0))["rpi5"]
    assert floor.no_speculation is not None and not floor.no_speculation.feasible  # 10 tokens/s < 11
    assert select([make_profile()])["rpi5"].no_speculation is None  # not measured: not invented


def test_the_status_carries_the_comparison_and_the_fallback_runs_cloud_only() -> None:
    slow = select([make_profile(draft_tokens_per_s=3.0, target_decode=ALONE)])["rpi5"]
    status = DeviceClassSelection(
        **slow.status_fields(fallback_requested=True), selected_at=datetime.now(UTC)
    )
    api = status.to_api()
    assert api["noSpeculation"]["predictedGoodputTokensPerS"] == pytest.approx(10.0)
    assert api["noSpeculation"]["ttftS"] == pytest.approx(0.35)
    assert api["speculationGain"] < 0
    assert api["mode"] == "cloudOnly"
    assert "this class runs cloud-only" in api["reason"]
    plain = DeviceClassSelection(**slow.status_fields(), selected_at=datetime.now(UTC))
    assert "cloudOnlyFallback" not in plain.reason and plain.mode == "speculative"
    crawl = TargetDecode(per_token_s=10.0, ttft_s=0.35, samples=64)  # a target alone at 0.1 tokens/s
    fast = select([make_profile(draft_tokens_per_s=300.0, target_decode=crawl)])["rpi5"]
    assert fast.speculation_pays
    assert fast.status_fields(fallback_requested=True)["mode"] == "speculative"  # it pays: speculate


def test_rank_shows_the_target_alone_as_a_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = make_profile(draft_tokens_per_s=3.0, target_decode=ALONE)
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "edgespec.dev/v1alpha1",
                "kind": "EdgeProfile",
                "spec": profile.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        )
    )
    assert main(["rank", "--profiles", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "=  (none: target alone)" in out and "measured TTFT 0.35 s" in out
    assert "speculation does NOT pay on goodput" in out
