"""spec.cloudOnlyFallback through the real operator: the class where speculation does not pay runs cloud-only.

The paper's illustrative profiles, with the target decoding alone measured for the RPi 4B only (at
100 tokens/s, far above what its 3 tokens/s draft can reach by speculating): with the field set, the
RPi 4B's selection says ``cloudOnly`` and its draft servers are written to run without a draft model
(the ConfigMap says ``mode: cloud-only``, the DaemonSet fetches nothing and starts the server in
``--mode cloud-only``); the other classes, with no measurement of the target alone, keep speculating.
Clearing the field brings the RPi 4B back to speculation (a rollout of the same DaemonSet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.builders.naming import draft_name
from kube_helpers import get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME, SLOW, FAST = "fallback", "rpi4b", "jetson-agx-orin"
ALONE = {"perTokenS": 0.01, "ttftS": 0.2, "samples": 64}  # the target alone: 100 tokens/s


def _profiles() -> list[dict[str, Any]]:
    docs = [
        d
        for d in yaml.safe_load_all((ROOT / "samples" / "profiles" / "paper-illustrative.yaml").read_text())
        if d
    ]
    for doc in docs:
        if doc["spec"]["deviceClass"] == SLOW:
            doc["spec"]["targetDecode"] = ALONE
    return docs


@pytest.fixture
def with_profiles(operator_process: Any) -> Iterator[Any]:
    cluster = operator_process.cluster
    profiles = json.dumps({"apiVersion": "v1", "kind": "List", "items": _profiles()})
    cluster.kubectl("apply", "-f", "-", input=profiles)
    try:
        yield cluster
    finally:
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found")
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=profiles)


def _selection(cluster: Any, device_class: str) -> dict[str, Any]:
    classes = status_of(cluster, NAME).get("deviceClasses", [])
    return dict(next((c.get("selection") or {} for c in classes if c["name"] == device_class), {}))


def _pod_config(
    cluster: Any, device_class: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]] | None:
    """The class's ConfigMap file, pod template spec and draft server environment (None: not there)."""
    name = draft_name(owner_of(NAME), device_class)
    config_map, daemon_set = get_object(cluster, "configmap", name), get_object(cluster, "daemonset", name)
    if not config_map or not daemon_set:
        return None
    config = yaml.safe_load(config_map["data"]["speculative.yaml"])
    pod = daemon_set["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}
    return config, pod, env


def test_with_the_field_set_the_class_where_speculation_does_not_pay_runs_cloud_only(
    with_profiles: Any,
) -> None:
    cluster = with_profiles
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["verifier"]["gpus"] = 1
    doc["spec"]["cloudOnlyFallback"] = True
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

    slow = wait_for("the RPi 4B's selection", lambda: _selection(cluster, SLOW))
    assert slow["mode"] == "cloudOnly", slow
    assert slow["speculationGain"] < 0 and "runs cloud-only" in slow["reason"]
    assert f"{SLOW}=none" in wait_for("the K column", lambda: status_of(cluster, NAME).get("kSummary"))
    config, pod, env = wait_for("the RPi 4B's draft servers", lambda: _pod_config(cluster, SLOW))
    assert config["mode"] == "cloud-only"
    assert env["EDGESPEC_EDGE_MODE"] == "cloud-only" and "EDGESPEC_EDGE_DRAFT_MODEL" not in env
    assert "initContainers" not in pod  # nothing to fetch

    fast = wait_for("the Jetson's selection", lambda: _selection(cluster, FAST))
    assert fast["mode"] == "speculative"  # no measurement of the target alone: it keeps speculating
    config, pod, env = wait_for("the Jetson's draft servers", lambda: _pod_config(cluster, FAST))
    assert config["mode"] == "speculative" and env["EDGESPEC_EDGE_MODE"] == "speculative"
    assert pod["initContainers"]

    # Without the field the verdict is only reported: the RPi 4B speculates again, same DaemonSet.
    doc["spec"]["cloudOnlyFallback"] = False
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    wait_for("the RPi 4B to speculate", lambda: _selection(cluster, SLOW).get("mode") == "speculative")
    config, pod, env = wait_for(
        "its draft servers to speculate",
        lambda: (c := _pod_config(cluster, SLOW)) is not None and c[0]["mode"] == "speculative" and c,
    )
    assert env["EDGESPEC_EDGE_MODE"] == "speculative" and pod["initContainers"]
