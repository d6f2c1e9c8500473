"""Benchmark the ConfigSpec selection: configurations ranked per second, numpy against plain Python.

For grids of 1e3, 1e5 and 1e6 configurations (profiles x 10 speculative lengths, three device
classes, random but plausible profiles), time ``rank_grid`` (metrics, four constraints, the goodput
choice per device class with runners-up and margin) with and without the Pareto front, and a plain
Python loop doing the same metrics, constraints and choice cell by cell. The two must choose the same
configuration. Grid construction from ``EdgeProfileSpec`` objects is timed separately (it parses
pydantic objects, one Python step per profile).

Usage: ``PYTHONPATH=operator python bench/bench_configspec.py [--out FILE] [--write-docs docs/benchmarks.md]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from edgespec.api.objective import Constraints, Objective
from edgespec.configspec import ProfileGrid, build_grid, rank_grid
from edgespec.configspec.acceptance import MEASURED

DEVICES = ("rpi4b", "rpi5", "jetson-agx-orin")
K_VALUES = np.arange(1, 11, dtype=np.int64)
MEMORY = {"rpi4b": 8 * 1024**3, "rpi5": 8 * 1024**3, "jetson-agx-orin": 64 * 1024**3}
CONSTRAINTS = Constraints(
    min_goodput_tokens_per_s=1.0, max_joules_per_token=5.0, max_usd_per_million_tokens=2.0
)
BEGIN, END = "<!-- configspec:begin -->", "<!-- configspec:end -->"


def synthetic_grid(n_configs: int, seed: int = 0) -> ProfileGrid:
    rng = np.random.default_rng(seed)
    n = max(n_configs // len(K_VALUES), 1)
    per_token = rng.uniform(0.4, 0.95, n)
    ks = K_VALUES.astype(np.float64)
    alpha = per_token[:, None] * (1 - per_token[:, None] ** ks) / ((1 - per_token[:, None]) * ks)
    device = [DEVICES[i % 3] for i in range(n)]
    return ProfileGrid(
        device_class=tuple(device),
        draft_model=tuple(f"draft-{i}" for i in range(n)),
        quantization=tuple("Q4_K_M" if i % 2 else "Q8_0" for i in range(n)),
        target_model=("target",) * n,
        k_values=K_VALUES,
        draft_tokens_per_s=rng.uniform(1.0, 150.0, n),
        power_watts=rng.uniform(5.0, 40.0, n),
        price_usd_per_million_tokens=rng.choice([0.59, 0.90], n),
        memory_bytes=rng.integers(300_000_000, 10_000_000_000, n),
        model_size_bytes=np.zeros(n, dtype=np.int64),
        alpha=alpha,
        acceptance_source=np.full(alpha.shape, MEASURED, dtype=np.int8),
        verify_latency_s=np.broadcast_to(rng.uniform(0.05, 1.0, n)[:, None], alpha.shape).copy(),
    )


def plain_python(grid: ProfileGrid) -> dict[str, tuple[int, int]]:
    """The same metrics, constraints and goodput choice, one configuration at a time."""
    rows = grid.n_profiles
    ks = [int(k) for k in grid.k_values]
    v = grid.draft_tokens_per_s.tolist()
    power = grid.power_watts.tolist()
    price = grid.price_usd_per_million_tokens.tolist()
    need = grid.memory_bytes.tolist()
    alpha = grid.alpha.tolist()
    t_verify = grid.verify_latency_s.tolist()
    budget = {d: m * (1 - CONSTRAINTS.memory_headroom_fraction) for d, m in MEMORY.items()}
    best: dict[str, tuple[float, int, int]] = {}
    for row in range(rows):
        device = grid.device_class[row]
        if need[row] > budget[device]:
            continue
        for col, k in enumerate(ks):
            a = alpha[row][col]
            committed = k * a + 1.0
            goodput = committed / (k / v[row] + t_verify[row][col])
            usd_per_million = price[row] * k / committed
            joules = power[row] * (k / v[row]) / committed
            if goodput < 1.0 or joules > 5.0 or usd_per_million > 2.0:
                continue
            if device not in best or goodput > best[device][0]:
                best[device] = (goodput, row, col)
    return {d: (r, c) for d, (_, r, c) in best.items()}


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(sizes: list[int]) -> dict[str, Any]:
    results = []
    objective = Objective(kind="goodput")
    for size in sizes:
        grid = synthetic_grid(size)
        configs = grid.n_configurations
        repeats = 5 if configs <= 100_000 else 3
        fast_s, ranking = timed(
            partial(rank_grid, grid, objective, CONSTRAINTS, device_memory_bytes=MEMORY, pareto=False),
            repeats,
        )
        pareto_s, ranking_p = timed(
            partial(rank_grid, grid, objective, CONSTRAINTS, device_memory_bytes=MEMORY), repeats
        )
        python_s, baseline = timed(partial(plain_python, grid), 1 if configs > 100_000 else 3)
        for device, (row, col) in baseline.items():
            choice = ranking.selections[device].choice
            assert (grid.draft_model[row], int(grid.k_values[col])) == (choice.draft_model, choice.k), device
        results.append(
            {
                "configurations": configs,
                "numpy_seconds": fast_s,
                "numpy_configurations_per_s": configs / fast_s,
                "numpy_with_pareto_seconds": pareto_s,
                "numpy_with_pareto_configurations_per_s": configs / pareto_s,
                "pareto_front_sizes": {d: len(s.pareto_front) for d, s in ranking_p.selections.items()},
                "python_seconds": python_s,
                "python_configurations_per_s": configs / python_s,
                "speedup": python_s / fast_s,
                "same_choice": True,
            }
        )
        print(
            f"{configs:>9} configurations: numpy {fast_s:.4f} s, with Pareto {pareto_s:.4f} s, "
            f"python {python_s:.4f} s ({python_s / fast_s:.2g}x)",
            file=sys.stderr,
        )

    from edgespec.api.profile import AcceptancePoint, EdgeProfileSpec

    specs = [
        EdgeProfileSpec(
            device_class=DEVICES[i % 3],
            draft_model=f"draft-{i}",
            quantization="Q4_K_M",
            target_model="llama-3.1-70b",
            draft_tokens_per_s=10.0 + i % 50,
            power_watts=8.0,
            acceptance=[AcceptancePoint(k=k, alpha=0.7 - 0.02 * k) for k in range(2, 11, 2)],
        )
        for i in range(10_000)
    ]
    build_s, grid = timed(lambda: build_grid(specs), 3)
    return {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "rank": results,
        "build_grid_from_specs": {
            "profiles": len(specs),
            "configurations": grid.n_configurations,
            "seconds": build_s,
            "profiles_per_s": len(specs) / build_s,
        },
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "## ConfigSpec selection",
        "",
        "*Written by `bench/bench_configspec.py --write-docs docs/benchmarks.md`; numbers from one run "
        f"on the machine below ({m['platform']}, {m['cpus']} CPUs, Python {m['python']}, "
        f"numpy {m['numpy']}).*",
        "",
        "What is timed: `rank_grid` on a grid of random profiles x 10 values of K over three device classes: "
        "the three metrics for every configuration, four constraints (memory fit, minimum goodput, maximum "
        "joules per token, maximum cost), and per device class the goodput choice, the best configuration "
        "of each other draft and the margin; then the same with the Pareto front. The baseline is a plain "
        "Python loop computing the same metrics and constraints and keeping the best choice, cell by cell "
        "(no runners-up, no front); both pick the same configurations (checked). Best of 3-5 runs (one "
        "Python run at 1e6).",
        "",
        "| configurations | numpy, ms | numpy, configs/s | with Pareto front, ms | plain Python, ms "
        "| plain Python, configs/s | speedup (Python / numpy) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["rank"]:
        lines.append(
            f"| {r['configurations']:,} | {r['numpy_seconds'] * 1e3:.3g} "
            f"| {r['numpy_configurations_per_s']:,.0f} "
            f"| {r['numpy_with_pareto_seconds'] * 1e3:.3g} | {r['python_seconds'] * 1e3:.3g} "
            f"| {r['python_configurations_per_s']:,.0f} | {r['speedup']:.2g}x |"
        )
    b = report["build_grid_from_specs"]
    largest = report["rank"][-1]
    verdict = "met" if largest["numpy_with_pareto_seconds"] < 1.0 else "not met"
    lines += [
        "",
        "Reading: at 1e3 configurations the plain loop is faster: numpy's fixed cost per call and the "
        "report objects (runners-up, reason) dominate, and both take well under a millisecond. From 1e5 "
        "configurations on, the array code wins and its advantage grows with the grid. The baseline is a "
        "lean loop over floats (no objects, no runners-up, no front), so the ratio understates the work "
        "the numpy path does.",
        "",
        f"Target, 1e6 configurations in under a second: **{verdict}** "
        f"({largest['numpy_with_pareto_seconds']:.3f} s with the Pareto front).",
        "",
        f"Building the grid from {b['profiles']:,} `EdgeProfileSpec` objects ({b['configurations']:,} "
        f"configurations, acceptance interpolated per profile) takes {b['seconds']:.3f} s "
        f"({b['profiles_per_s']:,.0f} profiles/s): one Python step per profile, which is fine for the "
        "hundreds of profiles a real cluster has.",
    ]
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace only our section between the markers; create the file if missing."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark ConfigSpec selection (numpy vs plain Python).")
    parser.add_argument("--sizes", default="1000,100000,1000000", help="grid sizes, comma-separated")
    parser.add_argument("--out", type=Path, help="write the JSON report here (default: stdout)")
    parser.add_argument(
        "--write-docs", type=Path, metavar="MD", help="update our section of this Markdown file"
    )
    args = parser.parse_args(argv)
    report = run([int(s) for s in args.sizes.split(",")])
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if args.write_docs:
        write_docs(args.write_docs, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
