"""Debug capture: what a debug workflow's steps sent to a model, got back, and read from
upstream, stored per step and attempt (baton.models.DebugRecord), shown in the admin and
pruned by the sweep after ``BATON["DEBUG_MAX_AGE"]``.

A step calls these from perform()::

    handle = baton.debug.log_request(job, request)     # before the model call
    response = client.chat.completions.create(**request)
    baton.debug.log_response(handle, response)         # after it

    baton.debug.log_upstream_context(job, job.results())

When is anything stored: only when ``job.debug`` is true, that is the workflow was built
with ``baton.new(..., debug=True)`` or ``BATON["DEBUG"]`` is on. Otherwise the calls
store nothing and run no query (``job.debug`` reads the workflow row the claim loaded).

What is stored: one record per call, with the step, its workflow and the attempt; the
payload as JSON. SDK objects are converted (pydantic ``model_dump(mode="json")``,
``to_dict()``, dataclasses, sets, bytes, decimals, dates), anything else nested becomes
``{"repr": ...}``, and a payload that cannot be encoded at all is stored as
``{"repr": repr(payload)}``. A payload over ``MAX_RECORD_BYTES`` of JSON is stored as
``{"truncated": true, "size_bytes": <its size>, "preview": <the start of its JSON>}``. A
response record names its request (``DebugRecord.request``) through the handle.

Capture never fails a step: every error (a payload that will not serialise, a database
error) is logged as a warning on the ``baton`` logger, and ``log_request`` then returns
the null handle, which ``log_response`` ignores (as it ignores ``None``).

Where the write happens: always on one background thread of the worker process
(``baton-debug``), with its own database connection, opened and closed as Django's
``CONN_MAX_AGE`` says (``close_old_connections`` around each write). One thread, so
records are written in call order and a response always follows its request. Not on the
caller's thread, because:

- a synchronous LLMStep's perform() runs in a fresh thread per attempt (the step's
  ``timeout``): an ORM write there would open a connection nobody closes;
- a write on the caller's connection would join the caller's transaction, and a rolled
  back attempt would lose the very records that explain it;
- on a running event loop (an async perform()) the ORM raises SynchronousOnlyOperation,
  and the loop must not wait for the database.

So:

- the synchronous functions, called off any event loop (a sync perform()), wait for the
  write (up to ``WRITE_WAIT`` seconds): the record is stored when they return;
- ``alog_request`` / ``alog_response`` / ``alog_upstream_context``, awaited in an async
  perform(), await the same write: the record is stored when the await returns;
- the synchronous functions called on a running event loop return at once; the record
  is stored shortly after, not necessarily before the step's outcome is recorded, and a
  worker killed in that moment loses what was still queued.

One thread writes a few hundred records a second; capture is for debugging, not for
every call of a production fleet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import close_old_connections

from baton.execution.deferrer import database_alias

logger = logging.getLogger("baton")

__all__ = [
    "MAX_RECORD_BYTES",
    "NULL_HANDLE",
    "WRITE_WAIT",
    "DebugHandle",
    "alog_request",
    "alog_response",
    "alog_upstream_context",
    "log_request",
    "log_response",
    "log_upstream_context",
    "to_json_payload",
]

#: Largest payload stored whole, in bytes of JSON; bigger ones keep a preview.
MAX_RECORD_BYTES = 256 * 1024
#: Seconds a synchronous call off the event loop waits for its record to be written (a
#: response, for its request's) before going on without it.
WRITE_WAIT = 10.0

_REQUEST = "request"
_RESPONSE = "response"
_UPSTREAM_CONTEXT = "upstream_context"


@dataclasses.dataclass(frozen=True, eq=False)
class DebugHandle:
    """What log_request returns and log_response takes: the request record and the step
    attempt it belongs to. The null handle (``NULL_HANDLE``, falsy) stands for "nothing
    was captured"; log_response ignores it."""

    workflow_id: Any = None
    step_id: int | None = None
    attempt: int = 0
    _request_id: int | None = None
    # Set instead of _request_id while the writer thread has not written the request (a
    # synchronous call on a running event loop).
    _pending: concurrent.futures.Future[int | None] | None = dataclasses.field(
        default=None, repr=False
    )

    @property
    def captured(self) -> bool:
        """Whether this handle belongs to a captured request."""
        return self.step_id is not None

    def __bool__(self) -> bool:
        return self.captured

    @property
    def request_id(self) -> int | None:
        """The request record's id; None for the null handle, a request whose write
        failed, or one the background thread has not written yet."""
        if self._pending is None:
            return self._request_id
        if not self._pending.done() or self._pending.exception() is not None:
            return None
        return self._pending.result()

    def _wait_request_id(self, timeout: float) -> int | None:
        if self._pending is None:
            return self._request_id
        try:
            return self._pending.result(timeout=timeout)
        except Exception:
            return None


#: The handle of a request that was not captured.
NULL_HANDLE: DebugHandle = DebugHandle()


@dataclasses.dataclass(frozen=True)
class _Record:
    """A record ready to write: its attempt, its kind and its payload, already JSON."""

    workflow_id: Any
    step_id: int
    attempt: int
    kind: str
    payload: Any


# ------------------------------------------------------------------------- public API
def log_request(job: Any, payload: Any) -> DebugHandle:
    """Store what this attempt sends to a model (kind "request") when ``job.debug``;
    return the handle to pass to log_response (the null handle when nothing is stored).
    Never raises."""
    try:
        record = _record_for(job, _REQUEST, payload)
        if record is None:
            return NULL_HANDLE
        written = _submit(record, None)
        if _on_event_loop():
            return _handle(record, pending=written)
        try:
            request_id = written.result(timeout=WRITE_WAIT)
        except concurrent.futures.TimeoutError:
            return _handle(record, pending=written)  # written later; the response waits
        return NULL_HANDLE if request_id is None else _handle(record, request_id=request_id)
    except Exception:
        logger.warning("baton: debug capture of a request failed; nothing stored", exc_info=True)
        return NULL_HANDLE


def log_response(handle: DebugHandle | None, response: Any) -> None:
    """Store the model's response (kind "response") to the request of ``handle``, in its
    step attempt. Does nothing for None or the null handle. Never raises."""
    try:
        if not isinstance(handle, DebugHandle) or not handle.captured:
            return
        _settle(_submit(_response_record(handle, response), handle))
    except Exception:
        logger.warning("baton: debug capture of a response failed; nothing stored", exc_info=True)


def log_upstream_context(job: Any, results: Any) -> None:
    """Store what this attempt read from its dependencies (kind "upstream_context"),
    such as ``job.results()``, when ``job.debug``. Never raises."""
    try:
        record = _record_for(job, _UPSTREAM_CONTEXT, results)
        if record is not None:
            _settle(_submit(record, None))
    except Exception:
        logger.warning(
            "baton: debug capture of upstream context failed; nothing stored", exc_info=True
        )


async def alog_request(job: Any, payload: Any) -> DebugHandle:
    """log_request for an async perform(): the record is stored when the await returns.
    Never raises (a cancellation goes through)."""
    try:
        record = _record_for(job, _REQUEST, payload)
        if record is None:
            return NULL_HANDLE
        request_id = await asyncio.wrap_future(_submit(record, None))
    except Exception:
        logger.warning("baton: debug capture of a request failed; nothing stored", exc_info=True)
        return NULL_HANDLE
    if request_id is None:  # the write failed, and said so
        return NULL_HANDLE
    return _handle(record, request_id=request_id)


async def alog_response(handle: DebugHandle | None, response: Any) -> None:
    """log_response for an async perform(): stored when the await returns."""
    try:
        if not isinstance(handle, DebugHandle) or not handle.captured:
            return
        await asyncio.wrap_future(_submit(_response_record(handle, response), handle))
    except Exception:
        logger.warning("baton: debug capture of a response failed; nothing stored", exc_info=True)


async def alog_upstream_context(job: Any, results: Any) -> None:
    """log_upstream_context for an async perform(): stored when the await returns."""
    try:
        record = _record_for(job, _UPSTREAM_CONTEXT, results)
        if record is not None:
            await asyncio.wrap_future(_submit(record, None))
    except Exception:
        logger.warning(
            "baton: debug capture of upstream context failed; nothing stored", exc_info=True
        )


# ------------------------------------------------------------------ payloads to JSON
def to_json_payload(value: Any, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """``value`` as the JSON a DebugRecord stores (see the module docstring); never
    raises."""
    try:
        text = json.dumps(value, default=_plain, allow_nan=False, ensure_ascii=False)
    except Exception:  # circular, NaN, keys JSON has no form for, a broken converter
        text = json.dumps({"repr": _safe_repr(value, max_bytes)}, ensure_ascii=False)
    # PostgreSQL's jsonb has no form for U+0000; replace it where it is an escape
    # sequence of its own (an even run of backslashes before it is escaped backslashes).
    text = _NUL_ESCAPE.sub(r"\1\\ufffd", text)
    size = len(text.encode())
    if size <= max_bytes:
        return json.loads(text)
    return _truncated(text, size, max_bytes)


_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _truncated(text: str, size: int, max_bytes: int) -> dict[str, Any]:
    budget = max_bytes
    while True:
        preview = text.encode()[:budget].decode("utf-8", "ignore")
        marker = {"truncated": True, "size_bytes": size, "preview": preview}
        # The preview is stored as a JSON string, so its quotes and backslashes grow.
        stored = len(json.dumps(marker, ensure_ascii=False).encode())
        if stored <= max_bytes or budget <= 0:
            return marker
        budget -= max(stored - max_bytes, 64)


def _plain(value: Any) -> Any:
    """json.dumps' default: a JSON-able form of what json cannot encode itself."""
    if not isinstance(value, type):
        model_dump = getattr(value, "model_dump", None)  # pydantic v2: the SDKs' types
        if callable(model_dump):
            with contextlib.suppress(Exception):
                dumped = model_dump(mode="json")
                if isinstance(dumped, dict | list):
                    return dumped
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            with contextlib.suppress(Exception):
                dumped = to_dict()
                if isinstance(dumped, dict | list):
                    return dumped
        if dataclasses.is_dataclass(value):
            # One level; json.dumps converts the fields in turn.
            return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    return {"repr": _safe_repr(value, MAX_RECORD_BYTES)}


def _safe_repr(value: Any, limit: int) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} object (repr failed)>"
    return text if len(text) <= limit else text[:limit] + "…"


# ---------------------------------------------------------------------------- writing
def _record_for(job: Any, kind: str, payload: Any) -> _Record | None:
    """The record to write, or None when the job's workflow does not capture."""
    if not job.debug:
        return None
    return _Record(
        workflow_id=job.workflow_id,
        step_id=int(job.step_id),
        attempt=int(job.attempt),
        kind=kind,
        payload=to_json_payload(payload),
    )


def _response_record(handle: DebugHandle, response: Any) -> _Record:
    assert handle.step_id is not None
    return _Record(
        workflow_id=handle.workflow_id,
        step_id=handle.step_id,
        attempt=handle.attempt,
        kind=_RESPONSE,
        payload=to_json_payload(response),
    )


def _handle(
    record: _Record,
    *,
    request_id: int | None = None,
    pending: concurrent.futures.Future[int | None] | None = None,
) -> DebugHandle:
    return DebugHandle(
        workflow_id=record.workflow_id,
        step_id=record.step_id,
        attempt=record.attempt,
        _request_id=request_id,
        _pending=pending,
    )


def _submit(record: _Record, answers: DebugHandle | None) -> concurrent.futures.Future[int | None]:
    """Hand the record to the writer thread; the future is its id (None if it failed)."""
    return _background().submit(_write_logged, record, answers)


def _settle(written: concurrent.futures.Future[int | None]) -> None:
    """Off the event loop, wait for the write (its errors were logged by the writer)."""
    if not _on_event_loop():
        with contextlib.suppress(concurrent.futures.TimeoutError):
            written.result(timeout=WRITE_WAIT)


def _write_logged(record: _Record, answers: DebugHandle | None) -> int | None:
    """On the writer thread: insert the record (a response linked to the request of
    `answers`) and return its id; log, never raise, an error."""
    close_old_connections()  # one broken by a database restart is replaced
    try:
        request_id = None if answers is None else answers._wait_request_id(WRITE_WAIT)
        return _write(record, request_id)
    except Exception:
        logger.warning(
            "baton: debug capture (%s) of step %s failed; nothing stored",
            record.kind.replace("_", " "),
            record.step_id,
            exc_info=True,
        )
        return None
    finally:
        close_old_connections()


def _write(record: _Record, request_id: int | None) -> int:
    # App loading: baton.debug, public, may be imported before the apps are ready.
    from baton.models import DebugRecord

    created = DebugRecord.objects.using(database_alias()).create(
        workflow_id=record.workflow_id,
        step_id=record.step_id,
        attempt=record.attempt,
        kind=record.kind,
        request_id=request_id,
        payload=record.payload,
    )
    return int(created.pk)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_writer: concurrent.futures.ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _background() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread that writes every record: one, so that records are written in call
    order (a response after its request)."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="baton-debug"
            )
        return _writer


def _forget_writer() -> None:  # in a forked child the parent's thread does not exist
    global _writer, _writer_lock
    _writer = None
    _writer_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writer)


def _flush(timeout: float = 10.0) -> None:
    """Wait until the background thread has written what was handed to it (tests)."""
    with _writer_lock:
        writer = _writer
    if writer is not None:
        writer.submit(lambda: None).result(timeout=timeout)
