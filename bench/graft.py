"""Benchmark: how long a grafting step's completion takes for a graft of 10,000 steps.

    DATABASE_URL=postgres://USER@HOST:PORT/DB .venv/bin/python bench/graft.py \
        [--steps 10000] [--repeat 5] [--profile]

What is timed is what the task wrapper runs once perform() has returned a graft: the
graft's check (graft_problems: names, dependencies, limits) and the completion that
writes the graft with the step's completion in one transaction (advance.finish: steps
and edges by COPY, the ready steps' jobs, the dependents' new edges, the commit). The
step is claimed, and its graft built (job.graft().add_many, the user's own perform()
time, shown apart), in-process, as tests/integration/test_graft_budget.py does. Each timed run
grafts onto a fresh two-step workflow (g -> after) in emptied tables; one untimed
warm-up run goes first.

DATABASE_URL names a server and a database to connect to for administration; the
benchmark creates its own database (`--database`, default baton_bench_graft) next to
it, migrates it, and drops it at the end unless --keep. Prints a markdown table. Not a
test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.insert import (  # noqa: E402 - after the path that makes `bench` importable
    drop_database,
    empty_tables,
    recreate_database,
    setup_django,
    with_database,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps in the graft")
    parser.add_argument("--repeat", type=int, default=5, help="timed grafting completions")
    parser.add_argument("--database", default="baton_bench_graft", help="database to create")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra run")
    args = parser.parse_args()
    if args.steps < 1 or args.repeat < 1:
        parser.error("--steps and --repeat must be at least 1")
    return args


def claimed_grafting_step(steps: int) -> tuple[Any, Any, Any, float]:
    """A fresh workflow g -> after with g claimed, its graft of `steps` steps built as
    perform() builds it, and the outcome perform() returned; and the graft's build time."""
    import baton
    from baton.execution import advance
    from baton.execution.graft import GraftBuilder
    from baton.models import WorkflowStep
    from tests.testapp.tasks import Echo

    empty_tables()
    workflow = (
        baton.new("bench-graft").add("g", Echo.new()).add("after", Echo.new(), deps=["g"]).insert()
    )
    row = WorkflowStep.objects.get(workflow=workflow, name="g")
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    start = time.perf_counter()
    graft = GraftBuilder("graft of g", workflow.pk)
    graft.add_many("parts", {str(i): Echo.new(value=i) for i in range(steps)}, deps=["g"])
    built = time.perf_counter() - start
    text = json.dumps({"parts": steps})
    outcome = advance.Completed(value_json=text, size_bytes=len(text), graft=graft)
    return claimed, graft, outcome, built


def grafting_completion(claimed: Any, graft: Any, outcome: Any) -> tuple[float, float]:
    """(seconds of the graft's check, seconds of the completion)."""
    from baton.execution import advance
    from baton.execution.graft import graft_problems

    start = time.perf_counter()
    problems = graft_problems(claimed, graft)
    checked = time.perf_counter()
    assert not problems, problems
    assert advance.finish(claimed, outcome)
    return checked - start, time.perf_counter() - checked


def timed_run(steps: int) -> tuple[float, float, float]:
    """(build, check, completion) seconds of one graft of `steps` steps, verified."""
    from baton.models import WorkflowStep

    claimed, graft, outcome, built = claimed_grafting_step(steps)
    check, completion = grafting_completion(claimed, graft, outcome)
    after = WorkflowStep.objects.get(workflow_id=claimed.step.workflow_id, name="after")
    assert after.deps_total == steps + 1, after.deps_total
    assert (
        WorkflowStep.objects.filter(grafted_by=claimed.step.id, state="available").count() == steps
    )
    return built, check, completion


def main() -> None:
    args = parse_args()
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        raise SystemExit("set DATABASE_URL (a server and a database to connect to)")
    recreate_database(admin_url, args.database)
    try:
        setup_django(with_database(admin_url, args.database))
        load_before = os.getloadavg()
        timed_run(args.steps)  # warm-up: connection, caches
        runs = [timed_run(args.steps) for _ in range(args.repeat)]
        builds, checks, completions = zip(*runs, strict=True)
        totals = [check + completion for _, check, completion in runs]
        median = statistics.median(totals)

        def ms(values: Any) -> str:
            return f"{statistics.median(values) * 1000:.0f} ms"

        print()
        print(f"A grafting step's completion, {args.repeat} runs after a warm-up (medians)")
        print()
        print(
            "| grafted steps | check + completion (min) | check + completion | max "
            "| check | completion | grafted steps/s | building the graft in perform() |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.steps:,} | {min(totals) * 1000:.0f} ms | {median * 1000:.0f} ms "
            f"| {max(totals) * 1000:.0f} ms | {ms(checks)} | {ms(completions)} "
            f"| {args.steps / median:,.0f} | {ms(builds)} |"
        )
        print()
        print(
            f"{os.cpu_count()} CPU(s); load average {' '.join(f'{x:.2f}' for x in load_before)} "
            f"before, {' '.join(f'{x:.2f}' for x in os.getloadavg())} after (other processes "
            "on the machine slow every figure)."
        )

        if args.profile:
            claimed, graft, outcome, _ = claimed_grafting_step(args.steps)
            profiler = cProfile.Profile()
            profiler.enable()
            grafting_completion(claimed, graft, outcome)
            profiler.disable()
            print()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(15)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_database(admin_url, args.database)


if __name__ == "__main__":
    main()
