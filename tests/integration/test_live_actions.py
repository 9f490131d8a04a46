"""Actions on the workflow page (cancel, retry, retry one step), the workflow's own
transitions on its socket, and why a step waits (baton.explain) in the panel and admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from baton.execution.advance import Discarded
from baton.models import Workflow, WorkflowStep
from tests.helpers import chain, run_step
from tests.integration import test_live
from tests.integration.test_live import communicator, in_loop, make_user, receive_until

pytestmark = pytest.mark.django_db

redis_layer = test_live.redis_layer  # the fixture, shared


def action_url(workflow: Workflow) -> str:
    return reverse("baton:workflow-action", args=[workflow.pk])


def broken() -> Workflow:
    """chain() with a discarded: a discarded, b and c cancelled, the workflow failed."""
    workflow = chain("broken")
    run_step(workflow, "a", Discarded(error="boom", traceback="", reason="it broke"))
    workflow.refresh_from_db()
    assert workflow.state == "failed"
    return workflow


def post(client: Client, workflow: Workflow, **data: str) -> Any:
    return client.post(action_url(workflow), data, HTTP_ACCEPT="application/json")


def changer() -> User:
    return make_user(staff=True, perms=("view_workflow", "change_workflow"))


def states(workflow: Workflow) -> dict[str, str]:
    return dict(WorkflowStep.objects.filter(workflow=workflow).values_list("name", "state"))


class TestActions:
    def test_buttons_are_shown_only_to_users_who_may_change_workflows(self) -> None:
        workflow = broken()
        page = reverse("baton:workflow", args=[workflow.pk])
        viewer, editor = Client(), Client()
        viewer.force_login(make_user(staff=True))
        editor.force_login(changer())

        assert 'data-action="retry"' not in viewer.get(page).content.decode()
        html = editor.get(page).content.decode()
        assert 'data-action="retry"' in html and 'data-action="retry-step"' in html
        assert 'name="csrfmiddlewaretoken"' in html
        # cancel is hidden for a failed workflow (shown while executing)
        assert 'data-action="cancel" hidden' in html

    @pytest.mark.parametrize("user", ["anonymous", "staff without change", "view only"])
    def test_the_server_refuses_users_without_the_change_permission(self, user: str) -> None:
        workflow = broken()
        client = Client()
        if user == "staff without change":
            client.force_login(make_user(staff=True))
        elif user == "view only":
            client.force_login(make_user(perms=("view_workflow",)))

        response = post(client, workflow, action="retry")

        assert response.status_code == 403
        assert states(workflow)["a"] == "discarded"

    def test_a_post_without_its_csrf_token_is_refused(self) -> None:
        workflow = broken()
        client = Client(enforce_csrf_checks=True)
        client.force_login(changer())

        response = post(client, workflow, action="retry")

        assert response.status_code == 403
        assert states(workflow)["a"] == "discarded"

    def test_get_is_not_an_action(self) -> None:
        client = Client()
        client.force_login(changer())
        assert client.get(action_url(broken())).status_code == 405

    def test_retry_then_cancel_the_workflow(self) -> None:
        workflow = broken()
        client = Client()
        client.force_login(changer())

        response = post(client, workflow, action="retry")

        assert response.status_code == 200
        body = response.json()
        assert body == {
            "ok": True,
            "message": "Retrying 3 steps.",
            "workflow": body["workflow"],
        }
        assert body["workflow"]["state"] == "executing"
        assert states(workflow) == {"a": "available", "b": "waiting", "c": "waiting"}

        body = post(client, workflow, action="cancel").json()
        assert body["ok"] and body["message"] == "Cancelled the workflow (3 steps)."
        assert body["workflow"]["state"] == "cancelled"
        assert set(states(workflow).values()) == {"cancelled"}

        again = post(client, workflow, action="cancel")
        assert again.status_code == 409
        assert again.json()["message"] == "Nothing to cancel: the workflow is cancelled."

    def test_retry_one_step_and_what_it_cancelled(self) -> None:
        workflow = broken()
        client = Client()
        client.force_login(changer())

        body = post(client, workflow, action="retry-step", step="a").json()

        assert body["ok"] and body["message"] == "Retrying a and the 2 steps it cancelled."
        assert states(workflow) == {"a": "available", "b": "waiting", "c": "waiting"}

    def test_a_step_that_cannot_be_retried_says_why(self) -> None:
        workflow = broken()
        client = Client()
        client.force_login(changer())

        response = post(client, workflow, action="retry-step", step="b")

        assert response.status_code == 400
        message = response.json()["message"]
        assert message.startswith("cannot retry: 'b' depends on 'a' (discarded)"), message
        assert post(client, workflow, action="retry-step", step="nope").status_code == 400
        assert post(client, workflow, action="explode").status_code == 400
        assert states(workflow)["a"] == "discarded"

    def test_a_form_posted_without_javascript_goes_back_to_the_page(self) -> None:
        workflow = broken()
        client = Client()
        client.force_login(changer())

        response = client.post(action_url(workflow), {"action": "retry"})

        assert response.status_code == 302
        assert response["Location"] == reverse("baton:workflow", args=[workflow.pk])
        workflow.refresh_from_db()
        assert workflow.state == "executing"


class TestExplanation:
    def test_the_admin_step_page_says_why_a_step_waits(self, admin_client: Client) -> None:
        workflow = chain("waits")
        step = WorkflowStep.objects.get(workflow=workflow, name="b")

        html = admin_client.get(
            reverse("admin:baton_workflowstep_change", args=[step.pk])
        ).content.decode()

        assert "why it is here" in html.lower()
        assert "waits for 1 of its 1 dependency: a (available)" in html

    def test_the_workflow_page_in_the_admin_says_why_inline(self, admin_client: Client) -> None:
        workflow = chain("inline-why")

        html = admin_client.get(
            reverse("admin:baton_workflow_change", args=[workflow.pk])
        ).content.decode()

        assert "waits for a (available)" in html  # b
        assert "waits for b (waiting)" in html  # c
        assert "no worker is listening on queue &#x27;default&#x27;" in html  # a

    def test_the_admin_shows_times_to_the_second_with_their_zone(
        self, admin_client: Client
    ) -> None:
        workflow = chain("seconds")
        html = admin_client.get(reverse("admin:baton_workflow_changelist")).content.decode()
        stamp = workflow.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert stamp in html


@pytest.mark.django_db(transaction=True)
class TestOnTheSocket:
    def test_the_detail_carries_the_explanation(self, redis_layer) -> None:
        workflow = chain("why")
        step_b = WorkflowStep.objects.get(workflow=workflow, name="b")
        user = make_user(staff=True)

        async def scenario() -> None:
            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert (await socket.connect(timeout=10))[0]
            await socket.receive_json_from(timeout=10)
            await socket.send_json_to({"action": "detail", "step_id": step_b.id})
            detail = await receive_until(socket, lambda m: m["type"] == "detail")
            why = detail["step"]["explanation"]
            assert why["sentences"] == ["waits for 1 of its 1 dependency: a (available)"]
            assert why["blockers"] == [{"name": "a", "state": "available", "since": None}]
            await socket.disconnect()

        in_loop(scenario)

    def test_retry_and_cancel_are_broadcast_as_workflow_transitions(self, redis_layer) -> None:
        workflow = broken()
        user = make_user(staff=True)

        async def scenario() -> None:
            from channels.db import database_sync_to_async

            socket = communicator(f"/ws/baton/workflows/{workflow.pk}/", user)
            assert (await socket.connect(timeout=10))[0]
            snapshot = await socket.receive_json_from(timeout=10)
            assert snapshot["workflow"]["state"] == "failed"

            await database_sync_to_async(workflow.retry)()
            event = await receive_until(socket, lambda m: m["type"] == "workflow")
            assert event["workflow"]["state"] == "executing"
            assert event["workflow"]["finished_at"] is None

            await database_sync_to_async(workflow.cancel)()
            event = await receive_until(socket, lambda m: m["type"] == "workflow")
            assert event["workflow"]["state"] == "cancelled"
            await socket.disconnect()

        in_loop(scenario)


def test_list_summaries_carry_counts_per_bucket(admin_client: Client) -> None:
    broken()
    html = admin_client.get(reverse("baton:workflows")).content.decode()
    assert "1 failed · 2 cancelled" in html
