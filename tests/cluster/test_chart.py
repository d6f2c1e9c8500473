"""The Helm chart, rendered by a real ``helm`` and judged by a real API server.

The rendered chart must be accepted by ``kubectl apply --dry-run=server --validate=strict`` in each
RBAC mode. Then, with the chart's RBAC installed for real, the operator's ServiceAccount (by
impersonation) must be allowed to apply everything the builders make (nothing cluster-scoped any
more), and the workloads must pass the restricted Pod Security Standard without a warning.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    DeploymentInput,
    DraftServerInput,
    Owner,
    ProfilingJobInput,
    Telemetry,
    VerifierInput,
    WorkloadImages,
    build_draft_servers,
    build_draft_service,
    build_profiling_job,
    build_verifier,
    build_verifier_disruption_budget,
)
from edgespec_dev.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgespec"
RELEASE_NAMESPACE = "edgespec-chart-test"
WORKLOAD_NAMESPACE = "edgespec-chart-workloads"


def helm_template(kube_version: str, *values: str) -> str:
    from edgespec_dev import tools  # hack/ is on pytest's pythonpath

    command = [
        str(tools.ensure("helm")), "template", "es", str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--kube-version", kube_version,
    ]  # fmt: skip
    for value in values:
        command += ["--set", value]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def server_version(cluster: Cluster) -> str:
    info = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    return re.sub(r"[^0-9.].*$", "", info["serverVersion"]["gitVersion"].lstrip("v"))


def ensure_namespace(cluster: Cluster, name: str, labels: dict[str, str] | None = None) -> None:
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def dry_run(cluster: Cluster, manifests: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts", "--field-manager=edgespec-test",
        "--validate=strict",
        *extra, "-f", "-", input=manifests, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def namespaces(cluster: Cluster) -> Iterator[None]:
    ensure_namespace(cluster, RELEASE_NAMESPACE)
    # warn (not enforce): workload templates are only ever warned about, which is what we assert on
    ensure_namespace(
        cluster,
        WORKLOAD_NAMESPACE,
        {"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/enforce": "restricted"},
    )
    yield
    for name in (RELEASE_NAMESPACE, WORKLOAD_NAMESPACE):
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.cluster
@pytest.mark.parametrize(
    "values",
    [
        [],
        ["crds.keep=false", "grafana.dashboard.enabled=true"],
        ["rbac.clusterWide=false", f"rbac.watchNamespaces={{{WORKLOAD_NAMESPACE}}}", "metrics.enabled=false"],
    ],
    ids=["defaults", "no-keep-with-dashboard", "namespaced"],
)
def test_server_accepts_the_rendered_chart(cluster: Cluster, namespaces: None, values: list[str]) -> None:
    rendered = helm_template(server_version(cluster), *values)
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "ServiceAccount"} <= kinds
    result = dry_run(cluster, rendered)
    assert result.returncode == 0, f"API server rejected the chart:\n{result.stderr}"


def _builder_manifests(namespace: str) -> list[dict[str, Any]]:
    spec = SpeculativeDeploymentSpec.model_validate(
        {
            "target": {
                "name": "gemma-3-270m",
                "priceUsdPerMillionTokens": 0.2,
                "vllmModel": "google/gemma-3-270m",
            },
            "drafts": [
                {
                    "name": "gemma-17b",
                    "quantizations": [{"quantization": "Q4_K_M", "source": {"uri": "pypi:x"}}],
                }
            ],
            "deviceClasses": [{"name": "rpi5", "nodeSelector": {"edgespec.dev/device-class": "rpi5"}}],
            "profiling": {"promptsConfigMap": "prompts"},
            "verifier": {"replicas": 2},  # two replicas: the verifier gets a PodDisruptionBudget
        }
    )
    owner = Owner(name="chart-test", namespace=namespace, uid=str(uuid.uuid4()))
    images = WorkloadImages(edge="edge:test", verifier="verifier:test", vllm="vllm:test")
    common = {"owner": owner, "spec": spec, "images": images}
    choice = {"device_class_name": "rpi5", "draft_model": "gemma-17b", "quantization": "Q4_K_M"}
    return [
        *build_verifier(VerifierInput(**common, token="t0ken")),
        *build_verifier_disruption_budget(DeploymentInput(**common)),
        *build_draft_servers(
            DraftServerInput(**common, **choice, k=4, telemetry=Telemetry(url="http://op:8080/v1/telemetry"))
        ),
        build_draft_service(DeploymentInput(**common)),
        build_profiling_job(ProfilingJobInput(**common, **choice, node_name="rpi5-0")),
    ]


@pytest.mark.cluster
def test_operator_rbac_covers_what_the_builders_make(cluster: Cluster, namespaces: None) -> None:
    rendered = helm_template(server_version(cluster), "crds.install=false", "metrics.enabled=false")
    rbac = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "Deployment"]
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=edgespec-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(rbac),
    )
    try:
        account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]
        operator = f"system:serviceaccount:{account['namespace']}:{account['name']}"
        built = _builder_manifests(WORKLOAD_NAMESPACE)
        assert not [m for m in built if m["kind"].startswith("Cluster")], "no cluster-scoped children"
        result = dry_run(cluster, yaml.safe_dump_all(built), f"--as={operator}")
        assert result.returncode == 0, f"the operator may not apply its own objects:\n{result.stderr}"
        assert "would violate PodSecurity" not in result.stderr, result.stderr
    finally:
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(rbac), check=False
        )


def rendered(*values: str) -> list[dict[str, Any]]:
    """The chart's documents as `helm template` renders them with these ``--set`` values."""
    return [d for d in yaml.safe_load_all(helm_template("1.34.0", *values)) if d]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    return dict(container)


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in operator_container(docs)["env"]}


def test_draft_servers_report_to_the_operators_metrics_service() -> None:
    docs = rendered()
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    env = operator_env(docs)
    port = service["spec"]["ports"][0]["port"]
    assert env["EDGESPEC_TELEMETRY_URL"] == (
        f"http://{service['metadata']['name']}.{RELEASE_NAMESPACE}.svc:{port}/v1/telemetry"
    )
    assert env["EDGESPEC_METRICS_PORT"] == str(port)
    assert env["EDGESPEC_TELEMETRY_INTERVAL_SECONDS"] == "30"
    assert (
        operator_env(rendered("metrics.telemetryIntervalSeconds=5"))["EDGESPEC_TELEMETRY_INTERVAL_SECONDS"]
        == "5"
    )
    names = set(operator_env(rendered("metrics.enabled=false")))
    assert "EDGESPEC_TELEMETRY_URL" not in names  # no server to report to: K stays the profiles' choice


@pytest.mark.parametrize(
    ("values", "host_path"), [((), "/var/lib/edgespec/models"), (("modelCache.hostPath=",), "")]
)
def test_the_operator_container_is_accepted_with_the_chart_env(
    values: tuple[str, ...], host_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's operator container: settings valid with its env; the model cache reaches the builders."""
    from edgespec.builders import ModelCache
    from edgespec.handlers.reconcile import Reconciler
    from edgespec.settings import OperatorSettings

    container = operator_container(rendered(*values))
    assert container["command"] == ["python", "-m", "edgespec.handlers"] and not container.get("args")
    for name in [n for n in os.environ if n.startswith("EDGESPEC_")]:
        monkeypatch.delenv(name)
    for item in container["env"]:
        monkeypatch.setenv(item["name"], item.get("value", RELEASE_NAMESPACE))  # the one fieldRef: namespace
    settings = OperatorSettings()
    assert settings.model_cache_host_path == host_path
    reconciler = Reconciler(client=None, cache=None, settings=settings, requeue=lambda *_: None)  # type: ignore[arg-type]
    assert reconciler.model_cache == (ModelCache(host_path=host_path) if host_path else None)
