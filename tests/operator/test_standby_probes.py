"""A standby replica answers the probes and a Prometheus scrape without holding any state.

Two operator replicas run by default (leader election); Prometheus scrapes both. The standby's
``/metrics`` must be a valid exposition, or every scrape of it fails (``up == 0``) and alerts fire
for a healthy replica: it used to answer the bare text ``standby``, found by the end-to-end tier's
scrape of the real pods.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from edgespec.handlers.leader import StandbyHealth
from prometheus_client.parser import text_string_to_metric_families


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def standby() -> Iterator[int]:
    port = _free_port()
    health = StandbyHealth(None, "127.0.0.1", port)
    try:
        yield port
    finally:
        health.stop()


def test_standby_metrics_are_a_valid_exposition_of_every_family(standby: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{standby}/metrics", timeout=10) as reply:
        content_type = reply.headers["Content-Type"]
        text = reply.read().decode()
    assert content_type.startswith("text/plain; version="), content_type
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The gauges the dashboard shows, declared with no sample: the leader holds the state.
    for name in ("edgespec_predicted_goodput_tokens_per_second", "edgespec_workqueue_depth"):
        assert name in families, sorted(families)
    assert families["edgespec_predicted_goodput_tokens_per_second"].samples == []


def test_standby_answers_probes_and_refuses_telemetry(standby: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{standby}/healthz", timeout=10) as reply:
        assert reply.status == 200
    request = urllib.request.Request(f"http://127.0.0.1:{standby}/v1/telemetry", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 503
