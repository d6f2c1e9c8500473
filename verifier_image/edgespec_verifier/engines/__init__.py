"""Verification engines behind one interface: score a context plus drafts, keep and roll back state.

An engine returns one row of target scores (logits or log-probabilities: anything whose softmax at a
temperature is the target's distribution) per draft position plus one for the bonus position; the
verdict itself is taken by :mod:`edgespec_verifier.acceptance`, the same for every engine. Engines are
blocking and not thread-safe: the server calls them from its one engine thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

ScoreRows = npt.NDArray[np.float32]


class VerifyEngine(Protocol):
    name: str

    def score(
        self, session_id: str, context: Sequence[int], draft: Sequence[int], prompt_tokens: int | None
    ) -> ScoreRows:
        """Rows (len(draft) + 1, n_vocab): the target's scores for each draft position and the bonus.

        ``prompt_tokens`` (when known) is how much of ``context`` is the prompt."""
        ...

    def commit(self, session_id: str, length: int) -> None:
        """The first ``length`` tokens of the last scored sequence stand; forget the rest (rollback)."""
        ...

    def open_session(self, session_id: str, context: Sequence[int]) -> int:
        """Pre-read ``context``; returns how many tokens the session now caches."""
        ...

    def close_session(self, session_id: str) -> None: ...

    def session_count(self) -> int: ...

    def close(self) -> None: ...
