"""The load run's own venv: guidellm, and llama-cpp-python's OpenAI server as the target-only baseline.

guidellm needs torch and transformers (its tokenizer is built from the target GGUF through
transformers' GGUF loader, which imports torch), none of which the project's venv has, so it lives
apart: ``${EDGESPEC_CACHE:-~/.cache/edgespec}/guidellm-venvs/<guidellm version>-py<X.Y>``, built
once with pip from PyPI. llama-cpp-python's server (``llama-cpp-python[server]``, at the project's
pin) goes in too; its wheel comes from the one the project compiled (``hack/env.sh`` exports
``PIP_FIND_LINKS``), never built again. ``.complete`` records what was installed; when the wanted set
changes (another llama-cpp-python pin) the difference is installed into the same venv.
``python bench/guidellm_env.py`` makes (or reuses) it and prints its ``bin`` directory.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

GUIDELLM_VERSION = "0.8.1"
ROOT = Path(__file__).resolve().parents[1]


def requirements(version: str = GUIDELLM_VERSION) -> list[str]:
    """guidellm; gguf (transformers reads the tokenizer out of the GGUF with it); the baseline server."""
    pin = re.search(r'"llama-cpp-python==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    if pin is None:
        raise RuntimeError("pyproject.toml pins no llama-cpp-python")
    return [f"guidellm=={version}", "gguf", f"llama-cpp-python[server]=={pin.group(1)}"]


def venv_dir(version: str = GUIDELLM_VERSION) -> Path:
    cache = Path(os.environ.get("EDGESPEC_CACHE", Path.home() / ".cache" / "edgespec"))
    return cache / "guidellm-venvs" / f"{version}-py{sys.version_info.major}.{sys.version_info.minor}"


def ensure(version: str = GUIDELLM_VERSION) -> Path:
    """The venv's ``bin`` directory (``guidellm``, ``python`` for ``-m llama_cpp.server``); file-locked."""
    venv = venv_dir(version)
    marker = venv / ".complete"
    wanted = "\n".join(requirements(version)) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return venv / "bin"
        if not marker.exists():  # half-built or never built: from scratch (torch download: minutes)
            print(f"[guidellm-env] creating {venv}", file=sys.stderr, flush=True)
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "--progress-bar",
            "off",
        ]
        subprocess.run([*pip, "--only-binary=llama-cpp-python", *requirements(version)], check=True)
        subprocess.run([str(venv / "bin" / "guidellm"), "--version"], check=True)
        marker.write_text(wanted)
    return venv / "bin"


if __name__ == "__main__":
    print(ensure())
