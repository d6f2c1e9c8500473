"""Fixtures of the builder tests: a realistic deployment, its owner and the workload images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from builder_samples import IMAGES, OWNER, SPEC, with_engine
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    DraftServerInput,
    ProfilingJobInput,
    VerifierInput,
    build_draft_servers,
    build_draft_service,
    build_profiling_job,
    build_verifier,
)


@pytest.fixture
def spec() -> SpeculativeDeploymentSpec:
    return SpeculativeDeploymentSpec.model_validate(SPEC)


@pytest.fixture
def verifier_input(spec: SpeculativeDeploymentSpec) -> VerifierInput:
    return VerifierInput(owner=OWNER, spec=spec, images=IMAGES, token="s3cret-token")


@pytest.fixture
def draft_input(spec: SpeculativeDeploymentSpec) -> DraftServerInput:
    return DraftServerInput(
        owner=OWNER, spec=spec, images=IMAGES, device_class_name="rpi5", draft_model="gemma-17b",
        quantization="Q4_K_M", k=4,
    )  # fmt: skip


@pytest.fixture
def profiling_input(spec: SpeculativeDeploymentSpec) -> ProfilingJobInput:
    return ProfilingJobInput(
        owner=OWNER, spec=spec, images=IMAGES, device_class_name="rpi5", draft_model="gemma-17b",
        quantization="Q4_K_M", node_name="rpi5-node-0",
    )  # fmt: skip


@pytest.fixture
def all_manifests(
    verifier_input: VerifierInput, draft_input: DraftServerInput, profiling_input: ProfilingJobInput
) -> Callable[[], list[dict[str, Any]]]:
    """Every manifest the builders make for the sample, both verifier engines included."""

    def build() -> list[dict[str, Any]]:
        llamacpp = with_engine(verifier_input, "llamacpp")
        return [
            *build_verifier(verifier_input),
            *build_verifier(llamacpp),
            *build_draft_servers(draft_input),
            build_draft_service(draft_input),
            build_profiling_job(profiling_input),
        ]

    return build
