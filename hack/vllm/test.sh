#!/usr/bin/env bash
# The vLLM tier of `make test` (hack/test.sh runs it after the main tiers, with the main venv active):
# makes or reuses the vLLM CPU venv (hack/vllm/requirements.lock) and the float32 target
# (hack/edgespec_dev/vllm_env.py), then runs tests/vllm_engine in that venv. Extra arguments go to pytest.
# A machine where the environment cannot be installed fails the run loudly; outside CI,
# EDGESPEC_SKIP_VLLM=1 skips the tier with a warning (refused under CI=true).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ "${EDGESPEC_SKIP_VLLM:-}" = "1" ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "FAIL: EDGESPEC_SKIP_VLLM=1 is not allowed under CI=true: the vLLM tier must run" >&2
    exit 1
  fi
  echo "WARNING: EDGESPEC_SKIP_VLLM=1: the vLLM tier was NOT run" >&2
  exit 0
fi
started=$(date +%s)
if ! assignments="$(python -m edgespec_dev.vllm_env ensure)"; then
  echo "FAIL: the vLLM tier's environment (vLLM CPU venv or converted target) could not be made;" \
    "see the [vllm-env] lines above (CI=${CI:-false})" >&2
  exit 1
fi
eval "$assignments"
echo "==> vLLM environment ready after $(( $(date +%s) - started )) s: $EDGESPEC_VLLM_PYTHON"
export EDGESPEC_VLLM_TARGET
# vLLM's CPU build needs a KV-cache size (GiB); its engine process imports the verifier package.
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
# The model runs inside vLLM's engine-core process (UniProcExecutor, what vLLM uses on one GPU) rather
# than in a worker process of its own: vLLM's CPU build otherwise forces the multiprocess executor,
# whose engine core busy-waits (sched_yield) on the worker's shared-memory queue for a second after
# every step, and on two cores that spinning costs a core. Measured alone: 16 tests, 244 s and 428
# CPU-seconds with the worker process, 187 s and 300 CPU-seconds without (docs/vllm.md).
export VLLM_ENABLE_V1_MULTIPROCESSING="${VLLM_ENABLE_V1_MULTIPROCESSING:-0}"
# One OpenMP thread for the model, as the multiprocess executor gives its worker on two cores (it binds
# one core and leaves the other to the engine core). Left to its default, torch's OpenMP runs a thread
# per core that spin-waits at every barrier: beside the end-to-end tier, the tier then took 475 s.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# The edge drafter and tokenizer in the tests are llama.cpp: the main venv's own build (the one the
# llama.cpp tier runs), reached through a directory holding just that package, so the vLLM venv's own
# packages stay first for everything else.
llama_dir="$(mktemp -d)"
trap 'rm -rf "$llama_dir"' EXIT
ln -s "$(python -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')" "$llama_dir/llama_cpp"
export PYTHONPATH="$ROOT/operator:$ROOT/edge_image:$ROOT/verifier_image:$ROOT/hack:$llama_dir"
"$EDGESPEC_VLLM_PYTHON" -m pytest -p no:cacheprovider -ra --durations=10 tests/vllm_engine "$@"
echo "==> vLLM tier took $(( $(date +%s) - started )) s"
