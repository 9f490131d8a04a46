"""baton against raw Procrastinate on the same worker settings, in one run.

    DATABASE_URL=postgres://user@host:port/anydb .venv/bin/python bench/compare.py

DATABASE_URL names a server and a database to connect to for administration; the run
drops and creates its own database there (--bench-db, default baton_bench), migrates it,
and runs every measurement with real worker processes at the same concurrency and
polling interval:

1. throughput on a fan-out (root -> N no-op members -> join);
2. hand-off latency on a chain (start of link n+1 minus end of link n);
3. makespan of each graph in ../shared/dags against a zero-overhead schedule;
4. how late a snoozed step runs after its due time.

Raw Procrastinate runs with its stock worker (`manage.py procrastinate worker`) and with
baton's worker (`manage.py baton worker`), which separates the worker's wake-up fix from
baton's own per-step overhead. The markdown table is printed and written to
docs/benchmarks.md (--output). This is a script, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import heapq
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DAGS = ROOT.parent / "shared" / "dags"

STOCK = "raw Procrastinate, stock worker"
RAW_BATON_WORKER = "raw Procrastinate, BatonWorker"
BATON = "baton"
SYSTEMS = (STOCK, RAW_BATON_WORKER, BATON)


# ------------------------------------------------------------------------------ set-up
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--bench-db", default="baton_bench", help="dropped and recreated")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--polling-interval",
        type=float,
        default=1.0,
        help="seconds, for every worker (baton's default; Procrastinate's own is 5)",
    )
    parser.add_argument("--fanout", type=int, default=2000, help="fan-out width")
    parser.add_argument("--chain", type=int, default=200, help="chain length")
    parser.add_argument("--dags", type=Path, default=DEFAULT_DAGS, help="folder of graphs")
    parser.add_argument(
        "--dag-scale", type=float, default=0.001, help="step sleep = runtime_s * scale"
    )
    parser.add_argument("--snoozes", type=int, default=20, help="steps that snooze once")
    parser.add_argument("--snooze-seconds", type=float, default=0.5)
    parser.add_argument(
        "--rounds", type=int, default=5, help="repeats of fan-out, chain and snooze"
    )
    parser.add_argument(
        "--only",
        default="fanout,chain,dags,snooze",
        help="comma-separated subset of: fanout, chain, dags, snooze",
    )
    parser.add_argument(
        "--prepared",
        action="store_true",
        help="every process uses server-side binding with psycopg's prepared statements "
        "(OPTIONS server_side_binding + prepare_threshold=2)",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    return args


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def create_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def reset_tables() -> None:
    """Empty Procrastinate's, baton's and the bench's tables (no worker may be running)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers, "
            "procrastinate_workers, baton_workflow, benchapp_timing, benchapp_counter CASCADE"
        )


# ----------------------------------------------------------------------------- workers
class WorkerProcess:
    """A worker subprocess on the bench database: `baton worker` or `procrastinate worker`."""

    def __init__(self, kind: str, concurrency: int, polling_interval: float) -> None:
        self.kind = kind
        if kind == "baton":
            self.args = ["baton", "worker", "--polling-interval", str(polling_interval)]
        else:
            self.args = [
                "procrastinate",
                "worker",
                "--fetch-job-polling-interval",
                str(polling_interval),
            ]
        self.args += ["--concurrency", str(concurrency)]
        self.process: subprocess.Popen[bytes] | None = None
        fd, path = tempfile.mkstemp(prefix=f"bench-{kind}-", suffix=".log")
        os.close(fd)
        self.log = Path(path)

    def start(self, timeout: float = 30.0) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        before = _latest_worker_id()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "django", *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while _latest_worker_id() <= before:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} worker did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------------- CPU time
# Wall-clock throughput on a shared 2-core machine is noisy; the CPU seconds each job
# costs the worker process and PostgreSQL are steadier, and say where the time goes.
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (its reaped children included)."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICKS


def postgres_cpu_seconds() -> float | None:
    """CPU of every local `postgres` process, plus what exited backends left in their
    parent's reaped-children counters; None when the server's processes are not visible
    (a remote database)."""
    total, seen = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
        except OSError:
            continue
        # The postmaster's reaped-children counters hold the exited backends.
        seconds = process_cpu_seconds(int(entry.name))
        if seconds is not None:
            total, seen = total + seconds, True
    return total if seen else None


def _latest_worker_id() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


@contextlib.contextmanager
def running(system: str, args: argparse.Namespace) -> Iterator[WorkerProcess]:
    reset_tables()
    worker = WorkerProcess(
        "stock" if system == STOCK else "baton", args.concurrency, args.polling_interval
    )
    worker.start()
    try:
        yield worker
    except BaseException:
        worker.stop()
        print(f"worker log kept: {worker.log}", file=sys.stderr)
        raise
    worker.stop()
    worker.log.unlink(missing_ok=True)


def wait_until(done: Callable[[], bool], timeout: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish in {timeout}s:\n{worker.log_tail()}")
        time.sleep(0.1)


def timings(run: str) -> list[Any]:
    from bench.benchapp.models import Timing

    return list(Timing.objects.filter(run=run).order_by("seq", "id"))


def new_run(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------- measurements
def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (p in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * p / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def defer_raw(task_name: str, kwargs_list: Sequence[dict[str, Any]]) -> None:
    from bench.benchapp.tasks import defer

    defer(task_name, kwargs_list)


def measure_fanout(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Jobs per second from the root's start to the join's end."""
    import baton
    from bench.benchapp.models import Counter
    from bench.benchapp.tasks import Mark, Noop

    width = args.fanout
    run = new_run("fanout")
    with running(system, args) as worker:
        assert worker.process is not None
        worker_cpu = process_cpu_seconds(worker.process.pid)
        db_cpu = postgres_cpu_seconds()
        if system == BATON:
            (
                baton.new(run)
                .add("root", Mark.new(run=run))
                .add_many("fan", [Noop.new() for _ in range(width)], deps=["root"])
                .add("join", Mark.new(run=run), deps=["fan"])
                .insert()
            )
        else:
            Counter.objects.create(run=run, value=0)
            defer_raw("bench.raw_root", [{"run": run, "width": width}])
        wait_until(
            lambda: {t.name for t in timings(run)} >= {"root", "join"},
            timeout=max(120.0, width / 10),
            what=f"fan-out ({system})",
            worker=worker,
        )
        worker_cpu_end = process_cpu_seconds(worker.process.pid)
        db_cpu_end = postgres_cpu_seconds()
    rows = {t.name: t for t in timings(run)}
    elapsed = rows["join"].finished - rows["root"].started
    member_task = Noop.task_name if system == BATON else "bench.raw_member"
    members, span = member_span(member_task)
    sample = {
        "jobs_per_s": (width + 2) / elapsed,
        "members_per_s": members / span,
        "seconds": elapsed,
    }
    if worker_cpu is not None and worker_cpu_end is not None:
        sample["worker_cpu_ms"] = (worker_cpu_end - worker_cpu) * 1000 / (width + 2)
    if db_cpu is not None and db_cpu_end is not None:
        sample["db_cpu_ms"] = (db_cpu_end - db_cpu) * 1000 / (width + 2)
    return sample


def member_span(task_name: str) -> tuple[int, float]:
    """From Procrastinate's own events: how many jobs of a task ran, and the seconds from
    the first one's start to the last one's success (the steady state of a fan-out,
    without the wake-ups before and after it)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(DISTINCT j.id),
                   extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')
                                    - min(e.at) FILTER (WHERE e.type = 'started'))
              FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
             WHERE j.task_name = %s
            """,
            [task_name],
        )
        count, span = cursor.fetchone()
    return int(count), float(span)


def measure_chain(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Hand-off = start of link n+1 - end of link n, over the whole chain."""
    import baton
    from bench.benchapp.tasks import Mark

    length = args.chain
    run = new_run("chain")
    with running(system, args) as worker:
        if system == BATON:
            builder = baton.new(run)
            for seq in range(length):
                deps = [f"c{seq - 1}"] if seq else []
                builder.add(f"c{seq}", Mark.new(run=run, seq=seq), deps=deps)
            builder.insert()
        else:
            defer_raw("bench.raw_chain", [{"run": run, "seq": 0, "total": length}])
        wait_until(
            lambda: len(timings(run)) >= length,
            timeout=max(180.0, length * 0.5),
            what=f"chain ({system})",
            worker=worker,
        )
    rows = timings(run)
    hops = [(b.started - a.finished) * 1000 for a, b in itertools.pairwise(rows)]
    return {"hops_ms": hops, "seconds": rows[-1].finished - rows[0].started}


def measure_snooze(system: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds between a snoozed job's scheduled_at and the start of its next run."""
    import baton
    from bench.benchapp.tasks import SnoozeOnce

    count, seconds = args.snoozes, args.snooze_seconds
    run = new_run("snooze")
    with running(system, args) as worker:
        if system == BATON:
            builder = baton.new(run)
            for index in range(count):
                builder.add(f"s{index}", SnoozeOnce.new(run=run, seconds=seconds))
            builder.insert()
        else:
            defer_raw("bench.raw_snooze", [{"run": run, "seconds": seconds}] * count)
        wait_until(
            lambda: len(timings(run)) >= count,
            timeout=60.0 + seconds * 2,
            what=f"snoozes ({system})",
            worker=worker,
        )
    return {"late_ms": [t.late * 1000 for t in timings(run)]}


# Rounds are combined: chain hops and snooze delays are pooled, fan-out rates take the median.
def summarise(section: str, samples: list[dict[str, Any]]) -> dict[str, float]:
    if section == "chain":
        hops = [hop for sample in samples for hop in sample["hops_ms"]]
        return {
            "p50": percentile(hops, 50),
            "p95": percentile(hops, 95),
            "p99": percentile(hops, 99),
            "max": max(hops),
            "over_1s": sum(1 for hop in hops if hop > 1000),
            "seconds": statistics.median(sample["seconds"] for sample in samples),
        }
    if section == "snooze":
        late = [value for sample in samples for value in sample["late_ms"]]
        return {"p50": percentile(late, 50), "max": max(late)}
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def paired_ratios(by_system: dict[str, list[dict[str, Any]]], key: str) -> dict[str, float]:
    """Median over rounds of baton's value / each raw system's value in the same round."""
    ours = [sample[key] for sample in by_system[BATON]]
    return {
        system: statistics.median(
            a / sample[key] for a, sample in zip(ours, by_system[system], strict=True)
        )
        for system in (STOCK, RAW_BATON_WORKER)
        if system in by_system
    }


def brief(sample: dict[str, Any]) -> str:
    parts = []
    for key, value in sample.items():
        if isinstance(value, list):
            parts.append(f"{key}: p50={percentile(value, 50):.1f} max={max(value):.1f}")
        else:
            parts.append(f"{key}={value:.2f}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- graphs
@dataclass
class Graph:
    name: str
    durations: dict[str, float]
    deps: dict[str, list[str]]
    order: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, scale: float) -> Graph:
        data = json.loads(path.read_text())
        graph = cls(name=data.get("name", path.stem), durations={}, deps={})
        for task in data["tasks"]:
            graph.durations[task["id"]] = task["runtime_s"] * scale
            graph.deps[task["id"]] = list(task["deps"])
            graph.order.append(task["id"])
        return graph

    def children(self) -> dict[str, list[str]]:
        children: dict[str, list[str]] = {task: [] for task in self.order}
        for task in self.order:
            for dep in self.deps[task]:
                children[dep].append(task)
        return children

    def critical_path(self) -> float:
        finish: dict[str, float] = {}

        def end(task: str) -> float:
            if task not in finish:
                start = max((end(dep) for dep in self.deps[task]), default=0.0)
                finish[task] = start + self.durations[task]
            return finish[task]

        sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
        return max(end(task) for task in self.order)

    def lower_bound(self, workers: int) -> float:
        return max(self.critical_path(), sum(self.durations.values()) / workers)

    def greedy_makespan(self, workers: int) -> float:
        """Zero-overhead list schedule: a free worker takes the ready task that became
        ready first (ties in file order), as a FIFO job queue does."""
        index = {task: position for position, task in enumerate(self.order)}
        pending = {task: len(self.deps[task]) for task in self.order}
        children = self.children()
        ready = [(0.0, index[t], t) for t in self.order if pending[t] == 0]
        heapq.heapify(ready)
        running_tasks: list[tuple[float, str]] = []
        now, free, makespan = 0.0, workers, 0.0
        while ready or running_tasks:
            while free and ready:
                _, _, task = heapq.heappop(ready)
                heapq.heappush(running_tasks, (now + self.durations[task], task))
                free -= 1
            now, task = heapq.heappop(running_tasks)
            finished = [task]
            while running_tasks and running_tasks[0][0] == now:
                finished.append(heapq.heappop(running_tasks)[1])
            for done in finished:
                free += 1
                makespan = max(makespan, now)
                for child in children[done]:
                    pending[child] -= 1
                    if pending[child] == 0:
                        heapq.heappush(ready, (now, index[child], child))
        return makespan


def measure_dags(args: argparse.Namespace) -> list[dict[str, Any]] | str:
    import baton
    from baton.testing import wait_for_workflow
    from bench.benchapp.tasks import Mark

    paths = sorted(args.dags.glob("*.json")) if args.dags.is_dir() else []
    if not paths:
        return f"skipped: no graphs in {args.dags} (pass --dags DIR)"
    results = []
    with running(BATON, args) as worker:
        for path in paths:
            graph = Graph.load(path, args.dag_scale)
            run = new_run("dag")
            builder = baton.new(run)
            for task in graph.order:
                builder.add(
                    task, Mark.new(run=run, sleep=graph.durations[task]), deps=graph.deps[task]
                )
            workflow = builder.insert()
            try:
                workflow = wait_for_workflow(workflow, timeout=300)
            except AssertionError as exc:
                raise TimeoutError(f"{exc}\n{worker.log_tail()}") from exc
            rows = {t.name: t for t in timings(run)}
            in_order = len(rows) == len(graph.order) and all(
                rows[task].started >= rows[dep].finished
                for task in graph.order
                for dep in graph.deps[task]
            )
            makespan = max(t.finished for t in rows.values()) - min(
                t.started for t in rows.values()
            )
            greedy = graph.greedy_makespan(args.concurrency)
            results.append(
                {
                    "graph": path.stem,
                    "tasks": len(graph.order),
                    "state": workflow.state,
                    "in_order": in_order,
                    "critical_path": graph.critical_path(),
                    "lower_bound": graph.lower_bound(args.concurrency),
                    "greedy": greedy,
                    "makespan": makespan,
                }
            )
    return results


# ---------------------------------------------------------------------------- report
def machine() -> str:
    from django.db import connection

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        row = cursor.fetchone()
        # The settings that change a commit's cost, which Redis-backed peers do not pay.
        durability = []
        for name in ("synchronous_commit", "fsync"):
            cursor.execute(f"SHOW {name}")
            durability.append(f"{name} {cursor.fetchone()[0]}")
    pg = f"{row[0] if row else '?'} ({', '.join(durability)})"
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} CPU cores ({cpu}), PostgreSQL {pg} on the same machine, "
        f"Python {platform.python_version()}, Django {version('django')}, "
        f"Procrastinate {version('procrastinate')}, {platform.system()} {platform.release()}"
    )


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main_table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = [
        f"| measurement | {STOCK} | {RAW_BATON_WORKER} | baton | baton vs stock "
        "| baton vs raw on BatonWorker | goal | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]

    def row(
        label: str,
        section: str,
        key: str,
        compare: Callable[[float, float], str],
        goal: str,
        met: Callable[[dict[str, float], dict[str, float]], bool] | None,
        digits: int = 1,
    ) -> None:
        data = results.get(section)
        if not data:
            return
        values = [data.get(system, {}).get(key) for system in SYSTEMS]
        stock, raw_bw, ours = values
        vs_stock = compare(ours, stock) if ours is not None and stock is not None else "n/a"
        vs_bw = compare(ours, raw_bw) if ours is not None and raw_bw is not None else "n/a"
        ok = "" if met is None else verdict(met(data.get(BATON, {}), data.get(STOCK, {})))
        cells = " | ".join(fmt(v, digits) for v in values)
        lines.append(f"| {label} | {cells} | {vs_stock} | {vs_bw} | {goal} | {ok} |")

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x"

    def diff(a: float, b: float) -> str:
        return f"{a - b:+.1f} ms"

    def diff_s(a: float, b: float) -> str:
        return f"{a - b:+.2f} s"

    row("fan-out throughput (jobs/s)", "fanout", "jobs_per_s", ratio, "", None)
    paired = results.get("fanout_paired")
    if paired:
        # The goal is judged on ratios taken within a round (the systems ran back to
        # back), which cancels the machine's drift between rounds.
        vs_stock, vs_bw = paired.get(STOCK), paired.get(RAW_BATON_WORKER)
        lines.append(
            "| fan-out throughput, median of per-round ratios | | | "
            f"| {fmt(vs_stock, 2)}x | {fmt(vs_bw, 2)}x | >= 0.9x stock "
            f"| {verdict(vs_stock is not None and vs_stock >= 0.9)} |"
        )
    row(
        "fan-out steady state, members only (jobs/s)",
        "fanout",
        "members_per_s",
        ratio,
        "",
        None,
    )
    row("fan-out wall time (s)", "fanout", "seconds", diff_s, "", None, 2)
    row("fan-out worker CPU per job (ms)", "fanout", "worker_cpu_ms", diff, "", None, 2)
    row("fan-out PostgreSQL CPU per job (ms)", "fanout", "db_cpu_ms", diff, "", None, 2)
    row(
        "chain hand-off p50 (ms)",
        "chain",
        "p50",
        diff,
        "<= stock + 2 ms",
        lambda ours, stock: ours["p50"] <= stock["p50"] + 2,
    )
    row("chain hand-off p95 (ms)", "chain", "p95", diff, "", None)
    row(
        "chain hand-off p99 (ms)",
        "chain",
        "p99",
        diff,
        "< 50 ms",
        lambda ours, _stock: ours["p99"] < 50,
    )
    row("chain hand-off max (ms)", "chain", "max", diff, "", None)
    row("chain hand-offs over 1 s", "chain", "over_1s", lambda a, b: f"{a - b:+.0f}", "", None, 0)
    row("chain wall time (s)", "chain", "seconds", diff_s, "", None, 2)
    row(
        "snooze lateness p50 (ms)",
        "snooze",
        "p50",
        diff,
        "",
        None,
    )
    row(
        "snooze lateness max (ms)",
        "snooze",
        "max",
        diff,
        "< 500 ms",
        lambda ours, _stock: ours["max"] < 500,
    )
    return lines


def dag_table(dags: list[dict[str, Any]] | str, workers: int) -> list[str]:
    if isinstance(dags, str):
        return [f"Graphs: {dags}"]
    lines = [
        f"| graph | tasks | critical path (s) | lower bound (s) | greedy on {workers} (s) "
        "| baton makespan (s) | overhead vs greedy (s) | makespan / greedy | ran in order |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in dags:
        lines.append(
            f"| {d['graph']} | {d['tasks']:,} | {d['critical_path']:.2f} | "
            f"{d['lower_bound']:.2f} | {d['greedy']:.2f} | {d['makespan']:.2f} | "
            f"{d['makespan'] - d['greedy']:+.2f} | {d['makespan'] / d['greedy']:.2f}x | "
            f"{'yes' if d['in_order'] and d['state'] == 'completed' else '**no**'} |"
        )
    return lines


METHOD = """\
## Method

`bench/compare.py` creates a fresh database, migrates it, and runs each measurement with
real worker processes started as `manage.py procrastinate worker` (Procrastinate's stock
worker) or `manage.py baton worker` (BatonWorker), all with `--concurrency {concurrency}`
and a polling interval of {polling}s (baton's default; Procrastinate's own default is 5s).
One worker process per measurement; Procrastinate's, baton's and the bench's tables are
emptied before each. All workloads are sync tasks; each records `time.time()` at the start
and end of its work and then INSERTs one timing row. Raw Procrastinate jobs defer their
follow-ups through a `JobManager` on `DjangoConnector`, inside the job's transaction, which
is the path baton uses.

- **Fan-out**: baton runs a workflow root -> {fanout:,} no-op steps -> join. Raw
  Procrastinate runs a root job that defers {fanout:,} no-op jobs in one batch; each
  increments a counter row in a transaction and the one that reaches {fanout:,} defers
  the join. Throughput = {fanout_jobs:,} jobs / (join's end - root's start). The steady
  state counts the members only, from the first one's `started` to the last one's
  `succeeded` event in `procrastinate_events`: it leaves out the wake-ups before and
  after the fan-out, where the stock worker can lose a polling interval each.
- **Chain**: {chain} links, each deferred by the previous one (raw: a job that defers
  the next; baton: a chain of steps). Hand-off = start of link n+1 - end of link n.
  Raw Procrastinate is run on both workers: the difference between the two raw columns
  is the worker's own changes (wake-ups kept, autocommit fetches), the difference between
  raw-on-BatonWorker and baton is baton's own per-step work (the claim, folded into the
  fetch, and the completion statement).
- **Snooze**: {snoozes} independent steps return `baton.Snooze({snooze_seconds})` once
  (raw: a job that defers itself {snooze_seconds}s later once). Lateness = start of the
  second run - the job's `scheduled_at`.
- **Graphs**: every graph in `../shared/dags` replayed as a baton workflow whose steps
  sleep `runtime_s * {scale}`. Makespan = last step's end - first step's start. The
  *lower bound* is max(critical path, total work / {concurrency}); *greedy* is a simulated
  zero-overhead list schedule on {concurrency} workers (a free worker takes the task that
  became ready first, as a FIFO job queue does). Overhead is measured against greedy.

Goals (issue 3): throughput >= 0.9x raw Procrastinate's stock worker; hand-off p50
within 2 ms of raw; hand-off p99 < 50 ms at concurrency {concurrency}; snoozes run
within 0.5 s of their due time. Fan-out, chain and snooze ran {rounds} rounds, the
three systems back to back in each round (in reverse order every other round); fan-out
rates are the median of the rounds, chain hops and snooze delays are pooled over them.
The throughput goal is judged on the median of the per-round ratios (baton's rate over
the raw rate measured in the same round), which cancels most of the drift of a shared
machine. *CPU per job* is the worker process's user + system time, and that of every
local PostgreSQL process (exited backends included), over the fan-out, divided by its
jobs: where the time goes, and steadier than wall time. PostgreSQL shares the cores with
the workers, so expect noise of several percent on throughput and a few ms on latencies.
"""


def render(
    args: argparse.Namespace,
    results: dict[str, Any],
    dags: list[dict[str, Any]] | str | None,
    info: str,
    elapsed: float,
) -> str:
    parts = [
        "# Benchmarks: baton against raw Procrastinate",
        "",
        f"Measured {datetime.date.today().isoformat()} on {info}. Whole run: {elapsed:.0f}s"
        + (", with prepared statements (--prepared)." if args.prepared else "."),
        "",
        "Regenerate with `DATABASE_URL=postgres://... .venv/bin/python bench/compare.py` "
        "(see `--help` for sizes).",
        "",
        *main_table(results),
        "",
    ]
    if dags is not None:
        parts += [*dag_table(dags, args.concurrency), ""]
    parts.append(
        METHOD.format(
            concurrency=args.concurrency,
            polling=args.polling_interval,
            fanout=args.fanout,
            fanout_jobs=args.fanout + 2,
            chain=args.chain,
            snoozes=args.snoozes,
            snooze_seconds=args.snooze_seconds,
            scale=args.dag_scale,
            rounds=args.rounds,
        )
    )
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    began = time.monotonic()
    if args.prepared:
        os.environ["BENCH_PREPARE_THRESHOLD"] = "2"  # inherited by the workers
    bench_url = with_database(args.database_url, args.bench_db)
    create_database(args.database_url, args.bench_db)
    setup_django(bench_url)
    info = machine()
    print(f"# {info}", flush=True)

    measurements = {"fanout": measure_fanout, "chain": measure_chain, "snooze": measure_snooze}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for round_number in range(1, args.rounds + 1):
        for section, measure in measurements.items():
            if section not in only:
                continue
            # Alternate the order, so that no system always runs right after another.
            for system in SYSTEMS if round_number % 2 else SYSTEMS[::-1]:
                started = time.monotonic()
                sample = measure(system, args)
                samples.setdefault(section, {}).setdefault(system, []).append(sample)
                print(
                    f"round {round_number} | {section:>6} | {system:<31} | "
                    f"{time.monotonic() - started:5.1f}s | {brief(sample)}",
                    flush=True,
                )
    results: dict[str, Any] = {
        section: {system: summarise(section, runs) for system, runs in by_system.items()}
        for section, by_system in samples.items()
    }
    if "fanout" in samples:
        results["fanout_paired"] = paired_ratios(samples["fanout"], "jobs_per_s")
    dags = None
    if "dags" in only:
        started = time.monotonic()
        dags = measure_dags(args)
        print(f"   dags | {time.monotonic() - started:.1f}s", flush=True)

    report = render(args, results, dags, info, time.monotonic() - began)
    print()
    print(report)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report + kept_sections(args.output))
        print(f"\nwritten to {args.output}")


def kept_sections(path: Path) -> str:
    """The sections other scripts write into the same file between their own markers
    (<!-- NAME:start --> ... <!-- NAME:end -->: bench/llm_fanout.py, bench/peers.py, ...)."""
    if not path.exists():
        return ""
    import re

    text = path.read_text()
    sections = re.findall(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", text, flags=re.S)
    kept = [
        text[text.index(f"<!-- {name}:start -->") : text.index(f"<!-- {name}:end -->")]
        + f"<!-- {name}:end -->"
        for name in dict.fromkeys(sections)
    ]
    return "".join("\n" + section + "\n" for section in kept)


if __name__ == "__main__":
    main()
