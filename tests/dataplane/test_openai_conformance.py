"""The edge server as the official ``openai`` Python SDK meets it: one test per row of the contract.

Real draft model, real verifier (both llama.cpp on loopback). Greedy output must equal the target
decoding alone; every error must be OpenAI's error object (message, type, param, string code), short,
never echoing the input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from edgespec_edge.chat import gemma_prompt, render_chat
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_verifier.engines.llamacpp import LlamaCppEngine

from .conftest import start_edge, target_greedy

pytestmark = pytest.mark.models

MODEL = "edgespec"
HINDI = "भारत के प्रधानमंत्री और राज्य के"  # its first generated token's piece is 34 bytes


@pytest.fixture
async def edge(verifier: TestServer, draft_runtime: LlamaRuntime) -> AsyncIterator[TestServer]:
    server = await start_edge(EdgeSettings(k=3), draft_runtime, str(verifier.make_url("")))
    yield server
    await server.close()


@pytest.fixture
async def sdk(edge: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=str(edge.make_url("/v1")), api_key="unused", max_retries=0)
    yield client
    await client.close()


def _expected(engine: LlamaCppEngine, prompt: str, max_tokens: int) -> tuple[str, int]:
    tokens = target_greedy(engine, engine.runtime.tokenize(prompt), max_tokens)
    return engine.runtime.detokenize(tokens).decode("utf-8"), len(tokens)


def _assert_error_object(error: openai.APIStatusError, status: int, code: str, param: str | None) -> None:
    assert error.status_code == status
    body = error.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}
    assert body["code"] == code and isinstance(body["code"], str)
    assert body["param"] == param
    assert 0 < len(body["message"]) <= 300


async def test_completion_matches_the_target_and_keeps_long_pieces(
    sdk: openai.AsyncOpenAI, engine: LlamaCppEngine
) -> None:
    expected, count = _expected(engine, HINDI, 6)
    assert len(engine.runtime.detokenize(target_greedy(engine, engine.runtime.tokenize(HINDI), 1))) > 32
    completion = await sdk.completions.create(model=MODEL, prompt=HINDI, max_tokens=6, temperature=0)
    assert completion.choices[0].text == expected
    assert completion.usage is not None and completion.usage.completion_tokens == count
    assert completion.model == MODEL and completion.object == "text_completion"
    assert completion.choices[0].finish_reason == "length"


async def test_stream_with_include_usage_ends_with_a_usage_only_chunk(
    sdk: openai.AsyncOpenAI, engine: LlamaCppEngine
) -> None:
    expected, count = _expected(engine, HINDI, 8)
    stream = await sdk.completions.create(
        model=MODEL,
        prompt=HINDI,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == count
    assert all(c.usage is None for c in chunks[:-1])
    texts = [c.choices[0].text for c in chunks[:-1]]
    assert "".join(texts) == expected
    assert all("\ufffd" not in t for t in texts)  # no character split between chunks
    assert chunks[-2].choices[0].finish_reason == "length"

    # Without include_usage: no usage anywhere, still [DONE]-terminated (the SDK ends cleanly).
    stream = await sdk.completions.create(model=MODEL, prompt=HINDI, max_tokens=4, stream=True)
    assert all(c.usage is None for c in [chunk async for chunk in stream])


async def test_chat_takes_content_parts_and_the_developer_role(
    sdk: openai.AsyncOpenAI, engine: LlamaCppEngine
) -> None:
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "color."}],
        },
    ]
    prompt = gemma_prompt([("developer", "Answer briefly."), ("user", "Name a color.")])
    tokens = target_greedy(engine, engine.runtime.tokenize(prompt, add_bos=False), 8)
    expected = engine.runtime.detokenize(tokens).decode("utf-8")
    chat = await sdk.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == expected

    stream = await sdk.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_completion_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_chat_on_the_base_test_model_folds_instructions_into_the_first_user_turn(
    draft_runtime: LlamaRuntime,
) -> None:
    # The test model is a base model: no template in the GGUF, so Gemma's turn format is used, and
    # Gemma has no system role.
    assert draft_runtime.metadata("tokenizer.chat_template") is None
    prompt = render_chat(
        draft_runtime, [("system", "Be brief."), ("developer", "Use English."), ("user", "Hi")]
    )
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nUse English.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    assert "system" not in prompt


async def test_models_list_and_retrieve(sdk: openai.AsyncOpenAI) -> None:
    listed = await sdk.models.list()
    assert [m.id for m in listed.data] == [MODEL]
    assert (await sdk.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.models.retrieve("gpt-4o")
    _assert_error_object(caught.value, 404, "model_not_found", "model")


async def test_an_unknown_model_is_404_model_not_found(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.completions.create(model="gpt-4o", prompt="Hi", max_tokens=2)
    _assert_error_object(caught.value, 404, "model_not_found", "model")
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3, "logprobs": None}, "top_logprobs"),
        ({"top_p": 0.5}, "top_p"),
        ({"extra_body": {"top_k": 40}}, "top_k"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
            "tools",
        ),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
    ],
)
async def test_unsupported_parameters_are_refused_by_name(
    sdk: openai.AsyncOpenAI, options: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=2,
            **options,  # type: ignore[call-overload]
        )
    code = "unknown_parameter" if param == "frobnicate" else "unsupported_parameter"
    _assert_error_object(caught.value, 400, code, param)


async def test_neutral_values_of_unsupported_parameters_are_accepted(sdk: openai.AsyncOpenAI) -> None:
    chat = await sdk.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        n=1,
        top_p=1,
        logprobs=False,
        presence_penalty=0,
        seed=3,
        user="someone",
    )
    assert chat.choices[0].finish_reason in ("length", "stop")


async def test_out_of_range_values_name_the_parameter_without_echoing_it(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=2, temperature=7.5)
    _assert_error_object(caught.value, 400, "invalid_value", "temperature")
    assert "7.5" not in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}],
            max_tokens=2,
        )
    _assert_error_object(caught.value, 400, "invalid_value", "messages.0.role")
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            max_tokens=2,
        )
    assert caught.value.body["param"].startswith("messages.0.content")  # type: ignore[index]


async def test_http_errors_are_openai_error_objects(edge: TestServer) -> None:
    big = "x" * (2 * 1024 * 1024)
    async with aiohttp.ClientSession() as http:
        for method, path, data, status, code in (
            ("GET", "/v1/nothing-here", None, 404, "not_found"),
            ("GET", "/v1/completions", None, 405, "method_not_allowed"),
            ("POST", "/v1/completions", f'{{"prompt": "{big}"}}', 413, "request_too_large"),
            ("POST", "/v1/completions", '{"prompt": ', 400, "invalid_json"),
            ("POST", "/v1/completions", "[1, 2]", 400, "invalid_json"),
        ):
            async with http.request(method, edge.make_url(path), data=data) as response:
                raw = await response.read()
                assert response.status == status, path
                assert response.content_type == "application/json"
                assert len(raw) < 500  # short, whatever the input's size
                error = (await response.json())["error"]
                assert set(error) == {"message", "type", "param", "code"}
                assert error["code"] == code
        # A large but admissible body with a bad field: the answer does not echo it either.
        async with http.post(
            edge.make_url("/v1/completions"), json={"prompt": "x" * 500_000, "max_tokens": "many"}
        ) as response:
            assert response.status == 400
            assert len(await response.read()) < 500
        for path in ("/health", "/healthz"):
            async with http.get(edge.make_url(path)) as response:
                assert response.status == 200
