# baton: developer entry points. See README.md.
#
#   make demo        private PostgreSQL + worker + ASGI server + a sample workflow
#   make demo-stop   stop all of it
#   make test        the whole test suite (PYTEST_ARGS="-x -k graph" to pass arguments)
#   make test-unit   tests/unit only: no database, no services, seconds (run it on save)
#   make lint        ruff + mypy
#   make docs        the documentation site (mkdocs build --strict, into build/site/)
#   make docs-serve  the same, served with live reload at http://127.0.0.1:8000/
#   make dist        sdist and wheel into dist/, checked with twine check
#   make newcomer    Getting started followed in a new django-admin project (a wheel)
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

.PHONY: help venv test test-unit demo demo-stop lint format docs docs-serve dist newcomer pg-start pg-stop clean

help:
	@sed -n '2,14p' Makefile | sed 's/^# \{0,1\}//'

# Reinstall only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,redis,docs,bench]'
	@touch $@

venv: $(STAMP)

test: venv
	@bash scripts/run-tests.sh

# No PostgreSQL is started: tests/unit needs none (tests/conftest.py refuses one that does).
test-unit: venv
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit $(PYTEST_ARGS)

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

docs: venv
	$(BIN)/mkdocs build --strict

docs-serve: venv
	$(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8000

# sdist + wheel into dist/ (replacing what was there), then twine's metadata check.
# python -m build makes the wheel from the unpacked sdist, never from a stale build/lib.
dist: venv
	rm -rf dist build/lib build/bdist.*
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

newcomer: venv
	@bash scripts/newcomer.sh

pg-start:
	@bash scripts/services.sh pg-start
	@echo "DATABASE_URL=$$(bash scripts/services.sh pg-url)"

pg-stop:
	@bash scripts/services.sh pg-stop

clean: demo-stop
	rm -rf .run .pgdata build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
