"""Data-plane benchmark: goodput per (draft, K) over an emulated edge-cloud round trip, against ConfigSpec.

    PYTHONPATH=operator:edge_image:verifier_image:hack python bench/bench_dataplane.py --out bench.json

Runs the verifier (llama.cpp engine, exact mode) as a subprocess on loopback and, between edge and
verifier, a toxiproxy (built from its Go module by ``edgespec_dev.tools``) adding half the round trip
in each direction (a proxy per RTT). Per draft: first the profiler as it runs on a device
(``measure_draft`` on loopback: the draft's decode speed alone, v_d drafting in the loop, alpha(K) and
T_verify(K) against the live verifier, the target alone), the profile *before* the runs. Then the
interleaved passes (``interleaved_passes``): for each prompt and K, one generation of a loopback
profile pass and one of the real draft-verify loop at each RTT, one after another in a rotated order,
so that profile and runs sample the same stretch of the machine's time; the profile read from that
loopback pass exactly as the profiler reads its rounds (``profile_from_rounds``) predicts the runs.
Measured goodput is steady state, over the rounds that drafted all K (``steady_state``: not each
prompt's first round, nor its last rounds, cut short by the token limit; the whole generation after its
first round is kept beside it). Beside it, ConfigSpec's prediction G = (K alpha + 1) / (K / v_d +
T_verify(K) + RTT + o) from the interleaved profile (``edgespec.configspec.metrics``) and from the
profile before, their errors, and the loop's efficiency: measured goodput over the analytical bound,
the same formula with the profile's v_d and that run's own alpha and mean verify round trip (what a
loop with no cost of its own would reach); also against the draft's decode speed alone, which charges
the loop its re-reads. Finally the per-call overhead of a verify round trip on loopback (edge-side
round trip minus verifier-side time). Writes JSON, with every round of the profiles and of the runs
(``ROUND_FIELDS``) so the model can be checked again offline; ``--markdown`` prints the goodput table,
``--write-docs`` rewrites the data-plane section of docs/benchmarks.md, and ``--from-json`` does both
from a recorded JSON (summary recomputed) without measuring anything.
"""

from __future__ import annotations

import argparse
import asyncio
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

import numpy as np
from edgespec.configspec.metrics import goodput_tokens_per_s
from edgespec.wire import GenerateRequest, VerifyRequest
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter, GenerationStats, RoundStats, VerifierClient
from edgespec_edge.models import builtin_catalog
from edgespec_edge.power import NominalSensor
from edgespec_edge.profiler import (
    DraftUnderTest,
    fit_round_time,
    full_rounds,
    load_prompts,
    measure_acceptance,
    measure_draft,
    measure_target_decode,
    profile_from_rounds,
)


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
    """A toxiproxy server with one proxy to the verifier per emulated RTT, each with its latency toxics
    (half the RTT in each direction), so runs at different RTTs can follow one another freely."""

    def __init__(self, upstream_port: int, rtts_ms: list[float]) -> None:
        from edgespec_dev.tools import ensure as ensure_tool

        self.api_port = free_port()
        self.listen_ports: dict[float, int] = {}
        binary = ensure_tool("toxiproxy-server")
        self.process = subprocess.Popen(
            [str(binary), "-host", "127.0.0.1", "-port", str(self.api_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{self.api_port}/version", 30)
            for rtt_ms in rtts_ms:
                if rtt_ms <= 0 or rtt_ms in self.listen_ports:
                    continue
                port = free_port()
                name = f"verifier-{rtt_ms:g}ms"
                self._call(
                    "POST",
                    "/proxies",
                    {"name": name, "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{upstream_port}"},
                )
                for stream in ("upstream", "downstream"):
                    self._call(
                        "POST",
                        f"/proxies/{name}/toxics",
                        {
                            "name": f"latency_{stream}",
                            "type": "latency",
                            "stream": stream,
                            "attributes": {"latency": int(rtt_ms / 2), "jitter": 0},
                        },
                    )
                self.listen_ports[rtt_ms] = port
        except BaseException:
            self.close()
            raise

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

    def url(self, rtt_ms: float) -> str:
        return f"http://127.0.0.1:{self.listen_ports[rtt_ms]}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def rotated(items: list[Any], by: int) -> list[Any]:
    """``items`` starting at position ``by`` (mod its length), wrapping around."""
    start = by % len(items) if items else 0
    return items[start:] + items[:start]


PROFILE_PASS = "profile"
"""The name of the loopback pass whose rounds make the interleaved profile."""


async def interleaved_passes(
    drafter: Drafter,
    clients: dict[str, VerifierClient],
    prompts: list[str],
    ks: list[int],
    tokens: int,
) -> dict[str, dict[int, GenerationStats]]:
    """Every pass (a name per client: the loopback profile pass, a run per RTT) over every prompt and
    K, interleaved: for each prompt, for each K, one generation of each pass, one after another, so
    each (pass, K) cell's rounds are spread over the same stretch of time as every other cell's and a
    drift of the machine's speed reaches profile and runs alike. The order of the K and of the passes
    is rotated per prompt (and per K), so no pass always runs first or last. Steady state as
    ``measure_acceptance(steady_state=True)`` keeps it (each prompt's first round left out), summed
    over the prompts per cell."""
    names = list(clients)
    cells = {name: {k: GenerationStats() for k in ks} for name in names}
    for i, prompt in enumerate(prompts):
        for j, k in enumerate(rotated(ks, i)):
            for name in rotated(names, i + j):
                stats = await measure_acceptance(
                    drafter, clients[name], [prompt], k, tokens, steady_state=True
                )
                cell = cells[name][k]
                cell.rounds.extend(stats.rounds)
                cell.completion_tokens += stats.completion_tokens
                cell.elapsed_s += stats.elapsed_s
        log(f"interleaved passes: prompt {i + 1}/{len(prompts)} done")
    return cells


ROUND_FIELDS = ("drafted", "accepted", "draft_s", "round_trip_s", "verify_s")
"""The columns of every recorded round (``rounds`` in the JSON): the raw data behind each number."""


def round_records(rounds: list[RoundStats]) -> list[list[float]]:
    return [[r.drafted, r.accepted, r.draft_s, r.round_trip_s, r.verify_s] for r in rounds]


def steady_state(rounds: list[RoundStats], k: int, other_s_per_round: float) -> dict[str, float]:
    """The rounds of ``k`` drafts (``full_rounds``), what G(K) describes: their goodput (committed
    tokens, accepted + 1 each, over their drafting, verify round trips and the loop's own time per
    round), alpha and mean times. The short rounds at the end of each ``max_tokens`` generation are
    left out as the first round is; ``whole`` in the run keeps them."""
    full = full_rounds(rounds, k)
    drafted = sum(r.drafted for r in full)
    seconds = sum(r.draft_s + r.round_trip_s for r in full) + other_s_per_round * len(full)
    return {
        "rounds": len(full),
        "goodput": sum(r.accepted + 1 for r in full) / seconds,
        "alpha": sum(r.accepted for r in full) / drafted if drafted else 0.0,
        "mean_round_trip_s": statistics.mean(r.round_trip_s for r in full),
        "mean_verify_s": statistics.mean(r.verify_s for r in full),
        "mean_draft_s": statistics.mean(r.draft_s for r in full),
    }


async def profile_inputs(
    draft: DraftUnderTest, url: str, token: str, prompts: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """The profiler on loopback (``measure_draft``): what the prediction takes from it, and its rounds."""
    client = VerifierClient(url, token)
    try:
        measured = await measure_draft(
            draft,
            client=client,
            prompts=prompts,
            ks=args.k,
            device_class="bench-x86",
            target_model="gemma3-270m",
            sensor=NominalSensor(15.0),
            n_threads=args.threads,
            speed_tokens=args.tokens,
            acceptance_tokens=args.tokens,
        )
    finally:
        await client.close()
    spec = measured.profile.spec
    return {
        "v_d": spec.draft_tokens_per_s,
        "plain_v_d": measured.plain_tokens_per_s,
        "round_overhead_s": spec.round_overhead_s,
        "target_decode": None if spec.target_decode is None else spec.target_decode.model_dump(),
        "decode_tokens_per_s": measured.decode_tokens_per_s,
        "alpha": {p.k: p.alpha for p in spec.acceptance},
        "t_verify_s": {p.k: p.seconds for p in spec.verify_latency.measured},
        "profile_rounds": {k: round_records(measured.rounds.get(k, [])) for k in args.k},
        "interleaved": False,
    }


def interleaved_profile(steady: dict[int, GenerationStats], before: dict[str, Any]) -> dict[str, Any]:
    """The profile read from the interleaved loopback pass exactly as the profiler reads its own rounds
    (``profile_from_rounds``); decoding alone and the target alone are not measured again (the
    profile taken before has them)."""
    loop = profile_from_rounds(steady)
    return {
        "v_d": loop.v_d if loop.v_d > 0 else loop.plain_v_d,
        "plain_v_d": loop.plain_v_d,
        "round_overhead_s": loop.round_overhead_s,
        "target_decode": before["target_decode"],
        "decode_tokens_per_s": before["decode_tokens_per_s"],
        "alpha": dict(loop.alpha),
        "t_verify_s": dict(loop.t_verify_s),
        "profile_rounds": {k: round_records(stats.rounds) for k, stats in steady.items()},
        "interleaved": True,
    }


def goodput(k: int, alpha: float, v_d: float, t_verify: float, overhead_s: float = 0.0) -> float:
    """ConfigSpec's G(K), tokens/s, for one cell (``overhead_s``: the per-round term)."""
    return float(goodput_tokens_per_s(alpha, k, v_d, t_verify, overhead_s))


async def target_alone(url: str, token: str, prompts: list[list[int]], tokens: int) -> dict[str, float]:
    """The target decoding alone through ``url``: its per-token time at the verifier (what a stream
    delivers after the first token), TTFT, and the goodput of one verify call per token (what this
    verify API gives a client without a streaming endpoint)."""
    client = VerifierClient(url, token)
    try:
        started = time.perf_counter()
        measured = await measure_target_decode(client, prompts, tokens)
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    return {
        "per_token_s": measured.per_token_s,
        "ttft_s": measured.ttft_s,
        "streamed_goodput": 1.0 / measured.per_token_s,
        "per_call_goodput": measured.samples / max(elapsed - len(prompts) * measured.ttft_s, 1e-9),
        "samples": measured.samples,
        **await cloud_only_stream(url, token, prompts, tokens),
    }


async def cloud_only_stream(url: str, token: str, prompts: list[list[int]], tokens: int) -> dict[str, float]:
    """Cloud-only decoding as the edge serves it: the verifier's ``POST /v1/generate`` streamed
    through ``url``. Goodput as the speculative runs count it: tokens over each request's whole
    time (first token included), over all prompts; TTFT: median time to the first text."""
    client = VerifierClient(url, token)
    generated, seconds, ttfts = 0, 0.0, []
    try:
        for prompt in prompts:
            started = time.perf_counter()
            first: float | None = None
            async for event in client.generate(GenerateRequest(tokens=prompt, max_tokens=tokens)):
                generated += event.tokens
                if event.tokens and first is None:
                    first = time.perf_counter() - started
            seconds += time.perf_counter() - started
            if first is not None:
                ttfts.append(first)
    finally:
        await client.close()
    return {
        "stream_goodput": generated / seconds if seconds > 0 else 0.0,
        "stream_ttft_s": statistics.median(ttfts) if ttfts else 0.0,
    }


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
        client.close_session("overhead")
        await client.drain()
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
    command = [sys.executable, "-m", "edgespec_verifier"]
    if args.no_extra_buffers:  # the same llama.cpp setting in the verifier's process
        bench_dir = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = bench_dir + os.pathsep + env.get("PYTHONPATH", "")
        command = [
            sys.executable,
            "-c",
            "import no_amx, runpy; no_amx.apply(); "
            "runpy.run_module('edgespec_verifier', run_name='__main__')",
        ]
    verifier = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy: Toxiproxy | None = None
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        direct = f"http://127.0.0.1:{port}"
        try:
            proxy = Toxiproxy(port, args.rtt)
        except Exception as exc:  # no Go toolchain: loopback only
            log(f"toxiproxy unavailable ({exc}); measuring RTT 0 only")
        rtts = args.rtt if proxy else [0]

        def url_at(rtt: float) -> str:
            return direct if rtt == 0 or proxy is None else proxy.url(rtt)

        prompts = load_prompts(limit=args.prompts)
        catalog = builtin_catalog()
        result: dict[str, Any] = {
            "prompts": len(prompts),
            "tokens_per_prompt": args.tokens,
            "threads": args.threads,
            "rtts_ms": rtts,
            "ks": args.k,
            "interleaved": True,
            "drafts": [],
            "target_alone": {},
            "no_extra_buffers": args.no_extra_buffers,
        }
        result["loopback_overhead"] = await loopback_overhead(direct, token, args.overhead_calls)
        log(f"loopback overhead per verify call: {result['loopback_overhead']}")
        if args.overhead_only:
            return result
        for name in args.draft:
            entry = catalog.get(name)
            path = ensure(name)
            draft = DraftUnderTest(name, entry.quantization, path)
            before = await profile_inputs(draft, direct, token, prompts, args)
            runtime = LlamaRuntime(path, n_ctx=2048, n_threads=args.threads)
            drafter = Drafter(runtime, 1)
            clients = {PROFILE_PASS: VerifierClient(direct, token)} | {
                f"{rtt:g}": VerifierClient(url_at(rtt), token) for rtt in rtts
            }
            try:
                cells = await interleaved_passes(drafter, clients, prompts, args.k, args.tokens)
            finally:
                for client in clients.values():
                    await client.close()
                drafter.close()
                runtime.close()
            profile = interleaved_profile(cells[PROFILE_PASS], before)
            profiles = [before, profile]
            row: dict[str, Any] = {
                "draft": name,
                "quantization": entry.quantization,
                "size_bytes": path.stat().st_size,
                # the profile the runs are predicted from (both, with their rounds, are in "profiles")
                **{key: value for key, value in profile.items() if key != "profile_rounds"},
                "round_fields": list(ROUND_FIELDS),
                "profiles": profiles,
                "runs": [],
            }
            for rtt in rtts:
                for k in args.k:
                    run = run_record(cells[f"{rtt:g}"][k], k, rtt, profiles, 1)
                    row["runs"].append(run)
                    log(
                        f"{name} RTT={rtt}ms K={k}: {run['goodput']:.1f} tok/s (predicted "
                        f"{run['predicted']:.1f}, from the profile before {run['predicted_before']:.1f}; "
                        f"efficiency {run['efficiency']:.2f})"
                    )
            result["drafts"].append(row)
        tokenize = LlamaRuntime(ensure(args.draft[0]), n_ctx=2048, n_threads=1)
        try:
            prompt_ids = [tokenize.tokenize(p) for p in prompts]
        finally:
            tokenize.close()
        for rtt in rtts:  # the target alone at every RTT, in the same run
            result["target_alone"][str(rtt)] = await target_alone(url_at(rtt), token, prompt_ids, args.tokens)
            log(f"target alone RTT={rtt}ms: {result['target_alone'][str(rtt)]}")
        result["no_speculation"] = no_speculation_table(result)
        result["summary"] = summarise(result)
        return result
    finally:
        if proxy is not None:
            proxy.close()
        verifier.terminate()
        verifier.wait(30)


ERROR_PARTS = {
    "tokens": "committed tokens per round, K alpha(K) + 1 against the run's",
    "edge_s": "edge time per round, K / v_d + o against the run's drafting and loop time",
    "verify_s": "the verifier's time: the profile's T_verify(K) (a loopback round trip, so it includes "
    "the loopback network part) against the run's verifier-side time",
    "link_s": "the network: the emulated RTT against the run's round trip minus its verifier-side time",
}
"""The error split: tokens as a relative difference, times as (predicted - measured) over the measured
round; prediction / measured = (1 + tokens) / (1 + edge_s + verify_s + link_s) exactly, so a positive
time part (the model charged more time than the run took) pulls the prediction down."""


def run_record(
    stats: GenerationStats, k: int, rtt: float, profiles: list[dict[str, Any]], index: int
) -> dict[str, Any]:
    """One (RTT, K) cell: its steady goodput against the prediction from ``profiles[index]`` (and,
    beside it, from ``profiles[0]``, the profile taken before every run), with every round."""
    profile, before = profiles[index], profiles[0]
    other_s = (stats.elapsed_s - sum(r.draft_s + r.round_trip_s for r in stats.rounds)) / len(stats.rounds)
    steady = steady_state(stats.rounds, k, other_s)
    measured = steady["goodput"]
    whole = stats.completion_tokens / stats.elapsed_s

    def predict(p: dict[str, Any], plain: bool = False) -> float:
        if plain:
            return goodput(k, p["alpha"][k], p["plain_v_d"], p["t_verify_s"][k] + rtt / 1e3)
        return goodput(k, p["alpha"][k], p["v_d"], p["t_verify_s"][k] + rtt / 1e3, p["round_overhead_s"])

    def versus(p: dict[str, Any], field: str) -> float | None:
        """The run's mean ``field`` over its rounds of K drafts against the profile's."""
        reference = full_rounds(recorded_rounds(p["profile_rounds"][k], k), k)
        if not reference:
            return None
        mine = statistics.mean(float(getattr(r, field)) for r in full_rounds(stats.rounds, k))
        return mine / statistics.mean(float(getattr(r, field)) for r in reference)

    predicted, predicted_plain, predicted_before = predict(profile), predict(profile, True), predict(before)
    full = full_rounds(stats.rounds, k)
    measured_round_s = steady["mean_draft_s"] + steady["mean_round_trip_s"] + other_s
    parts = {  # where the prediction differs, as shares of the measured round (see ERROR_PARTS)
        "tokens": (k * profile["alpha"][k] + 1) / (sum(r.accepted + 1 for r in full) / len(full)) - 1,
        "edge_s": (k / profile["v_d"] + profile["round_overhead_s"] - steady["mean_draft_s"] - other_s)
        / measured_round_s,
        "verify_s": (profile["t_verify_s"][k] - statistics.mean(r.verify_s for r in full)) / measured_round_s,
        "link_s": (rtt / 1e3 - statistics.mean(r.round_trip_s - r.verify_s for r in full)) / measured_round_s,
    }
    bound = goodput(k, steady["alpha"], profile["v_d"], steady["mean_round_trip_s"])
    bound_alone = goodput(k, steady["alpha"], profile["decode_tokens_per_s"], steady["mean_round_trip_s"])
    return {
        "rtt_ms": rtt,
        "k": k,
        "profile": index,
        "goodput": measured,
        "predicted": predicted,
        "prediction_error": (predicted - measured) / measured,
        "predicted_without_overhead": predicted_plain,
        "prediction_error_without_overhead": (predicted_plain - measured) / measured,
        "predicted_before": predicted_before,
        "prediction_error_before": (predicted_before - measured) / measured,
        "goodput_whole": whole,
        "prediction_error_whole": (predicted - whole) / whole,
        "error_parts": parts,
        "bound": bound,
        "efficiency": measured / bound,
        "efficiency_vs_decode_alone": measured / bound_alone,
        "alpha": steady["alpha"],
        "rounds": steady["rounds"],
        "mean_round_trip_s": steady["mean_round_trip_s"],
        "mean_draft_s": steady["mean_draft_s"],
        "verify_s_vs_profile": versus(profile, "verify_s"),
        "draft_s_vs_profile": versus(profile, "draft_s"),
        "verify_s_vs_before": versus(before, "verify_s"),
        "draft_s_vs_before": versus(before, "draft_s"),
        "alpha_whole": stats.accepted / stats.drafted if stats.drafted else 0.0,
        "rounds_whole": len(stats.rounds),
        "drafted_per_round_whole": stats.drafted / len(stats.rounds),
        "draft_s_per_token": sum(r.draft_s for r in stats.rounds) / stats.drafted,
        "loop_other_s_per_round": other_s,
        "round_trip_minus_verify_s": statistics.median(r.round_trip_s - r.verify_s for r in stats.rounds),
        "round_trip_minus_verify_mean_s": statistics.mean(r.round_trip_s - r.verify_s for r in stats.rounds),
        "round_records": round_records(stats.rounds),
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Errors, efficiencies and overheads over all runs, and the median |error| by K."""
    runs = [r for d in result["drafts"] for r in d["runs"]]
    errors = [abs(r["prediction_error"]) for r in runs]
    efficiencies = [r["efficiency"] for r in runs]
    alone = [r["efficiency_vs_decode_alone"] for r in runs]

    def by_k(key: str) -> dict[int, float]:
        return {k: statistics.median(abs(r[key]) for r in runs if r["k"] == k) for k in result["ks"]}

    def span(key: str) -> list[float] | None:
        values = [r[key] for r in runs if r.get(key)]
        return [min(values), max(values)] if values else None

    def parts_by_k() -> dict[int, dict[str, float]]:
        return {
            k: {
                part: statistics.median(r["error_parts"][part] for r in runs if r["k"] == k)
                for part in ERROR_PARTS
            }
            for k in result["ks"]
        }

    before = all("prediction_error_before" in r for r in runs)
    return {
        "median_abs_prediction_error": statistics.median(errors),
        "max_abs_prediction_error": max(errors),
        "median_efficiency": statistics.median(efficiencies),
        "min_efficiency": min(efficiencies),
        "median_efficiency_vs_decode_alone": statistics.median(alone),
        "min_efficiency_vs_decode_alone": min(alone),
        "median_abs_error_by_k": by_k("prediction_error"),
        "median_abs_error_by_k_without_overhead": by_k("prediction_error_without_overhead"),
        "median_abs_error_by_k_whole": by_k("prediction_error_whole"),
        "median_abs_error_by_k_before": by_k("prediction_error_before") if before else None,
        "verify_s_vs_profile_range": span("verify_s_vs_profile"),
        "draft_s_vs_profile_range": span("draft_s_vs_profile"),
        "verify_s_vs_before_range": span("verify_s_vs_before"),
        "draft_s_vs_before_range": span("draft_s_vs_before"),
        "error_parts_by_k": parts_by_k() if all("error_parts" in r for r in runs) else None,
        "error_by_k_readings": error_by_k_readings(result),
        "in_loop_overhead_ms": statistics.median(
            r["round_trip_minus_verify_s"] for r in runs if r["rtt_ms"] == 0
        )
        * 1e3,
    }


def recorded_rounds(records: list[list[float]], k: int) -> list[RoundStats]:
    """Rounds back from their JSON records (``ROUND_FIELDS``)."""
    return [
        RoundStats(k=k, drafted=int(d), accepted=int(a), draft_s=ds, round_trip_s=rt, verify_s=vs)
        for d, a, ds, rt, vs in records
    ]


def verify_line(rounds: list[RoundStats]) -> tuple[float, float]:
    """(a, b) of round trip = a + b (drafted + 1) over the rounds of every K: a line through the
    median round trip at each number of verified positions, weighted as ``fit_round_time`` weights."""
    positions = np.array([r.drafted + 1 for r in rounds], dtype=np.float64)
    seconds = np.array([r.round_trip_s for r in rounds], dtype=np.float64)
    sizes, counts = np.unique(positions, return_counts=True)
    medians = np.array([np.median(seconds[positions == n]) for n in sizes])
    slope, intercept = np.polyfit(sizes, medians, 1, w=np.sqrt(counts))
    return float(intercept), float(slope)


PROFILE_READINGS = (
    "every steady round, median T_verify (before)",
    "rounds of K drafts, median T_verify (now)",
    "rounds of K drafts, mean T_verify",
    "rounds of K drafts, T_verify from one line over all rounds",
    "rounds of K drafts, means throughout (T_verify and the drafting line)",
)
"""Ways of reading alpha(K), T_verify(K) (and, in the last, v_d and the overhead) from the same
recorded profile rounds."""

Reading = tuple[float, float, dict[int, tuple[float, float]]]
"""v_d, the per-round overhead, and (alpha, T_verify) by K."""


def profile_readings(profile: dict[str, Any]) -> dict[str, Reading]:
    """Each of ``PROFILE_READINGS`` from one profile's rounds. All but the last keep the profile's
    v_d and overhead (``fit_round_time`` with medians); the last refits the drafting line with each
    size's mean, keeping the loop's own time the profile added to the intercept."""
    rounds_by_k = {int(k): recorded_rounds(v, int(k)) for k, v in profile["profile_rounds"].items()}
    every = [r for rounds in rounds_by_k.values() for r in rounds]
    a, b = verify_line(every)
    _, median_intercept = fit_round_time(every, 0.0)
    mean_v_d, mean_intercept = fit_round_time(every, 0.0, statistic="mean")
    loop_other_s = profile["round_overhead_s"] - median_intercept
    lines = {name: (profile["v_d"], profile["round_overhead_s"]) for name in PROFILE_READINGS}
    lines[PROFILE_READINGS[4]] = (mean_v_d, mean_intercept + loop_other_s)
    by_name: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in PROFILE_READINGS}
    for k, rounds in rounds_by_k.items():
        full = full_rounds(rounds, k)
        for name, chosen in zip(PROFILE_READINGS, (rounds, full, full, full, full), strict=True):
            drafted = sum(r.drafted for r in chosen)
            alpha = sum(r.accepted for r in chosen) / drafted if drafted else 0.0
            trips = [r.round_trip_s for r in chosen]
            t_verify = {
                PROFILE_READINGS[2]: statistics.mean(trips),
                PROFILE_READINGS[3]: a + b * (k + 1),
                PROFILE_READINGS[4]: statistics.mean(trips),
            }.get(name, statistics.median(trips))
            by_name[name][k] = (alpha, t_verify)
    return {name: (*lines[name], by_name[name]) for name in PROFILE_READINGS}


def error_by_k_readings(result: dict[str, Any]) -> dict[str, dict[str, dict[int, float]]]:
    """Median |error| by K for each of ``PROFILE_READINGS`` against the steady goodput (``steady``)
    and the whole generation (``whole``); empty for a JSON without recorded rounds. Offline: it
    re-reads the profile, it measures nothing."""
    errors: dict[str, dict[str, dict[int, list[float]]]] = {}
    for draft in result["drafts"]:
        profiles = draft.get("profiles") or [draft]
        if not all(p.get("profile_rounds") and all(p["profile_rounds"].values()) for p in profiles):
            return {}
        readings = [profile_readings(p) for p in profiles]
        for run in draft["runs"]:
            k = int(run["k"])
            for name, (v_d, overhead_s, by_k) in readings[run.get("profile", 0)].items():
                alpha, t_verify = by_k[k]
                predicted = goodput(k, alpha, v_d, t_verify + run["rtt_ms"] / 1e3, overhead_s)
                for measure, measured in (("steady", run["goodput"]), ("whole", run["goodput_whole"])):
                    cell = errors.setdefault(name, {}).setdefault(measure, {}).setdefault(k, [])
                    cell.append(abs(predicted - measured) / measured)
    return {
        name: {m: {k: statistics.median(v) for k, v in by_k.items()} for m, by_k in measures.items()}
        for name, measures in errors.items()
    }


def readings_table(result: dict[str, Any]) -> str:
    """``error_by_k_readings`` as Markdown (empty without recorded rounds)."""
    readings = result["summary"].get("error_by_k_readings") or {}
    if not readings:
        return ""
    ks = result["ks"]
    lines = [
        "| profile read from | measured | " + " | ".join(f"K={k}" for k in ks) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in ks) + " |",
    ]
    for name, measures in readings.items():
        for measure, by_k in measures.items():
            cells = " | ".join(f"{by_k[k] * 100:.1f}%" for k in ks)
            lines.append(f"| {name} | {measure} | {cells} |")
    return "\n".join(lines)


def no_speculation_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per RTT: what the model ranks first (a speculative (draft, K) or the target alone, from the
    profiles' own targetDecode) and what measured best in this run (the runs, or the target alone's
    cloud-only stream, the verifier's generate endpoint, measured at that RTT)."""
    rows = []
    for rtt in result["rtts_ms"]:
        cells = [(d, r) for d in result["drafts"] for r in d["runs"] if r["rtt_ms"] == rtt]
        decodes = [d["target_decode"] for d in result["drafts"] if d["target_decode"]]
        alone_predicted = 1.0 / statistics.median(t["per_token_s"] for t in decodes) if decodes else None
        alone_measured = result["target_alone"][str(rtt)]["stream_goodput"]  # POST /v1/generate
        best_pred = max(cells, key=lambda c: c[1]["predicted"])
        best_meas = max(cells, key=lambda c: c[1]["goodput"])
        ranked_alone = alone_predicted is not None and alone_predicted > best_pred[1]["predicted"]
        measured_alone = alone_measured > best_meas[1]["goodput"]
        rows.append(
            {
                "rtt_ms": rtt,
                "ranked": "target alone"
                if ranked_alone
                else f"{best_pred[0]['draft']} K={best_pred[1]['k']}",
                "ranked_predicted": alone_predicted if ranked_alone else best_pred[1]["predicted"],
                "best_speculative_predicted": best_pred[1]["predicted"],
                "target_alone_predicted": alone_predicted,
                "measured_best": "target alone"
                if measured_alone
                else f"{best_meas[0]['draft']} K={best_meas[1]['k']}",
                "best_speculative_measured": best_meas[1]["goodput"],
                "target_alone_measured": alone_measured,
                "target_alone_per_token": result["target_alone"][str(rtt)]["streamed_goodput"],
            }
        )
    return rows


BEGIN, END = "<!-- dataplane:begin -->", "<!-- dataplane:end -->"


def cpu_seconds() -> tuple[float, float, float]:
    """(machine busy, machine steal, this process and its reaped children) CPU seconds so far."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (
        (user + nice + system + irq + softirq) / hz,
        steal / hz,
        own.user + own.system + own.children_user + own.children_system,
    )


def profile_table(result: dict[str, Any]) -> str:
    """The profiles per draft: the one the runs are predicted from and, for an interleaved run, the one
    taken before the runs beside it."""
    ks = result["ks"]
    lines = [
        "| draft | quant | profile | v_d in the loop tok/s | overhead o ms | decoding alone tok/s | "
        + " | ".join(f"alpha({k})" for k in ks)
        + f" | T_verify({'/'.join(map(str, ks))}) ms |",
        "| --- | --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in ks) + " | --- |",
    ]
    for draft in result["drafts"]:
        profiles = draft.get("profiles") or [draft]
        shown = (
            [("interleaved (predicts)", profiles[-1]), ("before the runs", profiles[0])]
            if result.get("interleaved")
            else [("first", draft)]
        )
        for label, profile in shown:
            alphas = " | ".join(f"{profile['alpha'][k]:.2f}" for k in ks)
            t_verify = " / ".join(f"{profile['t_verify_s'][k] * 1e3:.0f}" for k in ks)
            lines.append(
                f"| {draft['draft']} | {draft['quantization']} | {label} | {profile['v_d']:.1f} | "
                f"{profile['round_overhead_s'] * 1e3:.2f} | {profile['decode_tokens_per_s']:.1f} | "
                f"{alphas} | {t_verify} |"
            )
    return "\n".join(lines)


def docs_section(result: dict[str, Any]) -> str:
    """The data-plane section of docs/benchmarks.md: what was run, the tables, the targets."""
    summary, machine, overhead = result["summary"], result["machine"], result["loopback_overhead"]
    error_met = summary["median_abs_prediction_error"] <= 0.10
    efficiency_met = summary["median_efficiency"] >= 0.90
    every_cell = summary["min_efficiency"] >= 0.90
    calls_met = overhead["median_ms"] < 1.0
    in_loop_met = summary["in_loop_overhead_ms"] < 1.0
    return "\n".join(
        [
            "## Data plane: goodput per (draft, K) over an emulated edge-cloud round trip",
            "",
            f"*Written by one run of `{result['command']}` ({machine['wall_s'] / 60:.0f} minutes; JSON out). "
            f"{machine['cpus']} cores, the draft loop and the verifier (llama.cpp engine, exact mode, a "
            f"subprocess) {result['threads']} thread each. Other processes on the machine used "
            f"{machine['others_cpu_s']:.0f} CPU-seconds during the run (on average "
            f"{machine['others_cores']:.2f} of the {machine['cpus']} cores; "
            f"steal {machine['steal_s']:.1f} s); "
            f"load average {machine['load_start'][0]:.2f} at the start, {machine['load_end'][0]:.2f} at the "
            "end.*"
            + (
                " **This run shared the machine with other work** (more than half a core on average, beyond "
                "its own): timings, and so the errors and efficiencies below, carry that contention; a quiet "
                "machine is needed to read them as properties of the code."
                if machine["others_cores"] > 0.5
                else ""
            ),
            "",
            "Method (details and the analysis of the gaps: [dataplane.md](dataplane.md#benchmark)): the real "
            "draft-verify loop (`edgespec_edge.loop`) against the verifier over keep-alive HTTP, through "
            "toxiproxy (built from its Go module by `edgespec_dev.tools`) adding half the round trip in each "
            "direction (this kernel has no netem); RTT 0 is a direct loopback connection. Greedy, the first "
            f"{result['prompts']} prompts of the project's set, {result['tokens_per_prompt']} tokens each. "
            + (
                "First, per draft, the profiler as a device runs it (`edgespec_edge.profiler.measure_draft`, "
                "on loopback): v_d (drafted tokens over drafting time in its own loop runs), alpha(K) and "
                "T_verify(K) (median verify round trip), from steady-state rounds of K drafts, and the target"
                " alone: the profile *before* the runs. Then the runs, **interleaved** with a second loopback"
                " profile pass (`interleaved_passes`): for each prompt and each K, one generation of the "
                "profile pass and one at each RTT, one after another, the order rotated per prompt and K; the"
                " profile read from that pass exactly as the profiler reads its rounds "
                "(`edgespec_edge.profiler.profile_from_rounds`) predicts the runs. Profile and runs so sample"
                " the same minutes of the machine: on this VM its speed drifts within minutes (the "
                "verifier's own time per round; see the drift below), which a profile taken before "
                "cannot know, and which says nothing about the model. The same prompts in profile and runs: "
                "greedy acceptance is deterministic, so alpha(K) matches by construction, and this checks the"
                " timing model (drafting line, T_verify(K), additive RTT, per-round overhead), not acceptance"
                " on unseen text. "
                if result.get("interleaved")
                else "First, per draft, the profiler (`edgespec_edge.profiler.measure_draft`) measures on "
                "loopback, before and apart from the goodput runs: v_d, alpha(K) and T_verify(K) from "
                "steady-state rounds of K drafts"
                + (
                    "; with `--reprofile`, again before each RTT's runs, and each run is predicted from the "
                    "profile just before it (the profile table shows the first). "
                    if result.get("reprofile")
                    else ". "
                )
            )
            + "**goodput** is steady state, the rounds G(K) describes: the committed tokens of the rounds "
            "that drafted all K over those rounds' time (drafting, verify round trip, the loop's own "
            "time). Each prompt's first round (time to first token) and its last rounds (cut to fewer "
            f"drafts by the {result['tokens_per_prompt']}-token limit: the loop drafts min(K, tokens left "
            "- 1)) are left out; **whole** is the generation after its first round, those short rounds "
            "included. "
            "**predicted** is ConfigSpec's G = (K alpha + 1) / (K / v_d + T_verify(K) + RTT + o) "
            "(`edgespec.configspec.metrics.goodput_tokens_per_s`) from that profile plus the emulated RTT; "
            "**error** = (predicted - measured) / measured"
            + (
                "; **error, profile before** the same from the profile taken before the runs. "
                if result.get("interleaved")
                else ". "
            )
            + "**bound** is the same formula with the profile's "
            "v_d and the run's own alpha and mean verify round trip (rounds of K drafts): what a loop with "
            "no cost of its own would reach; **efficiency** = measured / bound. Every round's drafted and "
            "accepted tokens and times, of the profile and of each run, are in the JSON.",
            "",
            (
                "Models were loaded with llama.cpp's extra buffer types off (`--no-extra-buffers`, "
                "`bench/no_amx.py`: this VM advertises AMX and traps it), which also turns off weight "
                "repacking; speeds are not comparable with runs before that.\n\n"
                if result.get("no_extra_buffers")
                else ""
            )
            + "Profiles (inputs of the prediction):",
            "",
            profile_table(result),
            "",
            markdown(result),
            "",
            f"Summary: median |prediction error| **{summary['median_abs_prediction_error'] * 100:.1f}%** "
            f"(max {summary['max_abs_prediction_error'] * 100:.0f}%; target 10%: "
            f"**{'met' if error_met else 'not met'}**); loop efficiency median "
            f"**{summary['median_efficiency'] * 100:.1f}%**, minimum {summary['min_efficiency'] * 100:.0f}% "
            f"(target 90%: **{'met' if efficiency_met else 'not met'}** on the median, "
            f"{'and' if every_cell else 'not'} in every cell). Against the draft's decoding speed alone "
            "instead of the loop's v_d (charging the loop the draft's re-read of accepted tokens too): "
            "median "
            f"{summary['median_efficiency_vs_decode_alone'] * 100:.1f}%, minimum "
            f"{summary['min_efficiency_vs_decode_alone'] * 100:.0f}%.",
            "",
            "Prediction error by K, median |error| over drafts and RTTs, without the per-round overhead "
            "term (v_d as drafted tokens over drafting time, the paper's model) and with it (v_d and "
            "roundOverheadS fitted by `edgespec_edge.profiler.fit_round_time`; "
            + ", ".join(
                f"{d['draft']} {d['round_overhead_s'] * 1e3:.2f} ms per round, v_d {d['v_d']:.1f} "
                f"(without the term {d['plain_v_d']:.1f}) tokens/s"
                for d in result["drafts"]
            )
            + "):",
            "",
            error_by_k_table(result),
            "",
            by_k_sentence(summary, result["ks"]) + drift_sentence(summary),
            *(
                [
                    "",
                    "Where the error comes from, by K (median over the cells of that K, signed; tokens as "
                    "the predicted committed tokens per round over the run's, each time as predicted minus "
                    "measured over the run's measured round, so prediction / measured = (1 + tokens) / "
                    "(1 + the three times); the verifier time is the profile's loopback round trip against "
                    "the run's verifier-side time, so the loopback's ~1 ms is in it and taken back in the "
                    "network column):",
                    "",
                    error_parts_table(result),
                ]
                if summary.get("error_parts_by_k")
                else []
            ),
            *(
                [
                    "",
                    "The same runs against predictions from the same profile rounds read five ways (median "
                    "|error| by K; `error_by_k_readings`, recomputable "
                    "offline with `--from-json`): the profiler before this version took every steady round; "
                    "rounds cut short at the end of a generation are not rounds of G(K).",
                    "",
                    readings_table(result),
                ]
                if summary.get("error_by_k_readings")
                else []
            ),
            "",
            "No speculation, per RTT: what the model ranks first among every (draft, K) of this run and "
            "the target decoding alone (predicted from the profiles' `targetDecode`: 1 / the verifier's "
            "per-token time), and what measured best in the same run (cloud-only decoding as the edge "
            "serves it: the verifier's `POST /v1/generate` streamed through the link at that RTT, tokens "
            "over each request's whole time as for the speculative runs; the last column is 1 / the "
            "target's per-token time at the verifier, what a stream delivers after its first token):",
            "",
            no_speculation_markdown(result),
            "",
            "Per-call overhead of the verify round trip on loopback (edge-side round trip minus the "
            "verifier's own time, which starts when its handler runs and covers body parsing, queueing and "
            f"the engine): **{overhead['median_ms']:.2f} ms** median over {overhead['calls']} calls with K=1 "
            f"(p90 {overhead['p90_ms']:.2f} ms), and **{summary['in_loop_overhead_ms']:.2f} ms** median over "
            "the rounds of the RTT 0 runs above, where each call follows a drafting step on the edge and "
            f"a target pass on the verifier. Target under 1 ms: **{'met' if calls_met else 'not met'}** "
            f"for verify calls on loopback, **{'met' if in_loop_met else 'not met'}** inside the loop.",
        ]
    )


def error_by_k_table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    before = summary.get("median_abs_error_by_k_before")
    lines = [
        "| K | without the overhead term | with it | with it, whole generation (short rounds included) "
        + ("| with it, from the profile taken before the runs " if before else "")
        + "|",
        "| ---: | ---: | ---: | ---: |" + (" ---: |" if before else ""),
    ]
    for k in result["ks"]:
        without = summary["median_abs_error_by_k_without_overhead"][k]
        after = summary["median_abs_error_by_k"][k]
        whole = summary["median_abs_error_by_k_whole"][k]
        lines.append(
            f"| {k} | {without * 100:.1f}% | {after * 100:.1f}% | {whole * 100:.1f}% |"
            + (f" {before[k] * 100:.1f}% |" if before else "")
        )
    return "\n".join(lines)


def error_parts_table(result: dict[str, Any]) -> str:
    """``error_parts_by_k`` as Markdown: the median of each part of the error over the cells of a K."""
    parts = result["summary"].get("error_parts_by_k")
    if not parts:
        return ""
    lines = [
        "| K | tokens per round | edge time (drafting, overhead) | verifier time | network |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in result["ks"]:
        cells = " | ".join(f"{parts[k][part] * 100:+.1f}%" for part in ERROR_PARTS)
        lines.append(f"| {k} | {cells} |")
    return "\n".join(lines)


def by_k_sentence(summary: dict[str, Any], ks: list[int]) -> str:
    """Whether every K is within 5% with the overhead term, with the numbers."""
    by_k = summary["median_abs_error_by_k"]
    met = all(by_k[k] <= 0.05 for k in ks)
    numbers = ", ".join(f"{by_k[k] * 100:.1f}%" for k in ks)
    text = (
        f"With the overhead term every K is within 5%: **{'met' if met else 'not met'}** ({numbers} at "
        f"K = {', '.join(map(str, ks))}"
        + ("" if met else "; over 5%: " + ", ".join(f"K={k}" for k in ks if by_k[k] > 0.05))
        + ")."
    )
    before = summary.get("median_abs_error_by_k_before")
    if before:
        late = [k for k in ks if before[k] > 0.05]
        text += (
            " From the profile taken before the runs instead: "
            + ", ".join(f"{before[k] * 100:.1f}%" for k in ks)
            + (f" (over 5% at K = {', '.join(map(str, late))})." if late else " (every K within 5% too).")
        )
    return text


def drift_sentence(summary: dict[str, Any]) -> str:
    """How far the verifier's own speed moved between the profile and the runs: the prediction
    cannot know it, so an error of that size is the machine's."""
    drift, before = summary.get("verify_s_vs_profile_range"), summary.get("verify_s_vs_before_range")
    if not drift:
        return ""

    def span(pair: list[float]) -> str:
        return f"{(pair[0] - 1) * 100:+.0f}% to {(pair[1] - 1) * 100:+.0f}%"

    text = (
        " The verifier's own time per round of K drafts (its `verify_s`, no network), mean over a run's "
        f"rounds against the profile's at the same K: {span(drift)} across the runs"
    )
    if before:
        text += (
            f" (the edge's drafting time {span(summary['draft_s_vs_profile_range'])}); against the profile "
            f"taken before the runs {span(before)} (drafting {span(summary['draft_s_vs_before_range'])})"
        )
    return (
        text + ". A change of the machine's speed between profile and run shows here, and no prediction "
        "from the profile can know it."
    )


def no_speculation_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| RTT ms | ranked first | predicted tok/s | best speculative, predicted | target alone, predicted "
        "| measured best | best speculative, measured | cloud-only stream, measured "
        "| target alone, 1 / per-token time |",
        "| ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in result["no_speculation"]:
        alone = row["target_alone_predicted"]
        lines.append(
            f"| {row['rtt_ms']:g} | {row['ranked']} | {row['ranked_predicted']:.1f} | "
            f"{row['best_speculative_predicted']:.1f} | {'-' if alone is None else f'{alone:.1f}'} | "
            f"{row['measured_best']} | {row['best_speculative_measured']:.1f} | "
            f"{row['target_alone_measured']:.1f} | {row['target_alone_per_token']:.1f} |"
        )
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace only our section between the markers."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{section}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")


def markdown(result: dict[str, Any]) -> str:
    before = all("prediction_error_before" in r for d in result["drafts"] for r in d["runs"])
    lines = [
        "| draft | quant | RTT ms | K | rounds | alpha | goodput tok/s | predicted | error "
        "| error without overhead "
        + ("| error, profile before " if before else "")
        + "| whole tok/s | error whole | bound | efficiency |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        + ("---: | " if before else "")
        + "---: | ---: | ---: | ---: |",
    ]
    for draft in result["drafts"]:
        for run in draft["runs"]:
            lines.append(
                f"| {draft['draft']} | {draft['quantization']} | {run['rtt_ms']:g} | {run['k']} | "
                f"{run['rounds']} | {run['alpha']:.2f} | "
                f"{run['goodput']:.1f} | {run['predicted']:.1f} | {run['prediction_error'] * 100:+.1f}% | "
                f"{run['prediction_error_without_overhead'] * 100:+.1f}% | "
                + (f"{run['prediction_error_before'] * 100:+.1f}% | " if before else "")
                + f"{run['goodput_whole']:.1f} | {run['prediction_error_whole'] * 100:+.1f}% | "
                f"{run['bound']:.1f} | {run['efficiency'] * 100:.0f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draft", action="append", help="draft catalog names (default b16 and q4_0)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rtt", type=float, nargs="+", default=[0, 20, 100], help="emulated round trips, ms")
    parser.add_argument("--prompts", type=int, default=6, help="prompts from the project's set")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per prompt")
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
    parser.add_argument(
        "--no-extra-buffers",
        action="store_true",
        help="load models with llama.cpp's extra buffer types off (bench/no_amx.py: CPUs that trap AMX)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the goodput table as Markdown")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="JSON",
        help="measure nothing: recompute the summary of a recorded run and print or write its docs",
    )
    parser.add_argument(
        "--write-docs", type=Path, metavar="MD", help="rewrite the data-plane section of this Markdown file"
    )
    args = parser.parse_args()
    args.draft = args.draft or ["gemma3-270m-b16", "gemma3-270m-q4_0"]
    if args.from_json:
        render(json.loads(args.from_json.read_text(encoding="utf-8")), args)
        return
    if args.no_extra_buffers:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import no_amx

        no_amx.apply()
    load_start, (busy_start, steal_start, own_start), started = (
        os.getloadavg(),
        cpu_seconds(),
        time.monotonic(),
    )
    result = asyncio.run(bench(args))
    busy, steal, own = cpu_seconds()  # the verifier and toxiproxy are reaped by now: counted as ours
    wall_s = time.monotonic() - started
    others = max(0.0, (busy - busy_start) - (own - own_start))
    result["command"] = "python bench/bench_dataplane.py " + " ".join(sys.argv[1:])
    result["machine"] = {
        "cpus": os.cpu_count(),
        "wall_s": wall_s,
        "others_cpu_s": others,
        "others_cores": others / wall_s,
        "steal_s": steal - steal_start,
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}; summary {result.get('summary')}; machine {result['machine']}")
    render(result, args)


def render(result: dict[str, Any], args: argparse.Namespace) -> None:
    """``--markdown`` and ``--write-docs`` for a result, measured now or read back from its JSON (keys
    by K come back as strings: made integers again, and the summary recomputed from the runs)."""
    if not result["drafts"]:
        return
    if args.from_json:
        for draft in result["drafts"]:
            for profile in [draft, *draft.get("profiles", [])]:
                for key in ("alpha", "t_verify_s", "profile_rounds"):
                    if key in profile:
                        profile[key] = {int(k): v for k, v in profile[key].items()}
        result["summary"] = summarise(result)
    if args.markdown:
        print(markdown(result))
    if args.write_docs:
        write_docs(args.write_docs, docs_section(result))
        log(f"rewrote the data-plane section of {args.write_docs}")


if __name__ == "__main__":
    main()
