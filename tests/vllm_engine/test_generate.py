"""Cloud-only decoding on vLLM: the generate endpoint is vLLM's own greedy decoding, served to the edge.

The verifier's ``POST /v1/generate`` runs one ordinary vLLM request (no verdict processor involved);
the reference is the engine's ``greedy_decode`` (the target decoding alone) up to its end of text, and
the text is what vLLM's tokenizer decodes those tokens to. The edge in cloud-only mode must then serve
exactly that text under the OpenAI API.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient
from edgespec_edge.server import create_app
from edgespec_verifier.engines.vllm import VllmEngine
from prometheus_client import CollectorRegistry

from .conftest import PROMPTS, TOKEN

pytestmark = pytest.mark.vllm

MAX_TOKENS = 16


async def _lines(verifier: TestServer, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        ClientSession() as http,
        http.post(verifier.make_url("/v1/generate"), json=body, headers=headers) as response,
    ):
        text = await response.text()
        if response.status != 200:
            return response.status, [json.loads(text)]
        return response.status, [json.loads(line) for line in text.splitlines()]


async def test_vllm_generate_is_the_target_decoding_alone_and_the_edge_serves_it(
    vllm_engine: VllmEngine, verifier: TestServer, target_runtime: LlamaRuntime
) -> None:
    tokenizer = vllm_engine.llm.get_tokenizer()
    prompt = target_runtime.tokenize(PROMPTS[0])
    alone = vllm_engine.greedy_decode(prompt, MAX_TOKENS)  # the target alone, ignoring end of text
    status, lines = await _lines(verifier, {"tokens": prompt, "max_tokens": MAX_TOKENS})
    assert status == 200
    assert lines[0]["prompt_tokens"] == len(prompt)
    generated = sum(line.get("tokens", 0) for line in lines)
    if lines[-1]["finish_reason"] == "length":
        assert generated == MAX_TOKENS
    else:  # stopped where the target ends its text
        assert lines[-1]["finish_reason"] == "stop" and generated < MAX_TOKENS
        assert alone[generated] == tokenizer.eos_token_id or target_runtime.is_end_of_generation(
            alone[generated]
        )
    expected_tokens = alone[:generated]
    expected = tokenizer.decode(expected_tokens, skip_special_tokens=True)
    assert "".join(line.get("text", "") for line in lines) == expected

    client = VerifierClient(str(verifier.make_url("")), TOKEN, retry_budget_s=1.0)
    app = create_app(EdgeSettings(mode="cloud-only"), registry=CollectorRegistry(), client=client)
    async with TestClient(TestServer(app)) as edge:
        response = await edge.post("/v1/completions", json={"prompt": prompt, "max_tokens": MAX_TOKENS})
        assert response.status == 200
        body = await response.json()
        assert body["choices"][0]["text"] == expected
        assert body["usage"]["completion_tokens"] == len(expected_tokens)
        response = await edge.post(
            "/v1/completions", json={"prompt": prompt, "max_tokens": MAX_TOKENS, "stream": True}
        )
        events = [line[6:] for line in (await response.text()).splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == expected
        response = await edge.post("/v1/completions", json={"prompt": [10**9], "max_tokens": 4})
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["code"] == "invalid_value" and error["param"] == "prompt"


async def test_vllm_generate_refuses_a_prompt_longer_than_the_context(verifier: TestServer) -> None:
    status, lines = await _lines(verifier, {"tokens": [2] * 2000, "max_tokens": 4})
    assert status == 400
    assert lines[0]["error"]["code"] == "context_length_exceeded"
    assert "the context window holds 1024" in lines[0]["error"]["message"]
