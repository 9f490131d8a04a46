from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("baton", "0003_step_grafted_by"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerregistration",
            name="tasks",
            field=models.JSONField(blank=True, default=None, null=True),
        ),
    ]
