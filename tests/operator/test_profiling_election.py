"""One profiling Job per profile key: the election of whose Job profiles it, and what the others plan.

The cluster side (five deployments, one Job per key, a new claimant after a deletion) is
``tests/cluster/test_profiling_shared.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.handlers.sharing import ProfilingClaims
from edgespec.plan import JobOutcome, ProfileKey, plan_status, profile_keys
from edgespec.status import NodeInfo

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "samples" / "speculativedeployment-gemma-cpu.yaml").read_text())
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _body(name: str, namespace: str = "default", minute: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{namespace}-{name}",
            "generation": 1,
            "creationTimestamp": f"2026-11-30T10:{minute:02d}:00Z",
        },
        "spec": {**SAMPLE["spec"], **spec},
    }


def _spec(body: dict[str, Any]) -> SpeculativeDeploymentSpec:
    return SpeculativeDeploymentSpec.model_validate(body["spec"])


def _elect(
    claims: ProfilingClaims, deployments: dict[tuple[str, str], dict[str, Any]], jobs: set[Any] = frozenset()
) -> dict[tuple[str, str], dict[ProfileKey, tuple[str, str]]]:
    return {
        key: claims.profilers(key, _spec(body), deployments, lambda d, k: (d, k) in jobs)
        for key, body in deployments.items()
    }


def test_five_deployments_needing_the_same_keys_share_one_job_per_key() -> None:
    deployments = {("default", f"d{i}"): _body(f"d{i}", minute=5 - i) for i in range(5)}  # d4 is oldest
    deployments[("team-b", "e")] = _body("e", "team-b", minute=9)  # same keys, another namespace
    claims = ProfilingClaims()
    elected = _elect(claims, deployments)
    keys = profile_keys(_spec(deployments[("default", "d0")]))
    assert len(keys) == 2
    for key in keys:
        assert {elected[d][key] for d in deployments} == {("default", "d4")}
    assert claims.followers_of(("default", "d4")) == sorted(k for k in deployments if k != ("default", "d4"))


def test_a_claim_is_sticky_and_a_gone_claimant_is_replaced() -> None:
    deployments = {("default", f"d{i}"): _body(f"d{i}", minute=i) for i in range(3)}  # d0 is oldest
    claims = ProfilingClaims()
    key = profile_keys(_spec(deployments[("default", "d0")]))[0]
    # d2 already runs a Job for the key (say the operator restarted): it keeps it, nobody starts another
    elected = _elect(claims, deployments, jobs={(("default", "d2"), key)})
    assert {elected[d][key] for d in deployments} == {("default", "d2")}
    # a claim holds even once the Job is gone and an older deployment is around
    assert {_elect(claims, deployments)[d][key] for d in deployments} == {("default", "d2")}
    del deployments[("default", "d2")]
    assert claims.forget(("default", "d2")) == [("default", "d0"), ("default", "d1")]
    assert {_elect(claims, deployments)[d][key] for d in deployments} == {("default", "d0")}
    # being deleted: no longer a candidate
    deployments[("default", "d0")]["metadata"]["deletionTimestamp"] = "2026-11-30T11:00:00Z"
    assert _elect(claims, {("default", "d1"): deployments[("default", "d1")]})[("default", "d1")][key] == (
        "default",
        "d1",
    )


def test_deployments_that_would_measure_different_things_do_not_share() -> None:
    base = _body("base", minute=0)
    variants = {
        "target": _body("t", minute=1, target={**SAMPLE["spec"]["target"], "name": "other-target"}),
        "k-range": _body("k", minute=1, speculativeLength={"min": 1, "max": 12}),
        "selector": _body(
            "s",
            minute=1,
            deviceClasses=[{**SAMPLE["spec"]["deviceClasses"][0], "nodeSelector": {"pi": "5"}}],
        ),
        "prompts": _body("p", "team-b", minute=1, profiling={"promptsConfigMap": "mine"}),
        "disabled": _body("x", minute=1, profiling={"enabled": False}),
    }
    for why, other in variants.items():
        deployments = {
            ("default", "base"): base,
            (other["metadata"]["namespace"], other["metadata"]["name"]): other,
        }
        elected = _elect(ProfilingClaims(), deployments)
        mine = elected[(other["metadata"]["namespace"], other["metadata"]["name"])]
        assert all(d != ("default", "base") for d in mine.values()), why


def _plan(elsewhere: dict[ProfileKey, str], finished: dict[ProfileKey, JobOutcome] | None = None) -> Any:
    nodes = [
        NodeInfo(name=f"edge-rpi5-{i}", labels={"edgespec.dev/device-class": "rpi5"}, ready=True)
        for i in range(2)
    ]
    return plan_status(
        spec=_spec(_body("f")),
        generation=1,
        previous=None,
        nodes=nodes,
        profiles=[],
        now=NOW,
        finished_profiling=finished,
        profiled_elsewhere=elsewhere,
    )


def test_a_follower_runs_no_job_says_whose_it_waits_on_and_shares_its_failure() -> None:
    keys = profile_keys(_spec(_body("f")))
    own = _plan({})
    assert own.profiling_jobs and {j.key for j in own.profiling_jobs} <= set(keys)  # concurrencyPerClass: 1
    waiting = _plan({k: "default/d4" for k in keys})
    assert waiting.profiling_jobs == []
    profiled = next(c for c in waiting.status.conditions if c.type == "Profiled")
    assert profiled.reason == "ProfilesMissing" and "profiled by the Job of default/d4" in profiled.message
    failed = _plan(
        {k: "default/d4" for k in keys},
        {k: JobOutcome(failed=True, finished_at=NOW, refused="empty report") for k in keys},
    )
    profiled = next(c for c in failed.status.conditions if c.type == "Profiled")
    assert (
        failed.profiling_jobs == []
        and profiled.reason == "ProfilingFailed"
        and "empty report" in profiled.message
    )
