"""Deferring Procrastinate jobs on Django's own connection, inside the caller's transaction.

Inside a worker, `task.defer()` goes through the worker's own psycopg pool and so does
not join the step's transaction: a rolled-back completion would still enqueue its
dependents. A JobManager built on DjangoConnector runs its queries on Django's connection
for this thread, so the jobs are committed, or rolled back, with baton's rows.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connections
from procrastinate import jobs as procrastinate_jobs
from procrastinate import manager as procrastinate_manager
from procrastinate.contrib.django import django_connector
from procrastinate.contrib.django import settings as procrastinate_settings


@dataclass(frozen=True)
class JobRequest:
    """What baton needs to enqueue one step."""

    step_id: int
    step_name: str
    workflow_id: str
    task_name: str
    queue: str
    priority: int = 0
    lock: str | None = None
    scheduled_at: datetime.datetime | None = None


@functools.cache
def job_manager() -> procrastinate_manager.JobManager:
    connector = django_connector.DjangoConnector(
        alias=procrastinate_settings.settings.DATABASE_ALIAS
    )
    return procrastinate_manager.JobManager(connector)


def database_alias() -> str:
    return str(procrastinate_settings.settings.DATABASE_ALIAS)


def may_prepare(alias: str) -> bool:
    """Whether baton may use prepared statements on this database's connections.

    Django keeps psycopg's off by default (prepare_threshold=None) for connection
    poolers; baton prepares its own per-step statements anyway, unless the database's
    OPTIONS set prepare_threshold to None explicitly."""
    options = connections[alias].settings_dict.get("OPTIONS") or {}
    return not ("prepare_threshold" in options and options["prepare_threshold"] is None)


def defer_jobs(requests: Sequence[JobRequest]) -> list[int]:
    """Insert one Procrastinate job per request in one statement; returns the job ids."""
    if not requests:
        return []
    jobs = [
        procrastinate_jobs.Job(
            queue=request.queue,
            task_name=request.task_name,
            priority=request.priority,
            lock=request.lock,
            queueing_lock=None,
            task_kwargs={
                "step_id": request.step_id,
                "workflow_id": request.workflow_id,
                "step": request.step_name,
            },
            scheduled_at=request.scheduled_at,
        )
        for request in requests
    ]
    deferred = job_manager().batch_defer_jobs(jobs)
    return [int(job.id) for job in deferred if job.id is not None]
