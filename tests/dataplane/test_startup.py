"""A server started without what it needs says so in one line and exits with code 2 (no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGESPEC_")}
    return subprocess.run(
        [sys.executable, "-m", *args], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["edgespec_verifier", "--model", "x.gguf"], {}, "no verifier token"),
        (["edgespec_verifier"], {"EDGESPEC_VERIFIER_TOKEN": "t"}, "no model"),
        (
            ["edgespec_verifier", "--model", "/nonexistent.gguf"],
            {"EDGESPEC_VERIFIER_TOKEN": "t"},
            "does not exist",
        ),
        (
            ["edgespec_edge", "serve", "--draft-model", "/nonexistent.gguf"],
            {"EDGESPEC_EDGE_VERIFIER_TOKEN": "t"},
            "does not exist",
        ),
        (["edgespec_edge", "serve"], {"EDGESPEC_EDGE_DRAFT_MODEL": __file__}, "no verifier token"),
    ],
    ids=["verifier-token", "verifier-model", "verifier-model-file", "edge-model-file", "edge-token"],
)
def test_missing_token_or_model_is_one_line_and_exit_2(
    args: list[str], env: dict[str, str], says: str, tmp_path: Path
) -> None:
    result = _run(args, env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert says in lines[0] and "Traceback" not in result.stderr
