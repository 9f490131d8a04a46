"""Benchmark workloads, written twice: as baton steps and as raw Procrastinate jobs.

Both sides record time.time() the same way (start of the work, end of the work, then one
INSERT of a Timing row) and both defer follow-up jobs through a Procrastinate JobManager
on Django's connection, inside the job's transaction, as baton does.
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from procrastinate import JobContext
from procrastinate import jobs as procrastinate_jobs
from procrastinate import manager as procrastinate_manager
from procrastinate.contrib.django import app, django_connector

import baton
from baton.llm import LLMStep, Usage
from bench.benchapp.models import Timing


def record(
    run: str,
    name: str,
    started: float,
    finished: float,
    *,
    seq: int = 0,
    late: float | None = None,
) -> None:
    Timing.objects.create(
        run=run, name=name, seq=seq, started=started, finished=finished, late=late
    )


# --------------------------------------------------------------------------- baton steps
class Noop(baton.Step):
    """A fan-out member: does nothing."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        return None


class Mark(baton.Step):
    """Sleeps args["sleep"] seconds (if any) and records its start and end."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        started = time.time()
        if job.args.get("sleep"):
            time.sleep(job.args["sleep"])
        record(job.args["run"], job.step_name, started, time.time(), seq=job.args.get("seq", 0))
        return None


class SnoozeOnce(baton.Step):
    """Snoozes args["seconds"] once; on its second run records how late it woke."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        started = time.time()
        if job.step.snoozes == 0:
            return baton.Snooze(job.args["seconds"])
        assert job.context is not None and job.context.job.scheduled_at is not None
        due = job.context.job.scheduled_at.timestamp()
        record(job.args["run"], job.step_name, started, time.time(), late=started - due)
        return None


# ------------------------------------------------------------ LLM steps (bench/llm_fanout.py)
# No model is called: each returns or records the usage one call would have, so that the
# benchmark measures what recording usage costs a step (pricing, the ledger row, the
# running costs). queue="default" instead of LLMStep's "llm", so that they share a queue
# with the plain steps they are compared with; every other LLMStep option is its default
# (max_attempts 5, timeout 120 s, full-jitter backoff).
class PlainOk(baton.Step):
    """A fan-out member that stores the result the LLM members store: {"ok": True}."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        return {"ok": True}


class LLMNoop(LLMStep):
    """An LLM fan-out member: returns one call's usage in its result (stripped, recorded)."""

    queue = "default"

    def perform(self, job: baton.Job) -> Any:
        return {
            "ok": True,
            "llm_usage": Usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100),
        }


class LLMNoopThreeCalls(LLMStep):
    """An LLM fan-out member that records three calls with job.record_usage."""

    queue = "default"

    def perform(self, job: baton.Job) -> Any:
        for _ in range(3):
            job.record_usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
        return {"ok": True}


class LLMNoopNoUsage(LLMStep):
    """An LLM fan-out member that records nothing: LLMStep's own cost without the ledger."""

    queue = "default"

    def perform(self, job: baton.Job) -> Any:
        return {"ok": True}


class LLMNoopNoTimeout(LLMStep):
    """LLMNoop without the per-attempt timeout (perform() runs on the worker's thread)."""

    queue = "default"
    timeout = None

    def perform(self, job: baton.Job) -> Any:
        return {
            "ok": True,
            "llm_usage": Usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100),
        }


# -------------------------------------------------------------------- raw Procrastinate
@functools.cache
def _manager() -> procrastinate_manager.JobManager:
    return procrastinate_manager.JobManager(django_connector.DjangoConnector())


def defer(
    task_name: str,
    kwargs_list: Sequence[dict[str, Any]],
    scheduled_at: datetime.datetime | None = None,
) -> None:
    """Defer jobs in one statement on Django's connection (joins the open transaction)."""
    _manager().batch_defer_jobs(
        [
            procrastinate_jobs.Job(
                queue="default",
                task_name=task_name,
                lock=None,
                queueing_lock=None,
                task_kwargs=kwargs,
                scheduled_at=scheduled_at,
            )
            for kwargs in kwargs_list
        ]
    )


@app.task(name="bench.raw_root")
def raw_root(run: str, width: int) -> None:
    """Fan-out root: records itself and defers `width` members in one batch."""
    started = time.time()
    with transaction.atomic():
        record(run, "root", started, time.time())
        defer("bench.raw_member", [{"run": run, "total": width}] * width)


@app.task(name="bench.raw_member")
def raw_member(run: str, total: int) -> None:
    """Fan-out member: counts itself in; the one that completes the count defers the join."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE benchapp_counter SET value = value + 1 WHERE run = %s RETURNING value", [run]
        )
        row = cursor.fetchone()
        if row is not None and row[0] == total:
            defer("bench.raw_join", [{"run": run}])


@app.task(name="bench.raw_join")
def raw_join(run: str) -> None:
    started = time.time()
    record(run, "join", started, time.time())


@app.task(name="bench.raw_chain")
def raw_chain(run: str, seq: int, total: int) -> None:
    """One link of a chain: records itself and defers the next link."""
    started = time.time()
    finished = time.time()
    with transaction.atomic():
        record(run, "chain", started, finished, seq=seq)
        if seq + 1 < total:
            defer("bench.raw_chain", [{"run": run, "seq": seq + 1, "total": total}])


@app.task(name="bench.raw_snooze", pass_context=True)
def raw_snooze(context: JobContext, run: str, seconds: float, first: bool = True) -> None:
    """Defers itself `seconds` later once; the second run records how late it woke."""
    started = time.time()
    if first:
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        defer("bench.raw_snooze", [{"run": run, "seconds": seconds, "first": False}], at)
        return
    assert context.job.scheduled_at is not None
    late = started - context.job.scheduled_at.timestamp()
    record(run, "snooze", started, time.time(), late=late)


# bench/peers.py's async steps and raw Procrastinate async tasks, found with these.
from bench.benchapp import peer_tasks  # noqa: E402, F401
