"""The package as a user installs it: the sdist and the wheel build, carry every template,
static file and migration, leave the tests and the example project out, and the wheel
installs into a clean virtualenv where Django finds baton's templates and static files.

No network: the build runs without isolation (the dev extra pins setuptools), and the
clean virtualenv gets its dependencies from this one through a .pth line (pip installs
the wheel itself with --no-deps --no-index).
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _package_files(*folders: str) -> set[str]:
    found = set()
    for folder in folders:
        for path in (ROOT / "baton" / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.add(str(path.relative_to(ROOT)))
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_wheel_carries_templates_static_and_migrations(dist: Path) -> None:
    (wheel,) = dist.glob("baton_workflows-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _package_files("templates", "static") | {
        "baton/py.typed",
        "baton/migrations/0001_initial.py",
    }
    assert expected - names == set()
    assert not [n for n in names if n.startswith(("tests/", "example_project/", "bench/"))]
    # Exactly the migrations of the source tree: none left over from an earlier build.
    source = {f"baton/migrations/{p.name}" for p in (ROOT / "baton" / "migrations").glob("*.py")}
    assert {n for n in names if n.startswith("baton/migrations/")} == source


def test_sdist_carries_templates_and_static(dist: Path) -> None:
    (sdist,) = dist.glob("baton_workflows-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert _package_files("templates", "static") - names == set()
    assert {"pyproject.toml", "README.md"} <= names


def test_wheel_installs_into_a_clean_venv_with_templates_and_static(
    dist: Path, tmp_path: Path
) -> None:
    (wheel,) = dist.glob("baton_workflows-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=120,
    )  # fmt: skip
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Dependencies (Django, Procrastinate, ...) from this virtualenv; baton from the wheel.
    (site / "zz_baton_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    script = textwrap.dedent(
        """
        import pathlib, sys
        import django
        from django.conf import settings

        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                "django.contrib.sessions", "django.contrib.messages",
                "django.contrib.staticfiles", "procrastinate.contrib.django", "channels",
                "baton",
            ],
            DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}},
            TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                        "APP_DIRS": True}],
            STATIC_URL="/static/",
        )
        django.setup()
        import baton
        from django.contrib.staticfiles import finders
        from django.db.migrations.loader import MigrationLoader
        from django.template.loader import get_template

        here = pathlib.Path(baton.__file__).resolve()
        assert here.is_relative_to(pathlib.Path(sys.prefix).resolve()), here
        for name in ("baton/live/workflow_list.html", "baton/live/workflow_detail.html"):
            origin = pathlib.Path(get_template(name).origin.name).resolve()
            assert origin.is_relative_to(here.parent), origin
        for name in ("baton/live.js", "baton/live.css"):
            found = finders.find(name)
            assert found and pathlib.Path(found).resolve().is_relative_to(here.parent), found
        loader = MigrationLoader(None, ignore_no_migrations=True)
        assert ("baton", "0001_initial") in loader.disk_migrations
        print("ok", baton.__file__)
        """
    )
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok ")
    check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "baton-workflows" not in check.stdout, check.stdout  # its requirements are met
