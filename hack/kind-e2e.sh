#!/usr/bin/env bash
# The end-to-end tier on kind, for machines with Docker (it cannot run on the project's CI machine:
# there is no Docker engine and no registry for kind's node image there; see docs/e2e.md).
#
#   hack/kind-e2e.sh            # create the cluster, load images, add KWOK nodes, install, test
#   KEEP=1 hack/kind-e2e.sh     # keep the cluster afterwards
#
# Needs: docker, kind, kubectl, helm on PATH, and the project's Python environment (hack/env.sh).
# The suite under tests/e2e talks to the cluster only through EDGESPEC_E2E_KUBECONFIG and node labels,
# so it is the same suite `make test` runs on the local real node.
source "$(dirname "$0")/env.sh"
CLUSTER="${CLUSTER:-edgespec-e2e}"
CLASS="${EDGESPEC_E2E_DEVICE_CLASS:-local-cpu}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
CACHE_HOSTPATH="${CACHE_HOSTPATH:-/var/lib/edgespec/models}"
KUBECONFIG_FILE="$EDGESPEC_CACHE/kind-$CLUSTER.kubeconfig"
for tool in docker kind kubectl helm; do
  command -v "$tool" > /dev/null || { echo "kind-e2e: '$tool' is not on PATH; install it first" >&2; exit 2; }
done

echo "==> building the images with docker (operator, edge, CPU verifier)"
TAG="$(git rev-parse --short HEAD)"
docker build -f operator/Dockerfile -t "ghcr.io/edgespec/operator:$TAG" .
docker build -f edge_image/Dockerfile -t "ghcr.io/edgespec/edge:$TAG" .
docker build -f verifier_image/Dockerfile -t "ghcr.io/edgespec/verifier:$TAG" .

echo "==> creating the kind cluster '$CLUSTER' (one control plane, one worker as the real edge node)"
kind delete cluster --name "$CLUSTER" > /dev/null 2>&1 || true
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 180s --config - <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels:
      edgespec.dev/device-class: $CLASS
      edgespec.dev/role: verifier
EOF
export KUBECONFIG="$KUBECONFIG_FILE"
trap '[ -n "${KEEP:-}" ] || kind delete cluster --name "$CLUSTER"' EXIT
WORKER="$(kubectl get nodes -l "edgespec.dev/device-class=$CLASS" -o jsonpath='{.items[0].metadata.name}')"

echo "==> loading the images into the nodes"
for image in operator edge verifier; do kind load docker-image --name "$CLUSTER" "ghcr.io/edgespec/$image:$TAG"; done

echo "==> seeding the node-local model cache on $WORKER ($CACHE_HOSTPATH)"
python -m edgespec_dev.drafts ensure
python -m edgespec_dev.e2e seed-dir "$EDGESPEC_CACHE/kind-models"
docker exec "$WORKER" mkdir -p "$CACHE_HOSTPATH"
docker cp "$EDGESPEC_CACHE/kind-models/." "$WORKER:$CACHE_HOSTPATH/"

echo "==> adding KWOK and the emulated fleet"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/kwok.yaml"
kubectl apply -f "https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION/stage-fast.yaml"
python -m edgespec_dev.e2e fleet | kubectl apply -f -

echo "==> installing the chart"
helm upgrade --install edgespec charts/edgespec -n edgespec-system --create-namespace --wait --timeout 5m \
  --set "image.tag=$TAG" --set "workloadImages.edge.tag=$TAG" --set "workloadImages.verifier.tag=$TAG" \
  --set "workloadImages.pullPolicy=Never" --set "image.pullPolicy=Never" \
  --set "modelCache.hostPath=$CACHE_HOSTPATH" \
  --set "nodeSelector.edgespec\.dev/device-class=$CLASS"

echo "==> running tests/e2e"
EDGESPEC_E2E_KUBECONFIG="$KUBECONFIG_FILE" python -m pytest -p no:cacheprovider -ra tests/e2e -m e2e "$@"
