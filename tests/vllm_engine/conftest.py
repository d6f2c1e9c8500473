"""Fixtures of the vLLM tier: vLLM's CPU build verifying with the real Gemma 3 270M target.

Run by hack/vllm/test.sh in the vLLM venv (hack/edgespec_dev/vllm_env.py), which exports
``EDGESPEC_VLLM_TARGET`` (the float32 target converted from the GGUF). One engine serves the whole
session (vLLM's start-up is the tier's largest fixed cost); each test builds fresh HTTP apps around it.
The llama.cpp tier's ``client`` and ``drafter`` fixtures, prompts and token are reused as they are.
The drafter is the edge's real one (llama.cpp, gemma3-270m-b16), and token ids come from the target
GGUF's llama.cpp tokenizer, as on the edge.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from dataplane.conftest import DRAFT, PROMPTS, THREADS, TOKEN, client, drafter
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.vllm import CONTROL_PROCESSOR, PROCESSOR, VllmEngine
from edgespec_verifier.server import VerifierSettings, create_app
from prometheus_client import CollectorRegistry

BLOCK_SIZE = 32  # the smallest KV block vLLM's CPU attention takes: the prefix cache's granularity


@pytest.fixture(scope="session")
def vllm_target() -> Path:
    value = os.environ.get("EDGESPEC_VLLM_TARGET")
    if not value:
        raise RuntimeError(
            "EDGESPEC_VLLM_TARGET is not set: run the vLLM tier with hack/vllm/test.sh "
            "(it builds the vLLM venv and converts the target)"
        )
    return Path(value)


@pytest.fixture(scope="session")
def vllm_engine(vllm_target: Path) -> Iterator[VllmEngine]:
    engine = VllmEngine(
        str(vllm_target),
        dtype="float32",
        max_model_len=1024,
        max_sessions=64,
        max_num_seqs=64,
        block_size=BLOCK_SIZE,
        enforce_eager=True,
        # The sampling test's reference p (full logprobs, test only) and its control processor.
        extra_engine_args={"max_logprobs": -1, "logits_processors": [PROCESSOR, CONTROL_PROCESSOR]},
    )
    yield engine
    engine.close()


@pytest.fixture
def engine(vllm_engine: VllmEngine) -> VllmEngine:
    """The name the llama.cpp tier's tests (reused here) give the verifier's engine."""
    return vllm_engine


@pytest.fixture(scope="session")
def target_runtime() -> Iterator[LlamaRuntime]:
    """The GGUF target in llama.cpp: the tokenizer, and the llama.cpp engine's decoding for comparison."""
    runtime = LlamaRuntime(target_path(), n_ctx=512, n_threads=THREADS)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def draft_runtime() -> Iterator[LlamaRuntime]:
    runtime = LlamaRuntime(ensure(DRAFT), n_ctx=512, n_threads=THREADS)
    yield runtime
    runtime.close()


@pytest.fixture
async def verifier(vllm_engine: VllmEngine) -> AsyncIterator[TestServer]:
    app = create_app(
        VerifierSettings(engine="vllm", max_queue=256),
        registry=CollectorRegistry(),
        engine=vllm_engine,
        tokens=TokenSource(token=TOKEN),
    )
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


__all__ = ["DRAFT", "PROMPTS", "TOKEN", "client", "drafter"]  # fixtures and constants shared with dataplane
