"""OpenTelemetry traces of workflows (the `otel` extra: opentelemetry-api).

A workflow is one trace: its root is the span of the insert (a child of whatever span was
current then, so a workflow started in a web request joins the request's trace); each
step attempt is a span under it, linked to the spans of the attempts that completed its
dependencies, with its queue wait, attempt, outcome and error. The span contexts cross
processes through two columns: Workflow.trace_parent (a W3C traceparent) and
Step.trace_span (the span id of the step's latest attempt).

Cost: nothing when opentelemetry-api is not installed or no SDK records spans (the
`tracing_enabled()` check is a function call); when spans are recorded, a step attempt
adds two statements (its dependencies and its queue wait are read, its span id written)
to the two it always costs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from django.db import connections

from baton import signals
from baton.execution.deferrer import database_alias
from baton.graph.states import StepState, WorkflowState

logger = logging.getLogger("baton")

try:  # the otel extra
    from opentelemetry import trace as _trace
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
except ImportError:  # pragma: no cover - exercised on installs without the extra
    _trace = None  # type: ignore[assignment]

TRACER_NAME = "baton"


def tracing_enabled() -> bool:
    """Whether spans would be recorded (opentelemetry-api and an SDK provider)."""
    if _trace is None:
        return False
    provider = _trace.get_tracer_provider()
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _tracer() -> Any:
    assert _trace is not None
    return _trace.get_tracer(TRACER_NAME)


def traceparent(span: Any) -> str | None:
    """The W3C traceparent of a recording span, or None."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _parse_traceparent(value: str | None) -> Any:
    """The span context a traceparent names, as a remote parent, or None."""
    if not value or _trace is None:
        return None
    try:
        _version, trace_id, span_id, flags = value.split("-")
        context = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(flags, 16)),
        )
    except ValueError:
        return None
    return context if context.is_valid else None


def _remote(context: Any) -> Any:
    assert _trace is not None
    return _trace.set_span_in_context(_trace.NonRecordingSpan(context))


@contextlib.contextmanager
def insert_span(workflow_name: str, workflow_id: Any, steps: int) -> Iterator[str | None]:
    """The root span of a workflow, around its insert; yields its traceparent (None when
    nothing is recorded)."""
    if not tracing_enabled():
        yield None
        return
    with _tracer().start_as_current_span(
        f"baton.workflow {workflow_name}",
        kind=SpanKind.PRODUCER,
        attributes={
            "baton.workflow.id": str(workflow_id),
            "baton.workflow.name": workflow_name,
            "baton.workflow.steps": steps,
        },
    ) as span:
        yield traceparent(span)


def start_attempt(claimed: Any, job: Any) -> Any:
    """The span of a claimed attempt (not ended), or None when nothing is recorded."""
    if not tracing_enabled():
        return None
    step = claimed.step
    parent = _parse_traceparent(claimed.workflow.trace_parent)
    links = [
        Link(SpanContext(trace_id=parent.trace_id, span_id=int(span_id, 16), is_remote=True))
        for span_id in job._dependency_spans()
        if parent is not None
    ]
    queue_wait = _queue_wait_seconds(claimed)
    attributes: dict[str, Any] = {
        "baton.workflow.id": str(step.workflow_id),
        "baton.step.name": step.name,
        "baton.step.id": step.id,
        "baton.step.attempt": claimed.attempt,
        "baton.step.max_attempts": step.max_attempts,
        "baton.step.task": step.task_name,
        "messaging.destination.name": step.queue,
    }
    if queue_wait is not None:
        attributes["baton.step.queue_wait_s"] = queue_wait
    span = _tracer().start_span(
        f"baton.step {step.name}",
        context=_remote(parent) if parent is not None else None,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )
    _store_span(claimed, f"{span.get_span_context().span_id:016x}")
    return span


def _queue_wait_seconds(claimed: Any) -> float | None:
    """From the job's creation (its first Procrastinate event) to the claim."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            "SELECT min(at) FROM procrastinate_events WHERE job_id = %s", [claimed.job_id]
        )
        row = cursor.fetchone()
    started = claimed.step.started_at
    if row is None or row[0] is None or started is None:
        return None
    return float(max(0.0, (started - row[0]).total_seconds()))


def _store_span(claimed: Any, span_id: str) -> None:
    """Where the dependents' spans find this attempt's (fenced: only this attempt's)."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(
            "UPDATE baton_step SET trace_span = %s "
            "WHERE id = %s AND job_id = %s AND attempt = %s AND state = %s",
            [span_id, claimed.step.id, claimed.job_id, claimed.attempt, StepState.EXECUTING],
        )


@contextlib.contextmanager
def current(span: Any) -> Iterator[None]:
    """Make `span` current while perform() runs, so its own spans are children."""
    if span is None or _trace is None:
        yield
        return
    with _trace.use_span(span, end_on_exit=False):
        yield


def end_attempt(span: Any, outcome: Any, value: Any) -> None:
    """End an attempt's span with its outcome (and error)."""
    if span is None:
        return
    kind = type(outcome).__name__.lower()  # completed, rescheduled, discarded
    if kind == "rescheduled":
        kind = "snoozed" if outcome.snooze else "retryable"
    span.set_attribute("baton.step.outcome", kind)
    if isinstance(value, BaseException):
        span.record_exception(value)
    if kind in ("retryable", "discarded"):
        description = getattr(outcome, "error", "") or getattr(outcome, "reason", "")
        span.set_status(Status(StatusCode.ERROR, description[:500]))
    span.end()


def on_workflow_finished(sender: Any, workflow: Any, state: str, **kwargs: Any) -> None:
    """A zero-length span under the workflow's root saying how it ended."""
    if not tracing_enabled():
        return
    parent = _parse_traceparent(getattr(workflow, "trace_parent", None))
    if parent is None:
        return
    span = _tracer().start_span(
        f"baton.workflow {workflow.name} {state}",
        context=_remote(parent),
        attributes={
            "baton.workflow.id": str(workflow.pk),
            "baton.workflow.state": state,
            "baton.workflow.failed_steps": ", ".join(map(str, workflow.failed_steps))[:500],
        },
    )
    if state == WorkflowState.FAILED:
        span.set_status(Status(StatusCode.ERROR, workflow.reason or "failed"))
    span.end()


def connect() -> None:
    signals.workflow_finished.connect(on_workflow_finished, dispatch_uid="baton.tracing.workflow")
