"""Status logic: conditions shaped like ``metav1.Condition``, node resolution, phase and summaries.

Pure functions over the API types. A reconcile computes the whole status from what it observed,
carries over ``lastTransitionTime`` of conditions whose status did not change, stamps
``observedGeneration``, and the shell writes it once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from edgespec.api.deployment import Condition, DeviceClass

ConditionStatus = Literal["True", "False", "Unknown"]


def now_utc() -> datetime:
    """The current time, second precision (what metav1.Time keeps)."""
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    previous: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    """The new condition; its transition time moves only when its status changes."""
    old = next((c for c in previous if c.type == type), None)
    changed = old is None or old.status != status
    return Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now if changed or old is None else old.last_transition_time,
    )


@dataclass(frozen=True)
class NodeInfo:
    """What the operator needs to know about a node."""

    name: str
    labels: Mapping[str, str]
    ready: bool
    unschedulable: bool = False
    allocatable_memory_bytes: int = 0
    arch: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> NodeInfo:
        meta = body.get("metadata", {})
        status = body.get("status", {}) or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []) or []
        )
        labels = dict(meta.get("labels", {}) or {})
        return cls(
            name=meta.get("name", ""),
            labels=labels,
            ready=ready,
            unschedulable=bool((body.get("spec", {}) or {}).get("unschedulable", False)),
            allocatable_memory_bytes=parse_quantity((status.get("allocatable", {}) or {}).get("memory", "0")),
            arch=labels.get("kubernetes.io/arch", ""),
        )


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Equality-based label selector match (an empty selector matches nothing, by our API's rule)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class ResolvedClass:
    """The nodes of one device class."""

    name: str
    nodes: tuple[NodeInfo, ...] = field(default_factory=tuple)

    @property
    def ready_nodes(self) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes if n.ready and not n.unschedulable)

    @property
    def min_allocatable_memory_bytes(self) -> int:
        """The smallest node's memory: a draft must fit on every node of its class."""
        return min((n.allocatable_memory_bytes for n in self.nodes), default=0)


def resolve_classes(classes: Iterable[DeviceClass], nodes: Iterable[NodeInfo]) -> list[ResolvedClass]:
    """Each device class with the nodes its selector matches, nodes sorted by name."""
    node_list = sorted(nodes, key=lambda n: n.name)
    return [
        ResolvedClass(name=c.name, nodes=tuple(n for n in node_list if matches(n.labels, c.node_selector)))
        for c in classes
    ]


def nodes_condition_args(resolved: Sequence[ResolvedClass]) -> tuple[ConditionStatus, str, str]:
    """Status, reason and message of the ``NodesResolved`` condition."""
    counts = ", ".join(f"{r.name}: {len(r.ready_nodes)}/{len(r.nodes)} ready" for r in resolved)
    empty = [r.name for r in resolved if not r.ready_nodes]
    if not empty:
        return "True", "NodesFound", f"nodes per device class: {counts}"
    return (
        "False",
        "NoReadyNodes",
        f"no ready node matches the nodeSelector of device class(es) {', '.join(empty)}; "
        f"label the nodes or fix spec.deviceClasses[].nodeSelector ({counts})",
    )


def summary(pairs: Iterable[tuple[str, object]]) -> str:
    """``a=1,b=2``, for printer columns."""
    return ",".join(f"{name}={value}" for name, value in pairs)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}


def parse_quantity(value: object) -> int:
    """A Kubernetes quantity (``8Gi``, ``500M``, ``1e9``, ``1024``) in base units, rounded down."""
    text = str(value).strip()
    if not text:
        return 0
    for suffix, factor in (*_BINARY.items(), *_DECIMAL.items()):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


@dataclass(frozen=True)
class StuckPod:
    """A pod whose init container failed, so its server never starts (read from the pod's status).

    ``message`` is the container's termination message: the model fetcher writes there which source
    it could not fetch and how to fix it (seed the node's model cache, or allow network access).
    """

    component: str  # verifier or draft (the pod's app.kubernetes.io/component)
    device_class: str  # the draft's class; empty for the verifier
    pod: str
    node: str
    container: str
    reason: str
    message: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> StuckPod | None:
        """The first failed init container of a pod, or None when no init container has failed."""
        meta = body.get("metadata", {}) or {}
        labels = meta.get("labels", {}) or {}
        status = body.get("status", {}) or {}
        for container in status.get("initContainerStatuses", []) or []:
            state = container.get("state", {}) or {}
            terminated = state.get("terminated")
            waiting = state.get("waiting") or {}
            if terminated is None and waiting.get("reason") == "CrashLoopBackOff":
                terminated = (container.get("lastState", {}) or {}).get("terminated")
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            message = (terminated.get("message") or "").strip() or waiting.get("message") or ""
            return cls(
                component=labels.get("app.kubernetes.io/component", ""),
                device_class=labels.get("edgespec.dev/device-class", ""),
                pod=meta.get("name", ""),
                node=(body.get("spec", {}) or {}).get("nodeName") or "",
                container=container.get("name", ""),
                reason=waiting.get("reason") or terminated.get("reason") or "Error",
                message=message or f"exit code {terminated.get('exitCode')}",
            )
        return None


def stuck_message(stuck: Sequence[StuckPod], limit: int = 3) -> str:
    """Why pods cannot start, one clause per pod (the first ``limit``), each naming its node."""
    clauses = []
    for pod in stuck[:limit]:
        what = "verifier" if pod.component == "verifier" else f"draft server ({pod.device_class})"
        clauses.append(
            f"{what} pod {pod.pod} on node {pod.node or '(unscheduled)'}: init container "
            f"{pod.container} failed ({pod.reason}): {pod.message}"
        )
    more = f" (and {len(stuck) - limit} more pods)" if len(stuck) > limit else ""
    return "; ".join(clauses) + more
