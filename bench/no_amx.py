"""Load llama.cpp models with its extra buffer types off, for machines that advertise AMX but trap it.

On this VM the CPU reports amx_tile/amx_int8/amx_bf16, llama.cpp's CPU backend then routes matrix
products through its AMX buffer type, and the first ``tilezero`` dies with SIGILL. AMX is one of the
"extra buffer types" (``llama_model_params.use_extra_bufts``); turning them off also turns off weight
repacking, so speeds are those of the plain CPU path. ``apply()`` must run before any model loads.
"""

from __future__ import annotations

from typing import Any


def apply() -> None:
    import llama_cpp
    import llama_cpp.llama as high_level

    default = llama_cpp.llama_model_default_params

    def without_extra_buffers() -> Any:
        params = default()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_model_default_params = without_extra_buffers
    high_level.llama_cpp.llama_model_default_params = without_extra_buffers  # type: ignore[attr-defined]
