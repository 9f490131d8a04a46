"""Celery 5 workloads for bench/peers.py, set up as Celery's docs set up a project.

Broker and result backend are the Redis server bench/peers.py starts for itself
(BENCH_CELERY_REDIS, e.g. redis://127.0.0.1:56411): broker on db 0, results on db 1,
timings on db 2. Canvases are Celery's own: a fan-out is chain(root, chord(group of
members, join)), a chain is chain(links), a graph is chain(group per layer). Each
timed task pushes [name, seq, started, finished] (time.time()) to the run's Redis list,
as the baton and Procrastinate tasks write a Timing row. No Django here.
"""

from __future__ import annotations

import json
import os
import time
from functools import cache
from typing import Any

import redis
from celery import Celery

_REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:56411")

app = Celery("bench_peers", broker=f"{_REDIS}/0", backend=f"{_REDIS}/1")
app.conf.update(
    # Celery's defaults otherwise (prefork pool, prefetch multiplier 4, acks early).
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@cache
def _timings() -> redis.Redis:
    return redis.Redis.from_url(f"{_REDIS}/2")


def record(run: str, name: str, started: float, seq: int = 0) -> None:
    _timings().rpush(f"t:{run}", json.dumps([name, seq, started, time.time()]))


def read_timings(run: str) -> list[tuple[str, int, float, float]]:
    rows = [json.loads(item) for item in _timings().lrange(f"t:{run}", 0, -1)]
    return [(name, int(seq), float(a), float(b)) for name, seq, a, b in rows]


@app.task(name="peer.mark")
def mark(run: str, name: str, seq: int = 0, sleep: float = 0.0) -> None:
    """Sleeps `sleep` seconds (a graph's step, a model call) and records itself."""
    started = time.time()
    if sleep:
        time.sleep(sleep)
    record(run, name, started, seq)


@app.task(name="peer.noop")
def noop(*_: Any) -> None:
    """A fan-out member: does nothing."""


@app.task(name="peer.sleep")
def sleep(seconds: float) -> None:
    """An in-flight member: waits `seconds` (a thread of the threads pool)."""
    time.sleep(seconds)
