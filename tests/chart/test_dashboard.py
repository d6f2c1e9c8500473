"""The Grafana dashboard queries only metrics the code defines, and sets predictions against measurements.

Every ``edgespec_*`` name in a panel or variable query must be a sample name that the code serving it
declares: the operator's metrics registry, the edge (draft) server's ``EdgeMetrics`` or the verifier's
``VerifierMetrics``, each built into a fresh registry here. A panel on a metric nothing exports stays
empty without an error, so this is checked by exact name (a counter queried without ``_total`` fails).
"""

from __future__ import annotations

from edgespec_dev import dashboard
from edgespec_dev.dashboard import SAMPLE_SUFFIXES, used_metrics
from prometheus_client import CollectorRegistry

DASHBOARD = dashboard.load()


def exposed_metrics() -> dict[str, str]:
    """Sample name -> component, from each component's own metric declarations in a fresh registry.

    The operator's ``OperatorMetrics``, the edge server's ``EdgeMetrics`` and the verifier's
    ``VerifierMetrics``: exactly the names their ``/metrics`` can expose (``_total``, ``_bucket``...).
    """
    from edgespec.handlers.metrics import OperatorMetrics
    from edgespec_edge.server import EdgeMetrics
    from edgespec_verifier.server import VerifierMetrics

    operator, edge, verifier = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    OperatorMetrics(operator)
    EdgeMetrics(edge)
    VerifierMetrics(verifier)
    names = {}
    for component, registry in (("operator", operator), ("edge server", edge), ("verifier", verifier)):
        for family in registry.collect():
            for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)):
                names[family.name + suffix] = component
    return names


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = exposed_metrics()
    used = used_metrics(DASHBOARD)
    assert len(used) >= 10
    missing = sorted(used - set(exposed))
    assert missing == [], f"the dashboard queries metrics no component exposes: {missing}"
    assert {exposed[m] for m in used} == {"operator", "edge server", "verifier"}


def test_the_check_catches_an_undefined_or_misspelt_metric() -> None:
    exposed = exposed_metrics()
    assert "edgespec_edge_tokens_served_total" in exposed
    broken = {
        "panels": [
            {"targets": [{"expr": "rate(edgespec_edge_imaginary_total[5m]) / edgespec_edge_tokens_served"}]}
        ]
    }
    assert sorted(used_metrics(broken) - set(exposed)) == [
        "edgespec_edge_imaginary_total",
        "edgespec_edge_tokens_served",
    ]


def test_predicted_goodput_is_set_against_measured_per_class() -> None:
    panel = next(p for p in DASHBOARD["panels"] if "predicted against measured" in p["title"])
    exprs = {t["legendFormat"]: t["expr"] for t in panel["targets"]}
    assert "edgespec_predicted_goodput_tokens_per_second" in exprs["{{device_class}} predicted"]
    assert "edgespec_edge_tokens_served_total" in exprs["{{device_class}} measured"]
    assert all("by (device_class)" in e for e in exprs.values())
    energy = next(p for p in DASHBOARD["panels"] if "joules" in p["title"].lower())
    assert any("edgespec_predicted_joules_per_token" in t["expr"] for t in energy["targets"])


def test_panels_do_not_overlap() -> None:
    cells = set()
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
    assert len({p["id"] for p in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])


def test_request_latency_comes_from_the_edge_servers_histograms() -> None:
    panel = next(p for p in DASHBOARD["panels"] if p["title"].startswith("Request latency"))
    exprs = " ".join(t["expr"] for t in panel["targets"])
    assert "edgespec_edge_time_to_first_token_seconds_bucket" in exprs
    assert "edgespec_edge_queue_wait_seconds_bucket" in exprs
