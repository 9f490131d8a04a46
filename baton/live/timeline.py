"""The workflow's timeline: a Gantt of each step's queue wait and run, the critical path
marked."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.utils import timezone

from baton.display import format_seconds
from baton.execution.deferrer import database_alias
from baton.graph.states import StepState
from baton.models import StepDependency, Workflow, WorkflowStep

TIMELINE_ROWS = 2_000  # steps drawn in the timeline; the rest are counted in a note


@dataclass(frozen=True)
class Lane:
    """One step in the timeline: its queue wait and its run, in percent of the span."""

    id: int
    name: str
    state: str
    attempt: int
    max_attempts: int
    queued_at: datetime.datetime | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    wait_left: float
    wait_width: float
    run_left: float
    run_width: float
    critical: bool
    title: str


def _queued_at(job_ids: list[int]) -> dict[int, datetime.datetime]:
    """When each job was first deferred (Procrastinate's events), in one query."""
    if not job_ids:
        return {}
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT job_id, min(at) FROM procrastinate_events"
            " WHERE job_id = ANY(%s) GROUP BY job_id",
            [job_ids],
        )
        return dict(cursor.fetchall())


def critical_path(steps: list[WorkflowStep], edges: list[tuple[int, int]]) -> set[int]:
    """The chain that set the workflow's end: from the step that finished last, back
    through the dependency that finished last each time (the one its start waited for)."""
    finished = {s.id: s.finished_at for s in steps if s.finished_at is not None}
    if not finished:
        return set()
    upstream: dict[int, list[int]] = {}
    for up, down in edges:
        upstream.setdefault(down, []).append(up)
    current: int | None = max(finished, key=lambda i: (finished[i], i))
    path: set[int] = set()
    while current is not None and current not in path:
        path.add(current)
        done = [u for u in upstream.get(current, []) if u in finished]
        current = max(done, key=lambda i: (finished[i], i)) if done else None
    return path


def timeline(workflow: Workflow, now: datetime.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    steps = list(
        WorkflowStep.objects.filter(workflow=workflow)
        .order_by("started_at", "id")
        .only(
            "id",
            "name",
            "state",
            "attempt",
            "max_attempts",
            "job_id",
            "started_at",
            "finished_at",
        )
    )
    edges = list(
        StepDependency.objects.filter(workflow=workflow).values_list("upstream_id", "downstream_id")
    )
    queued = _queued_at([s.job_id for s in steps if s.job_id is not None])
    start = workflow.created_at
    end = max(
        [workflow.finished_at or now] + [s.finished_at for s in steps if s.finished_at is not None]
    )
    span = max((end - start).total_seconds(), 0.001)
    critical = critical_path(steps, edges)

    def pct(moment: datetime.datetime) -> float:
        return round(100 * max(0.0, (moment - start).total_seconds()) / span, 3)

    lanes = []
    for step in steps[:TIMELINE_ROWS]:
        queued_at = queued.get(step.job_id) if step.job_id is not None else None
        run_end = step.finished_at or (now if step.state == StepState.EXECUTING else None)
        wait_left = wait_width = run_left = run_width = 0.0
        if queued_at is not None:
            wait_left = pct(queued_at)
            wait_width = max(0.0, pct(step.started_at or now) - wait_left)
        if step.started_at is not None and run_end is not None:
            run_left = pct(step.started_at)
            run_width = max(0.15, pct(run_end) - run_left)
        parts = [f"{step.name}: {step.state}"]
        if queued_at is not None and step.started_at is not None:
            parts.append(f"queued {format_seconds((step.started_at - queued_at).total_seconds())}")
        if step.started_at is not None and run_end is not None:
            parts.append(f"ran {format_seconds((run_end - step.started_at).total_seconds())}")
        if step.attempt > 1:
            parts.append(f"attempt {step.attempt} of {step.max_attempts}")
        if step.id in critical:
            parts.append("on the critical path")
        lanes.append(
            Lane(
                id=step.id,
                name=step.name,
                state=step.state,
                attempt=step.attempt,
                max_attempts=step.max_attempts,
                queued_at=queued_at,
                started_at=step.started_at,
                finished_at=step.finished_at,
                wait_left=wait_left,
                wait_width=round(wait_width, 3),
                run_left=run_left,
                run_width=round(run_width, 3),
                critical=step.id in critical,
                title=" · ".join(parts),
            )
        )
    ticks = [
        (round(100 * fraction, 3), format_seconds(span * fraction))
        for fraction in (0, 0.25, 0.5, 0.75, 1)
    ]
    return {
        "lanes": lanes,
        "ticks": ticks,
        "span": format_seconds(span),
        "hidden": max(0, len(steps) - TIMELINE_ROWS),
        "critical": [lane.name for lane in lanes if lane.critical],
    }
