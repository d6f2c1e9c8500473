"""``python -m edgespec.handlers``: run the operator (all namespaces unless EDGESPEC_NAMESPACES)."""

from __future__ import annotations

import argparse
import logging

import kopf
from lightkube import Client

from edgespec.handlers import registration  # noqa: F401  (registers the kopf handlers)
from edgespec.handlers.leader import Elector, StandbyHealth
from edgespec.handlers.state import new_memo, state_of


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
    memo = new_memo()  # the operator's state, handed to every handler by kopf (handlers/state.py)
    state = state_of(memo)
    settings = state.settings
    namespaces = [n for n in settings.namespaces.split(",") if n]
    configure_logging("DEBUG" if args.verbose else settings.log_level)
    liveness = None if args.liveness in ("", "none") else args.liveness
    elector = None
    if settings.leader_election:
        elector = Elector(Client(), settings.operator_namespace, settings.lease_name)
        health = StandbyHealth(liveness, settings.http_host, settings.metrics_port, state.metrics)
        try:
            elector.acquire()
        finally:
            health.stop()
        elector.keep()
    try:
        kopf.run(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            memo=memo,
        )
    finally:
        if elector is not None:
            elector.release()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
