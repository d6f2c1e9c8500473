"""Operator settings, read once at start-up from the environment (``EDGESPEC_*``).

Workload images come from here (the Helm chart sets them), never from constants in code; the pure
builders receive them as an explicit input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgespec.builders.inputs import WorkloadResources


class OperatorSettings(BaseSettings):
    """What the operator process is configured with."""

    model_config = SettingsConfigDict(env_prefix="EDGESPEC_", extra="ignore")

    edge_image: str = Field(
        default="ghcr.io/edgespec/edge:0.1.0", description="Draft server and profiler image."
    )
    verifier_image: str = Field(
        default="ghcr.io/edgespec/verifier:0.1.0", description="llama.cpp verifier image."
    )
    vllm_image: str = Field(
        default="ghcr.io/edgespec/verifier-vllm:0.1.0", description="vLLM verifier image."
    )
    image_pull_policy: str = Field(default="IfNotPresent")
    workload_resources: WorkloadResources = Field(
        default_factory=WorkloadResources,
        description="Default requests and limits of the containers the operator makes, as JSON "
        "(chart: workloadResources); a spec's own resources win per resource name.",
    )
    field_manager: str = Field(default="edgespec-operator", description="Server-side apply field manager.")
    workers: int = Field(default=4, ge=1, le=64, description="Deployments reconciled concurrently.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Least severe log record the operator prints (the chart's operator.logLevel).",
    )
    namespaces: str = Field(default="", description="Comma-separated namespaces to watch; empty: all.")
    metrics_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of /metrics and /v1/telemetry; 0 disables both."
    )
    http_host: str = Field(default="0.0.0.0", description="Address the metrics and telemetry server binds.")
    model_cache_host_path: str = Field(
        default="",
        pattern=r"^(/.+)?$",
        description="Node-local model cache directory (chart: modelCache.hostPath); empty: none.",
    )
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate: serve /metrics and /v1/telemetry over HTTPS."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA of tls_cert_file: copied to the draft servers, which verify the telemetry "
        "endpoint against it (chart: metrics.tls.secretName's ca.crt).",
    )
    telemetry_url: str = Field(
        default="",
        description="URL draft servers push telemetry to (the chart sets its Service's); empty: none.",
    )
    telemetry_interval_seconds: int = Field(
        default=30, ge=1, le=3600, description="How often each draft server pushes its counts."
    )
    leader_election: bool = Field(
        default=False, description="Take a Lease before reconciling, so replicas run one at a time."
    )
    operator_namespace: str = Field(default="default", description="Where the Lease lives (the pod's).")
    lease_name: str = Field(default="edgespec-operator", description="Name of the leader-election Lease.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
