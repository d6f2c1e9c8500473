"""What a deployment optimises for and what it must not violate: the ``Objective`` and ``Constraints``.

Both types are embedded directly in the ``SpeculativeDeployment`` spec and read by the ConfigSpec
selection (``edgespec.configspec``) and the ``edgespec rank`` command, so there is one definition of
an objective for the cluster, the command line and the model. Cross-field rules are CEL expressions
in the generated CRD (the API server rejects bad input at admission) and the same rules are checked
in Python, so a file read by the command line fails the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from edgespec.api.base import ApiModel

ObjectiveKind = Literal["goodput", "cost", "energy", "weighted"]
"""goodput: tokens/s; cost: tokens per USD; energy: joules per token; weighted: a normalised mix."""

OBJECTIVE_KINDS: tuple[ObjectiveKind, ...] = ("goodput", "cost", "energy", "weighted")

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?\s*$")
_QUANTITY_FACTOR = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
}

ByteQuantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
"""A byte count: an integer or a Kubernetes quantity such as ``512Mi`` or ``8Gi``."""


def quantity_to_bytes(value: int | str) -> int:
    """Bytes in an integer or a Kubernetes memory quantity (``8Gi``, ``512Mi``, ``1.5G``, ``1000``).

    Raises ``ValueError`` with the accepted forms when ``value`` is not a quantity.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a byte quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a byte quantity is >= 0")
        return value
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a byte quantity; use bytes (8589934592) or a suffix: 8Gi, 512Mi, 8G"
        )
    number, suffix = match.groups()
    return int(float(number) * _QUANTITY_FACTOR[suffix])


class ObjectiveWeights(ApiModel):
    """Relative weights of the three objectives; they are normalised to sum to one."""

    model_config = ConfigDict(
        allow_inf_nan=False,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.goodput) ? self.goodput : 0.0) + (has(self.cost) ? self.cost : 0.0)"
                    " + (has(self.energy) ? self.energy : 0.0) > 0.0",
                    "message": "at least one weight must be greater than zero",
                    "fieldPath": ".goodput",
                    "reason": "FieldValueInvalid",
                }
            ]
        },
    )

    goodput: float = Field(default=0.0, ge=0.0, le=1000.0, description="Weight of goodput (tokens/s).")
    cost: float = Field(default=0.0, ge=0.0, le=1000.0, description="Weight of cost efficiency (tokens/USD).")
    energy: float = Field(
        default=0.0, ge=0.0, le=1000.0, description="Weight of energy efficiency (tokens/joule)."
    )

    @model_validator(mode="after")
    def _some_weight(self) -> ObjectiveWeights:
        if self.goodput + self.cost + self.energy <= 0.0:
            raise ValueError("objective.weights: at least one of goodput, cost, energy must be > 0")
        return self

    def normalised(self) -> tuple[float, float, float]:
        """(goodput, cost, energy) weights scaled to sum to one."""
        total = self.goodput + self.cost + self.energy
        return self.goodput / total, self.cost / total, self.energy / total


class Objective(ApiModel):
    """What the selection maximises for each device class."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind != 'weighted' || has(self.weights)",
                    "message": "kind weighted needs weights (goodput, cost, energy)",
                    "fieldPath": ".weights",
                    "reason": "FieldValueRequired",
                },
                {
                    "rule": "self.kind == 'weighted' || !has(self.weights)",
                    "message": "weights apply only to kind weighted",
                    "fieldPath": ".weights",
                    "reason": "FieldValueForbidden",
                },
            ]
        }
    )

    kind: ObjectiveKind = Field(
        default="goodput",
        description=(
            "goodput: most tokens/s; cost: most tokens per USD of verification; energy: fewest joules per "
            "token on the edge device; weighted: the weighted mean of the three, each normalised to the "
            "best feasible value of its device class."
        ),
    )
    weights: ObjectiveWeights | None = Field(default=None, description="Weights, for kind weighted only.")

    @model_validator(mode="after")
    def _weights_match_kind(self) -> Objective:
        if self.kind == "weighted" and self.weights is None:
            raise ValueError("objective.weights: kind weighted needs weights (goodput, cost, energy)")
        if self.kind != "weighted" and self.weights is not None:
            raise ValueError(f"objective.weights: weights apply only to kind weighted, not {self.kind}")
        return self


class Constraints(ApiModel):
    """Limits every chosen configuration must respect; all optional.

    Memory: a configuration fits a node when its memory need is at most the node's allocatable memory
    less ``memoryHeadroomFraction``. The need is the profile's measured ``memoryBytes`` when present,
    else the model file size plus ``kvCacheBytes`` plus ``runtimeOverheadBytes``.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    min_goodput_tokens_per_s: float | None = Field(
        default=None, ge=0.0, le=1e6, description="Least acceptable goodput, tokens/s."
    )
    max_joules_per_token: float | None = Field(
        default=None, gt=0.0, le=1e6, description="Most edge-device energy per committed token, joules."
    )
    max_usd_per_million_tokens: float | None = Field(
        default=None,
        gt=0.0,
        le=1e6,
        description="Most verification cost per million committed tokens, USD.",
    )
    memory_headroom_fraction: float = Field(
        default=0.1,
        ge=0.0,
        le=0.9,
        description="Fraction of a node's allocatable memory kept free (OS, other pods).",
    )
    kv_cache_bytes: ByteQuantity | None = Field(
        default=None,
        description="KV cache to add to the model size when a profile lacks memoryBytes (e.g. 256Mi).",
    )
    runtime_overhead_bytes: ByteQuantity | None = Field(
        default=None,
        description="Runtime overhead added to the model size when a profile lacks memoryBytes (e.g. 200Mi).",
    )

    @field_validator("kv_cache_bytes", "runtime_overhead_bytes")
    @classmethod
    def _is_quantity(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            quantity_to_bytes(value)
        return value

    def kv_cache(self) -> int:
        """``kv_cache_bytes`` in bytes (0 when unset)."""
        return 0 if self.kv_cache_bytes is None else quantity_to_bytes(self.kv_cache_bytes)

    def runtime_overhead(self) -> int:
        """``runtime_overhead_bytes`` in bytes (0 when unset)."""
        return 0 if self.runtime_overhead_bytes is None else quantity_to_bytes(self.runtime_overhead_bytes)
