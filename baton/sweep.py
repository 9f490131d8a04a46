"""The sweep: repairs what crashes leave behind. Runs periodically and as `baton sweep`.

- retries the jobs of dead workers (Procrastinate's stalled jobs: `doing`, with a worker
  whose heartbeat stopped); the same job runs again and the gate counts the attempt;
- re-enqueues steps whose job vanished (deleted, pruned) or ended while baton still shows
  the step queued or executing (e.g. a restart cut the finishing transaction), reported
  as rescued (also when this process does not have the step's task: a worker may);
- finishes workflows whose steps are all terminal but which nobody marked finished;
- prunes finished workflows older than PRUNE_AFTER, in bounded batches;
- prunes debug records (baton.debug) older than DEBUG_MAX_AGE, in bounded batches.

Only one sweep runs at a time (a Postgres advisory lock), and every repair re-checks its
rows under a row lock, so a sweep racing a live worker changes nothing that worker owns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import time
from collections.abc import Iterator

from django.db import connections, transaction
from django.utils import timezone
from procrastinate import sql as procrastinate_sql

from baton import signals
from baton.conf import settings as baton_settings
from baton.execution import local_worker, upstream
from baton.execution.announce import announcing
from baton.execution.append import release_what_is_ready
from baton.execution.cascade import enqueue, fail_steps, job_request
from baton.execution.deferrer import database_alias, defer_jobs, job_manager
from baton.execution.registry import registry
from baton.execution.statements import STEP_COLUMNS, steps_from_rows
from baton.explain import stranded_queues
from baton.graph.states import StepState, WorkflowState
from baton.models import DebugRecord, LLMUsage, WorkflowStep

logger = logging.getLogger("baton")
S = StepState

# Key of the advisory lock that keeps sweeps from running concurrently ("baton" in hex).
_SWEEP_LOCK_KEY = 0x626174_6F6E
_FINISHED_JOB = upstream.FINISHED_JOB_STATUSES
DEFAULT_SECONDS_SINCE_HEARTBEAT = 30.0
_USAGE_TABLE = LLMUsage._meta.db_table
_DEBUG_TABLE = DebugRecord._meta.db_table


@dataclasses.dataclass
class SweepReport:
    skipped: bool = False  # another sweep held the lock
    stalled_jobs_retried: int = 0
    stale_jobs_closed: int = 0
    rescued: list[str] = dataclasses.field(default_factory=list)  # "workflow/step" names
    discarded: list[str] = dataclasses.field(default_factory=list)
    workflows_finished: int = 0
    workflows_pruned: int = 0
    debug_records_pruned: int = 0
    released: int = 0  # waiting steps whose dependencies had all completed
    # Queues with available steps and no live worker listening (baton.explain).
    stranded: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        if self.skipped:
            return "baton sweep: skipped, another sweep is running"
        return (
            f"baton sweep: {self.stalled_jobs_retried} stalled job(s) retried, "
            f"{self.stale_jobs_closed} stale job(s) closed, {len(self.rescued)} step(s) "
            f"rescued, {len(self.discarded)} discarded, {self.workflows_finished} "
            f"workflow(s) finished, {self.workflows_pruned} pruned, "
            f"{self.debug_records_pruned} debug record(s) pruned in {self.seconds:.3f}s"
        )


@contextlib.contextmanager
def _single_runner(alias: str) -> Iterator[bool]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SWEEP_LOCK_KEY])
        (acquired,) = cursor.fetchone()
    try:
        yield bool(acquired)
    finally:
        if acquired:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_SWEEP_LOCK_KEY])


def sweep(
    *,
    seconds_since_heartbeat: float = DEFAULT_SECONDS_SINCE_HEARTBEAT,
    stale_executing_after: float | None = None,
    prune_after: datetime.timedelta | bool | None = True,
    batch_size: int = 500,
) -> SweepReport:
    """Run every repair once. `prune_after=True` means BATON["PRUNE_AFTER"]."""
    started = time.monotonic()
    alias = database_alias()
    report = SweepReport()
    if stale_executing_after is None:
        stale_executing_after = float(baton_settings.STALE_EXECUTING_AFTER)
    if prune_after is True:
        prune_after = baton_settings.PRUNE_AFTER
    with _single_runner(alias) as acquired:
        if not acquired:
            report.skipped = True
            return report
        _retry_stalled_jobs(alias, seconds_since_heartbeat, report)
        _rescue_lost_steps(alias, stale_executing_after, batch_size, report)
        _release_forgotten_waiting(alias, batch_size, report)
        _finish_forgotten_workflows(alias, batch_size, report)
        if isinstance(prune_after, datetime.timedelta):
            report.workflows_pruned = prune_workflows(prune_after, batch_size=batch_size)
        report.debug_records_pruned = prune_debug_records(baton_settings.DEBUG_MAX_AGE)
        _forget_gone_workers(alias)
        for stranded in stranded_queues():
            report.stranded.append(stranded.queue)
            logger.warning("baton: %s", stranded.sentence())
    report.seconds = time.monotonic() - started
    log = logger.warning if (report.rescued or report.discarded) else logger.info
    log(report.summary())
    return report


def _release_forgotten_waiting(alias: str, batch_size: int, report: SweepReport) -> None:
    """Waiting steps every dependency of which completed, but which nobody released (a
    backstop for a step appended or grafted while its last dependency completed in a
    statement that could not see it, when the append could not wait for that)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
            SELECT s.id FROM baton_step s
             WHERE s.state = %(waiting)s AND s.deps_pending > 0
               AND NOT EXISTS (SELECT FROM baton_stepdependency e
                                 JOIN baton_step u ON u.id = e.upstream_id
                                WHERE e.downstream_id = s.id AND u.state <> %(completed)s)
             LIMIT %(limit)s
            """,
            {"waiting": S.WAITING.value, "completed": S.COMPLETED.value, "limit": batch_size},
        )
        ids = [row[0] for row in cursor.fetchall()]
    if ids:
        release_what_is_ready(alias, ids)
        report.released += len(ids)
        logger.warning("baton: sweep released %d waiting step(s) nobody had", len(ids))


def _forget_gone_workers(alias: str) -> None:
    """Registrations of workers whose Procrastinate row is gone (stopped, or pruned as
    stalled): they listen on nothing any more."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "DELETE FROM baton_workerregistration r WHERE NOT EXISTS "
            "(SELECT FROM procrastinate_workers w WHERE w.id = r.worker_id)"
        )


def _retry_stalled_jobs(alias: str, seconds: float, report: SweepReport) -> None:
    """Jobs left `doing` by a dead worker: run them again (or close them if stale)."""
    manager = job_manager()
    connector = manager.connector.get_sync_connector()
    rows = connector.execute_query_all(
        query=procrastinate_sql.queries[upstream.STALLED_JOBS_QUERY],
        queue=None,
        task_name=None,
        seconds_since_heartbeat=seconds,
    )
    for row in rows:
        args = row["args"] or {}
        if isinstance(args, str):  # Django has psycopg hand jsonb over as text
            args = json.loads(args)
        step_id = args.get("step_id") if isinstance(args, dict) else None
        if not isinstance(step_id, int) or isinstance(step_id, bool):
            continue  # not a baton step: the user's own stalled-job policy applies
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT state, job_id FROM baton_step WHERE id = %s FOR UPDATE", [step_id]
            )
            step_row = cursor.fetchone()
            if row["task_name"] not in registry and not (step_row and step_row[1] == row["id"]):
                # Neither a step class of this process nor the current job of a step (a
                # step class this process lacks still is): the user's own policy applies.
                continue
            cursor.execute(
                "SELECT status FROM procrastinate_jobs WHERE id = %s FOR UPDATE", [row["id"]]
            )
            status = cursor.fetchone()
            if status is None or status[0] != "doing":
                continue  # finished meanwhile
            if step_row and step_row[1] == row["id"] and step_row[0] in (S.AVAILABLE, S.EXECUTING):
                # The step's own job: run it again; the gate counts the lost attempt.
                manager.retry_job_by_id(job_id=row["id"], retry_at=timezone.now())
                report.stalled_jobs_retried += 1
                transaction.on_commit(_wake_local_worker, using=alias)
            else:
                # A job the step has moved on from (its outcome was committed before the
                # worker died): close it so it stops looking stalled.
                end = "succeeded" if step_row and step_row[0] == S.COMPLETED else "failed"
                cursor.execute(
                    f"SELECT {upstream.FINISH_JOB}",
                    [row["id"], end],
                )
                report.stale_jobs_closed += 1


def _wake_local_worker() -> None:
    local_worker.job_due(None)


def _rescue_lost_steps(
    alias: str, stale_after: float, batch_size: int, report: SweepReport
) -> None:
    """Steps that should have a live job but do not."""
    while True:
        with (
            announcing(alias) as ann,
            transaction.atomic(using=alias),
            connections[alias].cursor() as cursor,
        ):
            cursor.execute(
                f"""
                SELECT {STEP_COLUMNS}, w.name
                  FROM baton_step s
                  JOIN baton_workflow w ON w.id = s.workflow_id
                  LEFT JOIN procrastinate_jobs j ON j.id = s.job_id
                 WHERE (s.state = ANY(%(queued)s)
                        AND (j.id IS NULL OR j.status::text = ANY(%(finished)s)))
                    OR (s.state = %(executing)s
                        AND (j.status::text = ANY(%(finished)s)
                             OR (j.id IS NULL
                                 AND s.started_at < now() - make_interval(secs => %(stale)s))))
                 ORDER BY s.id
                 LIMIT %(limit)s
                   FOR UPDATE OF s SKIP LOCKED
                """,
                {
                    "queued": [S.AVAILABLE.value, S.SCHEDULED.value, S.RETRYABLE.value],
                    "executing": S.EXECUTING.value,
                    "finished": list(_FINISHED_JOB),
                    "stale": stale_after,
                    "limit": batch_size,
                },
            )
            rows = cursor.fetchall()
            if not rows:
                return
            steps = steps_from_rows(rows, alias)
            workflow_names = {step.id: row[-1] for step, row in zip(steps, rows, strict=True)}
            # A task this process does not know may still be known to a worker (the code
            # reached the web process first, or the sweep runs elsewhere): requeue it
            # like any other; a worker that cannot run it hands it back (worker.py).
            foreign = sorted({s.task_name for s in steps if s.task_name not in registry})
            if foreign:
                logger.warning(
                    "baton sweep: requeued steps of task(s) %s, which this process does "
                    "not have; only a worker that has them can run them",
                    ", ".join(map(repr, foreign)),
                )
            out_of_attempts = [
                s for s in steps if s.state == S.EXECUTING and s.attempt >= s.max_attempts
            ]
            requeue_now = [
                s
                for s in steps
                if s.state in (S.AVAILABLE, S.EXECUTING) and s not in out_of_attempts
            ]
            requeue_later = [s for s in steps if s.state in (S.SCHEDULED, S.RETRYABLE)]

            enqueue(cursor, requeue_now, ann)
            if requeue_later:
                job_ids = defer_jobs(
                    [
                        job_request(s, max(s.scheduled_at or timezone.now(), timezone.now()))
                        for s in requeue_later
                    ]
                )
                cursor.execute(
                    "UPDATE baton_step s SET job_id = v.job_id FROM unnest(%s::bigint[], "
                    "%s::bigint[]) AS v(id, job_id) WHERE s.id = v.id",
                    [[s.id for s in requeue_later], job_ids],
                )
            doomed = [
                (s, f"worker lost during its last attempt ({s.attempt} of {s.max_attempts})")
                for s in out_of_attempts
            ]
            if doomed:
                cursor.execute(
                    f"""
                    UPDATE baton_step s SET version = s.version + 1,
                                            state = %(discarded)s, reason = v.reason,
                           finished_at = now()
                      FROM unnest(%(ids)s::bigint[], %(reasons)s::text[]) AS v(id, reason)
                     WHERE s.id = v.id
                 RETURNING {STEP_COLUMNS}
                    """,
                    {
                        "discarded": S.DISCARDED.value,
                        "ids": [s.id for s, _ in doomed],
                        "reasons": [reason for _, reason in doomed],
                    },
                )
                discarded = steps_from_rows(cursor.fetchall(), alias)
                old_states = {s.id: s.state for s, _ in doomed}
                for step in discarded:
                    ann.step(step, old_states[step.id])
                fail_steps(cursor, discarded, ann)
                report.discarded += [f"{workflow_names[s.id]}/{s.name}" for s in discarded]
            rescued = requeue_now + requeue_later
            report.rescued += [f"{workflow_names[s.id]}/{s.name}" for s in rescued]
            if rescued:
                transaction.on_commit(
                    functools.partial(_announce_rescued, alias, [s.id for s in rescued]),
                    using=alias,
                )
        if len(rows) < batch_size:
            return


def _announce_rescued(alias: str, step_ids: list[int]) -> None:
    # Per-step logging is telemetry.attach_default_logger()'s; the sweep logs its summary.
    steps = list(WorkflowStep.objects.using(alias).filter(id__in=step_ids))
    signals.steps_rescued.send_robust(sender=WorkflowStep, steps=steps)


def _finish_forgotten_workflows(alias: str, batch_size: int, report: SweepReport) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute(
            """
            SELECT w.id FROM baton_workflow w
             WHERE w.state = %s
               AND NOT EXISTS (SELECT 1 FROM baton_step s
                                WHERE s.workflow_id = w.id AND NOT (s.state = ANY(%s)))
             LIMIT %s
            """,
            [
                WorkflowState.EXECUTING.value,
                [S.COMPLETED.value, S.DISCARDED.value, S.CANCELLED.value],
                batch_size,
            ],
        )
        workflow_ids = [row[0] for row in cursor.fetchall()]
    for workflow_id in workflow_ids:
        with (
            announcing(alias) as ann,
            transaction.atomic(using=alias),
            connections[alias].cursor() as cursor,
        ):
            cursor.execute(
                """
                UPDATE baton_workflow w
                   SET unfinished_steps = 0, finished_at = now(),
                       state = CASE WHEN jsonb_array_length(w.failed_steps) > 0
                                    THEN %(failed)s ELSE %(completed)s END
                 WHERE w.id = %(id)s AND w.state = %(executing)s
                   AND NOT EXISTS (SELECT 1 FROM baton_step s
                                    WHERE s.workflow_id = w.id
                                      AND NOT (s.state = ANY(%(terminal)s)))
             RETURNING w.state
                """,
                {
                    "failed": WorkflowState.FAILED.value,
                    "completed": WorkflowState.COMPLETED.value,
                    "id": workflow_id,
                    "executing": WorkflowState.EXECUTING.value,
                    "terminal": [S.COMPLETED.value, S.DISCARDED.value, S.CANCELLED.value],
                },
            )
            row = cursor.fetchone()
            if row is not None:
                ann.finished_workflows.append((workflow_id, row[0]))
                report.workflows_finished += 1
                logger.warning(
                    "baton: sweep finished workflow %s (%s), which nobody had", workflow_id, row[0]
                )


def prune_workflows(older_than: datetime.timedelta, *, batch_size: int = 200) -> int:
    """Delete finished workflows (with steps, edges, results, LLM calls and debug records)
    finished before now - older_than, in batches of `batch_size` workflows, each in its
    own short transaction."""
    alias = database_alias()
    cutoff = timezone.now() - older_than
    total = 0
    while True:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(
                """
                SELECT id FROM baton_workflow
                 WHERE state <> %s AND finished_at < %s
                 ORDER BY finished_at LIMIT %s
                   FOR UPDATE SKIP LOCKED
                """,
                [WorkflowState.EXECUTING.value, cutoff, batch_size],
            )
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                break
            cursor.execute(
                "DELETE FROM baton_stepresult r USING baton_step s "
                "WHERE r.step_id = s.id AND s.workflow_id = ANY(%s)",
                [ids],
            )
            cursor.execute("DELETE FROM baton_stepdependency WHERE workflow_id = ANY(%s)", [ids])
            # No database foreign keys lead there (nothing cascades): by workflow, each
            # through the index that leads with it.
            cursor.execute(f"DELETE FROM {_USAGE_TABLE} WHERE workflow_id = ANY(%s)", [ids])
            cursor.execute(f"DELETE FROM {_DEBUG_TABLE} WHERE workflow_id = ANY(%s)", [ids])
            # Their finished Procrastinate jobs go too: that table is the hot one.
            cursor.execute(
                "DELETE FROM procrastinate_jobs j USING baton_step s "
                "WHERE j.id = s.job_id AND s.workflow_id = ANY(%s) "
                "AND j.status::text = ANY(%s)",
                [ids, list(_FINISHED_JOB)],
            )
            cursor.execute("DELETE FROM baton_step WHERE workflow_id = ANY(%s)", [ids])
            cursor.execute("DELETE FROM baton_workflow WHERE id = ANY(%s)", [ids])
            total += len(ids)
        if len(ids) < batch_size:
            break
    if total:
        logger.info("baton: pruned %d finished workflow(s) older than %s", total, older_than)
        signals.workflows_pruned.send_robust(sender=None, count=total)
    return total


def prune_debug_records(
    older_than: datetime.timedelta | None = None, *, batch_size: int = 1000
) -> int:
    """Delete debug records created before now - older_than (default
    BATON["DEBUG_MAX_AGE"]), oldest first, `batch_size` at a time, each batch in its own
    short transaction. A response to a deleted request goes with it, however young (its
    request link could not stand). Returns how many records were deleted."""
    if older_than is None:
        older_than = baton_settings.DEBUG_MAX_AGE
    alias = database_alias()
    cutoff = timezone.now() - older_than
    total: int = 0
    while True:
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute(
                f"""
                WITH doomed AS (
                    SELECT id FROM {_DEBUG_TABLE}
                     WHERE created_at < %(cutoff)s
                     ORDER BY id LIMIT %(limit)s
                )
                DELETE FROM {_DEBUG_TABLE}
                 WHERE id IN (SELECT id FROM doomed)
                    OR request_id IN (SELECT id FROM doomed)
                """,
                {"cutoff": cutoff, "limit": batch_size},
            )
            deleted = max(int(cursor.rowcount), 0)
        total += deleted
        if deleted < batch_size:
            break
    if total:
        logger.info("baton: pruned %d debug record(s) older than %s", total, older_than)
    return total
