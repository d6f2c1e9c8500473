"""The requests guidellm sends, as it sends them: two vLLM extensions the edge honours.

guidellm (the load generator the vLLM and llm-d communities benchmark with) asks for a fixed output
length with ``ignore_eos: true`` and ``stop: null``, and streams with
``stream_options: {include_usage: true, continuous_usage_stats: true}``. Before, the edge answered
both with 400 (an unknown parameter, an unknown stream option), so every guidellm request failed.
Now ``ignore_eos`` makes the end of the text stop nothing (exactly ``max_tokens`` are made) and
``continuous_usage_stats`` puts the running usage in every chunk. In cloud-only mode ``ignore_eos``
is refused naming it (the verifier's generate endpoint has no such option).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime

from .conftest import start_edge

pytestmark = pytest.mark.models

GUIDELLM_STREAM = {
    "stream": True,
    "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    "stop": None,
    "ignore_eos": True,
}


@pytest.fixture
async def edge(verifier: TestServer, draft_runtime: LlamaRuntime) -> AsyncIterator[TestServer]:
    server = await start_edge(EdgeSettings(k=3), draft_runtime, str(verifier.make_url("")))
    yield server
    await server.close()


async def _post(server: TestServer, body: dict[str, Any]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/v1/completions"), json=body) as response,
    ):
        return response.status, await response.text()


def _chunks(text: str) -> list[dict[str, Any]]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]", lines[-1]
    return [json.loads(line) for line in lines[:-1]]


async def test_guidellms_streaming_request_gets_usage_in_every_chunk(edge: TestServer) -> None:
    status, text = await _post(
        edge, {"prompt": "The capital of France is", "max_tokens": 12, **GUIDELLM_STREAM}
    )
    assert status == 200, text
    chunks = _chunks(text)
    content = [c for c in chunks if c["choices"]]
    assert content and all(c["usage"] is not None for c in content)
    made = [c["usage"]["completion_tokens"] for c in content]
    assert made == sorted(made) and made[0] >= 1  # running counts, never going back
    final = chunks[-1]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 12


async def test_usage_stays_null_in_content_chunks_without_continuous_stats(edge: TestServer) -> None:
    body = {"prompt": "The capital of France is", "max_tokens": 6, "stream": True}
    status, text = await _post(edge, {**body, "stream_options": {"include_usage": True}})
    assert status == 200, text
    chunks = _chunks(text)
    assert all(c["usage"] is None for c in chunks if c["choices"])
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_ignore_eos_generates_past_the_end_of_the_text(
    edge: TestServer, draft_runtime: LlamaRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target continues "The end." with a newline; here a newline ends the text, as an EOS would."""
    newline = set(draft_runtime.tokenize("\n\n", add_bos=False)) | set(
        draft_runtime.tokenize("\n", add_bos=False)
    )
    real = draft_runtime.is_end_of_generation
    monkeypatch.setattr(draft_runtime, "is_end_of_generation", lambda t: t in newline or real(t))
    body = {"prompt": "The end.", "max_tokens": 10, "temperature": 0}
    status, text = await _post(edge, body)
    assert status == 200, text
    ended = json.loads(text)
    assert ended["choices"][0]["finish_reason"] == "stop"
    assert ended["usage"]["completion_tokens"] < 10
    status, text = await _post(edge, {**body, "ignore_eos": True})
    assert status == 200, text
    ignored = json.loads(text)
    assert ignored["choices"][0]["finish_reason"] == "length"
    assert ignored["usage"]["completion_tokens"] == 10
    assert "\n" in ignored["choices"][0]["text"]  # what ended the text before is in it now


async def test_an_unknown_stream_option_is_still_refused(edge: TestServer) -> None:
    body = {"prompt": "Hi", "max_tokens": 2, "stream": True, "stream_options": {"include_tokens": True}}
    status, text = await _post(edge, body)
    assert status == 400
    assert json.loads(text)["error"]["param"] == "stream_options.include_tokens"


async def test_cloud_only_refuses_ignore_eos_naming_it(verifier: TestServer) -> None:
    settings = EdgeSettings(mode="cloud-only", draft_model="/nonexistent/draft.gguf")
    server = await start_edge(settings, None, str(verifier.make_url("")))  # type: ignore[arg-type]
    try:
        status, text = await _post(server, {"prompt": "Hi", "max_tokens": 2, "ignore_eos": True})
        assert status == 400
        error = json.loads(text)["error"]
        assert (error["code"], error["param"]) == ("unsupported_parameter", "ignore_eos")
    finally:
        await server.close()
