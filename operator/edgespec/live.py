"""The live-telemetry wire format: what a draft server reports to the operator, and how often.

Every draft server pushes one ``TelemetryReport`` per interval to the operator's ``POST
/v1/telemetry`` with its pod's projected ServiceAccount token (audience ``TELEMETRY_AUDIENCE``) as
bearer token; the operator checks it with TokenReview (``edgespec.handlers.identity``). A report
carries counts since the server's previous accepted report, per K it ran at, so reports add up: a
lost report loses its counts, never doubles them. The operator pools the reports of a class until
they cover ``spec.adaptation.minRounds`` verify rounds and folds them into the class's live profile
(``edgespec.adaptation``). Pure pydantic: no I/O.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

TELEMETRY_PATH = "/v1/telemetry"
TELEMETRY_VERSION = 1
TELEMETRY_AUDIENCE = "edgespec.dev/telemetry"
"""Audience of the draft pods' projected tokens: good for the operator's TokenReview, not the API server."""
TELEMETRY_TOKEN_SECONDS = 600
"""Their lifetime (the API server's minimum); the kubelet rotates the file at 80% of it."""

Name = Annotated[str, Field(min_length=1, max_length=253)]

MAX_ROUNDS = 1_000_000
"""Verify rounds one report may carry: a server reporting every 30 s would need 33,000 rounds a second."""
MAX_ROUND_TRIP_S = 60.0
"""A verify round trip longer than this is a stuck request, not a measurement."""


class RoundCounts(BaseModel):
    """Verify rounds run at one K since the last report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(ge=1, le=64, description="Speculative length the rounds ran at.")
    rounds: int = Field(ge=1, le=MAX_ROUNDS, description="Verify rounds.")
    drafted_tokens: int = Field(ge=0, description="Draft tokens sent for verification.")
    accepted_tokens: int = Field(ge=0, description="Draft tokens the verifier accepted.")
    verify_seconds: float = Field(
        ge=0.0, allow_inf_nan=False, description="Summed wall time of the verify round trips, s."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RoundCounts:
        if self.accepted_tokens > self.drafted_tokens:
            raise ValueError("accepted_tokens cannot exceed drafted_tokens")
        if self.drafted_tokens > self.rounds * self.k:
            raise ValueError("drafted_tokens cannot exceed rounds * k")
        if self.verify_seconds > self.rounds * MAX_ROUND_TRIP_S:
            raise ValueError(f"verify_seconds: over {MAX_ROUND_TRIP_S:.0f} s a verify round is no round trip")
        return self


class TelemetryReport(BaseModel):
    """One draft server's counts since its last accepted report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=TELEMETRY_VERSION, ge=1)
    namespace: Name
    deployment: Name = Field(description="The SpeculativeDeployment the server belongs to.")
    device_class: Name
    node: str = Field(default="", max_length=253, description="Node the server runs on (for logs).")
    draft_model: Name
    quantization: Name
    counts: list[RoundCounts] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _version_spoken(self) -> TelemetryReport:
        if self.version != TELEMETRY_VERSION:
            raise ValueError(f"telemetry version {self.version} not supported (speaks {TELEMETRY_VERSION})")
        if len({c.k for c in self.counts}) != len(self.counts):
            raise ValueError("counts: each k may appear once")
        return self
