"""Greedy speculative decoding is token-for-token identical to the target decoding alone."""

from __future__ import annotations

import pytest
from edgespec.wire import SamplingParams
from edgespec_edge.config import SpeculativeLength
from edgespec_edge.loop import Drafter, GenerationStats, VerifierClient, speculative_generate
from edgespec_verifier.engines.llamacpp import LlamaCppEngine

from .conftest import PROMPTS, target_greedy

pytestmark = pytest.mark.models

MAX_TOKENS = 24


@pytest.fixture(scope="module")
def target_alone(engine: LlamaCppEngine) -> dict[str, list[int]]:
    """Each prompt's target decoding alone, decoded once for every K."""
    return {prompt: target_greedy(engine, engine.runtime.tokenize(prompt), MAX_TOKENS) for prompt in PROMPTS}


@pytest.mark.parametrize("k", [1, 2, 4, 8])
async def test_speculative_greedy_equals_target_alone(
    k: int,
    engine: LlamaCppEngine,
    drafter: Drafter,
    client: VerifierClient,
    target_alone: dict[str, list[int]],
) -> None:
    total_drafted = total_accepted = 0
    for prompt in PROMPTS:
        prompt_tokens = engine.runtime.tokenize(prompt)
        expected = target_alone[prompt]
        stats = GenerationStats()
        produced: list[int] = []
        async for tokens in speculative_generate(
            drafter,
            client,
            prompt_tokens,
            max_tokens=MAX_TOKENS,
            k_source=SpeculativeLength(k),
            sampling=SamplingParams(),
            stats=stats,
        ):
            produced.extend(tokens)
        assert produced == expected, f"K={k} prompt={prompt!r}"
        assert all(r.drafted <= k for r in stats.rounds)
        total_drafted += stats.drafted
        total_accepted += stats.accepted
    assert total_accepted > 0.1 * total_drafted  # rounds really accept drafts
