#!/usr/bin/env bash
# The test command (README, .ci/run): lint, types, generated-file drift, then every test tier:
# unit, ConfigSpec, builders, cluster (real kube-apiserver + KWOK nodes), data plane (real models),
# the end-to-end scenario (a real node, the images, the chart), and the vLLM tier (vLLM's CPU build
# verifying with the real target, in its own venv).
source "$(dirname "$0")/env.sh"
echo "==> building or reusing the control-plane binaries (first run: ~11 min of Go builds)"
python -m edgespec_dev.tools ensure all
echo "==> deriving or reusing the draft models"
python -m edgespec_dev.drafts ensure
echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy --strict"
mypy operator/edgespec edge_image/edgespec_edge verifier_image/edgespec_verifier hack/edgespec_dev
echo "==> import contract (pure core never imports kopf or a Kubernetes client)"
lint-imports --no-cache
echo "==> generated files are up to date"
python -m edgespec.api.crdgen --check
python -m edgespec.api.docgen --check
python -m edgespec_dev.chartdocs --check
python hack/make_illustrative_profiles.py --check
python -m edgespec_dev.locks check
echo "==> helm lint --strict"
"$(python -m edgespec_dev.tools ensure helm | cut -d' ' -f2)" lint --strict charts/edgespec
echo "==> pytest"
python -m pytest -p no:cacheprovider -ra --ignore=tests/vllm_engine --ignore=tests/e2e/test_scenario.py "$@"
echo "==> end-to-end tier (a real node, the images, the operator by Helm; docs/e2e.md)"
source "$(dirname "$0")/e2e-tier.sh"
echo "==> vLLM tier (vLLM's CPU build in its own venv; docs/vllm.md)"
bash hack/vllm/test.sh
