"""Benchmark: time from ``kubectl apply`` of a SpeculativeDeployment to phase Ready, profiles present.

Starts a fresh local cluster (real kube-apiserver, etcd, controller-manager, scheduler, KWOK nodes),
installs the CRDs and the illustrative profiles, runs the operator as a real process, then applies
the paper sample under a new name per run and polls its status until the phase is Ready (the
verifier Deployment and every class's draft DaemonSet rolled out on the emulated nodes). Prints
JSON (also written with ``--out``): every run's seconds, the median, min and max.

    python bench/bench_operator.py --runs 7 --out bench_operator.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from edgespec_dev.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]


def _phase(cluster: Cluster, name: str) -> str:
    out = cluster.kubectl(
        "get", "specdeploy", name, "-n", "default", "-o", "jsonpath={.status.phase}", check=False
    ).stdout
    return out.strip()


def time_to_ready(cluster: Cluster, doc: dict[str, Any], name: str, timeout_s: float) -> float:
    """Seconds from the apply request to the first poll that sees phase Ready."""
    doc = json.loads(json.dumps(doc))
    doc["metadata"]["name"] = name
    start = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    while time.monotonic() - start < timeout_s:
        if _phase(cluster, name) == "Ready":
            return time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"{name} not Ready after {timeout_s:.0f} s (phase {_phase(cluster, name)!r})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="deployments applied one after another")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for Ready per run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    sample = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    # One GPU per verifier, so every run's verifier fits on the two emulated 8-GPU nodes (the sample
    # asks for 8: a third deployment would rightly stay Deploying, waiting for GPUs).
    sample["spec"]["verifier"]["gpus"] = 1
    with tempfile.TemporaryDirectory(prefix="edgespec-bench-") as tmp:
        cluster = Cluster(data_dir=Path(tmp) / "cluster", name="bench-operator")
        print("starting the local cluster ...", file=sys.stderr)
        cluster.start(die_with_parent=True)
        operator = None
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "EDGESPEC_METRICS_PORT": "0"}
            log = (Path(tmp) / "operator.log").open("w")
            operator = subprocess.Popen(
                [sys.executable, "-m", "edgespec.handlers", "--liveness", "none"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            time.sleep(3)  # let the operator fill its cache and open its watches
            seconds = []
            for run in range(args.runs):
                elapsed = time_to_ready(cluster, sample, f"bench-{run}", args.timeout)
                seconds.append(elapsed)
                print(f"run {run + 1}/{args.runs}: Ready after {elapsed:.2f} s", file=sys.stderr)
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(10)
            cluster.stop()
    result = {
        "benchmark": "apply_to_ready_with_profiles_present",
        "runs": len(seconds),
        "seconds": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
