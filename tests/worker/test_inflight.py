"""Async steps awaiting a model hold no database connection (issue 13, goal 4).

A worker at concurrency 60 runs 60 async steps that all wait at once; while they wait,
the worker's connections to the database stay within the documented bound
(docs/howto/workers.md: ASYNC_DB_THREADS + the sync thread pool + Procrastinate's pool),
which is below the number of steps in flight on any machine (its largest value is
4 + 32 + 4 = 40).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import connection

import baton
from baton.execution.worker import connection_bound
from baton.testing import assert_completed, wait_for_workflow
from tests.testapp.tasks import AwaitRelease

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

IN_FLIGHT = 60


def doing(workflow_id: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE status = 'doing' AND args->>'workflow_id' = %s",
            [workflow_id],
        )
        return int(cursor.fetchone()[0])


def worker_connections() -> int:
    """Connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_async_steps_in_flight_hold_no_connection(start_worker, tmp_path: Path) -> None:
    release = tmp_path / "release"
    start_worker(concurrency=IN_FLIGHT)
    workflow = (
        baton.new("in flight")
        .add_many("call", [AwaitRelease.new(release=str(release), n=n) for n in range(IN_FLIGHT)])
        .insert()
    )
    deadline = time.monotonic() + 120
    while doing(str(workflow.pk)) < IN_FLIGHT:
        assert time.monotonic() < deadline, f"only {doing(str(workflow.pk))} steps in flight"
        time.sleep(0.05)
    held = max(worker_connections() for _ in range(10))
    release.touch()
    workflow = wait_for_workflow(workflow, timeout=120)
    assert_completed(workflow)
    assert held <= connection_bound() < IN_FLIGHT, (held, connection_bound())
