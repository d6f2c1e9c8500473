"""SIGKILL at 20 points of a reconcile: a restarted operator converges with no duplicate and no orphan.

For N = 1..20 the operator runs with ``EDGESPEC_CRASH_AFTER_WRITES=N`` (``edgespec.handlers.faults``):
it kills itself with SIGKILL right after its Nth API write (a child or status applied, a child
deleted, an Event posted) while it brings a new deployment of the paper sample up, so each run dies
at a different point of the first reconciles. Then a normal operator is started and must converge to
exactly what an uninterrupted run makes: the same children by kind, component and class, each
exactly once, every one owned by the deployment, and the same phase and K per class. One test per
point, so a failure names its point and the points can run on several workers.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port, install_crds, start_operator, stop_operator
from kube_helpers import get_object, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "samples" / "profiles" / "paper-illustrative.yaml"
KINDS = "deployments,daemonsets,configmaps,services,secrets,poddisruptionbudgets,jobs"
POINTS = range(1, 1 + int(os.environ.get("EDGESPEC_CRASH_POINTS", "20")))
# Each point is independent of the others: under xdist they spread over the workers (tests/conftest.py).
XDIST_SPLIT = True


def _apply(cluster: Any, name: str) -> None:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["verifier"]["gpus"] = 1
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def _shape(cluster: Any, name: str) -> tuple[Counter[tuple[str, str, str]], list[str]]:
    """(kind, component, class) -> how many, and the objects not owned by exactly the deployment."""
    uid = get_object(cluster, "specdeploy", name)["metadata"]["uid"]
    out = cluster.kubectl(
        "get", KINDS, "-n", "default", "-l", f"edgespec.dev/deployment={name}", "-o", "json"
    )
    shape: Counter[tuple[str, str, str]] = Counter()
    orphans = []
    for obj in json.loads(out.stdout)["items"]:
        labels = obj["metadata"].get("labels") or {}
        shape[
            (
                obj["kind"],
                labels.get("app.kubernetes.io/component", ""),
                labels.get("edgespec.dev/device-class", ""),
            )
        ] += 1
        owners = [r["uid"] for r in obj["metadata"].get("ownerReferences") or []]
        if owners != [uid]:
            orphans.append(f"{obj['kind']}/{obj['metadata']['name']} owned by {owners}")
    return shape, orphans


def _outcome(cluster: Any, name: str) -> tuple[str, str]:
    status = status_of(cluster, name)
    return str(status.get("phase")), str(status.get("kSummary"))


def _converged(cluster: Any, name: str, reference: Any, seen: list[Any]) -> Any:
    shape, orphans = _shape(cluster, name)
    seen[:] = [dict(shape), _outcome(cluster, name)]
    return (shape, orphans) if (shape, seen[1]) == reference else None


def _run_operator(cluster: Any, log: Path, **env: str) -> subprocess.Popen[bytes]:
    return start_operator(cluster, log, free_port(), **env)


@pytest.fixture(scope="module")
def reference(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The profiles applied, and what an uninterrupted run makes of the paper sample."""
    install_crds(cluster)
    cluster.kubectl("apply", "-f", str(PROFILES))
    log = tmp_path_factory.mktemp("crashes") / "operator.log"
    proc = _run_operator(cluster, log)
    try:
        _apply(cluster, "crash-ref")
        wait_for("the reference to select for every class",
                 lambda: _outcome(cluster, "crash-ref")[1].count("=") == 3, 90)  # fmt: skip
        outcome = wait_for(
            "the reference to be Ready", lambda: (o := _outcome(cluster, "crash-ref"))[0] == "Ready" and o, 90
        )
        shape, orphans = _shape(cluster, "crash-ref")
        assert not orphans and max(shape.values()) == 1 and len(shape) >= 9, shape
    finally:
        stop_operator(proc)
    cluster.kubectl("delete", "specdeploy", "crash-ref", "-n", "default", "--wait=false")
    yield cluster, log, (shape, outcome)
    names = [f"crash-{point:02d}" for point in POINTS]
    cluster.kubectl("delete", "specdeploy", *names, "-n", "default", "--ignore-not-found", "--wait=false")
    cluster.kubectl("delete", "-f", str(PROFILES), "--ignore-not-found")


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_a_point_leaves_no_duplicate_and_no_orphan(reference: Any, point: int) -> None:
    cluster, log, expected = reference
    name = f"crash-{point:02d}"
    crashing = _run_operator(cluster, log, EDGESPEC_CRASH_AFTER_WRITES=str(point))
    try:
        _apply(cluster, name)
        # The first reconciles make their writes within a second or two of the apply; a point past
        # them is reached by spec changes, each making more writes. So: nudge whenever the operator
        # has been alive 3 s more (at most 30 nudges, 90 s).
        for nudge in range(30):
            try:
                crashing.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                patch = json.dumps({"spec": {"adaptation": {"minRounds": 100 + nudge}}})
                cluster.kubectl("patch", "specdeploy", name, "-n", "default", "--type=merge", "-p", patch)
        assert crashing.returncode == -9, f"point {point}: the operator did not die at its write {point}"
    finally:
        if crashing.poll() is None:
            stop_operator(crashing)
    proc = _run_operator(cluster, log)
    try:
        seen: list[Any] = []
        try:
            shape, orphans = wait_for(
                f"point {point}: {name} to converge as the reference did",
                lambda: _converged(cluster, name, expected, seen),
                90,
            )
        except AssertionError:
            wanted = f"{dict(expected[0])}, {expected[1]}"
            raise AssertionError(f"point {point}: {seen} instead of {wanted}") from None
        assert not orphans, f"point {point}: {orphans}"
        assert max(shape.values()) == 1, f"point {point}: duplicates {shape}"
    finally:
        stop_operator(proc)
    cluster.kubectl("delete", "specdeploy", name, "-n", "default", "--wait=false")
