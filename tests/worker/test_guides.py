"""The guides' Python blocks run as written, against real PostgreSQL and a real worker.

Each Python block of a guide carries a mark (scripts/docs_blocks.py): a file of the
reader's project, settings, a block to run, or an explicit skip with its reason
(tests/unit/test_docs.py checks every block is marked).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from baton.testing import WorkerProcess, wait_for_workflow
from tests.helpers import REPO_ROOT, load_script

ROOT = REPO_ROOT
DOCS = REPO_ROOT / "docs"
docs_blocks = load_script("docs_blocks")


@pytest.fixture
def guide_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A directory on sys.path (and the worker's PYTHONPATH) holding a guide's files, and
    settings that install its apps: tests.settings plus those apps."""

    def make(*guides: Path, apps: list[str]) -> dict[str, str]:
        for guide in guides:
            docs_blocks.write_files(guide, tmp_path)
        (tmp_path / "docs_guide_settings.py").write_text(
            "from tests.settings import *  # noqa: F403\n"
            f"INSTALLED_APPS = [*INSTALLED_APPS, *{apps!r}]  # noqa: F405\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.chdir(tmp_path)
        for app in apps:  # register the steps in this process too, as Django would
            # (once per process: a step class registers its Procrastinate task only once;
            # the guide's files are the same every time).
            __import__(f"{app}.tasks")
        return {"DJANGO_SETTINGS_MODULE": "docs_guide_settings"}

    return make


def run_guide(guide: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a guide's `run` blocks in order in one namespace, with a worker running; a
    `run wait` block runs once the namespace's workflow has finished."""
    namespace: dict[str, Any] = {"__name__": "docs_guide"}
    runnable = [b for b in docs_blocks.python_blocks(guide) if b.kind == "run"]
    assert runnable, f"{guide} has no runnable block"
    with WorkerProcess(concurrency=4, env=env) as worker:
        for block in runnable:
            if block.arg == "wait":
                namespace["workflow"] = wait_for_workflow(namespace["workflow"], timeout=60)
            try:
                exec(compile(block.code, block.where(), "exec"), namespace)
            except Exception as exc:  # pragma: no cover - the message is the point
                raise AssertionError(
                    f"{block.where()} failed: {exc!r}\nworker log:\n{worker.log_tail()}"
                ) from exc
    return namespace


@pytest.mark.worker
def test_getting_started_runs(clean_jobs: None, guide_project: Any, capsys: Any) -> None:
    from baton.models import WorkflowStep

    guide = DOCS / "getting-started.md"
    env = guide_project(guide, apps=["ingest"])
    namespace = run_guide(guide, env)

    workflow = namespace["workflow"]
    assert workflow.state == "completed"
    assert WorkflowStep.objects.get(workflow=workflow, name="store").result_value() == {
        "total": 190
    }
    out = capsys.readouterr().out
    assert "executing" in out and "completed" in out and "{'total': 190}" in out


@pytest.mark.worker
def test_building_a_workflow_runs(clean_jobs: None, guide_project: Any, tmp_path: Path) -> None:
    from baton.models import WorkflowStep
    from baton.testing import step_states

    shutil.copytree(ROOT / "example_project" / "research" / "sources", tmp_path / "sources")
    guide = DOCS / "guides" / "building-a-workflow.md"
    env = guide_project(guide, apps=["briefs"])
    namespace = run_guide(guide, env)

    workflow = namespace["workflow"]
    states = step_states(workflow)
    assert workflow.state == "completed", states
    assert len(states) == 4 + 4  # fetch, 4 summaries, keywords, credibility, compile
    brief = WorkflowStep.objects.get(workflow=workflow, name="compile_brief").result_value()
    assert brief["sources"] == 4
    assert brief["markdown"].startswith("# Air-source heat pumps in cold climates")
    assert "credibility" in brief["markdown"] and "Keywords: " in brief["markdown"]


@pytest.mark.worker
def test_the_testing_guide_runs(
    clean_jobs: None, guide_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = guide_project(DOCS / "getting-started.md", apps=["ingest"])
    # The guide's test starts its worker with the test's settings module.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", env["DJANGO_SETTINGS_MODULE"])
    namespace: dict[str, Any] = {"__name__": "docs_testing_guide"}
    blocks = [b for b in docs_blocks.python_blocks(DOCS / "howto" / "testing.md")]
    for block in blocks:
        if block.kind == "run":
            exec(compile(block.code, block.where(), "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests
    for test in tests:
        test()
