"""A step that returns while the database is down: tests of an outage mid-attempt."""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg
from django.db import connections

import baton
from tests.testapp.models import PerformRun


def _database_answers(dsn: dict[str, Any]) -> bool:
    try:
        psycopg.connect(**dsn, connect_timeout=1).close()
    except psycopg.OperationalError:
        return False
    return True


class ReturnsDuringOutage(baton.Step):
    """Records its start (the database is up), then waits until the database stops
    answering and returns then: its outcome must be recorded while the server is down."""

    max_attempts = 3

    def perform(self, job: baton.Job) -> Any:
        PerformRun.objects.create(
            workflow_id=job.workflow_id,
            step=job.step_name,
            attempt=job.attempt,
            started=time.time(),
            pid=os.getpid(),
        )
        params = connections["default"].get_connection_params()
        dsn = {k: params[k] for k in ("host", "port", "user", "dbname") if params.get(k)}
        deadline = time.monotonic() + 120
        while _database_answers(dsn):
            if time.monotonic() > deadline:
                raise TimeoutError("the database never went down")
            time.sleep(0.05)
        return {"returned_at": time.time()}
