"""The profiler's measurements: the target decoding alone, the per-round overhead, the rounds of K drafts,
and the profile read from the loop's rounds."""

from __future__ import annotations

import pytest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import GenerationStats, RoundStats, VerifierClient
from edgespec_edge.profiler import (
    fit_round_time,
    full_rounds,
    measure_target_decode,
    profile_from_rounds,
)

from .conftest import PROMPTS


def _round(drafted: int, draft_s: float, *, k: int | None = None, accepted: int = 0) -> RoundStats:
    return RoundStats(
        k=drafted if k is None else k,
        drafted=drafted,
        accepted=accepted,
        draft_s=draft_s,
        round_trip_s=0.01,
        verify_s=0.005,
    )


def test_round_time_separates_the_fixed_cost_from_the_per_token_cost() -> None:
    """Rounds of 1..8 tokens at 20 ms per token plus 5 ms per run: v_d 50 tokens/s, 5 ms + bookkeeping."""
    rounds = [_round(k, 0.005 + 0.020 * k) for k in range(1, 9) for _ in range(3)]
    v_d, overhead = fit_round_time(rounds, loop_other_s=0.001)
    assert abs(v_d - 50.0) < 1e-6 and abs(overhead - 0.006) < 1e-9
    plain = sum(r.drafted for r in rounds) / sum(r.draft_s for r in rounds)
    assert plain < v_d  # without the term the fixed cost is smeared into a slower v_d
    assert fit_round_time([_round(4, 0.1)] * 5, loop_other_s=0.0) == (40.0, 0.0)  # one size: no fit
    stalled = [*rounds, _round(1, 1.0)]  # one round slowed by another process does not tilt the line
    v_d, overhead = fit_round_time(stalled, loop_other_s=0.001)
    assert abs(v_d - 50.0) < 1e-6 and abs(overhead - 0.006) < 1e-9
    v_d, overhead = fit_round_time(rounds, loop_other_s=0.001, statistic="mean")
    assert abs(v_d - 50.0) < 1e-6 and abs(overhead - 0.006) < 1e-9  # no slow round: the same line
    slowed = [*rounds, _round(1, 0.2)]  # with means a slow round is part of the expected time
    v_d, overhead = fit_round_time(slowed, loop_other_s=0.001, statistic="mean")
    assert v_d > 50.0 and overhead > 0.02  # the first size's mean rose: the line tilts up at small K


def test_rounds_that_drafted_nothing_do_not_pull_the_fixed_cost_down() -> None:
    """The last token of a max_tokens generation is verified with no draft run (about 0.1 ms of
    hand-off): such rounds are not draft runs of size 0 and leave the line alone."""
    rounds = [_round(k, 0.005 + 0.020 * k) for k in range(1, 9) for _ in range(3)]
    tails = [_round(0, 0.0001, k=8) for _ in range(12)]
    v_d, overhead = fit_round_time([*rounds, *tails], loop_other_s=0.001)
    assert abs(v_d - 50.0) < 1e-6 and abs(overhead - 0.006) < 1e-9


def test_alpha_and_t_verify_come_from_the_rounds_that_drafted_all_k() -> None:
    """At K=4 a 24-token generation ends in rounds cut to 3, 2, 1, 0 drafts: they are not rounds of
    G(4) (fewer positions verified, a larger share of a shorter draft accepted) and are left out;
    with no round of K drafts at all, every round is all there is."""
    full = [_round(4, 0.1, accepted=1) for _ in range(5)]
    tail = [_round(3, 0.08, k=4, accepted=3), _round(1, 0.03, k=4, accepted=1), _round(0, 0.0, k=4)]
    assert full_rounds([*full, *tail], 4) == full
    chosen = full_rounds([*full, *tail], 4)
    assert sum(r.accepted for r in chosen) / sum(r.drafted for r in chosen) == 0.25
    assert full_rounds(tail, 4) == tail


async def test_the_target_alone_is_measured_over_the_verify_endpoint(
    client: VerifierClient, draft_runtime: LlamaRuntime
) -> None:
    prompts = [draft_runtime.tokenize(p) for p in PROMPTS[:2]]
    measured = await measure_target_decode(client, prompts, tokens=6)
    assert measured.samples == 2 * 5  # the first call per prompt is the TTFT, not a decode step
    assert 0.0 < measured.per_token_s < measured.ttft_s  # a step is cheaper than a round trip + prompt read


def test_the_profile_is_read_from_the_steady_rounds_of_each_k() -> None:
    """``profile_from_rounds`` (what ``measure_draft`` and the benchmark's interleaved profile both use):
    alpha(K) and T_verify(K) from the rounds of K drafts, v_d and the overhead from the drafting line
    over every round plus the loop's own time per round (median over K), the rounds counted."""

    def trip(drafted: int, accepted: int, round_trip_s: float, k: int) -> RoundStats:
        return RoundStats(
            k=k,
            drafted=drafted,
            accepted=accepted,
            draft_s=0.005 + 0.020 * drafted,
            round_trip_s=round_trip_s,
            verify_s=round_trip_s - 0.001,
        )

    def steady(rounds: list[RoundStats], other_s: float) -> GenerationStats:
        spent = sum(r.draft_s + r.round_trip_s for r in rounds)
        return GenerationStats(elapsed_s=spent + other_s * len(rounds), rounds=rounds)

    at_1 = steady([trip(1, 1, 0.05, 1), trip(1, 0, 0.07, 1), trip(1, 1, 0.06, 1)], 0.001)
    at_4 = steady(
        [
            trip(4, 2, 0.11, 4),
            trip(4, 4, 0.13, 4),
            trip(4, 1, 0.12, 4),
            trip(2, 2, 0.08, 4),
            trip(0, 0, 0.04, 4),
        ],
        0.003,
    )
    loop = profile_from_rounds({1: at_1, 4: at_4})
    assert loop.alpha == {1: 2 / 3, 4: 7 / 12}  # the rounds cut to 2 and 0 drafts are not rounds of G(4)
    assert loop.t_verify_s == {1: 0.06, 4: 0.12}  # medians of the rounds of K drafts
    assert loop.samples == {1: 3, 4: 3} and loop.rounds == 8
    assert abs(loop.v_d - 50.0) < 1e-6  # sizes 1, 2 and 4 on one line: 20 ms per token
    assert abs(loop.round_overhead_s - (0.005 + 0.002)) < 1e-9  # the line's 5 ms + the median loop time
    drafted = 3 * 1 + 3 * 4 + 2
    assert abs(loop.plain_v_d - drafted / sum(r.draft_s for r in [*at_1.rounds, *at_4.rounds])) < 1e-9
    unknown_loop_time = GenerationStats(elapsed_s=0.0, rounds=at_1.rounds)  # a fallback: no loop time
    assert abs(profile_from_rounds({1: unknown_loop_time, 4: at_4}).round_overhead_s - 0.008) < 1e-9
    with pytest.raises(ValueError, match="K=2"):
        profile_from_rounds({1: at_1, 2: GenerationStats()})
