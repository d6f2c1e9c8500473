"""Helpers the operator's cluster tests share: wait for a condition, read status, objects and events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def status_of(cluster: Any, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "specdeploy", name, "-n", "default", "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def get_object(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", kind, name, "-n", "default", "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def events_of(cluster: Any, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def owner_of(name: str, namespace: str = "default") -> Any:
    """The naming identity of a deployment (child names do not depend on its uid)."""
    from edgespec.builders import Owner

    return Owner(name=name, namespace=namespace, uid="-")
