"""``edgespec-edge profile`` waits for its verifier: a profiling Job may start before the model loads.

A real HTTP server on loopback answers ``/readyz`` 503 (loading) a few times, then 200.
"""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from edgespec_edge.__main__ import wait_for_verifier


async def test_profile_waits_until_the_verifier_is_ready() -> None:
    calls = []

    async def readyz(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=200 if len(calls) >= 3 else 503, text="loading model")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    async with TestServer(app, host="127.0.0.1") as server:
        await wait_for_verifier(str(server.make_url("")), timeout_s=60, poll_s=0.05)
    assert calls == ["/readyz"] * 3


async def test_a_verifier_that_never_loads_is_named_when_giving_up() -> None:
    async def readyz(request: web.Request) -> web.Response:
        return web.Response(status=503, text="loading model")

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url(""))
        with pytest.raises(
            SystemExit, match=r"the verifier at .* is not ready after 0 s \(HTTP 503: loading model\)"
        ):
            await wait_for_verifier(url, timeout_s=0.2, poll_s=0.05)
