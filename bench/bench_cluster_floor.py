"""Benchmark: how long the cluster alone takes to roll out what the scale benchmark's operator creates.

The floor under ``bench_scale.py``'s time to Ready: the same fresh cluster (1,000 KWOK nodes in 200
sites, 25 cloud GPU nodes), no operator. The children the operator would make for the 200
deployments (the pure builders, fed the same selection ConfigSpec makes from the illustrative
profiles) are applied directly with ``kubectl apply --server-side``, and the clock runs until every
verifier Deployment and draft DaemonSet is rolled out. Whatever an operator does, its deployments
cannot be Ready sooner than this on the same machine. Prints JSON (also written with ``--out``).

    python bench/bench_cluster_floor.py --out floor.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_scale import GPUS_PER_CLOUD_NODE, deployment_docs
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import Owner, WorkloadImages
from edgespec.configspec import load_profiles
from edgespec.plan import desired_children, plan_status
from edgespec.status import NodeInfo, now_utc
from edgespec_dev import nodes as fleet
from edgespec_dev.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]


def children_of(docs: list[dict[str, Any]], nodes: list[fleet.Manifest]) -> list[dict[str, Any]]:
    """The verifier and draft children of every deployment, as the operator's first reconcile makes them."""
    infos = [NodeInfo.from_body(n) for n in nodes]
    profiles = load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
    images = WorkloadImages(edge="edge:bench", verifier="verifier:bench", vllm="vllm:bench")
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
        plan = plan_status(
            spec=spec, generation=1, previous=None, nodes=infos, profiles=profiles, now=now_utc()
        )
        owner = Owner(
            name=doc["metadata"]["name"], namespace="default", uid=f"00000000-0000-0000-0000-{index:012d}"
        )
        for child in desired_children(spec=spec, owner=owner, images=images, token="t", status=plan.status):
            child["metadata"].pop("ownerReferences", None)  # no owner object exists here
            out.append(child)
    return out


def rolled_out(cluster: Cluster) -> tuple[int, int]:
    """(workloads fully rolled out, workloads) over the Deployments and DaemonSets of the namespace."""
    items = json.loads(
        cluster.kubectl("get", "deployments,daemonsets", "-n", "default", "-o", "json").stdout
    )["items"]
    done = 0
    for item in items:
        status = item.get("status") or {}
        if item["kind"] == "DaemonSet":
            want = status.get("desiredNumberScheduled", 0)
            done += want > 0 and status.get("numberReady", 0) >= want
        else:
            done += status.get("readyReplicas", 0) >= item["spec"].get("replicas", 1)
    return done, len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    verifiers = math.ceil(args.deployments / GPUS_PER_CLOUD_NODE)
    nodes = fleet.scale_fleet(args.nodes, sites=args.deployments, verifiers=verifiers)
    sample = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    children = children_of(deployment_docs(sample, args.deployments), nodes)
    workloads = sum(c["kind"] in ("Deployment", "DaemonSet") for c in children)
    result: dict[str, Any] = {
        "benchmark": "cluster_floor",
        "deployments": args.deployments,
        "nodes": len(nodes),
        "children": len(children),
        "workloads": workloads,
    }
    with tempfile.TemporaryDirectory(prefix="edgespec-bench-floor-") as tmp:
        cluster = Cluster(data_dir=Path(tmp) / "cluster", name="bench-floor")
        print(f"starting the local cluster with {len(nodes)} nodes ...", file=sys.stderr)
        cluster.start(nodes, die_with_parent=True, timeout_s=900)
        try:
            start = time.monotonic()
            for i in range(0, len(children), 200):  # kubectl sends them one by one either way
                batch = {"apiVersion": "v1", "kind": "List", "items": children[i : i + 200]}
                cluster.kubectl(
                    "apply", "--server-side", "--field-manager=bench", "-f", "-", input=json.dumps(batch)
                )
            result["apply_s"] = round(time.monotonic() - start, 1)
            timeline = []
            while True:
                done, total = rolled_out(cluster)
                timeline.append({"t": round(time.monotonic() - start, 1), "rolled_out": done, "of": total})
                if total >= workloads and done >= workloads:
                    break
                if time.monotonic() - start > args.timeout:
                    raise TimeoutError(f"{done} of {workloads} rolled out after {args.timeout:.0f} s")
                time.sleep(1.0)
            result["all_rolled_out_s"] = round(time.monotonic() - start, 1)
            result["timeline"] = timeline[:: max(1, len(timeline) // 30)]
        finally:
            cluster.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
