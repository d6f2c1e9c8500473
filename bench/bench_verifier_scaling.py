"""Verifier scaling, both engines: aggregate throughput and round latency with N concurrent edge sessions.

    bash hack/vllm/bench.sh --out bench_verifier_scaling.json   # the vLLM venv; both engines

(the vLLM venv holds llama-cpp-python too; ``--engines llamacpp llamacpp-batched`` runs without vLLM).
Engines: ``llamacpp`` is the verifier's llama.cpp engine in exact mode (its default: sessions one after
another, generated positions one per decode); ``llamacpp-batched`` the one it runs with ``exact=False``
(sessions as sequences of one context, the rounds queued meanwhile verified in one multi-sequence
decode); ``vllm`` the vLLM engine. Rounds are recorded once: per prompt, a real greedy draft
loop (gemma3-270m-b16 drafting K=4, the llama.cpp engine verifying) of ``--rounds`` rounds; each
recorded round is (context, draft). Per engine, then:

- **scaling**: N = 1, 4, 16, 32 concurrent sessions over HTTP (the real verifier app on loopback and
  the edge's ``VerifierClient``), session i replaying recorded prompt i mod P round after round. Per
  N: aggregate verified tokens/s (K+1 positions scored per round, over the wall time), committed
  tokens/s (accepted + 1 per round, the engine's own verdicts), p50/p99 round latency seen by the
  client. Each session's first round reads its prompt and is left out of the statistics.
- **limit**: the engine's own forward throughput for the same token counts with no HTTP and no queue:
  vLLM: N requests (each session's context, prefix-cached, then K+1 greedy tokens) submitted at once
  to the AsyncLLM; llama.cpp: the same N x (K+1) positions scored by the engine's sequences directly
  (one batched decode of K+1 per session), one after another, and also in one llama_decode holding all
  N sequences (the multi-sequence decode alone, in a context of its own); llamacpp-batched: N rounds
  at a time through the engine's ``score_many`` (one multi-sequence decode per step, verdicts and
  rollbacks included).
- **context**: the per-round verify cost at 32 and 512 context tokens, N = 1, K = 4, engine called
  directly (median of ``--context-rounds`` rounds after a warm-up round that reads the context).

CPU load (1-minute load average) is recorded before and after each part; the machine has 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from edgespec.wire import SamplingParams, VerifyRequest
from edgespec_dev.drafts import ensure, target_path
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import VerifierClient, propose
from edgespec_edge.profiler import load_prompts
from edgespec_verifier.acceptance import accept_greedy
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import BatchedLlamaCppEngine, LlamaCppEngine
from edgespec_verifier.engines.vllm import VllmEngine
from edgespec_verifier.server import VerifierSettings, create_app
from prometheus_client import CollectorRegistry

K = 4
TOKEN = "bench-token-0123456789"
PROMPTS = load_prompts(limit=8)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class Round:
    context: list[int]
    draft: list[int]
    prompt_tokens: int


def record(engine: LlamaCppEngine, draft: LlamaRuntime, rounds: int) -> list[list[Round]]:
    """Per prompt, ``rounds`` rounds of a real greedy draft loop verified by the llama.cpp engine."""
    sessions: list[list[Round]] = []
    rng = np.random.default_rng(0)
    engine.exact = False  # recording needs realistic rounds, not bit-exact ones: the cheaper batched path
    for index, prompt in enumerate(PROMPTS):
        context = engine.runtime.tokenize(prompt)
        prompt_tokens = len(context)
        sequence = draft.new_sequence()
        recorded: list[Round] = []
        try:
            for _ in range(rounds):
                drafted, _ = propose(
                    sequence, context, K, SamplingParams(), 8, rng, engine.runtime.is_end_of_generation
                )
                rows = engine.score(f"rec{index}", context, drafted, prompt_tokens)
                accepted, next_token = accept_greedy(rows, drafted)
                engine.commit(f"rec{index}", len(context) + accepted)
                recorded.append(Round(list(context), list(drafted), prompt_tokens))
                context = [*context, *drafted[:accepted], next_token]
        finally:
            sequence.close()
            engine.close_session(f"rec{index}")
        sessions.append(recorded)
    engine.exact = True
    return sessions


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def replay(url: str, sessions: list[list[Round]], n: int) -> dict[str, Any]:
    """N concurrent sessions over HTTP, each replaying one recorded session's rounds in order."""
    latencies: list[float] = []
    scored = committed = 0
    clients = [VerifierClient(url, TOKEN, retry_budget_s=0.0) for _ in range(n)]

    async def one(i: int) -> tuple[float, float]:
        nonlocal scored, committed
        session_id = f"bench-{n}-{i}-{time.monotonic_ns()}"
        first_done = last_done = 0.0
        for r, recorded in enumerate(sessions[i % len(sessions)]):
            request = VerifyRequest(
                session_id=session_id,
                tokens=recorded.context,
                prompt_tokens=recorded.prompt_tokens,
                draft=recorded.draft,
            )
            started = time.perf_counter()
            verdict, _ = await clients[i].verify(request)
            last_done = time.perf_counter()
            if r == 0:
                first_done = last_done  # the prompt read: time to first token, not a steady round
                continue
            latencies.append(last_done - started)
            scored += len(recorded.draft) + 1
            committed += verdict.accepted + 1
        clients[i].close_session(session_id)  # in the background, as the edge does
        return first_done, last_done

    try:
        spans = await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        for client in clients:
            await client.close()
    # The steady window: from the last session's first answer to the last session's end.
    window = max(end for _, end in spans) - max(start for start, _ in spans)
    window = max(window, 1e-9)
    steady_rounds = len(latencies)
    return {
        "n": n,
        "rounds": steady_rounds,
        "wall_s": round(window, 3),
        "verified_tok_s": round(scored / window, 2),
        "committed_tok_s": round(committed / window, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


async def serve_and_replay(
    engine: Any, sessions: list[list[Round]], ns: Sequence[int]
) -> list[dict[str, Any]]:
    settings = VerifierSettings(engine=engine.name, max_queue=4096)
    app = create_app(settings, registry=CollectorRegistry(), engine=engine, tokens=TokenSource(token=TOKEN))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    results = []
    try:
        for n in ns:
            before = load()
            result = await replay(f"http://127.0.0.1:{port}", sessions, n)
            result.update(load_before=before, load_after=load())
            log(f"{engine.name} N={n}: {result}")
            results.append(result)
    finally:
        await runner.cleanup()
    return results


def steady_rounds(sessions: list[list[Round]], n: int) -> list[list[Round]]:
    return [sessions[i % len(sessions)][1:] for i in range(n)]


def limit_vllm(engine: VllmEngine, sessions: list[list[Round]], n: int) -> dict[str, Any]:
    """N requests at once straight into the AsyncLLM: cached context, then K+1 greedy tokens each."""
    import vllm

    params = vllm.SamplingParams(temperature=0.0, max_tokens=K + 1, ignore_eos=True, detokenize=False)
    work = steady_rounds(sessions, n)

    async def batch(contexts: list[list[int]]) -> None:
        await asyncio.gather(*(engine._generate(context, params) for context in contexts))

    # Warm the prefix cache with every context first, as the sessions' earlier rounds would have.
    engine._call(batch([s[0].context for s in work]))
    started = time.perf_counter()
    tokens = 0
    for step in range(1, min(len(s) for s in work)):
        engine._call(batch([s[step].context for s in work]))
        tokens += n * (K + 1)
    elapsed = time.perf_counter() - started
    return {"n": n, "tok_s": round(tokens / elapsed, 2), "note": "AsyncLLM, N requests per step"}


def limit_llamacpp(engine: LlamaCppEngine, sessions: list[list[Round]], n: int) -> dict[str, Any]:
    """The same positions scored by the engine's sequences directly (batched K+1 per session)."""
    work = steady_rounds(sessions, n)
    for i, s in enumerate(work):  # read each context first, as the sessions' earlier rounds would have
        engine.exact = False
        engine.score(f"lim{i}", s[0].context, s[0].draft, None)
    started = time.perf_counter()
    tokens = 0
    for step in range(1, min(len(s) for s in work)):
        for i, s in enumerate(work):
            engine.score(f"lim{i}", s[step].context, s[step].draft, None)
            tokens += K + 1
    elapsed = time.perf_counter() - started
    for i in range(n):
        engine.close_session(f"lim{i}")
    engine.exact = True
    return {"n": n, "tok_s": round(tokens / elapsed, 2), "note": "per-session batched decode of K+1"}


def limit_llamacpp_batched(
    engine: BatchedLlamaCppEngine, sessions: list[list[Round]], n: int
) -> dict[str, Any]:
    """The same positions through the batched engine directly: per step, the N sessions' rounds in one
    ``score_many`` (one multi-sequence decode), each decided greedily and rolled back."""
    work = steady_rounds(sessions, n)

    def step(rounds: list[Round]) -> None:
        requests = [
            VerifyRequest(session_id=f"lim{i}", tokens=r.context, draft=r.draft) for i, r in enumerate(rounds)
        ]
        for request, scored in zip(requests, engine.score_many(requests), strict=True):
            if isinstance(scored, Exception):
                raise scored
            accepted, _ = accept_greedy(scored[0], request.draft)
            engine.commit(request.session_id, len(request.tokens) + accepted)

    step([s[0] for s in work])  # read each context first, as the sessions' earlier rounds would have
    started = time.perf_counter()
    tokens = 0
    for index in range(1, min(len(s) for s in work)):
        step([s[index] for s in work])
        tokens += n * (K + 1)
    elapsed = time.perf_counter() - started
    for i in range(n):
        engine.close_session(f"lim{i}")
    return {"n": n, "tok_s": round(tokens / elapsed, 2), "note": "score_many, N rounds per decode"}


def limit_llamacpp_multiseq(engine: LlamaCppEngine, sessions: list[list[Round]], n: int) -> dict[str, Any]:
    """The same positions in one llama_decode per step holding all N sequences (llama.cpp's
    multi-sequence batch through the low-level API): what batching the sessions would reach."""
    import llama_cpp
    from llama_cpp import _internals

    work = steady_rounds(sessions, n)
    runtime = engine.runtime
    params = llama_cpp.llama_context_default_params()
    longest = max(len(r.context) + K + 1 for s in work for r in s)
    params.n_seq_max = n
    params.n_ctx = n * (longest + 8)
    params.n_threads = params.n_threads_batch = runtime.llama.context_params.n_threads
    params.swa_full = True
    chunk = 256
    params.n_batch = params.n_ubatch = chunk
    params.kv_unified = True
    context = _internals.LlamaContext(model=runtime.llama._model, params=params, verbose=False)
    batch = _internals.LlamaBatch(n_tokens=chunk, embd=0, n_seq_max=n, verbose=False)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:  # (seq, position, token, logits)
        for begin in range(0, len(items), chunk):
            part = items[begin : begin + chunk]
            raw = batch.batch
            raw.n_tokens = len(part)
            for i, (seq, position, token, want) in enumerate(part):
                raw.token[i], raw.pos[i], raw.n_seq_id[i], raw.logits[i] = token, position, 1, want
                raw.seq_id[i][0] = seq
            context.decode(batch)

    try:
        prefix = [s[0].context for s in work]
        decode([(i, p, t, False) for i, c in enumerate(prefix) for p, t in enumerate(c)])
        cached = [len(c) for c in prefix]
        tokens = 0
        started = time.perf_counter()
        for step in range(1, min(len(s) for s in work)):
            items = []
            for i, s in enumerate(work):
                r = s[step]
                llama_cpp.llama_memory_seq_rm(context.memory, i, min(cached[i], len(r.context)), -1)
                fresh = [*r.context[cached[i] :], *r.draft]
                start = min(cached[i], len(r.context))
                items += [(i, start + j, t, j >= len(fresh) - K - 1) for j, t in enumerate(fresh)]
                cached[i] = len(r.context)  # the drafts are rolled back on the next step
                tokens += K + 1
            decode(items)
        elapsed = time.perf_counter() - started
    finally:
        batch.close()
        context.close()
    return {"n": n, "tok_s": round(tokens / elapsed, 2), "note": "one llama_decode, N sequences"}


def context_cost(
    verify: Callable[[VerifyRequest], object], filler: list[int], rounds: int
) -> dict[str, float]:
    """Median verify time per round at 32 and 512 context tokens (N=1, K=4), engine called directly."""
    out: dict[str, float] = {}
    for length in (32, 512):
        context = filler[:length]
        session = f"ctx{length}-{time.monotonic_ns()}"
        times = []
        for r in range(rounds + 1):
            draft = filler[length + r * 5 : length + r * 5 + K]
            started = time.perf_counter()
            verify(VerifyRequest(session_id=session, tokens=context, prompt_tokens=length, draft=draft))
            if r:
                times.append(time.perf_counter() - started)
            context = filler[: length + (r + 1) * 5]  # as if every draft was accepted, plus the bonus
        out[f"ctx{length}_ms"] = round(statistics.median(times) * 1000, 1)
    out["ratio_512_32"] = round(out["ctx512_ms"] / out["ctx32_ms"], 2)
    return out


def llamacpp_verify(engine: LlamaCppEngine | BatchedLlamaCppEngine) -> Callable[[VerifyRequest], object]:
    def verify(request: VerifyRequest) -> object:
        rows = engine.score(request.session_id, request.tokens, request.draft, request.prompt_tokens)
        accepted, token = accept_greedy(rows, request.draft)
        engine.commit(request.session_id, len(request.tokens) + accepted)
        return accepted, token

    return verify


def markdown(result: dict[str, Any]) -> str:
    """The scaling table (one row per engine and N, the limit beside it) and the context-cost table."""
    lines = [
        "| engine | N | verified tok/s | committed tok/s | p50 ms | p99 ms | limit tok/s | of limit | vs N=1 "
        "| load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, part in result["engines"].items():
        limits = {row["n"]: row["tok_s"] for row in part["limit"]}
        base = part["scaling"][0]["verified_tok_s"]
        for row in part["scaling"]:
            limit = limits[row["n"]]
            lines.append(
                f"| {name} | {row['n']} | {row['verified_tok_s']} | {row['committed_tok_s']} "
                f"| {row['p50_ms']} | {row['p99_ms']} | {limit} | {row['verified_tok_s'] / limit:.0%} "
                f"| {row['verified_tok_s'] / base:.2f}x | {row['load_before']} -> {row['load_after']} |"
            )
    lines += ["", "| engine | round at 32 ctx, ms | round at 512 ctx, ms | ratio |"]
    lines += ["| --- | ---: | ---: | ---: |"]
    for name, part in result["engines"].items():
        c = part["context"]
        lines.append(f"| {name} | {c['ctx32_ms']} | {c['ctx512_ms']} | {c['ratio_512_32']} |")
    if "llamacpp" in result["engines"] and "limit_multiseq" in result["engines"]["llamacpp"]:
        lines += ["", "| N | llama.cpp per-session decodes, tok/s | one multi-sequence decode, tok/s |"]
        lines += ["| ---: | ---: | ---: |"]
        part = result["engines"]["llamacpp"]
        for single, multi in zip(part["limit"], part["limit_multiseq"], strict=True):
            lines.append(f"| {single['n']} | {single['tok_s']} | {multi['tok_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--markdown", type=Path, help="print the tables of an earlier --out file and exit")
    parser.add_argument("--vllm-target", type=Path, default=os.environ.get("EDGESPEC_VLLM_TARGET"))
    parser.add_argument("--rounds", type=int, default=12, help="recorded rounds per prompt")
    parser.add_argument("--context-rounds", type=int, default=8)
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["llamacpp", "llamacpp-batched", "vllm"],
        choices=["llamacpp", "llamacpp-batched", "vllm"],
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    result: dict[str, Any] = {"k": K, "cpus": os.cpu_count(), "load_start": load(), "engines": {}}
    llama = LlamaCppEngine(target_path(), n_ctx=1024, n_threads=2, max_sessions=max(args.ns) + 2)
    draft = LlamaRuntime(ensure("gemma3-270m-b16"), n_ctx=1024, n_threads=2)
    started = time.perf_counter()
    sessions = record(llama, draft, args.rounds)
    draft.close()
    log(f"recorded {sum(len(s) for s in sessions)} rounds in {time.perf_counter() - started:.0f} s")
    filler = [t for s in sessions for r in s[-1:] for t in r.context] * 8
    filler = [2, *[t for t in filler if t != 2]][:600]
    if "llamacpp" in args.engines:
        part: dict[str, Any] = {"load_before": load()}
        part["context"] = context_cost(llamacpp_verify(llama), filler, args.context_rounds)
        log(f"llamacpp context: {part['context']}")
        part["limit"] = [limit_llamacpp(llama, sessions, n) for n in args.ns]
        log(f"llamacpp limit: {part['limit']}")
        try:
            part["limit_multiseq"] = [limit_llamacpp_multiseq(llama, sessions, n) for n in args.ns]
        except Exception as exc:  # a measurement beside the table; never lose the rest of the run to it
            part["limit_multiseq_error"] = f"{type(exc).__name__}: {exc}"
        log(f"llamacpp multi-sequence limit: {part.get('limit_multiseq', part.get('limit_multiseq_error'))}")
        part["scaling"] = asyncio.run(serve_and_replay(llama, sessions, args.ns))
        part["load_after"] = load()
        result["engines"]["llamacpp"] = part
        args.out.write_text(json.dumps(result, indent=2))  # each engine's part as soon as it is done
        log(f"llamacpp: {part}")
    llama.close()  # its per-session contexts (about 80 MB each) before the batched engine's
    if "llamacpp-batched" in args.engines:  # the same model, one shared context of N slots
        batched = BatchedLlamaCppEngine(target_path(), n_ctx=1024, n_threads=2, max_sessions=max(args.ns) + 2)
        try:
            part = {"load_before": load()}
            part["context"] = context_cost(llamacpp_verify(batched), filler, args.context_rounds)
            log(f"llamacpp-batched context: {part['context']}")
            part["limit"] = [limit_llamacpp_batched(batched, sessions, n) for n in args.ns]
            log(f"llamacpp-batched limit: {part['limit']}")
            part["scaling"] = asyncio.run(serve_and_replay(batched, sessions, args.ns))
            part["load_after"] = load()
            result["engines"]["llamacpp-batched"] = part
            args.out.write_text(json.dumps(result, indent=2))
            log(f"llamacpp-batched: {part}")
        finally:
            batched.close()
    if "vllm" in args.engines:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        engine = VllmEngine(
            str(args.vllm_target),
            dtype="float32",
            max_model_len=1024,
            block_size=32,
            max_num_seqs=64,
            enforce_eager=True,
        )
        try:
            part = {"load_before": load()}
            part["context"] = context_cost(engine.verify, filler, args.context_rounds)
            log(f"vllm context: {part['context']}")
            part["limit"] = [limit_vllm(engine, sessions, n) for n in args.ns]
            log(f"vllm limit: {part['limit']}")
            part["scaling"] = asyncio.run(serve_and_replay(engine, sessions, args.ns))
            part["load_after"] = load()
            result["engines"]["vllm"] = part
            log(f"vllm: {part}")
        finally:
            engine.close()
    result["load_end"] = load()
    args.out.write_text(json.dumps(result, indent=2))
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
