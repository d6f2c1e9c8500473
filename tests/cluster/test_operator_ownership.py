"""The operator owns its children, against the real API server: distinct names for the colliding
pairs, pruning, restoring hand-deleted children (the token kept, or rotated everywhere at once), and
every child the API server rejects made visible once, with backoff instead of a blind retry loop.

The operator runs as a real process, restarted by the tests where a restart is the point.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, install_crds, start_operator, stop_operator
from edgespec.api.profile import EdgeProfile, EdgeProfileSpec
from edgespec.builders.naming import (
    draft_name,
    drafts_service_name,
    verifier_name,
    verifier_secret_name,
)
from edgespec.configspec import load_profiles
from edgespec.plan import TOKEN_DIGEST_ANNOTATION
from kube_helpers import condition, owner_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
TARGET, DRAFT, QUANT = "llama-3.1-70b", "llama-3.2-1b", "Q4_K_M"
SELECTORS = {"rpi4b": "rpi4b", "ghost": "ghost"}  # class -> the fleet's device-class label (else rpi5)


@dataclass
class Operator:
    """The operator process of this module, which a test may restart."""

    cluster: Any
    log: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.proc = start_operator(self.cluster, self.log, self.port, **self.env)

    def stop(self) -> None:
        if self.proc is not None:
            stop_operator(self.proc)
            self.proc = None

    def applies(self, resource: str) -> float:
        return self.metric("edgespec_api_requests_total", verb="apply", resource=resource)

    def metric(self, name: str, **labels: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def op(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    install_crds(cluster)
    profiles = []
    for cls in ("rpi5", "rpi4b", "draft-x", "x", "ghost"):
        source = next(
            p
            for p in load_profiles([ROOT / "samples" / "profiles" / "paper-illustrative.yaml"])
            if (p.device_class, p.draft_model, p.quantization) == ("rpi5", DRAFT, QUANT)
        )
        spec = EdgeProfileSpec.model_validate({**source.model_dump(), "device_class": cls})
        profiles.append(EdgeProfile.for_spec(spec).to_api())
    apply(cluster, {"apiVersion": "v1", "kind": "List", "items": profiles})
    operator = Operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log", free_port())
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()
        print(operator.log.read_text()[-4000:])


def deployment(name: str, classes: list[str], namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """A small deployment: one draft, profiles imported (profiling off), classes on the fleet's Pis."""
    return {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "target": {"name": TARGET, "priceUsdPerMillionTokens": 0.9, "vllmModel": "m"},
            "drafts": [
                {
                    "name": DRAFT,
                    "quantizations": [{"quantization": QUANT, "source": {"uri": "pypi:llama-draft"}}],
                }
            ],
            "deviceClasses": [
                {
                    "name": c,
                    "nodeSelector": {"edgespec.dev/device-class": SELECTORS.get(c, "rpi5")},
                }
                for c in classes
            ],
            "objective": {"kind": "goodput"},
            "profiling": {"enabled": False},
            **spec,
        },
    }


def apply(cluster: Any, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def get(cluster: Any, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def status(cluster: Any, name: str, namespace: str = "default") -> dict[str, Any]:
    return dict(get(cluster, "specdeploy", name, namespace).get("status") or {})


def events(cluster: Any, name: str, reason: str, namespace: str = "default") -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    return [e for e in json.loads(out)["items"] if e["reason"] == reason]


def drafts(cluster: Any, name: str, device_class: str) -> dict[str, Any]:
    return get(cluster, "daemonset", draft_name(owner_of(name), device_class))


def uid_of(cluster: Any, kind: str, name: str) -> str | None:
    return get(cluster, kind, name).get("metadata", {}).get("uid")


def reason_of(cluster: Any, name: str, type_: str) -> str | None:
    return condition(status(cluster, name), type_).get("reason")


def delete(cluster: Any, name: str, namespace: str = "default") -> None:
    cluster.kubectl("delete", "specdeploy", name, "-n", namespace, "--ignore-not-found", "--wait=true")


def test_the_reported_collision_pairs_get_distinct_children(op: Operator) -> None:
    cluster = op.cluster
    # One namespace: "coll" with class "draft-x" and "coll-draft" with class "x" shared a DaemonSet.
    apply(cluster, deployment("coll", ["draft-x"]))
    apply(cluster, deployment("coll-draft", ["x"]))
    try:
        first = wait_for("coll's DaemonSet", lambda: drafts(cluster, "coll", "draft-x"))
        second = wait_for("coll-draft's DaemonSet", lambda: drafts(cluster, "coll-draft", "x"))
        assert first["metadata"]["name"] != second["metadata"]["name"]
        assert first["metadata"]["ownerReferences"][0]["name"] == "coll"
        assert second["metadata"]["ownerReferences"][0]["name"] == "coll-draft"
        for name in ("coll", "coll-draft"):  # each has its own ConfigMap and Services too
            assert get(cluster, "configmap", draft_name(owner_of(name), "draft-x" if name == "coll" else "x"))
            assert get(cluster, "service", drafts_service_name(owner_of(name)))
    finally:
        delete(cluster, "coll")
        delete(cluster, "coll-draft")
    # Across namespaces, "a-b"/"c" and "a"/"b-c" shared one profiler ClusterRoleBinding: the operator
    # makes no cluster-scoped child any more (checked in the profiling test below).


def test_a_removed_class_is_pruned_and_a_class_without_nodes_gets_nothing(op: Operator) -> None:
    cluster = op.cluster
    name = "prune"
    apply(cluster, deployment(name, ["rpi5", "rpi4b", "ghost"]))
    try:
        for cls in ("rpi5", "rpi4b"):
            wait_for(f"{cls} DaemonSet", lambda cls=cls: drafts(cluster, name, cls))
        wait_for("both classes selected", lambda: status(cluster, name).get("kSummary", "").count("=") >= 2)
        ghost = draft_name(owner_of(name), "ghost")
        assert not get(cluster, "daemonset", ghost) and not get(cluster, "configmap", ghost)

        apply(cluster, deployment(name, ["rpi5"]))  # the class rpi4b removed
        gone = draft_name(owner_of(name), "rpi4b")
        wait_for(
            "rpi4b's DaemonSet and ConfigMap pruned",
            lambda: not get(cluster, "daemonset", gone) and not get(cluster, "configmap", gone),
            timeout_s=5.0,  # the bound
        )
        assert get(cluster, "daemonset", draft_name(owner_of(name), "rpi5"))  # the kept class stays
    finally:
        delete(cluster, name)


def _token(cluster: Any, name: str) -> str:
    secret = get(cluster, "secret", verifier_secret_name(owner_of(name)))
    return base64.b64decode(secret["data"]["token"]).decode() if secret else ""


def _digests(cluster: Any, name: str) -> set[str]:
    workloads = [get(cluster, "deployment", verifier_name(owner_of(name)))] + [
        get(cluster, "daemonset", draft_name(owner_of(name), c)) for c in ("rpi5",)
    ]
    return {w["spec"]["template"]["metadata"]["annotations"][TOKEN_DIGEST_ANNOTATION] for w in workloads if w}


def test_hand_deleted_children_come_back_with_the_token_kept_or_rotated_everywhere(op: Operator) -> None:
    cluster = op.cluster
    name = "restore"
    apply(cluster, deployment(name, ["rpi5"]))
    try:
        wait_for("draft servers", lambda: get(cluster, "daemonset", draft_name(owner_of(name), "rpi5")))
        token = _token(cluster, name)
        assert token
        children = [
            ("configmap", draft_name(owner_of(name), "rpi5")),
            ("service", verifier_name(owner_of(name))),
            ("service", drafts_service_name(owner_of(name))),
            ("secret", verifier_secret_name(owner_of(name))),
        ]
        for kind, child in children:
            uid = get(cluster, kind, child)["metadata"]["uid"]
            cluster.kubectl("delete", kind, child, "-n", "default", "--wait=true")
            wait_for(
                f"{kind} {child} back",
                lambda kind=kind, child=child, uid=uid: uid_of(cluster, kind, child) not in (None, uid),
                timeout_s=5.0,  # the bound
            )
        assert _token(cluster, name) == token, "a Secret deleted while the operator runs keeps its token"

        # Lost while the operator is down: a new token, and every pod template that holds it follows.
        op.stop()
        secret = verifier_secret_name(owner_of(name))
        cluster.kubectl("delete", "secret", secret, "-n", "default", "--wait=true")
        op.start()
        new = wait_for("a new token", lambda: (t := _token(cluster, name)) and t != token and t)
        digest = hashlib.sha256(new.encode()).hexdigest()[:16]
        wait_for("verifier and drafts rolled to the new token", lambda: _digests(cluster, name) == {digest})
    finally:
        delete(cluster, name)


REJECTED_SPECS = {
    # Each passes admission (the CRD cannot know every Kubernetes rule) and is refused by the API
    # server in the verifier Deployment: the operator must say so once, not retry forever in silence.
    "selector-key": ({"verifier": {"nodeSelector": {"bad key!": "x"}}}, "nodeSelector"),
    "selector-space": ({"verifier": {"nodeSelector": {"edgespec.dev/role": "a value"}}}, "nodeSelector"),
    "cpu-lots": ({"verifier": {"resources": {"requests": {"cpu": "lots"}}}}, "cpu"),
    "toleration-seconds": (
        {
            "verifier": {
                "tolerations": [
                    {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}
                ]
            }
        },
        "tolerationSeconds",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTED_SPECS))
def test_a_child_the_api_rejects_shows_its_condition_and_one_event(op: Operator, case: str) -> None:
    cluster = op.cluster
    extra, field_word = REJECTED_SPECS[case]
    name = f"rejected-{case}"
    doc = deployment(name, ["rpi5"], **extra)
    admitted = cluster.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    if admitted.returncode != 0:  # admission caught it first: also visible, naming the field
        assert field_word in admitted.stderr, admitted.stderr
        return
    try:
        cond = wait_for(
            "ChildrenApplied=False",
            lambda: (c := condition(status(cluster, name), "ChildrenApplied")).get("status") == "False" and c,
        )
        verifier = verifier_name(owner_of(name))
        assert cond["reason"] == "ChildRejected"
        assert f"Deployment {verifier}" in cond["message"] and field_word in cond["message"], cond["message"]
        assert status(cluster, name)["phase"] == "Degraded"
        applies_before = op.applies("deployments")
        for n in range(10):  # ten passes: each metadata change wakes a reconcile of this key
            before = op.metric("edgespec_reconciles_total")
            cluster.kubectl("annotate", "specdeploy", name, "-n", "default", f"test/pass={n}", "--overwrite")
            wait_for(f"pass {n}", lambda before=before: op.metric("edgespec_reconciles_total") > before)
        assert len(events(cluster, name, "ChildRejected")) == 1
        assert condition(status(cluster, name), "ChildrenApplied")["message"] == cond["message"]
        retried = op.applies("deployments") - applies_before
        assert retried < 10, f"{retried} applies in 10 passes: retried blindly instead of backing off"
    finally:
        delete(cluster, name)


def test_events_are_posted_once_per_change(op: Operator) -> None:
    cluster = op.cluster
    name = "quiet"
    apply(cluster, deployment(name, ["rpi5", "rpi4b"], constraints={"minGoodputTokensPerS": 1000000}))
    try:
        wait_for("Infeasible", lambda: reason_of(cluster, name, "Selected") == "Infeasible")
        for n in range(10):
            before = op.metric("edgespec_reconciles_total")
            cluster.kubectl("annotate", "specdeploy", name, "-n", "default", f"test/pass={n}", "--overwrite")
            wait_for(f"pass {n}", lambda before=before: op.metric("edgespec_reconciles_total") > before)
        infeasible = events(cluster, name, "Infeasible")
        assert len(infeasible) == 2, [e["message"] for e in infeasible]  # one per class, once
        assert len({e["message"] for e in infeasible}) == 2

        cluster.kubectl("patch", "specdeploy", name, "-n", "default", "--type=json", "-p",
                        '[{"op": "remove", "path": "/spec/constraints"}]')  # fmt: skip
        wait_for("selected", lambda: status(cluster, name).get("kSummary", "").count("=") == 2)
        for n in range(10):
            before = op.metric("edgespec_reconciles_total")
            cluster.kubectl("annotate", "specdeploy", name, "-n", "default", f"test/again={n}", "--overwrite")
            wait_for(f"pass {n}", lambda before=before: op.metric("edgespec_reconciles_total") > before)
        assert len(events(cluster, name, "Selected")) == 1
    finally:
        delete(cluster, name)


def test_a_profilers_report_is_validated_and_nothing_cluster_scoped_is_made(op: Operator) -> None:
    """KWOK completes a profiling pod the way a profiler that reports nothing would (exit 0, empty
    termination message): the operator refuses it, publishes no profile, fails the key visibly."""
    cluster = op.cluster
    name = "trust"
    doc = deployment(name, ["rpi5"])
    doc["spec"]["drafts"][0]["name"] = "never-profiled"  # no profile: a Job is scheduled
    doc["spec"]["profiling"] = {"enabled": True}
    apply(cluster, doc)
    try:
        job = wait_for(
            "a profiling Job",
            lambda: json.loads(
                cluster.kubectl(
                    "get", "jobs", "-n", "default", "-l", "app.kubernetes.io/instance=trust", "-o", "json"
                ).stdout
            )["items"],
        )[0]
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
        rejected = wait_for("ProfileRejected", lambda: events(cluster, name, "ProfileRejected"), timeout_s=60)
        assert "not an EdgeProfile spec" in rejected[0]["message"], rejected[0]["message"]
        profiled = wait_for(
            "Profiled=False",
            lambda: (c := condition(status(cluster, name), "Profiled"))["status"] == "False" and c,
        )
        assert profiled["reason"] == "ProfilingFailed" and "never-profiled" in profiled["message"]
        assert "was refused" in profiled["message"]
        profiles = json.loads(cluster.kubectl("get", "edgeprofiles", "-o", "json").stdout)["items"]
        assert not [p for p in profiles if p["spec"]["draftModel"] == "never-profiled"]
        made = cluster.kubectl(
            "get", "clusterrolebindings,clusterroles,serviceaccounts", "-A", "-l",
            "app.kubernetes.io/managed-by=edgespec", "-o", "name",
        ).stdout  # fmt: skip
        assert made.strip() == "", f"cluster-scoped or ServiceAccount children: {made}"
    finally:
        delete(cluster, name)
