"""Scaling the verifier through the SpeculativeDeployment's scale subresource, against the real API server.

``kubectl scale specdeploy`` (what an HPA does) changes ``spec.verifier.replicas``; the operator
resizes the verifier Deployment; ``kubectl get --subresource=scale`` reports the replicas and the
pods' selector from the status; the sample HPA (samples/hpa-verifier.yaml) is accepted and the HPA
controller can read and write that scale (condition AbleToScale). The verifier Service keeps a
client on one replica (ClientIP affinity). Real kube-apiserver, controller manager and KWOK nodes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.builders.naming import verifier_name, verifier_selector
from kube_helpers import condition, get_object, owner_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME = "scaled"


def scale_of(cluster: Any) -> dict[str, Any]:
    out = cluster.kubectl("get", "specdeploy", NAME, "-n", "default", "--subresource=scale", "-o", "json")
    return dict(json.loads(out.stdout))


def test_kubectl_scale_resizes_the_verifier_and_the_sample_hpa_can_drive_it(operator: Any) -> None:
    cluster = operator
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    verifier = verifier_name(owner_of(NAME))
    try:
        wait_for(
            "the verifier Deployment with 1 replica",
            lambda: get_object(cluster, "deployment", verifier).get("spec", {}).get("replicas") == 1,
        )
        # the Service is applied beside the Deployment, not necessarily before it
        service = wait_for("the verifier Service", lambda: get_object(cluster, "service", verifier))
        assert service["spec"]["sessionAffinity"] == "ClientIP"  # the API server kept the affinity

        cluster.kubectl("scale", "specdeploy", NAME, "-n", "default", "--replicas=3")
        wait_for(
            "the verifier Deployment scaled to 3",
            lambda: get_object(cluster, "deployment", verifier).get("spec", {}).get("replicas") == 3,
        )
        spec = get_object(cluster, "specdeploy", NAME)["spec"]
        assert spec["verifier"]["replicas"] == 3 and spec["verifier"]["gpus"] == 8  # nothing else moved

        scale = wait_for(
            "the scale subresource to report 3 replicas",
            lambda: (s := scale_of(cluster)).get("status", {}).get("replicas") == 3 and s,
        )
        assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3
        assert scale["status"]["selector"] == verifier_selector(owner_of(NAME))
        pods = cluster.kubectl(
            "get", "pods", "-n", "default", "-l", scale["status"]["selector"], "-o", "name"
        ).stdout.split()
        assert len(pods) == 3  # the selector HPAs read metrics by selects exactly the verifier's pods

        refused = cluster.kubectl("scale", "specdeploy", NAME, "-n", "default", "--replicas=65", check=False)
        assert refused.returncode != 0 and "65" in refused.stderr  # spec.verifier.replicas is at most 64

        hpa = yaml.safe_load((ROOT / "samples" / "hpa-verifier.yaml").read_text())
        hpa["spec"]["scaleTargetRef"]["name"] = NAME
        hpa["metadata"]["name"] = f"{NAME}-verifier"
        cluster.kubectl("apply", "-f", "-", input=json.dumps(hpa))
        # No custom metrics API here, so the HPA cannot compute (ScalingActive False), but it reads the
        # scale subresource of the SpeculativeDeployment: AbleToScale True.
        status = wait_for(
            "the HPA to read the scale subresource",
            lambda: (
                condition(
                    get_object(cluster, "hpa", f"{NAME}-verifier").get("status") or {}, "AbleToScale"
                ).get("status")
                == "True"
                and get_object(cluster, "hpa", f"{NAME}-verifier")["status"]
            ),
            timeout_s=90,  # the HPA controller's sync period is 15 s
        )
        assert status["currentReplicas"] == 3
    finally:
        cluster.kubectl("delete", "hpa", f"{NAME}-verifier", "-n", "default", "--ignore-not-found")
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found", "--wait=true")
