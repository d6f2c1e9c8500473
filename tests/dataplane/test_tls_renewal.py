"""A renewed certificate is served without a restart (cert-manager renews; the kubelet swaps the files).

The verifier and the operator watch their certificate and key files (``edgespec.tls``): once the
files change, the next TLS handshake presents the new certificate, and an edge that trusts only the
new CA is served. A half-written or mismatched pair keeps the old certificate. Certificates are made
in the test with openssl; the server is a plain aiohttp app with the very context it started with.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from edgespec.tls import CertificateFiles, client_context, keep_certificate_fresh, server_context

from .test_tls import make_ca


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    directory = tmp_path_factory.mktemp("renewal")
    out = {}
    for name in ("old", "new"):
        ca, cert = make_ca(directory, name)
        out[name] = (ca, cert, directory / f"{name}-server.key")
    return out


@pytest.fixture
async def served(
    pkis: dict[str, tuple[Path, Path, Path]], tmp_path: Path
) -> AsyncIterator[tuple[TestServer, CertificateFiles]]:
    """An HTTPS server started with the "old" certificate, its files where a Secret would mount them."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pkis["old"][1], cert)
    shutil.copy(pkis["old"][2], key)
    context = server_context(cert, key)
    assert context is not None

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    yield server, CertificateFiles(context, cert, key)
    await server.close()


async def status_with(server: TestServer, ca: Path) -> int | str:
    url = str(server.make_url("/healthz")).replace("127.0.0.1", "localhost")  # the certificates' name
    connector = aiohttp.TCPConnector(ssl=client_context(ca), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with http.get(url) as response:
                return response.status
        except aiohttp.ClientConnectorCertificateError:
            return "untrusted"


async def test_a_renewed_certificate_is_served_from_the_next_handshake(
    served: tuple[TestServer, CertificateFiles], pkis: dict[str, tuple[Path, Path, Path]]
) -> None:
    server, files = served
    assert files.reload_if_changed() is False  # nothing changed yet
    assert await status_with(server, pkis["old"][0]) == 200
    assert await status_with(server, pkis["new"][0]) == "untrusted"
    shutil.copy(pkis["new"][1], files.cert_file)
    shutil.copy(pkis["new"][2], files.key_file)
    task = asyncio.create_task(keep_certificate_fresh(files, interval_s=0.05))
    try:
        for _ in range(100):
            if await status_with(server, pkis["new"][0]) == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the renewed certificate was never served")
    finally:
        task.cancel()
    assert await status_with(server, pkis["old"][0]) == "untrusted"


async def test_a_mismatched_pair_keeps_the_current_certificate(
    served: tuple[TestServer, CertificateFiles], pkis: dict[str, tuple[Path, Path, Path]]
) -> None:
    server, files = served
    shutil.copy(pkis["new"][1], files.cert_file)  # the new certificate, the old key: half a renewal
    assert files.reload_if_changed() is False
    assert await status_with(server, pkis["old"][0]) == 200
    shutil.copy(pkis["new"][2], files.key_file)  # the other half arrives
    assert files.reload_if_changed() is True
    assert await status_with(server, pkis["new"][0]) == 200
    with pytest.raises(ssl.SSLError):
        server_context(pkis["new"][1], pkis["old"][2])  # what a mismatched pair does at start
