"""manage.py baton <command>: worker, sweep, prune, show, cancel, retry."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError

TERMINAL = ("completed", "discarded", "cancelled")


class Command(BaseCommand):
    help = "baton workflows: run a worker, and inspect and repair workflows."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)

        worker = sub.add_parser("worker", help="Run a Procrastinate worker with prompt hand-offs.")
        worker.add_argument("-q", "--queues", default="", help="Comma-separated (default: all).")
        worker.add_argument("-c", "--concurrency", type=int, default=4)
        worker.add_argument(
            "--polling-interval",
            type=float,
            default=None,
            help="Seconds between polls for jobs (a fallback; default 1).",
        )
        worker.add_argument(
            "--heartbeat-interval",
            type=float,
            default=None,
            help="Seconds between worker heartbeats (Procrastinate: 10).",
        )
        worker.add_argument("-n", "--name", default=None)
        worker.add_argument("--shutdown-graceful-timeout", type=float, default=None)
        worker.add_argument(
            "--delete-jobs",
            choices=["never", "always", "successful"],
            default=None,
            help="Delete finished Procrastinate jobs (Procrastinate's option; default never).",
        )

        sweep = sub.add_parser("sweep", help="Repair what crashes left behind, once.")
        sweep.add_argument(
            "--heartbeat-timeout",
            type=float,
            default=30.0,
            help="Seconds without heartbeat before a worker counts as dead.",
        )
        sweep.add_argument(
            "--stale-after",
            type=float,
            default=None,
            help="Seconds before an executing step with no job is stale "
            "(default: BATON['STALE_EXECUTING_AFTER']).",
        )
        sweep.add_argument("--no-prune", action="store_true")

        prune = sub.add_parser("prune", help="Delete finished workflows.")
        prune.add_argument(
            "--older-than",
            default=None,
            help="e.g. 7d, 12h, 30m, 45s (default: BATON['PRUNE_AFTER']).",
        )

        show = sub.add_parser("show", help="A workflow's steps with states and timings.")
        show.add_argument("workflow_id")
        show.add_argument("--follow", action="store_true", help="Redraw until it finishes.")
        show.add_argument("--interval", type=float, default=1.0)

        for name, text in (
            ("cancel", "Cancel a workflow."),
            ("retry", "Retry a workflow's discarded and cancelled steps."),
        ):
            action = sub.add_parser(name, help=text)
            action.add_argument("workflow_id")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['command']}")(options)

    # ---------------------------------------------------------------------------- worker
    def _worker(self, options: dict[str, Any]) -> None:
        from procrastinate.contrib.django import app, django_connector

        from baton.execution.worker import run_worker, worker_connector

        if options["verbosity"] >= 2:
            logging.getLogger("procrastinate").setLevel(logging.INFO)
        kwargs: dict[str, Any] = {"concurrency": options["concurrency"]}
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        if queues:
            kwargs["queues"] = queues
        if options["polling_interval"] is not None:
            kwargs["fetch_job_polling_interval"] = options["polling_interval"]
        if options["heartbeat_interval"] is not None:
            kwargs["update_heartbeat_interval"] = options["heartbeat_interval"]
        if options["name"]:
            kwargs["name"] = options["name"]
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

        asyncio.run(main())

    # ----------------------------------------------------------------------------- sweep
    def _sweep(self, options: dict[str, Any]) -> None:
        from baton.sweep import sweep

        report = sweep(
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
        from baton.conf import settings
        from baton.sweep import prune_workflows

        older_than = (
            parse_duration(options["older_than"]) if options["older_than"] else settings.PRUNE_AFTER
        )
        if older_than is None:
            raise CommandError("give --older-than (e.g. 7d) or set BATON['PRUNE_AFTER']")
        count = prune_workflows(older_than)
        self.stdout.write(f"pruned {count} finished workflow(s) older than {older_than}")

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
        from baton.models import Workflow

        try:
            return Workflow.objects.get(pk=uuid.UUID(workflow_id))
        except (ValueError, Workflow.DoesNotExist) as exc:
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


def parse_duration(text: str) -> datetime.timedelta:
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    try:
        number, unit = float(text[:-1]), units[text[-1]]
    except (ValueError, KeyError, IndexError) as exc:
        raise CommandError(
            f"bad duration {text!r}: use a number and d, h, m or s, e.g. 7d"
        ) from exc
    return datetime.timedelta(**{unit: number})


def progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = width if not total else round(width * done / total)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def render_workflow(workflow: Any) -> str:
    """The workflow as text: a header with a progress bar, then its steps in dependency
    order, indented by depth, each with state, attempts, duration and deps."""
    from baton.display import format_usd
    from baton.models import Step, StepDependency

    steps = list(Step.objects.filter(workflow=workflow).order_by("id"))
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
    for step in sorted(steps, key=lambda s: (depth[s.id], s.id)):
        duration = f"{step.duration:.2f}s" if step.duration is not None else "-"
        deps = ", ".join(by_id[u].name for u in upstream[step.id][:5])
        if len(upstream[step.id]) > 5:
            deps += f", ... (+{len(upstream[step.id]) - 5})"
        line = (
            f"{'  ' * depth[step.id]}{step.name}  {step.state}  "
            f"attempt {step.attempt}/{step.max_attempts}  {duration}"
        )
        if step.cost_usd is not None or step.unpriced_calls:
            line += f"  {format_usd(step.cost_usd, step.unpriced_calls)}"
        if deps:
            line += f"  <- {deps}"
        if step.reason:
            line += f"  ({step.reason})"
        lines.append(line)
    return "\n".join(lines) + "\n"
