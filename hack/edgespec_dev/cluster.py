"""Start, stop and inspect a real local Kubernetes control plane with KWOK-emulated nodes.

A cluster is a data directory (default ``${EDGESPEC_CACHE:-~/.cache/edgespec}/clusters/<name>``)
holding its PKI (a CA, client certificates, service-account signing keys, made with the
``openssl`` CLI), the etcd data, one log per component under ``logs/``, the admin ``kubeconfig``
and ``pids.json``. :meth:`Cluster.start` runs etcd, kube-apiserver (RBAC on), kube-controller-
manager, kube-scheduler and the KWOK controller, each in its own process group on free loopback
ports, waits until each is healthy (a timeout names the log to read), then creates the node fleet.
:meth:`Cluster.stop` kills exactly the processes recorded in ``pids.json``; with
``die_with_parent=True`` (the pytest fixture) the kernel also kills them if the parent dies.
With ``real_node=RealNodeOptions()`` (CLI ``--real-node``) the cluster also joins one real
kubelet node, fenced so no packet leaves the machine (:mod:`edgespec_dev.realnode`,
:mod:`edgespec_dev.netguard`); the API server then listens on the node's bridge address.
CLI: ``python -m edgespec_dev.cluster start|stop|status|load-image [--name N] [--nodes FILE]
[--real-node]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from edgespec_dev import netguard, tools
from edgespec_dev import nodes as fleet
from edgespec_dev.realnode import NODE_COMPONENTS, RealNode, RealNodeError, RealNodeOptions

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CLUSTER_IP_RANGE = netguard.SERVICE_CIDR
# KWOK hands out fake pod IPs from here: a range no real network uses (see netguard.FAKE_RANGES),
# so the real node's guard can reject every packet to it without touching the host's traffic.
POD_CIDR = netguard.FAKE_POD_RANGE.replace(".0/", ".1/")
KWOK_NODE_IP = "198.19.255.254"  # hostNetwork pods on KWOK nodes; inside netguard.FAKE_NODE_RANGE
_PR_SET_PDEATHSIG = 1

# With ``Cluster(audit_log=True)``: every request at Metadata level (who, verb, resource, user
# agent, response code; no bodies), except KWOK's per-node heartbeats (a Lease renewal and a
# status patch per node, thousands a minute at scale, none of interest) and health probes.
# ResponseStarted is kept: it is when a watch begins, ResponseComplete when it ends.
AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "None",
            "users": ["kwok-controller"],
            "resources": [
                {"group": "coordination.k8s.io", "resources": ["leases"]},
                {"group": "", "resources": ["nodes/status"]},
            ],
        },
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*"]},
        {"level": "Metadata"},
    ],
}


class ClusterError(RuntimeError):
    """The cluster could not be started or used; the message says which log to read."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; unlike its base class, the message includes kubectl's stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr or ''}".rstrip()


@dataclass
class Ports:
    """Loopback ports of one cluster; reused on restart when still free."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


def default_data_dir(name: str) -> Path:
    """Where the cluster called ``name`` keeps its state."""
    return tools.cache_dir() / "clusters" / name


class Cluster:
    """One local cluster, identified by its data directory."""

    def __init__(
        self,
        data_dir: Path | None = None,
        name: str = "edgespec",
        *,
        audit_log: bool = False,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        real_node: RealNodeOptions | None = None,
    ) -> None:
        """``audit_log=True`` makes the API server write an audit log (:attr:`audit_log_path`,
        one JSON event a line, :data:`AUDIT_POLICY`) from the next start on. ``extra_args`` adds
        command-line flags per component (``{"kube-controller-manager":
        ["--concurrent-daemonset-syncs=10"]}``), after the defaults, so they win. ``real_node``
        joins a real kubelet node at :meth:`start` (:attr:`node`); without it, a node recorded by an
        earlier start is still found, so :meth:`stop` cleans it up."""
        self.name = name
        self.data_dir = (data_dir or default_data_dir(name)).resolve()
        self.audit_log = audit_log
        self.extra_args = {component: list(args) for component, args in (extra_args or {}).items()}
        unknown = set(self.extra_args) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"extra_args for unknown components {sorted(unknown)}; known: {COMPONENTS}")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.node: RealNode | None = (
            RealNode(self, real_node) if real_node is not None else RealNode.recorded(self)
        )

    # ---- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``admin`` in group ``system:masters``)."""
        return self.data_dir / "kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    def log_path(self, component: str) -> Path:
        """The log file of ``component`` (one of :data:`COMPONENTS`)."""
        return self.data_dir / "logs" / f"{component}.log"

    @property
    def audit_log_path(self) -> Path:
        """The API server's audit log (written only with ``audit_log=True``)."""
        return self.data_dir / "logs" / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events so far, oldest first (an empty list if there is none)."""
        try:
            lines = self.audit_log_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        # The API server may be mid-line at the end of the file; skip what does not parse.
        events = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    @property
    def ports(self) -> Ports:
        """The ports chosen at the last start."""
        return Ports(**json.loads((self.data_dir / "ports.json").read_text()))

    @property
    def api_host(self) -> str:
        """The API server's address: loopback, or the real node's bridge address (reachable from pods)."""
        return self.node.ip if self.node is not None else "127.0.0.1"

    @property
    def server(self) -> str:
        """The API server URL, from the kubeconfig."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(
        self,
        node_manifests: Sequence[fleet.Manifest] | None = None,
        *,
        die_with_parent: bool = False,
        timeout_s: float = 120.0,
    ) -> None:
        """Start every component, wait until healthy, then apply ``node_manifests`` (the default
        fleet when None) and wait until those nodes are Ready; with a real node, join it (see
        :mod:`edgespec_dev.realnode`). Stops what it started on error."""
        running = [c for c, state in self.status().items() if state.startswith("running")]
        if running:
            raise ClusterError(
                f"cluster {self.name!r} in {self.data_dir} is already running ({', '.join(running)});"
                f" run `python -m edgespec_dev.cluster stop --name {self.name}` first"
            )
        binaries = {name: tools.ensure(name) for name in (*COMPONENTS[:4], "kwok", "kubectl")}
        stages = tools.kwok_stages()
        started = time.monotonic()
        try:
            for directory in (self.data_dir / "logs", self.pki_dir, self.data_dir / "etcd"):
                directory.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "etcd").chmod(0o700)
            if self.node is not None:
                self.node.prepare()  # bridge and guard rules before anything listens on the bridge
            self._make_pki()
            if self.audit_log:
                _write_atomically(self.data_dir / "audit-policy.yaml", yaml.safe_dump(AUDIT_POLICY))
            ports = self._choose_ports()
            self._write_kubeconfigs(ports)
            deadline = time.monotonic() + timeout_s
            self._spawn("etcd", [str(binaries["etcd"]), *self._etcd_args(ports)], die_with_parent)
            self._wait_http("etcd", f"http://127.0.0.1:{ports.etcd_client}/health", None, deadline)
            self._spawn(
                "kube-apiserver",
                [str(binaries["kube-apiserver"]), *self._apiserver_args(ports)],
                die_with_parent,
            )
            self._wait_http(
                "kube-apiserver",
                f"https://{self.api_host}:{ports.apiserver}/readyz",
                self._admin_ssl_context(),
                deadline,
            )
            for component, args in (
                ("kube-controller-manager", self._controller_manager_args(ports)),
                ("kube-scheduler", self._scheduler_args(ports)),
                ("kwok", self._kwok_args(ports, stages)),
            ):
                self._spawn(component, [str(binaries[component]), *args], die_with_parent)
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE  # self-signed health endpoints on loopback
            self._wait_http(
                "kube-controller-manager",
                f"https://127.0.0.1:{ports.controller_manager}/healthz",
                insecure,
                deadline,
            )
            self._wait_http(
                "kube-scheduler", f"https://127.0.0.1:{ports.scheduler}/healthz", insecure, deadline
            )
            self._wait_http("kwok", f"http://127.0.0.1:{ports.kwok}/healthz", None, deadline)
            # Pods are rejected until the ServiceAccount controller has made "default".
            self._wait_until(
                "kube-controller-manager",
                "the default ServiceAccount",
                lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                deadline,
            )
            manifests = fleet.default_fleet() if node_manifests is None else node_manifests
            if manifests:
                self.apply_nodes(manifests, timeout_s=max(10.0, deadline - time.monotonic()))
            if self.node is not None:
                self.node.join(deadline + 120.0, die_with_parent)
        except BaseException:
            # Includes Ctrl-C: leave no half-started cluster behind.
            self.stop()
            raise
        _say(f"cluster {self.name!r} up in {time.monotonic() - started:.1f}s")

    def stop(self, timeout_s: float = 15.0) -> list[str]:
        """Stop every recorded component (SIGTERM, then SIGKILL) and remove the real node's
        containers, mounts, cgroups, rules and bridge; returns the components stopped."""
        stopped = []
        if self.node is not None:
            alive_before = [c for c, s in self.status().items() if s.startswith("running")]
            self.node.stop_workloads()
            stopped += [c for c in NODE_COMPONENTS if c in alive_before]
        # etcd last: an API server with the lease endpoint reconciler (real node) removes its
        # endpoint on the way out and would wait for a dead etcd until SIGKILL.
        stopped += self._stop_components([c for c in COMPONENTS if c != "etcd"], timeout_s)
        stopped += self._stop_components(["etcd"], timeout_s)
        if self.node is not None:
            # Last: the control plane's clients used the bridge address until they stopped.
            self.node.remove_network()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "pids.json").unlink()
        return stopped

    def restart(
        self, components: Sequence[str], *, die_with_parent: bool = True, timeout_s: float = 60.0
    ) -> None:
        """Stop ``components`` (etcd and/or kube-apiserver; SIGTERM, then SIGKILL) and start them again
        on the same ports, data and certificates: what a control-plane upgrade or crash looks like to
        clients. The API server stops before etcd and starts after it."""
        unknown = set(components) - {"etcd", "kube-apiserver"}
        if unknown:
            raise ValueError(f"restart supports etcd and kube-apiserver, not {sorted(unknown)}")
        order = [c for c in ("kube-apiserver", "etcd") if c in components]
        for component in order:
            self._stop_components([component])
        ports = self.ports
        deadline = time.monotonic() + timeout_s
        if "etcd" in components:
            self._spawn("etcd", [str(tools.ensure("etcd")), *self._etcd_args(ports)], die_with_parent)
            self._wait_http("etcd", f"http://127.0.0.1:{ports.etcd_client}/health", None, deadline)
        if "kube-apiserver" in components:
            binary = str(tools.ensure("kube-apiserver"))
            self._spawn("kube-apiserver", [binary, *self._apiserver_args(ports)], die_with_parent)
        self._wait_http(
            "kube-apiserver",
            f"https://{self.api_host}:{ports.apiserver}/readyz",
            self._admin_ssl_context(),
            deadline,
        )
        _say(f"cluster {self.name!r}: restarted {', '.join(reversed(order))}")

    def _stop_components(self, components: Sequence[str], timeout_s: float = 15.0) -> list[str]:
        """Stop the named components (SIGTERM to the process group, SIGKILL after ``timeout_s``)."""
        records = self._read_pids()
        alive = {
            component: record["pid"]
            for component, record in records.items()
            if component in components and _is_same_process(record["pid"], record["start_ticks"])
        }
        for component in reversed(components):
            if component in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(alive[component], signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for component, pid in alive.items():
            while _is_same_process(pid, records[component]["start_ticks"]):
                self._reap(component)
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    time.sleep(0.1)
                    self._reap(component)
                    break
                time.sleep(0.05)
        for component in list(self._processes):
            self._reap(component)
        remaining = {c: r for c, r in self._read_pids().items() if c not in components}
        if remaining:
            _write_atomically(self.data_dir / "pids.json", json.dumps(remaining, indent=2))
        return [c for c in components if c in alive]

    def status(self) -> dict[str, str]:
        """Each component -> ``running (pid N)`` or ``stopped``."""
        records = self._read_pids()
        states = {}
        for component in (*COMPONENTS, *(NODE_COMPONENTS if self.node is not None else ())):
            record = records.get(component)
            if record and _is_same_process(record["pid"], record["start_ticks"]):
                states[component] = f"running (pid {record['pid']})"
            else:
                states[component] = "stopped"
        return states

    # ---- using the cluster -------------------------------------------------------------------
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout_s: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; raises :class:`KubectlError` if
        ``check`` and it fails."""
        command = [str(tools.ensure("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def apply_nodes(
        self, manifests: Sequence[fleet.Manifest], *, wait: bool = True, timeout_s: float = 60.0
    ) -> None:
        """Create or update KWOK nodes, then (by default) wait until they are Ready."""
        annotated = [fleet.with_kwok_annotation(m) for m in manifests]
        self.kubectl("apply", "-f", "-", input=fleet.to_yaml(annotated), timeout_s=600)
        if wait:
            self.wait_for_nodes_ready([m["metadata"]["name"] for m in annotated], timeout_s)

    def add_node(
        self,
        name: str,
        device_class: str,
        *,
        wait: bool = True,
        timeout_s: float = 60.0,
        **node_options: Any,
    ) -> fleet.Manifest:
        """Add one KWOK node of ``device_class`` (known or new); ``node_options`` go to
        :func:`edgespec_dev.nodes.node_manifest` (arch, cpu, memory, gpus, labels, taints)."""
        manifest = fleet.node_manifest(name, device_class, **node_options)
        self.apply_nodes([manifest], wait=wait, timeout_s=timeout_s)
        return manifest

    def delete_node(self, name: str, *, wait: bool = True) -> None:
        """Delete a node (its pods are then garbage-collected by the controller manager)."""
        self.kubectl("delete", "node", name, f"--wait={str(wait).lower()}", "--ignore-not-found")

    def wait_for_nodes_ready(
        self, names: Iterable[str], timeout_s: float = 60.0, *, component: str = "kwok"
    ) -> None:
        """Block until every named node has condition Ready=True (``component``: whose log to show
        on a timeout: ``kwok`` for emulated nodes, ``kubelet`` for the real one)."""
        wanted = set(names)
        deadline = time.monotonic() + timeout_s
        missing: set[str] = wanted
        while True:
            listing = json.loads(self.kubectl("get", "nodes", "-o", "json").stdout)
            ready = {
                item["metadata"]["name"]
                for item in listing["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in item.get("status", {}).get("conditions", [])
                )
            }
            missing = wanted - ready
            if not missing:
                return
            self._check_alive(component)
            if time.monotonic() > deadline:
                shown = ", ".join(sorted(missing)[:10])
                raise ClusterError(
                    f"{len(missing)} node(s) not Ready after {timeout_s:.0f}s ({shown}); "
                    f"see {self.log_path(component)}:\n{_tail(self.log_path(component))}"
                )
            time.sleep(0.5)

    # ---- component arguments -----------------------------------------------------------------
    def _etcd_args(self, ports: Ports) -> list[str]:
        client = f"http://127.0.0.1:{ports.etcd_client}"
        peer = f"http://127.0.0.1:{ports.etcd_peer}"
        return [
            "--name=edgespec",
            f"--data-dir={self.data_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=edgespec={peer}",
            "--listen-metrics-urls=",
            # A throwaway dev cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ]

    def _apiserver_args(self, ports: Ports) -> list[str]:
        pki = self.pki_dir
        return [
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            f"--bind-address={self.api_host}",
            f"--advertise-address={self.api_host}",
            f"--secure-port={ports.apiserver}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            *self._authorization_args(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
            *self._audit_args(),
        ]

    def _authorization_args(self) -> list[str]:
        if self.node is None:
            return [
                "--authorization-mode=RBAC",
                # No kubelets or real endpoints: a loopback endpoint for the "kubernetes" Service
                # would only be rejected and logged every 10 s.
                "--endpoint-reconciler-type=none",
            ]
        pki = self.pki_dir
        return [
            # The kubelet acts as system:node:<name>: the Node authorizer and NodeRestriction
            # limit it to its own Node object and the pods bound to it.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The "kubernetes" Service's endpoint is the bridge address, which pods reach.
            "--endpoint-reconciler-type=lease",
            # Logs and exec dial the node IP; the hostname does not resolve.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        ]

    def _audit_args(self) -> list[str]:
        if not self.audit_log:
            return []
        return [
            f"--audit-policy-file={self.data_dir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log_path}",
            "--audit-log-format=json",
            # Buffered writes, so measuring requests does not slow them down.
            "--audit-log-mode=batch",
            "--audit-log-maxsize=0",  # no rotation: the log lives as long as the cluster
        ]

    def _controller_manager_args(self, ports: Ports) -> list[str]:
        pki = self.pki_dir
        return [
            f"--kubeconfig={self.data_dir / 'kube-controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--cert-dir={pki / 'kube-controller-manager'}",
            "--leader-elect=false",
            # Each controller acts as its own ServiceAccount, as in a production cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--cluster-name={self.name}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # Defaults (20 QPS) make garbage collection crawl with hundreds of nodes and pods.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]

    def _scheduler_args(self, ports: Ports) -> list[str]:
        return [
            f"--kubeconfig={self.data_dir / 'kube-scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            f"--cert-dir={self.pki_dir / 'kube-scheduler'}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--profiling=false",
        ]

    def _kwok_args(self, ports: Ports, stages: Path) -> list[str]:
        return [
            f"--kubeconfig={self.data_dir / 'kwok.kubeconfig'}",
            f"--config={stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={fleet.KWOK_ANNOTATION}={fleet.KWOK_ANNOTATION_VALUE}",
            "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
            f"--cidr={POD_CIDR}",
            f"--node-ip={KWOK_NODE_IP}",
            "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ]

    # ---- processes ---------------------------------------------------------------------------
    def _spawn(
        self,
        component: str,
        command: list[str],
        die_with_parent: bool,
        env: Mapping[str, str] | None = None,
    ) -> None:
        command = [*command, *self.extra_args.get(component, [])]
        log_path = self.log_path(component)
        with open(log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%F %T')} {' '.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=None if env is None else dict(env),
                start_new_session=True,  # own process group: Ctrl-C in the terminal goes to us
                preexec_fn=_kill_me_with_parent(os.getpid()) if die_with_parent else None,
            )
        self._processes[component] = process
        records = self._read_pids()
        records[component] = {"pid": process.pid, "start_ticks": _start_ticks(process.pid)}
        _write_atomically(self.data_dir / "pids.json", json.dumps(records, indent=2))

    def _reap(self, component: str) -> None:
        process = self._processes.get(component)
        if process is not None and process.poll() is not None:
            del self._processes[component]

    def _check_alive(self, component: str) -> None:
        process = self._processes.get(component)
        if process is not None and process.poll() is not None:
            raise ClusterError(
                f"{component} exited with code {process.returncode}; see "
                f"{self.log_path(component)}:\n{_tail(self.log_path(component))}"
            )

    def _wait_http(self, component: str, url: str, context: ssl.SSLContext | None, deadline: float) -> None:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        self._wait_until(component, f"{url} to answer 200", healthy, deadline)

    def _wait_until(self, component: str, what: str, check: Callable[[], bool], deadline: float) -> None:
        while not check():
            self._check_alive(component)
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out waiting for {component}: {what}; see {self.log_path(component)}:"
                    f"\n{_tail(self.log_path(component))}"
                )
            time.sleep(0.2)

    def _read_pids(self) -> dict[str, dict[str, int]]:
        try:
            data: dict[str, dict[str, int]] = json.loads((self.data_dir / "pids.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    # ---- configuration -----------------------------------------------------------------------
    def _choose_ports(self) -> Ports:
        state_path = self.data_dir / "ports.json"
        previous: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            previous = json.loads(state_path.read_text())
        chosen: dict[str, int] = {}
        holders = []
        for field_name in Ports.__dataclass_fields__:
            # Keep a restarted cluster's ports (etcd remembers its peer URL) when still free.
            host = self.api_host if field_name == "apiserver" else "127.0.0.1"
            holder = _bind(previous.get(field_name, 0), host) or _bind(0, host)
            if holder is None:
                raise ClusterError("could not find a free loopback port")
            holders.append(holder)
            chosen[field_name] = holder.getsockname()[1]
        for holder in holders:
            holder.close()
        ports = Ports(**chosen)
        _write_atomically(state_path, json.dumps(asdict(ports), indent=2))
        return ports

    def _make_pki(self) -> None:
        pki = self.pki_dir
        if not (pki / "ca.crt").exists():
            _openssl(
                "req", "-x509", "-new", "-nodes", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-sha256", "-days", "3650",
                "-subj", f"/CN=edgespec-dev-ca-{self.name}",
                "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
            )  # fmt: skip
        server_ext = (
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,"
            "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
            + (f",IP:{self.node.ip}" if self.node is not None else "")
            + "\n"
        )
        client_ext = (
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
        leaves = {
            "apiserver": ("/CN=kube-apiserver", server_ext),
            "admin": ("/O=system:masters/CN=edgespec-admin", client_ext),
            "kube-controller-manager": ("/CN=system:kube-controller-manager", client_ext),
            "kube-scheduler": ("/CN=system:kube-scheduler", client_ext),
            # KWOK writes status of nodes and pods, leases and events everywhere: a superuser.
            "kwok": ("/O=system:masters/CN=kwok-controller", client_ext),
        }
        if self.node is not None:
            node = self.node.name
            leaves |= {
                # The Node authorizer knows a kubelet by this name and group.
                "kubelet": (f"/O=system:nodes/CN=system:node:{node}", client_ext),
                "kubelet-serving": (
                    f"/O=system:nodes/CN=system:node:{node}",
                    server_ext.split("subjectAltName=")[0] + f"subjectAltName=IP:{self.node.ip},DNS:{node}\n",
                ),
                "kube-proxy": ("/CN=system:kube-proxy", client_ext),  # bound to system:node-proxier
                "coredns": ("/CN=system:coredns", client_ext),
                "apiserver-kubelet-client": (
                    "/O=system:masters/CN=kube-apiserver-kubelet-client",
                    client_ext,
                ),
            }
        for leaf, (subject, extensions) in leaves.items():
            ext_file = pki / f"{leaf}.ext"
            # Reissue when the extensions changed (a real node adds its address to the SANs).
            if (pki / f"{leaf}.crt").exists() and ext_file.is_file() and ext_file.read_text() == extensions:
                continue
            ext_file.write_text(extensions)
            _openssl(
                "req", "-new", "-nodes", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", subject,
                "-keyout", str(pki / f"{leaf}.key"), "-out", str(pki / f"{leaf}.csr"),
            )  # fmt: skip
            _openssl(
                "x509", "-req", "-in", str(pki / f"{leaf}.csr"), "-CA", str(pki / "ca.crt"),
                "-CAkey", str(pki / "ca.key"), "-set_serial", f"0x{secrets.token_hex(16)}",
                "-days", "3650", "-sha256", "-extfile", str(ext_file),
                "-out", str(pki / f"{leaf}.crt"),
            )  # fmt: skip
        if not (pki / "sa.key").exists():
            _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
            _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        for key in pki.glob("*.key"):
            key.chmod(0o600)

    def _write_kubeconfigs(self, ports: Ports) -> None:
        server = f"https://{self.api_host}:{ports.apiserver}"
        for user, path in (
            ("admin", self.kubeconfig),
            ("kube-controller-manager", self.data_dir / "kube-controller-manager.kubeconfig"),
            ("kube-scheduler", self.data_dir / "kube-scheduler.kubeconfig"),
            ("kwok", self.data_dir / "kwok.kubeconfig"),
        ):
            self._write_kubeconfig(user, path, server)

    def _write_kubeconfig(self, user: str, path: Path, server: str) -> None:
        """A kubeconfig for ``user`` (its client certificate ``pki/<user>.crt``)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": _b64(self.pki_dir / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": _b64(self.pki_dir / f"{user}.crt"),
                        "client-key-data": _b64(self.pki_dir / f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user}}],
            "current-context": self.name,
            "preferences": {},
        }
        _write_atomically(path, yaml.safe_dump(config, sort_keys=False), mode=0o600)

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        return context


# ---- helpers ---------------------------------------------------------------------------------
def _kill_me_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to SIGKILL the child when its parent dies (no strays)."""
    try:
        libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    except OSError:
        libc = None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _start_ticks(pid: int) -> int:
    """Process start time in clock ticks since boot, to tell a process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_same_process(pid: int, start_ticks: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (start_ticks == 0 or int(fields[19]) == start_ticks)


def _bind(port: int, host: str = "127.0.0.1") -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As the servers themselves do: a port whose last connections linger in TIME_WAIT is free,
    # so a restarted cluster keeps its ports (and its kubeconfigs stay valid).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("the `openssl` CLI is needed to make certificates; install openssl")
    result = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    temp.chmod(mode)
    os.replace(temp, path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgespec_dev.cluster start|stop|status``."""
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.cluster",
        description=(
            "A local Kubernetes cluster (etcd, kube-apiserver, controller manager, scheduler) "
            "with KWOK-emulated edge and GPU nodes. No Docker; binaries are built once from Go "
            "modules (see `python -m edgespec_dev.tools list`)."
        ),
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="edgespec", help="cluster name (default: edgespec)")
    common.add_argument(
        "--data-dir", type=Path, help="state directory (default: $EDGESPEC_CACHE/clusters/<name>)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", parents=[common], help="start the cluster and create its nodes")
    start.add_argument("--nodes", type=Path, help="YAML file of Node manifests (default: the built-in fleet)")
    start.add_argument("--scale", type=int, default=0, help="also create N generated nodes (scale tests)")
    start.add_argument(
        "--sites",
        type=int,
        default=0,
        help=f"spread the --scale edge nodes over S sites (label {fleet.SITE_LABEL})",
    )
    start.add_argument(
        "--audit-log", action="store_true", help="API server audit log in <data dir>/logs/audit.log"
    )
    start.add_argument("--timeout", type=float, default=180.0, help="seconds to wait (180)")
    start.add_argument(
        "--real-node",
        action="store_true",
        help="also join one real kubelet node (containerd, kube-proxy, CoreDNS; needs root)",
    )
    start.add_argument("--node-name", help="real node's name (default: <name>-node)")
    start.add_argument(
        "--device-class",
        default=RealNodeOptions.device_class,
        help=f"real node's {fleet.DEVICE_CLASS_LABEL} label (default: %(default)s)",
    )
    start.add_argument(
        "--node-role",
        default=RealNodeOptions.role,
        help=f"real node's {fleet.ROLE_LABEL} label (%(default)s)",
    )
    start.add_argument("--subnet", help="real node's bridge subnet (default: a /24 derived from --name)")
    stop = commands.add_parser("stop", parents=[common], help="stop every process of the cluster")
    stop.add_argument("--delete", action="store_true", help="also delete its data directory")
    commands.add_parser("status", parents=[common], help="show which components run and the nodes")
    load = commands.add_parser(
        "load-image", parents=[common], help="import OCI/docker image archives into the real node"
    )
    load.add_argument("archives", nargs="+", type=Path, help="image archive files (.tar)")
    args = parser.parse_args(argv)
    options = None
    if getattr(args, "real_node", False):
        options = RealNodeOptions(
            name=args.node_name, device_class=args.device_class, role=args.node_role, subnet=args.subnet
        )
    cluster = Cluster(
        args.data_dir, args.name, audit_log=getattr(args, "audit_log", False), real_node=options
    )
    try:
        if args.command == "start":
            manifests = fleet.load_nodes(args.nodes.read_text()) if args.nodes else fleet.default_fleet()
            manifests += fleet.scale_fleet(args.scale, sites=args.sites)
            cluster.start(manifests, timeout_s=args.timeout)
            print(f"kubeconfig: {cluster.kubeconfig}")
            if cluster.node is not None:
                node = cluster.node
                print(f"real node: {node.name} {node.ip} containerd {node.containerd_socket}")
                print(f"model cache (hostPath): {node.models_dir}")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
        elif args.command == "stop":
            stopped = cluster.stop()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            if args.delete:
                shutil.rmtree(cluster.data_dir, ignore_errors=True)
                print(f"deleted {cluster.data_dir}")
        elif args.command == "load-image":
            if cluster.node is None:
                raise ClusterError(f"cluster {args.name!r} has no real node; start it with --real-node")
            for reference in cluster.node.load_images(args.archives):
                print(f"imported {reference}")
        else:
            states = cluster.status()
            for component, state in states.items():
                print(f"{component:24} {state}")
            if states["kube-apiserver"].startswith("running"):
                print(f"server: {cluster.server}\nkubeconfig: {cluster.kubeconfig}")
                print(cluster.kubectl("get", "nodes", "-L", fleet.DEVICE_CLASS_LABEL).stdout)
    except (ClusterError, tools.ToolBuildError, KubectlError, RealNodeError, netguard.NetworkError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopped what had started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
