"""Every bad input the command line can get: one line on stderr naming the input or field, exit code 2.

One row per case of issue 13 (item 3), plus the same non-finite numbers through the EdgeProfile type
the operator and the CRD use. ``rank | head -1`` runs through a real pipe.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from edgespec.api.objective import Constraints
from edgespec.api.profile import EdgeProfileSpec
from edgespec.cli import EXIT_USAGE, main
from edgespec.configspec import ProfileLoadError, load_profiles_text
from pydantic import ValidationError

from .conftest import ILLUSTRATIVE, REPO

P = str(ILLUSTRATIVE)
Args = Callable[[Path], list[str]]


def _profile_text(**spec_overrides: object) -> str:
    doc = yaml.safe_load(ILLUSTRATIVE.read_text(encoding="utf-8").split("\n---\n")[1])
    doc["spec"].update(spec_overrides)
    return yaml.safe_dump(doc)


def _file(name: str, content: str | bytes) -> Callable[[Path], str]:
    def write(tmp: Path) -> str:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    return write


def _plot_onto_file(tmp: Path) -> list[str]:
    (tmp / "taken.png").write_bytes(b"x")
    return ["plot", "--profiles", P, "--target", "llama-3.1-70b", "--out", str(tmp / "taken.png")]


def _plot_under_file(tmp: Path) -> list[str]:
    (tmp / "plain").write_text("x", encoding="utf-8")
    return ["plot", "--profiles", P, "--target", "llama-3.1-70b", "--out", str(tmp / "plain" / "figs")]


def _rank(*extra: str) -> Args:
    return lambda _tmp: ["rank", "--profiles", P, *extra]


def _rank_file(make: Callable[[Path], str], *extra: str) -> Args:
    return lambda tmp: ["rank", "--profiles", make(tmp), *extra]


BINARY = _file("model.gguf", b"GGUF\x03\x00\x00\x00\xff\xfe\x00\x80" * 16)
BROKEN_YAML = _file("broken.yaml", "apiVersion: edgespec.dev/v1alpha1\nkind: EdgeProfile\nspec: [a, b\n")
INF_SPEED = _file("inf.yaml", _profile_text(draftTokensPerS=float("inf")))
NAN_POWER = _file("nan.yaml", _profile_text(powerWatts=float("nan")))

CASES: list[tuple[str, Args, list[str]]] = [
    ("plot --out onto a file", _plot_onto_file, ["--out", "taken.png", "is a file"]),
    ("plot --out under a file", _plot_under_file, ["--out", "cannot write", "plain"]),
    ("nan --verify-latency", _rank("--verify-latency", "nan"), ["--verify-latency", "not a finite number"]),
    ("inf --verify-latency", _rank("--verify-latency", "inf"), ["--verify-latency", "not a finite number"]),
    ("negative --verify-latency", _rank("--verify-latency", "-1"), ["--verify-latency", ">= 0"]),
    ("nan --price", _rank("--price", "llama-3.1-70b=nan"), ["--price llama-3.1-70b", "not a finite"]),
    ("nan --constraint", _rank("--constraint", "min-goodput=nan"), ["--constraint min-goodput", "finite"]),
    (
        "inf --constraint",
        _rank("--constraint", "max-joules-per-token=inf"),
        ["max-joules-per-token", "finite"],
    ),
    ("nan --weights", _rank("--objective", "weighted", "--weights", "goodput=nan"), ["--weights goodput"]),
    ("reversed --k range", _rank("--k", "10-2"), ["--k '10-2'", "range is empty", "write 2-10"]),
    ("--k beyond the API", _rank("--k", "1-65"), ["--k '1-65'", "between 1 and 64"]),
    ("binary profile file", _rank_file(BINARY), ["model.gguf", "not a text file"]),
    ("malformed YAML", _rank_file(BROKEN_YAML), ["broken.yaml", "not valid YAML", "line 4"]),
    ("infinite draftTokensPerS", _rank_file(INF_SPEED), ["inf.yaml", "spec.draftTokensPerS", "finite"]),
    ("NaN powerWatts", _rank_file(NAN_POWER), ["nan.yaml", "spec.powerWatts", "finite"]),
    ("--device-memory unknown class", _rank("--device-memory", "rpi3=8Gi"), ["--device-memory rpi3", "rpi5"]),
    ("--top -1", _rank("--top", "-1"), ["--top '-1'", ">= 0"]),
    ("--top not a number", _rank("--top", "three"), ["--top 'three'", "whole number"]),
    ("argparse error", _rank("--objective", "speed"), ["--objective", "invalid choice"]),
]


@pytest.mark.parametrize(("make_args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_it_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make_args: Args, expected: list[str]
) -> None:
    argv = make_args(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE, (out, err)
    assert err.count("\n") == 1 and err.startswith(f"edgespec {argv[0]}: error: "), err
    for part in expected:
        assert part in err, err
    assert "Traceback" not in err


def test_rank_into_a_closed_pipe_stops_quietly() -> None:
    """``edgespec rank | head -1``: no BrokenPipeError traceback, nothing on stderr."""
    proc = subprocess.run(
        f"{sys.executable} -m edgespec rank --profiles {P} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    assert proc.stdout.startswith("== target llama-3.1-70b")
    assert proc.stderr == ""


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_the_profile_type_rejects_non_finite_numbers(value: float) -> None:
    """The same type parses files, objects from the API server (operator) and generates the CRD."""
    base = yaml.safe_load(_profile_text())["spec"]
    for field in ("draftTokensPerS", "powerWatts", "perTokenAcceptance"):
        with pytest.raises(ValidationError, match=field):
            EdgeProfileSpec.model_validate({**base, field: value})
    with pytest.raises(ValidationError, match="fixedS"):
        EdgeProfileSpec.model_validate({**base, "verifyLatency": {"fixedS": value}})
    with pytest.raises(ValidationError, match="alpha"):
        EdgeProfileSpec.model_validate({**base, "acceptance": [{"k": 2, "alpha": value}]})
    with pytest.raises(ValidationError):
        Constraints(min_goodput_tokens_per_s=value)
    with pytest.raises(ProfileLoadError, match=r"spec\.draftTokensPerS"):
        load_profiles_text(_profile_text(draftTokensPerS=value), "cluster object")


def test_the_crd_bounds_every_profile_number() -> None:
    """The API server cannot be sent NaN (JSON has none); an infinity fails the CRD's maximum."""
    crd = yaml.safe_load((REPO / "crds" / "edgespec.dev_edgeprofiles.yaml").read_text(encoding="utf-8"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for field in ("draftTokensPerS", "powerWatts", "perTokenAcceptance"):
        assert "maximum" in spec[field], field
    for field in ("fixedS", "perTokenS", "networkRttS"):
        assert "maximum" in spec["verifyLatency"]["properties"][field], field
