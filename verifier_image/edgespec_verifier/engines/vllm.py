"""The vLLM verification engine (GPU): scores a round with prompt logprobs. Not exercised in CI.

Written against vLLM's documented offline API (``vllm.LLM``, ``SamplingParams``, ``TokensPrompt``);
``vllm`` is imported only when this engine is built (the ``[vllm]`` extra, on the verifier image).

One round is one ``LLM.generate`` on ``context + draft`` with ``max_tokens=1``:
``RequestOutput.prompt_logprobs[i]`` (a dict token id -> ``Logprob``; ``None`` at position 0) is the
target's distribution of the token at prompt position i, so positions ``len(context) .. +K-1`` score
the K drafts; the single generated token's ``logprobs[0]`` scores the bonus position. Rows are dense
arrays of log-probabilities with ``-inf`` outside the returned entries; softmax at any temperature of a
log-probability row is the target's distribution at that temperature.

Costs (see docs/dataplane.md): prompt logprobs are computed over the whole prompt and are not served
from the prefix cache, so each round re-reads the full context (no per-session KV reuse; ``commit`` is
a no-op); exact sampling needs full-vocabulary rows (``max_logprobs=-1``), greedy only top-1.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgespec_verifier.engines import ScoreRows


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        max_logprobs: int = -1,
        extra_engine_args: dict[str, Any] | None = None,
    ) -> None:
        self._vllm: Any = importlib.import_module("vllm")
        vllm = self._vllm
        kwargs: dict[str, Any] = {"model": model, "gpu_memory_utilization": gpu_memory_utilization}
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        kwargs["max_logprobs"] = max_logprobs
        kwargs.update(extra_engine_args or {})  # spec.verifier.vllmArgs, e.g. tensor_parallel_size=8
        self.llm: Any = vllm.LLM(**kwargs)
        self.n_vocab: int = int(self.llm.get_tokenizer().vocab_size)
        # -1 asks vLLM for the full vocabulary (exact sampling); otherwise the top-N rows.
        self.logprobs = self.n_vocab if max_logprobs == -1 else max_logprobs
        self._sessions: set[str] = set()

    def _row(self, entries: dict[int, Any] | None) -> np.ndarray:
        row = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        for token, logprob in (entries or {}).items():
            if 0 <= token < self.n_vocab:
                row[token] = logprob.logprob
        return row

    def score(
        self, session_id: str, context: Sequence[int], draft: Sequence[int], prompt_tokens: int | None
    ) -> ScoreRows:
        self._sessions.add(session_id)
        params = self._vllm.SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=self.logprobs,
            logprobs=self.logprobs,
            detokenize=False,
        )
        prompt = self._vllm.inputs.TokensPrompt(prompt_token_ids=[*context, *draft])
        (output,) = self.llm.generate([prompt], params, use_tqdm=False)
        prompt_rows = output.prompt_logprobs or []
        rows = [self._row(prompt_rows[len(context) + i]) for i in range(len(draft))]
        # prompt_logprobs[len(context) + i] scores draft[i]; the generated token's logprobs the bonus.
        rows.append(self._row(output.outputs[0].logprobs[0] if output.outputs[0].logprobs else None))
        return np.stack(rows)

    def commit(self, session_id: str, length: int) -> None:
        """Nothing to roll back: vLLM keeps no per-session state between rounds here."""

    def open_session(self, session_id: str, context: Sequence[int]) -> int:
        self._sessions.add(session_id)
        return 0

    def close_session(self, session_id: str) -> None:
        self._sessions.discard(session_id)

    def session_count(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        self._sessions.clear()
