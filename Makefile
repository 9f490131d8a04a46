# baton: developer entry points. See README.md.
#
#   make demo        private PostgreSQL + worker + ASGI server + a sample workflow
#   make demo-stop   stop all of it
#   make test        the test suite (PYTEST_ARGS="-x -k graph" to pass arguments)
#   make lint        ruff + mypy
#
# Set DATABASE_URL to use your own PostgreSQL instead of the private one.
# VENV / PYTHON pick another virtualenv, e.g. `make test VENV=.venv-py312 PYTHON=python3.12`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
BIN := $(VENV)/bin
# Python sources only: `ruff format` would also rewrite code blocks in docs/*.md.
LINT_PATHS := baton tests example_project $(wildcard bench/*.py)
STAMP := $(VENV)/.baton-installed

export VENV PYTEST_ARGS

.PHONY: help venv test demo demo-stop lint format pg-start pg-stop clean

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'

# Reinstall only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,redis]'
	@touch $@

venv: $(STAMP)

test: venv
	@bash scripts/run-tests.sh

demo: venv
	@bash scripts/demo.sh start

demo-stop:
	@bash scripts/demo.sh stop

# mypy gets a placeholder DATABASE_URL: the django-stubs plugin imports tests.settings.
lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	DATABASE_URL=$${DATABASE_URL:-postgres://lint@127.0.0.1:1/lint} $(BIN)/mypy baton

format: venv
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

pg-start:
	@bash scripts/services.sh pg-start
	@echo "DATABASE_URL=$$(bash scripts/services.sh pg-url)"

pg-stop:
	@bash scripts/services.sh pg-stop

clean: demo-stop
	rm -rf .run .pgdata build *.egg-info .pytest_cache .mypy_cache .ruff_cache
