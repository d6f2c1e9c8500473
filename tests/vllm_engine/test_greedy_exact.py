"""Greedy verification with vLLM is token-for-token the target decoding alone; agreement with llama.cpp.

The honest reference for the vLLM engine is vLLM decoding the same float32 target alone (one request,
greedy): the speculative loop (real edge drafter, real HTTP verifier) must reproduce it exactly. The
llama.cpp engine verifies with the Q4_K_M GGUF's own kernels, while vLLM runs float32 weights
dequantized from that GGUF: the two targets are the same weights up to llama.cpp's on-the-fly Q8
activation rounding, so their greedy texts agree until a near-tie flips; that agreement is measured and
bounded below, not asserted equal (docs/vllm.md states the numbers).
"""

from __future__ import annotations

import pytest
from edgespec.wire import SamplingParams
from edgespec_edge.config import SpeculativeLength
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter, GenerationStats, VerifierClient, speculative_generate
from edgespec_verifier.engines.vllm import VllmEngine

from .conftest import PROMPTS

pytestmark = pytest.mark.vllm

MAX_TOKENS = 24


def until_end(runtime: LlamaRuntime, tokens: list[int]) -> list[int]:
    for index, token in enumerate(tokens):
        if runtime.is_end_of_generation(token):
            return tokens[:index]
    return tokens


@pytest.fixture(scope="module")
def vllm_alone(vllm_engine: VllmEngine, target_runtime: LlamaRuntime) -> dict[str, list[int]]:
    """vLLM's own greedy decoding of each prompt (the target alone)."""
    return {
        prompt: until_end(
            target_runtime, vllm_engine.greedy_decode(target_runtime.tokenize(prompt), MAX_TOKENS)
        )
        for prompt in PROMPTS
    }


@pytest.mark.parametrize("k", [1, 4])
async def test_vllm_speculative_greedy_equals_target_alone(
    k: int,
    vllm_alone: dict[str, list[int]],
    target_runtime: LlamaRuntime,
    drafter: Drafter,
    client: VerifierClient,
) -> None:
    drafted = accepted = 0
    for prompt in PROMPTS:
        stats = GenerationStats()
        produced: list[int] = []
        async for tokens in speculative_generate(
            drafter,
            client,
            target_runtime.tokenize(prompt),
            max_tokens=MAX_TOKENS,
            k_source=SpeculativeLength(k),
            sampling=SamplingParams(),
            stats=stats,
        ):
            produced.extend(tokens)
        assert produced == vllm_alone[prompt], f"K={k} prompt={prompt!r}"
        assert all(r.drafted <= k for r in stats.rounds)
        drafted += stats.drafted
        accepted += stats.accepted
    assert accepted > 0.1 * drafted  # rounds really accept drafts (and reject some)
    assert accepted < drafted


def llamacpp_alone(runtime: LlamaRuntime, prompt: list[int]) -> list[int]:
    """llama.cpp's decoding of the GGUF target alone (what the llama.cpp engine's exact mode equals)."""
    sequence = runtime.new_sequence()
    try:
        tokens, out = list(prompt), []
        while len(out) < MAX_TOKENS:
            token = int(sequence.logits(tokens, len(tokens) - 1)[0].argmax())
            out.append(token)
            tokens.append(token)
        return until_end(runtime, out)
    finally:
        sequence.close()


def test_vllm_and_llamacpp_targets_agree(
    vllm_alone: dict[str, list[int]], target_runtime: LlamaRuntime
) -> None:
    """Same prompts, both engines' targets alone: identical texts for most prompts, long common prefixes."""
    identical = 0
    prefix_tokens = total = 0
    for prompt in PROMPTS:
        theirs = llamacpp_alone(target_runtime, target_runtime.tokenize(prompt))
        ours = vllm_alone[prompt]
        common = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
        common = min(len(ours), len(theirs)) if common is None else common
        identical += ours == theirs
        prefix_tokens += common
        total += max(len(ours), len(theirs))
        print(f"{prompt!r}: common prefix {common}/{max(len(ours), len(theirs))}")
    print(f"identical {identical}/{len(PROMPTS)}; tokens before the first divergence {prefix_tokens}/{total}")
    # Measured here: 3 of 5 identical, 97 of 120 tokens before the first divergence (docs/vllm.md).
    assert identical >= 2, f"only {identical} of {len(PROMPTS)} prompts decode identically"
    assert prefix_tokens >= 0.6 * total
