"""manage.py baton <command>: worker, sweep, prune, list, show, cancel, retry."""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import logging
import math
import os
import re
import shutil
import socket
import sys
import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone
from procrastinate.contrib.django import app, django_connector

from baton.conf import settings as baton_settings
from baton.display import format_usd
from baton.execution.deferrer import database_alias
from baton.execution.registry import registry
from baton.execution.worker import run_worker, worker_connector
from baton.explain import explain, queue_listeners
from baton.graph.states import WorkflowState
from baton.models import StepDependency, Workflow, WorkflowStep
from baton.sweep import prune_workflows
from baton.sweep import sweep as run_sweep

TERMINAL = ("completed", "discarded", "cancelled")


# argparse `type=` functions: argparse names the argument in the error ("argument
# -c/--concurrency: ..."), and Django turns it into a CommandError (or usage + exit 2).
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_seconds(text: str) -> float:
    """Seconds, more than 0: a zero or negative interval would busy-loop or mean nothing."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text!r}")
    return value


def non_negative_seconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def duration(text: str) -> datetime.timedelta:
    """A non-negative age such as 7d, 12h, 30m or 45s (0s means "any age")."""
    try:
        return parse_duration(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(BaseCommand):
    help = "baton workflows: run a worker, and inspect and repair workflows."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        # -v after the subcommand (`manage.py baton worker -v 2`) as well as before it.
        verbosity = argparse.ArgumentParser(add_help=False)
        verbosity.add_argument(
            "-v",
            "--verbosity",
            dest="sub_verbosity",
            type=int,
            choices=[0, 1, 2, 3],
            default=None,
            help="0: quiet, 1: normal, 2: Procrastinate's and baton's INFO logs, 3: DEBUG.",
        )
        real_add_parser = sub.add_parser

        def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
            return real_add_parser(name, parents=[verbosity], **kwargs)

        sub.add_parser = add_parser  # type: ignore[method-assign]

        worker = sub.add_parser("worker", help="Run a Procrastinate worker with prompt hand-offs.")
        worker.add_argument("-q", "--queues", default="", help="Comma-separated (default: all).")
        worker.add_argument("-c", "--concurrency", type=positive_int, default=4)
        worker.add_argument(
            "--polling-interval",
            type=positive_seconds,
            default=None,
            help="Seconds between polls for jobs (a fallback; default 1).",
        )
        worker.add_argument(
            "--heartbeat-interval",
            type=positive_seconds,
            default=None,
            help="Seconds between worker heartbeats (Procrastinate: 10).",
        )
        worker.add_argument("-n", "--name", default=None)
        worker.add_argument("--shutdown-graceful-timeout", type=non_negative_seconds, default=None)
        worker.add_argument(
            "--delete-jobs",
            choices=["never", "always", "successful"],
            default=None,
            help="Delete finished Procrastinate jobs (Procrastinate's option; default never).",
        )

        sweep = sub.add_parser("sweep", help="Repair what crashes left behind, once.")
        sweep.add_argument(
            "--heartbeat-timeout",
            type=positive_seconds,
            default=30.0,
            help="Seconds without heartbeat before a worker counts as dead.",
        )
        sweep.add_argument(
            "--stale-after",
            type=positive_seconds,
            default=None,
            help="Seconds before an executing step with no job is stale "
            "(default: BATON['STALE_EXECUTING_AFTER']).",
        )
        sweep.add_argument("--no-prune", action="store_true")

        prune = sub.add_parser("prune", help="Delete finished workflows.")
        prune.add_argument(
            "--older-than",
            type=duration,
            default=None,
            help="e.g. 7d, 12h, 30m, 45s (default: BATON['PRUNE_AFTER']).",
        )

        listing = sub.add_parser("list", help="Workflows, newest first.")
        listing.add_argument(
            "--state",
            default="",
            help="Comma-separated workflow states: executing, completed, failed, cancelled.",
        )
        listing.add_argument("--name", default="", help="Names containing this text.")
        listing.add_argument(
            "--since",
            default=None,
            help="Created in the last AGE (7d, 12h, 30m, 45s) or since a date (2026-12-01).",
        )
        listing.add_argument(
            "--limit", type=positive_int, default=20, help="At most this many (20)."
        )

        show = sub.add_parser(
            "show", help="A workflow's steps with states and timings; why steps wait."
        )
        show.add_argument("workflow_id", help="The id, or a unique prefix of it (from `list`).")
        show.add_argument("--follow", action="store_true", help="Redraw until it finishes.")
        show.add_argument("--interval", type=positive_seconds, default=1.0)

        for name, text in (
            ("cancel", "Cancel a workflow."),
            ("retry", "Retry a workflow's discarded and cancelled steps."),
        ):
            action = sub.add_parser(name, help=text)
            action.add_argument("workflow_id")

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("sub_verbosity") is not None:
            options["verbosity"] = options["sub_verbosity"]
        getattr(self, f"_{options['command']}")(options)

    # ---------------------------------------------------------------------------- worker
    def _worker(self, options: dict[str, Any]) -> None:

        verbosity = options["verbosity"]
        if verbosity >= 2:
            _log_to_stderr(logging.DEBUG if verbosity >= 3 else logging.INFO)
        kwargs: dict[str, Any] = {"concurrency": options["concurrency"]}
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        if queues:
            kwargs["queues"] = queues
        if options["polling_interval"] is not None:
            kwargs["fetch_job_polling_interval"] = options["polling_interval"]
        if options["heartbeat_interval"] is not None:
            kwargs["update_heartbeat_interval"] = options["heartbeat_interval"]
        kwargs["name"] = options["name"] or f"{socket.gethostname()}-{os.getpid()}"
        if options["shutdown_graceful_timeout"] is not None:
            kwargs["shutdown_graceful_timeout"] = options["shutdown_graceful_timeout"]
        if options["delete_jobs"] is not None:
            kwargs["delete_jobs"] = options["delete_jobs"]

        async def main() -> None:
            connector = app.connector
            if isinstance(connector, django_connector.DjangoConnector):
                connector = worker_connector()
            worker_app = app.with_connector(connector)
            async with worker_app.open_async():
                await run_worker(worker_app, **kwargs)

        if verbosity >= 1:
            self.stdout.write(worker_banner(kwargs["name"], queues, options["concurrency"]))
            self.stdout.flush()
        asyncio.run(main())
        if verbosity >= 1:
            self.stdout.write(f"baton worker {kwargs['name']} stopped")

    # ----------------------------------------------------------------------------- sweep
    def _sweep(self, options: dict[str, Any]) -> None:
        report = run_sweep(
            seconds_since_heartbeat=options["heartbeat_timeout"],
            stale_executing_after=options["stale_after"],
            prune_after=False if options["no_prune"] else True,
        )
        self.stdout.write(report.summary())
        for name in report.rescued:
            self.stdout.write(f"  rescued {name}")
        for name in report.discarded:
            self.stdout.write(f"  discarded {name}")

    def _prune(self, options: dict[str, Any]) -> None:
        older_than = options["older_than"]
        if older_than is None:
            older_than = baton_settings.PRUNE_AFTER
        if older_than is None:
            raise CommandError("give --older-than (e.g. 7d) or set BATON['PRUNE_AFTER']")
        count = prune_workflows(older_than)
        self.stdout.write(f"pruned {count} finished workflow(s) older than {older_than}")

    # ------------------------------------------------------------------------------ list
    def _list(self, options: dict[str, Any]) -> None:
        workflows = Workflow.objects.all()
        states = [s.strip().lower() for s in options["state"].split(",") if s.strip()]
        allowed = [state.value for state in WorkflowState]
        unknown = [state for state in states if state not in allowed]
        if unknown:
            raise CommandError(
                f"unknown state {', '.join(map(repr, unknown))}: use {', '.join(allowed)}"
            )
        if states:
            workflows = workflows.filter(state__in=states)
        if options["name"]:
            workflows = workflows.filter(name__icontains=options["name"])
        if options["since"]:
            workflows = workflows.filter(created_at__gte=parse_since(options["since"]))
        rows = list(workflows.order_by("-created_at", "-pk")[: options["limit"] + 1])
        more = len(rows) > options["limit"]
        rows = rows[: options["limit"]]
        if not rows:
            filtered = states or options["name"] or options["since"]
            self.stdout.write("no workflows match" if filtered else "no workflows yet")
            return
        width = shutil.get_terminal_size((100, 24)).columns
        self.stdout.write(render_list(rows, width=width))
        if more:
            self.stdout.write(f"(more than {options['limit']}: use --limit, --state, --name)")

    # ------------------------------------------------------------------ cancel / retry
    def _cancel(self, options: dict[str, Any]) -> None:
        workflow = self._get(options["workflow_id"])
        count = workflow.cancel()
        self.stdout.write(
            f"workflow {workflow.name} ({workflow.pk}) is {workflow.state}; "
            f"{count} step(s) cancelled"
        )

    def _retry(self, options: dict[str, Any]) -> None:
        workflow = self._get(options["workflow_id"])
        count = workflow.retry()
        self.stdout.write(
            f"workflow {workflow.name} ({workflow.pk}) is {workflow.state}; "
            f"{count} step(s) re-queued"
        )

    def _get(self, workflow_id: str) -> Any:
        try:
            return Workflow.objects.get(pk=uuid.UUID(workflow_id))
        except (ValueError, Workflow.DoesNotExist) as exc:
            prefix = workflow_id.strip().lower()
            if re.fullmatch(r"[0-9a-f]{4,}(-[0-9a-f-]*)?", prefix) and len(prefix) < 36:
                matches = list(Workflow.objects.filter(pk__startswith=prefix)[:2])
                if len(matches) == 1:
                    return matches[0]
                if matches:
                    raise CommandError(
                        f"id prefix {workflow_id!r} matches several workflows: give more of it"
                    ) from exc
            if len(prefix) < 4:
                raise CommandError(
                    f"no workflow with id {workflow_id!r}: give its id, or at least 4 "
                    "characters of it"
                ) from exc
            raise CommandError(f"no workflow with id {workflow_id!r}") from exc

    # ------------------------------------------------------------------------------ show
    def _show(self, options: dict[str, Any]) -> None:
        workflow = self._get(options["workflow_id"])
        while True:
            text = render_workflow(workflow)
            if options["follow"] and self.stdout.isatty():
                self.stdout.write("\x1b[2J\x1b[H", ending="")
            self.stdout.write(text)
            workflow.refresh_from_db()
            if not options["follow"] or workflow.is_finished:
                if options["follow"]:
                    self.stdout.write(render_workflow(workflow).splitlines()[0])
                return
            time.sleep(options["interval"])


def _log_to_stderr(level: int) -> None:
    """Show the procrastinate and baton loggers at `level`, on stderr unless the project's
    LOGGING already gives them (or the root logger) a handler."""
    for name in ("procrastinate", "baton"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            logger.addHandler(handler)
            logger.propagate = False


def worker_banner(name: str, queues: list[str], concurrency: int) -> str:
    """What `baton worker` says when it starts: who it is, where it listens, what it runs."""
    alias = database_alias()
    db = connections[alias].settings_dict
    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
    lines = [
        f"baton worker {name} starting (pid {os.getpid()})",
        f"  queues:      {', '.join(queues) if queues else 'every queue'}",
        f"  concurrency: {concurrency}",
        f"  database:    {db.get('NAME')} on {where} (alias {alias!r})",
    ]
    by_queue: dict[str, list[str]] = {}
    for task_name, cls in sorted(registry.items()):
        by_queue.setdefault(str(cls.queue), []).append(task_name)
    if not by_queue:
        lines.append(
            "  steps:       none registered: put baton.Step subclasses in an installed "
            "app's tasks.py"
        )
    else:
        count = sum(len(names) for names in by_queue.values())
        lines.append(f"  steps:       {count} baton step(s)")
        for queue, names in sorted(by_queue.items()):
            shown = ", ".join(names[:8]) + (f", ... (+{len(names) - 8})" if len(names) > 8 else "")
            ignored = "" if not queues or queue in queues else "  (not taken by this worker)"
            lines.append(f"    {queue}: {shown}{ignored}")
    lines.append("  Stop with Ctrl-C (running steps finish first); -v 2 shows every job.")
    return "\n".join(lines)


def parse_since(text: str) -> datetime.datetime:
    """`--since`: an age (7d, 12h, 30m, 45s) before now, or an ISO date or datetime."""
    if text and text[-1] in "dhms" and text[:-1].replace(".", "", 1).isdigit():
        return timezone.now() - parse_duration(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise CommandError(
            f"bad --since {text!r}: use an age such as 12h or 7d, or a date such as 2026-12-01"
        ) from exc
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d"


def _local(moment: datetime.datetime) -> datetime.datetime:
    return timezone.localtime(moment) if timezone.is_aware(moment) else moment


def render_list(workflows: list[Any], *, width: int = 100) -> str:
    """Workflows as a table that fits `width` columns: the name is cut to fit."""
    now = timezone.now()
    header = ("ID", "STATE", "STEPS", "CREATED", "TOOK", "NAME")
    rows = []
    for workflow in workflows:
        done = workflow.step_count - workflow.unfinished_steps
        end = workflow.finished_at or now
        rows.append(
            (
                str(workflow.pk)[:8],
                workflow.state,
                f"{done}/{workflow.step_count}",
                _local(workflow.created_at).strftime("%Y-%m-%d %H:%M"),
                _ago(max(0.0, (end - workflow.created_at).total_seconds())),
                workflow.name,
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    fixed = sum(widths) + 2 * 5
    room = max(10, width - fixed - 1)
    lines = []
    for row in [header, *rows]:
        name = row[5] if len(row[5]) <= room else row[5][: room - 3] + "..."
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:5])]
        lines.append("  ".join([*cells, name]).rstrip())
    return "\n".join(lines)


def parse_duration(text: str) -> datetime.timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        number, unit = float(text[:-1]), units[text[-1]]
        if not math.isfinite(number) or number < 0:
            raise ValueError(text)
        return datetime.timedelta(**{unit: number})
    except (ValueError, KeyError, IndexError, OverflowError) as exc:
        raise CommandError(
            f"bad duration {text!r}: use a number of 0 or more and d, h, m or s, e.g. 7d"
        ) from exc


def progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = width if not total else round(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def render_workflow(workflow: Any) -> str:
    """The workflow as text: a header with a progress bar, then its steps in dependency
    order, indented by depth, each with state, attempts, duration and deps; grafted
    steps ("+ name") right under the step that grafted them, one level deeper."""
    steps = list(WorkflowStep.objects.filter(workflow=workflow).order_by("id"))
    by_id = {step.id: step for step in steps}
    upstream: dict[int, list[int]] = {step.id: [] for step in steps}
    for up, down in StepDependency.objects.filter(workflow=workflow).values_list(
        "upstream_id", "downstream_id"
    ):
        upstream[down].append(up)
    depth: dict[int, int] = {}

    def depth_of(step_id: int) -> int:
        # Iterative longest-path depth (graphs can be deep).
        stack = [step_id]
        while stack:
            current = stack[-1]
            pending = [u for u in upstream[current] if u not in depth]
            if pending:
                stack.extend(pending)
                continue
            depth[current] = 1 + max((depth[u] for u in upstream[current]), default=-1)
            stack.pop()
        return depth[step_id]

    for step in steps:
        depth_of(step.id)
    done = sum(1 for step in steps if step.state in TERMINAL)
    header = (
        f"{workflow.name} ({workflow.pk}) {workflow.state.upper()} {progress_bar(done, len(steps))}"
    )
    if workflow.cost_usd is not None or workflow.unpriced_calls:
        header += f"  cost {format_usd(workflow.cost_usd, workflow.unpriced_calls)}"
        if workflow.budget_usd is not None:
            header += f" of {format_usd(workflow.budget_usd)}"
    if workflow.reason:
        header += f"  ({workflow.reason})"
    lines = [header]
    why = _explanations(steps) if not workflow.is_finished else {}
    grafted = collections.Counter(step.grafted_by_id for step in steps)
    for step, indent in _grafts_under_their_steps(steps, depth):
        duration = f"{step.duration:.2f}s" if step.duration is not None else "-"
        deps = ", ".join(by_id[u].name for u in upstream[step.id][:5])
        if len(upstream[step.id]) > 5:
            deps += f", ... (+{len(upstream[step.id]) - 5})"
        mark = "+ " if step.grafted_by_id is not None else ""
        line = (
            f"{'  ' * indent}{mark}{step.name}  {step.state}  "
            f"attempt {step.attempt}/{step.max_attempts}  {duration}"
        )
        if step.cost_usd is not None or step.unpriced_calls:
            line += f"  {format_usd(step.cost_usd, step.unpriced_calls)}"
        if deps:
            line += f"  <- {deps}"
        if step.reason:
            line += f"  ({step.reason})"
        if grafted.get(step.id):
            line += f"  (grafted {grafted[step.id]})"
        lines.append(line)
        for sentence in why.get(step.id, ()):
            lines.append(f"{'  ' * indent}  {WHY}{sentence}")
    if why.get(None):
        lines.append(f"  {WHY}{why[None][0]}")
    return "\n".join(lines) + "\n"


def _grafts_under_their_steps(steps: list[Any], depth: dict[int, int]) -> list[tuple[Any, int]]:
    """(step, indent) in dependency order (depth, then id), each step's graft right
    under it: indented one level deeper than its grafting step, plus its depth within
    the graft."""
    ids = {step.id for step in steps}
    graft_of: dict[int, list[Any]] = {}
    for step in steps:
        if step.grafted_by_id in ids:
            graft_of.setdefault(step.grafted_by_id, []).append(step)
    ordered: list[tuple[Any, int]] = []

    def place(group: list[Any], indent: int) -> None:
        top = min(depth[step.id] for step in group)
        for step in sorted(group, key=lambda s: (depth[s.id], s.id)):
            ordered.append((step, indent + depth[step.id] - top))
            if step.id in graft_of:
                place(graft_of.pop(step.id), ordered[-1][1] + 1)

    ungrafted = [step for step in steps if step.grafted_by_id not in ids]
    if ungrafted:
        top = min(depth[step.id] for step in ungrafted)
        place(ungrafted, top)
    return ordered


WHY = "why: "
# `show` explains this many waiting or queued steps at most (each costs a query or two).
MAX_EXPLAINED = 12


def _explanations(steps: list[Any]) -> dict[Any, list[str]]:
    """{step id: sentences} from baton.explain for the waiting and queued steps (the first
    MAX_EXPLAINED of them); key None says how many were left out."""
    pending = ("waiting", "available", "scheduled", "retryable")
    chosen = [step for step in steps if step.state in pending]
    # Queued steps first: "no worker listens on queue X" is the news; then the waiting
    # steps whose dependencies are all queued or running (the frontier).
    chosen.sort(key=lambda step: (step.state == "waiting", step.id))
    left_out = len(chosen) - MAX_EXPLAINED
    chosen = chosen[:MAX_EXPLAINED]
    listeners = queue_listeners(step.queue for step in chosen if step.state != "waiting")
    found: dict[Any, list[str]] = {
        step.id: explain(step, listeners=listeners).sentences for step in chosen
    }
    if left_out > 0:
        found[None] = [f"{left_out} more waiting or queued step(s) not explained"]
    return found
