"""Workloads for bench/peers.py: baton's async steps and raw Procrastinate's async tasks.

The raw tasks are written as Procrastinate's docs write async tasks: their queries and
deferrals go through the worker's own async connector (`context.app`), each statement in
autocommit; nothing runs on Django's connection or in a thread. Timing rows are the same
as bench/benchapp/tasks.py's (time.time() at the start and end of the work).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from procrastinate import JobContext
from procrastinate import jobs as procrastinate_jobs
from procrastinate.contrib.django import app

import baton

_RECORD = """
INSERT INTO benchapp_timing (run, name, seq, started, finished)
VALUES (%(run)s, %(name)s, %(seq)s, %(started)s, %(finished)s)
"""
_COUNT_IN = "UPDATE benchapp_counter SET value = value + 1 WHERE run = %(run)s RETURNING value"


# --------------------------------------------------------------------------- baton steps
class AsyncNoop(baton.Step):
    """A fan-out member with an async perform(): awaits args["sleep"] seconds, if any
    (the in-flight shape's stand-in for a model call), and returns nothing."""

    max_attempts = 1

    async def perform(self, job: baton.Job) -> Any:
        if job.args.get("sleep"):
            await asyncio.sleep(job.args["sleep"])
        return None


class SleepNoop(baton.Step):
    """A fan-out member with a sync perform(): sleeps args["sleep"] seconds (a model
    call made with a blocking SDK), in a thread of the worker's pool."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        time.sleep(job.args.get("sleep", 0))
        return None


class AsyncMark(baton.Step):
    """A chain link with an async perform(): records its start and end (the row is
    written in a thread, as an async step must do for the ORM)."""

    max_attempts = 1

    async def perform(self, job: baton.Job) -> Any:
        from asgiref.sync import sync_to_async

        from bench.benchapp.tasks import record

        started = time.time()
        await sync_to_async(record, thread_sensitive=False)(
            job.args["run"], job.step_name, started, time.time(), seq=job.args.get("seq", 0)
        )
        return None


# -------------------------------------------------------------- raw Procrastinate, async
async def _record(context: JobContext, run: str, name: str, started: float, seq: int = 0) -> None:
    await context.app.connector.execute_query_async(
        _RECORD, run=run, name=name, seq=seq, started=started, finished=time.time()
    )


async def _defer(context: JobContext, task_name: str, kwargs_list: list[dict[str, Any]]) -> None:
    await context.app.job_manager.batch_defer_jobs_async(
        [
            procrastinate_jobs.Job(
                queue="default",
                task_name=task_name,
                lock=None,
                queueing_lock=None,
                task_kwargs=kwargs,
            )
            for kwargs in kwargs_list
        ]
    )


@app.task(name="bench.araw_root", pass_context=True)
async def araw_root(context: JobContext, run: str, width: int, sleep: float = 0.0) -> None:
    """Fan-out root: records itself and defers `width` members in one batch."""
    started = time.time()
    await _record(context, run, "root", started)
    await _defer(
        context, "bench.araw_member", [{"run": run, "total": width, "sleep": sleep}] * width
    )


@app.task(name="bench.araw_member", pass_context=True)
async def araw_member(context: JobContext, run: str, total: int, sleep: float = 0.0) -> None:
    """Fan-out member: awaits `sleep`, counts itself in; the last one defers the join."""
    if sleep:
        await asyncio.sleep(sleep)
    row = await context.app.connector.execute_query_one_async(_COUNT_IN, run=run)
    if row is not None and row["value"] == total:
        await _defer(context, "bench.araw_join", [{"run": run}])


@app.task(name="bench.araw_join", pass_context=True)
async def araw_join(context: JobContext, run: str) -> None:
    await _record(context, run, "join", time.time())


@app.task(name="bench.araw_chain", pass_context=True)
async def araw_chain(context: JobContext, run: str, seq: int, total: int) -> None:
    """One link of a chain: records itself and defers the next link."""
    await _record(context, run, "chain", time.time(), seq=seq)
    if seq + 1 < total:
        await _defer(context, "bench.araw_chain", [{"run": run, "seq": seq + 1, "total": total}])
