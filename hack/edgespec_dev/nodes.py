"""The emulated edge and cloud fleet: Node manifests that KWOK keeps Ready without kubelets.

Each device class (Raspberry Pi 4B and 5, Jetson AGX Orin, an 8-GPU cloud verifier) is described
once by a :class:`DeviceClass` with realistic ``kubernetes.io/arch``, instance type, capacity and
taints; :func:`node_manifest` turns a class into a Node object annotated
``kwok.x-k8s.io/node: fake`` so the cluster's KWOK controller manages it. :func:`default_fleet`
is the small fleet the tests use, :func:`scale_fleet` generates N nodes for scale benchmarks
(optionally partitioned into sites), and ``python -m edgespec_dev.nodes default|scale N [--sites S]``
prints either as YAML for ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
DEVICE_CLASS_LABEL = "edgespec.dev/device-class"
ROLE_LABEL = "edgespec.dev/role"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
FAKE_NODE_RANGE = "198.19.0.0/16"  # every KWOK node's InternalIP (see edgespec_dev.netguard)
SITE_LABEL = "edgespec.dev/site"  # scale fleets with sites: which site (tenant) an edge node is at

Manifest = dict[str, Any]


@dataclass(frozen=True)
class DeviceClass:
    """One kind of machine in the fleet; capacities use Kubernetes quantities."""

    name: str
    role: str
    arch: str
    instance_type: str
    cpu: str
    memory: str
    gpus: int = 0
    pods: str = "110"
    ephemeral_storage: str = "64Gi"
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: Sequence[Mapping[str, str]] = ()


DEVICE_CLASSES: dict[str, DeviceClass] = {
    device.name: device
    for device in (
        DeviceClass("rpi4b", "edge", "arm64", "rpi-4b-8gb", "4", "8Gi", ephemeral_storage="32Gi"),
        DeviceClass("rpi5", "edge", "arm64", "rpi-5-8gb", "4", "8Gi", ephemeral_storage="64Gi"),
        DeviceClass(
            "jetson-orin",
            "edge",
            "arm64",
            "jetson-agx-orin-64gb",
            "12",
            "64Gi",
            gpus=1,
            labels={"nvidia.com/gpu.product": "NVIDIA-Jetson-AGX-Orin"},
        ),
        DeviceClass(
            "cloud-a100",
            "verifier",
            "amd64",
            "p4d.24xlarge",
            "96",
            "1152Gi",
            gpus=8,
            pods="250",
            ephemeral_storage="8Ti",
            labels={
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
                "topology.kubernetes.io/region": "us-east-1",
                "topology.kubernetes.io/zone": "us-east-1a",
            },
            taints=(GPU_TAINT,),
        ),
    )
}

EDGE_CLASSES: tuple[DeviceClass, ...] = tuple(d for d in DEVICE_CLASSES.values() if d.role == "edge")

# (node name, device class); edge nodes carry their site in the name as a small fleet would.
DEFAULT_FLEET: tuple[tuple[str, str], ...] = (
    ("edge-rpi4b-0", "rpi4b"),
    ("edge-rpi4b-1", "rpi4b"),
    ("edge-rpi5-0", "rpi5"),
    ("edge-rpi5-1", "rpi5"),
    ("edge-jetson-orin-0", "jetson-orin"),
    ("cloud-gpu-0", "cloud-a100"),
    ("cloud-gpu-1", "cloud-a100"),
)


def node_manifest(
    name: str,
    device_class: str | DeviceClass,
    *,
    arch: str | None = None,
    cpu: str | None = None,
    memory: str | None = None,
    gpus: int | None = None,
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Mapping[str, str]] | None = None,
    internal_ip: str | None = None,
) -> Manifest:
    """A KWOK-managed Node of ``device_class``; an unknown class name gets a generic arm64 edge
    board (4 CPUs, 8Gi) unless ``arch``/``cpu``/``memory``/``gpus`` say otherwise."""
    device = (
        device_class
        if isinstance(device_class, DeviceClass)
        else DEVICE_CLASSES.get(device_class)
        or DeviceClass(device_class, "edge", "arm64", device_class, "4", "8Gi")
    )
    arch = arch or device.arch
    gpus = device.gpus if gpus is None else gpus
    capacity = {
        "cpu": cpu or device.cpu,
        "memory": memory or device.memory,
        "pods": device.pods,
        "ephemeral-storage": device.ephemeral_storage,
    }
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    node_labels = {
        "kubernetes.io/arch": arch,
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": device.instance_type,
        "type": "kwok",
        DEVICE_CLASS_LABEL: device.name,
        ROLE_LABEL: device.role,
        **device.labels,
        **(labels or {}),
    }
    addresses = [{"type": "Hostname", "address": name}]
    if internal_ip:
        addresses.insert(0, {"type": "InternalIP", "address": internal_ip})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {
                KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"taints": [dict(t) for t in (device.taints if taints is None else taints)]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": addresses,
            "nodeInfo": {
                "architecture": arch,
                "operatingSystem": "linux",
                "kubeletVersion": "kwok",
            },
        },
    }


def default_fleet() -> list[Manifest]:
    """Two Pi 4B, two Pi 5, one Jetson AGX Orin and two 8-GPU cloud verifiers."""
    return [
        node_manifest(name, device, internal_ip=_ip_for(index, DEVICE_CLASSES[device].role))
        for index, (name, device) in enumerate(DEFAULT_FLEET)
    ]


def scale_fleet(
    count: int, *, prefix: str = "scale", sites: int = 0, verifiers: int | None = None
) -> list[Manifest]:
    """``count`` nodes for scale tests.

    Without ``sites``: the edge classes in turn, with one cloud verifier per 50 nodes. With
    ``sites`` > 0 the fleet is partitioned the way a multi-site operator's is: ``verifiers`` cloud
    nodes (default one per 50 nodes, as above) and the other nodes spread round-robin over that
    many sites, each edge node labelled :data:`SITE_LABEL` (``site-000``, ...) and named after its
    site; within a site the classes go rpi4b, rpi5, jetson-orin, rpi4b, rpi5, ..., so a site of at
    least three nodes has every edge class.
    """
    if sites <= 0:
        return [
            _scale_node(prefix, index, index, DEVICE_CLASSES["cloud-a100"])
            if index % 50 == 49
            else _scale_node(prefix, index, index, EDGE_CLASSES[index % len(EDGE_CLASSES)])
            for index in range(count)
        ]
    cloud = count // 50 if verifiers is None else verifiers
    if not 0 <= cloud <= count:
        raise ValueError(f"verifiers must be between 0 and count ({count}), got {cloud}")
    manifests = [_scale_node(prefix, index, index, DEVICE_CLASSES["cloud-a100"]) for index in range(cloud)]
    for index in range(count - cloud):
        site, slot = index % sites, index // sites
        device = EDGE_CLASSES[slot % len(EDGE_CLASSES)]
        manifests.append(
            _scale_node(
                prefix,
                cloud + index,
                index,
                device,
                name=f"{prefix}-{site_name(site)}-{device.name}-{slot}",
                labels={SITE_LABEL: site_name(site)},
            )
        )
    return manifests


def site_name(site: int) -> str:
    """The value of :data:`SITE_LABEL` for site number ``site`` (``site-017``)."""
    return f"site-{site:03d}"


def _scale_node(
    prefix: str,
    index: int,
    ip_index: int,
    device: DeviceClass,
    *,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Manifest:
    return node_manifest(
        name or f"{prefix}-{device.name}-{index:05d}",
        device,
        labels=labels,
        internal_ip=_ip_for(ip_index, device.role, base=100),
    )


def with_kwok_annotation(manifest: Manifest) -> Manifest:
    """A user-supplied Node manifest, annotated so that KWOK manages it."""
    annotations = manifest.setdefault("metadata", {}).setdefault("annotations", {})
    annotations.setdefault(KWOK_ANNOTATION, KWOK_ANNOTATION_VALUE)
    return manifest


def load_nodes(text: str) -> list[Manifest]:
    """Node manifests from multi-document YAML (``kind: List`` is unpacked too)."""
    manifests: list[Manifest] = []
    for document in yaml.safe_load_all(text):
        if not document:
            continue
        items = document.get("items", []) if document.get("kind") == "List" else [document]
        for item in items:
            if item.get("kind") != "Node":
                raise ValueError(f"expected only Node objects, got kind {item.get('kind')!r}")
            manifests.append(with_kwok_annotation(item))
    return manifests


def to_yaml(manifests: Sequence[Manifest]) -> str:
    """Multi-document YAML, ready for ``kubectl apply -f -``."""
    return yaml.safe_dump_all(manifests, sort_keys=False)


def _ip_for(index: int, role: str, base: int = 0) -> str:
    # Addresses are cosmetic but must exist nowhere: the API server dials a node's InternalIP
    # for logs and exec, and the real node's guard rejects the host's packets to this range
    # (FAKE_NODE_RANGE, RFC 2544 benchmarking addresses; 198.19.255.254 is KWOK's --node-ip).
    # Four blocks of 64 /24s (edge, scale edge, verifier, scale verifier): unique for up to
    # 16,000 nodes per role and fleet.
    block = (0 if role == "edge" else 2) + (1 if base else 0)
    third, fourth = block * 64 + (index // 250) % 64, 2 + index % 250
    return f"198.19.{third}.{fourth}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the default fleet, or a scale fleet of N nodes, as YAML."""
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.nodes",
        description="Print KWOK Node manifests (pipe into kubectl apply -f -).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("default", help="the default edge + cloud fleet")
    scale = commands.add_parser("scale", help="N generated nodes for scale tests")
    scale.add_argument("count", type=int)
    scale.add_argument(
        "--sites", type=int, default=0, help=f"spread edge nodes over this many sites ({SITE_LABEL})"
    )
    scale.add_argument(
        "--verifiers", type=int, help="cloud GPU nodes with --sites (default: one per 50 nodes)"
    )
    args = parser.parse_args(argv)
    manifests = (
        default_fleet()
        if args.command == "default"
        else scale_fleet(args.count, sites=args.sites, verifiers=args.verifiers)
    )
    sys.stdout.write(to_yaml(manifests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
