"""Draft DaemonSets carry the rollout the status states, against the real API server.

The paper sample with its illustrative profiles on the KWOK fleet (8 GiB Raspberry Pis, a 64 GiB
Jetson): every class's chosen draft fits beside the largest of its class, so each class reports
``rollout: Surge`` and its DaemonSet surges (the API server keeps maxSurge 1, maxUnavailable 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec.builders.naming import draft_name
from kube_helpers import get_object, owner_of, status_of, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
NAME = "rolling"
SURGE = {"maxSurge": 1, "maxUnavailable": 0}


def test_each_class_daemon_set_rolls_as_its_status_says(operator: Any) -> None:
    cluster = operator
    profiles = str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml")
    # EdgeProfiles are cluster-scoped and the cluster outlives this module: leave them as found
    # (another module checks a deployment that has no profiles yet).
    had_profiles = bool(cluster.kubectl("get", "edgeprofiles", "-o", "name").stdout.strip())
    cluster.kubectl("apply", "-f", profiles)
    doc = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    doc["metadata"]["name"] = NAME
    cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))
    try:
        status = wait_for(
            "a rollout for every class",
            lambda: (
                (s := status_of(cluster, NAME))
                and len(s.get("deviceClasses", [])) == 3
                and all(c.get("rollout") for c in s["deviceClasses"])
                and s
            ),
            timeout_s=60,
        )
        rollouts = {c["name"]: c["rollout"] for c in status["deviceClasses"]}
        assert set(rollouts.values()) == {"Surge"}, rollouts
        for cls in rollouts:
            daemon_set = wait_for(
                f"{cls}'s DaemonSet",
                lambda cls=cls: get_object(cluster, "daemonset", draft_name(owner_of(NAME), cls)),
            )
            strategy = daemon_set["spec"]["updateStrategy"]
            assert strategy == {"type": "RollingUpdate", "rollingUpdate": SURGE}, (cls, strategy)
    finally:
        cluster.kubectl("delete", "specdeploy", NAME, "-n", "default", "--ignore-not-found", "--wait=true")
        if not had_profiles:
            cluster.kubectl("delete", "-f", profiles, "--ignore-not-found")
