"""The dependency locks: CI's venv and every image install exact, hashed versions from them.

``python -m edgespec_dev.locks check`` must pass on the committed locks and fail, naming the
problem, when pyproject.toml changes without a new lock, an image lock drifts from the dev lock CI
installs, a pin loses its hash or no longer meets a requirement. The running venv (made by
hack/env.sh from the dev lock) must be exactly the dev lock. No network, no image build.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgespec_dev import locks


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """pyproject.toml and the four locks in a scratch tree we may change."""
    shutil.copy2(locks.REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for relative, _extra in locks.LOCKS.values():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(locks.REPO / relative, tmp_path / relative)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_committed_locks_pass_the_check_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgespec_dev.locks", "check"], capture_output=True, text=True, cwd=locks.REPO
    )
    assert result.returncode == 0, result.stderr
    assert locks.problems() == []


def test_every_lock_is_complete_and_fully_hashed() -> None:
    for name in locks.LOCKS:
        assert locks.closure_problems(name) == []
        pins = locks.read_lock(name)
        assert pins and all(pin.hashes for pin in pins.values())
        assert {"setuptools", "wheel"} <= pins.keys()  # the project's wheel builds from the lock too
    assert "kopf" in locks.read_lock("operator") and "llama-cpp-python" not in locks.read_lock("operator")
    for workload in ("edge", "verifier"):
        llama = locks.read_lock(workload)["llama-cpp-python"]
        assert llama.version == "0.3.36" and len(llama.hashes) == 1  # the sdist's (docs/images.md)
    assert "pytest" not in locks.read_lock("verifier")


def test_the_environment_ci_runs_is_the_dev_lock() -> None:
    assert locks.environment_drift() == []


def test_a_dependency_change_without_a_new_lock_fails(tree: Path) -> None:
    edit(tree / "pyproject.toml", '"aiohttp>=3.9",', '"aiohttp>=3.10",')
    assert any("pyproject.toml's dependencies changed" in p for p in locks.problems(tree))


def test_a_requirement_the_pin_does_not_meet_fails(tree: Path) -> None:
    edit(tree / "pyproject.toml", '"aiohttp>=3.9",', '"aiohttp>=99",')
    assert any("does not meet aiohttp>=99" in p for p in locks.problems(tree))


def test_an_image_lock_that_drifts_from_the_dev_lock_fails(tree: Path) -> None:
    lock = tree / "verifier_image/requirements.lock"
    pin = re.search(r"^aiohttp==(\S+)", lock.read_text(), re.M)
    assert pin is not None
    edit(lock, f"aiohttp=={pin.group(1)} ", "aiohttp==3.9.0 ")
    assert any(p.startswith("verifier_image/requirements.lock: aiohttp==3.9.0") for p in locks.problems(tree))


def test_a_pin_without_a_hash_fails(tree: Path) -> None:
    lock = tree / "operator/requirements.lock"
    lock.write_text(re.sub(r"^(kopf==\S+) .*$", r"\1", lock.read_text(), flags=re.M))
    found = locks.problems(tree)
    assert any("kopf==" in p and "has no hash" in p for p in found)


def test_a_missing_transitive_pin_fails(tree: Path) -> None:
    lock = tree / "edge_image/requirements.lock"
    lock.write_text(re.sub(r"^multidict==.*\n", "", lock.read_text(), flags=re.M))
    assert any("requires multidict" in p for p in locks.closure_problems("edge", tree))


def test_uv_output_becomes_one_sorted_line_per_distribution() -> None:
    text = (
        "Foo_Bar==1.0 \\\n    --hash=sha256:" + "b" * 64 + " \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "baz==2.0 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    assert locks.one_line(text) == {
        "foo-bar": f"foo-bar==1.0 --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}",
        "baz": f"baz==2.0 --hash=sha256:{'c' * 64}",
    }
