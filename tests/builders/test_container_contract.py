"""Every container the operator builds is accepted by the program it runs, with the pod it runs in.

For every sample deployment under ``samples/`` (and the builder tests' own spec), for both verifier
engines, with and without a node model cache, the builders' children are built: the verifier
Deployment, each class's draft DaemonSet for every candidate draft, each profiling Job, init
containers included. Each container's ``command`` names a program; its ``args`` are parsed by that
program's **real** argument parser and its settings are validated with the container's own
environment applied (``prepare``: everything ``main`` does before the handler runs). Then the files,
URLs and identities the containers name are checked against the volumes, Secrets, Services and
ServiceAccounts the builders made: a path must lie in a mounted volume (in a Secret's or ConfigMap's
projected items when it is one), what a container reads must be what its init container wrote, and
a profiler must write the EdgeProfile the operator waits for. Each case is built twice: plain HTTP,
and with ``spec.verifier.tls`` (the verifier serving HTTPS from the user's Secret, the edge verifying
it against the CA ConfigMap the operator copies out of that Secret, never the Secret itself).
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from builder_samples import IMAGES, OWNER, SPEC, containers, pod_spec
from edgespec.api.deployment import SpeculativeDeploymentSpec
from edgespec.builders import (
    DeploymentInput,
    DraftServerInput,
    ModelCache,
    ProfilingJobInput,
    Telemetry,
    VerifierInput,
    build_draft_servers,
    build_draft_service,
    build_profiling_job,
    build_verifier,
)
from edgespec.live import TELEMETRY_AUDIENCE
from edgespec.status import parse_quantity

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples").glob("speculativedeployment-*.yaml"))
NODE_NAME = "node-0"
NODE_CORES = 2
TELEMETRY = Telemetry(url="http://edgespec-operator.edgespec-system.svc:8080/v1/telemetry")
CACHES = {"no-cache": None, "node-cache": ModelCache(host_path="/var/lib/edgespec/models")}
TLS_SECRET = "demo-verifier-tls"
"""The user's kubernetes.io/tls Secret (a cert-manager Certificate's), named by spec.verifier.tls."""
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

PROGRAMS = {
    ("python", "-m", "edgespec_edge"): "edgespec_edge.__main__",
    ("python", "-m", "edgespec_verifier"): "edgespec_verifier.__main__",
}
"""Each program a builder's container may run, and the module whose ``prepare(argv)`` parses its
command line. (The operator's own ``python -m edgespec.handlers`` runs from the Helm chart, not from a
builder.)"""

# A sample written for one engine names only that engine's target; the other engine gets one here.
OTHER_ENGINE_TARGET = {
    "vllmModel": "google/gemma-3-270m",
    "gguf": {"uri": "https://models.example/target-q4_k_m.gguf"},
}


def sample_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "builder_samples.SPEC", SPEC
    for path in SAMPLES:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and document.get("kind") == "SpeculativeDeployment":
                yield f"{path.name}:{document['metadata']['name']}", document["spec"]


CASES = [
    pytest.param(spec, engine, cache, tls, id=f"{name}-{engine}-{cache_id}-{'tls' if tls else 'plain'}")
    for name, spec in sample_specs()
    for engine in ("llamacpp", "vllm")
    for cache_id, cache in CACHES.items()
    for tls in (False, True)
]


def test_every_sample_is_covered() -> None:
    names = {name for name, _ in sample_specs()}
    assert len(SAMPLES) >= 3, SAMPLES
    assert "speculativedeployment-local.yaml:local" in names, names


def with_tls(spec_data: dict[str, Any], tls: bool) -> dict[str, Any]:
    if not tls:
        return spec_data
    return {**spec_data, "verifier": {**spec_data["verifier"], "tls": {"secretName": TLS_SECRET}}}


def children(
    spec_data: dict[str, Any], engine: str, cache: ModelCache | None, tls: bool = False
) -> list[dict[str, Any]]:
    """Every workload (and the objects they refer to) the builders make for ``spec_data``."""
    data = with_tls({**spec_data, "verifier": {**spec_data["verifier"], "engine": engine}}, tls)
    data["target"] = {**OTHER_ENGINE_TARGET, **spec_data["target"]}
    spec = SpeculativeDeploymentSpec.model_validate(data)
    common: dict[str, Any] = {
        "owner": OWNER,
        "spec": spec,
        "images": IMAGES,
        "model_cache": cache,
        "verifier_ca": CA_PEM if tls else None,
    }
    out = [
        *build_verifier(VerifierInput(**common, token="t0ken")),
        build_draft_service(DeploymentInput(**common)),
    ]
    for device_class in spec.device_classes:
        for draft in spec.drafts:
            for quant in draft.quantizations:
                key = {
                    "device_class_name": device_class.name,
                    "draft_model": draft.name,
                    "quantization": quant.quantization,
                }
                out += build_draft_servers(
                    DraftServerInput(**common, **key, k=spec.speculative_length.min, telemetry=TELEMETRY)
                )
                out.append(build_profiling_job(ProfilingJobInput(**common, **key, node_name=NODE_NAME)))
        # The class's draft servers as they run cloud-only (spec.cloudOnlyFallback where it does not pay).
        first = {
            "draft_model": spec.drafts[0].name,
            "quantization": spec.drafts[0].quantizations[0].quantization,
        }
        out += build_draft_servers(
            DraftServerInput(
                **common,
                **first,
                device_class_name=device_class.name,
                k=1,
                cloud_only=True,
                telemetry=TELEMETRY,
            )
        )
    return out


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would resolve it on a 2-core node named ``node-0``."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            assert field == "spec.nodeName", f"{container['name']}: env {item['name']} from {field}"
            env[item["name"]] = NODE_NAME
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            assert ref["containerName"] == container["name"], ref
            assert ref["resource"] == "limits.cpu" and ref["divisor"] == "1", ref
            limit = container.get("resources", {}).get("limits", {}).get("cpu")
            cores = parse_quantity(limit) / 1 if limit is not None else NODE_CORES
            env[item["name"]] = str(max(1, math.ceil(cores)))  # the kubelet rounds up
        else:
            raise AssertionError(f"{container['name']}: env {item['name']} from unknown source {source}")
    return env


@dataclass(frozen=True)
class Parsed:
    manifest: dict[str, Any]
    container: dict[str, Any]
    init: bool
    invocation: Any  # the program's Invocation: args (argparse.Namespace) and validated settings

    @property
    def args(self) -> argparse.Namespace:
        namespace: argparse.Namespace = self.invocation.args
        return namespace

    @property
    def command(self) -> str:
        """The sub-command run (the verifier has one only: ``verify``)."""
        if self.container["command"][-1] == "edgespec_verifier":
            return "verify"
        return str(self.args.command)

    @property
    def where(self) -> str:
        return (
            f"{self.manifest['kind']}/{self.manifest['metadata']['name']} container {self.container['name']}"
        )


def parse_container(
    manifest: dict[str, Any], container: dict[str, Any], init: bool, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Parsed:  # fmt: skip
    where = f"{manifest['kind']}/{manifest['metadata']['name']} container {container['name']}"
    program = tuple(container["command"])
    assert program in PROGRAMS, f"{where}: runs {program}, which no image provides"
    module = importlib.import_module(PROGRAMS[program])
    with monkeypatch.context() as patch:
        import os

        for name in [n for n in os.environ if n.startswith("EDGESPEC_")]:
            patch.delenv(name)
        for name, value in container_env(container).items():
            patch.setenv(name, value)
        try:
            invocation = module.prepare(list(container.get("args", [])))
        except SystemExit as exit_:
            raise AssertionError(
                f"{where}: {' '.join(program)} refuses {container.get('args')}: "
                f"exit {exit_.code}: {capsys.readouterr().err.strip()}"
            ) from None
    return Parsed(manifest, container, init, invocation)


def parsed_pods(
    manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[dict[str, Any], list[Parsed]]]:
    for manifest in manifests:
        pod = pod_spec(manifest)
        if pod is None:
            continue
        init_names = {c["name"] for c in pod.get("initContainers", [])}
        parsed = [
            parse_container(manifest, c, c["name"] in init_names, monkeypatch, capsys)
            for c in containers(manifest)
        ]
        yield manifest, parsed


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume mount holding ``path`` (the deepest one), or None."""
    found = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    return max(found, key=lambda m: len(m["mountPath"]), default=None)


def check_path(pod: dict[str, Any], container: dict[str, Any], path: str, *, write: bool, where: str) -> None:
    """``path`` is in a mounted volume (a projected item of it for Secrets and ConfigMaps)."""
    if path == container.get("terminationMessagePath", "/dev/termination-log"):
        return  # the kubelet bind-mounts it, writable, whatever the root filesystem
    mount = mount_for(container, path)
    assert mount is not None, f"{where}: {path} is in no mounted volume (root filesystem is read-only)"
    if write:
        assert not mount.get("readOnly"), f"{where}: writes {path} on the read-only mount {mount}"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    projected = volume.get("secret") or volume.get("configMap")
    if projected is not None and path != mount["mountPath"]:
        relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
        items = [item["path"] for item in projected.get("items", [])]
        assert relative in items, f"{where}: {path} is not among the items {items} of volume {volume}"


def absolute_paths(container: dict[str, Any]) -> list[str]:
    """Absolute paths among args and env values (``*_NODE_PATH`` name a path on the node, for messages)."""
    env = [
        e["value"] for e in container.get("env", []) if "value" in e and not e["name"].endswith("_NODE_PATH")
    ]
    words = [*container.get("args", []), *env]
    paths = []
    for word in words:
        value = word.partition("=")[2] if word.startswith("--") else word
        if value.startswith("/"):
            paths.append(value)
    return paths


@pytest.mark.parametrize(("spec_data", "engine", "cache", "tls"), CASES)
def test_every_container_is_accepted_by_its_program(
    spec_data: dict[str, Any],
    engine: str,
    cache: ModelCache | None,
    tls: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifests = children(spec_data, engine, cache, tls)
    services = by_kind(manifests, "Service")
    secrets = by_kind(manifests, "Secret")
    config_maps = by_kind(manifests, "ConfigMap")
    accounts = by_kind(manifests, "ServiceAccount")
    seen_programs = set()
    for manifest, parsed in parsed_pods(manifests, monkeypatch, capsys):
        pod = pod_spec(manifest)
        assert pod is not None
        written: dict[str, Parsed] = {}
        for item in parsed:
            seen_programs.add((tuple(item.container["command"]), item.command))
            for path in absolute_paths(item.container):
                check_path(pod, item.container, path, write=False, where=item.where)
            for volume in pod["volumes"]:
                if "secret" in volume:
                    name = volume["secret"]["secretName"]
                    if tls and name == TLS_SECRET:  # the user's; only the verifier, in the cloud, mounts it
                        component = item.manifest["metadata"]["labels"]["app.kubernetes.io/component"]
                        assert component == "verifier", f"{item.where}: an edge pod mounts the TLS Secret"
                        continue
                    assert name in secrets, f"{item.where}: no Secret {volume}"
                if "configMap" in volume:
                    name = volume["configMap"]["name"]
                    if name == spec_data.get("profiling", {}).get("promptsConfigMap"):
                        continue  # the user's prompts
                    assert name in config_maps, f"{item.where}: no ConfigMap {volume}"
                    keys = {i["key"] for i in volume["configMap"].get("items", [])}
                    assert keys <= set(config_maps[name]["data"]), (
                        f"{item.where}: {volume} names missing keys"
                    )
            if item.command == "fetch":
                assert item.init, f"{item.where}: fetch runs as an init container"
                # its failure (which source, which node, the fix) must reach the pod's status
                assert item.container["terminationMessagePolicy"] == "FallbackToLogsOnError", item.where
                output = str(item.args.output)
                check_path(pod, item.container, output, write=True, where=item.where)
                if item.args.cache is not None:
                    check_path(pod, item.container, str(item.args.cache), write=True, where=item.where)
                written[output] = item
            else:
                assert not item.init, f"{item.where}: only model fetches run before the main container"
        for item in parsed:
            if item.init:
                continue
            reads = model_paths_read(item)
            if cloud_only(item):
                seen_programs.add(("cloud-only", "serve"))
                assert not reads and not written, f"{item.where}: cloud-only fetches and loads no model"
                assert not any("hostPath" in v for v in pod["volumes"]), f"{item.where}: no model cache"
            else:
                assert reads, f"{item.where}: reads no model"
            for path in reads:
                if not path.startswith("/"):
                    continue  # a vLLM model id, downloaded by vLLM itself into its cache volume
                fetcher = written.get(path)
                assert fetcher is not None, f"{item.where}: reads {path}, which no init container writes"
                fetch_mount = mount_for(fetcher.container, path)
                read_mount = mount_for(item.container, path)
                assert fetch_mount and read_mount and fetch_mount["name"] == read_mount["name"], item.where
                if fetcher.args.cache is not None:  # the output may be a link into the cache
                    cache_dir = str(fetcher.args.cache)
                    theirs = mount_for(fetcher.container, cache_dir)
                    mine = mount_for(item.container, cache_dir)
                    assert theirs and mine and mine["name"] == theirs["name"], (
                        f"{item.where}: does not mount the model cache {cache_dir} its fetcher links into"
                    )
                    assert mine["mountPath"] == theirs["mountPath"], item.where
            check_identity(item, with_tls(spec_data, tls), services, accounts)
            check_tls(item, tls, config_maps)
    assert {(p, c) for p, c in seen_programs} >= {
        (("python", "-m", "edgespec_edge"), "fetch"),
        (("python", "-m", "edgespec_edge"), "serve"),
        (("python", "-m", "edgespec_edge"), "profile"),
        (("python", "-m", "edgespec_verifier"), "verify"),
        ("cloud-only", "serve"),
    }


def cloud_only(item: Parsed) -> bool:
    return item.command == "serve" and item.invocation.settings[0].mode == "cloud-only"


def model_paths_read(item: Parsed) -> list[str]:
    """The model files (or model ids) a main container loads, from its validated settings."""
    if item.command == "verify":
        (settings,) = item.invocation.settings
        return [settings.model]
    if item.command == "serve":
        return [] if cloud_only(item) else [str(item.invocation.settings[0].draft_model)]
    if item.command == "profile":
        return [str(item.args.draft_file)]
    raise AssertionError(f"{item.where}: unexpected command {item.command}")


def check_identity(
    item: Parsed,
    spec_data: dict[str, Any],
    services: dict[str, dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
) -> None:
    """Verifier URLs name the verifier Service and port; profilers write the profile the operator reads."""
    command = item.command
    if command == "verify":
        settings = item.invocation.settings[0]
        ports = {p["name"]: p["containerPort"] for p in item.container["ports"]}
        assert settings.port == ports["http"], item.where
        assert settings.token_file is not None, f"{item.where}: the verifier must demand a token"
        return
    edge = item.invocation.settings[0]
    url = edge.verifier_url
    scheme = "https" if "tls" in spec_data.get("verifier", {}) else "http"
    assert url.startswith(f"{scheme}://") and url.count(":") == 2, url
    host, port = url.removeprefix(f"{scheme}://").rsplit(":", 1)
    service_name, namespace, svc = host.split(".")
    assert (namespace, svc) == (OWNER.namespace, "svc"), url
    service = services.get(service_name)
    assert service is not None, f"{item.where}: verifier URL {url} names no Service the builders made"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}, url
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "verifier", url
    assert edge.verifier_token_file is not None, f"{item.where}: no verifier token"
    if command == "serve":
        check_telemetry_token(item)
        return
    pod = pod_spec(item.manifest)
    assert pod is not None
    args = item.args
    # No API rights: the report goes to the termination message, the operator validates and publishes it.
    assert not args.apply and args.output is None, f"{item.where}: the Job has no API rights to write with"
    assert str(args.report) == item.container["terminationMessagePath"], item.where
    assert "serviceAccountName" not in pod and pod["automountServiceAccountToken"] is False, item.where
    labels = item.manifest["metadata"]["labels"]
    assert args.device_class == labels["edgespec.dev/device-class"], item.where
    assert args.target == spec_data["target"]["name"], f"{item.where}: the operator ignores other targets"
    draft_names = {d["name"] for d in spec_data["drafts"]}
    assert args.draft_model in draft_names, item.where
    quantizations = {q["quantization"] for d in spec_data["drafts"] for q in d["quantizations"]}
    assert args.quantization in quantizations, item.where
    k = SpeculativeDeploymentSpec.model_validate(spec_data).speculative_length  # defaults applied
    assert (args.k_min, args.k_max) == (k.min, k.max), item.where


def check_tls(item: Parsed, tls: bool, config_maps: dict[str, dict[str, Any]]) -> None:
    """With TLS the verifier serves HTTPS from the Secret's files and is probed so; every edge program
    verifies the verifier against the CA copied into a ConfigMap; without TLS none of it is there."""
    if item.init:
        return
    pod = pod_spec(item.manifest)
    assert pod is not None
    if item.command == "verify":
        settings = item.invocation.settings[0]
        files = (settings.tls_cert_file, settings.tls_key_file)
        probes = [
            item.container[p]["httpGet"].get("scheme", "HTTP") for p in ("readinessProbe", "livenessProbe")
        ]
        if not tls:
            assert files == (None, None) and probes == ["HTTP", "HTTP"], item.where
            return
        assert None not in files, f"{item.where}: TLS asked for, the verifier serves plain HTTP"
        assert probes == ["HTTPS", "HTTPS"], f"{item.where}: the kubelet would probe an HTTPS port over HTTP"
        for path in files:
            volume = next(
                v for v in pod["volumes"] if v["name"] == mount_for(item.container, str(path))["name"]
            )
            assert volume["secret"]["secretName"] == TLS_SECRET, f"{item.where}: {path} from {volume}"
        return
    edge = item.invocation.settings[0]
    if not tls:
        assert edge.ca_file is None, item.where
        return
    assert edge.ca_file is not None, f"{item.where}: an https verifier URL and no CA to verify it against"
    mount = mount_for(item.container, str(edge.ca_file))
    assert mount is not None, f"{item.where}: CA file {edge.ca_file} is in no volume"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "configMap" in volume, f"{item.where}: the CA must come from the operator's ConfigMap: {volume}"
    key = volume["configMap"]["items"][0]["key"]
    assert config_maps[volume["configMap"]["name"]]["data"][key] == CA_PEM, item.where


def check_telemetry_token(item: Parsed) -> None:
    """A reporting draft server reads its pod's own projected token, for the operator's audience only."""
    telemetry = item.invocation.settings[1]
    assert telemetry.enabled, f"{item.where}: the draft server does not report telemetry"
    path = telemetry.telemetry_token_file
    assert path is not None, f"{item.where}: telemetry without a token file"
    pod = pod_spec(item.manifest)
    mount = mount_for(item.container, path)
    assert pod is not None and mount is not None and mount.get("readOnly"), (
        f"{item.where}: {path} not mounted"
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    (source,) = volume["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == TELEMETRY_AUDIENCE, f"{item.where}: a token the API server would accept"
    assert 600 <= token["expirationSeconds"] <= 3600, f"{item.where}: not short-lived"
    assert path == f"{mount['mountPath']}/{token['path']}", item.where
    assert pod["automountServiceAccountToken"] is False, f"{item.where}: the API token is mounted too"
