"""The edge never wastes the verifier and fails fast and truthfully.

- a client that disconnects (streaming or not) stops its generation within one round and frees its slot;
- a full admission queue answers 429 with Retry-After at once;
- a hung verifier (a real loopback TCP server that accepts and never answers) fails the request within
  the configured deadline plus 1 s, naming the timeout, and ``/readyz`` tells;
- ``/readyz`` follows the verifier: unreachable, wrong token, fine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from edgespec_edge.config import EdgeSettings, SpeculativeLength
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter
from edgespec_edge.server import METRICS, STATE
from edgespec_verifier.engines.llamacpp import LlamaCppEngine

from .conftest import start_edge

pytestmark = pytest.mark.models

LONG = {"prompt": "Once upon a time, in a small village,", "max_tokens": 400, "temperature": 0}


def _drafter(edge: TestServer) -> Drafter:
    drafter = edge.app[STATE]["drafter"]
    assert isinstance(drafter, Drafter)
    return drafter


def _rounds(edge: TestServer) -> float:
    return sum(
        sample.value
        for metric in edge.app[METRICS].rounds.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def _until(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Poll ``condition`` (bounded: a generous limit, never a timing assertion)."""
    for _ in range(int(limit_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting for: {what}")


@contextlib.asynccontextmanager
async def hung_verifier() -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A loopback TCP server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", held
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
async def test_a_disconnected_client_stops_within_one_round_and_frees_its_slot(
    stream: bool, verifier: TestServer, draft_runtime: LlamaRuntime, engine: LlamaCppEngine
) -> None:
    edge = await start_edge(
        EdgeSettings(k=2, max_concurrent=1, max_queue=0), draft_runtime, str(verifier.make_url(""))
    )
    drafter = _drafter(edge)
    sessions_before = engine.session_count()  # the engine is shared with earlier tests
    try:
        async with aiohttp.ClientSession() as http:
            if stream:
                response = await http.post(edge.make_url("/v1/completions"), json={**LONG, "stream": True})
                assert response.status == 200
                await response.content.readline()  # the first verified text arrived
                response.close()  # the client goes away (closes its connection)
            else:  # no answer before the end: the client gives up while it waits
                waiting = asyncio.create_task(http.post(edge.make_url("/v1/completions"), json=LONG))
                await _until(lambda: _rounds(edge) >= 2, "two rounds of the abandoned request")
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            rounds_at_disconnect = _rounds(edge)
        await _until(lambda: drafter.busy == 0, "the slot is freed")
        assert _rounds(edge) - rounds_at_disconnect <= 1  # at most the round that was in flight
        assert edge.app[METRICS].cancelled._value.get() == 1
        await _until(lambda: engine.session_count() <= sessions_before, "the verifier session is closed")
        # The slot serves the next client.
        async with (
            aiohttp.ClientSession() as http,
            http.post(edge.make_url("/v1/completions"), json={"prompt": "Hello", "max_tokens": 2}) as answer,
        ):
            assert answer.status == 200
    finally:
        await edge.close()


async def test_a_full_queue_answers_429_with_retry_after_at_once(
    verifier: TestServer, draft_runtime: LlamaRuntime
) -> None:
    edge = await start_edge(
        EdgeSettings(k=2, max_concurrent=1, max_queue=1), draft_runtime, str(verifier.make_url(""))
    )
    drafter = _drafter(edge)
    try:
        async with aiohttp.ClientSession() as http:
            running = asyncio.create_task(http.post(edge.make_url("/v1/completions"), json=LONG))
            await _until(lambda: drafter.busy == 1, "the first request holds the slot")
            queued = asyncio.create_task(http.post(edge.make_url("/v1/completions"), json=LONG))
            await _until(lambda: drafter.waiting == 1, "the second request is queued")
            async with http.post(edge.make_url("/v1/completions"), json=LONG) as refused:
                assert refused.status == 429
                assert int(refused.headers["Retry-After"]) >= 1
                error = (await refused.json())["error"]
                assert error["type"] == "rate_limit_error" and error["code"] == "queue_full"
            # Answered while the first is still generating and the second still waiting.
            assert drafter.busy == 1 and drafter.waiting == 1 and not running.done()
            metrics = await (await http.get(edge.make_url("/metrics"))).text()
            assert "edgespec_edge_requests_rejected_total 1.0" in metrics
            for task in (running, queued):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    (await task).close()
        await _until(lambda: drafter.busy == 0 and drafter.waiting == 0, "both abandoned requests end")
        async with aiohttp.ClientSession() as http:
            metrics = await (await http.get(edge.make_url("/metrics"))).text()
        # Both admitted requests' waits were measured (the queued one's for as long as it waited).
        assert "edgespec_edge_queue_wait_seconds_count 2.0" in metrics
        assert "edgespec_edge_requests_cancelled_total 2.0" in metrics
    finally:
        await edge.close()


async def test_a_hung_verifier_fails_within_the_deadline(draft_runtime: LlamaRuntime) -> None:
    deadline_s = 2.0
    async with hung_verifier() as (url, held):
        settings = EdgeSettings(k=1, verify_timeout_s=deadline_s, retry_budget_s=deadline_s)
        edge = await start_edge(settings, draft_runtime, url)
        async with _drafter(edge).sequence():
            pass  # a warm server: its KV sequence exists (creating one is model set-up, not waiting)
        try:
            async with aiohttp.ClientSession() as http:
                started = time.monotonic()
                async with http.post(
                    edge.make_url("/v1/completions"), json={"prompt": "Hi", "max_tokens": 4}
                ) as response:
                    elapsed = time.monotonic() - started
                    assert response.status == 502
                    error = (await response.json())["error"]
                assert elapsed < deadline_s + 1.0
                assert error["code"] == "verifier_timeout"
                assert f"{deadline_s:g} s verify deadline" in error["message"]
                assert held  # the verifier did accept the connection: a hang, not a refusal
                async with http.get(edge.make_url("/readyz")) as ready:
                    assert ready.status == 503
                    assert "did not answer" in (await ready.json())["reason"]
        finally:
            await edge.close()


async def test_readyz_follows_the_verifier(verifier: TestServer, draft_runtime: LlamaRuntime) -> None:
    url = str(verifier.make_url(""))
    cases = [(url, None, 200, "ready"), (url, "wrong-token", 503, "401")]
    async with hung_verifier() as (hung_url, _):
        pass  # closed again: nothing listens at its port any more
    cases.append((hung_url, None, 503, "unreachable"))
    for base, token, status, text in cases:
        kwargs = {} if token is None else {"token": token}
        edge = await start_edge(EdgeSettings(k=2), draft_runtime, base, **kwargs)
        try:
            async with aiohttp.ClientSession() as http, http.get(edge.make_url("/readyz")) as ready:
                assert ready.status == status, base
                assert text in await ready.text()
        finally:
            await edge.close()


def test_a_missing_k_file_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = SpeculativeLength(3, tmp_path / "k.yaml")
    with caplog.at_level(logging.WARNING, logger="edgespec.edge"):
        assert [source.current() for _ in range(5)] == [3] * 5
    assert len(caplog.records) == 1
    (tmp_path / "k.yaml").write_text("k: 5\n")
    assert source.current() == 5
