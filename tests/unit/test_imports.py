"""How baton's modules import each other: what loads before Django's apps are ready, no
import cycles, and a reason for every import left inside a function (issue 12)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

# Imported from settings, conftest.py or a models.py, before the apps are ready: none may
# load baton's models (Django would raise AppRegistryNotReady).
EARLY_SCRIPT = """
import sys
import baton, baton.apps, baton.debug, baton.llm, baton.testing
baton.new("w")
assert "baton.models" not in sys.modules, "baton.models loaded before the apps are ready"
print("ok")
"""


def _house_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("house_report", ROOT / "scripts/house_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baton_imports_without_settings_and_without_its_models() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", EARLY_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_no_import_cycle_and_every_function_level_import_says_why() -> None:
    report = _house_report()
    known = report.modules()
    graph: dict[str, set[str]] = {}
    unexplained = []
    for name, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        top, inner = report._imports(report.ast.parse(text))
        graph[name] = set().union(*(report._targets(n, name, known) for n in top))
        unexplained += [
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in inner
            if not report._reason(lines, node)
        ]
    assert report.cycles(graph) == []
    assert unexplained == [], "function-level imports without a comment saying why"
