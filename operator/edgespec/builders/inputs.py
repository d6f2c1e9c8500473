"""The typed inputs of the manifest builders: what the handler knows, passed as one object.

Builders read nothing else (no environment, no settings module, no cluster): the handler turns its
``OperatorSettings`` into :class:`WorkloadImages` once, parses the deployment once, and hands both
over together with the owner. That keeps every builder a pure function of its input.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

from edgespec.api.deployment import DeviceClass, DraftQuantization, Resources, SpeculativeDeploymentSpec
from edgespec.builders.naming import Owner

PullPolicy = Literal["Always", "IfNotPresent", "Never"]


class WorkloadImages(BaseModel):
    """The images the operator runs, from its settings (``EDGESPEC_*_IMAGE``, set by the Helm chart)."""

    model_config = ConfigDict(frozen=True)

    edge: str = Field(min_length=1, description="Draft server, profiler and model fetcher (multi-arch).")
    verifier: str = Field(min_length=1, description="Verifier with the llama.cpp engine (CPU).")
    vllm: str = Field(min_length=1, description="Verifier with the vLLM engine (GPU).")
    pull_policy: PullPolicy = "IfNotPresent"


def _resources(cpu: tuple[str, str], memory: tuple[str, str]) -> Resources:
    return Resources(
        requests={"cpu": cpu[0], "memory": memory[0]}, limits={"cpu": cpu[1], "memory": memory[1]}
    )


def _edge_server() -> Resources:
    """A draft server's defaults, and a profiler's (it measures one)."""
    return _resources(("500m", "4"), ("512Mi", "4Gi"))


class WorkloadResources(BaseModel):
    """Default requests and limits of every container the operator makes (chart: ``workloadResources``).

    A spec's own resources (``spec.verifier.resources``, ``spec.deviceClasses[].resources``) win, per
    resource name (see ``podspec.resources``). Model fetch init containers have no spec field: theirs
    are these. The defaults here are the chart's.
    """

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    fetch: Resources = Field(
        default_factory=lambda: _resources(("100m", "1"), ("128Mi", "1Gi")),
        description="Model fetch init containers (download, sha256, copy into the node cache).",
    )
    draft_server: Resources = Field(
        default_factory=_edge_server,
        description="Draft servers (their thread count follows the CPU limit unless a class sets threads).",
    )
    profiler: Resources = Field(
        default_factory=_edge_server,
        description="Profiling Jobs (as the draft server: they measure it).",
    )
    verifier: Resources = Field(
        default_factory=lambda: _resources(("1", "8"), ("2Gi", "16Gi")),
        description="Verifiers (GPUs come from spec.verifier.gpus).",
    )


class ModelCache(BaseModel):
    """The node-local model cache: a directory on every node (``hostPath``), from the operator's settings.

    Fetch init containers look a model up there first and fill it on a miss; the servers read the
    model from it. Without one (``None``) every pod fetches its models into its own ``emptyDir``.
    """

    model_config = ConfigDict(frozen=True)

    host_path: str = Field(
        min_length=2,
        pattern=r"^/",
        description="Absolute directory on each node (chart: modelCache.hostPath).",
    )


class DeploymentInput(BaseModel):
    """What every per-deployment builder needs: who owns the children, the spec, the images."""

    model_config = ConfigDict(frozen=True)

    owner: Owner
    spec: SpeculativeDeploymentSpec
    images: WorkloadImages
    resources: WorkloadResources = Field(
        default_factory=WorkloadResources, description="Default requests and limits of every container."
    )
    model_cache: ModelCache | None = Field(default=None, description="None: each pod fetches its own models.")
    verifier_ca: str | None = Field(
        default=None,
        description="PEM CA bundle (``ca.crt`` of spec.verifier.tls's Secret, read by the handler) that "
        "edge pods verify the verifier against; None without TLS or while the Secret is not readable.",
    )

    operator_ca: str | None = Field(
        default=None,
        description="PEM CA of the operator's HTTPS telemetry endpoint, when the draft servers report to "
        "it; copied into the same CA ConfigMap as verifier_ca.",
    )

    @property
    def verifier_tls(self) -> bool:
        """The verifier serves HTTPS, and edge pods use an https URL for it."""
        return self.spec.verifier.tls is not None

    @property
    def edge_trust(self) -> bool:
        """Edge pods mount the CA ConfigMap: the verifier or the operator's telemetry endpoint is HTTPS."""
        return self.verifier_tls or self.operator_ca is not None

    def ca_bundle(self) -> str | None:
        """What edge pods trust: the verifier's CA and the operator's; None while the verifier's is unread."""
        if self.verifier_tls and self.verifier_ca is None:
            return None
        parts = [self.verifier_ca if self.verifier_tls else None, self.operator_ca]
        pems = [p if p.endswith("\n") else p + "\n" for p in parts if p]
        return "".join(pems) or None

    def device_class(self, name: str) -> DeviceClass:
        for device_class in self.spec.device_classes:
            if device_class.name == name:
                return device_class
        known = ", ".join(c.name for c in self.spec.device_classes)
        raise ValueError(f"device class {name!r} is not in spec.deviceClasses ({known})")

    def draft_quantization(self, draft_model: str, quantization: str) -> DraftQuantization:
        for draft in self.spec.drafts:
            if draft.name != draft_model:
                continue
            for quant in draft.quantizations:
                if quant.quantization == quantization:
                    return quant
            known = ", ".join(q.quantization for q in draft.quantizations)
            raise ValueError(f"draft {draft_model!r} has no quantization {quantization!r} ({known})")
        raise ValueError(f"draft {draft_model!r} is not in spec.drafts")


class VerifierInput(DeploymentInput):
    """Input of the verifier builders. The token is generated once by the handler and kept in the Secret."""

    token: SecretStr = Field(description="The verifier's bearer token (also mounted into edge pods).")


class Telemetry(BaseModel):
    """Where draft servers push their live counts (the operator's ``/v1/telemetry``), and how often."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(min_length=1)
    interval_seconds: int = Field(default=30, ge=1)
    ca: str | None = Field(default=None, description="PEM CA of an https url (the operator's certificate).")


class DraftServerInput(DeploymentInput):
    """Input of the draft-server builders for one device class and its chosen (M, Q, K)."""

    device_class_name: str = Field(min_length=1)
    draft_model: str = Field(min_length=1)
    quantization: str = Field(min_length=1)
    k: int = Field(ge=1, le=64, description="Speculative length; lands only in the ConfigMap.")
    cloud_only: bool = Field(
        default=False,
        description="Cloud-only decoding (selection mode cloudOnly): no draft model is fetched or loaded; "
        "the servers stream the verifier's own generation.",
    )
    telemetry: Telemetry | None = Field(default=None, description="None: the servers report nothing.")
    surge: bool = Field(
        default=False,
        description="Roll a draft change by starting the new pod beside the old one (the node's memory "
        "fits both); False: stop the old pod first.",
    )


class ProfilingJobInput(DeploymentInput):
    """Input of the profiling Job of one (device class, draft, quantisation), pinned to one node."""

    device_class_name: str = Field(min_length=1)
    draft_model: str = Field(min_length=1)
    quantization: str = Field(min_length=1)
    node_name: str = Field(min_length=1, description="The node of the class to profile on.")
    ttl_seconds_after_finished: int = Field(
        default=3600, ge=0, description="Keep the finished Job this long so the handler sees how it ended."
    )
