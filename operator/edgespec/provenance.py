"""Profiling results cross a trust boundary: a profiler reports, the operator decides what is a profile.

A profiling Job runs on an edge node the operator does not fully trust, with no API rights at all
(no ServiceAccount token is mounted). It reports its measurement as the profiler container's
termination message, which only the kubelet of its node can write into the pod's status. The
operator reads it from the pod of the Job it launched and accepts it only if

- the pod belongs to that Job (its ``batch.kubernetes.io/job-name`` and controller uid) and ran on
  the node the Job was pinned to, a node whose labels match the device class's selector;
- the measurement is for the Job's (class, draft, quantisation) and the deployment's target;
- every number is finite and physically plausible (below), and K lies in the deployment's range.

Only then does the operator create or update the shared, cluster-scoped ``EdgeProfile``, with
annotations recording which Job, pod and node measured it. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from edgespec.api.profile import EdgeProfile, EdgeProfileSpec

ANNOTATION_JOB = "edgespec.dev/profiled-by-job"
ANNOTATION_POD = "edgespec.dev/profiled-by-pod"
ANNOTATION_NODE = "edgespec.dev/profiled-on-node"

MAX_TOKENS_PER_S = 5_000.0
"""Drafting faster than this on an edge device is not a measurement."""
MAX_WATTS = 1_000.0
"""An edge device drawing more than a kilowatt is not an edge device."""
MAX_VERIFY_S = 60.0
"""A verify round trip longer than this is a stuck request."""
MAX_BYTES = 1 << 40
"""A draft model or its memory need beyond a TiB."""


@dataclass(frozen=True)
class ProfilerRun:
    """What the operator observed of one finished profiling pod (all from the API server)."""

    namespace: str
    job: str
    pod: str
    node: str
    message: str
    """The profiler container's termination message: the EdgeProfile spec as JSON."""


@dataclass(frozen=True)
class Expected:
    """What the operator launched the Job for."""

    device_class: str
    draft_model: str
    quantization: str
    target_model: str
    node: str
    node_labels: Mapping[str, str]
    selector: Mapping[str, str]
    k_min: int
    k_max: int


class ResultRejected(ValueError):
    """The report is not accepted as a profile; the message says why, naming the field."""


def validate_result(run: ProfilerRun, expected: Expected) -> EdgeProfileSpec:
    """The profile ``run`` reports, if it is from where it should be and says something possible."""
    if run.node != expected.node:
        raise ResultRejected(f"pod {run.pod} ran on node {run.node!r}, not on {expected.node!r} (pinned)")
    if not expected.selector or any(expected.node_labels.get(k) != v for k, v in expected.selector.items()):
        raise ResultRejected(
            f"node {run.node} does not carry the nodeSelector of device class {expected.device_class}"
        )
    try:
        document = json.loads(run.message, parse_constant=_no_constant)
        spec = EdgeProfileSpec.model_validate(document)
    except (ValueError, ValidationError) as exc:
        raise ResultRejected(f"the termination message is not an EdgeProfile spec: {_first(exc)}") from None
    claimed = (spec.device_class, spec.draft_model, spec.quantization, spec.target_model)
    wanted = (expected.device_class, expected.draft_model, expected.quantization, expected.target_model)
    if claimed != wanted:
        raise ResultRejected(f"the report claims {'/'.join(claimed)}; the Job measures {'/'.join(wanted)}")
    _check_ranges(spec, expected)
    return spec


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _first(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(exc)


def _check_ranges(spec: EdgeProfileSpec, expected: Expected) -> None:
    def bounded(field: str, value: float, low: float, high: float) -> None:
        if not (math.isfinite(value) and low <= value <= high):
            raise ResultRejected(f"{field} = {value!r} is outside [{low:g}, {high:g}]")

    bounded("draftTokensPerS", spec.draft_tokens_per_s, 1e-3, MAX_TOKENS_PER_S)
    bounded("powerWatts", spec.power_watts, 0.0, MAX_WATTS)
    bounded("modelSizeBytes", spec.model_size_bytes, 0, MAX_BYTES)
    bounded("memoryBytes", spec.memory_bytes, 0, MAX_BYTES)
    latency = spec.verify_latency
    for name, value in (
        ("verifyLatency.fixedS", latency.fixed_s),
        ("verifyLatency.perTokenS", latency.per_token_s),
        ("verifyLatency.networkRttS", latency.network_rtt_s),
    ):
        bounded(name, value, 0.0, MAX_VERIFY_S)
    for latency_point in latency.measured:
        bounded(
            f"verifyLatency.measured[k={latency_point.k}].seconds", latency_point.seconds, 0.0, MAX_VERIFY_S
        )
    for point in spec.acceptance:
        bounded(f"acceptance[k={point.k}].alpha", point.alpha, 0.0, 1.0)
        if not expected.k_min <= point.k <= expected.k_max:
            raise ResultRejected(
                f"acceptance[k={point.k}] is outside the deployment's K range "
                f"[{expected.k_min}, {expected.k_max}]"
            )
    if not spec.acceptance:
        raise ResultRejected("acceptance: a profiler measures alpha(K); none reported")


def profile_manifest(spec: EdgeProfileSpec, run: ProfilerRun) -> dict[str, Any]:
    """The EdgeProfile the operator applies for an accepted report, with its provenance."""
    measured = spec.model_copy(update={"origin": "measured"})
    body = EdgeProfile.for_spec(measured).to_api()
    body["metadata"]["annotations"] = {
        ANNOTATION_JOB: f"{run.namespace}/{run.job}",
        ANNOTATION_POD: f"{run.namespace}/{run.pod}",
        ANNOTATION_NODE: run.node,
    }
    return dict(body)
