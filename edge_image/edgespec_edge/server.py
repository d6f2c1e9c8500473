"""The edge draft server: an OpenAI-compatible API for local clients over the draft-verify loop.

``/v1/completions`` and ``/v1/chat/completions`` (streaming as server-sent events, or one JSON body),
``/v1/models``, ``/healthz``, ``/readyz`` and ``/metrics``. Text reaches the client only from tokens
the verifier accepted (see :mod:`edgespec_edge.loop`). A streaming response is started only once the
first verified tokens exist, so a verifier that is down from the start yields a plain 502 JSON error;
one that fails mid-stream ends the stream with an ``error`` event and no ``[DONE]``.

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
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from aiohttp import web
from edgespec.wire import SamplingParams
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgespec_edge.config import EdgeSettings, SpeculativeLength
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import (
    Drafter,
    GenerationStats,
    RoundStats,
    VerifierClient,
    VerifierRejected,
    VerifierUnavailable,
    speculative_generate,
)
from edgespec_edge.telemetry import RoundTally, TelemetrySettings, telemetry_context

log = logging.getLogger("edgespec.edge")


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        time_buckets = (0.001, 0.003, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0)
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
        self.k = Gauge("edgespec_edge_speculative_length", "K currently in force.", registry=registry)
        self.errors = Counter(
            "edgespec_edge_verifier_errors",
            "Requests failed by the verifier, by kind.",
            ["kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "edgespec_edge_requests_in_flight", "Requests being generated.", registry=registry
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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class CompletionBody(BaseModel):
    """The OpenAI completion fields the server honours; others are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=10.0)
    seed: int | None = Field(default=None, ge=0)
    stream: bool = False
    stop: str | list[str] | None = None


SETTINGS = web.AppKey("settings", EdgeSettings)
METRICS = web.AppKey("metrics", EdgeMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
K_SOURCE = web.AppKey("k_source", SpeculativeLength)
STATE = web.AppKey("state", dict)


def openai_error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


class TextAssembler:
    """Verified tokens to text deltas: whole UTF-8 characters only, held back before a stop string."""

    def __init__(self, runtime: LlamaRuntime, stops: list[str]) -> None:
        self._runtime = runtime
        self._tokens: list[int] = []
        self._decoded = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._sent = 0
        self._stops = [s for s in stops if s]
        self.stopped = False

    def push(self, tokens: list[int]) -> str:
        self._tokens.extend(tokens)
        raw = self._runtime.detokenize(self._tokens)
        self._text += self._decoder.decode(raw[self._decoded :])
        self._decoded = len(raw)
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


async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
    app = request.app
    settings = app[SETTINGS]
    state = app[STATE]
    drafter: Drafter | None = state.get("drafter")
    client: VerifierClient | None = state.get("client")
    if drafter is None or client is None:
        return openai_error(503, "the draft model is still loading", "not_ready")
    try:
        body = CompletionBody.model_validate_json(await request.read())
    except ValidationError as exc:
        return openai_error(400, f"invalid request: {exc.errors(include_url=False)}", "invalid_request_error")
    runtime = drafter.runtime
    if chat:
        if not body.messages:
            return openai_error(400, "'messages' is required", "invalid_request_error")
        prompt_text = runtime.chat_prompt([m.model_dump() for m in body.messages])
        prompt_tokens = runtime.tokenize(prompt_text, add_bos=False)
    else:
        if body.prompt is None:
            return openai_error(400, "'prompt' (a string) is required", "invalid_request_error")
        prompt_tokens = runtime.tokenize(body.prompt, add_bos=True)
    if len(prompt_tokens) >= runtime.n_ctx:
        return openai_error(
            400, f"prompt of {len(prompt_tokens)} tokens exceeds n_ctx", "invalid_request_error"
        )
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    temperature = settings.default_temperature if body.temperature is None else body.temperature
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    sampling = SamplingParams(temperature=temperature, seed=body.seed)
    metrics = app[METRICS]
    stats = GenerationStats()
    assembler = TextAssembler(runtime, stops)
    created = int(time.time())
    completion_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    model_name = settings.served_model_name

    def chunk(text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta if text or first else {},
                "finish_reason": finish,
            }
            kind = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            kind = "text_completion"
        return {
            "id": completion_id,
            "object": kind,
            "created": created,
            "model": model_name,
            "choices": [choice],
        }

    tokens = speculative_generate(
        drafter,
        client,
        prompt_tokens,
        max_tokens=max_tokens,
        k_source=app[K_SOURCE],
        sampling=sampling,
        top_n=settings.draft_top_n,
        stats=stats,
        on_round=metrics.record_round,
    )
    stream: web.StreamResponse | None = None
    pieces: list[str] = []
    metrics.in_flight.inc()
    try:
        async for verified in tokens:
            text = assembler.push(verified)
            if assembler.stopped:
                stats.finish_reason = "stop"
            if body.stream and text:
                if stream is None:
                    stream = await _start_stream(request)
                    await stream.write(_sse(chunk(text, None, first=True)))
                else:
                    await stream.write(_sse(chunk(text, None)))
            pieces.append(text)
            if assembler.stopped:
                break
        tail = assembler.finish()
        pieces.append(tail)
    except (VerifierUnavailable, VerifierRejected) as exc:
        kind = "verifier_unavailable" if isinstance(exc, VerifierUnavailable) else "verifier_rejected"
        metrics.errors.labels(kind).inc()
        log.warning("request %s failed: %s", completion_id, exc)
        if stream is None:
            return openai_error(502, str(exc), kind)
        await stream.write(_sse({"error": {"message": str(exc), "type": kind, "code": 502}}))
        await stream.write_eof()
        return stream
    finally:
        await tokens.aclose()
        metrics.in_flight.dec()
    metrics.tokens_served.inc(stats.completion_tokens)
    metrics.generation_seconds.inc(stats.elapsed_s)
    if stats.elapsed_s > 0:
        metrics.goodput.observe(stats.completion_tokens / stats.elapsed_s)
    usage = {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }
    speculative = {
        "rounds": len(stats.rounds),
        "drafted_tokens": stats.drafted,
        "accepted_tokens": stats.accepted,
        "elapsed_s": round(stats.elapsed_s, 6),
    }
    if body.stream:
        if stream is None:
            stream = await _start_stream(request)
            await stream.write(_sse(chunk(tail, None, first=True)))
        elif tail:
            await stream.write(_sse(chunk(tail, None)))
        final = chunk("", stats.finish_reason)
        final["usage"] = usage
        await stream.write(_sse(final))
        await stream.write(b"data: [DONE]\n\n")
        await stream.write_eof()
        return stream
    text = "".join(pieces)
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": stats.finish_reason,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": stats.finish_reason}
    return web.json_response(
        {
            "id": completion_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model_name,
            "choices": [choice],
            "usage": usage,
            "speculative": speculative,
        }
    )


async def _start_stream(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await stream.prepare(request)
    return stream


async def completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, chat=True)


async def models(request: web.Request) -> web.Response:
    name = request.app[SETTINGS].served_model_name
    return web.json_response(
        {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "edgespec"}]}
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.get("drafter") is None:
        return web.json_response(
            {"status": "not ready", "reason": state.get("load_error", "loading")}, status=503
        )
    return web.json_response({"status": "ready", "k": request.app[K_SOURCE].current()})


async def metrics_endpoint(request: web.Request) -> web.Response:
    request.app[METRICS].k.set(request.app[K_SOURCE].current())
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: EdgeSettings,
    registry: CollectorRegistry | None = None,
    runtime: LlamaRuntime | None = None,
    client: VerifierClient | None = None,
    runtime_factory: Callable[[EdgeSettings], LlamaRuntime] | None = None,
) -> web.Application:
    """The edge app. An injected ``runtime`` is not closed by the app; an injected ``client`` is."""
    app = web.Application()
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = EdgeMetrics(app[REGISTRY])
    app[K_SOURCE] = SpeculativeLength(settings.k, settings.k_file)
    app[STATE] = {}

    def load(settings: EdgeSettings) -> LlamaRuntime:
        return LlamaRuntime(settings.draft_model, n_ctx=settings.n_ctx, n_threads=settings.n_threads)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        own_runtime = runtime is None
        loaded = runtime
        if loaded is None:
            factory = runtime_factory or load
            loaded = await asyncio.get_running_loop().run_in_executor(None, factory, settings)
        verifier = client or VerifierClient(
            settings.verifier_url,
            settings.verifier_token_value(),
            timeout_s=settings.verify_timeout_s,
            retry_budget_s=settings.retry_budget_s,
        )
        drafter = Drafter(loaded, settings.max_concurrent)
        app[STATE].update(drafter=drafter, client=verifier)
        yield
        app[STATE].clear()
        await verifier.close()
        drafter.close()
        if own_runtime:
            loaded.close()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(
        telemetry_context(app[METRICS].tally, TelemetrySettings(), settings.verifier_token_value())
    )
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
