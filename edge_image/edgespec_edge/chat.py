"""Chat messages to a prompt: the GGUF's own template, else the model family's turn format.

Order of choice:
1. the GGUF's ``tokenizer.chat_template`` (Jinja, rendered by llama-cpp-python's formatter, with the
   model's real ``<bos>``/``<eos>`` text);
2. no template, Gemma family (``general.architecture`` ``gemma*``): Gemma's turn format. Gemma has no
   system role, so system and developer text is folded into the first user turn, as Gemma's own
   template does;
3. otherwise ``ChatTemplateMissing`` (the server answers 400 naming it): guessing a format would give
   garbage.

The project's test model (Gemma 3 270M from PyPI) is a base model without a template: chat on it takes
path 2, and its answers are those of a base model continuing a transcript; use completions with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from edgespec_edge.llama_kv import LlamaRuntime

Role = Literal["system", "developer", "user", "assistant"]


class ChatTemplateMissing(ValueError):
    """The model has no chat template and no known family format."""


class ChatTemplateFailed(ValueError):
    """The model's template refused these messages (for example roles out of order)."""


def render_chat(runtime: LlamaRuntime, messages: Sequence[tuple[Role, str]]) -> str:
    """The prompt text for ``messages`` (role, text), ending where the assistant's reply begins."""
    template = runtime.metadata("tokenizer.chat_template")
    if template:
        return _jinja(runtime, template, messages)
    family = runtime.metadata("general.architecture") or ""
    if family.startswith("gemma"):
        return gemma_prompt(messages)
    raise ChatTemplateMissing(
        f"the model ({family or 'unknown family'}) has no chat template; use /v1/completions"
    )


def gemma_prompt(messages: Sequence[tuple[Role, str]]) -> str:
    """Gemma's turns: ``user`` and ``model`` only; system/developer text opens the first user turn."""
    preamble = [text for role, text in messages if role in ("system", "developer")]
    turns: list[str] = []
    for role, text in messages:
        if role in ("system", "developer"):
            continue
        if role == "user" and preamble:
            text = "\n\n".join([*preamble, text])
            preamble = []
        speaker = "model" if role == "assistant" else "user"
        turns.append(f"<start_of_turn>{speaker}\n{text}<end_of_turn>\n")
    if preamble:  # instructions but no user turn: they are the user turn
        turns.insert(0, "<start_of_turn>user\n" + "\n\n".join(preamble) + "<end_of_turn>\n")
    return "<bos>" + "".join(turns) + "<start_of_turn>model\n"


def _jinja(runtime: LlamaRuntime, template: str, messages: Sequence[tuple[Role, str]]) -> str:
    import jinja2
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=runtime.special_piece(runtime.llama.token_eos()),
        bos_token=runtime.special_piece(runtime.llama.token_bos()),
    )
    # Templates know "system", not OpenAI's newer "developer": the same instructions.
    chat: Any = [{"role": "system" if r == "developer" else r, "content": t} for r, t in messages]
    try:
        prompt: str = formatter(messages=chat).prompt
    except jinja2.TemplateError as exc:
        raise ChatTemplateFailed(
            f"the model's chat template refused the messages: {str(exc)[:200]}"
        ) from None
    return prompt
