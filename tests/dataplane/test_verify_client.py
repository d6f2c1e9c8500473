"""The edge's verify client speaks enough HTTP/1.1 for any verifier in front of it.

No models: a stand-in aiohttp verifier answers with fixed verdicts, in the shapes a real server or a
proxy may use (Content-Length, chunked, 204, closed keep-alive connections, 5xx then 200, 401).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from edgespec.wire import VerifyRequest, VerifyResponse
from edgespec_edge.loop import VerifierClient, VerifierRejected, VerifierUnavailable

VERDICT = VerifyResponse(accepted=1, next_token=7, bonus=True, verify_s=0.001, engine="stub")
REQUEST = VerifyRequest(session_id="s", tokens=[2, 3], draft=[5])


async def start(app: web.Application, **kwargs: Any) -> TestServer:
    server = TestServer(app, **kwargs)
    await server.start_server()
    return server


@pytest.fixture
async def stub() -> AsyncIterator[tuple[TestServer, list[str]]]:
    """A verifier stand-in; ``mode`` (the list) picks how the next verify is answered."""
    mode: list[str] = ["plain"]
    seen: list[str] = []

    async def verify(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        body = VERDICT.model_dump_json().encode()
        kind = mode.pop(0) if len(mode) > 1 else mode[0]
        if kind == "chunked":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(body[:10])
            await response.write(body[10:])
            await response.write_eof()
            return response
        if kind == "busy":
            return web.json_response({"error": {"code": "overloaded", "message": "busy"}}, status=503)
        if kind == "close":
            return web.Response(body=body, content_type="application/json", headers={"Connection": "close"})
        return web.Response(body=body, content_type="application/json")

    async def close_session(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/v1/verify", verify)
    app.router.add_delete("/v1/sessions/{session_id}", close_session)
    server = await start(app, keepalive_timeout=0.05)
    yield server, mode
    await server.close()


@pytest.mark.parametrize("kind", ["plain", "chunked", "close"])
async def test_reads_every_body_shape(stub: tuple[TestServer, list[str]], kind: str) -> None:
    server, mode = stub
    mode[:] = [kind]
    client = VerifierClient(str(server.make_url("")), "tok")
    try:
        for _ in range(3):  # on the pooled connection, or a new one after "Connection: close"
            verdict, round_trip_s = await client.verify(REQUEST)
            assert verdict == VERDICT
            assert round_trip_s > 0
        client.close_session("s")  # in the background; 204, no body: must not wait for one
        await client.drain()
    finally:
        await client.close()


async def test_pooled_connection_closed_by_the_verifier_is_replaced(
    stub: tuple[TestServer, list[str]],
) -> None:
    server, _ = stub
    client = VerifierClient(str(server.make_url("")), "tok", retry_budget_s=0.0)
    try:
        await client.verify(REQUEST)
        await asyncio.sleep(0.3)  # the server's keep-alive timeout (0.05 s) closes the idle connection
        verdict, _ = await client.verify(REQUEST)  # no retry budget: only a fresh connection can answer
        assert verdict == VERDICT
    finally:
        await client.close()


async def test_5xx_is_retried_and_4xx_is_not(stub: tuple[TestServer, list[str]]) -> None:
    server, mode = stub
    mode[:] = ["busy", "busy", "plain"]
    client = VerifierClient(str(server.make_url("")), "tok", retry_budget_s=2.0)
    try:
        verdict, _ = await client.verify(REQUEST)
        assert verdict == VERDICT
    finally:
        await client.close()

    async def unauthorized(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"code": "unauthorized", "message": "wrong bearer token"}}, status=401
        )

    app = web.Application()
    app.router.add_post("/v1/verify", unauthorized)
    other = await start(app)
    client = VerifierClient(str(other.make_url("")), "tok", retry_budget_s=2.0)
    try:
        with pytest.raises(VerifierRejected, match="401: wrong bearer token"):
            await client.verify(REQUEST)
    finally:
        await client.close()
        await other.close()


async def test_unreachable_verifier_fails_within_the_budget() -> None:
    server = await start(web.Application())
    url = str(server.make_url(""))
    await server.close()  # nothing listens there any more
    client = VerifierClient(url, "tok", retry_budget_s=0.3)
    try:
        with pytest.raises(VerifierUnavailable, match=r"connection refused .*retried for 0\.\d s") as caught:
            await client.verify(REQUEST)
        assert caught.value.kind == "refused"
    finally:
        await client.close()


def test_rejects_a_url_it_cannot_speak() -> None:
    with pytest.raises(ValueError, match="expected http"):
        VerifierClient("ftp://verifier", None)
