"""The ``edgespec`` command line: output, exit codes and messages that say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from edgespec.cli import EXIT_INFEASIBLE, EXIT_OK, EXIT_USAGE, build_parser, main

from .conftest import ILLUSTRATIVE

MEMORY = ["--device-memory", "rpi4b=8Gi,rpi5=8Gi", "--device-memory", "jetson-agx-orin=64Gi"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rank_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "rank", "--profiles", str(ILLUSTRATIVE), *MEMORY)
    assert code == EXIT_OK, err
    llama, qwen = out.split("== target qwen3-32b")
    assert llama.startswith("== target llama-3.1-70b (0.90 USD per 1M tokens)")
    assert "rpi5: objective goodput; 45 of 54 configurations feasible" in llama
    assert "rpi5: objective goodput; 35 of 40 configurations feasible" in qwen
    assert "goodput tok/s" in out and "why: Highest goodput on rpi4b" in out
    assert "Pareto front" in out
    assert "qwen3" not in llama and "llama-3.2" not in qwen  # targets never share a table


def test_rank_json_and_yaml_agree(capsys: pytest.CaptureFixture[str]) -> None:
    _, out_json, _ = run(
        capsys, "rank", "--profiles", str(ILLUSTRATIVE), "--objective", "energy", "-o", "json"
    )
    _, out_yaml, _ = run(
        capsys, "rank", "--profiles", str(ILLUSTRATIVE), "--objective", "energy", "-o", "yaml"
    )
    doc = json.loads(out_json)
    assert doc == yaml.safe_load(out_yaml)
    assert doc["objective"] == {"kind": "energy"}
    assert list(doc["targets"]) == ["llama-3.1-70b", "qwen3-32b"]
    qwen = doc["targets"]["qwen3-32b"]
    assert qwen["kValues"] == [2, 4, 6, 8, 10] and qwen["priceUsdPerMillionTokens"] == 0.59
    assert qwen["deviceClasses"]["rpi4b"]["choice"]["draftModel"] == "qwen3-0.6b"
    assert doc["targets"]["llama-3.1-70b"]["deviceClasses"]["rpi4b"]["choice"]["draftModel"] == "llama-3.2-1b"


def test_weighted_with_weights(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "rank",
        "--profiles",
        str(ILLUSTRATIVE),
        "--objective",
        "weighted",
        "--weights",
        "goodput=2,energy=1",
    ]
    code, out, _ = run(capsys, *args)
    assert code == EXIT_OK and "Best weighted score" in out and "goodput 0.67" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--objective", "weighted"], "needs --weights"),
        (["--weights", "goodput=1"], "only to --objective weighted"),
        (["--objective", "weighted", "--weights", "speed=1"], "unknown objective 'speed'"),
        (["--constraint", "min-speed=3"], "unknown constraint 'min-speed'"),
        (["--constraint", "min-goodput"], "expected NAME=VALUE"),
        (["--constraint", "min-goodput=fast"], "is not a number"),
        (["--constraint", "memory-headroom=2"], "memory_headroom_fraction"),
        (["--device-memory", "rpi5=lots"], "not a byte quantity"),
        (["--k", "two-ten"], "use a range"),
        (["--target", "gpt-5"], "the profiles have"),
        (["--price", "llama-3.1-70b=cheap"], "is not a number"),
    ],
)
def test_usage_errors_say_what_to_fix(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, "rank", "--profiles", str(ILLUSTRATIVE), *extra)
    assert code == EXIT_USAGE
    assert message in err and err.startswith("edgespec rank: error:")


def test_unknown_objective_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["rank", "--profiles", str(ILLUSTRATIVE), "--objective", "latency"])
    assert info.value.code == EXIT_USAGE
    assert "invalid choice: 'latency'" in capsys.readouterr().err


def test_bad_profile_file_names_file_document_and_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = list(yaml.safe_load_all(ILLUSTRATIVE.read_text()))[:2]
    docs[1]["spec"]["draftTokensPerS"] = -3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    code, _, err = run(capsys, "rank", "--profiles", str(bad))
    assert code == EXIT_USAGE
    assert str(bad) in err and "document 2" in err and "spec.draftTokensPerS" in err


def test_missing_file_and_wrong_kind(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "rank", "--profiles", str(tmp_path / "nope.yaml"))
    assert code == EXIT_USAGE and "cannot read" in err
    other = tmp_path / "deploy.yaml"
    other.write_text("apiVersion: edgespec.dev/v1alpha1\nkind: SpeculativeDeployment\nspec: {}\n")
    code, _, err = run(capsys, "rank", "--profiles", str(other))
    assert code == EXIT_USAGE and "expected EdgeProfile" in err


def test_kubectl_list_is_read(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    items = list(yaml.safe_load_all(ILLUSTRATIVE.read_text()))
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    code, out, _ = run(capsys, "rank", "--profiles", str(listed), "-o", "json")
    assert code == EXIT_OK and len(json.loads(out)["targets"]["qwen3-32b"]["deviceClasses"]) == 3


def test_infeasible_exits_1_and_names_the_constraint(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "rank", "--profiles", str(ILLUSTRATIVE), "--constraint", "min-goodput=3.5", *MEMORY
    )
    assert code == EXIT_INFEASIBLE
    assert "rpi4b: NO FEASIBLE CONFIGURATION (binding: minGoodputTokensPerS)" in out
    assert "highest goodput reachable is 2.21 tokens/s" in err
    assert "jetson-agx-orin: objective goodput" in out  # the feasible class is still reported


def test_plot_writes_pngs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "plot", "--profiles", str(ILLUSTRATIVE), *MEMORY, "--out", str(tmp_path))
    assert code == EXIT_OK
    for target in ("llama-3.1-70b", "qwen3-32b"):  # one set per target, never mixed
        for name in ("goodput_vs_k.png", "cost_vs_k.png", "energy_vs_k.png", "pareto.png"):
            data = (tmp_path / target / name).read_bytes()
            assert data.startswith(b"\x89PNG") and len(data) > 20_000
            assert f"{target}/{name}" in out
    code, out, _ = run(
        capsys, "plot", "--profiles", str(ILLUSTRATIVE), "--target", "qwen3-32b", "--out", str(tmp_path / "q")
    )
    assert code == EXIT_OK and (tmp_path / "q" / "pareto.png").exists()


def test_parser_is_extensible() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    assert "rank" in help_text and "plot" in help_text


def test_rank_reproduces_the_papers_k_per_device_and_target(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["rank", "--profiles", str(ILLUSTRATIVE), *MEMORY, "--verify-latency", "0.5", "-o", "json"]
    found = {}
    for objective in ("goodput", "cost", "energy"):
        code, out, _ = run(capsys, *base, "--objective", objective)
        assert code == EXIT_OK
        targets = json.loads(out)["targets"]
        found[objective] = {
            (t, d): s["choice"] for t, doc in targets.items() for d, s in doc["deviceClasses"].items()
        }
    k = {key: c["k"] for key, c in found["goodput"].items()}
    assert k[("qwen3-32b", "rpi4b")] == 2 and k[("qwen3-32b", "rpi5")] == 6
    assert k[("llama-3.1-70b", "rpi5")] == 2  # the Llama 1B draft is too slow for a longer K
    assert k[("llama-3.1-70b", "jetson-agx-orin")] == k[("qwen3-32b", "jetson-agx-orin")] == 10
    assert all(c["k"] == 2 and c["draftModel"].endswith("8b") for c in found["cost"].values())
    smallest = {"llama-3.1-70b": "llama-3.2-1b", "qwen3-32b": "qwen3-0.6b"}
    assert all(c["k"] == 2 and c["draftModel"] == smallest[t] for (t, _), c in found["energy"].items())


def test_unknown_memory_and_origin_in_the_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = list(yaml.safe_load_all(ILLUSTRATIVE.read_text()))[1]
    for field in ("memoryBytes", "modelSizeBytes", "origin"):
        del doc["spec"][field]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(doc))
    args = ["rank", "--profiles", str(bare), "--device-memory", "rpi4b=100Mi"]
    code, out, err = run(capsys, *args)
    assert code == EXIT_INFEASIBLE and "--assume-fits" in err
    code, out, err = run(capsys, *args, "--assume-fits")
    assert code == EXIT_OK, err
    header, first = out.splitlines()[2:4]
    assert "profile origin" in header and first.rstrip().endswith("unknown  unknown")
    assert "assumed to fit" in out
