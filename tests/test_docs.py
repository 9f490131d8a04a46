"""The documentation cannot drift: the guides' Python blocks run against real PostgreSQL
and a real worker; every check id is documented; the hand-written API page names only
what exists; the site's navigation lists every page.

Each Python block of a guide carries a mark (scripts/docs_blocks.py): a file of the
reader's project, settings, a block to run, or an explicit skip with its reason.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import baton
from baton.testing import WorkerProcess, wait_for_workflow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The guides whose every Python block is marked and whose runnable blocks run here.
GUIDES = [
    DOCS / "getting-started.md",
    DOCS / "guides" / "building-a-workflow.md",
    DOCS / "howto" / "testing.md",
    DOCS / "howto" / "scaling.md",
    DOCS / "index.md",
]


def _load_blocks_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "docs_blocks", ROOT / "scripts" / "docs_blocks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_blocks", module)
    spec.loader.exec_module(module)
    return module


docs_blocks = _load_blocks_module()


# --- marks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_python_block_of_the_guides_is_marked(guide: Path) -> None:
    assert docs_blocks.python_blocks(guide), f"{guide} has no Python block"
    assert docs_blocks.problems(guide) == []


def test_the_marks_are_read_as_written(tmp_path: Path) -> None:
    guide = tmp_path / "g.md"
    guide.write_text(
        "<!-- docs-test: file app/tasks.py -->\n```python\nX = 1\n```\n\n"
        "```python\nunmarked = True\n```\n\n"
        "<!-- docs-test: skip -->\n```python\nno_reason = True\n```\n\n"
        "- a list item:\n\n  <!-- docs-test: run wait -->\n  ```python\n  y = 2\n  ```\n"
    )
    found = docs_blocks.python_blocks(guide)
    assert [(b.kind, b.arg) for b in found] == [
        ("file", "app/tasks.py"),
        (None, ""),
        ("skip", ""),
        ("run", "wait"),
    ]
    assert found[3].code == "y = 2\n"
    assert len(docs_blocks.problems(guide)) == 2
    docs_blocks.write_files(guide, tmp_path / "project")
    assert (tmp_path / "project" / "app" / "tasks.py").read_text() == "X = 1\n"
    assert (tmp_path / "project" / "app" / "__init__.py").exists()


# --- the guides run -------------------------------------------------------------------------


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
    from baton.models import Step

    guide = DOCS / "getting-started.md"
    env = guide_project(guide, apps=["ingest"])
    namespace = run_guide(guide, env)

    workflow = namespace["workflow"]
    assert workflow.state == "completed"
    assert Step.objects.get(workflow=workflow, name="store").result_value() == {"total": 190}
    out = capsys.readouterr().out
    assert "executing" in out and "completed" in out and "{'total': 190}" in out


@pytest.mark.worker
def test_building_a_workflow_runs(clean_jobs: None, guide_project: Any, tmp_path: Path) -> None:
    from baton.models import Step
    from baton.testing import step_states

    shutil.copytree(ROOT / "example_project" / "research" / "sources", tmp_path / "sources")
    guide = DOCS / "guides" / "building-a-workflow.md"
    env = guide_project(guide, apps=["briefs"])
    namespace = run_guide(guide, env)

    workflow = namespace["workflow"]
    states = step_states(workflow)
    assert workflow.state == "completed", states
    assert len(states) == 4 + 4  # fetch, 4 summaries, keywords, credibility, compile
    brief = Step.objects.get(workflow=workflow, name="compile_brief").result_value()
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


# --- reference pages say what exists ----------------------------------------------------------


def _source_check_ids() -> set[str]:
    ids: set[str] = set()
    for path in (ROOT / "baton").rglob("*.py"):
        ids |= set(re.findall(r"baton\.[EW]\d{3}", path.read_text(encoding="utf-8")))
    return ids


def test_every_check_id_is_documented_on_the_settings_page() -> None:
    page = (DOCS / "reference" / "settings.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(baton\.[EW]\d{3})` \|", page, flags=re.M))
    ids = _source_check_ids()
    assert {"baton.E001", "baton.E011", "baton.W001", "baton.W002", "baton.W003"} <= ids
    assert ids - documented == set(), "add these to docs/reference/settings.md"
    assert documented - ids == set(), "these documented ids no longer exist"


def _api() -> str:
    return (DOCS / "reference" / "api.md").read_text(encoding="utf-8")


def test_every_public_name_exists_and_is_on_the_api_page() -> None:
    page = _api()
    for name in baton.__all__:
        assert getattr(baton, name) is not None
        assert f"baton.{name}" in page, f"baton.{name} is not on docs/reference/api.md"


def _table_names(section: str) -> list[str]:
    """The names in the first column of the first table after `section`'s heading."""
    page = _api()
    start = page.index(section)
    names = []
    in_table = False
    for line in page[start:].splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            cell = line.split("|")[1].strip()
            for match in re.finditer(r"`([A-Za-z_][A-Za-z0-9_]*)", cell):
                names.append(match.group(1))
        elif in_table:
            break
    return [n for n in names if n not in ("attribute", "class", "option", "method")]


def test_documented_job_attributes_exist() -> None:
    from baton.execution.step import Job

    init = inspect.getsource(Job.__init__)
    names = _table_names("### `class baton.Job`")
    assert {"args", "result", "results", "record_usage", "time_left"} <= set(names)
    missing = [n for n in names if not hasattr(Job, n) and f"self.{n}" not in init]
    assert missing == [], "docs/reference/api.md documents Job attributes that do not exist"


@pytest.mark.parametrize("section", ["### `class baton.Step`", "### `class baton.LLMStep`"])
def test_documented_step_options_exist(section: str) -> None:
    cls = baton.LLMStep if "LLMStep" in section else baton.Step
    names = [n for n in _table_names(section) if n not in ("Step",)]
    assert names
    annotated = {n for klass in cls.__mro__ for n in getattr(klass, "__annotations__", {})}
    missing = [n for n in names if not hasattr(cls, n) and n not in annotated]
    assert missing == [], f"{section} documents options {cls.__name__} does not have"


def test_documented_testing_helpers_exist() -> None:
    import baton.testing

    page = (DOCS / "reference" / "testing.md").read_text(encoding="utf-8")
    for name in baton.testing.__all__:
        assert f"`{name}" in page, f"baton.testing.{name} is not on docs/reference/testing.md"


# --- the site ---------------------------------------------------------------------------------


def test_every_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", nav, flags=re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "add these pages to the nav of mkdocs.yml"
    assert listed - pages == set(), "mkdocs.yml lists pages that do not exist"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'); CI builds the site")
    import subprocess

    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "getting-started" / "index.html").exists()
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "First release" in changelog  # CHANGELOG.md is included, not copied


def test_the_newcomer_script_follows_the_getting_started_blocks() -> None:
    """scripts/newcomer.sh (CI's newcomer stage) replays Getting started by block number:
    settings 1 (before startapp), settings 2 (after), the file blocks, run 1 to 3 (the
    second after the workflow finished). A guide that changes shape must change it too."""
    found = docs_blocks.python_blocks(DOCS / "getting-started.md")
    kinds = [(b.kind, b.arg) for b in found if b.kind != "skip"]
    assert [k for k in kinds if k[0] == "settings"] == [("settings", "")] * 2
    assert [a for k, a in kinds if k == "file"] == ["ingest/tasks.py", "ingest/workflows.py"]
    assert [a for k, a in kinds if k == "run"] == ["", "wait", ""]
    script = (ROOT / "scripts" / "newcomer.sh").read_text(encoding="utf-8")
    for needed in ("settings 1", "settings 2", "run 1)", "run 2)", "run 3)", "startapp ingest"):
        assert needed in script
    settings = [b.code for b in found if b.kind == "settings"]
    assert '"ingest"' not in settings[0] and '"ingest"' in settings[1]  # startapp between
