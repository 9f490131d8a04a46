"""Everything baton borrows from Procrastinate's internals, in one place.

baton runs on Procrastinate's public API (tasks, JobManager, the Django connector) and,
for speed and crash safety, on a few of its internals: it mirrors the bodies of some of
its SQL functions inside its own statements, calls others, runs one of its named queries,
and overrides private methods of its Worker. Each is listed in AUDITED with the version
it was read at and a digest of the upstream text; tests/unit/test_upstream_contract.py
recomputes the digests from the installed Procrastinate (its sql/schema.sql,
sql/queries.sql and worker source) and fails by name when one changed, saying what to
re-read. To re-audit: read the upstream change, adapt the fragment or override named in
`used_by`, then update the digest (the test prints the new one).

The SQL fragments below are what baton's own statements (baton.execution.advance,
control, sweep) splice in; they are the only places baton writes Procrastinate's SQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import inspect
import re

from procrastinate import manager, sql, worker

#: The Procrastinate release the items below were read at.
AUDITED_VERSION = "3.10.0"


@dataclasses.dataclass(frozen=True)
class Borrowed:
    """One upstream item baton depends on by its text, not only its name."""

    kind: str  # "sql function", "query", "worker method", "manager method"
    name: str
    digest: str  # digest() of the upstream text at AUDITED_VERSION
    used_by: str  # what in baton mirrors, calls or overrides it


def digest(text: str) -> str:
    """A short digest of upstream text, insensitive to whitespace changes only."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


def sql_function_body(schema_sql: str, name: str) -> str:
    """The CREATE FUNCTION statement of `name` in a schema file (to its closing $$)."""
    match = re.search(
        rf"CREATE (?:OR REPLACE )?FUNCTION {re.escape(name)}\(.*?\$\$.*?\$\$", schema_sql, re.S
    )
    if match is None:
        raise LookupError(f"no function {name} in Procrastinate's schema")
    return match.group(0)


# ---------------------------------------------------------------------------- fragments
# procrastinate_fetch_job_v2(target_queue_names, p_worker_id): picks and locks the next
# job and marks it doing. Called (not copied) by baton's worker fetch, which claims the
# jobs' steps in the same statement (advance.FETCH_AND_CLAIM_SQL). The columns are those
# of the row it returns that procrastinate.jobs.Job.from_row reads.
FETCH_JOB_COLUMNS = (
    "id", "status", "task_name", "priority", "lock", "queueing_lock", "args", "scheduled_at",
    "queue_name", "attempts", "worker_id",
)  # fmt: skip
# Up to %(limit)s jobs in one round trip: the function called again while the last call
# found a job. Each call is a statement of its own inside the function (a volatile
# plpgsql function takes a fresh snapshot per query), so it sees the jobs the calls
# before it marked doing and picks the next one, exactly as separate fetches would.
FETCH_JOBS = f"""
    WITH RECURSIVE fetched(n, job) AS (
        SELECT 1, procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s)
         UNION ALL
        SELECT n + 1, procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s)
          FROM fetched WHERE n < %(limit)s AND (job).id IS NOT NULL
    )
    SELECT n AS fetched, {", ".join(f"(job).{column}" for column in FETCH_JOB_COLUMNS)}
      FROM fetched WHERE (job).id IS NOT NULL"""

# baton_fetch_job_v1(target_queue_names, p_worker_id, skip_task_names): a copy of
# procrastinate_fetch_job_v2 that passes over the jobs of the tasks named (created by
# migration 0006 from skipping_fetch_function()). A worker fetches through it only once
# it has met a task it does not have (its step class is not imported there): it hands
# such a job back once and never takes that task again, so a worker that has it does.
FETCH_JOBS_SKIPPING = FETCH_JOBS.replace(
    "procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s)",
    "baton_fetch_job_v1(%(queues)s::varchar[], %(worker_id)s, %(skip_tasks)s::varchar[])",
)


def _loose(text: str) -> str:
    """A pattern for `text` that allows any whitespace between its words."""
    return r"\s+".join(re.escape(word) for word in text.split())


_SKIP_FILTER = "\n                AND jobs.task_name <> ALL( skip_task_names )"


def skipping_fetch_function(fetch_job_v2: str) -> str:
    """baton_fetch_job_v1's CREATE statement, made from procrastinate_fetch_job_v2's (as
    sql_function_body() returns it): renamed, one argument more, one filter more. Raises
    LookupError when the upstream body no longer has the audited shape."""
    header = re.compile(
        _loose("CREATE FUNCTION procrastinate_fetch_job_v2( target_queue_names")
        + r"\s+character varying\[\],\s*p_worker_id\s+bigint\s*\)"
    )
    queue_filter = re.compile(
        _loose("AND (target_queue_names IS NULL OR jobs.queue_name = ANY( target_queue_names ))")
    )
    if len(header.findall(fetch_job_v2)) != 1 or len(queue_filter.findall(fetch_job_v2)) != 1:
        raise LookupError("procrastinate_fetch_job_v2 no longer has the audited shape")
    text = header.sub(
        "CREATE OR REPLACE FUNCTION baton_fetch_job_v1(\n"
        "    target_queue_names character varying[],\n"
        "    p_worker_id bigint,\n"
        "    skip_task_names character varying[]\n)",
        fetch_job_v2,
    )
    return queue_filter.sub(
        lambda match: match.group(0) + _SKIP_FILTER,
        text,
    )


# procrastinate_finish_job_v1(job_id, 'succeeded', delete_job=false), as a SET clause on
# procrastinate_jobs j: what a completion writes to end its own job in its own statement
# (advance._COMPLETE_SQL). The events row comes from Procrastinate's status trigger.
FINISH_SUCCEEDED = """status = 'succeeded', abort_requested = false,
           attempts = CASE j.status WHEN 'doing' THEN j.attempts + 1 ELSE j.attempts END"""

# procrastinate_defer_jobs_v1: the columns of the job row a completion inserts for each
# dependent it releases (ids drawn first from the table's sequence, so the step names
# its job). Lock and priority as Procrastinate's own defer writes them.
JOB_INSERT = "INSERT INTO procrastinate_jobs (id, queue_name, task_name, priority, lock, args)"
JOB_ID_SEQUENCE = "pg_get_serial_sequence('procrastinate_jobs', 'id')"

# procrastinate_cancel_job_v1(job_id, abort, delete_job): called by workflow.cancel().
CANCEL_JOB = "procrastinate_cancel_job_v1({job_id}, {abort}, false)"

# procrastinate_finish_job_v1(job_id, end_status, delete_job): called by the sweep to
# close a stale job (one whose step moved on before its worker died).
FINISH_JOB = "procrastinate_finish_job_v1(%s, %s::procrastinate_job_status, false)"

# The named query the sweep runs to find the jobs of dead workers.
STALLED_JOBS_QUERY = "select_stalled_jobs_by_heartbeat"

# Job statuses after which Procrastinate never runs a job again.
FINISHED_JOB_STATUSES = ("succeeded", "failed", "cancelled", "aborted")

# ---------------------------------------------------------------------------- audit
AUDITED: tuple[Borrowed, ...] = (
    Borrowed(
        "sql function",
        "procrastinate_fetch_job_v2",
        "940cf4b40856f53b",
        "FETCH_JOBS (called by advance.FETCH_AND_CLAIM_SQL); copied by "
        "skipping_fetch_function() into baton_fetch_job_v1 (migration 0006)",
    ),
    Borrowed(
        "sql function",
        "procrastinate_finish_job_v1",
        "8a52b16e74a56139",
        "FINISH_SUCCEEDED (mirrored in advance._COMPLETE_SQL), FINISH_JOB (the sweep)",
    ),
    Borrowed(
        "sql function",
        "procrastinate_defer_jobs_v1",
        "30a4d9c516cefc13",
        "JOB_INSERT (mirrored in advance._COMPLETE_SQL's jobs CTE)",
    ),
    Borrowed(
        "sql function",
        "procrastinate_cancel_job_v1",
        "92b7ec5e7db383fd",
        "CANCEL_JOB (control.cancel_workflow)",
    ),
    Borrowed(
        "sql function",
        "procrastinate_trigger_function_status_events_update_v1",
        "989b26b38a357d72",
        "FINISH_SUCCEEDED relies on it to write the job's succeeded event",
    ),
    Borrowed(
        "sql function",
        "procrastinate_notify_queue_job_inserted_v1",
        "87b8efea3ca44c65",
        "JOB_INSERT relies on it to wake workers on the released step's queue",
    ),
    Borrowed(
        "query",
        STALLED_JOBS_QUERY,
        "032b0d305071f9e6",
        "sweep._retry_stalled_jobs",
    ),
    *(
        Borrowed("worker method", name, digest_, f"worker.BatonWorker.{name}")
        for name, digest_ in (
            # Sets the private attributes BatonWorker uses: _new_job_event (replaced by a
            # sticky one), _job_ids_to_abort, listen_notify, update_heartbeat_interval.
            ("__init__", "0ea0525951f23efc"),
            ("run", "1c1f21ecb4175c88"),  # registers the worker, then the run loop
            ("_persist_job_status", "1b3e17bbc99ac420"),
            ("_start_side_tasks", "f596974576171bc3"),
            ("_periodic_deferrer", "cb9c3d546795ae1f"),
            ("_update_heartbeat", "807ef6f23838ed06"),
            # Replaced by _fetch_and_process_batches (several jobs per fetch), which
            # starts each job as it does: a JobContext, _process_job, _running_jobs, the
            # _job_semaphore released when the job is done.
            ("_fetch_and_process_jobs", "4de336a3f291be50"),
            ("_process_job", "a527609c1a85799a"),  # called for each fetched job
            ("_handle_notification", "cfe6457278bdb7b3"),
        )
    ),
    *(
        Borrowed("manager method", name, digest_, f"worker._ClaimingJobManager.{name}")
        for name, digest_ in (
            ("fetch_job", "bb65608952b5ac41"),
            ("register_worker", "02f6024228845ce6"),
        )
    ),
)


def upstream_text(item: Borrowed) -> str:
    """The installed Procrastinate's text of an audited item."""
    if item.kind == "sql function":
        schema = importlib.resources.files("procrastinate.sql").joinpath("schema.sql")
        return sql_function_body(schema.read_text(), item.name)
    if item.kind == "query":
        return str(sql.queries[item.name])
    owner = worker.Worker if item.kind == "worker method" else manager.JobManager
    return inspect.getsource(getattr(owner, item.name))


def drifted() -> list[tuple[Borrowed, str]]:
    """The audited items whose installed text differs, with their new digests."""
    changed = []
    for item in AUDITED:
        try:
            now = digest(upstream_text(item))
        except (LookupError, AttributeError, KeyError) as exc:
            now = f"missing ({type(exc).__name__}: {exc})"
        if now != item.digest:
            changed.append((item, now))
    return changed
