"""The draft server's live telemetry reaches the operator's endpoint, adds up, and survives an outage.

A real draft server (real draft model, real verifier) serves completions while its telemetry task
pushes to the operator's real ``/v1/telemetry`` app (``edgespec.handlers.http``). The operator is not
listening at first (connection refused, a real fault): the counts must be kept and arrive once it is.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from edgespec.handlers.cache import Cache
from edgespec.handlers.http import make_app
from edgespec.handlers.identity import PodIdentity, draft_pod_identity
from edgespec.handlers.workqueue import WorkQueue
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient
from edgespec_edge.server import create_app
from prometheus_client import CollectorRegistry

from .conftest import TOKEN

pytestmark = pytest.mark.models
KEY = ("shop", "assistant")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _counter(metrics: str, name: str, k: int) -> float:
    prefix = f'{name}{{k="{k}"}} '
    return sum(float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_rounds_reach_the_operator_once_it_listens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, verifier: TestServer, draft_runtime: LlamaRuntime
) -> None:
    port = _free_port()
    token_file = tmp_path / "token"  # the pod's projected telemetry token
    token_file.write_text("pod-token\n")
    pod = draft_pod_identity(*KEY, "rpi5", node="edge-rpi5-0", pod="assistant-draft-rpi5-x")

    async def review(token: str) -> PodIdentity | None:
        return pod if token == "pod-token" else None

    for name, value in {
        "TELEMETRY_URL": f"http://127.0.0.1:{port}/v1/telemetry",
        "TELEMETRY_INTERVAL_S": "0.2",
        "NAMESPACE": KEY[0],
        "DEPLOYMENT": KEY[1],
        "DEVICE_CLASS": "rpi5",
        "DRAFT_NAME": "gemma-17l",
        "QUANTIZATION": "Q4_K_M",
        "NODE_NAME": "edge-rpi5-0",
        "TELEMETRY_TOKEN_FILE": str(token_file),
    }.items():
        monkeypatch.setenv(f"EDGESPEC_EDGE_{name}", value)
    settings = EdgeSettings(k=3, verifier_token=TOKEN)  # a pod reads it from the mounted Secret
    client = VerifierClient(str(verifier.make_url("")), TOKEN, retry_budget_s=1.0)
    edge_app = create_app(settings, registry=CollectorRegistry(), runtime=draft_runtime, client=client)
    edge = TestClient(TestServer(edge_app))
    await edge.start_server()
    cache, queue = Cache(), WorkQueue()
    cache.deployments[KEY] = {
        "metadata": {"namespace": KEY[0], "name": KEY[1]},
        "spec": {"deviceClasses": [{"name": "rpi5"}], "adaptation": {"minRounds": 5}},
    }
    operator: web.AppRunner | None = None
    try:
        for prompt in ("The capital of France is", "def fibonacci(n):"):
            response = await edge.post("/v1/completions", json={"prompt": prompt, "max_tokens": 24})
            assert response.status == 200
        metrics = await (await edge.get("/metrics")).text()
        rounds = _counter(metrics, "edgespec_edge_rounds_total", 3)
        drafted = _counter(metrics, "edgespec_edge_drafted_tokens_total", 3)
        accepted = _counter(metrics, "edgespec_edge_accepted_tokens_total", 3)
        assert rounds > 0
        await asyncio.sleep(0.6)  # a few pushes into a refused connection

        operator = web.AppRunner(make_app(cache, queue, review))
        await operator.setup()
        await web.TCPSite(operator, "127.0.0.1", port).start()
        pool = await _wait_for_pool(cache, rounds)
        (sample,) = pool.drain()
        assert (sample.k, sample.rounds, sample.drafted, sample.accepted) == (3, rounds, drafted, accepted)
        assert (sample.draft_model, sample.quantization) == ("gemma-17l", "Q4_K_M")
        assert sample.verify_seconds > 0
        assert queue.depth == 1  # the deployment was queued: its pool reached minRounds
    finally:
        await edge.close()
        if operator is not None:
            await operator.cleanup()


async def _wait_for_pool(cache: Cache, rounds: float) -> Any:
    for _ in range(100):
        pool = cache.live.get((*KEY, "rpi5"))
        if pool is not None and pool.rounds() == rounds:
            return pool
        await asyncio.sleep(0.1)
    raise AssertionError(f"the operator did not receive all {rounds:.0f} rounds")
