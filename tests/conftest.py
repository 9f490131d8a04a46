"""Shared fixtures: real PostgreSQL (pytest-django's test database) and real workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from baton.testing import WorkerProcess

SHARED_DAGS = Path(__file__).resolve().parents[1].parent / "shared" / "dags"


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
