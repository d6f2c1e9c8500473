"""The operator's HTTP endpoint: Prometheus ``/metrics``, ``/healthz``, and the draft servers' telemetry.

``POST /v1/telemetry`` takes a ``TelemetryReport`` with the deployment's verifier token as bearer
token. The report's counts join the class's pool; once the pool covers ``spec.adaptation.minRounds``
verify rounds the deployment is queued, and its reconcile folds the pool into the live profile.
The bearer token is checked first: 401 for a missing or unknown token (503 while some deployment's
token is not read yet, right after a start), before the body is even parsed. Then: 400 malformed
JSON, 422 invalid report (naming the field; non-finite or physically impossible values included),
403 a report for another deployment than the token's, 404 a class the deployment does not have,
409 counts for a draft the class is not running (so each class pools at most 64 K values), 202
pooled. A token is per deployment, so one holder can still report for any class of its own
deployment; per-pod identity (projected ServiceAccount tokens and TokenReview) is not built yet.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any

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


def _running(body: Mapping[str, Any], device_class: str) -> tuple[str, str] | None:
    """(draft, quantisation) the class runs according to the stored status, if it has a selection."""
    for cls in (body.get("status") or {}).get("deviceClasses") or []:
        selection = cls.get("selection") if cls.get("name") == device_class else None
        if selection:
            return str(selection.get("draftModel")), str(selection.get("quantization"))
    return None


def _error(status: int, message: str, result: str) -> web.Response:
    TELEMETRY_REPORTS.labels(result).inc()
    return web.json_response({"error": message}, status=status)


def make_app(cache: Cache, queue: WorkQueue, tokens: Mapping[Key, str]) -> web.Application:
    """The aiohttp application; ``tokens`` holds each deployment's verifier token once known."""

    async def metrics(_: web.Request) -> web.Response:
        WORKQUEUE_DEPTH.set(queue.depth)
        DEPLOYMENTS.set(len(cache.deployments))
        NODES.set(len(cache.nodes))
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    def holder(authorization: str) -> Key | None:
        """The deployment whose token this is; every token compared in constant time."""
        given = authorization.encode()
        found = None
        for key, token in list(tokens.items()):
            if hmac.compare_digest(given, f"Bearer {token}".encode()):
                found = key
        return found

    async def telemetry(request: web.Request) -> web.Response:
        # Authentication before anything else: an unknown caller learns nothing, not even whether
        # a deployment or class exists (answers used to be 404 before the token was checked).
        key = holder(request.headers.get("Authorization", ""))
        if key is None:
            if any(k not in tokens for k in list(cache.deployments)):
                return _error(503, "the operator has not read every deployment's token yet; retry", "unknown")
            return _error(
                401, "missing or wrong bearer token (use the deployment's verifier token)", "unauthorized"
            )
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
        if (report.namespace, report.deployment) != key:
            return _error(403, "this token belongs to another deployment", "unauthorized")
        body = cache.deployments.get(key)
        if body is None:
            return _error(404, f"no SpeculativeDeployment {'/'.join(key)}", "unknown")
        spec = body.get("spec") or {}
        if report.device_class not in {c.get("name") for c in spec.get("deviceClasses") or []}:
            return _error(
                404, f"deviceClass {report.device_class!r} is not a class of {'/'.join(key)}", "unknown"
            )
        running = _running(body, report.device_class)
        if running is not None and running != (report.draft_model, report.quantization):
            # Only the running draft's counts are pooled: the pool holds at most 64 K values per class.
            return _error(
                409,
                f"{report.device_class} runs {running[0]} {running[1]}, not "
                f"{report.draft_model} {report.quantization}",
                "invalid",
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


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Start ``app`` on ``host:port`` (HTTPS with ``ssl_context``); the caller cleans the runner up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    scheme = "https" if ssl_context is not None else "http"
    log.info("serving /metrics and %s on %s://%s:%d", TELEMETRY_PATH, scheme, host, port)
    return runner
