"""The Objective and Constraints API types: defaults, validation, CEL rules, quantities."""

from __future__ import annotations

import pytest
from edgespec.api.objective import Constraints, Objective, ObjectiveWeights, quantity_to_bytes
from pydantic import ValidationError


def test_defaults_need_no_arguments() -> None:
    assert Objective().kind == "goodput"
    assert Constraints().memory_headroom_fraction == 0.1
    assert Constraints().to_api() == {"memoryHeadroomFraction": 0.1}


def test_weighted_needs_weights_and_others_forbid_them() -> None:
    with pytest.raises(ValidationError, match="kind weighted needs weights"):
        Objective(kind="weighted")
    with pytest.raises(ValidationError, match="only to kind weighted"):
        Objective(kind="cost", weights=ObjectiveWeights(cost=1))
    with pytest.raises(ValidationError, match="at least one"):
        ObjectiveWeights()
    with pytest.raises(ValidationError):
        ObjectiveWeights(goodput=-1)
    w = Objective.model_validate({"kind": "weighted", "weights": {"goodput": 3, "energy": 1}}).weights
    assert w is not None and w.normalised() == (0.75, 0.0, 0.25)


def test_unknown_kind_and_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Objective.model_validate({"kind": "latency"})
    with pytest.raises(ValidationError):
        Constraints.model_validate({"minGoodput": 3})


def test_cel_rules_are_in_the_schema() -> None:
    rules = [r["rule"] for r in Objective.model_json_schema()["x-kubernetes-validations"]]
    assert "self.kind != 'weighted' || has(self.weights)" in rules
    weights_rules = ObjectiveWeights.model_json_schema()["x-kubernetes-validations"]
    assert "> 0.0" in weights_rules[0]["rule"]


def test_constraints_camel_case_round_trip() -> None:
    c = Constraints.model_validate(
        {"minGoodputTokensPerS": 3, "kvCacheBytes": "256Mi", "runtimeOverheadBytes": 1000}
    )
    assert c.min_goodput_tokens_per_s == 3
    assert c.kv_cache() == 256 * 1024**2 and c.runtime_overhead() == 1000
    with pytest.raises(ValidationError, match="not a byte quantity"):
        Constraints(kv_cache_bytes="lots")
    with pytest.raises(ValidationError):
        Constraints(memory_headroom_fraction=1.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8Gi", 8 * 1024**3), ("512Mi", 512 * 1024**2), ("1.5G", 1_500_000_000), ("1000", 1000), (42, 42)],
)
def test_quantity_to_bytes(text: str | int, expected: int) -> None:
    assert quantity_to_bytes(text) == expected


def test_quantity_to_bytes_rejects_nonsense() -> None:
    for bad in ("8 gigs", "-1Gi", "", -5):
        with pytest.raises(ValueError):
            quantity_to_bytes(bad)
