"""The project's Python dependency locks: exact versions with hashes, one per image and one for CI.

``python -m edgespec_dev.locks lock`` resolves ``pyproject.toml`` with uv (a pinned version, installed
once into ``${EDGESPEC_CACHE}/uv/<version>`` from PyPI with pip) and writes:

- ``hack/requirements-dev.lock``: ``.[dev]``, what hack/env.sh installs (``--require-hashes``) into the
  venv that every test tier and CI run;
- ``operator/requirements.lock``, ``edge_image/requirements.lock``, ``verifier_image/requirements.lock``:
  ``.[operator]``, ``.[edge]``, ``.[verifier]``, what each Dockerfile installs (``--require-hashes``,
  hack/images/venv-install.sh). They are resolved with the dev lock's pins as constraints, so each
  image lock is a subset of the dev lock, line for line: the images run the versions CI tested.

Every lock also holds the build backend (``setuptools``, ``wheel``), so the project's own wheel is
built without unhashed downloads. One line per distribution: ``name==version --hash=sha256:...``
with the hash of every file PyPI has for that version (the amd64 and arm64 wheels and the sdist), and
the dev resolution is done for linux x86_64 and aarch64 and must give the same pins for both.

**llama-cpp-python** is on PyPI as an sdist only; its line carries the sdist's hash. hack/env.sh
compiles that hash-checked sdist once into a local wheel (without AMX; see there), whose hash
depends on the compiler and flags and so cannot be in a lock. That wheel is installed by the exact
version the lock pins (``--no-deps --no-index``, from the local wheel directory); every other
distribution is installed ``--require-hashes``. The trust in the wheel is that of the sdist it was
built from here (docs/images.md, "Locked dependencies").

Without ``--upgrade``, uv keeps the versions the existing dev lock pins wherever they still satisfy
pyproject.toml. ``python -m edgespec_dev.locks check`` (offline; hack/test.sh and tests/images/
test_locks.py) fails when pyproject.toml changed since the locks were made, an image lock differs
from the dev lock, a requirement is not met, a pin lacks a hash or a pinned distribution's own
requirements are missing.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edgespec_dev.tools import cache_dir

REPO = Path(__file__).resolve().parents[2]
UV_VERSION = "0.13.8"
PYTHON = "3.11"
PLATFORMS = ("x86_64-manylinux_2_28", "aarch64-manylinux_2_28")
# The build backend of the project's own wheel (pyproject.toml [build-system]) and bdist_wheel.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")
LLAMA = "llama-cpp-python"
# name -> (lock path relative to the repository, the extra of pyproject.toml it locks)
LOCKS: dict[str, tuple[str, str]] = {
    "dev": ("hack/requirements-dev.lock", "dev"),
    "operator": ("operator/requirements.lock", "operator"),
    "edge": ("edge_image/requirements.lock", "edge"),
    "verifier": ("verifier_image/requirements.lock", "verifier"),
}
IMAGE_LOCKS = ("operator", "edge", "verifier")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


class LockError(RuntimeError):
    """A lock is missing, stale or inconsistent; the message says which and what to run."""


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    hashes: tuple[str, ...]
    line: str


def lock_path(name: str, root: Path = REPO) -> Path:
    return root / LOCKS[name][0]


def parse_lock(text: str) -> dict[str, Pin]:
    """The pins of a lock in this module's one-line format (comments and blank lines skipped)."""
    pins: dict[str, Pin] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match is None:
            raise LockError(f"not a pin: {line[:100]}")
        name = canonicalize_name(match.group(1))
        pins[name] = Pin(name, match.group(2), tuple(HASH.findall(line)), line)
    return pins


def read_lock(name: str, root: Path = REPO) -> dict[str, Pin]:
    path = lock_path(name, root)
    if not path.is_file():
        raise LockError(f"{path.relative_to(root)} is missing: run `python -m edgespec_dev.locks lock`")
    return parse_lock(path.read_text())


def _project(root: Path) -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return project


def input_digest(root: Path = REPO) -> str:
    """sha256 of what the locks are made from: pyproject.toml's dependencies and the resolver setup."""
    project = _project(root)
    material = {
        "dependencies": project["dependencies"],
        "optional-dependencies": project["optional-dependencies"],
        "build": BUILD_REQUIREMENTS,
        "python": PYTHON,
        "platforms": PLATFORMS,
        "uv": UV_VERSION,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def header(name: str, root: Path = REPO) -> list[str]:
    extra = LOCKS[name][1]
    return [
        f"# Generated by `python -m edgespec_dev.locks lock` from pyproject.toml .[{extra}] and the build"
        " backend; do not edit.",
        f"# CPython {PYTHON}, linux x86_64 and aarch64, uv {UV_VERSION}. Installed with --require-hashes"
        f" (except {LLAMA}: see docs/images.md).",
        f"# inputs: sha256:{input_digest(root)}",
    ]


def requirements_of(extra: str, root: Path = REPO) -> list[Requirement]:
    """The top-level requirements a lock must meet: core, the extra (recursively), the backend."""
    project = _project(root)
    optional = project["optional-dependencies"]
    assert isinstance(optional, dict)
    dependencies = project["dependencies"]
    assert isinstance(dependencies, list)
    found: list[Requirement] = [Requirement(r) for r in (*dependencies, *BUILD_REQUIREMENTS)]
    pending, seen = [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for text in optional[current]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(str(project["name"])):
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def problems(root: Path = REPO) -> list[str]:
    """Everything wrong with the committed locks, offline; empty when they are good."""
    found: list[str] = []
    digest = input_digest(root)
    locks: dict[str, dict[str, Pin]] = {}
    for name, (relative, extra) in LOCKS.items():
        try:
            text = lock_path(name, root).read_text()
        except FileNotFoundError:
            found.append(f"{relative} is missing")
            continue
        if f"# inputs: sha256:{digest}" not in text:
            found.append(f"{relative} was made from other inputs: pyproject.toml's dependencies changed")
        try:
            pins = locks[name] = parse_lock(text)
        except LockError as error:
            found.append(f"{relative}: {error}")
            continue
        for pin in pins.values():
            if not pin.hashes:
                found.append(f"{relative}: {pin.name}=={pin.version} has no hash")
        for requirement in requirements_of(extra, root):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            met = pins.get(canonicalize_name(requirement.name))
            if met is None:
                found.append(f"{relative}: {requirement} is not pinned")
            elif not requirement.specifier.contains(met.version, prereleases=True):
                found.append(f"{relative}: {met.name}=={met.version} does not meet {requirement}")
    dev = locks.get("dev", {})
    for name in IMAGE_LOCKS:
        relative = LOCKS[name][0]
        for pin in locks.get(name, {}).values():
            other = dev.get(pin.name)
            if other is None or other.line != pin.line:
                found.append(f"{relative}: {pin.line[:80]} differs from the dev lock's pin")
    return found


def closure_problems(name: str, root: Path = REPO) -> list[str]:
    """Pinned distributions whose own requirements (per the installed metadata) the lock lacks.

    Reads the metadata of the running environment, which hack/env.sh installs from the dev lock."""
    pins = read_lock(name, root)
    environment = {key: str(value) for key, value in default_environment().items()}
    environment["extra"] = ""
    found = []
    for pin in pins.values():
        try:
            requires = importlib.metadata.requires(pin.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not in this environment (the build backend of an image lock)
        for text in requires:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            if canonicalize_name(requirement.name) not in pins:
                found.append(f"{LOCKS[name][0]}: {pin.name} requires {requirement}, which is not pinned")
    return found


def environment_drift(root: Path = REPO) -> list[str]:
    """Where the running environment differs from the dev lock (hack/env.sh installs exactly it)."""
    found = []
    for pin in read_lock("dev", root).values():
        try:
            installed = importlib.metadata.version(pin.name)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{pin.name}=={pin.version} is locked but not installed")
            continue
        if installed != pin.version:
            found.append(f"{pin.name}=={pin.version} is locked, {installed} is installed")
    return found


# ---------------------------------------------------------------------------------------------
# Making the locks (needs PyPI)


def ensure_uv() -> Path:
    """uv at UV_VERSION, installed once from PyPI into its own venv under the cache."""
    venv = cache_dir() / "uv" / UV_VERSION
    uv = venv / "bin" / "uv"
    if (venv / ".complete").is_file():
        return uv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"uv=={UV_VERSION}"],
        check=True,
    )
    (venv / ".complete").touch()
    return uv


def one_line(text: str) -> dict[str, str]:
    """uv's requirements output (continued lines) as name -> one line, in the format of this module."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    lines: dict[str, str] = {}
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match is None:
            raise LockError(f"unexpected line from uv: {line[:100]}")
        name = canonicalize_name(match.group(1))
        hashes = sorted(HASH.findall(line))
        lines[name] = f"{name}=={match.group(2)} " + " ".join(f"--hash=sha256:{h}" for h in hashes)
    return lines


def compile_lock(
    extra: str, platform: str, *, root: Path, preferences: Path | None, constraints: Iterable[str] = ()
) -> dict[str, str]:
    uv = ensure_uv()
    with tempfile.TemporaryDirectory() as scratch:
        build = Path(scratch) / "build.in"
        build.write_text("\n".join(BUILD_REQUIREMENTS) + "\n")
        output = Path(scratch) / "out.txt"
        if preferences is not None and preferences.is_file():
            shutil.copy2(preferences, output)  # uv prefers the versions the output file already pins
        command = [
            str(uv), "pip", "compile", str(root / "pyproject.toml"), str(build), "--extra", extra,
            "--generate-hashes", "--no-header", "--no-annotate", "--quiet",
            "--python-version", PYTHON, "--python-platform", platform, "--output-file", str(output),
        ]  # fmt: skip
        pins = list(constraints)
        if pins:
            (Path(scratch) / "constraints.txt").write_text("\n".join(pins) + "\n")
            command += ["--constraint", str(Path(scratch) / "constraints.txt")]
        result = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
        if result.returncode != 0:
            raise LockError(f"uv pip compile .[{extra}] for {platform} failed:\n{result.stderr[-3000:]}")
        return one_line(output.read_text())


def write_lock(name: str, lines: dict[str, str], root: Path = REPO) -> None:
    body = [lines[key] for key in sorted(lines)]
    lock_path(name, root).write_text("\n".join([*header(name, root), *body]) + "\n")


def lock(root: Path = REPO, *, upgrade: bool = False) -> None:
    dev_path = lock_path("dev", root)
    preferences = None if upgrade else dev_path
    resolved = {p: compile_lock("dev", p, root=root, preferences=preferences) for p in PLATFORMS}
    first, *others = PLATFORMS
    for platform in others:
        if resolved[platform] != resolved[first]:
            differ = sorted(set(resolved[platform].items()) ^ set(resolved[first].items()))
            raise LockError(f"{first} and {platform} resolve differently: {differ[:6]}")
    dev = resolved[first]
    write_lock("dev", dev, root)
    constraints = [line.split(" ", 1)[0] for line in dev.values()]
    for name in IMAGE_LOCKS:
        lines = compile_lock(
            LOCKS[name][1], first, root=root, preferences=lock_path(name, root), constraints=constraints
        )
        write_lock(name, lines, root)
    for name in LOCKS:
        print(f"wrote {len(read_lock(name, root))} pins to {LOCKS[name][0]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgespec_dev.locks", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("lock", help="resolve pyproject.toml (needs PyPI) and write every lock")
    make.add_argument("--upgrade", action="store_true", help="newest versions, not the dev lock's")
    commands.add_parser("check", help="offline: the locks match pyproject.toml and each other")
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            lock(upgrade=args.upgrade)
            return 0
        found = problems()
        found += [p for name in LOCKS if not found for p in closure_problems(name)]
    except LockError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in found:
        print(f"lock: {problem}", file=sys.stderr)
    if found:
        print("run `python -m edgespec_dev.locks lock` and commit the locks", file=sys.stderr)
        return 1
    print(f"{len(LOCKS)} locks match pyproject.toml and each other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
