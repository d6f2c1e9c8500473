"""The verifier's HTTP service: the verify and generate endpoints, sessions, probes, Prometheus metrics.

``create_app(settings, registry=None, engine=None)`` builds the aiohttp app. The engine (a model in
memory) is loaded in the app's ``cleanup_ctx`` off the event loop unless a ready one is injected (tests
share one engine across apps); ``/readyz`` answers 503 until it is loaded. All engine work runs on one
dedicated thread, so the event loop keeps accepting many edge clients while a round computes; requests
beyond ``max_queue`` waiting rounds get 503 ``overloaded`` at once instead of piling up latency. With an
engine that batches sessions (llama.cpp with ``exact=False``), the rounds that queue while one batch runs
go to the engine thread together as the next batch (:class:`RoundBatcher`).

``POST /v1/generate`` is cloud-only decoding (edgespec.wire's ``GenerateRequest``): the target reads the
prompt with its own tokenizer and chat template and streams its own generation, one
``GenerateEvent`` line per step. On llama.cpp each step is a verify round with no drafts on the engine
thread (so it interleaves with other edges' rounds and is, token for token, the target decoding
alone); an engine with ``generate_stream`` (vLLM) generates in one request of its own. A client that
goes away stops the generation at the next step.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from aiohttp import web
from edgespec.wire import (
    GENERATE_PATH,
    PING_PATH,
    ErrorBody,
    ErrorDetail,
    GenerateEvent,
    GenerateRequest,
    SamplingParams,
    SessionOpen,
    SessionOpened,
    VerifyRequest,
    VerifyResponse,
)
from edgespec_edge.llama_kv import ContextFullError
from edgespec_edge.prompting import PromptError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgespec_verifier.acceptance import TargetDistribution, accept_greedy, accept_sampling
from edgespec_verifier.auth import Handler, TokenSource, bearer_middleware
from edgespec_verifier.engines import BatchingEngine, ContextReads, VerifyEngine

log = logging.getLogger("edgespec.verifier")


class VerifierSettings(BaseSettings):
    """Verifier configuration, from ``EDGESPEC_VERIFIER_*`` environment variables or arguments."""

    model_config = SettingsConfigDict(env_prefix="EDGESPEC_VERIFIER_", extra="ignore")

    engine: Literal["llamacpp", "vllm"] = Field(default="llamacpp", description="Scoring engine.")
    model: str = Field(default="", description="GGUF path (llamacpp) or model name/path (vllm).")
    host: str = Field(default="0.0.0.0", description="Listen address.")
    port: int = Field(default=8000, ge=1, le=65535, description="Listen port.")
    n_ctx: int = Field(default=2048, ge=64, le=131072, description="Context window per session, tokens.")
    n_threads: int = Field(default=2, ge=1, le=256, description="CPU threads (llamacpp).")
    max_sessions: int = Field(default=8, ge=1, le=4096, description="Sessions holding KV state at once.")
    max_queue: int = Field(default=64, ge=1, le=100000, description="Waiting rounds before 503.")
    exact: bool = Field(
        default=True,
        description=(
            "llamacpp: evaluate generated positions one per decode (bit-exact greedy); false: batch "
            "concurrent sessions' rounds in one multi-sequence decode (faster, exact up to batch rounding)."
        ),
    )
    token_file: Path | None = Field(default=None, description="File holding the bearer token (Secret).")
    token: SecretStr | None = Field(default=None, description="Bearer token, when no file is mounted.")
    tls_cert_file: Path | None = Field(default=None, description="PEM certificate (chain): serve HTTPS.")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    vllm_gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    vllm_max_model_len: int | None = Field(default=None, ge=64)
    vllm_engine_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra vllm.LLM keyword arguments (from arguments after --)."
    )


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.verify_seconds = Histogram(
            "edgespec_verifier_verify_seconds",
            "Verifier-side time of one verify round (queue wait plus target forward pass).",
            ["engine"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5.0),
            registry=registry,
        )
        self.drafted = Counter(
            "edgespec_verifier_drafted_tokens", "Draft tokens received for verification.", registry=registry
        )
        self.accepted = Counter(
            "edgespec_verifier_accepted_tokens", "Draft tokens accepted.", registry=registry
        )
        self.rounds = Counter(
            "edgespec_verifier_rounds", "Verify rounds by outcome.", ["outcome"], registry=registry
        )
        self.sessions = Gauge(
            "edgespec_verifier_sessions", "Sessions currently holding KV state.", registry=registry
        )
        self.generated = Counter(
            "edgespec_verifier_generated_tokens",
            "Tokens generated for cloud-only requests (POST /v1/generate).",
            registry=registry,
        )
        self.batch_rounds = Histogram(
            "edgespec_verifier_batch_rounds",
            "Verify rounds per engine batch (llama.cpp with exact=false: rounds of concurrent sessions "
            "verified in one multi-sequence decode).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "edgespec_verifier_queue_depth", "Rounds waiting for or running on the engine.", registry=registry
        )
        self.context_tokens = Counter(
            "edgespec_verifier_context_tokens",
            "Context tokens the engine computed (drafts excluded): kind=prompt inside the prompt, "
            "kind=reread generated context of earlier rounds it no longer held (a session that moved "
            "replica or was evicted); the last context token (the new correction or bonus) is not a "
            "reread.",
            ["kind"],
            registry=registry,
        )
        for kind in ("prompt", "reread"):
            self.context_tokens.labels(kind)  # both series exist from the start (rate() and sums)

    def count_reads(self, reads: ContextReads) -> None:
        self.context_tokens.labels("prompt").inc(reads.prompt)
        self.context_tokens.labels("reread").inc(reads.reread)


SETTINGS = web.AppKey("settings", VerifierSettings)
METRICS = web.AppKey("metrics", VerifierMetrics)
REGISTRY = web.AppKey("registry", CollectorRegistry)
EXECUTOR = web.AppKey("executor", ThreadPoolExecutor)
STATE = web.AppKey("state", dict)


def build_engine(settings: VerifierSettings) -> VerifyEngine:
    if not settings.model:
        raise ValueError("no model: set EDGESPEC_VERIFIER_MODEL (a GGUF path, or a vLLM model name)")
    if settings.engine == "vllm":
        from edgespec_verifier.engines.vllm import VllmEngine

        return VllmEngine(
            settings.model,
            max_model_len=settings.vllm_max_model_len or settings.n_ctx,
            max_sessions=settings.max_sessions,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            extra_engine_args=settings.vllm_engine_args,
        )
    from edgespec_verifier.engines.llamacpp import BatchedLlamaCppEngine, LlamaCppEngine

    if not settings.exact:  # sessions as sequences of one context: concurrent rounds in one decode
        return BatchedLlamaCppEngine(
            settings.model,
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            max_sessions=settings.max_sessions,
        )
    return LlamaCppEngine(
        settings.model,
        n_ctx=settings.n_ctx,
        n_threads=settings.n_threads,
        max_sessions=settings.max_sessions,
    )


def error(status: int, code: str, message: str, param: str | None = None) -> web.Response:
    detail = ErrorDetail.model_validate({"code": code, "message": message, "param": param})
    body = ErrorBody(error=detail).model_dump(mode="json", exclude_none=True)
    return web.json_response(body, status=status)


def invalid(what: str, exc: ValidationError) -> web.Response:
    """400 naming the first bad field, without echoing the input (bodies can be megabytes)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return error(400, "bad_request", f"invalid {what}: {field}: {first['msg']}"[:300])


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 4xx (unknown path, wrong method, body too large) as the wire's ErrorBody."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, "bad_request", f"{exc.status} {exc.reason}")


def vocabulary_size(engine: VerifyEngine) -> int | None:
    """The engine's vocabulary size, where it tells (token ids at or above it are refused)."""
    size = getattr(engine, "n_vocab", None) or getattr(getattr(engine, "runtime", None), "n_vocab", None)
    return int(size) if size else None


RoundResult = tuple[int, int, ContextReads]
"""A round's verdict (accepted drafts, next token) and the context tokens the engine computed for it."""


def decide(request: VerifyRequest, rows: np.ndarray[Any, Any]) -> tuple[int, int]:
    """The verdict on the round's drafts from the target's rows: (accepted, next token)."""
    if request.sampling.greedy:
        return accept_greedy(rows, request.draft)
    assert request.draft_probs is not None  # checked by VerifyRequest
    rng = np.random.default_rng(request.sampling.seed)
    temperature = request.sampling.temperature
    return accept_sampling(
        lambda i: TargetDistribution.from_scores(rows[i], temperature),
        request.draft,
        request.draft_probs,
        rng,
    )


def run_round(engine: VerifyEngine, request: VerifyRequest) -> RoundResult:
    """Score, decide and roll back, all on the engine thread (one hop per round)."""
    rows = engine.score(request.session_id, request.tokens, request.draft, request.prompt_tokens)
    reads = engine.last_reads  # this round's: read on the engine thread, right after the score
    accepted, next_token = decide(request, rows)
    engine.commit(request.session_id, len(request.tokens) + accepted)
    return accepted, next_token, reads


def run_rounds(engine: BatchingEngine, requests: Sequence[VerifyRequest]) -> list[RoundResult | Exception]:
    """Many sessions' rounds on the engine thread: scored together, then each decided and rolled back.

    A session with two rounds in the list (a client that did not wait for its verdict) has them scored
    one after the other, each after the previous one's rollback, as they would be one at a time."""
    results: list[RoundResult | Exception | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    while pending:
        group: list[int] = []
        later: list[int] = []
        sessions: set[str] = set()
        for index in pending:
            (later if requests[index].session_id in sessions else group).append(index)
            sessions.add(requests[index].session_id)
        scored = engine.score_many([requests[index] for index in group])
        for index, outcome in zip(group, scored, strict=True):
            if isinstance(outcome, Exception):
                results[index] = outcome
                continue
            request = requests[index]
            rows, reads = outcome
            try:
                accepted, next_token = decide(request, rows)
            except Exception as exc:  # this round's failure, not the batch's
                results[index] = exc
                continue
            engine.commit(request.session_id, len(request.tokens) + accepted)
            results[index] = (accepted, next_token, reads)
        pending = later
    return [result for result in results if result is not None]


class RoundBatcher:
    """Rounds that queue while the engine thread works go to it together as one batch.

    A batch is taken when the engine thread starts it, so every round that arrived while the thread was
    busy (with the previous batch, a session's pre-read or a close) joins: under load a batch holds
    about one round per active session, and no round waits longer than the batch before it. A round
    arriving at an idle engine starts at once, alone.
    """

    def __init__(
        self, engine: BatchingEngine, executor: ThreadPoolExecutor, metrics: VerifierMetrics
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.metrics = metrics
        self._lock = threading.Lock()  # the queue is filled on the event loop, taken on the engine thread
        self._queued: list[tuple[VerifyRequest, asyncio.Future[RoundResult]]] = []
        self._running: list[tuple[VerifyRequest, asyncio.Future[RoundResult]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, request: VerifyRequest) -> RoundResult:
        future: asyncio.Future[RoundResult] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queued.append((request, future))
        if self._drain is None:
            self._drain = asyncio.create_task(self._run())
        return await future

    def _take_and_run(self) -> list[RoundResult | Exception]:
        """On the engine thread: take everything queued now and run it as one batch."""
        with self._lock:
            self._running, self._queued = self._queued, []
        requests = [request for request, _ in self._running]
        if not requests:
            return []
        try:
            return run_rounds(self.engine, requests)
        except Exception as exc:  # answered to every round of the batch
            return [exc] * len(requests)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queued:
                results = await loop.run_in_executor(self.executor, self._take_and_run)
                if results:
                    self.metrics.batch_rounds.observe(len(results))
                for (_, future), result in zip(self._running, results, strict=True):
                    if future.done():  # its handler was cancelled (the client left)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                self._running = []
        finally:
            self._drain = None
            with self._lock:
                left, self._running, self._queued = [*self._running, *self._queued], [], []
            for _, future in left:  # cancelled (shutdown): nobody waits forever
                if not future.done():
                    future.set_exception(RuntimeError("the verifier is shutting down"))


async def engine_round(app: web.Application, engine: VerifyEngine, request: VerifyRequest) -> RoundResult:
    """One round through the engine: its own async path (vLLM), a batch of queued rounds (llama.cpp with
    exact=false), or alone on the engine thread."""
    verify_round = getattr(engine, "verify_round", None)
    if verify_round is not None:  # an engine that batches concurrent rounds itself (vLLM)
        return cast(RoundResult, await verify_round(request))
    if hasattr(engine, "score_many"):
        batcher = app[STATE].get("batcher")
        if batcher is None:
            batcher = app[STATE]["batcher"] = RoundBatcher(
                cast(BatchingEngine, engine), app[EXECUTOR], app[METRICS]
            )
        return await batcher.submit(request)
    return await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], run_round, engine, request)


def open_counted(engine: VerifyEngine, session_id: str, tokens: Sequence[int]) -> tuple[int, ContextReads]:
    """Pre-read a session's context (on the engine thread); the tokens cached and those computed."""
    cached = engine.open_session(session_id, tokens)
    return cached, engine.last_reads


async def verify(request: web.Request) -> web.Response:
    started = time.perf_counter()  # verifier-side time covers body parsing, queueing and the engine
    app = request.app
    engine = app[STATE].get("engine")
    if engine is None:
        return error(503, "not_ready", "the verifier is still loading its model")
    metrics = app[METRICS]
    try:
        body = VerifyRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return invalid("verify request", exc)
    n_vocab = vocabulary_size(engine)
    if n_vocab is not None and max([*body.tokens, *body.draft, 0]) >= n_vocab:
        return error(400, "bad_request", f"invalid verify request: token ids must be below {n_vocab}")
    if app[STATE]["waiting"] >= app[SETTINGS].max_queue:
        metrics.rounds.labels("overloaded").inc()
        return error(503, "overloaded", "verify queue full; retry with backoff")
    app[STATE]["waiting"] += 1
    metrics.queue_depth.inc()
    try:
        accepted, next_token, reads = await engine_round(app, engine, body)
    except ContextFullError as exc:
        metrics.rounds.labels("bad_request").inc()
        return error(400, "bad_request", f"invalid verify request: {exc}")
    except Exception as exc:  # an engine failure must answer, not hang the edge
        log.exception("verify round failed")
        metrics.rounds.labels("error").inc()
        return error(500, "engine_error", f"{type(exc).__name__}: {exc}")
    finally:
        app[STATE]["waiting"] -= 1
        metrics.queue_depth.dec()
    elapsed = time.perf_counter() - started
    verdict = VerifyResponse(
        accepted=accepted,
        next_token=next_token,
        bonus=accepted == len(body.draft),
        verify_s=elapsed,
        engine=engine.name,
    )
    # Metrics after the answer is on its way: the edge is waiting for it, Prometheus is not.
    asyncio.get_running_loop().call_soon(
        _record_round, metrics, engine, elapsed, len(body.draft), accepted, reads
    )
    return web.Response(body=verdict.model_dump_json().encode(), content_type="application/json")


def _record_round(
    metrics: VerifierMetrics,
    engine: VerifyEngine,
    elapsed_s: float,
    drafted: int,
    accepted: int,
    reads: ContextReads,
) -> None:
    metrics.verify_seconds.labels(engine.name).observe(elapsed_s)
    metrics.count_reads(reads)
    metrics.drafted.inc(drafted)
    metrics.accepted.inc(accepted)
    metrics.rounds.labels("ok").inc()
    metrics.sessions.set(engine.session_count())


# --- cloud-only generation ------------------------------------------------------------------------


def _event(**fields: Any) -> bytes:
    return GenerateEvent(**fields).model_dump_json(exclude_none=True).encode() + b"\n"


async def _steps_on_engine_thread(
    app: web.Application, engine: Any, prompt: Sequence[int], max_tokens: int, sampling: SamplingParams
) -> AsyncGenerator[tuple[int, str, str | None], None]:
    """(tokens, text, finish reason) per step: one verify round with no drafts per token (llama.cpp)."""
    runtime = engine.runtime
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    rng = np.random.default_rng(sampling.seed)
    context = list(prompt)
    session_id = f"generate-{uuid.uuid4().hex}"
    loop = asyncio.get_running_loop()
    generated = 0
    try:
        while generated < max_tokens:
            if len(context) >= runtime.n_ctx:
                break
            seed = None if sampling.seed is None else int(rng.integers(0, 2**62))
            step = VerifyRequest(
                session_id=session_id,
                tokens=context,
                prompt_tokens=len(prompt),
                draft_probs=None if sampling.greedy else [],  # no drafts: none to give distributions of
                sampling=SamplingParams(temperature=sampling.temperature, seed=seed),
            )
            # Not counted in context_tokens: that counter covers verify rounds and session pre-reads.
            _, token, _ = await engine_round(app, engine, step)
            if runtime.is_end_of_generation(token):
                yield 0, decoder.decode(b"", final=True), "stop"
                return
            context.append(token)
            generated += 1
            yield 1, decoder.decode(runtime.detokenize([token])), None
        yield 0, decoder.decode(b"", final=True), "length"
    finally:
        await loop.run_in_executor(app[EXECUTOR], engine.close_session, session_id)


async def generate(request: web.Request) -> web.StreamResponse:
    """Cloud-only decoding: the target alone, streamed as ``GenerateEvent`` lines (NDJSON)."""
    started = time.perf_counter()
    app = request.app
    engine = app[STATE].get("engine")
    if engine is None:
        return error(503, "not_ready", "the verifier is still loading its model")
    try:
        body = GenerateRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        return invalid("generate request", exc)
    messages = None if body.messages is None else [(t.role, t.content) for t in body.messages]
    try:
        prompt = engine.prompt_for(text=body.prompt, messages=messages, tokens=body.tokens)
    except PromptError as exc:
        return error(400, exc.code, str(exc), exc.param)
    if app[STATE]["waiting"] >= app[SETTINGS].max_queue:
        return error(503, "overloaded", "verify queue full; retry with backoff")
    native = getattr(engine, "generate_stream", None)
    steps: AsyncGenerator[tuple[int, str, str | None], None] = (
        native(prompt, body.max_tokens, body.sampling)
        if native is not None
        else _steps_on_engine_thread(app, engine, prompt, body.max_tokens, body.sampling)
    )
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    metrics = app[METRICS]
    try:
        await response.write(_event(prompt_tokens=len(prompt)))
        async for count, text, finish in steps:
            transport = request.transport
            if transport is None or transport.is_closing():
                log.info("generate: the client went away; stopped")
                return response
            metrics.generated.inc(count)
            if count or text:
                await response.write(_event(text=text, tokens=count))
            if finish is not None:
                elapsed = time.perf_counter() - started
                await response.write(_event(finish_reason=finish, generate_s=elapsed))
                break
        await response.write_eof()
    except ConnectionResetError:
        log.info("generate: the client went away; stopped")
    except Exception as exc:  # an engine failure mid-stream: say so in the stream, the status is sent
        log.exception("generate failed")
        detail = ErrorDetail(code="engine_error", message=f"{type(exc).__name__}: {exc}"[:300])
        with contextlib.suppress(ConnectionResetError):
            await response.write(_event(error=detail))
            await response.write_eof()
    finally:
        await steps.aclose()
    return response


async def open_session(request: web.Request) -> web.Response:
    engine = request.app[STATE].get("engine")
    if engine is None:
        return error(503, "not_ready", "the verifier is still loading its model")
    try:
        body = SessionOpen.model_validate_json(await request.read())
    except ValidationError as exc:
        return invalid("session", exc)
    n_vocab = vocabulary_size(engine)
    if n_vocab is not None and max([*body.tokens, 0]) >= n_vocab:
        return error(400, "bad_request", f"invalid session: token ids must be below {n_vocab}")
    try:
        cached, reads = await asyncio.get_running_loop().run_in_executor(
            request.app[EXECUTOR], open_counted, engine, body.session_id, body.tokens
        )
    except ContextFullError as exc:
        return error(400, "bad_request", f"invalid session: {exc}")
    request.app[METRICS].count_reads(reads)
    request.app[METRICS].sessions.set(engine.session_count())
    return web.json_response(
        text=SessionOpened(session_id=body.session_id, cached_tokens=cached).model_dump_json()
    )


async def close_session(request: web.Request) -> web.Response:
    engine = request.app[STATE].get("engine")
    if engine is None:
        return error(503, "not_ready", "the verifier is still loading its model")
    session_id = request.match_info["session_id"]
    await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], engine.close_session, session_id)
    request.app[METRICS].sessions.set(engine.session_count())
    return web.Response(status=204)


async def ping(request: web.Request) -> web.Response:
    """Authenticated and engine-free: answers once the token is right (the edge's readiness probe)."""
    ready = request.app[STATE].get("engine") is not None
    return web.json_response({"status": "ok", "ready": ready}, status=200 if ready else 503)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.get("engine") is None:
        reason = state.get("load_error") or "loading model"
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready", "engine": state["engine"].name})


async def metrics_endpoint(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[REGISTRY])
    return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: VerifierSettings,
    registry: CollectorRegistry | None = None,
    engine: VerifyEngine | None = None,
    tokens: TokenSource | None = None,
) -> web.Application:
    """The verifier app; ``engine`` injected (loaded, not closed by the app) or built from settings."""
    if tokens is None:
        secret = settings.token.get_secret_value() if settings.token else None
        tokens = TokenSource(token_file=settings.token_file, token=secret)
    app = web.Application(
        middlewares=[json_errors, bearer_middleware(tokens)], client_max_size=8 * 1024 * 1024
    )
    app[SETTINGS] = settings
    app[REGISTRY] = registry if registry is not None else CollectorRegistry()
    app[METRICS] = VerifierMetrics(app[REGISTRY])
    app[STATE] = {"engine": engine, "waiting": 0}

    async def engine_thread(app: web.Application) -> AsyncIterator[None]:
        app[EXECUTOR] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-engine")
        loader: asyncio.Future[VerifyEngine] | None = None
        if engine is None:
            loader = asyncio.get_running_loop().run_in_executor(app[EXECUTOR], build_engine, settings)

            def loaded(future: asyncio.Future[VerifyEngine]) -> None:
                if future.cancelled():
                    return
                if future.exception() is not None:
                    app[STATE]["load_error"] = f"model load failed: {future.exception()}"
                    log.error("%s", app[STATE]["load_error"])
                else:
                    app[STATE]["engine"] = future.result()

            loader.add_done_callback(loaded)
        yield
        if loader is not None and app[STATE].get("engine") is not None:
            await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], app[STATE]["engine"].close)
        app[EXECUTOR].shutdown(wait=True)

    app.cleanup_ctx.append(engine_thread)
    app.router.add_post("/v1/verify", verify)
    app.router.add_post(GENERATE_PATH, generate)
    app.router.add_post("/v1/sessions", open_session)
    app.router.add_delete("/v1/sessions/{session_id}", close_session)
    app.router.add_get(PING_PATH, ping)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
