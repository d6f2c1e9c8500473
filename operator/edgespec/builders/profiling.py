"""Profiling: one Job per (device class, draft model, quantisation), with no API rights.

Each Job runs the edge image's ``profile`` command on one chosen node of the class against the
verifier Service, measures v_d, alpha(K) and T_verify(K), and writes the result as an ``EdgeProfile``.
It is pinned with node affinity on the node's name (what DaemonSets use) rather than ``nodeName``,
so the scheduler still honours the node's taints and free resources. The draft GGUF is fetched by an
init container into an ``emptyDir`` (a link into the node model cache when there is one); the
verifier token is mounted from its Secret.

Trust: the profiler runs on an edge node and gets no API rights at all. No ServiceAccount token
is mounted; it writes its measurement as its termination message (``--report``), which only the
kubelet of its node can put into the pod's status, and the operator validates it (from the Job it
launched, on the node it pinned, for the key it asked, finite and in range: ``edgespec.provenance``)
before it creates or updates the shared, cluster-scoped ``EdgeProfile`` with provenance. So there
is no profiler ServiceAccount, Role, ClusterRole or ClusterRoleBinding to make, leak or orphan.
"""

from __future__ import annotations

from typing import Any

from edgespec.api.profile import LABEL_DRAFT_MODEL, LABEL_QUANTIZATION, label_value
from edgespec.builders.inputs import ProfilingJobInput
from edgespec.builders.naming import (
    object_meta,
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
    verifier_trust,
)

CONTAINER = "profiler"
DRAFT_FILE = "draft.gguf"
PROMPTS_DIR = "/etc/edgespec/prompts"
PROMPTS_KEY = "prompts.jsonl"
PROMPTS_VOLUME = "prompts"

REPORT_FILE = "/dev/termination-log"
"""Where the profiler writes its result: the container's termination message (at most 4 KiB)."""


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
        "--report", REPORT_FILE,
    ]  # fmt: skip
    trust = verifier_trust(inp)
    mounts = [
        *model_mounts(inp.model_cache),
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        token_mount(),
        *trust.mounts,
    ]
    volumes = [
        *scratch_volumes(inp.model_cache),
        token_volume(verifier_secret_name(inp.owner)),
        *trust.volumes,
    ]
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
            {
                "name": "EDGESPEC_EDGE_VERIFIER_URL",
                "value": verifier_url(inp.owner, spec.verifier.port, inp.verifier_tls),
            },
            {"name": "EDGESPEC_EDGE_VERIFIER_TOKEN_FILE", "value": TOKEN_FILE},
            *trust.env,
            threads_env("EDGESPEC_EDGE_N_THREADS", CONTAINER, device_class.threads),
            {"name": "EDGESPEC_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ],
        "resources": resources(device_class.resources, inp.resources.profiler),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        "terminationMessagePath": REPORT_FILE,
        "terminationMessagePolicy": "File",  # the report only, never logs the operator would misread
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
                    "automountServiceAccountToken": False,  # no API rights: it reports, we decide
                    "securityContext": pod_security_context(),
                    "nodeSelector": dict(device_class.node_selector),
                    "affinity": pin_to_node,
                    "tolerations": tolerations(device_class.tolerations),
                    "initContainers": [
                        fetch_init_container(inp.images, source, DRAFT_FILE, inp.model_cache, inp.resources)
                    ],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
