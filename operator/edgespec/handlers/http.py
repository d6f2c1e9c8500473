"""The operator's HTTP endpoint: Prometheus ``/metrics``, ``/healthz``, and the draft servers' telemetry.

``POST /v1/telemetry`` takes a ``TelemetryReport`` with the deployment's verifier token as bearer
token. The report's counts join the class's pool; once the pool covers ``spec.adaptation.minRounds``
verify rounds the deployment is queued, and its reconcile folds the pool into the live profile.
Answers: 202 pooled, 400 malformed JSON, 422 invalid report (naming the field), 401 missing or wrong
token, 404 unknown deployment or class, 503 token not known yet (the operator just started).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from edgespec.adaptation import Pool
from edgespec.api.deployment import AdaptationSpec
from edgespec.handlers.cache import Cache, Key
from edgespec.handlers.metrics import DEPLOYMENTS, NODES, REGISTRY, TELEMETRY_REPORTS, WORKQUEUE_DEPTH
from edgespec.handlers.workqueue import WorkQueue
from edgespec.live import TELEMETRY_PATH, TelemetryReport

log = logging.getLogger("edgespec.http")


def _error(status: int, message: str, result: str) -> web.Response:
    TELEMETRY_REPORTS.labels(result).inc()
    return web.json_response({"error": message}, status=status)


def make_app(cache: Cache, queue: WorkQueue, token_of: Callable[[Key], str | None]) -> web.Application:
    """The aiohttp application; ``token_of`` gives a deployment's verifier token once known."""

    async def metrics(_: web.Request) -> web.Response:
        WORKQUEUE_DEPTH.set(queue.depth)
        DEPLOYMENTS.set(len(cache.deployments))
        NODES.set(len(cache.nodes))
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def telemetry(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body is not JSON", "invalid")
        try:
            report = TelemetryReport.model_validate(payload)
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            return _error(422, f"{field}: {first['msg']}", "invalid")
        key = (report.namespace, report.deployment)
        body = cache.deployments.get(key)
        if body is None:
            return _error(404, f"no SpeculativeDeployment {report.namespace}/{report.deployment}", "unknown")
        spec = body.get("spec") or {}
        if report.device_class not in {c.get("name") for c in spec.get("deviceClasses") or []}:
            return _error(
                404, f"deviceClass {report.device_class!r} is not a class of {'/'.join(key)}", "unknown"
            )
        expected = token_of(key)
        if expected is None:
            return _error(503, "the operator has not read this deployment's token yet; retry", "unknown")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return _error(
                401, "missing or wrong bearer token (use the deployment's verifier token)", "unauthorized"
            )
        adaptation = AdaptationSpec.model_validate(spec.get("adaptation") or {})
        TELEMETRY_REPORTS.labels("accepted").inc()
        if not adaptation.enabled:
            return web.json_response({"pooledRounds": 0, "adaptation": "disabled"}, status=202)
        pool = cache.live.setdefault((*key, report.device_class), Pool())
        pool.add(report)
        pooled = pool.rounds(report.draft_model, report.quantization)
        if pooled >= adaptation.min_rounds:
            queue.add(key)
        return web.json_response({"pooledRounds": pooled}, status=202)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_post(TELEMETRY_PATH, telemetry)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port``; the caller cleans the runner up at shutdown."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /metrics and %s on %s:%d", TELEMETRY_PATH, host, port)
    return runner
