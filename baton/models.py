"""Workflows, steps, dependency edges, results and the LLM ledger: the state machine on disk.

State changes happen in baton.execution (never `queryset.update(state=...)` elsewhere),
so that every transition is locked, counted and announced.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.db import models
from django.db.models import Q
from django.utils import timezone

from baton.graph.states import (
    QUEUED_STEP_STATES,
    TERMINAL_STEP_STATES,
    StepState,
    WorkflowState,
)

# Costs in USD: exact decimals, down to 1e-15 USD (a token of the cheapest models costs
# around 1e-8).
COST_DIGITS = 30
COST_PLACES = 15


def _choices(enum: type[StepState] | type[WorkflowState]) -> list[tuple[str, str]]:
    return [(member.value, member.value.capitalize()) for member in enum]


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    def executing(self) -> WorkflowQuerySet:
        return self.filter(state=WorkflowState.EXECUTING)

    def finished(self) -> WorkflowQuerySet:
        return self.exclude(state=WorkflowState.EXECUTING)


class Workflow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    state = models.CharField(
        max_length=16, choices=_choices(WorkflowState), default=WorkflowState.EXECUTING
    )
    ignore_cancelled = models.BooleanField(default=False)
    ignore_discarded = models.BooleanField(default=False)
    debug = models.BooleanField(default=False)
    budget_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    step_count = models.PositiveIntegerField(default=0)
    # Counted down as steps become terminal, under the workflow row's lock: the step that
    # brings it to zero finishes the workflow, exactly once.
    unfinished_steps = models.IntegerField(default=0)
    # Names of the steps that ended discarded or cancelled, for the outcome.
    failed_steps = models.JSONField(default=list, blank=True)
    # While the workflow executes, no other executing workflow has the same key
    # (baton_wf_unique_key_executing); a finished one no longer holds it.
    unique_key = models.CharField(max_length=255, null=True, blank=True)
    # The W3C traceparent of the span of its insert (baton.tracing), when one was recorded.
    trace_parent = models.CharField(max_length=55, null=True, blank=True)
    # Why the workflow failed, beyond its failed steps ("budget exceeded: ...").
    reason = models.TextField(blank=True, default="", db_default="")
    # The ledger's running totals (baton.llm), kept by the statements that record usage:
    # what the budget check and the list pages read without summing the ledger.
    # NULL: nothing priced yet (unknown is never 0).
    cost_usd = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    unpriced_calls = models.PositiveIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="baton_wf_state_created"),
            models.Index(fields=["name", "created_at"], name="baton_wf_name_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(unfinished_steps__gte=0), name="baton_wf_unfinished_gte_0"
            ),
            models.UniqueConstraint(
                fields=["unique_key"],
                condition=Q(state=WorkflowState.EXECUTING) & Q(unique_key__isnull=False),
                name="baton_wf_unique_key_executing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def is_finished(self) -> bool:
        return self.state != WorkflowState.EXECUTING

    @property
    def progress(self) -> float:
        """Fraction of steps that reached a terminal state."""
        if not self.step_count:
            return 1.0
        return (self.step_count - self.unfinished_steps) / self.step_count

    def cancel(self) -> int:
        """Cancel pending steps and ask running ones to abort. Returns steps cancelled."""
        # A cycle otherwise: the engine works on these models (and loads with them).
        from baton.execution.control import cancel_workflow

        return cancel_workflow(self)

    def retry(self, steps: Sequence[str] | None = None) -> int:
        """Re-run discarded and cancelled steps (and what they cancelled), keeping
        completed results; with `steps`, only those steps and what they cancelled."""
        from baton.execution.control import retry_workflow  # a cycle otherwise (above)

        return retry_workflow(self, steps)

    async def acancel(self) -> int:
        return await sync_to_async(self.cancel)()

    async def aretry(self, steps: Sequence[str] | None = None) -> int:
        return await sync_to_async(self.retry)(steps)


class StepQuerySet(models.QuerySet["WorkflowStep"]):
    def terminal(self) -> StepQuerySet:
        return self.filter(state__in=TERMINAL_STEP_STATES)

    def unfinished(self) -> StepQuerySet:
        return self.exclude(state__in=TERMINAL_STEP_STATES)

    def queued(self) -> StepQuerySet:
        return self.filter(state__in=QUEUED_STEP_STATES)


class WorkflowStep(models.Model):
    """A step of a workflow, as a row: its state, attempts, job and timings.

    Not `baton.Step`, the class users subclass to write what a step does: this is one
    instance of it in one workflow. Its table is `baton_step`, and people see "step".
    """

    id = models.BigAutoField(primary_key=True)
    # Indexed by baton_step_unique_name, whose first column it is.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="steps", db_index=False
    )
    name = models.CharField(max_length=255)
    task_name = models.CharField(max_length=255)
    args = models.JSONField(default=dict, blank=True)
    group = models.CharField(max_length=200, null=True, blank=True)
    group_key = models.CharField(max_length=200, null=True, blank=True)
    state = models.CharField(max_length=16, choices=_choices(StepState), default=StepState.WAITING)
    queue = models.CharField(max_length=100, default="default")
    priority = models.IntegerField(default=0)
    lock = models.CharField(max_length=255, null=True, blank=True)
    max_attempts = models.PositiveIntegerField(default=1)
    ignore_cancelled = models.BooleanField(default=False)
    ignore_discarded = models.BooleanField(default=False)
    deps_total = models.PositiveIntegerField(default=0)
    # Counted down as deps complete (or fail under an ignore policy); the completion that
    # brings it to zero enqueues the step, exactly once.
    deps_pending = models.IntegerField(default=0)
    # Attempts begun; a snooze gives its attempt back.
    attempt = models.PositiveIntegerField(default=0)
    snoozes = models.PositiveIntegerField(default=0)
    # Bumped on every state change under the row lock: observers that receive
    # transitions out of order (several workers broadcast at once) keep the highest.
    version = models.PositiveIntegerField(default=0)
    # The Procrastinate job allowed to run this step; any other job for it is stale.
    job_id = models.BigIntegerField(null=True, blank=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Why the step was cancelled or discarded ("dep parse discarded", "budget exceeded").
    reason = models.TextField(blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    # The span id of its latest attempt (baton.tracing), for its dependents' links.
    trace_span = models.CharField(max_length=16, null=True, blank=True)
    # Ledger totals over all of this step's attempts (failed ones spent money too).
    cost_usd = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    unpriced_calls = models.PositiveIntegerField(default=0, db_default=0)
    # The step whose job.graft() added this one (None: inserted with the workflow or
    # appended from outside). Its chain gives a graft's depth (GRAFT_MAX_DEPTH); the
    # admin and `baton show` draw grafted steps under it. No database-level key, as for
    # edges: COPY of a 10,000-step graft checks no keys, and the step goes with its
    # workflow. Last of the fields, as the migration appends its column: statements
    # read `s.*` in the order of STEP_COLUMNS. A short column name: it is in every
    # per-step statement, which must stay under psycopg's cached length.
    grafted_by = models.ForeignKey(
        "self",
        on_delete=models.DO_NOTHING,
        related_name="grafted",
        null=True,
        blank=True,
        db_constraint=False,
        db_index=False,
        db_column="grafted_by",
    )

    objects = StepQuerySet.as_manager()

    class Meta:
        db_table = "baton_step"
        verbose_name = "step"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "name"], name="baton_step_unique_name"),
            models.CheckConstraint(
                condition=Q(deps_pending__gte=0), name="baton_step_pending_gte_0"
            ),
        ]
        # Every state change rewrites the row's entry in every index whose columns (or
        # predicate) it touches, twice per step: few indexes, and partial ones, keep the
        # per-step cost down. Steps of a workflow: baton_step_unique_name; unfinished
        # steps by workflow and state (cancel, the sweep): this partial index, which a
        # completed step leaves.
        indexes = [
            models.Index(
                fields=["workflow", "state"],
                name="baton_step_unfinished",
                condition=~Q(state__in=sorted(TERMINAL_STEP_STATES)),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.state}]"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STEP_STATES

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    def result_value(self) -> Any:
        """The stored result, or None when the step stored none."""
        try:
            return self.result.value
        except StepResult.DoesNotExist:
            return None


class StepDependency(models.Model):
    """An edge: `downstream` waits for `upstream`."""

    # No database-level foreign keys on edges: baton's insert is their only writer and
    # prune their only deleter, and checking ~3 keys per edge at commit was half the time
    # of inserting a 10,000-step workflow.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="edges", db_constraint=False
    )
    upstream = models.ForeignKey(  # indexed by baton_edge_unique, its first column
        WorkflowStep,
        on_delete=models.CASCADE,
        related_name="downstream_edges",
        db_constraint=False,
        db_index=False,
    )
    downstream = models.ForeignKey(
        WorkflowStep, on_delete=models.CASCADE, related_name="upstream_edges", db_constraint=False
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["upstream", "downstream"], name="baton_edge_unique"),
            models.CheckConstraint(
                condition=~Q(upstream=models.F("downstream")), name="baton_edge_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.upstream_id} -> {self.downstream_id}"


class StepResult(models.Model):
    """A completed step's return value, kept apart so hot step rows stay small."""

    step = models.OneToOneField(
        WorkflowStep, on_delete=models.CASCADE, primary_key=True, related_name="result"
    )
    value = models.JSONField(null=True)
    size_bytes = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of step {self.step_id}"


class LLMUsage(models.Model):
    """One model call in the ledger: who made it, with which model, what it used and cost.

    Written by the statement that records the attempt's outcome (baton.llm.ledger), once
    per (step, job, attempt, call key): a call recorded twice in an attempt counts once.
    """

    id = models.BigAutoField(primary_key=True)
    # No database-level foreign keys, as for edges: the attempt's own statement is the
    # only writer and prune the only deleter.
    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="llm_usage",
        db_constraint=False,
        db_index=False,  # baton_usage_workflow_step leads with it
    )
    step = models.ForeignKey(
        WorkflowStep,
        on_delete=models.CASCADE,
        related_name="llm_usage",
        db_constraint=False,
        db_index=False,  # baton_usage_unique_call leads with it
    )
    attempt = models.PositiveIntegerField()
    job_id = models.BigIntegerField()
    call_key = models.CharField(max_length=200)
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # NULL: the pricing did not know the model; never guessed, never 0.
    cost_usd = models.DecimalField(
        max_digits=COST_DIGITS, decimal_places=COST_PLACES, null=True, blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "LLM call"
        verbose_name_plural = "LLM calls"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "job_id", "attempt", "call_key"], name="baton_usage_unique_call"
            ),
        ]
        # workflow_totals / steps_for_workflow; cost_by_model(since, until).
        indexes = [
            models.Index(fields=["workflow", "step"], name="baton_usage_workflow_step"),
            models.Index(fields=["created_at", "model"], name="baton_usage_created_model"),
        ]

    def __str__(self) -> str:
        return f"{self.model} call of step {self.step_id} (attempt {self.attempt})"


class DebugKind(models.TextChoices):
    REQUEST = "request", "request"
    RESPONSE = "response", "response"
    UPSTREAM_CONTEXT = "upstream_context", "upstream context"


class DebugRecord(models.Model):
    """What a debug workflow's step sent to a model, got back, and read from upstream."""

    id = models.BigAutoField(primary_key=True)
    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="debug_records",
        db_constraint=False,
        db_index=False,  # baton_debug_workflow_step leads with it
    )
    step = models.ForeignKey(
        WorkflowStep,
        on_delete=models.CASCADE,
        related_name="debug_records",
        db_constraint=False,
        db_index=False,
    )
    attempt = models.PositiveIntegerField()
    kind = models.CharField(max_length=20, choices=DebugKind.choices)
    # A response names the request it answers (the handle log_request returned).
    request = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="responses"
    )
    payload = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["workflow", "step"], name="baton_debug_workflow_step"),
            models.Index(fields=["created_at"], name="baton_debug_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of step {self.step_id} (attempt {self.attempt})"


class WorkerRegistration(models.Model):
    """What a `manage.py baton worker` listens on, beside Procrastinate's own row for it
    (procrastinate_workers: id and heartbeat only), so that baton can tell which queues
    have a live worker (baton.explain). Written when the worker registers."""

    # Procrastinate's worker id; the row is live while that worker's heartbeat is.
    worker_id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=200, blank=True, default="")
    hostname = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    # Empty: every queue.
    queues = models.JSONField(default=list, blank=True)
    # The task names the worker can run (its registered steps and tasks); None for a row
    # written before baton recorded them: unknown.
    tasks = models.JSONField(null=True, blank=True, default=None)
    concurrency = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        queues = ", ".join(self.queues) or "all queues"
        return f"worker {self.worker_id} ({queues})"
