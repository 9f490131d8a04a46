"""The Django admin for workflows and steps. It observes; its actions call the engine.

Nothing here writes a state: there is no add, no edit and no delete (deleting a running
workflow would orphan its jobs; pruning is the sweep's job). The two actions, cancel and
retry, go through Workflow.cancel() / Workflow.retry(), which lock, count and announce.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.db.models import Count, F, QuerySet, TextField
from django.db.models.functions import Cast, Left
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from baton.display import format_seconds
from baton.graph.states import StepState, WorkflowState
from baton.models import Step, StepResult, Workflow

# The change page of a workflow lists at most this many steps; the rest are one link away.
INLINE_STEP_LIMIT = 200
# Characters of a result or error shown in a table cell.
PREVIEW_CHARS = 120
# Characters of a result shown on a step's own page.
RESULT_PAGE_CHARS = 50_000
EMPTY = "—"

# Badge colours: always drawn with the state's word inside, never colour alone.
_COLOURS: dict[str, tuple[str, str]] = {  # state -> (background, text)
    StepState.WAITING: ("#e0e0e0", "#222"),
    StepState.AVAILABLE: ("#cfe3f7", "#123"),
    StepState.SCHEDULED: ("#d9d2f0", "#213"),
    StepState.EXECUTING: ("#1f6fb2", "#fff"),
    StepState.RETRYABLE: ("#f0b429", "#221"),
    StepState.COMPLETED: ("#2e7d32", "#fff"),
    StepState.DISCARDED: ("#c62828", "#fff"),
    StepState.CANCELLED: ("#757575", "#fff"),
    WorkflowState.FAILED: ("#c62828", "#fff"),
}


def state_badge(state: str, label: str) -> SafeString:
    background, colour = _COLOURS.get(state, ("#e0e0e0", "#222"))
    return format_html(
        '<span class="baton-state" data-state="{}" style="display:inline-block;'
        "padding:1px 8px;border-radius:9px;font-size:11px;font-weight:600;"
        'background:{};color:{}">{}</span>',
        state,
        background,
        colour,
        label,
    )


def _preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    return Truncator(text).chars(limit) if text else EMPTY


def _can_see_workflows(request: HttpRequest) -> bool:
    opts = Workflow._meta
    return any(
        request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ("view", "change")
    )


class _ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """No add, no delete, and no edit of any object's fields.

    has_change_permission(request) without an object reports the user's real permission:
    it is what the actions require. With an object it is always False, so the change page
    renders read-only and a POST to it is refused (a save would write stale counters over
    the engine's).
    """

    show_full_result_count = False  # no COUNT(*) over the whole table on every page

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)


# ----------------------------------------------------------------------------- steps inline
class _StepColumns:
    """The step columns the inline and the step admin share."""

    @admin.display(description="state", ordering="state")
    def state_badge(self, step: Step) -> SafeString:
        return state_badge(step.state, step.get_state_display())

    @admin.display(description="attempts")
    def attempts(self, step: Step) -> str:
        return f"{step.attempt}/{step.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, step: Step) -> str:
        seconds = step.duration
        return EMPTY if seconds is None else format_seconds(seconds)

    @admin.display(description="last error")
    def error_preview(self, step: Step) -> str:
        return _preview(step.last_error)


class _CappedStepFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Only the first INLINE_STEP_LIMIT steps, fetched once, in one query."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_capped"):
            self._capped = list(super().get_queryset()[:INLINE_STEP_LIMIT])
        return self._capped


class StepInline(_StepColumns, admin.TabularInline):  # type: ignore[type-arg]
    model = Step
    formset = _CappedStepFormSet
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = (
        "name",
        "state_badge",
        "attempts",
        "started_at",
        "finished_at",
        "duration_display",
        "reason",
        "error_preview",
        "result_preview",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Step]:
        # The result is previewed from its first characters, cut in SQL, so that a page of
        # large results does not load them whole; args and tracebacks are not shown here.
        steps: QuerySet[Step] = super().get_queryset(request)
        return steps.defer("args", "traceback").annotate(
            _result_head=Left(Cast("result__value", TextField()), PREVIEW_CHARS + 1),
            _result_size=F("result__size_bytes"),
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Steps are part of their workflow: whoever may see the workflow sees its steps.
        return _can_see_workflows(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="result")
    def result_preview(self, step: Step) -> str:
        head: str | None = getattr(step, "_result_head", None)
        if head is None:
            return EMPTY
        if len(head) > PREVIEW_CHARS:
            return head[:PREVIEW_CHARS] + "…"
        return head


# ---------------------------------------------------------------------------- workflows
@admin.register(Workflow)
class WorkflowAdmin(_ReadOnlyAdmin):
    list_display = (
        "name",
        "state_badge",
        "progress_display",
        "created_at",
        "duration_display",
        "cost_display",
        "live_link",
    )
    list_filter = ("state", "name")
    search_fields = ("name",)
    search_help_text = "Name (contains), or a workflow id (exact)."
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    inlines = (StepInline,)
    actions = ("cancel_workflows", "retry_workflows")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "state_badge",
                    "progress_display",
                    "created_at",
                    "finished_at",
                    "duration_display",
                    "cost_display",
                    "failed_steps_display",
                    "live_link",
                )
            },
        ),
        (
            "Options",
            {
                "fields": ("ignore_cancelled", "ignore_discarded", "debug", "budget_usd"),
                "classes": ("collapse",),
            },
        ),
        ("Steps", {"fields": ("steps_summary",)}),
    )
    # The admin observes: every field shown is read-only.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Workflow], search_term: str
    ) -> tuple[QuerySet[Workflow], bool]:
        by_name, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            workflow_id = uuid.UUID(search_term.strip())
        except ValueError:
            return by_name, may_have_duplicates
        return by_name | queryset.filter(pk=workflow_id), may_have_duplicates

    # ------------------------------------------------------------------------- columns
    @admin.display(description="state", ordering="state")
    def state_badge(self, workflow: Workflow) -> SafeString:
        return state_badge(workflow.state, workflow.get_state_display())

    @admin.display(description="progress")
    def progress_display(self, workflow: Workflow) -> str:
        total = workflow.step_count
        done = total - workflow.unfinished_steps
        percent = 100 * done // total if total else 100
        return f"{done}/{total} ({percent}%)"

    @admin.display(description="duration")
    def duration_display(self, workflow: Workflow) -> str:
        if workflow.finished_at is not None:
            return format_seconds((workflow.finished_at - workflow.created_at).total_seconds())
        running: datetime.timedelta = timezone.now() - workflow.created_at
        return f"{format_seconds(running.total_seconds())} (running)"

    @admin.display(description="cost")
    @admin.display(description="live")
    def live_link(self, workflow: Workflow) -> str:
        # Only when the project mounted baton.urls.
        try:
            url = reverse("baton:workflow", args=[workflow.pk])
        except NoReverseMatch:
            return EMPTY
        return format_html('<a href="{}">graph</a>', url)

    def cost_display(self, workflow: Workflow) -> str:
        # Filled in by the LLM usage ledger (SPEC section 8).
        return EMPTY

    @admin.display(description="failed steps")
    def failed_steps_display(self, workflow: Workflow) -> str:
        return ", ".join(str(name) for name in workflow.failed_steps) or EMPTY

    @admin.display(description="overview")
    def steps_summary(self, workflow: Workflow) -> SafeString:
        counts = dict(
            Step.objects.filter(workflow=workflow)
            .order_by()
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        total = sum(counts.values())
        labels = dict(Step._meta.get_field("state").choices or [])
        by_state = format_html_join(
            " ",
            "{} {}",
            (
                (state_badge(state, str(labels.get(state, state))), f"{counts[state]:,}")
                for state in StepState
                if state in counts
            ),
        )
        steps_url = reverse("admin:baton_step_changelist") + f"?workflow__exact={workflow.pk}"
        if total > INLINE_STEP_LIMIT:
            note = format_html(
                "The table below shows the first {} of {} steps. "
                '<a href="{}">All steps of this workflow</a>.',
                f"{INLINE_STEP_LIMIT:,}",
                f"{total:,}",
                steps_url,
            )
        else:
            note = format_html('<a href="{}">Steps list</a>.', steps_url)
        return format_html("{} &nbsp; {}<br>{}", f"{total:,} steps:", by_state, note)

    # ------------------------------------------------------------------------- actions
    @admin.action(description="Cancel selected workflows", permissions=["change"])
    def cancel_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        cancelled = steps = 0
        skipped = 0
        for workflow in queryset:
            if workflow.state != WorkflowState.EXECUTING:
                skipped += 1
                continue
            steps += workflow.cancel()
            # cancel() refreshes the workflow when it acted; a workflow that finished in
            # the meantime is left as it was.
            if workflow.state == WorkflowState.CANCELLED:
                cancelled += 1
            else:
                skipped += 1
        if cancelled:
            self.message_user(
                request,
                f"Cancelled {cancelled} workflow(s) ({steps} pending step(s) cancelled; "
                "running steps were asked to abort).",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} workflow(s) had already finished and were left as they were.",
                messages.WARNING,
            )

    @admin.action(description="Retry failed steps of selected workflows", permissions=["change"])
    def retry_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        retried = steps = 0
        skipped = 0
        for workflow in queryset:
            reset = workflow.retry()
            if reset:
                retried += 1
                steps += reset
            else:
                skipped += 1
        if retried:
            self.message_user(
                request,
                f"Retried {steps} step(s) in {retried} workflow(s).",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} workflow(s) had no discarded or cancelled steps to retry.",
                messages.WARNING,
            )


# ---------------------------------------------------------------------------------- steps
@admin.register(Step)
class StepAdmin(_StepColumns, _ReadOnlyAdmin):
    list_display = (
        "name",
        "workflow_link",
        "state_badge",
        "attempts",
        "started_at",
        "finished_at",
        "duration_display",
        "error_preview",
    )
    list_filter = ("state",)
    search_fields = ("name",)
    list_select_related = ("workflow",)
    ordering = ("-id",)
    fields = readonly_fields = (
        "name",
        "workflow_link",
        "state_badge",
        "task_name",
        "group",
        "group_key",
        "queue",
        "priority",
        "attempts",
        "snoozes",
        "job_id",
        "deps_total",
        "deps_pending",
        "scheduled_at",
        "started_at",
        "finished_at",
        "duration_display",
        "reason",
        "args_display",
        "result_display",
        "last_error_display",
        "traceback_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Step]:
        return super().get_queryset(request).select_related("workflow")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Steps are part of their workflow: whoever may see workflows sees their steps.
        return super().has_view_permission(request, obj) or _can_see_workflows(request)

    @admin.display(description="workflow", ordering="workflow__created_at")
    def workflow_link(self, step: Step) -> SafeString:
        url = reverse("admin:baton_workflow_change", args=[step.workflow_id])
        return format_html('<a href="{}">{}</a>', url, step.workflow.name)

    @admin.display(description="args")
    def args_display(self, step: Step) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(step.args, indent=2, default=str))

    @admin.display(description="result")
    def result_display(self, step: Step) -> SafeString | str:
        try:
            result = step.result
        except StepResult.DoesNotExist:
            return EMPTY
        text = json.dumps(result.value, indent=2, ensure_ascii=False, default=str)
        return format_html(
            "<pre>{}</pre>{}", _preview(text, RESULT_PAGE_CHARS), f"{result.size_bytes:,} bytes"
        )

    @admin.display(description="last error")
    def last_error_display(self, step: Step) -> SafeString | str:
        return format_html("<pre>{}</pre>", step.last_error) if step.last_error else EMPTY

    @admin.display(description="traceback")
    def traceback_display(self, step: Step) -> SafeString | str:
        return format_html("<pre>{}</pre>", step.traceback) if step.traceback else EMPTY
