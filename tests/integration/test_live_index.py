"""The workflow index: filters by state, search by name or id, counts per state,
pagination that keeps the filters and stays cheap with 100,000 workflows."""

from __future__ import annotations

import re
import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import baton
from baton.models import Workflow
from tests.helpers import chain, run_step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.django_db


def listing(client: Client, **query: str) -> str:
    response = client.get(reverse("baton:workflows"), query)
    assert response.status_code == 200
    return response.content.decode()


def rows(html: str) -> list[str]:
    return re.findall(r'<td class="name"><a href="[^"]+">([^<]+)</a>', html)


def counts(html: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r'data-count="(\w+)">(\d+)<', html)}


def some_workflows() -> None:
    for name in ("import-eu", "import-us", "report"):
        chain(name)
    done = chain("import-done")
    for step in ("a", "b", "c"):
        run_step(done, step)


def test_an_empty_index_and_a_page_past_the_last(admin_client: Client) -> None:
    """The newest-first read merges nothing when a page is empty (it raised a TypeError)."""
    html = listing(admin_client)
    assert rows(html) == [] and 'class="empty"' in html
    assert counts(html)["all"] == 0
    chain("only-one")
    assert rows(listing(admin_client, page="7")) == ["only-one"]  # the last page instead


def test_counts_per_state_and_a_filter_by_state(admin_client: Client) -> None:
    some_workflows()

    html = listing(admin_client)
    assert counts(html) == {
        "all": 4,
        "executing": 3,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert rows(listing(admin_client, state="completed")) == ["import-done"]
    # An unknown state is no filter.
    assert len(rows(listing(admin_client, state="nonsense"))) == 4


def test_search_by_name_or_by_id(admin_client: Client) -> None:
    some_workflows()
    report = Workflow.objects.get(name="report")

    assert sorted(rows(listing(admin_client, q="import"))) == [
        "import-done",
        "import-eu",
        "import-us",
    ]
    assert rows(listing(admin_client, q=str(report.pk))) == ["report"]
    html = listing(admin_client, q="import", state="executing")
    assert sorted(rows(html)) == ["import-eu", "import-us"]
    # Counts follow the search, not the state filter.
    assert counts(html)["all"] == 3 and counts(html)["completed"] == 1
    assert "No workflow matches." in listing(admin_client, q="zzz")


def test_pages_keep_their_filters(admin_client: Client, monkeypatch) -> None:
    from baton.live import views

    monkeypatch.setattr(views, "WORKFLOWS_PER_PAGE", 2)
    for number in range(5):
        baton.new(f"batch-{number}").add("x", Echo.new()).insert()
    baton.new("other").add("x", Echo.new()).insert()

    html = listing(admin_client, q="batch")
    assert "page 1 of 3" in html
    assert 'href="?q=batch&amp;page=2" rel="next"' in html
    assert rows(listing(admin_client, q="batch", page="3")) == ["batch-0"]


@pytest.mark.django_db(transaction=True)
def test_the_index_stays_cheap_with_100000_workflows(admin_client: Client) -> None:
    """Measured, not asserted in time: the queries must use the state index, and their
    durations are printed (pytest -s)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO baton_workflow (id, name, state, ignore_cancelled, ignore_discarded,
                debug, step_count, unfinished_steps, failed_steps, reason, unpriced_calls,
                created_at)
            SELECT gen_random_uuid(), 'bulk-' || n,
                   (ARRAY['executing','completed','failed','cancelled'])[1 + n % 4],
                   false, false, false, 1, 0, '[]'::jsonb, '', 0,
                   now() - make_interval(secs => n)
              FROM generate_series(1, 100000) AS n
            """
        )
        cursor.execute("ANALYZE baton_workflow")
        cursor.execute(
            "EXPLAIN SELECT * FROM baton_workflow WHERE state = 'failed'"
            " ORDER BY created_at DESC, id DESC LIMIT 50 OFFSET 1000"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "baton_wf_state_created" in plan, plan

    timings = {}
    for label, query in (
        ("first page", {}),
        ("page 1000", {"page": "1000"}),
        ("state=failed", {"state": "failed"}),
        ("state=failed, page 400", {"state": "failed", "page": "400"}),
        ("search", {"q": "bulk-4242"}),
    ):
        started = time.perf_counter()
        html = listing(admin_client, **query)
        timings[label] = f"{1000 * (time.perf_counter() - started):.0f} ms"
        assert rows(html), label
    with CaptureQueriesContext(connection) as index_queries:
        assert counts(listing(admin_client))["all"] == 100_000
    # The admin's list too: its name filter lists the commonest names, not 100,000.
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as admin_queries:
        admin_page = admin_client.get(reverse("admin:baton_workflow_changelist"))
    timings["admin list"] = f"{1000 * (time.perf_counter() - started):.0f} ms"
    assert admin_page.status_code == 200
    assert admin_page.content.decode().count("?name=") <= 20
    assert len(admin_page.content) < 200_000
    # No statement of either page reads every workflow, but the index's exact counts
    # per state (one grouped read): the page's rows come through the state index, the
    # admin counts by PostgreSQL's estimate and takes the common names from pg_stats.
    for queries in (index_queries, admin_queries):
        for query in queries:
            sql = query["sql"]
            if "baton_workflow" not in sql or sql.startswith('SELECT "baton_workflow"."state"'):
                continue
            assert "GROUP BY" not in sql and "COUNT(" not in sql.upper(), sql
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan on baton_workflow" not in plan, plan
    print("\n[index, 100,000 workflows] " + ", ".join(f"{k}: {v}" for k, v in timings.items()))
