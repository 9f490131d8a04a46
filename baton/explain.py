"""Why a step is where it is: which dependencies it waits for, how long it has been
queued, and whether any live worker listens on its queue.

The live page, the admin and `manage.py baton show` say the same sentences, from here.
Liveness comes from Procrastinate's worker heartbeats (procrastinate_workers); which
queues a worker listens on, from the row `manage.py baton worker` writes when it
registers (baton.models.WorkerRegistration). A worker started with Procrastinate's own
command has no such row: it is counted as listening on queues unknown.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections
from django.utils import timezone

from baton.execution.deferrer import database_alias
from baton.graph.states import StepState
from baton.models import StepDependency, WorkflowStep

S = StepState
# A worker whose last heartbeat is older than this is not listening (Procrastinate's own
# default for a stalled worker).
LIVE_HEARTBEAT_SECONDS = 30.0
_QUEUED = (S.AVAILABLE, S.SCHEDULED, S.RETRYABLE)


@dataclasses.dataclass(frozen=True)
class Listeners:
    """The live workers that take jobs from one queue."""

    queue: str
    workers: int  # baton workers listening on it (or on every queue)
    unknown: int  # live workers that did not say which queues they listen on

    @property
    def none(self) -> bool:
        return self.workers == 0 and self.unknown == 0

    def sentence(self) -> str:
        if self.none:
            return f"no worker is listening on queue {self.queue!r}"
        if self.workers:
            if self.workers == 1:
                return f"1 live worker listens on queue {self.queue!r}"
            return f"{self.workers} live workers listen on queue {self.queue!r}"
        return (
            f"no baton worker says it listens on queue {self.queue!r}; "
            f"{self.unknown} live worker(s) of unknown queues may"
        )


def queue_listeners(queues: Iterable[str]) -> dict[str, Listeners]:
    """For each queue, the live workers that listen on it (one query)."""
    names = sorted(set(queues))
    if not names:
        return {}
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT q.name,
                   count(r.worker_id) FILTER (
                       WHERE jsonb_array_length(r.queues) = 0 OR r.queues ? q.name),
                   count(*) FILTER (WHERE w.id IS NOT NULL AND r.worker_id IS NULL)
              FROM unnest(%(queues)s::text[]) AS q(name)
              LEFT JOIN procrastinate_workers w
                     ON w.last_heartbeat > now() - make_interval(secs => %(live)s)
              LEFT JOIN baton_workerregistration r ON r.worker_id = w.id
             GROUP BY q.name
            """,
            {"queues": names, "live": LIVE_HEARTBEAT_SECONDS},
        )
        return {
            name: Listeners(name, int(workers), int(unknown))
            for name, workers, unknown in cursor.fetchall()
        }


def workers_without_task(queue: str, task_name: str) -> int | None:
    """How many live baton workers listen on `queue` without having `task_name` (its step
    class is not imported there), or None when some live worker on it may have it."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*) FILTER (WHERE r.tasks IS NOT NULL AND NOT r.tasks ? %(task)s),
                   count(*) FILTER (WHERE r.tasks IS NULL OR r.tasks ? %(task)s)
              FROM procrastinate_workers w
              JOIN baton_workerregistration r ON r.worker_id = w.id
             WHERE w.last_heartbeat > now() - make_interval(secs => %(live)s)
               AND (jsonb_array_length(r.queues) = 0 OR r.queues ? %(queue)s)
            """,
            {"queue": queue, "task": task_name, "live": LIVE_HEARTBEAT_SECONDS},
        )
        row = cursor.fetchone()
    lacking, having = (int(row[0]), int(row[1])) if row else (0, 0)
    return lacking if lacking and not having else None


@dataclasses.dataclass(frozen=True)
class Blocker:
    """An unfinished dependency of a waiting step."""

    name: str
    state: str
    since: datetime.datetime | None  # when it entered that state, as far as baton knows


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why a step is in its state, as data (for pages) and as sentences (for people)."""

    step: str
    state: str
    sentences: list[str]
    blockers: list[Blocker] = dataclasses.field(default_factory=list)
    listeners: Listeners | None = None
    queued_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "state": self.state,
            "sentences": self.sentences,
            "blockers": [
                {"name": b.name, "state": b.state, "since": _iso(b.since)} for b in self.blockers
            ],
            "no_worker": bool(self.listeners and self.listeners.none),
            "queued_seconds": self.queued_seconds,
        }


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _since(step: WorkflowStep) -> datetime.datetime | None:
    """When a step entered its present state, from the timestamps baton keeps."""
    if step.state in (S.COMPLETED, S.DISCARDED, S.CANCELLED):
        return step.finished_at
    if step.state == S.EXECUTING:
        return step.started_at
    if step.state in (S.SCHEDULED, S.RETRYABLE):
        return step.finished_at or step.started_at
    return None


def _when(moment: datetime.datetime | None, now: datetime.datetime) -> str:
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    stamp = moment.astimezone(datetime.UTC).strftime("%H:%M:%S UTC")
    if seconds >= 0:
        return f" since {stamp} ({_ago(seconds)} ago)"
    return f" at {stamp} (in {_ago(-seconds)})"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"


def explain(step: WorkflowStep, *, listeners: dict[str, Listeners] | None = None) -> Explanation:
    """Why `step` is where it is. A waiting step costs one query (its unfinished
    dependencies); an available one up to three (the queue's listeners, unless given;
    when its job was queued; whether those workers have its task)."""
    now = timezone.now()
    state = S(step.state)
    sentences: list[str] = []
    blockers: list[Blocker] = []
    heard: Listeners | None = None
    queued: float | None = None
    if state == S.WAITING:
        upstream = list(
            WorkflowStep.objects.filter(
                id__in=StepDependency.objects.filter(downstream_id=step.id).values("upstream_id")
            )
            .exclude(state=S.COMPLETED)
            .order_by("id")
            .only("id", "name", "state", "started_at", "finished_at")
        )
        blockers = [Blocker(dep.name, dep.state, _since(dep)) for dep in upstream]
        total = step.deps_total
        sentences.append(
            f"waits for {len(blockers)} of its {total} dependenc{'y' if total == 1 else 'ies'}"
            + (": " if blockers else "")
            + ", ".join(f"{b.name} ({b.state}{_when(b.since, now)})" for b in blockers[:10])
            + (f", and {len(blockers) - 10} more" if len(blockers) > 10 else "")
        )
    elif state in _QUEUED:
        heard = (listeners or queue_listeners([step.queue])).get(step.queue)
        if state == S.AVAILABLE:
            enqueued = _enqueued_at(step)
            if enqueued is not None:
                queued = max(0.0, (now - enqueued).total_seconds())
            sentences.append(
                f"queued on {step.queue!r}"
                + (f" for {_ago(queued)}" if queued is not None else "")
                + ", waiting for a worker"
            )
        else:
            why = "snoozed" if state == S.SCHEDULED else "backing off after a failed attempt"
            sentences.append(f"{why}; runs again{_when(step.scheduled_at, now)}")
        if heard is not None:
            sentences.append(heard.sentence())
            lacking = (
                workers_without_task(step.queue, step.task_name)
                if state == S.AVAILABLE and heard.workers and not heard.unknown
                else None
            )
            if lacking:
                sentences.append(
                    f"but {'it does' if lacking == 1 else f'none of those {lacking} does'} not "
                    f"have task {step.task_name!r} (the step's module is not imported "
                    "there), so it hands the step back for a worker that has it"
                )
    elif state == S.EXECUTING:
        sentences.append(
            f"running attempt {step.attempt} of {step.max_attempts}{_when(step.started_at, now)}"
        )
    else:
        sentences.append(step.reason or f"{state.value}{_when(step.finished_at, now)}")
    return Explanation(step.name, step.state, sentences, blockers, heard, queued)


def _enqueued_at(step: WorkflowStep) -> datetime.datetime | None:
    """When the step's current job was created (its Procrastinate `deferred` event)."""
    if step.job_id is None:
        return None
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT min(at) FROM procrastinate_events WHERE job_id = %s",
            [step.job_id],
        )
        row = cursor.fetchone()
    return row[0] if row else None


@dataclasses.dataclass(frozen=True)
class StrandedQueue:
    """Steps that are due on a queue that no live worker listens on."""

    queue: str
    steps: int

    def sentence(self) -> str:
        return (
            f"{self.steps} step(s) are available on queue {self.queue!r}, and no worker "
            f"is listening on it: start one with `manage.py baton worker --queues {self.queue}`"
        )


def stranded_queues(queues: Sequence[str] | None = None) -> list[StrandedQueue]:
    """Queues with due (available) steps and no live worker known to listen on them;
    a live worker of unknown queues (Procrastinate's own) counts as listening."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            """
            SELECT s.queue, count(*)
              FROM baton_step s
             WHERE s.state = %(available)s
               AND (%(queues)s::text[] IS NULL OR s.queue = ANY(%(queues)s::text[]))
             GROUP BY s.queue
            """,
            {"available": S.AVAILABLE.value, "queues": list(queues) if queues else None},
        )
        due = cursor.fetchall()
    if not due:
        return []
    heard = queue_listeners(queue for queue, _ in due)
    return [StrandedQueue(queue, int(count)) for queue, count in due if heard[queue].none]
