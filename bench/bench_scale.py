"""Benchmark: SpeculativeDeployments at scale (issue #5: 200 over 1,000 KWOK nodes).

Starts a fresh local cluster (real kube-apiserver with an audit log, etcd, controller-manager,
scheduler, KWOK) with a fleet partitioned into sites, the way a multi-site deployment is: each
site (tenant) has about five edge boards (``edgespec.dev/site: site-017``; Pi 4B, Pi 5, Jetson AGX
Orin), and a pool of 8-GPU cloud nodes holds one one-GPU verifier per deployment. Each of the
deployments is the paper sample restricted to one site (its device classes select the class label
and the site label), so 200 deployments make about 1,000 draft pods, not 200,000. The CRDs and the
illustrative profiles are installed and the operator runs as a real process
(``python -m edgespec.handlers``). Then, in phases:

1. **converge**: one server-side apply of all deployments; time from the apply to the poll that
   sees every ``status.phase`` Ready (selection made, verifier Deployment and the three draft
   DaemonSets rolled out on KWOK);
2. **steady**: nothing changes for ``--steady`` seconds (default 330, longer than the operator's
   300 s watch timeout, so a re-list after a watch ends would show) while KWOK heartbeats the nodes;
3. **touch-nodes**: a label is added to one edge node in each of ``--touch`` sites, which wakes
   exactly the deployment of that site (a no-op reconcile: nothing it depends on changed);
4. **touch-objective**: the objective of ``--touch-objective`` deployments goes from goodput to
   energy: a re-selection, new draft servers rolled out, status written; timed until Ready again.

The operator's API requests are counted at the API server, from its audit log (requests by the
operator process's user agents), per phase and verb, with LIST and WATCH shown per resource. The
operator's peak memory is its ``VmHWM`` (peak resident set) from ``/proc``, sampled with its RSS
and CPU time through the run. Prints JSON (also written with ``--out``).

    flock /tmp/edgespec-cpu.lock python bench/bench_scale.py --out bench_scale.json
    python bench/bench_scale.py --deployments 20 --nodes 100 --steady 60   # a quick try
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from edgespec_dev import nodes as fleet
from edgespec_dev.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
BENCH_AGENT = "edgespec-bench-scale"  # the user agent of this script's own requests
GPUS_PER_CLOUD_NODE = 8
SPECDEPLOY_PATH = "/apis/edgespec.dev/v1alpha1/namespaces/default/speculativedeployments"


# ---- talking to the API server without a kubectl process per poll ------------------------------
class Api:
    """Minimal HTTPS client with the admin certificate (its requests carry :data:`BENCH_AGENT`)."""

    def __init__(self, cluster: Cluster) -> None:
        self.server = cluster.server
        pki = cluster.pki_dir
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(pki / "admin.crt", pki / "admin.key")

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("User-Agent", BENCH_AGENT)
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            return json.loads(response.read())

    def merge_patch(self, path: str, patch: dict[str, Any]) -> Any:
        return self.request("PATCH", path, patch, "application/merge-patch+json")


# ---- the operator process and its memory --------------------------------------------------------
@dataclass
class ProcessSampler:
    """Samples a process's RSS, peak RSS (VmHWM) and CPU seconds every ``interval_s``."""

    pid: int
    interval_s: float = 0.5
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (t, rss KiB, cpu s)
    peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> tuple[int, int, float] | None:
        """(VmRSS KiB, VmHWM KiB, CPU seconds) now, or None once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss, hwm = (int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM"))
        cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        return rss, hwm, cpu_s

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            now = self.sample()
            if now is None:
                return
            rss, hwm, cpu_s = now
            self.peak_kib = max(self.peak_kib, hwm)
            self.samples.append((time.time(), rss, cpu_s))

    def at(self, wall: float) -> tuple[int, float]:
        """(RSS KiB, CPU seconds) of the last sample at or before ``wall``."""
        best = (0, 0.0)
        for t, rss, cpu_s in self.samples:
            if t > wall:
                break
            best = (rss, cpu_s)
        return best


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_operator(
    cluster: Cluster,
    log_path: Path,
    metrics_port: int,
    extra_env: dict[str, str],
    timeout_s: float = 120.0,
) -> subprocess.Popen[bytes]:
    """Run the operator as a process; return once it has filled its cache (its first LISTs)."""
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        # As deployed (metrics and telemetry server on), on a port that never clashes with a neighbour.
        "EDGESPEC_METRICS_PORT": str(metrics_port),
        "EDGESPEC_HTTP_HOST": "127.0.0.1",
        **extra_env,
    }
    log = log_path.open("wb")
    operator = subprocess.Popen(
        [sys.executable, "-m", "edgespec.handlers", "--liveness", "none"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while b"cache filled" not in log_path.read_bytes():
        if operator.poll() is not None or time.monotonic() > deadline:
            operator.kill()
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the operator did not start (code {operator.poll()}):\n{tail}")
        time.sleep(0.2)
    time.sleep(3.0)  # its watches open right after (kopf lists each first; a 429 retry takes 1 s)
    return operator


def reconciles_reported(metrics_port: int) -> float | None:
    """The operator's own count of reconciles (``edgespec_reconciles_total``), if it serves one.

    Only a cross-check: requests are counted at the API server, and the no-op reconciles of the
    touch-nodes phase leave no trace there, so this is what tells how many happened.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("edgespec_reconciles_total{")
    ]
    return sum(values)  # no sample yet (a labelled counter before its first reconcile): 0


# ---- the scenario -------------------------------------------------------------------------------
def deployment_docs(sample: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` copies of the paper sample, deployment ``i`` on site ``i``, one GPU per verifier."""
    docs = []
    for site in range(count):
        doc = json.loads(json.dumps(sample))
        doc["metadata"] = {"name": f"llama70b-{fleet.site_name(site)}", "namespace": "default"}
        doc["spec"]["verifier"]["gpus"] = 1
        doc["spec"]["verifier"]["vllmArgs"] = ["--max-model-len=8192"]
        for device_class in doc["spec"]["deviceClasses"]:
            device_class["nodeSelector"][fleet.SITE_LABEL] = fleet.site_name(site)
        docs.append(doc)
    return docs


def phases(api: Api) -> dict[str, tuple[str, int, int]]:
    """Each deployment -> (phase, observedGeneration, generation)."""
    listing = api.request("GET", SPECDEPLOY_PATH)
    return {
        item["metadata"]["name"]: (
            (item.get("status") or {}).get("phase", ""),
            (item.get("status") or {}).get("observedGeneration", 0),
            item["metadata"]["generation"],
        )
        for item in listing["items"]
    }


def wait_ready(
    api: Api,
    names: list[str],
    timeout_s: float,
    timeline: list[dict[str, Any]] | None = None,
    start: float | None = None,
) -> float:
    """Seconds from ``start`` (a ``time.monotonic()``, default now) until every named deployment is
    Ready for its current generation; polls every 0.5 s."""
    start = time.monotonic() if start is None else start
    wanted = set(names)
    while True:
        now = phases(api)
        counts = collections.Counter(now.get(n, ("", 0, 0))[0] or "(none)" for n in wanted)
        if timeline is not None:
            timeline.append({"t": round(time.monotonic() - start, 2), **counts})
        if all(n in now and now[n][0] == "Ready" and now[n][1] == now[n][2] for n in wanted):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"not Ready after {timeout_s:.0f} s: {dict(counts)}")
        time.sleep(0.5)


# ---- counting requests in the audit log ---------------------------------------------------------
def _when(event: dict[str, Any]) -> float:
    stamp = event["stageTimestamp"].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def operator_events(events: list[dict[str, Any]], agents: set[str]) -> list[dict[str, Any]]:
    """One audit event per operator request: ResponseStarted for a watch (when it opens), else
    ResponseComplete."""
    chosen = []
    for event in events:
        if event.get("userAgent") not in agents:
            continue
        watch = event.get("verb") == "watch"
        if event.get("stage") == ("ResponseStarted" if watch else "ResponseComplete"):
            chosen.append(event)
    return chosen


def resource_of(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    if not ref:
        return str(event.get("requestURI", "?")).split("?")[0]
    name: str = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return f"{ref['apiGroup']}/{name}" if ref.get("apiGroup") else name


def summarise(events: list[dict[str, Any]], start: float, end: float, origin: float) -> dict[str, Any]:
    """The operator's requests between ``start`` and ``end`` (wall clock), by verb and resource."""
    window = [e for e in events if start <= _when(e) < end]
    by_verb = collections.Counter(e["verb"] for e in window)
    by_request = collections.Counter(f"{e['verb']} {resource_of(e)}" for e in window)
    lists = [
        {"t_since_operator_start_s": round(_when(e) - origin, 1), "resource": resource_of(e)}
        for e in window
        if e["verb"] in ("list", "watch")
    ]
    return {
        "seconds": round(end - start, 1),
        "requests": len(window),
        "by_verb": dict(sorted(by_verb.items())),
        "by_request": dict(sorted(by_request.items())),
        "lists_and_watches": lists,
        "status_writes": by_request.get("patch edgespec.dev/speculativedeployments/status", 0),
        "token_secret_reads": by_request.get("get secrets", 0),
        "errors": collections.Counter(
            str(e.get("responseStatus", {}).get("code"))
            for e in window
            if e.get("responseStatus", {}).get("code", 200) >= 400
        ),
    }


def operator_agents(events: list[dict[str, Any]], origin: float) -> set[str]:
    """User agents of the operator process: the admin user's requests that are neither kubectl's
    nor this script's, after the operator started."""
    agents = set()
    for event in events:
        agent = event.get("userAgent", "")
        user = (event.get("user") or {}).get("username", "")
        ours = not agent.startswith("kubectl") and agent != BENCH_AGENT
        if ours and user == "edgespec-admin" and _when(event) >= origin - 1:
            agents.add(agent)
    return agents


def converge_split(operator_log: str, applied_at: float) -> dict[str, float]:
    """Where the converge time goes, from the operator's log lines (local time stamps): when the
    operator had applied each deployment's children for the first time, and how long the rollout
    took from there to its first status write of phase Ready."""
    children: dict[str, float] = {}
    ready: dict[str, float] = {}
    for line in operator_log.splitlines():
        stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", line)
        what = re.search(r" default/(\S+): (applied|phase Ready)", line)
        if stamp and what:
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            (children if what.group(2) == "applied" else ready).setdefault(what.group(1), when)
    if not children or not ready:
        return {}
    rollout = sorted(ready[name] - children[name] for name in ready if name in children)
    return {
        "last_children_applied_s": round(max(children.values()) - applied_at, 1),
        "median_children_applied_s": round(statistics.median(children.values()) - applied_at, 1),
        "rollout_median_s": round(statistics.median(rollout), 1),
        "rollout_max_s": round(rollout[-1], 1),
    }


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=200, help="deployments, one per site (200)")
    parser.add_argument("--nodes", type=int, default=1000, help="KWOK nodes in all, cloud included (1000)")
    parser.add_argument("--steady", type=float, default=330.0, help="seconds of steady state (330)")
    parser.add_argument("--touch", type=int, default=50, help="sites whose node gets a label (50)")
    parser.add_argument("--touch-objective", type=int, default=20, help="deployments switched to energy (20)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after a touch (20)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready (600)")
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="operator setting, e.g. EDGESPEC_WORKERS=16 (default: the operator's defaults)",
    )
    parser.add_argument(
        "--controller-manager-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra kube-controller-manager flag, e.g. --concurrent-daemonset-syncs=10",
    )
    parser.add_argument("--keep", type=Path, help="copy the cluster's logs and the audit log here")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    verifiers = math.ceil(args.deployments / GPUS_PER_CLOUD_NODE)
    nodes = fleet.scale_fleet(args.nodes, sites=args.deployments, verifiers=verifiers)
    sample = yaml.safe_load((ROOT / "samples" / "speculativedeployment-paper.yaml").read_text())
    docs = deployment_docs(sample, args.deployments)
    names = [d["metadata"]["name"] for d in docs]
    marks: dict[str, float] = {}  # wall-clock times of phase boundaries
    reported: dict[str, float | None] = {}  # the operator's reconcile counter at each boundary
    result: dict[str, Any] = {
        "benchmark": "operator_at_scale",
        "deployments": args.deployments,
        "nodes": len(nodes),
        "cloud_gpu_nodes": verifiers,
        "edge_nodes_per_site": round((len(nodes) - verifiers) / args.deployments, 2),
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory(prefix="edgespec-bench-scale-") as tmp:
        cluster = Cluster(
            data_dir=Path(tmp) / "cluster",
            name="bench-scale",
            audit_log=True,
            extra_args={"kube-controller-manager": args.controller_manager_arg},
        )
        result["controller_manager_args"] = args.controller_manager_arg
        say(f"starting the local cluster with {len(nodes)} nodes ...")
        started = time.monotonic()
        cluster.start(nodes, die_with_parent=True, timeout_s=900)
        result["cluster_start_s"] = round(time.monotonic() - started, 1)
        operator = None
        sampler = None
        try:
            cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cluster.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            cluster.kubectl("apply", "-f", str(ROOT / "samples" / "profiles" / "paper-illustrative.yaml"))
            api = Api(cluster)
            metrics_port = free_port()

            def mark(name: str) -> None:
                marks[name] = time.time()
                reported[name] = reconciles_reported(metrics_port)

            mark("operator_start")
            operator_env = dict(item.split("=", 1) for item in args.operator_env)
            result["operator_env"] = operator_env
            operator = start_operator(cluster, Path(tmp) / "operator.log", metrics_port, operator_env)
            sampler = ProcessSampler(operator.pid)
            sampler.start()
            result["operator_rss_idle_mib"] = round(sampler.sample()[0] / 1024, 1)  # type: ignore[index]

            # 1. converge
            say(f"applying {len(docs)} deployments ...")
            timeline: list[dict[str, Any]] = []
            mark("converge")
            apply_started = time.monotonic()
            cluster.kubectl(
                "apply", "--server-side", "--field-manager=bench", "-f", "-",
                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}),
            )  # fmt: skip
            result["apply_s"] = round(time.time() - marks["converge"], 2)
            converge_s = wait_ready(api, names, args.timeout, timeline, start=apply_started)
            result["converge_s"] = round(converge_s, 2)
            result["converge_timeline"] = timeline[:: max(1, len(timeline) // 40)]
            say(f"all {len(names)} Ready {converge_s:.1f} s after the apply began")
            time.sleep(args.settle)  # the last rollout events and status writes
            mark("steady")
            result["operator_peak_rss_converge_mib"] = round(sampler.peak_kib / 1024, 1)

            # 2. steady state
            say(f"steady state for {args.steady:.0f} s ...")
            time.sleep(args.steady)

            # 3. a label on one edge node of each of `touch` sites: one no-op reconcile each
            mark("touch_nodes")
            touched = [f"scale-{fleet.site_name(site)}-rpi4b-0" for site in range(min(args.touch, len(docs)))]
            say(f"labelling {len(touched)} nodes ...")
            for node in touched:
                api.merge_patch(
                    f"/api/v1/nodes/{node}", {"metadata": {"labels": {"edgespec.dev/touch": "1"}}}
                )
            time.sleep(args.settle)

            # 4. objective goodput -> energy on `touch_objective` deployments
            mark("touch_objective")
            switched = names[: args.touch_objective]
            say(f"switching {len(switched)} deployments to the energy objective ...")
            for name in switched:
                api.merge_patch(f"{SPECDEPLOY_PATH}/{name}", {"spec": {"objective": {"kind": "energy"}}})
            result["objective_reconverge_s"] = round(wait_ready(api, switched, args.timeout), 2)
            time.sleep(args.settle)
            mark("end")
            final = sampler.sample()
            if final is not None:
                sampler.peak_kib = max(sampler.peak_kib, final[1])
        finally:
            if sampler is not None:
                sampler.stop()
            if operator is not None:
                operator.terminate()
                operator.wait(15)
            time.sleep(2)  # the audit log's batch is flushed within a second
            cluster.stop()
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    [
                        "cp",
                        "-r",
                        str(cluster.data_dir / "logs"),
                        str(Path(tmp) / "operator.log"),
                        str(args.keep),
                    ],
                    check=False,
                )
        events = cluster.audit_events()
        operator_log = (Path(tmp) / "operator.log").read_text(errors="replace")

    origin = marks["operator_start"]
    agents = operator_agents(events, origin)
    ours = operator_events(events, agents)
    result["operator_user_agents"] = sorted(agents)
    result["operator_peak_rss_mib"] = round(sampler.peak_kib / 1024, 1) if sampler else None
    result["operator_rss_mib"] = [
        {"t_s": round(t - origin, 1), "rss_mib": round(rss / 1024, 1), "cpu_s": round(cpu, 1)}
        for t, rss, cpu in (sampler.samples[:: max(1, len(sampler.samples) // 60)] if sampler else [])
    ]
    boundaries = ["operator_start", "converge", "steady", "touch_nodes", "touch_objective", "end"]
    result["phases"] = {}
    for begin, finish in itertools.pairwise(boundaries):
        phase = "startup" if begin == "operator_start" else begin
        summary = summarise(ours, marks[begin], marks[finish], origin)
        if sampler is not None:
            (_, cpu0), (_, cpu1) = sampler.at(marks[begin]), sampler.at(marks[finish])
            summary["operator_cpu_s"] = round(cpu1 - cpu0, 1)
        before, after = reported.get(begin), reported.get(finish)
        if before is not None and after is not None:
            summary["reconciles_reported_by_operator"] = after - before
            summary["requests_per_reconcile"] = round(summary["requests"] / max(1.0, after - before), 2)
        result["phases"][phase] = summary
    result["phases"]["touch_nodes"]["deployments_touched"] = len(touched)
    result["phases"]["touch_objective"]["deployments_touched"] = len(switched)
    steady = result["phases"]["steady"]
    steady["requests_per_minute"] = round(60 * steady["requests"] / max(1.0, steady["seconds"]), 2)
    result["operator_log_lines"] = {
        "status_writes": operator_log.count(": phase "),
        "children_applies": operator_log.count("children"),
        "errors": operator_log.count("Traceback"),
    }
    result["converge_split"] = converge_split(operator_log, marks["converge"])
    result["audit_events"] = len(events)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def say(message: str) -> None:
    print(f"[{time.strftime('%T')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
