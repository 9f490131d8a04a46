"""Cost, LLM calls and debug records in the admin: shown, escaped, read-only, and visible
to whoever may see workflows.

Steps are moved with the engine's own claim/finish (what a worker does) and debug records
written by baton.debug from the Job of that claim, so no worker process is needed here.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

import baton
from baton import debug
from baton.display import format_usd
from baton.execution import advance
from baton.execution.step import Job
from baton.llm.ledger import Ledger
from baton.llm.usage import Usage
from baton.models import DebugRecord, LLMUsage, Workflow, WorkflowStep
from tests.testapp.tasks import Echo

# Debug records are written by baton.debug's writer thread, on its own connection: the
# tests' rows are committed, so that it sees the same database.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_debug_writer"),
]

CHANGELIST = "admin:baton_workflow_changelist"
MINI = Usage(model="gpt-4o-mini", input_tokens=100, output_tokens=10, latency_ms=42)
UNKNOWN = Usage(model="acme-9000", input_tokens=5, output_tokens=1)
XSS = "<script>alert('x')</script>"
XSS_ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:baton_{name}", args=args)


def step(workflow: Workflow, name: str = "a") -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


def attempt(
    workflow: Workflow,
    name: str = "a",
    *,
    calls: tuple[tuple[str, Usage], ...] = (),
    request: Any = None,
    response: Any = None,
    fail: bool = False,
) -> Job:
    """One attempt of a step, as a worker runs it: claim, capture, record calls, finish
    (failed and rescheduled with `fail`)."""
    row = step(workflow, name)
    assert row.job_id is not None
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    job = Job(claimed, None)
    if request is not None:
        debug.log_upstream_context(job, {"up": f"context of attempt {job.attempt}"})
        debug.log_response(debug.log_request(job, request), response)
    ledger = Ledger()
    for key, usage in calls:
        ledger.record(usage, key)
    outcome: advance.AttemptOutcome
    if fail:
        outcome = advance.Rescheduled(0.0, snooze=False, error="flaked", calls=ledger.calls())
    else:
        outcome = advance.Completed(value_json=None, calls=ledger.calls())
    assert advance.finish(claimed, outcome)
    return job


def user_with(*codenames: str) -> User:
    user = User.objects.create_user(f"u-{uuid.uuid4().hex[:8]}", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="baton", codename__in=codenames)
    )
    return user


def cell(html: str, column: str) -> list[str]:
    """The contents of a changelist column's cells."""
    return re.findall(rf'<td class="field-{column}">(.*?)</td>', html, flags=re.S)


def spent_workflow(name: str = "spent", **options: Any) -> Workflow:
    """A debug workflow whose step `a` failed once and then completed, each attempt
    capturing a request and a response and recording calls."""
    workflow: Workflow = (
        baton.new(name, debug=True, **options)
        .add("a", Echo.new().with_options(max_attempts=2))
        .insert()
    )
    attempt(
        workflow,
        calls=(("first", MINI),),
        request={"messages": [{"role": "user", "content": f"attempt one {XSS}"}]},
        response={"text": f"reply one {XSS}"},
        fail=True,
    )
    attempt(
        workflow,
        calls=(("second", MINI), ("odd", UNKNOWN)),
        request={"messages": [{"role": "user", "content": "attempt two"}]},
        response={"text": "reply two"},
    )
    workflow.refresh_from_db()
    return workflow


# ------------------------------------------------------------------------- changelist
def test_cost_and_live_are_two_columns_each_showing_its_own(admin_client: Client) -> None:
    priced = baton.new("priced").add("a", Echo.new()).insert()
    attempt(priced, calls=(("c", MINI),))
    unknown = baton.new("unknown").add("a", Echo.new()).insert()
    attempt(unknown, calls=(("c", UNKNOWN),))
    both = baton.new("both").add("a", Echo.new()).insert()
    attempt(both, calls=(("c", MINI), ("d", UNKNOWN)))
    baton.new("nothing").add("a", Echo.new()).insert()
    priced.refresh_from_db()
    assert priced.cost_usd is not None and priced.cost_usd < Decimal("0.0001")
    cost = format_usd(priced.cost_usd)
    assert cost != "$0.00" and cost.startswith("$0.0000")  # a tiny cost is not rounded away

    response = admin_client.get(reverse(CHANGELIST))

    html = response.content.decode()
    headers = dict(
        re.findall(
            r'<th scope="col" class="[^"]*column-(\w+)[^"]*">\s*(?:<div class="sortoptions">'
            r'.*?</div>\s*)?<div class="text">(?:<a [^>]*>|<span>)([^<]+)',
            html,
            flags=re.S,
        )
    )
    assert headers["cost_display"] == "Cost" and headers["live_link"] == "Live"
    # Newest first: nothing, both, unknown, priced.
    assert cell(html, "cost_display") == ["—", f"{cost} + 1 unpriced", "unknown", cost]
    links = cell(html, "live_link")
    assert links[-1] == f'<a href="/baton/{priced.pk}/">graph</a>'
    assert all("graph" in link and "$" not in link for link in links)


def test_the_cost_column_sorts_by_cost(admin_client: Client) -> None:
    cheap = baton.new("cheap").add("a", Echo.new()).insert()
    attempt(cheap, calls=(("c", MINI),))
    dear = baton.new("dear").add("a", Echo.new()).insert()
    attempt(dear, calls=(("c", MINI), ("d", MINI)))
    first = admin_client.get(reverse(CHANGELIST))
    index = list(first.context["cl"].list_display).index("cost_display")

    ascending = admin_client.get(reverse(CHANGELIST), {"o": str(index)})
    descending = admin_client.get(reverse(CHANGELIST), {"o": f"-{index}"})

    assert [w.name for w in ascending.context["cl"].result_list] == ["cheap", "dear"]
    assert [w.name for w in descending.context["cl"].result_list] == ["dear", "cheap"]


# ------------------------------------------------------------------------ change page
def test_workflow_page_shows_cost_budget_reason_models_and_debug_records(
    admin_client: Client,
) -> None:
    workflow = spent_workflow(budget_usd=Decimal("2.00"))
    reason = "budget exceeded: spent $2.1 of a $2 budget"
    Workflow.objects.filter(pk=workflow.pk).update(reason=reason)
    per_call = LLMUsage.objects.get(workflow=workflow, call_key="first").cost_usd
    assert per_call is not None

    html = admin_client.get(url("workflow_change", workflow.pk)).content.decode()

    assert f"{format_usd(workflow.cost_usd)} + 1 unpriced" in html
    assert f"{format_usd(workflow.cost_usd)} of $2.00 (and 1 unpriced call(s))" in html
    assert reason in html
    # Per model: the priced one first, then the unknown one.
    table = html[html.index("<th>model</th>") :]
    mini = table.index("<td>gpt-4o-mini</td><td>2</td><td>200</td><td>20</td>")
    acme = table.index("<td>acme-9000</td><td>1</td><td>5</td><td>1</td>")
    assert mini < acme
    assert f"<td>{format_usd(2 * per_call)}</td>" in table
    assert "<td>unknown</td>" in table
    assert f'href="{url("llmusage_changelist")}?workflow__exact={workflow.pk}"' in html
    debug_list = f"{url('debugrecord_changelist')}?workflow__exact={workflow.pk}"
    assert f'<a href="{debug_list}">6 debug record(s)</a>' in html
    # The steps inline has the step's cost over both attempts.
    a = step(workflow)
    assert f"{format_usd(a.cost_usd)} + 1 unpriced" in html
    assert a.cost_usd == 2 * per_call


def test_a_workflow_without_calls_or_debug_shows_dashes(admin_client: Client) -> None:
    workflow = baton.new("plain").add("a", Echo.new()).insert()

    html = admin_client.get(url("workflow_change", workflow.pk)).content.decode()

    assert "debug record(s)" not in html
    assert "<th>model</th>" not in html
    assert "All LLM calls" not in html


def test_step_page_lists_its_calls_and_its_debug_records_paired_and_escaped(
    admin_client: Client,
) -> None:
    workflow = spent_workflow()
    a = step(workflow)

    response = admin_client.get(url("workflowstep_change", a.pk))

    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html
    assert f"attempt one {XSS_ESCAPED}" in html and f"reply one {XSS_ESCAPED}" in html
    # Per attempt, in order: the upstream context, then each request and its response.
    order = [
        "Attempt 1",
        "context of attempt 1",
        "attempt one",
        "reply one",
        "Attempt 2",
        "context of attempt 2",
        "attempt two",
        "reply two",
    ]
    positions = [html.index(text) for text in order]
    assert positions == sorted(positions)
    request = DebugRecord.objects.get(step=a, attempt=1, kind="request")
    assert f'href="{url("debugrecord_change", request.pk)}"' in html
    # Pretty-printed JSON, as text.
    assert '"role": "user"' in html.replace("&quot;", '"')
    # Its calls: attempt, key, model, tokens, latency, cost.
    rows = re.findall(r"<tr><td>(\d)</td><td><a [^>]*>(\w+)</a></td><td>([\w.-]+)</td>", html)
    assert rows == [
        ("1", "first", "gpt-4o-mini"),
        ("2", "second", "gpt-4o-mini"),
        ("2", "odd", "acme-9000"),
    ]
    assert "<td>42 ms</td>" in html
    assert f"{format_usd(a.cost_usd)} + 1 unpriced" in html


def test_a_truncated_record_says_how_big_it_was(admin_client: Client) -> None:
    workflow = baton.new("big", debug=True).add("a", Echo.new()).insert()
    attempt(workflow, request={"document": "x" * 400_000}, response={"text": "ok"})
    request = DebugRecord.objects.get(workflow=workflow, kind="request")
    size = request.payload["size_bytes"]

    step_html = admin_client.get(url("workflowstep_change", step(workflow).pk)).content.decode()
    record_html = admin_client.get(url("debugrecord_change", request.pk)).content.decode()

    for html in (step_html, record_html):
        assert f"Truncated when captured: {size} bytes of JSON" in html
        assert "{&quot;document&quot;: &quot;xxxx" in html  # the preview, as its text
    assert "the whole record" in step_html  # the step page cuts it shorter still
    assert len(step_html) < 100_000


# ---------------------------------------------------------------------- debug records
def test_debug_records_list_filters_by_kind_and_shows_each_record_pretty(
    admin_client: Client,
) -> None:
    workflow = spent_workflow()
    request = DebugRecord.objects.get(workflow=workflow, attempt=1, kind="request")
    reply = DebugRecord.objects.get(workflow=workflow, attempt=1, kind="response")

    listing = admin_client.get(url("debugrecord_changelist"), {"kind__exact": "response"})
    by_step = admin_client.get(
        url("debugrecord_changelist"),
        {"workflow__exact": str(workflow.pk), "step__exact": str(reply.step_id)},
    )
    request_page = admin_client.get(url("debugrecord_change", request.pk))
    reply_page = admin_client.get(url("debugrecord_change", reply.pk))

    assert {r.kind for r in listing.context["cl"].result_list} == {"response"}
    assert len(listing.context["cl"].result_list) == 2
    assert len(by_step.context["cl"].result_list) == 6
    listing_html = listing.content.decode()
    assert "<script>" not in listing_html and "reply one &lt;script&gt;" in listing_html
    assert url("workflowstep_change", reply.step_id) in listing_html
    assert url("workflow_change", workflow.pk) in listing_html
    html = request_page.content.decode()
    assert "<script>" not in html
    assert "<pre" in html and f"&quot;content&quot;: &quot;attempt one {XSS_ESCAPED}" in html
    assert f'<a href="{url("debugrecord_change", reply.pk)}">#{reply.pk}</a>' in html
    reply_html = reply_page.content.decode()
    assert f'<a href="{url("debugrecord_change", request.pk)}">#{request.pk}</a>' in reply_html
    assert 'name="_save"' not in html


def test_debug_records_and_llm_calls_are_read_only(admin_client: Client) -> None:
    workflow = spent_workflow()
    record = DebugRecord.objects.filter(workflow=workflow).first()
    call = LLMUsage.objects.filter(workflow=workflow).first()
    assert record is not None and call is not None

    for name, pk in (("debugrecord", record.pk), ("llmusage", call.pk)):
        assert admin_client.get(url(f"{name}_add")).status_code == 403
        assert admin_client.post(url(f"{name}_change", pk), {"attempt": "9"}).status_code == 403
        assert admin_client.post(url(f"{name}_delete", pk), {"post": "yes"}).status_code == 403
        page = admin_client.get(url(f"{name}_changelist"))
        assert "delete_selected" not in str(page.context["action_form"] or "")
    assert DebugRecord.objects.filter(pk=record.pk, attempt=record.attempt).exists()
    assert LLMUsage.objects.filter(pk=call.pk, attempt=call.attempt).exists()


# -------------------------------------------------------------------------- LLM calls
def test_llm_calls_list_newest_first_with_model_filter_and_links(admin_client: Client) -> None:
    workflow = spent_workflow()
    a = step(workflow)

    listing = admin_client.get(url("llmusage_changelist"))
    acme = admin_client.get(url("llmusage_changelist"), {"model": "acme-9000"})
    page = admin_client.get(url("llmusage_change", LLMUsage.objects.get(call_key="odd").pk))

    calls = list(listing.context["cl"].result_list)
    assert [c.call_key for c in calls] == ["odd", "second", "first"]
    assert [c.call_key for c in acme.context["cl"].result_list] == ["odd"]
    html = listing.content.decode()
    assert f'<a href="{url("workflowstep_change", a.pk)}">a</a>' in html
    assert f'<a href="{url("workflow_change", workflow.pk)}">spent</a>' in html
    assert cell(html, "cost_display")[0] == "unknown"
    assert cell(html, "latency_display")[-1] == "42 ms"
    assert listing.context["cl"].model._meta.verbose_name_plural == "LLM calls"
    assert page.status_code == 200 and "acme-9000" in page.content.decode()


# ------------------------------------------------------------------------------ access
def test_whoever_may_see_workflows_sees_calls_and_records_and_others_get_403(
    client: Client,
) -> None:
    workflow = spent_workflow()
    record = DebugRecord.objects.filter(workflow=workflow).first()
    call = LLMUsage.objects.filter(workflow=workflow).first()
    assert record is not None and call is not None
    pages = [
        url("llmusage_changelist"),
        url("llmusage_change", call.pk),
        url("debugrecord_changelist"),
        url("debugrecord_change", record.pk),
        url("workflowstep_change", step(workflow).pk),
        url("workflow_change", workflow.pk),
    ]

    client.force_login(user_with())
    refused = [client.get(page).status_code for page in pages]
    client.force_login(user_with("view_workflow"))
    allowed = [client.get(page).status_code for page in pages]
    index = client.get(reverse("admin:index")).content.decode()

    assert refused == [403] * len(pages)
    assert allowed == [200] * len(pages)
    assert "LLM calls" in index and "Debug records" in index
