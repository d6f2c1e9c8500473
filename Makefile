# The two commands of the README, plus helpers. Each installs what it needs, idempotently.
.PHONY: demo test demo-stop crds chart-docs lock
demo:        ## run the main job: local cluster, operator, sample deployment, selection printed and plotted
	bash hack/demo.sh
test:        ## lint, type-check and run every test tier (what CI runs)
	bash hack/test.sh
demo-stop:   ## stop the demo cluster
	bash -c 'source hack/env.sh && python -m edgespec_dev.e2e down --name demo'
chart-docs:  ## regenerate charts/edgespec/README.md from values.yaml (helm-docs, built from its Go module)
	bash -c 'source hack/env.sh && python -m edgespec_dev.chartdocs'
crds:        ## regenerate crds/ and docs/api.md from the API types
	bash -c 'source hack/env.sh && python -m edgespec.api.crdgen && python -m edgespec.api.docgen'
lock:        ## re-resolve the hashed dependency locks (CI's venv and each image) from pyproject.toml (needs PyPI)
	bash -c 'source hack/env.sh && python -m edgespec_dev.locks lock'
