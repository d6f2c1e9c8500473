"""One real kubelet node in the local cluster, next to the KWOK fleet, fenced so no packet leaves.

``python -m edgespec_dev.cluster start --real-node [--name N]`` (or ``Cluster(real_node=
RealNodeOptions())``) joins one real node to the cluster: containerd (the Debian package, its own
config, root and socket per cluster), kubelet and kube-proxy (built from the same
``hack/go/kubernetes`` module as the control plane) and CoreDNS (``hack/go/coredns``), all host
processes recorded in the cluster's ``pids.json``. The steps, in order:

1. :func:`why_not` (root, overlayfs, cgroups, Linux) and ``hack/setup-node.sh`` (the Debian
   packages, idempotent), the binaries, and a static pause image built from ``pause.c`` with gcc.
2. :func:`edgespec_dev.netguard.install`: the node's bridge and the guard chains, **before**
   anything of the node runs (the API server then binds to the bridge address, the node IP).
3. containerd (``restrict_oom_score_adj``, the local pause image as sandbox image, CNI bridge on
   the node's bridge with host-local IPAM, netns and runc state under ``/run/edgespec/<tag>``,
   registry traffic sent to a closed loopback proxy so an image that is not local fails
   instead of being pulled), then kubelet (cgroupfs under its own cgroup root
   ``/edgespec-<tag>``, client certificate ``system:node:<name>`` for the Node authorizer),
   kube-proxy (nftables mode; NodePorts only on the node IP; conntrack sysctls untouched) and
   CoreDNS (bound to the node IP:53, ``kubernetes`` plugin only, no forwarding: names outside
   ``cluster.local`` get SERVFAIL). Pods use the ``kube-dns`` Service (ClusterIP ``10.96.0.10``),
   whose EndpointSlice points at CoreDNS on the node IP.
4. The node registers with labels ``edgespec.dev/device-class=<class>`` (default ``local-cpu``)
   and ``edgespec.dev/role=<role>`` (default ``verifier``, what a VerifierSpec's default
   ``nodeSelector`` selects) and becomes Ready.

:meth:`RealNode.stop` (called by ``Cluster.stop``; idempotent, and after a crash it works from
the state recorded in ``/run/edgespec/<tag>/node.json`` and ``<data dir>/node/node.json``)
stops the node's processes, kills and deletes every containerd task and container, kills any
shim or container process left in its cgroups, unmounts everything under its directories,
removes its cgroups, kube-proxy's nftables tables, kubelet's canary chains, the guard chains and
the bridge, and restores the sysctls.

API for callers (tests, demo): ``cluster.node`` (a :class:`RealNode`) with ``.name``, ``.ip``,
``.containerd_socket``, ``.models_dir`` (``<data dir>/models``, node-local model cache to mount
as hostPath), ``.network`` (bridge, subnet, chain names), ``.load_images(archives)`` (OCI or
docker archives into containerd's ``k8s.io`` namespace), ``.ctr(*args)``; and
:func:`busybox_image` (a tiny local test image archive). Only one real node runs per machine at
a time: kube-proxy's nftables table (``kube-proxy``) is machine-wide.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from edgespec_dev import netguard, tools

if TYPE_CHECKING:
    from edgespec_dev.cluster import Cluster

NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
# iptables chains kubelet creates (and kube-proxy's canary), with fixed names.
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "KUBE-PROXY-CANARY")
DEFAULT_DEVICE_CLASS = "local-cpu"
DEFAULT_ROLE = "verifier"  # VerifierSpec.node_selector's default is {"edgespec.dev/role": "verifier"}
CLUSTER_DNS_IP = "10.96.0.10"
PAUSE_IMAGE = "edgespec.local/pause:1"
BUSYBOX_IMAGE = "edgespec.local/busybox:1"
RUN_ROOT = Path("/run/edgespec")
CNI_BIN_DIR = Path("/usr/lib/cni")
SETUP_SCRIPT = Path(__file__).resolve().parent.parent / "setup-node.sh"
# containerd sends registry requests through this proxy: nothing listens there (checked at start),
# so a pull of an image that is not in containerd fails at once and no request leaves the host.
DEAD_PROXY = "http://127.0.0.1:9"

PAUSE_C = r"""
/* The sandbox (pause) process of every pod on the edgespec real node: hold the namespaces,
   reap zombies, exit on SIGINT/SIGTERM. Built statically with gcc by edgespec_dev.realnode. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, quit);
    signal(SIGTERM, quit);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
"""

BUSYBOX_APPLETS = (
    "sh", "cat", "echo", "sleep", "wget", "nc", "nslookup", "ls", "httpd", "hostname", "ip",
    "true", "false", "env", "grep", "timeout", "id", "ps", "mkdir", "printf", "test",
)  # fmt: skip


class RealNodeError(RuntimeError):
    """The real node cannot start here or failed; the message says why and which log to read."""


@dataclass(frozen=True)
class RealNodeOptions:
    """What the real node is called and how it is labelled.

    ``name`` defaults to ``<cluster>-node``; ``subnet`` to a /24 derived from the cluster name
    (see :func:`edgespec_dev.netguard.plan`); ``labels`` are added to the two below."""

    name: str | None = None
    device_class: str = DEFAULT_DEVICE_CLASS
    role: str = DEFAULT_ROLE
    subnet: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def why_not() -> str | None:
    """Why this machine cannot host a real node (None if it can)."""
    if sys.platform != "linux":
        return f"a real node needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "a real node needs root (containerd, cgroups, iptables, bridges); run as root"
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        return "the kernel has no overlayfs (containerd's snapshotter); `modprobe overlay` and retry"
    cgroups = Path("/proc/self/mounts").read_text()
    if " cgroup " not in cgroups and " cgroup2 " not in cgroups:
        return "no cgroup filesystem is mounted under /sys/fs/cgroup"
    if not Path("/proc/sys/net/bridge").is_dir():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
        if not Path("/proc/sys/net/bridge").is_dir():
            return "the kernel lacks br_netfilter (/proc/sys/net/bridge), which kube-proxy needs"
    if shutil.which("apt-get") is None and any(
        shutil.which(tool) is None for tool in ("containerd", "runc", "iptables", "nft")
    ):
        return "containerd, runc, iptables or nft is missing and there is no apt-get to install them"
    return None


def setup_host() -> None:
    """Install the node's Debian packages if missing (``hack/setup-node.sh``, idempotent)."""
    result = subprocess.run(["bash", str(SETUP_SCRIPT)], stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise RealNodeError(f"{SETUP_SCRIPT} failed (exit {result.returncode}); see its output above")


# ---- images ------------------------------------------------------------------------------------
def images_dir() -> Path:
    return tools.cache_dir() / "realnode-images"


def oci_archive(
    reference: str, files: Mapping[str, bytes | Path], *, entrypoint: Sequence[str], cmd: Sequence[str] = ()
) -> Path:
    """A one-layer OCI image archive (``ctr images import`` format) named ``reference`` holding
    ``files`` (path in the image -> content, or a host file; ``"->target"`` bytes make a symlink).
    Cached in ``<cache>/realnode-images`` by content hash, so rebuilding an unchanged image is free."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({str(Path(p).parent) for p in files} - {"."})
        for directory in directories:
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, content in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mtime = 0
            if isinstance(content, bytes) and content.startswith(b"->"):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content[2:].decode(), 0o777
                tar.addfile(info)
                continue
            data = content.read_bytes() if isinstance(content, Path) else content
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    layer_tar = layer.getvalue()
    layer_gz = gzip.compress(layer_tar, mtime=0)
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": list(entrypoint), "Cmd": list(cmd) or None},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
        "history": [{"created_by": "edgespec_dev.realnode.oci_archive"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config_bytes),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer_gz)],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    index_bytes = json.dumps(index, sort_keys=True).encode()
    digest = hashlib.sha256(index_bytes).hexdigest()[:16]
    target = images_dir() / f"{reference.replace('/', '_').replace(':', '_')}-{digest}.tar"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_suffix(f".{os.getpid()}.tmp")
    with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in (
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index_bytes),
            *(
                (f"blobs/sha256/{hashlib.sha256(b).hexdigest()}", b)
                for b in (config_bytes, manifest_bytes, layer_gz)
            ),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    os.replace(temp, target)
    return target


def pause_image() -> Path:
    """The sandbox image: a static pause binary compiled from :data:`PAUSE_C` with gcc."""
    source_hash = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]
    binary = images_dir() / f"pause-{source_hash}"
    if not binary.is_file():
        if shutil.which("gcc") is None:
            raise RealNodeError("gcc is needed to build the pause binary; run hack/setup-node.sh")
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as temp:
            source = Path(temp) / "pause.c"
            source.write_text(PAUSE_C)
            result = subprocess.run(
                ["gcc", "-static", "-Os", "-s", "-o", str(Path(temp) / "pause"), str(source)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RealNodeError(f"gcc -static pause.c failed (need libc6-dev):\n{result.stderr}")
            shutil.move(str(Path(temp) / "pause"), binary)
    return oci_archive(PAUSE_IMAGE, {"/pause": binary}, entrypoint=["/pause"])


def busybox_image() -> tuple[str, Path]:
    """A tiny test image from Debian's busybox-static: (reference, archive). Use with
    ``imagePullPolicy: Never`` after :meth:`RealNode.load_images`."""
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise RealNodeError("/bin/busybox is missing; run hack/setup-node.sh (busybox-static)")
    files: dict[str, bytes | Path] = {"/bin/busybox": busybox}
    files.update({f"/bin/{applet}": b"->busybox" for applet in BUSYBOX_APPLETS})
    return BUSYBOX_IMAGE, oci_archive(BUSYBOX_IMAGE, files, entrypoint=[], cmd=["/bin/sh"])


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
    }


# ---- the node -----------------------------------------------------------------------------------
class RealNode:
    """The real node of one cluster: paths, configuration, start and stop."""

    def __init__(self, cluster: Cluster, options: RealNodeOptions | None = None) -> None:
        self.cluster = cluster
        self.options = options or RealNodeOptions()
        self.network = netguard.plan(cluster.name, self.options.subnet)
        self.name = self.options.name or _dns_label(f"{cluster.name}-node")

    @classmethod
    def recorded(cls, cluster: Cluster) -> RealNode | None:
        """The node recorded in the data dir by an earlier start (None if there is none)."""
        try:
            state = json.loads((cluster.data_dir / "node" / "node.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        options = RealNodeOptions(
            name=state["name"],
            device_class=state.get("device_class", DEFAULT_DEVICE_CLASS),
            role=state.get("role", DEFAULT_ROLE),
            subnet=state["network"]["subnet"],
            labels=state.get("labels", {}),
        )
        return cls(cluster, options)

    # ---- paths and properties ------------------------------------------------------------------
    @property
    def ip(self) -> str:
        """The node IP (the bridge's address; also the API server's and CoreDNS's)."""
        return self.network.node_ip

    @property
    def dir(self) -> Path:
        return self.cluster.data_dir / "node"

    @property
    def run_dir(self) -> Path:
        """Runtime state with short paths (unix sockets): containerd state, runc root, netns."""
        return RUN_ROOT / self.network.tag

    @property
    def containerd_socket(self) -> Path:
        """containerd's gRPC socket (``ctr -a SOCKET -n k8s.io ...``)."""
        return self.run_dir / "containerd.sock"

    @property
    def models_dir(self) -> Path:
        """Node-local model cache (``<data dir>/models``), to mount into pods as a hostPath."""
        return self.cluster.data_dir / "models"

    @property
    def cgroup_root(self) -> str:
        return f"/edgespec-{self.network.tag}"

    def labels(self) -> dict[str, str]:
        from edgespec_dev.nodes import DEVICE_CLASS_LABEL, ROLE_LABEL

        return {
            DEVICE_CLASS_LABEL: self.options.device_class,
            ROLE_LABEL: self.options.role,
            **self.options.labels,
        }

    # ---- lifecycle ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything before the control plane: preflight, packages, binaries, pause image,
        stale leftovers of an earlier crash, then the bridge and the guard rules."""
        reason = why_not()
        if reason:
            raise RealNodeError(f"this machine cannot host a real node: {reason}")
        _timed("host packages", setup_host)
        _timed(
            "kubelet, kube-proxy, CoreDNS binaries",
            lambda: [tools.ensure(n) for n in ("kubelet", "kube-proxy", "coredns")],
        )
        _timed("pause image", pause_image)
        # Clean first: the cleanup stops this cluster's own stale node, which drops its claim.
        self._clean_crashed_run()
        self._claim_machine()
        for directory in (self.dir, self.run_dir, self.models_dir, self.dir / "cni" / "net.d"):
            directory.mkdir(parents=True, exist_ok=True)
        self._write_state()
        _timed("bridge and guard rules", lambda: netguard.install(self.network))

    def join(self, deadline: float, die_with_parent: bool = False) -> None:
        """Start containerd, kubelet, kube-proxy and CoreDNS; wait until the node is Ready."""
        cluster, started = self.cluster, time.monotonic()
        if _port_open("127.0.0.1", 9):
            raise RealNodeError("something listens on 127.0.0.1:9, the dead proxy containerd's pulls use")
        self._write_configs()
        env = {
            **{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "NO_PROXY": "",
        }
        cluster._spawn(
            "containerd",
            ["containerd", "--config", str(self.dir / "containerd.toml")],
            die_with_parent,
            env=env,
        )
        cluster._wait_until(
            "containerd",
            f"{self.containerd_socket} to answer",
            lambda: self.ctr("version", check=False).returncode == 0,
            deadline,
        )
        self.load_images([pause_image()])
        self._make_cgroup_root()
        cluster._spawn("kubelet", [str(tools.ensure("kubelet")), *self._kubelet_args()], die_with_parent)
        cluster._spawn(
            "kube-proxy",
            [str(tools.ensure("kube-proxy")), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"],
            die_with_parent,
        )
        cluster.kubectl("apply", "-f", "-", input=self._dns_objects())
        cluster._spawn(
            "coredns", [str(tools.ensure("coredns")), "-conf", str(self.dir / "Corefile")], die_with_parent
        )
        cluster._wait_http("coredns", f"http://{self.ip}:8181/ready", None, deadline)
        cluster._wait_http("kube-proxy", f"http://{self.ip}:10256/healthz", None, deadline)
        cluster.wait_for_nodes_ready([self.name], max(10.0, deadline - time.monotonic()), component="kubelet")
        netguard.ensure_jumps_first(self.network)
        _say(f"real node: {self.name} ({self.ip}) Ready in {time.monotonic() - started:.1f}s")

    def stop(self) -> list[str]:
        """Stop the node and remove all it made (idempotent; also after a crash). The control
        plane must be stopped between :meth:`stop_workloads` and :meth:`remove_network` (as
        ``Cluster.stop`` does): its clients talk to the bridge address, and without the bridge
        their packets would follow the default route."""
        return self.stop_workloads() + self.remove_network()

    def stop_workloads(self) -> list[str]:
        """Stop the node's processes and remove its containers, mounts, cgroups and kubelet's and
        kube-proxy's rules; the bridge and the guard stay."""
        cleaned = self.cluster._stop_components(["coredns", "kube-proxy", "kubelet"])
        sandboxes = self._sandbox_ids()
        if self.ctr("version", check=False, timeout_s=5).returncode == 0:
            cleaned += self._delete_containers()
        cleaned += self.cluster._stop_components(["containerd"])
        cleaned += self._kill_leftover_processes()
        cleaned += self._unmount_all()
        cleaned += self._remove_cgroups()
        if self._owns_machine_wide_state():
            cleaned += self._remove_machine_wide_rules()
        cleaned += self._remove_log_links()
        cleaned += _remove_cni_cache(f"edgespec-{self.network.tag}-", sandboxes)
        return cleaned

    def _sandbox_ids(self) -> set[str]:
        """Pod sandbox ids known to containerd's CRI plugin (also readable after a crash)."""
        ids: set[str] = set()
        for base in (self.dir / "containerd" / "root", self.run_dir / "containerd"):
            with contextlib.suppress(OSError):
                ids.update(p.name for p in (base / "io.containerd.grpc.v1.cri" / "sandboxes").iterdir())
        return ids

    def remove_network(self) -> list[str]:
        """Remove the guard chains and the bridge, restore the sysctls, forget the node."""
        cleaned = netguard.remove(self.network)
        if self.run_dir.exists() and not any(m.startswith(str(self.run_dir)) for m in _mount_points()):
            shutil.rmtree(self.run_dir, ignore_errors=True)
            cleaned.append(f"removed {self.run_dir}")
        active = RUN_ROOT / "active-node.json"
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if json.loads(active.read_text()).get("data_dir") == str(self.cluster.data_dir):
                active.unlink()
        return cleaned

    # ---- using the node -----------------------------------------------------------------------
    def ctr(
        self, *args: str, check: bool = True, timeout_s: float = 600.0
    ) -> subprocess.CompletedProcess[str]:
        """``ctr -a <socket> -n k8s.io ARGS`` against this node's containerd."""
        command = ["ctr", "-a", str(self.containerd_socket), "-n", "k8s.io", *args]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
                check=False,
            )
        except (FileNotFoundError, subprocess.TimeoutExpired) as error:
            result = subprocess.CompletedProcess(command, 124, "", str(error))
        if check and result.returncode != 0:
            raise RealNodeError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
        return result

    def load_images(self, archives: Sequence[Path]) -> list[str]:
        """Import OCI or docker image archives into containerd (namespace ``k8s.io``); returns
        the image references imported."""
        imported: list[str] = []
        for archive in archives:
            if not Path(archive).is_file():
                raise RealNodeError(f"image archive {archive} does not exist")
            output = self.ctr("images", "import", "--no-unpack=false", str(archive)).stdout
            imported += [line.split()[1] for line in output.splitlines() if line.startswith("unpacking ")]
        return imported

    def images(self) -> list[str]:
        """References of the images containerd holds."""
        return [line for line in self.ctr("images", "ls", "-q").stdout.splitlines() if line]

    def tasks(self) -> list[str]:
        """Running containerd tasks (containers with a process)."""
        rows = self.ctr("tasks", "ls", check=False).stdout.splitlines()[1:]
        return [row.split()[0] for row in rows if row.strip()]

    # ---- configuration -----------------------------------------------------------------------
    def _write_state(self) -> None:
        state = {
            "name": self.name,
            "device_class": self.options.device_class,
            "role": self.options.role,
            "labels": dict(self.options.labels),
            "network": self.network.to_json(),
            "data_dir": str(self.cluster.data_dir),
            "run_dir": str(self.run_dir),
            "cgroup_root": self.cgroup_root,
        }
        for path in (self.dir / "node.json", self.run_dir / "node.json"):
            path.write_text(json.dumps(state, indent=2))

    def _clean_crashed_run(self) -> None:
        """Remove what a crashed run of this cluster name left (possibly from another data dir)."""
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            recorded = json.loads((self.run_dir / "node.json").read_text())
            if recorded["data_dir"] != str(self.cluster.data_dir):
                old = type(self.cluster)(Path(recorded["data_dir"]), self.cluster.name)
                if old.node is not None:
                    _say(f"real node: cleaning up a crashed run in {old.data_dir}")
                    old.stop()
        self.stop()

    def _owns_machine_wide_state(self) -> bool:
        """Whether kube-proxy's table and kubelet's chains, if any, are this node's (not those of
        another cluster's running node, which a refused start must not touch)."""
        try:
            active = json.loads((RUN_ROOT / "active-node.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return True
        return bool(active.get("data_dir") == str(self.cluster.data_dir))

    def _claim_machine(self) -> None:
        """Record this cluster as the machine's real node, or refuse if another one runs or is
        starting (checked and recorded under a lock, so two starts cannot both pass)."""
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        active = RUN_ROOT / "active-node.json"
        with open(RUN_ROOT / "active-node.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                other = json.loads(active.read_text())
                if other["data_dir"] != str(self.cluster.data_dir) and _node_alive(other):
                    raise RealNodeError(
                        f"cluster {other['cluster']!r} already runs a real node on this machine (or is "
                        "starting one); kube-proxy's nftables table is machine-wide, so only one real node "
                        f"runs at a time: run `python -m edgespec_dev.cluster stop --name {other['cluster']}`"
                        " first"
                    )
            claim = {
                "cluster": self.cluster.name,
                "data_dir": str(self.cluster.data_dir),
                "starter": os.getpid(),
            }
            active.write_text(json.dumps(claim, indent=2))

    def _write_configs(self) -> None:
        cluster, pki = self.cluster, self.cluster.pki_dir
        server = f"https://{self.ip}:{cluster.ports.apiserver}"
        for user in ("kubelet", "kube-proxy", "coredns"):
            cluster._write_kubeconfig(user, self.dir / f"{user}.kubeconfig", server)
        containerd_dir = self.dir / "containerd"
        containerd_dir.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        toml = f"""\
version = 2
root = "{containerd_dir / "root"}"
state = "{self.run_dir / "containerd"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
]
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{containerd_dir / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  stream_server_address = "127.0.0.1"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self.run_dir / "runc"}"
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.dir / "cni" / "net.d"}"
  max_conf_num = 1
"""
        (self.dir / "containerd.toml").write_text(toml)
        conflist = {
            "cniVersion": "0.4.0",
            "name": f"edgespec-{self.network.tag}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.network.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.network.subnet), "gateway": self.ip}]],
                        # Every destination via the node IP, where the guard decides.
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (self.dir / "cni" / "net.d" / "10-edgespec.conflist").write_text(json.dumps(conflist, indent=2))
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": self.ip,
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "clusterDNS": [CLUSTER_DNS_IP],
            "clusterDomain": "cluster.local",
            "resolvConf": "",
            "podLogsDir": str(self.dir / "pod-logs"),
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "maxPods": 110,
            # Pods are re-synced every 10 s (default 1 min), so a changed ConfigMap (a new K) reaches
            # the mounted file within seconds; a default kubelet takes up to about a minute.
            "syncFrequency": "10s",
            "rotateCertificates": False,
            "registerNode": True,
        }
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(kubelet, sort_keys=False))
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "mode": "nftables",
            "hostnameOverride": self.name,
            "bindAddress": self.ip,
            "healthzBindAddress": f"{self.ip}:10256",
            "metricsBindAddress": f"{self.ip}:10249",
            "clusterCIDR": str(self.network.subnet),
            "nodePortAddresses": [f"{self.ip}/32"],
            # Leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (self.dir / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy, sort_keys=False))
        corefile = f"""\
.:53 {{
    bind {self.ip}
    errors
    health {self.ip}:8080
    ready {self.ip}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {self.dir / "coredns.kubeconfig"} {cluster.name}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""
        (self.dir / "Corefile").write_text(corefile)

    def _kubelet_args(self) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in self.labels().items())
        return [
            f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={self.dir / 'kubelet'}",
            f"--cert-dir={self.dir / 'kubelet' / 'pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.ip}",
            f"--node-labels={labels}",
            "--v=1",
        ]

    def _dns_objects(self) -> str:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "edgespec:coredns"},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "edgespec:coredns"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edgespec:coredns",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
                ],
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kube-dns",
                    "namespace": "kube-system",
                    "labels": {"k8s-app": "kube-dns"},
                },
                "spec": {
                    "clusterIP": CLUSTER_DNS_IP,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    ],
                },
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-coredns",
                    "namespace": "kube-system",
                    "labels": {
                        "kubernetes.io/service-name": "kube-dns",
                        "endpointslice.kubernetes.io/managed-by": "edgespec.dev",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [self.ip], "conditions": {"ready": True}, "nodeName": self.name}],
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        ]
        return yaml.safe_dump_all(objects, sort_keys=False)

    # ---- cleanup -------------------------------------------------------------------------------
    def _make_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / self.cgroup_root.lstrip("/")
            path.mkdir(exist_ok=True)
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (path / knob).read_text().strip():
                        (path / knob).write_text((hierarchy / knob).read_text())

    def _delete_containers(self) -> list[str]:
        done = []
        for task in self.tasks():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False, timeout_s=30)
        deadline = time.monotonic() + 20
        while self.tasks() and time.monotonic() < deadline:
            for task in self.tasks():
                if self.ctr("tasks", "delete", task, check=False, timeout_s=30).returncode == 0:
                    done.append(f"task {task[:12]}")
            time.sleep(0.2)
        containers = [c for c in self.ctr("containers", "ls", "-q", check=False).stdout.splitlines() if c]
        for container in containers:
            if self.ctr("containers", "delete", container, check=False, timeout_s=30).returncode == 0:
                done.append(f"container {container[:12]}")
        return done

    def _kill_leftover_processes(self) -> list[str]:
        killed = []
        socket = str(self.containerd_socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if b"containerd-shim" in cmdline[0] and socket.encode() in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(f"shim pid {proc.name}")
        for pid in self._cgroup_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(f"container pid {pid}")
        return killed

    def _cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if root.is_dir():
                for procs in root.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError):
                        pids.update(int(p) for p in procs.read_text().split())
        return pids

    def _remove_cgroups(self) -> list[str]:
        removed = []
        deadline = time.monotonic() + 10
        while self._cgroup_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for hierarchy in _cgroup_hierarchies():
            root = hierarchy / self.cgroup_root.lstrip("/")
            if not root.is_dir():
                continue
            for directory in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()
                removed.append(f"cgroup {root}")
        return removed

    def _unmount_all(self) -> list[str]:
        prefixes = [str(self.run_dir), str(self.dir)]
        unmounted = []
        for _ in range(3):
            points = [m for m in _mount_points() if any(m == p or m.startswith(p + "/") for p in prefixes)]
            if not points:
                break
            for point in sorted(set(points), key=lambda p: -len(p)):
                result = subprocess.run(["umount", point], capture_output=True, check=False)
                if result.returncode != 0:
                    subprocess.run(["umount", "-l", point], capture_output=True, check=False)
                unmounted.append(f"mount {point}")
        return unmounted

    def _remove_machine_wide_rules(self) -> list[str]:
        """kube-proxy's nftables tables and kubelet's iptables chains (fixed names, so one real node
        per machine): KUBE-FIREWALL (jumped from INPUT and OUTPUT) and the canaries."""
        removed = []
        if shutil.which("nft"):
            for family in ("ip", "ip6"):
                listed = subprocess.run(["nft", "list", "table", family, "kube-proxy"], capture_output=True)
                if listed.returncode == 0:
                    subprocess.run(["nft", "delete", "table", family, "kube-proxy"], capture_output=True)
                    removed.append(f"nft table {family} kube-proxy")
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                continue
            for table in ("mangle", "nat", "filter"):
                rules = subprocess.run([tool, "-t", table, "-S"], capture_output=True, text=True).stdout
                for rule in rules.splitlines():
                    words = shlex.split(rule)
                    if words[:1] == ["-A"] and words[-2:-1] == ["-j"] and words[-1] in KUBELET_CHAINS:
                        subprocess.run([tool, "-t", table, "-D", *words[1:]], capture_output=True)
                for chain in KUBELET_CHAINS:
                    if f"-N {chain}" in rules.splitlines():
                        subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
                        subprocess.run([tool, "-t", table, "-X", chain], capture_output=True)
                        removed.append(f"{tool} -t {table} {chain}")
        return removed

    def _remove_log_links(self) -> list[str]:
        """kubelet links each container's log into /var/log/containers (a fixed path)."""
        removed = []
        logs = str(self.dir / "pod-logs")
        with contextlib.suppress(FileNotFoundError):
            for link in Path("/var/log/containers").iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and os.readlink(link).startswith(logs):
                        link.unlink()
                        removed.append(f"log link {link.name}")
        return removed

    def leftovers(self) -> list[str]:
        """What of this node still exists on the machine (empty after :meth:`stop`)."""
        found = netguard.leftovers(self.network)
        found += [f"mount {m}" for m in _mount_points() if m.startswith((str(self.run_dir), str(self.dir)))]
        found += [
            f"cgroup {h / self.cgroup_root.lstrip('/')}"
            for h in _cgroup_hierarchies()
            if (h / self.cgroup_root.lstrip("/")).exists()
        ]
        found += [f"process {pid}" for pid in self._cgroup_pids()]
        if self.run_dir.exists():
            found.append(f"directory {self.run_dir}")
        with contextlib.suppress(FileNotFoundError):
            prefix = f"edgespec-{self.network.tag}-"
            found += [
                f"CNI cache {e.name}"
                for e in Path("/var/lib/cni/results").iterdir()
                if e.name.startswith(prefix)
            ]
        return found


# ---- helpers --------------------------------------------------------------------------------------
def _remove_cni_cache(network_prefix: str, sandboxes: set[str]) -> list[str]:
    """libcni caches each attachment's result in /var/lib/cni/results (a fixed path): remove the
    ones of this node's network and of its sandboxes' loopback."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in Path("/var/lib/cni/results").iterdir():
            if entry.name.startswith(network_prefix) or any(
                f"-{sandbox}-" in entry.name for sandbox in sandboxes
            ):
                entry.unlink(missing_ok=True)
                removed.append(f"CNI cache {entry.name[:40]}")
    return removed


def _cgroup_hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]  # cgroup v2
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()]


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        points.append(point)
    return points


def _node_alive(claim: Mapping[str, Any]) -> bool:
    """Whether the cluster that claimed the machine's real node still has a live process: the
    process starting it, or any component recorded in its ``pids.json``."""
    pids = [int(claim.get("starter", 0))]
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        records = json.loads((Path(claim["data_dir"]) / "pids.json").read_text())
        pids += [int(record["pid"]) for record in records.values()]
    return any(pid > 0 and _alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _dns_label(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return cleaned[:63].rstrip("-") or "edgespec-node"


def _timed(what: str, step: Callable[[], object]) -> None:
    started = time.monotonic()
    step()
    _say(f"real node: {what} ready in {time.monotonic() - started:.1f}s")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
