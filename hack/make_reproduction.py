"""Generate ``docs/reproduction.md`` and ``docs/img/*.png``: the ConfigSpec paper's findings beside ours.

The paper: Li et al., "ConfigSpec: Profiling-Based Configuration Selection for Distributed Edge-Cloud
Speculative LLM Serving", EuroSys 2026 TDIS workshop, arXiv 2604.09722. Our side comes from the
embedded model (``edgespec.configspec``) run on the illustrative profile set
``samples/profiles/paper-illustrative.yaml`` at T_verify = 0.5 s. ``compute_findings`` is also used
by the test suite, which asserts that the findings hold.

Run: ``PYTHONPATH=operator python hack/make_reproduction.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edgespec.api.objective import Objective
from edgespec.api.profile import EdgeProfileSpec
from edgespec.configspec import Ranking, load_profiles, rank

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "samples" / "profiles" / "paper-illustrative.yaml"
DOCS = REPO / "docs"
GIB = 1024**3
DEVICE_MEMORY = {"rpi4b": 8 * GIB, "rpi5": 8 * GIB, "jetson-agx-orin": 64 * GIB}
DEVICES = ("rpi4b", "rpi5", "jetson-agx-orin")
PIS = ("rpi4b", "rpi5")
VERIFY_LATENCY_S = 0.5
SMALL, LARGE = "llama-3.2-1b", "llama-3.1-8b"


@dataclass(frozen=True)
class Finding:
    claim: str
    paper: str
    ours: str
    verdict: str
    """yes, roughly (same direction and size, off by the stated amount), partly, or no."""

    @property
    def holds(self) -> bool:
        return not self.verdict.startswith("no")


def rankings(profiles: Sequence[EdgeProfileSpec]) -> dict[str, Ranking]:
    return {
        kind: rank(
            profiles,
            Objective(kind=kind),
            device_memory_bytes=DEVICE_MEMORY,
            verify_latency_s=VERIFY_LATENCY_S,
        )
        for kind in ("goodput", "cost", "energy")
    }


def _row(r: Ranking, device: str, draft: str, quant: str = "Q4_K_M") -> int:
    g = r.grid
    for i in g.rows_of(device):
        if g.draft_model[i] == draft and g.quantization[i] == quant:
            return int(i)
    raise KeyError((device, draft, quant))


def compute_findings(profiles: Sequence[EdgeProfileSpec]) -> dict[str, object]:
    """The numbers behind each finding (plain values, for the report and the tests)."""
    rk = rankings(profiles)
    good, cost, energy = rk["goodput"], rk["cost"], rk["energy"]
    m, ks = good.metrics, good.grid.k_values
    k5 = int(np.flatnonzero(ks == 5)[0])

    def best_g(device: str, draft: str) -> float:
        return float(m.goodput_tokens_per_s[_row(good, device, draft)].max())

    def best_e(device: str, draft: str) -> float:
        return float(m.joules_per_token[_row(good, device, draft)].min())

    def eta_at_goodput_k(device: str, draft: str) -> float:
        row = _row(good, device, draft)
        return float(m.tokens_per_usd[row, int(np.argmax(m.goodput_tokens_per_s[row]))])

    def best_eta(device: str, draft: str) -> float:
        return float(m.tokens_per_usd[_row(good, device, draft)].max())

    def eta_k2(draft: str) -> float:
        return float(m.tokens_per_usd[_row(good, "rpi5", draft), 0])

    alpha_mean = {
        d: float(good.grid.alpha[_row(good, "rpi5", d)].mean())
        for d in (SMALL, "qwen3-0.6b", LARGE, "qwen3-8b")
    }
    return {
        "goodput_choice": {d: good.selections[d].choice for d in DEVICES},
        "cost_choice": {d: cost.selections[d].choice for d in DEVICES},
        "energy_choice": {d: energy.selections[d].choice for d in DEVICES},
        "example_jetson_llama1b_k5": float(m.goodput_tokens_per_s[_row(good, "jetson-agx-orin", SMALL), k5]),
        "alpha_mean": alpha_mean,
        "pi_goodput_drop_1b_to_8b": {d: best_g(d, SMALL) / best_g(d, LARGE) for d in PIS},
        "jetson_over_pi_goodput": {
            d: good.selections["jetson-agx-orin"].choice.goodput_tokens_per_s
            / good.selections[d].choice.goodput_tokens_per_s
            for d in PIS
        },
        "cost_gain_llama_8b_over_1b": eta_k2(LARGE) / eta_k2(SMALL) - 1,
        "cost_gain_qwen_8b_over_06b": eta_k2("qwen3-8b") / eta_k2("qwen3-0.6b") - 1,
        "throughput_1b_over_8b": {d: best_g(d, SMALL) / best_g(d, LARGE) for d in DEVICES},
        "energy_efficiency_1b_over_8b": {d: best_e(d, LARGE) / best_e(d, SMALL) for d in DEVICES},
        "cost_share_1b_fast_over_8b_cheap": {
            d: eta_at_goodput_k(d, SMALL) / best_eta(d, LARGE) for d in DEVICES
        },
        "distinct_optima": {
            d: len({(rk[k].selections[d].choice.label, rk[k].selections[d].choice.target_model) for k in rk})
            for d in DEVICES
        },
        "pareto_sizes": {d: len(good.selections[d].pareto_front) for d in DEVICES},
        "rankings": rk,
    }


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def _fmt(values: dict[str, float], pattern: str) -> str:
    return ", ".join(f"{d} {pattern.format(v)}" for d, v in values.items())


def findings_table(f: dict[str, object]) -> list[Finding]:
    gc = f["goodput_choice"]
    cc = f["cost_choice"]
    ec = f["energy_choice"]
    assert isinstance(gc, dict) and isinstance(cc, dict) and isinstance(ec, dict)
    k_star = {d: gc[d].k for d in DEVICES}
    k_ok = k_star["rpi4b"] == 2 and 6 <= k_star["rpi5"] <= 7 and 8 <= k_star["jetson-agx-orin"] <= 10
    sizes = {"qwen3-8b": 8, "llama-3.1-8b": 8, "qwen3-0.6b": 0.6, "llama-3.2-1b": 1}
    drop = f["pi_goodput_drop_1b_to_8b"]
    jet = f["jetson_over_pi_goodput"]
    alpha = f["alpha_mean"]
    thr, ene, share = (
        f["throughput_1b_over_8b"],
        f["energy_efficiency_1b_over_8b"],
        f["cost_share_1b_fast_over_8b_cheap"],
    )
    assert isinstance(drop, dict) and isinstance(jet, dict) and isinstance(alpha, dict)
    assert isinstance(thr, dict) and isinstance(ene, dict) and isinstance(share, dict)
    example = float(f["example_jetson_llama1b_k5"])  # type: ignore[arg-type]
    cost_llama = float(f["cost_gain_llama_8b_over_1b"])  # type: ignore[arg-type]
    cost_qwen = float(f["cost_gain_qwen_8b_over_06b"])  # type: ignore[arg-type]
    distinct = f["distinct_optima"]
    assert isinstance(distinct, dict)
    return [
        Finding(
            "Goodput-optimal K per device (T_verify = 0.5 s)",
            "RPi 4B about 2, RPi 5 about 6-7, Jetson about 8-10",
            _fmt(k_star, "K*={}"),
            _yes(k_ok),
        ),
        Finding(
            "Goodput favours the smallest, fastest draft",
            "smallest draft wins",
            ", ".join(f"{d} {gc[d].draft_model} {gc[d].quantization}" for d in DEVICES),
            _yes(all(sizes.get(gc[d].draft_model, 99) <= 1 for d in DEVICES)),
        ),
        Finding(
            "Example point: Jetson, Llama 1B Q4_K_M, Llama-3.1-70B, K=5",
            "6.5 tokens/s",
            f"{example:.2f} tokens/s",
            f"roughly ({(example - 6.5) / 6.5:+.0%})" if abs(example - 6.5) / 6.5 < 0.15 else "no",
        ),
        Finding(
            "Acceptance rises from 1B to 8B (mean alpha over K = 2..10, Q4_K_M)",
            "0.46 to 0.62",
            f"{alpha[SMALL]:.2f} to {alpha[LARGE]:.2f}",
            _yes(abs(alpha[SMALL] - 0.46) < 0.02 and abs(alpha[LARGE] - 0.62) < 0.02),
        ),
        Finding(
            "1B to 8B drops goodput on the Pis (best K each)",
            "about 4x",
            _fmt(drop, "{:.1f}x"),
            "roughly (smaller drop)" if all(2.5 <= v <= 4.5 for v in drop.values()) else "no",
        ),
        Finding(
            "Jetson's best goodput over each Pi's",
            "1.5-2x",
            _fmt(jet, "{:.1f}x"),
            "yes" if all(1.5 <= v <= 2.0 for v in jet.values()) else "no (gap larger, see below)",
        ),
        Finding(
            "Cost optimum: the largest draft, at K = 2",
            "largest draft, K = 2 on every device",
            ", ".join(f"{d} {cc[d].draft_model} {cc[d].quantization} K={cc[d].k}" for d in DEVICES),
            _yes(all(cc[d].k == 2 and sizes.get(cc[d].draft_model) == 8 for d in DEVICES)),
        ),
        Finding(
            "Cost gain of the largest draft at K = 2",
            "Llama 8B about 19% over 1B; Qwen 8B about 25% over 0.6B",
            f"Llama {cost_llama:.0%}; Qwen {cost_qwen:.0%}",
            _yes(abs(cost_llama - 0.19) < 0.03 and abs(cost_qwen - 0.25) < 0.03),
        ),
        Finding(
            "Energy optimum: the smallest draft, at K = 2; Jetson beats the Pis",
            "smallest draft, K = 2 on every device; Jetson lowest",
            ", ".join(
                f"{d} {ec[d].draft_model} K={ec[d].k} ({ec[d].joules_per_token:.2f} J/token)" for d in DEVICES
            ),
            _yes(
                all(ec[d].k == 2 and sizes.get(ec[d].draft_model) == 0.6 for d in DEVICES)
                and ec["jetson-agx-orin"].joules_per_token < min(ec[d].joules_per_token for d in PIS)
            ),
        ),
        Finding(
            "8B to 1B: throughput gain (best K each)",
            "up to 2.9x",
            _fmt(thr, "{:.1f}x"),
            f"roughly (up to {max(thr.values()):.1f}x)" if 2.0 <= max(thr.values()) <= 3.5 else "no",
        ),
        Finding(
            "8B to 1B: energy-efficiency gain (best K each)",
            "up to 7.8x",
            _fmt(ene, "{:.1f}x"),
            _yes(abs(max(ene.values()) - 7.8) / 7.8 < 0.1),
        ),
        Finding(
            "8B to 1B: cost efficiency kept (1B at its goodput-optimal K, over 8B at its cost optimum)",
            "46%",
            _fmt(share, "{:.0%}"),
            "partly (Jetson only; the Pis' goodput optimum is already K = 2)"
            if min(share.values()) < 0.5
            else "no",
        ),
        Finding(
            "No single configuration optimises goodput, cost and energy",
            "selection must be per objective",
            _fmt(distinct, "{} distinct optima"),
            _yes(all(v > 1 for v in distinct.values())),
        ),
    ]


def render(f: dict[str, object], image_dir: str = "img") -> str:
    rows = findings_table(f)
    table = ["| finding | paper | our model on the illustrative set | matches |", "| --- | --- | --- | --- |"]
    table += [f"| {r.claim} | {r.paper} | {r.ours} | {r.verdict} |" for r in rows]
    return f"""# Reproducing ConfigSpec's findings

*Generated by `hack/make_reproduction.py`; do not edit by hand.*

edgespec embeds the analytical model of ConfigSpec (Li et al., "ConfigSpec: Profiling-Based Configuration
Selection for Distributed Edge-Cloud Speculative LLM Serving", EuroSys 2026 TDIS workshop,
[arXiv 2604.09722](https://arxiv.org/abs/2604.09722)) in `edgespec.configspec`. This page puts each
headline finding of the paper beside what our implementation of the model gives.

## What this is, and what it is not

The profiles are **illustrative, not measurements**: `samples/profiles/paper-illustrative.yaml`, written by
`hack/make_illustrative_profiles.py`. We did not have the paper's devices. We chose drafting speeds,
powers and acceptance curves so that the model lands on the paper's reported findings, as follows:

- drafting speed is memory-bound decoding, `v_d = 1 / (file size / bandwidth + per-token overhead)`, with one
  effective bandwidth per device (RPi 4B 2.4 GB/s, RPi 5 4.6 GB/s, Jetson 90 GB/s plus 5 ms per token),
  chosen so the goodput optimum K lands where the paper reports it;
- acceptance is `alpha(K) = alpha_2 * (2/K)^0.2`, with `alpha_2` per draft chosen so Llama 1B and 8B
  average the paper's 0.46 and 0.62 and the cost ratios at K = 2 match the paper's 19% and 25%;
- power is a per-device base that grows with the model size (most on the Jetson's GPU), chosen to land
  near the paper's 7.8x energy ratio;
- T_verify is fixed at 0.5 s as in the paper; memory: 8 GiB Pis, a 64 GiB Jetson, 10% headroom.

So agreement below shows that **our implementation of the model, given inputs of the paper's shape,
reproduces the paper's qualitative conclusions**; it is not an independent measurement. Findings that are
structural consequences of the model (K = 2 for cost and energy, cost independent of the device, the
Pareto front having many members) hold for any profiles; the device-dependent K* and the ratios depend
on the calibration. Where one set of numbers cannot meet every reported figure at once, the table says
so rather than tuning further.

Reproduce: `PYTHONPATH=operator python hack/make_reproduction.py`, or with the command line:
`edgespec rank --profiles samples/profiles/paper-illustrative.yaml --verify-latency 0.5
--device-memory rpi4b=8Gi,rpi5=8Gi,jetson-agx-orin=64Gi --objective goodput` (then `cost`, `energy`).
`tests/configspec/test_reproduction.py` asserts the findings marked "yes".

## Findings

{chr(10).join(table)}

How the ratios are defined here: "best K each" compares each draft at its own best K for that metric on
that device; the cost share compares the 1B draft run for speed (at its goodput-optimal K) with the 8B
draft run for cost (K = 2), our reading of the paper's 46%.

## Where we differ, and why

- **Jetson over the Pis (1.5-2x in the paper):** with T_verify fixed at 0.5 s, a K* of about 2 on the
  RPi 4B needs a slow draft (about 5 tokens/s), which caps its goodput near 2.2 tokens/s, while the
  Jetson's goodput approaches `(K alpha + 1) / T_verify`. With one acceptance curve per draft shared by all
  devices (acceptance does not depend on the device), our numbers give a larger gap than the paper's.
  The paper's figures likely mix measured per-device variation that a single calibrated curve does not.
- **Example point (6.5 tokens/s):** our 1B draft at K = 5 on the Jetson gives slightly less, because its
  acceptance is calibrated to the paper's 0.46 mean; matching 6.5 exactly would need alpha(5) near 0.52.
- **Interpolated K:** the Qwen3 profiles list alpha at even K only, so odd K are interpolated linearly (the
  `alpha source` column of `edgespec rank`); on the RPi 5 the optimum sits at an interpolated K.

## Figures

Goodput, cost efficiency and edge energy against K, one panel per device, one line per draft and
quantisation (solid Q4_K_M, dashed Q8_0); a small star marks each line's best K, the large gold star the
device's optimum under that objective. Dotted lines are configurations that do not fit the device's
memory (the 8B Q8_0 drafts on the 8 GiB Pis).

![Goodput against K]({image_dir}/goodput_vs_k.png)

![Cost efficiency against K]({image_dir}/cost_vs_k.png)

![Energy per token against K]({image_dir}/energy_vs_k.png)

The Pareto front over the three objectives (goodput on x, cost efficiency on y, energy as colour): every
circled configuration is optimal for some weighting, which is why edgespec selects per deployment
objective.

![Pareto front]({image_dir}/pareto.png)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/reproduction.md and docs/img/*.png.")
    parser.add_argument("--profiles", type=Path, default=PROFILES)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    from edgespec.configspec.plotting import write_plots

    profiles = load_profiles([args.profiles])
    findings = compute_findings(profiles)
    rk = findings["rankings"]
    assert isinstance(rk, dict)
    for path in write_plots(rk, args.docs / "img"):
        print(f"wrote {path}")
    out = args.docs / "reproduction.md"
    out.write_text(render(findings), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
