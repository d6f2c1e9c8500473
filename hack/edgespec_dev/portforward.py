"""``kubectl port-forward`` as a context manager that yields the local port, for tests and the demo."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def port_forward(
    kubectl: Path, kubeconfig: Path | None, namespace: str, target: str, port: int
) -> Iterator[int]:
    """Forward a free loopback port to ``port`` of ``target`` (``svc/NAME``, ``pod/NAME``)."""
    command = [str(kubectl)]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    command += ["port-forward", "-n", namespace, target, f":{port}", "--address=127.0.0.1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            process.terminate()
            raise RuntimeError(
                f"kubectl port-forward {target} failed: {line.strip()} {process.stderr.read().strip()}"
            )
        yield int(match.group(1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
