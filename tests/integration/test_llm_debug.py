"""Debug capture (baton.debug): what a debug workflow's steps sent, got back and read from
upstream, per step and attempt; nothing and no query elsewhere; never an exception; the
sweep prunes it.

Against real PostgreSQL: in-process (a Job built from a real claim, as the task wrapper
builds it) and with real worker processes running the steps of tests/testapp/tasks.py
(DebugModelCall, AsyncDebugModelCall).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import time
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import baton
from baton import debug
from baton.execution import advance
from baton.execution.step import Job
from baton.llm import debug as llm_debug
from baton.llm.ledger import Ledger
from baton.llm.usage import Usage
from baton.models import DebugRecord, LLMUsage, Workflow, WorkflowStep
from baton.sweep import prune_debug_records, prune_workflows, sweep
from baton.testing import wait_for_workflow
from tests.testapp.tasks import AsyncDebugModelCall, DebugModelCall, Echo, FakeCompletion

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_debug_writer"),
]

LLM_QUEUES = ["default", "llm"]


def claimed_job(workflow: Workflow, name: str = "a") -> Job:
    """The Job perform() would get for the step's next attempt (a real claim)."""
    step = WorkflowStep.objects.get(workflow=workflow, name=name)
    assert step.job_id is not None
    claimed = advance.claim(step.id, step.job_id)
    assert claimed is not None
    return Job(claimed, None)


def one_step(debug_on: bool = True) -> Workflow:
    workflow: Workflow = baton.new("capture", debug=debug_on).add("a", Echo.new()).insert()
    return workflow


def records(workflow: Workflow, name: str | None = None) -> list[DebugRecord]:
    rows = DebugRecord.objects.filter(workflow_id=workflow.pk)
    if name is not None:
        rows = rows.filter(step__name=name)
    return list(rows.order_by("attempt", "id"))


class Unserialisable:
    """Everything a converter could try fails: model_dump, to_dict, even repr."""

    def model_dump(self, **kwargs: Any) -> Any:
        raise RuntimeError("no dump")

    def to_dict(self) -> Any:
        raise RuntimeError("no dict")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def garbage() -> list[Any]:
    circular: list[Any] = []
    circular.append(circular)
    return [
        Unserialisable(),
        circular,
        {"score": math.nan},
        {(1, 2): "tuple key"},
        object(),
        iter([1, 2]),
        b"\xff\xfe bytes",
        {"nul": "a\x00b"},
    ]


# ------------------------------------------------------------------ nothing, no query
def test_outside_a_debug_workflow_nothing_is_stored_and_no_query_runs() -> None:
    job = claimed_job(one_step(debug_on=False))
    assert not job.debug

    with CaptureQueriesContext(connection) as queries:
        handle = debug.log_request(job, {"messages": [{"role": "user", "content": "hi"}]})
        debug.log_response(handle, {"text": "hello"})
        debug.log_upstream_context(job, {"up": 1})
        for payload in garbage():
            debug.log_response(debug.log_request(job, payload), payload)
            debug.log_upstream_context(job, payload)

    assert len(queries) == 0, [q["sql"] for q in queries]
    assert handle is debug.NULL_HANDLE and not handle and handle.request_id is None
    assert not DebugRecord.objects.exists()


def test_a_null_handle_or_none_or_a_stranger_makes_log_response_do_nothing() -> None:
    one_step()
    with CaptureQueriesContext(connection) as queries:
        debug.log_response(None, {"text": "x"})
        debug.log_response(debug.NULL_HANDLE, {"text": "x"})
        debug.log_response("not a handle", {"text": "x"})  # type: ignore[arg-type]
    assert len(queries) == 0
    assert not DebugRecord.objects.exists()


def test_what_is_not_a_job_is_logged_and_gets_the_null_handle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="baton"):
        handle = debug.log_request(None, {"x": 1})
        debug.log_upstream_context(object(), {"x": 1})
    assert handle is debug.NULL_HANDLE
    assert "debug capture of a request failed" in caplog.text
    assert "debug capture of upstream context failed" in caplog.text


# ----------------------------------------------------------------------- what is stored
def test_a_request_its_response_and_the_upstream_context_are_stored_and_linked() -> None:
    workflow = one_step()
    job = claimed_job(workflow)
    assert job.debug

    debug.log_upstream_context(job, {"parse": {"doc": "text"}})
    handle = debug.log_request(job, {"messages": [{"role": "user", "content": "hi"}]})
    debug.log_response(handle, FakeCompletion(text="hello", model="m", tokens=(3, 1)))

    upstream, request, response = records(workflow)
    assert [(r.kind, r.attempt, r.step_id) for r in (upstream, request, response)] == [
        ("upstream_context", 1, job.step_id),
        ("request", 1, job.step_id),
        ("response", 1, job.step_id),
    ]
    assert upstream.payload == {"parse": {"doc": "text"}}
    assert request.payload == {"messages": [{"role": "user", "content": "hi"}]}
    # A dataclass, field by field (its tuple as a list).
    assert response.payload == {"text": "hello", "model": "m", "tokens": [3, 1]}
    assert handle and handle.request_id == request.pk and response.request_id == request.pk
    assert upstream.request_id is None and request.request_id is None
    assert (handle.workflow_id, handle.step_id, handle.attempt) == (workflow.pk, job.step_id, 1)


def test_sdk_objects_are_stored_as_their_json() -> None:
    pytest.importorskip("openai")
    from openai.types.chat import ChatCompletion

    from tests.unit.test_llm_usage import CHAT_JSON

    completion = ChatCompletion.model_validate(CHAT_JSON)
    workflow = one_step()
    job = claimed_job(workflow)
    debug.log_response(debug.log_request(job, {"model": "gpt-4o"}), completion)

    response = records(workflow)[-1]
    assert response.payload == completion.model_dump(mode="json")
    assert response.payload["choices"][0]["message"]["content"] == "Hello!"


def test_garbage_is_stored_as_what_can_be_said_of_it_and_never_raises() -> None:
    workflow = one_step()
    job = claimed_job(workflow)
    circular, nan, tuple_keys = garbage()[1:4]

    handles = [debug.log_request(job, payload) for payload in garbage()]

    assert all(handles)
    payloads = [r.payload for r in records(workflow)]
    assert payloads[0] == {"repr": "<Unserialisable object (repr failed)>"}
    assert payloads[1] == {"repr": repr(circular)}  # circular: the whole as its repr
    assert payloads[2] == {"repr": repr(nan)}  # NaN is not JSON
    assert payloads[3] == {"repr": repr(tuple_keys)}
    assert payloads[4]["repr"].startswith("<object object at")  # nested unknown: repr
    assert payloads[5]["repr"].startswith("<list_iterator")
    assert payloads[6] == "\ufffd\ufffd bytes"
    assert payloads[7] == {"nul": "a\ufffdb"}  # jsonb has no U+0000


def test_a_big_payload_is_truncated_with_a_marker_saying_how_big_it_was() -> None:
    workflow = one_step()
    job = claimed_job(workflow)
    text = "<big> " * 100_000  # 600,000 characters; quotes and markup add escaping
    debug.log_request(job, {"document": text})

    (record,) = records(workflow)
    full_size = len(json.dumps({"document": text}, ensure_ascii=False).encode())
    assert record.payload["truncated"] is True
    assert record.payload["size_bytes"] == full_size
    assert record.payload["preview"].startswith('{"document": "<big> <big>')
    stored = len(json.dumps(record.payload, ensure_ascii=False).encode())
    assert llm_debug.MAX_RECORD_BYTES - 1024 < stored <= llm_debug.MAX_RECORD_BYTES


def test_a_database_error_is_logged_and_leaves_the_caller_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workflow = one_step()
    job = claimed_job(workflow)
    job.attempt = -1  # the attempt column is unsigned: PostgreSQL refuses the row

    with caplog.at_level(logging.WARNING, logger="baton"), transaction.atomic():
        handle = debug.log_request(job, {"x": 1})
        debug.log_upstream_context(job, {"y": 2})
        # Written on the writer's own connection: the caller's transaction lives on.
        assert Workflow.objects.filter(pk=workflow.pk).exists()

    assert handle is debug.NULL_HANDLE
    assert f"debug capture (request) of step {job.step_id} failed" in caplog.text
    assert f"debug capture (upstream context) of step {job.step_id} failed" in caplog.text
    assert not DebugRecord.objects.exists()


def test_records_outlive_a_rolled_back_attempt_and_are_stored_when_the_call_returns() -> None:
    workflow = one_step()
    job = claimed_job(workflow)

    with pytest.raises(RuntimeError), transaction.atomic():
        handle = debug.log_request(job, {"q": "why did it fail?"})
        # Stored already, and visible from this connection (committed by the writer's).
        assert DebugRecord.objects.filter(pk=handle.request_id).exists()
        raise RuntimeError("the attempt's own work is rolled back")

    (record,) = records(workflow)
    assert record.payload == {"q": "why did it fail?"}


def test_baton_debug_setting_captures_every_workflow() -> None:
    job = claimed_job(one_step(debug_on=False))
    with override_settings(BATON={"DEBUG": True}):
        assert job.debug
        debug.log_request(job, {"x": 1})
    assert DebugRecord.objects.filter(step_id=job.step_id).count() == 1


# ------------------------------------------------------------------------- event loop
def test_async_forms_write_before_the_await_returns() -> None:
    workflow = one_step()
    job = claimed_job(workflow)

    async def perform() -> list[str]:
        await debug.alog_upstream_context(job, {"up": 1})
        handle = await debug.alog_request(job, {"q": "<async>"})
        await debug.alog_response(handle, {"a": "done"})
        await debug.alog_response(None, {"a": "ignored"})
        # Written already: read from another thread (the ORM may not run on the loop).
        kinds = await asyncio.to_thread(
            lambda: [r.kind for r in records(workflow)] + [str(handle.request_id)]
        )
        return kinds

    kinds = asyncio.run(perform())

    _upstream, request, response = records(workflow)
    assert kinds == ["upstream_context", "request", "response", str(request.pk)]
    assert response.request_id == request.pk and response.payload == {"a": "done"}


def test_sync_forms_on_a_running_loop_hand_the_write_to_a_thread_in_order() -> None:
    workflow = one_step()
    job = claimed_job(workflow)

    async def perform() -> Any:
        # No SynchronousOnlyOperation, and the loop does not wait for the database.
        debug.log_upstream_context(job, {"up": 1})
        handles = [debug.log_request(job, {"n": n}) for n in range(5)]
        for n, handle in enumerate(handles):
            debug.log_response(handle, {"answer": n})
        return handles

    handles = asyncio.run(perform())
    llm_debug._flush()

    rows = records(workflow)
    assert [r.kind for r in rows] == ["upstream_context"] + ["request"] * 5 + ["response"] * 5
    requests = {r.payload["n"]: r.pk for r in rows if r.kind == "request"}
    answers = {r.payload["answer"]: r.request_id for r in rows if r.kind == "response"}
    assert answers == requests  # each response names its own request
    assert [h.request_id for h in handles] == [requests[n] for n in range(5)]


def test_async_forms_never_raise_either(caplog: pytest.LogCaptureFixture) -> None:
    workflow = one_step()
    job = claimed_job(workflow)
    plain = claimed_job(one_step(debug_on=False))

    async def perform() -> Any:
        stored = [await debug.alog_request(job, payload) for payload in garbage()]
        skipped = await debug.alog_request(plain, Unserialisable())
        await debug.alog_upstream_context(None, {})
        return stored, skipped

    with caplog.at_level(logging.WARNING, logger="baton"):
        stored, skipped = asyncio.run(perform())

    assert all(stored) and skipped is debug.NULL_HANDLE
    assert len(records(workflow)) == len(garbage())
    assert "debug capture of upstream context failed" in caplog.text


# --------------------------------------------------------------------- real workers
def workflow_of_debug_steps(debug_on: bool, succeed_on: int = 2) -> Workflow:
    workflow: Workflow = (
        baton.new("debugged", debug=debug_on)
        .add("up", Echo.new(value={"doc": "source <text>"}))
        .add("sync", DebugModelCall.new(prompt="sync prompt", succeed_on=succeed_on), deps=["up"])
        .add(
            "async",
            AsyncDebugModelCall.new(prompt="async prompt", succeed_on=succeed_on),
            deps=["up"],
        )
        .add(
            "on_loop",
            AsyncDebugModelCall.new(prompt="loop prompt", succeed_on=succeed_on, sync=True),
            deps=["up"],
        )
        .insert()
    )
    return workflow


def wait_for_records(workflow: Workflow, count: int, timeout: float = 20.0) -> None:
    """The sync forms on a loop write from the worker's background thread: shortly."""
    deadline = time.monotonic() + timeout
    while DebugRecord.objects.filter(workflow_id=workflow.pk).count() < count:
        assert time.monotonic() < deadline, records(workflow)
        time.sleep(0.05)


def assert_captured_per_attempt(workflow: Workflow, name: str, prompt: str) -> None:
    rows = records(workflow, name)
    assert [(r.attempt, r.kind) for r in rows] == [
        (attempt, kind)
        for attempt in (1, 2)
        for kind in ("upstream_context", "request", "response")
    ], name
    for attempt in (1, 2):
        upstream, request, response = [r for r in rows if r.attempt == attempt]
        assert upstream.payload == {"up": {"doc": "source <text>"}}
        assert request.payload == {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
            "attempt": attempt,
        }
        assert response.request_id == request.pk
        assert response.payload == {
            "text": f"{name} answered on attempt {attempt}",
            "model": "gpt-4o-mini",
            "tokens": [10, 2],
        }


@pytest.mark.worker
def test_a_debug_workflow_run_by_a_worker_keeps_records_per_step_and_attempt(
    start_worker: Any,
) -> None:
    start_worker(concurrency=4, queues=LLM_QUEUES)
    workflow = wait_for_workflow(workflow_of_debug_steps(debug_on=True), timeout=60)
    assert workflow.state == "completed"
    wait_for_records(workflow, 3 * 6)

    for name, prompt in [
        ("sync", "sync prompt"),
        ("async", "async prompt"),
        ("on_loop", "loop prompt"),
    ]:
        assert_captured_per_attempt(workflow, name, prompt)
    assert not records(workflow, "up")  # a plain step captured nothing
    # The capture did not get into the results or the ledger's way.
    sync = WorkflowStep.objects.get(workflow=workflow, name="sync")
    assert sync.result_value() == {"text": "sync answered on attempt 2"}
    assert LLMUsage.objects.filter(step=sync).count() == 1


@pytest.mark.worker
def test_a_plain_workflow_run_by_a_worker_stores_no_records(start_worker: Any) -> None:
    start_worker(concurrency=4, queues=LLM_QUEUES)
    workflow = wait_for_workflow(workflow_of_debug_steps(debug_on=False), timeout=60)
    assert workflow.state == "completed"
    time.sleep(0.3)  # what a background write would need
    assert not DebugRecord.objects.exists()


@pytest.mark.worker
def test_baton_debug_in_the_worker_captures_every_workflow(start_worker: Any) -> None:
    start_worker(concurrency=4, queues=LLM_QUEUES, env={"BATON_TEST_DEBUG": "1"})
    workflow = wait_for_workflow(workflow_of_debug_steps(debug_on=False, succeed_on=1))
    assert workflow.state == "completed" and not workflow.debug
    wait_for_records(workflow, 3 * 3)
    assert {r.step.name for r in records(workflow)} == {"sync", "async", "on_loop"}


# ------------------------------------------------------------------------------ sweep
def make_record(workflow: Workflow, step: WorkflowStep, age_days: float = 0, **fields: Any) -> Any:
    fields = {"kind": "request", "payload": {"n": 1}, **fields}
    record = DebugRecord.objects.create(workflow=workflow, step=step, attempt=1, **fields)
    if age_days:
        DebugRecord.objects.filter(pk=record.pk).update(
            created_at=timezone.now() - datetime.timedelta(days=age_days)
        )
    return record


def test_prune_debug_records_deletes_old_ones_in_batches_and_keeps_fresh_ones() -> None:
    workflow = one_step()
    step = WorkflowStep.objects.get(workflow=workflow)
    old = [make_record(workflow, step, age_days=8) for _ in range(5)]
    # A young response to an old request goes with it (its link could not stand).
    answer = make_record(workflow, step, kind="response", request=old[0])
    fresh = [make_record(workflow, step, age_days=6) for _ in range(3)]
    fresh_answer = make_record(workflow, step, kind="response", request=fresh[0])

    with CaptureQueriesContext(connection) as queries:
        pruned = prune_debug_records(datetime.timedelta(days=7), batch_size=2)

    assert pruned == 6
    deletes = [q["sql"] for q in queries if "DELETE" in q["sql"]]
    assert len(deletes) == 3  # 2 (+ the answer), 2, 1: each its own short transaction
    kept = set(DebugRecord.objects.values_list("pk", flat=True))
    assert kept == {r.pk for r in fresh} | {fresh_answer.pk}
    assert answer.pk not in kept
    assert prune_debug_records(datetime.timedelta(days=7)) == 0


def test_the_sweep_prunes_debug_records_after_debug_max_age() -> None:
    workflow = one_step()
    step = WorkflowStep.objects.get(workflow=workflow)
    make_record(workflow, step, age_days=2)
    young = make_record(workflow, step)

    with override_settings(BATON={"DEBUG_MAX_AGE": datetime.timedelta(days=1)}):
        report = sweep()

    assert report.debug_records_pruned == 1
    assert "1 debug record(s) pruned" in report.summary()
    assert list(DebugRecord.objects.values_list("pk", flat=True)) == [young.pk]
    assert sweep().debug_records_pruned == 0  # the default, 7 days, keeps the young one


def test_prune_workflows_leaves_no_llm_calls_or_debug_records_of_pruned_workflows() -> None:
    def spent(workflow: Workflow) -> None:
        job = claimed_job(workflow)
        debug.log_response(debug.log_request(job, {"q": 1}), {"a": 1})
        ledger = Ledger()
        ledger.record(Usage(model="gpt-4o-mini", input_tokens=10, output_tokens=1), "c")
        outcome = advance.Completed(value_json=None, calls=ledger.calls())
        assert advance.finish(job._claim, outcome)

    old, young = one_step(), one_step()
    spent(old)
    spent(young)
    Workflow.objects.filter(pk=old.pk).update(
        finished_at=timezone.now() - datetime.timedelta(days=30)
    )

    assert prune_workflows(datetime.timedelta(days=7), batch_size=1) == 1

    assert not LLMUsage.objects.filter(workflow_id=old.pk).exists()
    assert not DebugRecord.objects.filter(workflow_id=old.pk).exists()
    assert LLMUsage.objects.filter(workflow_id=young.pk).count() == 1
    assert DebugRecord.objects.filter(workflow_id=young.pk).count() == 2
    assert set(Workflow.objects.values_list("pk", flat=True)) == {young.pk}
