"""A request's prompt to token ids, and the one error message per way it can be wrong.

Shared by the edge server (speculative mode: the draft model's tokenizer, which is the target's) and the
verifier's generate endpoint (cloud-only mode: the edge holds no model, so the target tokenizes), so a
client gets the same answer, word for word, whichever side read its prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from edgespec_edge.chat import ChatTemplateFailed, ChatTemplateMissing, Role


class PromptError(ValueError):
    """A prompt the model cannot take: ``code`` and ``param`` as in OpenAI's error object."""

    def __init__(self, message: str, code: str, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Vocabulary(Protocol):
    """What reading a prompt needs of a model (``LlamaRuntime`` has it)."""

    @property
    def n_vocab(self) -> int: ...

    @property
    def n_ctx(self) -> int: ...

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...


def prompt_tokens(
    vocabulary: Vocabulary,
    render_chat: Callable[[Sequence[tuple[Role, str]]], str],
    *,
    text: str | None = None,
    messages: Sequence[tuple[Role, str]] | None = None,
    tokens: Sequence[int] | None = None,
) -> list[int]:
    """The prompt's token ids from exactly one of ``text``, chat ``messages`` and ``tokens``."""
    if messages is not None:
        param = "messages"
        try:
            rendered = render_chat(messages)
        except ChatTemplateMissing as exc:
            raise PromptError(str(exc), "chat_template_missing", param) from None
        except ChatTemplateFailed as exc:
            raise PromptError(str(exc), "invalid_value", param) from None
        ids = vocabulary.tokenize(rendered, add_bos=False)
    elif text is not None:
        param = "prompt"
        ids = vocabulary.tokenize(text, add_bos=True)
    else:
        param = "prompt"
        ids = [int(t) for t in tokens or ()]
        if not ids or not all(0 <= t < vocabulary.n_vocab for t in ids):
            message = f"token ids must be between 0 and {vocabulary.n_vocab - 1}"
            raise PromptError(message, "invalid_value", param)
    if not ids:
        raise PromptError("the prompt is empty", "invalid_value", param)
    if len(ids) >= vocabulary.n_ctx:
        message = f"the prompt has {len(ids)} tokens; the context window holds {vocabulary.n_ctx}"
        raise PromptError(message, "context_length_exceeded", param)
    return ids
