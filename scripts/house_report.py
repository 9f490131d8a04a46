"""A reviewer's measure of the house (issue 12): module lengths, function-level imports
and their reasons, import cycles among baton's modules, modules short of mypy --strict,
and the unit-test time.

    .venv/bin/python scripts/house_report.py            # everything, runs tests/unit
    .venv/bin/python scripts/house_report.py --no-tests # without the unit-test run

Function-level imports are found in the AST; the reason is the comment on the import's
line or the comment block above it (a pragma such as `# noqa` is no reason). Cycles are
computed from module-level imports (those run at import time; TYPE_CHECKING blocks
excluded): strongly connected components of the graph of baton modules.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "baton"


def modules() -> dict[str, Path]:
    """{dotted name: path} of baton's modules (migrations left out)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        if "migrations" in relative.parts:
            continue
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """(module-level imports, imports inside functions) of a module's tree."""
    top: list[ast.stmt] = []
    inner: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                (inner if in_function else top).append(child)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return top, inner


def _targets(node: ast.stmt, module: str, known: dict[str, Path]) -> set[str]:
    """The baton modules an import statement loads."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if not known[module].name == "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        names = {f"{base}.{alias.name}" for alias in node.names} | {base}
    found = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("baton") and name != module:
            found.add(name)
    # `from baton.x import y` loads baton.x; y counts only when it is a module itself.
    return found


_PRAGMAS = ("noqa", "type:", "pragma:", "fmt:")


def _comment(text: str) -> str:
    """The comment of a line, or "" when it is only a tool's pragma (noqa, type: ignore)."""
    comment = text.split("#", 1)[1].strip() if "#" in text else ""
    return "" if comment.startswith(_PRAGMAS) else comment


def _reason(lines: list[str], node: ast.stmt) -> str:
    """The comment on the import's line, or the comment block above it (over the imports
    of its group). A pragma such as `# noqa: F401` is no reason."""
    inline = _comment(lines[node.lineno - 1])
    if inline:
        return inline
    number = node.lineno - 2
    while number >= 0 and lines[number].strip().startswith(("import ", "from ")):
        number -= 1
    block: list[str] = []
    while number >= 0 and lines[number].strip().startswith("#"):
        block.insert(0, lines[number].strip().lstrip("#").strip())
        number -= 1
    return " ".join(part for part in block if part)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def non_strict_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    relaxed = []
    if not config.get("strict"):
        return ["(the whole package: [tool.mypy] has no strict = true)"]
    for override in config.get("overrides", []):
        loosened = [key for key, value in override.items() if key != "module" and not value]
        if loosened:
            mods = override["module"]
            for module in [mods] if isinstance(mods, str) else mods:
                relaxed.append(f"{module} ({', '.join(loosened)} off)")
    return relaxed


def unit_test_time() -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - started
    last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
    return took, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-tests", action="store_true", help="skip the tests/unit run")
    parser.add_argument("--top", type=int, default=10, help="how many largest modules")
    options = parser.parse_args()

    known = modules()
    lengths = {name: len(path.read_text().splitlines()) for name, path in known.items()}
    graph: dict[str, set[str]] = defaultdict(set)
    inner_imports: list[tuple[str, int, str, str]] = []
    for name, path in known.items():
        text = path.read_text()
        lines = text.splitlines()
        top, inner = _imports(ast.parse(text))
        for node in top:
            graph[name] |= _targets(node, name, known)
        for node in inner:
            statement = ast.unparse(node)
            inner_imports.append(
                (str(path.relative_to(ROOT)), node.lineno, statement, _reason(lines, node))
            )

    print(f"Largest modules (of {len(known)}, lines):")
    for name, count in sorted(lengths.items(), key=lambda item: -item[1])[: options.top]:
        print(f"  {count:5}  {known[name].relative_to(ROOT)}")

    unexplained = [item for item in inner_imports if not item[3]]
    print(f"\nFunction-level imports: {len(inner_imports)} ({len(unexplained)} without a reason)")
    for path, line, statement, reason in inner_imports:
        print(f"  {path}:{line}: {statement}  -- {reason or '(no reason given)'}")

    found = cycles(graph)
    print(f"\nImport cycles among baton modules (module-level imports): {len(found) or 'none'}")
    for component in found:
        print("  " + " <-> ".join(component))

    relaxed = non_strict_modules()
    print(f"\nModules short of mypy --strict: {len(relaxed) or 'none'}")
    for module in relaxed:
        print(f"  {module}")

    if not options.no_tests:
        took, summary = unit_test_time()
        print(f"\nUnit tests (tests/unit, no DATABASE_URL): {took:.1f}s wall: {summary}")


if __name__ == "__main__":
    main()
