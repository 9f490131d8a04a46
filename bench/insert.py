"""Benchmark: how long insert() takes for a large layered workflow.

    DATABASE_URL=postgres://USER@HOST:PORT/DB .venv/bin/python bench/insert.py \
        [--steps 10000] [--repeat 5] [--fan-in 3] [--layers 20] [--profile]

DATABASE_URL names a server and a database to connect to for administration; the
benchmark creates its own database (`--database`, default baton_bench_insert) next to
it, migrates it, and drops it at the end unless --keep. Each timed run inserts the whole
workflow (validation included) into emptied tables; one untimed warm-up run goes first.
Prints a markdown table. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per workflow")
    parser.add_argument("--repeat", type=int, default=5, help="timed inserts")
    parser.add_argument("--layers", type=int, default=20, help="layers of the DAG")
    parser.add_argument("--fan-in", type=int, default=3, help="deps of each non-root step")
    parser.add_argument("--database", default="baton_bench_insert", help="database to create")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--profile", action="store_true", help="cProfile one extra insert")
    parser.add_argument("--seed", type=int, default=2)
    return parser.parse_args()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def recreate_database(admin_url: str, name: str) -> None:
    if urlsplit(admin_url).path.lstrip("/") == name:
        raise SystemExit(f"--database {name!r} is the DATABASE_URL database; pick another name")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def layered_workflow(steps: int, layers: int, fan_in: int, seed: int) -> Any:
    """`layers` layers of about steps/layers steps; each non-root step depends on `fan_in`
    random steps of the layer before (fewer if that layer is smaller). The first layer
    are the roots, enqueued at insert."""
    import baton
    from tests.testapp.tasks import Collect, Echo

    rng = random.Random(seed)
    builder = baton.new("bench-insert")
    sizes = [steps // layers + (1 if index < steps % layers else 0) for index in range(layers)]
    previous: list[str] = []
    for layer, size in enumerate(sizes):
        current = [f"l{layer}s{index}" for index in range(size)]
        for name in current:
            if previous:
                deps = rng.sample(previous, min(fan_in, len(previous)))
                builder.add(name, Collect.new(layer=layer), deps=deps)
            else:
                builder.add(name, Echo.new(value={"name": name, "layer": layer}))
        previous = current
    return builder


def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE baton_workflow, baton_step, baton_stepdependency, baton_stepresult, "
            "procrastinate_jobs, procrastinate_events CASCADE"
        )


def timed_insert(builder: Any) -> float:
    empty_tables()
    start = time.perf_counter()
    builder.insert()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    admin_url = os.environ.get("DATABASE_URL")
    if not admin_url:
        raise SystemExit("set DATABASE_URL (a server and a database to connect to)")
    bench_url = with_database(admin_url, args.database)
    recreate_database(admin_url, args.database)
    try:
        setup_django(bench_url)
        builder = layered_workflow(args.steps, args.layers, args.fan_in, args.seed)
        edges = sum(len(upstream) for upstream in builder.edges().values())
        roots = sum(1 for upstream in builder.edges().values() if not upstream)

        validate_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            builder.validate()
            validate_times.append(time.perf_counter() - start)

        timed_insert(builder)  # warm-up: connection, caches
        times = [timed_insert(builder) for _ in range(args.repeat)]

        from baton.models import StepDependency, WorkflowStep

        assert WorkflowStep.objects.count() == args.steps
        assert StepDependency.objects.count() == edges

        best, median = min(times), statistics.median(times)
        print()
        print(f"insert() of one layered workflow, {args.repeat} runs after a warm-up")
        print()
        print(
            "| steps | layers | fan-in | edges | root jobs | min | median | max "
            "| steps/s (median) | validate only (median) |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.steps} | {args.layers} | {args.fan_in} | {edges} | {roots} "
            f"| {best * 1000:.0f} ms | {median * 1000:.0f} ms | {max(times) * 1000:.0f} ms "
            f"| {args.steps / median:,.0f} | {statistics.median(validate_times) * 1000:.0f} ms |"
        )

        if args.profile:
            empty_tables()
            profiler = cProfile.Profile()
            profiler.enable()
            builder.insert()
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
