"""The operator's HTTP endpoint: Prometheus ``/metrics``, ``/healthz``, and the draft servers' telemetry.

``POST /v1/telemetry`` takes a ``TelemetryReport`` with the reporting draft pod's projected
ServiceAccount token as bearer token. The report's counts join the class's pool; once the pool
covers ``spec.adaptation.minRounds`` verify rounds the deployment is queued, and its reconcile folds
the pool into the live profile. The token is checked first (``edgespec.handlers.identity``:
TokenReview, then the pod it names): 401 for a missing, forged, expired or foreign token, before the
body is even parsed (503 when the API server cannot review it right now). Then: 400 malformed JSON,
422 invalid report (naming the field; non-finite or physically impossible values included), 403 a
report for anything but the pod's own deployment, device class and node (a pod that is no draft
server of ours included), 409 counts for a draft the class is not running (so each class pools at
most 64 K values), 202 pooled.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from edgespec.adaptation import Pool
from edgespec.api.deployment import AdaptationSpec
from edgespec.handlers.cache import Cache
from edgespec.handlers.identity import PodIdentity, ReviewUnavailable, reporter_of
from edgespec.handlers.metrics import OperatorMetrics
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


Authenticate = Callable[[str], Awaitable[PodIdentity | None]]
"""Bearer token -> the pod it proves, or None (``TokenReviewer`` in the operator, a fake in tests)."""


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def make_app(
    cache: Cache, queue: WorkQueue, authenticate: Authenticate, metrics: OperatorMetrics | None = None
) -> web.Application:
    """The aiohttp application; ``authenticate`` turns a draft pod's bearer token into its identity.

    ``metrics``: the operator's collectors, served on ``/metrics`` (a fresh set when not given).
    """
    collectors = metrics if metrics is not None else OperatorMetrics()

    def _error(status: int, message: str, result: str) -> web.Response:
        collectors.telemetry_reports.labels(result).inc()
        return web.json_response({"error": message}, status=status)

    async def exposition(_: web.Request) -> web.Response:
        collectors.workqueue_depth.set(queue.depth)
        collectors.deployments.set(len(cache.deployments))
        collectors.nodes.set(len(cache.nodes))
        body = generate_latest(collectors.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def telemetry(request: web.Request) -> web.Response:
        # Authentication before anything else: an unknown caller learns nothing, not even whether
        # a deployment or class exists (answers used to be 404 before the token was checked).
        try:
            pod = await authenticate(_bearer(request.headers.get("Authorization", "")))
        except ReviewUnavailable as exc:
            log.warning("telemetry: %s", exc)
            return _error(503, "the operator cannot review tokens right now; retry", "unknown")
        if pod is None:
            return _error(
                401,
                "missing or invalid bearer token (use the pod's projected telemetry token)",
                "unauthorized",
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
        reporter = reporter_of(pod, cache.deployments)
        if reporter is None:
            return _error(
                403, f"pod {pod.namespace}/{pod.name} is no draft server of a deployment", "unauthorized"
            )
        key = (reporter.namespace, reporter.deployment)
        if (report.namespace, report.deployment, report.device_class) != (*key, reporter.device_class):
            return _error(
                403,
                f"pod {pod.name} reports only for {'/'.join(key)} class {reporter.device_class}",
                "unauthorized",
            )
        if report.node and report.node != reporter.node:
            return _error(
                403, f"pod {pod.name} runs on node {reporter.node}, not {report.node}", "unauthorized"
            )
        body = cache.deployments[key]
        spec = body.get("spec") or {}
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
        collectors.telemetry_reports.labels("accepted").inc()
        if not adaptation.enabled:
            return web.json_response({"pooledRounds": 0, "adaptation": "disabled"}, status=202)
        pool = cache.live.setdefault((*key, report.device_class), Pool())
        pool.add(report)
        pooled = pool.rounds(report.draft_model, report.quantization)
        if pooled >= adaptation.min_rounds:
            queue.add(key)
        return web.json_response({"pooledRounds": pooled}, status=202)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/metrics", exposition)
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
