"""Selection: objectives, constraints, runners-up, margins, infeasibility, and the status shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from edgespec.api.deployment import DeviceClassSelection
from edgespec.api.objective import Constraints, Objective, ObjectiveWeights
from edgespec.api.profile import EdgeProfileSpec
from edgespec.configspec import (
    CONSTRAINT_NAMES,
    InfeasibleError,
    MissingPriceError,
    MixedTargetsError,
    rank,
    rank_per_target,
    select,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from .conftest import GIB, PAPER_MEMORY, make_profile

PROFILE_FIELDS = {
    "device_class": st.sampled_from(["rpi4b", "rpi5"]),
    "draft_model": st.sampled_from(["d-small", "d-mid", "d-large"]),
    "quantization": st.sampled_from(["Q4_K_M", "Q8_0"]),
    "draft_tokens_per_s": st.floats(0.5, 200.0),
    "power_watts": st.floats(1.0, 60.0),
    "acceptance": st.just([]),
    "per_token_acceptance": st.floats(0.1, 0.95),
    "memory_bytes": st.integers(100_000_000, 10 * GIB),
}
profile_specs = st.builds(make_profile, **PROFILE_FIELDS)
profile_sets = st.lists(
    profile_specs, min_size=1, max_size=8, unique_by=lambda p: (p.device_class, p.draft_model, p.quantization)
)
constraint_sets = st.builds(
    Constraints,
    min_goodput_tokens_per_s=st.none() | st.floats(0.0, 8.0),
    max_joules_per_token=st.none() | st.floats(0.05, 20.0),
    max_usd_per_million_tokens=st.none() | st.floats(0.5, 3.0),
    memory_headroom_fraction=st.floats(0.0, 0.5),
)
objectives = st.sampled_from(["goodput", "cost", "energy"]).map(lambda k: Objective(kind=k)) | st.builds(
    lambda g, c, e: Objective(kind="weighted", weights=ObjectiveWeights(goodput=g, cost=c, energy=e)),
    st.floats(0.1, 5),
    st.floats(0, 5),
    st.floats(0, 5),
)


@settings(max_examples=150, deadline=None)
@given(profile_sets, constraint_sets, objectives, st.integers(2 * GIB, 16 * GIB))
def test_every_selection_satisfies_its_constraints(
    profiles: list[EdgeProfileSpec], constraints: Constraints, objective: Objective, memory: int
) -> None:
    ranking = rank(profiles, objective, constraints, device_memory_bytes={"rpi4b": memory, "rpi5": memory})
    assert set(ranking.selections) | set(ranking.infeasible) == {p.device_class for p in profiles}
    budget = memory * (1 - constraints.memory_headroom_fraction)
    for selection in ranking.selections.values():
        for c in (selection.choice, *selection.runners_up, *selection.pareto_front):
            assert c.memory_need_bytes is not None and c.memory_need_bytes <= budget
            if constraints.min_goodput_tokens_per_s is not None:
                assert c.goodput_tokens_per_s >= constraints.min_goodput_tokens_per_s
            if constraints.max_joules_per_token is not None:
                assert c.joules_per_token <= constraints.max_joules_per_token
            if constraints.max_usd_per_million_tokens is not None:
                assert c.usd_per_million_tokens <= constraints.max_usd_per_million_tokens * (1 + 1e-12)
        # the choice is the best feasible score and at least as good as every runner-up
        assert all(selection.choice.score >= r.score for r in selection.runners_up)
        assert [r.score for r in selection.runners_up] == sorted(
            (r.score for r in selection.runners_up), reverse=True
        )
    for verdict in ranking.infeasible.values():
        assert verdict.binding_constraint in CONSTRAINT_NAMES
        assert verdict.binding_constraint in verdict.message


@settings(max_examples=100, deadline=None)
@given(profile_sets, st.sampled_from(["goodput", "energy", "cost", "memory"]))
def test_an_infeasible_request_names_its_binding_constraint(
    profiles: list[EdgeProfileSpec], which: str
) -> None:
    """Tighten one constraint just past the best any configuration reaches: that one must be named."""
    everything = rank(profiles, Objective(kind="goodput"))
    goodput, joules = everything.metrics.goodput_tokens_per_s, everything.metrics.joules_per_token
    cost = everything.metrics.usd_per_million_tokens
    memory: dict[str, int] = {}
    if which == "goodput":
        constraints = Constraints(min_goodput_tokens_per_s=float(goodput.max()) * 1.01 + 1e-9)
        expected = "minGoodputTokensPerS"
    elif which == "energy":
        constraints = Constraints(max_joules_per_token=float(joules.min()) * 0.99)
        expected = "maxJoulesPerToken"
    elif which == "cost":
        assume(float(cost.min()) * 0.99 > 0)
        constraints = Constraints(max_usd_per_million_tokens=float(cost.min()) * 0.99)
        expected = "maxUsdPerMillionTokens"
    else:
        constraints = Constraints(memory_headroom_fraction=0.0)
        smallest = min(p.memory_bytes for p in profiles)
        memory = {"rpi4b": smallest - 1, "rpi5": smallest - 1}
        expected = "memory"
    with pytest.raises(InfeasibleError) as info:
        select(profiles, Objective(kind="goodput"), constraints, device_memory_bytes=memory)
    assert {v.binding_constraint for v in info.value.infeasible} == {expected}
    assert expected in str(info.value)
    assert "Closest configuration" in str(info.value)


def test_binding_constraint_is_the_one_whose_relaxation_helps() -> None:
    fast_hungry = make_profile(draft_model="big", draft_tokens_per_s=40.0, memory_bytes=9 * GIB)
    slow_small = make_profile(draft_model="small", draft_tokens_per_s=1.0, memory_bytes=1 * GIB)
    ranking = rank(
        [fast_hungry, slow_small],
        constraints=Constraints(min_goodput_tokens_per_s=3.0),
        device_memory_bytes={"rpi5": 8 * GIB},
    )
    verdict = ranking.infeasible["rpi5"]
    # relaxing memory frees the fast draft; relaxing goodput frees only the slow one, which fits
    assert verdict.binding_constraint in ("memory", "minGoodputTokensPerS")
    assert verdict.closest.draft_model in ("big", "small")
    assert "rpi5" in verdict.message and "Relax" in verdict.message


def test_goodput_choice_runners_up_margin_and_reason(illustrative: list[EdgeProfileSpec]) -> None:
    selections = select(
        illustrative, Objective(kind="goodput"), device_memory_bytes=PAPER_MEMORY, target_model="qwen3-32b"
    )
    rpi5 = selections["rpi5"]
    assert rpi5.choice.draft_model == "qwen3-0.6b"
    assert len(rpi5.runners_up) == 3
    assert {(r.draft_model, r.quantization) for r in rpi5.runners_up}.isdisjoint({("qwen3-0.6b", "Q4_K_M")})
    assert rpi5.margin is not None and rpi5.margin > 0
    assert rpi5.margin == pytest.approx(rpi5.choice.score / rpi5.runners_up[0].score - 1)
    assert rpi5.next_k is not None and rpi5.next_k.draft_model == rpi5.choice.draft_model
    assert "Highest goodput on rpi5" in rpi5.reason and "memory 5" in rpi5.reason
    assert rpi5.excluded_by == {"memory": 5}  # the Qwen3 8B Q8_0 draft, 5 K, does not fit 8 GiB
    assert len(rpi5.pareto_front) > 1  # no single configuration wins everything
    assert rpi5.choice in rpi5.pareto_front


def test_weighted_objective_sits_between_the_extremes(illustrative: list[EdgeProfileSpec]) -> None:
    def choice(objective: Objective) -> float:
        return select(illustrative, objective, device_memory_bytes=PAPER_MEMORY, target_model="qwen3-32b")[
            "rpi5"
        ].choice.goodput_tokens_per_s

    only_goodput = choice(Objective(kind="weighted", weights=ObjectiveWeights(goodput=1)))
    assert only_goodput == choice(Objective(kind="goodput"))
    mixed = choice(Objective(kind="weighted", weights=ObjectiveWeights(goodput=1, energy=1, cost=1)))
    assert choice(Objective(kind="cost")) <= mixed <= only_goodput


def test_memory_unchecked_without_allocatable(illustrative: list[EdgeProfileSpec]) -> None:
    selection = select(illustrative, Objective(kind="cost"), target_model="llama-3.1-70b")["rpi4b"]
    assert selection.memory_budget_bytes is None
    assert "Memory fit not checked" in selection.reason
    assert selection.choice.quantization == "Q8_0"  # 8B Q8_0 would not fit a real 8 GB Pi


def test_memory_estimate_from_model_size_when_not_measured() -> None:
    p = make_profile(memory_bytes=0, model_size_bytes=3 * GIB)
    fits = Constraints(kv_cache_bytes="512Mi", runtime_overhead_bytes="256Mi", memory_headroom_fraction=0.0)
    assert select([p], constraints=fits, device_memory_bytes={"rpi5": 4 * GIB})[
        "rpi5"
    ].choice.memory_need_bytes == (3 * GIB + 768 * 1024**2)
    with pytest.raises(InfeasibleError):
        select([p], constraints=fits, device_memory_bytes={"rpi5": 3 * GIB + 700 * 1024**2})


def test_missing_price_says_how_to_give_one() -> None:
    with pytest.raises(MissingPriceError, match="--price mistral-large=") as info:
        rank([make_profile(target_model="mistral-large")])
    assert info.value.targets == ("mistral-large",)
    assert rank([make_profile(target_model="mistral-large")], prices_usd_per_million={"mistral-large": 2.0})


def test_duplicate_profiles_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate profile"):
        rank([make_profile(), make_profile()])


def test_filters_name_what_exists(illustrative: list[EdgeProfileSpec]) -> None:
    with pytest.raises(ValueError, match=r"llama-3\.1-70b"):
        rank(illustrative, target_model="gpt-5")
    with pytest.raises(ValueError, match="rpi5"):
        rank(illustrative, device_classes=["rpi3"], target_model="qwen3-32b")
    only = rank(illustrative, device_classes=["rpi5"], target_model="llama-3.1-70b")
    assert list(only.selections) == ["rpi5"]
    assert only.selections["rpi5"].choice.target_model == "llama-3.1-70b"


def test_status_fields_build_the_api_status(illustrative: list[EdgeProfileSpec]) -> None:
    selection = select(illustrative, device_memory_bytes=PAPER_MEMORY, target_model="llama-3.1-70b")[
        "jetson-agx-orin"
    ]
    status = DeviceClassSelection(**selection.status_fields(), selected_at=datetime.now(UTC))
    assert status.k == selection.choice.k
    assert len(status.runners_up) == len(selection.runners_up)
    assert status.to_api()["predictedGoodputTokensPerS"] == selection.choice.goodput_tokens_per_s


mixed_profile_sets = st.lists(
    st.builds(make_profile, **PROFILE_FIELDS, target_model=st.sampled_from(["llama-3.1-70b", "qwen3-32b"])),
    min_size=1,
    max_size=10,
    unique_by=lambda p: (p.device_class, p.draft_model, p.quantization, p.target_model),
)


@settings(max_examples=100, deadline=None)
@given(mixed_profile_sets, objectives)
def test_rank_never_compares_drafts_of_different_targets(
    profiles: list[EdgeProfileSpec], objective: Objective
) -> None:
    """Whatever the mix of targets: one ranking per target, and everything in it is of that target."""
    targets = {p.target_model for p in profiles}
    if len(targets) > 1:
        with pytest.raises(MixedTargetsError, match="--target"):
            rank(profiles, objective)
    per_target = rank_per_target(profiles, objective)
    assert set(per_target) == targets
    for target, ranking in per_target.items():
        assert set(ranking.grid.target_model) == {target}
        for selection in ranking.selections.values():
            shown = (selection.choice, *selection.runners_up, *selection.pareto_front)
            assert {c.target_model for c in (*shown, *([selection.next_k] if selection.next_k else []))} == {
                target
            }
            assert f"(target {target})" in selection.reason
            assert all(f"(target {t})" not in selection.reason for t in targets - {target})


def test_unknown_memory_is_infeasible_under_a_budget_unless_assumed() -> None:
    unknown = make_profile(memory_bytes=0, model_size_bytes=0)
    budget = {"rpi5": 100 * 1024**2}  # 100 MiB: nothing real fits
    with pytest.raises(InfeasibleError) as info:
        select([unknown], device_memory_bytes=budget)
    message = str(info.value)
    assert "memory (need unknown)" in message and "--assume-fits" in message
    assert "smallest memory need" not in message  # no made-up need of 0 bytes
    assumed = select([unknown], device_memory_bytes=budget, assume_fits=True)["rpi5"]
    assert assumed.memory_assumed and assumed.choice.memory_need_bytes is None
    assert "unknown" in assumed.reason and "assumed to fit the 0.09 GiB budget" in assumed.reason
    # without a budget nothing is assumed, and the reason says memory was not checked
    unchecked = select([unknown])["rpi5"]
    assert not unchecked.memory_assumed and "Memory fit not checked" in unchecked.reason


def test_origin_is_carried_and_absent_means_unknown(illustrative: list[EdgeProfileSpec]) -> None:
    assert make_profile().origin is None
    selection = select([make_profile()])["rpi5"]
    assert selection.choice.origin == "unknown" and "origin unknown" in selection.reason
    assert select([make_profile(origin="measured")])["rpi5"].choice.origin == "measured"
    paper = select(illustrative, target_model="qwen3-32b")["rpi5"]
    assert paper.choice.origin == "illustrative" and "The profile is illustrative" in paper.reason
    status = DeviceClassSelection(**paper.status_fields(), selected_at=datetime.now(UTC))
    assert status.to_api()["origin"] == "illustrative"
    assert all(r.origin == "illustrative" for r in status.runners_up)
