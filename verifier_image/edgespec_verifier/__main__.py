"""``edgespec-verifier``: run the verify service (``python -m edgespec_verifier --help``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from aiohttp import web

from edgespec_verifier.server import VerifierSettings, create_app


def main(argv: list[str] | None = None) -> None:
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = VerifierSettings(**overrides)
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None)


if __name__ == "__main__":
    main()
