"""One profiling Job per profile key, shared by every deployment that needs it (real operator, real API).

Five deployments of the same spec (three in ``default``, two in another namespace) are created at
once: they need the same two profile keys, and the cluster gets two profiling Jobs, not ten, both
of the oldest deployment. KWOK completes each profiling pod with an empty report, which the operator
refuses: the four others take that outcome as theirs (nobody waits forever). Deleting the deployment
that ran the Jobs makes the others elect a new one, which runs the two Jobs again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_helpers import condition, wait_for

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
OTHER = "shared-profiles-b"
DEPLOYMENTS = [("default", "shared-0"), ("default", "shared-1"), ("default", "shared-2"),
               (OTHER, "shared-3"), (OTHER, "shared-4")]  # fmt: skip


def _status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "specdeploy", name, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _jobs(cluster: Any) -> list[tuple[str, str, str]]:
    """(namespace, Job, owning deployment) of every profiling Job of the five."""
    out = cluster.kubectl(
        "get", "jobs", "-A", "-l", "app.kubernetes.io/component=profiler", "-o", "json"
    ).stdout
    names = {name for _, name in DEPLOYMENTS}
    found = []
    for job in json.loads(out)["items"]:
        meta = job["metadata"]
        owners = [
            r["name"] for r in meta.get("ownerReferences") or [] if r["kind"] == "SpeculativeDeployment"
        ]
        if meta.get("deletionTimestamp") is None and owners and owners[0] in names:
            found.append((meta["namespace"], meta["name"], owners[0]))
    return sorted(found)


@pytest.fixture
def five(operator: Any) -> Iterator[Any]:
    cluster = operator
    cluster.kubectl("create", "namespace", OTHER, check=False)
    sample = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
    items = []
    for namespace, name in DEPLOYMENTS:
        doc = json.loads(json.dumps(sample))
        doc["metadata"] = {"name": name, "namespace": namespace}
        # a target no other module has profiles of, so every key needs profiling
        doc["spec"]["target"]["name"] = "shared-profiles-target"
        items.append(doc)
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    try:
        yield cluster
    finally:
        for namespace, name in DEPLOYMENTS:
            cluster.kubectl(
                "delete", "specdeploy", name, "-n", namespace, "--ignore-not-found", "--wait=false"
            )
        cluster.kubectl("delete", "namespace", OTHER, "--ignore-not-found", "--wait=false")


def _all_failed(cluster: Any, deployments: list[tuple[str, str]]) -> bool:
    """Every deployment's Profiled condition says both keys failed (the empty reports were refused)."""
    for namespace, name in deployments:
        status = _status(cluster, namespace, name)
        if len((status.get("profiling") or {}).get("failed") or []) != 2:
            return False
    return True


def test_five_deployments_needing_the_same_keys_run_one_job_per_key(five: Any) -> None:
    cluster = five
    wait_for("every deployment to know how both keys ended", lambda: _all_failed(cluster, DEPLOYMENTS), 120)
    jobs = _jobs(cluster)
    assert len(jobs) == 2, jobs  # one per key, not one per key and deployment (10)
    (claimant,) = {owner for _, _, owner in jobs}
    claimant_key = next(d for d in DEPLOYMENTS if d[1] == claimant)
    for namespace, name in DEPLOYMENTS:
        profiled = condition(_status(cluster, namespace, name), "Profiled")
        assert profiled["reason"] == "ProfilingFailed" and "refused" in profiled["message"], (name, profiled)

    # The deployment whose Jobs served everyone goes: the others elect another, which profiles again.
    namespace, name = claimant_key
    cluster.kubectl("delete", "specdeploy", name, "-n", namespace, "--wait=false")

    def new_jobs() -> list[tuple[str, str, str]] | None:
        found = _jobs(cluster)
        owners = {owner for _, _, owner in found}
        return found if len(found) == 2 and len(owners) == 1 and claimant not in owners else None

    jobs = wait_for("the new claimant's two Jobs, and only those", new_jobs, 120)
    assert _jobs(cluster) == jobs
