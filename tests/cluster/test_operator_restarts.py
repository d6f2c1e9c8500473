"""The operator through API-server and etcd restarts: it keeps reconciling, and nothing is duplicated or lost.

A deployment of the paper sample runs with its children (verifier, three draft DaemonSets with their
K ConfigMaps, Services, the token Secret). Then the control plane is restarted three times, for
real (the processes are stopped and started again on the same ports and data): the API server
alone, etcd alone, both. After each, with the same operator process still running, a child is
deleted by hand and the spec is changed: the child must come back and the new generation must be
observed, which needs the operator's watches to have reconnected. Every child keeps its name and
uid across the restarts (no duplicate, no re-creation), and nothing new appears.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port, install_crds, start_operator, stop_operator
from edgespec.builders.naming import draft_name
from kube_helpers import condition, get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME = "restarts"
PROFILES = ROOT / "samples" / "profiles" / "paper-illustrative.yaml"
KINDS = "deployments,daemonsets,configmaps,services,secrets,poddisruptionbudgets"
RESTARTS = [("kube-apiserver",), ("etcd",), ("kube-apiserver", "etcd")]


def _children(cluster: Any) -> dict[str, str]:
    """kind/name -> uid of everything labelled as the deployment's."""
    out = cluster.kubectl(
        "get", KINDS, "-n", "default", "-l", f"edgespec.dev/deployment={NAME}", "-o", "json"
    ).stdout
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"] for o in json.loads(out)["items"]}


@pytest.fixture
def running(cluster: Any, tmp_path: Path) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    install_crds(cluster)
    cluster.kubectl("apply", "-f", str(PROFILES))
    log = tmp_path / "operator.log"
    proc = start_operator(cluster, log, free_port())
    try:
        yield cluster, proc
    finally:
        stop_operator(proc)
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found")
        cluster.kubectl("delete", "-f", str(PROFILES), "--ignore-not-found")
        print(log.read_text()[-3000:])


def test_reconciles_go_on_through_api_server_and_etcd_restarts(running: Any) -> None:
    cluster, proc = running
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["verifier"]["gpus"] = 1
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    classes = [c["name"] for c in doc["spec"]["deviceClasses"]]
    configs = [f"ConfigMap/{draft_name(owner_of(NAME), c)}" for c in classes]
    drafts = configs + [f"DaemonSet/{draft_name(owner_of(NAME), c)}" for c in classes]
    # The first reconcile is over (its generation observed) before the children are counted: a
    # snapshot taken while it still creates them would miss the last DaemonSet.
    wait_for(
        "the first generation observed",
        lambda: (
            condition(status_of(cluster, NAME), "Ready").get("observedGeneration")
            == get_object(cluster, "specdeploy", NAME)["metadata"]["generation"]
        ),
        60,
    )
    before = _children(cluster)
    assert all(k in before for k in drafts) and len(before) >= 9, sorted(before)
    for round_, components in enumerate(RESTARTS, start=1):
        pids = cluster.status()
        cluster.restart(components)
        for component in components:  # really restarted: new processes, running
            assert cluster.status()[component] != pids[component] and "running" in pids[component]
        assert proc.poll() is None, f"the operator exited after restarting {components}"
        # A hand-deleted child comes back: the operator's watches of children reconnected.
        victim = configs[round_ % len(configs)]
        cluster.kubectl("delete", "configmap", victim.split("/", 1)[1], "-n", "default")
        back = wait_for(
            f"{victim} back after restarting {'+'.join(components)}",
            lambda v=victim, old=before[victim]: (c := _children(cluster)).get(v) not in (None, old) and c,
            120,
        )
        # A spec change is observed: the watch of SpeculativeDeployments reconnected too.
        cluster.kubectl(
            "patch", "specdeploy", NAME, "-n", "default", "--type=merge",
            "-p", json.dumps({"spec": {"adaptation": {"minRounds": 100 + round_}}}),
        )  # fmt: skip
        generation = get_object(cluster, "specdeploy", NAME)["metadata"]["generation"]
        wait_for(
            f"generation {generation} observed after restarting {'+'.join(components)}",
            lambda g=generation: condition(status_of(cluster, NAME), "Ready").get("observedGeneration") == g,
            120,
        )
        # Nothing duplicated, nothing lost, nothing re-created but the deleted ConfigMap.
        assert set(back) == set(before), set(back) ^ set(before)
        changed = {k for k in before if back[k] != before[k]}
        assert changed == {victim}, changed
        before = back
    assert proc.poll() is None
