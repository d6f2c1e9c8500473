"""Fixtures for the ConfigSpec tests: the illustrative profile set and a profile factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec, VerifyLatency
from edgespec.configspec import load_profiles

REPO = Path(__file__).resolve().parents[2]
ILLUSTRATIVE = REPO / "samples" / "profiles" / "paper-illustrative.yaml"
GIB = 1024**3
PAPER_MEMORY = {"rpi4b": 8 * GIB, "rpi5": 8 * GIB, "jetson-agx-orin": 64 * GIB}


@pytest.fixture(scope="session")
def illustrative() -> list[EdgeProfileSpec]:
    return load_profiles([ILLUSTRATIVE])


def make_profile(**overrides: Any) -> EdgeProfileSpec:
    fields: dict[str, Any] = {
        "device_class": "rpi5",
        "draft_model": "draft-1b",
        "quantization": "Q4_K_M",
        "target_model": "llama-3.1-70b",
        "draft_tokens_per_s": 10.0,
        "power_watts": 8.0,
        "acceptance": [AcceptancePoint(k=k, alpha=0.7 * (2 / k) ** 0.3) for k in range(2, 11)],
        "verify_latency": VerifyLatency(fixed_s=0.5),
        "model_size_bytes": 800_000_000,
        "memory_bytes": 1_200_000_000,
    }
    fields.update(overrides)
    return EdgeProfileSpec(**fields)


@pytest.fixture
def profile() -> Callable[..., EdgeProfileSpec]:
    return make_profile
