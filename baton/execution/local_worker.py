"""The link between a step and the BatonWorker running it, in the same process.

Two things a step tells its worker, both shortcuts that only exist under baton's worker
(`manage.py baton worker`); elsewhere these calls do nothing and Procrastinate's own
path remains:

- wake-ups: Procrastinate wakes workers with LISTEN/NOTIFY on INSERT only, so a job
  scheduled for later (a snooze, a retry's backoff) would wait for the polling interval.
  When the step that scheduled it runs under baton's worker, that worker arms a timer
  for the due time.
- finished jobs: a completion marks its own Procrastinate job finished in the same
  statement that completes the step (see advance._COMPLETE_SQL), and tells the worker,
  which then skips its own finish_job round trips for that job.

And two things the worker tells the step: that its fetch already claimed the step
(advance.FETCH_AND_CLAIM_SQL), so the step skips its own claim statement; and that the
database connection was lost since the step's thread last used its own (`database_lost`),
so the thread's kept Django connection, broken by a restart that nothing in the thread
has noticed yet, is replaced before perform() runs instead of failing in it.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connections

_lock = threading.Lock()


@dataclass
class _Worker:
    loop: asyncio.AbstractEventLoop
    wake: Callable[[], None]
    delete_succeeded_jobs: bool


_worker: _Worker | None = None
# Kept apart from the attached worker, so that nothing is lost if the worker detaches
# (or another attaches) between a fetch or completion and the step that follows it.
_finished_jobs: set[int] = set()
# job id -> (the claimed step's row values, its state before the claim, what the claim
# read of its workflow)
_claims: dict[int, tuple[list[Any], str, Any]] = {}

# A scheduled job becomes fetchable when the database clock passes scheduled_at;
# arrive a little late rather than early.
_MARGIN_SECONDS = 0.01


def attach(
    loop: asyncio.AbstractEventLoop,
    wake: Callable[[], None],
    *,
    delete_succeeded_jobs: bool = False,
) -> None:
    global _worker
    with _lock:
        _worker = _Worker(loop, wake, delete_succeeded_jobs)


def detach() -> None:
    global _worker
    with _lock:
        _worker = None


def job_due(at: datetime.datetime | None) -> None:
    """A job becomes due now (at=None) or at `at`; wake the local worker then."""
    with _lock:
        worker = _worker
    if worker is None or worker.loop.is_closed():
        return
    delay = 0.0
    if at is not None:
        delay = max(0.0, (at - datetime.datetime.now(datetime.UTC)).total_seconds())
        delay += _MARGIN_SECONDS
    try:
        if delay <= 0:
            worker.loop.call_soon_threadsafe(worker.wake)
        else:
            worker.loop.call_soon_threadsafe(worker.loop.call_later, delay, worker.wake)
    except RuntimeError:  # the loop closed in between
        pass


def job_finishing() -> bool | None:
    """None when no BatonWorker runs here (the job is left to Procrastinate's worker);
    else whether a completion deletes its succeeded job (the worker's delete_jobs
    option) rather than marking it succeeded."""
    with _lock:
        worker = _worker
    return None if worker is None else worker.delete_succeeded_jobs


def job_finished(job_id: int) -> None:
    """The step's completion committed its job's end: the worker need not finish it."""
    with _lock:
        _finished_jobs.add(job_id)


def take_finished(job_id: int) -> bool:
    """True (once) if a completion in this process already finished this job."""
    with _lock:
        if job_id not in _finished_jobs:
            return False
        _finished_jobs.discard(job_id)
        return True


def fetched_claim(job_id: int, claim: tuple[list[Any], str, Any]) -> None:
    """The worker's fetch of this job also claimed its step (committed)."""
    with _lock:
        _claims[job_id] = claim


def take_claim(job_id: int) -> tuple[list[Any], str, Any] | None:
    """The claim the worker's fetch made for this job, once; None if it made none."""
    with _lock:
        return _claims.pop(job_id, None)


# ------------------------------------------------------------------ lost connections
# Bumped whenever this process sees the database connection lost; each thread remembers
# the value its Django connections were made under.
_outages = 0
_seen = threading.local()


def database_lost() -> None:
    """This process lost its database connection (a restart, a failover): every thread's
    kept Django connection is suspect."""
    global _outages
    with _lock:
        _outages += 1


def connections_current() -> None:
    """Before a step uses the database from this thread: drop its Django connections if
    the database was lost since they were made (Django, with persistent connections and
    no health checks, would hand a broken one to perform())."""
    if getattr(_seen, "outages", 0) != _outages:
        connections.close_all()
    _seen.outages = _outages
