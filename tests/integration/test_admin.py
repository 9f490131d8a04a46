"""The admin observes workflows and steps; its cancel and retry actions go through the engine.

Steps are moved with the engine's own claim/finish (what a worker does), so no worker
process is needed here.
"""

from __future__ import annotations

import datetime
import re
import uuid
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

import baton
from baton.admin import INLINE_STEP_LIMIT
from baton.execution.advance import Discarded
from baton.models import Workflow, WorkflowStep
from tests.helpers import chain, completed, run_step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:baton_workflow_changelist"


def change_url(workflow: Workflow) -> str:
    return reverse("admin:baton_workflow_change", args=[workflow.pk])


def states(workflow: Workflow) -> dict[str, str]:
    return dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state"))


def act(client: Client, action: str, *workflows: Workflow) -> Any:
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(w.pk) for w in workflows]},
        follow=True,
    )


def user_with(*codenames: str, staff: bool = True) -> User:
    user = User.objects.create_user(f"u-{uuid.uuid4().hex[:8]}", password="x", is_staff=staff)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="baton", codename__in=codenames)
    )
    return user


@pytest.fixture
def viewer_client(client: Client) -> Client:
    """A staff user who may view workflows (and so their steps) but not change them."""
    client.force_login(user_with("view_workflow"))
    return client


# --------------------------------------------------------------------------- changelist
def test_changelist_shows_state_as_a_word_progress_and_cost(admin_client: Client) -> None:
    workflow = chain("nightly-report")
    run_step(workflow, "a", completed(1))

    response = admin_client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    html = response.content.decode()
    assert "nightly-report" in html
    assert 'data-state="executing"' in html
    assert ">Executing</span>" in html  # the word, not only a colour
    assert "1/3 (33%)" in html
    assert "(running)" in html  # duration of an unfinished workflow
    assert reverse("admin:baton_workflow_change", args=[workflow.pk]) in html


def test_state_and_name_filters(admin_client: Client) -> None:
    done = baton.new("alpha").add("only", Echo.new()).insert()
    run_step(done, "only", completed(None))
    running = chain("beta")

    by_state = admin_client.get(reverse(CHANGELIST), {"state__exact": "completed"})
    by_name = admin_client.get(reverse(CHANGELIST), {"name": "beta"})

    assert by_state.status_code == by_name.status_code == 200
    assert list(by_state.context["cl"].result_list) == [done]
    assert ">Completed</span>" in by_state.content.decode()
    assert list(by_name.context["cl"].result_list) == [running]


def test_search_by_name_and_by_exact_id(admin_client: Client) -> None:
    invoices = baton.new("import-invoices").add("x", Echo.new()).insert()
    other = baton.new("send-mail").add("x", Echo.new()).insert()

    by_name = admin_client.get(reverse(CHANGELIST), {"q": "invoices"})
    by_id = admin_client.get(reverse(CHANGELIST), {"q": str(other.pk)})

    assert list(by_name.context["cl"].result_list) == [invoices]
    assert list(by_id.context["cl"].result_list) == [other]


def test_empty_lists(admin_client: Client) -> None:
    for name in (CHANGELIST, "admin:baton_workflowstep_changelist"):
        response = admin_client.get(reverse(name))
        assert response.status_code == 200, name
        assert response.context["cl"].result_count == 0


def test_newest_workflow_first(admin_client: Client) -> None:
    first = baton.new("first").add("x", Echo.new()).insert()
    second = baton.new("second").add("x", Echo.new()).insert()

    response = admin_client.get(reverse(CHANGELIST))

    assert list(response.context["cl"].result_list) == [second, first]


# -------------------------------------------------------------------------- change page
def test_change_page_shows_steps_with_attempts_timings_and_results(
    admin_client: Client,
) -> None:
    workflow = chain("detail")
    run_step(workflow, "a", completed({"rows": 42}))

    response = admin_client.get(change_url(workflow))

    assert response.status_code == 200
    html = response.content.decode()
    for name in ("a", "b", "c"):
        assert f"<p>{name}</p>" in html
    assert ">Completed</span>" in html and ">Available</span>" in html
    assert ">Waiting</span>" in html
    assert "1/1" in html  # a's attempts
    assert "{&quot;rows&quot;: 42}" in html  # result preview, escaped JSON
    assert "1/3 (33%)" in html


def test_change_page_is_read_only(admin_client: Client) -> None:
    workflow = chain()

    page = admin_client.get(change_url(workflow))
    post = admin_client.post(change_url(workflow), {"name": "renamed"})

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert post.status_code == 403
    workflow.refresh_from_db()
    assert workflow.name == "chain"


def test_no_add_and_no_delete(admin_client: Client) -> None:
    workflow = chain()

    add = admin_client.get(reverse("admin:baton_workflow_add"))
    delete = admin_client.post(
        reverse("admin:baton_workflow_delete", args=[workflow.pk]), {"post": "yes"}
    )
    changelist = admin_client.get(reverse(CHANGELIST))

    assert add.status_code == 403
    assert delete.status_code == 403
    assert "delete_selected" not in dict(changelist.context["action_form"].fields["action"].choices)
    assert Workflow.objects.filter(pk=workflow.pk).exists()


def test_markup_in_results_and_errors_is_escaped(admin_client: Client) -> None:
    workflow = (
        baton.new("xss")
        .add("ok", Echo.new())
        .add("bad", Echo.new())
        .add("<script>alert('name')</script>", Echo.new())
        .insert()
    )
    run_step(workflow, "ok", completed({"html": "<script>alert('result')</script>"}))
    run_step(
        workflow,
        "bad",
        Discarded(
            reason="<script>alert('reason')</script>",
            error="<script>alert('error')</script>",
            traceback="<script>alert('traceback')</script>",
        ),
    )
    bad = WorkflowStep.objects.get(workflow=workflow, name="bad")
    ok = WorkflowStep.objects.get(workflow=workflow, name="ok")

    pages = [
        admin_client.get(change_url(workflow)),
        admin_client.get(reverse("admin:baton_workflowstep_change", args=[bad.pk])),
        admin_client.get(reverse("admin:baton_workflowstep_change", args=[ok.pk])),
        admin_client.get(reverse("admin:baton_workflowstep_changelist")),
    ]

    for page in pages:
        assert page.status_code == 200
        html = page.content.decode()
        assert "<script>alert(" not in html
    workflow_html = pages[0].content.decode()
    assert "&lt;script&gt;alert(&#x27;result&#x27;)" in workflow_html
    assert "&lt;script&gt;alert(&#x27;error&#x27;)" in workflow_html
    assert "&lt;script&gt;alert(&#x27;name&#x27;)" in workflow_html
    step_html = pages[1].content.decode()
    assert "<pre>&lt;script&gt;alert(&#x27;traceback&#x27;)&lt;/script&gt;</pre>" in step_html
    assert "&lt;script&gt;alert(&#x27;result&#x27;)" in pages[2].content.decode()


def test_big_workflow_page_is_capped_and_takes_a_bounded_number_of_queries(
    admin_client: Client, django_assert_max_num_queries: Any
) -> None:
    size = 2_000
    builder = baton.new("big")
    for i in range(size):
        builder.add(f"s{i:04d}", Echo.new(value=i))
    workflow = builder.insert()
    for i in range(5):  # a few results, so the result preview is part of the page
        run_step(workflow, f"s{i:04d}", completed({"i": i}))
    admin_client.get(reverse(CHANGELIST))  # warm the session and content types

    # 10 whatever the size: session, user, workflow, its first steps, the queue listeners
    # of their "why", how many steps each grafted, content types, debug records, cost by
    # model, state counts.
    with django_assert_max_num_queries(10):
        response = admin_client.get(change_url(workflow))

    assert response.status_code == 200
    html = response.content.decode()
    last_shown = f"s{INLINE_STEP_LIMIT - 1:04d}"
    assert f"<p>{last_shown}</p>" in html
    assert f"<p>s{INLINE_STEP_LIMIT:04d}</p>" not in html
    assert f"first {INLINE_STEP_LIMIT} of 2,000 steps" in html
    assert "{&quot;i&quot;: 4}" in html

    # The note links to every step of this workflow in the steps list.
    steps = admin_client.get(
        reverse("admin:baton_workflowstep_changelist"), {"workflow__exact": str(workflow.pk)}
    )
    assert steps.status_code == 200
    assert steps.context["cl"].result_count == size


def test_the_workflow_list_filters_by_its_most_common_names(
    admin_client: Client, monkeypatch
) -> None:
    from baton.admin import WorkflowNameFilter

    monkeypatch.setattr(WorkflowNameFilter, "LIMIT", 2)
    for name in ("nightly", "nightly", "nightly", "hourly", "hourly", "once"):
        chain(name)

    listing = admin_client.get(reverse(CHANGELIST))
    filtered = admin_client.get(reverse(CHANGELIST), {"name": "once"})

    html = listing.content.decode()
    assert "nightly (3)" in html and "hourly (2)" in html
    assert "?name=once" not in html  # past the limit: a search away
    assert [w.name for w in filtered.context["cl"].result_list] == ["once"]
    assert "?name=once" in filtered.content.decode()  # the chosen name shows as chosen


def statements_of(client: Client, url: str, **query: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, query)
    assert response.status_code == 200
    return len(queries)


def test_the_lists_run_as_many_statements_for_many_rows_as_for_a_few(
    admin_client: Client,
) -> None:
    """No column of the workflow or step list runs a query per row: a page of 100 rows
    (of 120 workflows, 360 steps) runs the statements of a page of 2."""
    lists = [reverse(CHANGELIST), reverse("admin:baton_workflowstep_changelist")]
    for name in ("a", "b"):
        chain(f"few-{name}")
    admin_client.get(lists[0])  # the session and content types, read once
    few = [statements_of(admin_client, url) for url in lists]
    for index in range(118):
        workflow = chain(f"many-{index % 7}")
        run_step(workflow, "a", completed({"i": index}))
    many = [statements_of(admin_client, url) for url in lists]
    assert many == few


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE baton_workflow")
        cursor.execute("ANALYZE baton_step")


def test_a_large_unfiltered_list_shows_the_estimated_count(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ESTIMATE_FROM rows an unfiltered list is counted by PostgreSQL's estimate
    (no count(*) over the table), shown as such; a page past the estimate is shown
    empty, not refused; a filtered list is counted exactly."""
    from baton import listing
    from baton.admin import StepAdmin

    monkeypatch.setattr(listing, "ESTIMATE_FROM", 5)
    monkeypatch.setattr(StepAdmin, "list_per_page", 4)
    for name in ("one", "two", "three"):
        chain(name)
    analyze()
    steps_url = reverse("admin:baton_workflowstep_changelist")

    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(steps_url)
    assert not [q for q in queries if "COUNT(" in q["sql"].upper()]
    assert page.context["cl"].paginator.estimated
    assert page.context["cl"].result_count == 9
    assert "about 9" in page.content.decode()
    assert len(page.context["cl"].result_list) == 4

    past = admin_client.get(steps_url, {"p": "7"})
    assert past.status_code == 200  # not the admin's "?e=1" redirect
    assert list(past.context["cl"].result_list) == []

    waiting = admin_client.get(steps_url, {"state__exact": "waiting"})
    assert not waiting.context["cl"].paginator.estimated
    assert waiting.context["cl"].result_count == 6
    assert "about" not in waiting.content.decode().split('class="paginator"')[1]


def test_the_common_names_of_a_large_table_come_from_its_statistics(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baton import listing
    from baton.admin import WorkflowNameFilter

    monkeypatch.setattr(listing, "ESTIMATE_FROM", 5)
    monkeypatch.setattr(WorkflowNameFilter, "LIMIT", 2)
    for name in ("nightly", "nightly", "nightly", "hourly", "hourly", "once"):
        chain(name)
    analyze()

    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert not [q for q in queries if "GROUP BY" in q["sql"]]
    assert "nightly (~3)" in html and "hourly (~2)" in html
    assert "?name=once" not in html


def test_the_workflow_list_is_newest_first_across_states_page_by_page(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read state by state (baton.listing), the pages hold the same workflows in the
    same order as one ORDER BY created_at DESC, pk DESC: ties included."""
    from baton.admin import WorkflowAdmin
    from baton.live import views

    monkeypatch.setattr(WorkflowAdmin, "list_per_page", 3)
    monkeypatch.setattr(views, "WORKFLOWS_PER_PAGE", 3)
    states = ["executing", "completed", "failed", "cancelled"]
    moment = timezone.now()
    for index in range(10):
        workflow = chain(f"w{index}")
        # Three workflows share each moment: the order between them is by id.
        Workflow.objects.filter(pk=workflow.pk).update(
            state=states[index % 4], created_at=moment - datetime.timedelta(hours=index // 3)
        )
    expected = list(Workflow.objects.order_by("-created_at", "-pk").values_list("pk", flat=True))

    admin_pages, live_pages = [], []
    for number in (1, 2, 3, 4):
        response = admin_client.get(reverse(CHANGELIST), {"p": str(number)})
        admin_pages += [w.pk for w in response.context["cl"].result_list]
        live = admin_client.get(reverse("baton:workflows"), {"page": str(number)})
        live_pages += [row["workflow"].pk for row in live.context["rows"]]
    assert admin_pages == live_pages == expected


def test_the_workflow_list_filters_by_creation_date(admin_client: Client) -> None:
    recent, old = chain("recent"), chain("old")
    Workflow.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=30)
    )
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    (link,) = re.findall(r'<a href="(\?created_at[^"]+)"[^>]*>Past 7 days</a>', html)
    response = admin_client.get(reverse(CHANGELIST) + unescape(link))
    assert list(response.context["cl"].result_list) == [recent]


def test_step_changelist_filters_by_state_and_links_to_the_workflow(
    admin_client: Client,
) -> None:
    workflow = chain("linked")
    run_step(workflow, "a", completed(1))

    response = admin_client.get(
        reverse("admin:baton_workflowstep_changelist"), {"state__exact": "completed"}
    )
    searched = admin_client.get(reverse("admin:baton_workflowstep_changelist"), {"q": "b"})

    assert [s.name for s in response.context["cl"].result_list] == ["a"]
    assert change_url(workflow) in response.content.decode()
    assert [s.name for s in searched.context["cl"].result_list] == ["b"]


# ------------------------------------------------------------------------------ actions
def test_cancel_action_cancels_workflows_through_the_engine(admin_client: Client) -> None:
    workflow = chain("to-cancel")
    run_step(workflow, "a", completed(1))
    finished = baton.new("already-done").add("x", Echo.new()).insert()
    run_step(finished, "x", completed(None))

    response = act(admin_client, "cancel_workflows", workflow, finished)

    assert response.status_code == 200
    workflow.refresh_from_db()
    assert workflow.state == "cancelled"
    assert workflow.unfinished_steps == 0
    assert states(workflow) == {"a": "completed", "b": "cancelled", "c": "cancelled"}
    finished.refresh_from_db()
    assert finished.state == "completed"
    texts = [str(m) for m in response.context["messages"]]
    assert any("Cancelled 1 workflow(s) (2 pending step(s)" in t for t in texts), texts
    assert any("1 workflow(s) had already finished" in t for t in texts), texts


def test_retry_action_requeues_discarded_and_cancelled_steps(admin_client: Client) -> None:
    workflow = chain("to-retry")
    run_step(workflow, "a", completed(1))
    run_step(workflow, "b", Discarded(reason="boom"))
    workflow.refresh_from_db()
    assert workflow.state == "failed"
    assert states(workflow) == {"a": "completed", "b": "discarded", "c": "cancelled"}

    response = act(admin_client, "retry_workflows", workflow)

    workflow.refresh_from_db()
    assert workflow.state == "executing"
    assert states(workflow) == {"a": "completed", "b": "available", "c": "waiting"}
    b = WorkflowStep.objects.get(workflow=workflow, name="b")
    assert b.job_id is not None and b.attempt == 0
    texts = [str(m) for m in response.context["messages"]]
    assert any("Retried 2 step(s) in 1 workflow(s)" in t for t in texts), texts


def test_without_change_permission_the_actions_are_not_offered_nor_run(
    viewer_client: Client,
) -> None:
    workflow = chain("protected")

    page = viewer_client.get(reverse(CHANGELIST))
    detail = viewer_client.get(change_url(workflow))
    act(viewer_client, "cancel_workflows", workflow)

    assert page.status_code == 200
    assert detail.status_code == 200
    assert "<p>a</p>" in detail.content.decode()  # steps are visible to viewers
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    assert (
        viewer_client.get(reverse("admin:baton_workflowstep_change", args=[a.pk])).status_code
        == 200
    )
    assert page.context["action_form"] is None  # no action offered at all
    workflow.refresh_from_db()
    assert workflow.state == "executing"
    assert states(workflow) == {"a": "available", "b": "waiting", "c": "waiting"}


def test_change_permission_offers_the_actions(client: Client) -> None:
    workflow = chain("operable")
    client.force_login(user_with("view_workflow", "change_workflow"))

    page = client.get(reverse(CHANGELIST))
    act(client, "cancel_workflows", workflow)

    names = [name for name, _ in page.context["action_form"].fields["action"].choices]
    assert "cancel_workflows" in names and "retry_workflows" in names
    workflow.refresh_from_db()
    assert workflow.state == "cancelled"


# ------------------------------------------------------------------------------- access
@pytest.mark.parametrize("who", ["anonymous", "not staff", "staff without permission"])
def test_others_are_sent_to_the_login_page_or_refused(client: Client, who: str) -> None:
    workflow = chain()
    if who == "not staff":
        client.force_login(user_with("view_workflow", "change_workflow", staff=False))
    elif who == "staff without permission":
        client.force_login(user_with())

    pages = [reverse(CHANGELIST), change_url(workflow)]
    responses = [client.get(url) for url in pages]
    act(client, "cancel_workflows", workflow)

    for url, response in zip(pages, responses, strict=True):
        if who == "staff without permission":
            assert response.status_code == 403
        else:
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("admin:login"))
            assert url in response["Location"]
    workflow.refresh_from_db()
    assert workflow.state == "executing"


def test_admin_links_to_the_live_graph(admin_client) -> None:
    workflow = baton.new("linked").add("a", Echo.new()).insert()
    response = admin_client.get(reverse("admin:baton_workflow_changelist"))
    assert f'href="/baton/{workflow.pk}/"' in response.content.decode()
