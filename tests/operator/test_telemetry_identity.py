"""A telemetry token is a draft pod's own: what the TokenReview vouches for must be the pod as read.

The pure checks (``identity_from_review``, ``reporter_of``) and the edge client re-reading its rotated
token file. The review against the real API server is ``tests/cluster/test_telemetry_identity.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from edgespec.builders.naming import Owner, draft_name, selector_labels
from edgespec.handlers.cache import Cache
from edgespec.handlers.http import make_app
from edgespec.handlers.identity import (
    EXTRA_NODE_NAME,
    EXTRA_POD_NAME,
    EXTRA_POD_UID,
    PodIdentity,
    draft_pod_identity,
    identity_from_review,
    reporter_of,
)
from edgespec.handlers.workqueue import WorkQueue
from edgespec.live import TELEMETRY_AUDIENCE
from edgespec_edge.loop import RoundStats
from edgespec_edge.telemetry import RoundTally, TelemetrySettings, push_once

OWNER = Owner(namespace="team-a", name="chat", uid="u-1")


def _pod(device_class: str = "rpi5", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": "chat-draft-x",
            "uid": "pod-uid-1",
            "labels": selector_labels(OWNER, "draft", device_class),
            "ownerReferences": [
                {"kind": "DaemonSet", "name": draft_name(OWNER, device_class), "controller": True}
            ],
        },
        "spec": {"nodeName": "pi-1", **spec},
    }


def _status(**changes: Any) -> dict[str, Any]:
    extra = {EXTRA_POD_NAME: ["chat-draft-x"], EXTRA_POD_UID: ["pod-uid-1"], EXTRA_NODE_NAME: ["pi-1"]}
    user = {"username": "system:serviceaccount:team-a:default", "extra": extra}
    status = {"authenticated": True, "audiences": [TELEMETRY_AUDIENCE], "user": user}
    for key, value in changes.items():
        if key in extra:
            extra[key] = value
        elif key == "username":
            user["username"] = value
        else:
            status[key] = value
    return status


DEPLOYMENTS = {
    ("team-a", "chat"): {
        "metadata": {"uid": "u-1"},
        "spec": {"deviceClasses": [{"name": "rpi5"}, {"name": "jetson"}]},
    }
}


def test_a_reviewed_draft_pod_reports_for_its_class_and_node_only() -> None:
    identity = identity_from_review(_status(), _pod())
    assert identity is not None
    reporter = reporter_of(identity, DEPLOYMENTS)
    assert reporter is not None
    assert (reporter.deployment, reporter.device_class, reporter.node) == ("chat", "rpi5", "pi-1")
    jetson = identity_from_review(_status(), _pod("jetson"))
    assert jetson is not None and reporter_of(jetson, DEPLOYMENTS) is not None
    assert reporter_of(jetson, DEPLOYMENTS).device_class == "jetson"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "pod"),
    [
        (_status(authenticated=False), _pod()),
        (_status(audiences=["https://kubernetes.default.svc"]), _pod()),  # an API token
        (_status(username="alice"), _pod()),  # not a ServiceAccount
        (_status(username="system:serviceaccount:team-b:default"), _pod()),  # another namespace
        (_status(username="system:serviceaccount:team-a:builder"), _pod()),  # not the pod's account
        (_status(**{EXTRA_POD_UID: ["pod-uid-0"]}), _pod()),  # a deleted pod of the same name
        (_status(**{EXTRA_NODE_NAME: ["pi-2"]}), _pod()),  # issued for another node
        (_status(**{EXTRA_NODE_NAME: []}), _pod()),  # not bound to a node
        (_status(**{EXTRA_POD_NAME: ["other"]}), _pod()),
        (_status(), None),  # the pod is gone
    ],
)
def test_a_token_not_of_this_pod_on_this_node_proves_nothing(status: dict[str, Any], pod: Any) -> None:
    assert identity_from_review(status, pod) is None


def test_a_pod_that_only_looks_like_a_draft_reports_for_nothing() -> None:
    labels = selector_labels(OWNER, "draft", "rpi5")
    ours = ("DaemonSet", draft_name(OWNER, "rpi5"))
    cases = [
        PodIdentity("team-a", "p", "pi-1", labels, ("ReplicaSet", ours[1])),  # right name, wrong kind
        PodIdentity("team-a", "p", "pi-1", labels, None),
        PodIdentity("team-a", "p", "pi-1", {}, ours),  # right controller, labels of nothing
        PodIdentity("team-a", "p", "pi-1", selector_labels(OWNER, "draft", "jetson"), ours),
        PodIdentity("team-b", "p", "pi-1", labels, ours),  # another namespace
    ]
    for pod in cases:
        assert reporter_of(pod, DEPLOYMENTS) is None, pod


async def test_the_edge_reads_its_rotated_token_for_every_report(tmp_path: Path) -> None:
    pod = draft_pod_identity("team-a", "chat", "rpi5", node="pi-1", pod="chat-draft-x")
    valid = {"first"}

    async def review(token: str) -> PodIdentity | None:
        return pod if token in valid else None

    cache = Cache()
    cache.deployments[("team-a", "chat")] = DEPLOYMENTS[("team-a", "chat")]
    server = TestServer(make_app(cache, WorkQueue(), review))
    await server.start_server()
    token_file = tmp_path / "token"
    settings = TelemetrySettings(
        telemetry_url=str(server.make_url("/v1/telemetry")),
        namespace="team-a",
        deployment="chat",
        device_class="rpi5",
        draft_name="d",
        quantization="Q4_0",
        node_name="pi-1",
        telemetry_token_file=str(token_file),
    )
    tally = RoundTally()

    def one_round() -> None:
        tally.record(RoundStats(k=3, drafted=3, accepted=2, draft_s=0.01, round_trip_s=0.02, verify_s=0.01))

    try:
        async with aiohttp.ClientSession() as session:
            one_round()
            assert not await push_once(session, settings, tally)  # no file yet: refused (401), dropped
            token_file.write_text("first\n")
            one_round()
            assert await push_once(session, settings, tally)
            token_file.write_text("second\n")  # the kubelet rotated it; the old one expires
            valid.clear()
            valid.add("second")
            one_round()
            assert await push_once(session, settings, tally)
        assert cache.live[("team-a", "chat", "rpi5")].rounds() == 2
    finally:
        await server.close()
