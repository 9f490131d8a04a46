"""A step class that only some processes import: tests of a worker that lacks it."""

from __future__ import annotations

import os
import time
from typing import Any

import baton
from tests.testapp.models import PerformRun


class LateStep(baton.Step):
    """Deployed to the web process and to some workers only. Returns its pid."""

    max_attempts = 1

    def perform(self, job: baton.Job) -> Any:
        PerformRun.objects.create(
            workflow_id=job.workflow_id,
            step=job.step_name,
            attempt=job.attempt,
            started=time.time(),
            finished=time.time(),
            pid=os.getpid(),
        )
        return os.getpid()
