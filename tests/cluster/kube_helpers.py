"""Helpers the operator's cluster tests share: wait for a condition, read status, objects and events."""

from __future__ import annotations

import json
from typing import Any

from edgespec_dev.waiting import wait_for

__all__ = ["condition", "events_of", "get_object", "owner_of", "status_of", "wait_for"]


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
