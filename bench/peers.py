"""baton against its peers, in one interleaved run on the same machine and slots.

    DATABASE_URL=postgres://user@host:port/anydb .venv/bin/python bench/peers.py
    DATABASE_URL=... .venv/bin/python bench/peers.py --smoke     # tiny sizes, seconds

Peers, each set up as its own docs say:

    baton           `manage.py baton worker`, sync steps (baton.Step with def perform)
    baton async     the same worker, async steps (async def perform)
    raw async       raw Procrastinate with async tasks, deferring through the worker's own
                    async connector, on baton's worker (BatonWorker: Procrastinate's worker
                    with the lost wake-up fixed; it claims nothing for non-baton jobs)
    Celery          Celery 5 canvas (chain, group, chord) on a private Redis this script
                    starts (redis-server on a free port; broker and result backend), its
                    prefork pool; the threads pool for the in-flight shape. Skipped, with
                    the reason printed, when celery is not installed (`pip install -e .[bench]`).

Shapes: chain hand-offs, a fan-out with a join, every graph in ../shared/dags replayed
with no-op steps (baton against the zero-overhead greedy schedule; Celery as a chain of
one chord per layer, the closest canvas), and model calls in flight (a 1,000-wide fan-out
of steps awaiting asyncio.sleep(2) on one worker at concurrency 200). A fresh worker per
measurement; systems back to back within a round, in reverse order every other round;
the goals are judged on medians of per-round ratios. The section is written into
docs/benchmarks.md between the peers marker comments (the rest is left alone). A script,
not a test: nothing asserts, except that every measured workload finished.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    BATON,
    DEFAULT_DAGS,
    Graph,
    create_database,
    fmt,
    machine,
    new_run,
    percentile,
    process_cpu_seconds,
    running,
    setup_django,
    timings,
    verdict,
    with_database,
)

START_MARKER = "<!-- peers:start -->"
END_MARKER = "<!-- peers:end -->"

BATON_ASYNC = "baton async"
RAW = "raw async"
CELERY = "Celery"
SYSTEMS = (BATON, BATON_ASYNC, RAW, CELERY)
# Which systems run which shape. The graphs need dependencies: raw Procrastinate has
# none. In the in-flight shape baton's sync steps run with BATON["WORKER_THREADS"] set to
# the concurrency (a thread each), as docs/howto/workers.md says to.
SHAPES: dict[str, tuple[str, ...]] = {
    "fanout": (BATON, BATON_ASYNC, RAW, CELERY),
    "chain": (BATON, BATON_ASYNC, RAW, CELERY),
    "dags": (BATON, CELERY),
    "inflight": (BATON_ASYNC, BATON, RAW, CELERY),
}


# ------------------------------------------------------------------------------ set-up
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--bench-db", default="baton_bench_peers", help="dropped and recreated")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--polling-interval", type=float, default=1.0)
    parser.add_argument("--fanout", type=int, default=2000)
    parser.add_argument("--chain", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="of fan-out and chain")
    parser.add_argument("--dags", type=Path, default=DEFAULT_DAGS)
    parser.add_argument("--dag-scale", type=float, default=0.001, help="sleep = runtime_s * it")
    parser.add_argument("--dag-rounds", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=1000, help="in-flight fan-out width")
    parser.add_argument("--inflight-sleep", type=float, default=2.0, help="seconds per call")
    parser.add_argument("--inflight-concurrency", type=int, default=200)
    parser.add_argument("--inflight-rounds", type=int, default=2)
    parser.add_argument("--only", default="fanout,chain,dags,inflight")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="subset of the peers")
    parser.add_argument("--no-celery", action="store_true", help="leave Celery out")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round: checks the harness runs"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    if args.smoke:
        args.fanout, args.chain, args.rounds = 20, 5, 1
        args.inflight, args.inflight_sleep, args.inflight_concurrency = 20, 0.2, 10
        args.inflight_rounds, args.dag_rounds, args.dag_scale = 1, 1, 0.0001
        args.no_write = True
    args.only_set = {part.strip() for part in args.only.split(",") if part.strip()}
    args.system_set = {part.strip() for part in args.systems.split(",") if part.strip()}
    args.celery_skipped = None
    if args.no_celery:
        args.celery_skipped = "left out (--no-celery)"
    elif not _celery_installed():
        args.celery_skipped = "celery is not installed (pip install -e '.[bench]')"
    elif shutil.which("redis-server") is None:
        args.celery_skipped = "redis-server is not on PATH"
    if args.celery_skipped:
        args.system_set.discard(CELERY)
    return args


def _celery_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("celery") is not None


def systems_for(shape: str, args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(s for s in SHAPES[shape] if s in args.system_set)


# ------------------------------------------------------------------- CPU and memory
def _proc_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Celery's prefork children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_fields(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its live descendants (exited ones: in their parent's counters)."""
    return sum(process_cpu_seconds(p) or 0.0 for p in descendants(pid))


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def tree_threads(pid: int) -> int:
    total = 0
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/task"))
    return total


def postmaster_pid() -> int | None:
    """The local PostgreSQL server's postmaster (the parent of this connection's backend),
    or None when its processes are not visible from here."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    fields = _proc_fields(int(backend))
    return int(fields[1]) if fields is not None else None


# ---------------------------------------------------------------------------- Celery
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server for Celery's broker and results (no persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-peers-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class CeleryWorker:
    """`celery -A bench.celery_peer worker` on the private Redis."""

    def __init__(self, redis_url: str, concurrency: int, pool: str = "prefork") -> None:
        self.redis_url = redis_url
        self.args = ["-A", "bench.celery_peer", "worker", "--pool", pool,
                     "--concurrency", str(concurrency), "--loglevel", "WARNING",
                     # Cluster chatter between workers, not task processing; off, a
                     # worker starts in a second instead of a few.
                     "--without-mingle", "--without-gossip"]  # fmt: skip
        fd, path = tempfile.mkstemp(prefix="bench-celery-", suffix=".log")
        os.close(fd)
        self.log = Path(path)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        from bench import celery_peer

        env = {
            **os.environ,
            "BENCH_CELERY_REDIS": self.redis_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not celery_peer.app.control.ping(timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# ------------------------------------------------------------------- one measurement
class Rig:
    """Starts the worker of a system and reads what a run left behind."""

    def __init__(self, args: argparse.Namespace, redis_server: RedisServer | None) -> None:
        self.args = args
        self.redis = redis_server
        self.postmaster = postmaster_pid()
        if self.redis is not None:
            os.environ["BENCH_CELERY_REDIS"] = self.redis.url

    @contextlib.contextmanager
    def worker(self, system: str, concurrency: int, pool: str = "prefork") -> Iterator[Any]:
        if system == CELERY:
            assert self.redis is not None
            self.redis.flush()
            worker = CeleryWorker(self.redis.url, concurrency, pool)
            worker.start()
            try:
                yield worker
            finally:
                worker.stop()
            worker.log.unlink(missing_ok=True)
            return
        sized = argparse.Namespace(**{**vars(self.args), "concurrency": concurrency})
        if pool == "threads" and system == BATON:
            os.environ["BENCH_WORKER_THREADS"] = str(concurrency)  # read by bench/settings.py
        try:
            with running(BATON, sized) as worker:  # baton worker: raw async runs on it too
                yield worker
        finally:
            os.environ.pop("BENCH_WORKER_THREADS", None)

    def store_cpu(self, system: str) -> float | None:
        """CPU of the store so far: Redis for Celery, the PostgreSQL server otherwise."""
        if system == CELERY:
            assert self.redis is not None and self.redis.process is not None
            return process_cpu_seconds(self.redis.process.pid)
        return None if self.postmaster is None else tree_cpu_seconds(self.postmaster)

    def rows(self, system: str, run: str) -> list[tuple[str, int, float, float]]:
        if system == CELERY:
            from bench import celery_peer

            return sorted(celery_peer.read_timings(run), key=lambda r: (r[1], r[2]))
        return [(t.name, t.seq, t.started, t.finished) for t in timings(run)]


def db_connections() -> int:
    """Connections to the bench database other than this script's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def jobs_doing() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
        return int(cursor.fetchone()[0])


def failed() -> bool:
    from baton.models import Workflow

    return Workflow.objects.filter(state="failed").exists()


def wait_for(
    done: Callable[[], bool],
    timeout: float,
    what: str,
    worker: Any,
    sample: Callable[[], None] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if failed():
            raise RuntimeError(f"{what}: a workflow failed:\n{worker.log_tail()}")
        if sample is not None:
            sample()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish in {timeout}s:\n{worker.log_tail()}")
        time.sleep(0.1)


def fan_out(
    rig: Rig,
    system: str,
    width: int,
    concurrency: int,
    sleep: float = 0.0,
    inflight: bool = False,
) -> dict[str, Any]:
    """root -> `width` members -> join; jobs/s from the root's start to the join's end."""
    import baton
    from bench.benchapp.models import Counter
    from bench.benchapp.peer_tasks import AsyncNoop, SleepNoop
    from bench.benchapp.tasks import Mark, Noop, defer

    run = new_run("fan")
    pool = "threads" if inflight else "prefork"
    with rig.worker(system, concurrency, pool) as worker:
        pid = worker.process.pid
        idle_rss = tree_rss_bytes(pid)
        worker_cpu, store_cpu = tree_cpu_seconds(pid), rig.store_cpu(system)
        peaks = {"rss": idle_rss, "threads": tree_threads(pid), "connections": 0, "doing": 0}

        def sample() -> None:
            peaks["rss"] = max(peaks["rss"], tree_rss_bytes(pid))
            peaks["threads"] = max(peaks["threads"], tree_threads(pid))
            if system != CELERY:
                peaks["connections"] = max(peaks["connections"], db_connections())
                peaks["doing"] = max(peaks["doing"], jobs_doing())

        if system in (BATON, BATON_ASYNC):
            if system == BATON_ASYNC:
                member = AsyncNoop.new(sleep=sleep)
            else:
                member = SleepNoop.new(sleep=sleep) if sleep else Noop.new()
            (
                baton.new(run)
                .add("root", Mark.new(run=run))
                .add_many("fan", [member for _ in range(width)], deps=["root"])
                .add("join", Mark.new(run=run), deps=["fan"])
                .insert()
            )
        elif system == RAW:
            Counter.objects.create(run=run, value=0)
            defer("bench.araw_root", [{"run": run, "width": width, "sleep": sleep}])
        else:
            from celery import chain, chord

            from bench import celery_peer

            members = [
                celery_peer.sleep.si(sleep) if sleep else celery_peer.noop.si()
                for _ in range(width)
            ]
            chain(
                celery_peer.mark.si(run, "root"),
                chord(members, celery_peer.mark.si(run, "join")),
            ).apply_async()
        wait_for(
            lambda: {r[0] for r in rig.rows(system, run)} >= {"root", "join"},
            timeout=max(120.0, width / 10 + width * sleep / max(concurrency, 1) * 3),
            what=f"fan-out ({system})",
            worker=worker,
            sample=sample if inflight else None,
        )
        worker_cpu_end, store_cpu_end = tree_cpu_seconds(pid), rig.store_cpu(system)
    rows = {r[0]: r for r in rig.rows(system, run)}
    elapsed = rows["join"][3] - rows["root"][2]
    jobs = width + 2
    result: dict[str, Any] = {
        "jobs_per_s": jobs / elapsed,
        "seconds": elapsed,
        "worker_cpu_ms": (worker_cpu_end - worker_cpu) * 1000 / jobs,
    }
    if store_cpu is not None and store_cpu_end is not None:
        result["store_cpu_ms"] = (store_cpu_end - store_cpu) * 1000 / jobs
    if inflight:
        result.update(
            idle_rss=idle_rss,
            peak_rss=peaks["rss"],
            peak_threads=peaks["threads"],
            peak_connections=peaks["connections"] if system != CELERY else None,
            peak_doing=peaks["doing"] if system != CELERY else None,
        )
    return result


def chain_of(rig: Rig, system: str, length: int, concurrency: int) -> dict[str, Any]:
    """Hand-off = start of link n+1 - end of link n."""
    import baton
    from bench.benchapp.peer_tasks import AsyncMark
    from bench.benchapp.tasks import Mark, defer

    run = new_run("chain")
    with rig.worker(system, concurrency) as worker:
        if system in (BATON, BATON_ASYNC):
            step = AsyncMark if system == BATON_ASYNC else Mark
            builder = baton.new(run)
            for seq in range(length):
                builder.add(
                    f"c{seq}", step.new(run=run, seq=seq), deps=[f"c{seq - 1}"] if seq else []
                )
            builder.insert()
        elif system == RAW:
            defer("bench.araw_chain", [{"run": run, "seq": 0, "total": length}])
        else:
            from celery import chain

            from bench import celery_peer

            chain(celery_peer.mark.si(run, "chain", seq) for seq in range(length)).apply_async()
        wait_for(
            lambda: len(rig.rows(system, run)) >= length,
            timeout=max(120.0, length * 0.5),
            what=f"chain ({system})",
            worker=worker,
        )
    rows = rig.rows(system, run)
    hops = [(b[2] - a[3]) * 1000 for a, b in itertools.pairwise(rows)]
    return {"hops_ms": hops, "seconds": rows[-1][3] - rows[0][2]}


def layers(graph: Graph) -> list[list[str]]:
    """Tasks by depth (longest path from a root): every dependency is in an earlier layer."""
    import graphlib

    depth: dict[str, int] = {}
    for task in graphlib.TopologicalSorter(graph.deps).static_order():
        depth[task] = 1 + max((depth[d] for d in graph.deps.get(task, ())), default=-1)
    by_depth: dict[int, list[str]] = {}
    for task in graph.order:
        by_depth.setdefault(depth[task], []).append(task)
    return [by_depth[d] for d in sorted(by_depth)]


def layered_greedy(graph: Graph, workers: int) -> float:
    """The zero-overhead schedule of the layered canvas: each layer waits for the last."""
    total = 0.0
    for layer in layers(graph):
        sub = Graph(name="layer", durations={t: graph.durations[t] for t in layer},
                    deps={t: [] for t in layer}, order=list(layer))  # fmt: skip
        total += sub.greedy_makespan(workers)
    return total


def replay(rig: Rig, system: str, graph: Graph, concurrency: int) -> dict[str, Any]:
    import baton
    from bench.benchapp.tasks import Mark

    run = new_run("dag")
    with rig.worker(system, concurrency) as worker:
        if system == BATON:
            builder = baton.new(run)
            for task in graph.order:
                builder.add(
                    task, Mark.new(run=run, sleep=graph.durations[task]), deps=graph.deps[task]
                )
            builder.insert()
        else:
            from celery import chain, chord, group

            from bench import celery_peer

            # Each layer a chord with a no-op body, so that the next layer starts when
            # every task of this one is done (a chain of bare groups does not wait).
            chain(
                chord(
                    group(
                        celery_peer.mark.si(run, task, 0, graph.durations[task]) for task in layer
                    ),
                    celery_peer.noop.si(),
                )
                for layer in layers(graph)
            ).apply_async()
        wait_for(
            lambda: len(rig.rows(system, run)) >= len(graph.order),
            timeout=300.0,
            what=f"graph {graph.name} ({system})",
            worker=worker,
        )
    rows = {r[0]: r for r in rig.rows(system, run)}
    in_order = len(rows) == len(graph.order) and all(
        rows[task][2] >= rows[dep][3] for task in graph.order for dep in graph.deps[task]
    )
    makespan = max(r[3] for r in rows.values()) - min(r[2] for r in rows.values())
    return {"makespan": makespan, "in_order": in_order}


# ---------------------------------------------------------------------------- rounds
def interleaved(
    systems: Sequence[str], rounds: int, label: str, measure: Callable[[str], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    for number in range(1, rounds + 1):
        for system in systems if number % 2 else systems[::-1]:
            started = time.monotonic()
            sample = measure(system)
            samples[system].append(sample)
            print(
                f"round {number} | {label:>9} | {system:<11} | "
                f"{time.monotonic() - started:5.1f}s | {brief(sample)}",
                flush=True,
            )
    return samples


def brief(sample: dict[str, Any]) -> str:
    parts = []
    for key, value in sample.items():
        if isinstance(value, list):
            parts.append(f"{key}: p50={percentile(value, 50):.1f} max={max(value):.1f}")
        elif isinstance(value, float):
            parts.append(f"{key}={value:.2f}")
        elif value is not None:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


def median_ratio(
    samples: dict[str, list[dict[str, Any]]], key: str, a: str, b: str
) -> float | None:
    """Median over rounds of a's value / b's value in the same round."""
    if not samples.get(a) or not samples.get(b):
        return None
    return statistics.median(x[key] / y[key] for x, y in zip(samples[a], samples[b], strict=True))


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------- report
def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


def fanout_table(samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| system | jobs/s (median) | baton's rate over it (median of per-round ratios) "
        "| worker CPU per step (ms) | store CPU per step (ms) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, runs in samples.items():
        ratio = median_ratio(samples, "jobs_per_s", BATON, system) if system != BATON else None
        lines.append(
            f"| {system} | {fmt(median_of(runs, 'jobs_per_s'))} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | "
            f"{fmt(median_of(runs, 'worker_cpu_ms'), 2)} | "
            f"{fmt(median_of(runs, 'store_cpu_ms'), 2)} | {fmt(median_of(runs, 'seconds'), 2)} |"
        )
    return lines


def chain_summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    hops = [hop for run in runs for hop in run["hops_ms"]]
    return {
        "p50": percentile(hops, 50),
        "p95": percentile(hops, 95),
        "p99": percentile(hops, 99),
        "max": max(hops),
        "seconds": statistics.median(run["seconds"] for run in runs),
    }


def chain_table(samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "| system | hand-off p50 (ms) | p95 (ms) | p99 (ms) | max (ms) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for system, runs in samples.items():
        s = chain_summary(runs)
        lines.append(
            f"| {system} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | "
            f"{s['max']:.1f} | {s['seconds']:.2f} |"
        )
    return lines


def dag_table(results: list[dict[str, Any]], workers: int) -> list[str]:
    lines = [
        f"| graph | tasks | layers | greedy on {workers} (s) | baton (s) | baton / greedy "
        f"| layered greedy on {workers} (s) | Celery, layer by layer (s) | baton / Celery "
        "| ran in order |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in results:
        ours, theirs = d.get(BATON), d.get(CELERY)
        vs = f"{ours / theirs:.2f}x" if ours and theirs else "n/a"
        ok = all(d["in_order"].values())
        lines.append(
            f"| {d['graph']} | {d['tasks']:,} | {d['layers']} | {d['greedy']:.2f} | "
            f"{fmt(ours, 2)} | {fmt(ours / d['greedy'] if ours else None, 2)}x | "
            f"{d['layered_greedy']:.2f} | {fmt(theirs, 2)} | {vs} | {verdict(ok)} |"
        )
    return lines


def inflight_table(samples: dict[str, list[dict[str, Any]]], ideal: float) -> list[str]:
    lines = [
        "| system | makespan (s, median) | makespan / ideal | steps in flight (peak) "
        "| worker RSS idle -> peak (MB) | RSS per in-flight step (KB) "
        "| DB connections held (peak) | worker threads (peak) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system, runs in samples.items():
        seconds = median_of(runs, "seconds") or 0.0
        idle = median_of(runs, "idle_rss") or 0
        peak = median_of(runs, "peak_rss") or 0
        doing = median_of(runs, "peak_doing")
        per_step = (peak - idle) / doing / 1024 if doing else None
        lines.append(
            f"| {system} | {seconds:.2f} | {seconds / ideal:.2f}x | "
            f"{fmt(doing, 0) if doing is not None else 'n/a'} | "
            f"{idle / 2**20:.0f} -> {peak / 2**20:.0f} | {fmt(per_step, 0)} | "
            f"{fmt(median_of(runs, 'peak_connections'), 0)} | "
            f"{fmt(median_of(runs, 'peak_threads'), 0)} |"
        )
    return lines


def goals(args: argparse.Namespace, data: dict[str, Any]) -> list[str]:
    lines = ["| goal (issue 13) | measured | met |", "|---|---|---|"]
    fanout = data.get("fanout")
    if fanout:
        for peer in (RAW, CELERY):
            ratio = median_ratio(fanout, "jobs_per_s", BATON, peer)
            if ratio is not None:
                lines.append(
                    f"| fan-out {args.fanout:,} + join: baton >= 1.0x {peer} | {ratio:.2f}x "
                    f"| {verdict(ratio >= 1.0)} |"
                )
    chain = data.get("chain")
    if chain and BATON in chain:
        ours = chain_summary(chain[BATON])
        if RAW in chain:
            raw = chain_summary(chain[RAW])
            lines.append(
                f"| chain {args.chain}: hand-off p50 <= raw async + 1 ms | "
                f"{ours['p50']:.1f} ms vs {raw['p50']:.1f} ms "
                f"| {verdict(ours['p50'] <= raw['p50'] + 1)} |"
            )
        lines.append(
            f"| chain {args.chain}: hand-off p99 < 20 ms | {ours['p99']:.1f} ms "
            f"| {verdict(ours['p99'] < 20)} |"
        )
    for d in data.get("dags") or []:
        ours, theirs = d.get(BATON), d.get(CELERY)
        if ours:
            lines.append(
                f"| {d['graph']}: makespan <= 1.2x greedy | {ours / d['greedy']:.2f}x "
                f"| {verdict(ours <= 1.2 * d['greedy'])} |"
            )
        if ours and theirs:
            lines.append(
                f"| {d['graph']}: makespan <= Celery's | {ours:.2f} s vs {theirs:.2f} s "
                f"| {verdict(ours <= theirs)} |"
            )
    inflight = data.get("inflight")
    if inflight and BATON_ASYNC in inflight:
        runs = inflight[BATON_ASYNC]
        ideal = args.inflight / args.inflight_concurrency * args.inflight_sleep
        seconds = median_of(runs, "seconds") or 0.0
        lines.append(
            f"| in flight: {args.inflight:,} async steps x {args.inflight_sleep:g} s at "
            f"concurrency {args.inflight_concurrency}: makespan <= 1.2x {ideal:g} s "
            f"| {seconds / ideal:.2f}x | {verdict(seconds <= 1.2 * ideal)} |"
        )
        connections = median_of(runs, "peak_connections")
        bound = connection_bound(args)
        if connections is not None:
            lines.append(
                f"| in flight: DB connections held <= {bound} (documented bound) "
                f"| {connections:.0f} | {verdict(connections <= bound)} |"
            )
    return lines


def connection_bound(args: argparse.Namespace) -> int:
    """docs/howto/workers.md's bound on one worker's connections with async steps."""
    from baton.execution.worker import connection_bound as bound

    return bound()


def render(args: argparse.Namespace, data: dict[str, Any], info: str, elapsed: float,
           loads: tuple[str, str]) -> str:  # fmt: skip
    ideal = args.inflight / args.inflight_concurrency * args.inflight_sleep
    parts = [
        START_MARKER,
        "## baton against its peers: raw Procrastinate (async) and Celery",
        "",
        f"Measured {datetime.date.today().isoformat()} on {info}. Whole run: {elapsed:.0f}s; "
        f"load average {loads[0]} at the start, {loads[1]} at the end. A shared machine: "
        "absolute rates are noisy, read the per-round ratios.",
        "",
        "Regenerate with `DATABASE_URL=postgres://... .venv/bin/python bench/peers.py` "
        "(needs `pip install -e '.[bench]'` for Celery; `--smoke` for a quick check; it "
        "rewrites only this section, between its marker comments).",
        "",
    ]
    if args.celery_skipped:
        parts += [f"Celery: skipped, {args.celery_skipped}.", ""]
    parts += ["**Goals**", "", *goals(args, data), ""]
    if data.get("fanout"):
        parts += [
            f"**Fan-out** root -> {args.fanout:,} no-op members -> join, concurrency "
            f"{args.concurrency}, {args.rounds} interleaved rounds:",
            "",
            *fanout_table(data["fanout"]),
            "",
        ]
    if data.get("chain"):
        parts += [
            f"**Chain** of {args.chain} links, concurrency {args.concurrency}, hand-offs "
            f"pooled over {args.rounds} rounds:",
            "",
            *chain_table(data["chain"]),
            "",
        ]
    if data.get("dags"):
        parts += [
            f"**Graphs** of ../shared/dags, steps sleeping runtime_s x {args.dag_scale:g}, "
            f"concurrency {args.concurrency}, median of {args.dag_rounds} round(s):",
            "",
            *dag_table(data["dags"], args.concurrency),
            "",
        ]
    if data.get("inflight"):
        parts += [
            f"**In flight**: root -> {args.inflight:,} members each awaiting "
            f"{args.inflight_sleep:g} s -> join on one worker process at concurrency "
            f"{args.inflight_concurrency}; ideal {ideal:g} s; median of "
            f"{args.inflight_rounds} rounds:",
            "",
            *inflight_table(data["inflight"], ideal),
            "",
        ]
    parts += [METHOD, END_MARKER]
    return "\n".join(parts)


METHOD = """\
Method (`bench/peers.py`): a fresh database; a fresh worker process per measurement
(`manage.py baton worker` for baton and raw Procrastinate, `celery worker` for Celery),
every one with the same slots (`--concurrency`); systems back to back in each round, in
reverse order every other round. *baton* runs sync steps, *baton async* `async def
perform` steps, *raw async* Procrastinate `async def` tasks that record and defer through
the worker's async connector (autocommit; the fan-in counts down a counter row and the
last member defers the join), on BatonWorker, which is Procrastinate's worker with the
lost wake-up fixed. *Celery* 5 runs its own canvas on a private Redis (broker and result
backend, no persistence) with its default prefork pool: the fan-out is
`chain(root, chord(group(members), join))`, the chain `chain(links)`, a graph a chain of
one chord per layer, `chord(group(layer), noop)` (a chain of bare groups does not wait
for the previous group to finish; Celery's canvas cannot say "after these two of the previous
layer"; each layer waits for the whole previous one, so its zero-overhead schedule is
the *layered greedy*), the in-flight shape the threads pool (Celery tasks are sync).
Throughput = jobs / (join's end - root's start). Worker CPU is the worker process's
(Celery: with its pool children); store CPU is the PostgreSQL server's processes (the
bench database is the only busy one when the server is the bench's own) or Redis's. In
flight: sampled every 0.1 s, RSS of the worker, its threads, connections to the bench
database other than the harness's own, and jobs in `doing`; RSS per in-flight step =
(peak RSS - idle RSS) / peak jobs in flight.
"""


def write_section(path: Path, section: str) -> str:
    text = path.read_text() if path.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        path.write_text(text[:start] + section + text[end + len(END_MARKER) :])
        return "replaced the peers section in"
    path.write_text(text.rstrip("\n") + ("\n\n" if text else "") + section + "\n")
    return "appended the peers section to"


# ------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    began, load_start = time.monotonic(), load_average()
    if args.celery_skipped:
        print(f"Celery skipped: {args.celery_skipped}", flush=True)
    create_database(args.database_url, args.bench_db)
    setup_django(with_database(args.database_url, args.bench_db))
    info = machine()
    print(f"# {info}", flush=True)
    redis_server = None
    if CELERY in args.system_set:
        redis_server = RedisServer()
        redis_server.start()
    data: dict[str, Any] = {}
    try:
        rig = Rig(args, redis_server)
        if "fanout" in args.only_set:
            data["fanout"] = interleaved(
                systems_for("fanout", args), args.rounds, "fan-out",
                lambda s: fan_out(rig, s, args.fanout, args.concurrency),
            )  # fmt: skip
        if "chain" in args.only_set:
            data["chain"] = interleaved(
                systems_for("chain", args), args.rounds, "chain",
                lambda s: chain_of(rig, s, args.chain, args.concurrency),
            )  # fmt: skip
        if "inflight" in args.only_set:
            data["inflight"] = interleaved(
                systems_for("inflight", args), args.inflight_rounds, "in flight",
                lambda s: fan_out(rig, s, args.inflight, args.inflight_concurrency,
                                  sleep=args.inflight_sleep, inflight=True),
            )  # fmt: skip
        if "dags" in args.only_set:
            data["dags"] = measure_dags(rig, args)
    finally:
        if redis_server is not None:
            redis_server.stop()
    section = render(args, data, info, time.monotonic() - began, (load_start, load_average()))
    print()
    print(section)
    if not args.no_write:
        print(f"\n{write_section(args.output, section)} {args.output}")
    return data


def measure_dags(rig: Rig, args: argparse.Namespace) -> list[dict[str, Any]]:
    paths = sorted(args.dags.glob("*.json")) if args.dags.is_dir() else []
    if args.smoke:
        paths = sorted(paths, key=lambda p: p.stat().st_size)[:1]
    results = []
    for path in paths:
        graph = Graph.load(path, args.dag_scale)
        samples = interleaved(
            systems_for("dags", args), args.dag_rounds, path.stem[:9],
            lambda s, graph=graph: replay(rig, s, graph, args.concurrency),
        )  # fmt: skip
        entry: dict[str, Any] = {
            "graph": path.stem,
            "tasks": len(graph.order),
            "layers": len(layers(graph)),
            "greedy": graph.greedy_makespan(args.concurrency),
            "layered_greedy": layered_greedy(graph, args.concurrency),
            "in_order": {s: all(r["in_order"] for r in runs) for s, runs in samples.items()},
        }
        for system, runs in samples.items():
            entry[system] = median_of(runs, "makespan")
        results.append(entry)
    return results


if __name__ == "__main__":
    main()
