"""Migration 0005 renames the row model Step to WorkflowStep: the table and its rows stay,
and users and groups granted a step permission still hold it under its new codename.

Migrated back and forth with Django's MigrationExecutor, as Django's own migration tests
do (a transactional test: migrations run their own transactions).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.apps import apps
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from baton.models import StepDependency, StepResult, Workflow, WorkflowStep

BEFORE = ("baton", "0004_workerregistration_tasks")
AFTER = ("baton", "0005_rename_step_workflowstep")
STEP_CODENAMES = {f"{action}_step" for action in ("add", "change", "delete", "view")}


def migrate_to(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    ContentType.objects.clear_cache()


@pytest.fixture
def at_0004(transactional_db: None) -> Iterator[None]:
    """The database migrated back to 0004; afterwards to the latest migrations again,
    whatever the test did."""
    migrate_to(BEFORE)
    try:
        yield
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
        ContentType.objects.clear_cache()


def baton_permission(codename: str) -> Permission:
    return Permission.objects.get(content_type__app_label="baton", codename=codename)


def step_rows() -> list[tuple[object, ...]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM baton_step ORDER BY id")
        return list(cursor.fetchall())


def rows_of_a_small_workflow() -> None:
    workflow = Workflow.objects.create(name="kept", step_count=2, unfinished_steps=1)
    a = WorkflowStep.objects.create(workflow=workflow, name="a", task_name="t", state="completed")
    b = WorkflowStep.objects.create(
        workflow=workflow, name="b", task_name="t", deps_total=1, grafted_by=a
    )
    StepDependency.objects.create(workflow=workflow, upstream=a, downstream=b)
    StepResult.objects.create(step=a, value={"total": 190})


def test_step_permissions_and_rows_survive_the_rename(at_0004: None) -> None:
    step_type = ContentType.objects.get(app_label="baton", model="step")
    assert (
        set(Permission.objects.filter(content_type=step_type).values_list("codename", flat=True))
        == STEP_CODENAMES
    )
    editor = User.objects.create_user("editor", is_staff=True)
    editor.user_permissions.add(baton_permission("change_step"))
    viewers = Group.objects.create(name="viewers")
    viewers.permissions.add(baton_permission("view_step"))
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.groups.add(viewers)
    rows_of_a_small_workflow()
    before = step_rows()

    migrate_to(AFTER)

    assert step_rows() == before
    editor, viewer = User.objects.get(username="editor"), User.objects.get(username="viewer")
    assert editor.has_perm("baton.change_workflowstep")
    assert not editor.has_perm("baton.delete_workflowstep")
    assert viewer.has_perm("baton.view_workflowstep")
    assert baton_permission("change_workflowstep").name == "Can change step"
    new_type = ContentType.objects.get_for_model(WorkflowStep)
    assert new_type.pk == step_type.pk  # renamed in place: the admin's log keeps its links
    assert not ContentType.objects.filter(app_label="baton", model="step").exists()
    # post_migrate finds them all: no second set beside the renamed one.
    create_permissions(apps.get_app_config("baton"), verbosity=0)
    assert Permission.objects.filter(content_type=new_type).count() == 4
    a = WorkflowStep.objects.get(name="a")
    assert a.result_value() == {"total": 190}
    assert [e.downstream.name for e in a.downstream_edges.all()] == ["b"]
    assert [s.name for s in a.grafted.all()] == ["b"]


def test_grants_move_onto_step_permissions_already_made_under_the_new_name(
    at_0004: None,
) -> None:
    """A database where post_migrate already made the new name's content type and
    permissions (say, a stale pair): the old grants are moved onto them."""
    stale_type = ContentType.objects.create(app_label="baton", model="workflowstep")
    stale = Permission.objects.create(
        content_type=stale_type, codename="change_workflowstep", name="Can change step"
    )
    both = User.objects.create_user("both", is_staff=True)
    both.user_permissions.add(baton_permission("change_step"), stale)
    editors = Group.objects.create(name="editors")
    editors.permissions.add(baton_permission("change_step"))
    editor = User.objects.create_user("editor", is_staff=True)
    editor.groups.add(editors)

    migrate_to(AFTER)

    assert User.objects.get(username="both").has_perm("baton.change_workflowstep")
    assert User.objects.get(username="editor").has_perm("baton.change_workflowstep")
    assert list(editors.permissions.values_list("codename", flat=True)) == ["change_workflowstep"]
    assert not Permission.objects.filter(content_type__app_label="baton", codename="change_step")
