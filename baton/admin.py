"""The Django admin for workflows, steps, LLM calls and debug records. It observes; its
actions call the engine.

Nothing here writes a state: there is no add, no edit and no delete (deleting a running
workflow would orphan its jobs; pruning is the sweep's job). The two actions, cancel and
retry, go through Workflow.cancel() / Workflow.retry(), which lock, count and announce.
LLM calls (the ledger) and debug records are part of their workflow: whoever may see
workflows sees them, read-only.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.auth import get_permission_codename
from django.db.models import Count, F, Model, Q, QuerySet, Sum, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Left
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from baton.display import format_moment, format_seconds, format_usd
from baton.explain import explain, queue_listeners
from baton.graph.states import StepState, WorkflowState
from baton.listing import ListPaginator, common_values
from baton.models import (
    DebugKind,
    DebugRecord,
    LLMUsage,
    StepDependency,
    StepResult,
    Workflow,
    WorkflowStep,
)

# The change page of a workflow lists at most this many steps; the rest are one link away.
INLINE_STEP_LIMIT = 200
# Characters of a result or error shown in a table cell.
PREVIEW_CHARS = 120
# Characters of a result shown on a step's own page.
RESULT_PAGE_CHARS = 50_000
# A step's page shows at most this many of its LLM calls and debug records, and this many
# characters of each record; the rest are one link away.
STEP_CALLS_LIMIT = 100
STEP_DEBUG_LIMIT = 50
DEBUG_RECORD_CHARS = 20_000
EMPTY = "—"
# The ledger summed per model; aliases differ from the fields' names (an alias equal to a
# field name would clash with it).
_USAGE_SUMS: dict[str, Any] = {
    "sum_calls": Count("id"),
    "sum_input": Sum("input_tokens"),
    "sum_output": Sum("output_tokens"),
    "sum_cache_read": Sum("cache_read_tokens"),
    "sum_cache_write": Sum("cache_write_tokens"),
    "sum_cost": Sum("cost_usd"),
    "sum_unpriced": Count("id", filter=Q(cost_usd__isnull=True)),
}

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


def _changelist_url(model: type[Model], **filters: Any) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _change_url(model: type[Model], pk: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])


_NO_ID = uuid.UUID(int=0)
_LIVE_URLS: dict[tuple[str, Any], str | None] = {}


def _live_url(workflow_id: Any) -> str | None:
    """The workflow's live page, or None when the project did not mount baton.urls;
    reversed once per URLconf and script prefix, not once per row of a list."""
    key = (get_script_prefix(), get_urlconf())
    if key not in _LIVE_URLS:
        try:
            _LIVE_URLS[key] = reverse("baton:workflow", args=[_NO_ID])
        except NoReverseMatch:
            _LIVE_URLS[key] = None
    template = _LIVE_URLS[key]
    return None if template is None else template.replace(str(_NO_ID), str(workflow_id))


def _pre(text: str) -> SafeString:
    """Text (a model's, a user's) shown as text: escaped, wrapped, scrollable."""
    return format_html(
        '<pre style="white-space:pre-wrap;word-break:break-word;max-height:40em;'
        'overflow:auto">{}</pre>',
        text,
    )


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


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
    # An unfiltered list of a large table is counted by PostgreSQL's estimate; the
    # workflows newest first are read through the state index (baton.listing).
    paginator = ListPaginator

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
    def state_badge(self, step: WorkflowStep) -> SafeString:
        return state_badge(step.state, step.get_state_display())

    @admin.display(description="attempts")
    def attempts(self, step: WorkflowStep) -> str:
        return f"{step.attempt}/{step.max_attempts}"

    @admin.display(description="duration")
    def duration_display(self, step: WorkflowStep) -> str:
        seconds = step.duration
        return EMPTY if seconds is None else format_seconds(seconds)

    @admin.display(description="started", ordering="started_at")
    def started(self, step: WorkflowStep) -> str:
        return format_moment(step.started_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, step: WorkflowStep) -> str:
        return format_moment(step.finished_at)

    @admin.display(description="last error")
    def error_preview(self, step: WorkflowStep) -> str:
        return _preview(step.last_error)

    @admin.display(description="cost", ordering="cost_usd")
    def cost_display(self, step: WorkflowStep) -> str:
        # Over all of the step's attempts (failed ones spent money too).
        return format_usd(step.cost_usd, step.unpriced_calls)


class _CappedStepFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """Only the first INLINE_STEP_LIMIT steps, fetched once, in one query."""

    def get_queryset(self) -> Any:
        if not hasattr(self, "_capped"):
            capped = list(super().get_queryset()[:INLINE_STEP_LIMIT])
            reasons = _inline_reasons(capped)
            for step in capped:
                step._why = reasons.get(step.id, "")
            self._capped = _grafts_under_their_steps(capped, self.instance.pk)
        return self._capped


def _grafts_under_their_steps(steps: list[Any], workflow_id: Any) -> list[Any]:
    """`steps` (in id order) with each step's graft right under it, and what the graft
    column shows: the grafting step's name and depth, how many steps each one grafted
    (one query for the workflow). A grafting step has a smaller id than its graft, so
    the grafter of a step on the page is on the page too."""
    grafted_counts = dict(
        WorkflowStep.objects.filter(workflow_id=workflow_id, grafted_by__isnull=False)
        .order_by()
        .values_list("grafted_by")
        .annotate(n=Count("id"))
        .values_list("grafted_by", "n")
    )
    by_id = {step.id: step for step in steps}
    children: dict[int, list[Any]] = defaultdict(list)
    for step in steps:
        if step.grafted_by_id in by_id:
            children[step.grafted_by_id].append(step)
    ordered: list[Any] = []
    stack = [(step, 0) for step in reversed(steps) if step.grafted_by_id not in by_id]
    while stack:
        step, level = stack.pop()
        grafter = by_id.get(step.grafted_by_id) if step.grafted_by_id is not None else None
        # Read by StepInline.graft_display (the inline's rows are these instances).
        step._graft_level = level
        step._grafter_name = grafter.name if grafter is not None else None
        step._grafted_count = grafted_counts.get(step.id, 0)
        ordered.append(step)
        stack.extend((child, level + 1) for child in reversed(children[step.id]))
    return ordered


def _inline_reasons(steps: list[WorkflowStep]) -> dict[int, str]:
    """Why each unfinished step shown inline is where it is, in two queries for them
    all: the dependencies the waiting ones wait for, and whether any live worker listens
    on the queues of the available ones (baton.explain says the same, step by step)."""
    reasons: dict[int, str] = {}
    waiting = [step.id for step in steps if step.state == StepState.WAITING]
    if waiting:
        blockers: dict[int, list[str]] = defaultdict(list)
        rows = (
            StepDependency.objects.filter(downstream_id__in=waiting)
            .exclude(upstream__state=StepState.COMPLETED)
            .order_by("downstream_id", "upstream_id")
            .values_list("downstream_id", "upstream__name", "upstream__state")
        )
        for step_id, name, state in rows:
            blockers[step_id].append(f"{name} ({state})")
        for step_id, names in blockers.items():
            more = f", and {len(names) - 5} more" if len(names) > 5 else ""
            reasons[step_id] = "waits for " + ", ".join(names[:5]) + more
    available = [step for step in steps if step.state == StepState.AVAILABLE]
    if available:
        heard = queue_listeners(step.queue for step in available)
        for step in available:
            reasons[step.id] = heard[step.queue].sentence()
    return reasons


class StepInline(_StepColumns, admin.TabularInline):  # type: ignore[type-arg]
    model = WorkflowStep
    formset = _CappedStepFormSet
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = (
        "name",
        "graft_display",
        "state_badge",
        "why",
        "attempts",
        "started",
        "finished",
        "duration_display",
        "cost_display",
        "reason",
        "error_preview",
        "result_preview",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowStep]:
        # The result is previewed from its first characters, cut in SQL, so that a page of
        # large results does not load them whole; args and tracebacks are not shown here.
        steps: QuerySet[WorkflowStep] = super().get_queryset(request)
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

    @admin.display(description="why")
    def why(self, step: WorkflowStep) -> str:
        return getattr(step, "_why", "") or EMPTY

    @admin.display(description="graft")
    def graft_display(self, step: WorkflowStep) -> str:
        # Grafted steps are listed under the step that grafted them (the formset's order).
        parts = []
        level = getattr(step, "_graft_level", 0)
        if level:
            parts.append(f"{'↳' * level} grafted by {getattr(step, '_grafter_name', '')}")
        count = getattr(step, "_grafted_count", 0)
        if count:
            parts.append(f"grafted {count:,} step(s)")
        return " · ".join(parts) or EMPTY

    @admin.display(description="result")
    def result_preview(self, step: WorkflowStep) -> str:
        head: str | None = getattr(step, "_result_head", None)
        if head is None:
            return EMPTY
        if len(head) > PREVIEW_CHARS:
            return head[:PREVIEW_CHARS] + "…"
        return head


# ---------------------------------------------------------------------------- workflows
class WorkflowNameFilter(admin.SimpleListFilter):
    """The most common workflow names (a name is usually a kind of workflow, "nightly
    import"); a filter of every distinct name would list 100,000 links for 100,000
    one-off names. Other names are a search away."""

    title = "name (most common)"
    parameter_name = "name"
    LIMIT = 20

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # A large table's commonest names from PostgreSQL's statistics, with their
        # estimated counts: grouping 100,000 rows by name costs more than the page.
        estimated = common_values(Workflow.objects.all(), "name", self.LIMIT)
        if estimated is not None:
            choices = [(name, f"{name} (~{n:,})") for name, n in estimated]
        else:
            names = (
                Workflow.objects.order_by()
                .values_list("name")
                .annotate(n=Count("pk"))
                .order_by("-n", "name")[: self.LIMIT]
            )
            choices = [(name, f"{name} ({n:,})") for name, n in names]
        chosen = self.value()
        if chosen and chosen not in {name for name, _ in choices}:
            choices.append((chosen, chosen))  # a chosen name stays shown as chosen
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        chosen = self.value()
        return queryset.filter(name=chosen) if chosen else queryset


@admin.register(Workflow)
class WorkflowAdmin(_ReadOnlyAdmin):
    list_display = (
        "name",
        "state_badge",
        "progress_display",
        "created",
        "duration_display",
        "cost_display",
        "live_link",
    )
    # By creation date as a filter (today, past 7 days, ...), not a date hierarchy,
    # whose drill-down reads every row's date (min, max, distinct months) on each page.
    list_filter = ("state", WorkflowNameFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("name",)
    search_help_text = "Name (contains), or a workflow id (exact)."
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
                    "created",
                    "finished",
                    "duration_display",
                    "failed_steps_display",
                    "reason_display",
                    "live_link",
                    "debug_records_link",
                )
            },
        ),
        (
            "Cost",
            {
                "fields": (
                    "cost_display",
                    "unpriced_calls",
                    "budget_display",
                    "cost_by_model_display",
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

    @admin.display(description="created", ordering="created_at")
    def created(self, workflow: Workflow) -> str:
        return format_moment(workflow.created_at)

    @admin.display(description="finished", ordering="finished_at")
    def finished(self, workflow: Workflow) -> str:
        return format_moment(workflow.finished_at)

    @admin.display(description="duration")
    def duration_display(self, workflow: Workflow) -> str:
        if workflow.finished_at is not None:
            return format_seconds((workflow.finished_at - workflow.created_at).total_seconds())
        running: datetime.timedelta = timezone.now() - workflow.created_at
        return f"{format_seconds(running.total_seconds())} (running)"

    @admin.display(description="live")
    def live_link(self, workflow: Workflow) -> str:
        url = _live_url(workflow.pk)
        return EMPTY if url is None else format_html('<a href="{}">graph</a>', url)

    @admin.display(description="cost", ordering="cost_usd")
    def cost_display(self, workflow: Workflow) -> str:
        # The ledger's running total, kept on the row: no query per line.
        return format_usd(workflow.cost_usd, workflow.unpriced_calls)

    @admin.display(description="budget")
    def budget_display(self, workflow: Workflow) -> str:
        if workflow.budget_usd is None:
            return EMPTY
        spent = format_usd(workflow.cost_usd or Decimal(0))
        text = f"{spent} of {format_usd(workflow.budget_usd)}"
        if workflow.unpriced_calls:
            text += f" (and {workflow.unpriced_calls:,} unpriced call(s))"
        return text

    @admin.display(description="reason")
    def reason_display(self, workflow: Workflow) -> str:
        return workflow.reason or EMPTY

    @admin.display(description="cost by model")
    def cost_by_model_display(self, workflow: Workflow) -> SafeString | str:
        rows: list[dict[str, Any]] = [
            dict(row)
            for row in LLMUsage.objects.filter(workflow_id=workflow.pk)
            .values("model")
            .annotate(**_USAGE_SUMS)
            .order_by("model")
        ]
        if not rows:
            return EMPTY
        # Most expensive first, unknown cost last, as baton.stats.cost_by_model.
        rows.sort(key=lambda row: (row["sum_cost"] is None, -(row["sum_cost"] or 0)))
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            (
                (
                    row["model"],
                    f"{row['sum_calls']:,}",
                    f"{row['sum_input'] or 0:,}",
                    f"{row['sum_output'] or 0:,}",
                    f"{row['sum_cache_read'] or 0:,}",
                    f"{row['sum_cache_write'] or 0:,}",
                    format_usd(row["sum_cost"], row["sum_unpriced"]),
                )
                for row in rows
            ),
        )
        calls_url = _changelist_url(LLMUsage, workflow__exact=workflow.pk)
        return format_html(
            "<table><thead><tr><th>model</th><th>calls</th><th>input tokens</th>"
            "<th>output tokens</th><th>cache read</th><th>cache write</th><th>cost</th>"
            '</tr></thead><tbody>{}</tbody></table><a href="{}">All LLM calls of this '
            "workflow</a>",
            body,
            calls_url,
        )

    @admin.display(description="debug records")
    def debug_records_link(self, workflow: Workflow) -> SafeString | str:
        count = DebugRecord.objects.filter(workflow_id=workflow.pk).count()
        if not count:
            return "none captured" if workflow.debug else EMPTY
        url = _changelist_url(DebugRecord, workflow__exact=workflow.pk)
        return format_html('<a href="{}">{} debug record(s)</a>', url, f"{count:,}")

    @admin.display(description="failed steps")
    def failed_steps_display(self, workflow: Workflow) -> str:
        return ", ".join(str(name) for name in workflow.failed_steps) or EMPTY

    @admin.display(description="overview")
    def steps_summary(self, workflow: Workflow) -> SafeString:
        counts = dict(
            WorkflowStep.objects.filter(workflow=workflow)
            .order_by()
            .values_list("state")
            .annotate(n=Count("id"))
            .values_list("state", "n")
        )
        total = sum(counts.values())
        labels = dict(WorkflowStep._meta.get_field("state").choices or [])
        by_state = format_html_join(
            " ",
            "{} {}",
            (
                (state_badge(state, str(labels.get(state, state))), f"{counts[state]:,}")
                for state in StepState
                if state in counts
            ),
        )
        steps_url = (
            reverse("admin:baton_workflowstep_changelist") + f"?workflow__exact={workflow.pk}"
        )
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
@admin.register(WorkflowStep)
class StepAdmin(_StepColumns, _ReadOnlyAdmin):
    list_display = (
        "name",
        "workflow_link",
        "state_badge",
        "attempts",
        "started",
        "finished",
        "duration_display",
        "cost_display",
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
        "explanation_display",
        "grafted_by_link",
        "grafted_display",
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
        "scheduled",
        "started",
        "finished",
        "duration_display",
        "reason",
        "cost_display",
        "llm_calls_display",
        "args_display",
        "result_display",
        "last_error_display",
        "traceback_display",
        "debug_records_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowStep]:
        return super().get_queryset(request).select_related("workflow")

    @admin.display(description="scheduled", ordering="scheduled_at")
    def scheduled(self, step: WorkflowStep) -> str:
        return format_moment(step.scheduled_at)

    @admin.display(description="why it is here")
    def explanation_display(self, step: WorkflowStep) -> SafeString:
        # The same sentences as the live page's panel and `manage.py baton show`.
        sentences = explain(step).sentences
        return format_html(
            '<ul class="baton-explanation">{}</ul>',
            format_html_join("", "<li>{}</li>", ((sentence,) for sentence in sentences)),
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Steps are part of their workflow: whoever may see workflows sees their steps.
        return super().has_view_permission(request, obj) or _can_see_workflows(request)

    @admin.display(description="workflow", ordering="workflow__created_at")
    def workflow_link(self, step: WorkflowStep) -> SafeString:
        url = reverse("admin:baton_workflow_change", args=[step.workflow_id])
        return format_html('<a href="{}">{}</a>', url, step.workflow.name)

    @admin.display(description="grafted by")
    def grafted_by_link(self, step: WorkflowStep) -> SafeString | str:
        if step.grafted_by_id is None:
            return EMPTY  # inserted with the workflow, or appended from outside
        grafter = WorkflowStep.objects.filter(pk=step.grafted_by_id).values_list("name", flat=True)
        name = grafter.first() or f"step {step.grafted_by_id} (gone)"
        return format_html(
            '<a href="{}">{}</a>', _change_url(WorkflowStep, step.grafted_by_id), name
        )

    @admin.display(description="grafted")
    def grafted_display(self, step: WorkflowStep) -> SafeString | str:
        count = WorkflowStep.objects.filter(
            workflow_id=step.workflow_id, grafted_by_id=step.pk
        ).count()
        if not count:
            return EMPTY
        url = _changelist_url(WorkflowStep, grafted_by__exact=step.pk)
        return format_html(
            '<a href="{}">{} step(s)</a> added by its job.graft()', url, f"{count:,}"
        )

    @admin.display(description="args")
    def args_display(self, step: WorkflowStep) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(step.args, indent=2, default=str))

    @admin.display(description="result")
    def result_display(self, step: WorkflowStep) -> SafeString | str:
        try:
            result = step.result
        except StepResult.DoesNotExist:
            return EMPTY
        text = json.dumps(result.value, indent=2, ensure_ascii=False, default=str)
        return format_html(
            "<pre>{}</pre>{}", _preview(text, RESULT_PAGE_CHARS), f"{result.size_bytes:,} bytes"
        )

    @admin.display(description="last error")
    def last_error_display(self, step: WorkflowStep) -> SafeString | str:
        return format_html("<pre>{}</pre>", step.last_error) if step.last_error else EMPTY

    @admin.display(description="traceback")
    def traceback_display(self, step: WorkflowStep) -> SafeString | str:
        return format_html("<pre>{}</pre>", step.traceback) if step.traceback else EMPTY

    @admin.display(description="LLM calls")
    def llm_calls_display(self, step: WorkflowStep) -> SafeString | str:
        # By the ledger's unique index, which leads with the step.
        calls = list(
            LLMUsage.objects.filter(step_id=step.pk).order_by("attempt", "id")[
                : STEP_CALLS_LIMIT + 1
            ]
        )
        if not calls:
            return EMPTY
        body = format_html_join(
            "",
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    call.attempt,
                    _change_url(LLMUsage, call.pk),
                    call.call_key,
                    call.model,
                    f"{call.input_tokens:,}",
                    f"{call.output_tokens:,}",
                    f"{call.cache_read_tokens:,}",
                    f"{call.cache_write_tokens:,}",
                    EMPTY if call.latency_ms is None else f"{call.latency_ms:,} ms",
                    format_usd(call.cost_usd, int(call.cost_usd is None)),
                )
                for call in calls[:STEP_CALLS_LIMIT]
            ),
        )
        more = ""
        if len(calls) > STEP_CALLS_LIMIT:
            more = format_html(
                '<a href="{}">All LLM calls of this step</a>',
                _changelist_url(LLMUsage, step__exact=step.pk),
            )
        return format_html(
            "<table><thead><tr><th>attempt</th><th>call key</th><th>model</th>"
            "<th>input tokens</th><th>output tokens</th><th>cache read</th>"
            "<th>cache write</th><th>latency</th><th>cost</th></tr></thead>"
            "<tbody>{}</tbody></table>{}",
            body,
            more,
        )

    @admin.display(description="debug records")
    def debug_records_display(self, step: WorkflowStep) -> SafeString | str:
        # Each record's text is cut in SQL, so a page of large payloads stays small; by
        # the (workflow, step) index.
        records = list(
            _with_payload_text(
                DebugRecord.objects.filter(workflow_id=step.workflow_id, step_id=step.pk),
                DEBUG_RECORD_CHARS,
            ).order_by("attempt", "id")[: STEP_DEBUG_LIMIT + 1]
        )
        if not records:
            return "none captured" if step.workflow.debug else EMPTY
        shown = records[:STEP_DEBUG_LIMIT]
        all_url = _changelist_url(
            DebugRecord, workflow__exact=step.workflow_id, step__exact=step.pk
        )
        parts = [_debug_attempts(shown)]
        if len(records) > STEP_DEBUG_LIMIT:
            parts.append(
                format_html(
                    '<p>The first {} records are shown. <a href="{}">All debug records of '
                    "this step</a>.</p>",
                    STEP_DEBUG_LIMIT,
                    all_url,
                )
            )
        else:
            parts.append(format_html('<p><a href="{}">Debug records list</a>.</p>', all_url))
        return format_html_join("", "{}", ((part,) for part in parts))


# ------------------------------------------------------------------- debug record text
# A truncated record (baton.llm.debug) keeps {"truncated": true, "size_bytes": n,
# "preview": "<the start of its JSON>"}: its preview is shown as the text itself.
_TRUNCATED = (
    "jsonb_typeof({payload}) = 'object' AND {payload} -> 'truncated' = 'true'::jsonb "
    "AND jsonb_typeof({payload} -> 'preview') = 'string'"
)


def _with_payload_text(records: QuerySet[DebugRecord], limit: int) -> QuerySet[DebugRecord]:
    """The records without their payloads, but with their first `limit` + 1 characters as
    pretty-printed JSON (`_text`) and, for a truncated record, its original size."""
    payload = f'"{DebugRecord._meta.db_table}"."payload"'
    truncated = _TRUNCATED.format(payload=payload)
    return records.defer("payload").annotate(
        _text=RawSQL(
            f"left(CASE WHEN {truncated} THEN {payload} ->> 'preview' "
            f"ELSE coalesce(jsonb_pretty({payload}), 'null') END, %s)",
            [limit + 1],
            output_field=TextField(),
        ),
        _truncated_size=RawSQL(
            f"CASE WHEN {truncated} THEN {payload} ->> 'size_bytes' END",
            [],
            output_field=TextField(),
        ),
    )


def _record_text(record: DebugRecord, limit: int) -> SafeString:
    text: str = getattr(record, "_text", "")
    parts = []
    size = getattr(record, "_truncated_size", None)
    if size:
        parts.append(
            format_html(
                "<p>Truncated when captured: {} bytes of JSON; the start is kept.</p>", size
            )
        )
    if len(text) > limit:
        text = text[:limit] + "…"
        parts.append(
            format_html(
                '<p>The first {} characters; <a href="{}">the whole record</a>.</p>',
                f"{limit:,}",
                _change_url(DebugRecord, record.pk),
            )
        )
    parts.append(_pre(text))
    return format_html_join("", "{}", ((part,) for part in parts))


def _record_heading(record: DebugRecord) -> SafeString:
    return format_html(
        '<p><strong>{}</strong> <a href="{}">#{}</a> · {}</p>',
        record.get_kind_display(),
        _change_url(DebugRecord, record.pk),
        record.pk,
        record.created_at.isoformat(timespec="milliseconds"),
    )


def _debug_attempts(records: list[DebugRecord]) -> SafeString:
    """The records per attempt, in order, each request followed by its responses."""
    by_attempt: dict[int, list[DebugRecord]] = defaultdict(list)
    for record in records:
        by_attempt[record.attempt].append(record)
    blocks = []
    for attempt, attempt_records in sorted(by_attempt.items()):
        shown_ids = {r.pk for r in attempt_records if r.kind == DebugKind.REQUEST}
        responses: dict[int, list[DebugRecord]] = defaultdict(list)
        for record in attempt_records:
            if record.kind == DebugKind.RESPONSE and record.request_id in shown_ids:
                responses[record.request_id].append(record)
        items = []
        for record in attempt_records:
            if record.kind == DebugKind.RESPONSE and record.request_id in shown_ids:
                continue  # shown under its request
            pair = [_record_heading(record), _record_text(record, DEBUG_RECORD_CHARS)]
            if record.kind == DebugKind.REQUEST:
                answers = responses.get(record.pk, [])
                for answer in answers:
                    pair += [_record_heading(answer), _record_text(answer, DEBUG_RECORD_CHARS)]
                if not answers:
                    pair.append(format_html("<p>{}</p>", "No response captured."))
            items.append(
                format_html(
                    '<div class="baton-debug-{}" style="border-left:3px solid #ccc;'
                    'padding-left:8px;margin-bottom:8px">{}</div>',
                    record.kind,
                    format_html_join("", "{}", ((part,) for part in pair)),
                )
            )
        blocks.append(
            format_html(
                "<h4>Attempt {}</h4>{}", attempt, format_html_join("", "{}", ((i,) for i in items))
            )
        )
    return format_html_join("", "{}", ((block,) for block in blocks))


# ---------------------------------------------------------- LLM calls, debug records
class _PartOfWorkflow(_ReadOnlyAdmin):
    """Rows that belong to a step of a workflow: whoever may see workflows sees them."""

    list_select_related = ("workflow", "step")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or _can_see_workflows(request)

    @admin.display(description="workflow")
    def workflow_link(self, row: LLMUsage | DebugRecord) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>', _change_url(Workflow, row.workflow_id), row.workflow.name
        )

    @admin.display(description="step")
    def step_link(self, row: LLMUsage | DebugRecord) -> SafeString:
        return format_html(
            '<a href="{}">{}</a>', _change_url(WorkflowStep, row.step_id), row.step.name
        )


@admin.register(LLMUsage)
class LLMUsageAdmin(_PartOfWorkflow):
    list_display = (
        "created_at",
        "model",
        "provider",
        "workflow_link",
        "step_link",
        "attempt",
        "call_key",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "latency_display",
        "cost_display",
    )
    list_filter = ("model", "provider")
    ordering = ("-created_at", "-id")
    fields = readonly_fields = (
        "created_at",
        "workflow_link",
        "step_link",
        "attempt",
        "job_id",
        "call_key",
        "model",
        "provider",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "latency_display",
        "cost_display",
    )

    @admin.display(description="latency", ordering="latency_ms")
    def latency_display(self, call: LLMUsage) -> str:
        return EMPTY if call.latency_ms is None else f"{call.latency_ms:,} ms"

    @admin.display(description="cost", ordering="cost_usd")
    def cost_display(self, call: LLMUsage) -> str:
        return format_usd(call.cost_usd, int(call.cost_usd is None))


@admin.register(DebugRecord)
class DebugRecordAdmin(_PartOfWorkflow):
    list_display = (
        "id",
        "created_at",
        "kind",
        "workflow_link",
        "step_link",
        "attempt",
        "request_link",
        "payload_preview",
    )
    list_filter = ("kind",)
    ordering = ("-id",)
    fields = readonly_fields = (
        "id",
        "created_at",
        "kind",
        "workflow_link",
        "step_link",
        "attempt",
        "request_link",
        "responses_display",
        "payload_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[DebugRecord]:
        # The list previews each payload from its first characters, cut in SQL; the
        # record's own page loads it whole.
        records: QuerySet[DebugRecord] = super().get_queryset(request)
        return records.defer("payload").annotate(
            _head=Left(Cast("payload", TextField()), PREVIEW_CHARS + 1)
        )

    @admin.display(description="payload")
    def payload_preview(self, record: DebugRecord) -> str:
        head: str | None = getattr(record, "_head", None)
        if head is None:
            return EMPTY
        return head[:PREVIEW_CHARS] + "…" if len(head) > PREVIEW_CHARS else head

    @admin.display(description="request")
    def request_link(self, record: DebugRecord) -> SafeString | str:
        if record.request_id is None:
            return EMPTY
        url = _change_url(DebugRecord, record.request_id)
        return format_html('<a href="{}">#{}</a>', url, record.request_id)

    @admin.display(description="responses")
    def responses_display(self, record: DebugRecord) -> SafeString | str:
        if record.kind != DebugKind.REQUEST:
            return EMPTY
        ids = list(record.responses.order_by("id").values_list("id", flat=True)[:20])
        if not ids:
            return "none captured"
        return format_html_join(
            ", ", '<a href="{}">#{}</a>', ((_change_url(DebugRecord, pk), pk) for pk in ids)
        )

    @admin.display(description="payload")
    def payload_display(self, record: DebugRecord) -> SafeString:
        payload = record.payload
        if (
            isinstance(payload, dict)
            and payload.get("truncated") is True
            and isinstance(payload.get("preview"), str)
        ):
            return format_html(
                "<p>Truncated when captured: {} bytes of JSON; the start is kept.</p>{}",
                payload.get("size_bytes"),
                _pre(payload["preview"]),
            )
        return _pre(_pretty_json(payload))
