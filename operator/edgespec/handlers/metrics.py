"""The operator's Prometheus metrics (served on ``/metrics`` by ``edgespec.handlers.http``).

Names follow Prometheus conventions (``_total`` counters, base units). API requests are counted where
the operator makes them (``edgespec.handlers.kube``); the watch streams kopf keeps open are not.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

RECONCILES = Counter(
    "edgespec_reconciles_total",
    "Reconciles of SpeculativeDeployments, by result (ok or error).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "edgespec_reconcile_duration_seconds",
    "Wall time of one reconcile, including its API requests.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "edgespec_api_requests_total",
    "Requests the operator made to the API server (watches excluded), by verb and resource.",
    ["verb", "resource"],
    registry=REGISTRY,
)
SELECTION_CHANGES = Counter(
    "edgespec_selection_changes_total",
    "Selection events, by reason: Selected (profiles or spec; all classes chosen in one pass) or "
    "Adapted (one class, live telemetry).",
    ["reason"],
    registry=REGISTRY,
)
TELEMETRY_REPORTS = Counter(
    "edgespec_telemetry_reports_total",
    "Telemetry reports from draft servers, by result (accepted, unauthorized, invalid, unknown).",
    ["result"],
    registry=REGISTRY,
)
WORKQUEUE_DEPTH = Gauge(
    "edgespec_workqueue_depth", "Deployments waiting to be reconciled.", registry=REGISTRY
)
DEPLOYMENTS = Gauge("edgespec_deployments", "SpeculativeDeployments in the cache.", registry=REGISTRY)
NODES = Gauge("edgespec_nodes", "Nodes in the cache.", registry=REGISTRY)
