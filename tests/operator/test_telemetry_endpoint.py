"""The telemetry endpoint trusts nothing it has not checked: the pod's token first, then the values.

The TokenReview itself is stood in for here (tokens map to reviewed pod identities); the real review
against the API server is ``tests/cluster/test_telemetry_identity.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from edgespec.handlers.cache import Cache
from edgespec.handlers.http import make_app
from edgespec.handlers.identity import PodIdentity, draft_pod_identity
from edgespec.handlers.workqueue import WorkQueue
from edgespec.live import TELEMETRY_PATH

A, B = ("team-a", "chat"), ("team-b", "chat")
PODS: dict[str, PodIdentity] = {
    "token-a": draft_pod_identity(*A, "rpi5", node="pi-1", pod="chat-draft-rpi5-abcde"),
    "token-a-jetson": draft_pod_identity(*A, "jetson", node="orin-1", pod="chat-draft-jetson-abcde"),
    "token-b": draft_pod_identity(*B, "rpi5", node="pi-9", pod="chat-draft-rpi5-fghij"),
    # reviewed, in A's namespace, but controlled by no draft DaemonSet of ours
    "token-stranger": PodIdentity(A[0], "curl", "pi-1", {}, ("ReplicaSet", "curl-123")),
}


async def _review(token: str) -> PodIdentity | None:
    return PODS.get(token)


def _body(namespace: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"deviceClasses": [{"name": "rpi5"}, {"name": "jetson"}], "adaptation": {"minRounds": 10**5}},
        "status": {
            "deviceClasses": [{"name": "rpi5", "selection": {"draftModel": "d", "quantization": "Q4_0"}}]
        },
    }


def _report(key: tuple[str, str] = A, **counts: Any) -> dict[str, Any]:
    return {
        "namespace": key[0],
        "deployment": key[1],
        "device_class": "rpi5",
        "draft_model": "d",
        "quantization": "Q4_0",
        "counts": [
            {"k": 4, "rounds": 10, "drafted_tokens": 40, "accepted_tokens": 20, "verify_seconds": 3.0}
            | counts
        ],
    }


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], Cache]]:
    cache = Cache()
    for key in (A, B):
        cache.deployments[key] = _body(*key)
    test = TestClient(TestServer(make_app(cache, WorkQueue(), _review)))
    await test.start_server()
    try:
        yield test, cache
    finally:
        await test.close()


async def _post(test: TestClient[Any, Any], body: Any, token: str | None = "token-a") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await test.post(TELEMETRY_PATH, data=json.dumps(body), headers=headers)
    return response.status, await response.text()


async def test_no_token_is_refused_before_anything_is_revealed(client: Any) -> None:
    test, _ = client
    # Unknown deployment and a known one answer alike without the token: nothing to enumerate.
    assert (await _post(test, _report(("nowhere", "x")), token=None))[0] == 401
    assert (await _post(test, _report(A), token="guess"))[0] == 401
    assert (await _post(test, "not even a report", token=None))[0] == 401


async def test_a_pod_reports_only_for_its_own_deployment_class_and_node(client: Any) -> None:
    test, cache = client
    status, text = await _post(test, _report(B), token="token-a")
    assert status == 403 and "reports only for team-a/chat class rpi5" in text
    status, text = await _post(test, _report(A), token="token-a-jetson")  # A's jetson pod, class rpi5
    assert status == 403 and "class jetson" in text
    status, text = await _post(test, {**_report(A), "node": "pi-2"}, token="token-a")
    assert status == 403 and "runs on node pi-1" in text
    status, text = await _post(test, _report(A), token="token-stranger")
    assert status == 403 and "no draft server" in text
    assert not cache.live
    assert (await _post(test, {**_report(A), "node": "pi-1"}))[0] == 202
    assert (await _post(test, _report(B), token="token-b"))[0] == 202
    assert set(cache.live) == {(*A, "rpi5"), (*B, "rpi5")}


@pytest.mark.parametrize(
    ("counts", "field"),
    [
        ({"verify_seconds": float("inf")}, "finite"),
        ({"verify_seconds": float("nan")}, "finite"),
        ({"rounds": 10**20, "drafted_tokens": 0, "accepted_tokens": 0}, "counts.0.rounds"),
        ({"verify_seconds": 10**6}, "verify_seconds"),
    ],
)
async def test_non_finite_or_impossible_values_are_refused_naming_the_field(
    client: Any, counts: dict[str, Any], field: str
) -> None:
    test, cache = client
    status, text = await _post(test, _report(**counts))
    assert status == 422 and field in text, text
    assert not cache.live


async def test_junk_reports_cannot_grow_the_operators_memory(client: Any) -> None:
    test, cache = client
    for n in range(300):  # drafts the class does not run are refused, not pooled
        body = _report()
        body["draft_model"] = f"junk-{n}"
        assert (await _post(test, body))[0] == 409
    for k in range(1, 65):  # the running draft: at most one entry per K
        body = _report(k=k, drafted_tokens=k, accepted_tokens=0)
        assert (await _post(test, body))[0] == 202
    pool = cache.live[(*A, "rpi5")]
    assert len(pool.drain()) == 64
