"""The verifier's command line: arguments after ``--`` (the chart's spec.verifier.vllmArgs) reach vLLM."""

from __future__ import annotations

import pytest
from edgespec_verifier.__main__ import parse_engine_args


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
