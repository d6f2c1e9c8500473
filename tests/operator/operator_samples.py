"""Inputs shared by the operator's pure tests."""

from __future__ import annotations

from datetime import datetime

from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec


def uniform_profiles(spec: SpeculativeDeploymentSpec, measured_at: datetime) -> list[EdgeProfileSpec]:
    """One identical profile per (class, draft, quantisation) of ``spec``: every configuration feasible."""
    return [
        EdgeProfileSpec(
            device_class=c.name,
            draft_model=d.name,
            quantization=q.quantization,
            target_model=spec.target.name,
            draft_tokens_per_s=40.0,
            power_watts=6.0,
            acceptance=[AcceptancePoint(k=2, alpha=0.6)],
            measured_at=measured_at,
        )
        for c in spec.device_classes
        for d in spec.drafts
        for q in d.quantizations
    ]
