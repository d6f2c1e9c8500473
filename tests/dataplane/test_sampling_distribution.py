"""Speculative sampling preserves the target's distribution (chi-square), and the test has teeth.

Real distributions from the real models: the draft's top-8 distribution q at temperature 1 (what the
edge samples from and sends) and the target's full-vocabulary p, precomputed for every path the K=2
draft can take (the draft's support is small, so the tree is 1 + 8 + 64 target rows). The production
rejection sampler (:func:`edgespec_verifier.acceptance.accept_sampling`) then runs many rounds with
fixed seeds. The first emitted token must follow p(.|c); the second, given the first draft was
accepted as a, must follow p(.|c, a). A control replaces the residual by p itself (a classic bug)
and the same test must reject it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from edgespec.wire import SamplingParams, SparseDistribution
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.loop import draft_distribution
from edgespec_verifier.acceptance import TargetDistribution, accept_sampling
from edgespec_verifier.engines.llamacpp import LlamaCppEngine

pytestmark = pytest.mark.models

TEMPERATURE = 1.0
TOP_N = 8
SAMPLES = 6000
PROMPTS = ["The best thing about summer is", "My favourite animal is the"]


def upper_gamma_regularized(a: float, x: float) -> float:
    """Q(a, x) = 1 - P(a, x), the chi-square survival function's core (series / continued fraction)."""
    if x <= 0:
        return 1.0
    log_prefix = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    b, c, d = x + 1 - a, 1e300, 1.0 / (x + 1 - a)
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1.0 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(log_prefix) * h


def chi_square_p_value(observed: Counter[int], expected_probs: np.ndarray) -> float:
    """Goodness of fit of the observed tokens to p: tokens expected >= 5 times get a bin, the rest pool."""
    n = sum(observed.values())
    bins = [int(t) for t in np.flatnonzero(expected_probs * n >= 5)]
    expected = [expected_probs[t] * n for t in bins]
    counts = [observed.get(t, 0) for t in bins]
    rest_expected = n - sum(expected)
    if rest_expected >= 5:
        expected.append(rest_expected)
        counts.append(n - sum(counts))
    statistic = sum((o - e) ** 2 / e for o, e in zip(counts, expected, strict=True))
    return upper_gamma_regularized((len(expected) - 1) / 2, statistic / 2)


TargetRows = Callable[[Sequence[list[int]]], Sequence[np.ndarray]]
"""The target's scores for the next token after each of many contexts (one row per context)."""


class Tree:
    """q and p for every path of a K=2 draft after one context, from the real models.

    ``target_rows`` computes the target's rows (default: one KV sequence, one context after another; the
    batched verifier's test passes rows from multi-sequence batches)."""

    def __init__(
        self, target: LlamaRuntime, draft: LlamaRuntime, prompt: str, target_rows: TargetRows | None = None
    ) -> None:
        context = target.tokenize(prompt)
        target_seq, draft_seq = target.new_sequence(), draft.new_sequence()
        try:

            def one_by_one(contexts: Sequence[list[int]]) -> list[np.ndarray]:
                return [target_seq.logits(tokens, len(tokens) - 1)[0] for tokens in contexts]

            def q(tokens: list[int]) -> SparseDistribution:
                return draft_distribution(draft_seq.logits(tokens, len(tokens) - 1)[0], TEMPERATURE, TOP_N)

            self.q1 = q(context)
            self.q2 = {x1: q([*context, x1]) for x1 in self.q1.tokens}
            paths = [(x1, x2) for x1 in self.q1.tokens for x2 in self.q2[x1].tokens]
            contexts = [context, *([*context, x1] for x1 in self.q1.tokens)]
            contexts += [[*context, *xs] for xs in paths]
            rows = (target_rows or one_by_one)(contexts)
            assert len(rows) == len(contexts)
            p = [TargetDistribution.from_scores(row, TEMPERATURE) for row in rows]
            self.p0 = p[0]
            self.p1 = dict(zip(self.q1.tokens, p[1 : 1 + len(self.q1.tokens)], strict=True))
            self.p2 = dict(zip(paths, p[1 + len(self.q1.tokens) :], strict=True))
        finally:
            target_seq.close()
            draft_seq.close()

    def targets(self, x1: int, x2: int) -> Callable[[int], TargetDistribution]:
        return lambda i: (self.p0, self.p1[x1], self.p2[(x1, x2)])[i]


Sampler = Callable[
    [Callable[[int], TargetDistribution], Sequence[int], Sequence[SparseDistribution], np.random.Generator],
    tuple[int, int],
]


def wrong_accept(
    target: Callable[[int], TargetDistribution],
    draft: Sequence[int],
    draft_probs: Sequence[SparseDistribution],
    rng: np.random.Generator,
) -> tuple[int, int]:
    """The control: right acceptance test, but resamples from p instead of the residual."""
    for position, (token, q) in enumerate(zip(draft, draft_probs, strict=True)):
        p = target(position)
        if rng.random() < min(1.0, float(p.probs[token]) / q.probs[q.tokens.index(token)]):
            continue
        return position, p.sample(rng)
    return len(draft), target(len(draft)).sample(rng)


def run(tree: Tree, sampler: Sampler, seed: int) -> tuple[float, float]:
    """p-values of the first emitted token, and of the second given the most frequent accepted first."""
    rng = np.random.default_rng(seed)
    first: Counter[int] = Counter()
    second: dict[int, Counter[int]] = {}
    for _ in range(SAMPLES):
        x1 = tree.q1.tokens[int(rng.choice(len(tree.q1.tokens), p=tree.q1.probs))]
        q2 = tree.q2[x1]
        x2 = q2.tokens[int(rng.choice(len(q2.tokens), p=q2.probs))]
        accepted, next_token = sampler(tree.targets(x1, x2), [x1, x2], [tree.q1, q2], rng)
        emitted = [*[x1, x2][:accepted], next_token]
        first[emitted[0]] += 1
        if accepted >= 1:
            second.setdefault(x1, Counter())[emitted[1]] += 1
    a = max(second, key=lambda t: sum(second[t].values()))
    return chi_square_p_value(first, tree.p0.probs), chi_square_p_value(second[a], tree.p1[a].probs)


@pytest.fixture(scope="module")
def trees(engine: LlamaCppEngine, draft_runtime: LlamaRuntime) -> list[Tree]:
    return [Tree(engine.runtime, draft_runtime, prompt) for prompt in PROMPTS]


def test_rejection_sampling_matches_target_distribution(trees: list[Tree]) -> None:
    for index, tree in enumerate(trees):
        p_first, p_second = run(tree, accept_sampling, seed=1000 + index)
        assert p_first > 1e-3, f"prompt {index}: first token deviates from p (p-value {p_first:.2e})"
        assert p_second > 1e-3, f"prompt {index}: second token deviates from p (p-value {p_second:.2e})"


def test_control_wrong_rule_is_caught(trees: list[Tree]) -> None:
    p_values = [
        value for index, tree in enumerate(trees) for value in run(tree, wrong_accept, seed=1000 + index)
    ]
    assert min(p_values) < 1e-6, f"the chi-square test missed a wrong acceptance rule: {p_values}"


def test_draft_distribution_is_what_is_sampled(draft_runtime: LlamaRuntime) -> None:
    row = np.array([0.0, 2.0, 1.0, -1.0], dtype=np.float32)
    q = draft_distribution(row, 1.0, 2)
    assert sorted(q.tokens) == [1, 2]
    assert math.isclose(sum(q.probs), 1.0)
    assert SamplingParams(temperature=0.0).greedy
