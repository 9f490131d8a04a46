"""Fixtures for the example project's tests (run with --ds=example_project.settings)."""

from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture(autouse=True)
def clean_jobs(transactional_db: None) -> None:
    """Procrastinate's tables are unmanaged, so Django's flush between tests leaves them:
    empty them, so that one test's leftover jobs never reach the next test's worker."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
            "procrastinate_workers CASCADE"
        )
