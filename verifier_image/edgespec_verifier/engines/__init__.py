"""Verification engines behind one interface: score a context plus drafts, keep and roll back state.

An engine returns one row of target scores (logits or log-probabilities: anything whose softmax at a
temperature is the target's distribution) per draft position plus one for the bonus position; the
verdict itself is taken by :mod:`edgespec_verifier.acceptance`, the same for every engine. Engines are
blocking and not thread-safe: the server calls them from its one engine thread.

Each engine also tells how many context tokens a round (or a session's pre-read) had to compute, as
:class:`ContextReads` (the verifier's ``edgespec_verifier_context_tokens_total{kind}``), split by
:func:`context_reads` the same way for every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgespec.wire import VerifyRequest

import numpy as np
import numpy.typing as npt

ScoreRows = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ContextReads:
    """Context tokens one round computed (drafts not included), split by where they sit in the context.

    ``prompt``: computed positions inside the prompt (the first ``prompt_tokens`` of the context): a
    session's normal first read on a replica, again after eviction or a move, or a shared prefix's
    remainder. ``reread``: computed positions of the generated context except its last token, i.e.
    tokens of earlier rounds (accepted drafts, corrections, bonuses) that the engine had computed before
    and no longer held. The context's last token is needed for the first draft's scores and is, in steady
    state, the previous round's correction or bonus, which no verifier has computed yet: it is counted
    only when it is a prompt token, never as a re-read.
    """

    prompt: int = 0
    reread: int = 0


def context_reads(start: int, context: int, prompt_tokens: int | None) -> ContextReads:
    """The split of a round that computed context positions ``start .. context-1``.

    ``prompt_tokens`` None (a client that does not say) counts the whole context as prompt."""
    prompt_end = context if prompt_tokens is None else min(prompt_tokens, context)
    start = max(start, 0)
    return ContextReads(
        prompt=max(0, prompt_end - start), reread=max(0, context - 1 - max(start, prompt_end))
    )


Scored = tuple[ScoreRows, ContextReads]
"""One round's rows and the context tokens computed for it (an engine's ``score_many``)."""


class VerifyEngine(Protocol):
    name: str
    last_reads: ContextReads
    """Context tokens computed by the last ``score`` or ``open_session`` (read on the calling thread)."""

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


class BatchingEngine(VerifyEngine, Protocol):
    """An engine that verifies many sessions' rounds in one forward pass (llama.cpp, ``exact=False``);
    the server hands it every round that queued while its previous batch ran."""

    def score_many(self, requests: Sequence[VerifyRequest]) -> list[Scored | Exception]:
        """Per request, in order: its rows and context reads, or the error of that round alone."""
        ...
