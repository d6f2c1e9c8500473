"""A de-duplicating work queue, like client-go's: a key queued many times is reconciled once.

A key being reconciled is never handed to a second worker; if it is queued again meanwhile it runs
once more afterwards, so no event is lost and no two reconciles of one object race.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

Key = tuple[str, str]

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0


def backoff_delay(failures: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter, capped: ``base * 2^(failures-1)`` times a factor in [0.5, 1).

    The jitter keeps many keys failing together (an API server restart) from retrying in lockstep.
    """
    exponent = min(max(failures - 1, 0), 16)
    jitter = 0.5 + float((rng or random).random()) / 2
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**exponent) * jitter


class WorkQueue:
    """Keys waiting, keys in flight, and keys dirtied while in flight."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._waiting: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}

    def retry(self, key: Key) -> float:
        """After a failed reconcile: queue ``key`` again after its next backoff; returns the delay."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        delay = backoff_delay(failures)
        self.add_later(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        """After a reconcile that succeeded: the key's next failure starts its backoff over."""
        self._failures.pop(key, None)

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._queue.put_nowait(key)

    def add_later(self, key: Key, delay_s: float) -> None:
        """Queue ``key`` after ``delay_s``; one timer per key, the earliest wins."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= loop.time() + delay_s:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_later(delay_s, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def worker(self, handle: Callable[[Key], Awaitable[None]]) -> None:
        while True:
            key = await self._queue.get()
            self._waiting.discard(key)
            self._active.add(key)
            try:
                await handle(key)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)

    @property
    def depth(self) -> int:
        return self._queue.qsize()
