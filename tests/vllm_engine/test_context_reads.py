"""edgespec_verifier_context_tokens_total{kind} on vLLM: what the prefix cache did not hold.

vLLM recomputes a context from its last cached full block (``num_cached_tokens``): in steady state a
round computes only the context's last partial block (here at times one full block more: vLLM did not
always cache the block the previous round completed last), never the whole context; a session whose
generated context vLLM never computed (it moved here from another replica) counts all of it as
re-read. Block-pool eviction is vLLM's own and not forced here.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from edgespec.wire import VerifyRequest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_verifier.engines import ContextReads, context_reads
from edgespec_verifier.engines.vllm import VllmEngine
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BLOCK_SIZE, TOKEN

pytestmark = pytest.mark.vllm

AUTH = {"Authorization": f"Bearer {TOKEN}"}
K = 3
ROUNDS = 12
PROMPT = (
    "Context reads on vLLM: a lighthouse keeper on a windy northern island writes down every ship "
    "that passes, the colour of its flag, the hour, and the state of the sea. One autumn evening"
)
MOVED_PROMPT = "Context reads when a session arrives from another replica: the orchard behind the mill"
MOVED_GENERATED = " was full of apples that year, and the children of the village came every afternoon to"


async def context_tokens(http: ClientSession, server: TestServer) -> ContextReads:
    async with http.get(server.make_url("/metrics")) as response:
        text = await response.text()
    values = {
        sample.labels["kind"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == "edgespec_verifier_context_tokens"
        for sample in family.samples
        if sample.name == "edgespec_verifier_context_tokens_total"
    }
    return ContextReads(prompt=values["prompt"], reread=values["reread"])


def llama_greedy(runtime: LlamaRuntime, prompt: list[int], count: int) -> list[int]:
    """The target's continuation from llama.cpp: drafts vLLM has never computed (none in its cache)."""
    sequence = runtime.new_sequence()
    try:
        tokens = list(prompt)
        for _ in range(count):
            tokens.append(int(np.argmax(sequence.logits(tokens, len(tokens) - 1)[0])))
        return tokens[len(prompt) :]
    finally:
        sequence.close()


async def verify(http: ClientSession, server: TestServer, request: VerifyRequest) -> tuple[int, int]:
    async with http.post(server.make_url("/v1/verify"), data=request.model_dump_json()) as response:
        assert response.status == 200, await response.text()
        verdict = await response.json()
    return int(verdict["accepted"]), int(verdict["next_token"])


async def test_steady_rounds_recompute_only_the_context_tail(
    verifier: TestServer, vllm_engine: VllmEngine, target_runtime: LlamaRuntime
) -> None:
    prompt = target_runtime.tokenize(PROMPT)
    assert len(prompt) > BLOCK_SIZE
    context = list(prompt)
    async with ClientSession(headers=AUTH) as http:
        assert await context_tokens(http, verifier) == ContextReads()
        total = ContextReads()
        for round_index in range(ROUNDS):
            draft = llama_greedy(target_runtime, context, K)  # the target's own tokens: mostly accepted
            request = VerifyRequest(
                session_id="vllm-reads", tokens=context, prompt_tokens=len(prompt), draft=draft
            )
            accepted, next_token = await verify(http, verifier, request)
            info = vllm_engine.session("vllm-reads")
            assert info is not None
            # The counter is vLLM's own prefix-cache hit, split at the prompt's end.
            expected = context_reads(info.cached_tokens, len(context), len(prompt))
            total = ContextReads(total.prompt + expected.prompt, total.reread + expected.reread)
            assert await context_tokens(http, verifier) == total, round_index
            if round_index == 0:
                assert expected == ContextReads(prompt=len(prompt), reread=0)
            else:  # the context's tail only: its last partial block, at times one full block more
                tail = len(context) - 1 - (len(context) - 1) // BLOCK_SIZE * BLOCK_SIZE
                assert expected.prompt + expected.reread <= tail + BLOCK_SIZE, (round_index, info)
            context += [*draft[:accepted], next_token]
    # The rounds crossed a block boundary past the prompt: steady state, not only the prompt's block.
    assert (len(context) - 1) // BLOCK_SIZE > (len(prompt) - 1) // BLOCK_SIZE
    assert total.prompt >= len(prompt)  # once, plus the prompt's tail while it shared the partial block


async def test_a_session_from_another_replica_rereads_its_generated_context(
    verifier: TestServer, target_runtime: LlamaRuntime
) -> None:
    prompt = target_runtime.tokenize(MOVED_PROMPT)
    generated = target_runtime.tokenize(MOVED_GENERATED, add_bos=False)
    context = [*prompt, *generated]
    request = VerifyRequest(
        session_id="vllm-moved", tokens=context, prompt_tokens=len(prompt), draft=generated[:2]
    )
    async with ClientSession(headers=AUTH) as http:
        await verify(http, verifier, request)
        counts = await context_tokens(http, verifier)
    # All of it computed here: the prompt as prompt, the generated context (its last token aside) reread.
    assert counts == ContextReads(prompt=len(prompt), reread=len(generated) - 1)
