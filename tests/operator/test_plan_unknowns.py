"""The deployment status says what the selection had to assume: memory and the profiles' origin."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec, TargetDecode
from edgespec.builders import Owner, WorkloadImages
from edgespec.plan import desired_children, plan_status
from edgespec.status import NodeInfo

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEYS = [("rpi5", "gemma-17l", "Q4_K_M"), ("rpi5", "gemma-270m", "Q4_0")]


def test_unknown_memory_is_assumed_to_fit_and_said_and_origin_shown() -> None:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
    common = {
        "target_model": "gemma-3-270m",
        "draft_tokens_per_s": 40.0,
        "power_watts": 6.0,
        "acceptance": [AcceptancePoint(k=2, alpha=0.6)],
        "measured_at": T0,
    }  # no memoryBytes, no modelSizeBytes, no origin
    profiles = [EdgeProfileSpec(device_class=c, draft_model=d, quantization=q, **common) for c, d, q in KEYS]
    node = NodeInfo(
        name="pi",
        labels={"edgespec.dev/device-class": "rpi5"},
        ready=True,
        allocatable_memory_bytes=8 * 1024**3,
    )
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=[node], now=T0, profiles=profiles)
    selection = plan.status.device_classes[0].selection
    assert selection is not None
    assert selection.memory_assumed is True
    assert selection.origin == "unknown"
    assert "assumed to fit" in selection.reason and "origin unknown" in selection.reason
    api = selection.to_api()
    assert api["memoryAssumed"] is True and api["origin"] == "unknown"


def test_where_speculation_does_not_pay_the_fallback_runs_the_class_cloud_only() -> None:
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    doc["spec"]["cloudOnlyFallback"] = True
    spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
    alone = TargetDecode(per_token_s=0.01, ttft_s=0.2)  # the target alone: 100 tokens/s, beats any draft here
    profiles = [
        EdgeProfileSpec(
            device_class=c,
            draft_model=d,
            quantization=q,
            target_model="gemma-3-270m",
            draft_tokens_per_s=40.0,
            power_watts=6.0,
            acceptance=[AcceptancePoint(k=2, alpha=0.6)],
            measured_at=T0,
            origin="measured",
            target_decode=alone,
        )
        for c, d, q in KEYS
    ]
    node = NodeInfo(name="pi", labels={"edgespec.dev/device-class": "rpi5"}, ready=True)
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=[node], now=T0, profiles=profiles)
    selection = plan.status.device_classes[0].selection
    assert selection is not None and selection.no_speculation is not None
    assert selection.no_speculation.predicted_goodput_tokens_per_s == 100.0
    assert selection.speculation_gain is not None and selection.speculation_gain < 0
    assert "Speculation does NOT pay here" in selection.reason
    assert selection.mode == "cloudOnly" and "this class runs cloud-only" in selection.reason
    assert plan.status.k_summary == "rpi5=none"
    owner = Owner(name="demo", namespace="default", uid="uid-1")
    images = WorkloadImages(edge="edge:1", verifier="verifier:1", vllm="vllm:1")
    children = desired_children(spec=spec, owner=owner, images=images, token="t", status=plan.status)
    (daemon_set,) = [c for c in children if c["kind"] == "DaemonSet"]
    pod = daemon_set["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # no draft model to fetch
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["EDGESPEC_EDGE_MODE"] == "cloud-only" and "EDGESPEC_EDGE_DRAFT_MODEL" not in env
    (config,) = [c for c in children if c["kind"] == "ConfigMap" and "speculative.yaml" in c.get("data", {})]
    assert yaml.safe_load(config["data"]["speculative.yaml"])["mode"] == "cloud-only"

    # Without the field the same verdict is only reported: the class keeps speculating.
    doc["spec"]["cloudOnlyFallback"] = False
    spec = SpeculativeDeploymentSpec.model_validate(doc["spec"])
    plan = plan_status(spec=spec, generation=1, previous=None, nodes=[node], now=T0, profiles=profiles)
    selection = plan.status.device_classes[0].selection
    assert selection is not None and selection.mode == "speculative"
    children = desired_children(spec=spec, owner=owner, images=images, token="t", status=plan.status)
    (daemon_set,) = [c for c in children if c["kind"] == "DaemonSet"]
    assert daemon_set["spec"]["template"]["spec"]["initContainers"]
