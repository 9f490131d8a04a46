"""Reading the results of a step's dependencies (used by baton.Job)."""

from __future__ import annotations

import json
from typing import Any

from django.db import connections

from baton.execution.deferrer import database_alias

DependencyRow = tuple[str | None, str | None, bool, Any, str | None]


def load_dependency_results(step_id: int) -> dict[str, DependencyRow]:
    """{dep name: (group, group key, has a result, value, trace span)} in one query."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT u.name, u."group", u.group_key, r.step_id IS NOT NULL, r.value, u.trace_span
              FROM baton_stepdependency e
              JOIN baton_step u ON u.id = e.upstream_id
              LEFT JOIN baton_stepresult r ON r.step_id = u.id
             WHERE e.downstream_id = %s
            """,
            [step_id],
        )
        rows = cursor.fetchall()
    return {
        name: (group, key, has_result, _decode(value), span)
        for name, group, key, has_result, value, span in rows
    }


def _decode(value: Any) -> Any:
    # Django has psycopg hand jsonb over as text, for JSONField to decode.
    return json.loads(value) if isinstance(value, str) else value


def get_result(job: Any, name: str) -> Any:
    """The stored result of dependency `name`; raises baton.ResultUnavailable."""
    return job.result(name)


def get_all_results(job: Any) -> dict[str, Any]:
    """{dep name: result} for every dependency that stored one."""
    results: dict[str, Any] = job.results()
    return results
