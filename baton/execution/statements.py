"""Running and decoding baton's per-step statements.

execute_hot() runs the claim and the completion prepared, with server-side binding;
steps_from_rows() turns raw rows of STEP_COLUMNS back into Step instances; compact()
keeps a statement short enough for psycopg's query cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import psycopg
from django.db import connections

from baton.execution.deferrer import may_prepare
from baton.models import WorkflowStep


def sql_state(state: StrEnum) -> str:
    """A state (baton/graph/states.py) as an SQL literal, for statements built at import
    time: their text, which psycopg prepares, stays the same as if written out."""
    value = str(state.value)
    if not value.isidentifier():  # nothing to escape, ever: refuse rather than quote
        raise ValueError(f"not a state name: {value!r}")
    return f"'{value}'"


def sql_states(*states: StrEnum) -> str:
    """States as a comma-separated list of SQL literals (for IN (...))."""
    return ", ".join(sql_state(state) for state in states)


STEP_FIELDS = [field.attname for field in WorkflowStep._meta.concrete_fields]
STEP_COLUMNS = ", ".join(f's."{field.column}"' for field in WorkflowStep._meta.concrete_fields)


_CONVERTERS = [
    (index, field)
    for index, field in enumerate(WorkflowStep._meta.concrete_fields)
    if hasattr(field, "from_db_value")
]


def steps_from_rows(rows: Iterable[Sequence[Any]], alias: str) -> list[WorkflowStep]:
    """Step instances from raw rows of STEP_COLUMNS (plus anything after them)."""
    connection = connections[alias]
    steps = []
    for row in rows:
        values = list(row[: len(STEP_FIELDS)])
        for index, field in _CONVERTERS:  # e.g. JSONField decodes its text
            values[index] = field.from_db_value(values[index], None, connection)
        steps.append(WorkflowStep.from_db(alias, STEP_FIELDS, values))
    return steps


def execute_hot(alias: str, sql: str, params: dict[str, Any]) -> list[Any]:
    """Run one of the per-step statements (claim, completion) and return its rows.

    Django binds parameters on the client, so Postgres would parse and plan these
    statements at every step, which costs more than running them. They run instead on a
    psycopg cursor with server-side binding on the same connection (so in the same
    transaction, if any) and are prepared once per connection: psycopg's preparation,
    which Django turns off for the whole connection, is turned on for these two only
    (see deferrer.may_prepare). While Django captures queries (CaptureQueriesContext,
    DEBUG), its own cursor runs them, so they are counted.
    """
    wrapper = connections[alias]
    if wrapper.queries_logged:
        with wrapper.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    wrapper.ensure_connection()
    raw = wrapper.connection
    if not may_prepare(alias):
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    threshold = raw.prepare_threshold
    if threshold is None:
        # Only queries executed with prepare=True are prepared at this threshold; it is
        # put back before any other query runs on this (thread's) connection.
        raw.prepare_threshold = _PREPARE_WHEN_ASKED
    try:
        with psycopg.Cursor(raw) as cursor:
            cursor.execute(sql, params, prepare=True)
            return list(cursor.fetchall())
    finally:
        raw.prepare_threshold = threshold


_PREPARE_WHEN_ASKED = 2**31


def changed_step(step: WorkflowStep, **values: Any) -> WorkflowStep:
    """A new instance of `step` with some fields changed (observers may hold the old one)."""
    return WorkflowStep.from_db(
        step._state.db, STEP_FIELDS, [values.get(f, getattr(step, f)) for f in STEP_FIELDS]
    )


def compact(sql: str) -> str:
    """The statement without its comments and runs of whitespace: psycopg caches the
    conversion of a query's %(name)s placeholders only for queries under 4,096 bytes,
    so a longer one is converted again at every step."""
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return " ".join(" ".join(lines).split())
