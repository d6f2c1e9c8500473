"""Two operator replicas with leader election: SIGKILL the active one, the other resumes in 30 s.

Both run as real processes against the real API server with ``EDGESPEC_LEADER_ELECTION=true``; the
Lease says who leads. The test kills the leader with SIGKILL (no chance to release the Lease), then
creates a deployment and waits for the standby to take the Lease and reconcile it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, install_crds, start_operator, stop_operator
from kube_helpers import status_of, wait_for

pytestmark = pytest.mark.cluster
LEASE = "edgespec-failover-test"
FAILOVER_BOUND_S = 30.0  # the bound


def _deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "edgespec.dev/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "target": {"name": "llama-3.1-70b", "priceUsdPerMillionTokens": 0.9, "vllmModel": "m"},
            "drafts": [
                {"name": "d", "quantizations": [{"quantization": "Q4_0", "source": {"uri": "pypi:x"}}]}
            ],
            "deviceClasses": [{"name": "rpi5", "nodeSelector": {"edgespec.dev/device-class": "rpi5"}}],
            "profiling": {"enabled": False},
        },
    }


def _holder(cluster: Any) -> str:
    result = cluster.kubectl("get", "lease", LEASE, "-n", "default", "-o", "json", check=False)
    return (
        str(json.loads(result.stdout)["spec"].get("holderIdentity") or "") if result.returncode == 0 else ""
    )


@pytest.fixture
def replicas(cluster: Any, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    install_crds(cluster)
    env = {
        "EDGESPEC_LEADER_ELECTION": "true",
        "EDGESPEC_OPERATOR_NAMESPACE": "default",
        "EDGESPEC_LEASE_NAME": LEASE,
    }
    procs = [start_operator(cluster, tmp_path / f"replica-{i}.log", free_port(), **env) for i in range(2)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_operator(proc)
        for log in sorted(tmp_path.glob("replica-*.log")):
            print(f"--- {log.name}\n{log.read_text()[-2500:]}")
        cluster.kubectl("delete", "lease", LEASE, "-n", "default", "--ignore-not-found", check=False)
        for name in ("failover-one", "failover-two"):
            cluster.kubectl("delete", "specdeploy", name, "-n", "default", "--ignore-not-found", check=False)


def test_killing_the_leader_resumes_reconciles_on_the_standby(
    cluster: Any, replicas: list[subprocess.Popen[bytes]]
) -> None:
    holder = wait_for("a leader", lambda: _holder(cluster), timeout_s=60)
    leader = next(p for p in replicas if holder.endswith(f"-{p.pid}"))
    standby = next(p for p in replicas if p is not leader)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_deployment("failover-one")))
    wait_for("the leader reconciles", lambda: status_of(cluster, "failover-one").get("phase"), timeout_s=60)

    os.kill(leader.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    leader.wait(timeout=10)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_deployment("failover-two")))
    wait_for(
        "the standby reconciles",
        lambda: status_of(cluster, "failover-two").get("phase"),
        timeout_s=FAILOVER_BOUND_S,
    )
    took = time.monotonic() - killed_at
    assert _holder(cluster).endswith(f"-{standby.pid}")
    assert standby.poll() is None
    print(f"failover: the standby reconciled a new deployment {took:.1f} s after SIGKILL of the leader")
