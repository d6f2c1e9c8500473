"""The verifier's command line: arguments after ``--`` (the chart's spec.verifier.vllmArgs) reach vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgespec_verifier.__main__ import check_model, parse_engine_args
from edgespec_verifier.server import VerifierSettings


def test_engine_args_become_vllm_keyword_arguments() -> None:
    args = [
        "--",
        "--tensor-parallel-size=8",
        "--max-model-len",
        "8192",
        "--enforce-eager",
        "--dtype=bfloat16",
    ]
    assert parse_engine_args(args) == {
        "tensor_parallel_size": 8,
        "max_model_len": 8192,
        "enforce_eager": True,
        "dtype": "bfloat16",
    }


def test_a_stray_word_is_refused_with_the_expected_form() -> None:
    with pytest.raises(SystemExit, match="expected --name=value"):
        parse_engine_args(["--", "tensor-parallel-size=8"])


def test_batched_llamacpp_refuses_more_sessions_than_llamacpp_sequences(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    settings = VerifierSettings(model=str(model), exact=False, max_sessions=257)
    with pytest.raises(ValueError, match="at most 256"):
        check_model(settings)
    check_model(settings.model_copy(update={"max_sessions": 256}))
    check_model(settings.model_copy(update={"exact": True}))  # one context per session: no such limit
