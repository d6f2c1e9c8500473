"""Text is never lost: every token's piece comes out whole, and streamed UTF-8 is never split.

The oracle is the GGUF's own vocabulary read with the ``gguf`` package (SentencePiece text, with the
word-boundary mark as a space), independent of llama.cpp's detokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.server import TextAssembler
from gguf import GGUFReader

pytestmark = pytest.mark.models

NORMAL = 1  # llama.cpp's token type of an ordinary vocabulary entry


@pytest.fixture(scope="module")
def vocabulary(draft_file: Path) -> tuple[list[str], list[int]]:
    """Every token's text and type, read once for the module (262,144 entries: ~25 s in gguf)."""
    reader = GGUFReader(draft_file)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    types = reader.fields["tokenizer.ggml.token_type"]
    texts = [bytes(tokens.parts[i]).decode("utf-8") for i in tokens.data]
    kinds = [int(types.parts[i][0]) for i in types.data]
    return texts, kinds


def test_every_piece_longer_than_32_bytes_is_detokenized_whole(
    vocabulary: tuple[list[str], list[int]], draft_runtime: LlamaRuntime
) -> None:
    texts, kinds = vocabulary
    assert len(texts) == draft_runtime.n_vocab
    long = {
        token: text.replace("\u2581", " ").encode()
        for token, (text, kind) in enumerate(zip(texts, kinds, strict=True))
        if kind == NORMAL and len(text.replace("\u2581", " ").encode()) > 32
    }
    # Gemma 3's vocabulary: 379 such tokens (mostly Indic words, up to 48 bytes); llama-cpp-python's
    # own detokenize returned nothing for every one of them.
    assert len(long) == 379 and max(map(len, long.values())) == 48
    wrong = {
        t: draft_runtime.detokenize([t])
        for t, piece in long.items()
        if draft_runtime.detokenize([t]) != piece
    }
    assert not wrong, (
        f"{len(wrong)} of {len(long)} long pieces came out wrong, e.g. {next(iter(wrong.items()))}"
    )
    # Joined, in a sequence, as a generation would produce them.
    sample = list(long)[:50]
    assert draft_runtime.detokenize(sample) == b"".join(long[t] for t in sample)


def test_a_character_split_across_tokens_is_streamed_whole(
    vocabulary: tuple[list[str], list[int]], draft_runtime: LlamaRuntime
) -> None:
    texts, _ = vocabulary
    byte_token = {
        text: token for token, text in enumerate(texts) if len(text) == 6 and text.startswith("<0x")
    }
    word = "मुख्यमंत्री 😀"
    pieces = [byte_token[f"<0x{b:02X}>"] for b in word.encode()]
    assembler = TextAssembler(draft_runtime.detokenize, stops=[])
    deltas = [assembler.push([token]) for token in pieces]
    deltas.append(assembler.finish())
    assert "".join(deltas) == word
    assert all("\ufffd" not in d for d in deltas)
    # Each delta is whole characters: the 4-byte emoji arrives in one delta, not in parts.
    assert "😀" in deltas
