"""The edge's OpenAI-compatible API: verified text only, streaming, live K, clear verifier failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient
from edgespec_edge.server import create_app
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from prometheus_client import CollectorRegistry

from .conftest import TOKEN, target_greedy

pytestmark = pytest.mark.models


async def _edge(
    settings: EdgeSettings, runtime: LlamaRuntime, verifier_url: str, token: str
) -> TestClient[web.Request, web.Application]:
    client = VerifierClient(verifier_url, token, retry_budget_s=settings.retry_budget_s)
    app = create_app(settings, registry=CollectorRegistry(), runtime=runtime, client=client)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    return test_client


async def test_completions_stream_and_chat_match_target(
    tmp_path: Path, verifier: TestServer, draft_runtime: LlamaRuntime, engine: LlamaCppEngine
) -> None:
    k_file = tmp_path / "k.yaml"
    k_file.write_text("k: 2\n")
    settings = EdgeSettings(k_file=k_file, k=4)
    edge = await _edge(settings, draft_runtime, str(verifier.make_url("")), TOKEN)
    try:
        prompt = "The capital of France is"
        expected_tokens = target_greedy(engine, engine.runtime.tokenize(prompt), 20)
        expected = engine.runtime.detokenize(expected_tokens).decode("utf-8", "replace")

        response = await edge.post(
            "/v1/completions", json={"prompt": prompt, "max_tokens": 20, "temperature": 0}
        )
        assert response.status == 200
        body = await response.json()
        assert body["choices"][0]["text"] == expected
        assert body["usage"]["completion_tokens"] == len(expected_tokens)

        # K changes live through the mounted file: no restart.
        k_file.write_text("k: 6\n")
        response = await edge.post(
            "/v1/completions", json={"prompt": prompt, "max_tokens": 20, "temperature": 0, "stream": True}
        )
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == expected
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

        metrics = await (await edge.get("/metrics")).text()
        assert 'edgespec_edge_rounds_total{k="2"}' in metrics
        assert 'edgespec_edge_rounds_total{k="6"}' in metrics
        assert "edgespec_edge_speculative_length 6.0" in metrics

        response = await edge.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "stream": True},
        )
        events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data: ")]
        first = json.loads(events[0])
        assert first["object"] == "chat.completion.chunk"
        assert first["choices"][0]["delta"]["role"] == "assistant"
        assert events[-1] == "[DONE]"
    finally:
        await edge.close()


async def test_unreachable_verifier_fails_with_clear_error(draft_runtime: LlamaRuntime) -> None:
    settings = EdgeSettings(k=2, retry_budget_s=0.3)
    edge = await _edge(settings, draft_runtime, "http://127.0.0.1:9", TOKEN)
    try:
        response = await edge.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 8})
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "verifier_refused"
        assert "connection refused" in error["message"] and "127.0.0.1:9" in error["message"]
    finally:
        await edge.close()


async def test_wrong_token_is_not_retried_and_emits_nothing(
    verifier: TestServer, draft_runtime: LlamaRuntime
) -> None:
    edge = await _edge(EdgeSettings(k=2), draft_runtime, str(verifier.make_url("")), "not-the-token")
    try:
        response = await edge.post(
            "/v1/completions", json={"prompt": "Hello", "max_tokens": 8, "stream": True}
        )
        assert response.status == 502
        body = await response.json()
        assert body["error"]["code"] == "verifier_rejected"
        assert "401" in body["error"]["message"]
    finally:
        await edge.close()


async def test_sampling_request_is_served_and_seeded(
    verifier: TestServer, draft_runtime: LlamaRuntime
) -> None:
    edge = await _edge(EdgeSettings(k=3), draft_runtime, str(verifier.make_url("")), TOKEN)
    try:
        body = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0.8, "seed": 7}
        texts = []
        for _ in range(2):
            response = await edge.post("/v1/completions", json=body)
            assert response.status == 200
            texts.append((await response.json())["choices"][0]["text"])
        assert texts[0] == texts[1] and texts[0]  # same seed, same verified sample
    finally:
        await edge.close()
