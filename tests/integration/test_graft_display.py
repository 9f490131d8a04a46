"""Grafted steps are drawn under the step that grafted them: admin, `baton show`, and the
step events the live page receives carry the grafting step.

Steps are moved in-process with the engine's own claim / graft check / finish (what a
worker does after perform() returns a graft), so no worker process is needed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

import baton
from baton.broadcast import step_payload
from baton.execution import advance
from baton.execution.graft import GraftBuilder, graft_problems
from baton.models import Workflow, WorkflowStep
from tests.helpers import run_step
from tests.testapp.tasks import Echo

pytestmark = pytest.mark.usefixtures("clean_jobs")


def graft_from(workflow: Workflow, name: str, build: Callable[[GraftBuilder], Any]) -> None:
    """Run step `name` as a worker would, its perform() grafting what `build` adds."""
    row = WorkflowStep.objects.get(workflow=workflow, name=name)
    assert row.job_id is not None, f"{name} is {row.state}"
    claimed = advance.claim(row.id, row.job_id)
    assert claimed is not None
    graft = GraftBuilder(f"graft of {name}", workflow.pk)
    build(graft)
    assert graft_problems(claimed, graft) == []
    assert advance.finish(claimed, advance.Completed(value_json=None, graft=graft))


@pytest.fixture
def grafted() -> Workflow:
    """list grafts parts[0..2]; parts[1] grafts deep (a graft of depth 2); compile waits
    for all of it; other is on its own."""
    workflow: Workflow = (
        baton.new("drawn")
        .add("list", Echo.new())
        .add("compile", Echo.new(), deps=["list"])
        .add("other", Echo.new())
        .insert()
    )
    graft_from(
        workflow,
        "list",
        lambda g: g.add_many("parts", [Echo.new() for _ in range(3)], deps=["list"]),
    )
    graft_from(workflow, "parts[1]", lambda g: g.add("deep", Echo.new(), deps=["parts[1]"]))
    run_step(workflow, "other")
    return workflow


def ids(workflow: Workflow) -> dict[str, int]:
    return dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "id"))


def test_the_workflow_page_lists_each_graft_under_its_step(
    admin_client: Client, grafted: Workflow
) -> None:
    html = admin_client.get(reverse("admin:baton_workflow_change", args=[grafted.pk])).content
    text = html.decode()
    order = ["list", "parts[0]", "parts[1]", "deep", "parts[2]", "compile", "other"]
    positions = [text.index(f"<p>{name}</p>") for name in order]
    assert positions == sorted(positions), "grafted steps are not under their grafter"
    assert "grafted 3 step(s)" in text  # list
    assert "grafted 1 step(s)" in text  # parts[1]
    assert text.count("↳ grafted by list") == 3
    assert "↳↳ grafted by parts[1]" in text


def test_a_step_page_links_its_grafting_step_and_its_graft(
    admin_client: Client, grafted: Workflow
) -> None:
    step_ids = ids(grafted)
    page = admin_client.get(reverse("admin:baton_workflowstep_change", args=[step_ids["parts[1]"]]))
    text = page.content.decode()
    grafter_url = reverse("admin:baton_workflowstep_change", args=[step_ids["list"]])
    assert f'<a href="{grafter_url}">list</a>' in text
    graft_url = (
        reverse("admin:baton_workflowstep_changelist")
        + f"?grafted_by__exact={step_ids['parts[1]']}"
    )
    assert f'<a href="{graft_url}">1 step(s)</a> added by its job.graft()' in text
    listed = admin_client.get(graft_url)
    assert listed.status_code == 200
    assert [step.name for step in listed.context["cl"].result_list] == ["deep"]
    # A step nobody grafted, and that grafted nothing.
    other = admin_client.get(reverse("admin:baton_workflowstep_change", args=[step_ids["other"]]))
    assert "added by its job.graft()" not in other.content.decode()


def test_baton_show_indents_each_graft_under_its_step(grafted: Workflow) -> None:
    out = io.StringIO()
    call_command("baton", "show", str(grafted.pk), stdout=out)
    lines = [line for line in out.getvalue().splitlines()[1:] if "why: " not in line]
    drawn = [(len(line) - len(line.lstrip()), line.split()[0:2]) for line in lines]
    assert [(indent, words[-1] if words[0] == "+" else words[0]) for indent, words in drawn] == [
        (0, "list"),
        (2, "parts[0]"),
        (2, "parts[1]"),
        (4, "deep"),
        (2, "parts[2]"),
        (0, "other"),
        (6, "compile"),
    ]
    assert [words[0] == "+" for _, words in drawn] == [False, True, True, True, True, False, False]
    assert "(grafted 3)" in lines[0] and "(grafted 1)" in lines[2]


# What the live page's snapshot loads of each step (baton.live.queries.step_snapshot).
LIVE_FIELDS = (
    "id",
    "workflow_id",
    "name",
    "state",
    "version",
    "attempt",
    "max_attempts",
    "started_at",
    "finished_at",
    "reason",
    "cost_usd",
    "unpriced_calls",
    "group",
)


def test_step_events_carry_the_grafting_step(
    grafted: Workflow, django_assert_num_queries: Any
) -> None:
    step_ids = ids(grafted)
    assert (
        step_payload(WorkflowStep.objects.get(pk=step_ids["deep"]))["grafted_by"]
        == step_ids["parts[1]"]
    )
    assert step_payload(WorkflowStep.objects.get(pk=step_ids["list"]))["grafted_by"] is None
    # A step loaded without the column (a snapshot's .only()) costs no query for it.
    partial = WorkflowStep.objects.only(*LIVE_FIELDS).get(pk=step_ids["deep"])
    with django_assert_num_queries(0):
        assert "grafted_by" in step_payload(partial)
