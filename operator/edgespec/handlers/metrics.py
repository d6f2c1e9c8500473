"""The operator's Prometheus metrics (served on ``/metrics`` by ``edgespec.handlers.http``).

Names follow Prometheus conventions (``_total`` counters, base units). API requests are counted where
the operator makes them (``edgespec.handlers.kube``); the watch streams kopf keeps open are not. The
``edgespec_predicted_*`` gauges carry what ConfigSpec predicted for each class's chosen configuration,
set from the status the reconcile writes, so a dashboard can set them against what the draft servers
measure; for a class running cloud-only they are the target decoding alone's, which is what it serves.
Their namespace label is ``deployment_namespace``: a scrape adds its own ``namespace``.

The collectors are an :class:`OperatorMetrics` on its own registry, held by the operator's state
(``handlers/state.py``) and injected where requests, reconciles and reports are counted: no module
global, so a test builds a fresh set and reads only its own counts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgespec.api.deployment import DeviceClassSelection, NoSpeculation, SpeculativeDeploymentStatus

_PER_CLASS = ["deployment_namespace", "deployment", "device_class"]


class OperatorMetrics:
    """The collectors of one operator on a registry of their own, injected where they are counted.

    One per :class:`~edgespec.handlers.state.OperatorState`, so two operator states (or two tests)
    never add to each other's counts.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconciles = Counter(
            "edgespec_reconciles_total",
            "Reconciles of SpeculativeDeployments, by result (ok or error).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "edgespec_reconcile_duration_seconds",
            "Wall time of one reconcile, including its API requests.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.api_requests = Counter(
            "edgespec_api_requests_total",
            "Requests the operator made to the API server (watches excluded), by verb and resource.",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.selection_changes = Counter(
            "edgespec_selection_changes_total",
            "Selection events, by reason: Selected (profiles or spec; all classes chosen in one pass) or "
            "Adapted (one class, live telemetry).",
            ["reason"],
            registry=self.registry,
        )
        self.telemetry_reports = Counter(
            "edgespec_telemetry_reports_total",
            "Telemetry reports from draft servers, by result (accepted, unauthorized, invalid, unknown).",
            ["result"],
            registry=self.registry,
        )
        self.workqueue_depth = Gauge(
            "edgespec_workqueue_depth", "Deployments waiting to be reconciled.", registry=self.registry
        )
        self.deployments = Gauge(
            "edgespec_deployments", "SpeculativeDeployments in the cache.", registry=self.registry
        )
        self.nodes = Gauge("edgespec_nodes", "Nodes in the cache.", registry=self.registry)
        self.predicted_goodput = Gauge(
            "edgespec_predicted_goodput_tokens_per_second",
            "Goodput ConfigSpec predicts for the class's chosen configuration, tokens/s per stream.",
            _PER_CLASS,
            registry=self.registry,
        )
        self.predicted_tokens_per_usd = Gauge(
            "edgespec_predicted_tokens_per_usd",
            "Committed tokens per USD of verification predicted for the class's chosen configuration.",
            _PER_CLASS,
            registry=self.registry,
        )
        self.predicted_joules_per_token = Gauge(
            "edgespec_predicted_joules_per_token",
            "Edge-device energy per committed token predicted for the class's chosen configuration, joules.",
            _PER_CLASS,
            registry=self.registry,
        )
        # (namespace, deployment) -> the classes whose predicted series exist, to remove stale ones
        self._predicted_classes: dict[tuple[str, str], set[str]] = {}

    def record_predictions(
        self, namespace: str, name: str, status: SpeculativeDeploymentStatus | None
    ) -> None:
        """Set the predicted gauges of one deployment from its status; None (deleted) removes them.

        A class that lost its selection, or left the spec, loses its series rather than keep a stale one.
        """
        predictions = (self.predicted_goodput, self.predicted_tokens_per_usd, self.predicted_joules_per_token)
        selected = (
            {} if status is None else {c.name: c.selection for c in status.device_classes if c.selection}
        )
        for gone in self._predicted_classes.pop((namespace, name), set()) - set(selected):
            for gauge in predictions:
                gauge.remove(namespace, name, gone)
        for device_class, choice in selected.items():
            labels = (namespace, name, device_class)
            # A class running cloud-only serves the target decoding alone: its prediction is what counts.
            served: DeviceClassSelection | NoSpeculation = choice
            if choice.mode == "cloudOnly" and choice.no_speculation is not None:
                served = choice.no_speculation
            self.predicted_goodput.labels(*labels).set(served.predicted_goodput_tokens_per_s)
            self.predicted_tokens_per_usd.labels(*labels).set(served.predicted_tokens_per_usd)
            self.predicted_joules_per_token.labels(*labels).set(served.predicted_joules_per_token)
        if selected:
            self._predicted_classes[(namespace, name)] = set(selected)
