"""The operator as a real process against the local control plane, for the operator's cluster tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class OperatorProcess:
    cluster: Any
    url: str  # base URL of its /metrics and /v1/telemetry server
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_operator(cluster: Any, log: Path, port: int, **env: str) -> subprocess.Popen[bytes]:
    """``python -m edgespec.handlers`` against ``cluster``, logging (appending) to ``log``."""
    full_env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "EDGESPEC_METRICS_PORT": str(port),
        "EDGESPEC_HTTP_HOST": "127.0.0.1",
        "EDGESPEC_TELEMETRY_URL": f"http://edgespec-operator.edgespec-system.svc:{port}/v1/telemetry",
        **env,
    }
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edgespec.handlers", "--liveness", "none"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_operator(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def install_crds(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


@pytest.fixture(scope="module")
def operator_process(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """CRDs installed, then ``python -m edgespec.handlers`` running for the test module."""
    install_crds(cluster)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    port = free_port()
    proc = start_operator(cluster, log, port)
    try:
        yield OperatorProcess(cluster, f"http://127.0.0.1:{port}", log)
    finally:
        stop_operator(proc)
        print(log.read_text()[-3000:])


@pytest.fixture(scope="module")
def operator(operator_process: OperatorProcess) -> Any:
    """The cluster, with the operator running against it."""
    return operator_process.cluster
