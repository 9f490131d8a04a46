"""Waking the local worker when baton enqueues a job, instead of waiting for its poll.

Procrastinate wakes workers with LISTEN/NOTIFY on INSERT only; a job scheduled for later
(a snooze, a retry's backoff) waits for the polling interval. When the step that
scheduled it runs under baton's worker, that worker arms a timer for the due time.
Outside baton's worker these calls do nothing, and polling remains the fallback.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_wake: Callable[[], None] | None = None

# A scheduled job becomes fetchable when the database clock passes scheduled_at;
# arrive a little late rather than early.
_MARGIN_SECONDS = 0.01


def attach(loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
    global _loop, _wake
    with _lock:
        _loop, _wake = loop, wake


def detach() -> None:
    global _loop, _wake
    with _lock:
        _loop, _wake = None, None


def job_due(at: datetime.datetime | None) -> None:
    """A job becomes due now (at=None) or at `at`; wake the local worker then."""
    with _lock:
        loop, wake = _loop, _wake
    if loop is None or wake is None or loop.is_closed():
        return
    delay = 0.0
    if at is not None:
        delay = max(0.0, (at - datetime.datetime.now(datetime.UTC)).total_seconds())
        delay += _MARGIN_SECONDS
    try:
        if delay <= 0:
            loop.call_soon_threadsafe(wake)
        else:
            loop.call_soon_threadsafe(loop.call_later, delay, wake)
    except RuntimeError:  # the loop closed in between
        pass
