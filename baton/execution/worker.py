"""baton's worker: Procrastinate's, with hand-offs that never wait for a poll.

Two gaps in Procrastinate 3.x's worker make a job deferred by a running job often wait
a whole polling interval:
- a NOTIFY that arrives while a fetch is in flight is lost: the worker clears its
  wake-up event after the fetch returns, whether or not it was set again meanwhile;
- LISTEN/NOTIFY fires on INSERT only, so a job scheduled for later (snooze, backoff)
  is found by polling.
`_StickyEvent` keeps a wake-up that arrived during a fetch, and `baton.execution.wakeup`
arms a timer for each job baton schedules from this process.
"""

from __future__ import annotations

import asyncio
import typing
from typing import Any

from procrastinate import worker as procrastinate_worker

from baton.execution import wakeup

# Polling remains the fallback for jobs scheduled by other processes.
DEFAULT_POLLING_INTERVAL = 1.0


class _StickyEvent(asyncio.Event):
    """An Event whose clear() is ignored if set() was called since the last wait()."""

    def __init__(self) -> None:
        super().__init__()
        self._sets = 0
        self._seen = 0

    def set(self) -> None:
        self._sets += 1
        super().set()

    async def wait(self) -> typing.Literal[True]:
        await super().wait()
        self._seen = self._sets
        return True

    def clear(self) -> None:
        if self._sets == self._seen:
            super().clear()


class BatonWorker(procrastinate_worker.Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fetch_job_polling_interval", DEFAULT_POLLING_INTERVAL)
        super().__init__(*args, **kwargs)
        self._new_job_event = _StickyEvent()

    def _wake(self) -> None:
        self._new_job_event.set()

    async def run(self) -> None:
        wakeup.attach(asyncio.get_running_loop(), self._wake)
        try:
            await super().run()  # type: ignore[no-untyped-call]
        finally:
            wakeup.detach()


async def run_worker(app: Any, **options: Any) -> None:
    """Run a BatonWorker on `app` (already opened) until it is stopped."""
    final = {**app.worker_defaults, **options}
    worker = BatonWorker(app=app, **final)
    await worker.run()
