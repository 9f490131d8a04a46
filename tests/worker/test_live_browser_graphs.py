"""Big graphs in a real browser: fitted on open, groups expand, zoom and pan move the view.

Graphs are inserted and never run (no worker needed), except where said. Prints the time
to first paint and the DOM size of the pages it opens (pytest -s shows them); nothing is
asserted about time. Screenshots go to the temporary directory (CI keeps them).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import baton
from baton.models import Workflow
from tests.helpers import load_shared_dag
from tests.testapp.tasks import Echo
from tests.worker import test_live_browser
from tests.worker.test_live_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOT,
    TIMEOUT_MS,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

LARGEST_DAG = "epigenomics-chameleon-ilmn-6seq-50k-001"  # 1,695 steps, the largest shared

# What the page costs, read in the page once it is live.
METRICS = """() => {
  const paint = performance.getEntriesByType("paint")
    .find((entry) => entry.name === "first-contentful-paint");
  const nav = performance.getEntriesByType("navigation")[0];
  return {
    first_paint_ms: paint ? Math.round(paint.startTime) : null,
    dom_content_loaded_ms: nav ? Math.round(nav.domContentLoadedEventEnd) : null,
    dom_elements: document.getElementsByTagName("*").length,
    html_bytes: nav ? nav.transferSize : null,
  };
}"""

# The fixtures of the browser tests, shared: the skip (or CI failure) without Chromium,
# and the live server.
_browser_available = test_live_browser._browser_available
live_server_url = test_live_browser.live_server_url


def fan(width: int) -> Workflow:
    workflow: Workflow = (
        baton.new(f"fan-out \u00d7{width}")
        .add("root", Echo.new())
        .add_many("fan", [Echo.new()] * width, deps="root")
        .add("join", Echo.new(), deps="fan")
        .insert()
    )
    return workflow


def dense(steps: int = 4_000, layers: int = 40, per_step: int = 5) -> Workflow:
    """`steps` steps in `layers` layers, each (past the first) depending on `per_step`
    steps of the layers before it, mostly the one just before: 20,000 edges by default."""
    chooser = random.Random(9)
    width = steps // layers
    builder = baton.new(f"dense {steps}")
    names: list[list[str]] = []
    for layer in range(layers):
        row = []
        for index in range(width):
            name = f"s{layer}_{index}"
            deps: list[str] = []
            if layer:
                while len(deps) < per_step:
                    back = 1 if chooser.random() < 0.8 else chooser.randint(1, min(layer, 4))
                    dep = chooser.choice(names[layer - back])
                    if dep not in deps:
                        deps.append(dep)
            builder.add(name, Echo.new(), deps=deps)
            row.append(name)
        names.append(row)
    workflow: Workflow = builder.insert()
    return workflow


def replay(dag: str) -> Workflow:
    data = load_shared_dag(dag)  # skips, naming the path, when ../shared is absent
    builder = baton.new(dag)
    for task in data["tasks"]:
        builder.add(task["id"], Echo.new(), deps=task["deps"])
    workflow: Workflow = builder.insert()
    return workflow


def log_in(page: Any, base: str, path: str, username: str) -> None:
    page.goto(base + path)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(base + path)
    page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')


def reopen(page: Any, url: str) -> dict[str, Any]:
    """Load `url` again (logged in, so no login POST in the timings) and measure it."""
    page.goto(url)
    page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
    metrics: dict[str, Any] = page.evaluate(METRICS)
    return metrics


def on_screen(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    view = page.viewport_size
    return bool(
        box
        and box["width"] > 0
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= view["width"]
        and box["y"] + box["height"] <= view["height"]
    )


def report(label: str, metrics: dict[str, Any]) -> None:
    print(f"\n[live page] {label}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))


def test_a_2000_wide_fan_out_opens_fitted_and_its_group_expands(live_server_url) -> None:
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("big", password=PASSWORD, is_staff=True)
    workflow = fan(2_000)
    path = reverse("baton:workflow", args=[workflow.pk])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            log_in(page, live_server_url, path, "big")

            # Collapsed: root, one group node, join, all on screen without scrolling.
            for selector in ('[data-step="root"]', '[data-group="fan"]', '[data-step="join"]'):
                assert on_screen(page, selector), selector
            group = page.locator('[data-group="fan"]')
            expect(group).to_have_attribute("data-size", "2000")
            expect(group.locator('[data-role="group-counts"]')).to_have_text("2,000 waiting")
            expect(page.locator('[data-role="counts"]')).to_have_text("2,002 waiting")
            report("2,000-wide fan-out, collapsed", reopen(page, live_server_url + path))
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-fan-collapsed.png")))

            # Zoom: the toolbar, the wheel and the keyboard change the scale; a drag pans.
            wrap = page.locator("#baton-graph-wrap")
            fitted = float(wrap.get_attribute("data-zoom") or 0)
            page.click('[data-zoom="in"]')
            expect(wrap).not_to_have_attribute("data-zoom", f"{fitted:.4f}")
            zoomed = float(wrap.get_attribute("data-zoom") or 0)
            assert zoomed > fitted
            page.mouse.move(640, 500)
            page.mouse.wheel(0, 400)
            page.wait_for_function(
                "(k) => Number(document.getElementById('baton-graph-wrap').dataset.zoom) < k",
                arg=zoomed,
            )
            pan = wrap.get_attribute("data-pan")
            box = page.locator("#baton-graph").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + 40, box["y"] + 40)
            page.mouse.down()
            page.mouse.move(box["x"] + 240, box["y"] + 140, steps=5)
            page.mouse.up()
            expect(wrap).not_to_have_attribute("data-pan", pan or "")
            wrap.focus()
            page.keyboard.press("0")  # fit again
            expect(wrap).to_have_attribute("data-zoom", f"{fitted:.4f}")
            page.keyboard.press("+")
            expect(wrap).not_to_have_attribute("data-zoom", f"{fitted:.4f}")
            page.click('[data-zoom="fit"]')
            expect(wrap).to_have_attribute("data-zoom", f"{fitted:.4f}")

            # The group expands: every step drawn, still fitted with root and join.
            group.click()
            page.wait_for_url(f"**{path}?expand=fan#focus=fan")
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            expect(page.locator("#baton-graph .node")).to_have_count(2_002)
            for selector in ('[data-step="root"]', '[data-step="join"]'):
                assert on_screen(page, selector), selector
            report("2,000-wide fan-out, expanded", reopen(page, page.url))
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-fan-expanded.png")))
            page.click('[data-role="collapse"]')
            expect(page.locator('[data-group="fan"]')).to_have_count(1)
            assert errors == []
        finally:
            browser.close()


# The smallest font any node label is drawn at on screen, in CSS px (the SVG's scale
# included), over the labels of nodes inside the graph's frame; 0 when none shows.
LABEL_PX = """() => {
  const frame = document.getElementById("baton-graph").getBoundingClientRect();
  const labels = "#baton-graph .node .label, #baton-graph .group .label";
  const sizes = Array.from(document.querySelectorAll(labels))
    .filter((t) => {
      const r = t.getBoundingClientRect();
      return getComputedStyle(t).display !== "none" && r.width > 0
        && r.left >= frame.left && r.right <= frame.right
        && r.top >= frame.top && r.bottom <= frame.bottom;
    })
    .map((t) => t.getScreenCTM().a * parseFloat(getComputedStyle(t).fontSize));
  return sizes.length ? Math.min(...sizes) : 0;
}"""
# How many of the elements `selector` picks are drawn inside the graph's frame.
IN_FRAME = """(selector) => {
  const frame = document.getElementById("baton-graph").getBoundingClientRect();
  return Array.from(document.querySelectorAll(selector)).filter((e) => {
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.left >= frame.left && r.right <= frame.right
      && r.top >= frame.top && r.bottom <= frame.bottom;
  }).length;
}"""
# Labels drawn smaller than this do not read (12 px labels at the page's 60% floor: 7.2).
READABLE_PX = 7


def open_big(page: Any, base: str, path: str, label: str, steps: int) -> dict[str, Any]:
    """Open the page (logged in) and report its time to first paint and DOM size."""
    metrics = reopen(page, base + path)
    metrics["steps"] = steps
    metrics["label_px"] = round(page.evaluate(LABEL_PX), 1)
    metrics["zoom"] = page.locator("#baton-graph-wrap").get_attribute("data-zoom")
    report(label, metrics)
    return metrics


def test_a_deep_graph_opens_readable_and_its_minimap_moves_the_view(live_server_url) -> None:
    """4,000 steps in 40 layers, 20,000 edges: one folded node per layer, a row far wider
    than the window. It opens at a scale where labels read, the first layers on screen,
    with an overview map; clicking the map's far end brings the last layer into view."""
    from playwright.sync_api import expect, sync_playwright

    workflow = dense()
    User.objects.create_user("deep", password=PASSWORD, is_staff=True)
    path = reverse("baton:workflow", args=[workflow.pk])
    first, last = '[data-group^="s0…"]', '[data-group^="s39…"]'

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            log_in(page, live_server_url, path, "deep")
            metrics = open_big(page, live_server_url, path, "deep 4,000 x 20,000", 4_000)
            assert metrics["label_px"] >= READABLE_PX, metrics
            # Folded: a node per layer, not a node per step.
            assert metrics["dom_elements"] < 1_500, metrics
            expect(page.locator("#baton-graph .group")).to_have_count(40)
            assert on_screen(page, first)
            assert not on_screen(page, last)
            wrap = page.locator("#baton-graph-wrap")
            expect(wrap).to_have_attribute("data-minimap", "shown")
            minimap = page.locator('[data-role="minimap"]')
            expect(minimap).to_be_visible()
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-deep-1280.png")))

            # A click on the map's right end: the view goes there, at the same scale.
            zoom = wrap.get_attribute("data-zoom")
            pan = wrap.get_attribute("data-pan")
            box = minimap.bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] - 6, box["y"] + box["height"] / 2)
            expect(wrap).not_to_have_attribute("data-pan", pan or "")
            expect(wrap).to_have_attribute("data-zoom", zoom or "")
            assert on_screen(page, last)
            assert not on_screen(page, first)
            lens = page.locator('[data-role="minimap-view"]').bounding_box()
            assert lens and lens["x"] > box["x"] + box["width"] / 2
            # A drag along the map pans continuously; Fit goes back to the opening view.
            page.mouse.move(box["x"] + box["width"] - 6, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
            page.mouse.up()
            assert not on_screen(page, last)
            page.click('[data-zoom="fit"]')
            expect(wrap).to_have_attribute("data-pan", pan or "")
            assert on_screen(page, first)

            # Expanding the last layer's node: the page opens on its steps, not on s0.
            page.mouse.click(box["x"] + box["width"] - 6, box["y"] + box["height"] / 2)
            page.click(last)
            page.wait_for_url("**?expand=*#focus=s39*")
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            expect(page.locator('#baton-graph .node[data-step^="s39_"]')).to_have_count(100)
            assert page.evaluate(IN_FRAME, '#baton-graph .node[data-step^="s39_"]') > 0
            assert page.evaluate(IN_FRAME, first) == 0
            assert page.evaluate(LABEL_PX) >= READABLE_PX
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-deep-expanded.png")))

            # A phone: still readable, the map still there.
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(live_server_url + path)
            page.wait_for_selector('body[data-socket="live"][data-snapshot="received"]')
            assert page.evaluate(LABEL_PX) >= READABLE_PX
            assert on_screen(page, first)
            expect(minimap).to_be_visible()
            mini = minimap.bounding_box()
            assert mini and mini["x"] >= 0 and mini["x"] + mini["width"] <= 390
            page.screenshot(
                path=str(SCREENSHOT.with_name("baton-live-deep-390.png")), full_page=True
            )
            assert errors == []
        finally:
            browser.close()


def test_the_largest_shared_dag_opens_readable(live_server_url) -> None:
    """The 1,695 steps of the largest DAG of ../shared/dags (skips, naming the path,
    without it): folded by column and name, at a scale where labels read; when that
    scale leaves part of it off screen, the overview map is there."""
    from playwright.sync_api import expect, sync_playwright

    workflow = replay(LARGEST_DAG)
    User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    path = reverse("baton:workflow", args=[workflow.pk])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            log_in(page, live_server_url, path, "viewer")
            metrics = open_big(page, live_server_url, path, "largest shared DAG", 1_695)
            assert metrics["label_px"] >= READABLE_PX, metrics
            assert metrics["dom_elements"] < 1_500, metrics
            wrap = page.locator("#baton-graph-wrap")
            frame = page.locator("#baton-graph").bounding_box()
            drawn = page.locator("#baton-viewport").bounding_box()
            assert frame and drawn
            inside = (
                drawn["x"] >= frame["x"] - 1
                and drawn["y"] >= frame["y"] - 1
                and drawn["x"] + drawn["width"] <= frame["x"] + frame["width"] + 1
                and drawn["y"] + drawn["height"] <= frame["y"] + frame["height"] + 1
            )
            expect(wrap).to_have_attribute("data-minimap", "hidden" if inside else "shown")
            page.screenshot(path=str(SCREENSHOT.with_name("baton-live-largest-shared-dag.png")))
            assert errors == []
        finally:
            browser.close()


# The colour at the middle of the overview map (the fan's steps, in a 3-column graph).
MAP_MIDDLE = """() => {
  const canvas = document.querySelector('[data-role="minimap"] canvas');
  const [r, g, b] = canvas.getContext("2d")
    .getImageData(Math.floor(canvas.width / 2), Math.floor(canvas.height / 2), 1, 1).data;
  return [r, g, b];
}"""
# live.css's executing fill (the canvas may round each channel by a unit or two)
EXECUTING_RGB = [0x1F, 0x6F, 0xB2]


def test_a_burst_of_transitions_is_drawn_in_few_frames(live_server_url) -> None:
    """300 step events in one go: applied in animation frames, not one layout each."""
    from playwright.sync_api import expect, sync_playwright

    User.objects.create_user("burst", password=PASSWORD, is_staff=True)
    workflow = fan(300)
    path = reverse("baton:workflow", args=[workflow.pk]) + "?expand=fan"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(TIMEOUT_MS)
            log_in(page, live_server_url, path, "burst")
            ids = page.evaluate(
                "() => Array.from(document.querySelectorAll('[data-step^=\"fan[\"]'))"
                ".map((e) => [Number(e.dataset.stepId), e.dataset.step])"
            )
            assert len(ids) == 300
            # Part of it is off screen: the overview map shows the fan's middle waiting.
            expect(page.locator("#baton-graph-wrap")).to_have_attribute("data-minimap", "shown")
            page.wait_for_function("() => window.batonLive.stats.minimapDraws > 0")
            waiting_rgb = page.evaluate(MAP_MIDDLE)
            draws = page.evaluate("window.batonLive.stats.minimapDraws")
            # Feed the page's own message handler as the socket would.
            page.evaluate(
                """(ids) => {
                  const before = window.batonLive.stats.frames;
                  window.batonBurstFrames = before;
                  for (const [id, name] of ids) {
                    window.batonLive.deliver({type: "step", step: {
                      id, name, state: "executing", version: 100, attempt: 1,
                      max_attempts: 1, started_at: new Date().toISOString(),
                      finished_at: null, reason: "", cost_usd: null, unpriced_calls: 0,
                      group: "fan"}});
                  }
                }""",
                ids,
            )
            expect(page.locator('[data-state="executing"].node')).to_have_count(300)
            frames = page.evaluate("window.batonLive.stats.frames - window.batonBurstFrames")
            print(f"\n[live page] 300 step events drawn in {frames} animation frame(s)")
            assert frames <= 3
            expect(page.locator('[data-role="counts"]')).to_have_text("300 running · 2 waiting")
            # The map follows, repainted once for the burst, not once per event.
            page.wait_for_function(
                f"(rgb) => ({MAP_MIDDLE})().every((c, i) => Math.abs(c - rgb[i]) <= 6)",
                arg=EXECUTING_RGB,
            )
            repaints = page.evaluate("window.batonLive.stats.minimapDraws") - draws
            assert 1 <= repaints <= 3, repaints
            assert max(abs(a - b) for a, b in zip(waiting_rgb, EXECUTING_RGB, strict=True)) > 50, (
                waiting_rgb
            )
        finally:
            browser.close()
