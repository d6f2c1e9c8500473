"""The llama.cpp verification engine (CPU; also what the tests and benchmarks run).

Each session owns a KV sequence (its own llama_context over shared weights), so a round evaluates only
the tokens the session has not seen (the previous round's correction or bonus plus the new drafts, K+1
in one batch) instead of re-reading the whole context; rejected drafts are rolled back from the cache
at commit. Sequences are pooled: at most ``max_sessions`` exist; the least recently used session loses
its sequence when a new one needs it, and simply re-reads its context on its next round (every request
carries the full context, so eviction costs time, never correctness). A freed sequence keeps its
tokens, so a new session whose prompt shares a prefix with it (a system prompt) starts warm.

Exact mode (the default) evaluates the prompt in batches and every later position one token per decode,
exactly as the target decoding alone does, because llama.cpp's CPU kernels are not batch-invariant:
batched verification flips the argmax at near-ties (about 1 position in 130 on Gemma 3 270M here). Exact
mode makes greedy output bit-identical to the target alone and costs about one single-token step per
drafted token; ``exact=False`` verifies the K+1 positions in one batch (cheaper per round, exact only up
to that rounding). See docs/dataplane.md.

Context reads (``last_reads``, exact): a round decodes context positions ``start .. len(context)-1``
then the drafts, where ``start`` is the sequence's common prefix with the context, capped at the last
context token (llama.cpp keeps no logits of earlier calls, so that token is always decoded again); in
exact mode a ``start`` inside the prompt is moved to 0 (the prompt is re-read from its beginning). In
steady state ``start`` is the last context token: the previous round's correction or bonus, nothing
re-read. A session new to this engine (moved here, or evicted from its sequence) decodes from 0, or
from its shared prefix with a reused sequence: its prompt counts as ``prompt``, its generated context
as ``reread``. Split by :func:`edgespec_verifier.engines.context_reads`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from edgespec_edge.chat import Role, render_chat
from edgespec_edge.llama_kv import KVSequence, LlamaRuntime
from edgespec_edge.prompting import prompt_tokens

from edgespec_verifier.engines import ContextReads, ScoreRows, context_reads


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        max_sessions: int = 8,
        n_batch: int = 64,
        exact: bool = True,
        runtime: LlamaRuntime | None = None,
    ) -> None:
        """Loads ``model_path``, or serves over a loaded ``runtime`` (shared weights, own sessions:
        a second replica in tests; the runtime stays open when this engine closes)."""
        self._owns_runtime = runtime is None
        if runtime is None:
            if model_path is None:
                raise ValueError("LlamaCppEngine needs a model_path or a runtime")
            runtime = LlamaRuntime(model_path, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch)
        self.runtime = runtime
        self.last_reads = ContextReads()
        self.max_sessions = max_sessions
        self.exact = exact
        self._sessions: OrderedDict[str, KVSequence] = OrderedDict()
        self._free: list[KVSequence] = []

    def _sequence_for(self, session_id: str, context: Sequence[int]) -> KVSequence:
        sequence = self._sessions.get(session_id)
        if sequence is not None:
            self._sessions.move_to_end(session_id)
            return sequence
        if self._free:
            # The free sequence sharing the longest prefix with this context saves the most work.
            best = max(range(len(self._free)), key=lambda i: self._free[i].common_prefix(context))
            sequence = self._free.pop(best)
        elif len(self._sessions) < self.max_sessions:
            sequence = self.runtime.new_sequence()
        else:
            _, sequence = self._sessions.popitem(last=False)
        self._sessions[session_id] = sequence
        return sequence

    def score(
        self, session_id: str, context: Sequence[int], draft: Sequence[int], prompt_tokens: int | None
    ) -> ScoreRows:
        sequence = self._sequence_for(session_id, context)
        step_from = (prompt_tokens or len(context)) if self.exact else None
        before = sequence.evaluated
        rows = sequence.logits([*context, *draft], first_row=len(context) - 1, step_from=step_from)
        self._count(sequence, before, len(context) + len(draft), len(context), prompt_tokens)
        return rows

    def _count(
        self, sequence: KVSequence, before: int, total: int, context: int, prompt_tokens: int | None
    ) -> None:
        start = total - (sequence.evaluated - before)  # decoding runs from start to the end
        self.last_reads = context_reads(start, context, prompt_tokens)

    def prompt_for(
        self,
        *,
        text: str | None = None,
        messages: Sequence[tuple[Role, str]] | None = None,
        tokens: Sequence[int] | None = None,
    ) -> list[int]:
        """A cloud-only request's prompt in the target's tokens (``PromptError`` when unusable)."""
        return prompt_tokens(
            self.runtime,
            lambda turns: render_chat(self.runtime, turns),
            text=text,
            messages=messages,
            tokens=tokens,
        )

    def commit(self, session_id: str, length: int) -> None:
        sequence = self._sessions.get(session_id)
        if sequence is not None:
            sequence.truncate(length)

    def open_session(self, session_id: str, context: Sequence[int]) -> int:
        sequence = self._sequence_for(session_id, context)
        self.last_reads = ContextReads()
        if context:
            before = sequence.evaluated
            sequence.logits(
                context, first_row=len(context) - 1, step_from=len(context) if self.exact else None
            )
            self._count(sequence, before, len(context), len(context), None)
        return len(sequence.tokens)

    def close_session(self, session_id: str) -> None:
        sequence = self._sessions.pop(session_id, None)
        if sequence is not None:
            self._free.append(sequence)

    def session_count(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        for sequence in [*self._sessions.values(), *self._free]:
            sequence.close()
        self._sessions.clear()
        self._free.clear()
        if self._owns_runtime:
            self.runtime.close()
