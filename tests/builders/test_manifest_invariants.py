"""What every manifest the builders make must satisfy: identity, labels, ownership, restricted pods."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from builder_samples import IMAGES, OWNER, containers, pod_spec

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}

Build = Callable[[], list[dict[str, Any]]]


def test_every_manifest_has_identity_labels_and_owner(all_manifests: Build) -> None:
    manifests = all_manifests()
    assert len(manifests) >= 10
    for m in manifests:
        what = f"{m.get('kind')}/{m.get('metadata', {}).get('name')}"
        assert m["apiVersion"] and m["kind"], what
        meta = m["metadata"]
        assert DNS_1123_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, what
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "edgespec", what
        assert labels["app.kubernetes.io/instance"] == OWNER.name, what
        assert labels["app.kubernetes.io/component"] in {"verifier", "draft", "profiler"}, what
        assert labels["app.kubernetes.io/managed-by"] == "edgespec", what
        assert labels["edgespec.dev/deployment"] == OWNER.name, what
        for key, value in labels.items():
            assert len(value) <= 63 and re.match(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$", value), (
                what,
                key,
            )
        if m["kind"] in CLUSTER_SCOPED:
            # a cluster-scoped object may not name a namespaced owner; it is found by labels instead
            assert "namespace" not in meta and "ownerReferences" not in meta, what
            assert labels["edgespec.dev/namespace"] == OWNER.namespace, what
            continue
        assert meta["namespace"] == OWNER.namespace, what
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "edgespec.dev/v1alpha1",
                "kind": "SpeculativeDeployment",
                "name": OWNER.name,
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], what


def test_workload_selectors_match_their_pod_labels(all_manifests: Build) -> None:
    for m in all_manifests():
        if m["kind"] in {"Deployment", "DaemonSet"}:
            selector = m["spec"]["selector"]["matchLabels"]
            pod_labels = m["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= pod_labels.items(), m["metadata"]["name"]
            assert "edgespec.dev/draft-model" not in selector  # selectors are immutable; choices change


def test_every_container_runs_restricted(all_manifests: Build) -> None:
    checked = 0
    for m in all_manifests():
        pod = pod_spec(m)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in containers(m):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
            assert all("hostPort" not in p for p in c.get("ports", [])), c["name"]
            checked += 1
    assert checked == 7  # init containers included


def test_volume_mounts_name_declared_volumes_and_images_come_from_input(all_manifests: Build) -> None:
    allowed_images = {IMAGES.edge, IMAGES.verifier, IMAGES.vllm}
    for m in all_manifests():
        pod = pod_spec(m)
        if pod is None:
            continue
        volumes = {v["name"] for v in pod.get("volumes", [])}
        names = [c["name"] for c in containers(m)]
        assert len(names) == len(set(names))
        for c in containers(m):
            assert c["image"] in allowed_images
            assert c["imagePullPolicy"] == IMAGES.pull_policy
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (m["metadata"]["name"], mount)
                assert "subPath" not in mount  # subPath mounts never see ConfigMap/Secret updates


def test_every_container_requests_and_limits_cpu_and_memory(all_manifests: Build) -> None:
    """Init containers and profilers included; a request never exceeds its limit; the spec's win."""
    from edgespec.builders.podspec import _amount

    checked = 0
    for m in all_manifests():
        for c in containers(m):
            where = f"{m['kind']}/{m['metadata']['name']} {c['name']}"
            res = c.get("resources") or {}
            for name in ("cpu", "memory"):
                request, limit = res.get("requests", {}).get(name), res.get("limits", {}).get(name)
                assert request is not None and limit is not None, f"{where}: no {name} request and limit"
                assert _amount(request) <= _amount(limit), (
                    f"{where}: {name} request {request} > limit {limit}"
                )
            checked += 1
            labels = m["metadata"]["labels"]
            if (m["kind"], labels.get("edgespec.dev/device-class"), c["name"]) == (
                "DaemonSet",
                "rpi5",
                "draft-server",
            ):
                # the class's own resources, untouched by the defaults
                assert res == {
                    "requests": {"cpu": "2", "memory": "1Gi"},
                    "limits": {"cpu": "4", "memory": "2Gi"},
                }
    assert checked == 7


def test_a_spec_naming_a_resource_keeps_it_and_defaults_fill_the_rest() -> None:
    from edgespec.api.deployment import Resources
    from edgespec.builders.podspec import resources

    defaults = Resources(requests={"cpu": "500m", "memory": "512Mi"}, limits={"cpu": "4", "memory": "4Gi"})
    assert resources(Resources(), defaults) == defaults.model_dump()
    # a request above the default limit raises the limit to it; an unnamed resource takes the defaults
    assert resources(Resources(requests={"memory": "8Gi"}), defaults) == {
        "requests": {"memory": "8Gi", "cpu": "500m"},
        "limits": {"memory": "8Gi", "cpu": "4"},
    }
    # a limit below the default request lowers the request to it
    assert resources(Resources(limits={"cpu": "250m"}), defaults)["requests"]["cpu"] == "250m"
    assert resources(Resources(limits={"cpu": "2"}), defaults)["requests"]["cpu"] == "500m"
    # not a quantity (admission lets it through): left as written for the API server to name the field
    lots = resources(Resources(requests={"cpu": "lots"}), defaults)
    assert lots["requests"]["cpu"] == "lots" and "cpu" not in lots["limits"]
    assert lots["limits"]["memory"] == "4Gi"
    # GPUs are request and limit alike
    assert resources(Resources(), defaults, {"nvidia.com/gpu": 2})["limits"]["nvidia.com/gpu"] == 2
