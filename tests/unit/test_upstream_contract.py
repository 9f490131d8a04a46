"""The contract with Procrastinate's internals (baton/execution/upstream.py).

Needs no database: it reads the installed Procrastinate's schema, queries and worker
source. A failure names what changed upstream and what in baton to re-read.
"""

from __future__ import annotations

import importlib
import importlib.resources

import procrastinate
import pytest

from baton.execution import upstream


@pytest.mark.parametrize("item", upstream.AUDITED, ids=lambda item: f"{item.kind}:{item.name}")
def test_borrowed_item_is_as_audited(item: upstream.Borrowed) -> None:
    installed = getattr(procrastinate, "__version__", "?")
    try:
        now = upstream.digest(upstream.upstream_text(item))
    except (LookupError, AttributeError, KeyError) as exc:
        pytest.fail(
            f"Procrastinate {installed} has no {item.kind} {item.name} ({exc}); baton uses it "
            f"in {item.used_by}: re-audit baton/execution/upstream.py"
        )
    assert now == item.digest, (
        f"Procrastinate {installed}'s {item.kind} {item.name} differs from the one audited "
        f"at {upstream.AUDITED_VERSION} (digest {now}, audited {item.digest}). Read the "
        f"change, adapt {item.used_by}, then set its digest to {now!r} in "
        "baton/execution/upstream.py."
    )


def test_the_fragments_mirror_the_audited_bodies() -> None:
    """The mirrored SQL says what the upstream function does (the digests pin the rest)."""
    finish = upstream.sql_function_body(
        _schema(), "procrastinate_finish_job_v1"
    )  # its UPDATE branch is what FINISH_SUCCEEDED writes
    for fragment in ("abort_requested = false", "WHEN 'doing' THEN attempts + 1"):
        assert fragment in " ".join(finish.split())
    defer = " ".join(upstream.sql_function_body(_schema(), "procrastinate_defer_jobs_v1").split())
    assert "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock," in defer


def test_the_skipping_fetch_is_the_audited_fetch_with_one_filter_more() -> None:
    """Migration 0006 created baton_fetch_job_v1 from procrastinate_fetch_job_v2: when
    upstream's body changes, this fails until a new migration re-creates the copy."""
    fetch_0006 = importlib.import_module("baton.migrations.0006_fetch_job_skipping_tasks")
    fetch_v2 = upstream.sql_function_body(_schema(), "procrastinate_fetch_job_v2")
    expected = upstream.skipping_fetch_function(fetch_v2)
    assert fetch_0006.FUNCTION.split() == expected.split(), (
        "procrastinate_fetch_job_v2 changed: write a migration that re-creates "
        "baton_fetch_job_v1 from upstream.skipping_fetch_function(<the new body>)"
    )
    assert "jobs.task_name <> ALL( skip_task_names )" in expected
    with pytest.raises(LookupError, match="audited shape"):
        upstream.skipping_fetch_function(fetch_v2.replace("target_queue_names IS NULL", "true"))


def test_a_changed_body_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    item = upstream.AUDITED[0]
    monkeypatch.setattr(upstream, "upstream_text", lambda i: "changed" if i is item else "")
    names = [changed.name for changed, _ in upstream.drifted()]
    assert item.name in names


def _schema() -> str:
    return importlib.resources.files("procrastinate.sql").joinpath("schema.sql").read_text()
