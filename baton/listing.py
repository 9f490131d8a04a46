"""Long lists kept cheap: the pages of the live index and of the admin with 100,000 rows.

Two costs grow with a table, and both are avoided here without new indexes:

- the newest workflows first: no index leads with ``created_at``, but
  ``baton_wf_state_created`` (state, created_at) holds every workflow under its state.
  The unfiltered list is read as one backward index scan per state, merged (PostgreSQL's
  Merge Append); a page reads its own rows and those before it, not the whole table
  sorted (0.3 ms for the first page of 100,000 workflows, against 30-70 ms);
- the count of an unfiltered admin list: PostgreSQL's estimate of the table's rows
  (``pg_class.reltuples``, kept by ANALYZE and autovacuum) once it is past
  ``ESTIMATE_FROM`` rows, shown as "about N"; a filtered list is counted exactly. The
  commonest workflow names likewise come from PostgreSQL's statistics.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.paginator import EmptyPage, Page, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import QuerySet

from baton.graph.states import WorkflowState
from baton.models import Workflow

# Tables of fewer rows than this (by PostgreSQL's estimate) are counted exactly.
ESTIMATE_FROM = 10_000
NEWEST_FIRST = ("-created_at", "-pk")


def _whole_table(queryset: QuerySet[Any]) -> bool:
    """Whether `queryset` has a row per row of its table: no filter, grouping or slice
    (its select_related joins follow foreign keys, one row each)."""
    query = queryset.query
    return not (
        query.where
        or query.combinator
        or query.group_by is not None
        or query.extra
        or query.distinct
        or query.low_mark
        or query.high_mark is not None
    )


def _ordering(queryset: QuerySet[Any]) -> tuple[str, ...]:
    """The queryset's ORDER BY, each field once (the admin's changelist may repeat the
    model's default), the primary key named pk."""
    pk = queryset.model._meta.pk
    names = {f"-{pk.name}": "-pk", pk.name: "pk"} if pk is not None else {}
    fields = (names.get(str(field), str(field)) for field in queryset.query.order_by)
    return tuple(dict.fromkeys(fields))


def newest_workflows(queryset: QuerySet[Any], bottom: int, top: int) -> Any:
    """``queryset[bottom:top]``. When it is every workflow, newest first, the same rows
    read state by state through baton_wf_state_created and merged: each state's part
    stops after `top` rows (a state's index entries are in created_at order)."""
    if (
        queryset.model is not Workflow
        or _ordering(queryset) != NEWEST_FIRST
        or queryset.query.select_related
        or queryset.query.annotations
        or queryset.query.deferred_loading != (frozenset(), True)
        or not _whole_table(queryset)
    ):
        return queryset[bottom:top]
    if top <= bottom:  # an empty page (Django's union drops empty slices: none to merge)
        return queryset.none()
    parts = [queryset.filter(state=state)[:top] for state in WorkflowState]
    merged = parts[0].union(*parts[1:], all=True)
    return merged.order_by(*NEWEST_FIRST)[bottom:top]


def estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows of `queryset`'s table when `queryset` is the
    whole table and the estimate is at least ESTIMATE_FROM; otherwise None (count)."""
    if not _whole_table(queryset):
        return None
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    # -1: never analysed (PostgreSQL 14 and later); NULL: no such table.
    if row is None or row[0] is None or row[0] < ESTIMATE_FROM:
        return None
    return int(row[0])


def common_values(queryset: QuerySet[Any], column: str, limit: int) -> list[tuple[str, int]] | None:
    """For a table past ESTIMATE_FROM rows, the `limit` commonest values of `column`
    with their estimated rows, from PostgreSQL's statistics (pg_stats, kept by ANALYZE):
    no scan of the table. Values no commoner than the rest are not there (100,000
    one-off names have none). None for a smaller table: count it."""
    rows = estimated_rows(queryset)
    if rows is None:
        return None
    connection = connections[queryset.db]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT most_common_vals::text::text[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            [queryset.model._meta.db_table, column],
        )
        found = cursor.fetchone()
    if found is None or found[0] is None:
        return []
    pairs = sorted(zip(found[0], found[1], strict=True), key=lambda pair: (-pair[1], pair[0]))
    return [(value, round(frequency * rows)) for value, frequency in pairs[:limit]]


class _NewestFirstPages(Paginator):  # type: ignore[type-arg]
    """Pages of a queryset; of the workflows newest first, read state by state."""

    estimated = False

    @property
    def queryset(self) -> QuerySet[Any]:
        return cast("QuerySet[Any]", self.object_list)

    def page(self, number: Any) -> Page:  # type: ignore[type-arg]
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if not self.estimated and top + self.orphans >= self.count:
            top = self.count
        return Page(newest_workflows(self.queryset, bottom, top), number, self)


class ListPaginator(_NewestFirstPages):
    """The admin's lists: an unfiltered list of a large table counted by PostgreSQL's
    estimate (`estimated` is then True), the workflows newest first read state by state.

    With an estimate, a page past it is shown (empty, or with the rows the estimate
    missed) rather than refused: the estimate may be a little under or over."""

    def __init__(self, object_list: Any, per_page: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self._count: int | None = None

    @property
    def count(self) -> int:
        if self._count is None:
            estimate = estimated_rows(self.queryset)
            self.estimated = estimate is not None
            self._count = estimate if estimate is not None else self.queryset.count()
        return self._count

    def validate_number(self, number: Any) -> int:
        if self.count and self.estimated:
            try:
                value = int(number)
            except (TypeError, ValueError):
                raise PageNotAnInteger("That page number is not an integer") from None
            if value < 1:
                raise EmptyPage("That page number is less than 1")
            return value
        return int(super().validate_number(number))


class CountedPaginator(_NewestFirstPages):
    """A paginator told its count (the live index reads it with the per-state counts):
    no second count(*)."""

    def __init__(self, object_list: Any, per_page: int, count: int) -> None:
        super().__init__(object_list, per_page)
        self._known_count = count

    @property
    def count(self) -> int:
        return self._known_count
