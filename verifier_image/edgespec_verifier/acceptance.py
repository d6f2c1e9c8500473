"""Deciding a verify round from the target's scores: exact greedy and distribution-preserving sampling.

Engines only score (one row of target logits or log-probabilities per draft position, plus one for the
bonus position); this module turns the rows into the verdict, so both engines share one proven rule.

Greedy: accept draft i while it equals the target's argmax; the next token is the argmax at the first
mismatch (correction) or after the last draft (bonus). The output is then exactly the target's own
greedy decoding.

Sampling (Leviathan et al. 2023; Chen et al. 2023): accept draft x_i with probability
min(1, p_i(x_i) / q_i(x_i)); at the first rejection sample from the residual norm(max(0, p_i - q_i));
when all K are accepted sample the bonus from p_K. The emitted tokens are then distributed exactly as
the target's samples, whatever the draft distribution q was, provided the draft really drew x_i from q_i.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from edgespec.wire import SparseDistribution

FloatRows = npt.NDArray[np.floating]
Probabilities = npt.NDArray[np.float64]


def softmax(scores: npt.NDArray[np.floating], temperature: float) -> Probabilities:
    """The target's next-token distribution from logits (or log-probabilities) at ``temperature``."""
    scaled = scores.astype(np.float64) / temperature
    scaled -= scaled.max()
    weights = np.exp(scaled)
    result: Probabilities = weights / weights.sum()
    return result


def accept_greedy(rows: FloatRows, draft: Sequence[int]) -> tuple[int, int]:
    """(accepted count, next token) for greedy verification; ``rows`` has len(draft) + 1 rows."""
    for position, token in enumerate(draft):
        best = int(np.argmax(rows[position]))
        if best != token:
            return position, best
    return len(draft), int(np.argmax(rows[len(draft)]))


class TargetDistribution:
    """The target's distribution at one position, with a cached CDF so repeated draws are O(log V)."""

    def __init__(self, probs: Probabilities) -> None:
        self.probs = probs
        self._cdf: Probabilities | None = None

    @classmethod
    def from_scores(cls, scores: npt.NDArray[np.floating], temperature: float) -> TargetDistribution:
        return cls(softmax(scores, temperature))

    def sample(self, rng: np.random.Generator) -> int:
        if self._cdf is None:
            self._cdf = np.cumsum(self.probs)
        index = int(np.searchsorted(self._cdf, rng.random() * self._cdf[-1], side="right"))
        return min(index, len(self.probs) - 1)

    def sample_residual(self, draft: SparseDistribution, rng: np.random.Generator) -> int:
        """One draw from norm(max(0, p - q)) for a sparse q, without a pass over the vocabulary.

        Off q's support the residual is p itself; on it, max(0, p - q). So: pick the support part or
        the rest by their masses, then draw within it (the rest by drawing from p until off-support).
        """
        support = np.asarray(draft.tokens, dtype=np.int64)
        excess = np.maximum(0.0, self.probs[support] - np.asarray(draft.probs, dtype=np.float64))
        excess_mass = float(excess.sum())
        outside_mass = max(0.0, 1.0 - float(self.probs[support].sum()))
        total = excess_mass + outside_mass
        if total <= 1e-12:  # p equals q: a rejection cannot happen, but stay total
            return self.sample(rng)
        u = rng.random() * total
        if u < excess_mass:
            index = int(np.searchsorted(np.cumsum(excess), u, side="right"))
            return int(support[min(index, len(support) - 1)])
        if outside_mass < 1e-3:  # drawing from p until off-support would loop long: mask instead
            rest = self.probs.copy()
            rest[support] = 0.0
            return TargetDistribution(rest / rest.sum()).sample(rng)
        members = set(draft.tokens)
        while True:
            token = self.sample(rng)
            if token not in members:
                return token


def accept_sampling(
    target: Callable[[int], TargetDistribution],
    draft: Sequence[int],
    draft_probs: Sequence[SparseDistribution],
    rng: np.random.Generator,
) -> tuple[int, int]:
    """(accepted count, next token) by rejection sampling; ``target(i)`` is p at draft position i."""
    for position, (token, q) in enumerate(zip(draft, draft_probs, strict=True)):
        p = target(position)
        q_token = q.probs[q.tokens.index(token)]
        if q_token > 0.0 and rng.random() < min(1.0, float(p.probs[token]) / q_token):
            continue
        return position, p.sample_residual(q, rng)
    return len(draft), target(len(draft)).sample(rng)
