"""The Python code blocks of baton's guides, with what each is for.

A guide marks each ```python block with an HTML comment on the line before it (invisible
on the site):

    <!-- docs-test: file ingest/tasks.py -->   the block is that file of the reader's project
    <!-- docs-test: settings -->               appended to the project's settings.py
    <!-- docs-test: run -->                    run in a shell, in order, after the files exist
    <!-- docs-test: run wait -->               the same, once the workflow has finished
    <!-- docs-test: skip (why) -->             not run; the reason is required

tests/worker/test_guides.py runs the guides with these marks against real PostgreSQL and a real
worker, and scripts/newcomer.sh builds a fresh project from Getting started's blocks.

    python scripts/docs_blocks.py docs/getting-started.md KIND [DEST]
        KIND file: writes every file block under DEST; settings / run: prints the blocks
        (settings N / run N: only the Nth, from 1)
"""

from __future__ import annotations

import dataclasses
import re
import sys
import textwrap
from pathlib import Path

MARK = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>file|settings|run|skip)\b(?P<rest>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
KINDS = ("file", "settings", "run", "skip")


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    kind: str | None  # None: a python block without a mark
    arg: str  # the file's path, "wait" for run, the reason for skip
    code: str

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the mark just above it (if any)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence.group("lang"):
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        code = textwrap.dedent("\n".join(lines[i + 1 : j])) + "\n"
        kind, arg = None, ""
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = MARK.match(lines[k]) if k >= 0 else None
        if mark:
            kind, arg = mark.group("kind"), mark.group("rest").strip()
        found.append(Block(Path(path), start + 1, fence.group("lang"), kind, arg, code))
        i = j + 1
    return found


def python_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.lang in ("python", "py")]


def problems(path: Path) -> list[str]:
    """Python blocks without a mark, skips without a reason, files without a path."""
    found = []
    for block in python_blocks(path):
        if block.kind is None:
            found.append(f"{block.where()}: python block without a <!-- docs-test: ... --> mark")
        elif block.kind == "skip" and not block.arg.strip("() "):
            found.append(f"{block.where()}: docs-test skip needs a reason")
        elif block.kind == "file" and not block.arg:
            found.append(f"{block.where()}: docs-test file needs a path")
        elif block.kind == "run" and block.arg not in ("", "wait"):
            found.append(f"{block.where()}: docs-test run takes only 'wait'")
    return found


def write_files(path: Path, dest: Path) -> list[Path]:
    """Write the guide's file blocks under dest (packages get an __init__.py)."""
    written = []
    for block in python_blocks(path):
        if block.kind != "file":
            continue
        target = dest / block.arg
        target.parent.mkdir(parents=True, exist_ok=True)
        for parent in target.relative_to(dest).parents:
            if str(parent) != ".":
                (dest / parent / "__init__.py").touch()
        target.write_text(block.code, encoding="utf-8")
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    guide, kind, *rest = argv
    if kind == "file":
        for target in write_files(Path(guide), Path(rest[0] if rest else ".")):
            print(target)
        return 0
    chosen = [block for block in python_blocks(Path(guide)) if block.kind == kind]
    if rest:
        chosen = [chosen[int(rest[0]) - 1]]
    for block in chosen:
        print(f"# --- {block.where()} ({kind} {block.arg})".rstrip())
        print(block.code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
