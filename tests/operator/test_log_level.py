"""The chart's ``operator.logLevel`` reaches the operator: EDGESPEC_LOG_LEVEL sets its log level."""

from __future__ import annotations

import logging

import pytest
from edgespec.handlers.__main__ import configure_logging
from edgespec.settings import OperatorSettings
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("env", "level"), [("WARNING", logging.WARNING), ("debug", logging.DEBUG), ("ERROR", 40)]
)
def test_the_log_level_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, level: int
) -> None:
    monkeypatch.setenv("EDGESPEC_LOG_LEVEL", env)
    root = logging.getLogger()
    before = root.level
    try:
        configure_logging(OperatorSettings().log_level)
        assert root.level == level
        assert logging.getLogger("edgespec").isEnabledFor(logging.INFO) == (level <= logging.INFO)
    finally:
        root.setLevel(before)


def test_a_bad_log_level_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGESPEC_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        OperatorSettings()
