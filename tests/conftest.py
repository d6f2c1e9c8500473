"""Test-suite wiring: the local control plane fixture (``cluster``) comes from the dev harness.

Parallel runs (``pytest -n 3``, what hack/test.sh does) use the scheduler below: every test module
is one unit of work, so a module's tests run in order on one worker and its module fixtures (an
operator process, loaded models) are made once. Each worker gets its own control plane (the
session-scoped ``cluster``). The modules that need the machine's one real node or build the images
form a single unit, so they share one worker and never run side by side. The modules in ``SPLIT``
hold independent, long tests: each of their tests is a unit of its own, so they spread over the
workers. Heavy units are handed out first, so no worker ends the run alone with a long one.

(xdist's own ``--dist loadgroup`` would say the same with marks, but it does not group at all on
pytest 9.2: pytest-dev/pytest-xdist#1386.)
"""

from __future__ import annotations

from typing import Any

import pytest

pytest_plugins = ["edgespec_dev.pytest_plugin"]

# One unit: the real node (one per machine) and the image builds whose archives it imports.
EXCLUSIVE = ("tests/e2e/test_realnode.py", "tests/images/test_images.py")
# Each test its own unit (the SIGKILL points are independent of each other).
SPLIT = ("tests/cluster/test_operator_crashes.py",)
# Modules that take minutes, in the order they are started.
HEAVY_FIRST = (
    *EXCLUSIVE,
    *SPLIT,
    "tests/dataplane/test_fuzz.py",
    "tests/dataplane/test_greedy_exact.py",
    "tests/cluster/test_operator_restarts.py",
)


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to (a worker runs a unit's tests in order)."""
    module = nodeid.split("::", 1)[0]
    if module in EXCLUSIVE:
        return "machine-exclusive"
    return nodeid if module in SPLIT else module


def _rank(item: pytest.Item) -> int:
    module = item.nodeid.split("::", 1)[0]
    return HEAVY_FIRST.index(module) if module in HEAVY_FIRST else len(HEAVY_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: within a rank, the collection order


class _UnitsOfWork:
    """xdist's scheduler hook, registered only where xdist is installed (the vLLM tier's venv lacks it)."""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class UnitScheduling(LoadScopeScheduling):  # type: ignore[misc]
            def _split_scope(self, nodeid: str) -> str:
                return unit_of(nodeid)

        config.option.loadscopereorder = False  # keep HEAVY_FIRST's order, not "most tests first"
        return UnitScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_UnitsOfWork(), "edgespec-units-of-work")
