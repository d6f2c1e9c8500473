"""PNG figures of a ranking: goodput, cost efficiency and energy against K, and the Pareto front.

Like the ConfigSpec paper's figures: one panel per device class, one line per draft model
(colour) and quantisation (line style), each line's best K marked with a small star and the
device class's feasible optimum with a large one. Configurations ruled out by a constraint are
drawn dotted and faint. matplotlib (Agg backend) is imported here only, never by the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgespec.configspec.selection import Ranking

_QUANT_STYLES: list[Any] = ["-", "--", "-.", (0, (8, 2, 2, 2, 2, 2)), (0, (12, 3)), (0, (4, 1))]
"""Line styles of quantisations: none is dotted, which marks configurations a constraint rules out."""
_RULED_OUT: dict[str, Any] = {"color": "0.55", "ls": ":", "lw": 1.0, "marker": "x", "ms": 5, "alpha": 0.8}
_MAX_K_TICKS = 16


def _metric(ranking: Ranking, kind: str) -> tuple[NDArray[np.float64], str, bool]:
    m = ranking.metrics
    if kind == "goodput":
        return m.goodput_tokens_per_s, "goodput (tokens/s)", False
    if kind == "cost":
        return m.tokens_per_usd / 1e6, "cost efficiency (million tokens per USD)", False
    return m.joules_per_token, "energy (J per token, log scale)", True


def _feasible_cells(ranking: Ranking, device: str) -> NDArray[np.bool_]:
    """Per row of the device and K: True when the configuration meets every constraint."""
    score = ranking.scores.get(device)
    if score is None:  # nothing feasible on this device
        return np.zeros((len(ranking.grid.rows_of(device)), len(ranking.grid.k_values)), dtype=np.bool_)
    return np.asarray(score > -np.inf, dtype=np.bool_)  # +inf is feasible: 0 J/token scores infinity


def _k_ticks(ax: Any, ks: NDArray[np.int64]) -> None:
    """Every K as a tick when they fit; otherwise at most ``_MAX_K_TICKS`` whole-number ticks."""
    from matplotlib.ticker import MaxNLocator

    if len(ks) <= _MAX_K_TICKS:
        ax.set_xticks(ks)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=_MAX_K_TICKS, integer=True))


def write_plots(rankings: Mapping[str, Ranking], out_dir: Path) -> list[Path]:
    """Write ``{goodput,cost,energy}_vs_k.png`` and ``pareto.png``; ``rankings`` maps each objective
    kind (goodput, cost, energy) to the ranking under it. Returns the paths written."""
    figures = make_figures(rankings)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for name, fig in figures.items():
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight" grows the canvas to hold the legend
            written.append(path)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return written


def make_figures(rankings: Mapping[str, Ranking]) -> dict[str, Any]:
    """The figures by file stem (``goodput_vs_k``, ``cost_vs_k``, ``energy_vs_k``, ``pareto``), unsaved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    figures: dict[str, Any] = {}
    base = rankings["goodput"]
    grid = base.grid
    target = grid.target_model[0]
    origins = ", ".join(sorted(set(grid.origin)))
    devices = list(grid.device_names)
    drafts = list(dict.fromkeys(grid.draft_model))
    quants = list(dict.fromkeys(grid.quantization))
    cmap = plt.get_cmap("tab10")
    colour = {d: cmap(i % 10) for i, d in enumerate(drafts)}
    style = {q: _QUANT_STYLES[i % len(_QUANT_STYLES)] for i, q in enumerate(quants)}
    ks = grid.k_values

    legend_handles: list[Any] = [Line2D([], [], color=colour[d], lw=2, label=d) for d in drafts]
    legend_handles += [Line2D([], [], color="0.3", ls=style[q], lw=2, label=q) for q in quants]
    legend_handles += [
        Line2D([], [], color="0.3", marker="*", ls="", ms=9, label="best K of a line"),
        Line2D([], [], color="gold", marker="*", ls="", ms=18, mec="black", label="optimum of the device"),
        Line2D([], [], **_RULED_OUT, label="ruled out by a constraint"),
    ]

    for kind in ("goodput", "cost", "energy"):
        ranking = rankings[kind]
        values, ylabel, log = _metric(ranking, kind)
        fig, axes = plt.subplots(1, len(devices), figsize=(5.2 * len(devices), 4.6), squeeze=False)
        # a log axis cannot show 0 J/token: fall back to a linear axis when a value is not positive
        log = log and bool(np.all(values[np.isfinite(values)] > 0.0))
        if kind == "energy" and not log:
            ylabel = "energy (J per token; linear, some values are 0)"
        for ax, device in zip(axes[0], devices, strict=True):
            rows = grid.rows_of(device)
            fits = _feasible_cells(ranking, device)
            for row, ok in zip(rows, fits, strict=True):
                y = values[row]
                c = colour[grid.draft_model[row]]
                if not ok.any():
                    ax.plot(ks, y, **_RULED_OUT)
                    continue
                ax.plot(ks, y, color=c, ls=style[grid.quantization[row]], lw=1.6, marker="o", ms=3)
                if not ok.all():
                    ax.plot(ks[~ok], y[~ok], **{**_RULED_OUT, "ls": ""})
                masked = np.where(ok, y, np.inf if kind == "energy" else -np.inf)
                best = int(np.argmin(masked) if kind == "energy" else np.argmax(masked))
                ax.plot(ks[best], y[best], marker="*", color=c, ms=10, mec="black", mew=0.5, ls="")
            selection = ranking.selections.get(device)
            if selection is not None:
                ch = selection.choice
                y_star = {"goodput": ch.goodput_tokens_per_s, "cost": ch.tokens_per_usd / 1e6}.get(
                    kind, ch.joules_per_token
                )
                ax.plot(ch.k, y_star, marker="*", color="gold", ms=22, mec="black", mew=1.2, ls="", zorder=5)
                units = {"goodput": "tokens/s", "cost": "M tokens/USD"}.get(kind, "J/token")
                ax.set_title(
                    f"{device}\noptimum: {ch.draft_model} {ch.quantization}, K={ch.k} ({y_star:.3g} {units})"
                )
            else:
                ax.set_title(f"{device}\nno feasible configuration")
            if log:
                ax.set_yscale("log")
            ax.margins(y=0.08)
            ax.set_xlabel("speculative length K (draft tokens per round)")
            ax.set_ylabel(ylabel)
            _k_ticks(ax, ks)
            ax.grid(True, alpha=0.3)
        titles = {
            "goodput": "Goodput against K (higher is better)",
            "cost": "Cost efficiency against K (higher is better)",
            "energy": "Edge energy per token against K (lower is better)",
        }
        fig.suptitle(f"{titles[kind]}; drafts verified by {target}; profiles: {origins}", fontsize=13)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.legend(
            handles=legend_handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(legend_handles), 6),
            fontsize=9,
        )
        figures[f"{kind}_vs_k"] = fig

    fig, axes = plt.subplots(1, len(devices), figsize=(5.2 * len(devices), 4.8), squeeze=False)
    scatter = None
    log_energy = np.log10(np.clip(base.metrics.joules_per_token, 1e-6, None))
    e_low, e_high = float(log_energy.min()), float(log_energy.max())
    for ax, device in zip(axes[0], devices, strict=True):
        selection = base.selections.get(device)
        cells = _feasible_cells(base, device).ravel()
        rows = grid.rows_of(device)
        g = base.metrics.goodput_tokens_per_s[rows].ravel()[cells]
        cost = base.metrics.tokens_per_usd[rows].ravel()[cells] / 1e6
        e = np.clip(base.metrics.joules_per_token[rows].ravel()[cells], 1e-6, None)
        scatter = ax.scatter(
            g, cost, c=np.log10(e), cmap="viridis_r", s=14, alpha=0.55, vmin=e_low, vmax=e_high
        )
        if selection is not None:
            fg = [p.goodput_tokens_per_s for p in selection.pareto_front]
            fc = [p.tokens_per_usd / 1e6 for p in selection.pareto_front]
            ax.scatter(fg, fc, facecolors="none", edgecolors="red", s=60, lw=1.3, label="Pareto front")
            for kind, marker in (("goodput", "*"), ("cost", "D"), ("energy", "P")):
                sel = rankings[kind].selections.get(device)
                if sel is not None:
                    ax.scatter(
                        [sel.choice.goodput_tokens_per_s],
                        [sel.choice.tokens_per_usd / 1e6],
                        marker=marker,
                        s=170,
                        c="gold",
                        edgecolors="black",
                        zorder=5,
                        label=f"{kind} optimum: {sel.choice.label}",
                    )
        ax.set_title(f"{device}: {0 if selection is None else len(selection.pareto_front)} on the front")
        ax.set_xlabel("goodput (tokens/s)")
        ax.set_ylabel("cost efficiency (million tokens per USD)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=axes[0].tolist(), shrink=0.85, pad=0.01)
        zero = bool(np.any(base.metrics.joules_per_token <= 0.0))
        bar.set_label("energy, log10(J per token)" + ("; 0 J shown at 1e-6" if zero else ""))
    fig.suptitle(
        f"Pareto front over goodput, cost and energy (feasible configurations, every K); target {target}; "
        f"profiles: {origins}",
        fontsize=13,
    )
    figures["pareto"] = fig
    return figures
