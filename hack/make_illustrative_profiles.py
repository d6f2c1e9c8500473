"""Write ``samples/profiles/paper-illustrative.yaml``: an illustrative EdgeProfile set, NOT measurements.

The set covers the ConfigSpec paper's setting (Li et al., "ConfigSpec: Profiling-Based Configuration
Selection for Distributed Edge-Cloud Speculative LLM Serving", EuroSys 2026 TDIS workshop, arXiv
2604.09722): Raspberry Pi 4B, Raspberry Pi 5 and Jetson AGX Orin; Llama drafts (3.2-1B, 3.2-3B,
3.1-8B) against Llama-3.1-70B and Qwen3 drafts (0.6B, 1.7B, 4B, 8B) against Qwen3-32B; Q4_K_M and
Q8_0. The numbers were chosen, by hand and with this script's arithmetic, so that the ConfigSpec
model reproduces the paper's reported findings; they are not profiles of real hardware.

How the numbers are made (the calibration):

- Model file sizes are typical GGUF sizes of those models; memory need = file + KV cache (4096-token
  context) + 200 MiB of runtime.
- Drafting speed is memory-bound decoding: v_d = 1 / (file_size / bandwidth + per_token_overhead)
  with one effective bandwidth and overhead per device. The bandwidths were set so that, at
  T_verify = 0.5 s, the fastest draft's goodput optimum falls at K = 2 on the RPi 4B (2.4 GB/s),
  K = 6-7 on the RPi 5 (4.6 GB/s) and K = 8-10 on the Jetson (90 GB/s, 5 ms per-token overhead).
- Acceptance follows alpha(K) = alpha_2 * (2 / K) ** 0.2 (a slow decay with K). alpha_2 per draft
  was set so that Llama 1B and 8B (Q4_K_M) average 0.46 and 0.62 over K = 2..10, the acceptance
  rates the paper reports, which also gives the paper's cost ratios at K = 2: Llama 8B about 19%
  better than 1B, Qwen3 8B about 25% better than 0.6B. Q8_0 accepts 0.02 more than Q4_K_M.
  Llama profiles list alpha at every K from 2 to 10; Qwen3 profiles only at even K, so the model's
  interpolation is exercised (odd K show acceptance source "interpolated").
- Power while drafting: a per-device base (RPi 4B 6.4 W, RPi 5 9.5 W, Jetson 15 W) growing with
  the weights streamed per token; the Jetson's GPU power grows most (6 W per GB), set so that the
  8B-to-1B energy ratio on the Jetson is near the paper's 7.8x.
- T_verify = 0.1 s network round trip + 0.4 s target forward pass, independent of K: the paper's
  fixed 0.5 s.

Run ``python hack/make_illustrative_profiles.py`` (writes the file) or ``--check`` (fails if stale).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from edgespec.api.profile import (
    AcceptancePoint,
    EdgeProfile,
    EdgeProfileSpec,
    VerifyLatency,
)

OUT = Path(__file__).resolve().parent.parent / "samples" / "profiles" / "paper-illustrative.yaml"
MIB = 1024**2
K_VALUES = tuple(range(2, 11))
ACCEPTANCE_DECAY = 0.2

# device class -> (effective bandwidth bytes/s, per-token overhead s, base power W, power growth per GB)
DEVICES: dict[str, tuple[float, float, float, float]] = {
    "rpi4b": (2.4e9, 0.0, 6.4, 0.06),
    "rpi5": (4.6e9, 0.0, 9.5, 0.08),
    "jetson-agx-orin": (90e9, 0.005, 15.0, 6.0),
}

TARGETS = {"llama": "llama-3.1-70b", "qwen": "qwen3-32b"}

# draft -> (family, alpha_2 at Q4_K_M, KV cache bytes at 4096 tokens, {quantisation: file bytes})
DRAFTS: dict[str, tuple[str, float, int, dict[str, int]]] = {
    "llama-3.2-1b": ("llama", 0.55, 128 * MIB, {"Q4_K_M": 808_000_000, "Q8_0": 1_321_000_000}),
    "llama-3.2-3b": ("llama", 0.66, 448 * MIB, {"Q4_K_M": 2_020_000_000, "Q8_0": 3_421_000_000}),
    "llama-3.1-8b": ("llama", 0.75, 512 * MIB, {"Q4_K_M": 4_921_000_000, "Q8_0": 8_541_000_000}),
    "qwen3-0.6b": ("qwen", 0.50, 448 * MIB, {"Q4_K_M": 484_000_000, "Q8_0": 639_000_000}),
    "qwen3-1.7b": ("qwen", 0.60, 448 * MIB, {"Q4_K_M": 1_280_000_000, "Q8_0": 1_834_000_000}),
    "qwen3-4b": ("qwen", 0.68, 576 * MIB, {"Q4_K_M": 2_497_000_000, "Q8_0": 4_280_000_000}),
    "qwen3-8b": ("qwen", 0.75, 576 * MIB, {"Q4_K_M": 5_027_000_000, "Q8_0": 8_710_000_000}),
}
Q8_ACCEPTANCE_BONUS = 0.02
RUNTIME_BYTES = 200 * MIB
NOTE = (
    "Illustrative, not measured: calibrated so the ConfigSpec model reproduces the findings of Li et al. "
    "(arXiv 2604.09722); see hack/make_illustrative_profiles.py for how."
)


def alpha(alpha_2: float, k: int) -> float:
    decay: float = (2.0 / k) ** ACCEPTANCE_DECAY
    return round(alpha_2 * decay, 4)


def make_profiles(k_values: tuple[int, ...] | None = None) -> list[EdgeProfile]:
    """The illustrative set; ``k_values`` lists alpha at exactly those K for every draft (the
    generator's own law, no interpolation) instead of the sample file's K = 2..10 (Qwen3: even K)."""
    profiles: list[EdgeProfile] = []
    for device, (bandwidth, overhead_s, base_w, w_per_gb) in DEVICES.items():
        for draft, (family, alpha_2, kv_bytes, sizes) in DRAFTS.items():
            for quant, size in sizes.items():
                a2 = alpha_2 + (Q8_ACCEPTANCE_BONUS if quant == "Q8_0" else 0.0)
                ks = k_values or (K_VALUES if family == "llama" else tuple(k for k in K_VALUES if k % 2 == 0))
                spec = EdgeProfileSpec(
                    device_class=device,
                    draft_model=draft,
                    quantization=quant,
                    target_model=TARGETS[family],
                    draft_tokens_per_s=round(1.0 / (size / bandwidth + overhead_s), 3),
                    power_watts=round(base_w + w_per_gb * size / 1e9, 2),
                    power_source="nominal",
                    acceptance=[AcceptancePoint(k=k, alpha=alpha(a2, k)) for k in ks],
                    verify_latency=VerifyLatency(network_rtt_s=0.1, fixed_s=0.4, per_token_s=0.0),
                    model_size_bytes=size,
                    memory_bytes=size + kv_bytes + RUNTIME_BYTES,
                    origin="illustrative",
                    notes=NOTE,
                )
                profiles.append(EdgeProfile.for_spec(spec))
    return profiles


def render() -> str:
    header = (
        "# ILLUSTRATIVE EdgeProfiles, NOT MEASUREMENTS. Generated by hack/make_illustrative_profiles.py;\n"
        "# do not edit by hand. The numbers were calibrated so that the ConfigSpec model reproduces the\n"
        '# findings reported by Li et al., "ConfigSpec: Profiling-Based Configuration Selection for\n'
        '# Distributed Edge-Cloud Speculative LLM Serving" (EuroSys 2026 TDIS workshop, arXiv 2604.09722):\n'
        "# drafting speed = memory-bound decode with one effective bandwidth per device (set so the goodput\n"
        "# optimum K at T_verify = 0.5 s is about 2 / 6-7 / 8-10 on RPi 4B / RPi 5 / Jetson), acceptance\n"
        "# alpha(K) = alpha_2 * (2/K)^0.2 with alpha_2 set to the paper's acceptance rates and cost ratios.\n"
        "# Use them to try the tools (edgespec rank / plot), never as data about real devices.\n"
    )
    docs: list[dict[str, Any]] = [p.to_api() for p in make_profiles()]
    return header + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs from what would be written"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale; run python hack/make_illustrative_profiles.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({text.count('kind: EdgeProfile')} profiles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
