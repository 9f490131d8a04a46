"""Scale: big workflows and big tables, measured on one machine in one run.

    DATABASE_URL=postgres://user@host:port/anydb .venv/bin/python bench/scale.py
    DATABASE_URL=... .venv/bin/python bench/scale.py --smoke     # tiny sizes, seconds

Four measurements (issue 13, goal 5), each with its goal:

1. insert: insert() of a 100,000-step layered workflow (20 layers, each step after 3
   random steps of the layer before: 285,000 edges), median of --insert-repeat runs
   after a warm-up, into emptied tables. Goal: under 5 s.
2. run: layered workflows of the same shape with 1,000, 10,000 and 100,000 no-op steps
   run by one `manage.py baton worker --concurrency 4`, a fresh worker and emptied
   tables per run; per step: wall time (first step's start to last step's end), the
   worker process's CPU and the CPU of the PostgreSQL processes serving the bench
   database. Goal: flat, the largest size's cost per step within 1.3x of the smallest's.
3. fan-in: a 10,000 -> 1 fan-in run in-process (claim and finish as a worker does,
   baton.execution.advance), the statements of its last completion counted as
   tests/test_query_budget.py does, against a 10 -> 1 fan-in. Goal: the same count.
4. lists: 100,000 finished workflows (two steps each) in the tables, then the live
   index (baton/live) and the admin's workflow and step lists through Django's test
   client as a logged-in superuser: median of --requests requests, and the statements
   of one. Goal: under 100 ms each.

DATABASE_URL names a server and a database to connect to for administration; the run
creates its own database there (--bench-db, dropped at the end unless --keep). The
section is written into docs/benchmarks.md between the scale marker comments (the rest
of the file is left alone). A script, not a test: nothing asserts, except that every
workflow measured finished completed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    BATON,
    create_database,
    fmt,
    machine,
    process_cpu_seconds,
    reset_tables,
    running,
    setup_django,
    verdict,
    with_database,
)

START_MARKER = "<!-- scale:start -->"
END_MARKER = "<!-- scale:end -->"
PARTS = ("insert", "run", "fanin", "lists")
INSERT_GOAL_S = 5.0
FLAT_GOAL = 1.3  # largest size's cost per step over the smallest's
LIST_GOAL_MS = 100.0


# ------------------------------------------------------------------------------ set-up
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--bench-db", default="baton_bench_scale", help="dropped and recreated")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--polling-interval", type=float, default=1.0)
    parser.add_argument("--insert-steps", type=int, default=100_000)
    parser.add_argument("--insert-repeat", type=int, default=3, help="timed inserts")
    parser.add_argument("--layers", type=int, default=20, help="layers of the layered shape")
    parser.add_argument("--deps", type=int, default=3, help="deps of each step past layer 0")
    parser.add_argument("--sizes", default="1000,10000,100000", help="steps of the runs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each size (at most 100,000 steps' worth per size: 100,000 runs once)",
    )
    parser.add_argument("--join-width", type=int, default=10_000, help="the big fan-in")
    parser.add_argument("--workflows", type=int, default=100_000, help="for the lists")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per page")
    parser.add_argument("--only", default=",".join(PARTS), help="subset of: " + ", ".join(PARTS))
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round: checks the harness runs"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    if args.smoke:
        args.insert_steps, args.insert_repeat, args.sizes, args.rounds = 300, 1, "40,120", 1
        args.join_width, args.workflows, args.requests = 60, 300, 2
        args.no_write = True
    args.size_list = [int(size) for size in args.sizes.split(",") if size.strip()]
    args.only_set = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only_set - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    return args


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


# ---------------------------------------------------------------------------- shapes
def layered(name: str, steps: int, layers: int, deps: int, seed: int = 2) -> Any:
    """`layers` layers of about steps/layers no-op steps; each step past the first
    layer waits for `deps` random steps of the layer before (bench/insert.py's shape)."""
    import baton
    from bench.benchapp.tasks import Noop

    rng = random.Random(seed)
    builder = baton.new(name)
    layers = max(1, min(layers, steps))
    sizes = [steps // layers + (1 if index < steps % layers else 0) for index in range(layers)]
    previous: list[str] = []
    for layer, size in enumerate(sizes):
        current = [f"l{layer}s{index}" for index in range(size)]
        for step in current:
            upstream = rng.sample(previous, min(deps, len(previous))) if previous else []
            builder.add(step, Noop.new(), deps=upstream)
        previous = current
    return builder


def fan_in(width: int) -> Any:
    import baton
    from bench.benchapp.tasks import Noop

    return (
        baton.new(f"fan-in-{width}")
        .add_many("parts", [Noop.new() for _ in range(width)])
        .add("join", Noop.new(), deps=["parts"])
    )


def edge_count(builder: Any) -> int:
    return sum(len(upstream) for upstream in builder.edges().values())


# ------------------------------------------------------------------------- CPU time
def own_backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


class DatabaseCpu:
    """CPU seconds of the PostgreSQL processes serving one database (its backends and
    autovacuum workers), sampled every `interval` s in a thread of its own: a process
    that starts during the window counts from zero, one that ends counts until its last
    sample. The server's shared processes (WAL writer, checkpointer) are left out: the
    server may serve other databases at the same time. None when the server's
    processes are not visible (a remote server)."""

    def __init__(self, url: str, database: str, interval: float = 0.25) -> None:
        self.url, self.database, self.interval = url, database, interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._seen = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, conn: Any, initial: bool) -> None:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [self.database],
        ).fetchall()
        for (pid,) in rows:
            seconds = process_cpu_seconds(int(pid))
            if seconds is None:
                continue
            self._seen = True
            self._first.setdefault(pid, seconds if initial else 0.0)
            self._last[pid] = seconds

    def start(self) -> None:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True)
        self._sample(conn, initial=True)

        def loop() -> None:
            with conn:
                while not self._stop.wait(self.interval):
                    self._sample(conn, initial=False)
                self._sample(conn, initial=False)

        self._thread = threading.Thread(target=loop, name="scale-db-cpu", daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._seen:
            return None
        return sum(self._last[pid] - self._first[pid] for pid in self._last)


# ---------------------------------------------------------------------------- insert
def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE baton_workflow, baton_step, baton_stepdependency, baton_stepresult, "
            "procrastinate_jobs, procrastinate_events CASCADE"
        )


def measure_insert(args: argparse.Namespace) -> dict[str, Any]:
    from baton.models import WorkflowStep

    builder = layered("scale-insert", args.insert_steps, args.layers, args.deps)
    validate = []
    for _ in range(max(1, args.insert_repeat)):
        started = time.perf_counter()
        builder.validate()
        validate.append(time.perf_counter() - started)
    backend = own_backend_pid()
    runs = []
    for index in range(args.insert_repeat + 1):  # the first is a warm-up
        empty_tables()
        db_before, cpu_before = process_cpu_seconds(backend), time.process_time()
        started = time.perf_counter()
        builder.insert()
        wall = time.perf_counter() - started
        cpu, db_after = time.process_time() - cpu_before, process_cpu_seconds(backend)
        db = None if db_before is None or db_after is None else db_after - db_before
        assert WorkflowStep.objects.count() == args.insert_steps
        if index:
            runs.append({"wall": wall, "client_cpu": cpu, "db_cpu": db})
        print(f"insert {index or 'warm-up'}: {wall:.2f} s", flush=True)
    empty_tables()
    return {
        "steps": args.insert_steps,
        "layers": args.layers,
        "edges": edge_count(builder),
        "roots": sum(1 for upstream in builder.edges().values() if not upstream),
        "walls": [run["wall"] for run in runs],
        "median": statistics.median(run["wall"] for run in runs),
        "client_cpu": statistics.median(run["client_cpu"] for run in runs),
        "db_cpu": median_or_none([run["db_cpu"] for run in runs]),
        "validate": statistics.median(validate),
    }


def median_or_none(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


# ------------------------------------------------------------------------------- run
def wait_finished(workflow: Any, timeout: float, worker: Any) -> Any:
    from baton.models import Workflow

    deadline = time.monotonic() + timeout
    while True:
        current = Workflow.objects.get(pk=workflow.pk)
        if current.is_finished:
            return current
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{current.name}: {current.unfinished_steps} steps unfinished after "
                f"{timeout:.0f} s:\n{worker.log_tail()}"
            )
        time.sleep(0.2)


def makespan(workflow: Any) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM baton_step "
            "WHERE workflow_id = %s",
            [workflow.pk],
        )
        return float(cursor.fetchone()[0])


def measure_run(args: argparse.Namespace, steps: int) -> dict[str, Any]:
    builder = layered(f"scale-run-{steps}", steps, args.layers, args.deps, seed=steps)
    edges = edge_count(builder)
    with running(BATON, args) as worker:
        assert worker.process is not None
        workflow = builder.insert()
        db_cpu = DatabaseCpu(with_database(args.database_url, args.bench_db), args.bench_db)
        worker_before = process_cpu_seconds(worker.process.pid)
        db_cpu.start()
        try:
            done = wait_finished(workflow, timeout=120 + steps / 20, worker=worker)
        finally:
            db_seconds = db_cpu.stop()
        worker_after = process_cpu_seconds(worker.process.pid)
    if done.state != "completed":
        raise RuntimeError(f"{done.name} ended {done.state}: {done.reason or done.failed_steps}")
    wall = makespan(done)
    sample: dict[str, Any] = {
        "steps": steps,
        "edges": edges,
        "wall": wall,
        "wall_ms": wall * 1000 / steps,
        "steps_per_s": steps / wall,
        "worker_cpu_ms": None,
        "db_cpu_ms": None,
    }
    if worker_before is not None and worker_after is not None:
        sample["worker_cpu_ms"] = (worker_after - worker_before) * 1000 / steps
    if db_seconds is not None:
        sample["db_cpu_ms"] = db_seconds * 1000 / steps
    print(
        f"run {steps:,}: {wall:.1f} s, {sample['wall_ms']:.2f} ms/step wall, worker "
        f"{fmt(sample['worker_cpu_ms'], 2)}, PostgreSQL {fmt(sample['db_cpu_ms'], 2)} "
        "ms/step CPU",
        flush=True,
    )
    return sample


def summarise_runs(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(samples[0])
    out["rounds"] = len(samples)
    for key in ("wall", "wall_ms", "steps_per_s", "worker_cpu_ms", "db_cpu_ms"):
        out[key] = median_or_none([sample[key] for sample in samples])
    return out


# ---------------------------------------------------------------------------- fan-in
def run_in_process(workflow: Any, name: str) -> tuple[int, int, float]:
    """Claim and finish one step as a worker does: (claim statements, finish
    statements, finish seconds)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from baton.execution import advance
    from baton.models import WorkflowStep

    step = WorkflowStep.objects.only("id", "job_id").get(workflow=workflow, name=name)
    with CaptureQueriesContext(connection) as claim_queries:
        claimed = advance.claim(step.id, step.job_id)
    assert claimed is not None, f"{name} could not be claimed"
    with CaptureQueriesContext(connection) as finish_queries:
        started = time.perf_counter()
        assert advance.finish(claimed, advance.Completed(value_json=None))
        seconds = time.perf_counter() - started
    return len(claim_queries), len(finish_queries), seconds


def measure_fanin(args: argparse.Namespace) -> list[dict[str, Any]]:
    from django.db import connection

    from baton.execution import advance
    from baton.models import WorkflowStep

    reset_tables()
    results = []
    for width in (10, args.join_width):
        workflow = fan_in(width).insert()
        ids = list(
            WorkflowStep.objects.filter(workflow=workflow, group="parts")
            .order_by("id")
            .values_list("id", "job_id")
        )
        started = time.perf_counter()
        for step_id, job_id in ids[:-2]:
            claimed = advance.claim(step_id, job_id)
            assert claimed is not None
            assert advance.finish(claimed, advance.Completed(value_json=None))
        connection.queries_log.clear()
        before = run_in_process(workflow, f"parts[{width - 2}]")
        last = run_in_process(workflow, f"parts[{width - 1}]")
        join = WorkflowStep.objects.get(workflow=workflow, name="join")
        assert join.state == "available" and join.job_id is not None, join.state
        results.append(
            {
                "width": width,
                "not_last": before[:2],
                "last": last[:2],
                "last_ms": last[2] * 1000,
                "not_last_ms": before[2] * 1000,
                "others_s": time.perf_counter() - started,
            }
        )
        print(
            f"fan-in {width} -> 1: last completion {last[0]} + {last[1]} statements, "
            f"{last[2] * 1000:.1f} ms",
            flush=True,
        )
    return results


# ----------------------------------------------------------------------------- lists
KINDS = 40  # workflow names repeated (a name is usually a kind of workflow)


def fill_finished_workflows(count: int) -> None:
    """`count` finished workflows of two steps (a -> b) each: 80% completed, 15% failed
    (b discarded), 5% cancelled (b cancelled), one every 30 s back from now; nine in
    ten named after one of KINDS kinds, the rest one-off names. Then VACUUM ANALYZE, as
    autovacuum does after a load this size."""
    from django.db import connection

    reset_tables()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO baton_workflow (id, name, state, ignore_cancelled, ignore_discarded,
                debug, step_count, unfinished_steps, failed_steps, reason, unpriced_calls,
                created_at, finished_at)
            SELECT gen_random_uuid(),
                   CASE WHEN n %% 10 = 0 THEN 'adhoc-' || n ELSE 'kind-' || (n %% %s) END,
                   CASE WHEN n %% 20 < 16 THEN 'completed' WHEN n %% 20 < 19 THEN 'failed'
                        ELSE 'cancelled' END,
                   false, false, false, 2, 0,
                   CASE WHEN n %% 20 < 16 THEN '[]'::jsonb ELSE '["b"]'::jsonb END,
                   '', 0, now() - make_interval(secs => n * 30),
                   now() - make_interval(secs => n * 30 - 1 - n %% 7)
              FROM generate_series(1, %s) AS n
            """,
            [KINDS, count],
        )
        cursor.execute(
            """
            INSERT INTO baton_step (workflow_id, name, task_name, args, state, queue,
                priority, max_attempts, ignore_cancelled, ignore_discarded, deps_total,
                deps_pending, attempt, snoozes, version, reason, last_error, traceback,
                unpriced_calls, started_at, finished_at)
            SELECT w.id, s.name, 'bench.benchapp.tasks.Noop', '{}'::jsonb,
                   CASE WHEN s.name = 'a' OR w.state = 'completed' THEN 'completed'
                        WHEN w.state = 'failed' THEN 'discarded' ELSE 'cancelled' END,
                   'default', 0, 1, false, false, s.deps, 0, 1, 0, 3, '', '', '', 0,
                   w.created_at, w.finished_at
              FROM baton_workflow w CROSS JOIN (VALUES ('a', 0), ('b', 1)) AS s(name, deps)
             ORDER BY w.created_at, s.name
            """
        )
        cursor.execute(
            """
            INSERT INTO baton_stepdependency (workflow_id, upstream_id, downstream_id)
            SELECT a.workflow_id, a.id, b.id FROM baton_step a
              JOIN baton_step b ON b.workflow_id = a.workflow_id AND b.name = 'b'
             WHERE a.name = 'a'
            """
        )
        for table in ("baton_workflow", "baton_step", "baton_stepdependency"):
            cursor.execute(f"VACUUM ANALYZE {table}")


PAGES = (
    ("live index", "baton:workflows"),
    ("admin workflow list", "admin:baton_workflow_changelist"),
    ("admin step list", "admin:baton_workflowstep_changelist"),
)


def measure_lists(args: argparse.Namespace) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from baton.models import Workflow, WorkflowStep

    started = time.perf_counter()
    fill_finished_workflows(args.workflows)
    filled = time.perf_counter() - started
    user = User.objects.create_superuser("scale-admin", "scale@example.com", "not-a-secret")
    client = Client()
    client.force_login(user)
    pages = []
    for label, name in PAGES:
        url = reverse(name)
        for _ in range(2):  # warm-up: templates, content types, the session
            assert client.get(url).status_code == 200
        walls, statements, sql_ms = [], [], []
        for _ in range(args.requests):
            with CaptureQueriesContext(connection) as queries:
                began = time.perf_counter()
                response = client.get(url)
                walls.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (url, response.status_code)
            statements.append(len(queries))
            sql_ms.append(sum(float(query["time"]) for query in queries) * 1000)
        pages.append(
            {
                "page": label,
                "url": url,
                "median": statistics.median(walls),
                "min": min(walls),
                "max": max(walls),
                "statements": max(statements),
                "sql_ms": statistics.median(sql_ms),
            }
        )
        print(f"{label}: median {statistics.median(walls):.0f} ms", flush=True)
    return {
        "workflows": Workflow.objects.count(),
        "steps": WorkflowStep.objects.count(),
        "fill_s": filled,
        "pages": pages,
    }


# ---------------------------------------------------------------------------- report
def ratio(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    if len(present) < 2 or min(present) <= 0:
        return None
    return max(present) / min(present)


def goals_table(data: dict[str, Any]) -> list[str]:
    lines = ["| goal | measured | met |", "|---|---|---|"]
    insert = data.get("insert")
    if insert:
        lines.append(
            f"| a {insert['steps']:,}-step workflow inserts in under {INSERT_GOAL_S:.0f} s "
            f"| median {insert['median']:.2f} s of {len(insert['walls'])} "
            f"({', '.join(f'{wall:.2f}' for wall in insert['walls'])} s) "
            f"| {verdict(insert['median'] < INSERT_GOAL_S)} |"
        )
    runs = data.get("run")
    if runs:
        sizes = ", ".join(f"{run['steps']:,}" for run in runs)
        for key, what in (
            ("wall_ms", "wall time"),
            ("worker_cpu_ms", "worker CPU"),
            ("db_cpu_ms", "PostgreSQL CPU"),
        ):
            values = [run[key] for run in runs]
            spread = ratio(values)
            cells = " / ".join(fmt(value, 2) for value in values)
            lines.append(
                f"| {what} per step flat from {runs[0]['steps']:,} to {runs[-1]['steps']:,} "
                f"steps (largest / smallest <= {FLAT_GOAL}x) | {cells} ms at {sizes} steps "
                f"({fmt(spread, 2)}x) | "
                f"{'n/a' if spread is None else verdict(spread <= FLAT_GOAL)} |"
            )
    fanin = data.get("fanin")
    if fanin:
        small, big = fanin[0], fanin[-1]
        lines.append(
            f"| a {big['width']:,} -> 1 fan-in's last completion costs O(1) statements "
            f"| claim {big['last'][0]} + finish {big['last'][1]} "
            f"(a {small['width']} -> 1 fan-in: {small['last'][0]} + {small['last'][1]}) "
            f"| {verdict(big['last'] == small['last'])} |"
        )
    lists = data.get("lists")
    if lists:
        for page in lists["pages"]:
            lines.append(
                f"| {page['page']} under {LIST_GOAL_MS:.0f} ms with "
                f"{lists['workflows']:,} finished workflows | median {page['median']:.0f} ms, "
                f"{page['statements']} statements | {verdict(page['median'] < LIST_GOAL_MS)} |"
            )
    return lines


def insert_table(insert: dict[str, Any]) -> list[str]:
    return [
        "| steps | layers | edges | root jobs | median | runs | steps/s | client CPU "
        "| PostgreSQL CPU (its backend) | validation alone |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        f"| {insert['steps']:,} | {insert['layers']} | {insert['edges']:,} "
        f"| {insert['roots']:,} | {insert['median']:.2f} s "
        f"| {', '.join(f'{wall:.2f}' for wall in insert['walls'])} s "
        f"| {insert['steps'] / insert['median']:,.0f} | {insert['client_cpu']:.2f} s "
        f"| {fmt(insert['db_cpu'], 2)} s | {insert['validate']:.2f} s |",
    ]


def run_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| steps | edges | runs | wall (s) | steps/s | wall per step (ms) "
        "| worker CPU per step (ms) | PostgreSQL CPU per step (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['steps']:,} | {run['edges']:,} | {run['rounds']} | {run['wall']:.1f} "
            f"| {run['steps_per_s']:,.0f} | {run['wall_ms']:.2f} "
            f"| {fmt(run['worker_cpu_ms'], 2)} | {fmt(run['db_cpu_ms'], 2)} |"
        )
    return lines


def fanin_table(fanin: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| fan-in | last completion: claim + finish statements | its finish (ms) "
        "| the one before it: claim + finish | its finish (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in fanin:
        lines.append(
            f"| {row['width']:,} -> 1 | {row['last'][0]} + {row['last'][1]} "
            f"| {row['last_ms']:.1f} | {row['not_last'][0]} + {row['not_last'][1]} "
            f"| {row['not_last_ms']:.1f} |"
        )
    return lines


def lists_table(lists: dict[str, Any], requests: int) -> list[str]:
    lines = [
        f"With {lists['workflows']:,} finished workflows and {lists['steps']:,} steps "
        f"(loaded in {lists['fill_s']:.1f} s), {requests} requests per page after two "
        "warm-ups:",
        "",
        "| page | median (ms) | min | max | statements | SQL of a request (ms, median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for page in lists["pages"]:
        lines.append(
            f"| {page['page']} (`{page['url']}`) | {page['median']:.0f} | {page['min']:.0f} "
            f"| {page['max']:.0f} | {page['statements']} | {page['sql_ms']:.1f} |"
        )
    return lines


METHOD = """\
Method. One process (this script) inserts and times; one `manage.py baton worker
--concurrency {concurrency} --polling-interval {polling}` runs the workflows, a fresh
worker on emptied tables per run, with `bench/settings.py` (persistent connections).
*Insert*: `builder.insert()` of the whole workflow, validation included, into emptied
tables, after a warm-up insert; client CPU is this process's, PostgreSQL CPU that of
its backend. *Run*: the layered shape at each size (seeded); {rounds_note}. Wall time is
the first step's `started_at` to the last step's `finished_at`; worker CPU is the worker
process's user + system time over the run; PostgreSQL CPU is that of the server's
processes serving the bench database (its backends and autovacuum workers, sampled
every 0.25 s; the shared WAL writer and checkpointer are left out, as the server may
serve other databases meanwhile). *Fan-in*: `parts[0..N-1] -> join` run in this
process with `baton.execution.advance.claim` / `finish` (what the task wrapper does),
the statements of the last part's claim and finish counted on Django's connection with
`CaptureQueriesContext`, as `tests/test_query_budget.py` does. *Lists*: the workflows,
steps and edges written by SQL, then `VACUUM ANALYZE` (what autovacuum does after such
a load); Django's test `Client` logged in as a superuser, wall time of `client.get()`.
The machine's other load moves wall times by tens of percent: read the CPU columns too.
"""


def render(args: argparse.Namespace, data: dict[str, Any], info: str, elapsed: float) -> str:
    lines = [
        START_MARKER,
        "## Scale: big workflows, big tables",
        "",
        f"Measured {datetime.date.today().isoformat()} on {info}; load average "
        f"{data['load'][0]} at the start, {data['load'][1]} at the end. Whole run: "
        f"{elapsed:.0f} s. Regenerate with `DATABASE_URL=postgres://... "
        ".venv/bin/python bench/scale.py` (`--smoke` for a seconds-long check).",
        "",
        *goals_table(data),
        "",
    ]
    if data.get("insert"):
        lines += ["Insert of one layered workflow:", "", *insert_table(data["insert"]), ""]
    if data.get("run"):
        lines += [
            f"Layered workflows of no-op steps ({args.layers} layers, each step after "
            f"{args.deps} random steps of the layer before) on one worker:",
            "",
            *run_table(data["run"]),
            "",
        ]
    if data.get("fanin"):
        lines += ["Fan-in, in-process:", "", *fanin_table(data["fanin"]), ""]
    if data.get("lists"):
        lines += [*lists_table(data["lists"], args.requests), ""]
    lines += [
        METHOD.format(
            concurrency=args.concurrency,
            polling=args.polling_interval,
            rounds_note=(
                f"each size runs up to {args.rounds} times, as many as fit in 100,000 "
                "steps, and the table shows the median"
            ),
        ),
        END_MARKER,
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> str:
    text = path.read_text() if path.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        path.write_text(text[:start] + section + text[end + len(END_MARKER) :])
        return "replaced the scale section in"
    path.write_text(text.rstrip("\n") + ("\n\n" if text else "") + section + "\n")
    return "appended the scale section to"


# ------------------------------------------------------------------------------ main
@contextlib.contextmanager
def bench_database(args: argparse.Namespace) -> Iterator[None]:
    create_database(args.database_url, args.bench_db)
    try:
        yield
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(args.database_url, args.bench_db)


def rounds_for(args: argparse.Namespace, steps: int) -> int:
    return max(1, min(args.rounds, 100_000 // max(steps, 1)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ["BENCH_ADMIN"] = "1"  # bench/settings.py: the admin and the live pages
    began = time.monotonic()
    data: dict[str, Any] = {"load": [load_average()]}
    with bench_database(args):
        setup_django(with_database(args.database_url, args.bench_db))
        info = machine()
        print(f"# {info}", flush=True)
        steps_of: dict[str, Callable[[], Any]] = {
            "insert": lambda: measure_insert(args),
            "run": lambda: [
                summarise_runs([measure_run(args, steps) for _ in range(rounds_for(args, steps))])
                for steps in args.size_list
            ],
            "fanin": lambda: measure_fanin(args),
            "lists": lambda: measure_lists(args),
        }
        for part in PARTS:
            if part in args.only_set:
                started = time.monotonic()
                data[part] = steps_of[part]()
                print(f"{part}: {time.monotonic() - started:.1f} s", flush=True)
        data["load"].append(load_average())
    section = render(args, data, info, time.monotonic() - began)
    print()
    print(section)
    if not args.no_write:
        print(f"\n{write_section(args.output, section)} {args.output}")
    return data


if __name__ == "__main__":
    main()
