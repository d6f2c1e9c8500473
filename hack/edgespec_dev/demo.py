"""The demo's steps that need more than kubectl: follow a deployment, send a completion, read metrics.

``python -m edgespec_dev.demo watch NAME`` prints each change of the deployment's phase and
conditions (and its profiling Jobs) with the elapsed time until it is Ready; ``complete NAME`` sends
one completion through the deployment's draft Service (``kubectl port-forward``) and prints the text
and the speculative statistics; ``metrics`` prints the operator's own counters. All use
``$KUBECONFIG``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgespec_dev import tools
from edgespec_dev.portforward import port_forward

OPERATOR_NAMESPACE = "edgespec-system"
OPERATOR_PODS = "app.kubernetes.io/component=operator"


def _kubeconfig() -> Path | None:
    value = os.environ.get("KUBECONFIG")
    return Path(value) if value else None


def kubectl_json(*args: str) -> dict[str, Any]:
    command = [str(tools.ensure("kubectl"))]
    if (config := _kubeconfig()) is not None:
        command.append(f"--kubeconfig={config}")
    result = subprocess.run([*command, *args, "-o", "json"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return dict(json.loads(result.stdout))


def describe(status: dict[str, Any], jobs: list[dict[str, Any]]) -> str:
    """One line: the phase, the conditions that are not True, profiling progress and its Jobs."""
    parts = [f"phase={status.get('phase', '-')}"]
    for condition in status.get("conditions", []):
        if condition.get("status") != "True":
            parts.append(f"{condition['type']}={condition.get('reason', '')}")
    profiling = status.get("profiling") or {}
    if profiling.get("needed"):
        parts.append(f"profiles {profiling.get('done', 0)}/{profiling['needed']}")
    for job in jobs:
        state = job.get("status", {})
        word = "done" if state.get("succeeded") else "failed" if state.get("failed") else "running"
        parts.append(f"job {job['metadata']['name']}: {word}")
    return "  ".join(parts)


def watch(name: str, namespace: str, timeout_s: float) -> int:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout_s:
        deployment = kubectl_json("get", "specdeploy", name, "-n", namespace)
        status = dict(deployment.get("status") or {})
        # The Jobs profiling this deployment's classes (a Job may be shared with other deployments).
        classes = {c["name"] for c in deployment["spec"].get("deviceClasses", [])}
        profilers = kubectl_json("get", "jobs", "-A", "-l", "app.kubernetes.io/component=profiler")
        jobs = [
            job
            for job in profilers["items"]
            if job["metadata"].get("labels", {}).get("edgespec.dev/device-class") in classes
        ]
        line = describe(status, jobs)
        if line != last:
            print(f"  [{time.monotonic() - started:6.1f}s] {line}", flush=True)
            last = line
        if status.get("phase") == "Ready":
            return 0
        time.sleep(2)
    print(
        f"{name} was not Ready after {timeout_s:.0f}s; see `kubectl describe specdeploy {name}`",
        file=sys.stderr,
    )
    return 1


def complete(name: str, namespace: str, prompt: str, max_tokens: int) -> int:
    selector = f"app.kubernetes.io/component=draft,app.kubernetes.io/instance={name}"
    services = kubectl_json("get", "services", "-n", namespace, "-l", selector)["items"]
    if not services:
        print(f"{name} has no draft Service yet", file=sys.stderr)
        return 1
    service = services[0]
    model = kubectl_json("get", "specdeploy", name, "-n", namespace)["spec"]["target"]["name"]
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    target = f"svc/{service['metadata']['name']}"
    with port_forward(
        tools.ensure("kubectl"), _kubeconfig(), namespace, target, service["spec"]["ports"][0]["port"]
    ) as port:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        started = time.monotonic()
        answer = json.loads(urllib.request.urlopen(request, timeout=300).read())
        elapsed = time.monotonic() - started
    stats = answer.get("speculative", {})
    tokens = answer["usage"]["completion_tokens"]
    print(f"  prompt:     {prompt!r}")
    print(f"  completion: {answer['choices'][0]['text']!r}")
    drafted = stats.get("drafted_tokens", 0)
    accepted = stats.get("accepted_tokens", 0)
    rate = f" ({accepted / drafted:.0%} of drafted)" if drafted else ""
    print(
        f"  {tokens} tokens in {stats.get('rounds', '?')} verify rounds;"
        f" {accepted} of {drafted} drafted tokens accepted{rate}"
    )
    print(f"  {tokens / elapsed:.1f} tokens/s end to end through the port-forward ({elapsed:.2f}s)")
    return 0


def metrics() -> int:
    """The leader's counters: every operator replica is scraped, the standby's families are empty."""
    pods = kubectl_json("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_PODS)["items"]
    wanted = (
        "edgespec_reconciles_total",
        "edgespec_api_requests_total",
        "edgespec_selection_changes_total",
        "edgespec_telemetry",
    )
    best: tuple[str, list[str]] = ("", [])
    for pod in pods:
        ports = [
            p for c in pod["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == "metrics"
        ]
        if not ports or pod["status"].get("phase") != "Running":
            continue
        target = f"pod/{pod['metadata']['name']}"
        with port_forward(
            tools.ensure("kubectl"), _kubeconfig(), OPERATOR_NAMESPACE, target, ports[0]["containerPort"]
        ) as local:
            text = urllib.request.urlopen(f"http://127.0.0.1:{local}/metrics", timeout=30).read().decode()
        lines = [line for line in text.splitlines() if line.startswith(wanted)]
        if len(lines) > len(best[1]):
            best = (pod["metadata"]["name"], lines)
    if not best[1]:
        print("no operator replica reports any reconcile yet", file=sys.stderr)
        return 1
    print(f"  (from {best[0]}, the replica holding the leader Lease)")
    for line in best[1]:
        print(" ", line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgespec_dev.demo", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    watching = commands.add_parser("watch", help="follow a SpeculativeDeployment until it is Ready")
    watching.add_argument("name")
    watching.add_argument("-n", "--namespace", default="default")
    watching.add_argument("--timeout", type=float, default=1200.0, help="seconds (default 1200)")
    completing = commands.add_parser("complete", help="one completion through the draft Service")
    completing.add_argument("name")
    completing.add_argument("-n", "--namespace", default="default")
    completing.add_argument("--prompt", default="The capital of France is")
    completing.add_argument("--max-tokens", type=int, default=32)
    commands.add_parser("metrics", help="the operator's own counters")
    args = parser.parse_args(argv)
    if args.command == "watch":
        return watch(args.name, args.namespace, args.timeout)
    if args.command == "complete":
        return complete(args.name, args.namespace, args.prompt, args.max_tokens)
    return metrics()


if __name__ == "__main__":
    sys.exit(main())
