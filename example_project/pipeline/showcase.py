"""Workflows that show what baton does when things go wrong, and at scale (`make demo`).

- ``build_retries``: a step that fails its first attempt (a retry with backoff), then
  snoozes once (``baton.Snooze``: waits without spending an attempt), then succeeds.
- ``build_failure``: a step that gives up (``baton.Discard``) while its "partner" is
  down, for the first ``down_for`` seconds of the workflow's life: its dependents are
  cancelled and the workflow fails. Retry it (the admin's action, or ``manage.py baton
  retry <id>``) once that time has passed and it completes.
- ``build_fanout``: a root, ``width`` small steps in parallel, and a join that sums them.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import baton

if TYPE_CHECKING:
    from baton.models import Workflow


class Flaky(baton.Step):
    """Attempt 1 fails; attempt 2 snoozes once for `snooze` seconds; then it succeeds."""

    queue = "default"
    max_attempts = 3
    retry_backoff = 2.0

    def perform(self, job):
        time.sleep(0.3)
        if job.attempt == 1:
            raise RuntimeError("simulated transient error on attempt 1: retried after 2 s")
        if job.step.snoozes == 0:
            return baton.Snooze(job.args.get("snooze", 3))
        return {"attempts": job.attempt, "snoozes": job.step.snoozes}


class CallPartner(baton.Step):
    """Discards while the (simulated) partner is down: `down_for` seconds after the
    workflow was created."""

    queue = "default"

    def perform(self, job):
        from django.utils import timezone

        age = (timezone.now() - job.workflow.created_at).total_seconds()
        down_for = job.args.get("down_for", 45)
        if age < down_for:
            return baton.Discard(
                f"partner API down (simulated, for {down_for:.0f} s after the workflow "
                f"started; {age:.0f} s so far): retry this workflow after that"
            )
        return {"status": "accepted", "after_seconds": round(age)}


class Echo(baton.Step):
    """Returns its args plus what its dependencies returned."""

    queue = "default"

    def perform(self, job):
        time.sleep(job.args.get("pause", 0.2))
        return {"args": job.args, "deps": sorted(job.results())}


class Tiny(baton.Step):
    """A member of the fan-out: a few milliseconds of work."""

    queue = "default"

    def perform(self, job):
        time.sleep(random.uniform(0.001, 0.02))
        return job.args["i"]


class Join(baton.Step):
    queue = "default"

    def perform(self, job):
        values = job.results("members")
        return {"members": len(values), "sum": sum(values.values())}


def build_retries(snooze: float = 3) -> Workflow:
    return (
        baton.new(workflow_name="showcase-retries")
        .add("prepare", Echo.new())
        .add("flaky", Flaky.new(snooze=snooze), deps=["prepare"])
        .add("finish", Echo.new(), deps=["flaky"])
        .insert()
    )


def build_failure(down_for: float = 45) -> Workflow:
    return (
        baton.new(workflow_name="showcase-failure")
        .add("prepare", Echo.new())
        .add("call_partner", CallPartner.new(down_for=down_for), deps=["prepare"])
        .add("record", Echo.new(), deps=["call_partner"])
        .add("notify", Echo.new(), deps=["record"])
        .add("audit", Echo.new(), deps=["prepare"])  # not downstream of the failure: runs
        .insert()
    )


def build_fanout(width: int = 500) -> Workflow:
    return (
        baton.new(workflow_name=f"fanout-{width}")
        .add("root", Echo.new(pause=0.1))
        .add_many("members", [Tiny.new(i=i) for i in range(width)], deps=["root"])
        .add("join", Join.new(), deps=["members"])
        .insert()
    )
