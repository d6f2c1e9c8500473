#!/usr/bin/env bash
# Runs bench/bench_verifier_scaling.py (both engines) in the vLLM venv, made or reused like the tier's:
#   bash hack/vllm/bench.sh --out bench_verifier_scaling.json
# Run it with the main venv active (source hack/env.sh), on a machine not busy with builds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
eval "$(python -m edgespec_dev.vllm_env ensure)"
export EDGESPEC_VLLM_TARGET
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
llama_dir="$(mktemp -d)"  # the main venv's llama.cpp build, as hack/vllm/test.sh does
trap 'rm -rf "$llama_dir"' EXIT
ln -s "$(python -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')" "$llama_dir/llama_cpp"
export PYTHONPATH="$ROOT/operator:$ROOT/edge_image:$ROOT/verifier_image:$ROOT/hack:$llama_dir"
"$EDGESPEC_VLLM_PYTHON" bench/bench_verifier_scaling.py "$@"
