"""WebSocket consumers of the live pages: check the user, join, send a snapshot, then deltas.

``connect()`` refuses (close code 4403, before joining any group) anyone the pages would
refuse. An accepted socket joins its group first and reads its snapshot second, so an
event that lands in between is either already in the snapshot (the client keeps a step's
highest ``version`` and drops it) or newer than it.

Messages sent to the browser (JSON):
- workflow socket: ``{"type": "snapshot", "workflow": {...}, "steps": [...]}`` first, then
  ``{"type": "step", "step": {...}}`` (with ``workflow_cost_usd`` and
  ``workflow_unpriced_calls``, the workflow's running totals, when that transition
  recorded model calls) and ``{"type": "workflow", "workflow": {...}}``, several of them
  in order as ``{"type": "batch", "messages": [...]}`` when one broadcast carried them; on
  ``{"action": "detail", "step_id": N}`` it answers ``{"type": "detail", "step": {...}}``
  with the step's error, queue and ``explanation`` (baton.explain: why it waits).
- list socket (``?page=N&q=search``): ``{"type": "workflows", "workflows": [...],
  "counts": {state: n}, "snapshot": bool}``, ``counts`` (workflows per state, with the
  page's search) in the snapshot and after any workflow event; events
  only mark a workflow as changed, and its summary is re-read at most every
  ``LIST_REFRESH_SECONDS`` (one query for all changed workflows), so a busy workflow costs
  the list a query per interval, not one per transition. Summaries carry the workflow's
  cost, so a transition's new totals reach the list with that same re-read.
- Money fields (``cost_usd``, ``budget_usd``, ``workflow_cost_usd``) are decimal strings
  or null, never floats (baton.broadcast.decimal_text).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings as django_settings
from django.http.request import validate_host

from baton.broadcast import WORKFLOW_LIST_GROUP, step_payload, workflow_group
from baton.explain import explain
from baton.live.access import can_view
from baton.live.queries import state_counts, workflow_snapshot, workflow_summaries
from baton.live.views import WORKFLOWS_PER_PAGE
from baton.models import Workflow, WorkflowStep

WORKFLOW_TOTALS = ("workflow_cost_usd", "workflow_unpriced_calls")
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
LIST_REFRESH_SECONDS = 0.5
ERROR_CHARS = 4_000  # of a step's last error, in its detail
# How stale a socket's permission may get: a logged-out or revoked user stops receiving
# events within this many seconds (one query per socket per interval, while events flow).
AUTH_RECHECK_SECONDS = 5.0
MAX_PAGE = 1_000_000


class _LiveConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group: str = ""
    _checked_at = 0.0

    async def _allowed(self) -> bool:
        if not _same_site(self.scope):
            return False  # cross-site WebSocket hijacking: a foreign page's socket
        self._checked_at = time.monotonic()
        return bool(await database_sync_to_async(can_view)(self.scope.get("user")))

    async def _refuse(self, code: int) -> None:
        # Accepted, then closed with the code: refused before accepting, the browser
        # only sees a failed handshake (1006) and cannot tell "forbidden" from "down".
        await self.accept()
        await self.close(code=code)

    async def _still_allowed(self) -> bool:
        """Re-check the user at most every AUTH_RECHECK_SECONDS, from the session as it is
        now (logged out, session deleted, permission revoked): close if refused."""
        if time.monotonic() - self._checked_at < AUTH_RECHECK_SECONDS:
            return True
        self._checked_at = time.monotonic()
        user = self.scope.get("user")
        if self.scope.get("session") is not None:  # the user its session names now
            user = await get_user(self.scope)
        if await database_sync_to_async(can_view)(user):
            return True
        await self.close(code=CLOSE_FORBIDDEN)
        return False

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # A bad frame gets an answer, not a dropped socket.
        try:
            content = await self.decode_json(text_data) if text_data is not None else None
        except ValueError:
            await self.send_json({"type": "error", "error": "the message is not valid JSON"})
            return
        if content is None:
            await self.send_json({"type": "error", "error": "send text frames of JSON"})
            return
        await self.receive_json(content)

    async def disconnect(self, code: int) -> None:
        if self.group and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _join(self, group: str) -> None:
        if self.channel_layer is None:
            return
        await self.channel_layer.group_add(group, self.channel_name)
        self.group = group


class WorkflowConsumer(_LiveConsumer):
    """ws/baton/workflows/<uuid>/: one workflow's steps."""

    async def connect(self) -> None:
        if not await self._allowed():
            await self._refuse(CLOSE_FORBIDDEN)
            return
        self.workflow_id = uuid.UUID(str(self.scope["url_route"]["kwargs"]["workflow_id"]))
        if not await database_sync_to_async(_workflow_exists)(self.workflow_id):
            await self._refuse(CLOSE_NOT_FOUND)
            return
        await self._join(workflow_group(self.workflow_id))
        await self.accept()
        snapshot = await database_sync_to_async(workflow_snapshot)(self.workflow_id)
        if snapshot is None:  # deleted (pruned) in the meantime
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json(snapshot)

    async def baton_event(self, event: dict[str, Any]) -> None:
        await self.baton_events({"events": [event]})

    async def baton_events(self, batch: dict[str, Any]) -> None:
        """A sender's pass: this workflow's events, in order, in one frame to the page."""
        mine = str(self.workflow_id)
        messages = [
            message
            for event in batch.get("events") or ()
            if isinstance(event, dict) and event.get("workflow_id") == mine
            for message in [_page_message(event)]
            if message is not None
        ]
        if not messages or not await self._still_allowed():
            return
        if len(messages) == 1:
            await self.send_json(messages[0])
        else:
            await self.send_json({"type": "batch", "messages": messages})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or content.get("action") != "detail":
            await self.send_json({"type": "error", "error": "unknown message"})
            return
        if not await self._still_allowed():
            return
        step_id = content.get("step_id")
        if not isinstance(step_id, int) or isinstance(step_id, bool):
            return
        detail = await database_sync_to_async(_step_detail)(self.workflow_id, step_id)
        if detail is not None:
            await self.send_json({"type": "detail", "step": detail})


class WorkflowListConsumer(_LiveConsumer):
    """ws/baton/workflows/?page=N: summaries of the workflows on that page, and changes."""

    async def connect(self) -> None:
        if not await self._allowed():
            await self._refuse(CLOSE_FORBIDDEN)
            return
        query_string = self.scope.get("query_string", b"")
        self.page = _page_number(query_string)
        self.search = _search(query_string)
        self.changed: set[str] = set()
        self.recount = False  # a workflow event came: the per-state counts may have moved
        self.flush_task: asyncio.Task[None] | None = None
        await self._join(WORKFLOW_LIST_GROUP)
        await self.accept()
        summaries = await database_sync_to_async(_page_summaries)(self.page)
        counts = await database_sync_to_async(state_counts)(self.search)
        await self.send_json(
            {"type": "workflows", "workflows": summaries, "counts": counts, "snapshot": True}
        )

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "flush_task", None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().disconnect(code)

    async def baton_event(self, event: dict[str, Any]) -> None:
        await self.baton_events({"events": [event]})

    async def baton_events(self, batch: dict[str, Any]) -> None:
        # Workflow events too are re-read rather than forwarded: summaries then all come
        # from one loop of reads made after the commits, so they never go back in time.
        ids = {
            event["workflow_id"]
            for event in batch.get("events") or ()
            if isinstance(event, dict) and isinstance(event.get("workflow_id"), str)
        }
        if not ids or not await self._still_allowed():
            return
        self.changed |= ids
        # A workflow's state changes only with a workflow event (inserted, finished,
        # executing again): step events alone leave the counts as they are.
        self.recount = self.recount or any(
            isinstance(event, dict) and event.get("event") == "workflow"
            for event in batch.get("events") or ()
        )
        if self.flush_task is None or self.flush_task.done():
            self.flush_task = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        # Ids marked while a query runs are picked up by the next round of this loop.
        while self.changed:
            await asyncio.sleep(LIST_REFRESH_SECONDS)
            ids, self.changed = self.changed, set()
            recount, self.recount = self.recount, False
            summaries = await database_sync_to_async(_summaries)(ids)
            message: dict[str, Any] = {"type": "workflows", "workflows": summaries}
            if recount:  # one grouped query, as the page's own
                message["counts"] = await database_sync_to_async(state_counts)(self.search)
            if summaries or recount:
                await self.send_json(message)


def _page_message(event: dict[str, Any]) -> dict[str, Any] | None:
    """What the workflow page gets for one broadcast event."""
    if event.get("event") == "step":
        message: dict[str, Any] = {"type": "step", "step": event["step"]}
        for key in WORKFLOW_TOTALS:  # when the transition recorded model calls
            if key in event:
                message[key] = event[key]
        return message
    if event.get("event") == "workflow":
        return {"type": "workflow", "workflow": event["workflow"]}
    return None


# ------------------------------------------------------------------------- DB helpers
def _workflow_exists(workflow_id: uuid.UUID) -> bool:
    return Workflow.objects.filter(pk=workflow_id).exists()


def _page_number(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("page", ["1"])
    try:
        return min(max(1, int(values[0])), MAX_PAGE)
    except ValueError:
        return 1


def _search(query_string: bytes) -> str:
    """The index's search (?q=), as the page reads it: its counts follow the same filter."""
    values = parse_qs(query_string.decode("latin-1")).get("q", [""])
    return values[0].strip()[:200]


def _same_site(scope: dict[str, Any]) -> bool:
    """Whether the socket's Origin (if the client sent one; browsers always do) names a
    host this site serves (settings.ALLOWED_HOSTS), as Channels' AllowedHostsOriginValidator
    checks: whatever the project's router does, baton's sockets check it themselves."""
    headers = dict(scope.get("headers") or [])
    origin = headers.get(b"origin")
    if origin is None:
        return True
    parsed = urlparse(origin.decode("latin-1"))
    if not parsed.hostname:
        return False
    host = parsed.hostname + (f":{parsed.port}" if parsed.port else "")
    allowed = list(django_settings.ALLOWED_HOSTS) or (
        [".localhost", "127.0.0.1", "[::1]"] if django_settings.DEBUG else []
    )
    return validate_host(host, allowed) or validate_host(parsed.hostname, allowed)


def _page_summaries(page: int) -> list[dict[str, Any]]:
    start = (page - 1) * WORKFLOWS_PER_PAGE
    workflows = Workflow.objects.order_by("-created_at", "-pk")[start : start + WORKFLOWS_PER_PAGE]
    return workflow_summaries(workflows)


def _summaries(ids: set[str]) -> list[dict[str, Any]]:
    return workflow_summaries(Workflow.objects.filter(pk__in=ids))


def _step_detail(workflow_id: uuid.UUID, step_id: int) -> dict[str, Any] | None:
    step = WorkflowStep.objects.filter(workflow_id=workflow_id, pk=step_id).first()
    if step is None:
        return None
    detail = step_payload(step)
    del detail["old_state"]
    error = step.last_error
    detail["last_error"] = error if len(error) <= ERROR_CHARS else error[:ERROR_CHARS] + "…"
    detail["scheduled_at"] = step.scheduled_at.isoformat() if step.scheduled_at else None
    detail["queue"] = step.queue
    detail["task_name"] = step.task_name
    detail["explanation"] = explain(step).as_dict()
    return detail
