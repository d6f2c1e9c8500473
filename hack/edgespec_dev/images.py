"""Build the project's container images from its Dockerfiles, with no Docker engine and no registry.

``python -m edgespec_dev.images ensure [operator|edge|verifier|all]`` builds (or reuses) each image
and prints ``NAME REF ARCHIVE``: an OCI archive that ``ctr -n k8s.io images import`` loads into
containerd under the same ref the chart uses (``ghcr.io/edgespec/<name>:<appVersion>-<hash>``).
``... values`` prints the ``helm --set`` arguments that point the chart at them.

How, on a bare Debian host (docs/images.md):

- **Host packages**: buildah and mmdebstrap from Debian, installed with apt-get on first use.
- **Base image**: mmdebstrap makes a minimal bookworm root file system (python3, python3-venv,
  ca-certificates, libgomp1 and little else), committed as ``localhost/edgespec-base:<key>``; the
  Dockerfiles take it as ``--build-arg BASE`` (their default stays a public python image for users).
- **Wheelhouse**: every wheel the images install, fetched on the host with ``pip wheel
  --require-hashes`` from the image locks (``operator/requirements.lock`` and the others, subsets of
  the dev lock the tests ran from; :mod:`edgespec_dev.locks`), llama-cpp-python being hack/env.sh's
  wheel of the pinned version (compiled once without AMX from the lock's hash-checked sdist), handed
  to the build as ``--build-context wheels=DIR``: the build installs offline, compiles nothing and
  never needs the host's CA bundle (still passed as a build secret for the index path).
- **Builds**: ``buildah bud --isolation chroot`` with a private storage root; each image is keyed by
  a content hash of everything that goes into it (the Dockerfile, every file it copies, the
  wheelhouse, the base), and its archive is reused while the hash is unchanged.

Everything lives under ``${EDGESPEC_CACHE:-~/.cache/edgespec}/images/``; builds hold a file lock, so
concurrent callers wait instead of building twice.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgespec_dev import locks
from edgespec_dev.tools import cache_dir

REPO = Path(__file__).resolve().parents[2]
HOST_PACKAGES = ("buildah", "mmdebstrap")

# The base image: what goes in, and the command that makes it. Both are hashed into its key.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "libgomp1", "libstdc++6", "passwd")
BASE_SUITE = "bookworm"
# The base comes from the same Debian mirrors the host's apt uses (mmdebstrap takes ``.list`` and
# ``.sources`` files as its mirror arguments), so it needs no address of its own.
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BASE_MMDEBSTRAP_OPTIONS = (
    "--variant=essential",  # Essential: yes packages plus the list above; no apt
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",  # merged /usr without the usrmerge package (perl)
    "--skip=output/dev",  # no device nodes in the layer; the runtime provides /dev
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    '--customize-hook=rm -rf "$1"/var/log/* "$1"/var/cache/ldconfig/aux-cache',
)
BASE_CONFIG = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
LLAMA_PREFIX = f"{locks.LLAMA}=="
# Archives kept per image (older content hashes are deleted; other checkouts may use recent ones).
ARCHIVES_KEPT = 6


@dataclass(frozen=True)
class ImageSpec:
    """One image of the project: its name, Dockerfile and repository (as in the chart and skaffold)."""

    name: str
    dockerfile: str
    repository: str
    chart_value: str  # the chart's value holding its repository and tag


IMAGES: dict[str, ImageSpec] = {
    spec.name: spec
    for spec in (
        ImageSpec("operator", "operator/Dockerfile", "ghcr.io/edgespec/operator", "image"),
        ImageSpec("edge", "edge_image/Dockerfile", "ghcr.io/edgespec/edge", "workloadImages.edge"),
        ImageSpec(
            "verifier", "verifier_image/Dockerfile", "ghcr.io/edgespec/verifier", "workloadImages.verifier"
        ),
    )
}


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to import: its ref, its OCI archive, and whether this call built it."""

    name: str
    ref: str
    archive: Path
    built: bool
    seconds: float

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the failing step, its log and what to do."""


def images_dir() -> Path:
    return cache_dir() / "images"


# ---------------------------------------------------------------------------------------------
# Content hashes


def dockerfile_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile reads: sources of ``COPY``/``ADD`` without ``--from``,
    and ``source=`` of bind mounts without ``from=``, in order of appearance."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words:
            continue
        instruction = words[0].upper()
        if instruction in ("COPY", "ADD"):
            flags = [w for w in words[1:] if w.startswith("--")]
            paths = [w for w in words[1:] if not w.startswith("--")]
            if not any(flag.startswith("--from=") for flag in flags):
                sources.extend(paths[:-1])
        elif instruction == "RUN":
            for word in words[1:]:
                if not word.startswith("--mount="):
                    continue
                options = dict(item.partition("=")[::2] for item in word.removeprefix("--mount=").split(","))
                if options.get("type", "bind") == "bind" and "from" not in options and "source" in options:
                    sources.append(options["source"])
    return sources


def _context_files(root: Path, relative: str) -> Iterator[Path]:
    """Files under ``root/relative`` that reach the build context (.dockerignore drops byte code)."""
    path = root / relative
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        raise ImageBuildError(f"{relative} is copied by a Dockerfile but does not exist under {root}")
    for candidate in sorted(path.rglob("*")):
        if "__pycache__" in candidate.parts or candidate.suffix == ".pyc" or not candidate.is_file():
            continue
        yield candidate


def context_digest(spec: ImageSpec, root: Path = REPO) -> str:
    """sha256 over the Dockerfile and every file it copies from the context (path and content)."""
    digest = hashlib.sha256()
    dockerfile = root / spec.dockerfile
    files = [dockerfile]
    for source in dockerfile_sources(dockerfile):
        files.extend(_context_files(root, source))
    for file in sorted(set(files)):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def image_key(spec: ImageSpec, *, base_ref: str, wheels_digest: str, root: Path = REPO) -> str:
    """The content hash of one image: its context, its base and its wheels."""
    material = {
        "context": context_digest(spec, root),
        "base": base_ref,
        "wheels": wheels_digest,
        "repository": spec.repository,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def chart_app_version(root: Path = REPO) -> str:
    match = re.search(
        r'^appVersion:\s*"?([^"\s]+)"?', (root / "charts/edgespec/Chart.yaml").read_text(), re.M
    )
    if match is None:
        raise ImageBuildError("charts/edgespec/Chart.yaml has no appVersion")
    return match.group(1)


def image_ref(spec: ImageSpec, key: str, root: Path = REPO) -> str:
    """``<repository>:<chart appVersion>-<first 12 hex of the content hash>``."""
    return f"{spec.repository}:{chart_app_version(root)}-{key[:12]}"


# ---------------------------------------------------------------------------------------------
# Host packages, buildah


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> None:
    """Install the Debian packages whose commands are missing (idempotent; needs root)."""
    missing = [name for name in packages if shutil.which(name) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"{', '.join(missing)} not installed and this is not root: run "
            f"`sudo apt-get install -y {' '.join(missing)}` and retry"
        )
    _say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ("-o", "DPkg::Lock::Timeout=600")
    for command in (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageBuildError(
                f"`{' '.join(command)}` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )


def _storage_driver() -> str:
    # overlay when the kernel has it (fast, shares layers); vfs copies every layer but works anywhere.
    override = os.environ.get("EDGESPEC_BUILDAH_DRIVER")
    if override:
        return override
    filesystems = Path("/proc/filesystems").read_text()
    return "overlay" if re.search(r"\boverlay$", filesystems, re.M) else "vfs"


def buildah_command(*args: str) -> list[str]:
    """A buildah command on the project's private storage (never the host's default store)."""
    storage = images_dir() / "storage"
    return [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        _storage_driver(),
        *args,
    ]


def run_buildah(*args: str, log: Path | None = None, label: str = "") -> str:
    """Run buildah; with ``log``, stream its output there and show each build step as progress."""
    command = buildah_command(*args)
    if log is None:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise ImageBuildError(f"`{shlex.join(command)}` failed:\n{result.stderr.strip()[-3000:]}")
        return result.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w") as out, _heartbeat(label or args[0]):
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        for line in process.stdout:
            out.write(f"{time.monotonic() - started:6.0f}s {line}")
            if re.match(r"\[\d+/\d+\] STEP|STEP \d+/\d+|venv-install:", line):
                _say(f"  {label} +{time.monotonic() - started:.0f}s: {line.strip()[:140]}")
        returncode = process.wait()
    if returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise ImageBuildError(f"{label or 'buildah'} failed (exit {returncode}); full log: {log}\n{tail}")
    return ""


def _release_mounts() -> None:
    # buildah 1.28 leaves the layer of a `RUN --mount=...,from=STAGE` stage mounted; nothing of ours
    # stays mounted between builds (the storage lock is held, so no build of ours is running).
    storage = str(images_dir() / "storage") + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(storage)), reverse=True):
        subprocess.run(["umount", mount], stdin=subprocess.DEVNULL, capture_output=True)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    path = images_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process's build to release {path} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------------------------
# Base image


def host_apt_sources() -> list[Path]:
    """The host's enabled apt source files (one-line ``.list`` and deb822 ``.sources``)."""
    files: list[Path] = []
    for location in APT_SOURCES:
        candidates = sorted(location.iterdir()) if location.is_dir() else [location]
        enabled = (f for f in candidates if f.is_file() and f.suffix in (".list", ".sources"))
        files += [f for f in enabled if f.read_text().strip()]
    if not files:
        raise ImageBuildError("no apt sources in /etc/apt/sources.list[.d]; the base is built from them")
    return files


def base_command(output: Path) -> list[str]:
    return [
        "mmdebstrap",
        *BASE_MMDEBSTRAP_OPTIONS,
        f"--include={','.join(BASE_PACKAGES)}",
        BASE_SUITE,
        str(output),
        *(str(f) for f in host_apt_sources()),
    ]


def base_key() -> str:
    """Hash of the base image's recipe: the mmdebstrap command (package list, sources) and config."""
    material = {
        "command": base_command(Path("OUT")),
        "sources": [f.read_text() for f in host_apt_sources()],
        "config": BASE_CONFIG,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def ensure_base() -> tuple[str, Path]:
    """Make (or reuse) the Debian base image's OCI archive; returns its local ref and the archive."""
    key = base_key()
    ref = f"localhost/edgespec-base:{key[:12]}"
    archive = images_dir() / "base" / f"edgespec-base-{key[:12]}.oci.tar"
    if archive.is_file():
        return ref, archive
    with _locked("storage"):
        if archive.is_file():
            return ref, archive
        started = time.monotonic()
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".mmdebstrap-") as scratch:
            rootfs = Path(scratch) / "rootfs.tar"
            log = archive.with_suffix(".log")
            _say(f"making the base image {ref} with mmdebstrap (first time, ~2 min; log {log})")
            with open(log, "w") as out, _heartbeat("mmdebstrap"):
                result = subprocess.run(
                    base_command(rootfs), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                )
            if result.returncode != 0:
                raise ImageBuildError(f"mmdebstrap failed (exit {result.returncode}); log: {log}")
            container = run_buildah("from", "--quiet", "scratch").strip()
            try:
                run_buildah("add", "--quiet", container, str(rootfs), "/")
                env = [f"--env={name}={value}" for name, value in BASE_CONFIG.items()]
                run_buildah("config", *env, "--cmd", '["python3"]', container)
                run_buildah("commit", "--quiet", container, ref)
            finally:
                run_buildah("rm", container)
            temp = archive.with_name(f".{archive.name}.{os.getpid()}")
            run_buildah("push", "--quiet", ref, f"oci-archive:{temp}:{ref}")
            os.replace(temp, archive)
        seconds = time.monotonic() - started
        _say(f"made the base image {ref} in {seconds:.0f}s ({_mib(archive)} MiB) -> {archive}")
        return ref, archive


def _load_base(ref: str, archive: Path) -> None:
    """Put the base image into buildah's store (from its archive) if it is not there; lock held."""
    present = subprocess.run(
        buildah_command("inspect", "--type", "image", ref), stdin=subprocess.DEVNULL, capture_output=True
    )
    if present.returncode != 0:
        _say(f"loading the base image {ref} from {archive}")
        image_id = run_buildah("pull", "--quiet", f"oci-archive:{archive}").split()[-1]
        run_buildah("tag", image_id, ref)


# ---------------------------------------------------------------------------------------------
# Wheelhouse


def image_lock_lines(root: Path = REPO) -> list[str]:
    """The pins (with hashes) of the three image locks, each once: what the wheelhouse must hold.

    The image locks are subsets of the dev lock the tests ran from (``locks check``), so one line per
    distribution."""
    lines = {pin.name: pin.line for name in locks.IMAGE_LOCKS for pin in locks.read_lock(name, root).values()}
    return [lines[name] for name in sorted(lines)]


def _project_llama_wheel() -> Path | None:
    """hack/env.sh's llama-cpp-python wheel (built without AMX from the lock's hashed sdist), if any."""
    wheels = os.environ.get("EDGESPEC_LLAMA_WHEELS")
    ours = sorted(Path(wheels).glob("llama_cpp_python-*.whl")) if wheels else []
    return ours[-1] if ours else None


def wheels_key(root: Path = REPO) -> str:
    material = {
        "locks": image_lock_lines(root),
        "python": sys.version_info[:2],
        "machine": platform.machine(),
        # hack/env.sh's llama-cpp-python wheel (its directory is keyed by version and build flags).
        "llama_wheels": os.environ.get("EDGESPEC_LLAMA_WHEELS", ""),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def ensure_wheelhouse(root: Path = REPO) -> tuple[Path, str]:
    """Make (or reuse) the wheelhouse; returns its directory and the digest of its wheels."""
    key = wheels_key(root)
    directory = images_dir() / "wheels" / key[:16]
    digest_file = directory / ".digest"
    if digest_file.is_file():
        return directory, digest_file.read_text().strip()
    with _locked(f"wheels-{key[:16]}"):
        if digest_file.is_file():
            return directory, digest_file.read_text().strip()
        started = time.monotonic()
        _say(f"collecting the images' wheels with pip wheel (from pip's cache where it can) -> {directory}")
        temp = directory.with_name(f".{directory.name}.{os.getpid()}")
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
        # Every pin --require-hashes, but llama-cpp-python when hack/env.sh's wheel stands in for it
        # (its hash is the compiler's, in no lock; the version is checked when it is copied in).
        llama = _project_llama_wheel()
        lines = [line for line in image_lock_lines(root) if not (llama and line.startswith(LLAMA_PREFIX))]
        requirements = temp / "requirements.lock"
        requirements.write_text("\n".join(lines) + "\n")
        command = [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--progress-bar", "off", "--no-deps",
            "--require-hashes", "--wheel-dir", str(temp), "--requirement", str(requirements),
        ]  # fmt: skip
        with _heartbeat("pip wheel"):
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(temp, ignore_errors=True)
            raise ImageBuildError(
                f"`pip wheel --require-hashes` of the image locks failed:\n{result.stderr.strip()[-3000:]}\n"
                "Check that PyPI is reachable and that the locks are current "
                "(`python -m edgespec_dev.locks check`)."
            )
        requirements.unlink()
        _use_project_llama_wheel(temp, root)
        digest = _wheels_digest(temp)
        (temp / ".digest").write_text(digest + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(temp, directory)
        count = len(list(directory.glob("*.whl")))
        _say(f"collected {count} wheels in {time.monotonic() - started:.0f}s")
        return directory, digest


def _use_project_llama_wheel(directory: Path, root: Path = REPO) -> None:
    """Put hack/env.sh's llama-cpp-python wheel (built without AMX, see there) in the wheelhouse.

    It must be of the version the image locks pin: the images install it by that version."""
    ours = _project_llama_wheel()
    if ours is None:
        return
    pinned = {pin.version for pin in locks.read_lock("verifier", root).values() if pin.name == locks.LLAMA}
    version = ours.name.split("-")[1]
    if pinned and version not in pinned:
        raise ImageBuildError(
            f"{ours} is llama-cpp-python {version}, the image locks pin {', '.join(pinned)}: "
            "re-run `source hack/env.sh` (it builds the pinned version)"
        )
    for other in directory.glob("llama_cpp_python-*.whl"):
        other.unlink()
    shutil.copy2(ours, directory / ours.name)


def _wheels_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for wheel in sorted(directory.glob("*.whl")):
        digest.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Images


def archive_path(spec: ImageSpec, key: str) -> Path:
    return images_dir() / "archives" / f"{spec.name}-{key[:16]}.oci.tar"


def ca_bundle() -> Path | None:
    """The CA bundle the host's TLS clients are told to use, if any (passed to builds as a secret)."""
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    return None


def ensure(name: str, root: Path = REPO) -> BuiltImage:
    """Build ``name`` from its Dockerfile, or reuse the archive of the same content hash."""
    spec = _spec(name)
    started = time.monotonic()
    ensure_host_packages()
    base_ref, base_archive = ensure_base()
    wheels, wheels_digest = ensure_wheelhouse(root)
    key = image_key(spec, base_ref=base_ref, wheels_digest=wheels_digest, root=root)
    ref = image_ref(spec, key, root)
    archive = archive_path(spec, key)
    if archive.is_file():
        _say(f"{name}: reusing {ref} ({archive})")
        return BuiltImage(name, ref, archive, built=False, seconds=time.monotonic() - started)
    with _locked("storage"):
        if archive.is_file():
            return BuiltImage(name, ref, archive, built=False, seconds=time.monotonic() - started)
        building = time.monotonic()
        _load_base(base_ref, base_archive)
        _say(f"{name}: building {ref} from {spec.dockerfile}")
        log = archive.with_suffix(".log")
        secret = ca_bundle()
        try:
            run_buildah(
                "bud",
                "--no-cache",  # (buildah takes --force-rm only with it; nothing is cached anyway)
                "--force-rm",  # a failed build leaves no container behind in the store
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--pull=never",
                "--file",
                str(root / spec.dockerfile),
                "--build-arg",
                f"BASE={base_ref}",
                "--build-context",
                f"wheels={wheels}",
                *(["--secret", f"id=cacert,src={secret}"] if secret else []),
                "--tag",
                ref,
                str(root),
                log=log,
                label=name,
            )
            temp = archive.with_name(f".{archive.name}.{os.getpid()}")
            # gzip level 1: a third faster than the default 6 here, for archives about 12% larger.
            pushing = time.monotonic()
            run_buildah("push", "--quiet", "--compression-level", "1", ref, f"oci-archive:{temp}:{ref}")
            _say(f"{name}: archived in {time.monotonic() - pushing:.0f}s")
            os.replace(temp, archive)
            run_buildah("rmi", ref)  # the archive is the cache; keep the store small
        finally:
            _release_mounts()
        _prune_archives(spec)
    seconds = time.monotonic() - started
    _say(f"{name}: built {ref} in {time.monotonic() - building:.0f}s ({_mib(archive)} MiB) -> {archive}")
    return BuiltImage(name, ref, archive, built=True, seconds=seconds)


def ensure_all(names: Sequence[str] = ()) -> dict[str, BuiltImage]:
    """Ensure several images (all of them when ``names`` is empty); returns name -> image."""
    return {name: ensure(name) for name in (names or list(IMAGES))}


def helm_values(images: Mapping[str, BuiltImage]) -> dict[str, str]:
    """Chart values that run the given images from the node's containerd (pullPolicy Never)."""
    values: dict[str, str] = {}
    for name, image in images.items():
        values[f"{IMAGES[name].chart_value}.repository"] = image.repository
        values[f"{IMAGES[name].chart_value}.tag"] = image.tag
    if "operator" in images:
        values["image.pullPolicy"] = "Never"
    if images.keys() & {"edge", "verifier"}:
        values["workloadImages.pullPolicy"] = "Never"
    return values


def _prune_archives(spec: ImageSpec) -> None:
    archives = sorted(
        (images_dir() / "archives").glob(f"{spec.name}-*.oci.tar"), key=lambda p: p.stat().st_mtime
    )
    for old in archives[:-ARCHIVES_KEPT]:
        old.unlink(missing_ok=True)
        old.with_suffix(".log").unlink(missing_ok=True)


def _spec(name: str) -> ImageSpec:
    try:
        return IMAGES[name]
    except KeyError:
        raise ImageBuildError(f"unknown image {name!r}; known images: {', '.join(IMAGES)}") from None


def _mib(path: Path) -> int:
    return path.stat().st_size // (1024 * 1024)


@contextmanager
def _heartbeat(label: str) -> Iterator[None]:
    # CI kills jobs that print nothing for long; a line every 30 s also reassures humans.
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(30):
            _say(f"  still running {label} ({time.monotonic() - started:.0f}s) ...")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _say(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgespec_dev.images ensure [all|NAME...]`` and ``... values [all|NAME...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.images",
        description=(
            "Build (once per content hash) the project's images from its Dockerfiles with buildah, on a "
            f"Debian base made by mmdebstrap; OCI archives are cached in {images_dir()} (set "
            "EDGESPEC_CACHE to move it). Import one with `ctr -n k8s.io images import ARCHIVE`."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    names_help = f"'all' or any of: {', '.join(IMAGES)}"
    ensure_cmd = commands.add_parser(
        "ensure", help="build if the content changed, then print NAME REF ARCHIVE"
    )
    ensure_cmd.add_argument("names", nargs="*", default=["all"], help=names_help)
    values_cmd = commands.add_parser(
        "values",
        help="ensure, then print the `helm --set` arguments that run these images (pullPolicy Never)",
    )
    values_cmd.add_argument("names", nargs="*", default=["all"], help=names_help)
    args = parser.parse_args(argv)
    names: list[str] = [] if "all" in args.names else list(args.names)
    try:
        images = ensure_all(names)
    except ImageBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.command == "values":
        print(" ".join(f"--set {key}={value}" for key, value in helm_values(images).items()))
    else:
        for image in images.values():
            print(f"{image.name} {image.ref} {image.archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
