"""Generate ``docs/reproduction.md`` and ``docs/img/<target>/*.png``: the ConfigSpec paper's findings
beside what our implementation of its model gives, claiming only what the numbers show.

The paper: Li et al., "ConfigSpec: Profiling-Based Configuration Selection for Distributed Edge-Cloud
Speculative LLM Serving", EuroSys 2026 TDIS workshop, arXiv 2604.09722. Our side comes from the
embedded model (``edgespec.configspec``) run on the illustrative profile set
``samples/profiles/paper-illustrative.yaml`` at T_verify = 0.5 s, ranked per target model (drafts for
Llama-3.1-70B and for Qwen3-32B are never compared), and again on a wider K grid (1..32) made by the
same generator law, so an optimum on the edge of the paper's grid (2..10) is said to be one.
Rows that restate a calibrated input are marked as inputs, not findings. ``compute_findings`` is also
used by the test suite, which asserts what the page says.

Run: ``PYTHONPATH=operator:hack python hack/make_reproduction.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgespec.api.objective import Constraints, Objective, ObjectiveWeights
from edgespec.api.profile import EdgeProfileSpec
from edgespec.configspec import Candidate, Ranking, load_profiles, rank_grid, rank_per_target
from make_illustrative_profiles import make_profiles

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "samples" / "profiles" / "paper-illustrative.yaml"
DOCS = REPO / "docs"
GIB = 1024**3
DEVICE_MEMORY = {"rpi4b": 8 * GIB, "rpi5": 8 * GIB, "jetson-agx-orin": 64 * GIB}
DEVICES = ("rpi4b", "rpi5", "jetson-agx-orin")
PIS = ("rpi4b", "rpi5")
VERIFY_LATENCY_S = 0.5
SMALL, LARGE = "llama-3.2-1b", "llama-3.1-8b"
LLAMA, QWEN = "llama-3.1-70b", "qwen3-32b"
TARGETS = (LLAMA, QWEN)
WIDE_K = tuple(range(1, 65))
"""The wider grid: every K the API accepts (``AcceptancePoint.k`` is at most 64)."""
WEIGHT_STEPS = 40
"""Weightings tried: every (goodput, cost, energy) on the simplex in steps of 1/40 (861 of them)."""
KINDS = ("goodput", "cost", "energy")


@dataclass(frozen=True)
class Finding:
    claim: str
    paper: str
    ours: str
    verdict: str
    """yes, roughly (same direction and size, off by the stated amount), partly, no, or input."""
    kind: str = "finding"
    """finding (the model computed it) or input (restates a number the profiles were calibrated to)."""

    @property
    def holds(self) -> bool:
        return not self.verdict.startswith("no")


def rankings(
    profiles: Sequence[EdgeProfileSpec], k_values: Sequence[int] | None = None
) -> dict[str, dict[str, Ranking]]:
    """Per target model, per objective: drafts for different targets are never ranked together."""
    per_kind = {
        kind: rank_per_target(
            profiles,
            Objective(kind=kind),
            device_memory_bytes=DEVICE_MEMORY,
            verify_latency_s=VERIFY_LATENCY_S,
            k_values=k_values,
        )
        for kind in KINDS
    }
    return {target: {kind: per_kind[kind][target] for kind in KINDS} for target in TARGETS}


def wide_profiles() -> list[EdgeProfileSpec]:
    """The illustrative set with alpha listed at every K of ``WIDE_K`` by the generator's own law."""
    return [p.spec for p in make_profiles(WIDE_K)]


def _row(r: Ranking, device: str, draft: str, quant: str = "Q4_K_M") -> int:
    g = r.grid
    for i in g.rows_of(device):
        if g.draft_model[i] == draft and g.quantization[i] == quant:
            return int(i)
    raise KeyError((device, draft, quant))


def target_of(draft: str) -> str:
    return LLAMA if draft.startswith("llama") else QWEN


def _same_metrics(a: Candidate, b: Candidate) -> bool:
    return bool(
        np.allclose(
            [a.goodput_tokens_per_s, a.tokens_per_usd, a.joules_per_token],
            [b.goodput_tokens_per_s, b.tokens_per_usd, b.joules_per_token],
            rtol=1e-9,
            atol=0.0,
        )
    )


def front_reach(r: Ranking, device: str) -> dict[str, int]:
    """How many Pareto-front members of ``device`` a weighted sum ever chooses (over ``WEIGHT_STEPS``
    weightings) and how many the epsilon-constraint route reaches (energy objective, with goodput and
    cost floors at the member's own values)."""
    front = r.selections[device].pareto_front
    n = WEIGHT_STEPS
    chosen: list[Candidate] = []
    for i in range(n + 1):
        for j in range(n + 1 - i):
            weights = ObjectiveWeights(goodput=i, cost=j, energy=n - i - j) if (i, j) != (0, 0) else None
            objective = (
                Objective(kind="energy") if weights is None else Objective(kind="weighted", weights=weights)
            )
            ranked = rank_grid(
                r.grid,
                objective,
                metrics=r.metrics,
                device_memory_bytes=DEVICE_MEMORY,
                runners_up=0,
                pareto=False,
            )
            chosen.append(ranked.selections[device].choice)
    by_weights = sum(1 for m in front if any(_same_metrics(m, c) for c in chosen))
    by_constraints = 0
    for m in front:
        eps = Constraints(
            min_goodput_tokens_per_s=m.goodput_tokens_per_s * (1 - 1e-12),
            max_usd_per_million_tokens=m.usd_per_million_tokens * (1 + 1e-12),
        )
        ranked = rank_grid(
            r.grid,
            Objective(kind="energy"),
            eps,
            metrics=r.metrics,
            device_memory_bytes=DEVICE_MEMORY,
            runners_up=0,
            pareto=False,
        )
        sel = ranked.selections.get(device)
        by_constraints += int(sel is not None and _same_metrics(m, sel.choice))
    return {
        "front": len(front),
        "weightings": (n + 1) * (n + 2) // 2,
        "by_weights": by_weights,
        "by_constraints": by_constraints,
    }


def compute_findings(
    profiles: Sequence[EdgeProfileSpec], wide: Sequence[EdgeProfileSpec] | None = None, reach: bool = True
) -> dict[str, Any]:
    """The numbers behind each finding (plain values, for the page and the tests)."""
    rk = rankings(profiles)
    wk = rankings(wide if wide is not None else wide_profiles(), WIDE_K)
    llama = rk[LLAMA]["goodput"]
    m, ks = llama.metrics, llama.grid.k_values
    k5 = int(np.flatnonzero(ks == 5)[0])

    def best_g(device: str, draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        return float(r.metrics.goodput_tokens_per_s[_row(r, device, draft)].max())

    def best_e(device: str, draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        return float(r.metrics.joules_per_token[_row(r, device, draft)].min())

    def eta_at_goodput_k(device: str, draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        row = _row(r, device, draft)
        return float(r.metrics.tokens_per_usd[row, int(np.argmax(r.metrics.goodput_tokens_per_s[row]))])

    def best_eta(device: str, draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        return float(r.metrics.tokens_per_usd[_row(r, device, draft)].max())

    def eta_k2(draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        return float(
            r.metrics.tokens_per_usd[_row(r, "rpi5", draft), int(np.flatnonzero(r.grid.k_values == 2)[0])]
        )

    def alpha_mean(draft: str) -> float:
        r = rk[target_of(draft)]["goodput"]
        return float(r.grid.alpha[_row(r, "rpi5", draft)].mean())

    def choices(table: Mapping[str, Mapping[str, Ranking]], kind: str) -> dict[str, dict[str, Candidate]]:
        return {t: {d: table[t][kind].selections[d].choice for d in DEVICES} for t in TARGETS}

    found: dict[str, Any] = {
        "paper_k": (int(ks.min()), int(ks.max())),
        "wide_k": (WIDE_K[0], WIDE_K[-1]),
        **{f"{kind}_choice": choices(rk, kind) for kind in KINDS},
        **{f"wide_{kind}_choice": choices(wk, kind) for kind in KINDS},
        "example_jetson_llama1b_k5": float(m.goodput_tokens_per_s[_row(llama, "jetson-agx-orin", SMALL), k5]),
        "alpha_mean": {d: alpha_mean(d) for d in (SMALL, "qwen3-0.6b", LARGE, "qwen3-8b")},
        "pi_goodput_drop_1b_to_8b": {d: best_g(d, SMALL) / best_g(d, LARGE) for d in PIS},
        "jetson_over_pi_goodput": {
            t: {
                d: rk[t]["goodput"].selections["jetson-agx-orin"].choice.goodput_tokens_per_s
                / rk[t]["goodput"].selections[d].choice.goodput_tokens_per_s
                for d in PIS
            }
            for t in TARGETS
        },
        "cost_gain_llama_8b_over_1b": eta_k2(LARGE) / eta_k2(SMALL) - 1,
        "cost_gain_qwen_8b_over_06b": eta_k2("qwen3-8b") / eta_k2("qwen3-0.6b") - 1,
        "throughput_1b_over_8b": {d: best_g(d, SMALL) / best_g(d, LARGE) for d in DEVICES},
        "energy_efficiency_1b_over_8b": {d: best_e(d, LARGE) / best_e(d, SMALL) for d in DEVICES},
        "cost_share_1b_fast_over_8b_cheap": {
            d: eta_at_goodput_k(d, SMALL) / best_eta(d, LARGE) for d in DEVICES
        },
        "distinct_optima": {
            t: {d: len({rk[t][k].selections[d].choice.label for k in KINDS}) for d in DEVICES}
            for t in TARGETS
        },
        "pareto_sizes": {
            t: {d: len(rk[t]["goodput"].selections[d].pareto_front) for d in DEVICES} for t in TARGETS
        },
        "rankings": rk,
    }
    if reach:
        found["front_reach"] = {t: {d: front_reach(rk[t]["goodput"], d) for d in DEVICES} for t in TARGETS}
    return found


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def _fmt(values: Mapping[str, float], pattern: str) -> str:
    return ", ".join(f"{d} {pattern.format(v)}" for d, v in values.items())


def _k_with_edge(c: Candidate, k_range: tuple[int, int]) -> str:
    if c.k == 1:
        return "K*=1 (the smallest K there is)"
    edge = " (grid edge)" if c.k in k_range else ""
    return f"K*={c.k}{edge}"


def _per_target(
    table: Mapping[str, Mapping[str, Candidate]], show: Any, targets: Sequence[str] = TARGETS
) -> str:
    return "; ".join(
        f"target {t}: " + ", ".join(f"{d} {show(table[t][d])}" for d in DEVICES) for t in targets
    )


def findings_table(f: Mapping[str, Any]) -> list[Finding]:
    paper_k, wide_k = f["paper_k"], f["wide_k"]
    gc, cc, ec = f["goodput_choice"], f["cost_choice"], f["energy_choice"]
    wgc, wcc, wec = f["wide_goodput_choice"], f["wide_cost_choice"], f["wide_energy_choice"]
    sizes = {"qwen3-8b": 8, "llama-3.1-8b": 8, "qwen3-0.6b": 0.6, "llama-3.2-1b": 1}
    smallest = {LLAMA: "llama-3.2-1b", QWEN: "qwen3-0.6b"}
    drop, jet, alpha = f["pi_goodput_drop_1b_to_8b"], f["jetson_over_pi_goodput"], f["alpha_mean"]
    thr, ene, share = (
        f["throughput_1b_over_8b"],
        f["energy_efficiency_1b_over_8b"],
        f["cost_share_1b_fast_over_8b_cheap"],
    )
    example = float(f["example_jetson_llama1b_k5"])
    cost_llama, cost_qwen = float(f["cost_gain_llama_8b_over_1b"]), float(f["cost_gain_qwen_8b_over_06b"])
    k_paper = {t: {d: gc[t][d].k for d in DEVICES} for t in TARGETS}
    k_in_paper_range = {
        t: k_paper[t]["rpi4b"] <= 3 and 6 <= k_paper[t]["rpi5"] <= 7 and k_paper[t]["jetson-agx-orin"] >= 8
        for t in TARGETS
    }
    wide_goodput_k = {t: {d: wgc[t][d].k for d in DEVICES} for t in TARGETS}
    return [
        Finding(
            "Goodput-optimal K per device (T_verify = 0.5 s), on the paper's grid "
            f"K = {paper_k[0]}..{paper_k[1]}",
            "RPi 4B about 2, RPi 5 about 6-7, Jetson about 8-10",
            _per_target(gc, lambda c: _k_with_edge(c, paper_k)),
            "partly: only with the Qwen3-32B drafts; with Llama-3.1-70B drafts the RPi 5 optimum is K = 2"
            if k_in_paper_range[QWEN] and not k_in_paper_range[LLAMA]
            else _yes(all(k_in_paper_range.values())),
            "input",
        ),
        Finding(
            f"The same, on a wider grid K = {wide_k[0]}..{wide_k[1]} (the generator's acceptance law)",
            "not reported (the paper's grid is K = 2..10)",
            _per_target(wgc, lambda c: _k_with_edge(c, wide_k)),
            "the Jetson optimum moves to "
            + ", ".join(f"K = {wide_goodput_k[t]['jetson-agx-orin']} ({t})" for t in TARGETS)
            + ": the paper-grid K = 10 is the grid's edge, not an interior optimum"
            + (
                "; goodput still rises at the API's limit K = 64, so the model gives no Jetson K* at all"
                if all(wide_goodput_k[t]["jetson-agx-orin"] == wide_k[1] for t in TARGETS)
                else ""
            ),
        ),
        Finding(
            "Goodput favours the smallest, fastest draft",
            "smallest draft wins",
            _per_target(gc, lambda c: f"{c.draft_model} {c.quantization}"),
            _yes(all(gc[t][d].draft_model == smallest[t] for t in TARGETS for d in PIS))
            + (
                "; on the Jetson the Qwen3 optimum is "
                + f"{gc[QWEN]['jetson-agx-orin'].draft_model} (verification, not drafting, is the bottleneck)"
                if gc[QWEN]["jetson-agx-orin"].draft_model != smallest[QWEN]
                else ""
            ),
        ),
        Finding(
            f"Example point: Jetson, Llama 1B Q4_K_M, target {LLAMA}, K=5",
            "6.5 tokens/s",
            f"{example:.2f} tokens/s",
            f"roughly ({(example - 6.5) / 6.5:+.0%})" if abs(example - 6.5) / 6.5 < 0.15 else "no",
        ),
        Finding(
            "Acceptance rises from 1B to 8B (mean alpha over K = 2..10, Q4_K_M)",
            "0.46 to 0.62",
            f"{alpha[SMALL]:.2f} to {alpha[LARGE]:.2f} (target {LLAMA})",
            "input: alpha_2 per draft was set to these means",
            "input",
        ),
        Finding(
            f"1B to 8B drops goodput on the Pis (best K each, target {LLAMA})",
            "about 4x",
            _fmt(drop, "{:.1f}x"),
            "roughly (smaller drop)" if all(2.5 <= v <= 4.5 for v in drop.values()) else "no",
        ),
        Finding(
            "Jetson's best goodput over each Pi's",
            "1.5-2x",
            "; ".join(f"target {t}: " + _fmt(jet[t], "{:.1f}x") for t in TARGETS),
            "yes"
            if all(1.5 <= v <= 2.0 for t in TARGETS for v in jet[t].values())
            else "no (gap larger, see below)",
        ),
        Finding(
            "Cost optimum: the largest draft, at K = 2 "
            f"(paper grid; K = {wide_k[0]}..{wide_k[1]} in brackets)",
            "largest draft, K = 2 on every device",
            _per_target(cc, lambda c: f"{c.draft_model} {c.quantization} K={c.k}")
            + " [wider grid: "
            + ", ".join(sorted({f"K={wcc[t][d].k}" for t in TARGETS for d in DEVICES}))
            + "]",
            _yes(
                all(
                    cc[t][d].k == 2 and sizes.get(cc[t][d].draft_model) == 8 for t in TARGETS for d in DEVICES
                )
            )
            + "; K = 2 is the lower edge of the paper's grid: with K = 1 allowed the optimum is "
            + ", ".join(sorted({f"K = {wcc[t][d].k}" for t in TARGETS for d in DEVICES})),
        ),
        Finding(
            "Cost gain of the largest draft at K = 2",
            "Llama 8B about 19% over 1B; Qwen 8B about 25% over 0.6B",
            f"Llama {cost_llama:.0%} (target {LLAMA}); Qwen {cost_qwen:.0%} (target {QWEN})",
            "input: alpha_2 per draft was set to give these ratios",
            "input",
        ),
        Finding(
            "Energy optimum: the smallest draft, at K = 2; Jetson beats the Pis (wider grid in brackets)",
            "smallest draft, K = 2 on every device; Jetson lowest",
            _per_target(ec, lambda c: f"{c.draft_model} K={c.k} ({c.joules_per_token:.2f} J/token)")
            + " [wider grid: "
            + ", ".join(sorted({f"K={wec[t][d].k}" for t in TARGETS for d in DEVICES}))
            + "]",
            _yes(
                all(ec[t][d].k == 2 and ec[t][d].draft_model == smallest[t] for t in TARGETS for d in DEVICES)
                and all(
                    ec[t]["jetson-agx-orin"].joules_per_token < min(ec[t][d].joules_per_token for d in PIS)
                    for t in TARGETS
                )
            )
            + "; K = 2 is again the grid's lower edge: with K = 1 allowed the optimum is "
            + ", ".join(sorted({f"K = {wec[t][d].k}" for t in TARGETS for d in DEVICES})),
        ),
        Finding(
            f"8B to 1B: throughput gain (best K each, target {LLAMA})",
            "up to 2.9x",
            _fmt(thr, "{:.1f}x"),
            f"roughly (up to {max(thr.values()):.1f}x)" if 2.0 <= max(thr.values()) <= 3.5 else "no",
        ),
        Finding(
            f"8B to 1B: energy-efficiency gain (best K each, target {LLAMA})",
            "up to 7.8x",
            _fmt(ene, "{:.1f}x"),
            "input: the Jetson's power growth per GB was set to land near 7.8x",
            "input",
        ),
        Finding(
            f"8B to 1B: cost efficiency kept (1B at its goodput-optimal K, over 8B at its cost optimum, "
            f"target {LLAMA})",
            "46%",
            _fmt(share, "{:.0%}"),
            "partly (Jetson only; the Pis' goodput optimum is already K = 2)"
            if min(share.values()) < 0.5
            else "no",
        ),
        Finding(
            "No single configuration optimises goodput, cost and energy",
            "selection must be per objective",
            "; ".join(f"target {t}: " + _fmt(f["distinct_optima"][t], "{} distinct optima") for t in TARGETS),
            _yes(all(v > 1 for t in TARGETS for v in f["distinct_optima"][t].values())),
        ),
    ]


def _reach_table(f: Mapping[str, Any]) -> str:
    rows = [
        "| target | device | Pareto front | chosen by some weighting (of 861) | reached by constraints |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in TARGETS:
        for d in DEVICES:
            r = f["front_reach"][t][d]
            rows.append(f"| {t} | {d} | {r['front']} | {r['by_weights']} | {r['by_constraints']} |")
    return "\n".join(rows)


def render(f: Mapping[str, Any], image_dir: str = "img") -> str:
    rows = findings_table(f)
    table = [
        "| finding | paper | our model on the illustrative set | finding or input | matches |",
        "| --- | --- | --- | --- | --- |",
    ]
    table += [f"| {r.claim} | {r.paper} | {r.ours} | {r.kind} | {r.verdict} |" for r in rows]
    n_inputs = sum(r.kind == "input" for r in rows)
    figures = "\n\n".join(
        f"### Drafts verified by {t}\n\n"
        + "\n\n".join(
            f"![{title}, target {t}]({image_dir}/{t}/{name}.png)"
            for name, title in (
                ("goodput_vs_k", "Goodput against K"),
                ("cost_vs_k", "Cost efficiency against K"),
                ("energy_vs_k", "Energy per token against K"),
                ("pareto", "Pareto front"),
            )
        )
        for t in TARGETS
    )
    jetson = f["front_reach"][LLAMA]["jetson-agx-orin"]
    return f"""# Reproducing ConfigSpec's findings

*Generated by `hack/make_reproduction.py`; do not edit by hand.*

edgespec embeds the analytical model of ConfigSpec (Li et al., "ConfigSpec: Profiling-Based Configuration
Selection for Distributed Edge-Cloud Speculative LLM Serving", EuroSys 2026 TDIS workshop,
[arXiv 2604.09722](https://arxiv.org/abs/2604.09722)) in `edgespec.configspec`. This page puts each
headline finding of the paper beside what our implementation of the model gives, and says which rows
are findings of the model and which only restate what its inputs were calibrated to.

## What this is, and what it is not

The profiles are **illustrative, not measurements**: `samples/profiles/paper-illustrative.yaml`, written by
`hack/make_illustrative_profiles.py` (every profile says `origin: illustrative`). We did not have the
paper's devices. We chose drafting speeds, powers and acceptance curves so that the model lands on the
paper's reported findings, as follows:

- drafting speed is memory-bound decoding, `v_d = 1 / (file size / bandwidth + per-token overhead)`, with one
  effective bandwidth per device (RPi 4B 2.4 GB/s, RPi 5 4.6 GB/s, Jetson 90 GB/s plus 5 ms per token),
  chosen so the goodput optimum K lands where the paper reports it;
- acceptance is `alpha(K) = alpha_2 * (2/K)^0.2`, with `alpha_2` per draft chosen so Llama 1B and 8B
  average the paper's 0.46 and 0.62 and the cost ratios at K = 2 match the paper's 19% and 25%;
- power is a per-device base that grows with the model size (most on the Jetson's GPU), chosen to land
  near the paper's 7.8x energy ratio;
- T_verify is fixed at 0.5 s as in the paper; memory: 8 GiB Pis, a 64 GiB Jetson, 10% headroom.

So agreement below shows that **our implementation of the model, given inputs of the paper's shape,
reproduces the paper's qualitative conclusions**; it is not an independent measurement. {n_inputs} of the
{len(rows)} rows are marked **input**: their numbers were targets of the calibration, so their agreement
shows only that the calibration worked. Where one set of numbers cannot meet every reported figure at
once, the table says so rather than tuning further.

**Each target is ranked on its own.** Llama drafts are verified by Llama-3.1-70B (0.90 USD per 1M tokens)
and Qwen3 drafts by Qwen3-32B (0.59 USD per 1M tokens): different output, different prices, so a Llama
draft is never ranked against a Qwen3 draft (`edgespec rank` ranks each target separately, or only
`--target`'s). Every row names its target.

**Grid edges are said.** The paper's grid is K = 2..10. An optimum at K = 2 or K = 10 may only be the
edge of that grid, so each such row also gives the optimum on K = {f["wide_k"][0]}..{f["wide_k"][1]}, with
acceptance from the same generator law at every K (`make_profiles(k_values)` in the generator).

Reproduce: `PYTHONPATH=operator:hack python hack/make_reproduction.py`, or with the command line:
`edgespec rank --profiles samples/profiles/paper-illustrative.yaml --verify-latency 0.5
--device-memory rpi4b=8Gi,rpi5=8Gi,jetson-agx-orin=64Gi --objective goodput` (then `cost`, `energy`;
add `--k 1-64` for a wider grid: there the model extrapolates the measured points, while this page
uses the generator's own law at every K).
`tests/configspec/test_reproduction.py` asserts what this page says.

## Findings

{chr(10).join(table)}

How the ratios are defined here: "best K each" compares each draft at its own best K for that metric on
that device; the cost share compares the 1B draft run for speed (at its goodput-optimal K) with the 8B
draft run for cost (K = 2), our reading of the paper's 46%.

## Where we differ, and why

- **RPi 5 K\\* (6-7 in the paper):** only the Qwen3 drafts (0.6B at about 9.5 tokens/s) reach it (K = 6;
  their profiles list even K only, so their grid is 2, 4, ..., 10, and the wider grid agrees); the
  Llama 1B drafts at about 5.7 tokens/s have their optimum at K = 2. An earlier version of this page
  ranked Llama and Qwen3 drafts together and reported K\\* = 7 for the RPi 5 from a Qwen3 draft; that
  mixed two targets and is withdrawn.
- **Jetson K\\* (8-10 in the paper):** on the paper's grid our optimum is K = 10, its edge; with the
  generator's acceptance law continued to K = 64 goodput is still rising at K = 64 (with T_verify fixed
  at 0.5 s and drafting at about 190 tokens/s, verification dominates every round). The paper's "8-10" is
  consistent with that only as "at least 8, the largest K tried".
- **Cost and energy at K = 2:** both are maximised at the smallest K offered. With K = 1 offered, K = 1
  wins: the bonus token is a larger share of a shorter round. "K = 2" is a property of the grid.
- **Jetson over the Pis (1.5-2x in the paper):** with T_verify fixed at 0.5 s, a K* of about 2 on the
  RPi 4B needs a slow draft (about 5 tokens/s), which caps its goodput near 2.2 tokens/s, while the
  Jetson's goodput approaches `(K alpha + 1) / T_verify`. With one acceptance curve per draft shared by all
  devices (acceptance does not depend on the device), our numbers give a larger gap than the paper's.
- **Example point (6.5 tokens/s):** our 1B draft at K = 5 on the Jetson gives less, because its
  acceptance is calibrated to the paper's 0.46 mean; matching 6.5 exactly would need alpha(5) near 0.52.
- **Interpolated K:** the Qwen3 profiles list alpha at even K only, so odd K are interpolated linearly (the
  `alpha source` column of `edgespec rank`).

## Weightings and the Pareto front

Every configuration on a Pareto front is optimal in the sense that nothing beats it on goodput, cost and
energy at once. It is **not** true that each is the choice of some weighted objective: a weighted sum
can only pick points on the convex hull of the front. Over the {jetson["weightings"]} weightings
`goodput=i, cost=j, energy=40-i-j` (steps of 1/40), the weighted objective picks only
{jetson["by_weights"]} of the {jetson["front"]} front members on the Jetson (target {LLAMA}). Every front
member is reachable with constraints instead (the epsilon-constraint method): objective `energy` with
`--constraint min-goodput=G --constraint max-usd-per-million=C` at the member's own goodput G and cost C
selects it (or one equal on all three). Computed for every front member:

{_reach_table(f)}

## Figures

Goodput, cost efficiency and edge energy against K on the paper's grid, one set per target; one panel
per device, one line per draft (colour) and quantisation (line style); a small star marks each line's
best K, the large gold star the device's optimum under that objective. Grey lines with x markers are
configurations a constraint rules out (here: the 8B Q8_0 drafts do not fit the 8 GiB Pis' memory).
The Pareto plots show goodput on x, cost efficiency on y and energy as colour, with the front circled.

{figures}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/reproduction.md and docs/img/<target>/*.png.")
    parser.add_argument("--profiles", type=Path, default=PROFILES)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    from edgespec.configspec.plotting import write_plots

    profiles = load_profiles([args.profiles])
    findings = compute_findings(profiles)
    for target, by_kind in findings["rankings"].items():
        for path in write_plots(by_kind, args.docs / "img" / target):
            print(f"wrote {path}")
    out = args.docs / "reproduction.md"
    out.write_text(render(findings), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
