"""Text is never lost: every token's piece comes out whole, and streamed UTF-8 is never split.

The oracle is the GGUF's own vocabulary read from the file by the reader below (SentencePiece text,
with the word-boundary mark as a space), independent of llama.cpp's detokenizer.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import pytest
from edgespec_edge.llama_kv import LlamaRuntime
from edgespec_edge.server import TextAssembler

pytestmark = pytest.mark.models

NORMAL = 1  # llama.cpp's token type of an ordinary vocabulary entry


# GGUF metadata value types (ggml's gguf.h): fixed sizes as struct formats; 8 is a string, 9 an array.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


def gguf_metadata(path: Path, wanted: set[str]) -> dict[str, Any]:
    """The wanted metadata keys of a GGUF file (v2/v3, little-endian), read straight from its header.

    The ``gguf`` package's reader builds a numpy view per array element, which took 25-47 s for the
    vocabulary's 262,144 entries; this walks the same bytes in well under a second."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic, version, _tensors, count = struct.unpack_from("<4sIQQ", data, 0)
        assert magic == b"GGUF" and version in (2, 3), (magic, version)
        offset = 24

        def read(kind: int) -> Any:
            nonlocal offset
            if kind == STRING:
                (size,) = struct.unpack_from("<Q", data, offset)
                offset += 8 + size
                return data[offset - size : offset].decode("utf-8")
            if kind == ARRAY:
                item, length = struct.unpack_from("<IQ", data, offset)
                offset += 12
                return [read(item) for _ in range(length)]
            (value,) = struct.unpack_from("<" + SCALARS[kind], data, offset)
            offset += struct.calcsize(SCALARS[kind])
            return value

        found: dict[str, Any] = {}
        for _ in range(count):
            key = read(STRING)
            (kind,) = struct.unpack_from("<I", data, offset)
            offset += 4
            value = read(kind)
            if key in wanted:
                found[key] = value
        return found


@pytest.fixture(scope="module")
def vocabulary(draft_file: Path) -> tuple[list[str], list[int]]:
    """Every token's text and type, read once for the module (262,144 entries)."""
    fields = gguf_metadata(draft_file, {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type"})
    return fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]


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
