#!/usr/bin/env bash
# The test command (README, .ci/run): lint, types, generated-file drift, then every test tier:
# unit, ConfigSpec, builders, cluster (real kube-apiserver + KWOK nodes), data plane (real models),
# the end-to-end scenario (a real node, the images, the chart), and the vLLM tier (vLLM's CPU build
# verifying with the real target, in its own venv).
source "$(dirname "$0")/env.sh"
# Each step prints the time since the start, so a run shows what each tier costs (docs/e2e.md "Measured").
TEST_START=$SECONDS
step() { echo "==> [+$((SECONDS - TEST_START)) s] $*"; }
step "building or reusing the control-plane binaries (first run: ~11 min of Go builds)"
python -m edgespec_dev.tools ensure all
step "deriving or reusing the draft models"
python -m edgespec_dev.drafts ensure
# mypy takes one core for about 15 s: it runs beside the other checks, its report printed after them.
step "mypy --strict (beside the checks below)"
mypy_report="$(mktemp)"
mypy operator/edgespec edge_image/edgespec_edge verifier_image/edgespec_verifier hack/edgespec_dev \
  > "$mypy_report" 2>&1 &
mypy_pid=$!
step "ruff"
ruff check .
ruff format --check .
step "import contract (pure core never imports kopf or a Kubernetes client)"
lint-imports --no-cache
step "generated files are up to date"
python -m edgespec.api.crdgen --check
python -m edgespec.api.docgen --check
python -m edgespec_dev.chartdocs --check
python hack/make_illustrative_profiles.py --check
python -m edgespec_dev.locks check
step "helm lint --strict"
"$(python -m edgespec_dev.tools ensure helm | cut -d' ' -f2)" lint --strict charts/edgespec
step "mypy --strict: its report"
mypy_rc=0
wait "$mypy_pid" || mypy_rc=$?
cat "$mypy_report"
rm -f "$mypy_report"
[ "$mypy_rc" -eq 0 ] || exit "$mypy_rc"
# Three workers on two cores: a good part of the suite waits on control planes and processes (the
# SIGKILL points, the restarts), and a third worker fills that idle CPU (556 s against 638 s on 2).
step "pytest (${EDGESPEC_TEST_WORKERS:=3} workers; tests/conftest.py says what runs beside what)"
python -m pytest -p no:cacheprovider -ra --durations=25 -n "$EDGESPEC_TEST_WORKERS" \
  --ignore=tests/vllm_engine --ignore=tests/e2e/test_scenario.py "$@"
step "end-to-end tier (a real node, the images, the operator by Helm; docs/e2e.md) and, beside it, the vLLM tier (vLLM's CPU build in its own venv; docs/vllm.md, lines prefixed [vllm])"
# The vLLM tier runs in the background while the end-to-end tier waits on pods and Jobs; its output
# is prefixed so the two stay readable. Both must pass.
bash hack/vllm/test.sh > >(sed -u 's/^/[vllm] /') 2>&1 &
vllm_pid=$!
# On a failure or Ctrl-C before it ends, stop the whole tier: its script, its pytest and vLLM's engine
# processes (a plain kill of the script would leave them running).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2> /dev/null); do kill_tree "$child"; done
  kill "$1" 2> /dev/null || true
}
trap 'kill_tree "$vllm_pid"' EXIT
# In a subshell: the tier's own EXIT trap (tearing its cluster down) then leaves this one's alone.
(source "$(dirname "$0")/e2e-tier.sh")
step "end-to-end tier passed; waiting for the vLLM tier"
wait "$vllm_pid"
trap - EXIT
step "done"
