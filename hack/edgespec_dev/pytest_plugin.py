"""pytest plugin offering a real local Kubernetes cluster to tests as the fixture ``cluster``.

Load it with ``pytest_plugins = ["edgespec_dev.pytest_plugin"]`` (or ``-p edgespec_dev.pytest_plugin``).
The session-scoped ``cluster`` fixture starts a fresh :class:`edgespec_dev.cluster.Cluster` in a
temporary directory with the default KWOK fleet, yields it (``.kubeconfig``, ``.kubectl()``,
``.add_node()``, ``.delete_node()``, ``.data_dir``) and stops it at the end of the session, on
Ctrl-C, and (through the kernel's parent-death signal) even if pytest itself is killed. The process
environment is never changed: pass ``cluster.kubeconfig`` explicitly to clients. The plugin also
registers the ``cluster`` marker for tests that need it. Set ``EDGESPEC_KEEP_CLUSTER=1`` to keep the
data directory (logs) after the session.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgespec_dev.cluster import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: needs the local Kubernetes cluster (etcd, kube-apiserver, KWOK nodes); "
        "the first run builds the binaries from Go modules",
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local cluster with the default edge + cloud fleet, shared by the session."""
    data_dir = Path(tempfile.mkdtemp(prefix="edgespec-cluster-"))
    local = Cluster(data_dir, name="edgespec-test")
    # Belt and braces for an interpreter exit that skips fixture teardown.
    atexit.register(local.stop)
    # Show build progress live: the first run compiles Kubernetes for several minutes.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    showing = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with showing:
            local.start(die_with_parent=True, timeout_s=float(os.environ.get("EDGESPEC_START_TIMEOUT", 180)))
        yield local
    finally:
        local.stop()
        atexit.unregister(local.stop)
        if os.environ.get("EDGESPEC_KEEP_CLUSTER"):
            print(f"\nedgespec cluster data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
