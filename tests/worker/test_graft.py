"""job.graft(): steps a running step adds, inserted with its completion (real worker)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import baton
from baton.models import WorkflowStep
from baton.testing import wait_for_workflow
from tests.testapp.models import PerformRun
from tests.testapp.tasks import Collect, Echo, ListUrls, Nest

pytestmark = [pytest.mark.usefixtures("clean_jobs"), pytest.mark.worker]

URLS = [f"https://example.org/page/{i}" for i in range(6)]


def step(workflow: Any, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(workflow=workflow, name=name)


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
    grafted = WorkflowStep.objects.filter(workflow=workflow, group="summaries")
    assert compile_step.started_at >= max(s.finished_at for s in grafted)
    # Each grafted step records the step that grafted it; the others record none.
    listed = step(workflow, "list")
    assert {s.grafted_by_id for s in grafted} == {listed.id}
    assert list(listed.grafted.order_by("id")) == list(grafted.order_by("id"))
    assert WorkflowStep.objects.filter(workflow=workflow, grafted_by__isnull=True).count() == 3


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
    assert WorkflowStep.objects.filter(workflow=workflow, group="summaries").count() == 3
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
    assert WorkflowStep.objects.filter(workflow=workflow).count() == 2
    assert workflow.step_count == 2


def test_appended_steps_have_no_grafting_step(start_worker: Any) -> None:
    start_worker(concurrency=2)
    workflow = baton.new("append-not-graft").add("a", Echo.new(sleep=0.5)).insert()
    baton.append(workflow).add("b", Echo.new(), deps=["a"]).insert()
    workflow = wait_for_workflow(workflow, timeout=60)
    assert workflow.state == "completed"
    assert step(workflow, "b").grafted_by_id is None


def test_grafts_nest_up_to_graft_max_depth_and_no_deeper(start_worker: Any) -> None:
    """Each Nest grafts the next one: nest1 is a graft of depth 1, nest8 of depth 8 (the
    default GRAFT_MAX_DEPTH); nest8's own graft (depth 9) fails its attempt and writes
    nothing."""
    start_worker(concurrency=2)
    workflow = baton.new("nest").add("nest0", Nest.new(levels=20)).insert()
    workflow = wait_for_workflow(workflow, timeout=90)
    names = list(WorkflowStep.objects.filter(workflow=workflow).values_list("name", flat=True))
    assert names == [f"nest{level}" for level in range(9)]
    for level in range(1, 9):
        grafter = step(workflow, f"nest{level - 1}")
        assert step(workflow, f"nest{level}").grafted_by_id == grafter.id
        assert grafter.state == "completed"
    deepest = step(workflow, "nest8")
    assert deepest.state == "discarded"
    assert "invalid graft: it would be at depth 9" in deepest.last_error
    assert "BATON['GRAFT_MAX_DEPTH'] = 8" in deepest.last_error
    assert workflow.state == "failed" and workflow.step_count == 9


def test_a_graft_over_graft_max_steps_fails_the_attempt_and_writes_nothing(
    start_worker: Any,
) -> None:
    start_worker(concurrency=2, env={"DJANGO_SETTINGS_MODULE": "tests.graft_limit_settings"})
    over = (
        baton.new("too-big")
        .add("list", ListUrls.new(urls=URLS[:4]).with_options(max_attempts=1))
        .add("compile", Collect.new(group="summaries"), deps=["list"])
        .insert()
    )
    at_limit = (
        baton.new("just-fits")
        .add("list", ListUrls.new(urls=URLS[:3]))
        .add("compile", Collect.new(group="summaries"), deps=["list"])
        .insert()
    )
    over = wait_for_workflow(over, timeout=60)
    listed = step(over, "list")
    assert listed.state == "discarded"
    assert "invalid graft: it has 4 steps, over BATON['GRAFT_MAX_STEPS'] = 3" in (listed.last_error)
    assert WorkflowStep.objects.filter(workflow=over).count() == 2 and over.step_count == 2
    assert step(over, "compile").state == "cancelled"
    at_limit = wait_for_workflow(at_limit, timeout=60)
    assert at_limit.state == "completed"
    assert WorkflowStep.objects.filter(workflow=at_limit, group="summaries").count() == 3
