"""Layout in a real browser: the pages fit 390 px (a phone) and 1280 px wide without
sideways scrolling, the admin's workflow columns fit 1280 px, and the timeline shows
every step of a workflow a real worker ran. Screenshots go to the temporary directory."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import baton
from baton.models import Workflow
from baton.testing import wait_for_workflow
from tests.testapp.tasks import Echo
from tests.worker import test_live_browser
from tests.worker.test_live_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOT,
    TIMEOUT_MS,
    off_loop,
)

# The fixtures of the browser tests, shared: the skip (or CI failure) without Chromium,
# and the live server.
_browser_available = test_live_browser._browser_available
live_server_url = test_live_browser.live_server_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

OVERFLOW = """() => ({
  scroll: document.documentElement.scrollWidth,
  width: window.innerWidth,
  wide: Array.from(document.querySelectorAll("body *"))
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
                   && !e.closest("svg") && getComputedStyle(e).position !== "fixed")
    .slice(0, 5).map((e) => e.tagName + "." + e.className + " " + e.getBoundingClientRect().right),
})"""


def fits(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(OVERFLOW)
    assert result["scroll"] <= result["width"], result
    return result


def test_pages_fit_phones_and_laptops_and_the_timeline_shows_every_step(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_superuser("looker", password=PASSWORD)
    long_name = "a-rather-long-workflow-name-that-must-wrap-somewhere-" * 2
    workflow: Workflow = (
        baton.new(long_name)
        .add("extract", Echo.new(sleep=0.2))
        .add_many("parse", [Echo.new(sleep=0.2)] * 3, deps="extract")
        .add("report-with-a-long-step-name", Echo.new(), deps="parse")
        .insert()
    )
    off_loop(start_worker, concurrency=2, env={"BATON_TEST_BROADCAST": "1"})
    off_loop(wait_for_workflow, workflow, timeout=60)

    pages = {
        "list": reverse("baton:workflows"),
        "workflow": reverse("baton:workflow", args=[workflow.pk]),
        "timeline": reverse("baton:workflow-timeline", args=[workflow.pk]),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_server_url + pages["list"])
            page.fill("#id_username", "looker")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(live_server_url + pages["list"])

            # The timeline: a lane per step, bars for each, the critical path marked.
            page.goto(live_server_url + pages["timeline"])
            lanes = page.locator("#baton-timeline .lane[data-step]")
            expect(lanes).to_have_count(5)
            expect(page.locator("#baton-timeline .lane[data-step] .bar.run")).to_have_count(5)
            critical = page.locator('#baton-timeline .lane[data-critical="true"]')
            assert critical.count() >= 3
            expect(critical.last).to_have_attribute("data-step", "report-with-a-long-step-name")
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-timeline.png")))

            for width, height in ((390, 844), (1280, 800)):
                page.set_viewport_size({"width": width, "height": height})
                for name, path in pages.items():
                    page.goto(live_server_url + path)
                    if name != "timeline":
                        page.wait_for_selector('body[data-snapshot="received"]')
                    fits(page)
                    page.screenshot(
                        path=str(SCREENSHOT.with_name(f"baton-live-{name}-{width}.png")),
                        full_page=True,
                    )
                if width == 390:
                    # The panel of a step fits too.
                    page.goto(live_server_url + pages["workflow"])
                    page.wait_for_selector('body[data-snapshot="received"]')
                    page.click('[data-step="extract"]')
                    expect(page.locator('#baton-detail [data-field="name"]')).to_have_text(
                        "extract"
                    )
                    box = page.locator("#baton-detail").bounding_box()
                    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width

            # The admin's workflow list: every column on screen at 1280 px.
            page.set_viewport_size({"width": 1280, "height": 800})
            page.goto(live_server_url + reverse("admin:baton_workflow_changelist"))
            fits(page)
            last = page.locator("#result_list thead th").last.bounding_box()
            assert last and last["x"] + last["width"] <= 1280
            page.screenshot(path=str(SCREENSHOT.with_name("baton-admin-workflows-1280.png")))
            assert errors == []
        finally:
            browser.close()
