"""Shared fixtures (real PostgreSQL via pytest-django, real workers) and the test layers.

The layers are folders: tests/unit (no database), tests/integration (PostgreSQL),
tests/worker (real worker processes, crashes, browser). Each test gets its layer's marker
(`unit`, `integration`, `worker`) from its folder, plus `browser` for the Playwright
tests, so `-m` selects them. A test still at the top of tests/ gets the marker of what it
uses: a worker fixture -> worker, the database -> integration, neither -> unit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, connections

from baton.llm import debug as llm_debug
from baton.testing import WorkerProcess
from tests.helpers import SHARED_DAGS

__all__ = ["SHARED_DAGS"]  # kept importable from here for the tests that read it so

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "integration", "worker")
WORKER_FIXTURES = {"worker", "workers", "start_worker"}
DB_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "_django_db_helper",
    "live_server",
    "admin_user",
    "admin_client",
}


def _needs_database(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("django_db") is not None or bool(names & DB_FIXTURES)


def _uses_worker(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("worker") is not None or bool(names & WORKER_FIXTURES)


def _layer(item: pytest.Item) -> str:
    try:
        folder = item.path.resolve().relative_to(TESTS).parts[0]
    except ValueError:
        folder = ""
    if folder in LAYERS:
        return folder
    if _uses_worker(item) or "browser" in item.path.name:
        return "worker"
    return "integration" if _needs_database(item) else "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = []
    for item in items:
        layer = _layer(item)
        item.add_marker(layer)
        if layer != "worker" and _uses_worker(item):
            item.add_marker("worker")  # -m "not worker" leaves out every real process
        if "browser" in item.path.name:
            item.add_marker("browser")
        if layer == "unit" and _needs_database(item):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "tests/unit has no database, and these tests use one: move them to "
            "tests/integration:\n  " + "\n  ".join(misplaced)
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get("DATABASE_URL"):
        return
    needing = [item.nodeid for item in session.items if _needs_database(item)]
    if needing:
        raise pytest.UsageError(
            f"DATABASE_URL is not set and {len(needing)} selected tests need PostgreSQL "
            f"(the first: {needing[0]}). Run `make test-unit` (or `pytest tests/unit`) for "
            "the tests without a database; `make test` starts a private PostgreSQL; or "
            "point DATABASE_URL at a PostgreSQL database you own."
        )


@pytest.fixture
def clean_jobs(transactional_db: None) -> None:
    """Procrastinate's tables are unmanaged, so Django's flush leaves them: empty them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
            "procrastinate_workers CASCADE"
        )


@pytest.fixture
def workers(clean_jobs: None) -> Iterator[list[WorkerProcess]]:
    """Start workers with start_worker(...); all are stopped at the end of the test."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def start_worker(workers: list[WorkerProcess]):  # type: ignore[no-untyped-def]
    def start(**kwargs):  # type: ignore[no-untyped-def]
        worker = WorkerProcess(**kwargs).start()
        workers.append(worker)
        return worker

    return start


@pytest.fixture
def worker(start_worker):  # type: ignore[no-untyped-def]
    """One real worker process, concurrency 4."""
    return start_worker(concurrency=4)


@pytest.fixture
def close_debug_writer() -> Iterator[None]:
    """baton.debug's writer thread closes its connection after the test, so that the
    test database can be dropped at the end."""
    yield
    if llm_debug._writer is not None:
        llm_debug._writer.submit(connections.close_all).result(timeout=10)
