"""The row model Step is renamed WorkflowStep (baton.Step is the class users subclass).

Nothing changes in the database's tables: the table stays `baton_step` and every foreign
key keeps its column. What does change is what Django keys by the model's name: its
content type (baton.step -> baton.workflowstep) and permissions (change_step ->
change_workflowstep, ...). Django renames neither for a RenameModel inside
SeparateDatabaseAndState, and would otherwise create new permissions beside the old ones,
so that users and groups granted change_step would lose it: they are renamed here, the
grants staying attached.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations

ACTIONS = ("add", "change", "delete", "view")
# The model's verbose_name stays "step", so the names read as before ("Can change step").
VERBOSE_NAME = "step"


def _grant_tables(apps: Any) -> list[tuple[Any, str]]:
    """The tables granting permissions (through table, owner column): groups', users'."""
    Group = apps.get_model("auth", "Group")
    tables = [(Group.permissions.through, "group_id")]
    User = apps.get_model(settings.AUTH_USER_MODEL)
    field = next((f for f in User._meta.many_to_many if f.name == "user_permissions"), None)
    if field is not None:  # a custom user model may have no permissions of its own
        owner = f"{field.m2m_field_name()}_id"
        tables.append((field.remote_field.through, owner))
    return tables


def _rename(apps: Any, schema_editor: Any, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    db = schema_editor.connection.alias
    types = ContentType.objects.db_manager(db)
    old_type = types.filter(app_label="baton", model=old).first()
    if old_type is None:
        return  # a new database: post_migrate creates the rows under the new name
    old_type_id = old_type.pk
    new_type = types.filter(app_label="baton", model=new).first()
    if new_type is None:
        old_type.model = new
        old_type.save(using=db, update_fields=["model"])
        new_type = old_type
    # else: both exist (post_migrate ran with the new model before this migration); the
    # old content type is left stale for remove_stale_contenttypes, its grants moved.
    permissions = Permission.objects.db_manager(db)
    for action in ACTIONS:
        old_permission = permissions.filter(
            content_type_id=old_type_id, codename=f"{action}_{old}"
        ).first()
        if old_permission is None:
            continue
        new_permission = permissions.filter(
            content_type_id=new_type.pk, codename=f"{action}_{new}"
        ).first()
        if new_permission is None:
            old_permission.codename = f"{action}_{new}"
            old_permission.name = f"Can {action} {VERBOSE_NAME}"
            old_permission.content_type_id = new_type.pk
            old_permission.save(using=db)
            continue
        for through, owner in _grant_tables(apps):
            rows = through.objects.db_manager(db)
            holding = rows.filter(permission_id=new_permission.pk).values_list(owner, flat=True)
            rows.filter(permission_id=old_permission.pk).exclude(
                **{f"{owner}__in": list(holding)}
            ).update(permission_id=new_permission.pk)
        old_permission.delete()
    types.clear_cache()


def forwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, schema_editor, "step", "workflowstep")


def backwards(apps: Any, schema_editor: Any) -> None:
    _rename(apps, schema_editor, "workflowstep", "step")


class Migration(migrations.Migration):
    dependencies = [
        ("baton", "0004_workerregistration_tasks"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameModel(old_name="Step", new_name="WorkflowStep"),
                migrations.AlterModelOptions(
                    name="workflowstep",
                    options={"ordering": ["id"], "verbose_name": VERBOSE_NAME},
                ),
                migrations.AlterModelTable(name="workflowstep", table="baton_step"),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
