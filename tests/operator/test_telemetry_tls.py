"""An HTTPS telemetry endpoint (the chart's metrics.tls): the operator hands its CA to the draft servers.

The operator reads its CA file once at start (``EDGESPEC_TLS_CA_FILE``, the chart's Secret's
``ca.crt``). Draft servers that report to it (adaptation on) get that CA in the deployment's CA
ConfigMap, beside the verifier's when ``spec.verifier.tls`` is set; with adaptation off they report
nothing, and nothing is published for them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import Owner, WorkloadImages
from edgespec.builders.naming import verifier_ca_name
from edgespec.handlers.reconcile import Reconciler
from edgespec.plan import desired_children, plan_status
from edgespec.settings import OperatorSettings
from edgespec.status import NodeInfo
from operator_samples import uniform_profiles

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OWNER = Owner(name="gemma", namespace="team-a", uid="u-1")
IMAGES = WorkloadImages(edge="edge:t", verifier="verifier:t", vllm="vllm:t")
OPERATOR_CA = "-----BEGIN CERTIFICATE-----\nOPERATOR\n-----END CERTIFICATE-----\n"


def spec(adaptation: bool) -> SpeculativeDeploymentSpec:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["spec"]["adaptation"] = {"enabled": adaptation}
    return SpeculativeDeploymentSpec.model_validate(doc["spec"])


def children_for(spec: SpeculativeDeploymentSpec, reconciler: Reconciler) -> list[dict[str, object]]:
    nodes = [
        NodeInfo(
            name=f"n-{c.name}", labels=dict(c.node_selector), ready=True, allocatable_memory_bytes=8 << 30
        )
        for c in spec.device_classes
    ]
    profiles = uniform_profiles(spec, T0)
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=nodes, profiles=profiles, now=T0)
    return desired_children(
        spec=spec, owner=OWNER, images=IMAGES, token="t", status=plan.status, telemetry=reconciler.telemetry
    )


@pytest.fixture
def reconciler(tmp_path: Path) -> Reconciler:
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(OPERATOR_CA)
    settings = OperatorSettings(
        telemetry_url="https://edgespec-metrics.edgespec-system.svc:8080/v1/telemetry", tls_ca_file=ca_file
    )
    return Reconciler(client=None, cache=None, settings=settings, requeue=lambda *_: None)  # type: ignore[arg-type]


def test_reporting_draft_servers_trust_the_operators_ca(reconciler: Reconciler) -> None:
    assert reconciler.telemetry is not None and reconciler.telemetry.ca == OPERATOR_CA
    children = children_for(spec(adaptation=True), reconciler)
    ca_maps = [
        c for c in children if c["kind"] == "ConfigMap" and c["metadata"]["name"] == verifier_ca_name(OWNER)
    ]  # type: ignore[index]
    assert [m["data"] for m in ca_maps] == [{"ca.crt": OPERATOR_CA}]  # type: ignore[index]
    daemon_sets = [c for c in children if c["kind"] == "DaemonSet"]
    assert daemon_sets
    for daemon_set in daemon_sets:
        (server,) = daemon_set["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
        env = {e["name"]: e.get("value") for e in server["env"]}
        assert env["EDGESPEC_EDGE_TELEMETRY_URL"].startswith("https://")
        assert env["EDGESPEC_EDGE_CA_FILE"] == "/etc/edgespec/verifier-ca/ca.crt"


def test_draft_servers_that_report_nothing_get_no_ca(reconciler: Reconciler) -> None:
    children = children_for(spec(adaptation=False), reconciler)
    assert not [c for c in children if c["metadata"]["name"] == verifier_ca_name(OWNER)]  # type: ignore[index]
    for daemon_set in (c for c in children if c["kind"] == "DaemonSet"):
        (server,) = daemon_set["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
        assert "EDGESPEC_EDGE_CA_FILE" not in {e["name"] for e in server["env"]}
