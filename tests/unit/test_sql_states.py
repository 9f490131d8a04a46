"""State names in baton's SQL come from baton/graph/states.py (as parameters, or formatted
in at import time with baton.execution.statements.sql_state), never written as literals.

PENDING lists the files not converted yet, each with who finishes it; a file that no
longer needs its entry fails the test too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from baton.graph.states import StepState, WorkflowState

PACKAGE = Path(__file__).resolve().parents[2] / "baton"
STATES = sorted({*StepState, *WorkflowState})
QUOTED_STATE = re.compile("'(" + "|".join(map(re.escape, STATES)) + ")'")
SQL = re.compile(r"\b(SELECT|UPDATE|INSERT|DELETE|WHERE|SET|WHEN)\b")
# file (relative to baton/) -> why it still has literals.
PENDING: dict[str, str] = {}  # none left


def quoted_states(path: Path) -> list[str]:
    """'file:line: literal' for each quoted state in an SQL-looking string of `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL.search(node.value):
                found += [
                    f"baton/{path.relative_to(PACKAGE)}:{node.lineno}: {m.group(0)}"
                    for m in QUOTED_STATE.finditer(node.value)
                ]
    return found


def test_sql_takes_state_names_from_graph_states() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        if relative.startswith("migrations/") or relative in PENDING:
            continue
        if found := quoted_states(path):
            offenders[relative] = found
    assert not offenders, (
        "SQL with state names written out; use a parameter (StepState.X) or "
        "statements.sql_state(StepState.X) formatted in at import time:\n"
        + "\n".join(line for lines in offenders.values() for line in lines)
    )


def test_pending_files_still_need_their_entry() -> None:
    done = [name for name in PENDING if not quoted_states(PACKAGE / name)]
    assert not done, f"no state literals left in {done}: remove them from PENDING"


def test_the_scan_sees_a_literal() -> None:
    assert QUOTED_STATE.search("UPDATE baton_step SET state = 'completed'")
    assert not QUOTED_STATE.search("UPDATE baton_step SET state = %(completed)s")
