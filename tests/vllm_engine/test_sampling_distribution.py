"""vLLM's speculative sampling keeps the target's distribution (chi-square), and the test has teeth.

Every round goes through the engine's real path (one vLLM request steered by the verdict processor in
vLLM's sampler, rounds batched by AsyncLLM). The draft is the edge's real one: its top-8 distribution q
at temperature 1 after each prompt (what the edge sends); drafts are drawn from q by the test. Each
round's first emitted token (the accepted draft, or the residual draw after a rejection) must follow
the target's p(.|prompt), taken once per prompt from vLLM itself (full-vocabulary logprobs, test only).
The control runs the same path with a processor that resamples from p instead of the residual (a
classic bug); the same test must reject it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from dataplane.test_sampling_distribution import chi_square_p_value  # the llama.cpp tier's own test
from edgespec.wire import SamplingParams, SparseDistribution, VerifyRequest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import draft_distribution
from edgespec_verifier.engines.vllm import VllmEngine

from .conftest import BLOCK_SIZE

pytestmark = pytest.mark.vllm

TEMPERATURE = 1.0
TOP_N = 8
SAMPLES = 1200
PROMPTS = ["The best thing about summer is", "My favourite animal is the"]
PREFACE = (
    "A conversation between a curious student and a patient teacher. The teacher answers every "
    "question briefly, kindly and well, with one example when it helps, and never in a list. "
)
CONTROL_KEY = "edgespec-control"


class Case:
    """One prompt: its tokens, the draft's q and vLLM's target p after it."""

    def __init__(self, engine: VllmEngine, target: LlamaRuntime, draft: LlamaRuntime, prompt: str) -> None:
        # A context of one full KV block plus one token: every round after the first reads 32 tokens
        # from the prefix cache and computes one (the test's cost is the rounds, not the context).
        preface = target.tokenize(PREFACE + prompt)
        assert len(preface) > BLOCK_SIZE + 1
        self.tokens = [preface[0], *preface[len(preface) - BLOCK_SIZE :]]
        sequence = draft.new_sequence()
        try:
            row = sequence.logits(self.tokens, len(self.tokens) - 1)[0]
        finally:
            sequence.close()
        self.q: SparseDistribution = draft_distribution(row, TEMPERATURE, TOP_N)
        self.p = engine.full_distribution(self.tokens)


def run(engine: VllmEngine, case: Case, key: str, seed: int) -> float:
    rng = np.random.default_rng(seed)
    drafts = rng.choice(len(case.q.tokens), size=SAMPLES, p=case.q.probs)
    requests = [
        VerifyRequest(
            session_id=f"{key}-{seed}-{i}",
            tokens=case.tokens,
            draft=[case.q.tokens[int(d)]],
            draft_probs=[case.q],
            sampling=SamplingParams(temperature=TEMPERATURE, seed=seed * SAMPLES + i),
        )
        for i, d in enumerate(drafts)
    ]

    async def all_rounds() -> list[tuple[int, int]]:
        verdicts = await asyncio.gather(*(engine.verify_round(r, key=key) for r in requests))
        return [(accepted, token) for accepted, token, _ in verdicts]

    verdicts = asyncio.run(all_rounds())
    first = Counter(
        r.draft[0] if accepted else token for r, (accepted, token) in zip(requests, verdicts, strict=True)
    )
    for name in [r.session_id for r in requests]:
        engine.close_session(name)
    return chi_square_p_value(first, case.p)


@pytest.fixture(scope="module")
def cases(vllm_engine: VllmEngine, target_runtime: LlamaRuntime, draft_runtime: LlamaRuntime) -> list[Case]:
    return [Case(vllm_engine, target_runtime, draft_runtime, prompt) for prompt in PROMPTS]


def test_vllm_rejection_sampling_matches_target_distribution(
    vllm_engine: VllmEngine, cases: list[Case]
) -> None:
    for index, case in enumerate(cases):
        value = run(vllm_engine, case, "edgespec", seed=1000 + index)
        assert value > 1e-3, f"prompt {index}: first token deviates from p (p-value {value:.2e})"


def test_control_wrong_residual_is_caught(vllm_engine: VllmEngine, cases: list[Case]) -> None:
    """On the first prompt, whose p and q tell a wrong residual apart most clearly (p-value 2e-12 here;
    the second prompt's 4e-6 was never the smaller), with the same rounds as the test itself."""
    value = run(vllm_engine, cases[0], CONTROL_KEY, seed=1000)
    assert value < 1e-6, f"the chi-square test missed a wrong residual: p-value {value:.2e}"
