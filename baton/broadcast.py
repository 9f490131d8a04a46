"""Broadcasting transitions over a Channels layer, for the live page.

With BATON["CHANNEL_LAYER"] set, every step transition and workflow transition (insert,
finish, executing again after a retry) is sent, after commit, to the group of its
workflow and to the group of the workflow list. Sending happens on a background thread
with a bounded queue and a per-send timeout, so a slow, hung or absent Redis never slows
or fails a step; failures are logged and counted (``stats()``). Each pass of that thread
sends what gathered since the last one as one message per group ({"type": BATCH_TYPE,
"events": [...]}, in queue order): a group_send costs channels-redis about as much for
fifty events as for one.

Money is sent as the Decimal's exact digits in a string ("0.000354"), or null for
unknown: never a float, so nothing is rounded on the way to the page.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import os
import queue
import threading
import time
from decimal import Decimal
from typing import Any

from channels.layers import get_channel_layer

from baton import signals
from baton.conf import settings
from baton.models import Workflow

logger = logging.getLogger("baton")

WORKFLOW_LIST_GROUP = "baton.workflows"
MESSAGE_TYPE = "baton.event"  # one event; consumers handle it in a method named baton_event
# What the sender sends: {"type": BATCH_TYPE, "events": [event, ...]}, each event a dict
# with "type": MESSAGE_TYPE as it would travel alone (handled in baton_events).
BATCH_TYPE = "baton.events"


def workflow_group(workflow_id: Any) -> str:
    # Channels group names: ASCII letters, digits, hyphens, underscores, periods; < 100.
    return f"baton.workflow.{workflow_id}"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def decimal_text(value: Decimal | None) -> str | None:
    """A Decimal's exact value as plain digits ("0.000354", "2"), or None.

    Trailing zeros of the column's scale go ("0.000354000000000" -> "0.000354"); never an
    exponent (a JSON reader need not know that "3.54E-4" is a number)."""
    if value is None:
        return None
    # Not normalize(): it rounds to the context's 28 digits, the column holds 30.
    text = format(Decimal(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def step_payload(step: Any, old_state: str | None = None) -> dict[str, Any]:
    return {
        "id": step.id,
        "name": step.name,
        "state": step.state,
        "old_state": old_state,
        "version": step.version,
        "attempt": step.attempt,
        "max_attempts": step.max_attempts,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "reason": step.reason,
        "cost_usd": decimal_text(step.cost_usd),
        "unpriced_calls": step.unpriced_calls,
        "group": step.group,
        # The id of the step whose job.graft() added this one (None: not grafted); read
        # only when loaded, so that a snapshot built with .only(...) costs no query per step.
        "grafted_by": step.__dict__.get("grafted_by_id"),
    }


def workflow_payload(workflow: Any) -> dict[str, Any]:
    return {
        "id": str(workflow.pk),
        "name": workflow.name,
        "state": workflow.state,
        "step_count": workflow.step_count,
        "unfinished_steps": workflow.unfinished_steps,
        "created_at": _iso(workflow.created_at),
        "finished_at": _iso(workflow.finished_at),
        "cost_usd": decimal_text(workflow.cost_usd),
        "unpriced_calls": workflow.unpriced_calls,
        "budget_usd": decimal_text(workflow.budget_usd),
        "reason": workflow.reason,
    }


# Sending happens off the step's thread: a step only puts its events in a bounded queue,
# and one sender thread per process hands them to the layer, each group_send given at
# most SEND_TIMEOUT seconds. A hung or absent Redis therefore costs a step nothing but a
# put_nowait; when the queue is full, events are dropped and counted (the pages catch up
# from their next snapshot or the step's next event, which carries its whole state).
# After a failed send, broadcasting pauses (0.5 s, doubling to 30 s): a down Redis is not
# retried for every event, which would take CPU (and the GIL) from the steps.
QUEUE_SIZE = 10_000
SEND_TIMEOUT = 2.0
BATCH = 500  # events taken off the queue at a time
GATHER = 0.05  # seconds between passes: what arrives meanwhile goes in one pass
MIN_PAUSE, MAX_PAUSE = 0.5, 30.0  # after a failed send, broadcasting pauses this long
EXIT_FLUSH_SECONDS = 2.0
MAX_PER_MESSAGE = 100  # events in one message at most (~35 kB of JSON)


def coalesce(
    batch: list[tuple[str, list[str], dict[str, Any]]],
) -> list[tuple[str, str, list[int]]]:
    """The messages a pass sends: (alias, group, numbers of its events in `batch`), one
    per group in the order each group first appears, each group's events in queue order,
    split into chunks of MAX_PER_MESSAGE."""
    by_group: dict[tuple[str, str], list[int]] = {}
    for number, (alias, groups, _) in enumerate(batch):
        for group in groups:
            by_group.setdefault((alias, group), []).append(number)
    return [
        (alias, group, numbers[start : start + MAX_PER_MESSAGE])
        for (alias, group), numbers in by_group.items()
        for start in range(0, len(numbers), MAX_PER_MESSAGE)
    ]


@dataclasses.dataclass
class SenderStats:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class _Sender:
    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, list[str], dict[str, Any]]] = queue.Queue(QUEUE_SIZE)
        self.stats = SenderStats()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()
        self.warned_drop = False
        self.failures = 0  # failed sends (each pauses broadcasting)
        self.pause = 0.0
        self.resume_at = 0.0

    def put(self, alias: str, groups: list[str], message: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self.queue.put_nowait((alias, groups, message))
        except queue.Full:
            self.stats.dropped += 1
            if not self.warned_drop:  # once per backlog, not once per event
                self.warned_drop = True
                logger.warning(
                    "baton: broadcast queue full (%d events): dropping events until the "
                    "channel layer catches up",
                    QUEUE_SIZE,
                )
            return
        self.stats.queued += 1

    def _ensure_thread(self) -> None:
        if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
            return
        with self.lock:
            if self.thread is not None and self.thread.is_alive() and self.pid == os.getpid():
                return
            if self.pid != os.getpid():  # a forked child: its parent's queue is not its own
                self.queue = queue.Queue(QUEUE_SIZE)
            self.pid = os.getpid()
            self.thread = threading.Thread(target=self._run, name="baton-broadcast", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        while True:
            batch = [self.queue.get()]
            while len(batch) < BATCH:  # whatever else is waiting: one pass for them all
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if time.monotonic() < self.resume_at:
                    # The layer failed a moment ago: skip without trying (no connection
                    # attempts, no CPU taken from the steps) until the pause is over.
                    self.stats.failed += len(batch)
                else:
                    loop.run_until_complete(self._send_all(batch))
            finally:
                for _ in batch:
                    self.queue.task_done()
            # Let events gather between passes (a pause, or a beat of GATHER seconds):
            # waking once per event would take the GIL from the steps as often.
            time.sleep(max(GATHER, min(self.resume_at - time.monotonic(), 1.0)))

    async def _send_all(self, batch: list[tuple[str, list[str], dict[str, Any]]]) -> None:
        """Send a pass's events as one message per group (in chunks of MAX_PER_MESSAGE):
        a group_send costs channels-redis the same CPU for one event as for fifty, and
        two per event (workflow group and list group) were most of a worker's cost of
        broadcasting. Each group's events keep the order they were queued in."""
        messages = coalesce(batch)
        remaining = [len(groups) for _, groups, _ in batch]  # sends each event still needs
        for alias, group, numbers in messages:
            try:
                layer = get_channel_layer(alias)
                if layer is None:
                    for number in numbers:
                        remaining[number] = 0
                    continue
                events = [batch[number][2] for number in numbers]
                await asyncio.wait_for(
                    layer.group_send(group, {"type": BATCH_TYPE, "events": events}),
                    SEND_TIMEOUT,
                )
                for number in numbers:
                    remaining[number] -= 1
                self.pause = 0.0
            except Exception as error:  # a broadcast failure must never fail a step
                # This message and the rest of the pass fail; so does whatever comes in
                # the next `pause` seconds (0.5 s, doubling to 30 s while it lasts).
                self.pause = min(MAX_PAUSE, max(MIN_PAUSE, 2 * self.pause))
                self.resume_at = time.monotonic() + self.pause
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    logger.warning(
                        "baton: broadcasting %d events to %s failed (%d failures so far), "
                        "pausing broadcasts for %.1f s: %r",
                        len(numbers),
                        group,
                        self.failures,
                        self.pause,
                        error,
                    )
                break
        sent = sum(1 for left in remaining if left <= 0)
        self.stats.sent += sent
        self.stats.failed += len(batch) - sent
        if self.queue.qsize() < QUEUE_SIZE // 2:
            self.warned_drop = False

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was handled (sent, failed or timed out)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


_sender = _Sender()
atexit.register(lambda: _sender.flush(EXIT_FLUSH_SECONDS) if _sender.thread else None)


def stats() -> SenderStats:
    """This process's broadcast counters: queued, sent, failed, dropped."""
    return _sender.stats


def flush(timeout: float = 10.0) -> bool:
    """Wait until this process's queued broadcasts are out (or gave up): for tests and
    for a process about to exit. True when the queue drained in time."""
    return _sender.flush(timeout)


def send(groups: list[str], event: dict[str, Any]) -> None:
    """Queue `event` for `groups`; returns at once, whatever the layer's state."""
    alias = settings.CHANNEL_LAYER
    if not alias:
        return
    try:
        _sender.put(alias, list(groups), {"type": MESSAGE_TYPE, **event})
    except Exception:  # a broadcast failure must never fail a step
        logger.exception("baton: queueing broadcast %s failed", event.get("event"))


def on_step_transitioned(
    sender: Any, step: Any, old_state: str, new_state: str, **kwargs: Any
) -> None:
    if not settings.CHANNEL_LAYER:  # every step sends two: build no payload for nobody
        return
    workflow_id = str(step.workflow_id)
    event: dict[str, Any] = {
        "event": "step",
        "workflow_id": workflow_id,
        "step": step_payload(step, old_state),
    }
    # A transition that recorded model calls comes with the workflow's running totals
    # after it: pages update their totals from the event, without a query.
    if "workflow_cost_usd" in kwargs or "workflow_unpriced_calls" in kwargs:
        event["workflow_cost_usd"] = decimal_text(kwargs.get("workflow_cost_usd"))
        event["workflow_unpriced_calls"] = int(kwargs.get("workflow_unpriced_calls") or 0)
    send([workflow_group(workflow_id), WORKFLOW_LIST_GROUP], event)


def on_workflow_finished(sender: Any, workflow: Any, state: str, **kwargs: Any) -> None:
    if not settings.CHANNEL_LAYER:
        return
    workflow_id = str(workflow.pk)
    send(
        [workflow_group(workflow_id), WORKFLOW_LIST_GROUP],
        {"event": "workflow", "workflow_id": workflow_id, "workflow": workflow_payload(workflow)},
    )


def on_workflow_inserted(workflow: Any) -> None:
    """A new workflow: the list pages show it before any of its steps moves."""
    send(
        [WORKFLOW_LIST_GROUP],
        {
            "event": "workflow",
            "workflow_id": str(workflow.pk),
            "workflow": workflow_payload(workflow),
        },
    )


def on_workflow_changed(workflow_id: Any) -> None:
    """A workflow moved without finishing (executing again after retry): its pages redraw
    the header from the event. Reads the workflow after commit, so it says what is."""
    if not settings.CHANNEL_LAYER:
        return
    workflow = Workflow.objects.filter(pk=workflow_id).first()
    if workflow is None:
        return
    send(
        [workflow_group(workflow_id), WORKFLOW_LIST_GROUP],
        {
            "event": "workflow",
            "workflow_id": str(workflow.pk),
            "workflow": workflow_payload(workflow),
        },
    )


def connect() -> None:
    signals.step_transitioned.connect(on_step_transitioned, dispatch_uid="baton.broadcast.step")
    signals.workflow_finished.connect(on_workflow_finished, dispatch_uid="baton.broadcast.workflow")
