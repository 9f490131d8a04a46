"""The timeline (Gantt) of a workflow: every step, its queue wait and run, the critical
path marked."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

import baton
from baton.live import timeline
from baton.models import Workflow, WorkflowStep
from tests.helpers import run_step
from tests.testapp.tasks import Echo

# Each step moves in its own transaction, as with a worker: their times differ.
pytestmark = pytest.mark.django_db(transaction=True)


def diamond() -> Workflow:
    """a -> (b, c) -> d, run in-process: b finishes after c, so a-b-d is critical."""
    workflow: Workflow = (
        baton.new("diamond")
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .add("c", Echo.new(), deps=["a"])
        .add("d", Echo.new(), deps=["b", "c"])
        .insert()
    )
    for name in ("a", "c", "b", "d"):
        run_step(workflow, name)
    return workflow


def test_every_step_has_a_lane_and_the_critical_path_is_marked(admin_client: Client) -> None:
    workflow = diamond()

    html = admin_client.get(reverse("baton:workflow-timeline", args=[workflow.pk])).content.decode()

    lanes = dict(
        re.findall(r'<div class="lane[^"]*" role="row" data-step="(\w)" data-state="(\w+)"', html)
    )
    assert lanes == dict.fromkeys("abcd", "completed")
    critical = re.findall(r'data-step="(\w)" data-state="\w+" data-critical="true"', html)
    assert critical == ["a", "b", "d"]
    assert html.count('class="bar run"') == 4
    assert html.count('class="bar wait"') == 4  # each was queued before it ran
    assert "critical path: the chain that set the end (3 steps)" in html


def test_the_critical_path_follows_the_dependency_that_finished_last() -> None:
    workflow = diamond()
    steps = list(WorkflowStep.objects.filter(workflow=workflow))
    ids = {s.name: s.id for s in steps}
    edges = [(ids[u], ids[d]) for u, d in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))]
    assert timeline.critical_path(steps, edges) == {ids["a"], ids["b"], ids["d"]}
    assert timeline.critical_path([], []) == set()


def test_the_timeline_is_for_those_who_may_see_workflows(client: Client) -> None:
    workflow = diamond()
    url = reverse("baton:workflow-timeline", args=[workflow.pk])
    assert client.get(url).status_code == 302  # to log in
    client.force_login(User.objects.create_user("nobody", password="x"))
    assert client.get(url).status_code == 403


def test_the_graph_page_links_to_its_timeline(admin_client: Client) -> None:
    workflow = diamond()
    html = admin_client.get(reverse("baton:workflow", args=[workflow.pk])).content.decode()
    assert reverse("baton:workflow-timeline", args=[workflow.pk]) in html
