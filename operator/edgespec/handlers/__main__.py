"""``python -m edgespec.handlers``: run the operator (all namespaces unless EDGESPEC_NAMESPACES)."""

from __future__ import annotations

import argparse
import logging

import kopf

from edgespec.handlers import registration


def configure_logging(level: str) -> None:
    """kopf's log handler and format, at ``level`` (DEBUG, INFO, WARNING or ERROR)."""
    kopf.configure(verbose=level == "DEBUG")
    logging.getLogger().setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the edgespec operator against the current kubeconfig.")
    parser.add_argument("--verbose", action="store_true", help="debug logging (overrides EDGESPEC_LOG_LEVEL)")
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL, or 'none' to disable",
    )
    args = parser.parse_args(argv)
    namespaces = [n for n in registration.SETTINGS.namespaces.split(",") if n]
    configure_logging("DEBUG" if args.verbose else registration.SETTINGS.log_level)
    liveness = None if args.liveness in ("", "none") else args.liveness
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
