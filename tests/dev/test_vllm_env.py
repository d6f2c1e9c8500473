"""The vLLM tier's environment maker prints nothing but the assignments hack/vllm/test.sh evaluates.

A first (cold) run installs the venv and converts the target; the commands it runs print to their
stdout (pip, the import check's ``vllm 0.32.0``, the converter's progress). hack/vllm/test.sh runs
``eval "$(python -m edgespec_dev.vllm_env ensure)"``, so any of that on stdout is run as a command:
the cold run failed with ``vllm: command not found`` while every warm run passed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from edgespec_dev import vllm_env

ASSIGNMENT = re.compile(r"^EDGESPEC_VLLM_(PYTHON|TARGET)=\S+$")


def test_the_commands_of_a_cold_run_print_to_stderr_only(capfd: pytest.CaptureFixture[str]) -> None:
    vllm_env._run("import check", [sys.executable, "-c", "print('vllm 0.32.0')"])
    out, err = capfd.readouterr()
    assert out == ""
    assert "vllm 0.32.0" in err


def test_ensure_prints_only_assignments_on_a_cold_run(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def cold_venv() -> Path:  # what a first run does: commands that print
        vllm_env._run("import check", [sys.executable, "-c", "print('vllm 0.32.0')"])
        return tmp_path / "venv" / "bin" / "python"

    def cold_target(python: Path) -> Path:
        vllm_env._run("convert", [sys.executable, "-c", "print('Writing model shards: 100%')"])
        return tmp_path / "target"

    monkeypatch.setattr(vllm_env, "ensure_venv", cold_venv)
    monkeypatch.setattr(vllm_env, "ensure_target", cold_target)
    vllm_env.main(["ensure"])
    out, _ = capfd.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and all(ASSIGNMENT.match(line) for line in lines), out
