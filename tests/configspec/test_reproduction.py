"""The ConfigSpec paper's headline findings hold on the illustrative profile set (docs/reproduction.md)."""

from __future__ import annotations

from typing import Any

import pytest
from edgespec.api.profile import EdgeProfileSpec
from make_illustrative_profiles import main as make_profiles_main
from make_reproduction import DEVICES, compute_findings, findings_table


@pytest.fixture(scope="module")
def findings(illustrative: list[EdgeProfileSpec]) -> dict[str, Any]:
    return compute_findings(illustrative)


def test_the_sample_file_is_what_the_generator_writes() -> None:
    assert make_profiles_main(["--check"]) == 0


def test_goodput_optimal_k_depends_on_the_device(findings: dict[str, Any]) -> None:
    k = {d: c.k for d, c in findings["goodput_choice"].items()}
    assert k["rpi4b"] == 2
    assert 6 <= k["rpi5"] <= 7
    assert 8 <= k["jetson-agx-orin"] <= 10


def test_goodput_favours_the_smallest_drafts(findings: dict[str, Any]) -> None:
    assert {c.draft_model for c in findings["goodput_choice"].values()} <= {"qwen3-0.6b", "llama-3.2-1b"}


def test_cost_optimum_is_the_largest_draft_at_k_2(findings: dict[str, Any]) -> None:
    for device in DEVICES:
        choice = findings["cost_choice"][device]
        assert choice.k == 2
        assert choice.draft_model in ("qwen3-8b", "llama-3.1-8b")
    assert findings["cost_gain_llama_8b_over_1b"] == pytest.approx(0.19, abs=0.02)
    assert findings["cost_gain_qwen_8b_over_06b"] == pytest.approx(0.25, abs=0.02)


def test_energy_optimum_is_the_smallest_draft_at_k_2(findings: dict[str, Any]) -> None:
    choices = findings["energy_choice"]
    for device in DEVICES:
        assert choices[device].k == 2
        assert choices[device].draft_model == "qwen3-0.6b"
    assert choices["jetson-agx-orin"].joules_per_token < min(
        choices[d].joules_per_token for d in ("rpi4b", "rpi5")
    )


def test_8b_to_1b_ratios(findings: dict[str, Any]) -> None:
    assert findings["alpha_mean"]["llama-3.2-1b"] == pytest.approx(0.46, abs=0.02)
    assert findings["alpha_mean"]["llama-3.1-8b"] == pytest.approx(0.62, abs=0.02)
    assert all(v > 2.0 for v in findings["pi_goodput_drop_1b_to_8b"].values())
    assert max(findings["energy_efficiency_1b_over_8b"].values()) == pytest.approx(7.8, rel=0.1)


def test_no_configuration_wins_everything(findings: dict[str, Any]) -> None:
    assert all(n > 1 for n in findings["distinct_optima"].values())
    assert all(n > 1 for n in findings["pareto_sizes"].values())


def test_report_marks_what_does_not_match(findings: dict[str, Any]) -> None:
    verdicts = {f.claim: f.verdict for f in findings_table(findings)}
    assert verdicts["Goodput-optimal K per device (T_verify = 0.5 s)"] == "yes"
    assert verdicts["Jetson's best goodput over each Pi's"].startswith("no")
