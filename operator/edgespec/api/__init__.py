"""The edgespec API (group ``edgespec.dev``, version ``v1alpha1``) as pydantic models.

These models are the single source of truth for the resource shapes: the CRDs under ``crds/`` are
generated from them (``edgespec crds``), the operator parses specs into them at its boundary, and the
profiler and the ConfigSpec model read and write the same ``EdgeProfile`` shape.
"""

from edgespec.api.base import API_VERSION, GROUP, VERSION, ApiModel
from edgespec.api.objective import (
    OBJECTIVE_KINDS,
    ByteQuantity,
    Constraints,
    Objective,
    ObjectiveKind,
    ObjectiveWeights,
    quantity_to_bytes,
)
from edgespec.api.profile import (
    AcceptancePoint,
    EdgeProfile,
    EdgeProfileSpec,
    PowerSource,
    VerifyLatency,
    VerifyLatencyPoint,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "OBJECTIVE_KINDS",
    "VERSION",
    "AcceptancePoint",
    "ApiModel",
    "ByteQuantity",
    "Constraints",
    "EdgeProfile",
    "EdgeProfileSpec",
    "Objective",
    "ObjectiveKind",
    "ObjectiveWeights",
    "PowerSource",
    "VerifyLatency",
    "VerifyLatencyPoint",
    "quantity_to_bytes",
]
