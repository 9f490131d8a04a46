"""Actions and truthful state in a real browser, with a real worker and real Redis.

A step fails; the header says failed; the step is retried from its panel; the header goes
executing and then completed, on one page load. A step on a queue no worker listens on
says so in its panel, and its dependent names it; cancel and retry from the header.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import baton
from baton.models import Workflow
from tests.testapp.tasks import Echo, FailsFirstRuns
from tests.worker import test_live_browser
from tests.worker.test_live_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOT,
    TIMEOUT_MS,
    off_loop,
)
from tests.worker.test_live_browser_graphs import log_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# Records every state the header badge shows, so the test can tell deltas from a reload.
HEADER_OBSERVER = """() => {
  window.batonNoReload = true;
  const badge = document.querySelector('[data-role="workflow-state"]');
  window.batonHeader = [badge.textContent];
  new MutationObserver(() => {
    const last = window.batonHeader[window.batonHeader.length - 1];
    if (badge.textContent !== last) { window.batonHeader.push(badge.textContent); }
  }).observe(badge, {childList: true, characterData: true, subtree: true});
}"""

# The fixtures of the browser tests, shared: the skip (or CI failure) without Chromium,
# and the live server.
_browser_available = test_live_browser._browser_available
live_server_url = test_live_browser.live_server_url


def browser_page(playwright: Any) -> tuple[Any, Any, list[str]]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    return browser, page, errors


def test_a_failed_step_is_retried_from_the_page_and_the_badge_follows(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_superuser("fixer", password=PASSWORD)
    workflow: Workflow = (
        baton.new("fails once")
        .add("flaky", FailsFirstRuns.new(failures=1, value="ok"))
        .add("after", Echo.new(), deps=["flaky"])
        .insert()
    )
    path = reverse("baton:workflow", args=[workflow.pk])

    with sync_playwright() as playwright:
        browser, page, errors = browser_page(playwright)
        try:
            log_in(page, live_server_url, path, "fixer")
            page.evaluate(HEADER_OBSERVER)
            off_loop(start_worker, concurrency=2, env={"BATON_TEST_BROADCAST": "1"})

            header = page.locator('[data-role="workflow-state"]')
            expect(header).to_have_text("failed")
            expect(page.locator('[data-step="flaky"]')).to_have_attribute("data-state", "discarded")
            expect(page.locator('[data-role="counts"]')).to_have_text("1 failed · 1 cancelled")
            expect(page.locator('[data-action="retry"]')).to_be_visible()
            expect(page.locator('[data-action="cancel"]')).to_be_hidden()

            page.click('[data-step="flaky"]')
            retry_step = page.locator('#baton-detail [data-action="retry-step"]')
            expect(retry_step).to_be_visible()
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-failed.png")))
            retry_step.click()
            expect(page.locator('#baton-detail [data-role="step-action-result"]')).to_have_text(
                "Retrying flaky and the 1 step it cancelled."
            )
            expect(header).to_have_text("completed")
            expect(page.locator('[data-step="after"]')).to_have_attribute("data-state", "completed")
            expect(page.locator('[data-role="counts"]')).to_have_text("2 completed")
            expect(page.locator('[data-role="progress"]')).to_have_text("2/2")
            expect(retry_step).to_be_hidden()
            assert page.evaluate("window.batonNoReload") is True
            seen = page.evaluate("window.batonHeader")
            assert seen == ["executing", "failed", "executing", "completed"], seen
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-retried.png")))
            assert errors == []
        finally:
            browser.close()


def test_a_step_no_worker_listens_for_says_so_and_the_workflow_cancels_and_retries(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_superuser("operator", password=PASSWORD)
    workflow: Workflow = (
        baton.new("stranded")
        .add("summarise", Echo.new().with_options(queue="llm"))
        .add("publish", Echo.new(), deps=["summarise"])
        .insert()
    )
    path = reverse("baton:workflow", args=[workflow.pk])
    # A worker that listens on "default" only: nobody takes the "llm" queue.
    off_loop(start_worker, concurrency=1, queues=["default"], env={"BATON_TEST_BROADCAST": "1"})

    with sync_playwright() as playwright:
        browser, page, errors = browser_page(playwright)
        try:
            log_in(page, live_server_url, path, "operator")
            page.evaluate(HEADER_OBSERVER)
            why = page.locator('#baton-detail [data-field="explanation"]')

            page.click('[data-step="summarise"]')
            expect(why).to_contain_text("queued on 'llm'")
            expect(why).to_contain_text("no worker is listening on queue 'llm'")
            expect(why).to_have_attribute("data-no-worker", "true")
            page.click('[data-step="publish"]')
            expect(why).to_contain_text("waits for 1 of its 1 dependency: summarise (available")
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-waiting.png")))

            page.click('[data-action="cancel"]')
            header = page.locator('[data-role="workflow-state"]')
            expect(header).to_have_text("cancelled")
            expect(page.locator('[data-role="action-result"]')).to_have_text(
                "Cancelled the workflow (2 steps)."
            )
            expect(page.locator('[data-step="publish"]')).to_have_attribute(
                "data-state", "cancelled"
            )
            expect(page.locator('[data-role="counts"]')).to_have_text("2 cancelled")

            page.click('[data-action="retry"]')
            expect(header).to_have_text("executing")
            expect(page.locator('[data-action="cancel"]')).to_be_visible()
            expect(page.locator('[data-step="summarise"]')).to_have_attribute(
                "data-state", "available"
            )
            assert page.evaluate("window.batonHeader") == ["executing", "cancelled", "executing"]
            assert page.evaluate("window.batonNoReload") is True
            assert errors == []
        finally:
            browser.close()
