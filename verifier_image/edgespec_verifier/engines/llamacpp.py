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

:class:`BatchedLlamaCppEngine` (what the verifier runs with ``exact=False``) goes one step further: its
sessions are sequences of one shared llama_context (:class:`edgespec_edge.llama_kv.SharedKV`), and
:meth:`~BatchedLlamaCppEngine.score_many` verifies the rounds of many sessions in one multi-sequence
decode, each round with its own logits rows. The server hands it every round that queued while the
previous decode ran. Same session pool (``max_sessions``, LRU, freed slots keep their tokens), same
context reads, same per-session context window; exact only up to batch rounding, like ``exact=False``.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from edgespec.wire import VerifyRequest
from edgespec_edge.chat import Role, render_chat
from edgespec_edge.llama_kv import ContextFullError, KVSequence, LlamaRuntime, SharedKV
from edgespec_edge.prompting import prompt_tokens

from edgespec_verifier.engines import ContextReads, Scored, ScoreRows, context_reads

H = TypeVar("H")


class SessionPool(Generic[H]):
    """Sessions' KV holders (a sequence each, or a slot of a shared context), at most ``limit`` in use.

    A session keeps its holder until it is closed or, when a new session needs one and all are taken,
    evicted as the least recently used. A closed session's holder keeps its tokens on the free list, where
    the next new session takes the one sharing the longest prefix with its context (a system prompt).
    """

    def __init__(
        self, limit: int, new: Callable[[], H], common_prefix: Callable[[H, Sequence[int]], int]
    ) -> None:
        self.limit = limit
        self.sessions: OrderedDict[str, H] = OrderedDict()
        self.free: list[H] = []
        self._new = new
        self._common_prefix = common_prefix

    def get(self, session_id: str) -> H | None:
        return self.sessions.get(session_id)

    def take(self, session_id: str, context: Sequence[int]) -> H:
        """The session's holder: its own, a free one, a new one, or the least recently used session's."""
        holder = self.sessions.get(session_id)
        if holder is not None:
            self.sessions.move_to_end(session_id)
            return holder
        if self.free:
            # The free holder sharing the longest prefix with this context saves the most work.
            best = max(range(len(self.free)), key=lambda i: self._common_prefix(self.free[i], context))
            holder = self.free.pop(best)
        elif len(self.sessions) < self.limit:
            holder = self._new()
        else:
            _, holder = self.sessions.popitem(last=False)
        self.sessions[session_id] = holder
        return holder

    def release(self, session_id: str) -> None:
        holder = self.sessions.pop(session_id, None)
        if holder is not None:
            self.free.append(holder)

    def drain(self) -> list[H]:
        """Every holder, in use or free; the pool is empty afterwards."""
        holders = [*self.sessions.values(), *self.free]
        self.sessions.clear()
        self.free.clear()
        return holders


class _OnRuntime:
    """A model loaded here, or a loaded ``runtime`` served over (shared weights, own sessions: a second
    replica in tests; the runtime stays open when the engine closes)."""

    name = "llamacpp"

    def __init__(
        self,
        model_path: str | Path | None,
        runtime: LlamaRuntime | None,
        *,
        n_ctx: int,
        n_threads: int,
        n_batch: int,
        max_sessions: int,
    ) -> None:
        self._owns_runtime = runtime is None
        if runtime is None:
            if model_path is None:
                raise ValueError(f"{type(self).__name__} needs a model_path or a runtime")
            runtime = LlamaRuntime(model_path, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch)
        self.runtime = runtime
        self.last_reads = ContextReads()
        self.max_sessions = max_sessions

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

    def _close_runtime(self) -> None:
        if self._owns_runtime:
            self.runtime.close()


class LlamaCppEngine(_OnRuntime):
    """One llama_context per session, sessions served one after another (exact mode's engine)."""

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
        """Loads ``model_path``, or serves over a loaded ``runtime``."""
        super().__init__(
            model_path, runtime, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, max_sessions=max_sessions
        )
        self.exact = exact
        self._pool: SessionPool[KVSequence] = SessionPool(
            max_sessions, self.runtime.new_sequence, lambda sequence, tokens: sequence.common_prefix(tokens)
        )
        self._sessions = self._pool.sessions

    def _sequence_for(self, session_id: str, context: Sequence[int]) -> KVSequence:
        return self._pool.take(session_id, context)

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

    def commit(self, session_id: str, length: int) -> None:
        sequence = self._pool.get(session_id)
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
        self._pool.release(session_id)

    def session_count(self) -> int:
        return len(self._pool.sessions)

    def close(self) -> None:
        for sequence in self._pool.drain():
            sequence.close()
        self._close_runtime()


class BatchedLlamaCppEngine(_OnRuntime):
    """Sessions as sequences of one shared llama_context; many sessions' rounds in one decode.

    The verifier's engine for ``exact=False``. Slots (llama.cpp sequence ids ``0 .. max_sessions-1``)
    are pooled like :class:`LlamaCppEngine`'s sequences: a session keeps its slot until it is closed
    (the slot, with its tokens, goes to the free list, where a new session sharing a prefix with it
    finds it warm) or evicted as the least recently used when every slot is taken.
    """

    exact = False

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        max_sessions: int = 8,
        n_batch: int = 256,
        runtime: LlamaRuntime | None = None,
    ) -> None:
        """Loads ``model_path`` (or serves over ``runtime``) and one context of ``max_sessions`` slots of
        ``n_ctx`` tokens each; ``n_batch`` tokens per ``llama_decode``."""
        super().__init__(
            model_path, runtime, n_ctx=n_ctx, n_threads=n_threads, n_batch=64, max_sessions=max_sessions
        )
        try:
            self.kv = SharedKV(self.runtime, max_sessions, n_batch=n_batch)
        except BaseException:
            self._close_runtime()
            raise
        # A new slot is needed only while every slot made so far is in use: the next id is the count.
        self._pool: SessionPool[int] = SessionPool(
            max_sessions, lambda: len(self._pool.sessions), self.kv.common_prefix
        )

    def _slot_for(self, session_id: str, context: Sequence[int]) -> int:
        return self._pool.take(session_id, context)

    def slot_of(self, session_id: str) -> int | None:
        """The slot (llama.cpp sequence id) the session holds, if any."""
        return self._pool.get(session_id)

    def score_many(self, requests: Sequence[VerifyRequest]) -> list[Scored | Exception]:
        """Each round's rows (as :meth:`score`) and context reads, or the error of that round alone.

        Rounds go into as few decodes as possible: one wave holds each session at most once and at most
        ``max_sessions`` sessions (a session's second round, or the rounds beyond, wait for the next
        wave), so a round never loses its slot to another round of its own wave."""
        results: list[Scored | Exception | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:
            wave: list[int] = []
            later: list[int] = []
            sessions: set[str] = set()
            for index in pending:
                session_id = requests[index].session_id
                if session_id in sessions or len(wave) == self.max_sessions:
                    later.append(index)
                else:
                    sessions.add(session_id)
                    wave.append(index)
            self._score_wave(requests, wave, results)
            pending = later
        return [result for result in results if result is not None]

    def _score_wave(
        self,
        requests: Sequence[VerifyRequest],
        wave: Sequence[int],
        results: list[Scored | Exception | None],
    ) -> None:
        reads: list[tuple[int, list[int], int]] = []
        members: list[int] = []
        for index in wave:
            request = requests[index]
            total = len(request.tokens) + len(request.draft)
            if total > self.runtime.n_ctx:  # refused alone, before it can take a slot
                results[index] = ContextFullError(
                    f"{total} tokens exceed the context window of {self.runtime.n_ctx}"
                )
                continue
            slot = self._slot_for(request.session_id, request.tokens)
            reads.append((slot, [*request.tokens, *request.draft], len(request.tokens) - 1))
            members.append(index)
        if not reads:
            return
        try:
            out = self.kv.read(reads)
        except Exception as exc:  # the decode failed: every round of it answers with the error
            for index in members:
                results[index] = exc
            return
        for index, (rows, start) in zip(members, out, strict=True):
            request = requests[index]
            results[index] = (rows, context_reads(start, len(request.tokens), request.prompt_tokens))

    def score(
        self, session_id: str, context: Sequence[int], draft: Sequence[int], prompt_tokens: int | None
    ) -> ScoreRows:
        request = VerifyRequest(
            session_id=session_id, tokens=list(context), draft=list(draft), prompt_tokens=prompt_tokens
        )
        (result,) = self.score_many([request])
        if isinstance(result, Exception):
            raise result
        rows, self.last_reads = result
        return rows

    def commit(self, session_id: str, length: int) -> None:
        slot = self._pool.get(session_id)
        if slot is not None:
            self.kv.truncate(slot, length)

    def open_session(self, session_id: str, context: Sequence[int]) -> int:
        self.last_reads = ContextReads()
        if len(context) > self.runtime.n_ctx:
            raise ContextFullError(f"{len(context)} tokens exceed the context window of {self.runtime.n_ctx}")
        slot = self._slot_for(session_id, context)
        if context:
            ((_, start),) = self.kv.read([(slot, context, len(context) - 1)])
            self.last_reads = context_reads(start, len(context), None)
        return len(self.kv.tokens[slot])

    def close_session(self, session_id: str) -> None:
        self._pool.release(session_id)

    def session_count(self) -> int:
        return len(self._pool.sessions)

    def close(self) -> None:
        self._pool.drain()
        self.kv.close()
        self._close_runtime()
