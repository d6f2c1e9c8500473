"""An informer-style cache filled by watch events: nodes, deployments and profiles, by key.

Watch events keep it current; the reconcile reads it instead of listing the API, so a steady state
costs no API requests beyond the watches. Telemetry pools are filled by the HTTP endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgespec.adaptation import Pool
from edgespec.api.profile import EdgeProfileSpec
from edgespec.plan import JobOutcome, Rollout
from edgespec.status import NodeInfo

Key = tuple[str, str]
Identity = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name) of a child."""


@dataclass
class Cache:
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    nodes_version: int = 0  # bumped on every change of ``nodes`` (memoised node matches compare it)
    deployments: dict[Key, dict[str, Any]] = field(default_factory=dict)
    profiles: dict[str, EdgeProfileSpec] = field(default_factory=dict)
    # (namespace, kind, name) -> readiness of the Deployments and DaemonSets the operator made
    workloads: dict[tuple[str, str, str], Rollout] = field(default_factory=dict)
    # (namespace, name) of profiling Jobs that finished -> how (failed after their retries, or completed)
    finished_jobs: dict[tuple[str, str], JobOutcome] = field(default_factory=dict)
    # (namespace, deployment) -> the children it owns as the watches last saw them -> the owner's uid
    children: dict[Key, dict[Identity, str]] = field(default_factory=dict)
    # (namespace, deployment, class) -> telemetry reported by its draft servers since the last fold
    live: dict[tuple[str, str, str], Pool] = field(default_factory=dict)
