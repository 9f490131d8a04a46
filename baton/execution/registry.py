"""The registered step classes (task name -> Step subclass) and their class options.

Kept apart from baton.execution.step so that what validates and inserts workflows
(insert, append, graft) needs no import of the task wrapper, and the wrapper can use
them: no import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from baton.execution.step import Step

#: task name -> Step subclass, for validation and the worker.
registry: dict[str, type[Step]] = {}


def unstorable(text: str) -> bool:
    """Whether PostgreSQL's text columns refuse `text` (NUL, unpaired surrogates)."""
    return "\x00" in text or any("\ud800" <= char <= "\udfff" for char in text)


def is_registered(task_name: str) -> bool:
    return task_name in registry


# Procrastinate notifies on the channel "procrastinate_queue_v1#<queue>", and Postgres
# truncates channel names past 63 bytes.
MAX_QUEUE_BYTES = 40


def option_problems(options: dict[str, Any]) -> list[str]:
    """What is wrong with a step's queue / priority / max_attempts / lock, if anything."""
    problems = []
    queue = options.get("queue")
    if not isinstance(queue, str) or not queue or len(queue.encode()) > MAX_QUEUE_BYTES:
        problems.append(
            f"queue must be a non-empty string of at most {MAX_QUEUE_BYTES} bytes, got {queue!r}"
        )
    priority = options.get("priority")
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not -(2**31) <= priority < 2**31
    ):
        problems.append(f"priority must be an int between -2**31 and 2**31-1, got {priority!r:.40}")
    attempts = options.get("max_attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        problems.append(f"max_attempts must be an int >= 1, got {attempts!r}")
    lock = options.get("lock")
    if lock is not None and (not isinstance(lock, str) or len(lock) > 255 or unstorable(lock)):
        problems.append(
            f"lock must be None or a string of at most 255 characters, without NUL "
            f"characters or unpaired surrogates, got {lock!r:.60}"
        )
    return problems
