"""The real kubelet node of the local cluster runs pods, and no packet of the cluster leaves the machine.

Pods here are busybox (Debian's busybox-static packed as a local image, ``imagePullPolicy:
Never``) on the real node. They reach each other, a Service, the API server and cluster DNS; a
request to a KWOK pod's fake address (through a real Service, so kube-proxy's DNAT is exercised)
or to an address outside the machine (203.0.113.7, TEST-NET-3) is rejected, and the guard
chain's packet counters show it was the guard. The guard's rules match only the cluster's
ranges; the host still reaches a package index; stop leaves nothing behind, also after a crash.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec_dev import netguard
from edgespec_dev import nodes as fleet
from edgespec_dev.cluster import Cluster
from edgespec_dev.realnode import (
    DEFAULT_DEVICE_CLASS,
    DEFAULT_ROLE,
    RealNode,
    RealNodeError,
    RealNodeOptions,
    busybox_image,
)
from edgespec_dev.waiting import wait_for

# Also marked `cluster`: it starts a cluster, so `-m "not cluster"` (the quick tiers) leaves it out.
pytestmark = [pytest.mark.realnode, pytest.mark.cluster]

OUTSIDE = "203.0.113.7"  # TEST-NET-3 (RFC 5737): documentation only, routed nowhere


def node_of(cluster: Cluster) -> RealNode:
    assert cluster.node is not None
    return cluster.node


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    return wait_for(what, check, timeout_s, every_s=0.5)


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def busybox_pod(
    name: str, namespace: str, command: str, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {
            "nodeSelector": {fleet.DEVICE_CLASS_LABEL: DEFAULT_DEVICE_CLASS},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": busybox_image()[0],
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", command],
                }
            ],
        },
    }


def wait_running(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pod = get_json(cluster, "pod", name, "-n", namespace)
        conditions = pod.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return dict(pod)
        return None

    return dict(eventually(ready, f"pod {namespace}/{name} Ready"))


def exec_in(
    cluster: Cluster, namespace: str, pod: str, command: str, timeout_s: float = 30
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "exec", "-n", namespace, pod, "--", "/bin/sh", "-c", command, check=False, timeout_s=timeout_s
    )


def reject_count(cluster: Cluster, chain: str) -> int:
    rows = netguard.chain_counters(node_of(cluster).network)[chain]
    return sum(packets for packets, rule in rows if rule.startswith("REJECT"))


@pytest.fixture(scope="module")
def namespace(real_cluster: Cluster) -> Iterator[str]:
    name = f"realnode-{uuid.uuid4().hex[:6]}"
    real_cluster.kubectl("create", "namespace", name)
    reference, archive = busybox_image()
    assert reference in node_of(real_cluster).load_images([archive])
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def client(real_cluster: Cluster, namespace: str) -> str:
    apply(real_cluster, busybox_pod("client", namespace, "echo client-started; exec sleep 3600"))
    wait_running(real_cluster, namespace, "client")
    return "client"


@pytest.fixture(scope="module")
def server(real_cluster: Cluster, namespace: str) -> dict[str, str]:
    """An HTTP server pod on the real node behind a ClusterIP Service ``web``."""
    script = "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"
    apply(
        real_cluster,
        busybox_pod("web", namespace, script),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    pod = wait_running(real_cluster, namespace, "web")
    service = get_json(real_cluster, "service", "web", "-n", namespace)
    return {"pod_ip": pod["status"]["podIP"], "cluster_ip": service["spec"]["clusterIP"]}


def test_real_node_is_ready_with_its_labels_and_address(real_cluster: Cluster) -> None:
    node = node_of(real_cluster)
    item = get_json(real_cluster, "node", node.name)
    labels = item["metadata"]["labels"]
    assert labels[fleet.DEVICE_CLASS_LABEL] == DEFAULT_DEVICE_CLASS
    assert labels[fleet.ROLE_LABEL] == DEFAULT_ROLE
    assert {"type": "InternalIP", "address": node.ip} in item["status"]["addresses"]
    assert item["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.34")
    assert item["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    # The "kubernetes" Service points pods at the API server on the node's bridge address.
    slices = get_json(
        real_cluster, "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes"
    )
    assert [a for s in slices["items"] for e in s["endpoints"] for a in e["addresses"]] == [node.ip]


def test_pod_runs_and_kubectl_logs_and_exec_work(real_cluster: Cluster, namespace: str, client: str) -> None:
    logs = real_cluster.kubectl("logs", "-n", namespace, client).stdout
    assert "client-started" in logs
    result = exec_in(real_cluster, namespace, client, "echo exec-works-$((6*7))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "exec-works-42"


def test_pod_reaches_pod_service_api_and_dns(
    real_cluster: Cluster, namespace: str, client: str, server: dict[str, str]
) -> None:
    by_pod = exec_in(
        real_cluster, namespace, client, f"timeout 10 wget -q -O- http://{server['pod_ip']}:8080/"
    )
    assert by_pod.stdout.strip() == "hello-from-web", by_pod.stderr
    by_service = exec_in(
        real_cluster, namespace, client, f"timeout 10 wget -q -O- http://{server['cluster_ip']}/"
    )
    assert by_service.stdout.strip() == "hello-from-web", by_service.stderr
    name = f"web.{namespace}.svc.cluster.local"
    lookup = exec_in(real_cluster, namespace, client, f"nslookup {name}")
    assert lookup.returncode == 0 and server["cluster_ip"] in lookup.stdout, lookup.stdout + lookup.stderr
    by_name = exec_in(real_cluster, namespace, client, f"timeout 10 wget -q -O- http://{name}/")
    assert by_name.stdout.strip() == "hello-from-web", by_name.stderr
    # The API server through the "kubernetes" Service (any HTTP answer proves the path; 401/403
    # without credentials).
    api = exec_in(
        real_cluster, namespace, client, "timeout 10 wget -O- https://kubernetes.default.svc/ 2>&1 || true"
    )
    assert "Connection refused" not in api.stdout and "timed out" not in api.stdout, api.stdout
    # Names outside the cluster are not resolved (CoreDNS does not forward anywhere).
    outside = exec_in(real_cluster, namespace, client, "nslookup pypi.org")
    assert outside.returncode != 0


def test_kwok_pod_ip_behind_a_service_and_outside_addresses_are_rejected(
    real_cluster: Cluster, namespace: str, client: str
) -> None:
    backend = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fake-backend", "namespace": namespace, "labels": {"app": "fake-backend"}},
        "spec": {
            "nodeSelector": {fleet.DEVICE_CLASS_LABEL: "rpi5"},
            "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fake-backend", "namespace": namespace},
        "spec": {"selector": {"app": "fake-backend"}, "ports": [{"port": 80, "targetPort": 80}]},
    }
    apply(real_cluster, backend, service)
    fake_ip = wait_running(real_cluster, namespace, "fake-backend")["status"]["podIP"]
    assert ipaddress.ip_address(fake_ip) in ipaddress.ip_network(netguard.FAKE_POD_RANGE)
    cluster_ip = get_json(real_cluster, "service", "fake-backend", "-n", namespace)["spec"]["clusterIP"]
    # kube-proxy has programmed the DNAT from the ClusterIP to the fake pod address.
    eventually(
        lambda: (
            fake_ip
            in subprocess.run(
                ["nft", "list", "table", "ip", "kube-proxy"], capture_output=True, text=True
            ).stdout
        ),
        "kube-proxy's DNAT rule to the KWOK pod IP",
    )
    pods_chain = f"filter/{node_of(real_cluster).network.pods_chain}"
    for target in (f"http://{cluster_ip}/", f"http://{fake_ip}/", f"http://{OUTSIDE}/"):
        before = reject_count(real_cluster, pods_chain)
        result = exec_in(real_cluster, namespace, client, f"timeout 10 wget -q -O- {target}")
        assert result.returncode != 0, f"{target} answered: {result.stdout}"
        # Rejected at once by an ICMP error (admin-prohibited reads as EHOSTUNREACH), not a
        # silent drop or a timeout into the void.
        assert "No route to host" in result.stderr, result.stderr
        assert reject_count(real_cluster, pods_chain) > before, f"the guard did not reject {target}"
    # The host's own packets to the fake range are rejected too.
    host_chain = f"filter/{node_of(real_cluster).network.host_chain}"
    before = reject_count(real_cluster, host_chain)
    with socket.socket() as sock, pytest.raises(OSError) as refused:
        sock.settimeout(5)
        sock.connect((fake_ip, 80))
    assert refused.value.errno == errno.EHOSTUNREACH, refused.value
    assert reject_count(real_cluster, host_chain) > before


def test_an_image_that_is_not_local_is_never_pulled(real_cluster: Cluster, namespace: str) -> None:
    pod = busybox_pod("no-pull", namespace, "true")
    pod["spec"]["containers"][0] |= {
        "image": "docker.io/library/edgespec-absent:1",
        "imagePullPolicy": "Always",
    }
    apply(real_cluster, pod)

    def pull_error() -> str:
        statuses = get_json(real_cluster, "pod", "no-pull", "-n", namespace)["status"].get(
            "containerStatuses", []
        )
        waiting = statuses[0].get("state", {}).get("waiting", {}) if statuses else {}
        return (
            str(waiting.get("message", ""))
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff")
            else ""
        )

    message = eventually(pull_error, "the pull to fail")
    assert "127.0.0.1:9" in message, message  # containerd's dead proxy: no request left the host


def test_guard_rules_match_only_the_cluster_ranges(real_cluster: Cluster) -> None:
    network = node_of(real_cluster).network
    installed = netguard.chain_rules(network)
    assert set(installed) == set(netguard.guard_rules(network))
    routes = json.loads(
        subprocess.run(
            ["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
        ).stdout
    )
    machine = [
        ipaddress.ip_network(r["dst"], strict=False)
        for r in routes
        if r.get("dst") not in ("default", None) and r.get("dev") != network.bridge
    ]
    cluster_ranges = [ipaddress.ip_network(r) for r in (*netguard.FAKE_RANGES, netguard.SERVICE_CIDR)]
    cluster_ranges.append(network.subnet)  # only when not through the bridge and not local
    for rule in installed[f"filter/{network.host_chain}"]:
        words = rule.split()
        destination = ipaddress.ip_network(words[words.index("-d") + 1])
        assert destination in cluster_ranges, rule
        assert not any(destination.overlaps(m) for m in machine), f"{rule} overlaps a route of this machine"
    for rule in installed[f"filter/{network.pods_chain}"]:
        words = rule.split()
        if "RETURN" in words:
            assert ipaddress.ip_network(words[words.index("-d") + 1]).subnet_of(network.subnet), rule
        else:
            assert words[-4:] == ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"], rule
    # Pod chains are entered only by packets coming in through the cluster's own bridge.
    for tool in ("iptables", "ip6tables"):
        for chain in ("FORWARD", "INPUT", "OUTPUT"):
            rules = subprocess.run(
                [tool, "-S", chain], capture_output=True, text=True, check=True
            ).stdout.splitlines()
            for rule in rules:
                if network.tag in rule and "-HOST" not in rule:
                    assert f"-i {network.bridge}" in rule, rule
            jumps = [r for r in rules if network.tag in r]
            if jumps:
                assert rules[1] == jumps[0], f"{tool} {chain}: the guard is not the first rule"


def test_an_overlapping_subnet_and_a_second_real_node_are_refused(
    real_cluster: Cluster, tmp_path: Path
) -> None:
    network = node_of(real_cluster).network
    taken = netguard.plan("edgespec-other", subnet=str(network.subnet))
    with pytest.raises(
        netguard.NetworkError, match=f"overlaps the route {network.subnet} on {network.bridge}"
    ):
        netguard.check_free(taken)
    other = Cluster(tmp_path / "other", name="edgespec-other", real_node=RealNodeOptions())
    with pytest.raises(RealNodeError, match=f"cluster '{real_cluster.name}' already runs a real node"):
        other.start(timeout_s=60)
    # The refused start left the running node's rules alone.
    assert "kube-proxy" in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert netguard.leftovers(other.node.network if other.node else taken) == []
    node_of(real_cluster).ctr("version")


def test_host_still_reaches_a_package_index(real_cluster: Cluster) -> None:
    assert node_of(real_cluster).network.bridge in os.listdir("/sys/class/net")  # the guard is on
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "pip", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "Available versions" in result.stdout, result.stderr


def test_stop_leaves_nothing_even_after_a_crash_and_the_cluster_restarts(real_cluster: Cluster) -> None:
    """Runs last in this module: it stops the shared cluster, checks, and starts it again."""
    node = node_of(real_cluster)
    network, socket_path = node.network, str(node.containerd_socket)
    assert node.tasks(), "expected running containerd tasks before the crash"
    # A crash: every node process killed at once, containers and shims left behind.
    for component in ("kubelet", "kube-proxy", "coredns", "containerd"):
        pid = real_cluster._read_pids()[component]["pid"]
        os.killpg(pid, signal.SIGKILL)
    server_before = real_cluster.server
    # A fresh object, as the CLI after a crash: it finds the node from the recorded state.
    Cluster(real_cluster.data_dir, real_cluster.name).stop()
    assert node.leftovers() == []
    assert network.bridge not in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            listing = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True).stdout
            assert network.tag not in listing and "KUBE-" not in listing, f"{tool} -t {table}: {listing}"
    assert (
        "kube-proxy" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    )
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(real_cluster.data_dir) not in mounts and str(node.run_dir) not in mounts
    shims = [p for p in Path("/proc").glob("[0-9]*/cmdline") if socket_path.encode() in _read(p)]
    assert shims == [], "a containerd shim survived"
    assert not Path(socket_path).exists()
    # Stop again: idempotent.
    Cluster(real_cluster.data_dir, real_cluster.name).stop()
    # Restarted, the API server keeps its port, so existing kubeconfigs still work.
    real_cluster.start(die_with_parent=True, timeout_s=180)
    assert real_cluster.server == server_before
    real_cluster.wait_for_nodes_ready([node.name], 60, component="kubelet")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
