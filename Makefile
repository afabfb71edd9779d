# The verbs people type. `make test` is the README's test command and what CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is rebuilt when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: help venv tools image chart lint test test-unit test-integration demo clean

help:
	@echo "make demo              the operator serving the sample models on a simulated GPU cluster"
	@echo "make test              lint, build the control-plane tools if needed, run unit + integration tests"
	@echo "make test-unit         unit tests only (no cluster, no tools needed)"
	@echo "make test-integration  integration tests only (real control plane)"
	@echo "make lint              ruff, mypy (strict) and the import-linter layer contracts"
	@echo "make tools             build kube-apiserver, etcd, kwok, ... into the cache (once per version)"
	@echo "make venv              create .venv with the project and its test/dev extras"
	@echo "make chart             copy crds/ into the Helm chart and render the kustomize base from it"
	@echo "make image             build the operator image localhost/deepseek-operator:<version> with podman"

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

tools:
	hack/build-tools.sh
	hack/build-schemas.sh >/dev/null
	hack/build-argocd-tools.sh >/dev/null
	hack/build-adapter.sh
	hack/install-monitoring-tools.sh
	hack/fetch-prometheus-operator-crds.sh >/dev/null

# podman, runc and mmdebstrap from Debian (once), the base root filesystem (cached outside the
# repo), the wheels, then a build with no network: see hack/build-image.sh.
image: venv
	hack/build-image.sh

# crds/ is the one source of the CRDs; the chart gets copies, and manifests/install (kustomize)
# is rendered from the chart.
chart: venv tools
	hack/sync-chart-crds.sh
	$(BIN)/python hack/render-install.py
	$(BIN)/python hack/render-monitoring.py
	$(BIN)/python hack/render-adapter-rules.py

lint: venv
	$(BIN)/ruff check operator tests hack
	$(BIN)/ruff format --check operator tests hack
	$(BIN)/mypy
	$(BIN)/lint-imports

test: venv lint tools
	$(BIN)/python -m pytest

test-unit: venv
	$(BIN)/python -m pytest -m unit

test-integration: venv tools
	$(BIN)/python -m pytest -m integration

demo: venv tools
	$(BIN)/deepseek-operator demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
