"""The operator against the real API server: nodes resolved per class, selection, events, reactions.

The operator runs as a real process (``python -m edgespec.handlers``) against the local control
plane with KWOK nodes; the tests act as a user would, with kubectl, and read status and events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.builders.naming import draft_name, verifier_name, verifier_secret_name
from kube_helpers import condition, events_of, get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
PAPER = owner_of("llama70b-edge")


def test_nodes_resolved_per_class_then_selection_from_profiles(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    status = wait_for(
        "NodesResolved", lambda: (s := status_of(cluster, "llama70b-edge")).get("conditions") and s
    )
    counts = {c["name"]: c["nodes"] for c in status["deviceClasses"]}
    assert counts == {"rpi4b": 2, "rpi5": 2, "jetson-agx-orin": 1}
    cond = condition(status, "NodesResolved")
    assert cond["status"] == "True" and cond["observedGeneration"] == 1 and cond["lastTransitionTime"]
    assert status["phase"] == "Profiling"  # no profiles yet
    assert condition(status, "Profiled")["status"] == "False"
    assert condition(status, "Selected")["status"] == "Unknown"  # every condition set on first visit

    table = cluster.kubectl("get", "specdeploy", "-n", "default").stdout
    assert "READY" in table and "REASON" in table and "PHASE" in table and "ENDPOINT" in table
    assert "http://" in table and ".default.svc:" in table  # status.verifier.endpoint, set by the operator
    wide = cluster.kubectl("get", "specdeploy", "-n", "default", "-o", "wide").stdout
    assert "OBJECTIVE" in wide and "goodput" in wide and "rpi4b=2" in wide

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
    status = wait_for(
        "a selection for every class",
        lambda: (s := status_of(cluster, "llama70b-edge")).get("kSummary", "").count("=") == 3 and s,
    )
    chosen = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    assert set(chosen) == {"rpi4b", "rpi5", "jetson-agx-orin"}
    # The paper's finding, through the operator: the Jetson drafts longer than the Pi 4B.
    assert chosen["jetson-agx-orin"]["k"] > chosen["rpi4b"]["k"]
    assert all(s["reason"] and s["predictedGoodputTokensPerS"] > 0 for s in chosen.values())


def test_node_joining_a_class_updates_counts(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    wait_for("first reconcile", lambda: status_of(cluster, "llama70b-edge").get("deviceClasses"))
    cluster.add_node("edge-rpi5-extra", "rpi5")
    try:
        wait_for(
            "rpi5 count 3",
            lambda: (
                {c["name"]: c["nodes"] for c in status_of(cluster, "llama70b-edge")["deviceClasses"]}.get(
                    "rpi5"
                )
                == 3
            ),
        )
    finally:
        cluster.delete_node("edge-rpi5-extra")
    wait_for(
        "rpi5 count back to 2",
        lambda: (
            {c["name"]: c["nodes"] for c in status_of(cluster, "llama70b-edge")["deviceClasses"]}.get("rpi5")
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
    status = wait_for("NodesResolved", lambda: (s := status_of(cluster, "nowhere")).get("conditions") and s)
    cond = condition(status, "NodesResolved")
    assert cond["status"] == "False" and cond["reason"] == "NoReadyNodes"
    assert "ghost" in cond["message"] and "nodeSelector" in cond["message"]
    assert status["phase"] == "Pending"


def test_children_carry_the_selection_and_k_changes_without_restart(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    wait_for("selection", lambda: status_of(cluster, "llama70b-edge").get("kSummary", "").count("=") == 3)

    # Verifier first: Secret, Deployment on the GPU nodes, Service; all owned by the deployment.
    verifier = wait_for(
        "verifier Deployment", lambda: get_object(cluster, "deployment", verifier_name(PAPER))
    )
    owner = verifier["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "SpeculativeDeployment" and owner["controller"] is True
    pod = verifier["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgespec.dev/role": "verifier"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] in (8, "8")
    assert get_object(cluster, "service", verifier_name(PAPER))
    assert get_object(cluster, "secret", verifier_secret_name(PAPER))

    # One DaemonSet per class, on that class's nodes, and K in its ConfigMap.
    status = status_of(cluster, "llama70b-edge")
    chosen = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    jetson = wait_for(
        "jetson DaemonSet", lambda: get_object(cluster, "daemonset", draft_name(PAPER, "jetson-agx-orin"))
    )
    assert jetson["spec"]["template"]["spec"]["nodeSelector"] == {"edgespec.dev/device-class": "jetson-orin"}
    config = get_object(cluster, "configmap", draft_name(PAPER, "jetson-agx-orin"))
    assert f"k: {chosen['jetson-agx-orin']['k']}" in config["data"]["speculative.yaml"]
    assert chosen["jetson-agx-orin"]["k"] >= 8  # goodput on the Jetson: long K (the paper's finding)
    # KWOK runs the pods on the emulated nodes: the rollouts complete and the deployment is Ready.
    ready = wait_for(
        "phase Ready", lambda: (s := status_of(cluster, "llama70b-edge")).get("phase") == "Ready" and s, 90
    )
    assert condition(ready, "Ready")["status"] == "True"
    assert ready["verifier"]["readyReplicas"] == 1
    # every node of every class runs a ready draft server (an earlier test's removed node may linger)
    assert all(c["readyDrafts"] >= c["nodes"] > 0 for c in ready["deviceClasses"]), ready["deviceClasses"]
    jetson = get_object(cluster, "daemonset", draft_name(PAPER, "jetson-agx-orin"))
    template_before = jetson["spec"]["template"]
    generation_before = jetson["metadata"]["generation"]

    # Energy: the paper says K = 2 with the smallest draft; on the Jetson only K changes.
    cluster.kubectl(
        "patch", "specdeploy", "llama70b-edge", "-n", "default", "--type=merge",
        "-p", json.dumps({"spec": {"objective": {"kind": "energy"}}}),
    )  # fmt: skip
    wait_for(
        "K=2 in the Jetson ConfigMap",
        lambda: (
            "k: 2"
            in get_object(cluster, "configmap", draft_name(PAPER, "jetson-agx-orin"))["data"][
                "speculative.yaml"
            ]
        ),
    )
    status = status_of(cluster, "llama70b-edge")
    energy = {c["name"]: c["selection"] for c in status["deviceClasses"]}
    assert all(s["k"] == 2 for s in energy.values())
    assert energy["jetson-agx-orin"]["draftModel"] == chosen["jetson-agx-orin"]["draftModel"]
    jetson_after = get_object(cluster, "daemonset", draft_name(PAPER, "jetson-agx-orin"))
    assert jetson_after["spec"]["template"] == template_before  # no rollout, no restart
    assert jetson_after["metadata"]["generation"] == generation_before

    # Deleted by hand, a draft DaemonSet comes back: the operator repairs what it owns.
    rpi5 = get_object(cluster, "daemonset", draft_name(PAPER, "rpi5"))
    cluster.kubectl("delete", "daemonset", draft_name(PAPER, "rpi5"), "-n", "default", "--wait=true")
    wait_for(
        "the DaemonSet re-created",
        lambda: (
            get_object(cluster, "daemonset", draft_name(PAPER, "rpi5")).get("metadata", {}).get("uid")
            not in (None, rpi5["metadata"]["uid"])
        ),
    )


def test_deleting_the_deployment_garbage_collects_its_children(operator: Any) -> None:
    cluster = operator
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
    cluster.kubectl("apply", "-f", str(ROOT / "samples" / "speculativedeployment-paper.yaml"))
    wait_for("children", lambda: get_object(cluster, "daemonset", draft_name(PAPER, "rpi5")))
    cluster.kubectl("delete", "specdeploy", "llama70b-edge", "-n", "default")
    selector = "edgespec.dev/deployment=llama70b-edge"
    wait_for(
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


def _jobs(cluster: Any, deployment: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "jobs", "-n", "default", "-l", f"edgespec.dev/deployment={deployment}", "-o", "json"
    ).stdout
    return list(json.loads(out)["items"])


def test_missing_profiles_start_profiling_jobs_and_arriving_profiles_select(operator: Any) -> None:
    from edgespec.api.profile import AcceptancePoint, EdgeProfile, EdgeProfileSpec, VerifyLatency

    cluster = operator
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["spec"]["profiling"] = {"concurrencyPerClass": 4}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def jobs() -> list[dict[str, Any]]:
        return _jobs(cluster, "gemma-cpu")

    found = wait_for("two profiling Jobs", lambda: len(jobs()) == 2 and jobs())
    rpi5_nodes = {"edge-rpi5-0", "edge-rpi5-1"}
    profiled = set()
    for job in found:
        labels = job["metadata"]["labels"]
        profiled.add((labels["edgespec.dev/device-class"], labels["edgespec.dev/draft-model"]))
        affinity = json.dumps(job["spec"]["template"]["spec"]["affinity"])
        assert any(node in affinity for node in rpi5_nodes), affinity  # pinned to a node of its class
        pod = job["spec"]["template"]["spec"]
        assert (
            "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False
        )  # no API rights
    assert profiled == {("rpi5", "gemma-17l"), ("rpi5", "gemma-270m")}
    status = status_of(cluster, "gemma-cpu")
    assert status["phase"] == "Profiling"
    assert (status["profiling"]["done"], status["profiling"]["needed"]) == (0, 2)
    binding = cluster.kubectl(
        "get", "clusterrolebindings", "-l", "edgespec.dev/deployment=gemma-cpu", "-o", "name"
    )
    assert not binding.stdout.strip()  # profilers report by termination message: nothing to bind

    # The profiles arrive, written as the profiler writes them: selection follows.
    for draft, quant, speed, alpha in (("gemma-17l", "Q4_K_M", 45.0, 0.7), ("gemma-270m", "Q4_0", 50.0, 0.8)):
        spec = EdgeProfileSpec(
            device_class="rpi5", draft_model=draft, quantization=quant, target_model="gemma-3-270m",
            draft_tokens_per_s=speed, power_watts=6.0,
            acceptance=[AcceptancePoint(k=k, alpha=alpha**k, samples=20) for k in range(1, 9)],
            verify_latency=VerifyLatency(fixed_s=0.03, per_token_s=0.01),
        )  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(EdgeProfile.for_spec(spec).to_api()))
    status = wait_for(  # both profiles seen (two kubectl calls may straddle the 2 s profile batch)
        "selection",
        lambda: (s := status_of(cluster, "gemma-cpu")).get("kSummary") and s["profiling"]["done"] == 2 and s,
    )
    assert condition(status, "Profiled")["status"] == "True", condition(status, "Profiled")
    assert status["profiling"]["done"] == 2
    assert status["deviceClasses"][0]["selection"]["draftModel"] in {"gemma-17l", "gemma-270m"}

    cluster.kubectl("delete", "specdeploy", "gemma-cpu", "-n", "default")
    wait_for(
        "profiler binding removed",
        lambda: (
            not cluster.kubectl(
                "get", "clusterrolebindings", "-l", "edgespec.dev/deployment=gemma-cpu", "-o", "name"
            ).stdout.strip()
        ),
    )


def test_a_node_of_a_newly_declared_class_gets_its_class_profiled(operator: Any) -> None:
    from edgespec.api.profile import AcceptancePoint, EdgeProfile, EdgeProfileSpec

    cluster = operator
    for draft, quant in (("gemma-17l", "Q4_K_M"), ("gemma-270m", "Q4_0")):  # rpi5 is profiled already
        spec = EdgeProfileSpec(
            device_class="rpi5", draft_model=draft, quantization=quant, target_model="gemma-3-270m",
            draft_tokens_per_s=40.0, power_watts=6.0, acceptance=[AcceptancePoint(k=2, alpha=0.6)],
        )  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(EdgeProfile.for_spec(spec).to_api()))
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["metadata"]["name"] = "newclass"
    doc["spec"]["profiling"] = {"concurrencyPerClass": 4}
    doc["spec"]["deviceClasses"].append(
        {"name": "orin-nano", "nodeSelector": {"edgespec.dev/device-class": "orin-nano"}}
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def jobs() -> list[dict[str, Any]]:
        return _jobs(cluster, "newclass")

    status = wait_for(
        "no nodes for orin-nano", lambda: (s := status_of(cluster, "newclass")).get("conditions") and s
    )
    assert (
        condition(status, "NodesResolved")["status"] == "False"
        and "orin-nano" in condition(status, "NodesResolved")["message"]
    )
    assert jobs() == []  # nothing to profile on: no node of the class yet, rpi5 already profiled

    cluster.add_node("edge-orin-nano-0", "orin-nano")
    try:
        found = wait_for("two profiling Jobs for orin-nano", lambda: len(jobs()) == 2 and jobs())
        for job in found:
            assert job["metadata"]["labels"]["edgespec.dev/device-class"] == "orin-nano"
            assert "edge-orin-nano-0" in json.dumps(job["spec"]["template"]["spec"]["affinity"])
        status = status_of(cluster, "newclass")
        assert (status["profiling"]["done"], status["profiling"]["needed"]) == (2, 4)
        assert status["phase"] == "Profiling"
    finally:
        cluster.kubectl("delete", "specdeploy", "newclass", "-n", "default")
        cluster.delete_node("edge-orin-nano-0")


def test_a_profiling_job_that_writes_no_profile_is_reported_and_retried_when_deleted(operator: Any) -> None:
    from edgespec.api.profile import AcceptancePoint, EdgeProfile, EdgeProfileSpec

    cluster = operator
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["metadata"]["name"] = "silent"
    doc["spec"]["target"]["name"] = "gemma-unprofiled"  # no profile of this target exists anywhere
    doc["spec"]["profiling"] = {"concurrencyPerClass": 4}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    # KWOK completes Job pods without running them: a profiler that exits 0 and reports nothing.
    wait_for("two profiling Jobs", lambda: len(_jobs(cluster, "silent")) == 2)
    status = wait_for(  # each key fails as its Job completes and its empty report is refused
        "ProfilingFailed for both keys",
        lambda: (
            condition(s := status_of(cluster, "silent"), "Profiled").get("reason") == "ProfilingFailed"
            and len(s["profiling"]["failed"]) == 2
            and s
        ),
        timeout_s=90,
    )
    message = condition(status, "Profiled")["message"]
    assert "rpi5/gemma-17l/Q4_K_M" in message and "rpi5/gemma-270m/Q4_0" in message
    assert "was refused" in message and "not an EdgeProfile spec" in message
    assert sorted(status["profiling"]["failed"]) == ["rpi5/gemma-17l/Q4_K_M", "rpi5/gemma-270m/Q4_0"]
    # One Warning per change of the verdict: the two Jobs' reports are refused as each Job completes.
    warnings = [e for e in events_of(cluster, "silent") if e["reason"] == "ProfilingFailed"]
    assert 1 <= len(warnings) <= 2 and all(w["type"] == "Warning" for w in warnings)

    # One profile arrives after all (say, imported by hand): only the other key stays failed.
    spec = EdgeProfileSpec(
        device_class="rpi5", draft_model="gemma-270m", quantization="Q4_0", target_model="gemma-unprofiled",
        draft_tokens_per_s=50.0, power_watts=6.0, acceptance=[AcceptancePoint(k=2, alpha=0.6)],
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(EdgeProfile.for_spec(spec).to_api()))
    wait_for(
        "one key failed",
        lambda: status_of(cluster, "silent")["profiling"]["failed"] == ["rpi5/gemma-17l/Q4_K_M"],
    )

    # Deleting the failed Job retries that key: a new Job (new uid) is created.
    (job,) = [
        j
        for j in _jobs(cluster, "silent")
        if j["metadata"]["labels"]["edgespec.dev/draft-model"] == "gemma-17l"
    ]
    cluster.kubectl("delete", "job", job["metadata"]["name"], "-n", "default", "--wait=true")
    wait_for(
        "a new profiling Job",
        lambda: any(j["metadata"]["uid"] != job["metadata"]["uid"] for j in _jobs(cluster, "silent")
                    if j["metadata"]["labels"]["edgespec.dev/draft-model"] == "gemma-17l"),
    )  # fmt: skip
    cluster.kubectl("delete", "specdeploy", "silent", "-n", "default")
