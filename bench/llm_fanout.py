"""LLM steps that record usage against plain steps, on a fan-out, in one run.

    DATABASE_URL=postgres://user@host:port/anydb .venv/bin/python bench/llm_fanout.py

The harness is bench/compare.py's: DATABASE_URL names a server and a database to
connect to for administration; the run drops and creates its own database there
(--bench-db, default baton_bench_llm), migrates it, and measures with real
`manage.py baton worker` processes at compare.py's concurrency and polling interval.
Each kind of member gets a fresh worker per round, which runs two fan-outs one after
the other: "cold" (its first steps, which pay for imports, connections, prepared
statements and genai-prices' tables) and "warm" (as a long-running worker is; the goal
is judged on these). A fan-out is a workflow root -> N members -> join, whose members
are one of:

    plain          bench Noop: a baton.Step that returns None (the baseline)
    plain-ok       bench PlainOk: a baton.Step returning {"ok": True}, the result the LLM
                   members store, so that storing it is not counted against them
    llm-nousage    bench LLMNoopNoUsage: an LLMStep returning {"ok": True}, no usage
    llm            bench LLMNoop: an LLMStep returning {"ok": True, "llm_usage": Usage(...)}:
                   one call of gpt-4o-mini, 1,000 tokens in and 100 out, priced by
                   genai-prices, written to the ledger and added to the running costs by
                   the step's completion statement (the goal is judged on these)
    llm3           bench LLMNoopThreeCalls: an LLMStep that records 3 such calls with
                   job.record_usage and returns {"ok": True}
    llm-notimeout  (only with --kinds) bench LLMNoopNoTimeout: llm without LLMStep's
                   timeout, so perform() runs on the worker's thread

The LLM bench steps set queue="default" (LLMStep's own queue is "llm"), so members of
every kind share the root's and join's queue, and the worker is compare.py's (it listens
on every queue, no --queues). Kinds run back to back in each round, in reverse order
every other round; the goal (LLM steps >= 0.9x the plain steps' throughput) is judged on
the median of the per-round ratios. The markdown section is printed and written into
docs/benchmarks.md between the llm-fanout marker comments (--output); the rest of that
file is left alone. This is a script, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
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
    new_run,
    process_cpu_seconds,
    running,
    setup_django,
    timings,
    verdict,
    wait_until,
    with_database,
)

START_MARKER = "<!-- llm-fanout:start -->"
END_MARKER = "<!-- llm-fanout:end -->"
GOAL = 0.9  # LLM members' throughput over the plain members', median of the rounds


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    step: str  # class name in bench.benchapp.tasks
    calls: int  # model calls each member records


KINDS = {
    kind.key: kind
    for kind in (
        Kind("plain", "plain Step", "Noop", 0),
        Kind("plain-ok", "plain Step, returns a dict", "PlainOk", 0),
        Kind("llm-nousage", "LLMStep, no usage", "LLMNoopNoUsage", 0),
        Kind("llm", "LLMStep, 1 call", "LLMNoop", 1),
        Kind("llm-notimeout", "LLMStep, 1 call, timeout=None", "LLMNoopNoTimeout", 1),
        Kind("llm3", "LLMStep, 3 calls", "LLMNoopThreeCalls", 3),
    )
}
BASELINE = "plain"
HEADLINE = "llm"  # the kind the goal is judged on


# ------------------------------------------------------------------------------ set-up
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--bench-db", default="baton_bench_llm", help="dropped and recreated")
    # compare.py's defaults: the same worker settings as the main benchmark.
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--polling-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--fanout", type=int, default=500, help="fan-out width")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--kinds",
        default="plain,plain-ok,llm-nousage,llm,llm3",
        help=f"comma-separated members to run, of: {', '.join(KINDS)} "
        f"({BASELINE} and {HEADLINE} are always run)",
    )
    parser.add_argument(
        "--no-micro", action="store_true", help="skip the in-process per-call timings"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    keys = [key.strip() for key in args.kinds.split(",") if key.strip()]
    unknown = [key for key in keys if key not in KINDS]
    if unknown:
        parser.error(f"unknown --kinds {unknown}; choose from {list(KINDS)}")
    for key in (HEADLINE, BASELINE):
        if key not in keys:
            keys.insert(0, key)
    args.kind_keys = [key for key in KINDS if key in keys]  # in KINDS' order
    return args


# ------------------------------------------------------------------------- CPU time
# compare.py counts every local postgres process. Other test suites share this server,
# so here PostgreSQL's CPU is that of the bench database's own backends (the worker's
# connections; this script's polling connection left out), read from /proc by pid.
def bench_backends_cpu() -> dict[int, float]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        pids = [row[0] for row in cursor.fetchall()]
    seconds = {pid: process_cpu_seconds(pid) for pid in pids}
    return {pid: value for pid, value in seconds.items() if value is not None}


def backends_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the backends used between two readings (one that connected since, all of its)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy so far (every core, every process)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# ----------------------------------------------------------------------- measurements
PHASES = ("warm", "cold")  # the goal is judged on the warm fan-outs


def measure(kind: Kind, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Two fan-outs of `kind` members, one after the other on one fresh worker: "cold",
    its first steps (it imports and loads what they need, opens a connection per thread,
    prepares the per-step statements on each), then "warm", as a long-running worker is."""
    with running(BATON, args) as worker:
        cold = fan_out(kind, args, worker)
        warm = fan_out(kind, args, worker)
    return {"cold": cold, "warm": warm}


def fan_out(kind: Kind, args: argparse.Namespace, worker: Any) -> dict[str, Any]:
    """Run one workflow root -> members -> join on `worker` and measure it."""
    import baton
    from baton.testing import wait_for_workflow
    from bench.benchapp import tasks

    step = getattr(tasks, kind.step)
    width = args.fanout
    run = new_run(f"llm-{kind.key}")
    assert worker.process is not None
    pid = worker.process.pid
    worker_cpu, backends = process_cpu_seconds(pid), bench_backends_cpu()
    busy, own, began = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
    workflow = (
        baton.new(run)
        .add("root", tasks.Mark.new(run=run))
        .add_many("fan", [step.new() for _ in range(width)], deps=["root"])
        .add("join", tasks.Mark.new(run=run), deps=["fan"])
        .insert()
    )
    wait_until(
        lambda: {t.name for t in timings(run)} >= {"root", "join"},
        timeout=max(120.0, width / 5),
        what=f"fan-out of {kind.key}",
        worker=worker,
    )
    try:
        workflow = wait_for_workflow(workflow, timeout=30, poll=0.1)
    except AssertionError as exc:
        raise TimeoutError(f"{exc}\n{worker.log_tail()}") from exc
    worker_cpu_end, backends_end = process_cpu_seconds(pid), bench_backends_cpu()
    busy_end, own_end, wall = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()

    rows = {t.name: t for t in timings(run)}
    members, span = workflow_member_span(workflow, step.task_name)
    jobs = width + 2
    db_cpu = backends_delta(backends, backends_end)
    sample: dict[str, Any] = {
        "members_per_s": members / span,
        "jobs_per_s": jobs / (rows["join"].finished - rows["root"].started),
        "db_cpu_ms": db_cpu * 1000 / jobs,
        "state": workflow.state,
        "members": members,
        **ledger_of(workflow),
    }
    ours = db_cpu + (own_end - own)
    if worker_cpu is not None and worker_cpu_end is not None:
        sample["worker_cpu_ms"] = (worker_cpu_end - worker_cpu) * 1000 / jobs
        sample["cpu_ms"] = sample["worker_cpu_ms"] + sample["db_cpu_ms"]
        ours += worker_cpu_end - worker_cpu
    if busy is not None and busy_end is not None:
        # Cores kept busy by everything else on the machine meanwhile (other developers'
        # test suites, PostgreSQL's background processes), on average.
        sample["other_cores"] = max(0.0, (busy_end - busy) - ours) / (wall - began)
    return sample


def workflow_member_span(workflow: Any, task_name: str) -> tuple[int, float]:
    """compare.member_span for one workflow's members: how many ran, and the seconds
    from the first one's start to the last one's success (Procrastinate's events)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(DISTINCT j.id),
                   extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')
                                    - min(e.at) FILTER (WHERE e.type = 'started'))
              FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id
             WHERE j.task_name = %s AND j.args->>'workflow_id' = %s
            """,
            [task_name, str(workflow.pk)],
        )
        count, span = cursor.fetchone()
    return int(count), float(span)


def ledger_of(workflow: Any) -> dict[str, Any]:
    """What the fan-out left in the ledger: rows, their cost, the workflow's running cost."""
    from django.db.models import Count, Sum

    from baton.models import LLMUsage

    totals = LLMUsage.objects.filter(workflow_id=workflow.pk).aggregate(
        rows=Count("id"), cost=Sum("cost_usd")
    )
    return {
        "ledger_rows": totals["rows"],
        "ledger_cost": totals["cost"] or Decimal(0),
        "workflow_cost": workflow.cost_usd,
        "unpriced": workflow.unpriced_calls,
    }


def ratios(
    samples: dict[str, list[dict[str, Any]]], key: str, base: str = BASELINE
) -> dict[str, list[float]]:
    """Each kind's value over the `base` kind's value in the same round, round by round."""
    values = [sample[key] for sample in samples[base]]
    return {
        kind: [sample[key] / b for sample, b in zip(runs, values, strict=True)]
        for kind, runs in samples.items()
        if kind != base
    }


def median_of(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [sample[key] for sample in samples if sample.get(key) is not None]
    return statistics.median(values) if values else None


# ------------------------------------------------------------- where a step's time goes
def micro_timings(repeat: int = 5, number: int = 2000) -> list[tuple[str, float]]:
    """In this process, microseconds per call of the worker-side parts an LLM member adds
    to a plain one (best of `repeat`, as timeit advises: the rest is the machine's noise)."""
    from baton.execution.step import _completed
    from baton.llm.ledger import Ledger, Totals, calls_json, usages_in
    from baton.llm.pricing import price
    from baton.llm.usage import Usage

    usage = Usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
    price(usage)  # loads genai-prices' tables (once per process: first_price_ms)
    one = Ledger()
    one.record(usage, "result")
    calls = one.calls()

    def record_one() -> None:
        Ledger().record(usage, "result")

    def thread_per_attempt() -> None:
        # What LLMStep's timeout costs a sync step (baton.execution.step._call_with_timeout).
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        executor.submit(lambda: None).result(timeout=120)
        executor.shutdown(wait=False)

    parts: list[tuple[str, Callable[[], Any]]] = [
        ("`Usage(...)` (construct and validate)", lambda: Usage(model="gpt-4o-mini")),
        ("`price(usage)` (genai-prices `calc_price`)", lambda: price(usage)),
        ("`Ledger.record` of one call (pricing included)", record_one),
        ("`usages_in` (LLMStep.on_result)", lambda: usages_in(usage)),
        ("`calls_json` of one call", lambda: calls_json(calls)),
        ("`Totals.of` one call", lambda: Totals.of(calls)),
        ('serialise `{"ok": True}` (any step with a result)', lambda: _completed("x", {"ok": 1})),
        ("a thread per attempt (LLMStep's `timeout`)", thread_per_attempt),
    ]
    return [
        (label, min(timeit.repeat(func, repeat=repeat, number=number)) / number * 1e6)
        for label, func in parts
    ]


FIRST_PRICE = """
import time, django
django.setup()
from baton.llm.pricing import price
from baton.llm.usage import Usage
started = time.process_time()
price(Usage(model="gpt-4o-mini", input_tokens=1000, output_tokens=100))
print(time.process_time() - started)
"""


def first_price_ms(times: int = 3) -> float | None:
    """CPU milliseconds of the first price() in a fresh process (a fresh worker pays it
    once: it imports genai-prices and loads its price tables), median of `times`."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    values = []
    for _ in range(times):
        done = subprocess.run(
            [sys.executable, "-c", FIRST_PRICE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        with contextlib.suppress(ValueError, IndexError):
            values.append(float(done.stdout.split()[-1]) * 1000)
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------- report
def phase_table(args: argparse.Namespace, samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One markdown table, a row per kind of member: its figures (medians of the rounds)
    and, against the plain members, the median of the per-round ratios."""
    members = ratios(samples, "members_per_s")
    jobs = ratios(samples, "jobs_per_s")
    # Plain's CPU per step over this kind's: the throughput ratio a machine with no spare
    # CPU would see, steadier than wall time on a shared machine.
    cpu = {kind: [1 / r for r in values] for kind, values in ratios(samples, "cpu_ms").items()}
    lines = [
        "| members | members/s | vs plain | per-round ratios | jobs/s, root to join | vs plain "
        "| worker CPU per step (ms) | PostgreSQL CPU per step (ms) | CPU ratio | ledger, "
        "each round |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for key in args.kind_keys:
        kind, runs = KINDS[key], samples[key]

        def vs(by_kind: dict[str, list[float]], key: str = key) -> str:
            values = by_kind.get(key)
            return "1x" if values is None else f"{statistics.median(values):.2f}x"

        per_round = ", ".join(f"{r:.2f}" for r in members.get(key, []))
        lines.append(
            f"| {kind.label} | {fmt(median_of(runs, 'members_per_s'))} | {vs(members)} "
            f"| {per_round} | {fmt(median_of(runs, 'jobs_per_s'))} | {vs(jobs)} "
            f"| {fmt(median_of(runs, 'worker_cpu_ms'), 2)} "
            f"| {fmt(median_of(runs, 'db_cpu_ms'), 2)} "
            f"| {vs(cpu)} | {ledger_cell(args, kind, runs)} |"
        )
    return lines


def ledger_cell(args: argparse.Namespace, kind: Kind, runs: list[dict[str, Any]]) -> str:
    """Ledger rows and the workflow's cost; flags a round whose ledger is not as expected."""
    rows = sorted({s["ledger_rows"] for s in runs})
    costs = sorted({s["workflow_cost"] for s in runs if s["workflow_cost"] is not None})
    ok = all(
        s["state"] == "completed"
        and s["members"] == args.fanout
        and s["ledger_rows"] == args.fanout * kind.calls
        and (s["workflow_cost"] or Decimal(0)) == s["ledger_cost"]
        and s["unpriced"] == 0
        for s in runs
    )
    cost = ", ".join(f"${c.normalize():f}" for c in costs) or "no cost"
    rows_text = "/".join(f"{r:,}" for r in rows)
    return f"{rows_text} rows, {cost}" + ("" if ok else " **(mismatch)**")


# What each kind adds to the one before it: a chain from the plain members to the LLM ones.
STEPS_OF_COST = [
    ('storing a result (`{"ok": True}`)', "plain", "plain-ok"),
    (
        "LLMStep itself: its hooks and the thread its `timeout` runs perform() in",
        "plain-ok",
        "llm-nousage",
    ),
    ("recording one call: pricing, the ledger row, the running costs", "llm-nousage", "llm"),
    ("LLMStep and recording one call, together", "plain-ok", "llm"),
    ("the `timeout` thread (LLMStep, 1 call with and without it)", "llm-notimeout", "llm"),
    ("two more calls (3 instead of 1, by `job.record_usage`)", "llm", "llm3"),
]


def cost_table(args: argparse.Namespace, samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Where an LLM member's time goes: CPU per step of one kind minus another's, median of
    the per-round differences (the two ran in the same round)."""
    lines = [
        "| what it adds | between | worker CPU per step (ms) | PostgreSQL CPU per step (ms) |",
        "|---|---|---:|---:|",
    ]
    present = set(args.kind_keys)
    for label, a, b in STEPS_OF_COST:
        if a not in present or b not in present:
            continue
        if label.startswith("LLMStep and") and "llm-nousage" in present:
            continue  # the two rows above it split it already
        cells = []
        for key in ("worker_cpu_ms", "db_cpu_ms"):
            pairs = [(y.get(key), x.get(key)) for x, y in zip(samples[a], samples[b], strict=True)]
            diffs = [y - x for y, x in pairs if y is not None and x is not None]
            cells.append(f"{statistics.median(diffs):+.2f}" if diffs else "n/a")
        lines.append(f"| {label} | {KINDS[a].label} -> {KINDS[b].label} | {' | '.join(cells)} |")
    return lines if len(lines) > 2 else []


def render(
    args: argparse.Namespace,
    samples: dict[str, dict[str, list[dict[str, Any]]]],
    micro: list[tuple[str, float]] | None,
    first_price: float | None,
    info: str,
    elapsed: float,
    load: tuple[str, str],
) -> str:
    warm, cold = samples["warm"], samples["cold"]

    def median_ratio(by_phase: dict[str, list[dict[str, Any]]], kind: str, **kw: Any) -> float:
        return statistics.median(ratios(by_phase, "members_per_s", **kw)[kind])

    headline = median_ratio(warm, HEADLINE)
    other_cores = [
        sample["other_cores"]
        for by_kind in samples.values()
        for runs in by_kind.values()
        for sample in runs
        if "other_cores" in sample
    ]
    busy = (
        "Measured while other processes ran: besides the benchmark's worker, its PostgreSQL "
        "backends and the script itself, the machine's other processes (other test suites, "
        f"PostgreSQL's background processes) kept {statistics.median(other_cores):.2f} of "
        f"its {os.cpu_count()} cores "
        f"busy on average (median over the fan-outs, range {min(other_cores):.2f} to "
        f"{max(other_cores):.2f}); load average {load[0]} at the start, {load[1]} at the end. "
        "Absolute rates are therefore noisy; the per-round ratios pair fan-outs run back to "
        "back and are the figures to read, and CPU per step is steadier still."
        if other_cores
        else "The machine's load could not be read (no /proc/stat)."
    )
    verdict_text = (
        f"**Verdict**: on a warm worker, LLM steps recording one call each ran at "
        f"**{headline:.2f}x** the plain steps' throughput (median of {args.rounds} per-round "
        f"ratios of members/s); the goal is >= {GOAL}x: met: {verdict(headline >= GOAL)}."
    )
    cpu = ratios(warm, "cpu_ms") if all("cpu_ms" in s for r in warm.values() for s in r) else {}
    if cpu:
        verdict_text += (
            f" By CPU per step (worker + PostgreSQL), plain's over theirs: "
            f"{statistics.median(1 / r for r in cpu[HEADLINE]):.2f}x."
        )
    if "plain-ok" in warm:
        verdict_text += (
            f' Against plain steps that store the same result (`{{"ok": True}}`): '
            f"{median_ratio(warm, HEADLINE, base='plain-ok'):.2f}x."
        )
    verdict_text += (
        f" On a cold worker (its first {args.fanout:,} steps): {median_ratio(cold, HEADLINE):.2f}x."
    )
    if "llm3" in warm:
        verdict_text += f" Three calls per step (warm): {median_ratio(warm, 'llm3'):.2f}x."

    parts = [
        START_MARKER,
        "## LLM steps vs plain steps",
        "",
        f"Measured {datetime.date.today().isoformat()} on {info}. Whole run: {elapsed:.0f}s. "
        + busy,
        "",
        "Regenerate with `DATABASE_URL=postgres://... .venv/bin/python bench/llm_fanout.py` "
        "(see `--help`; it rewrites only this section, between its marker comments).",
        "",
        f"Warm worker (the goal): each worker's second fan-out of {args.fanout:,} members. "
        "*vs plain* is the median of the per-round ratios to the plain members; *CPU ratio* "
        "is plain's worker + PostgreSQL CPU per step over this kind's, likewise.",
        "",
        *phase_table(args, warm),
        "",
        f"Cold worker: each worker's first fan-out of {args.fanout:,} members, right after "
        "it started.",
        "",
        *phase_table(args, cold),
        "",
        verdict_text,
        "",
    ]
    costs = cost_table(args, warm)
    if costs:
        parts += [
            "Where an LLM member's extra time goes, on the warm fan-outs: one kind's CPU per "
            "step minus another's (median of the per-round differences).",
            "",
            *costs,
            "",
        ]
    if micro:
        parts += [
            "The worker-side parts, timed in the benchmark's own process (best of 5 repeats "
            "of 2,000 calls; a worker pays them with its other threads contending for the GIL):",
            "",
            "| part | us per call |",
            "|---|---:|",
            *(f"| {label} | {us:,.1f} |" for label, us in micro),
            "",
        ]
        if first_price is not None:
            parts += [
                f"The first `price()` of a process costs {first_price:,.0f} ms of CPU (it "
                "imports genai-prices and loads its price tables; median of 3 fresh "
                "processes): once per worker, in its cold fan-out, where it holds the GIL "
                "and stalls the worker's other threads meanwhile.",
                "",
            ]
    parts += [
        METHOD.format(
            fanout=args.fanout,
            jobs=args.fanout + 2,
            concurrency=args.concurrency,
            polling=args.polling_interval,
            rounds=args.rounds,
            goal=GOAL,
        ),
        END_MARKER,
    ]
    return "\n".join(parts)


METHOD = """\
Method (`bench/llm_fanout.py`, on `bench/compare.py`'s harness): a fresh database; per
kind and round, emptied tables and a new `manage.py baton worker` process with
`--concurrency {concurrency}` and a polling interval of {polling}s, listening on every
queue, which runs two fan-outs one after the other: *cold* (the worker's first steps:
it imports what they need, opens a database connection per thread and prepares the
per-step statements on each) and *warm* (as a long-running worker is). Each fan-out is
a workflow root -> {fanout:,} members -> join. The plain members are `Noop`, a
`baton.Step` returning None. The LLM members are `LLMStep`s with `queue = "default"`
(so that they share the plain members' queue; every other option is LLMStep's
default: 5 attempts, a 120 s timeout) that call no model but report one call of
`gpt-4o-mini` (1,000 input and 100 output tokens): `LLMNoop` returns it as
`{{"ok": True, "llm_usage": Usage(...)}}` and so also stores the result `{{"ok": True}}`;
`LLMNoopThreeCalls` records three with `job.record_usage`. `PlainOk` (a plain step)
and `LLMNoopNoUsage` (an LLMStep recording nothing) return `{{"ok": True}}`, to tell
storing the result and LLMStep's own machinery from recording usage. Each call is
priced by genai-prices in the worker and written as a ledger row, with the step's and
the workflow's running cost, by the statement that completes the step
(`_COMPLETE_WITH_CALLS_SQL`; plain steps run `_COMPLETE_SQL`). *Members/s* counts the
members from the first one's `started` to the last one's `succeeded` event in
`procrastinate_events` (the steady state); *jobs/s* counts all {jobs:,} steps from the
root's start to the join's end. The kinds ran back to back in each of {rounds} rounds,
in reverse order every other round; rates are the median of the rounds, and the goal
(LLM members >= {goal}x the plain members' members/s, on a warm worker) is judged on
the median of the per-round ratios. *CPU per step* is the worker process's user +
system time, and that of the bench database's PostgreSQL backends (this script's own
connection left out; other databases on the server are not counted), over the
fan-out, divided by its {jobs:,} steps. The ledger row checks that every round stored
one row per recorded call, that the workflow's running cost equals the ledger's sum,
and that no call was unpriced.
"""


def write_section(path: Path, section: str) -> str:
    """Replace the text between the markers in `path` (or append it with them)."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        new = text[:start] + section + text[end + len(END_MARKER) :]
        how = "replaced the section between the llm-fanout markers in"
    else:
        new = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
        how = "appended the llm-fanout section to"
    path.write_text(new)
    return how


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "n/a"


def brief(sample: dict[str, Any]) -> str:
    keys = ("members_per_s", "jobs_per_s", "worker_cpu_ms", "db_cpu_ms", "other_cores")
    parts = [f"{key}={sample[key]:.2f}" for key in keys if sample.get(key) is not None]
    parts.append(f"ledger_rows={sample['ledger_rows']} cost={sample['workflow_cost']}")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.monotonic()
    load_start = load_average()
    bench_url = with_database(args.database_url, args.bench_db)
    create_database(args.database_url, args.bench_db)
    setup_django(bench_url)
    info = machine()
    print(f"# {info}", flush=True)

    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        phase: {key: [] for key in args.kind_keys} for phase in PHASES
    }
    for round_number in range(1, args.rounds + 1):
        # Alternate the order, so that no kind always runs right after another.
        order = args.kind_keys if round_number % 2 else args.kind_keys[::-1]
        for key in order:
            started = time.monotonic()
            by_phase = measure(KINDS[key], args)
            for phase in ("cold", "warm"):
                samples[phase][key].append(by_phase[phase])
                print(
                    f"round {round_number} | {key:<13} | {phase} | "
                    f"{time.monotonic() - started:5.1f}s | {brief(by_phase[phase])}",
                    flush=True,
                )
    micro = None if args.no_micro else micro_timings()
    first_price = None if args.no_micro else first_price_ms()
    section = render(
        args,
        samples,
        micro,
        first_price,
        info,
        time.monotonic() - began,
        (load_start, load_average()),
    )
    print()
    print(section)
    if not args.no_write:
        how = write_section(args.output, section)
        print(f"\n{how} {args.output}")


if __name__ == "__main__":
    main()
