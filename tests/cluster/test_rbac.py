"""Least privilege, asked of the real API server's authorizer: the chart's RBAC in both modes.

The rendered chart's RBAC is installed for real; ``kubectl auth can-i --as=...`` then asks, as the
operator's ServiceAccount and as a profiler pod's identity, what each may do, and the two attacks of
the report are tried for real (``--dry-run=server`` where the request would succeed): a profiler
patching another tenant's EdgeProfile, and the operator deleting ``clusterrolebinding cluster-admin``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from edgespec_dev.cluster import Cluster
from test_chart import ensure_namespace, helm_template, server_version

pytestmark = pytest.mark.cluster
RELEASE = "edgespec-rbac-test"
TENANT, OTHER = "edgespec-tenant-a", "edgespec-tenant-b"
# A profiling pod runs as its namespace's default ServiceAccount with no token mounted; the name an
# older version gave the profiler's own ServiceAccount is checked too (re-creating it regains nothing).
PROFILERS = [f"system:serviceaccount:{TENANT}:default", f"system:serviceaccount:{TENANT}:chat-profiler"]
MODES = {
    "cluster": [],
    "watchNamespaces": ["rbac.clusterWide=false", f"rbac.watchNamespaces={{{TENANT}}}"],
}


def can_i(
    cluster: Cluster, user: str, verb: str, resource: str, namespace: str | None = None, subresource: str = ""
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else []
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {result.stdout} {result.stderr}"
    return answer == "yes"


@pytest.fixture(scope="module", params=sorted(MODES))
def installed(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The chart's RBAC objects (and CRDs) in one mode; yields (mode, operator user)."""
    for namespace in (RELEASE, TENANT, OTHER):
        ensure_namespace(cluster, namespace)
    rendered = helm_template(server_version(cluster), "metrics.enabled=false", *MODES[request.param])
    rendered = rendered.replace("namespace: edgespec-chart-test", f"namespace: {RELEASE}")
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "Deployment"]
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
    account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]
    try:
        yield request.param, f"system:serviceaccount:{account['namespace']}:{account['name']}"
    finally:
        rbac = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
        cluster.kubectl(
            "delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(rbac), check=False
        )


def test_the_operator_holds_no_rights_over_rbac(cluster: Cluster, installed: tuple[str, str]) -> None:
    _, operator = installed
    for verb, resource in [
        ("delete", "clusterrolebinding/cluster-admin"),
        ("create", "clusterrolebindings"),
        ("patch", "clusterrolebindings"),
        ("create", "clusterroles"),
        ("bind", "clusterroles"),
        ("escalate", "clusterroles"),
        ("impersonate", "serviceaccounts"),
        ("delete", "edgeprofiles"),
    ]:
        assert not can_i(cluster, operator, verb, resource), f"the operator may {verb} {resource}"
    for verb, resource in [("create", "rolebindings"), ("create", "roles"), ("create", "serviceaccounts")]:
        assert not can_i(cluster, operator, verb, resource, TENANT), f"the operator may {verb} {resource}"
    # Attack 2, tried for real: the server refuses it (a dry run would have deleted nothing anyway).
    attack = cluster.kubectl(
        "delete", "clusterrolebinding", "cluster-admin", "--dry-run=server", f"--as={operator}", check=False
    )
    assert attack.returncode != 0 and "forbidden" in attack.stderr.lower(), attack.stderr


def test_the_operator_may_do_its_job_where_it_is_allowed_to(
    cluster: Cluster, installed: tuple[str, str]
) -> None:
    mode, operator = installed
    for verb, resource in [
        ("patch", "edgeprofiles"),
        ("create", "edgeprofiles"),
        ("watch", "nodes"),
        ("create", "tokenreviews.authentication.k8s.io"),  # the draft pods' telemetry tokens
    ]:
        assert can_i(cluster, operator, verb, resource), f"the operator may not {verb} {resource}"
    assert can_i(cluster, operator, "get", "pods", TENANT)  # the pod a telemetry token names
    children = ["deployments.apps", "daemonsets.apps", "jobs.batch", "configmaps", "services", "secrets"]
    for resource in children:
        for verb in ("create", "patch", "delete", "watch"):
            assert can_i(cluster, operator, verb, resource, TENANT), f"may not {verb} {resource} in {TENANT}"
    assert can_i(
        cluster, operator, "patch", "speculativedeployments.edgespec.dev", TENANT, subresource="status"
    )
    assert not can_i(cluster, operator, "patch", "speculativedeployments.edgespec.dev", TENANT)
    assert not can_i(cluster, operator, "create", "pods", TENANT)
    asks = (("get", "secrets"), ("create", "deployments.apps"), ("patch", "configmaps"))
    elsewhere = [can_i(cluster, operator, verb, r, ns) for ns in ("kube-system", OTHER) for verb, r in asks]
    if mode == "watchNamespaces":
        assert not any(elsewhere), "outside watchNamespaces the operator must not touch anything"
    else:
        assert all(elsewhere), "cluster mode reconciles every namespace (say so in docs/reliability.md)"


def test_a_profiler_may_not_write_any_profile(cluster: Cluster, installed: tuple[str, str]) -> None:
    profile = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "EdgeProfile",
        "metadata": {"name": "tenant-b-rpi5-profile"},
        "spec": {
            "deviceClass": "rpi5",
            "draftModel": "llama-3.2-1b",
            "quantization": "Q4_K_M",
            "targetModel": "llama-3.1-70b",
            "draftTokensPerS": 9.0,
            "powerWatts": 6.0,
            "acceptance": [{"k": 2, "alpha": 0.6}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(profile))  # another tenant's profile
    try:
        for profiler in PROFILERS:
            for verb in ("create", "patch", "update", "delete", "list"):
                assert not can_i(cluster, profiler, verb, "edgeprofiles"), f"{profiler} may {verb} profiles"
            assert not can_i(cluster, profiler, "get", "secrets", TENANT)
            # Attack 1, tried for real: cross-tenant EdgeProfile patch (K 2 -> 10 in the report).
            attack = cluster.kubectl(
                "patch", "edgeprofile", "tenant-b-rpi5-profile", "--type=merge", f"--as={profiler}",
                "-p", '{"spec": {"draftTokensPerS": 900}}', check=False,
            )  # fmt: skip
            assert attack.returncode != 0 and "forbidden" in attack.stderr.lower(), attack.stderr
        stored = json.loads(
            cluster.kubectl("get", "edgeprofile", "tenant-b-rpi5-profile", "-o", "json").stdout
        )
        assert stored["spec"]["draftTokensPerS"] == 9.0
    finally:
        cluster.kubectl("delete", "edgeprofile", "tenant-b-rpi5-profile", "--ignore-not-found", check=False)
