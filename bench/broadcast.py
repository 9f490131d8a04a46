"""Fan-out throughput with broadcasting over a real channels-redis layer on, against off.

    DATABASE_URL=postgres://user@host:port/anydb REDIS_URL=redis://host:port/db \\
        .venv/bin/python bench/broadcast.py

The harness is bench/compare.py's: DATABASE_URL names a server and a database to connect
to for administration; the run drops and creates its own database there (--bench-db,
default baton_bench_broadcast), migrates it, and measures with real `manage.py baton
worker` processes at compare.py's concurrency and polling interval. Each kind gets a
fresh worker per round, which runs a warm-up fan-out and then the measured one, a
workflow root -> N no-op members -> join:

    off        BATON["CHANNEL_LAYER"] unset: nothing is broadcast (the baseline)
    on         a RedisChannelLayer on REDIS_URL (prefix "baton-bench"): every transition
               is broadcast to the workflow's group and to the list's, as shipped (a pass
               of the sender thread goes out as one message per group)
    per-event  the same with baton.broadcast.MAX_PER_MESSAGE = 1: a group_send per event
               per group, as baton sent before batching

While the "on" kinds run, this script listens on both groups (as an open workflow page
and an open index would, through their consumers) and counts the events and messages
that arrive. Kinds run back to back in each round, in reverse order every other round;
the goal (on >= 0.9x off) is judged on the median of the per-round ratios of members/s.
The markdown section is printed and written into docs/benchmarks.md between the
broadcast marker comments (--output); the rest of that file is left alone. This is a
script, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    WorkerProcess,
    _latest_worker_id,
    create_database,
    fmt,
    machine,
    new_run,
    process_cpu_seconds,
    reset_tables,
    setup_django,
    timings,
    verdict,
    wait_until,
    with_database,
)
from bench.llm_fanout import (  # noqa: E402
    backends_delta,
    bench_backends_cpu,
    load_average,
    machine_busy_seconds,
    own_cpu_seconds,
    workflow_member_span,
)

START_MARKER = "<!-- broadcast:start -->"
END_MARKER = "<!-- broadcast:end -->"
GOAL = 0.9  # members/s with the layer on over off, median of the per-round ratios
PREFIX = "baton-bench"  # the layer's key prefix: no other user of that Redis sees these


@dataclass(frozen=True)
class Kind:
    key: str
    label: str
    broadcast: bool
    per_message: int | None  # baton.broadcast.MAX_PER_MESSAGE in the worker; None: as is


KINDS = {
    kind.key: kind
    for kind in (
        Kind("off", "layer off", False, None),
        Kind("on", "layer on (one message per group per pass)", True, None),
        Kind("per-event", "layer on, a message per event (before batching)", True, 1),
    )
}
BASELINE, HEADLINE = "off", "on"

# The worker of a kind with per_message set: baton's worker command, with the constant
# changed before it starts (the sender reads it at each pass).
WORKER_SHIM = """
import os, sys, django
django.setup()
import baton.broadcast
baton.broadcast.MAX_PER_MESSAGE = int(os.environ["BENCH_BROADCAST_PER_MESSAGE"])
from django.core.management import execute_from_command_line
execute_from_command_line(["django", *sys.argv[1:]])
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--bench-db", default="baton_bench_broadcast", help="dropped and recreated")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--polling-interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--fanout", type=int, default=1000, help="fan-out width")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up fan-out width")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--kinds", default="off,on,per-event", help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")
    if not args.redis_url:
        parser.error("set REDIS_URL or pass --redis-url (a Redis this run may write to)")
    keys = [key.strip() for key in args.kinds.split(",") if key.strip()]
    unknown = [key for key in keys if key not in KINDS]
    if unknown:
        parser.error(f"unknown --kinds {unknown}; choose from {list(KINDS)}")
    for key in (HEADLINE, BASELINE):
        if key not in keys:
            keys.insert(0, key)
    args.kind_keys = [key for key in KINDS if key in keys]
    return args


# ----------------------------------------------------------------------------- worker
class BroadcastWorker(WorkerProcess):
    """compare.py's baton worker, with broadcasting on or off by its environment."""

    def __init__(self, kind: Kind, args: argparse.Namespace) -> None:
        super().__init__("baton", args.concurrency, args.polling_interval)
        self.env = {"BENCH_BROADCAST_REDIS": args.redis_url} if kind.broadcast else {}
        if kind.per_message is not None:
            self.env["BENCH_BROADCAST_PER_MESSAGE"] = str(kind.per_message)
        self.shim = kind.per_message is not None

    def start(self, timeout: float = 30.0) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BENCH_BROADCAST")},
            **self.env,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        command = (
            [sys.executable, "-c", WORKER_SHIM, *self.args]
            if self.shim
            else [sys.executable, "-m", "django", *self.args]
        )
        before = _latest_worker_id()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
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
                raise RuntimeError(f"worker did not start:\n{self.log_tail()}")
            time.sleep(0.05)


@contextlib.contextmanager
def running(kind: Kind, args: argparse.Namespace) -> Iterator[BroadcastWorker]:
    reset_tables()
    worker = BroadcastWorker(kind, args)
    worker.start()
    try:
        yield worker
    except BaseException:
        worker.stop()
        print(f"worker log kept: {worker.log}", file=sys.stderr)
        raise
    worker.stop()
    worker.log.unlink(missing_ok=True)


# --------------------------------------------------------------------------- listener
class Listener:
    """Receives what the worker broadcasts to one workflow's group and to the list's, in
    a thread of its own (its own event loop), counting events and messages."""

    def __init__(self, redis_url: str, workflow_id: Any) -> None:
        from channels_redis.core import RedisChannelLayer

        from baton.broadcast import WORKFLOW_LIST_GROUP, workflow_group

        self.workflow_id = str(workflow_id)
        self.layer = RedisChannelLayer(
            hosts=[{"address": redis_url, "socket_timeout": None}], prefix=PREFIX
        )
        token = new_run("listen")
        self.channels = {
            "workflow": (workflow_group(workflow_id), f"bench-wf-{token}"),
            "list": (WORKFLOW_LIST_GROUP, f"bench-list-{token}"),
        }
        self.events = dict.fromkeys(self.channels, 0)
        self.messages = dict.fromkeys(self.channels, 0)
        self.finished = dict.fromkeys(self.channels, False)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the listener did not join its groups in 30 s")

    async def _main(self) -> None:
        for group, channel in self.channels.values():
            await self.layer.group_add(group, channel)
        self.ready.set()
        await asyncio.gather(*(self._receive(key) for key in self.channels))
        for group, channel in self.channels.values():
            await self.layer.group_discard(group, channel)
        await self.layer.flush()

    async def _receive(self, key: str) -> None:
        _, channel = self.channels[key]
        while not self.stop.is_set():
            try:
                message = await asyncio.wait_for(self.layer.receive(channel), 0.5)
            except TimeoutError:
                continue
            # The list's group also carries other workflows' events (the warm-up's last).
            events = [e for e in message.get("events", [message]) if self._mine(e)]
            if not events:
                continue
            self.messages[key] += 1
            self.events[key] += len(events)
            if any(
                e.get("event") == "workflow" and e["workflow"]["state"] == "completed"
                for e in events
            ):
                self.finished[key] = True

    def _mine(self, event: dict[str, Any]) -> bool:
        return event.get("workflow_id") == self.workflow_id

    def close(self) -> dict[str, Any]:
        """Once the finish arrived on both, wait for a quiet half second, stop, report."""
        wait_until_true(lambda: all(self.finished.values()), 30)
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 0.5:
            total = sum(self.events.values())
            if total != last:
                last, stable_since = total, time.monotonic()
            time.sleep(0.05)
        self.stop.set()
        self.thread.join(10)
        return {
            "events": dict(self.events),
            "messages": dict(self.messages),
            "finished": all(self.finished.values()),
        }


def wait_until_true(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ----------------------------------------------------------------------- measurements
def measure(kind: Kind, args: argparse.Namespace) -> dict[str, Any]:
    with running(kind, args) as worker:
        fan_out(kind, args, worker, args.warmup, listen=False)
        return fan_out(kind, args, worker, args.fanout, listen=kind.broadcast)


def fan_out(
    kind: Kind, args: argparse.Namespace, worker: Any, width: int, listen: bool
) -> dict[str, Any]:
    import baton
    from baton.testing import wait_for_workflow
    from bench.benchapp.tasks import Mark, Noop

    run = new_run(f"broadcast-{kind.key}")
    builder = (
        baton.new(run)
        .add("root", Mark.new(run=run))
        .add_many("fan", [Noop.new() for _ in range(width)], deps=["root"])
        .add("join", Mark.new(run=run), deps=["fan"])
    )
    listener = Listener(args.redis_url, builder.workflow_id) if listen else None
    pid = worker.process.pid
    worker_cpu, backends = process_cpu_seconds(pid), bench_backends_cpu()
    busy, own, began = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
    workflow = builder.insert()
    wait_until(
        lambda: {t.name for t in timings(run)} >= {"root", "join"},
        timeout=max(120.0, width / 5),
        what=f"fan-out ({kind.key})",
        worker=worker,
    )
    workflow = wait_for_workflow(workflow, timeout=30, poll=0.1)
    worker_cpu_end, backends_end = process_cpu_seconds(pid), bench_backends_cpu()
    busy_end, own_end, wall = machine_busy_seconds(), own_cpu_seconds(), time.monotonic()
    rows = {t.name: t for t in timings(run)}
    members, span = workflow_member_span(workflow, Noop.task_name)
    jobs = width + 2
    db_cpu = backends_delta(backends, backends_end)
    sample: dict[str, Any] = {
        "members_per_s": members / span,
        "jobs_per_s": jobs / (rows["join"].finished - rows["root"].started),
        "db_cpu_ms": db_cpu * 1000 / jobs,
        "state": workflow.state,
        "members": members,
    }
    ours = db_cpu + (own_end - own)
    if worker_cpu is not None and worker_cpu_end is not None:
        sample["worker_cpu_ms"] = (worker_cpu_end - worker_cpu) * 1000 / jobs
        ours += worker_cpu_end - worker_cpu
    if busy is not None and busy_end is not None:
        sample["other_cores"] = max(0.0, (busy_end - busy) - ours) / (wall - began)
    if listener is not None:
        sample["received"] = listener.close()
    return sample


def ratios(samples: dict[str, list[dict[str, Any]]], key: str) -> dict[str, list[float]]:
    base = [sample[key] for sample in samples[BASELINE]]
    return {
        kind: [sample[key] / b for sample, b in zip(runs, base, strict=True)]
        for kind, runs in samples.items()
        if kind != BASELINE
    }


def median_of(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [sample[key] for sample in samples if sample.get(key) is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------- report
def delivery_cell(runs: list[dict[str, Any]]) -> str:
    received = [run["received"] for run in runs if "received" in run]
    if not received:
        return "—"
    events = statistics.median(r["events"]["workflow"] for r in received)
    messages = statistics.median(r["messages"]["workflow"] for r in received)
    list_messages = statistics.median(r["messages"]["list"] for r in received)
    same = all(r["events"]["workflow"] == r["events"]["list"] for r in received)
    finished = all(r["finished"] for r in received)
    text = (
        f"{events:,.0f} events in {messages:,.0f} messages to the workflow's group, "
        f"{list_messages:,.0f} to the list's"
    )
    return text + ("" if same and finished else " **(events missing)**")


def render(
    args: argparse.Namespace,
    samples: dict[str, list[dict[str, Any]]],
    info: str,
    elapsed: float,
    load: tuple[str, str],
) -> str:
    members = ratios(samples, "members_per_s")
    jobs = ratios(samples, "jobs_per_s")
    headline = statistics.median(members[HEADLINE])
    lines = [
        "| broadcasting | members/s | vs off | per-round ratios | jobs/s, root to join "
        "| vs off | worker CPU per step (ms) | PostgreSQL CPU per step (ms) | received |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for key in args.kind_keys:
        runs = samples[key]

        def vs(by_kind: dict[str, list[float]], key: str = key) -> str:
            values = by_kind.get(key)
            return "1x" if values is None else f"{statistics.median(values):.2f}x"

        per_round = ", ".join(f"{r:.2f}" for r in members.get(key, []))
        lines.append(
            f"| {KINDS[key].label} | {fmt(median_of(runs, 'members_per_s'))} | {vs(members)} "
            f"| {per_round} | {fmt(median_of(runs, 'jobs_per_s'))} | {vs(jobs)} "
            f"| {fmt(median_of(runs, 'worker_cpu_ms'), 2)} "
            f"| {fmt(median_of(runs, 'db_cpu_ms'), 2)} | {delivery_cell(runs)} |"
        )
    cpu_text = ""
    off_cpu, on_cpu = (median_of(samples[k], "worker_cpu_ms") for k in (BASELINE, HEADLINE))
    if off_cpu is not None and on_cpu is not None:
        cpu_text = f" Broadcasting costs the worker {on_cpu - off_cpu:+.2f} ms of CPU per step."
    if "per-event" in samples:
        event_cpu = median_of(samples["per-event"], "worker_cpu_ms")
        if event_cpu is not None and off_cpu is not None:
            cpu_text += (
                f" Sent a message per event per group, as before batching: "
                f"{event_cpu - off_cpu:+.2f} ms, {statistics.median(members['per-event']):.2f}x."
            )
    other = [s["other_cores"] for runs in samples.values() for s in runs if "other_cores" in s]
    busy = (
        f" Besides the benchmark's own processes, the machine's other processes kept "
        f"{statistics.median(other):.2f} of its {os.cpu_count()} cores busy on average "
        f"(median over the fan-outs, range {min(other):.2f} to {max(other):.2f}); load average "
        f"{load[0]} at the start, {load[1]} at the end: read the per-round ratios."
        if other
        else ""
    )
    return "\n".join(
        [
            START_MARKER,
            "## Broadcasting over Redis vs not",
            "",
            f"Measured {datetime.date.today().isoformat()} on {info}. Whole run: "
            f"{elapsed:.0f}s.{busy}",
            "",
            "Regenerate with `DATABASE_URL=postgres://... REDIS_URL=redis://... "
            ".venv/bin/python bench/broadcast.py` (see `--help`; it rewrites only this "
            "section, between its marker comments).",
            "",
            *lines,
            "",
            f"**Verdict**: with a channels-redis layer on and a listener on both groups, a "
            f"{args.fanout:,}-wide fan-out ran at **{headline:.2f}x** the members/s of the "
            f"layer off (median of {args.rounds} per-round ratios); the goal is >= {GOAL}x: "
            f"met: {verdict(headline >= GOAL)}.{cpu_text}",
            "",
            METHOD.format(
                fanout=args.fanout,
                warmup=args.warmup,
                jobs=args.fanout + 2,
                concurrency=args.concurrency,
                polling=args.polling_interval,
                rounds=args.rounds,
                goal=GOAL,
            ),
            END_MARKER,
        ]
    )


METHOD = """\
Method (`bench/broadcast.py`, on `bench/compare.py`'s harness): a fresh database; per
kind and round, emptied tables and a new `manage.py baton worker` process with
`--concurrency {concurrency}` and a polling interval of {polling}s, which runs a
{warmup:,}-wide warm-up fan-out and then the measured one, root -> {fanout:,} `Noop`
members -> join. *Layer on* gives the worker a `channels_redis.core.RedisChannelLayer`
on the same Redis server the script listens on (`BATON["CHANNEL_LAYER"]`; redis-py 8,
`socket_timeout: None`), so every step transition is queued for the sender thread, which
sends what gathered since its last pass as one message to each group it concerns (the
workflow's and the list's; at most 100 events a message). *A message per event* is the
same worker with `MAX_PER_MESSAGE = 1`: two `group_send` calls per transition, as baton
broadcast before batching. During the measured fan-out the script is a member of both
groups (as the consumers of an open workflow page and an open index are), so each
`group_send` also delivers, and it counts what arrives (*events missing*: fewer arrived
on a group than were sent, channels-redis dropping messages beyond a channel's capacity
of 100 while the listener lags). *Members/s* counts the members from the first one's
`started` to the last one's `succeeded` event in `procrastinate_events`; *jobs/s* all
{jobs:,} steps from the root's start to the join's end. Kinds ran back to back in each
of {rounds} rounds, in reverse order every other round; the goal (on >= {goal}x off) is
judged on the median of the per-round ratios. *CPU per step* is the worker process's
user + system time, and that of the bench database's PostgreSQL backends, over the
fan-out, divided by its {jobs:,} steps.
"""


def write_section(path: Path, section: str) -> str:
    """Replace the text between the markers in `path` (or append it with them)."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start != -1 and end > start:
        new = text[:start] + section + text[end + len(END_MARKER) :]
        how = "replaced the section between the broadcast markers in"
    else:
        new = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
        how = "appended the broadcast section to"
    path.write_text(new)
    return how


def brief(sample: dict[str, Any]) -> str:
    keys = ("members_per_s", "jobs_per_s", "worker_cpu_ms", "db_cpu_ms", "other_cores")
    parts = [f"{key}={sample[key]:.2f}" for key in keys if sample.get(key) is not None]
    if "received" in sample:
        received = sample["received"]
        parts.append(f"events={received['events']} messages={received['messages']}")
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
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in args.kind_keys}
    for round_number in range(1, args.rounds + 1):
        order = args.kind_keys if round_number % 2 else args.kind_keys[::-1]
        for key in order:
            started = time.monotonic()
            sample = measure(KINDS[key], args)
            samples[key].append(sample)
            print(
                f"round {round_number} | {key:<9} | {time.monotonic() - started:5.1f}s | "
                f"{brief(sample)}",
                flush=True,
            )
    section = render(args, samples, info, time.monotonic() - began, (load_start, load_average()))
    print()
    print(section)
    if not args.no_write:
        how = write_section(args.output, section)
        print(f"\n{how} {args.output}")


if __name__ == "__main__":
    main()
