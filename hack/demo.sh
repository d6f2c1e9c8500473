#!/usr/bin/env bash
# The main job on the embedded default: a local control plane with emulated Raspberry Pi, Jetson and
# GPU nodes plus one real kubelet node, the project's images, the operator installed by Helm (a pod on
# the real node), then two SpeculativeDeployments:
#   - the paper's fleet with imported profiles: the selection per device class, printed and plotted;
#   - a real one on the real node: profiled there, selected, deployed, and answering a completion
#     through the edge draft server, with its speculative statistics.
# The cluster keeps running afterwards; stop it with `make demo-stop`.
source "$(dirname "$0")/env.sh"
OUT="${OUT:-$ROOT/out/demo}"
mkdir -p "$OUT"
echo "==> building or reusing the cluster binaries (first run: ~15 min of Go builds)"
python -m edgespec_dev.tools ensure all > /dev/null
KUBECTL="$(python -m edgespec_dev.tools ensure kubectl | tail -1 | awk '{print $NF}')"
echo "==> deriving or reusing the draft models"
python -m edgespec_dev.drafts ensure > /dev/null
echo "==> the cluster 'demo': control plane, KWOK fleet, a real node, images, the operator by Helm"
set +e
python -m edgespec_dev.e2e up --name demo > "$OUT/up.out"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "the demo environment did not come up (exit $rc); see the lines above" >&2
  exit "$rc"
fi
export KUBECONFIG="$(sed -n 's/^KUBECONFIG=//p' "$OUT/up.out" | tail -1)"
k() { "$KUBECTL" "$@"; }
k get nodes -L edgespec.dev/device-class,kubernetes.io/arch,node.kubernetes.io/instance-type
k get pods -n edgespec-system -o wide

echo "==> the paper's fleet: samples/speculativedeployment-paper.yaml with imported profiles"
# The profiles first: applied after the deployment, its profiling Jobs would already be created (and
# "complete" at once on the KWOK nodes, which run nothing).
k apply -f samples/profiles/paper-illustrative.yaml > /dev/null
k apply -f samples/speculativedeployment-paper.yaml
for _ in $(seq 1 120); do
  [ -n "$(k get specdeploy llama70b-edge -o jsonpath='{.status.kSummary}')" ] && break; sleep 0.5
done
k get specdeploy llama70b-edge
echo "==> what the operator chose for the fleet, and why"
k get specdeploy llama70b-edge -o jsonpath='{range .status.deviceClasses[*]}{.name}: {.selection.reason}{"\n\n"}{end}'

echo "==> a real deployment on the real node: samples/speculativedeployment-local.yaml (profiling on the node)"
k apply -f samples/speculativedeployment-local.yaml
python -m edgespec_dev.demo watch local --timeout 1200
k get specdeploy local -o wide
k get edgeprofiles -l edgespec.dev/device-class=local-cpu
k get specdeploy local -o jsonpath='{range .status.deviceClasses[*]}{.name}: {.selection.reason}{"\n"}{end}'
echo "==> one completion through the edge draft server on the real node"
python -m edgespec_dev.demo complete local --prompt "The capital of France is" --max-tokens 32

echo "==> the full ranking from the illustrative profiles (edgespec rank), and plots in $OUT"
python -m edgespec rank --profiles samples/profiles/paper-illustrative.yaml --objective goodput \
  --target llama-3.1-70b || true
python -m edgespec plot --profiles samples/profiles/paper-illustrative.yaml --target llama-3.1-70b --out "$OUT"
ls "$OUT"/*.png
echo "==> the operator's own metrics (reconciles, API requests, selection changes, telemetry)"
python -m edgespec_dev.demo metrics
echo
echo "The cluster is still running: export KUBECONFIG=$KUBECONFIG"
echo "Stop it with: make demo-stop"
