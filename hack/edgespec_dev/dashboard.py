"""The chart's Grafana dashboard as the tests read it: which metrics it queries, and which sample
names a Prometheus family of each type exposes (shared by the chart tier, which checks the metric
declarations in the code, and the end-to-end tier, which scrapes the real pods)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parents[2] / "charts" / "edgespec" / "files" / "dashboards" / "edgespec.json"
# The sample names a family of each type exposes (prometheus_client's exposition).
SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
}


def load() -> dict[str, Any]:
    return dict(json.loads(PATH.read_text()))


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels and the template variables."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append(query.get("query", "") if isinstance(query, dict) else str(query or ""))
    return exprs


def used_metrics(dashboard: dict[str, Any]) -> set[str]:
    """The ``edgespec_*`` sample names the dashboard queries."""
    return {m for e in queries(dashboard) for m in re.findall(r"\b(edgespec_[a-z0-9_]+)", e)}


def exposition_names(text: str) -> set[str]:
    """Every sample name a Prometheus text exposition declares (``# TYPE``, with the suffixes of its
    type) or carries, so a labelled family with no sample yet still counts as exposed."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names |= {base + suffix for suffix in SAMPLE_SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
