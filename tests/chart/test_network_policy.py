"""The chart's NetworkPolicies admit exactly the pods the operator's builders create for that role.

Rendered by a real ``helm`` and matched, the way the API server's policy engine selects pods by
labels, against the pod labels of the verifier, draft server and profiler manifests the operator
builds. (Enforcement needs a network plugin that implements NetworkPolicy; none runs here, so what
is tested is that the policies select and admit the right pods, not that packets are dropped.)
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from edgespec.api.deployment import SpeculativeDeployment
from edgespec.builders import (
    DraftServerInput,
    Owner,
    ProfilingJobInput,
    VerifierInput,
    WorkloadImages,
    build_draft_daemon_set,
    build_profiling_job,
    build_verifier_deployment,
)
from test_chart_values import REPO, template

SAMPLE = SpeculativeDeployment.model_validate(
    yaml.safe_load((REPO / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
)
SPEC_OBJ = SAMPLE.spec
OWNER = Owner(name="demo", namespace="team-a", uid="0b7c7d4e-1111-2222-3333-444455556666")
IMAGES = WorkloadImages(edge="edge:t", verifier="verifier:t", vllm="vllm:t")
DRAFT = SPEC_OBJ.drafts[0]
CHOICE = {
    "device_class_name": SPEC_OBJ.device_classes[0].name,
    "draft_model": DRAFT.name,
    "quantization": DRAFT.quantizations[0].quantization,
}
NAMESPACES = [OWNER.namespace, "team-b"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector's verdict on ``labels`` (matchLabels, and In / Exists expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def admits(policy: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    """Whether some ingress peer of ``policy`` admits a pod with ``labels`` in ``namespace``."""
    for rule in policy["spec"].get("ingress", []):
        for peer in rule.get("from", []):
            ns_selector = peer.get("namespaceSelector")
            same_namespace = namespace == policy["metadata"]["namespace"]
            ns_ok = (
                selects(ns_selector, {"kubernetes.io/metadata.name": namespace})
                if ns_selector
                else same_namespace
            )
            if ns_ok and selects(peer.get("podSelector", {}), labels):
                return True
    return False


@pytest.fixture(scope="module")
def policies() -> dict[tuple[str, str], dict[str, Any]]:
    rendered = template({"networkPolicy.enabled": True, "networkPolicy.workloadNamespaces": NAMESPACES})
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "NetworkPolicy"]
    return {(d["metadata"]["namespace"], d["metadata"]["name"].rsplit("-", 1)[-1]): d for d in docs}


@pytest.fixture(scope="module")
def pods() -> dict[str, dict[str, str]]:
    common = {"owner": OWNER, "spec": SPEC_OBJ, "images": IMAGES}
    return {
        "verifier": pod_labels(build_verifier_deployment(VerifierInput(**common, token="t"))),
        "draft": pod_labels(build_draft_daemon_set(DraftServerInput(**common, **CHOICE, k=4))),
        "profiler": pod_labels(build_profiling_job(ProfilingJobInput(**common, **CHOICE, node_name="n"))),
        "stranger": {"app": "curl"},
    }


def test_one_verifier_policy_per_workload_namespace_and_one_for_the_operator(
    policies: dict[tuple[str, str], dict[str, Any]],
) -> None:
    assert set(policies) == {
        ("edgespec-system", "operator"),
        ("team-a", "verifiers"),
        ("team-b", "verifiers"),
    }


def test_only_draft_servers_and_profilers_reach_the_verifiers(
    policies: dict[tuple[str, str], dict[str, Any]], pods: dict[str, dict[str, str]]
) -> None:
    policy = policies[(OWNER.namespace, "verifiers")]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert selects(policy["spec"]["podSelector"], pods["verifier"])
    assert not selects(policy["spec"]["podSelector"], pods["draft"])
    assert admits(policy, pods["draft"], OWNER.namespace)
    assert admits(policy, pods["profiler"], OWNER.namespace)
    assert not admits(policy, pods["stranger"], OWNER.namespace)
    assert not admits(policy, pods["verifier"], OWNER.namespace)
    assert not admits(policy, pods["draft"], "elsewhere")  # another namespace's drafts


def test_only_draft_servers_reach_the_operators_telemetry_port(
    policies: dict[tuple[str, str], dict[str, Any]], pods: dict[str, dict[str, str]]
) -> None:
    policy = policies[("edgespec-system", "operator")]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == ["metrics"]
    for namespace in NAMESPACES:
        assert admits(policy, pods["draft"], namespace)
        assert not admits(policy, pods["profiler"], namespace)
        assert not admits(policy, pods["verifier"], namespace)
    assert not admits(policy, pods["draft"], "elsewhere")


def test_metrics_from_admits_the_scraper(policies: dict[tuple[str, str], dict[str, Any]]) -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    rendered = template(
        {
            "networkPolicy.enabled": True,
            "networkPolicy.workloadNamespaces": ["team-a"],
            "networkPolicy.metricsFrom": [scraper],
        }
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert len(docs) == 2
    for policy in docs:
        assert admits(policy, {"app": "prometheus"}, "monitoring")
        assert not admits(policy, {"app": "prometheus"}, "default")


def test_cluster_wide_needs_the_namespaces_named() -> None:
    rendered = template({"networkPolicy.enabled": True})
    assert rendered.returncode != 0
    assert "networkPolicy.workloadNamespaces" in rendered.stderr
    namespaced = template(
        {"networkPolicy.enabled": True, "rbac.clusterWide": False, "rbac.watchNamespaces": ["team-c"]}
    )
    assert namespaced.returncode == 0, namespaced.stderr
    docs = [d for d in yaml.safe_load_all(namespaced.stdout) if d and d["kind"] == "NetworkPolicy"]
    assert {d["metadata"]["namespace"] for d in docs} == {"edgespec-system", "team-c"}


def test_disabled_by_default() -> None:
    assert "NetworkPolicy" not in template({}).stdout
