"""The operator's /metrics, scraped from the real operator process: predictions per class follow status.

The operator runs as a process against the local control plane (KWOK nodes); the illustrative paper
profiles give every class a selection. The predicted gauges it serves must equal the predictions in
the status it wrote, per class, and go away with the deployment.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import status_of, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME = "metrics-demo"
PREDICTED = {
    "edgespec_predicted_goodput_tokens_per_second": "predictedGoodputTokensPerS",
    "edgespec_predicted_tokens_per_usd": "predictedTokensPerUsd",
    "edgespec_predicted_joules_per_token": "predictedJoulesPerToken",
}


def scrape(url: str) -> dict[tuple[str, str], float]:
    """(metric, device class) -> value of this deployment's predicted gauges."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return {
        (sample.name, sample.labels["device_class"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in PREDICTED and sample.labels.get("deployment") == NAME
    }


@pytest.fixture
def deployment(operator_process: Any) -> Iterator[Any]:
    cluster = operator_process.cluster
    profiles = str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml")
    cluster.kubectl("apply", "-f", profiles)
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
        yield operator_process
    finally:
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found")
        cluster.kubectl("delete", "-f", profiles, "--ignore-not-found")  # cluster-scoped: leave none


def test_predicted_gauges_equal_the_status_and_leave_with_the_deployment(deployment: Any) -> None:
    cluster, url = deployment.cluster, deployment.url
    status = wait_for(
        "a selection for every class",
        lambda: (s := status_of(cluster, NAME)).get("kSummary", "").count("=") == 3 and s,
    )
    selections = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    expected = {
        (metric, name): selection[field]
        for name, selection in selections.items()
        for metric, field in PREDICTED.items()
    }
    scraped = wait_for("the predicted gauges of every class", lambda: (m := scrape(url)) == expected and m)
    assert len(scraped) == 3 * len(selections)
    cluster.kubectl("delete", "specdeploy", NAME, "-n", "default")
    wait_for("the gauges to go with the deployment", lambda: scrape(url) == {})
