"""vLLM engine sessions: open, rounds from the prefix cache, close, eviction; 401 without the token."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from dataplane.test_auth import (  # the llama.cpp tier's test, run here against the vLLM verifier
    test_right_token_is_accepted,
    test_unauthenticated_requests_get_401_and_change_nothing,
)
from edgespec.wire import SessionOpen, VerifyRequest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_verifier.engines.vllm import VllmEngine

from .conftest import BLOCK_SIZE, TOKEN

pytestmark = pytest.mark.vllm
__all__ = ["test_right_token_is_accepted", "test_unauthenticated_requests_get_401_and_change_nothing"]

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
    "experimented with two-wheeled machines pushed along by the rider's feet. Over the following "
    "decades pedals, chains and pneumatic tyres turned it into a practical vehicle. By the end of the "
    "century bicycle clubs, races and touring guides had spread across many countries, and cheap "
    "mass production put one within reach of factory workers, who rode them to work every day and"
)


@pytest.fixture(scope="module")
def context(target_runtime: LlamaRuntime) -> list[int]:
    tokens = target_runtime.tokenize(TEXT)
    assert len(tokens) > 2 * BLOCK_SIZE
    return tokens


async def test_session_lifecycle_reads_context_once(
    verifier: TestServer, vllm_engine: VllmEngine, context: list[int]
) -> None:
    """Open pre-reads the context; later rounds hit the prefix cache for all but the last partial block."""
    greedy = vllm_engine.greedy_decode(context, 12)
    async with ClientSession(headers=AUTH) as http:
        opened = SessionOpen(session_id="life", tokens=context)
        async with http.post(verifier.make_url("/v1/sessions"), data=opened.model_dump_json()) as r:
            assert r.status == 200
            assert (await r.json())["cached_tokens"] == len(context) // BLOCK_SIZE * BLOCK_SIZE
        assert vllm_engine.session("life") is not None
        tokens = list(context)
        for round_index in range(3):
            done = len(tokens) - len(context)
            draft = [*greedy[done : done + 3], 0 if greedy[done + 3] else 1]  # three right, one wrong
            request = VerifyRequest(session_id="life", tokens=tokens, draft=draft)
            async with http.post(verifier.make_url("/v1/verify"), data=request.model_dump_json()) as r:
                assert r.status == 200, await r.text()
                verdict = await r.json()
            assert (verdict["accepted"], verdict["next_token"]) == (3, greedy[done + 3]), round_index
            info = vllm_engine.session("life")
            assert info is not None and info.context_tokens == len(tokens)
            # Everything but the context's last partial block came from the cache (no context re-read).
            assert info.cached_tokens >= (len(tokens) - 1) // BLOCK_SIZE * BLOCK_SIZE, info
            tokens += [*draft[:3], verdict["next_token"]]
        async with http.delete(verifier.make_url("/v1/sessions/life")) as r:
            assert r.status == 204
    assert vllm_engine.session("life") is None


def test_eviction_keeps_the_table_bounded_and_answers_right(
    vllm_engine: VllmEngine, context: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_engine, "max_sessions", 2)
    for name in ("e1", "e2", "e3"):
        vllm_engine.close_session(name)
    draft = vllm_engine.greedy_decode(context, 3)
    expected = vllm_engine.verify(VerifyRequest(session_id="e1", tokens=context, draft=draft))
    assert expected[0] == 3
    vllm_engine.verify(VerifyRequest(session_id="e2", tokens=context[:40], draft=[1]))
    vllm_engine.verify(VerifyRequest(session_id="e3", tokens=context[:50], draft=[1]))
    assert vllm_engine.session("e1") is None  # least recently used: forgotten
    assert vllm_engine.session_count() <= 2
    # An evicted session's next round is still right (the full context travels in every request).
    assert vllm_engine.verify(VerifyRequest(session_id="e1", tokens=context, draft=draft)) == expected
    assert vllm_engine.session("e1") is not None and vllm_engine.session("e2") is None
