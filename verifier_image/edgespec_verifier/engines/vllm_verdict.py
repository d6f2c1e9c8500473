"""vLLM logits processor that turns one verify round into one steered generation inside vLLM's sampler.

Loaded by the vLLM engine core (``logits_processors=["edgespec_verifier.engines.vllm_verdict:
VerdictProcessor"]``); a round is a request whose prompt is the session's context and which generates
at most K+1 tokens, with the round in ``SamplingParams.extra_args["edgespec"]``: the K drafts, a stop
token id that is not among them, and when sampling the temperature T, the draft distributions q_i
and one uniform u_i per draft drawn by the engine from the round's seed. At generation step j (the
request's output length), on the target's raw logits row l of that step:

- after a rejection (output[j-1] != draft[j-1]) the row is forced to the stop token, which ends the
  request (it costs one row; no token after the rejection is ever fed back);
- greedy (request temperature 0): nothing else; vLLM's greedy sampler takes argmax(l), which either
  equals draft[j] (accepted: the draft is then the next input, exactly what decoding alone would feed)
  or is the correction;
- sampling (request temperature 1, seeded): p = softmax(l / T) in float64. For j < K: accept draft x_j
  iff u_j * q_j(x_j) < p(x_j) (probability min(1, p/q)); accepted: the row is forced to x_j; rejected:
  the row becomes log(max(0, p - q_j)) so vLLM's sampler draws from the normalised residual (which is 0
  at x_j after a rejection, so the output differs from the draft). For j = K (all accepted) the row
  becomes l / T: the bonus token is drawn from p itself.

So the tokens vLLM returns are the verdict: the leading outputs equal to the drafts were accepted, the
next output is the correction or bonus (Leviathan et al. 2023; the same rule as
:mod:`edgespec_verifier.acceptance`). No row leaves the engine process: only the sampled token ids
come back, never a vocabulary-sized list. The independent u_i make deciding every position at its own
step the same as deciding them in sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

EXTRA_KEY = "edgespec"


@dataclass
class RoundState:
    draft: list[int]
    stop: int
    output: list[int]  # vLLM's live list of this request's generated tokens
    temperature: float | None = None  # None: greedy
    uniforms: list[float] | None = None
    q_tokens: list[list[int]] | None = None
    q_probs: list[list[float]] | None = None


def _state(key: str, params: Any, output: list[int]) -> RoundState | None:
    extra = (params.extra_args or {}).get(key)
    if extra is None:
        return None
    return RoundState(
        draft=list(extra["draft"]),
        stop=int(extra["stop"]),
        output=output,
        temperature=extra.get("temperature"),
        uniforms=extra.get("u"),
        q_tokens=extra.get("q_tokens"),
        q_probs=extra.get("q_probs"),
    )


def _force(row: torch.Tensor, token: int) -> None:
    row.fill_(float("-inf"))
    row[token] = 0.0


class VerdictProcessor(LogitsProcessor):  # type: ignore[misc]  # vLLM is untyped here
    key = EXTRA_KEY
    residual = True  # False only in the tier's control test: a wrong rule that must be caught

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rounds: dict[int, RoundState] = {}

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        extra = (sampling_params.extra_args or {}).get(cls.key)
        if extra is not None and int(extra["stop"]) in extra["draft"]:
            raise ValueError("edgespec round: the stop token must not be a draft token")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rounds, batch_update, lambda params, _, out: _state(self.key, params, out))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for index, state in self.rounds.items():
            if index >= logits.shape[0]:
                continue
            row = logits[index]
            step = len(state.output)
            if step > 0 and (step > len(state.draft) or state.output[step - 1] != state.draft[step - 1]):
                _force(row, state.stop)  # the round ended at the previous token
                continue
            if state.temperature is None:
                continue  # greedy: argmax(l) is the verdict
            self._sample_step(row, state, step)
        return logits

    def _sample_step(self, row: torch.Tensor, state: RoundState, step: int) -> None:
        assert state.temperature is not None
        scaled = row.to(torch.float64) / state.temperature
        if step == len(state.draft):
            row.copy_(scaled)  # bonus: sampled from p at temperature 1
            return
        assert state.uniforms is not None and state.q_tokens is not None and state.q_probs is not None
        p = torch.softmax(scaled, dim=-1)
        token = state.draft[step]
        support = state.q_tokens[step]
        q = torch.tensor(state.q_probs[step], dtype=torch.float64)
        q_token = float(q[support.index(token)])
        if q_token > 0.0 and state.uniforms[step] * q_token < float(p[token]):
            _force(row, token)
            return
        if not self.residual:
            row.copy_(scaled)  # the control's bug: resample from p instead of the residual
            return
        index = torch.tensor(support, dtype=torch.long)
        residual = p.clone()
        residual[index] = torch.clamp(p[index] - q, min=0.0)
        if float(residual.sum()) <= 1e-300:  # p equals q: no rejection can happen; stay total
            row.copy_(scaled)
            return
        row.copy_(torch.log(residual))  # log(0) = -inf; the sampler renormalises the residual


class ControlProcessor(VerdictProcessor):
    """The sampling test's control (same path, residual replaced by p); acts only on its own key."""

    key = "edgespec-control"
    residual = False
