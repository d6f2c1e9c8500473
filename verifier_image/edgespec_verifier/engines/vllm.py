"""The vLLM verification engine: concurrent rounds batched by one AsyncLLM, prefix-cached contexts.

Runs wherever vLLM runs (GPU, or vLLM's CPU build; the vLLM tier of ``make test`` runs it on CPU, see
docs/vllm.md). ``vllm`` is imported only when this engine is built (the verifier image's vLLM variant).

**A round is one request**: prompt = the session's context, at most K+1 generated tokens, steered by
:class:`edgespec_verifier.engines.vllm_verdict.VerdictProcessor` inside vLLM's sampler, so the
generated tokens *are* the verdict (accepted drafts, then the correction or bonus). Nothing of
vocabulary size leaves the engine process: greedy needs the argmax per position and gets it from vLLM's
greedy sampler; sampling needs p(x_i) for each draft and, at the first rejection, a draw from the
residual, and the processor computes exactly those on the logits row in place.

**Batching**: every round is an ``AsyncLLM.generate`` on the engine's own event loop (a thread), so
rounds of concurrent sessions share vLLM's continuous batches (one forward pass per step for all of
them). ``verify_round`` is the server's entry point (awaited on the HTTP event loop; the server's
engine thread is not used).

**No context re-read**: prefix caching keeps every full KV block of a session's context (the drafts
accepted last round were computed as generated tokens, so they are cached too); a round recomputes only
the context's last partial block (< ``block_size`` tokens) and then K+1 single-token steps. Sessions
share one block pool, LRU-evicted by vLLM; the engine's session table only bounds bookkeeping
(``max_sessions``): an evicted session still verifies correctly, from whatever blocks remain cached.

**Context reads** (``edgespec_verifier_context_tokens_total``): vLLM reports a request's prefix-cache
hit as ``RequestOutput.num_cached_tokens`` (whole blocks, at most the prompt's length minus one: the
last token is always computed for its logits); the round computed context positions from there to the
end, split by :func:`edgespec_verifier.engines.context_reads`. So in steady state a round counts as
``reread`` the generated tokens of the context's last partial block (less than ``block_size``, the
last token excepted), which vLLM does recompute, and at times one full block more (the tier's test saw
vLLM's hit fall one block short of the last full block); a session whose blocks are gone (another replica, or
evicted from the block pool) counts its whole generated context. The number is the prefill's at first
scheduling: a request preempted and recomputed under KV pressure computes more than it says.
Exactness: greedy output equals vLLM's own greedy decoding of the target (the tier's test checks it).

**Cloud-only decoding** (``POST /v1/generate``): :meth:`prompt_for` reads the prompt with the target's
own tokenizer (``AsyncLLM.get_tokenizer()``: ``encode``, and ``apply_chat_template`` where the model
has a template; Gemma's turn format otherwise, as on llama.cpp) and :meth:`generate_stream` is one
ordinary ``AsyncLLM.generate`` request with ``RequestOutputKind.DELTA`` outputs, detokenized by vLLM
(special tokens skipped, as llama.cpp renders them empty), stopping at the model's end-of-sequence
tokens. Leaving the stream cancels the request on the engine loop, which aborts it in vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from edgespec.wire import SamplingParams as WireSampling
from edgespec.wire import VerifyRequest
from edgespec_edge.chat import ChatTemplateFailed, ChatTemplateMissing, Role, gemma_prompt
from edgespec_edge.prompting import prompt_tokens

from edgespec_verifier.engines import ContextReads, ScoreRows, context_reads

PROCESSOR = "edgespec_verifier.engines.vllm_verdict:VerdictProcessor"
CONTROL_PROCESSOR = "edgespec_verifier.engines.vllm_verdict:ControlProcessor"
EXTRA_KEY = "edgespec"
T = TypeVar("T")


@dataclass
class SessionInfo:
    context_tokens: int = 0
    cached_tokens: int = 0  # vLLM's prefix-cache hit of the session's last request


def stop_token(draft: Sequence[int]) -> int:
    """A token id that is not a draft: generating it ends a round after a rejection."""
    taken = set(draft)
    return next(token for token in itertools.count() if token not in taken)


class VllmEngine:
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        max_model_len: int = 2048,
        max_sessions: int = 64,
        max_num_seqs: int = 64,
        block_size: int | None = None,
        dtype: str = "auto",
        enforce_eager: bool = False,
        gpu_memory_utilization: float | None = None,
        extra_engine_args: dict[str, Any] | None = None,
    ) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; vLLM's CPU build needs it set
        self._vllm: Any = importlib.import_module("vllm")
        self._async_llm: Any = importlib.import_module("vllm.v1.engine.async_llm")
        self._engine_args: Any = importlib.import_module("vllm.engine.arg_utils")
        kwargs: dict[str, Any] = {
            "model": model,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            "enable_prefix_caching": True,
            # On CPU, torch.compile's warm-up took over 5 min on this 2-core machine: tests use eager.
            "enforce_eager": enforce_eager,
            "logits_processors": [PROCESSOR],  # extra_engine_args may add CONTROL_PROCESSOR
            "disable_log_stats": True,
            "seed": 0,
        }
        if block_size is not None:
            kwargs["block_size"] = block_size
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs.update(extra_engine_args or {})  # spec.verifier.vllmArgs, e.g. tensor_parallel_size=8
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, SessionInfo] = OrderedDict()
        self.last_reads = ContextReads()  # of the last open_session (rounds return theirs)
        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        try:
            self.llm: Any = self._call(self._build(kwargs))
        except BaseException:
            self._stop_loop()
            raise

    async def _build(self, kwargs: dict[str, Any]) -> Any:
        args = self._engine_args.AsyncEngineArgs(**kwargs)
        return self._async_llm.AsyncLLM.from_engine_args(args)

    # -- running coroutines on the engine's loop --------------------------------------------------
    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the engine loop and wait (from any thread but the engine loop's own)."""
        return self._submit(coroutine).result()

    async def _on_engine(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await, from another event loop, a coroutine run on the engine loop."""
        return await asyncio.wrap_future(self._submit(coroutine))

    # -- rounds -----------------------------------------------------------------------------------
    def _params(self, request: VerifyRequest, rng: np.random.Generator, key: str) -> Any:
        draft = list(request.draft)
        extra: dict[str, Any] = {"draft": draft, "stop": stop_token(draft)}
        common: dict[str, Any] = {
            "max_tokens": len(draft) + 1,
            "ignore_eos": True,
            "stop_token_ids": [extra["stop"]],
            "detokenize": False,
            "skip_special_tokens": False,
        }
        if request.sampling.greedy:
            return self._vllm.SamplingParams(temperature=0.0, extra_args={key: extra}, **common)
        assert request.draft_probs is not None  # checked by VerifyRequest
        extra["temperature"] = request.sampling.temperature
        extra["u"] = [float(u) for u in rng.random(len(draft))]
        extra["q_tokens"] = [list(q.tokens) for q in request.draft_probs]
        extra["q_probs"] = [list(q.probs) for q in request.draft_probs]
        return self._vllm.SamplingParams(
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            seed=int(rng.integers(0, 2**62)),
            extra_args={key: extra},
            **common,
        )

    async def _generate(self, tokens: Sequence[int], params: Any) -> Any:
        prompt = {"prompt_token_ids": list(tokens)}
        final = None
        async for output in self.llm.generate(prompt, params, request_id=f"r{next(self._ids)}"):
            final = output
        assert final is not None
        return final

    async def _round(self, request: VerifyRequest, key: str = EXTRA_KEY) -> tuple[int, int, ContextReads]:
        rng = np.random.default_rng(request.sampling.seed)
        output = await self._generate(request.tokens, self._params(request, rng, key))
        produced = list(output.outputs[0].token_ids)
        accepted = 0
        while accepted < len(request.draft) and accepted < len(produced) - 1:
            if produced[accepted] != request.draft[accepted]:
                break
            accepted += 1
        if accepted >= len(produced):
            raise RuntimeError(f"vLLM round produced {produced} for draft {request.draft}")
        cached = output.num_cached_tokens or 0
        self._touch(request.session_id, len(request.tokens), cached)
        reads = context_reads(cached, len(request.tokens), request.prompt_tokens)
        return accepted, int(produced[accepted]), reads

    async def verify_round(
        self, request: VerifyRequest, *, key: str = EXTRA_KEY
    ) -> tuple[int, int, ContextReads]:
        """(accepted, next token, context reads) of one round; awaited by the server, batched with
        other rounds.

        ``key`` selects the logits processor (the tier's control test passes ``edgespec-control``,
        which needs ``CONTROL_PROCESSOR`` among the engine's ``logits_processors``)."""
        return await self._on_engine(self._round(request, key))

    def verify(self, request: VerifyRequest) -> tuple[int, int]:
        """Blocking form of :meth:`verify_round` (benchmarks, scripts)."""
        accepted, next_token, _ = self._call(self._round(request))
        return accepted, next_token

    def greedy_decode(self, prompt: Sequence[int], max_tokens: int) -> list[int]:
        """The target decoding alone (vLLM greedy), the reference of the exactness test."""
        params = self._vllm.SamplingParams(
            temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False
        )
        return list(self._call(self._generate(prompt, params)).outputs[0].token_ids)

    def full_distribution(self, prompt: Sequence[int]) -> np.ndarray:
        """The target's next-token distribution after ``prompt`` at temperature 1, as a dense array.

        Diagnostics and tests only (the sampling test's reference p): it materialises the vocabulary,
        which verify rounds never do, and needs the engine argument ``max_logprobs=-1``."""
        params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, logprobs=-1, detokenize=False)
        entries = self._call(self._generate(prompt, params)).outputs[0].logprobs[0]
        probs = np.zeros(max(entries) + 1, dtype=np.float64)
        for token, logprob in entries.items():
            probs[token] = np.exp(logprob.logprob)
        result: np.ndarray = probs / probs.sum()
        return result

    # -- cloud-only generation --------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return int(self.llm.model_config.get_vocab_size())

    @property
    def n_ctx(self) -> int:
        return int(self.llm.model_config.max_model_len)

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        return list(self.llm.get_tokenizer().encode(text, add_special_tokens=add_bos))

    def _render_chat(self, messages: Sequence[tuple[Role, str]]) -> str:
        tokenizer = self.llm.get_tokenizer()
        if getattr(tokenizer, "chat_template", None):
            chat = [{"role": "system" if r == "developer" else r, "content": t} for r, t in messages]
            try:
                return str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
            except Exception as exc:  # the template raised (roles out of order, say)
                raise ChatTemplateFailed(
                    f"the model's chat template refused the messages: {str(exc)[:200]}"
                ) from None
        family = str(getattr(self.llm.model_config.hf_config, "model_type", "") or "")
        if family.startswith("gemma"):
            return gemma_prompt(messages)
        raise ChatTemplateMissing(
            f"the model ({family or 'unknown family'}) has no chat template; use /v1/completions"
        )

    def prompt_for(
        self,
        *,
        text: str | None = None,
        messages: Sequence[tuple[Role, str]] | None = None,
        tokens: Sequence[int] | None = None,
    ) -> list[int]:
        """A cloud-only request's prompt in the target's tokens (``PromptError`` when unusable)."""
        return prompt_tokens(self, self._render_chat, text=text, messages=messages, tokens=tokens)

    async def generate_stream(
        self, prompt: Sequence[int], max_tokens: int, sampling: WireSampling
    ) -> AsyncGenerator[tuple[int, str, str | None], None]:
        """(tokens, text, finish reason) as vLLM generates, awaited from the server's event loop."""
        room = self.n_ctx - len(prompt)
        if room <= 0:
            yield 0, "", "length"
            return
        delta = importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA
        common: dict[str, Any] = {"max_tokens": min(max_tokens, room), "output_kind": delta}
        if sampling.greedy:
            params = self._vllm.SamplingParams(temperature=0.0, **common)
        else:
            params = self._vllm.SamplingParams(
                temperature=sampling.temperature, top_p=1.0, top_k=0, seed=sampling.seed, **common
            )
        out_loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str, str | None] | BaseException] = asyncio.Queue()

        async def produce() -> None:  # on the engine loop
            try:
                request = {"prompt_token_ids": list(prompt)}
                async for output in self.llm.generate(request, params, request_id=f"g{next(self._ids)}"):
                    piece = output.outputs[0]
                    count, finish = len(piece.token_ids), None
                    if output.finished:
                        finish = "stop" if piece.finish_reason == "stop" else "length"
                    if finish == "stop" and count:
                        count -= 1  # the end-of-text token: not part of the text (llama.cpp counts it so)
                    item = (count, piece.text, finish)
                    out_loop.call_soon_threadsafe(queue.put_nowait, item)
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the server's loop may be gone already
                    out_loop.call_soon_threadsafe(queue.put_nowait, exc)
                raise

        task = self._submit(produce())
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise RuntimeError(f"vLLM generation failed: {type(item).__name__}: {item}")
                yield item
                if item[2] is not None:
                    return
        finally:
            task.cancel()  # the client left, or the stream is done: abort the request in vLLM

    # -- sessions ---------------------------------------------------------------------------------
    def _touch(self, session_id: str, context_tokens: int, cached_tokens: int) -> None:
        info = self._sessions.pop(session_id, None) or SessionInfo()
        info.context_tokens, info.cached_tokens = context_tokens, cached_tokens
        self._sessions[session_id] = info
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    def session(self, session_id: str) -> SessionInfo | None:
        return self._sessions.get(session_id)

    async def _open(self, session_id: str, context: Sequence[int]) -> int:
        self.last_reads = ContextReads()
        if context:
            params = self._vllm.SamplingParams(temperature=0.0, max_tokens=1, detokenize=False)
            output = await self._generate(context, params)  # fills the prefix cache with its blocks
            self.last_reads = context_reads(output.num_cached_tokens or 0, len(context), None)
        self._touch(session_id, len(context), 0)
        block = int(self.llm.vllm_config.cache_config.block_size)
        return len(context) // block * block

    def open_session(self, session_id: str, context: Sequence[int]) -> int:
        """Pre-read ``context`` into the prefix cache; returns the tokens now cached (full blocks)."""
        return self._call(self._open(session_id, context))

    def close_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def session_count(self) -> int:
        return len(self._sessions)

    def score(
        self, session_id: str, context: Sequence[int], draft: Sequence[int], prompt_tokens: int | None
    ) -> ScoreRows:
        raise NotImplementedError("the vLLM engine decides rounds itself: use verify_round")

    def commit(self, session_id: str, length: int) -> None:
        """Nothing to roll back: rejected drafts never enter the KV cache (rounds stop at them)."""

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    async def _shutdown(self) -> None:
        self.llm.shutdown()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        self._sessions.clear()
        if getattr(self, "llm", None) is not None:
            self._call(self._shutdown())
            self.llm = None
        self._stop_loop()
