"""Every benchmark script runs at a tiny size, so that the benchmarks cannot rot.

Benchmarks are scripts (bench/), not timed tests: this asserts only that each one runs
to the end and prints its report. Each gets a database of its own next to the test
database, dropped afterwards. bench/peers.py runs its Celery peer only when celery is
installed (the `bench` extra); without it the peer is skipped, and so is the test that
needs it, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.parse
import uuid

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.worker, pytest.mark.slow]

ROOT = REPO_ROOT
BENCH = ROOT / "bench"

# Modules of bench/ that are not scripts.
NOT_SCRIPTS = {"__init__.py", "settings.py", "urls.py", "celery_peer.py"}

# Each script's smallest useful run, as command-line arguments. A script with its own
# --smoke option needs no entry. {db} is a database name of the test's own.
SMOKE_ARGS: dict[str, str] = {
    "compare.py": "--bench-db {db} --fanout 20 --chain 5 --rounds 1 --snoozes 2 "
    "--snooze-seconds 0.1 --only fanout,chain,snooze --no-write",
    "llm_fanout.py": "--bench-db {db} --fanout 10 --rounds 1 --kinds plain,llm --no-micro "
    "--no-write",
    "insert.py": "--database {db} --steps 100 --repeat 1 --layers 5",
    "graft.py": "--database {db} --steps 50 --repeat 1",
    "broadcast.py": "--bench-db {db} --fanout 10 --warmup 5 --rounds 1 --no-write",
    "peers.py": "--bench-db {db} --smoke",
    "scale.py": "--bench-db {db} --smoke",
}


def scripts() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_SCRIPTS)


def admin_url() -> str:
    """The test server, on its maintenance database (the scripts create their own)."""
    settings = connection.settings_dict
    netloc = f"{settings['USER']}@{settings['HOST']}:{settings['PORT']}"
    if settings.get("PASSWORD"):
        netloc = (
            f"{settings['USER']}:{urllib.parse.quote(settings['PASSWORD'])}@"
            + netloc.split("@", 1)[1]
        )
    return f"postgres://{netloc}/postgres"


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_every_bench_script_has_a_smoke() -> None:
    missing = [
        name
        for name in scripts()
        if name not in SMOKE_ARGS and "--smoke" not in (BENCH / name).read_text()
    ]
    assert not missing, (
        f"bench scripts without a smoke run: {missing}; give them a --smoke option or an "
        f"entry in SMOKE_ARGS ({__file__})"
    )


@pytest.mark.parametrize("script", scripts())
def test_bench_script_smoke(script: str) -> None:
    url = admin_url()
    db = f"bench_smoke_{script.removesuffix('.py')}_{uuid.uuid4().hex[:6]}"
    args = SMOKE_ARGS.get(script, "--smoke").format(db=db).split()
    if script == "peers.py":
        args.append("--no-celery")  # test_peers_smoke_includes_celery runs that peer
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # each script picks its own settings
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        drop_database(url, db)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} {' '.join(args)} failed:\n{output[-4000:]}"
    assert "|" in done.stdout, f"{script} printed no table:\n{output[-4000:]}"


def test_peers_smoke_includes_celery() -> None:
    """bench/peers.py --smoke measured Celery too (when it can)."""
    if importlib.util.find_spec("celery") is None:
        pytest.skip("celery is not installed (pip install -e '.[bench]'): no Celery peer")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: bench/peers.py cannot start Celery's Redis")
    url = admin_url()
    db = f"bench_smoke_celery_{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH / "peers.py"), "--bench-db", db, "--smoke",
             "--only", "fanout,chain", "--systems", "baton,Celery"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        drop_database(url, db)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "| Celery |" in done.stdout, output[-4000:]
