"""Fault injection for the crash tests: the operator SIGKILLs itself right after its Nth API write.

``EDGESPEC_CRASH_AFTER_WRITES=N`` makes the process count the writes it makes (server-side applies of
children and status, deletions, Events) and kill itself with SIGKILL, which nothing can catch or
clean up after, as soon as the Nth has been answered: a crash at a chosen point of a reconcile,
with everything before it written and nothing after. Unset or 0 (always, outside
``tests/cluster/test_operator_crashes.py``; the chart never sets it): writes are not even counted.
"""

from __future__ import annotations

import os
import signal

_LIMIT = int(os.environ.get("EDGESPEC_CRASH_AFTER_WRITES", "0") or 0)
_written = [0]


def wrote() -> None:
    """One API write was answered; the Nth one is the last this process makes."""
    if _LIMIT <= 0:
        return
    _written[0] += 1
    if _written[0] >= _LIMIT:
        os.kill(os.getpid(), signal.SIGKILL)
