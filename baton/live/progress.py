"""Progress buckets (completed, failed, cancelled, running, waiting): the bars of the list
page and of group nodes, and the one state a collapsed group shows."""

from __future__ import annotations

from dataclasses import dataclass

from baton.graph.states import StepState

# The legend, in the order a step usually moves through them.
STEP_STATES = [state.value for state in StepState]

# The buckets of progress bars and group nodes, in the order they are drawn.
BUCKETS = ("completed", "failed", "cancelled", "running", "waiting")
_BUCKET_OF = {
    StepState.COMPLETED: "completed",
    StepState.DISCARDED: "failed",
    StepState.CANCELLED: "cancelled",
    StepState.EXECUTING: "running",
}


def bucket(state: str) -> str:
    """Where a step state counts in a progress bar: waiting holds every queued state."""
    return _BUCKET_OF.get(StepState(state), "waiting") if state in STEP_STATES else "waiting"


def bucket_counts(states: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(BUCKETS, 0)
    for state in states:
        counts[bucket(state)] += 1
    return counts


@dataclass(frozen=True)
class Bar:
    """A progress bar: one segment per non-empty bucket, widths in percent."""

    segments: list[tuple[str, int, float]]  # (bucket, count, percent)
    text: str  # "3 completed · 1 failed · 2 waiting"


def progress_bar(counts: dict[str, int]) -> Bar:
    total = sum(counts.values())
    segments = [
        (name, counts[name], 100 * counts[name] / total if total else 0.0)
        for name in BUCKETS
        if counts.get(name)
    ]
    text = " · ".join(f"{count:,} {name}" for name, count, _ in segments) or "no steps"
    return Bar(segments, text)


def group_state(counts: dict[str, int]) -> str:
    """The one state a collapsed group node shows: the most urgent among its steps."""
    if counts["running"]:
        return "executing"
    if counts["failed"]:
        return "discarded"
    if counts["waiting"]:
        return "waiting" if not counts["completed"] else "available"
    if counts["cancelled"]:
        return "cancelled"
    return "completed"
