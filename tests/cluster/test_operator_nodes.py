"""The operator against the real API server: nodes resolved per class, selection, events, reactions.

The operator runs as a real process (``python -m edgespec.handlers``) against the local control
plane with KWOK nodes; the tests act as a user would, with kubectl, and read status and events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]


def _wait(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def operator(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgespec.handlers", "--liveness", "none"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield cluster
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(log.read_text()[-3000:])


def _status(cluster: Any, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "specdeploy", name, "-n", "default", "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_nodes_resolved_per_class_then_selection_from_profiles(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    status = _wait("NodesResolved", lambda: (s := _status(cluster, "llama70b-edge")).get("conditions") and s)
    counts = {c["name"]: c["nodes"] for c in status["deviceClasses"]}
    assert counts == {"rpi4b": 2, "rpi5": 2, "jetson-agx-orin": 1}
    cond = _condition(status, "NodesResolved")
    assert cond["status"] == "True" and cond["observedGeneration"] == 1 and cond["lastTransitionTime"]
    assert status["phase"] == "Profiling"  # no profiles yet
    assert _condition(status, "Profiled")["status"] == "False"
    assert _condition(status, "Selected")["status"] == "Unknown"  # every condition set on first visit

    table = cluster.kubectl("get", "specdeploy", "-n", "default").stdout
    assert "PHASE" in table and "OBJECTIVE" in table and "goodput" in table and "rpi4b=2" in table

    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=llama70b-edge",
        "-o",
        "json",
    ).stdout
    assert any(e["reason"] == "NodesFound" for e in json.loads(events)["items"])

    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
    status = _wait(
        "a selection for every class",
        lambda: (s := _status(cluster, "llama70b-edge")).get("kSummary", "").count("=") == 3 and s,
    )
    chosen = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    assert set(chosen) == {"rpi4b", "rpi5", "jetson-agx-orin"}
    # The paper's finding, through the operator: the Jetson drafts longer than the Pi 4B.
    assert chosen["jetson-agx-orin"]["k"] > chosen["rpi4b"]["k"]
    assert all(s["reason"] and s["predictedGoodputTokensPerS"] > 0 for s in chosen.values())


def test_node_joining_a_class_updates_counts(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    _wait("first reconcile", lambda: _status(cluster, "llama70b-edge").get("deviceClasses"))
    cluster.add_node("edge-rpi5-extra", "rpi5")
    try:
        _wait(
            "rpi5 count 3",
            lambda: (
                {c["name"]: c["nodes"] for c in _status(cluster, "llama70b-edge")["deviceClasses"]}.get(
                    "rpi5"
                )
                == 3
            ),
        )
    finally:
        cluster.delete_node("edge-rpi5-extra")
    _wait(
        "rpi5 count back to 2",
        lambda: (
            {c["name"]: c["nodes"] for c in _status(cluster, "llama70b-edge")["deviceClasses"]}.get("rpi5")
            == 2
        ),
    )


def test_class_without_nodes_is_reported_with_the_fix(operator: Any) -> None:
    cluster = operator
    doc = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "nowhere", "namespace": "default"},
        "spec": {
            "target": {"name": "llama-3.1-70b", "priceUsdPerMillionTokens": 0.9, "vllmModel": "m"},
            "drafts": [
                {"name": "d", "quantizations": [{"quantization": "Q4_0", "source": {"uri": "pypi:x"}}]}
            ],
            "deviceClasses": [{"name": "ghost", "nodeSelector": {"edgespec.dev/device-class": "ghost"}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    status = _wait("NodesResolved", lambda: (s := _status(cluster, "nowhere")).get("conditions") and s)
    cond = _condition(status, "NodesResolved")
    assert cond["status"] == "False" and cond["reason"] == "NoReadyNodes"
    assert "ghost" in cond["message"] and "nodeSelector" in cond["message"]
    assert status["phase"] == "Pending"


def _get(cluster: Any, kind: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", kind, name, "-n", "default", "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def test_children_carry_the_selection_and_k_changes_without_restart(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    _wait("selection", lambda: _status(cluster, "llama70b-edge").get("kSummary", "").count("=") == 3)

    # Verifier first: Secret, Deployment on the GPU nodes, Service; all owned by the deployment.
    verifier = _wait("verifier Deployment", lambda: _get(cluster, "deployment", "llama70b-edge-verifier"))
    owner = verifier["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "SpeculativeDeployment" and owner["controller"] is True
    pod = verifier["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgespec.dev/role": "verifier"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] in (8, "8")
    assert _get(cluster, "service", "llama70b-edge-verifier")
    assert _get(cluster, "secret", "llama70b-edge-verifier-token")

    # One DaemonSet per class, on that class's nodes, and K in its ConfigMap.
    status = _status(cluster, "llama70b-edge")
    chosen = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    jetson = _wait(
        "jetson DaemonSet", lambda: _get(cluster, "daemonset", "llama70b-edge-draft-jetson-agx-orin")
    )
    assert jetson["spec"]["template"]["spec"]["nodeSelector"] == {"edgespec.dev/device-class": "jetson-orin"}
    config = _get(cluster, "configmap", "llama70b-edge-draft-jetson-agx-orin")
    assert f"k: {chosen['jetson-agx-orin']['k']}" in config["data"]["speculative.yaml"]
    assert chosen["jetson-agx-orin"]["k"] >= 8  # goodput on the Jetson: long K (the paper's finding)
    # KWOK runs the pods on the emulated nodes: the rollouts complete and the deployment is Ready.
    ready = _wait(
        "phase Ready", lambda: (s := _status(cluster, "llama70b-edge")).get("phase") == "Ready" and s, 90
    )
    assert _condition(ready, "Ready")["status"] == "True"
    assert ready["verifier"]["readyReplicas"] == 1
    # every node of every class runs a ready draft server (an earlier test's removed node may linger)
    assert all(c["readyDrafts"] >= c["nodes"] > 0 for c in ready["deviceClasses"]), ready["deviceClasses"]
    jetson = _get(cluster, "daemonset", "llama70b-edge-draft-jetson-agx-orin")
    template_before = jetson["spec"]["template"]
    generation_before = jetson["metadata"]["generation"]

    # Energy: the paper says K = 2 with the smallest draft; on the Jetson only K changes.
    cluster.kubectl(
        "patch", "specdeploy", "llama70b-edge", "-n", "default", "--type=merge",
        "-p", json.dumps({"spec": {"objective": {"kind": "energy"}}}),
    )  # fmt: skip
    _wait(
        "K=2 in the Jetson ConfigMap",
        lambda: (
            "k: 2"
            in _get(cluster, "configmap", "llama70b-edge-draft-jetson-agx-orin")["data"]["speculative.yaml"]
        ),
    )
    status = _status(cluster, "llama70b-edge")
    energy = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    assert all(s["k"] == 2 for s in energy.values())
    assert energy["jetson-agx-orin"]["draftModel"] == chosen["jetson-agx-orin"]["draftModel"]
    jetson_after = _get(cluster, "daemonset", "llama70b-edge-draft-jetson-agx-orin")
    assert jetson_after["spec"]["template"] == template_before  # no rollout, no restart
    assert jetson_after["metadata"]["generation"] == generation_before


def test_deleting_the_deployment_garbage_collects_its_children(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    _wait("children", lambda: _get(cluster, "daemonset", "llama70b-edge-draft-rpi5"))
    cluster.kubectl("delete", "specdeploy", "llama70b-edge", "-n", "default")
    selector = "edgespec.dev/deployment=llama70b-edge"
    _wait(
        "garbage collection",
        lambda: (
            not cluster.kubectl(
                "get",
                "deployments,daemonsets,services,configmaps,secrets",
                "-n",
                "default",
                "-l",
                selector,
                "-o",
                "name",
            ).stdout.strip()
        ),
        timeout_s=60,
    )


def test_missing_profiles_start_profiling_jobs_and_arriving_profiles_select(operator: Any) -> None:
    from edgespec.api.profile import AcceptancePoint, EdgeProfile, EdgeProfileSpec, VerifyLatency

    cluster = operator
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["spec"]["profiling"] = {"concurrencyPerClass": 4}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def jobs() -> list[dict[str, Any]]:
        out = cluster.kubectl(
            "get", "jobs", "-n", "default", "-l", "edgespec.dev/deployment=gemma-cpu", "-o", "json"
        ).stdout
        return list(json.loads(out)["items"])

    found = _wait("two profiling Jobs", lambda: len(jobs()) == 2 and jobs())
    rpi5_nodes = {"edge-rpi5-0", "edge-rpi5-1"}
    profiled = set()
    for job in found:
        labels = job["metadata"]["labels"]
        profiled.add((labels["edgespec.dev/device-class"], labels["edgespec.dev/draft-model"]))
        affinity = json.dumps(job["spec"]["template"]["spec"]["affinity"])
        assert any(node in affinity for node in rpi5_nodes), affinity  # pinned to a node of its class
        assert job["spec"]["template"]["spec"]["serviceAccountName"]
    assert profiled == {("rpi5", "gemma-17l"), ("rpi5", "gemma-270m")}
    status = _status(cluster, "gemma-cpu")
    assert status["phase"] == "Profiling"
    assert (status["profiling"]["done"], status["profiling"]["needed"]) == (0, 2)
    binding = cluster.kubectl(
        "get", "clusterrolebindings", "-l", "edgespec.dev/deployment=gemma-cpu", "-o", "name"
    )
    assert binding.stdout.strip()

    # The profiles arrive, written as the profiler writes them: selection follows.
    for draft, quant, speed, alpha in (("gemma-17l", "Q4_K_M", 45.0, 0.7), ("gemma-270m", "Q4_0", 50.0, 0.8)):
        spec = EdgeProfileSpec(
            device_class="rpi5", draft_model=draft, quantization=quant, target_model="gemma-3-270m",
            draft_tokens_per_s=speed, power_watts=6.0,
            acceptance=[AcceptancePoint(k=k, alpha=alpha**k, samples=20) for k in range(1, 9)],
            verify_latency=VerifyLatency(fixed_s=0.03, per_token_s=0.01),
        )  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(EdgeProfile.for_spec(spec).to_api()))
    status = _wait("selection", lambda: (s := _status(cluster, "gemma-cpu")).get("kSummary") and s)
    assert _condition(status, "Profiled")["status"] == "True"
    assert status["profiling"]["done"] == 2
    assert status["deviceClasses"][0]["selection"]["draftModel"] in {"gemma-17l", "gemma-270m"}

    cluster.kubectl("delete", "specdeploy", "gemma-cpu", "-n", "default")
    _wait(
        "profiler binding removed",
        lambda: (
            not cluster.kubectl(
                "get", "clusterrolebindings", "-l", "edgespec.dev/deployment=gemma-cpu", "-o", "name"
            ).stdout.strip()
        ),
    )
