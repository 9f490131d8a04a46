"""baton.Step: a Procrastinate task that runs one step of a workflow.

The Procrastinate job carries only the step's id; everything else (args, attempts,
state) lives in the step row. A run goes: claim (the gate) -> perform() outside any
baton transaction -> finish (one transaction).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import inspect
import json
import logging
import re
import threading
import time
import traceback as traceback_module
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from asgiref.sync import sync_to_async
from django.db import (
    DataError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)
from procrastinate import JobContext
from procrastinate.contrib.django import app as procrastinate_app
from procrastinate.job_context import AbortReason

from baton import tracing
from baton.conf import settings as baton_settings
from baton.exceptions import ResultNotSerializable, ResultTooLarge, ResultUnavailable
from baton.execution import advance, local_worker
from baton.execution.deferrer import database_alias
from baton.execution.graft import GraftBuilder, graft_problems
from baton.execution.outcomes import Discard, Error, Snooze
from baton.execution.registry import option_problems, registry
from baton.graph.policy import backoff_seconds, should_retry
from baton.graph.spec import StepSpec
from baton.graph.validate import json_problem
from baton.llm.ledger import Call, Ledger
from baton.llm.usage import Usage
from baton.models import Workflow
from baton.results import load_dependency_results

logger = logging.getLogger("baton")


_NOT_LOADED = object()


class Job:
    """What perform() gets: the step's args, its workflow, its dependencies' results."""

    def __init__(self, claimed: advance.Claim, context: JobContext | None) -> None:
        self._claim = claimed
        self.context = context
        self.args: dict[str, Any] = dict(claimed.step.args or {})
        self.step_name: str = claimed.step.name
        self.step_id: int = claimed.step.id
        self.workflow_id = claimed.step.workflow_id
        self.attempt: int = claimed.attempt
        #: time.monotonic() by which this attempt must end (the step's `timeout`), or
        #: None; pass time_left() on to an SDK's own timeout.
        self.deadline: float | None = None
        self._workflow: Any = None
        self._dep_results: Any = _NOT_LOADED
        self._ledger = Ledger()
        self._span: Any = None  # this attempt's trace span (baton.tracing), if recorded
        self._graft: Any = None

    def graft(self) -> Any:
        """A builder of steps to add to this workflow when this attempt succeeds
        (add / add_many / fan_out; no insert): written in the same transaction as the
        step's completion, and the step's dependents wait for all of it."""
        if self._graft is None:
            self._graft = GraftBuilder(f"graft of {self.step_name}", self.workflow_id)
        return self._graft

    def time_left(self) -> float | None:
        """Seconds until the attempt's deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def debug(self) -> bool:
        """Whether this step's workflow captures LLM debug data (baton.debug)."""
        return bool(self._claim.workflow.debug or baton_settings.DEBUG)

    # Model calls ----------------------------------------------------------------------
    def record_usage(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        latency_ms: float | None = None,
        call_key: str | None = None,
        provider: str | None = None,
    ) -> Call:
        """Record one model call of this attempt in the ledger, priced by BATON["PRICING"].

        Once per `call_key` and attempt: recording a key again keeps the first record.
        Stored with the attempt's outcome, whatever it is (a failed attempt's calls were
        paid for too). `input_tokens` counts every input token, cached ones included.
        """
        usage = Usage(
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            provider=provider,
            latency_ms=None if latency_ms is None else round(latency_ms),
        )
        return self._ledger.record(usage, call_key)

    def record(self, usage: Usage, call_key: str | None = None) -> Call:
        """record_usage() for a ready Usage, such as baton.llm.usage_from(response)."""
        return self._ledger.record(usage, call_key)

    @property
    def calls(self) -> tuple[Call, ...]:
        """The model calls recorded in this attempt so far."""
        return self._ledger.calls()

    @property
    def step(self) -> Any:
        return self._claim.step

    @property
    def workflow(self) -> Any:
        if self._workflow is None:
            self._workflow = Workflow.objects.get(pk=self.workflow_id)
        return self._workflow

    def should_abort(self) -> bool:
        return bool(self.context and self.context.should_abort())

    # Results of dependencies -----------------------------------------------------------
    def _load_dependencies(self) -> dict[str, Any]:
        if self._dep_results is _NOT_LOADED:
            self._dep_results = load_dependency_results(self.step_id)
        return self._dep_results  # type: ignore[no-any-return]

    def result(self, name: str) -> Any:
        deps = self._load_dependencies()
        if name not in deps:
            raise ResultUnavailable(name, ResultUnavailable.NOT_A_DEP)
        _group, _key, has_result, value, _span = deps[name]
        if not has_result:
            raise ResultUnavailable(name, ResultUnavailable.NO_RESULT)
        return value

    def results(self, group: str | None = None) -> dict[str, Any]:
        deps = self._load_dependencies()
        if group is None:
            return {name: value for name, (_g, _k, has, value, _s) in deps.items() if has}
        members = {name: item for name, item in deps.items() if item[0] == group}
        if not members:
            raise ResultUnavailable(group, ResultUnavailable.NOT_A_DEP)
        return {str(key): value for (_g, key, has, value, _s) in members.values() if has}

    def _dependency_spans(self) -> list[str]:
        """The trace span ids of the dependencies' attempts that completed them."""
        return [row[4] for row in self._load_dependencies().values() if row[4]]

    def __repr__(self) -> str:
        return f"<baton.Job step={self.step_name!r} attempt={self.attempt}>"


class Step:
    """Subclass and implement perform(job). Class options mean what they mean in
    Procrastinate; max_attempts counts the first attempt."""

    queue: ClassVar[str] = "default"
    priority: ClassVar[int] = 0
    max_attempts: ClassVar[int] = 3
    lock: ClassVar[str | None] = None
    timeout: ClassVar[float | None] = None  # seconds per attempt; None: no limit
    #: A synchronous perform() runs in a thread of its own so that its timeout can be
    #: enforced (the late result is dropped); False: it only gets job.deadline.
    enforce_sync_timeout: ClassVar[bool] = True
    retry_backoff: ClassVar[float] = 1.0  # seconds before the 2nd attempt, doubling
    retry_backoff_max: ClassVar[float] = 300.0
    retry_jitter: ClassVar[float] = 0.1  # spread retries over [delay*(1-j), delay]
    #: Procrastinate task name; defaults to "module.ClassName".
    task_name: ClassVar[str]
    abstract: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass is concrete unless it says `abstract = True` in its own body.
        if cls.__dict__.get("abstract", False):
            return
        cls.abstract = False
        if "task_name" not in cls.__dict__:
            cls.task_name = f"{cls.__module__}.{cls.__qualname__}"
        problems = option_problems(
            {
                "queue": cls.queue,
                "priority": cls.priority,
                "max_attempts": cls.max_attempts,
                "lock": cls.lock,
            }
        )
        if problems:
            raise TypeError(f"{cls.__qualname__}: {'; '.join(problems)}")
        _register(cls)

    @classmethod
    def new(cls, **args: Any) -> StepSpec:
        """A spec of this step with these args, to add to a workflow."""
        if cls.abstract:
            raise TypeError(f"{cls.__qualname__} is abstract; subclass it")
        return StepSpec(task_name=cls.task_name, args=args)

    def perform(self, job: Job) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} must implement perform(job)")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based)."""
        return backoff_seconds(
            attempt, base=self.retry_backoff, cap=self.retry_backoff_max, jitter=self.retry_jitter
        )

    def before_perform(self, job: Job) -> Discard | None:
        """Hook after the claim, before perform(): a Discard skips perform() (LLMStep
        uses it for the workflow's budget). Runs on the worker's thread, never the loop."""
        return None

    def on_result(self, job: Job, value: Any) -> Any:
        """Hook between perform() and storing: the value to store (LLMStep strips usage)."""
        return value

    def on_exception(self, job: Job, exc: Exception) -> Any:
        """Hook for an exception perform() raised: what to treat it as (LLMStep turns a
        rate limit's retry-after hint into a Snooze)."""
        return exc


def _register(cls: type[Step]) -> None:
    if cls.task_name in registry and registry[cls.task_name] is not cls:
        existing = registry[cls.task_name]
        # Re-importing the same module (e.g. autoreload) replaces the class.
        if (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(
                f"Step task name {cls.task_name!r} is used by both "
                f"{existing.__module__}.{existing.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}"
            )
    registry[cls.task_name] = cls
    is_async = inspect.iscoroutinefunction(cls.perform)

    if is_async:

        async def run_async(context: JobContext, step_id: int, **_: Any) -> None:
            await _run_step_async(cls, context, step_id)

        func: Callable[..., Any] = run_async
    else:

        def run_sync(context: JobContext, step_id: int, **_: Any) -> None:
            _run_step_sync(cls, context, step_id)

        func = run_sync
    func.__name__ = cls.__qualname__
    func.__qualname__ = cls.__qualname__
    func.__module__ = cls.__module__
    procrastinate_app.task(
        name=cls.task_name,
        queue=cls.queue,
        priority=cls.priority,
        lock=cls.lock,
        pass_context=True,
    )(func)


# ---------------------------------------------------------------------------- running
class OutcomeNotStorable(Exception):
    """PostgreSQL refused to store what an attempt returned or raised."""

    def __init__(self, step_name: str, cause: BaseException) -> None:
        super().__init__(
            f"the outcome of step {step_name!r} could not be stored: "
            f"{type(cause).__name__}: {str(cause).strip()[:500]}"
        )


class AttemptFailed(Exception):
    """Raised to Procrastinate after baton recorded a failed attempt, so the job shows
    as failed there too; baton, not Procrastinate, schedules the next attempt."""


def _run_step_sync(cls: type[Step], context: JobContext, step_id: int) -> None:
    close_old_connections()
    local_worker.connections_current()  # one broken by a Postgres restart is replaced
    try:
        claimed = _claim(step_id, _job_id(context))
        if claimed is None:
            return
        step = cls()
        job = Job(claimed, context)
        value: Any = step.before_perform(job)
        job._span = tracing.start_attempt(claimed, job)
        if value is None:
            try:
                with tracing.current(job._span):
                    if cls.timeout:
                        job.deadline = time.monotonic() + cls.timeout
                    if cls.timeout and cls.enforce_sync_timeout:
                        value = _call_with_timeout(step.perform, job, cls.timeout)
                    else:
                        value = step.perform(job)
                value = step.on_result(job, value)
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                value = step.on_exception(job, exc) if isinstance(exc, Exception) else exc
        _conclude(step, claimed, job, value)
    finally:
        close_old_connections()


async def _run_step_async(cls: type[Step], context: JobContext, step_id: int) -> None:
    step = cls()

    def prepare() -> tuple[advance.Claim, Job, Discard | None] | None:
        close_old_connections()
        local_worker.connections_current()
        claimed = _claim(step_id, _job_id(context))
        if claimed is None:
            return None
        job = Job(claimed, context)
        refusal = step.before_perform(job)
        job._span = tracing.start_attempt(claimed, job)
        if refusal is None:
            job._load_dependencies()  # perform() runs on the event loop: no ORM there
        return claimed, job, refusal

    prepared = await sync_to_async(prepare, thread_sensitive=False, executor=db_threads())()
    if prepared is None:
        return
    claimed, job, refusal = prepared
    if refusal is not None:
        await sync_to_async(_conclude, thread_sensitive=False, executor=db_threads())(
            step, claimed, job, refusal
        )
        return
    try:
        with tracing.current(job._span):
            coro = step.perform(job)
            if cls.timeout:
                job.deadline = time.monotonic() + cls.timeout
                value = await asyncio.wait_for(coro, timeout=cls.timeout)
            else:
                value = await coro
        value = step.on_result(job, value)
    except asyncio.CancelledError as exc:
        # A worker shutting down hands the step on (a fresh job, the attempt given back);
        # a user's abort request discards it. Recorded before Procrastinate hears of it.
        shutdown = context.abort_reason() == AbortReason.SHUTDOWN
        await sync_to_async(_conclude_quietly, thread_sensitive=False, executor=db_threads())(
            step, claimed, job, Snooze(0) if shutdown else Discard("aborted")
        )
        raise exc
    except Exception as exc:
        value = step.on_exception(job, exc)
    await sync_to_async(_conclude, thread_sensitive=False, executor=db_threads())(
        step, claimed, job, value
    )


# The database parts of async steps (claim, dependencies' results, completion) run in a
# small pool of their own: a step awaiting a model holds no thread and no connection, so
# a worker's connections stay at this pool's size whatever its concurrency, and these
# short calls never queue behind synchronous steps' perform()s in the loop's default
# pool. One Django connection per thread, kept (CONN_MAX_AGE).
_db_threads: concurrent.futures.ThreadPoolExecutor | None = None
_db_threads_lock = threading.Lock()


def db_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The pool of BATON["ASYNC_DB_THREADS"] threads for async steps' database work."""
    global _db_threads
    with _db_threads_lock:
        if _db_threads is None:
            _db_threads = concurrent.futures.ThreadPoolExecutor(
                max_workers=baton_settings.ASYNC_DB_THREADS, thread_name_prefix="baton-db"
            )
        return _db_threads


def _claim(step_id: int, job_id: int) -> advance.Claim | None:
    """advance.claim, once more on a fresh connection if the kept one was broken (after a
    Postgres restart an idle kept connection fails on first use; Django only notices
    then). Nothing was written by the failed try: it is one statement."""
    fetched = local_worker.take_claim(job_id)
    if fetched is not None:  # baton's worker claimed it with the fetch
        return advance.claim_fetched(*fetched, job_id=job_id)
    try:
        return advance.claim(step_id, job_id)
    except (OperationalError, InterfaceError, psycopg.OperationalError):
        connection = connections[database_alias()]
        if connection.in_atomic_block:
            raise
        local_worker.database_lost()
        connection.close()
        return advance.claim(step_id, job_id)


def _job_id(context: JobContext) -> int:
    if context.job.id is None:  # pragma: no cover - Procrastinate always sets it
        raise RuntimeError("baton: a step ran without a Procrastinate job id")
    return int(context.job.id)


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")

#: The longest snooze or backoff delay baton schedules (a year); longer ones are capped.
MAX_DELAY_SECONDS = 365 * 24 * 3600.0

# Threads that run synchronous perform()s under a timeout, reused across attempts (a
# thread per attempt cost ~0.2 ms of CPU per step). A thread cannot be killed: one whose
# perform() outlived its timeout keeps its place until it returns, hence the room.
_TIMEOUT_THREADS = concurrent.futures.ThreadPoolExecutor(
    max_workers=256, thread_name_prefix="baton-perform"
)


def _call_with_timeout(func: Callable[[Job], Any], job: Job, seconds: float) -> Any:
    # On timeout the attempt is recorded as failed; the late result, if any, is dropped.
    def run(job: Job) -> Any:
        close_old_connections()
        local_worker.connections_current()
        try:
            return func(job)
        finally:
            close_old_connections()

    # The caller's context (the attempt's trace span) goes with it into the thread.
    future = _TIMEOUT_THREADS.submit(contextvars.copy_context().run, run, job)
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise TimeoutError(f"perform() took longer than timeout={seconds:g}s") from None


#: How long an attempt keeps trying to record its outcome while the database cannot be
#: reached (a restart, a failover, a network cut). Giving up leaves the step executing
#: for the sweep, which runs it again: perform() then runs twice (at-least-once).
OUTCOME_RETRY_SECONDS = 120.0
_OUTCOME_RETRY_MAX_DELAY = 2.0


def _finish_through_outage(claimed: advance.Claim, outcome: advance.AttemptOutcome) -> None:
    """advance.finish, tried again on a fresh connection while the database is unreachable,
    so that an outage during the attempt does not make the step run again. Safe to repeat:
    a try that failed rolled back, and one whose COMMIT landed before the connection died
    makes the next try a no-op (the attempt fence)."""
    deadline = time.monotonic() + OUTCOME_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            advance.finish(claimed, outcome)
            return
        except (OperationalError, InterfaceError, psycopg.OperationalError) as exc:
            connection = connections[database_alias()]
            if connection.in_atomic_block or time.monotonic() + delay > deadline:
                raise
            local_worker.database_lost()
            logger.warning(
                "baton: could not record the outcome of step %s (attempt %s): %s; "
                "trying again in %.1fs",
                claimed.step.name,
                claimed.attempt,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                delay,
            )
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, _OUTCOME_RETRY_MAX_DELAY)


def _conclude_quietly(step: Step, claimed: advance.Claim, job: Job, value: Any) -> None:
    try:
        _conclude(step, claimed, job, value)
    except AttemptFailed:
        pass


def _conclude(step: Step, claimed: advance.Claim, job: Job, value: Any) -> None:
    """Turn what perform() returned or raised into an outcome and record it."""
    try:
        outcome = to_outcome(step, claimed, value)
    finally:
        close_old_connections()
    calls = job.calls
    if calls:
        outcome = dataclasses.replace(outcome, calls=calls)
    if isinstance(outcome, advance.Completed) and job._graft is not None and len(job._graft):
        outcome = _with_graft(step, claimed, job, outcome)
    try:
        try:
            _finish_through_outage(claimed, outcome)
        except (DataError, psycopg.DataError) as exc:
            # PostgreSQL refused what the outcome holds: record that as the attempt's
            # failure (one attempt spent) rather than leave the step executing.
            logger.exception("baton: the outcome of step %s could not be stored", claimed.step.name)
            value = OutcomeNotStorable(claimed.step.name, exc)
            outcome = to_outcome(step, claimed, value)
            _finish_through_outage(claimed, outcome)
    finally:
        tracing.end_attempt(job._span, outcome, value)
    if isinstance(value, BaseException) and not isinstance(value, (Snooze, Discard)):
        raise AttemptFailed(f"{claimed.step.name}: {value!r}") from value


def _with_graft(
    step: Step, claimed: advance.Claim, job: Job, outcome: advance.Completed
) -> advance.AttemptOutcome:
    """The completion with its graft, or, for a graft that would not insert, a failed
    attempt that says why (nothing of the graft is written)."""
    problems = graft_problems(claimed, job._graft)
    if not problems:
        return dataclasses.replace(outcome, graft=job._graft)
    failed = to_outcome(step, claimed, Error("invalid graft: " + "; ".join(problems)))
    return dataclasses.replace(failed, calls=outcome.calls)


def to_outcome(step: Step, claimed: advance.Claim, value: Any) -> advance.AttemptOutcome:
    name = claimed.step.name
    if isinstance(value, Snooze):
        return advance.Rescheduled(delay_seconds=_bounded_delay(value.seconds), snooze=True)
    if isinstance(value, Discard):
        return advance.Discarded(
            reason=storable_text(value.reason),
            workflow_reason=storable_text(getattr(value, "workflow_reason", "")),
        )
    if not isinstance(value, BaseException) and not isinstance(value, Error):
        try:
            return _completed(name, value)
        except (ResultTooLarge, ResultNotSerializable) as exc:
            value = exc
    error_text = storable_text(_describe(value))
    try:
        trace = "".join(traceback_module.format_exception(value)) if value.__traceback__ else ""
    except Exception:  # a broken __str__ in the chain: the error line is enough
        trace = ""
    trace = storable_text(trace)
    max_attempts = claimed.step.max_attempts
    if should_retry(claimed.attempt, max_attempts):
        return advance.Rescheduled(
            delay_seconds=_bounded_delay(step.backoff(claimed.attempt)),
            snooze=False,
            error=error_text,
            traceback=trace,
        )
    return advance.Discarded(
        reason=f"failed after {claimed.attempt} attempt(s): {error_text}",
        error=error_text,
        traceback=trace,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Error):
        return str(exc.reason)
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # its __str__ raised
        return f"{type(exc).__name__} (its message could not be read)"


def storable_text(text: str) -> str:
    """`text` as PostgreSQL's text columns accept it: NUL characters (which text cannot
    hold) are shown as \\x00 and unpaired surrogates (which UTF-8 cannot encode) as
    U+FFFD, so the error still says what it said."""
    if not isinstance(text, str):
        text = str(text)
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\\x00"))


def _bounded_delay(seconds: Any) -> float:
    """A backoff as the database can schedule it: a number in [0, MAX_DELAY_SECONDS]."""
    try:
        delay = float(seconds)
    except (TypeError, ValueError):
        return 0.0
    if delay != delay or delay < 0:  # NaN, negative
        return 0.0
    return min(delay, MAX_DELAY_SECONDS)


def _completed(name: str, value: Any) -> advance.Completed:
    if value is None:
        return advance.Completed(value_json=None)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ResultNotSerializable(name, str(exc)) from exc
    except RecursionError as exc:
        raise ResultNotSerializable(name, "it is nested too deeply") from exc
    # What JSON allows and PostgreSQL's jsonb does not: a cheap look at the JSON text
    # first, the walk over the value only when it may hold one.
    if "\\u0000" in text or _ESCAPED_SURROGATE.search(text):
        problem = json_problem(value)
        if problem:
            raise ResultNotSerializable(name, problem)
    size = len(text.encode())
    limit = baton_settings.RESULT_MAX_BYTES
    if size > limit:
        raise ResultTooLarge(name, size, limit)
    return advance.Completed(value_json=text, size_bytes=size)
