"""baton's worker: Procrastinate's, with hand-offs that never wait for a poll.

Two gaps in Procrastinate 3.x's worker make a job deferred by a running job often wait
a whole polling interval:
- a NOTIFY that arrives while a fetch is in flight is lost: the worker clears its
  wake-up event after the fetch returns, whether or not it was set again meanwhile;
- LISTEN/NOTIFY fires on INSERT only, so a job scheduled for later (snooze, backoff)
  is found by polling.
`_StickyEvent` keeps a wake-up that arrived during a fetch, and `baton.execution.local_worker`
arms a timer for each job baton schedules from this process.

A step's completion also ends its own Procrastinate job in the same statement, so the
worker skips its finish_job call for that job; and the worker's fetch claims the step
of the job it fetches in the same statement (`_ClaimingJobManager`), so the step skips
its own claim.

And one gap that takes workers down: Procrastinate stops the whole worker (exit status 0)
when a database call outside a job fails, so a Postgres restart ends every worker: the
listener cannot reconnect while the server is down, a heartbeat or a fetch meets a closed
connection. BatonWorker retries those instead (see `_connection_lost`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import json
import logging
import os
import select
import socket
import time
import typing
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Unpack

import procrastinate
import psycopg
import psycopg_pool
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate import job_context as procrastinate_job_context
from procrastinate import jobs as procrastinate_jobs
from procrastinate import manager as procrastinate_manager
from procrastinate import psycopg_connector
from procrastinate import retry as procrastinate_retry
from procrastinate import utils as procrastinate_utils
from procrastinate import worker as procrastinate_worker
from procrastinate.app import WorkerOptions
from procrastinate.contrib.django import settings as procrastinate_settings
from procrastinate.contrib.django import utils as procrastinate_django_utils

from baton.conf import settings as baton_settings
from baton.execution import advance, local_worker
from baton.execution.claim import unclaim
from baton.execution.deferrer import may_prepare
from baton.llm.ledger import warm_up

if TYPE_CHECKING:
    from procrastinate.psycopg_connector import PsycopgConnector

    from baton.execution.attempt import WorkflowAtClaim

# The `Any`s of this module are where Procrastinate gives no narrower type; each says so.

# A step claimed by the worker's fetch (claim.claimed_by_fetch): the step row's values,
# its old state, what it read of the workflow. Any: the values of a row as Procrastinate's
# connector returns them (dict[str, Any]), one per model field, decoded later.
FetchedClaim = tuple[list[Any], str, "WorkflowAtClaim"]
# A connection of Procrastinate's pool. Any: its row type, which Procrastinate sets.
PooledConnection = psycopg.AsyncConnection[Any]

logger = logging.getLogger("baton")

# Polling remains the fallback for jobs scheduled by other processes.
DEFAULT_POLLING_INTERVAL = 1.0
# Seconds between attempts to listen again after the database connection was lost.
RECONNECT_DELAY = 1.0


class _StickyEvent(asyncio.Event):
    """An Event whose clear() is ignored if set() was called since the last wait()."""

    def __init__(self) -> None:
        super().__init__()
        self._sets = 0
        self._seen = 0

    def set(self) -> None:
        self._sets += 1
        super().set()

    async def wait(self) -> typing.Literal[True]:
        await super().wait()
        self._seen = self._sets
        return True

    def clear(self) -> None:
        if self._sets == self._seen:
            super().clear()


# What a registered worker listens on, beside Procrastinate's row for it (id, heartbeat).
_REGISTER_SQL = """
INSERT INTO baton_workerregistration
       (worker_id, name, hostname, pid, queues, tasks, concurrency, started_at)
VALUES (%(worker_id)s, %(name)s, %(hostname)s, %(pid)s, %(queues)s::jsonb, %(tasks)s::jsonb,
        %(concurrency)s, now())
ON CONFLICT (worker_id) DO NOTHING
"""


class _ClaimingJobManager(procrastinate_manager.JobManager):
    """Procrastinate's job manager whose fetch also claims the fetched job's step, and
    whose worker registration also says which queues the worker listens on."""

    #: Set by BatonWorker before it registers: name, queues, concurrency.
    registration: dict[str, str | int] | None = None

    async def register_worker(self) -> int:
        worker_id: int = await super().register_worker()
        if self.registration is not None:
            try:
                await self.connector.execute_query_async(
                    query=_REGISTER_SQL,
                    worker_id=worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    **self.registration,
                )
            except procrastinate_exceptions.ConnectorException:
                # Only what baton.explain says about queues depends on it.
                logger.warning("baton worker: could not record its queues", exc_info=True)
        return worker_id

    #: Set by BatonWorker: the task names this worker can run.
    known_tasks: typing.Container[str] | None = None
    #: The tasks this worker has met without having them: its fetches pass over their
    #: jobs from then on (a process's tasks never change while it runs).
    skipped_tasks: set[str]

    def __init__(self, connector: procrastinate.BaseConnector) -> None:
        super().__init__(connector)
        self.skipped_tasks = set()

    async def fetch_job(
        self, queues: Iterable[str] | None, worker_id: int
    ) -> procrastinate_jobs.Job | None:
        jobs = await self.fetch_jobs(queues, worker_id, limit=1)
        return jobs[0] if jobs else None

    async def fetch_jobs(
        self, queues: Iterable[str] | None, worker_id: int, limit: int
    ) -> list[procrastinate_jobs.Job]:
        """Up to `limit` jobs, their steps claimed, in one round trip. Fewer (or none)
        means no other job was due."""
        while True:
            query, params = advance.FETCH_AND_CLAIM_SQL, {}
            if self.skipped_tasks:
                query = advance.FETCH_AND_CLAIM_SKIPPING_SQL
                params = {"skip_tasks": sorted(self.skipped_tasks)}
            rows = await self.connector.execute_query_all_async(
                query=query, queues=queues, worker_id=worker_id, limit=limit, **params
            )
            jobs = []
            handed_back = False
            for row in rows:
                job = procrastinate_jobs.Job.from_row(row)
                claim = advance.claimed_by_fetch(row)
                if claim is not None and self.known_tasks is not None:
                    if job.task_name not in self.known_tasks:
                        # Another worker may have the step's code (deployed to the web
                        # process and some workers first): give the job back instead of
                        # failing it.
                        await self._hand_back(job, claim)
                        handed_back = True
                        continue
                if claim is not None:
                    local_worker.fetched_claim(int(row["id"]), claim)
                jobs.append(job)
            if jobs or not handed_back:
                return jobs
            # Only jobs this worker cannot run: fetch again (they are due later now).

    async def _hand_back(self, job: procrastinate_jobs.Job, claim: FetchedClaim) -> None:
        values, old_state, _ = claim
        delay = hand_back_delay(job.attempts)
        await sync_to_async(unclaim, thread_sensitive=False)(values, old_state)
        self.skipped_tasks.add(job.task_name)
        await self.retry_job(
            job, retry_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
        )
        first = job.task_name not in _warned_tasks
        _warned_tasks.add(job.task_name)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "baton worker %s: task %r (step %r of workflow %s) is not registered in this "
            "worker, so it cannot run it; handed back for a worker that can (again in %ss). "
            "Is the step's module imported by this worker (an installed app's tasks.py)?",
            (self.registration or {}).get("name", ""),
            job.task_name,
            job.task_kwargs.get("step_name", job.task_kwargs.get("step_id")),
            job.task_kwargs.get("workflow_id", "?"),
            delay,
        )


class BatonWorker(procrastinate_worker.Worker):
    def __init__(self, app: procrastinate.App, **options: Unpack[WorkerOptions]) -> None:
        options.setdefault("fetch_job_polling_interval", DEFAULT_POLLING_INTERVAL)
        super().__init__(app, **options)
        self._new_job_event = _StickyEvent()
        # Only its fetch differs from Procrastinate's job manager (the command gives the
        # worker an app of its own, made with with_connector).
        self.app.job_manager = manager = _ClaimingJobManager(self.app.connector)
        manager.registration = {
            "name": self.worker_name or "",
            "queues": json.dumps(list(self.queues or [])),
            "tasks": json.dumps(sorted(self.app.tasks)),
            "concurrency": self.concurrency,
        }
        manager.known_tasks = self.app.tasks

    def _wake(self) -> None:
        self._new_job_event.set()

    async def run(self) -> None:
        threads = baton_settings.WORKER_THREADS
        if threads is not None:
            # Synchronous steps run in the loop's default pool (Procrastinate's
            # sync_to_async): its size is how many of them run at once.
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(
                    max_workers=threads, thread_name_prefix="baton-sync"
                )
            )
        if self.concurrency > sync_threads():
            logger.info(
                "baton worker: concurrency %s, but at most %s synchronous steps run at once "
                "(BATON['WORKER_THREADS']); async steps are not limited by it",
                self.concurrency,
                sync_threads(),
            )
        await sync_to_async(_warm_up_pricing, thread_sensitive=False)()
        local_worker.attach(
            asyncio.get_running_loop(),
            self._wake,
            delete_succeeded_jobs=self.delete_jobs
            in (
                procrastinate_jobs.DeleteJobCondition.ALWAYS,
                procrastinate_jobs.DeleteJobCondition.SUCCESSFUL,
            ),
        )
        try:
            # Procrastinate leaves run() and _periodic_deferrer() unannotated: hence the
            # ignores on their calls, here and below.
            await super().run()  # type: ignore[no-untyped-call]
        finally:
            local_worker.detach()

    async def _persist_job_status(
        self,
        job: procrastinate_jobs.Job,
        status: procrastinate_jobs.Status,
        retry_decision: procrastinate_retry.RetryDecision | None,
        context: procrastinate_job_context.JobContext,
        job_result: procrastinate_job_context.JobResult | None,
    ) -> None:
        if job.id is not None and local_worker.take_finished(job.id):
            # The step's completion already ended this job, in its own statement.
            self._job_ids_to_abort.pop(job.id, None)
            return
        await super()._persist_job_status(
            job=job,
            status=status,
            retry_decision=retry_decision,
            context=context,
            job_result=job_result,
        )

    # Surviving a lost database connection (e.g. a Postgres restart). In Procrastinate
    # 3.10 a failing side task (listener, periodic deferrer, heartbeat) stops the worker,
    # and an error from fetch_job ends its run loop. Here the listener and the deferrer
    # start again, a failed heartbeat or fetch is logged and tried again at the next beat
    # or poll. Other errors (e.g. the foreign-key error of a worker whose row was pruned)
    # still stop the worker.
    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:  # Any: as Procrastinate's
        listen, self.listen_notify = self.listen_notify, False
        try:
            side_tasks: list[asyncio.Task[Any]] = super()._start_side_tasks()
        finally:
            self.listen_notify = listen
        if listen:
            side_tasks.append(asyncio.create_task(self._listen_forever(), name="listener"))
        return side_tasks

    async def _listen_forever(self) -> None:
        while True:
            try:
                await self.app.job_manager.listen_for_jobs(
                    on_notification=self._handle_notification, queues=self.queues
                )
            except procrastinate_exceptions.ConnectorException as exc:
                if not _connection_lost(exc):
                    raise
                logger.warning("baton worker: listening for jobs failed, retrying: %s", exc)
            await asyncio.sleep(RECONNECT_DELAY)
            self._new_job_event.set()  # notifications sent meanwhile were lost: fetch now

    async def _periodic_deferrer(self) -> None:
        while True:
            try:
                await super()._periodic_deferrer()  # type: ignore[no-untyped-call]
                return  # no periodic task registered
            except procrastinate_exceptions.ConnectorException as exc:
                if not _connection_lost(exc):
                    raise
                logger.warning("baton worker: deferring periodic jobs failed, retrying: %s", exc)
            # It defers through Django's connection: drop the broken one before retrying.
            await sync_to_async(close_old_connections)()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _update_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            assert self.worker_id is not None
            try:
                await self.app.job_manager.update_heartbeat(self.worker_id)
            except procrastinate_exceptions.ConnectorException as exc:
                if not _connection_lost(exc):
                    raise
                logger.warning("baton worker: heartbeat failed, retrying: %s", exc)

    async def _fetch_and_process_jobs(self) -> None:
        try:
            await self._fetch_and_process_batches()
        except procrastinate_exceptions.ConnectorException as exc:
            if not _connection_lost(exc):
                raise
            # The run loop fetches again after the polling interval (or a wake-up).
            logger.warning("baton worker: fetching jobs failed, retrying: %s", exc)

    async def _fetch_and_process_batches(self) -> None:
        """Procrastinate's Worker._fetch_and_process_jobs, fetching as many jobs as there
        are free slots (up to FETCH_BATCH_MAX) in one round trip instead of one job per
        round trip: the fetch loop is the one serial part of a worker, and at a few
        hundred steps a second its round trips were the ceiling, whatever the
        concurrency. Until no job is left or the worker is asked to stop."""
        semaphore = self._job_semaphore
        while not self._stop_event.is_set():
            acquire = asyncio.create_task(semaphore.acquire())
            slots = 0
            jobs: list[procrastinate_jobs.Job] = []
            try:
                await procrastinate_utils.wait_any(acquire, self._stop_event.wait())
                if acquire.done() and not acquire.cancelled():
                    slots = 1
                if self._stop_event.is_set():
                    break
                while slots < FETCH_BATCH_MAX and not semaphore.locked():
                    await semaphore.acquire()  # a free slot: returns at once
                    slots += 1
                assert self.worker_id is not None
                manager = typing.cast(_ClaimingJobManager, self.app.job_manager)
                jobs = await manager.fetch_jobs(self.queues, self.worker_id, limit=slots)
            finally:
                for _ in range(slots - len(jobs)):
                    semaphore.release()
                self._new_job_event.clear()
            for job in jobs:
                self._start_job(job)
            if len(jobs) < slots:
                break  # nothing else is due now

    def _start_job(self, job: procrastinate_jobs.Job) -> None:
        """What Procrastinate's loop does with a fetched job (its slot already taken)."""
        job_id = job.id
        context = procrastinate_job_context.JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context=self.additional_context.copy() if self.additional_context else {},
            job=job,
            abort_reason=functools.partial(self._abort_reason, job_id),
            start_timestamp=time.time(),
        )
        job_task = asyncio.create_task(
            self._process_job(context), name=f"process job {job.task_name}[{job.id}]"
        )
        self._running_jobs[job_task] = context

        # Any: a job task's result, as Procrastinate's _running_jobs keys them.
        def on_job_complete(task: asyncio.Task[Any]) -> None:
            del self._running_jobs[task]
            self._job_semaphore.release()

        job_task.add_done_callback(on_job_complete)

    def _abort_reason(self, job_id: int | None) -> procrastinate_job_context.AbortReason | None:
        return self._job_ids_to_abort.get(job_id) if job_id else None


# Most jobs one fetch takes (one statement, one round trip).
FETCH_BATCH_MAX = 16


# Task names this process has already warned about (once each, then at DEBUG).
_warned_tasks: set[str] = set()
HAND_BACK_MAX_DELAY = 30


def hand_back_delay(times_handed_back: int) -> int:
    """Seconds before a job this worker cannot run is due again: 1, 2, 4, ... 30, so that
    a worker that can run it takes it soon and one that cannot does not spin on it."""
    return min(HAND_BACK_MAX_DELAY, 1 << min(times_handed_back, 5))


def _warm_up_pricing() -> None:
    """Load the price data before the first step: the first price in a process costs
    ~0.1 s of CPU (genai-prices' tables), which would stall the worker's other steps."""
    warm_up()


def _connection_lost(exc: BaseException) -> bool:
    """A connection-level failure (server gone, restarting, refusing connections)."""
    cause = exc.__cause__ or exc.__context__
    lost = isinstance(cause, psycopg.OperationalError)
    if lost:
        local_worker.database_lost()
    return lost


def worker_connector() -> PsycopgConnector:
    """The connector a worker uses: Procrastinate's own for Django (a psycopg pool on the
    same database), with its connections in autocommit mode and psycopg's prepared
    statements on (unless the settings say otherwise, see deferrer.may_prepare).

    Every query Procrastinate's worker makes is one statement (its SQL functions are
    atomic), so the BEGIN and COMMIT that psycopg's pool wraps around each one by default
    are two round trips per fetch spent on nothing."""
    alias = procrastinate_settings.settings.DATABASE_ALIAS
    params = procrastinate_django_utils.connector_params(alias)
    if may_prepare(alias):
        params.pop("prepare_threshold", None)  # psycopg's default: prepare on 5th use

    async def autocommit(connection: PooledConnection) -> None:
        await connection.set_autocommit(True)
        # Every query on this connection is a lookup by key (the fetch walks the
        # partial priority index under LIMIT, the claim reads steps by id). Tables
        # whose statistics predate a burst (a fresh deployment, a fan-out released at
        # once, tables just truncated) look nearly empty to the planner, which then
        # scans and sorts every todo job and every step at each fetch: O(n) per fetch,
        # O(n^2) per burst (measured: 1.6 ms instead of 0.5 ms per job at 2,000).
        # Until autovacuum analyzes them, only these settings keep the index plans.
        await connection.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")

    return psycopg_connector.PsycopgConnector(
        kwargs=params, configure=autocommit, pool_factory=_pool_checking_idle_connections
    )


# A pooled connection idle longer than this is checked (one empty query) before use.
IDLE_CHECK_AFTER = 2.0


def _server_wrote(connection: PooledConnection) -> bool:
    """Whether an idle connection has unread input (an error, a termination notice, the
    end of the stream): a poll of its socket, no round trip."""
    if connection.closed or connection.broken:
        return True
    try:
        readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


# Any: the pool's arguments as Procrastinate's connector passes them to its pool_factory.
def _pool_checking_idle_connections(**kwargs: Any) -> psycopg_pool.AsyncConnectionPool:
    """psycopg's pool as Procrastinate makes it, with its check on taking a connection
    (an empty query: one round trip before each fetch, a quarter of a busy worker's wait
    on the database) kept only where it can find something: for connections that sat
    idle, and for those the server has written to since their last query. A server that
    shuts down or restarts, or kills a backend, sends its termination notice to every
    connection first; without this check the first query on each would fail, and some of
    Procrastinate's (finishing a job) are not retried."""
    returned_at: weakref.WeakKeyDictionary[PooledConnection, float] = weakref.WeakKeyDictionary()

    async def stamp(connection: PooledConnection) -> None:
        returned_at[connection] = time.monotonic()

    async def check(connection: PooledConnection) -> None:
        idle = time.monotonic() - returned_at.get(connection, 0.0) > IDLE_CHECK_AFTER
        if idle or _server_wrote(connection):
            await psycopg_pool.AsyncConnectionPool.check_connection(connection)

    return psycopg_pool.AsyncConnectionPool(**{**kwargs, "check": check, "reset": stamp})


async def run_worker(app: procrastinate.App, **options: Unpack[WorkerOptions]) -> None:
    """Run a BatonWorker on `app` (already opened) until it is stopped."""
    final: WorkerOptions = {**app.worker_defaults, **options}
    worker = BatonWorker(app, **final)
    await worker.run()


# Procrastinate's connector is a psycopg pool of psycopg_pool's default size: fetches,
# heartbeats, job status updates and the LISTEN connection share it.
PROCRASTINATE_POOL_SIZE = 4


def sync_threads() -> int:
    """How many synchronous steps one worker process runs at once, at most: the size of
    its event loop's default thread pool (BATON["WORKER_THREADS"], else Python's
    default, min(32, cores + 4)), whatever its --concurrency."""
    threads = baton_settings.WORKER_THREADS
    return threads if threads is not None else min(32, (os.cpu_count() or 1) + 4)


def connection_bound() -> int:
    """The most database connections one worker process holds while it runs async steps,
    whatever its concurrency (docs/howto/workers.md): the async steps' database threads,
    the loop's default pool (the sweep, the periodic deferrer, sync steps) and
    Procrastinate's pool. A step awaiting a model holds none of them."""
    return baton_settings.ASYNC_DB_THREADS + sync_threads() + PROCRASTINATE_POOL_SIZE
