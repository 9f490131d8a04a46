"""Helpers for running workflows in tests, with a real Procrastinate worker.

In a pytest-django test marked ``@pytest.mark.django_db(transaction=True)`` (the worker
runs in another process, so it only sees committed rows; inside a test transaction
``WorkerProcess`` and ``wait_for_workflow`` raise ``NotTransactional`` saying so)::

    from baton.testing import WorkerProcess, wait_for_workflow

    def test_ingest():
        workflow = build_ingest().insert()
        with WorkerProcess(concurrency=2):
            workflow = wait_for_workflow(workflow, timeout=30)
        assert workflow.state == "completed"

The worker is ``manage.py baton worker`` run with the same settings module, pointed at
the test database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import django
from django.conf import settings
from django.core.management import execute_from_command_line
from django.db import connections

from baton.graph.states import TERMINAL_STEP_STATES, StepState, WorkflowState

__all__ = [
    "NotTransactional",
    "WorkerProcess",
    "WorkflowTimeout",
    "assert_completed",
    "require_committed",
    "run_workflow",
    "step_states",
    "wait_for_workflow",
]


class WorkflowTimeout(AssertionError):
    """The workflow did not finish in time; the message lists unfinished steps."""


class NotTransactional(RuntimeError):
    """The test runs inside a transaction that is never committed, so a worker process
    cannot see what it inserted."""


def require_committed(database: str = "default") -> None:
    """Raise ``NotTransactional`` when ``database``'s connection is inside an atomic block:
    pytest-django's plain ``django_db`` mark and Django's ``TestCase`` run each test in a
    transaction that is rolled back, and the worker, another process, sees none of it."""
    if connections[database].in_atomic_block:
        raise NotTransactional(
            "baton.testing runs a real worker in another process, and this test's database "
            f"connection ({database!r}) is inside a transaction that is never committed "
            "(pytest-django's plain django_db mark, Django's TestCase, or your own "
            "transaction.atomic()), so the worker cannot see the workflow. Use "
            "@pytest.mark.django_db(transaction=True) (or the transactional_db fixture), "
            "or django.test.TransactionTestCase, and insert outside transaction.atomic()."
        )


class WorkerProcess:
    """A `manage.py baton worker` subprocess against the current (test) database."""

    def __init__(
        self,
        *,
        concurrency: int = 2,
        queues: Sequence[str] = (),
        polling_interval: float | None = None,
        heartbeat_interval: float | None = None,
        database: str = "default",
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.concurrency = concurrency
        self.queues = list(queues)
        self.polling_interval = polling_interval
        self.heartbeat_interval = heartbeat_interval
        self.database = database
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)  # more `baton worker` options
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._log_file: Any = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def _command(self) -> list[str]:
        name = connections[self.database].settings_dict["NAME"]
        command = [
            sys.executable,
            "-m",
            "baton.testing",
            self.database,
            str(name),
            "baton",
            "worker",
            "--concurrency",
            str(self.concurrency),
        ]
        if self.queues:
            command += ["--queues", ",".join(self.queues)]
        if self.polling_interval is not None:
            command += ["--polling-interval", str(self.polling_interval)]
        if self.heartbeat_interval is not None:
            command += ["--heartbeat-interval", str(self.heartbeat_interval)]
        return command + self.extra_args

    def start(self, wait: bool = True) -> WorkerProcess:
        require_committed(self.database)
        env = {**os.environ, **self.extra_env}
        # The test's settings module, unless `env` names another one.
        env["DJANGO_SETTINGS_MODULE"] = self.extra_env.get(
            "DJANGO_SETTINGS_MODULE",
            os.environ.get("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE),
        )
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p])
        fd, path = tempfile.mkstemp(prefix="baton-worker-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self._log_file = open(self.log_path, "wb")
        before = _latest_worker_id(self.database)
        self.process = subprocess.Popen(
            self._command(),
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        if wait:
            deadline = time.monotonic() + self.startup_timeout
            while _latest_worker_id(self.database) <= before:
                if self.process.poll() is not None:
                    raise RuntimeError(f"worker exited at start-up:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"worker did not start in time:\n{self.log_tail()}")
                time.sleep(0.05)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after `timeout`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """SIGKILL: the worker dies wherever it is, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _latest_worker_id(database: str) -> int:
    with connections[database].cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def step_states(workflow: Any) -> dict[str, str]:
    """{step name: state} for a workflow."""
    # App loading: users import baton.testing in conftest.py, before the apps are ready.
    from baton.models import WorkflowStep

    return dict(WorkflowStep.objects.filter(workflow_id=workflow.pk).values_list("name", "state"))


def wait_for_workflow(workflow: Any, timeout: float = 60.0, poll: float = 0.05) -> Any:
    """Poll until the workflow is completed, failed or cancelled; return it refreshed."""
    from baton.models import Workflow  # app loading: see step_states

    require_committed()
    deadline = time.monotonic() + timeout
    while True:
        current = Workflow.objects.get(pk=workflow.pk)
        if current.is_finished:
            return current
        if time.monotonic() > deadline:
            unfinished = {
                name: state
                for name, state in step_states(current).items()
                if state not in TERMINAL_STEP_STATES
            }
            sample = dict(list(unfinished.items())[:20])
            raise WorkflowTimeout(
                f"workflow {current.name} ({current.pk}) still {current.state} after "
                f"{timeout}s; {len(unfinished)} unfinished step(s), e.g. {sample}"
            )
        time.sleep(poll)


def run_workflow(builder: Any, *, timeout: float = 60.0, concurrency: int = 2) -> Any:
    """Insert a workflow (or take an inserted one), run a worker until it finishes,
    and return the finished workflow."""
    require_committed()
    workflow = builder.insert() if hasattr(builder, "insert") else builder
    with WorkerProcess(concurrency=concurrency):
        return wait_for_workflow(workflow, timeout=timeout)


def assert_completed(workflow: Any) -> None:
    """Assert the workflow completed, naming the steps that did not."""
    from baton.models import WorkflowStep  # app loading: see step_states

    workflow.refresh_from_db()
    if workflow.state != WorkflowState.COMPLETED:
        bad = list(
            WorkflowStep.objects.filter(workflow_id=workflow.pk)
            .exclude(state=StepState.COMPLETED)
            .values_list("name", "state", "reason", "last_error")[:20]
        )
        raise AssertionError(f"workflow {workflow.name} is {workflow.state}: {bad}")


def _main(argv: list[str]) -> None:
    """python -m baton.testing ALIAS DBNAME <manage.py args>: run a management command
    with one database's NAME replaced (the test database)."""
    alias, name, *args = argv
    settings.DATABASES[alias]["NAME"] = name
    django.setup()
    execute_from_command_line(["manage.py", *args])


if __name__ == "__main__":
    _main(sys.argv[1:])
