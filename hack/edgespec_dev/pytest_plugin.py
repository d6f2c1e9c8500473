"""pytest plugin offering a real local Kubernetes cluster to tests as the fixture ``cluster``.

Load it with ``pytest_plugins = ["edgespec_dev.pytest_plugin"]`` (or ``-p edgespec_dev.pytest_plugin``).
The session-scoped ``cluster`` fixture starts a fresh :class:`edgespec_dev.cluster.Cluster` in a
temporary directory with the default KWOK fleet, yields it (``.kubeconfig``, ``.kubectl()``,
``.add_node()``, ``.delete_node()``, ``.data_dir``) and stops it at the end of the session, on
Ctrl-C, and (through the kernel's parent-death signal) even if pytest itself is killed. The process
environment is never changed: pass ``cluster.kubeconfig`` explicitly to clients. The plugin also
registers the ``cluster`` marker for tests that need it. Set ``EDGESPEC_KEEP_CLUSTER=1`` to keep the
data directory (logs) after the session.

The session fixture ``real_cluster`` (marker ``realnode``; costs nothing unless a test asks for it)
is a second cluster, ``edgespec-e2e``, with the same fleet plus one real kubelet node
(:mod:`edgespec_dev.realnode`): ``real_cluster.node`` has ``.name``, ``.ip``,
``.containerd_socket``, ``.models_dir``, ``.load_images()``. On a machine that cannot host a
real node (not root, no overlayfs or cgroups, ...) its tests are skipped with the reason, except
under ``CI=true``, where they fail.
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
from edgespec_dev.realnode import RealNodeOptions, why_not


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: needs the local Kubernetes cluster (etcd, kube-apiserver, KWOK nodes); "
        "the first run builds the binaries from Go modules",
    )
    config.addinivalue_line(
        "markers",
        "realnode: needs the local cluster with a real kubelet node (root, containerd, iptables); "
        "skipped where impossible, failed instead under CI=true",
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local cluster with the default edge + cloud fleet, shared by the session."""
    yield from _session_cluster(
        request, Cluster(Path(tempfile.mkdtemp(prefix="edgespec-cluster-")), name="edgespec-test")
    )


@pytest.fixture(scope="session")
def real_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A running local cluster with the default fleet and one real, network-confined kubelet node."""
    reason = why_not()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and this machine cannot host the real node the e2e tier needs: {reason}")
        pytest.skip(f"this machine cannot host a real node: {reason}")
    data_dir = Path(tempfile.mkdtemp(prefix="edgespec-e2e-"))
    yield from _session_cluster(request, Cluster(data_dir, name="edgespec-e2e", real_node=RealNodeOptions()))


def _session_cluster(request: pytest.FixtureRequest, local: Cluster) -> Iterator[Cluster]:
    data_dir = local.data_dir
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
        left = local.node.leftovers() if local.node is not None else []
        if os.environ.get("EDGESPEC_KEEP_CLUSTER") or left:
            print(f"\nedgespec cluster data kept in {data_dir}" + (f"; left over: {left}" if left else ""))
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
