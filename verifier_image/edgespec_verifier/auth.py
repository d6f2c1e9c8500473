"""Bearer-token authentication of edge callers.

The token comes from a file (a mounted Kubernetes Secret; re-read when the file changes, so a rotated
Secret takes effect without a restart) or from an environment variable. Probes and metrics stay open;
every other path needs ``Authorization: Bearer <token>``, compared in constant time. A rejected request
gets 401 before any handler runs, so it changes nothing.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from edgespec.wire import ErrorBody, ErrorDetail

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenSource:
    """The expected token, from a file (re-read on change) or a fixed value."""

    def __init__(self, *, token_file: Path | None = None, token: str | None = None) -> None:
        if token_file is None and not token:
            raise ValueError("no verifier token: set a token file (a mounted Secret) or the token variable")
        self._file = token_file
        self._fixed = token or ""
        self._cached = ""
        self._stamp: tuple[float, int] | None = None

    def current(self) -> str:
        if self._file is None:
            return self._fixed
        stat = os.stat(self._file)
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            self._cached = self._file.read_text(encoding="utf-8").strip()
            self._stamp = stamp
        return self._cached


def unauthorized(message: str) -> web.Response:
    body = ErrorBody(error=ErrorDetail(code="unauthorized", message=message))
    return web.json_response(
        body.model_dump(mode="json"), status=401, headers={"WWW-Authenticate": 'Bearer realm="edgespec"'}
    )


def bearer_middleware(tokens: TokenSource) -> Middleware:
    @web.middleware
    async def check_bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        expected = tokens.current()
        if not expected or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
            return unauthorized("wrong bearer token")
        return await handler(request)

    return check_bearer
