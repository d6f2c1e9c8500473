"""``edgespec-verifier``: run the verify service (``python -m edgespec_verifier --help``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from edgespec.tls import CertificateFiles, keep_certificate_fresh, server_context
from edgespec_edge.llama_kv import MAX_SEQUENCES

from edgespec_verifier.server import VerifierSettings, create_app


@dataclass(frozen=True)
class Invocation:
    """A command line, parsed and checked, with its validated settings: what ``main`` runs."""

    args: argparse.Namespace
    settings: tuple[VerifierSettings]

    def run(self) -> None:
        (settings,) = self.settings
        try:
            app = create_app(settings)
            check_model(settings)
            tls = server_context(settings.tls_cert_file, settings.tls_key_file)
        except (ValueError, OSError, ssl.SSLError) as exc:
            # One clear line and exit code 2: a configuration mistake, not a crash.
            print(f"edgespec-verifier: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if tls is not None and settings.tls_cert_file and settings.tls_key_file:
            files = CertificateFiles(tls, settings.tls_cert_file, settings.tls_key_file)

            async def refresh(_: web.Application) -> AsyncIterator[None]:
                task = asyncio.create_task(keep_certificate_fresh(files))  # a renewed certificate
                yield
                task.cancel()

            app.cleanup_ctx.append(refresh)
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, ssl_context=tls)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgespec-verifier",
        description=(
            "Serve the edgespec verify endpoint. Every option also reads EDGESPEC_VERIFIER_<NAME> "
            "(for example EDGESPEC_VERIFIER_MODEL); the bearer token comes from --token-file (a mounted "
            "Secret) or EDGESPEC_VERIFIER_TOKEN."
        ),
    )
    parser.add_argument("--engine", choices=["llamacpp", "vllm"], help="scoring engine (default llamacpp)")
    parser.add_argument("--model", help="GGUF path for llamacpp, model name or path for vllm")
    parser.add_argument("--host", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (default 8000)")
    parser.add_argument("--n-threads", type=int, help="CPU threads for llamacpp")
    parser.add_argument("--n-ctx", type=int, help="context window per session")
    parser.add_argument("--max-sessions", type=int, help="sessions holding KV state at once")
    parser.add_argument("--token-file", type=Path, help="file with the bearer token")
    parser.add_argument(
        "--tls-cert-file", type=Path, help="PEM certificate: serve HTTPS (with --tls-key-file)"
    )
    parser.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    parser.add_argument(
        "engine_args",
        nargs=argparse.REMAINDER,
        help="after --: vLLM engine arguments such as --tensor-parallel-size=8 (spec.verifier.vllmArgs)",
    )
    return parser


def prepare(argv: Sequence[str] | None = None) -> Invocation:
    """Parse ``argv`` and validate the settings (arguments over the environment); nothing runs yet.

    The operator's builder tests parse every verifier container with this, so the command lines the
    operator writes and the ones this program accepts cannot drift apart.
    """
    args = build_parser().parse_args(argv)
    engine_args = parse_engine_args(args.engine_args)
    del args.engine_args
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if engine_args:
        overrides["vllm_engine_args"] = engine_args
    return Invocation(args=args, settings=(VerifierSettings(**overrides),))


def main(argv: list[str] | None = None) -> None:
    invocation = prepare(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    invocation.run()


def check_model(settings: VerifierSettings) -> None:
    if not settings.model:
        raise ValueError("no model: set --model or EDGESPEC_VERIFIER_MODEL (a GGUF path, or a vLLM model)")
    if settings.engine == "llamacpp" and not Path(settings.model).is_file():
        raise ValueError(f"model file {settings.model} does not exist (--model / EDGESPEC_VERIFIER_MODEL)")
    if settings.engine == "llamacpp" and not settings.exact and settings.max_sessions > MAX_SEQUENCES:
        raise ValueError(
            f"--max-sessions {settings.max_sessions}: with EDGESPEC_VERIFIER_EXACT=false the sessions are "
            f"sequences of one llama.cpp context, at most {MAX_SEQUENCES}"
        )


def parse_engine_args(words: list[str]) -> dict[str, Any]:
    """vLLM engine arguments as ``vllm.LLM`` keyword arguments.

    ``["--", "--tensor-parallel-size=8", "--enforce-eager"]`` gives
    ``{"tensor_parallel_size": 8, "enforce_eager": True}``.

    Values that read as numbers become numbers; a flag without a value is True.
    """
    words = words[1:] if words[:1] == ["--"] else words
    out: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            raise SystemExit(f"engine argument {word!r}: expected --name=value or --name value")
        name, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 < len(words) and not words[i + 1].startswith("--"):
                value, i = words[i + 1], i + 1
            else:
                value = "true"
        out[name.replace("-", "_")] = _scalar(value)
        i += 1
    return out


def _scalar(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    main()
