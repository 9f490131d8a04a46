#!/usr/bin/env python
"""manage.py for baton's example project: `python example_project/manage.py <command>`."""

import os
import sys
from pathlib import Path


def main() -> None:
    # The repository root, so that `example_project` and `baton` import without installing.
    repo_root = Path(__file__).resolve().parent.parent
    here = str(Path(__file__).resolve().parent)
    # Drop this folder (added by `python example_project/manage.py`): its settings.py and
    # urls.py must only be importable as example_project.settings / example_project.urls.
    sys.path[:] = [p for p in sys.path if p == "" or os.path.abspath(p) != here]
    sys.path.insert(0, str(repo_root))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
