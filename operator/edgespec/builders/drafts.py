"""The edge draft servers: per device class a ConfigMap holding K, a DaemonSet, and a node-local Service.

K lives only in the ConfigMap, mounted as a directory (never via ``subPath``, which would freeze the
file); the draft server stats the file every round and re-reads it when it changes. So a new K
changes the ConfigMap and leaves the DaemonSet's pod template byte-for-byte identical: no rollout,
no dropped requests. A new draft model or quantisation changes the template (the fetch init
container's source and the pod labels) and rolls the DaemonSet node by node.

A class whose selection runs cloud-only (``spec.cloudOnlyFallback`` where speculation does not pay)
gets draft servers in ``--mode cloud-only``: no fetch init container, no model volume or cache, no
draft model loaded; they stream the verifier's own generation. The mode is in the environment (a change
rolls the pods, as it must: one loads a model, the other does not) and, for people and tools, in the
ConfigMap beside K.

Local clients reach their node's draft server through a Service with ``internalTrafficPolicy: Local``
rather than a ``hostPort``: host ports are forbidden by the baseline and restricted Pod Security
Standards we hold every pod to, and they collide with whatever else owns the port on a small device.
The Local policy keeps a client's requests on its own node (the point of drafting at the edge) and
never sends them over the network to another device's drafts.
"""

from __future__ import annotations

from typing import Any

import yaml

from edgespec.api.profile import LABEL_DRAFT_MODEL, LABEL_QUANTIZATION, label_value
from edgespec.builders.inputs import DeploymentInput, DraftServerInput
from edgespec.builders.naming import (
    draft_name,
    drafts_service_name,
    object_meta,
    selector_labels,
    verifier_secret_name,
    verifier_url,
)
from edgespec.builders.podspec import (
    EDGE_COMMAND,
    MODELS_DIR,
    TELEMETRY_TOKEN_FILE,
    TMP_DIR,
    TMP_VOLUME,
    TOKEN_FILE,
    container_security_context,
    fetch_init_container,
    graceful_stop,
    http_probes,
    model_mounts,
    pod_security_context,
    prometheus_annotations,
    resources,
    scratch_volumes,
    telemetry_token_mount,
    telemetry_token_volume,
    threads_env,
    token_mount,
    token_volume,
    tolerations,
    verifier_trust,
)

CONTAINER = "draft-server"
EDGE_PORT = 8080
DRAFT_FILE = "draft.gguf"
CONFIG_DIR = "/etc/edgespec/speculative"
CONFIG_KEY = "speculative.yaml"
CONFIG_FILE = f"{CONFIG_DIR}/{CONFIG_KEY}"
"""The draft server's ``EDGESPEC_EDGE_K_FILE``: YAML with ``k`` (re-read live) and ``verifierUrl``."""
CONFIG_VOLUME = "speculative-config"


def mode(inp: DraftServerInput) -> str:
    """The draft server's ``--mode``: ``cloud-only`` (no draft model) or ``speculative``."""
    return "cloud-only" if inp.cloud_only else "speculative"


def speculative_config(inp: DraftServerInput) -> str:
    """The ConfigMap file: ``k`` is re-read by the server; ``mode`` and ``verifierUrl`` are for humans
    and tools (the server takes its mode from its environment, fixed for the pod's life)."""
    body = {
        "k": inp.k,
        "mode": mode(inp),
        "verifierUrl": verifier_url(inp.owner, inp.spec.verifier.port, inp.verifier_tls),
    }
    header = "# Written by the edgespec operator; edits are overwritten.\n"
    return header + yaml.safe_dump(body, sort_keys=True)


def build_draft_config_map(inp: DraftServerInput) -> dict[str, Any]:
    """The ConfigMap holding K for one device class: the only object a change of K touches."""
    inp.device_class(inp.device_class_name)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(
            inp.owner, draft_name(inp.owner, inp.device_class_name), "draft", inp.device_class_name
        ),
        "data": {CONFIG_KEY: speculative_config(inp)},
    }


def _container(inp: DraftServerInput) -> dict[str, Any]:
    device_class = inp.device_class(inp.device_class_name)
    decoding = inp.spec.decoding
    temperature = 0.0 if decoding.mode == "greedy" else decoding.temperature
    env = [
        {"name": "HOME", "value": TMP_DIR},
        {"name": "EDGESPEC_EDGE_MODE", "value": mode(inp)},
        *(
            []
            if inp.cloud_only
            else [{"name": "EDGESPEC_EDGE_DRAFT_MODEL", "value": f"{MODELS_DIR}/{DRAFT_FILE}"}]
        ),
        {"name": "EDGESPEC_EDGE_SERVED_MODEL_NAME", "value": inp.spec.target.name},
        # The URL derives from the deployment's name alone, so it never changes over the object's life.
        {
            "name": "EDGESPEC_EDGE_VERIFIER_URL",
            "value": verifier_url(inp.owner, inp.spec.verifier.port, inp.verifier_tls),
        },
        {"name": "EDGESPEC_EDGE_VERIFIER_TOKEN_FILE", "value": TOKEN_FILE},
        *verifier_trust(inp).env,
        {"name": "EDGESPEC_EDGE_K_FILE", "value": CONFIG_FILE},
        {"name": "EDGESPEC_EDGE_HOST", "value": "0.0.0.0"},
        {"name": "EDGESPEC_EDGE_PORT", "value": str(EDGE_PORT)},
        {"name": "EDGESPEC_EDGE_DEFAULT_TEMPERATURE", "value": repr(temperature)},
        threads_env("EDGESPEC_EDGE_N_THREADS", CONTAINER, device_class.threads),
    ]
    if inp.telemetry is not None:
        # Identity rides in env, not the ConfigMap: it is fixed for the pod's life (the draft and
        # quantisation are in the pod template already; a change of either rolls the pods anyway).
        env += [
            {"name": "EDGESPEC_EDGE_TELEMETRY_URL", "value": inp.telemetry.url},
            {"name": "EDGESPEC_EDGE_TELEMETRY_INTERVAL_S", "value": str(inp.telemetry.interval_seconds)},
            {"name": "EDGESPEC_EDGE_NAMESPACE", "value": inp.owner.namespace},
            {"name": "EDGESPEC_EDGE_DEPLOYMENT", "value": inp.owner.name},
            {"name": "EDGESPEC_EDGE_DEVICE_CLASS", "value": inp.device_class_name},
            {"name": "EDGESPEC_EDGE_DRAFT_NAME", "value": inp.draft_model},
            {"name": "EDGESPEC_EDGE_QUANTIZATION", "value": inp.quantization},
            {"name": "EDGESPEC_EDGE_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "EDGESPEC_EDGE_TELEMETRY_TOKEN_FILE", "value": TELEMETRY_TOKEN_FILE},
        ]
    return {
        "name": CONTAINER,
        "image": inp.images.edge,
        "imagePullPolicy": inp.images.pull_policy,
        "command": EDGE_COMMAND,
        "args": ["serve"],
        "env": env,
        "ports": [{"name": "http", "containerPort": EDGE_PORT, "protocol": "TCP"}],
        "resources": resources(device_class.resources, inp.resources.draft_server),
        "volumeMounts": [
            *([] if inp.cloud_only else model_mounts(inp.model_cache)),
            {"name": TMP_VOLUME, "mountPath": TMP_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            token_mount(),
            *verifier_trust(inp).mounts,
            *([telemetry_token_mount()] if inp.telemetry is not None else []),
        ],
        "securityContext": container_security_context(),
        **http_probes(),
        **graceful_stop(),
    }


def update_strategy(surge: bool) -> dict[str, Any]:
    """How the DaemonSet replaces a node's draft server when its pod template changes.

    Surge (the node's memory fits the old and the new draft): the new pod starts beside the old one,
    which goes only once the new one is ready (its readiness probe: model loaded), so the node's
    clients are served throughout; the node-local draft Service sends them to whichever is ready.
    Drain: the old pod stops first, one node of the class at a time, and the node's clients get no
    draft server until the new one is ready (the gap docs/operator.md describes)."""
    if surge:
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def build_draft_daemon_set(inp: DraftServerInput) -> dict[str, Any]:
    """One draft server on every node of the device class, running the chosen draft and quantisation."""
    device_class = inp.device_class(inp.device_class_name)
    source = inp.draft_quantization(inp.draft_model, inp.quantization).source
    trust = verifier_trust(inp)
    name = draft_name(inp.owner, device_class.name)
    meta = object_meta(inp.owner, name, "draft", device_class.name)
    pod_labels = {
        **meta["labels"],
        # In the template on purpose: a new draft or quantisation must roll the pods.
        LABEL_DRAFT_MODEL: label_value(inp.draft_model),
        LABEL_QUANTIZATION: label_value(inp.quantization),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": selector_labels(inp.owner, "draft", device_class.name)},
            "updateStrategy": update_strategy(inp.surge),
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {**prometheus_annotations(EDGE_PORT), **trust.annotations},
                },
                "spec": {
                    # Drafts never talk to the API server; their telemetry token is projected apart.
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(),
                    "nodeSelector": dict(device_class.node_selector),
                    "tolerations": tolerations(device_class.tolerations),
                    # Cloud-only: no draft model to fetch or keep, so no init container and no cache.
                    **(
                        {}
                        if inp.cloud_only
                        else {
                            "initContainers": [
                                fetch_init_container(
                                    inp.images, source, DRAFT_FILE, inp.model_cache, inp.resources
                                )
                            ]
                        }
                    ),
                    "containers": [_container(inp)],
                    "volumes": [
                        *(
                            [{"name": TMP_VOLUME, "emptyDir": {}}]
                            if inp.cloud_only
                            else scratch_volumes(inp.model_cache)
                        ),
                        {
                            "name": CONFIG_VOLUME,
                            "configMap": {"name": name, "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]},
                        },
                        token_volume(verifier_secret_name(inp.owner)),
                        *trust.volumes,
                        *([telemetry_token_volume()] if inp.telemetry is not None else []),
                    ],
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
    }


def build_draft_service(inp: DeploymentInput) -> dict[str, Any]:
    """One node-local Service for the deployment's draft servers of every class (OpenAI API, ``http``).

    With ``internalTrafficPolicy: Local`` a client reaches the draft server on its own node, whatever
    the node's class, under one name (``<deployment>-draft``). One Service rather than one per class:
    fewer objects whose endpoints the cluster must keep current.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(inp.owner, drafts_service_name(inp.owner), "draft"),
        "spec": {
            "type": "ClusterIP",
            "internalTrafficPolicy": "Local",
            "selector": selector_labels(inp.owner, "draft"),
            "ports": [{"name": "http", "port": EDGE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_draft_servers(inp: DraftServerInput) -> list[dict[str, Any]]:
    """ConfigMap and DaemonSet of one device class, in the order to apply them.

    The ConfigMap comes first so a new pod never starts without its K file. The deployment's one
    draft Service is ``build_draft_service``.
    """
    return [build_draft_config_map(inp), build_draft_daemon_set(inp)]
