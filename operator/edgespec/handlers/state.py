"""The operator's run-time state, held in kopf's ``memo`` rather than in module globals.

``python -m edgespec.handlers`` builds one :class:`OperatorState` with :func:`new_memo` and hands it to
``kopf.run(memo=...)``. kopf passes that operator-level memo to the start-up and clean-up handlers
and a shallow copy of it to every resource handler, so all of them reach the same state object
through :func:`state_of`, and two operators in one process (or two tests) share none of it.

The metrics are here too (``OperatorMetrics``, on a registry of their own). Only the crash-test write
counter (``handlers/faults.py``) stays per process on purpose: it counts the process's writes and
then kills the process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import kopf
from aiohttp import web

from edgespec.handlers.cache import Cache
from edgespec.handlers.metrics import OperatorMetrics
from edgespec.handlers.reconcile import Reconciler
from edgespec.handlers.workqueue import WorkQueue
from edgespec.settings import OperatorSettings

MEMO_KEY = "edgespec"
"""The key of the :class:`OperatorState` in kopf's memo."""


@dataclass
class OperatorState:
    """Everything the handlers share: settings, cache, work queue, and what start-up made."""

    settings: OperatorSettings
    cache: Cache = field(default_factory=Cache)
    queue: WorkQueue = field(default_factory=WorkQueue)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)  # served on /metrics
    reconciler: Reconciler | None = None  # set by the start-up handler, once the client exists
    tasks: list[asyncio.Task[None]] = field(
        default_factory=list
    )  # workers and watches, cancelled at clean-up
    runners: list[web.AppRunner] = field(default_factory=list)  # the HTTP server, cleaned up at clean-up


def new_memo(settings: OperatorSettings | None = None) -> kopf.Memo:
    """A kopf memo holding a fresh :class:`OperatorState` (settings from the environment if not given)."""
    memo = kopf.Memo()
    memo[MEMO_KEY] = OperatorState(settings if settings is not None else OperatorSettings())
    return memo


def state_of(memo: Any) -> OperatorState:
    """The operator's state in a memo kopf passed to a handler (the operator's, or an object's copy)."""
    state = memo.get(MEMO_KEY) if isinstance(memo, dict) else None
    if not isinstance(state, OperatorState):
        raise RuntimeError(
            "kopf's memo holds no edgespec state: run the operator with kopf.run(memo=new_memo())"
        )
    return state
