"""Grafted steps on the live page, in a real browser, with a real worker and real Redis.

The page is open while a step grafts three steps (job.graft()); it says that steps were
added, its Redraw draws them framed as "grafted by" their grafting step, and their
events carry the grafting step's id.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import baton
from baton.models import Workflow, WorkflowStep
from baton.testing import wait_for_workflow
from tests.testapp.tasks import Echo, ListUrls
from tests.worker import test_live_browser
from tests.worker.test_live_browser import PASSWORD, SCREENSHOT, off_loop
from tests.worker.test_live_browser_actions import browser_page
from tests.worker.test_live_browser_graphs import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

_browser_available = test_live_browser._browser_available
live_server_url = test_live_browser.live_server_url

URLS = ["https://a.example/", "https://b.example/", "https://c.example/"]


def test_grafted_steps_are_announced_live_and_drawn_in_a_frame_of_their_grafter(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("grafts", password=PASSWORD, is_staff=True)
    workflow: Workflow = (
        baton.new("graft <b>live</b>")
        .add("list", ListUrls.new(urls=URLS))
        .add("report", Echo.new(), deps=["list"])
        .insert()
    )
    path = reverse("baton:workflow", args=[workflow.pk])

    with sync_playwright() as playwright:
        browser, page, errors = browser_page(playwright)
        try:
            log_in(page, live_server_url, path, "grafts")
            expect(page.locator("#baton-graph .node")).to_have_count(2)
            expect(page.locator('[data-role="added"]')).to_be_hidden()

            off_loop(start_worker, concurrency=2, env={"BATON_TEST_BROADCAST": "1"})
            # The three grafted steps' events reach a page that has no node for them.
            note = page.locator('[data-role="added"]')
            expect(note).to_be_visible()
            expect(note.locator('[data-role="added-text"]')).to_have_text(
                "3 steps were added since this page was drawn (grafted)."
            )
            expect(page.locator('[data-role="workflow-state"]')).to_have_text("completed")

            page.click('[data-role="redraw"]')
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            expect(page.locator("#baton-graph .node")).to_have_count(5)
            listed = off_loop(WorkflowStep.objects.get, workflow_id=workflow.pk, name="list")
            frame = page.locator(f'.graft[data-grafted-by="{listed.id}"]')
            expect(frame.locator("text")).to_have_text("grafted by list")
            box = frame.locator("rect").bounding_box()
            assert box is not None
            grafted = off_loop(
                lambda: list(
                    WorkflowStep.objects.filter(workflow_id=workflow.pk, grafted_by=listed.id)
                    .order_by("id")
                    .values_list("name", flat=True)
                )
            )
            assert len(grafted) == len(URLS)
            for name in grafted:  # each grafted node inside the frame
                node = page.locator(f'.node[data-step="{name}"]').bounding_box()
                assert node is not None
                assert (
                    box["x"] <= node["x"] and node["x"] + node["width"] <= box["x"] + box["width"]
                )
                assert (
                    box["y"] <= node["y"] and node["y"] + node["height"] <= box["y"] + box["height"]
                )
            for name in ("list", "report"):  # and the others outside it
                node = page.locator(f'.node[data-step="{name}"]').bounding_box()
                assert node is not None
                assert node["x"] + node["width"] <= box["x"] or node["x"] >= box["x"] + box["width"]
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-grafted.png")))
            assert errors == []
        finally:
            browser.close()
    assert off_loop(wait_for_workflow, workflow, timeout=10).state == "completed"
