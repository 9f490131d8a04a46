"""Sample steps for the demo workflow: fetch -> parse[0..n] -> store -> report.

Each step sleeps a little so that a person can watch the workflow progress, and one parse
part fails on its first attempt to show a retry.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import baton

if TYPE_CHECKING:
    from baton.models import Workflow

logger = logging.getLogger("example_project.pipeline")


def _pause(low: float = 0.2, high: float = 1.0) -> None:
    time.sleep(random.uniform(low, high))


# The "download": a local file of readings, one number per line (no network).
READINGS = Path(__file__).with_name("data") / "readings.txt"


class Fetch(baton.Step):
    """Read the first `n` readings from the local data file."""

    queue = "default"
    max_attempts = 3

    def perform(self, job):
        _pause()
        with READINGS.open() as readings:
            rows = [int(line) for line, _ in zip(readings, range(job.args["n"]), strict=False)]
        if len(rows) < job.args["n"]:
            raise baton.Discard(f"{READINGS.name} has only {len(rows)} readings")
        return {"rows": rows}


class Parse(baton.Step):
    """Take every `parts`-th row starting at `part`; the part `flaky_part` fails once."""

    queue = "default"
    max_attempts = 3

    def perform(self, job):
        _pause()
        part, parts = job.args["part"], job.args["parts"]
        if part == job.args.get("flaky_part") and job.attempt == 1:
            logger.info("parse[%s]: failing on purpose on attempt 1 (to show a retry)", part)
            raise RuntimeError(f"parse part {part}: simulated transient error, will retry")
        rows = job.result("fetch")["rows"]
        mine = rows[part::parts]
        return {"part": part, "rows": mine, "total": sum(mine)}


class Store(baton.Step):
    """Combine the parsed parts."""

    queue = "default"

    def perform(self, job):
        _pause(0.5, 1.0)
        parts = job.results("parse")  # {key: result}; keys are strings
        return {
            "parts": len(parts),
            "rows": sum(len(r["rows"]) for r in parts.values()),
            "total": sum(r["total"] for r in parts.values()),
        }


class Report(baton.Step):
    """Log a one-line summary; returns nothing (a step may store no result)."""

    queue = "default"

    def perform(self, job):
        _pause(0.2, 0.5)
        stored = job.result("store")
        logger.info(
            "workflow %s: stored %s rows from %s parts, total %s",
            job.workflow.id,
            stored["rows"],
            stored["parts"],
            stored["total"],
        )
        return None


def build_ingest(n: int = 20, parts: int = 4, flaky_part: int | None = 1) -> Workflow:
    """Build and insert the sample ingest workflow; returns the inserted Workflow."""
    wf = (
        baton.new(workflow_name="ingest")
        .add("fetch", Fetch.new(n=n))
        .add_many(
            "parse",
            [Parse.new(part=i, parts=parts, flaky_part=flaky_part) for i in range(parts)],
            deps=["fetch"],
        )
        .add("store", Store.new(), deps=["parse"])
        .add("report", Report.new(), deps=["store"])
    )
    return wf.insert()


# The showcase's steps live in showcase.py; importing them here registers them, as
# Procrastinate's autodiscovery imports only tasks.py.
from example_project.pipeline.showcase import CallPartner, Echo, Flaky, Join, Tiny  # noqa: E402

__all__ = [
    "CallPartner",
    "Echo",
    "Fetch",
    "Flaky",
    "Join",
    "Parse",
    "Report",
    "Store",
    "Tiny",
    "build_ingest",
]
