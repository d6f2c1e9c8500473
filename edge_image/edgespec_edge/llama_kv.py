"""llama.cpp with explicit KV state: a model loaded once, and sequences that keep their KV cache.

Both sides of the protocol need the same thing from llama-cpp-python: evaluate only the tokens a
sequence has not seen yet, read the logits of chosen positions (one for a draft step, K+1 for a verify
round), and roll the KV cache back when drafts are rejected. ``Llama.eval`` keeps logits of every
position only with ``logits_all=True``, which allocates n_ctx x n_vocab floats (2 GB for Gemma 3's 262k
vocabulary at n_ctx 2048), so this module drives llama.cpp's batch API directly (pinned to
llama-cpp-python 0.3.36) and copies out just the rows it asked for.

Each ``KVSequence`` is its own ``llama_context`` over the shared model weights, so sessions never
disturb each other's cache. The SWA cache is full-size (``swa_full``): Gemma 3's sliding-window layers
would otherwise drop positions a rollback needs. The verifier package imports this module too (both
images install the one ``edgespec`` distribution).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


def _token_to_piece(vocab: Any, token: int, special: bool = False, size: int = 64) -> bytes:
    """One piece through llama.cpp, retried with the size it asks for when ``size`` is too small."""
    import ctypes

    import llama_cpp

    buffer = ctypes.create_string_buffer(size)
    n = int(llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, special))
    if n < 0:
        size = -n
        buffer = ctypes.create_string_buffer(size)
        n = int(llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, special))
        if n < 0:
            raise RuntimeError(f"token {token}: llama_token_to_piece failed with a {size}-byte buffer")
    return buffer.raw[:n]


class ContextFullError(RuntimeError):
    """The sequence would exceed the context window (n_ctx)."""


class LlamaRuntime:
    """One GGUF model in memory: tokenizer, metadata, and a factory of KV sequences."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 64,
    ) -> None:
        from llama_cpp import Llama

        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.llama: Any = Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            swa_full=True,
            verbose=False,
        )
        self.n_vocab: int = int(self.llama.n_vocab())
        self._vocab: Any = self.llama._model.vocab
        self._pieces: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def token_piece(self, token: int) -> bytes:
        """The bytes of one token's piece, whatever its length (special tokens render empty).

        llama-cpp-python 0.3.36's ``LlamaModel.detokenize`` gives each piece a 32-byte buffer and
        silently yields nothing for a longer one (379 of Gemma 3's tokens, up to 48 bytes, mostly
        Indic words). ``llama_token_to_piece`` returns minus the size it needs when the buffer is too
        small, so this retries once with exactly that size.
        """
        piece = self._pieces.get(token)
        if piece is None:
            piece = _token_to_piece(self._vocab, token)
            self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """The text bytes of ``tokens``: their pieces joined (no leading space is stripped)."""
        return b"".join(self.token_piece(token) for token in tokens)

    def is_end_of_generation(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llama._model.vocab, token))

    def special_piece(self, token: int) -> str:
        """A special token's text as templates write it (``<bos>``), not the empty text it decodes to."""
        return _token_to_piece(self._vocab, token, special=True).decode("utf-8", "replace")

    def metadata(self, key: str) -> str | None:
        value = self.llama.metadata.get(key)
        return str(value) if value is not None else None

    def new_sequence(self) -> KVSequence:
        return KVSequence(self)

    def close(self) -> None:
        self.llama.close()


class KVSequence:
    """One token sequence with its own KV cache; evaluates only what changed since the last call."""

    def __init__(self, runtime: LlamaRuntime) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._llama_cpp: Any = llama_cpp
        self.runtime = runtime
        with runtime._lock:
            self._ctx: Any = _internals.LlamaContext(
                model=runtime.llama._model, params=runtime.llama.context_params, verbose=False
            )
        self._batch: Any = _internals.LlamaBatch(n_tokens=runtime.n_batch, embd=0, n_seq_max=1, verbose=False)
        self.tokens: list[int] = []
        """Tokens whose K and V are in the cache, in order (position i holds tokens[i])."""
        self.evaluated = 0
        """Positions decoded over the sequence's life (the work done; re-reads count again)."""

    def common_prefix(self, tokens: Sequence[int]) -> int:
        n = 0
        for cached, wanted in zip(self.tokens, tokens, strict=False):
            if cached != wanted:
                break
            n += 1
        return n

    def truncate(self, length: int) -> None:
        """Drop cached positions from ``length`` on (the rollback of rejected drafts)."""
        if length < len(self.tokens):
            self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, 0, length, -1)
            del self.tokens[length:]

    def logits(self, tokens: Sequence[int], first_row: int, step_from: int | None = None) -> Logits:
        """Logits predicting the token after each position ``first_row .. len(tokens)-1``.

        Reuses the cached common prefix, rolls back the rest, evaluates the remainder, and returns an
        array of shape (len(tokens) - first_row, n_vocab). Positions before ``step_from`` are evaluated
        in batches of n_batch from position 0; positions from ``step_from`` on one token per decode.

        Why ``step_from``: llama.cpp's CPU kernels are not batch-invariant (the same position's logits
        differ by up to ~0.4 on average between a batched and a token-by-token evaluation), so an argmax
        near a tie can flip. A target decoding alone reads its prompt in batches and then one token at
        a time; a verifier that evaluates its positions the same way reproduces it bit for bit.
        """
        total = len(tokens)
        if not 0 <= first_row < total:
            raise ValueError(f"first_row {first_row} outside 0..{total - 1}")
        if total > self.runtime.n_ctx:
            raise ContextFullError(f"{total} tokens exceed the context window of {self.runtime.n_ctx}")
        batched_until = total if step_from is None else min(step_from, total)
        # Positions whose logits we need must be (re)evaluated: llama.cpp keeps no logits of old batches.
        start = min(self.common_prefix(tokens), first_row)
        if step_from is not None and 0 < start < batched_until:
            start = 0  # re-read the batched part exactly as it was first read, from position 0
        self.truncate(start)
        rows = np.empty((total - first_row, self.runtime.n_vocab), dtype=np.float32)
        try:
            position = start
            while position < total:
                if position < batched_until:
                    end = min(
                        batched_until, position - position % self.runtime.n_batch + self.runtime.n_batch
                    )
                else:
                    end = position + 1
                self._decode(tokens, position, end, first_row, rows)
                position = end
        except BaseException:
            self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, 0, 0, -1)
            self.tokens.clear()
            raise
        return rows

    def _decode(self, tokens: Sequence[int], begin: int, end: int, first_row: int, rows: Logits) -> None:
        batch = self._batch.batch
        batch.n_tokens = end - begin
        for i, position in enumerate(range(begin, end)):
            batch.token[i] = tokens[position]
            batch.pos[i] = position
            batch.seq_id[i][0] = 0
            batch.n_seq_id[i] = 1
            batch.logits[i] = position >= first_row
        self._ctx.decode(self._batch)
        self.evaluated += end - begin
        self.tokens.extend(tokens[begin:end])
        for i, position in enumerate(range(begin, end)):
            if position >= first_row:
                pointer = self._llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
                rows[position - first_row] = np.ctypeslib.as_array(pointer, shape=(self.runtime.n_vocab,))

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()


MAX_SEQUENCES = 256
"""llama.cpp's LLAMA_MAX_SEQ: sequence ids one context can hold."""


class SharedKV:
    """Many token sequences as llama.cpp sequences (``seq_id``) of one ``llama_context``.

    One :meth:`read` evaluates what several sequences have not seen yet in one multi-sequence batch
    (one ``llama_decode`` per ``n_batch`` tokens, all sequences together), which costs much less than a
    decode per sequence: the weights are read once per batch instead of once per sequence. Slot ``s``
    is sequence id ``s``; ``tokens[s]`` holds its cached tokens. The KV cache is unified (one pool of
    ``n_seq x n_ctx`` cells, any subset of sequences shares a micro-batch), so each slot can hold up
    to the runtime's ``n_ctx`` tokens (:class:`ContextFullError` beyond, as for a :class:`KVSequence`).

    Not batch-invariant: a sequence's logits depend on what else is in the batch (llama.cpp's CPU
    kernels change their reduction order with the batch shape), so this is for verification that does
    not need to be bit-identical to the target decoding alone (see :meth:`KVSequence.logits`).

    Sliding-window layers: a cache cell of a sequence that has moved further than the window
    (``n_swa``) may be taken by another sequence (llama.cpp reuses SWA-masked cells), which would only
    matter if that sequence were rolled back or restarted from a shorter prefix, when the window would
    need the cell again. :meth:`read` checks the positions it needs are still present
    (``llama_memory_seq_pos_min``) and otherwise re-reads the sequence from position 0.
    """

    def __init__(self, runtime: LlamaRuntime, n_seq: int, *, n_batch: int = 256) -> None:
        import llama_cpp
        from llama_cpp import _internals

        if not 1 <= n_seq <= MAX_SEQUENCES:
            raise ValueError(f"{n_seq} sequences in one llama.cpp context: at most {MAX_SEQUENCES}")
        self._llama_cpp: Any = llama_cpp
        self.runtime = runtime
        self.n_ctx = runtime.n_ctx
        self.n_batch = n_batch
        params: Any = llama_cpp.llama_context_params.from_buffer_copy(runtime.llama.context_params)
        params.n_ctx = n_seq * runtime.n_ctx
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.swa_full = True
        params.n_batch = params.n_ubatch = n_batch
        with runtime._lock:
            self._ctx: Any = _internals.LlamaContext(model=runtime.llama._model, params=params, verbose=False)
        self._batch: Any = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self.n_swa = int(llama_cpp.llama_model_n_swa(runtime.llama._model.model))
        self.tokens: list[list[int]] = [[] for _ in range(n_seq)]
        """Per slot, the tokens whose K and V are in the cache, in order (position i holds tokens[i])."""
        self.evaluated = 0
        """Positions decoded over the context's life, all slots (the work done; re-reads count again)."""

    def common_prefix(self, slot: int, tokens: Sequence[int]) -> int:
        n = 0
        for cached, wanted in zip(self.tokens[slot], tokens, strict=False):
            if cached != wanted:
                break
            n += 1
        return n

    def truncate(self, slot: int, length: int) -> None:
        """Drop the slot's cached positions from ``length`` on (the rollback of rejected drafts)."""
        if length < len(self.tokens[slot]):
            self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, length, -1)
            del self.tokens[slot][length:]

    def clear(self, slot: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self._ctx.memory, slot, -1, -1)
        self.tokens[slot].clear()

    def _window_kept(self, slot: int, start: int) -> bool:
        """Whether decoding from position ``start`` finds every position its window attends to."""
        if start == 0 or self.n_swa <= 0:
            return True
        lowest = int(self._llama_cpp.llama_memory_seq_pos_min(self._ctx.memory, slot))
        return 0 <= lowest <= max(0, start - self.n_swa + 1)

    def read(self, reads: Sequence[tuple[int, Sequence[int], int]]) -> list[tuple[Logits, int]]:
        """Per ``(slot, tokens, first_row)``: the logits predicting the token after each position
        ``first_row .. len(tokens)-1`` of that slot, and the position its decoding started from.

        As :meth:`KVSequence.logits` with every position batched, for all slots in one batch: each slot
        keeps its cached common prefix with ``tokens`` (capped at ``first_row``: llama.cpp keeps no
        logits of earlier calls), rolls back the rest and evaluates the remainder. Each slot at most
        once per call. On a failed decode every slot of the call is cleared (it re-reads next time).
        """
        slots = [slot for slot, _, _ in reads]
        if len(set(slots)) != len(slots):
            raise ValueError("a slot appears twice in one read")
        items: list[tuple[int, int, int, int, int]] = []  # (slot, position, token, read, row or -1)
        out: list[tuple[Logits, int]] = []
        for index, (slot, tokens, first_row) in enumerate(reads):
            total = len(tokens)
            if not 0 <= first_row < total:
                raise ValueError(f"first_row {first_row} outside 0..{total - 1}")
            if total > self.n_ctx:
                raise ContextFullError(f"{total} tokens exceed the context window of {self.n_ctx}")
            start = min(self.common_prefix(slot, tokens), first_row)
            if not self._window_kept(slot, start):
                start = 0
            self.truncate(slot, start)
            out.append((np.empty((total - first_row, self.runtime.n_vocab), dtype=np.float32), start))
            items += [
                (slot, position, tokens[position], index, max(position - first_row, -1))
                for position in range(start, total)
            ]
        try:
            for begin in range(0, len(items), self.n_batch):
                self._decode(items[begin : begin + self.n_batch], out)
        except BaseException:
            for slot in slots:
                self.clear(slot)
            raise
        return out

    def _decode(self, items: Sequence[tuple[int, int, int, int, int]], out: list[tuple[Logits, int]]) -> None:
        batch = self._batch.batch
        batch.n_tokens = len(items)
        for i, (slot, position, token, _, row) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = position
            batch.seq_id[i][0] = slot
            batch.n_seq_id[i] = 1
            batch.logits[i] = row >= 0
        self._ctx.decode(self._batch)
        self.evaluated += len(items)
        n_vocab = self.runtime.n_vocab
        for i, (slot, _, token, index, row) in enumerate(items):
            self.tokens[slot].append(token)
            if row >= 0:
                pointer = self._llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
                out[index][0][row] = np.ctypeslib.as_array(pointer, shape=(n_vocab,))

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
