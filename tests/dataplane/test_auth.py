"""The verifier refuses callers without its bearer token (401) and such requests change nothing."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from edgespec.wire import VerifyRequest
from edgespec_verifier.engines.llamacpp import LlamaCppEngine

from .conftest import TOKEN

pytestmark = pytest.mark.models


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Basic " + TOKEN},
        {"Authorization": "Bearer"},
    ],
    ids=["missing", "wrong", "wrong-scheme", "empty"],
)
async def test_unauthenticated_requests_get_401_and_change_nothing(
    headers: dict[str, str], verifier: TestServer, engine: LlamaCppEngine
) -> None:
    sessions_before = engine.session_count()
    request = VerifyRequest(session_id="intruder", tokens=[2, 818, 5279], draft=[529])
    async with ClientSession() as http:
        for method, path, body in (
            ("POST", "/v1/verify", request.model_dump_json()),
            ("POST", "/v1/sessions", '{"session_id": "intruder", "tokens": [2, 818]}'),
            ("DELETE", "/v1/sessions/intruder", None),
        ):
            async with http.request(method, verifier.make_url(path), data=body, headers=headers) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"]["code"] == "unauthorized"
        async with http.get(verifier.make_url("/metrics")) as response:
            metrics = await response.text()
    assert engine.session_count() == sessions_before
    assert "intruder" not in engine._sessions
    assert _metric(metrics, "edgespec_verifier_drafted_tokens_total") == 0
    assert "edgespec_verifier_rounds_total{" not in metrics  # no round of any outcome was run


async def test_right_token_is_accepted(verifier: TestServer) -> None:
    request = VerifyRequest(session_id="friend", tokens=[2, 818, 5279], draft=[529])
    async with ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with http.post(verifier.make_url("/v1/verify"), data=request.model_dump_json()) as response:
            assert response.status == 200
            body = await response.json()
        assert 0 <= body["accepted"] <= 1
        async with http.delete(verifier.make_url("/v1/sessions/friend")) as response:
            assert response.status == 204
        async with http.get(verifier.make_url("/readyz")) as response:
            assert response.status == 200
