"""The documentation cannot drift: every Python block of the guides is marked (they run in
tests/worker/test_guides.py); every check id is documented; the hand-written API page
names only what exists; the site's navigation lists every page.

Each Python block of a guide carries a mark (scripts/docs_blocks.py): a file of the
reader's project, settings, a block to run, or an explicit skip with its reason.
"""

from __future__ import annotations

import inspect
import re
import shutil
import sys
from pathlib import Path

import pytest

import baton
from tests.helpers import REPO_ROOT, load_script

DOCS = REPO_ROOT / "docs"
# The guides whose every Python block is marked and whose runnable blocks run (test_guides).
GUIDES = [
    DOCS / "getting-started.md",
    DOCS / "guides" / "building-a-workflow.md",
    DOCS / "howto" / "testing.md",
    DOCS / "howto" / "scaling.md",
    DOCS / "index.md",
]
ROOT = REPO_ROOT
docs_blocks = load_script("docs_blocks")


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
