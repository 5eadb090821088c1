# Entry points for people and CI. Every target that needs tools runs scripts/bootstrap.sh first
# (idempotent, quiet when nothing is missing), so a fresh Debian 12 machine needs only `make test`.
SHELL := /usr/bin/env bash
VENV := .venv
CALLBACK := $(VENV)/bin/callback
PYTEST_ARGS ?=

.PHONY: bootstrap test run stack-up stack-down stack-status lint

bootstrap:
	@scripts/bootstrap.sh

# the test session starts (and stops) its own stack on test ports: see tests/conftest.py
test: bootstrap
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# the demo: the whole pipeline on the local stack plays a carrier's callback traffic, checks every
# outcome and charge, and writes its report (.demo/); DEMO_ARGS="--chaos --callbacks 60" for more
DEMO_ARGS ?=
run: bootstrap
	$(CALLBACK) demo $(DEMO_ARGS)

stack-up: bootstrap
	$(CALLBACK) stack up

stack-down:
	@if [ -x $(CALLBACK) ]; then $(CALLBACK) stack down; fi

stack-status: bootstrap
	$(CALLBACK) stack status

lint: bootstrap
	$(VENV)/bin/ruff check .
