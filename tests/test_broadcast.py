"""Transitions reach a Channels group over real Redis, from a real worker process."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

import baton
from baton.broadcast import WORKFLOW_LIST_GROUP, workflow_group
from baton.testing import assert_completed, wait_for_workflow
from tests.testapp.tasks import Echo, Flaky

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
    """Receive messages on `channel` until `until(messages)` or timeout."""
    messages: list[dict] = []

    async def receive_until():
        while not until(messages):
            messages.append(await layer.receive(channel))

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
