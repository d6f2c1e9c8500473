"""The edge draft server: an OpenAI-compatible API for local clients over the draft-verify loop.

``/v1/completions`` and ``/v1/chat/completions`` (streaming as server-sent events, or one JSON body),
``/v1/models`` and ``/v1/models/{id}``, ``/health`` and ``/healthz``, ``/readyz`` and ``/metrics``.
Text reaches the client only from tokens the verifier accepted (see :mod:`edgespec_edge.loop`). A
streaming response is started only once the first verified tokens exist, so a verifier that is down
from the start yields a plain 502 JSON error; one that fails mid-stream ends the stream with an
``error`` event and no ``[DONE]``.

Every error, aiohttp's own 404/405/413 included, is OpenAI's error object ``{"error": {message, type,
param, code}}`` with a short message that never echoes the input. Parameters the server cannot honour
(``n`` > 1, ``tools``, ``logprobs``, ``top_p`` < 1, ...) are refused with 400 naming the parameter
rather than silently ignored; unknown parameters likewise. Admission is bounded: beyond
``max_concurrent`` generating and ``max_queue`` waiting requests the answer is 429 with
``Retry-After``, at once. A client that disconnects stops its generation before the next round.

``create_app(settings, registry=None, runtime=None, client=None)``: tests inject a loaded draft model
and a verifier client; otherwise both are built from the settings in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from edgespec.wire import ChatTurn, GenerateRequest, SamplingParams
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgespec_edge.chat import render_chat
from edgespec_edge.config import EdgeSettings, SpeculativeLength
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import (
    Admission,
    ClientGone,
    Drafter,
    GenerationStats,
    QueueFull,
    RoundStats,
    VerifierClient,
    VerifierRejected,
    VerifierUnavailable,
    cloud_generate,
    speculative_generate,
)
from edgespec_edge.prompting import PromptError, prompt_tokens
from edgespec_edge.telemetry import RoundTally, TelemetrySettings, telemetry_context

log = logging.getLogger("edgespec.edge")

MAX_BODY_BYTES = 1024 * 1024
PROBE_TTL_S = 5.0


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        time_buckets = (0.001, 0.003, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0)
        wait_buckets = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
        self.rounds = Counter("edgespec_edge_rounds", "Draft-verify rounds, by K.", ["k"], registry=registry)
        self.drafted = Counter(
            "edgespec_edge_drafted_tokens",
            "Draft tokens sent for verification, by K.",
            ["k"],
            registry=registry,
        )
        self.accepted = Counter(
            "edgespec_edge_accepted_tokens",
            "Draft tokens accepted, by K (acceptance per K = accepted / drafted).",
            ["k"],
            registry=registry,
        )
        self.tokens_served = Counter(
            "edgespec_edge_tokens_served", "Verified tokens delivered to clients.", registry=registry
        )
        self.generation_seconds = Counter(
            "edgespec_edge_generation_seconds",
            "Wall time spent generating (goodput = rate(tokens_served) / rate(generation_seconds)).",
            registry=registry,
        )
        self.goodput = Histogram(
            "edgespec_edge_request_goodput_tokens_per_second",
            "Goodput of each finished request: verified tokens over its generation time.",
            buckets=(1, 2, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400),
            registry=registry,
        )
        self.round_trip = Histogram(
            "edgespec_edge_verify_round_trip_seconds",
            "Verify call round trip seen from the edge (network plus verifier).",
            buckets=time_buckets,
            registry=registry,
        )
        self.verify_time = Histogram(
            "edgespec_edge_verify_seconds",
            "Verifier-reported time per round.",
            buckets=time_buckets,
            registry=registry,
        )
        self.draft_time = Histogram(
            "edgespec_edge_draft_seconds",
            "Time drafting K tokens per round.",
            buckets=time_buckets,
            registry=registry,
        )
        self.ttft = Histogram(
            "edgespec_edge_time_to_first_token_seconds",
            "From a request's arrival to its first verified tokens (queue wait included).",
            buckets=wait_buckets,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "edgespec_edge_queue_wait_seconds",
            "Time a request waited for a request slot.",
            buckets=wait_buckets,
            registry=registry,
        )
        self.rejected = Counter(
            "edgespec_edge_requests_rejected",
            "Requests answered 429 because every slot and queue place was taken.",
            registry=registry,
        )
        self.cancelled = Counter(
            "edgespec_edge_requests_cancelled",
            "Generations stopped because the client disconnected.",
            registry=registry,
        )
        self.k = Gauge("edgespec_edge_speculative_length", "K currently in force.", registry=registry)
        self.errors = Counter(
            "edgespec_edge_verifier_errors",
            "Requests failed by the verifier, by kind.",
            ["kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "edgespec_edge_requests_in_flight", "Requests being generated or queued.", registry=registry
        )
        self.tally = RoundTally()  # the same rounds, pushed to the operator (edgespec_edge.telemetry)

    def record_round(self, stats: RoundStats) -> None:
        label = str(stats.k)
        self.rounds.labels(label).inc()
        self.drafted.labels(label).inc(stats.drafted)
        self.accepted.labels(label).inc(stats.accepted)
        self.round_trip.observe(stats.round_trip_s)
        self.verify_time.observe(stats.verify_s)
        self.draft_time.observe(stats.draft_s)
        self.k.set(stats.k)
        self.tally.record(stats)


# --- errors ---------------------------------------------------------------------------------------


class OpenAIError(Exception):
    """An error answered as OpenAI's error object; raise it anywhere below a handler."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message[:300], "type": kind, "param": param, "code": code}}
        self.headers = headers

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


_HTTP_ERRORS = {
    404: ("not_found", "no such endpoint; see /v1/models, /v1/completions, /v1/chat/completions"),
    405: ("method_not_allowed", "method not allowed on this endpoint"),
    413: ("request_too_large", f"request body larger than {MAX_BODY_BYTES} bytes"),
}


@web.middleware
async def openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as OpenAI's error object: ours, aiohttp's own 4xx, and unexpected failures."""
    try:
        return await handler(request)
    except OpenAIError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_ERRORS.get(exc.status, ("http_error", exc.reason))
        return OpenAIError(exc.status, message, code=code).response()
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected failure answering %s %s", request.method, request.path)
        return OpenAIError(500, "internal error", code="internal_error", kind="api_error").response()


PROMPT_CODES = ("invalid_value", "context_length_exceeded", "chat_template_missing")
"""Verifier error codes that are about the client's prompt (cloud-only): the client's 400, as is."""


def _no_tokens(tokens: list[int]) -> bytes:
    raise AssertionError("cloud-only text arrives decoded")


def _verifier_error(exc: VerifierUnavailable | VerifierRejected) -> OpenAIError:
    code = f"verifier_{exc.kind}" if isinstance(exc, VerifierUnavailable) else "verifier_rejected"
    return OpenAIError(502, str(exc), code=code, kind="api_error")


# --- request bodies -------------------------------------------------------------------------------


def _default(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or value in allowed or (isinstance(value, list | dict) and not value)


# OpenAI parameters this server cannot honour: accepted only at a value that changes nothing.
NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_default(1), "only n=1 is supported"),
    "best_of": (_default(1), "only best_of=1 is supported"),
    "echo": (_default(False), "echo is not supported"),
    "suffix": (_default(""), "suffix is not supported"),
    "logprobs": (_default(False), "logprobs are not supported"),
    "top_logprobs": (_default(0), "logprobs are not supported"),
    "logit_bias": (_default(), "logit_bias is not supported"),
    "frequency_penalty": (_default(0), "only frequency_penalty=0 is supported"),
    "presence_penalty": (_default(0), "only presence_penalty=0 is supported"),
    "repetition_penalty": (_default(1), "only repetition_penalty=1 is supported"),
    "top_p": (_default(1), "only top_p=1 is supported (sampling is from the full distribution)"),
    "top_k": (_default(0, -1), "top_k is not supported (sampling is from the full distribution)"),
    "min_p": (_default(0), "min_p is not supported"),
    "tools": (_default(), "tools are not supported"),
    "tool_choice": (_default("none"), "tools are not supported"),
    "functions": (_default(), "functions are not supported"),
    "function_call": (_default("none"), "functions are not supported"),
    "parallel_tool_calls": (lambda v: True, ""),
    "response_format": (lambda v: v is None or v == {"type": "text"}, "only text responses are supported"),
    "modalities": (lambda v: v is None or v == ["text"], "only the text modality is supported"),
    "audio": (_default(), "audio is not supported"),
    "prediction": (_default(), "predicted outputs are not supported"),
    "reasoning_effort": (_default(), "reasoning_effort is not supported"),
    "web_search_options": (_default(), "web search is not supported"),
    "service_tier": (_default("auto", "default"), "service tiers are not supported"),
    "store": (_default(False), "stored completions are not supported"),
    "metadata": (lambda v: True, ""),
    "user": (lambda v: True, ""),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: with include_usage, the running usage in every chunk


class CommonBody(BaseModel):
    """Fields both endpoints honour; anything else is checked against ``NEUTRAL`` first."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(default=None)
    ignore_eos: bool = False  # vLLM's (load generators send it): the end of the text does not stop

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> CommonBody:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self


class CompletionBody(CommonBody):
    prompt: str | list[str] | list[int] = Field(description="One prompt: text, [text] or token ids.")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatBody(CommonBody):
    messages: list[ChatMessage] = Field(min_length=1)


KNOWN = {
    *NEUTRAL,
    *CompletionBody.model_fields,
    *ChatBody.model_fields,
}


async def read_body(request: web.Request, kind: type[CommonBody]) -> CommonBody:
    """The request body as ``kind``, or an ``OpenAIError`` naming the parameter (never its value)."""
    raw = await request.read()
    try:
        data = json.loads(raw)
        # A lone surrogate escape ("\ud800") parses but is no text: no tokenizer or peer can take it.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise OpenAIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the body must be a JSON object", code="invalid_json")
    for name, value in data.items():
        if name not in KNOWN or (name not in NEUTRAL and name not in kind.model_fields):
            raise OpenAIError(
                400, f"unrecognized request argument: {name[:64]}", code="unknown_parameter", param=name[:64]
            )
        if name in NEUTRAL and not NEUTRAL[name][0](value):
            raise OpenAIError(400, NEUTRAL[name][1], code="unsupported_parameter", param=name)
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        loc: list[str] = []
        for part in first["loc"]:  # up to a union member's tag such as 'str' or 'list[TextPart]'
            if isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part):
                break
            loc.append(str(part))
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise OpenAIError(400, message, code="invalid_value", param=param) from None


# --- generation -----------------------------------------------------------------------------------


class TextAssembler:
    """Verified tokens to text deltas: whole UTF-8 characters only, held back before a stop string."""

    def __init__(self, detokenize: Callable[[list[int]], bytes], stops: list[str]) -> None:
        self._detokenize = detokenize
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._sent = 0
        self._stops = [s for s in stops if s]
        self.stopped = False

    def push(self, tokens: list[int]) -> str:
        # The decoder keeps the bytes of a character split across tokens until the rest arrives.
        self._text += self._decoder.decode(self._detokenize(tokens))
        return self._release(final=False)

    def push_text(self, text: str) -> str:
        """Text decoded elsewhere (cloud-only: by the verifier, whole characters already)."""
        self._text += text
        return self._release(final=False)

    def finish(self) -> str:
        self._text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stopped:
            return ""
        for stop in self._stops:
            at = self._text.find(stop, max(0, self._sent - len(stop)))
            if at >= 0:
                self.stopped = True
                out = self._text[self._sent : at]
                self._sent = at
                return out
        end = len(self._text)
        if not final:
            # Hold back a tail that could still grow into a stop string.
            for stop in self._stops:
                for size in range(min(len(stop) - 1, end - self._sent), 0, -1):
                    if stop.startswith(self._text[end - size :]):
                        end = min(end, len(self._text) - size)
                        break
        out = self._text[self._sent : end]
        self._sent = end
        return out


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class Generation:
    """One request's generation, answered as one JSON body or as a stream of OpenAI chunks."""

    def __init__(
        self, request: web.Request, body: CommonBody, prompt_tokens: list[int], arrived: float
    ) -> None:
        self.request = request
        self.body = body
        self.chat = isinstance(body, ChatBody)
        self.prompt_tokens = prompt_tokens
        self.arrived = arrived
        self.settings = request.app[SETTINGS]
        self.metrics = request.app[METRICS]
        self.stats = GenerationStats()
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.stream: web.StreamResponse | None = None

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        kind = "text_completion"
        if self.chat:
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.settings.served_model_name,
            "choices": choices,
        }

    def _choice(self, text: str, finish: str | None, *, chunk: bool, first: bool = False) -> dict[str, Any]:
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if not chunk:
            return {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text or first:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    async def _send(self, text: str, finish: str | None = None) -> None:
        first = self.stream is None
        if self.stream is None:
            self.stream = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await self.stream.prepare(self.request)
        chunk = self._envelope([self._choice(text, finish, chunk=True, first=first)], chunk=True)
        if self.include_usage:
            options = self.body.stream_options
            chunk["usage"] = self._usage() if options and options.continuous_usage_stats else None
        await self.stream.write(_sse(chunk))

    def _client_gone(self) -> bool:
        transport = self.request.transport
        return transport is None or transport.is_closing()

    def _usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.stats.prompt_tokens,
            "completion_tokens": self.stats.completion_tokens,
            "total_tokens": self.stats.prompt_tokens + self.stats.completion_tokens,
        }

    def _max_tokens(self) -> int:
        body = self.body
        return body.max_completion_tokens or body.max_tokens or self.settings.default_max_tokens

    def _sampling(self) -> SamplingParams:
        temperature = self.body.temperature
        if temperature is None:
            temperature = self.settings.default_temperature
        return SamplingParams(temperature=temperature, seed=self.body.seed)

    def _stops(self) -> list[str]:
        stop = self.body.stop
        return [stop] if isinstance(stop, str) else list(stop or [])

    async def speculate(self, drafter: Drafter, client: VerifierClient) -> web.StreamResponse:
        """Serve from the draft-verify loop: only verified tokens reach the client."""
        tokens = speculative_generate(
            drafter,
            client,
            self.prompt_tokens,
            max_tokens=self._max_tokens(),
            k_source=self.request.app[K_SOURCE],
            sampling=self._sampling(),
            top_n=self.settings.draft_top_n,
            stats=self.stats,
            on_round=self.metrics.record_round,
            client_gone=self._client_gone,
            ignore_eos=self.body.ignore_eos,
        )
        return await self._respond(tokens, TextAssembler(drafter.runtime.detokenize, self._stops()))

    async def cloud_only(
        self, admission: Admission, client: VerifierClient, source: dict[str, Any]
    ) -> web.StreamResponse:
        """Serve the verifier's own generation (cloud-only mode): same API, nothing drafted."""
        if self.body.ignore_eos:
            message = "ignore_eos is not supported in cloud-only mode"
            raise OpenAIError(400, message, code="unsupported_parameter", param="ignore_eos")
        messages = source.get("messages")
        request = GenerateRequest(
            prompt=source.get("text"),
            messages=None if messages is None else [ChatTurn(role=r, content=t) for r, t in messages],
            tokens=source.get("tokens"),
            max_tokens=self._max_tokens(),
            sampling=self._sampling(),
        )
        pieces = cloud_generate(admission, client, request, stats=self.stats, client_gone=self._client_gone)
        return await self._respond(pieces, TextAssembler(_no_tokens, self._stops()))

    async def _respond(
        self, tokens: AsyncGenerator[list[int], None] | AsyncGenerator[str, None], assembler: TextAssembler
    ) -> web.StreamResponse:
        body, stats, metrics = self.body, self.stats, self.metrics
        pieces: list[str] = []
        metrics.in_flight.inc()
        first = True
        try:
            async for verified in tokens:
                if first:
                    metrics.ttft.observe(time.perf_counter() - self.arrived)
                    first = False
                if isinstance(verified, str):
                    text = assembler.push_text(verified)
                else:
                    text = assembler.push(verified)
                if assembler.stopped:
                    stats.finish_reason = "stop"
                if body.stream and text:
                    await self._send(text)
                pieces.append(text)
                if assembler.stopped:
                    break
            pieces.append(assembler.finish())
        except QueueFull as exc:
            metrics.rejected.inc()
            raise OpenAIError(
                429,
                f"server busy: {exc}; retry later",
                code="queue_full",
                kind="rate_limit_error",
                headers={"Retry-After": "1"},
            ) from None
        except (ClientGone, ConnectionResetError):
            metrics.cancelled.inc()
            log.info(
                "request %s: client disconnected after %d tokens; stopped", self.id, stats.completion_tokens
            )
            return self.stream or web.Response(status=499)
        except (VerifierUnavailable, VerifierRejected) as exc:
            detail = exc.detail if isinstance(exc, VerifierRejected) else None
            if detail is not None and detail.code in PROMPT_CODES:  # cloud-only: the client's prompt
                raise OpenAIError(400, detail.message, code=detail.code, param=detail.param) from None
            error = _verifier_error(exc)
            metrics.errors.labels(error.body["error"]["code"]).inc()
            log.warning("request %s failed: %s", self.id, exc)
            if self.stream is None:
                raise error from None
            await self._write_quietly(_sse(error.body))
            return self.stream
        finally:
            await tokens.aclose()
            metrics.in_flight.dec()
            if stats.queue_s:  # the request got a slot (after waiting this long)
                metrics.queue_wait.observe(stats.queue_s)
        metrics.tokens_served.inc(stats.completion_tokens)
        metrics.generation_seconds.inc(stats.elapsed_s)
        if stats.elapsed_s > 0:
            metrics.goodput.observe(stats.completion_tokens / stats.elapsed_s)
        if body.stream:
            return await self._finish_stream(pieces[-1])
        answer = self._envelope([self._choice("".join(pieces), stats.finish_reason, chunk=False)], False)
        answer["usage"] = self._usage()
        if self.settings.mode == "speculative":
            answer["speculative"] = {
                "rounds": len(stats.rounds),
                "drafted_tokens": stats.drafted,
                "accepted_tokens": stats.accepted,
                "elapsed_s": round(stats.elapsed_s, 6),
            }
        return web.json_response(answer)

    async def _finish_stream(self, tail: str) -> web.StreamResponse:
        try:
            if self.stream is None or tail:
                await self._send(tail)
            await self._send("", self.stats.finish_reason)
            assert self.stream is not None
            if self.include_usage:
                usage = self._envelope([], chunk=True)
                usage["usage"] = self._usage()
                await self.stream.write(_sse(usage))
            await self.stream.write(b"data: [DONE]\n\n")
            await self.stream.write_eof()
        except ConnectionResetError:
            self.metrics.cancelled.inc()
        assert self.stream is not None
        return self.stream

    async def _write_quietly(self, data: bytes) -> None:
        assert self.stream is not None
        try:
            await self.stream.write(data)
            await self.stream.write_eof()
        except ConnectionResetError:
            pass


def _prompt_source(body: CommonBody) -> dict[str, Any]:
    """The prompt as ``prompting.prompt_tokens`` (and the verifier's generate request) take it."""
    if isinstance(body, ChatBody):
        return {"messages": [(m.role, m.text()) for m in body.messages]}
    assert isinstance(body, CompletionBody)
    prompt = body.prompt
    if isinstance(prompt, str):
        return {"text": prompt}
    if all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise OpenAIError(400, "one prompt per request", code="unsupported_parameter", param="prompt")
        return {"text": str(prompt[0])}
    return {"tokens": [int(t) for t in prompt]}


def _prompt_error(exc: PromptError) -> OpenAIError:
    return OpenAIError(400, str(exc), code=exc.code, param=exc.param)


def _prompt_tokens(runtime: LlamaRuntime, body: CommonBody) -> list[int]:
    try:
        return prompt_tokens(runtime, lambda messages: render_chat(runtime, messages), **_prompt_source(body))
    except PromptError as exc:
        raise _prompt_error(exc) from None


async def generate(request: web.Request, kind: type[CommonBody]) -> web.StreamResponse:
    arrived = time.perf_counter()
    app = request.app
    client: VerifierClient | None = app[STATE].get("client")
    if app[SETTINGS].mode == "cloud-only":
        admission: Admission | None = app[STATE].get("admission")
        if admission is None or client is None:
            raise OpenAIError(503, "the server is still starting", code="not_ready", kind="api_error")
        body = await read_body(request, kind)
        _check_model(app[SETTINGS], body.model)
        source = _prompt_source(body)  # read by the verifier, the one holding a model
        return await Generation(request, body, [], arrived).cloud_only(admission, client, source)
    drafter: Drafter | None = app[STATE].get("drafter")
    if drafter is None or client is None:
        raise OpenAIError(503, "the draft model is still loading", code="not_ready", kind="api_error")
    body = await read_body(request, kind)
    _check_model(app[SETTINGS], body.model)
    prompt_tokens = _prompt_tokens(drafter.runtime, body)
    return await Generation(request, body, prompt_tokens, arrived).speculate(drafter, client)


def _check_model(settings: EdgeSettings, model: str | None) -> None:
    if model is not None and model != settings.served_model_name:
        raise OpenAIError(
            404,
            f"model not found; this server serves {settings.served_model_name!r} (see /v1/models)",
            code="model_not_found",
            param="model",
        )


async def completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, CompletionBody)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, ChatBody)


def _model_card(settings: EdgeSettings) -> dict[str, Any]:
    return {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "edgespec"}


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [_model_card(request.app[SETTINGS])]})


async def model(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    _check_model(settings, request.match_info["model"])
    return web.json_response(_model_card(settings))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def verifier_problem(app: web.Application) -> str | None:
    """Why the verifier cannot serve us (unreachable, wrong token, not ready), from a cached probe."""
    state = app[STATE]
    client: VerifierClient = state["client"]
    async with state["probe_lock"]:
        checked, problem = state.get("probe", (-PROBE_TTL_S, None))
        if time.monotonic() - checked >= PROBE_TTL_S:
            problem = await client.probe(timeout_s=min(2.0, client.timeout_s))
            state["probe"] = (time.monotonic(), problem)
    return problem  # type: ignore[no-any-return]


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cloud_only = request.app[SETTINGS].mode == "cloud-only"
    if state.get("admission" if cloud_only else "drafter") is None:
        return web.json_response(
            {"status": "not ready", "reason": state.get("load_error", "loading the draft model")}, status=503
        )
    problem = await verifier_problem(request.app)
    if problem is not None:
        return web.json_response({"status": "not ready", "reason": problem}, status=503)
    if cloud_only:
        return web.json_response({"status": "ready", "mode": "cloud-only"})
    return web.json_response({"status": "ready", "mode": "speculative", "k": request.app[K_SOURCE].current()})


async def metrics_endpoint(request: web.Request) -> web.Response:
    request.app[METRICS].k.set(request.app[K_SOURCE].current())
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


SETTINGS = web.AppKey("settings", EdgeSettings)
METRICS = web.AppKey("metrics", EdgeMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
K_SOURCE = web.AppKey("k_source", SpeculativeLength)
STATE = web.AppKey("state", dict)


def startup_problem(settings: EdgeSettings) -> str | None:
    """What keeps the server from working at all (checked before it starts), or None."""
    if settings.mode == "speculative" and not settings.draft_model.is_file():
        return (
            f"draft model {settings.draft_model} does not exist (--draft-model / EDGESPEC_EDGE_DRAFT_MODEL)"
        )
    try:
        token = settings.verifier_token_value()
    except OSError as exc:
        return f"cannot read the verifier token file: {exc.strerror}: {settings.verifier_token_file}"
    if not token:
        return (
            "no verifier token: set --verifier-token-file / EDGESPEC_EDGE_VERIFIER_TOKEN_FILE "
            "(or EDGESPEC_EDGE_VERIFIER_TOKEN)"
        )
    if settings.ca_file is not None and not settings.ca_file.is_file():
        return f"CA file {settings.ca_file} does not exist (EDGESPEC_EDGE_CA_FILE)"
    return None


def _verifier_client(settings: EdgeSettings) -> VerifierClient:
    return VerifierClient(
        settings.verifier_url,
        settings.verifier_token_value(),
        timeout_s=settings.verify_timeout_s,
        retry_budget_s=settings.retry_budget_s,
        ca_file=settings.ca_file,
    )


def create_app(
    settings: EdgeSettings,
    registry: CollectorRegistry | None = None,
    runtime: LlamaRuntime | None = None,
    client: VerifierClient | None = None,
    runtime_factory: Callable[[EdgeSettings], LlamaRuntime] | None = None,
) -> web.Application:
    """The edge app. An injected ``runtime`` is not closed by the app; an injected ``client`` is."""
    app = web.Application(middlewares=[openai_errors], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = EdgeMetrics(app[REGISTRY])
    app[K_SOURCE] = SpeculativeLength(settings.k, settings.k_file)
    app[STATE] = {"probe_lock": asyncio.Lock()}

    def load(settings: EdgeSettings) -> LlamaRuntime:
        return LlamaRuntime(settings.draft_model, n_ctx=settings.n_ctx, n_threads=settings.n_threads)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if settings.mode == "cloud-only":  # no draft model: the verifier generates every token
            verifier = client or _verifier_client(settings)
            admission = Admission(settings.max_concurrent, settings.max_queue)
            app[STATE].update(admission=admission, client=verifier)
            yield
            app[STATE].pop("admission")
            await verifier.close()
            return
        own_runtime = runtime is None
        loaded = runtime
        if loaded is None:
            factory = runtime_factory or load
            loaded = await asyncio.get_running_loop().run_in_executor(None, factory, settings)
        verifier = client or _verifier_client(settings)
        drafter = Drafter(loaded, settings.max_concurrent, settings.max_queue)
        app[STATE].update(drafter=drafter, client=verifier)
        yield
        app[STATE].pop("drafter")
        await verifier.close()
        drafter.close()
        if own_runtime:
            loaded.close()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(telemetry_context(app[METRICS].tally, TelemetrySettings()))
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", model)
    app.router.add_get("/health", healthz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
