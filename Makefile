# One command per workflow, the same locally and in CI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint bench serve venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# MLServer 1.7, the engine the gateway's upstream mode is tested against and benchmarked
# beside, in its own environment (its pins conflict with the project's).
MLSERVER_STAMP := .venv-mlserver/.installed
$(MLSERVER_STAMP):
	test -x .venv-mlserver/bin/python || $(PYTHON) -m venv .venv-mlserver
	.venv-mlserver/bin/python -m pip install --quiet 'mlserver==1.7.*' 'uvloop==0.21.*' onnxruntime numpy
	touch $(MLSERVER_STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# PostgreSQL and Redis: the running ones, or throwaway servers (scripts/with-test-services).
test: lint $(MLSERVER_STAMP)
	scripts/with-test-services $(BIN)/pytest

# The hub on https://127.0.0.1:8443 with its data in .bastion/ (SQLite, local blob store,
# self-signed TLS). The first start prints the admin token once and the CA fingerprint.
serve: $(STAMP)
	$(BIN)/bastion serve --data-dir .bastion

bench: $(STAMP) $(MLSERVER_STAMP)
	$(BIN)/python benchmarks/signing.py
	$(BIN)/python benchmarks/scanning.py
	$(BIN)/python benchmarks/hub.py
	$(BIN)/python benchmarks/auth.py
	$(BIN)/python benchmarks/gateway.py

clean:
	rm -rf $(VENV) .venv-mlserver .pytest_cache .mypy_cache .ruff_cache .hypothesis
