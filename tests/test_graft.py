"""job.graft(): steps a running step adds, inserted with its completion (real worker)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import baton
from baton.models import Step
from baton.testing import wait_for_workflow
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Collect, Echo, ListUrls

pytestmark = [pytest.mark.usefixtures("clean_jobs"), pytest.mark.worker]

URLS = [f"https://example.org/page/{i}" for i in range(6)]


def step(workflow: Any, name: str) -> Step:
    return Step.objects.get(workflow=workflow, name=name)


def runs(workflow: Any) -> Counter[str]:
    return Counter(
        PerformRun.objects.filter(workflow_id=workflow.pk).values_list("step", flat=True)
    )


def test_a_step_maps_over_its_result_and_the_compile_step_waits_for_all(
    start_worker: Any,
) -> None:
    start_worker(concurrency=4)
    workflow = (
        baton.new("map")
        .add("list", ListUrls.new(urls=URLS))
        .add("compile", Collect.new(group="summaries"), deps=["list"])
        .add("other", Echo.new(value="x"))
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    assert workflow.step_count == 3 + len(URLS)
    seen = step(workflow, "compile").result_value()["seen"]
    assert seen == {url: {"summary": f"summary of {url}", "of": len(URLS)} for url in URLS}
    compile_step = step(workflow, "compile")
    assert (compile_step.deps_total, compile_step.deps_pending) == (1 + len(URLS), 0)
    # compile started after every grafted step finished.
    grafted = Step.objects.filter(workflow=workflow, group="summaries")
    assert compile_step.started_at >= max(s.finished_at for s in grafted)


def test_a_failed_attempt_s_graft_is_dropped_and_the_retry_adds_it_once(
    start_worker: Any,
) -> None:
    start_worker(concurrency=4)
    workflow = (
        baton.new("retry-graft")
        .add("list", ListUrls.new(urls=URLS[:3], succeed_on=2))
        .add("compile", Collect.new(group="summaries"), deps=["list"])
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    assert Step.objects.filter(workflow=workflow, group="summaries").count() == 3
    counts = runs(workflow)
    assert counts["list"] == 2
    assert all(counts[f"summaries[{url}]"] == 1 for url in URLS[:3])


def test_an_invalid_graft_fails_the_attempt_and_writes_nothing(start_worker: Any) -> None:
    start_worker(concurrency=2)
    workflow = (
        baton.new("bad-graft")
        # Its graft's group is named like an existing step.
        .add("list", ListUrls.new(urls=URLS[:2], group="other").with_options(max_attempts=1))
        .add("other", Echo.new())
        .insert()
    )
    workflow = wait_for_workflow(workflow, timeout=60)
    listed = step(workflow, "list")
    assert listed.state == "discarded"
    assert "invalid graft" in listed.last_error and "'other'" in listed.last_error
    assert Step.objects.filter(workflow=workflow).count() == 2
    assert workflow.step_count == 2
