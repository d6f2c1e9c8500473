"""The cloud verifier: its token Secret, its Deployment and its ClusterIP Service.

Engine ``vllm`` runs the vLLM image on GPU nodes (``nvidia.com/gpu`` requested and limited, the
spec's node selector and tolerations, ``spec.verifier.vllmArgs`` passed through after ``--``).
Engine ``llamacpp`` runs the CPU image with the target GGUF fetched by an init container. Either way
the bearer token is mounted from the Secret as a file (the verifier re-reads it, so a rotation needs
no restart), ``/readyz`` gates traffic until the model is loaded, and ``/metrics`` is served on the
``http`` port.

With ``spec.verifier.tls`` the verifier serves HTTPS with the certificate and key of the user's Secret
(mounted here only, in the cloud), and the Secret's ``ca.crt`` is copied into a ConfigMap of its own
for the edge pods (:func:`build_verifier_ca_config_map`).
"""

from __future__ import annotations

import base64
from typing import Any

from edgespec.builders.inputs import DeploymentInput, VerifierInput
from edgespec.builders.naming import (
    object_meta,
    selector_labels,
    verifier_ca_name,
    verifier_name,
    verifier_secret_name,
)
from edgespec.builders.podspec import (
    CA_KEY,
    MODELS_DIR,
    MODELS_VOLUME,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TMP_DIR,
    TMP_VOLUME,
    TOKEN_FILE,
    TOKEN_KEY,
    VERIFIER_COMMAND,
    cache_mounts,
    container_security_context,
    fetch_init_container,
    graceful_stop,
    http_probes,
    pod_security_context,
    prometheus_annotations,
    resources,
    scratch_volumes,
    threads_env,
    tls_mount,
    tls_volume,
    token_mount,
    token_volume,
    tolerations,
)

CONTAINER = "verifier"
TARGET_FILE = "target.gguf"
ENGINE_ARGS_SEPARATOR = "--"
"""Arguments after this reach the engine untouched (vLLM's own flags such as ``--max-model-len``)."""


def build_verifier_secret(inp: VerifierInput) -> dict[str, Any]:
    """The Secret holding the bearer token edge servers and profilers present to the verifier."""
    token = inp.token.get_secret_value()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(inp.owner, verifier_secret_name(inp.owner), "verifier"),
        "type": "Opaque",
        # data, not stringData: server-side apply then compares like with like, so re-applying is a no-op
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def build_verifier_ca_config_map(inp: DeploymentInput) -> dict[str, Any] | None:
    """The CAs edge pods verify the cloud against: ``ca.crt`` of the verifier's TLS Secret (and that of
    the operator's telemetry endpoint when it serves HTTPS), and nothing else.

    None without TLS, or while the handler could not read the verifier's CA (the edge pods then wait
    for the ConfigMap rather than start without it).
    """
    bundle = inp.ca_bundle() if inp.edge_trust else None
    if bundle is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(inp.owner, verifier_ca_name(inp.owner), "verifier"),
        "data": {CA_KEY: bundle},
    }


def _image(inp: VerifierInput) -> str:
    verifier = inp.spec.verifier
    if verifier.image:
        return verifier.image
    return inp.images.vllm if verifier.engine == "vllm" else inp.images.verifier


def _container(inp: VerifierInput) -> dict[str, Any]:
    verifier = inp.spec.verifier
    target = inp.spec.target
    if verifier.engine == "vllm":
        if not target.vllm_model:
            raise ValueError("spec.target.vllmModel is required by the vllm verifier engine")
        model = target.vllm_model
    else:
        if target.gguf is None:
            raise ValueError("spec.target.gguf is required by the llamacpp verifier engine")
        model = f"{MODELS_DIR}/{TARGET_FILE}"
    args = [
        "--engine",
        verifier.engine,
        "--model",
        model,
        "--port",
        str(verifier.port),
        "--token-file",
        TOKEN_FILE,
    ]
    if inp.verifier_tls:
        args += ["--tls-cert-file", TLS_CERT_FILE, "--tls-key-file", TLS_KEY_FILE]
    env: list[dict[str, Any]] = [
        # read-only root: every cache (Hugging Face, vLLM, torch compile) goes under the models volume
        {"name": "HOME", "value": TMP_DIR},
        {"name": "HF_HOME", "value": f"{MODELS_DIR}/hf"},
        {"name": "XDG_CACHE_HOME", "value": f"{MODELS_DIR}/cache"},
    ]
    mounts = [
        {"name": MODELS_VOLUME, "mountPath": MODELS_DIR},  # writable: vLLM's caches live there
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        token_mount(),
    ]
    if inp.verifier_tls:
        mounts.append(tls_mount())
    gpus: dict[str, int | str] = {}
    if verifier.engine == "vllm":
        if verifier.vllm_args:
            args += [ENGINE_ARGS_SEPARATOR, *verifier.vllm_args]
        if verifier.gpus > 0:
            gpus["nvidia.com/gpu"] = verifier.gpus
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    else:
        env.append(threads_env("EDGESPEC_VERIFIER_N_THREADS", CONTAINER, None))
        mounts += cache_mounts(inp.model_cache)  # the fetched target may link into the node cache
    return {
        "name": CONTAINER,
        "image": _image(inp),
        "imagePullPolicy": inp.images.pull_policy,
        "command": VERIFIER_COMMAND,
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": verifier.port, "protocol": "TCP"}],
        "resources": resources(verifier.resources, inp.resources.verifier, gpus),
        "volumeMounts": mounts,
        "securityContext": container_security_context(),
        **http_probes(tls=inp.verifier_tls),
        **graceful_stop(),
    }


def build_verifier_deployment(inp: VerifierInput) -> dict[str, Any]:
    """The verifier Deployment (``spec.verifier.replicas`` pods on the verifier nodes)."""
    verifier = inp.spec.verifier
    name = verifier_name(inp.owner)
    meta = object_meta(inp.owner, name, "verifier")
    cache = inp.model_cache if verifier.engine == "llamacpp" else None  # vLLM loads models itself
    volumes = [*scratch_volumes(cache), token_volume(verifier_secret_name(inp.owner))]
    if verifier.tls is not None:
        volumes.append(tls_volume(verifier.tls.secret_name))
    init_containers: list[dict[str, Any]] = []
    if verifier.engine == "vllm":
        # vLLM's workers share tensors through /dev/shm, which is 64 MiB by default in a container
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    elif inp.spec.target.gguf is not None:
        init_containers.append(
            fetch_init_container(inp.images, inp.spec.target.gguf, TARGET_FILE, cache, inp.resources)
        )
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the verifier never talks to the API server
        "securityContext": pod_security_context(),
        "nodeSelector": dict(verifier.node_selector),
        "tolerations": tolerations(verifier.tolerations),
        "containers": [_container(inp)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 30,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": verifier.replicas,
            "selector": {"matchLabels": selector_labels(inp.owner, "verifier")},
            "template": {
                "metadata": {
                    "labels": meta["labels"],
                    "annotations": prometheus_annotations(verifier.port, inp.verifier_tls),
                },
                "spec": pod_spec,
            },
        },
    }


# How long a client (a draft server pod, the one client of its node's devices) stays on the verifier
# replica it was sent to after its last connection; docs/scaling.md says why ClientIP affinity.
AFFINITY_TIMEOUT_S = 600


def build_verifier_service(inp: VerifierInput) -> dict[str, Any]:
    """ClusterIP Service in front of the verifier pods; port name ``http`` (verify API and metrics).

    ``sessionAffinity: ClientIP`` keeps every round of a session on the replica that holds its KV
    state: a session's rounds all come from the one draft server of its device's node."""
    port = inp.spec.verifier.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(inp.owner, verifier_name(inp.owner), "verifier"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(inp.owner, "verifier"),
            "ports": [
                {
                    "name": "http",
                    "port": port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    # meshes and gateways then speak TLS to it rather than plain HTTP
                    **({"appProtocol": "https"} if inp.verifier_tls else {}),
                }
            ],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": AFFINITY_TIMEOUT_S}},
        },
    }


def build_verifier(inp: VerifierInput) -> list[dict[str, Any]]:
    """Secret, CA ConfigMap (with TLS), Deployment and Service, in the order to apply them."""
    ca = build_verifier_ca_config_map(inp)
    return [
        build_verifier_secret(inp),
        *([ca] if ca is not None else []),
        build_verifier_deployment(inp),
        build_verifier_service(inp),
    ]
