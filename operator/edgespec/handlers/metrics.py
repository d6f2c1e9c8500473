"""The operator's Prometheus metrics (served on ``/metrics`` by ``edgespec.handlers.http``).

Names follow Prometheus conventions (``_total`` counters, base units). API requests are counted where
the operator makes them (``edgespec.handlers.kube``); the watch streams kopf keeps open are not. The
``edgespec_predicted_*`` gauges carry what ConfigSpec predicted for each class's chosen configuration,
set from the status the reconcile writes, so a dashboard can set them against what the draft servers
measure; for a class running cloud-only they are the target decoding alone's, which is what it serves.
Their namespace label is ``deployment_namespace``: a scrape adds its own ``namespace``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgespec.api.deployment import DeviceClassSelection, NoSpeculation, SpeculativeDeploymentStatus

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

_PER_CLASS = ["deployment_namespace", "deployment", "device_class"]
PREDICTED_GOODPUT = Gauge(
    "edgespec_predicted_goodput_tokens_per_second",
    "Goodput ConfigSpec predicts for the class's chosen configuration, tokens/s per stream.",
    _PER_CLASS,
    registry=REGISTRY,
)
PREDICTED_TOKENS_PER_USD = Gauge(
    "edgespec_predicted_tokens_per_usd",
    "Committed tokens per USD of verification predicted for the class's chosen configuration.",
    _PER_CLASS,
    registry=REGISTRY,
)
PREDICTED_JOULES_PER_TOKEN = Gauge(
    "edgespec_predicted_joules_per_token",
    "Edge-device energy per committed token predicted for the class's chosen configuration, joules.",
    _PER_CLASS,
    registry=REGISTRY,
)
_PREDICTIONS = (PREDICTED_GOODPUT, PREDICTED_TOKENS_PER_USD, PREDICTED_JOULES_PER_TOKEN)
_PREDICTED_CLASSES: dict[tuple[str, str], set[str]] = {}


def record_predictions(namespace: str, name: str, status: SpeculativeDeploymentStatus | None) -> None:
    """Set the predicted gauges of one deployment from its status; None (deleted) removes them.

    A class that lost its selection, or left the spec, loses its series rather than keep a stale one.
    """
    selected = {} if status is None else {c.name: c.selection for c in status.device_classes if c.selection}
    for gone in _PREDICTED_CLASSES.pop((namespace, name), set()) - set(selected):
        for gauge in _PREDICTIONS:
            gauge.remove(namespace, name, gone)
    for device_class, choice in selected.items():
        labels = (namespace, name, device_class)
        # A class running cloud-only serves the target decoding alone: its prediction is what counts.
        served: DeviceClassSelection | NoSpeculation = choice
        if choice.mode == "cloudOnly" and choice.no_speculation is not None:
            served = choice.no_speculation
        PREDICTED_GOODPUT.labels(*labels).set(served.predicted_goodput_tokens_per_s)
        PREDICTED_TOKENS_PER_USD.labels(*labels).set(served.predicted_tokens_per_usd)
        PREDICTED_JOULES_PER_TOKEN.labels(*labels).set(served.predicted_joules_per_token)
    if selected:
        _PREDICTED_CLASSES[(namespace, name)] = set(selected)
