"""Cloud-only decoding: the verifier's generate endpoint and the edge server without a draft model.

Where speculation does not pay, a device class's edge server runs ``--mode cloud-only``: it loads no
model, forwards each request to the verifier's ``POST /v1/generate`` and streams the target's own
generation back under the same OpenAI API. These tests hold it to the target decoding alone (greedy,
token for token), to the speculative server's API (text, usage, streaming, error objects), and the
generate endpoint to one clear 400 per bad input.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient
from edgespec_edge.server import METRICS as EDGE_METRICS
from edgespec_edge.server import STATE as EDGE_STATE
from edgespec_edge.server import create_app
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from edgespec_verifier.server import METRICS as VERIFIER_METRICS
from edgespec_verifier.server import VerifierSettings
from edgespec_verifier.server import create_app as create_verifier_app
from prometheus_client import CollectorRegistry

from .conftest import PROMPTS, TOKEN, ServedAsInProduction, target_greedy
from .test_edge_resilience import _until

pytestmark = pytest.mark.models

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _edge(
    settings: EdgeSettings, verifier: TestServer, runtime: LlamaRuntime | None = None
) -> TestClient[web.Request, web.Application]:
    client = VerifierClient(str(verifier.make_url("")), TOKEN, retry_budget_s=1.0)
    app = create_app(settings, registry=CollectorRegistry(), runtime=runtime, client=client)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    return test_client


@pytest.fixture
async def cloud_edge(verifier: TestServer) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    # No draft model anywhere: the path does not exist, and cloud-only mode never looks.
    edge = await _edge(EdgeSettings(mode="cloud-only", draft_model="/nonexistent/draft.gguf"), verifier)
    yield edge
    await edge.close()


def _sse(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def _generate_lines(verifier: TestServer, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    async with (
        ClientSession() as http,
        http.post(verifier.make_url("/v1/generate"), json=body, headers=AUTH) as response,
    ):
        text = await response.text()
        if response.status != 200:
            return response.status, [json.loads(text)]
        return response.status, [json.loads(line) for line in text.splitlines()]


async def test_the_verifier_generates_exactly_the_target_decoding_alone(
    verifier: TestServer, engine: LlamaCppEngine
) -> None:
    for prompt in PROMPTS[:3]:
        tokens = engine.runtime.tokenize(prompt)
        expected = target_greedy(engine, tokens, 24)
        status, lines = await _generate_lines(verifier, {"tokens": tokens, "max_tokens": 24})
        assert status == 200
        assert lines[0]["prompt_tokens"] == len(tokens)
        assert lines[-1]["finish_reason"] in ("length", "stop")
        assert sum(line.get("tokens", 0) for line in lines) == len(expected)
        text = "".join(line.get("text", "") for line in lines)
        assert text == engine.runtime.detokenize(expected).decode("utf-8", "replace")
        # Text is tokenized by the target itself, exactly as the edge would have.
        status, by_text = await _generate_lines(verifier, {"prompt": prompt, "max_tokens": 24})
        assert "".join(line.get("text", "") for line in by_text) == text


async def test_the_verifier_generates_with_sampling_too(verifier: TestServer) -> None:
    """Temperature above 0: the target samples alone (no draft, so no draft distributions), and a
    seed makes the text repeat."""
    body = {"prompt": PROMPTS[2], "max_tokens": 12, "sampling": {"temperature": 0.9, "seed": 7}}
    texts = []
    for _ in range(2):
        status, lines = await _generate_lines(verifier, body)
        assert status == 200
        assert not [line for line in lines if "error" in line], lines
        assert lines[-1]["finish_reason"] in ("length", "stop")
        assert 0 < sum(line.get("tokens", 0) for line in lines) <= 12
        texts.append("".join(line.get("text", "") for line in lines))
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        ({"max_tokens": 4}, 400, "bad_request", "exactly one of prompt, messages and tokens"),
        ({"prompt": "a", "tokens": [1], "max_tokens": 4}, 400, "bad_request", "exactly one of"),
        ({"prompt": "a"}, 400, "bad_request", "max_tokens: Field required"),
        ({"prompt": "a", "max_tokens": 0}, 400, "bad_request", "max_tokens"),
        ({"tokens": [], "max_tokens": 4}, 400, "bad_request", "tokens"),
        ({"tokens": [10**9], "max_tokens": 4}, 400, "invalid_value", "token ids must be between 0 and"),
        (
            {"tokens": [2] * 600, "max_tokens": 4},
            400,
            "context_length_exceeded",
            "the context window holds 512",
        ),
        (
            {"prompt": "a", "max_tokens": 4, "sampling": {"temperature": -1}},
            400,
            "bad_request",
            "temperature",
        ),
        ({"prompt": "a", "max_tokens": 4, "version": 9}, 400, "bad_request", "wire version 9 not supported"),
    ],
)
async def test_the_generate_endpoint_refuses_bad_input_with_one_clear_error(
    verifier: TestServer, body: dict[str, Any], status: int, code: str, says: str
) -> None:
    got, lines = await _generate_lines(verifier, body)
    assert got == status
    error = lines[0]["error"]
    assert error["code"] == code
    assert says in error["message"]
    assert len(error["message"]) <= 300
    if code in ("invalid_value", "context_length_exceeded"):
        assert error["param"] == "prompt"


async def test_the_generate_endpoint_needs_the_token(verifier: TestServer) -> None:
    async with (
        ClientSession() as http,
        http.post(verifier.make_url("/v1/generate"), json={"prompt": "a", "max_tokens": 2}) as response,
    ):
        assert response.status == 401


async def test_cloud_only_edge_serves_the_target_decoding_alone_with_the_same_api(
    cloud_edge: TestClient[web.Request, web.Application], engine: LlamaCppEngine
) -> None:
    prompt = PROMPTS[0]
    prompt_tokens = engine.runtime.tokenize(prompt)
    expected_tokens = target_greedy(engine, prompt_tokens, 20)
    expected = engine.runtime.detokenize(expected_tokens).decode("utf-8", "replace")

    response = await cloud_edge.post("/v1/completions", json={"prompt": prompt, "max_tokens": 20})
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == expected
    assert body["usage"] == {
        "prompt_tokens": len(prompt_tokens),
        "completion_tokens": len(expected_tokens),
        "total_tokens": len(prompt_tokens) + len(expected_tokens),
    }
    assert "speculative" not in body  # nothing was drafted

    response = await cloud_edge.post(
        "/v1/completions",
        json={"prompt": prompt, "max_tokens": 20, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = _sse(await response.text())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) > 3  # streamed as generated, not in one piece
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == expected
    assert chunks[-1]["usage"]["completion_tokens"] == len(expected_tokens)

    # Token-id prompts and stop strings behave as in speculative mode.
    cut = expected[: len(expected) // 2].rstrip()[-3:]
    response = await cloud_edge.post(
        "/v1/completions", json={"prompt": prompt_tokens, "max_tokens": 20, "stop": [cut]}
    )
    body = await response.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["text"] == expected[: expected.index(cut)]

    response = await cloud_edge.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "stream": True},
    )
    events = _sse(await response.text())
    first = json.loads(events[0])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1] == "[DONE]"

    ready = await (await cloud_edge.get("/readyz")).json()
    assert ready == {"status": "ready", "mode": "cloud-only"}


async def test_cloud_only_and_speculative_edges_answer_alike(
    cloud_edge: TestClient[web.Request, web.Application], verifier: TestServer, draft_runtime: LlamaRuntime
) -> None:
    speculative = await _edge(EdgeSettings(k=3), verifier, runtime=draft_runtime)
    try:
        chat = {"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 12}
        bad_requests: list[dict[str, Any]] = [
            {"prompt": [10**9], "max_tokens": 4},
            {"prompt": [2] * 600, "max_tokens": 4},
            {"prompt": ["a", "b"], "max_tokens": 4},
            {"prompt": "a", "max_tokens": 4, "logprobs": 3},
            {"prompt": "a", "model": "other"},
            {"prompt": "a\ud800b", "max_tokens": 4},  # a lone surrogate: valid JSON, no text
        ]
        for path, body in [("/v1/chat/completions", chat), *[("/v1/completions", b) for b in bad_requests]]:
            got = await cloud_edge.post(path, json=body)
            want = await speculative.post(path, json=body)
            assert got.status == want.status, body
            assert got.status < 500, body  # bad input is the client's error, in either mode
            answer, reference = await got.json(), await want.json()
            if got.status == 200:
                assert answer["choices"] == reference["choices"]
                assert answer["usage"] == reference["usage"]
            else:
                assert answer == reference, body
    finally:
        await speculative.close()


async def test_cloud_only_edge_names_an_unreachable_verifier() -> None:
    client = VerifierClient("http://127.0.0.1:9", TOKEN, retry_budget_s=0.2)
    app = create_app(EdgeSettings(mode="cloud-only"), registry=CollectorRegistry(), client=client)
    async with TestClient(TestServer(app)) as edge:
        response = await edge.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "verifier_refused"
        assert "127.0.0.1:9" in error["message"]


async def test_a_client_that_leaves_stops_the_verifiers_generation(engine: LlamaCppEngine) -> None:
    """Both servers as under ``run_app`` (handlers are not cancelled): the edge notices the client is
    gone at the next piece and closes its stream; the verifier notices at its next step."""
    verifier_app = create_verifier_app(
        VerifierSettings(), registry=CollectorRegistry(), engine=engine, tokens=TokenSource(token=TOKEN)
    )
    verifier = ServedAsInProduction(verifier_app, host="127.0.0.1")
    await verifier.start_server()
    client = VerifierClient(str(verifier.make_url("")), TOKEN, retry_budget_s=1.0)
    settings = EdgeSettings(mode="cloud-only", max_concurrent=1, max_queue=0)
    edge = ServedAsInProduction(
        create_app(settings, registry=CollectorRegistry(), client=client), host="127.0.0.1"
    )
    await edge.start_server()
    generated = verifier_app[VERIFIER_METRICS].generated
    sessions_before = engine.session_count()
    try:
        async with ClientSession() as http:
            response = await http.post(
                edge.make_url("/v1/completions"),
                json={"prompt": PROMPTS[2], "max_tokens": 400, "stream": True},
            )
            assert response.status == 200
            await response.content.readline()  # the first text arrived
            response.close()  # the client goes away
        at_disconnect = generated._value.get()
        admission = edge.app[EDGE_STATE]["admission"]
        await _until(lambda: admission.busy == 0, "the edge's slot is freed")
        await _until(lambda: engine.session_count() <= sessions_before, "the verifier's session is closed")
        settled = generated._value.get()
        await asyncio.sleep(0.5)
        assert generated._value.get() == settled < 400  # stopped, long before max_tokens
        assert settled - at_disconnect <= 5  # within a few steps of the client leaving
        assert edge.app[EDGE_METRICS].cancelled._value.get() == 1
    finally:
        await edge.close()
        await verifier.close()
