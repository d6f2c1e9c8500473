"""The project's images, built from its Dockerfiles here (buildah on a Debian base, no registry).

Each image is built (or reused from its content-hash cache), imported into a throwaway containerd
(its own root, state and socket) the way the real node's containerd gets it, and run there with runc:
its refs survive the import, its entrypoint answers ``--help`` as the restricted uid 65532, the
operator image imports its handlers and the workload images import llama.cpp. A second ``ensure``
must not call buildah at all, and a change of any copied source must change the hash.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgespec_dev import images, locks
from edgespec_dev.cluster import _kill_me_with_parent
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.images

ENTRYPOINTS = {
    "operator": ["python", "-m", "edgespec.handlers"],
    "edge": ["edgespec-edge"],
    "verifier": ["edgespec-verifier"],
}
# What each image must import: the operator its kopf handlers, the workloads llama.cpp.
IMPORTS = {"operator": "edgespec.handlers.registration", "edge": "llama_cpp", "verifier": "llama_cpp"}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "building images needs root (mmdebstrap, buildah --isolation chroot, containerd)"
    if shutil.which("apt-get") is None and shutil.which("buildah") is None:
        return "no apt-get to install buildah and mmdebstrap (a Debian host is needed)"
    return None


@pytest.fixture(scope="session")
def built(request: pytest.FixtureRequest) -> dict[str, images.BuiltImage]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the images tier cannot run here: {reason}")
        pytest.skip(reason)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    showing = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with showing:  # first run: base image, wheelhouse and three builds, with progress
        return images.ensure_all()


@pytest.fixture(scope="module")
def ctr(built: dict[str, images.BuiltImage]) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """A throwaway containerd (own root, state and socket under /tmp) with every archive imported."""
    images.ensure_host_packages(("containerd", "runc"))
    # A short path: the socket's path must fit in sun_path (108 bytes). On a tmpfs: unpacked images
    # go away with one umount (deleting them from this disk takes longer than importing them).
    home = Path(tempfile.mkdtemp(prefix="edgespec-ctd-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8g,mode=0700", "edgespec-ctd", str(home)], check=True)
    socket = home / "containerd.sock"
    (home / "config.toml").write_text(
        "version = 2\n"
        f'root = "{home}/root"\n'
        f'state = "{home}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
        f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
    )
    log = open(home / "containerd.log", "w")  # noqa: SIM115 - open for the daemon's lifetime
    daemon = subprocess.Popen(
        ["containerd", "--config", str(home / "config.toml")],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_kill_me_with_parent(os.getpid()),  # no stray daemon if pytest itself is killed
    )

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    try:
        for _ in range(100):
            if socket.exists() and run("version", timeout=10).returncode == 0:
                break
            assert daemon.poll() is None, (home / "containerd.log").read_text()[-2000:]
            time.sleep(0.1)
        for image in built.values():
            result = run("images", "import", str(image.archive), timeout=300)
            assert result.returncode == 0, result.stderr
        yield run
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m == str(home) or m.startswith(f"{home}/")), reverse=True):
            subprocess.run(["umount", mount], check=False)
        home.rmdir()


def _blob(archive: Path, name: str) -> bytes:
    """A file of an OCI archive: ``index.json`` or a blob by its digest."""
    path = name if name == "index.json" else f"blobs/sha256/{name.removeprefix('sha256:')}"
    with tarfile.open(archive) as tar:
        member = tar.extractfile(path)
        assert member is not None, f"{path} missing from {archive}"
        return member.read()


def _archive_config(archive: Path) -> tuple[dict[str, Any], list[str]]:
    """The image config and the layer digests of the single image in an OCI archive."""
    index = json.loads(_blob(archive, "index.json"))
    manifest = json.loads(_blob(archive, index["manifests"][0]["digest"]))
    config = json.loads(_blob(archive, manifest["config"]["digest"]))
    return config, [layer["digest"] for layer in manifest["layers"]]


def _layer_paths(archive: Path, digest: str) -> list[str]:
    data = _blob(archive, digest)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        return layer.getnames()


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_refs_survive_the_containerd_import(
    name: str, built: dict[str, images.BuiltImage], ctr: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    image = built[name]
    assert image.ref.startswith(f"{images.IMAGES[name].repository}:{images.chart_app_version()}-")
    listed = ctr("images", "ls", "--quiet").stdout.split()
    assert image.ref in listed


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_image_config_runs_as_the_restricted_user(name: str, built: dict[str, images.BuiltImage]) -> None:
    config, _ = _archive_config(built[name].archive)
    process = config["config"]
    assert process["User"] == "65532:65532"  # the chart's runAsUser / runAsGroup
    assert process["Entrypoint"] == ENTRYPOINTS[name]
    env = dict(item.split("=", 1) for item in process["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert config["architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if name == "verifier":
        assert env["EDGESPEC_VERIFIER_ENGINE"] == "llamacpp"  # the CPU image; vLLM is its own image
        assert "8000/tcp" in process["ExposedPorts"]
    if name == "edge":
        assert env["EDGESPEC_CACHE"] == "/models"
        assert process["Cmd"] == ["serve"]


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_final_image_holds_no_sources_wheels_or_ca_secret(
    name: str, built: dict[str, images.BuiltImage]
) -> None:
    """The build stage's sources, the wheelhouse and the CA secret stay out of the final layers."""
    _, layers = _archive_config(built[name].archive)
    added = [path for digest in layers[1:] for path in _layer_paths(built[name].archive, digest)]
    assert any(path.startswith("opt/venv/bin/") for path in added)
    leaked = [p for p in added if p.startswith(("src/", "wheels/", "run/secrets")) or p.endswith(".whl")]
    assert leaked == []


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_entrypoint_help_runs_in_containerd(
    name: str, built: dict[str, images.BuiltImage], ctr: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """runc starts the entrypoint (as the image's user); ``--help`` exits 0 with its usage."""
    # ctr 1.6 replaces the whole command line (entrypoint included) with the arguments given.
    result = ctr("run", "--rm", built[name].ref, f"help-{name}-{os.getpid()}", *ENTRYPOINTS[name], "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "usage:" in result.stdout


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_image_imports_its_runtime_as_uid_65532(
    name: str, built: dict[str, images.BuiltImage], ctr: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """The operator's kopf handlers, or llama.cpp's native library, import in the container."""
    check = (
        f"import os, importlib; importlib.import_module({IMPORTS[name]!r}); print(os.getuid(), os.getgid())"
    )
    if IMPORTS[name] == "llama_cpp":
        check += "; import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_supports_mmap())"
    result = ctr("run", "--rm", built[name].ref, f"import-{name}-{os.getpid()}", "python", "-c", check)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "65532 65532"
    if IMPORTS[name] == "llama_cpp":
        assert lines[1] == "0.3.36 True"


@pytest.mark.parametrize("name", list(images.IMAGES))
def test_image_holds_exactly_the_versions_of_its_lock(
    name: str, built: dict[str, images.BuiltImage], ctr: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """Every distribution in the image's venv is the version its lock (a subset of CI's) pins."""
    listing = (
        "import importlib.metadata as m; "
        "print('\\n'.join(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()))"
    )
    result = ctr("run", "--rm", built[name].ref, f"lock-{name}-{os.getpid()}", "python", "-c", listing)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in result.stdout.splitlines()
    }
    pinned = {pin.name: pin.version for pin in locks.read_lock(name).values()}
    assert installed.pop("edgespec") == "0.1.0"
    installed.pop("pip")  # the venv's own installer
    assert installed == pinned


def test_second_ensure_runs_no_command(
    built: dict[str, images.BuiltImage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing changed: ensure hashes and returns the cached archives; no buildah, mmdebstrap or pip."""

    def refuse(command: list[str], *args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"ensure ran {command[:3]} although nothing changed")

    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    for name, first in built.items():
        again = images.ensure(name)
        assert (again.ref, again.archive, again.built) == (first.ref, first.archive, False)


@pytest.fixture
def context_copy(tmp_path: Path) -> Path:
    """What the Dockerfiles copy (and the chart's appVersion), in a scratch tree we may change."""
    for relative in ("operator", "edge_image", "verifier_image", "hack/images"):
        shutil.copytree(
            images.REPO / relative, tmp_path / relative, ignore=shutil.ignore_patterns("__pycache__")
        )
    for relative in ("pyproject.toml", "README.md", "charts/edgespec/Chart.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(images.REPO / relative, tmp_path / relative)
    return tmp_path


def _keys(root: Path) -> dict[str, str]:
    return {
        name: images.image_key(spec, base_ref="base", wheels_digest="wheels", root=root)
        for name, spec in images.IMAGES.items()
    }


def test_content_change_changes_the_hash_and_nothing_else_does(context_copy: Path) -> None:
    before = _keys(context_copy)
    assert before == _keys(context_copy)
    server = context_copy / "edge_image/edgespec_edge/server.py"
    os.utime(server, (0, 0))  # a new mtime alone is no change
    (server.parent / "__pycache__").mkdir(exist_ok=True)
    (server.parent / "__pycache__/server.cpython-311.pyc").write_bytes(b"byte code")  # ignored
    assert _keys(context_copy) == before
    server.write_text(server.read_text() + "\n# changed\n")
    after_source = _keys(context_copy)
    # Every image installs the one project, so a source change reaches all three.
    assert all(after_source[name] != before[name] for name in images.IMAGES)
    dockerfile = context_copy / "edge_image/Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\nLABEL changed=1\n")
    after_dockerfile = _keys(context_copy)
    assert after_dockerfile["edge"] != after_source["edge"]
    assert {n: k for n, k in after_dockerfile.items() if n != "edge"} == {
        n: k for n, k in after_source.items() if n != "edge"
    }


def test_base_and_wheels_are_part_of_the_hash() -> None:
    spec = images.IMAGES["verifier"]
    key = images.image_key(spec, base_ref="localhost/edgespec-base:a", wheels_digest="w")
    assert key != images.image_key(spec, base_ref="localhost/edgespec-base:b", wheels_digest="w")
    assert key != images.image_key(spec, base_ref="localhost/edgespec-base:a", wheels_digest="x")


def test_dockerfiles_read_only_what_the_hash_covers() -> None:
    expected = {
        "hack/images/venv-install.sh",
        "pyproject.toml",
        "README.md",
        "operator/edgespec",
        "edge_image/edgespec_edge",
        "verifier_image/edgespec_verifier",
    }
    for name, spec in images.IMAGES.items():
        lock = locks.LOCKS[name][0]  # each image installs from its own lock
        sources = set(images.dockerfile_sources(images.REPO / spec.dockerfile))
        assert sources == expected | {lock}, spec.dockerfile


def test_helm_values_point_the_chart_at_the_built_images(tmp_path: Path) -> None:
    """The values ``python -m edgespec_dev.images values`` prints exist in the chart, as set."""
    built = {
        name: images.BuiltImage(name, f"{spec.repository}:0.1.0-abc{name}", tmp_path / name, False, 0.0)
        for name, spec in images.IMAGES.items()
    }
    assert images.helm_values(built) == {
        "image.repository": "ghcr.io/edgespec/operator",
        "image.tag": "0.1.0-abcoperator",
        "image.pullPolicy": "Never",
        "workloadImages.edge.repository": "ghcr.io/edgespec/edge",
        "workloadImages.edge.tag": "0.1.0-abcedge",
        "workloadImages.verifier.repository": "ghcr.io/edgespec/verifier",
        "workloadImages.verifier.tag": "0.1.0-abcverifier",
        "workloadImages.pullPolicy": "Never",
    }
    chart_values = yaml.safe_load((images.REPO / "charts/edgespec/values.yaml").read_text())
    for key in images.helm_values(built):
        node = chart_values
        for part in key.split("."):
            assert part in node, f"{key} is not a value of the chart"
            node = node[part]


def test_skaffold_builds_every_image_into_the_chart_values_it_sets() -> None:
    """skaffold, the chart and this module name the same images, Dockerfiles and values."""
    skaffold = yaml.safe_load((images.REPO / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a["docker"]["dockerfile"] for a in skaffold["build"]["artifacts"]}
    for spec in images.IMAGES.values():
        assert artifacts[spec.repository] == spec.dockerfile
    assert artifacts["ghcr.io/edgespec/verifier-vllm"] == "verifier_image/Dockerfile.vllm"
    assert all((images.REPO / dockerfile).is_file() for dockerfile in artifacts.values())
    chart_values = yaml.safe_load((images.REPO / "charts/edgespec/values.yaml").read_text())
    (release,) = skaffold["deploy"]["helm"]["releases"]
    chart_keys = {spec.repository: spec.chart_value for spec in images.IMAGES.values()}
    chart_keys["ghcr.io/edgespec/verifier-vllm"] = "workloadImages.vllm"  # not built by this module
    for image in artifacts:
        key = chart_keys[image]
        node = chart_values
        for part in key.split("."):
            node = node[part]
        assert node["repository"] == image  # the chart's default names the image skaffold builds
        variable = re.sub(r"[^A-Za-z0-9]", "_", image)
        assert release["setValueTemplates"][f"{key}.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
        assert release["setValueTemplates"][f"{key}.tag"] == f"{{{{.IMAGE_TAG_{variable}}}}}"
