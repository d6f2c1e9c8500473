"""The profiler: measure v_d, P, alpha(K) and T_verify(K) for each (draft, quantisation); write EdgeProfiles.

For each draft: its decode speed alone (a warm-up generation, then greedy single-token decoding of
each prompt, median tokens/s) while a power sensor is sampled; then, for each K in the range, the real
draft-verify loop against the live verifier on the prompt set. From the loop's steady-state rounds
(each prompt's first round, which reads the prompt on both sides, is time to first token and left out,
as G(K) describes the steady state) that drafted all K tokens (``full_rounds``: a round cut short by
``max_tokens`` at the end of a generation, or by the end of the text, drafts and verifies fewer, and is
no more a round of G(K) than the first one): alpha(K) = accepted / drafted, T_verify(K) = median round
trip of a verify call seen from the edge (network plus verifier), and v_d = drafted tokens / drafting
time over all K. v_d is measured in the loop, not taken from decoding alone, because the loop drafts a
little more than K tokens' worth per round: after a full acceptance the draft reads its own last draft
token together with the target's bonus token before it can draft again (a 2-token batch instead of 1,
about 10% of a step here). Each round also has a fixed edge cost that K / v_d does not carry (starting
a draft run, that extra read, sampling, the loop's bookkeeping): ``fit_round_time`` separates it, as
the intercept of drafting time against drafted tokens over all rounds that drafted (the short ones at
the end of a generation included: they are draft runs too, of other sizes) plus the loop's time
outside drafting and verification, into ``roundOverheadS``, and v_d becomes the slope (all of it read
from the rounds by ``profile_from_rounds``, which benchmarks use on their own rounds too). Decoding alone
is kept beside it (``DraftMeasurements.decode_tokens_per_s``). Finally the target decoding alone, the
no-speculation baseline (``measure_target_decode``: one target token per verify call with no draft,
its per-token verifier time and the first call's round trip as TTFT), goes into ``targetDecode``. The
results become ``EdgeProfile`` objects, written to a YAML file or server-side applied to the cluster
(in a pod, with its service account; field manager ``edgespec-profiler``).

Prompts: the project's small set (``prompts/prompts.jsonl``) or ``--prompts FILE``: JSONL with
``prompt``, or Dolly-style ``instruction`` (+ ``context``), or plain text with one prompt per line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from edgespec.api.profile import (
    AcceptancePoint,
    EdgeProfile,
    EdgeProfileSpec,
    TargetDecode,
    VerifyLatency,
    VerifyLatencyPoint,
)
from edgespec.wire import SamplingParams, VerifyRequest

from edgespec_edge.config import SpeculativeLength
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import Drafter, GenerationStats, RoundStats, VerifierClient, speculative_generate
from edgespec_edge.power import PowerSampler, PowerSensor

FIELD_MANAGER = "edgespec-profiler"


@dataclass(frozen=True)
class DraftUnderTest:
    name: str
    quantization: str
    path: Path


def progress(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


def load_prompts(path: Path | None = None, limit: int | None = None) -> list[str]:
    """Prompts from a JSONL/text file, or the project's own set."""
    if path is None:
        text = resources.files("edgespec_edge").joinpath("prompts/prompts.jsonl").read_text(encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    prompts: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            prompt = record.get("prompt") or record.get("instruction") or ""
            if record.get("context"):
                prompt = f"{prompt}\n\n{record['context']}"
        else:
            prompt = line
        if prompt:
            prompts.append(str(prompt))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise ValueError(f"no prompts found in {path or 'the built-in set'}")
    return prompts


def measure_draft_speed(runtime: LlamaRuntime, prompts: Sequence[str], tokens: int) -> list[float]:
    """Tokens/s of greedy single-token decoding per prompt (after a warm-up), the draft's real step."""
    sequence = runtime.new_sequence()
    try:

        def decode(prompt: str, count: int) -> float:
            context = runtime.tokenize(prompt)
            sequence.logits(context, len(context) - 1)  # prompt read: not part of v_d
            started = time.perf_counter()
            for _ in range(count):
                row = sequence.logits(context, len(context) - 1)[0]
                context.append(int(np.argmax(row)))
            return count / (time.perf_counter() - started)

        decode(prompts[0], 8)  # warm-up
        return [decode(prompt, tokens) for prompt in prompts]
    finally:
        sequence.close()


async def measure_acceptance(
    drafter: Drafter,
    client: VerifierClient,
    prompts: Sequence[str],
    k: int,
    max_tokens: int,
    *,
    steady_state: bool = False,
) -> GenerationStats:
    """Run the real loop over ``prompts`` at speculative length ``k`` and collect its rounds.

    ``steady_state`` drops each prompt's first round (it reads the prompt on both sides: time to
    first token), which is what G(K) describes; a prompt answered in one round then adds nothing.
    """
    total = GenerationStats()
    for prompt in prompts:
        stats = GenerationStats()
        async for _ in speculative_generate(
            drafter,
            client,
            drafter.runtime.tokenize(prompt),
            max_tokens=max_tokens,
            k_source=SpeculativeLength(k),
            sampling=SamplingParams(),
            stats=stats,
        ):
            pass
        if steady_state:
            total.rounds.extend(stats.rounds[1:])
            total.completion_tokens += stats.completion_tokens - stats.first_round_tokens
            total.elapsed_s += stats.elapsed_s - stats.first_round_s
        else:
            total.rounds.extend(stats.rounds)
            total.completion_tokens += stats.completion_tokens
            total.elapsed_s += stats.elapsed_s
    return total


async def measure_target_decode(
    client: VerifierClient, prompts: Sequence[list[int]], tokens: int
) -> TargetDecode:
    """The target decoding alone over this link (cloud-only decoding, the no-speculation baseline).

    Greedy, one target token per verify call with no draft tokens, so the verifier runs exactly one
    decode step per call on its cached context. Per-token time: the median verifier-side time of those
    steps (a streaming generation pays the link once, not per token). TTFT: the median edge-side round
    trip of each prompt's first call (the link plus the prompt read).
    """
    first_round_trips: list[float] = []
    steps: list[float] = []
    for index, prompt in enumerate(prompts):
        context = list(prompt)
        session = f"target-alone-{index}-{time.monotonic_ns()}"
        try:
            for step in range(tokens):
                request = VerifyRequest(
                    session_id=session, tokens=context, prompt_tokens=len(prompt), draft=[]
                )
                verdict, round_trip = await client.verify(request)
                if step == 0:
                    first_round_trips.append(round_trip)
                else:
                    steps.append(verdict.verify_s)
                context = [*context, verdict.next_token]
        finally:
            client.close_session(session)
    if not steps:
        raise ValueError("measuring the target alone needs at least 2 tokens per prompt")
    return TargetDecode(
        per_token_s=statistics.median(steps), ttft_s=statistics.median(first_round_trips), samples=len(steps)
    )


def fit_round_time(
    rounds: Sequence[RoundStats], loop_other_s: float, statistic: Literal["median", "mean"] = "median"
) -> tuple[float, float]:
    """(v_d, round overhead s): a round drafts in ``overhead + drafted / v_d`` seconds.

    A line through the median drafting time of the rounds of each size (drafted tokens), weighted by how
    many rounds each median stands for (medians: a round slowed by another process does not tilt the
    line; ``statistic="mean"`` takes each size's mean instead, the expected time goodput is made of,
    slow rounds included): the slope is the time per draft token, the intercept the fixed cost of a
    draft run (starting it, the extra token read after a full acceptance, sampling). ``loop_other_s`` is
    the loop's own time per round outside drafting and verification (bookkeeping); it is added to the
    overhead. Rounds that drafted nothing (the last token of a ``max_tokens`` generation is the target's
    alone) start no draft run and are left out: at size 0 they would pull the intercept to the cost of
    not drafting. Falls back to drafted tokens over drafting time, with no overhead, when the rounds
    cannot separate the two (one round size, or a slope <= 0).
    """
    drafting = [r for r in rounds if r.drafted > 0]
    drafted = np.array([r.drafted for r in drafting], dtype=np.float64)
    seconds = np.array([r.draft_s for r in drafting], dtype=np.float64)
    plain = float(drafted.sum() / seconds.sum()) if seconds.sum() > 0 else 0.0
    sizes, counts = np.unique(drafted, return_counts=True)
    if len(sizes) < 2:
        return plain, max(0.0, loop_other_s)
    center = np.mean if statistic == "mean" else np.median
    centers = np.array([center(seconds[drafted == n]) for n in sizes])
    slope, intercept = np.polyfit(sizes, centers, 1, w=np.sqrt(counts))
    if slope <= 0.0:
        return plain, max(0.0, loop_other_s)
    return 1.0 / float(slope), max(0.0, float(intercept)) + max(0.0, loop_other_s)


def full_rounds(rounds: Sequence[RoundStats], k: int) -> list[RoundStats]:
    """The rounds of ``rounds`` that drafted ``k`` tokens: what alpha(K) and T_verify(K) describe.

    The loop drafts ``min(K, tokens left - 1)`` per round, so the last rounds of a ``max_tokens``
    generation draft fewer (down to none), and a draft that ends the text stops early; those rounds
    verify fewer positions and accept a larger share of a shorter draft. All ``rounds`` when none
    drafted ``k`` (every generation shorter than one full round).
    """
    full = [r for r in rounds if r.drafted == k]
    return full if full else list(rounds)


@dataclass(frozen=True)
class LoopProfile:
    """What the profiler reads from the loop's steady-state rounds (``profile_from_rounds``)."""

    alpha: dict[int, float]
    """alpha(K): accepted over drafted, rounds of K drafts."""
    t_verify_s: dict[int, float]
    """T_verify(K): median verify round trip seen from the edge, rounds of K drafts."""
    samples: dict[int, int]
    """Rounds of K drafts behind alpha(K) and T_verify(K)."""
    v_d: float
    """Draft tokens/s, the slope of ``fit_round_time`` over every round that drafted."""
    round_overhead_s: float
    """The fixed drafting cost per round plus the loop's own time per round."""
    plain_v_d: float
    """Drafted tokens over drafting time, every round (v_d with no overhead term)."""
    rounds: int
    """Steady rounds, every K."""


def profile_from_rounds(steady: Mapping[int, GenerationStats]) -> LoopProfile:
    """alpha(K), T_verify(K), v_d and the per-round overhead from the loop's steady rounds at each K.

    ``steady[K]`` holds the rounds of runs at speculative length K (each prompt's first round left
    out, as ``measure_acceptance(steady_state=True)`` leaves it out) and their time: ``elapsed_s``
    minus the rounds' drafting and round trips is the loop's own time, whose median per round over K
    goes into the overhead (a ``GenerationStats`` with ``elapsed_s`` 0 has none to give). alpha(K) and
    T_verify(K) come from the rounds of K drafts (``full_rounds``), v_d and the overhead from
    ``fit_round_time`` over every round. Pure: the profiler and the benchmarks read rounds the same way.
    """
    alpha: dict[int, float] = {}
    t_verify: dict[int, float] = {}
    samples: dict[int, int] = {}
    every: list[RoundStats] = []
    loop_other_s: list[float] = []
    for k, stats in steady.items():
        if not stats.rounds:
            raise ValueError(f"no rounds at K={k}")
        full = full_rounds(stats.rounds, k)
        drafted = sum(r.drafted for r in full)
        alpha[k] = sum(r.accepted for r in full) / drafted if drafted else 0.0
        t_verify[k] = statistics.median(r.round_trip_s for r in full)
        samples[k] = len(full)
        every.extend(stats.rounds)
        if stats.elapsed_s > 0.0:
            spent = sum(r.draft_s + r.round_trip_s for r in stats.rounds)
            loop_other_s.append((stats.elapsed_s - spent) / len(stats.rounds))
    drafted_tokens = sum(r.drafted for r in every)
    drafting_s = sum(r.draft_s for r in every)
    plain_v_d = drafted_tokens / drafting_s if drafting_s > 0 else 0.0
    v_d, overhead_s = fit_round_time(every, statistics.median(loop_other_s) if loop_other_s else 0.0)
    return LoopProfile(alpha, t_verify, samples, v_d, overhead_s, plain_v_d, len(every))


def fit_latency(points: Sequence[VerifyLatencyPoint]) -> tuple[float, float]:
    """(fixed_s, per_token_s) of a least-squares line through T_verify(K), clipped at zero."""
    if len(points) < 2:
        return (points[0].seconds if points else 0.0), 0.0
    slope, intercept = np.polyfit([p.k for p in points], [p.seconds for p in points], 1)
    return max(0.0, float(intercept)), max(0.0, float(slope))


@dataclass(frozen=True)
class DraftMeasurements:
    """A draft's ``EdgeProfile`` plus what the profile has no field for."""

    profile: EdgeProfile
    decode_tokens_per_s: float
    """Greedy single-token decoding alone, median over prompts: the draft's raw speed."""
    plain_tokens_per_s: float = 0.0
    """v_d without an overhead term: drafted tokens over drafting time, all rounds (the old v_d)."""
    rounds: dict[int, list[RoundStats]] = field(default_factory=dict)
    """The steady-state rounds the profile was computed from, per K (for benchmarks to record)."""


async def measure_draft(
    draft: DraftUnderTest,
    *,
    client: VerifierClient,
    prompts: Sequence[str],
    ks: Sequence[int],
    device_class: str,
    target_model: str,
    sensor: PowerSensor,
    n_threads: int = 2,
    speed_tokens: int = 32,
    acceptance_tokens: int = 32,
    target_decode_tokens: int = 32,
) -> DraftMeasurements:
    """Profile one draft (see the module docstring for what is measured and how)."""
    progress(f"{draft.name} {draft.quantization}: loading {draft.path}")
    runtime = LlamaRuntime(draft.path, n_ctx=2048, n_threads=n_threads)
    drafter = Drafter(runtime, max_concurrent=1)
    try:
        with PowerSampler(sensor) as power:
            speeds = measure_draft_speed(runtime, prompts, speed_tokens)
        decode_tokens_per_s = statistics.median(speeds)
        progress(
            f"{draft.name}: decoding alone {decode_tokens_per_s:.1f} tokens/s (median of {len(speeds)}), "
            f"P = {power.mean_watts:.2f} W ({sensor.source})"
        )
        steady: dict[int, GenerationStats] = {}
        for index, k in enumerate(ks, start=1):
            stats = await measure_acceptance(
                drafter, client, prompts, k, acceptance_tokens, steady_state=True
            )
            if not stats.rounds:  # every prompt answered in its first round: fall back to those rounds
                stats = await measure_acceptance(drafter, client, prompts, k, acceptance_tokens)
                stats.elapsed_s = 0.0  # says nothing about the loop's own time per steady round
            steady[k] = stats
            progress(
                f"{draft.name}: [{index}/{len(ks)}] K={k}: {len(full_rounds(stats.rounds, k))} of "
                f"{len(stats.rounds)} rounds drafted all K"
            )
        loop = profile_from_rounds(steady)
        for k in ks:
            progress(
                f"{draft.name}: K={k} alpha={loop.alpha[k]:.3f} T_verify={loop.t_verify_s[k] * 1e3:.1f} ms "
                f"({loop.samples[k]} rounds)"
            )
        overhead_s = loop.round_overhead_s
        plain_v_d = loop.plain_v_d if loop.plain_v_d > 0.0 else decode_tokens_per_s
        v_d = loop.v_d if loop.v_d > 0.0 else plain_v_d
        acceptance = [AcceptancePoint(k=k, alpha=loop.alpha[k], samples=loop.samples[k]) for k in ks]
        latency = [VerifyLatencyPoint(k=k, seconds=loop.t_verify_s[k], samples=loop.samples[k]) for k in ks]
        progress(
            f"{draft.name}: v_d = {v_d:.1f} tokens/s drafting in the loop plus {overhead_s * 1e3:.2f} ms per "
            f"round ({loop.rounds} rounds; {plain_v_d:.1f} tokens/s without the overhead term)"
        )
        target_decode = None
        if target_decode_tokens >= 2:
            target_decode = await measure_target_decode(
                client, [runtime.tokenize(p) for p in prompts], target_decode_tokens
            )
            progress(
                f"target alone: {target_decode.per_token_s * 1e3:.1f} ms per token "
                f"({1 / target_decode.per_token_s:.1f} tokens/s), TTFT {target_decode.ttft_s * 1e3:.1f} ms"
            )
        fixed_s, per_token_s = fit_latency(latency)
        spec = EdgeProfileSpec(
            device_class=device_class,
            draft_model=draft.name,
            quantization=draft.quantization,
            target_model=target_model,
            draft_tokens_per_s=v_d,
            power_watts=power.mean_watts,
            power_source=sensor.source,
            acceptance=acceptance,
            verify_latency=VerifyLatency(fixed_s=fixed_s, per_token_s=per_token_s, measured=latency),
            round_overhead_s=min(overhead_s, 60.0),
            target_decode=target_decode,
            model_size_bytes=draft.path.stat().st_size,
            speed_samples=loop.rounds,
            measured_at=datetime.now(UTC).replace(microsecond=0),
            origin="measured",
            notes=(
                f"edgespec profiler; {len(prompts)} prompts, greedy, {acceptance_tokens} tokens per prompt; "
                f"alpha and T_verify from steady-state rounds of K drafts; v_d drafting in the loop, fitted "
                f"with a per-round overhead (without it {plain_v_d:.1f} tokens/s; decoding alone "
                f"{decode_tokens_per_s:.1f} tokens/s)"
            ),
        )
        return DraftMeasurements(
            EdgeProfile.for_spec(spec),
            decode_tokens_per_s,
            plain_v_d,
            {k: list(stats.rounds) for k, stats in steady.items()},
        )
    finally:
        drafter.close()
        runtime.close()


def write_yaml(profiles: Sequence[EdgeProfile], path: Path) -> None:
    documents = [p.to_api() for p in profiles]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")


def apply_to_cluster(profiles: Sequence[EdgeProfile], kubeconfig: Path | None = None) -> None:
    """Server-side apply with the pod's service account (or ``kubeconfig`` when given)."""
    from lightkube import Client, KubeConfig, codecs
    from lightkube.generic_resource import create_global_resource

    create_global_resource("edgespec.dev", "v1alpha1", "EdgeProfile", "edgeprofiles")
    config = KubeConfig.from_file(str(kubeconfig)) if kubeconfig else None
    client = (
        Client(config=config, field_manager=FIELD_MANAGER) if config else Client(field_manager=FIELD_MANAGER)
    )
    for profile in profiles:
        body = profile.to_api()
        resource: Any = codecs.from_dict(body)
        client.apply(resource, force=True)
        progress(f"applied EdgeProfile {body['metadata']['name']}")


REPORT_LIMIT = 4000
"""The kubelet keeps at most 4096 bytes of a termination message."""


def write_report(profiles: Sequence[EdgeProfile], path: Path) -> None:
    """The one profile's spec as compact JSON, for the operator to validate and publish.

    A profiling Job writes it to its termination message: no API rights are needed, and only the
    kubelet of the node it ran on can put it in the pod's status. Detail that does not fit the
    kubelet's 4 KiB (notes, then the measured latency points behind the fitted line) is dropped.
    """
    if len(profiles) != 1:
        raise ValueError(f"a report holds one profile, got {len(profiles)}")
    spec = profiles[0].spec
    for trimmed in (
        spec,
        spec.model_copy(update={"notes": None}),
        spec.model_copy(
            update={
                "notes": None,
                "verify_latency": spec.verify_latency.model_copy(update={"measured": []}),
            }
        ),
    ):
        text = json.dumps(trimmed.to_api(), separators=(",", ":"))
        if len(text.encode()) <= REPORT_LIMIT:
            path.write_text(text, encoding="utf-8")
            progress(f"reported {len(text)} bytes to {path}")
            return
    raise ValueError(f"the profile does not fit {REPORT_LIMIT} bytes even without notes and points")
