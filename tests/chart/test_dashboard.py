"""The Grafana dashboard queries only metrics the code defines, and sets predictions against measurements.

Every ``edgespec_*`` name in a panel or variable query must be declared in the code that serves it:
the operator's metrics module, the edge (draft) server or the verifier. A dashboard panel on a
metric nothing exports stays empty without an error, so this is checked here, by name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((REPO / "charts" / "edgespec" / "files" / "dashboards" / "edgespec.json").read_text())
SOURCES = {
    "operator": [REPO / "operator" / "edgespec" / "handlers" / "metrics.py"],
    "edge server": sorted((REPO / "edge_image" / "edgespec_edge").rglob("*.py")),
    "verifier": sorted((REPO / "verifier_image" / "edgespec_verifier").rglob("*.py")),
}
SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return exprs


def defined_metrics() -> dict[str, str]:
    """Metric name -> the component whose code declares it (a string literal naming it)."""
    found = {}
    for component, paths in SOURCES.items():
        for path in paths:
            for name in re.findall(r"[\"'](edgespec_[a-z0-9_]+)[\"']", path.read_text()):
                found[name] = component
    return found


def test_every_metric_the_dashboard_queries_is_defined() -> None:
    defined = defined_metrics()
    used = {m for e in queries(DASHBOARD) for m in re.findall(r"\b(edgespec_[a-z0-9_]+)", e)}
    assert len(used) >= 10
    missing = sorted(m for m in used if SUFFIXES.sub("", m) not in defined and m not in defined)
    assert missing == [], f"the dashboard queries metrics no code defines: {missing}"
    components = {defined.get(SUFFIXES.sub("", m), defined.get(m)) for m in used}
    assert components == {"operator", "edge server", "verifier"}


def test_the_check_catches_an_undefined_metric() -> None:
    broken = {"panels": [{"targets": [{"expr": "rate(edgespec_edge_imaginary_total[5m])"}]}]}
    used = {m for e in queries(broken) for m in re.findall(r"\b(edgespec_[a-z0-9_]+)", e)}
    undefined = [m for m in used if SUFFIXES.sub("", m) not in defined_metrics()]
    assert undefined == ["edgespec_edge_imaginary_total"]


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
