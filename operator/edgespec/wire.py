"""The edge-verifier wire format: the JSON bodies both sides of the verify protocol import.

One round of speculative decoding is one ``POST /v1/verify``: the edge sends the session's tokens so far
(the committed context) plus K draft tokens, and, when sampling, the exact sparse distribution each draft
token was sampled from. The verifier answers with how many drafts it accepted and one token of its own
(the correction after a rejection, or the bonus token when all K were accepted). Sessions let the
verifier keep the context's KV state between rounds; a verify for an unknown session opens it
implicitly (the full context travels in every request), so a verifier restart costs a re-read, not an
error. Every body carries ``version``; a peer rejects a major version it does not speak with 400.

Cloud-only decoding (a device class where speculation does not pay) is one ``POST /v1/generate``: the
edge forwards the client's prompt (text, chat messages or token ids: the edge holds no model then, so the
verifier tokenizes with the target's own tokenizer and chat template) and the verifier streams the
target's own generation back as newline-delimited ``GenerateEvent`` lines: the prompt's size first, then
text as it is generated (whole UTF-8 characters only), then the finish reason. A bad prompt is refused
before the stream starts with 400 and an ``ErrorBody`` whose ``param`` names the field.
Pure pydantic: no I/O, no model code.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

WIRE_VERSION = 1
"""Protocol version; bump on an incompatible change to any body below."""

VERIFY_PATH = "/v1/verify"
SESSIONS_PATH = "/v1/sessions"
GENERATE_PATH = "/v1/generate"
"""Cloud-only decoding: the target generates alone and streams (``GenerateRequest``)."""
PING_PATH = "/v1/ping"
"""Authenticated, engine-free: the edge's readiness probe (the verifier answers and takes the token)."""

TokenId = Annotated[int, Field(ge=0)]


class WireModel(BaseModel):
    """Base of every wire body: unknown fields rejected, so a version skew fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(default=WIRE_VERSION, ge=1, description="Wire protocol version.")

    @model_validator(mode="after")
    def _version_spoken(self) -> WireModel:
        if self.version != WIRE_VERSION:
            raise ValueError(f"wire version {self.version} not supported (this side speaks {WIRE_VERSION})")
        return self


class SparseDistribution(BaseModel):
    """A draft distribution with finite support: the draft sampled its token from exactly this.

    The edge samples from a top-N truncated, renormalised draft distribution, so the verifier knows q
    exactly without shipping the whole vocabulary (262k floats for Gemma 3) per token.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: list[TokenId] = Field(min_length=1, description="Support of q.")
    probs: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        min_length=1, description="q on the support."
    )

    @model_validator(mode="after")
    def _aligned(self) -> SparseDistribution:
        if len(self.tokens) != len(self.probs):
            raise ValueError("tokens and probs must have the same length")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be distinct")
        total = sum(self.probs)
        if not 0.999 <= total <= 1.001:
            raise ValueError(f"probs must sum to 1 (got {total:.6f})")
        return self


class SamplingParams(BaseModel):
    """How the target's next-token distribution is formed; temperature 0 means greedy (exact argmax)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=0.0, ge=0.0, le=10.0, description="0 = greedy.")
    seed: int | None = Field(default=None, ge=0, description="Seed of this round's rejection sampling.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class VerifyRequest(WireModel):
    """One verification round: context so far plus K drafts (plus their distributions when sampling)."""

    session_id: str = Field(min_length=1, max_length=128, description="Edge-chosen session key.")
    tokens: list[TokenId] = Field(min_length=1, description="Committed context (prompt + accepted), ids.")
    prompt_tokens: int | None = Field(
        default=None,
        ge=1,
        description="How many leading tokens are the prompt (the rest were generated); lets an exact "
        "engine evaluate positions the way the target decoding alone would.",
    )
    draft: list[TokenId] = Field(default_factory=list, max_length=64, description="K draft tokens.")
    draft_probs: list[SparseDistribution] | None = Field(
        default=None, description="When sampling: the distribution each draft token was drawn from."
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @model_validator(mode="after")
    def _probs_match(self) -> VerifyRequest:
        if self.prompt_tokens is not None and self.prompt_tokens > len(self.tokens):
            raise ValueError("prompt_tokens exceeds the number of tokens")
        if self.sampling.greedy:
            return self
        if self.draft_probs is None or len(self.draft_probs) != len(self.draft):
            raise ValueError("sampling needs draft_probs, one distribution per draft token")
        for position, (token, dist) in enumerate(zip(self.draft, self.draft_probs, strict=True)):
            if token not in dist.tokens:
                raise ValueError(f"draft[{position}] is outside its draft_probs support")
        return self


class VerifyResponse(WireModel):
    """The verdict: the first ``accepted`` drafts stand, then ``next_token`` (correction or bonus)."""

    accepted: int = Field(ge=0, description="Number of leading draft tokens accepted.")
    next_token: TokenId = Field(description="Target's token after the accepted drafts.")
    bonus: bool = Field(description="True when all drafts were accepted and next_token is the bonus.")
    verify_s: float = Field(ge=0.0, description="Verifier-side time for this round (queue + forward), s.")
    engine: str = Field(default="", description="Engine that verified (llamacpp, vllm).")


class SessionOpen(WireModel):
    """Optional: open a session ahead of its first verify (the verifier may pre-read the prompt)."""

    session_id: str = Field(min_length=1, max_length=128)
    tokens: list[TokenId] = Field(default_factory=list, description="Context to pre-read, may be empty.")


class SessionOpened(WireModel):
    session_id: str
    cached_tokens: int = Field(ge=0, description="Tokens of the context now held in the KV state.")


class ChatTurn(BaseModel):
    """One chat message of a cloud-only request, rendered by the target's chat template."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str


class GenerateRequest(WireModel):
    """Cloud-only decoding: the target generates up to ``max_tokens`` after the prompt, by itself.

    Exactly one of ``prompt`` (text; the target's tokenizer adds BOS), ``messages`` (chat; the target's
    template) and ``tokens`` (ids, as they are)."""

    prompt: str | None = Field(default=None, max_length=4 * 1024 * 1024, description="Prompt text.")
    messages: list[ChatTurn] | None = Field(default=None, min_length=1, description="Chat messages.")
    tokens: list[TokenId] | None = Field(default=None, min_length=1, description="Prompt token ids.")
    max_tokens: int = Field(ge=1, le=32768, description="Most tokens to generate.")
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        given = [name for name in ("prompt", "messages", "tokens") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of prompt, messages and tokens is needed")
        return self


class GenerateEvent(WireModel):
    """One line of the generate stream: the start, a piece of text, the end, or a failure mid-stream.

    Start: ``prompt_tokens``. Text: ``text`` (whole characters) and ``tokens`` (how many generated
    tokens it holds; text may lag a token whose character is incomplete). End: ``finish_reason``
    (``stop``: the target ended the text; ``length``: ``max_tokens`` or the context window).
    Failure: ``error``, and no end line."""

    prompt_tokens: int | None = Field(default=None, ge=0)
    text: str = ""
    tokens: int = Field(default=0, ge=0)
    finish_reason: Literal["stop", "length"] | None = None
    generate_s: float | None = Field(default=None, ge=0.0, description="Verifier-side time, s (end).")
    error: ErrorDetail | None = None


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Literal[
        "unauthorized",
        "bad_request",
        "unsupported_version",
        "overloaded",
        "engine_error",
        "not_ready",
        # A cloud-only prompt the target cannot take (the edge answers its client with the same code):
        "invalid_value",
        "context_length_exceeded",
        "chat_template_missing",
    ]
    message: str
    param: str | None = Field(default=None, description="The request field at fault, when one is.")


class ErrorBody(WireModel):
    """Body of every non-2xx answer from either side, so clients print one clear message."""

    error: ErrorDetail


GenerateEvent.model_rebuild()
