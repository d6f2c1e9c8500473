"""Profiling: one Job per (device class, draft model, quantisation), and the profiler's RBAC.

Each Job runs the edge image's ``profile`` command on one chosen node of the class against the
verifier Service, measures v_d, alpha(K) and T_verify(K), and writes the result as an ``EdgeProfile``.
It is pinned with node affinity on the node's name (what DaemonSets use) rather than ``nodeName``,
so the scheduler still honours the node's taints and free resources. The draft GGUF is fetched by an
init container into an ``emptyDir`` (a link into the node model cache when there is one); the
verifier token is mounted from its Secret.

RBAC: EdgeProfiles are cluster-scoped, so writing them needs a ClusterRole and a ClusterRoleBinding.
Cluster-scoped objects cannot name a namespaced owner in an owner reference (the garbage collector
would treat the reference as dangling), so those two carry no owner reference; they carry the
common labels plus ``edgespec.dev/namespace`` instead, and the handler deletes the binding when the
deployment goes (the ClusterRole is one shared object whose rules depend on nothing per deployment).
"""

from __future__ import annotations

from typing import Any

from edgespec.api.base import GROUP
from edgespec.api.profile import LABEL_DRAFT_MODEL, LABEL_QUANTIZATION, label_value
from edgespec.builders.inputs import ProfilingJobInput
from edgespec.builders.naming import (
    LABEL_NAMESPACE,
    PROFILER_CLUSTER_ROLE,
    Owner,
    common_labels,
    object_meta,
    profiler_cluster_role_binding_name,
    profiler_service_account_name,
    profiling_job_name,
    verifier_secret_name,
    verifier_url,
)
from edgespec.builders.podspec import (
    EDGE_COMMAND,
    MODELS_DIR,
    TMP_DIR,
    TMP_VOLUME,
    TOKEN_FILE,
    container_security_context,
    fetch_init_container,
    model_mounts,
    pod_security_context,
    resources,
    scratch_volumes,
    threads_env,
    token_mount,
    token_volume,
    tolerations,
)

CONTAINER = "profiler"
DRAFT_FILE = "draft.gguf"
PROMPTS_DIR = "/etc/edgespec/prompts"
PROMPTS_KEY = "prompts.jsonl"
PROMPTS_VOLUME = "prompts"

PROFILER_RULES: list[dict[str, Any]] = [
    {
        # Exactly what writing one's own measurement needs: read it back (get), create it the first
        # time, replace or patch it on a re-profile. No list/watch (a profiler has no business
        # enumerating others' profiles), no delete, and nothing else in the cluster: the Job's
        # token is on an edge device we do not fully trust. resourceNames cannot narrow create, so
        # create stays unrestricted; the API server's schema and CEL rules still validate the body.
        "apiGroups": [GROUP],
        "resources": ["edgeprofiles"],
        "verbs": ["get", "create", "patch", "update"],
    }
]


def build_profiling_job(inp: ProfilingJobInput) -> dict[str, Any]:
    """The Job profiling one (device class, draft, quantisation) on ``inp.node_name``."""
    device_class = inp.device_class(inp.device_class_name)
    source = inp.draft_quantization(inp.draft_model, inp.quantization).source
    spec = inp.spec
    name = profiling_job_name(inp.owner, device_class.name, inp.draft_model, inp.quantization)
    extra = {
        LABEL_DRAFT_MODEL: label_value(inp.draft_model),
        LABEL_QUANTIZATION: label_value(inp.quantization),
    }
    meta = object_meta(inp.owner, name, "profiler", device_class.name, extra)
    # One draft GGUF, fetched by the init container, measured against the deployment's verifier
    # Service (URL and token file from the environment, as the draft server takes them); the result
    # is server-side applied as an EdgeProfile with the Job's ServiceAccount, where the operator
    # reads profiles. The target's name must be the deployment's, or the operator ignores the profile.
    args = [
        "profile",
        "--draft-file", f"{MODELS_DIR}/{DRAFT_FILE}",
        "--draft-model", inp.draft_model,
        "--quantization", inp.quantization,
        "--device-class", device_class.name,
        "--target-model", spec.target.name,
        "--k-min", str(spec.speculative_length.min),
        "--k-max", str(spec.speculative_length.max),
        "--apply",
    ]  # fmt: skip
    mounts = [
        *model_mounts(inp.model_cache),
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        token_mount(),
    ]
    volumes = [*scratch_volumes(inp.model_cache), token_volume(verifier_secret_name(inp.owner))]
    if spec.profiling.prompts_config_map:
        args += ["--prompts", f"{PROMPTS_DIR}/{PROMPTS_KEY}"]
        mounts.append({"name": PROMPTS_VOLUME, "mountPath": PROMPTS_DIR, "readOnly": True})
        volumes.append(
            {
                "name": PROMPTS_VOLUME,
                "configMap": {
                    "name": spec.profiling.prompts_config_map,
                    "items": [{"key": PROMPTS_KEY, "path": PROMPTS_KEY}],
                },
            }
        )
    container = {
        "name": CONTAINER,
        "image": inp.images.edge,
        "imagePullPolicy": inp.images.pull_policy,
        "command": EDGE_COMMAND,
        "args": args,
        "env": [
            {"name": "HOME", "value": TMP_DIR},
            {"name": "EDGESPEC_EDGE_VERIFIER_URL", "value": verifier_url(inp.owner, spec.verifier.port)},
            {"name": "EDGESPEC_EDGE_VERIFIER_TOKEN_FILE", "value": TOKEN_FILE},
            threads_env("EDGESPEC_EDGE_N_THREADS", CONTAINER, device_class.threads),
            {"name": "EDGESPEC_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "resources": resources(device_class.resources),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
    }
    pin_to_node = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [inp.node_name]}]}
                ]
            }
        }
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "activeDeadlineSeconds": spec.profiling.timeout_seconds,
            "backoffLimit": spec.profiling.retries,
            "ttlSecondsAfterFinished": inp.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": meta["labels"]},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": profiler_service_account_name(inp.owner),
                    "automountServiceAccountToken": True,  # the profiler writes its EdgeProfile
                    "securityContext": pod_security_context(),
                    "nodeSelector": dict(device_class.node_selector),
                    "affinity": pin_to_node,
                    "tolerations": tolerations(device_class.tolerations),
                    "initContainers": [fetch_init_container(inp.images, source, DRAFT_FILE, inp.model_cache)],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def build_profiler_service_account(owner: Owner) -> dict[str, Any]:
    """The profiling Jobs' ServiceAccount in the deployment's namespace (owned: deleted with it)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(owner, profiler_service_account_name(owner), "profiler"),
    }


def _cluster_scoped_meta(owner: Owner, name: str) -> dict[str, Any]:
    return {"name": name, "labels": {**common_labels(owner, "profiler"), LABEL_NAMESPACE: owner.namespace}}


def build_profiler_cluster_role(owner: Owner) -> dict[str, Any]:
    """The shared ClusterRole of all profilers (see :data:`PROFILER_RULES`); no owner reference.

    Its labels name the deployment that last applied it; its rules are the same for every caller.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": _cluster_scoped_meta(owner, PROFILER_CLUSTER_ROLE),
        "rules": PROFILER_RULES,
    }


def build_profiler_cluster_role_binding(owner: Owner) -> dict[str, Any]:
    """Binds the deployment's profiler ServiceAccount to the shared ClusterRole; deleted by the handler."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": _cluster_scoped_meta(owner, profiler_cluster_role_binding_name(owner)),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PROFILER_CLUSTER_ROLE,
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": profiler_service_account_name(owner),
                "namespace": owner.namespace,
            }
        ],
    }


def build_profiler_rbac(owner: Owner) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding, in the order to apply them."""
    return [
        build_profiler_service_account(owner),
        build_profiler_cluster_role(owner),
        build_profiler_cluster_role_binding(owner),
    ]
