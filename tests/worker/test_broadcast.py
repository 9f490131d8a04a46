"""Transitions reach a Channels group over real Redis, from a real worker process."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

import baton
from baton import broadcast
from baton.broadcast import (
    WORKFLOW_LIST_GROUP,
    decimal_text,
    step_payload,
    workflow_group,
    workflow_payload,
)
from baton.models import Workflow, WorkflowStep
from baton.testing import assert_completed, wait_for_workflow
from tests.testapp.tasks import Echo, FakeModelCall, Flaky

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture
def redis_layer(settings):
    if not os.environ.get("REDIS_URL"):
        if os.environ.get("CI"):
            pytest.fail("REDIS_URL is not set in CI: the broadcast tests need real Redis")
        pytest.skip("REDIS_URL not set: run with `make test`, which starts a private Redis")
    settings.BATON = {"CHANNEL_LAYER": "default"}
    return get_channel_layer("default")


def drain(layer, channel: str, until, timeout: float = 30.0) -> list[dict]:
    """Receive messages on `channel` until `until(events)` or timeout: the events of the
    batches received, in order."""
    messages: list[dict] = []

    async def receive_until():
        while not until(messages):
            batch = await layer.receive(channel)
            assert batch["type"] == broadcast.BATCH_TYPE
            assert 1 <= len(batch["events"]) <= broadcast.MAX_PER_MESSAGE
            messages.extend(batch["events"])

    async def receive_some():
        # One uncancelled receive loop: channels-redis may drop a message whose receive
        # is cancelled halfway.
        try:
            await asyncio.wait_for(receive_until(), timeout=timeout)
        except TimeoutError:
            pass

    async_to_sync(receive_some)()
    return messages


def test_every_transition_is_broadcast_to_the_workflow_and_list_groups(redis_layer, start_worker):
    builder = (
        baton.new("broadcast")
        .add("a", Flaky.new(succeed_on=2))
        .add("b", Echo.new(value="x"), deps=["a"])
    )
    # Plain channel names: receiving on a "specific" (new_channel) name from another
    # event loop than the one that created it loses messages in channels-redis.
    workflow_channel = f"batontest-wf-{uuid.uuid4().hex}"
    list_channel = f"batontest-list-{uuid.uuid4().hex}"
    async_to_sync(redis_layer.group_add)(workflow_group(builder.workflow_id), workflow_channel)
    async_to_sync(redis_layer.group_add)(WORKFLOW_LIST_GROUP, list_channel)

    workflow = builder.insert()
    start_worker(concurrency=2, env={"BATON_TEST_BROADCAST": "1"})
    assert_completed(wait_for_workflow(workflow, timeout=30))

    def finished(messages):
        return any(
            m["event"] == "workflow" and m["workflow"]["state"] == "completed" for m in messages
        )

    for channel in (workflow_channel, list_channel):
        messages = drain(redis_layer, channel, finished)
        step_events = [m["step"] for m in messages if m["event"] == "step"]
        # Workers broadcast concurrently, so steps may interleave; each step's own
        # transitions are ordered by its version.
        for name, expected in {
            "a": [
                ("available", "executing"),
                ("executing", "retryable"),
                ("retryable", "executing"),
                ("executing", "completed"),
            ],
            "b": [("waiting", "available"), ("available", "executing"), ("executing", "completed")],
        }.items():
            mine = sorted((e for e in step_events if e["name"] == name), key=lambda e: e["version"])
            assert [(e["old_state"], e["state"]) for e in mine] == expected
            assert [e["version"] for e in mine] == list(range(1, len(expected) + 1))
        workflow_events = [m for m in messages if m["event"] == "workflow"]
        (done,) = [m for m in workflow_events if m["workflow"]["state"] == "completed"]
        assert done["workflow_id"] == str(workflow.pk)
        if channel == list_channel:  # lists learn of a workflow when it is inserted
            assert workflow_events[0]["workflow"]["state"] == "executing"


def test_a_broken_channel_layer_never_fails_a_step(start_worker, settings):
    workflow = baton.new("no-layer").add("a", Echo.new(value=1)).insert()
    # The worker's BATON names a layer that cannot connect: every send fails.
    start_worker(
        concurrency=1, env={"BATON_TEST_BROADCAST": "1", "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert_completed(wait_for_workflow(workflow, timeout=30))


# -------------------------------------------------------------------------------- costs
def floats_in(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for item in value.values() for f in floats_in(item)]
    if isinstance(value, list):
        return [f for item in value for f in floats_in(item)]
    return []


def test_decimal_text_keeps_every_digit_and_never_an_exponent():
    assert decimal_text(None) is None
    assert decimal_text(Decimal("0.000354000000000")) == "0.000354"
    assert decimal_text(Decimal("0E-15")) == "0"
    assert decimal_text(Decimal("2.000000")) == "2"
    assert decimal_text(Decimal("1E+2")) == "100"
    assert decimal_text(Decimal("0.000000000000001")) == "0.000000000000001"
    assert decimal_text(Decimal("123456789012345.123456789012345")) == (
        "123456789012345.123456789012345"
    )


def test_payloads_carry_costs_as_decimal_strings():
    workflow = (
        baton.new("priced", budget_usd=Decimal("2.00"))
        .add("a", Echo.new())
        .add("b", Echo.new(), deps=["a"])
        .insert()
    )
    Workflow.objects.filter(pk=workflow.pk).update(
        cost_usd=Decimal("0.000354"), unpriced_calls=2, reason="budget exceeded: $2.01"
    )
    WorkflowStep.objects.filter(workflow=workflow, name="a").update(
        cost_usd=Decimal("0.000354"), unpriced_calls=2
    )
    workflow.refresh_from_db()
    a = WorkflowStep.objects.get(workflow=workflow, name="a")
    b = WorkflowStep.objects.get(workflow=workflow, name="b")
    assert isinstance(a.cost_usd, Decimal)  # as the column reads, with its 15 places

    summary = workflow_payload(workflow)
    steps = [step_payload(a, "executing"), step_payload(b)]

    assert (summary["cost_usd"], summary["unpriced_calls"]) == ("0.000354", 2)
    assert (summary["budget_usd"], summary["reason"]) == ("2", "budget exceeded: $2.01")
    assert (steps[0]["cost_usd"], steps[0]["unpriced_calls"]) == ("0.000354", 2)
    assert (steps[1]["cost_usd"], steps[1]["unpriced_calls"]) == (None, 0)
    decoded = json.loads(json.dumps({"workflow": summary, "steps": steps}))  # no Decimal
    assert floats_in(decoded) == []
    assert Decimal(decoded["workflow"]["cost_usd"]) == workflow.cost_usd


def test_step_events_carry_the_workflow_totals_only_when_the_signal_has_them(settings, monkeypatch):
    settings.BATON = {"CHANNEL_LAYER": "default"}
    workflow = baton.new("totals").add("a", Echo.new()).insert()
    step = WorkflowStep.objects.get(workflow=workflow)
    sent: list[dict] = []
    monkeypatch.setattr(broadcast, "send", lambda groups, event: sent.append(event))

    broadcast.on_step_transitioned(None, step=step, old_state="available", new_state="available")
    broadcast.on_step_transitioned(
        None,
        step=step,
        old_state="executing",
        new_state="completed",
        workflow_cost_usd=Decimal("0.000270000000000"),
        workflow_unpriced_calls=3,
    )
    broadcast.on_step_transitioned(
        None,
        step=step,
        old_state="executing",
        new_state="retryable",
        workflow_cost_usd=None,
        workflow_unpriced_calls=1,
    )

    plain, priced, unknown = sent
    assert "workflow_cost_usd" not in plain and "workflow_unpriced_calls" not in plain
    assert (priced["workflow_cost_usd"], priced["workflow_unpriced_calls"]) == ("0.00027", 3)
    assert (unknown["workflow_cost_usd"], unknown["workflow_unpriced_calls"]) == (None, 1)
    assert floats_in(json.loads(json.dumps(sent))) == []


def test_a_worker_broadcasts_costs_that_match_the_ledger(redis_layer, start_worker):
    builder = (
        baton.new("costs", budget_usd=Decimal("2.00"))
        # Two calls (one recorded by hand, one in the result), priced.
        .add("priced", FakeModelCall.new(model="gpt-4o-mini", keys=["k1"]))
        # A model the pricing does not know: an unpriced call, its cost unknown.
        .add("unknown", FakeModelCall.new(model="acme-9000"), deps=["priced"])
        # Its failed first attempt's call is spent too, and announced with the retry.
        .add("flaky", FakeModelCall.new(keys=["k1"], succeed_on=2), deps=["priced"])
    )
    channel = f"batontest-costs-{uuid.uuid4().hex}"
    async_to_sync(redis_layer.group_add)(workflow_group(builder.workflow_id), channel)

    workflow = builder.insert()
    start_worker(concurrency=2, queues=["default", "llm"], env={"BATON_TEST_BROADCAST": "1"})
    assert_completed(wait_for_workflow(workflow, timeout=30))

    def everything(ms: list[dict]) -> bool:
        # Steps finish on two threads of the worker: a step's events may come after the
        # workflow's, which the last step sends.
        completed = {
            m["step"]["name"]
            for m in ms
            if m["event"] == "step" and m["step"]["state"] == "completed"
        }
        return completed == {"priced", "unknown", "flaky"} and any(
            m["event"] == "workflow" for m in ms
        )

    messages = drain(redis_layer, channel, everything)
    workflow.refresh_from_db()
    steps = {step.name: step for step in WorkflowStep.objects.filter(workflow=workflow)}
    assert workflow.cost_usd is not None and workflow.cost_usd > 0
    assert workflow.unpriced_calls == 1
    assert steps["unknown"].cost_usd is None and steps["unknown"].unpriced_calls == 1
    assert floats_in(messages) == []  # over Redis too: strings and ints only

    step_events = [m for m in messages if m["event"] == "step"]
    for name, step in steps.items():
        last = max(
            (m["step"] for m in step_events if m["step"]["name"] == name),
            key=lambda e: e["version"],
        )
        assert last["state"] == "completed"
        assert (last["cost_usd"], last["unpriced_calls"]) == (
            decimal_text(step.cost_usd),
            step.unpriced_calls,
        )
    # Every transition that recorded calls brought the workflow's totals after it: the
    # completions of the three steps, and flaky's retry.
    with_totals = [m for m in step_events if "workflow_cost_usd" in m]
    assert sorted((m["step"]["name"], m["step"]["state"]) for m in with_totals) == [
        ("flaky", "completed"),
        ("flaky", "retryable"),
        ("priced", "completed"),
        ("unknown", "completed"),
    ]
    assert max(Decimal(m["workflow_cost_usd"]) for m in with_totals) == workflow.cost_usd
    assert max(m["workflow_unpriced_calls"] for m in with_totals) == workflow.unpriced_calls
    (finished,) = [m["workflow"] for m in messages if m["event"] == "workflow"]
    assert (finished["cost_usd"], finished["unpriced_calls"]) == (
        decimal_text(workflow.cost_usd),
        1,
    )
    assert finished["budget_usd"] == "2"


# ----------------------------------------------------------------------------- batching
def test_a_pass_is_coalesced_into_one_message_per_group_in_queue_order():
    batch = [
        ("default", ["wf.a", "list"], {"n": 0}),
        ("default", ["wf.b", "list"], {"n": 1}),
        ("default", ["wf.a", "list"], {"n": 2}),
        ("other", ["list"], {"n": 3}),
    ]
    assert broadcast.coalesce(batch) == [
        ("default", "wf.a", [0, 2]),
        ("default", "list", [0, 1, 2]),
        ("default", "wf.b", [1]),
        ("other", "list", [3]),
    ]
    many = [("default", ["g"], {"n": n}) for n in range(broadcast.MAX_PER_MESSAGE * 2 + 1)]
    assert [len(numbers) for _, _, numbers in broadcast.coalesce(many)] == [
        broadcast.MAX_PER_MESSAGE,
        broadcast.MAX_PER_MESSAGE,
        1,
    ]


def test_a_burst_reaches_redis_batched_and_in_order_per_workflow(redis_layer):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    channels = {key: f"batontest-burst-{uuid.uuid4().hex}" for key in (first, second, "list")}
    for key, channel in channels.items():
        group = WORKFLOW_LIST_GROUP if key == "list" else workflow_group(key)
        async_to_sync(redis_layer.group_add)(group, channel)
    sender = broadcast._Sender()
    events = 300
    for n in range(events):  # queued before the sender's thread starts: one pass takes them
        workflow_id = first if n % 3 else second
        sender.queue.put_nowait(
            (
                "default",
                [workflow_group(workflow_id), WORKFLOW_LIST_GROUP],
                {
                    "type": broadcast.MESSAGE_TYPE,
                    "event": "step",
                    "workflow_id": workflow_id,
                    "n": n,
                },
            )
        )
    sender._ensure_thread()
    assert sender.flush(30)
    assert (sender.stats.sent, sender.stats.failed) == (events, 0)

    def received(channel: str, count: int) -> tuple[list[int], int]:
        batches: list[dict] = []

        async def receive() -> None:
            while sum(len(b["events"]) for b in batches) < count:
                batches.append(await redis_layer.receive(channel))

        async_to_sync(asyncio.wait_for)(receive(), 30)
        assert {b["type"] for b in batches} == {broadcast.BATCH_TYPE}
        return [e["n"] for b in batches for e in b["events"]], len(batches)

    numbers, messages = received(channels["list"], events)
    assert numbers == list(range(events))
    assert messages == 3  # 300 events, 100 a message
    numbers, messages = received(channels[first], 200)
    assert numbers == [n for n in range(events) if n % 3] and messages == 2
    numbers, messages = received(channels[second], 100)
    assert numbers == [n for n in range(events) if not n % 3] and messages == 1
