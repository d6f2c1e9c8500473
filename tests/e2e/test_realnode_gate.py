"""Where a real node cannot run, the e2e tier says why and is skipped, except under CI=true, where it fails.

The machine's inability is the one thing that cannot be produced for real on a machine that can
host a node, so ``why_not`` is replaced (a stand-in for "not root") in an inner pytest run that
uses the real plugin and a test asking for ``real_cluster``.
"""

from __future__ import annotations

import pytest
from edgespec_dev import pytest_plugin

pytest_plugins = ["pytester"]

INNER_TEST = """
def test_needs_the_real_node(real_cluster):
    raise AssertionError("must not run")
"""
INNER_ARGS = ("-p", "edgespec_dev.pytest_plugin", "-o", "asyncio_default_fixture_loop_scope=function")
REASON = "a real node needs root (containerd, cgroups, iptables, bridges); run as root"


@pytest.fixture
def unable_machine(monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester) -> pytest.Pytester:
    monkeypatch.setattr(pytest_plugin, "why_not", lambda: REASON)
    pytester.makepyfile(test_inner=INNER_TEST)
    return pytester


def test_the_tier_is_skipped_with_the_reason(
    unable_machine: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = unable_machine.runpytest_inprocess(*INNER_ARGS, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*this machine cannot host a real node: {REASON}*"])


def test_under_ci_the_tier_fails_with_the_reason(
    unable_machine: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = unable_machine.runpytest_inprocess(*INNER_ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*CI=true and this machine cannot host the real node*{REASON}*"])
