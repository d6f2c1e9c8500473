"""Data-plane benchmark: goodput per (draft, K) over an emulated edge-cloud round trip, against ConfigSpec.

    PYTHONPATH=operator:edge_image:verifier_image:hack python bench/bench_dataplane.py --out bench.json

Runs the verifier (llama.cpp engine, exact mode) as a subprocess on loopback and, between edge and
verifier, a toxiproxy (built from its Go module by ``edgespec_dev.tools``) adding half the round trip
in each direction. Per draft: the profiler's own measurements at loopback (v_d; alpha(K) and
T_verify(K) against the live verifier), then the real draft-verify loop at each RTT and K. Beside each
measured goodput, the ConfigSpec prediction G = (K alpha + 1) / (K / v_d + T_verify(K) + RTT) from the
profile, its error, and the loop's efficiency: measured goodput over the analytical bound computed
from that run's own alpha and T_verify (what a loop with zero overhead would reach). Finally the
per-call overhead of a verify round trip on loopback (edge-side round trip minus verifier-side time).
Writes JSON; ``--markdown`` also prints the tables used in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from edgespec.wire import VerifyRequest
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter, GenerationStats, VerifierClient
from edgespec_edge.models import builtin_catalog
from edgespec_edge.power import NominalSensor
from edgespec_edge.profiler import DraftUnderTest, load_prompts, measure_acceptance, profile_draft


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


class Toxiproxy:
    """A toxiproxy server with one proxy to the verifier; latency toxics set per RTT."""

    def __init__(self, upstream_port: int) -> None:
        from edgespec_dev.tools import ensure as ensure_tool

        self.api_port, self.listen_port = free_port(), free_port()
        binary = ensure_tool("toxiproxy-server")
        self.process = subprocess.Popen(
            [str(binary), "-host", "127.0.0.1", "-port", str(self.api_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"http://127.0.0.1:{self.api_port}/version", 30)
        self._call(
            "POST",
            "/proxies",
            {
                "name": "verifier",
                "listen": f"127.0.0.1:{self.listen_port}",
                "upstream": f"127.0.0.1:{upstream_port}",
            },
        )

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def set_rtt(self, rtt_ms: float) -> None:
        for stream in ("upstream", "downstream"):
            with contextlib.suppress(OSError):
                self._call("DELETE", f"/proxies/verifier/toxics/latency_{stream}")
            if rtt_ms > 0:
                self._call(
                    "POST",
                    "/proxies/verifier/toxics",
                    {
                        "name": f"latency_{stream}",
                        "type": "latency",
                        "stream": stream,
                        "attributes": {"latency": int(rtt_ms / 2), "jitter": 0},
                    },
                )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def run_loop(
    drafter: Drafter, client: VerifierClient, prompts: list[str], k: int, tokens: int
) -> GenerationStats:
    """The loop over the prompts; totals exclude each prompt's first round (TTFT), as G(K) is steady state."""
    return await measure_acceptance(drafter, client, prompts, k, tokens, steady_state=True)


def goodput(k: int, alpha: float, v_d: float, t_verify: float) -> float:
    return (k * alpha + 1) / (k / v_d + t_verify)


async def loopback_overhead(url: str, token: str, calls: int) -> dict[str, float]:
    client = VerifierClient(url, token)
    try:
        overheads = []
        context = [2, 818, 5279, 529, 7001, 563]
        for i in range(calls):
            request = VerifyRequest(session_id="overhead", tokens=context, prompt_tokens=6, draft=[5279])
            verdict, round_trip = await client.verify(request)
            if i >= 5:  # warm connection and KV
                overheads.append(round_trip - verdict.verify_s)
        await client.close_session("overhead")
    finally:
        await client.close()
    return {
        "calls": len(overheads),
        "median_ms": statistics.median(overheads) * 1e3,
        "p90_ms": sorted(overheads)[int(0.9 * len(overheads))] * 1e3,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    token = secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "EDGESPEC_VERIFIER_TOKEN": token,
        "EDGESPEC_VERIFIER_MODEL": str(target_path()),
        "EDGESPEC_VERIFIER_N_THREADS": str(args.threads),
        "EDGESPEC_VERIFIER_PORT": str(port),
        "EDGESPEC_VERIFIER_HOST": "127.0.0.1",
    }
    verifier = subprocess.Popen(
        [sys.executable, "-m", "edgespec_verifier"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy: Toxiproxy | None = None
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        direct = f"http://127.0.0.1:{port}"
        try:
            proxy = Toxiproxy(port)
        except Exception as exc:  # no Go toolchain: loopback only
            log(f"toxiproxy unavailable ({exc}); measuring RTT 0 only")
        prompts = load_prompts(limit=args.prompts)
        catalog = builtin_catalog()
        result: dict[str, Any] = {
            "prompts": len(prompts),
            "tokens_per_prompt": args.tokens,
            "threads": args.threads,
            "rtts_ms": args.rtt if proxy else [0],
            "ks": args.k,
            "drafts": [],
        }
        result["loopback_overhead"] = await loopback_overhead(direct, token, args.overhead_calls)
        log(f"loopback overhead per verify call: {result['loopback_overhead']}")
        if args.overhead_only:
            return result
        for name in args.draft:
            entry = catalog.get(name)
            path = ensure(name)
            direct_client = VerifierClient(direct, token)
            profile = await profile_draft(
                DraftUnderTest(name, entry.quantization, path),
                client=direct_client,
                prompts=prompts,
                ks=args.k,
                device_class="bench-x86",
                target_model="gemma3-270m",
                sensor=NominalSensor(15.0),
                n_threads=args.threads,
                speed_tokens=args.tokens,
                acceptance_tokens=args.tokens,
            )
            await direct_client.close()
            spec = profile.spec
            alpha = {p.k: p.alpha for p in spec.acceptance}
            t_verify = {p.k: p.seconds for p in spec.verify_latency.measured}
            row: dict[str, Any] = {
                "draft": name,
                "quantization": entry.quantization,
                "size_bytes": path.stat().st_size,
                "v_d": spec.draft_tokens_per_s,
                "alpha": alpha,
                "t_verify_s": t_verify,
                "runs": [],
            }
            runtime = LlamaRuntime(path, n_ctx=2048, n_threads=args.threads)
            drafter = Drafter(runtime, 1)
            try:
                for rtt in result["rtts_ms"]:
                    url = direct if rtt == 0 or proxy is None else proxy.url
                    if proxy is not None and rtt:
                        proxy.set_rtt(rtt)
                    client = VerifierClient(url, token)
                    try:
                        for k in args.k:
                            stats = await run_loop(drafter, client, prompts, k, args.tokens)
                            measured = stats.completion_tokens / stats.elapsed_s
                            run_alpha = stats.accepted / stats.drafted if stats.drafted else 0.0
                            run_t_verify = statistics.mean(r.round_trip_s for r in stats.rounds)
                            run_draft_s = statistics.mean(r.draft_s for r in stats.rounds)
                            predicted = goodput(k, alpha[k], spec.draft_tokens_per_s, t_verify[k] + rtt / 1e3)
                            bound = goodput(k, run_alpha, spec.draft_tokens_per_s, run_t_verify)
                            run = {
                                "rtt_ms": rtt,
                                "k": k,
                                "goodput": measured,
                                "predicted": predicted,
                                "prediction_error": (predicted - measured) / measured,
                                "bound": bound,
                                "efficiency": measured / bound,
                                "alpha": run_alpha,
                                "rounds": len(stats.rounds),
                                "mean_round_trip_s": run_t_verify,
                                "mean_draft_s": run_draft_s,
                            }
                            row["runs"].append(run)
                            log(
                                f"{name} RTT={rtt}ms K={k}: {measured:.1f} tok/s (predicted {predicted:.1f}, "
                                f"bound {bound:.1f}, efficiency {run['efficiency']:.2f})"
                            )
                    finally:
                        await client.close()
                    if proxy is not None:
                        proxy.set_rtt(0)
            finally:
                drafter.close()
                runtime.close()
            result["drafts"].append(row)
        errors = [abs(r["prediction_error"]) for d in result["drafts"] for r in d["runs"]]
        efficiencies = [r["efficiency"] for d in result["drafts"] for r in d["runs"]]
        result["summary"] = {
            "median_abs_prediction_error": statistics.median(errors),
            "max_abs_prediction_error": max(errors),
            "median_efficiency": statistics.median(efficiencies),
            "min_efficiency": min(efficiencies),
        }
        return result
    finally:
        if proxy is not None:
            proxy.close()
        verifier.terminate()
        verifier.wait(30)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| draft | quant | RTT ms | K | alpha | goodput tok/s | predicted | error | bound | efficiency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for draft in result["drafts"]:
        for run in draft["runs"]:
            lines.append(
                f"| {draft['draft']} | {draft['quantization']} | {run['rtt_ms']:g} | {run['k']} | "
                f"{run['alpha']:.2f} | "
                f"{run['goodput']:.1f} | {run['predicted']:.1f} | {run['prediction_error'] * 100:+.1f}% | "
                f"{run['bound']:.1f} | {run['efficiency'] * 100:.0f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draft", action="append", help="draft catalog names (default b16 and q4_0)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rtt", type=float, nargs="+", default=[0, 20, 100], help="emulated round trips, ms")
    parser.add_argument("--prompts", type=int, default=3, help="prompts from the project's set")
    parser.add_argument("--tokens", type=int, default=24, help="tokens per prompt")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the edge and of the verifier each (1 + 1 = this machine's 2 cores)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench_dataplane.json"))
    parser.add_argument(
        "--overhead-calls", type=int, default=200, help="verify calls for the loopback overhead"
    )
    parser.add_argument("--overhead-only", action="store_true", help="measure only the loopback overhead")
    parser.add_argument("--markdown", action="store_true", help="print the goodput table as Markdown")
    args = parser.parse_args()
    args.draft = args.draft or ["gemma3-270m-b16", "gemma3-270m-q4_0"]
    result = asyncio.run(bench(args))
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}; summary {result.get('summary')}")
    if args.markdown and result["drafts"]:
        print(markdown(result))


if __name__ == "__main__":
    main()
