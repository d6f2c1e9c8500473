"""TLS between edge and cloud, with certificates made in the test (openssl).

The verifier and the operator's telemetry endpoint serve HTTPS given a certificate; the edge verifies
them against its CA file: a certificate from another CA is refused (and the request fails naming it),
the right one carries real completions and telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from edgespec.handlers.cache import Cache
from edgespec.handlers.http import make_app, serve
from edgespec.handlers.identity import PodIdentity, draft_pod_identity
from edgespec.handlers.workqueue import WorkQueue
from edgespec.tls import server_context
from edgespec_edge.config import EdgeSettings
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import RoundStats
from edgespec_edge.telemetry import RoundTally, TelemetrySettings, telemetry_context
from edgespec_verifier.auth import TokenSource
from edgespec_verifier.engines.llamacpp import LlamaCppEngine
from edgespec_verifier.server import VerifierSettings
from edgespec_verifier.server import create_app as create_verifier_app
from prometheus_client import CollectorRegistry

from .conftest import TOKEN, start_edge

pytestmark = pytest.mark.models


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A CA (certificate, key) and a server certificate it signs for 127.0.0.1."""
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    cert, key = directory / f"{name}-server.pem", directory / f"{name}-server.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", f"/CN={name} test CA",
             cwd=directory)  # fmt: skip
    csr = directory / f"{name}.csr"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", "/CN=verifier", cwd=directory)  # fmt: skip
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)  # fmt: skip
    return ca, cert.with_suffix(".pem")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates")
    directory = tmp_path_factory.mktemp("pki")
    ca, cert = make_ca(directory, "cloud")
    rogue_ca, _ = make_ca(directory, "rogue")
    return {"ca": ca, "cert": cert, "key": directory / "cloud-server.key", "rogue_ca": rogue_ca}


@pytest.fixture
async def https_verifier(engine: LlamaCppEngine, pki: dict[str, Path]) -> AsyncIterator[TestServer]:
    app = create_verifier_app(
        VerifierSettings(), registry=CollectorRegistry(), engine=engine, tokens=TokenSource(token=TOKEN)
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_context(pki["cert"], pki["key"]))
    yield server
    await server.close()


async def test_edge_talks_to_an_https_verifier_it_trusts_and_refuses_another(
    https_verifier: TestServer, draft_runtime: LlamaRuntime, pki: dict[str, Path]
) -> None:
    url = str(https_verifier.make_url(""))
    assert url.startswith("https://127.0.0.1:")
    request = {"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    trusted = await start_edge(EdgeSettings(k=2), draft_runtime, url, ca_file=pki["ca"])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(trusted.make_url("/v1/completions"), json=request) as response:
                assert response.status == 200
                assert (await response.json())["usage"]["completion_tokens"] == 6
            async with http.get(trusted.make_url("/readyz")) as ready:
                assert ready.status == 200
    finally:
        await trusted.close()

    for ca_file in (pki["rogue_ca"], None):  # another CA, or the system's CAs: both untrusted
        untrusted = await start_edge(EdgeSettings(k=2), draft_runtime, url, ca_file=ca_file)
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(untrusted.make_url("/v1/completions"), json=request) as response:
                    assert response.status == 502
                    error = (await response.json())["error"]
                    assert error["code"] == "verifier_tls"
                    assert "certificate not trusted" in error["message"]
                async with http.get(untrusted.make_url("/readyz")) as ready:
                    assert ready.status == 503
                    assert "not trusted" in (await ready.json())["reason"]
        finally:
            await untrusted.close()


async def test_verifier_refuses_plain_http_when_serving_https(https_verifier: TestServer) -> None:
    plain = str(https_verifier.make_url("/healthz")).replace("https://", "http://")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(plain) as response:
                await response.read()


async def test_telemetry_reaches_an_https_operator_endpoint(
    pki: dict[str, Path], unused_tcp_port: int, tmp_path: Path
) -> None:
    key = ("shop", "assistant")
    (tmp_path / "token").write_text(TOKEN)
    pod = draft_pod_identity(*key, "rpi5", node="edge-rpi5-0", pod="assistant-draft-rpi5-x")

    async def review(token: str) -> PodIdentity | None:
        return pod if token == TOKEN else None

    cache, queue = Cache(), WorkQueue()
    cache.deployments[key] = {
        "metadata": {"namespace": key[0], "name": key[1]},
        "spec": {"deviceClasses": [{"name": "rpi5"}], "adaptation": {"minRounds": 1}},
    }
    runner = await serve(
        make_app(cache, queue, review),
        "127.0.0.1",
        unused_tcp_port,
        server_context(pki["cert"], pki["key"]),
    )
    tally = RoundTally()
    tally.record(RoundStats(k=3, drafted=3, accepted=2, draft_s=0.01, round_trip_s=0.02, verify_s=0.01))
    settings = TelemetrySettings(
        telemetry_url=f"https://127.0.0.1:{unused_tcp_port}/v1/telemetry",
        telemetry_interval_s=0.1,
        namespace=key[0],
        deployment=key[1],
        device_class="rpi5",
        draft_name="gemma-17l",
        quantization="Q4_K_M",
        ca_file=str(pki["ca"]),
        telemetry_token_file=str(tmp_path / "token"),
    )
    context = telemetry_context(tally, settings)(web.Application())
    try:
        await context.__anext__()
        for _ in range(200):
            pool = cache.live.get((*key, "rpi5"))
            if pool is not None and pool.rounds() == 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the report did not arrive over HTTPS")
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await context.__anext__()
        await runner.cleanup()
