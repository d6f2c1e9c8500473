"""The operator's predicted-metric gauges follow the selections in the status it writes."""

from __future__ import annotations

from edgespec.api.deployment import (
    DeviceClassSelection,
    DeviceClassStatus,
    NoSpeculation,
    SpeculativeDeploymentStatus,
)
from edgespec.handlers.metrics import OperatorMetrics


def _status(**goodput: float) -> SpeculativeDeploymentStatus:
    return SpeculativeDeploymentStatus(
        device_classes=[
            DeviceClassStatus(
                name=name,
                selection=DeviceClassSelection(
                    draft_model="gemma-270m",
                    quantization="Q4_0",
                    k=4,
                    predicted_goodput_tokens_per_s=value,
                    predicted_tokens_per_usd=value * 1000,
                    predicted_joules_per_token=1 / value,
                ),
            )
            for name, value in goodput.items()
        ]
        + [DeviceClassStatus(name="unselected")]
    )


def _sample(metrics: OperatorMetrics, metric: str, device_class: str) -> float | None:
    labels = {"deployment_namespace": "team-a", "deployment": "demo", "device_class": device_class}
    return metrics.registry.get_sample_value(metric, labels)


def test_gauges_carry_each_selected_class_and_drop_what_went_away() -> None:
    metrics = OperatorMetrics()
    metrics.record_predictions("team-a", "demo", _status(rpi5=20.0, jetson=50.0))
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "rpi5") == 20.0
    assert _sample(metrics, "edgespec_predicted_tokens_per_usd", "jetson") == 50_000.0
    assert _sample(metrics, "edgespec_predicted_joules_per_token", "jetson") == 0.02
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "unselected") is None

    metrics.record_predictions("team-a", "demo", _status(jetson=40.0))
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "jetson") == 40.0
    for metric in ("goodput_tokens_per_second", "tokens_per_usd", "joules_per_token"):
        assert _sample(metrics, f"edgespec_predicted_{metric}", "rpi5") is None  # no stale series

    metrics.record_predictions("team-a", "demo", None)  # the deployment was deleted
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "jetson") is None


def test_a_cloud_only_class_reports_the_target_alone_it_serves() -> None:
    metrics = OperatorMetrics()
    alone = NoSpeculation(
        predicted_goodput_tokens_per_s=90.0, predicted_tokens_per_usd=5e6, predicted_joules_per_token=0.0
    )
    status = _status(rpi5=20.0)
    selection = status.device_classes[0].selection
    assert selection is not None
    selection.no_speculation = alone
    selection.mode = "cloudOnly"
    metrics.record_predictions("team-a", "demo", status)
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "rpi5") == 90.0
    assert _sample(metrics, "edgespec_predicted_joules_per_token", "rpi5") == 0.0
    selection.mode = "speculative"  # the same verdict, only reported: the speculative choice is served
    metrics.record_predictions("team-a", "demo", status)
    assert _sample(metrics, "edgespec_predicted_goodput_tokens_per_second", "rpi5") == 20.0
    metrics.record_predictions("team-a", "demo", None)
