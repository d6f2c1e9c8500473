"""The handlers keep their state in kopf's memo, so two operator states share nothing.

Each test builds two memos with ``new_memo`` (what ``python -m edgespec.handlers`` hands to
``kopf.run``), drives the real kopf handlers of ``handlers/registration.py`` with one, and checks that
the other saw none of it. With the cache, queue or tasks in module globals every test here fails:
what one memo's handler wrote would show through the other. kopf gives each object's handlers a
shallow copy of the operator's memo (``copy.copy``); that copy must reach the same state.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf
import pytest
from aiohttp.test_utils import TestClient, TestServer
from edgespec.api.base import GROUP, VERSION
from edgespec.handlers import registration
from edgespec.handlers.http import make_app
from edgespec.handlers.identity import PodIdentity
from edgespec.handlers.state import OperatorState, new_memo, state_of
from edgespec.live import TELEMETRY_PATH
from edgespec.settings import OperatorSettings


def _memos() -> tuple[kopf.Memo, kopf.Memo]:
    settings = OperatorSettings(metrics_port=0)
    return new_memo(settings), new_memo(settings)


def _deployment(namespace: str, name: str, selector: dict[str, str]) -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SpeculativeDeployment",
            "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}"},
            "spec": {"deviceClasses": [{"name": "pi", "nodeSelector": selector}]},
        }
    )


def _node(name: str, labels: dict[str, str]) -> kopf.Body:
    return kopf.Body(
        {
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"memory": "8Gi"}},
        }
    )


def _daemonset(namespace: str, name: str, owner: str) -> kopf.Body:
    owner_ref: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeculativeDeployment",
        "name": owner,
        "uid": f"uid-{owner}",
    }
    return kopf.Body(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"namespace": namespace, "name": name, "ownerReferences": [owner_ref]},
            "status": {"numberReady": 1, "desiredNumberScheduled": 2},
        }
    )


def test_two_memos_hold_distinct_state() -> None:
    a, b = _memos()
    state_a, state_b = state_of(a), state_of(b)
    assert state_a is not state_b
    assert state_a.cache is not state_b.cache
    assert state_a.queue is not state_b.queue
    assert state_a.tasks is not state_b.tasks and state_a.runners is not state_b.runners
    assert state_a.metrics.registry is not state_b.metrics.registry
    assert state_a.reconciler is None and state_b.reconciler is None  # made by the start-up handler


def test_a_memo_without_state_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no edgespec state"):
        state_of(kopf.Memo())


async def test_a_deployment_event_reaches_only_its_own_memo() -> None:
    a, b = _memos()
    body = _deployment("team-a", "chat", {"hw": "pi"})
    await registration.deployment_event(type="ADDED", body=body, namespace="team-a", name="chat", memo=a)
    assert set(state_of(a).cache.deployments) == {("team-a", "chat")}
    assert state_of(a).queue.depth == 1
    assert state_of(b).cache.deployments == {} and state_of(b).queue.depth == 0

    await registration.deployment_event(type="DELETED", body=body, namespace="team-a", name="chat", memo=b)
    assert set(state_of(a).cache.deployments) == {("team-a", "chat")}  # b's delete is not a's


async def test_an_objects_memo_copy_shares_the_operators_state() -> None:
    a, _ = _memos()
    per_object = copy.copy(a)  # what kopf gives the handlers of one resource object
    await registration.deployment_event(
        type="ADDED", body=_deployment("ns", "x", {"hw": "pi"}), namespace="ns", name="x", memo=per_object
    )
    assert ("ns", "x") in state_of(a).cache.deployments
    assert state_of(per_object) is state_of(a)


async def _drain(state: OperatorState) -> list[tuple[str, str]]:
    """The keys waiting in ``state``'s work queue, taken by a worker as the operator's would."""
    keys: list[tuple[str, str]] = []

    async def handle(key: tuple[str, str]) -> None:
        keys.append(key)

    worker = asyncio.create_task(state.queue.worker(handle))
    for _ in range(3):
        await asyncio.sleep(0)
    worker.cancel()
    return keys


async def test_a_node_event_enqueues_only_its_own_memos_deployments() -> None:
    a, b = _memos()
    for memo, name in ((a, "in-a"), (b, "in-b")):
        body = _deployment("ns", name, {"hw": "pi"})
        await registration.deployment_event(type="ADDED", body=body, namespace="ns", name=name, memo=memo)
    state_a, state_b = state_of(a), state_of(b)
    assert await _drain(state_a) == [("ns", "in-a")] and await _drain(state_b) == [("ns", "in-b")]

    await registration.node_event(type="ADDED", body=_node("pi-1", {"hw": "pi"}), name="pi-1", memo=b)
    assert set(state_b.cache.nodes) == {"pi-1"} and state_a.cache.nodes == {}
    assert state_b.cache.nodes_version == 1 and state_a.cache.nodes_version == 0
    assert await _drain(state_a) == []  # a's deployment matches the node too, but the node is b's
    assert await _drain(state_b) == [("ns", "in-b")]


async def test_a_child_event_is_recorded_in_its_own_memo_only() -> None:
    a, b = _memos()
    body = _daemonset("ns", "chat-draft-pi", owner="chat")
    await registration.drafts_event(type="ADDED", body=body, namespace="ns", name="chat-draft-pi", memo=a)
    state_a, state_b = state_of(a), state_of(b)
    assert ("ns", "DaemonSet", "chat-draft-pi") in state_a.cache.workloads
    assert ("apps/v1", "DaemonSet", "ns", "chat-draft-pi") in state_a.cache.children[("ns", "chat")]
    assert state_a.queue.depth == 1
    assert state_b.cache.workloads == {} and state_b.cache.children == {} and state_b.queue.depth == 0


async def test_cleanup_stops_only_its_own_memos_tasks() -> None:
    a, b = _memos()
    state_a, state_b = state_of(a), state_of(b)
    forever = asyncio.Event()
    state_a.tasks.append(asyncio.create_task(forever.wait()))
    state_b.tasks.append(asyncio.create_task(forever.wait()))
    await registration.cleanup(memo=a)
    await asyncio.sleep(0)
    assert state_a.tasks[0].cancelled()
    assert not state_b.tasks[0].done()
    state_b.tasks[0].cancel()


async def test_each_states_metrics_count_only_its_own_requests() -> None:
    a, b = _memos()
    state_a, state_b = state_of(a), state_of(b)

    async def nobody(_token: str) -> PodIdentity | None:
        return None

    app = make_app(state_a.cache, state_a.queue, nobody, state_a.metrics)  # as the start-up handler does
    async with TestClient(TestServer(app)) as client:
        assert (await client.post(TELEMETRY_PATH, json={})).status == 401
        exposition = await (await client.get("/metrics")).text()
    assert 'edgespec_telemetry_reports_total{result="unauthorized"} 1.0' in exposition
    labels = {"result": "unauthorized"}
    assert state_a.metrics.registry.get_sample_value("edgespec_telemetry_reports_total", labels) == 1.0
    assert state_b.metrics.registry.get_sample_value("edgespec_telemetry_reports_total", labels) is None
