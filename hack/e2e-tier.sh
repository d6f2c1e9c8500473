# Sourced by hack/test.sh: bring up the end-to-end environment, run tests/e2e/test_scenario.py against
# it through EDGESPEC_E2E_KUBECONFIG only, then tear it down (also on failure or Ctrl-C).
# Where the machine cannot host a real node, the scenario is skipped with the reason, or fails
# under CI=true.
E2E_LOG="$EDGESPEC_CACHE/e2e-up.log"
mkdir -p "$EDGESPEC_CACHE"
trap 'python -m edgespec_dev.e2e down --name e2e > /dev/null 2>&1 || true' EXIT
set +e
python -m edgespec_dev.e2e up --name e2e 2> >(tee "$E2E_LOG" >&2) > "$E2E_LOG.out"
up_rc=$?
set -e
if [ "$up_rc" -eq 0 ]; then
  export EDGESPEC_E2E_KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$E2E_LOG.out" | tail -1)"
elif [ "$up_rc" -eq 3 ]; then
  export EDGESPEC_E2E_UNAVAILABLE="$(tail -1 "$E2E_LOG")"
else
  echo "the end-to-end environment did not come up (exit $up_rc); log: $E2E_LOG" >&2
  exit 1
fi
python -m pytest -p no:cacheprovider -ra -rP --durations=0 tests/e2e/test_scenario.py
python -m edgespec_dev.e2e down --name e2e
trap - EXIT
