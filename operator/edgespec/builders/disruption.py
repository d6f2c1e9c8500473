"""PodDisruptionBudgets: a node drain never takes down every verifier replica at once.

With more than one verifier replica, a budget of ``maxUnavailable: 1`` lets voluntary disruptions
(``kubectl drain``, cluster autoscaler scale-down, node upgrades) evict one verifier pod at a time,
so the others keep serving verify rounds. One replica gets no budget: a budget would either block
every drain of its node or protect nothing. ``maxUnavailable`` (not ``minAvailable``) keeps a budget
left behind after scaling back to one replica harmless: it still lets that one pod be evicted.
"""

from __future__ import annotations

from typing import Any

from edgespec.builders.inputs import DeploymentInput
from edgespec.builders.naming import object_meta, selector_labels, verifier_name

MAX_UNAVAILABLE = 1


def build_verifier_disruption_budget(inp: DeploymentInput) -> list[dict[str, Any]]:
    """The verifier's PodDisruptionBudget, or nothing when it runs a single replica."""
    if inp.spec.verifier.replicas <= 1:
        return []
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": object_meta(inp.owner, verifier_name(inp.owner), "verifier"),
            "spec": {
                "maxUnavailable": MAX_UNAVAILABLE,
                "selector": {"matchLabels": selector_labels(inp.owner, "verifier")},
                # a replica that is not Ready yet serves nothing: evicting it costs nothing
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }
    ]
