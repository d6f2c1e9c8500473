"""A profiler's report becomes a shared EdgeProfile only when it is from where it should be and says
something possible: the operator's side of the trust boundary, and the profiler's report format."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from edgespec.api.profile import AcceptancePoint, EdgeProfile, EdgeProfileSpec
from edgespec.provenance import (
    ANNOTATION_JOB,
    ANNOTATION_NODE,
    Expected,
    ProfilerRun,
    ResultRejected,
    profile_manifest,
    validate_result,
)
from edgespec_edge.profiler import write_report

SPEC = EdgeProfileSpec(
    device_class="rpi5",
    draft_model="gemma-17l",
    quantization="Q4_K_M",
    target_model="gemma-3-270m",
    draft_tokens_per_s=41.5,
    power_watts=6.1,
    acceptance=[AcceptancePoint(k=k, alpha=0.8 - 0.05 * k, samples=20) for k in range(1, 9)],
    measured_at=datetime(2026, 11, 30, tzinfo=UTC),
    notes="x" * 3900,
)
EXPECTED = Expected(
    device_class="rpi5",
    draft_model="gemma-17l",
    quantization="Q4_K_M",
    target_model="gemma-3-270m",
    node="pi-1",
    node_labels={"edgespec.dev/device-class": "rpi5"},
    selector={"edgespec.dev/device-class": "rpi5"},
    k_min=1,
    k_max=8,
)


def run_of(spec: EdgeProfileSpec | dict[str, Any] | str, node: str = "pi-1") -> ProfilerRun:
    if isinstance(spec, EdgeProfileSpec):
        spec = spec.to_api()
    message = spec if isinstance(spec, str) else json.dumps(spec)
    return ProfilerRun(
        namespace="team-a", job="chat-profile-x", pod="chat-profile-x-abcde", node=node, message=message
    )


def test_the_profilers_report_is_accepted_and_published_with_provenance(tmp_path: Path) -> None:
    report = tmp_path / "termination-log"
    write_report([EdgeProfile.for_spec(SPEC)], report)
    assert len(report.read_bytes()) <= 4000  # what the kubelet keeps
    run = run_of(report.read_text())
    profile = validate_result(run, EXPECTED)
    assert profile.draft_tokens_per_s == SPEC.draft_tokens_per_s and profile.notes is None  # trimmed
    manifest = profile_manifest(profile, run)
    assert manifest["kind"] == "EdgeProfile" and manifest["spec"]["origin"] == "measured"
    annotations = manifest["metadata"]["annotations"]
    assert annotations[ANNOTATION_JOB] == "team-a/chat-profile-x" and annotations[ANNOTATION_NODE] == "pi-1"


@pytest.mark.parametrize(
    ("run", "expected", "says"),
    [
        (run_of(SPEC, node="pi-2"), EXPECTED, "pinned"),
        (
            run_of(SPEC),
            replace(EXPECTED, node_labels={"edgespec.dev/device-class": "jetson"}),
            "nodeSelector",
        ),
        (run_of(SPEC.model_copy(update={"device_class": "jetson"})), EXPECTED, "claims jetson"),
        (run_of(SPEC.model_copy(update={"target_model": "llama-3.1-70b"})), EXPECTED, "claims"),
        (run_of(SPEC.model_copy(update={"draft_tokens_per_s": 1e9})), EXPECTED, "draftTokensPerS"),
        (run_of(SPEC.model_copy(update={"power_watts": 1e6})), EXPECTED, "powerWatts"),
        (run_of(SPEC), replace(EXPECTED, k_max=4), "K range"),
        (run_of(SPEC.to_api() | {"draftTokensPerS": float("inf")}), EXPECTED, "not a number"),
        (run_of('{"deviceClass": "rpi5", "draftModel": "gemma-17l", "quan'), EXPECTED, "not an EdgeProfile"),
        (run_of(""), EXPECTED, "not an EdgeProfile"),
    ],
    ids=[
        "other-node",
        "node-not-of-class",
        "claims-another-class",
        "another-target",
        "impossible-speed",
        "impossible-power",
        "k-outside-range",
        "infinity",
        "truncated",
        "empty",
    ],
)
def test_a_report_from_elsewhere_or_impossible_is_refused(
    run: ProfilerRun, expected: Expected, says: str
) -> None:
    with pytest.raises(ResultRejected, match=says):
        validate_result(run, expected)
