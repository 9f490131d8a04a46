"""manage.py baton <command>: run a worker, sweep, prune, show, cancel, retry."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "baton workflows: worker, and the commands that inspect and repair workflows."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        worker = sub.add_parser(
            "worker",
            help="Run a Procrastinate worker with baton's prompt hand-offs.",
        )
        worker.add_argument(
            "-q", "--queues", default="", help="Comma-separated queues (default: all)."
        )
        worker.add_argument("-c", "--concurrency", type=int, default=4)
        worker.add_argument(
            "--polling-interval",
            type=float,
            default=None,
            help="Seconds between polls for jobs (fallback; default 1).",
        )
        worker.add_argument("-n", "--name", default=None)
        worker.add_argument("--shutdown-graceful-timeout", type=float, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        command = options["command"]
        if command == "worker":
            self._worker(options)
        else:  # pragma: no cover - argparse rejects unknown commands
            raise CommandError(f"unknown command {command!r}")

    def _worker(self, options: dict[str, Any]) -> None:
        from procrastinate.contrib.django import app, django_connector

        from baton.execution.worker import run_worker

        if options["verbosity"] >= 2:
            logging.getLogger("procrastinate").setLevel(logging.INFO)
        kwargs: dict[str, Any] = {"concurrency": options["concurrency"]}
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        if queues:
            kwargs["queues"] = queues
        if options["polling_interval"] is not None:
            kwargs["fetch_job_polling_interval"] = options["polling_interval"]
        if options["name"]:
            kwargs["name"] = options["name"]
        if options["shutdown_graceful_timeout"] is not None:
            kwargs["shutdown_graceful_timeout"] = options["shutdown_graceful_timeout"]

        async def main() -> None:
            connector = app.connector
            if isinstance(connector, django_connector.DjangoConnector):
                connector = connector.get_worker_connector()
            worker_app = app.with_connector(connector)
            async with worker_app.open_async():
                await run_worker(worker_app, **kwargs)

        asyncio.run(main())
