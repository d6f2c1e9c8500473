"""Fixtures for the data-plane tests: real GGUF models (target from PyPI, drafts derived from it).

Models load once per session (per pytest worker); each test builds fresh apps (and Prometheus
registries) around them. One llama.cpp thread per model (``THREADS``): ``make test`` runs three
workers on two cores, and ggml's threads spin while they wait for each other, so a second thread
costs CPU the other workers need (three runs of the greedy exactness tests at once: 204 CPU-s and
103 s on one thread each, 240 CPU-s and 122 s on two).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter, VerifierClient
from edgespec_edge.server import create_app as create_edge_app
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from edgespec_verifier.server import VerifierSettings, create_app
from prometheus_client import CollectorRegistry

TOKEN = "test-token-0123456789"
DRAFT = "gemma3-270m-b16"
THREADS = 1
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "Explain photosynthesis in simple terms.",
    "List three primary colors:",
]


@pytest.fixture(scope="session")
def target_file() -> Path:
    return target_path()


@pytest.fixture(scope="session")
def draft_file() -> Path:
    return ensure(DRAFT)


@pytest.fixture(scope="session")
def engine(target_file: Path) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine(target_file, n_ctx=512, n_threads=THREADS, max_sessions=4)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def draft_runtime(draft_file: Path) -> Iterator[LlamaRuntime]:
    runtime = LlamaRuntime(draft_file, n_ctx=512, n_threads=THREADS)
    yield runtime
    runtime.close()


def target_greedy(engine: LlamaCppEngine, prompt_tokens: list[int], max_tokens: int) -> list[int]:
    """The target decoding alone: prompt read in batches, then one token per step, argmax."""
    sequence = engine.runtime.new_sequence()
    try:
        tokens = list(prompt_tokens)
        out: list[int] = []
        while len(out) < max_tokens:
            token = int(np.argmax(sequence.logits(tokens, len(tokens) - 1)[0]))
            if engine.runtime.is_end_of_generation(token):
                break
            out.append(token)
            tokens.append(token)
        return out
    finally:
        sequence.close()


@pytest.fixture
async def verifier(engine: LlamaCppEngine) -> AsyncIterator[TestServer]:
    app = create_app(
        VerifierSettings(max_queue=64),
        registry=CollectorRegistry(),
        engine=engine,
        tokens=TokenSource(token=TOKEN),
    )
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def client(verifier: TestServer) -> AsyncIterator[VerifierClient]:
    client = VerifierClient(str(verifier.make_url("")), TOKEN, retry_budget_s=1.0)
    yield client
    await client.close()


@pytest.fixture
def drafter(draft_runtime: LlamaRuntime) -> Iterator[Drafter]:
    drafter = Drafter(draft_runtime, max_concurrent=2)
    yield drafter
    drafter.close()


class ServedAsInProduction(TestServer):
    """A test server whose handlers run on when their client leaves, as under ``web.run_app``.

    aiohttp's ``TestServer`` cancels a handler whose client disconnected; ``edgespec-edge serve`` (like
    every ``run_app`` server) does not, so the edge has to notice by itself, and tests must see that.
    """

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


async def start_edge(
    settings: EdgeSettings,
    runtime: LlamaRuntime,
    verifier_url: str,
    token: str | None = TOKEN,
    **client_options: Any,
) -> TestServer:
    """A real edge server on loopback over ``runtime`` and the verifier at ``verifier_url``."""
    client = VerifierClient(
        verifier_url,
        token,
        timeout_s=settings.verify_timeout_s,
        retry_budget_s=settings.retry_budget_s,
        **client_options,
    )
    app = create_edge_app(settings, registry=CollectorRegistry(), runtime=runtime, client=client)
    server = ServedAsInProduction(app, host="127.0.0.1")
    await server.start_server()
    return server
