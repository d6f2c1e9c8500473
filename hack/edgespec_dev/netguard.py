"""The real node's network and the guard rules that keep every packet of the cluster on this machine.

A real node (see :mod:`edgespec_dev.realnode`) gets a Linux bridge with its own /24 (chosen from
a hash of the cluster name inside :data:`NODE_SUBNETS`, or given); the bridge's first address
is the node IP, the API server's address and CoreDNS's. Before kubelet and kube-proxy start,
:func:`install` creates the bridge and three iptables chains per cluster (their names carry
:attr:`Network.tag`, a hash of the cluster name, so two clusters never share a chain):

``EDGESPEC-<tag>-PODS`` (filter; jumped from FORWARD and INPUT at position 1, only for packets
  entering through the cluster's bridge): a pod may reach the bridge subnet (other pods) and the
  node IP; everything else is REJECTed. The filter table runs after the nat table's DNAT, so a
  packet that kube-proxy translated from a ClusterIP to a KWOK pod's fake address is rejected
  here, and one still addressed to the service CIDR had no endpoint and is rejected too.
``EDGESPEC-<tag>-HOST`` (filter; jumped from OUTPUT at position 1): the host's own packets to
  the node subnet other than through the bridge (were the bridge gone), to the fake ranges
  (:data:`FAKE_RANGES`: KWOK's pod and node addresses) and to the service CIDR (seen after
  DNAT, so only untranslated ones) are REJECTed. These ranges exist nowhere else on the machine
  (checked by :func:`check_free`), so no other traffic of the host matches.
``EDGESPEC-<tag>-PODS6`` (ip6 filter; jumped from FORWARD for the bridge): pods have only
  link-local IPv6, and nothing they send is routed.

:func:`install` records ``net.ipv4.ip_forward`` in a machine-wide file (:data:`SYSCTL_STATE`)
with the clusters using it and sets it to 1 (pods reach Services through the host's routing;
the CNI bridge plugin would set it anyway). Bridged pod-to-pod packets go through iptables by
the bridge's own ``nf_call_iptables`` option, so ``net.bridge.bridge-nf-call-iptables`` is not
changed. :func:`remove` deletes the jumps, chains and bridge and restores ``ip_forward`` (and the
kernel settings kubelet changes at start-up, :data:`SYSCTLS`) when the last cluster leaves.
Both are idempotent. :func:`guard_rules` returns the rules
as data (what tests assert), :func:`chain_counters` their packet counters.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgespec_dev import nodes as fleet

# Where real-node bridges get their /24s (clear of the service CIDR and the fake ranges).
NODE_SUBNETS = ipaddress.IPv4Network("10.200.0.0/13")
SERVICE_CIDR = "10.96.0.0/16"
# KWOK's fake pod addresses and the fake nodes' InternalIPs: RFC 2544's benchmarking range,
# which no real network uses, so rejecting the host's packets to it touches nothing else.
FAKE_POD_RANGE = "198.18.0.0/16"
FAKE_NODE_RANGE = fleet.FAKE_NODE_RANGE
FAKE_RANGES = (FAKE_POD_RANGE, FAKE_NODE_RANGE)
SYSCTL_STATE = Path("/run/edgespec/sysctl.json")
# Recorded before the first real node starts and restored after the last one stops: ip_forward,
# which install() sets, and what kubelet sets at start-up (its "kernel tunables").
SYSCTLS = (
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
SYSCTLS_SET = {"net/ipv4/ip_forward": "1"}
REJECT = ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]


class NetworkError(RuntimeError):
    """The node network cannot be set up; the message says why and what to change."""


@dataclass(frozen=True)
class Network:
    """The addresses and names of one cluster's node network."""

    cluster: str
    tag: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def node_ip(self) -> str:
        """The bridge's address: node IP, API server and CoreDNS address."""
        return str(self.subnet.network_address + 1)

    @property
    def pods_chain(self) -> str:
        return f"EDGESPEC-{self.tag}-PODS"

    @property
    def host_chain(self) -> str:
        return f"EDGESPEC-{self.tag}-HOST"

    @property
    def pods6_chain(self) -> str:
        return f"EDGESPEC-{self.tag}-PODS6"

    def to_json(self) -> dict[str, str]:
        return {"cluster": self.cluster, "tag": self.tag, "bridge": self.bridge, "subnet": str(self.subnet)}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> Network:
        return cls(data["cluster"], data["tag"], data["bridge"], ipaddress.IPv4Network(data["subnet"]))


def plan(cluster: str, subnet: str | None = None) -> Network:
    """The network of ``cluster``: bridge ``esbr-<tag>`` and a /24 derived from the name unless
    ``subnet`` (a /24 or larger block, e.g. ``10.201.7.0/24``) is given."""
    tag = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    if subnet is None:
        count = 2 ** (24 - NODE_SUBNETS.prefixlen)
        index = int(tag, 16) % count
        chosen = ipaddress.IPv4Network((int(NODE_SUBNETS.network_address) + index * 256, 24))
    else:
        try:
            chosen = ipaddress.IPv4Network(subnet)
        except ValueError as error:
            raise NetworkError(f"--subnet {subnet!r} is not an IPv4 network ({error})") from None
        if chosen.prefixlen > 28 or not chosen.is_private:
            raise NetworkError(f"--subnet {subnet}: use a private block of at least 16 addresses")
        for reserved in (SERVICE_CIDR, *FAKE_RANGES):
            if chosen.overlaps(ipaddress.IPv4Network(reserved)):
                raise NetworkError(f"--subnet {subnet} overlaps the cluster range {reserved}")
    return Network(cluster, tag, f"esbr-{tag}", chosen)


def guard_rules(network: Network) -> dict[str, list[list[str]]]:
    """Each guard chain (``table/chain``) -> its rules, as iptables arguments after ``-A CHAIN``."""
    return {
        f"filter/{network.pods_chain}": [
            ["-d", str(network.subnet), "-j", "RETURN"],
            ["-d", f"{network.node_ip}/32", "-j", "RETURN"],
            REJECT,
        ],
        f"filter/{network.host_chain}": [
            # The node subnet exists only on the bridge: if the bridge were gone, packets to the
            # API server's address would otherwise follow the default route.
            [
                "-d",
                str(network.subnet),
                "!",
                "-o",
                network.bridge,
                "-m",
                "addrtype",
                "!",
                "--dst-type",
                "LOCAL",
                *REJECT,
            ],
            *(["-d", cidr, *REJECT] for cidr in FAKE_RANGES),
            ["-d", SERVICE_CIDR, *REJECT],
        ],
        f"filter6/{network.pods6_chain}": [
            ["-o", network.bridge, "-j", "RETURN"],
            ["-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"],
        ],
    }


def guard_jumps(network: Network) -> list[tuple[str, str, list[str]]]:
    """(``filter``/``filter6``, built-in chain, match + jump) of every jump into a guard chain."""
    return [
        ("filter", "FORWARD", ["-i", network.bridge, "-j", network.pods_chain]),
        ("filter", "INPUT", ["-i", network.bridge, "-j", network.pods_chain]),
        ("filter", "OUTPUT", ["-j", network.host_chain]),
        ("filter6", "FORWARD", ["-i", network.bridge, "-j", network.pods6_chain]),
    ]


def check_free(network: Network) -> None:
    """Refuse (:class:`NetworkError`) when the bridge subnet or a fake range is already an address or
    route on this machine (other than this cluster's own bridge)."""
    ours = network.bridge
    mine = ipaddress.IPv4Network(network.subnet)
    wanted = {
        "the node subnet": mine,
        **{f"the fake range {r}": ipaddress.IPv4Network(r) for r in FAKE_RANGES},
    }
    for route in _ip_json("route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("default", "") or route.get("dev") == ours or ":" in dst:
            continue
        try:
            net = ipaddress.IPv4Network(dst, strict=False)
        except ValueError:
            continue
        for what, candidate in wanted.items():
            if net.overlaps(candidate):
                raise NetworkError(
                    f"{what} {candidate} overlaps the route {dst} on {route.get('dev', '?')} of this "
                    "machine; start with another --subnet (e.g. 10.207.1.0/24) or another --name"
                    if what == "the node subnet"
                    else f"{what} overlaps the route {dst} on {route.get('dev', '?')}: the guard "
                    "would block real traffic, so the real node refuses to start here"
                )


def install(network: Network) -> None:
    """Create the bridge, set the sysctls (recording the old values) and install the guard chains
    with their jumps at position 1. Idempotent."""
    _require_tools()
    check_free(network)
    _record_sysctls(network)
    if not _link_exists(network.bridge):
        # nf_call_iptables on this bridge only (not the machine-wide sysctl): bridged pod-to-pod
        # packets pass the guard and kube-proxy's conntrack (replies of DNATed connections).
        _run("ip", "link", "add", network.bridge, "type", "bridge", "nf_call_iptables", "1")
    addresses = {a.get("local") for a in _addresses(network.bridge)}
    if network.node_ip not in addresses:
        _run("ip", "addr", "add", f"{network.node_ip}/{network.subnet.prefixlen}", "dev", network.bridge)
    _run("ip", "link", "set", network.bridge, "up")
    for table_chain, rules in guard_rules(network).items():
        family, chain = table_chain.split("/")
        tool = _tool(family)
        if _run(tool, "-t", "filter", "-n", "-L", chain, check=False).returncode != 0:
            _run(tool, "-t", "filter", "-N", chain)
        _run(tool, "-t", "filter", "-F", chain)
        for rule in rules:
            _run(tool, "-t", "filter", "-A", chain, *rule, "-m", "comment", "--comment", _comment(network))
    ensure_jumps_first(network)


def ensure_jumps_first(network: Network) -> None:
    """Make each guard jump the first rule of its built-in chain (again, after others inserted)."""
    for family, builtin, spec in guard_jumps(network):
        tool = _tool(family)
        rules = _run(tool, "-t", "filter", "-S", builtin).stdout.splitlines()
        first = rules[1] if len(rules) > 1 else ""
        if first.split() == ["-A", builtin, *spec]:
            continue
        while _run(tool, "-t", "filter", "-C", builtin, *spec, check=False).returncode == 0:
            _run(tool, "-t", "filter", "-D", builtin, *spec)
        _run(tool, "-t", "filter", "-I", builtin, "1", *spec)


def remove(network: Network) -> list[str]:
    """Delete the jumps, the chains and the bridge; restore the sysctls if no other cluster uses
    them. Idempotent; returns what it removed."""
    removed: list[str] = []
    if shutil.which("iptables") is not None:
        for family, builtin, spec in guard_jumps(network):
            tool = _tool(family)
            while _run(tool, "-t", "filter", "-C", builtin, *spec, check=False).returncode == 0:
                _run(tool, "-t", "filter", "-D", builtin, *spec)
                removed.append(f"{tool} {builtin} jump to {spec[-1]}")
        for table_chain in guard_rules(network):
            family, chain = table_chain.split("/")
            tool = _tool(family)
            if _run(tool, "-t", "filter", "-n", "-L", chain, check=False).returncode == 0:
                _run(tool, "-t", "filter", "-F", chain)
                _run(tool, "-t", "filter", "-X", chain)
                removed.append(f"{tool} chain {chain}")
    if _link_exists(network.bridge):
        _run("ip", "link", "delete", network.bridge)
        removed.append(f"bridge {network.bridge}")
    removed += _restore_sysctls(network)
    return removed


def chain_rules(network: Network) -> dict[str, list[str]]:
    """The guard chains' rules as installed (``iptables -S``), keyed like :func:`guard_rules`."""
    found: dict[str, list[str]] = {}
    for table_chain in guard_rules(network):
        family, chain = table_chain.split("/")
        result = _run(_tool(family), "-t", "filter", "-S", chain, check=False)
        if result.returncode == 0:
            found[table_chain] = [line for line in result.stdout.splitlines() if line.startswith("-A ")]
    return found


def chain_counters(network: Network) -> dict[str, list[tuple[int, str]]]:
    """Packets matched by each guard rule: ``table/chain`` -> [(packets, rule text), ...]."""
    counters: dict[str, list[tuple[int, str]]] = {}
    for table_chain in guard_rules(network):
        family, chain = table_chain.split("/")
        result = _run(_tool(family), "-t", "filter", "-L", chain, "-n", "-v", "-x", check=False)
        if result.returncode != 0:
            continue
        rows = []
        for line in result.stdout.splitlines()[2:]:
            fields = line.split()
            if fields and fields[0].isdigit():
                rows.append((int(fields[0]), " ".join(fields[2:])))
        counters[table_chain] = rows
    return counters


def leftovers(network: Network) -> list[str]:
    """What of this network still exists (chains, jumps, bridge); empty after :func:`remove`."""
    found = []
    if _link_exists(network.bridge):
        found.append(f"bridge {network.bridge}")
    if shutil.which("iptables") is not None:
        for family in ("filter", "filter6"):
            listing = _run(_tool(family), "-t", "filter", "-S", check=False).stdout
            found += [line for line in listing.splitlines() if network.tag in line]
    return found


# ---- sysctls ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _sysctl_state() -> Iterator[dict[str, Any]]:
    SYSCTL_STATE.parent.mkdir(parents=True, exist_ok=True)
    with open(SYSCTL_STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state: dict[str, Any] = json.loads(SYSCTL_STATE.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = {"original": {}, "clusters": []}
        yield state
        if state["clusters"]:
            SYSCTL_STATE.write_text(json.dumps(state, indent=2))
        else:
            SYSCTL_STATE.unlink(missing_ok=True)


def _record_sysctls(network: Network) -> None:
    with _sysctl_state() as state:
        if not state["clusters"]:
            state["original"] = {name: _read_sysctl(name) for name in SYSCTLS}
        if network.tag not in state["clusters"]:
            state["clusters"].append(network.tag)
        for name, value in SYSCTLS_SET.items():
            if _read_sysctl(name) not in (None, value):
                Path("/proc/sys", name).write_text(f"{value}\n")


def _restore_sysctls(network: Network) -> list[str]:
    restored = []
    with _sysctl_state() as state:
        if network.tag in state["clusters"]:
            state["clusters"].remove(network.tag)
        if not state["clusters"]:
            for name, value in state.get("original", {}).items():
                if value is not None and _read_sysctl(name) != value:
                    Path("/proc/sys", name).write_text(f"{value}\n")
                    restored.append(f"{name.replace('/', '.')}={value}")
    return restored


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


# ---- helpers ------------------------------------------------------------------------------------
def _tool(family: str) -> str:
    return "ip6tables" if family == "filter6" else "iptables"


def _comment(network: Network) -> str:
    return f"edgespec cluster {network.cluster[:200]} guard"


def _require_tools() -> None:
    missing = [tool for tool in ("iptables", "ip6tables", "ip") if shutil.which(tool) is None]
    if missing:
        raise NetworkError(f"{', '.join(missing)} not found; run hack/setup-node.sh (as root)")


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _addresses(device: str) -> list[dict[str, Any]]:
    links = _ip_json("-4", "addr", "show", "dev", device)
    return [info for link in links for info in link.get("addr_info", [])]


def _ip_json(*args: str) -> list[dict[str, Any]]:
    result = _run("ip", "-j", *args)
    return list(json.loads(result.stdout or "[]"))


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=60
    )
    if check and result.returncode != 0:
        raise NetworkError(
            f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return result


def describe(network: Network) -> Sequence[str]:
    """Human-readable lines: the network and the guard chains' rules."""
    lines = [
        f"bridge {network.bridge} {network.subnet} (node IP {network.node_ip})",
        *(f"{name}: {' '.join(rule)}" for name, rules in guard_rules(network).items() for rule in rules),
    ]
    return lines
