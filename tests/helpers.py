"""Helpers shared by the tests: one definition each (rows, claims, waits, shared data).

Waits poll a condition with a generous deadline (never a sleep as synchronisation); the
claim/run helpers move steps in-process, as a worker would, without one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

import baton
from baton.execution import advance
from baton.models import Workflow, WorkflowStep
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Echo

# Data kept outside the repository (the real DAGs of ../shared/dags): BATON_SHARED_DIR
# points elsewhere; a test that reads it skips, naming the path, when it is absent.
SHARED_DIR = Path(
    os.environ.get("BATON_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared"
)
SHARED_DAGS = SHARED_DIR / "dags"


# Where test servers listen: any free port, or one of BATON_TEST_PORTS ("57200-57299"),
# for a machine whose users are each given a range.
PORT_RANGE = os.environ.get("BATON_TEST_PORTS", "")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (in BATON_TEST_PORTS if set)."""
    if PORT_RANGE:
        first, _, last = PORT_RANGE.partition("-")
        for port in range(int(first), int(last or first) + 1):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port in BATON_TEST_PORTS={PORT_RANGE}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen


def shared_dag_files() -> list[Path]:
    """The *.json graphs of SHARED_DAGS ([] when absent or unreadable)."""
    try:
        return sorted(SHARED_DAGS.glob("*.json")) if SHARED_DAGS.is_dir() else []
    except OSError:
        return []


def shared_missing_reason(what: str = "*.json") -> str:
    return (
        f"needs the shared data {SHARED_DAGS / what} (outside the repository: set "
        "BATON_SHARED_DIR to the folder holding dags/)"
    )


def load_shared_dag(name: str) -> Any:
    """The decoded ../shared/dags/<name>.json; skips the test when it cannot be read."""
    path = SHARED_DAGS / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        pytest.skip(shared_missing_reason(f"{name}.json"))


def step_row(workflow: Any, name: str) -> WorkflowStep:
    """The row of the step `name` of `workflow`."""
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def claim(workflow: Workflow, name: str) -> advance.Claim:
    """Claim the step's next attempt as a worker would (it must be claimable)."""
    row = step_row(workflow, name)
    assert row.job_id is not None, f"{name} is {row.state}, it has no job"
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None, f"{name} could not be claimed ({row.state})"
    return claimed


def completed(value: Any = None) -> advance.Completed:
    """The outcome of perform() returning `value` (None: no result)."""
    if value is None:
        return advance.Completed(value_json=None)
    text = json.dumps(value)
    return advance.Completed(value_json=text, size_bytes=len(text.encode()))


def run_step(workflow: Workflow, name: str, outcome: advance.AttemptOutcome | None = None) -> None:
    """Do what a worker does for one attempt of an available step: claim, then finish."""
    assert advance.finish(claim(workflow, name), outcome or completed(name))


def chain(name: str = "chain") -> Workflow:
    """a -> b -> c, inserted (no worker runs it)."""
    workflow: Workflow = (
        baton.new(name)
        .add("a", Echo.new(value=1))
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["b"])
        .insert()
    )
    return workflow


def runs_per_step(workflow: Workflow) -> Counter[str]:
    """step name -> how many times the test app's perform() ran for it."""
    return Counter(
        PerformRun.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )


def job_status(job_id: int | None) -> str | None:
    """The Procrastinate job's status (None: no such job)."""
    if job_id is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])
        row = cursor.fetchone()
    return row[0] if row else None


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> Any:
    """scripts/<name>.py as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module
