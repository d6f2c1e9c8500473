"""The ``edgespec`` command: answers "what would you pick for my devices, and why?" from profiles.

Subcommands are registered in ``COMMANDS`` (each adds its parser and a handler returning an exit
code), so more can be added without touching the others. ``rank`` prints the selection per device
class as a table, JSON or YAML; ``plot`` writes PNG figures of goodput, cost efficiency and energy
against K, and of the Pareto front. matplotlib is imported only by ``plot``.

Exit codes: 0 success; 1 some device class has no feasible configuration (the message names the
binding constraint and the closest configuration); 2 bad usage or input (the message says what to fix).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from edgespec.api.objective import (
    OBJECTIVE_KINDS,
    Constraints,
    Objective,
    ObjectiveWeights,
    quantity_to_bytes,
)
from edgespec.configspec import (
    DEFAULT_PRICES_USD_PER_MILLION,
    Candidate,
    MissingPriceError,
    NoSpeculation,
    ProfileLoadError,
    Ranking,
    load_profiles,
    rank_per_target,
)

EXIT_OK, EXIT_INFEASIBLE, EXIT_USAGE = 0, 1, 2
MAX_K = 64
"""The longest speculative length the API accepts (``AcceptancePoint.k``)."""

Handler = Callable[[argparse.Namespace], int]
SubParsers = Any  # argparse's _SubParsersAction is private; typed loosely on purpose

# --constraint NAME=VALUE: short names (and the Constraints field names in camelCase) -> field
_CONSTRAINT_FIELDS = {
    "min-goodput": "min_goodput_tokens_per_s",
    "max-joules-per-token": "max_joules_per_token",
    "max-usd-per-million": "max_usd_per_million_tokens",
    "memory-headroom": "memory_headroom_fraction",
    "kv-cache": "kv_cache_bytes",
    "runtime-overhead": "runtime_overhead_bytes",
}
_CONSTRAINT_ALIASES = {
    **_CONSTRAINT_FIELDS,
    **{Constraints.model_fields[f].alias or f: f for f in _CONSTRAINT_FIELDS.values()},
}


class UsageError(Exception):
    """Bad input on the command line; the message says what to fix."""


def _pairs(values: Sequence[str] | None, option: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for raw in values or []:
        for item in raw.split(","):
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise UsageError(f"{option} {item!r}: expected NAME=VALUE, e.g. {option} {example}")
            pairs.append((name.strip(), value.strip()))
    return pairs


def _float(value: str, what: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise UsageError(f"{what}: {value!r} is not a finite number; give a plain number such as 0.5")
    return number


def parse_verify_latency(value: str | None) -> float | None:
    if value is None:
        return None
    seconds = _float(value, "--verify-latency")
    if seconds < 0.0:
        raise UsageError(f"--verify-latency {value!r}: seconds must be >= 0 (the paper uses 0.5)")
    return seconds


def parse_top(value: str) -> int:
    """``--top``: runners-up per class, a whole number >= 0."""
    try:
        top = int(value)
    except ValueError:
        raise UsageError(f"--top {value!r}: give a whole number of runners-up, e.g. --top 3") from None
    if top < 0:
        raise UsageError(f"--top {value!r}: the number of runners-up must be >= 0")
    return top


def parse_prices(values: Sequence[str] | None) -> dict[str, float]:
    return {name: _float(v, f"--price {name}") for name, v in _pairs(values, "--price", "llama-3.1-70b=0.90")}


def parse_device_memory(values: Sequence[str] | None) -> dict[str, int]:
    memory = {}
    for name, value in _pairs(values, "--device-memory", "rpi5=8Gi"):
        try:
            memory[name] = quantity_to_bytes(int(value) if value.isdigit() else value)
        except ValueError as exc:
            raise UsageError(f"--device-memory {name}: {exc}") from None
    return memory


def parse_objective(kind: str, weights: str | None) -> Objective:
    try:
        if kind != "weighted":
            if weights is not None:
                raise UsageError("--weights applies only to --objective weighted")
            return Objective(kind=kind)
        if weights is None:
            raise UsageError("--objective weighted needs --weights, e.g. --weights goodput=2,cost=1,energy=1")
        parsed: dict[str, float] = {}
        for name, value in _pairs([weights], "--weights", "goodput=2,cost=1,energy=1"):
            if name not in ("goodput", "cost", "energy"):
                raise UsageError(f"--weights: unknown objective {name!r}; use goodput, cost, energy")
            parsed[name] = _float(value, f"--weights {name}")
        return Objective(kind="weighted", weights=ObjectiveWeights(**parsed))
    except ValidationError as exc:
        raise UsageError(f"--weights: {exc.errors()[0]['msg']}") from None


def parse_constraints(values: Sequence[str] | None) -> Constraints:
    fields: dict[str, Any] = {}
    for name, value in _pairs(values, "--constraint", "min-goodput=3"):
        field = _CONSTRAINT_ALIASES.get(name)
        if field is None:
            raise UsageError(
                f"--constraint: unknown constraint {name!r}; use one of {', '.join(_CONSTRAINT_FIELDS)}"
            )
        if field in ("kv_cache_bytes", "runtime_overhead_bytes"):
            fields[field] = int(value) if value.isdigit() else value
        else:
            fields[field] = _float(value, f"--constraint {name}")
    try:
        return Constraints(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"--constraint: {problems}") from None


def parse_k(value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        if "-" in value:
            low, high = (int(v) for v in value.split("-", 1))
            if low > high:
                raise UsageError(f"--k {value!r}: the range is empty ({low} > {high}); write {high}-{low}")
            ks = list(range(low, high + 1))
        else:
            ks = [int(v) for v in value.split(",")]
    except ValueError:
        raise UsageError(f"--k {value!r}: use a range (2-10) or a list (2,4,8)") from None
    if not ks or min(ks) < 1 or max(ks) > MAX_K:
        raise UsageError(f"--k {value!r}: speculative lengths must be between 1 and {MAX_K}")
    return ks


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that runs the ConfigSpec model."""
    parser.add_argument(
        "--profiles",
        nargs="+",
        required=True,
        metavar="FILE",
        help="EdgeProfile YAML files (one or many documents each, or a List from kubectl get -o yaml)",
    )
    defaults = ", ".join(f"{k}={v}" for k, v in DEFAULT_PRICES_USD_PER_MILLION.items())
    parser.add_argument(
        "--price",
        action="append",
        metavar="TARGET=USD",
        help=f"verification price of a target, USD per million tokens (repeatable). Known: {defaults}",
    )
    parser.add_argument(
        "--device-memory",
        action="append",
        metavar="CLASS=QTY",
        help="allocatable memory of a device class, e.g. rpi5=8Gi (repeatable); others are not checked",
    )
    parser.add_argument(
        "--k", metavar="RANGE", help="speculative lengths: 2-10 or 2,4,8 (default: those profiled)"
    )
    parser.add_argument(
        "--verify-latency",
        metavar="SECONDS",
        help="use this fixed T_verify for every profile (the paper uses 0.5) instead of each profile's own",
    )
    parser.add_argument(
        "--target",
        metavar="NAME",
        help="rank only the drafts verified by this target model (default: each target separately; "
        "drafts for different targets are never compared)",
    )
    parser.add_argument(
        "--device", action="append", metavar="CLASS", help="only these device classes (repeatable)"
    )
    parser.add_argument(
        "--assume-fits",
        action="store_true",
        help="with --device-memory: let a draft whose profile gives no memory figures count as fitting "
        "(default: an unknown need is infeasible)",
    )


def _objective_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--objective",
        choices=OBJECTIVE_KINDS,
        default="goodput",
        help="goodput (tokens/s), cost (tokens per USD), energy (J per token) or weighted (default goodput)",
    )
    parser.add_argument(
        "--weights",
        metavar="W",
        help="for --objective weighted: goodput=W,cost=W,energy=W (normalised to sum 1)",
    )
    constraint_names = ", ".join(_CONSTRAINT_FIELDS)
    parser.add_argument(
        "--constraint",
        action="append",
        metavar="NAME=VALUE",
        help=f"a limit every choice must meet (repeatable): {constraint_names}. "
        "Example: --constraint min-goodput=3 --constraint max-joules-per-token=1.5",
    )


def _run_model(args: argparse.Namespace, objective: Objective | None = None) -> dict[str, Ranking]:
    """One ranking per target model (only ``--target``'s when given): targets are never mixed."""
    constraints = parse_constraints(getattr(args, "constraint", None))
    prices = parse_prices(args.price)
    memory = parse_device_memory(args.device_memory)
    k_values = parse_k(args.k)
    verify_latency = parse_verify_latency(args.verify_latency)
    top = parse_top(args.top) if hasattr(args, "top") else 3
    profiles = load_profiles(args.profiles)
    classes = sorted({p.device_class for p in profiles})
    unknown = sorted(set(memory) - set(classes))
    if unknown:
        raise UsageError(
            f"--device-memory {', '.join(unknown)}: no profile has this device class; "
            f"the profiles have: {', '.join(classes)}"
        )
    return rank_per_target(
        profiles,
        objective,
        constraints,
        prices_usd_per_million=prices,
        device_memory_bytes=memory,
        k_values=k_values,
        verify_latency_s=verify_latency,
        target_model=args.target,
        device_classes=args.device,
        runners_up=top,
        assume_fits=args.assume_fits,
    )


# ----- rank -----


def _row(mark: str, c: Candidate) -> list[str]:
    memory = "unknown" if c.memory_need_bytes is None else f"{c.memory_need_bytes / 1024**3:.2f}"
    return [
        mark,
        c.draft_model,
        c.quantization,
        c.target_model,
        str(c.k),
        f"{c.goodput_tokens_per_s:.2f}",
        f"{c.tokens_per_usd / 1e6:.3f}",
        f"{c.usd_per_million_tokens:.3f}",
        f"{c.joules_per_token:.3f}",
        f"{c.alpha:.3f}",
        c.acceptance_source,
        memory,
        c.origin,
    ]


_HEADER = [
    "#",
    "draft",
    "quant",
    "target",
    "K",
    "goodput tok/s",
    "Mtok/USD",
    "USD/1M tok",
    "J/token",
    "alpha",
    "alpha source",
    "mem GiB",
    "profile origin",
]


def _alone_row(n: NoSpeculation) -> list[str]:
    """The target decoding alone, as a row of the table (cloud-only: no draft, no K)."""
    return [
        "=",
        "(none: target alone)",
        "-",
        n.target_model,
        "-",
        f"{n.goodput_tokens_per_s:.2f}",
        f"{n.tokens_per_usd / 1e6:.3f}",
        f"{n.usd_per_million_tokens:.3f}",
        f"{n.joules_per_token:.3f}",
        "-",
        "-",
        "-",
        "measured TTFT " + ("-" if n.ttft_s is None else f"{n.ttft_s:.2f} s"),
    ]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def format_tables(rankings: dict[str, Ranking]) -> str:
    """The table of each target's ranking, under a header naming the target."""
    return "\n\n".join(
        f"== target {target} ({_price(ranking)}): drafts verified by this target only ==\n"
        + format_table(ranking)
        for target, ranking in rankings.items()
    )


def _price(ranking: Ranking) -> str:
    return f"{float(ranking.grid.price_usd_per_million_tokens[0]):.2f} USD per 1M tokens"


def format_table(ranking: Ranking) -> str:
    blocks = []
    for device in ranking.grid.device_names:
        if device in ranking.infeasible:
            verdict = ranking.infeasible[device]
            blocks.append(
                f"{device}: NO FEASIBLE CONFIGURATION (binding: {verdict.binding_constraint})\n"
                f"  {verdict.message}"
            )
            continue
        s = ranking.selections[device]
        budget = (
            "memory not checked"
            if s.memory_budget_bytes is None
            else f"memory budget {s.memory_budget_bytes / 1024**3:.2f} GiB"
            + (" (choice's need unknown, assumed to fit: --assume-fits)" if s.memory_assumed else "")
        )
        lines = [
            f"{device}: objective {s.objective}; {s.feasible} of {s.configurations} configurations feasible; "
            f"{budget}",
            _table(
                [_HEADER, _row("*", s.choice)]
                + [_row(str(i), c) for i, c in enumerate(s.runners_up, start=2)]
                + ([] if s.no_speculation is None else [_alone_row(s.no_speculation)])
            ),
        ]
        if s.speculation_gain is not None:
            pays = "pays" if s.speculation_gain > 0 else "does NOT pay"
            lines.append(
                f"  speculation {pays} on {s.objective}: the choice is {s.speculation_gain:+.1%} against "
                "the target decoding alone (row =)"
            )
        else:
            lines.append("  no speculation: not measured (no targetDecode in the profiles)")
        if s.next_k is not None:
            lines.append(
                f"  next-best K for the chosen draft: K={s.next_k.k} "
                f"({s.next_k.goodput_tokens_per_s:.2f} tokens/s, "
                f"{s.next_k.joules_per_token:.3f} J/token)"
            )
        lines.append(
            f"  Pareto front (goodput, cost, energy): {len(s.pareto_front)} configurations; "
            + ", ".join(c.label for c in s.pareto_front[:6])
            + (" ..." if len(s.pareto_front) > 6 else "")
        )
        lines.append(f"  why: {s.reason}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def rankings_document(rankings: dict[str, Ranking]) -> dict[str, Any]:
    """The JSON/YAML output: the objective and constraints, then one ranking per target model."""
    first = next(iter(rankings.values()))
    return {
        "objective": first.objective.to_api(),
        "constraints": first.constraints.to_api(),
        "targets": {target: ranking_document(ranking) for target, ranking in rankings.items()},
    }


def ranking_document(ranking: Ranking) -> dict[str, Any]:
    return {
        "targetModel": ranking.grid.target_model[0],
        "priceUsdPerMillionTokens": float(ranking.grid.price_usd_per_million_tokens[0]),
        "kValues": [int(k) for k in ranking.grid.k_values],
        "deviceClasses": {
            device: (
                ranking.selections[device].to_dict()
                if device in ranking.selections
                else {"infeasible": ranking.infeasible[device].to_dict()}
            )
            for device in ranking.grid.device_names
        },
    }


def cmd_rank(args: argparse.Namespace) -> int:
    rankings = _run_model(args, parse_objective(args.objective, args.weights))
    if args.output == "json":
        print(json.dumps(rankings_document(rankings), indent=2))
    elif args.output == "yaml":
        print(yaml.safe_dump(rankings_document(rankings), sort_keys=False), end="")
    else:
        print(format_tables(rankings))
    infeasible = [(t, v) for t, r in rankings.items() for v in r.infeasible.values()]
    for target, verdict in infeasible:
        print(f"edgespec rank: target {target}: {verdict.message}", file=sys.stderr)
    return EXIT_INFEASIBLE if infeasible else EXIT_OK


def add_rank_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "rank",
        help="pick the best (draft, quantisation, K) per device class from profiles",
        description=(
            "Rank every (draft model, quantisation, K) of the given EdgeProfiles per device class "
            "with the ConfigSpec model, under an objective and constraints, and print the choice, the best "
            "configuration of each other draft, the Pareto front and the reason. Drafts verified by "
            "different target models are never compared: each target is ranked separately (or only "
            "--target's)."
        ),
        epilog=(
            "examples:\n"
            "  edgespec rank --profiles samples/profiles/paper-illustrative.yaml\n"
            "  edgespec rank --profiles p.yaml --objective energy --constraint min-goodput=2 "
            "--device-memory rpi5=8Gi\n"
            "  edgespec rank --profiles p.yaml --objective weighted --weights goodput=2,cost=1,energy=1 \\\n"
            "      -o json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_options(parser)
    _objective_options(parser)
    parser.add_argument("--top", default="3", metavar="N", help="runners-up to show per class (default 3)")
    parser.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format"
    )
    parser.set_defaults(handler=cmd_rank)


# ----- plot -----


def cmd_plot(args: argparse.Namespace) -> int:
    from edgespec.configspec.plotting import write_plots  # matplotlib only here

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a directory for the PNG files")
    by_objective = {kind: _run_model(args, Objective(kind=kind)) for kind in ("goodput", "cost", "energy")}
    targets = list(by_objective["goodput"])
    for target in targets:
        where = out if len(targets) == 1 else out / target
        try:
            written = write_plots({kind: r[target] for kind, r in by_objective.items()}, where)
        except OSError as exc:
            raise UsageError(
                f"--out {out}: cannot write {exc.filename or where}: {exc.strerror or exc}"
            ) from None
        for path in written:
            print(f"wrote {path}")
    return EXIT_OK


def add_plot_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="write PNGs of goodput, cost and energy against K, and the Pareto front",
        description=(
            "Write goodput_vs_k.png, cost_vs_k.png, energy_vs_k.png (one panel per device class, one line "
            "per draft and quantisation, each objective's feasible optimum starred) and pareto.png to --out; "
            "with profiles for several targets and no --target, one subdirectory per target."
        ),
    )
    _add_model_options(parser)
    parser.add_argument("--constraint", action="append", metavar="NAME=VALUE", help="as for rank")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the PNG files (created)")
    parser.set_defaults(handler=cmd_plot)


COMMANDS: list[Callable[[SubParsers], None]] = [add_rank_command, add_plot_command]
"""Registrars of subcommands; each adds its parser and sets ``handler`` (Namespace -> exit code)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgespec",
        description="edgespec: edge-cloud speculative LLM serving. Choose configurations from profiles.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader went away (``edgespec rank | head -1``): what it wanted was printed; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"edgespec {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UsageError, ProfileLoadError, MissingPriceError, ValueError) as exc:
        print(f"edgespec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
