"""The local dev cluster behaves like the real Kubernetes the operator will meet.

These tests pin what the rest of the suite relies on: the emulated edge and GPU fleet exists with
the right labels, capacity and taints and is Ready; the API server is the pinned version; the
scheduler honours nodeSelectors and taints; the controller manager garbage-collects dependants,
runs Jobs and mints ServiceAccount tokens; nodes can be added at runtime; scale fleets split
into sites; the opt-in audit log records requests (the scale benchmark counts them there).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from edgespec_dev import nodes as fleet
from edgespec_dev import tools
from edgespec_dev.cluster import Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"devcluster-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def eventually(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.3)


def pod_manifest(name: str, namespace: str, **spec: Any) -> str:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}], **spec},
    }
    return yaml.safe_dump(pod)


def test_default_fleet_is_ready_with_realistic_labels_capacity_and_taints(
    cluster: Cluster,
) -> None:
    listing = get_json(cluster, "nodes")
    by_name = {item["metadata"]["name"]: item for item in listing["items"]}
    for name, device_class in fleet.DEFAULT_FLEET:
        node = by_name[name]
        device = fleet.DEVICE_CLASSES[device_class]
        labels = node["metadata"]["labels"]
        assert labels[fleet.DEVICE_CLASS_LABEL] == device_class
        assert labels["kubernetes.io/arch"] == device.arch
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["kubernetes.io/hostname"] == name
        assert labels["node.kubernetes.io/instance-type"] == device.instance_type
        capacity = node["status"]["capacity"]
        assert capacity["cpu"] == device.cpu
        assert capacity["memory"] == device.memory
        assert capacity.get(fleet.GPU_RESOURCE, "0") == str(device.gpus)
        conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert conditions["Ready"] == "True", name
        taints = node["spec"].get("taints", [])
        gpu_tainted = any(t["key"] == fleet.GPU_RESOURCE for t in taints)
        assert gpu_tainted == (device.role == "verifier"), name
    counts = [labels_of["metadata"]["labels"][fleet.DEVICE_CLASS_LABEL] for labels_of in by_name.values()]
    assert counts.count("rpi4b") == 2 and counts.count("rpi5") == 2
    assert counts.count("jetson-orin") == 1 and counts.count("cloud-a100") == 2


def test_api_server_reports_the_pinned_version(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    pinned = tools.tool_version("kube-apiserver")
    assert version["gitVersion"] == pinned
    assert (version["major"], version["minor"]) == tuple(pinned.lstrip("v").split(".")[:2])
    client = json.loads(cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == pinned


def test_pod_with_rpi5_selector_runs_on_an_rpi5(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=pod_manifest("on-rpi5", namespace, nodeSelector={fleet.DEVICE_CLASS_LABEL: "rpi5"}),
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/on-rpi5", "--timeout=60s")
    pod = get_json(cluster, "-n", namespace, "pod", "on-rpi5")
    assert pod["status"]["phase"] == "Running"
    node = get_json(cluster, "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"][fleet.DEVICE_CLASS_LABEL] == "rpi5"


def test_pods_without_gpu_toleration_never_land_on_gpu_nodes(cluster: Cluster, namespace: str) -> None:
    tainted = {
        item["metadata"]["name"]
        for item in get_json(cluster, "nodes")["items"]
        if any(t["key"] == fleet.GPU_RESOURCE for t in item["spec"].get("taints", []))
    }
    assert tainted, "the default fleet must have tainted GPU nodes"
    # Spread over every node: only the taint can keep these pods off the GPU nodes.
    cluster.kubectl(
        "create", "deployment", "spread", "-n", namespace, "--replicas=14",
        "--image=registry.k8s.io/pause:3.10",
    )  # fmt: skip
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/spread", "--timeout=90s")
    placed = {p["spec"]["nodeName"] for p in get_json(cluster, "-n", namespace, "pods")["items"]}
    assert placed and not placed & tainted
    # Asking for a verifier node without the toleration stays Pending, Unschedulable.
    verifier_selector = {fleet.ROLE_LABEL: "verifier"}
    cluster.kubectl(
        "apply", "-f", "-", input=pod_manifest("no-toleration", namespace, nodeSelector=verifier_selector)
    )

    def unschedulable() -> bool:
        pod = get_json(cluster, "-n", namespace, "pod", "no-toleration")
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in pod["status"].get("conditions", [])
        )

    eventually(unschedulable, "the scheduler to reject the pod without toleration")
    assert not get_json(cluster, "-n", namespace, "pod", "no-toleration")["spec"].get("nodeName")
    # With the toleration, the same pod lands on a GPU node.
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=pod_manifest(
            "with-toleration",
            namespace,
            nodeSelector=verifier_selector,
            tolerations=[{"key": fleet.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        ),
    )
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/with-toleration", "--timeout=60s")
    assert get_json(cluster, "-n", namespace, "pod", "with-toleration")["spec"]["nodeName"] in tainted


def test_daemonset_runs_one_pod_per_untainted_node(cluster: Cluster, namespace: str) -> None:
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "nodeSelector": {fleet.ROLE_LABEL: "edge"},
                    "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(daemonset))
    cluster.kubectl("rollout", "status", "-n", namespace, "daemonset/agent", "--timeout=60s")
    edge_nodes = {
        item["metadata"]["name"]
        for item in get_json(cluster, "nodes", "-l", f"{fleet.ROLE_LABEL}=edge")["items"]
    }
    pods = get_json(cluster, "-n", namespace, "pods", "-l", "app=agent")["items"]
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(edge_nodes)


def test_deleting_an_owner_garbage_collects_its_dependants(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner_uid = get_json(cluster, "-n", namespace, "configmap", "owner")["metadata"]["uid"]
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(child))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def child_gone() -> bool:
        result = cluster.kubectl("get", "configmap", "child", "-n", namespace, check=False)
        return result.returncode != 0 and "NotFound" in result.stderr

    eventually(child_gone, "the garbage collector to delete the dependent ConfigMap")


def test_jobs_complete_and_service_account_tokens_are_issued(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "job", "once", "-n", namespace, "--image=registry.k8s.io/pause:3.10")
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=60s")
    eventually(
        lambda: cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0,
        "the default ServiceAccount in the new namespace",
    )
    token = cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    reviewed = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    status = json.loads(reviewed.stdout)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:default"


def test_node_added_at_runtime_becomes_ready_and_takes_pods(cluster: Cluster, namespace: str) -> None:
    name = f"edge-rpi-zero-{uuid.uuid4().hex[:6]}"
    manifest = cluster.add_node(name, "rpi-zero-2w", cpu="4", memory="512Mi")
    try:
        assert manifest["metadata"]["labels"][fleet.DEVICE_CLASS_LABEL] == "rpi-zero-2w"
        node = get_json(cluster, "node", name)
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        assert node["status"]["capacity"]["memory"] == "512Mi"
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=pod_manifest("on-zero", namespace, nodeSelector={fleet.DEVICE_CLASS_LABEL: "rpi-zero-2w"}),
        )
        cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/on-zero", "--timeout=60s")
        assert get_json(cluster, "-n", namespace, "pod", "on-zero")["spec"]["nodeName"] == name
    finally:
        cluster.delete_node(name)
    assert cluster.kubectl("get", "node", name, check=False).returncode != 0


def test_scale_fleet_with_sites_gives_every_site_each_edge_class_and_keeps_the_total() -> None:
    manifests = fleet.scale_fleet(1000, sites=200, verifiers=25)
    assert len(manifests) == 1000
    assert len({m["metadata"]["name"] for m in manifests}) == 1000
    by_site: dict[str, list[str]] = {}
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        if labels[fleet.ROLE_LABEL] == "verifier":
            assert fleet.SITE_LABEL not in labels
            continue
        by_site.setdefault(labels[fleet.SITE_LABEL], []).append(labels[fleet.DEVICE_CLASS_LABEL])
    assert len(by_site) == 200
    assert all(set(classes) == {"rpi4b", "rpi5", "jetson-orin"} for classes in by_site.values())
    assert sorted({len(classes) for classes in by_site.values()}) == [4, 5]
    # Without sites, the fleet is what it always was: one 8-GPU verifier per 50 nodes.
    plain = fleet.scale_fleet(100)
    assert [m["metadata"]["name"] for m in plain][48:50] == ["scale-rpi4b-00048", "scale-cloud-a100-00049"]


def test_audit_log_records_requests_but_not_kwok_heartbeats_and_extra_args_apply(tmp_path: Any) -> None:
    audited = Cluster(
        tmp_path / "cluster",
        name="edgespec-audit-test",
        audit_log=True,
        extra_args={"kube-controller-manager": ["--concurrent-daemonset-syncs=4"]},
    )
    audited.start([fleet.node_manifest("audit-rpi5-0", "rpi5")], die_with_parent=True)
    try:
        audited.kubectl("get", "namespaces")
        time.sleep(12)  # a Lease renewal or two by KWOK, which the policy drops
        audited.kubectl("get", "nodes")
    finally:
        audited.stop()
    events = audited.audit_events()
    lists = {
        (e["objectRef"]["resource"], e["stage"])
        for e in events
        if e["verb"] == "list" and e["userAgent"].startswith("kubectl")
    }
    assert {("namespaces", "ResponseComplete"), ("nodes", "ResponseComplete")} <= lists
    assert not [e for e in events if e["stage"] == "RequestReceived"]
    kwok = [e for e in events if e["user"]["username"] == "kwok-controller"]
    assert kwok  # KWOK's other requests (its watches, pods, the node's creation) are there
    assert not [e for e in kwok if (e.get("objectRef") or {}).get("resource") == "leases"]
    # extra_args reach the component's command line (the log's first line shows it).
    assert "--concurrent-daemonset-syncs=4" in audited.log_path("kube-controller-manager").read_text()
