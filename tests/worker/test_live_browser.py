"""The live page in a real browser: a real ASGI server, a real worker, real Redis.

Chromium (Debian's /usr/bin/chromium) is driven by Playwright. The page is opened while
the workflow waits; then a worker runs it, and the nodes and the header must follow over
the WebSocket, without a reload. Skipped (with the reason) where Chromium, Playwright or
Redis is missing, except in CI (env CI set), where that fails.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections
from django.urls import reverse

import baton
from baton.broadcast import decimal_text
from baton.display import format_usd
from baton.models import Workflow, WorkflowStep
from baton.testing import wait_for_workflow
from tests.helpers import REPO_ROOT, free_port
from tests.testapp.tasks import Echo, FakeModelCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
# Screenshots of the key states, kept by CI as artifacts (.ci/run lists them at its end):
# $BATON_ARTIFACTS_DIR/screenshots/, by default .run/artifacts/screenshots/ (git-ignored).
ARTIFACTS = Path(os.environ.get("BATON_ARTIFACTS_DIR") or REPO_ROOT / ".run/artifacts")
SCREENSHOTS = ARTIFACTS / "screenshots"
SCREENSHOT = SCREENSHOTS / "baton-live.png"
LIST_SCREENSHOT = SCREENSHOTS / "baton-live-list.png"
STEP_SECONDS = 0.5
TIMEOUT_MS = 30_000
PASSWORD = "correct horse battery staple"


T = TypeVar("T")


def off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM code in another thread: Playwright's sync API keeps an event loop in this
    one, where Django refuses synchronous database access."""

    def call() -> T:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call).result()


def _missing() -> list[str]:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not os.environ.get("REDIS_URL"):
        missing.append("REDIS_URL (a real Redis; make test starts one)")
    return missing


@pytest.fixture(scope="module", autouse=True)
def _browser_available() -> None:
    missing = _missing()
    if missing:
        reason = "browser test needs " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def live_server_url(transactional_db: None) -> Iterator[str]:
    """uvicorn serving tests.asgi against the test database, in a subprocess."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    log = tempfile.NamedTemporaryFile(prefix="baton-uvicorn-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.live_server",
            str(connection.settings_dict["NAME"]),
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited: {Path(log.name).read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"uvicorn did not start: {Path(log.name).read_text()}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        server_log = Path(log.name).read_text(errors="replace")
        os.unlink(log.name)
        assert "Traceback" not in server_log, server_log


def pipeline() -> Workflow:
    """extract -> parse[0..3] -> merge -> report, each step sleeping STEP_SECONDS."""
    sleep = Echo.new(sleep=STEP_SECONDS)
    workflow: Workflow = (
        baton.new("nightly <b>import</b>")
        .add("extract", sleep)
        .add_many("parse", [sleep, sleep, sleep, sleep], deps="extract")
        .add("merge", sleep, deps="parse")
        .add("report", sleep, deps="merge")
        .insert()
    )
    return workflow


# Records every data-state each node takes, so the test can tell deltas from a reload.
OBSERVER = """() => {
  window.batonSeen = {};
  window.batonNoReload = true;
  const record = (el) => {
    const name = el.getAttribute("data-step");
    (window.batonSeen[name] = window.batonSeen[name] || []).push(el.getAttribute("data-state"));
  };
  document.querySelectorAll("#baton-graph .node").forEach(record);
  new MutationObserver((changes) => changes.forEach((c) => record(c.target))).observe(
    document.getElementById("baton-graph"),
    {subtree: true, attributes: true, attributeFilter: ["data-state"]},
  );
}"""


def test_workflow_page_follows_a_running_workflow_live(live_server_url, start_worker) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("operator", password=PASSWORD, is_staff=True)
    workflow = pipeline()
    page_path = reverse("baton:workflow", args=[workflow.pk])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))

            # Not logged in: the page sends us to the admin's login form.
            page.goto(live_server_url + page_path)
            assert "/admin/login/" in page.url
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(live_server_url + page_path)

            # Before any worker: the snapshot over the socket, names escaped.
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            expect(page.locator("h1 .workflow-name")).to_have_text("nightly <b>import</b>")
            assert page.locator("#baton-graph .node").count() == 7
            expect(page.locator('[data-step="extract"]')).to_have_attribute(
                "data-state", "available"
            )
            expect(page.locator('[data-role="progress"]')).to_have_text("0/7")
            page.evaluate(OBSERVER)

            off_loop(start_worker, concurrency=4, env={"BATON_TEST_BROADCAST": "1"})

            page.wait_for_selector('[data-step="parse[2]"][data-state="executing"]')
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-running.png")))
            page.wait_for_selector('[data-step="merge"][data-state="completed"]')
            header = page.locator('[data-role="workflow-state"]')
            expect(header).to_have_attribute("data-state", "completed")
            expect(header).to_have_text("completed")
            expect(page.locator('[data-role="progress"]')).to_have_text("7/7")
            for name in ("extract", "parse[0]", "parse[3]", "merge", "report"):
                node = page.locator(f'[data-step="{name}"]')
                expect(node).to_have_attribute("data-state", "completed")
                expect(node.locator("text.state")).to_have_text("completed")

            # Every node went through executing to completed on this one page load.
            assert page.evaluate("window.batonNoReload") is True
            seen = page.evaluate("window.batonSeen")
            for name in ("extract", "parse[1]", "merge", "report"):
                assert "executing" in seen[name], seen
                assert seen[name][-1] == "completed", seen

            # Step detail on click: attempt and timings, from the socket.
            page.click('[data-step="report"]')
            expect(page.locator('#baton-detail [data-field="attempt"]')).to_have_text("1 of 1")
            expect(page.locator('#baton-detail [data-field="name"]')).to_have_text("report")
            page.screenshot(path=str(SCREENSHOT))

            # The list: this workflow, its state as a word, full progress.
            page.goto(live_server_url + reverse("baton:workflows"))
            row = page.locator(f'tr[data-workflow-id="{workflow.pk}"]')
            expect(row.locator('[data-role="state"]')).to_have_text("completed")
            expect(row.locator('[data-role="progress"]')).to_have_text("7/7")
            page.wait_for_selector('body[data-socket="live"]')
            page.screenshot(path=str(LIST_SCREENSHOT))
            assert errors == []
        finally:
            browser.close()

    assert wait_for_workflow(workflow, timeout=30).state == "completed"


def test_list_page_shows_new_workflows_and_their_progress_live(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("watcher", password=PASSWORD, is_staff=True)
    start_worker(concurrency=4, env={"BATON_TEST_BROADCAST": "1"})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(live_server_url + reverse("baton:workflows"))
            page.fill("#id_username", "watcher")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            expect(page.locator("tr.empty")).to_have_count(1)
            count = lambda name: page.locator(f'.state-filters [data-count="{name}"]')  # noqa: E731
            expect(count("all")).to_have_text("0")
            page.evaluate("() => { window.batonNoReload = true; }")

            # Inserted after the page loaded; the worker runs it.
            workflow = off_loop(pipeline)

            row = page.locator(f'tr[data-workflow-id="{workflow.pk}"]')
            expect(row.locator("td.name a")).to_have_text("nightly <b>import</b>")
            expect(row.locator('[data-role="state"]')).to_have_text("completed")
            expect(row.locator('[data-role="progress"]')).to_have_text("7/7")
            expect(row).to_have_attribute("data-state", "completed")
            # The per-state counts follow too: inserted (executing), then completed.
            expect(count("completed")).to_have_text("1")
            expect(count("executing")).to_have_text("0")
            expect(count("all")).to_have_text("1")
            assert page.evaluate("window.batonNoReload") is True
            link = row.locator("td.name a").get_attribute("href")
            assert link == reverse("baton:workflow", args=[workflow.pk])
        finally:
            browser.close()


# Records the header's cost text, with the workflow's state, each time either changes.
COST_OBSERVER = """() => {
  window.batonCosts = [];
  window.batonNoReload = true;
  const header = document.getElementById("baton-workflow");
  const record = () => window.batonCosts.push([
    header.querySelector('[data-role="workflow-state"]').textContent,
    header.querySelector('[data-role="cost"]').textContent,
  ]);
  record();
  new MutationObserver(record).observe(
    header, {subtree: true, childList: true, characterData: true},
  );
}"""

# What live.js formats (from decimal strings) must read as baton.display.format_usd does.
FORMAT_CASES: list[tuple[str | None, int]] = [
    (None, 0),
    (None, 3),
    ("0", 0),
    ("0.000354", 0),
    ("0.00027", 1),
    ("0.000000000000001", 0),
    ("0.0123456", 2),
    ("0.005", 0),
    ("0.00999", 0),
    ("0.9994", 0),
    ("0.9996", 0),
    ("2", 0),
    ("12.345", 0),
    ("1234.5", 0),
    ("1234567.891", 1234),
    ("123456789012345.123456789012345", 0),
]


def test_costs_show_on_the_workflow_and_list_pages_and_follow_each_transition(
    live_server_url, start_worker
) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("accountant", password=PASSWORD, is_staff=True)
    # draft (priced) -> review (a model the pricing does not know) -> polish (priced,
    # two calls): run one at a time, so the header goes through each running total.
    workflow: Workflow = (
        baton.new("priced <i>run</i>", budget_usd=Decimal("2.00"))
        .add("draft", FakeModelCall.new(model="gpt-4o-mini"))
        .add("review", FakeModelCall.new(model="acme-9000"), deps=["draft"])
        .add("polish", FakeModelCall.new(model="gpt-4o-mini", keys=["k1"]), deps=["review"])
        .insert()
    )
    page_path = reverse("baton:workflow", args=[workflow.pk])
    list_path = reverse("baton:workflows")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 720})
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_server_url + page_path)
            page.fill("#id_username", "accountant")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_url(live_server_url + page_path)
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')

            # Before any model call: no cost yet, the budget.
            cost = page.locator('#baton-workflow [data-role="cost"]')
            expect(cost).to_have_text("—")
            expect(page.locator('#baton-workflow [data-role="budget"]')).to_have_text("of $2.00")
            expect(page.locator('#baton-workflow [data-role="reason-fact"]')).to_be_hidden()

            # The formatting in the page is the server's, digit for digit.
            formatted = page.evaluate(
                "(cases) => cases.map(([c, u]) => window.batonLive.formatCost(c, u))",
                FORMAT_CASES,
            )
            assert formatted == [
                format_usd(None if c is None else Decimal(c), u) for c, u in FORMAT_CASES
            ]

            # The list, open in another tab while the workflow runs.
            listing = context.new_page()
            listing.on("pageerror", lambda error: errors.append(str(error)))
            listing.goto(live_server_url + list_path)
            listing.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            row = listing.locator(f'tr[data-workflow-id="{workflow.pk}"]')
            expect(row.locator('[data-role="cost"]')).to_have_text("—")
            listing.evaluate("() => { window.batonNoReload = true; }")
            # A background tab's animation frames are throttled, and clicks wait for them.
            page.bring_to_front()

            page.evaluate(COST_OBSERVER)
            off_loop(
                start_worker,
                concurrency=1,
                queues=["default", "llm"],
                env={"BATON_TEST_BROADCAST": "1"},
            )

            header = page.locator('[data-role="workflow-state"]')
            expect(header).to_have_text("completed")
            final = off_loop(Workflow.objects.get, pk=workflow.pk)
            steps = off_loop(
                lambda: {s.name: s for s in WorkflowStep.objects.filter(workflow_id=workflow.pk)}
            )
            assert final.cost_usd is not None and final.unpriced_calls == 1
            total = format_usd(final.cost_usd, final.unpriced_calls)
            expect(cost).to_have_text(total)
            expect(cost).to_have_attribute("data-cost-usd", decimal_text(final.cost_usd) or "")
            assert Decimal(cost.get_attribute("data-cost-usd") or "") == final.cost_usd

            # Updated live from the completions' events, never going back: each running
            # total that was drawn is one of the totals after a completion, in order
            # (events that arrive in one broadcast are drawn together, so some may be
            # skipped), and the state turns completed with the final total.
            seen = page.evaluate("window.batonCosts")
            changes = [entry for i, entry in enumerate(seen) if i == 0 or entry != seen[i - 1]]
            draft = steps["draft"].cost_usd
            assert draft is not None
            totals = ["—", format_usd(draft), format_usd(draft, 1), total]
            texts = list(dict.fromkeys(text for _, text in changes))
            assert texts[0] == "—" and texts[-1] == total, seen
            assert [t for t in totals if t in texts] == texts, seen
            assert changes[-1] == ["completed", total], seen
            assert all(state == "executing" for state, _ in changes[:-1]), seen
            assert page.evaluate("window.batonNoReload") is True

            # Each step's cost: in its node's title and its detail.
            for name, step in steps.items():
                node = page.locator(f'[data-step="{name}"]')
                expect(node.locator("title")).to_have_text(
                    f"{name} · cost {format_usd(step.cost_usd, step.unpriced_calls)}"
                )
            page.click('[data-step="review"]')
            expect(page.locator('#baton-detail [data-field="cost"]')).to_have_text("unknown")
            page.click('[data-step="polish"]')
            expect(page.locator('#baton-detail [data-field="cost"]')).to_have_text(
                format_usd(steps["polish"].cost_usd)
            )
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-costs.png")))
            page.close()

            # The list's cost column followed too, without a reload.
            listing.bring_to_front()
            expect(row.locator('[data-role="state"]')).to_have_text("completed")
            expect(row.locator('[data-role="cost"]')).to_have_text(total)
            assert listing.evaluate("window.batonNoReload") is True
            # And a fresh list renders the same on the server.
            listing.reload()
            expect(row.locator('[data-role="cost"]')).to_have_text(total)
            listing.screenshot(path=str(SCREENSHOT.with_name("baton-live-list-costs.png")))
            assert errors == []
        finally:
            browser.close()
