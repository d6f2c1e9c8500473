"""Live telemetry: the draft server's verify-round counts pushed to the operator for run-time adaptation.

Every round the loop finishes is counted per K (rounds, drafted, accepted, verify seconds). A
background task posts the counts gathered since the last accepted report to the operator's
``/v1/telemetry`` every ``EDGESPEC_EDGE_TELEMETRY_INTERVAL_S`` seconds, with the pod's projected
ServiceAccount token (``EDGESPEC_EDGE_TELEMETRY_TOKEN_FILE``) as bearer token. The kubelet rotates
that file, so it is read again for every report. Counts a report could not deliver (the operator
unreachable or restarting) are kept for the next one; counts the operator refused (a 4xx) are
dropped with a log line, since resending them cannot help. Nothing here can slow or fail a user's request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from edgespec.live import RoundCounts, TelemetryReport
from edgespec.tls import client_context
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgespec_edge.loop import RoundStats

log = logging.getLogger("edgespec.edge.telemetry")


class TelemetrySettings(BaseSettings):
    """Where to report and who is reporting (``EDGESPEC_EDGE_*``; the operator sets them on the pods)."""

    model_config = SettingsConfigDict(env_prefix="EDGESPEC_EDGE_", extra="ignore")

    telemetry_url: str = Field(default="", description="Operator's /v1/telemetry URL; empty: no reports.")
    telemetry_interval_s: float = Field(default=30.0, gt=0.0)
    namespace: str = ""
    deployment: str = ""
    device_class: str = ""
    draft_name: str = ""
    quantization: str = ""
    node_name: str = ""
    ca_file: str | None = Field(default=None, description="CA bundle for an https telemetry URL.")
    telemetry_token_file: str | None = Field(
        default=None, description="The pod's projected token for the operator (re-read per report)."
    )

    def token(self) -> str | None:
        """The current token (the file rotates), or None without a file or when it cannot be read."""
        if not self.telemetry_token_file:
            return None
        try:
            with open(self.telemetry_token_file, encoding="utf-8") as file:
                return file.read().strip() or None
        except OSError as exc:
            log.warning("cannot read the telemetry token: %s", exc)
            return None

    @property
    def enabled(self) -> bool:
        return bool(
            self.telemetry_url
            and self.namespace
            and self.deployment
            and self.device_class
            and self.draft_name
            and self.quantization
        )


@dataclass
class _Tally:
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    round_trip_s: float = 0.0  # reported as verify_seconds: T_verify is the edge's round trip


class RoundTally:
    """Counts per K since the last report; ``take`` hands them over and starts afresh."""

    def __init__(self) -> None:
        self._by_k: dict[int, _Tally] = {}

    def record(self, stats: RoundStats) -> None:
        tally = self._by_k.setdefault(stats.k, _Tally())
        tally.rounds += 1
        tally.drafted += stats.drafted
        tally.accepted += stats.accepted
        tally.round_trip_s += stats.round_trip_s

    def take(self) -> list[RoundCounts]:
        counts = [
            RoundCounts(
                k=k,
                rounds=t.rounds,
                drafted_tokens=t.drafted,
                accepted_tokens=t.accepted,
                verify_seconds=t.round_trip_s,
            )
            for k, t in sorted(self._by_k.items())
            if t.rounds
        ]
        self._by_k.clear()
        return counts

    def give_back(self, counts: list[RoundCounts]) -> None:
        """Counts a report could not deliver join the next one."""
        for c in counts:
            tally = self._by_k.setdefault(c.k, _Tally())
            tally.rounds += c.rounds
            tally.drafted += c.drafted_tokens
            tally.accepted += c.accepted_tokens
            tally.round_trip_s += c.verify_seconds


async def push_once(session: aiohttp.ClientSession, settings: TelemetrySettings, tally: RoundTally) -> bool:
    """Post the tally; True when the operator took it (or there was nothing to send)."""
    counts = tally.take()
    if not counts:
        return True
    report = TelemetryReport(
        namespace=settings.namespace,
        deployment=settings.deployment,
        device_class=settings.device_class,
        node=settings.node_name,
        draft_model=settings.draft_name,
        quantization=settings.quantization,
        counts=counts,
    )
    token = settings.token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.post(
            settings.telemetry_url, json=report.model_dump(mode="json"), headers=headers
        ) as response:
            if response.status == 202:
                return True
            text = (await response.text())[:300]
            if response.status >= 500:  # 503 included: the operator cannot review tokens right now
                tally.give_back(counts)
                log.info("operator not ready for telemetry (%d): %s", response.status, text)
            else:
                log.warning("operator refused telemetry (%d), dropped: %s", response.status, text)
            return False
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.give_back(counts)
        log.info("telemetry not delivered (%s); kept for the next report", exc)
        return False


def telemetry_context(
    tally: RoundTally, settings: TelemetrySettings
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` running the push loop for the app's life (a no-op when disabled)."""

    async def context(_: web.Application) -> AsyncIterator[None]:
        if not settings.enabled:
            yield
            return
        timeout = aiohttp.ClientTimeout(total=10)
        # https: the operator's certificate must chain to the CA file (or the system's CAs).
        connector = aiohttp.TCPConnector(ssl=client_context(settings.ca_file))
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def loop() -> None:
                while True:
                    await asyncio.sleep(settings.telemetry_interval_s)
                    await push_once(session, settings, tally)

            task = asyncio.create_task(loop())
            log.info(
                "reporting telemetry to %s every %.0f s",
                settings.telemetry_url,
                settings.telemetry_interval_s,
            )
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await push_once(session, settings, tally)  # the last counts, at shutdown

    return context
