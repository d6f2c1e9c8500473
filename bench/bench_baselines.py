"""Baselines beside speculative serving, from one run: target decoding alone, cloud-only, speculative.

    PYTHONPATH=operator:edge_image:verifier_image:hack python bench/bench_baselines.py --write-docs

For each emulated round trip (toxiproxy between client and cloud, half the RTT each way) and each
prompt (the profiler's prompts, greedy, ``--tokens`` output tokens), three ways to serve it:

- **target alone**: the target model decoding in this process, no network (what an edge device would
  get running the target itself, if it could): TTFT = prompt read + first token.
- **cloud-only**: a target-only server (a subprocess) generates every token and streams each one back
  as soon as it exists over the same emulated round trip: TTFT = RTT + prompt read + first token.
- **speculative**: the edge loop (draft, this process) against the verifier (target, a subprocess)
  through the same proxy, at each K: TTFT = the first round (both prompt reads plus one round trip).

End-to-end tokens/s is output tokens over the request's whole time (TTFT included), per prompt; the
table gives medians over prompts. Every model runs with 1 thread; the machine's other load is recorded.
Writes JSON; ``--write-docs`` rewrites the baselines section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import ClientSession, ClientTimeout, web
from bench_dataplane import Toxiproxy, free_port, log, wait_http
from edgespec.wire import SamplingParams
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.config import SpeculativeLength
from edgespec_edge.llama_kv import KVSequence, LlamaRuntime
from edgespec_edge.loop import Drafter, GenerationStats, VerifierClient, speculative_generate
from edgespec_edge.profiler import load_prompts

MARK_BEGIN = "<!-- bench_baselines:begin -->"
MARK_END = "<!-- bench_baselines:end -->"


_SEQUENCES: dict[int, KVSequence] = {}


def greedy_stream(runtime: LlamaRuntime, prompt_tokens: list[int], max_tokens: int) -> Any:
    """The target decoding alone: prompt read in batches, then one token per step (yields tokens).

    One KV sequence per model, reused (as the servers pool theirs), so no request pays its set-up."""
    if id(runtime) not in _SEQUENCES:
        _SEQUENCES[id(runtime)] = runtime.new_sequence()
    sequence = _SEQUENCES[id(runtime)]
    tokens = list(prompt_tokens)
    sequence.truncate(0)
    for _ in range(max_tokens):
        token = int(np.argmax(sequence.logits(tokens, len(tokens) - 1)[0]))
        if runtime.is_end_of_generation(token):
            return
        yield token
        tokens.append(token)


def target_alone(runtime: LlamaRuntime, prompt_tokens: list[int], max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    ttft = 0.0
    count = 0
    for _ in greedy_stream(runtime, prompt_tokens, max_tokens):
        count += 1
        if count == 1:
            ttft = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    return {"ttft_s": ttft, "tokens": count, "tokens_per_s": count / elapsed}


def serve_target(model: Path, port: int) -> None:
    """The cloud-only server: POST /generate {tokens, max_tokens} streams one token id per line."""
    runtime = LlamaRuntime(model, n_ctx=1024, n_threads=1)
    executor = ThreadPoolExecutor(max_workers=1)

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await stream.prepare(request)
        tokens = greedy_stream(runtime, body["tokens"], body["max_tokens"])
        loop = asyncio.get_running_loop()
        while (token := await loop.run_in_executor(executor, next, tokens, None)) is not None:
            await stream.write(f"{token}\n".encode())
        await stream.write_eof()
        return stream

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def cloud_only(url: str, prompt_tokens: list[int], max_tokens: int) -> dict[str, float]:
    async with ClientSession(timeout=ClientTimeout(total=600)) as http:
        started = time.perf_counter()
        ttft = 0.0
        count = 0
        async with http.post(
            f"{url}/generate", json={"tokens": prompt_tokens, "max_tokens": max_tokens}
        ) as r:
            async for line in r.content:
                if line.strip():
                    count += 1
                    if count == 1:
                        ttft = time.perf_counter() - started
        elapsed = time.perf_counter() - started
    return {"ttft_s": ttft, "tokens": count, "tokens_per_s": count / elapsed}


async def speculative(
    drafter: Drafter, client: VerifierClient, prompt_tokens: list[int], max_tokens: int, k: int
) -> dict[str, float]:
    stats = GenerationStats()
    started = time.perf_counter()
    ttft = 0.0
    async for _ in speculative_generate(
        drafter,
        client,
        prompt_tokens,
        max_tokens=max_tokens,
        k_source=SpeculativeLength(k),
        sampling=SamplingParams(),
        stats=stats,
    ):
        if not ttft:
            ttft = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    count = stats.completion_tokens
    return {"ttft_s": ttft, "tokens": count, "tokens_per_s": count / elapsed}


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {
        "ttft_s": statistics.median(r["ttft_s"] for r in rows),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "tokens": sum(r["tokens"] for r in rows),
    }


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    target, draft = target_path(), ensure(args.draft)
    prompts = load_prompts(None, limit=args.prompts)
    token = secrets.token_hex(16)
    verifier_port, cloud_port = free_port(), free_port()
    env = {**os.environ, "EDGESPEC_VERIFIER_TOKEN": token}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgespec_verifier",
                "--model",
                str(target),
                "--host",
                "127.0.0.1",
                "--port",
                str(verifier_port),
                "--n-threads",
                "1",
                "--n-ctx",
                "1024",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, __file__, "--serve-target", str(cloud_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    proxies: list[Toxiproxy] = []
    target_runtime = LlamaRuntime(target, n_ctx=1024, n_threads=1)
    draft_runtime = LlamaRuntime(draft, n_ctx=1024, n_threads=1)
    drafter = Drafter(draft_runtime, 1)
    import llama_cpp

    result: dict[str, Any] = {
        "draft": args.draft,
        "tokens": args.tokens,
        "prompts": len(prompts),
        "rtt": {},
        # False when llama.cpp's extra buffer types (weight repacking, AMX) were switched off in this
        # environment, which lowers every column alike.
        "extra_buffer_types": bool(llama_cpp.llama_model_default_params().use_extra_bufts),
    }
    try:
        wait_http(f"http://127.0.0.1:{verifier_port}/readyz")
        wait_http(f"http://127.0.0.1:{cloud_port}/readyz")
        proxies = [Toxiproxy(verifier_port), Toxiproxy(cloud_port)]
        encoded = [target_runtime.tokenize(p) for p in prompts]
        log("target alone")
        load_before = load_average()
        alone = summary([target_alone(target_runtime, t, args.tokens) for t in encoded])
        result["target_alone"] = alone
        for rtt in args.rtt:
            for proxy in proxies:
                proxy.set_rtt(rtt)
            log(f"RTT {rtt} ms: cloud-only")
            cloud = summary([await cloud_only(proxies[1].url, t, args.tokens) for t in encoded])
            cell: dict[str, Any] = {"cloud_only": cloud, "speculative": {}}
            client = VerifierClient(proxies[0].url, token)
            try:
                for k in args.k:
                    log(f"RTT {rtt} ms: speculative K={k}")
                    rows = [await speculative(drafter, client, t, args.tokens, k) for t in encoded]
                    cell["speculative"][str(k)] = summary(rows)
            finally:
                await client.close()
            result["rtt"][str(rtt)] = cell
        result["load_average"] = {"before": load_before, "after": load_average()}
    finally:
        drafter.close()
        for sequence in _SEQUENCES.values():
            sequence.close()
        draft_runtime.close()
        target_runtime.close()
        for proxy in proxies:
            proxy.close()
        for child in children:
            child.terminate()
            child.wait(30)
    return result


def markdown(result: dict[str, Any]) -> str:
    alone = result["target_alone"]

    def row(rtt: str, name: str, s: dict[str, float]) -> str:
        ratio = s["tokens_per_s"] / alone["tokens_per_s"]
        return f"| {rtt} | {name} | {s['ttft_s'] * 1000:.0f} ms | {s['tokens_per_s']:.1f} | {ratio:.2f}x |"

    lines = [
        "| RTT | serving | TTFT (median) | end-to-end tokens/s (median) | vs target alone |",
        "| ---: | --- | ---: | ---: | ---: |",
        row("-", "target alone (no network)", alone),
    ]
    for rtt, cell in result["rtt"].items():
        lines.append(row(f"{rtt} ms", "cloud-only (target streams every token)", cell["cloud_only"]))
        lines += [row(f"{rtt} ms", f"speculative K={k}", s) for k, s in cell["speculative"].items()]
    return "\n".join(lines)


def docs_section(result: dict[str, Any]) -> str:
    load = result["load_average"]
    return "\n".join(
        [
            MARK_BEGIN,
            "## Data plane: baselines beside speculative serving",
            "",
            "`bench/bench_baselines.py`, one run: the same prompts "
            f"({result['prompts']} of the profiler's, greedy, {result['tokens']} output tokens) served three "
            "ways, each model with 1 thread on this 2-core machine shared with other work (load average "
            f"{load['before']:.1f} before, {load['after']:.1f} after): the target decoding alone in-process; "
            "cloud-only, a target-only server streaming each token as it is generated through toxiproxy "
            f"(half the RTT each way); speculative, draft {result['draft']} on the edge and the verifier "
            "through the same proxy. TTFT and end-to-end tokens/s (TTFT included) are medians over prompts."
            + (
                ""
                if result.get("extra_buffer_types", True)
                else " In this run llama.cpp's extra buffer types (weight repacking, AMX) were off in every "
                "process (the shared llama-cpp-python build's AMX kernels die with SIGILL on this VM), "
                "which lowers all columns alike."
            ),
            "",
            markdown(result),
            "",
            "Read it plainly: on this machine draft and target are the same size class (270M) and share 2 "
            "cores, so speculative serving is slower than the target decoding alone, and its TTFT includes "
            "prompt reads on both sides plus a round trip. Speculation pays where the target is much "
            "larger and slower than the draft (the cloud's 70B against an edge's 1B), which this CPU "
            "setup cannot show; cloud-only is the baseline it must beat over a real RTT. Under load "
            "(guidellm, synchronous and concurrency 4, against a target-only OpenAI server): the guidellm "
            "section below (bench/bench_guidellm.py).",
            MARK_END,
        ]
    )


def write_docs(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8")
    if MARK_BEGIN in text:
        before, rest = text.split(MARK_BEGIN, 1)
        text = before + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--draft", default="gemma3-270m-b16")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rtt", type=int, nargs="+", default=[0, 20, 100], help="round trips, ms")
    parser.add_argument("--out", type=Path, default=Path("bench-baselines.json"))
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--render", type=Path, help="render a saved run's JSON instead of measuring")
    args = parser.parse_args()
    if args.serve_target:
        serve_target(target_path(), args.serve_target)
        return
    # --render: the docs section again from a saved run's JSON.
    result = json.loads(args.render.read_text()) if args.render else asyncio.run(bench(args))
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    if args.write_docs:
        write_docs(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", docs_section(result))


if __name__ == "__main__":
    main()
