"""Dequantize the Gemma 3 270M GGUF target into a float32 safetensors model directory vLLM loads.

Runs inside the vLLM environment (``python -m edgespec_dev.vllm_convert GGUF OUT``; transformers, gguf
and torch come from it); :mod:`edgespec_dev.vllm_env` calls it once per GGUF digest. vLLM 0.32 does not
load GGUF in core (its GGUF plugin needs CUDA kernels), so the target's Q4_K_M weights are dequantized
by transformers' GGUF reader to float32 (about 1.1 GB) and saved with the tokenizer. ``config.json``
gets ``architectures: ["Gemma3ForCausalLM"]`` (the GGUF config does not say it; vLLM needs it to pick
the text model). The tokenizer built from the GGUF does not add BOS: callers pass token ids (the
edge tokenizes with llama.cpp, which does), or prepend BOS themselves.

The output is written to ``OUT.tmp-<pid>`` and renamed, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any


def convert(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file.name}
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), dtype=torch.float32, **kwargs)
    # The weights are dequantized float32 now; the GGUF "quantizer" only marks where they came from,
    # and transformers refuses to save a model that carries one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), **kwargs)
    tokenizer.save_pretrained(str(tmp))
    config_file = tmp / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = ["Gemma3ForCausalLM"]
    config["torch_dtype"] = "float32"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"[vllm-convert] {gguf_file.name} -> {out} in {time.monotonic() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    convert(args.gguf.resolve(), args.out)


if __name__ == "__main__":
    main()
