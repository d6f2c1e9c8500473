"""``EdgeProfile``: one measured profile of a draft model on a device class against a target.

A profile holds what ConfigSpec needs for one (device class, draft model M, quantisation Q, target):
drafting speed v_d, power P while drafting, acceptance alpha(K) per speculative length K (or a
per-token acceptance from which alpha(K) is derived), and verification latency T_verify. Profiling
Jobs write them; users may ``kubectl apply`` their own. The same model parses a profile read from a
YAML file and one read from the cluster, so both go through one path.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from edgespec.api.base import API_VERSION, ApiModel

PowerSource = Literal["ina3221", "vcgencmd", "rapl", "nominal"]
"""Where the power reading came from; ``nominal`` means a declared wattage, not a measurement."""

ProfileOrigin = Literal["measured", "imported", "illustrative"]

LABEL_DEVICE_CLASS = "edgespec.dev/device-class"
LABEL_DRAFT_MODEL = "edgespec.dev/draft-model"
LABEL_QUANTIZATION = "edgespec.dev/quantization"
LABEL_TARGET = "edgespec.dev/target"

Name = Annotated[str, Field(min_length=1, max_length=128)]


FINITE = ConfigDict(allow_inf_nan=False)
"""Profiles are numbers measured or typed by people: NaN and infinity are always mistakes."""
MAX_SECONDS = 3600.0


class AcceptancePoint(ApiModel):
    """Measured acceptance at one speculative length: the fraction of drafted tokens accepted."""

    model_config = FINITE

    k: int = Field(ge=1, le=64, description="Speculative length K (draft tokens per round).")
    alpha: float = Field(ge=0.0, le=1.0, description="Fraction of the K drafted tokens accepted.")
    samples: int = Field(default=0, ge=0, description="Verification rounds the estimate is based on.")


class VerifyLatencyPoint(ApiModel):
    """Measured verification latency (network round trip plus target forward pass) at one K."""

    model_config = FINITE

    k: int = Field(ge=1, le=64, description="Speculative length K.")
    seconds: float = Field(
        ge=0.0, le=MAX_SECONDS, description="Median wall time of one verify round of K drafts, seconds."
    )
    samples: int = Field(default=0, ge=0, description="Rounds measured.")


class VerifyLatency(ApiModel):
    """T_verify(K) = network_rtt_s + fixed_s + per_token_s * K, or the measured points when present."""

    model_config = FINITE

    fixed_s: float = Field(
        default=0.0, ge=0.0, le=MAX_SECONDS, description="Target forward pass cost independent of K, s."
    )
    per_token_s: float = Field(
        default=0.0, ge=0.0, le=MAX_SECONDS, description="Extra target cost per drafted token, s."
    )
    network_rtt_s: float = Field(
        default=0.0, ge=0.0, le=MAX_SECONDS, description="Edge-to-verifier round trip, s."
    )
    measured: list[VerifyLatencyPoint] = Field(
        default_factory=list, description="Measured T_verify per K; preferred over the linear model."
    )

    def at(self, k: int) -> float:
        """T_verify for speculative length ``k`` from the linear model (seconds)."""
        return self.network_rtt_s + self.fixed_s + self.per_token_s * k


class TargetDecode(ApiModel):
    """The target decoding alone at the verifier, seen from this device class: cloud-only decoding.

    The no-speculation baseline: every token is the target's own, one decode step each, streamed
    back; the link adds its round trip once, to the first token.
    """

    model_config = FINITE

    per_token_s: float = Field(
        gt=0.0, le=MAX_SECONDS, description="Target's time per generated token when it decodes alone, s."
    )
    ttft_s: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_SECONDS,
        description="Time to the first token over the link (round trip plus the prompt read), s.",
    )
    samples: int = Field(default=0, ge=0, description="Decode steps the per-token time is based on.")


class EdgeProfileSpec(ApiModel):
    """What was measured, for which (device class, draft, quantisation, target)."""

    model_config = ConfigDict(
        allow_inf_nan=False,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.acceptance) && size(self.acceptance) > 0)"
                    " || has(self.perTokenAcceptance)",
                    "message": "set acceptance (alpha per K) or perTokenAcceptance",
                    "fieldPath": ".acceptance",
                    "reason": "FieldValueRequired",
                },
            ]
        },
    )

    device_class: Name = Field(description="Device class the profile was measured on (e.g. rpi5).")
    draft_model: Name = Field(description="Draft model name, as in the deployment's draft catalogue.")
    quantization: Name = Field(description="GGUF quantisation of the draft (e.g. Q4_K_M).")
    target_model: Name = Field(description="Target (verifier) model the acceptance was measured against.")
    draft_tokens_per_s: float = Field(
        gt=0.0, le=1e6, description="Drafting speed v_d on this device, tokens/s."
    )
    power_watts: float = Field(ge=0.0, le=1e5, description="Device power P while drafting, watts.")
    power_source: PowerSource = Field(default="nominal", description="Sensor behind power_watts.")
    acceptance: list[AcceptancePoint] = Field(
        default_factory=list, description="Measured alpha(K); missing K are interpolated."
    )
    per_token_acceptance: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Per-token acceptance estimate; alpha(K) is then derived with the geometric model.",
    )
    verify_latency: VerifyLatency = Field(default_factory=VerifyLatency, description="T_verify model.")
    round_overhead_s: float = Field(
        default=0.0,
        ge=0.0,
        le=60.0,
        description="Fixed edge time per draft-verify round that neither K / v_d nor T_verify covers "
        "(starting a draft run, sampling, bookkeeping), s. Added to every round's time.",
    )
    target_decode: TargetDecode | None = Field(
        default=None,
        description="The target decoding alone (no speculation), measured over the same link; lets the "
        "selection say when speculation does not pay.",
    )
    model_size_bytes: int = Field(default=0, ge=0, description="Size of the draft GGUF file, bytes.")
    memory_bytes: int = Field(
        default=0, ge=0, description="Resident memory need while drafting (model, KV cache, runtime), bytes."
    )
    speed_samples: int = Field(default=0, ge=0, description="Drafting-speed runs behind v_d.")
    measured_at: datetime | None = Field(
        default=None, description="When the profile was measured (RFC 3339)."
    )
    origin: ProfileOrigin | None = Field(
        default=None,
        description="measured, imported or illustrative; absent means unknown (never taken as measured).",
    )
    notes: str | None = Field(default=None, max_length=4096, description="Free text: how it was obtained.")

    @model_validator(mode="after")
    def _acceptance_given(self) -> EdgeProfileSpec:
        if not self.acceptance and self.per_token_acceptance is None:
            raise ValueError("spec.acceptance: set acceptance (alpha per K) or spec.perTokenAcceptance")
        ks = [p.k for p in self.acceptance]
        if len(set(ks)) != len(ks):
            raise ValueError("spec.acceptance: each k may appear once")
        return self


class ObjectMeta(ApiModel):
    """The subset of metadata the project reads; the rest passes through untouched."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class EdgeProfile(ApiModel):
    """A measured profile of a draft model on a device class against a target (cluster-scoped).

    It holds drafting speed, power, acceptance per K and verification latency; profiling Jobs write
    them and users may apply their own.
    """

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: Literal["EdgeProfile"] = "EdgeProfile"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: EdgeProfileSpec

    @classmethod
    def for_spec(cls, spec: EdgeProfileSpec) -> EdgeProfile:
        """A profile object with its canonical name and selector labels."""
        return cls(metadata=ObjectMeta(name=profile_name(spec), labels=profile_labels(spec)), spec=spec)


_NOT_DNS = re.compile(r"[^a-z0-9.-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters, alphanumeric ends), hashed when too long."""
    value = _NOT_LABEL.sub("-", text).strip("-_.")
    if len(value) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        value = value[:54].rstrip("-_.") + "-" + digest
    return value


def profile_labels(spec: EdgeProfileSpec) -> dict[str, str]:
    """Labels that let the operator list the profiles of one target or device class cheaply."""
    return {
        LABEL_DEVICE_CLASS: label_value(spec.device_class),
        LABEL_DRAFT_MODEL: label_value(spec.draft_model),
        LABEL_QUANTIZATION: label_value(spec.quantization),
        LABEL_TARGET: label_value(spec.target_model),
    }


def profile_name(spec: EdgeProfileSpec) -> str:
    """Deterministic object name for the profile's key, so a re-profile replaces the old object."""
    key = f"{spec.device_class}/{spec.draft_model}/{spec.quantization}/{spec.target_model}"
    readable = _NOT_DNS.sub("-", f"{spec.device_class}.{spec.draft_model}.{spec.quantization}".lower())
    readable = re.sub(r"-+", "-", readable).strip("-.")[:200]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
