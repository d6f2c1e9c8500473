#!/usr/bin/env bash
# The main job on the embedded default: a local control plane with emulated Raspberry Pi, Jetson and
# GPU nodes, the CRDs, the operator, a sample SpeculativeDeployment with imported profiles, and the
# selection printed and plotted. The cluster keeps running afterwards; stop it with `make demo-stop`.
source "$(dirname "$0")/env.sh"
OUT="${OUT:-$ROOT/out/demo}"
mkdir -p "$OUT"
echo "==> building or reusing the control-plane binaries (first run: ~11 min of Go builds)"
python -m edgespec_dev.tools ensure kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok
KUBECTL="$(python -m edgespec_dev.tools ensure kubectl | tail -1 | awk '{print $NF}')"
echo "==> starting the local cluster 'demo' (a running one is restarted fresh)"
python -m edgespec_dev.cluster stop --name demo --delete > /dev/null 2>&1 || true
python -m edgespec_dev.cluster start --name demo
export KUBECONFIG="$EDGESPEC_CACHE/clusters/demo/kubeconfig"
k() { "$KUBECTL" "$@"; }
k get nodes -L edgespec.dev/device-class,kubernetes.io/arch,node.kubernetes.io/instance-type
echo "==> installing the CRDs"
k apply --server-side -f crds/
k wait --for=condition=Established crd --all --timeout=60s
METRICS_PORT="${EDGESPEC_METRICS_PORT:-18080}"
echo "==> starting the operator (log: $OUT/operator.log, metrics: http://127.0.0.1:$METRICS_PORT/metrics)"
EDGESPEC_METRICS_PORT="$METRICS_PORT" EDGESPEC_HTTP_HOST=127.0.0.1 \
  python -m edgespec.handlers --liveness none > "$OUT/operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT
echo "==> applying samples/speculativedeployment-paper.yaml"
k apply -f samples/speculativedeployment-paper.yaml
for _ in $(seq 1 60); do
  [ -n "$(k get specdeploy llama70b-edge -o jsonpath='{.status.nodesSummary}')" ] && break; sleep 0.5
done
k get specdeploy
echo "==> importing the illustrative profiles (samples/profiles/paper-illustrative.yaml) instead of profiling"
k apply -f samples/profiles/paper-illustrative.yaml > /dev/null
for _ in $(seq 1 60); do
  [ -n "$(k get specdeploy llama70b-edge -o jsonpath='{.status.kSummary}')" ] && break; sleep 0.5
done
k get specdeploy
echo "==> what the operator chose, and why"
k get specdeploy llama70b-edge -o jsonpath='{range .status.deviceClasses[*]}{.name}: {.selection.reason}{"\n\n"}{end}'
echo "==> the full ranking from the same profiles (edgespec rank), and plots in $OUT"
python -m edgespec rank --profiles samples/profiles/paper-illustrative.yaml --objective goodput \
  --target llama-3.1-70b || true
python -m edgespec plot --profiles samples/profiles/paper-illustrative.yaml --target llama-3.1-70b --out "$OUT"
ls "$OUT"/*.png
echo "==> the operator's own metrics (reconciles, API requests, selection changes)"
python - "$METRICS_PORT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(("edgespec_reconciles_total", "edgespec_api_requests_total", "edgespec_selection_changes_total")):
        print(" ", line)
PY
echo "==> the deployment and the emulated devices"
k get specdeploy -o wide
k get nodes -L edgespec.dev/device-class,kubernetes.io/arch,node.kubernetes.io/instance-type
echo
echo "The cluster is still running: export KUBECONFIG=$KUBECONFIG"
echo "Stop it with: make demo-stop"
