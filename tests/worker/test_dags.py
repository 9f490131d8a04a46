"""Replay of real workflow graphs (../shared/dags/*.json, from WfCommons) on a real worker.

Every task becomes a step whose deps are its deps and which sleeps its recorded runtime
divided by RUNTIME_SCALE; each step records when perform() started and finished. A run is
correct when every step ran exactly once and started after all its deps finished.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import baton
from baton.models import WorkflowStep
from baton.testing import WorkerProcess, assert_completed, wait_for_workflow
from tests.helpers import SHARED_DAGS, shared_dag_files, shared_missing_reason
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Echo

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

RUNTIME_SCALE = 10_000  # 1,084 s of critical path replays in about 0.1 s
DAG_FILES = shared_dag_files()
MISSING = shared_missing_reason()
DAG_PARAMS = [pytest.param(path, id=path.stem) for path in DAG_FILES] or [
    pytest.param(None, id="no-dags", marks=pytest.mark.skip(reason=MISSING))
]


def test_shared_dags_path_resolves() -> None:
    """SHARED_DAGS points next to the repository, <repo>/../shared/dags, unless
    BATON_SHARED_DIR names another folder."""
    repo = Path(__file__).resolve().parents[2]
    default = repo.parent / "shared"
    assert Path(os.environ.get("BATON_SHARED_DIR") or default) / "dags" == SHARED_DAGS
    if not DAG_FILES:
        pytest.skip(MISSING)


def load(path: Path) -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(path.read_text())
    return graph


@pytest.mark.parametrize("path", DAG_PARAMS)
def test_replay_runs_each_step_once_after_its_deps(
    start_worker: Callable[..., WorkerProcess], path: Path
) -> None:
    graph = load(path)
    tasks = graph["tasks"]
    builder = baton.new(graph["name"])
    for task in tasks:
        builder.add(
            task["id"], Echo.new(sleep=task["runtime_s"] / RUNTIME_SCALE), deps=task["deps"]
        )
    workflow = builder.insert()
    start_worker(concurrency=4)
    workflow = wait_for_workflow(workflow, timeout=300)
    assert_completed(workflow)

    runs = list(PerformRun.objects.filter(workflow_id=workflow.pk))
    counts = Counter(run.step for run in runs)
    assert counts == Counter({task["id"]: 1 for task in tasks}), {
        name: n for name, n in counts.items() if n != 1
    }
    assert set(
        WorkflowStep.objects.filter(workflow=workflow).values_list("state", "attempt").distinct()
    ) == {("completed", 1)}

    run_of = {run.step: run for run in runs}
    too_early = []
    for task in tasks:
        started = run_of[task["id"]].started
        for dep in task["deps"]:
            finished = run_of[dep].finished
            assert finished is not None
            if started < finished:
                too_early.append((task["id"], dep, finished - started))
    assert too_early == [], f"steps started before a dep finished: {too_early[:10]}"
